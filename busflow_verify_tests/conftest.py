"""Real servers for the tests: a source Postgres to make dumps with pg_dump, an S3 server
(`rclone serve s3`) holding them, and a Dagster instance per test."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from busflow_verify import cli
from busflow_verify.core.postgres.cluster import (
    DIR_PREFIX,
    OWNER_FILE,
    ConnInfo,
    DisposablePostgres,
)
from busflow_verify.core.postgres.privilege import RestoreDatabase, provision
from busflow_verify.demo.s3server import RcloneS3Server


def pytest_collection_modifyitems(config, items):
    """The deploy tests (a Docker engine, image builds) run only when `-m` names them
    (`make test-deploy`); a plain `pytest` or `make test` leaves them out."""
    if "deploy" in (config.option.markexpr or ""):
        return
    kept = [item for item in items if item.get_closest_marker("deploy") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


ACCESS_KEY = "busflow-test-access"
SECRET_KEY = "busflow-test-secret-" + secrets.token_hex(8)


@pytest.fixture(scope="session")
def source_pg():
    with DisposablePostgres() as pg:
        yield pg


def _s3_server(tmp_path_factory, name: str):
    with RcloneS3Server(
        tmp_path_factory.mktemp(name), access_key=ACCESS_KEY, secret_key=SECRET_KEY
    ) as server:
        yield server


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """The offsite primary's stand-in (Hetzner Object Storage)."""
    yield from _s3_server(tmp_path_factory, "s3")


@pytest.fixture
def server_user_dir():
    """A fresh folder in TMPDIR itself that the clusters' server user (`postgres`, when we are
    root) can pass through: pytest's tmp_path is 0700."""
    path = Path(tempfile.mkdtemp(prefix="pgdir-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def fallback_s3(tmp_path_factory):
    """The on-site MinIO mirror's stand-in: a second S3 server with the same credentials."""
    yield from _s3_server(tmp_path_factory, "s3-fallback")


def scrub_uuid(tenant: int) -> str:
    """The tenant_scrub_logs id of the test databases' scrub of `tenant`."""
    import hashlib as _h

    digest = _h.md5(f"scrub-{tenant}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def busflow_sql(
    bookings: int = 1000,
    messages: int = 3000,
    orphans: int = 7,
    legs: int = 1500,
    nulls: int = 5,
    padding: int = 0,
    orphan_tenants: tuple = (9,),
    scrubbed: tuple = (),
) -> str:
    """A small Busflow-shaped database with an exact number of orphan messages, spread over
    `orphan_tenants` round-robin, and a scrub-log entry for each tenant in `scrubbed`."""
    tenants = "ARRAY[" + ",".join(str(t) for t in orphan_tenants) + "]"
    scrubs = " ".join(
        f"INSERT INTO public.tenant_scrub_logs VALUES ('{scrub_uuid(t)}', {t});" for t in scrubbed
    )
    return f"""
    CREATE SCHEMA commerce; CREATE SCHEMA communications; CREATE SCHEMA operations;
    CREATE TABLE commerce.bookings(id bigint PRIMARY KEY, tenant_id int NOT NULL, amount_cents int);
    INSERT INTO commerce.bookings SELECT g, 1 + g % 3, g * 7 FROM generate_series(1, {bookings}) g;
    CREATE TABLE communications.messages(id bigint PRIMARY KEY, booking_id bigint, body text,
                                         tenant_id int);
    INSERT INTO communications.messages
        SELECT g, 1 + g % {bookings}, 'msg ' || g, 1 + (1 + g % {bookings}) % 3
        FROM generate_series(1, {messages}) g;
    INSERT INTO communications.messages
        SELECT 1000000 + g, 900000 + g, 'orphan',
               ({tenants})[1 + g % cardinality({tenants})]
        FROM generate_series(1, {orphans}) g;
    INSERT INTO communications.messages
        SELECT 2000000 + g, NULL, 'broadcast', 1 FROM generate_series(1, {nulls}) g;
    CREATE INDEX ON communications.messages(booking_id);
    CREATE TABLE operations.service_legs(id bigint PRIMARY KEY, booking_id bigint, leg_no int);
    INSERT INTO operations.service_legs SELECT g, 1 + g % {bookings}, g % 4 FROM generate_series(1, {legs}) g;
    CREATE TABLE public.tenant_scrub_logs(id uuid PRIMARY KEY, tenant_id int);
    {scrubs}
    CREATE TABLE public.attachments(id int, blob text);
    INSERT INTO public.attachments
        SELECT g, (SELECT string_agg(md5(g::text || ':' || i), '') FROM generate_series(1, 20) i)
        FROM generate_series(1, {padding}) g;
    """


def expected_counts(
    bookings=1000, messages=3000, orphans=7, legs=1500, nulls=5, padding=0, scrubbed=()
) -> dict:
    return {
        "commerce.bookings": bookings,
        "communications.messages": messages + orphans + nulls,
        "operations.service_legs": legs,
        "public.attachments": padding,
        "public.tenant_scrub_logs": len(scrubbed),
    }


@pytest.fixture(scope="session")
def make_dump(source_pg, tmp_path_factory):
    """make_dump(**busflow_sql params, fmt="custom") -> Path of a real pg_dump, cached."""
    out_dir = tmp_path_factory.mktemp("dumps")
    cache: dict[str, Path] = {}

    def _make(fmt: str = "custom", **params) -> Path:
        script = busflow_sql(**params)
        digest = hashlib.sha1(f"{fmt}{script}".encode()).hexdigest()[:12]
        if digest in cache:
            return cache[digest]
        dbname = f"src_{digest}"
        with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        with psycopg.connect(**source_pg.conninfo(dbname).kwargs(), autocommit=True) as conn:
            conn.execute(script)
        path = out_dir / f"{digest}.{fmt}"
        flag = "-Fc" if fmt == "custom" else "-Fp"
        subprocess.run(
            [
                source_pg.tool("pg_dump"),
                flag,
                *source_pg.conninfo(dbname).libpq_args(),
                "-f",
                str(path),
            ],
            check=True,
            capture_output=True,
        )
        cache[digest] = path
        return path

    return _make


def database_with(pg: DisposablePostgres, name: str, script: str) -> str:
    """A fresh database `name` in `pg` (dropped first if there), made by `script`; a DSN for it
    (the superuser's, over the cluster's socket)."""
    with psycopg.connect(**pg.conninfo().kwargs(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    if script:
        with psycopg.connect(**pg.conninfo(name).kwargs(), autocommit=True) as conn:
            conn.execute(script)
    return " ".join(f"{k}={v}" for k, v in pg.conninfo(name).kwargs().items())


def pg_dump_of(pg: DisposablePostgres, dbname: str, out: Path) -> Path:
    """A plain `pg_dump -Fc` of `dbname` (no manifest) at `out`."""
    subprocess.run(
        [pg.tool("pg_dump"), "-Fc", *pg.conninfo(dbname).libpq_args(), "-f", str(out)], check=True
    )
    return out


def ed25519_keypair(directory: Path, name: str = "evidence") -> tuple[Path, Path]:
    """(private PEM path, public PEM path), made as the README says: openssl genpkey."""
    private, public = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(private)], check=True
    )
    subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)], check=True
    )
    return private, public


def check_evaluation(run_id: str, check):
    """The evaluation of `check` (an AssetCheckKey) in the run `run_id`, from the instance."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        for record in instance.event_log_storage.get_asset_check_execution_history(check, 10):
            if record.run_id == run_id:
                return record.event.dagster_event.event_specific_data
    raise AssertionError(f"{check.to_user_string()} did not run in {run_id}")


SESSION_CLUSTERS: set[Path] = set()  # the session-scoped servers, which outlive every test


def own_clusters(keep: Path | None = None) -> list[Path]:
    """Disposable clusters owned by this (test) process that still exist, but `keep` and the
    session's own servers."""
    found = []
    for root in Path(tempfile.gettempdir()).glob(DIR_PREFIX + "*"):
        try:
            if (
                json.loads((root / OWNER_FILE).read_text())["pid"] == os.getpid()
                and root != keep
                and root not in SESSION_CLUSTERS
            ):
                found.append(root)
        except (OSError, ValueError, KeyError):
            continue
    return found


class Harness:
    """One test's bucket, config folder and Dagster instance, and a way to run the CLI."""

    def __init__(
        self, s3: RcloneS3Server, tmp_path: Path, bucket: str, monkeypatch, capsys, source_pg
    ):
        self.s3, self.tmp, self.bucket, self.capsys = s3, tmp_path, bucket, capsys
        self.source_pg = source_pg
        self.bucket_dir = s3.bucket_dir(bucket)
        self.config_dir = tmp_path / "config"
        self.config_dir.mkdir()
        self.home = tmp_path / "dagster_home"
        self.home.mkdir()
        self.write_config()
        for name, value in {
            "BACKUP_PRIMARY_ENDPOINT": s3.endpoint,
            "BACKUP_BUCKET": bucket,
            "BACKUP_ACCESS_KEY_ID": ACCESS_KEY,
            "BACKUP_SECRET_ACCESS_KEY": SECRET_KEY,
            "DAGSTER_HOME": str(self.home),
            "BUSFLOW_VERIFY_CONFIG_DIR": str(self.config_dir),
        }.items():
            monkeypatch.setenv(name, value)
        for name in (
            "BACKUP_PREFIX",
            "BACKUP_FALLBACK_ENDPOINT",
            "BACKUP_REGION",
            "SLACK_OPS_WEBHOOK",
            "SLACK_BOT_TOKEN",
            "SLACK_OPS_CHANNEL",
            "SLACK_API_URL",
        ):
            monkeypatch.delenv(name, raising=False)

    def write_config(
        self, verify: dict | None = None, allowlist: dict | None = None, min_bytes: int = 1000
    ) -> None:
        verify = verify or {
            "size_guard": {"min_bytes": min_bytes, "max_median_ratio": 2.0, "trailing_days": 7},
            "row_counts": {"max_drop_ratio": 0.05, "max_growth_ratio": 0.5},
            "alerts": {"attempts": 4, "backoff_seconds": 0.01, "timeout_seconds": 1},
        }
        allowlist = allowlist or {
            "soft_fks": [
                {
                    "child": "communications.messages.booking_id",
                    "parent": "commerce.bookings.id",
                    "max_orphans": 200,
                }
            ]
        }
        (self.config_dir / "verify.yaml").write_text(yaml.safe_dump(verify))
        (self.config_dir / "soft-fk-allowlist.yaml").write_text(yaml.safe_dump(allowlist))

    def put(self, key: str, source: Path | bytes) -> Path:
        """Straight into the bucket's folder; served once this returns (`settle()`)."""
        dest = self.bucket_dir / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            dest.write_bytes(source)
        else:
            shutil.copyfile(source, dest)
        self.s3.settle()
        return dest

    def mirror_to(self, server: RcloneS3Server, monkeypatch) -> Path:
        """Copy the bucket to `server` and make it the fallback endpoint (the MinIO mirror)."""
        dest = server.bucket_dir(self.bucket)
        shutil.copytree(self.bucket_dir, dest, dirs_exist_ok=True)
        server.settle()
        monkeypatch.setenv("BACKUP_FALLBACK_ENDPOINT", server.endpoint)
        return dest

    def put_sized(self, key: str, size: int) -> Path:
        """An object of a given size (sparse: HEAD sees the size, the disk does not)."""
        dest = self.bucket_dir / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as fh:
            fh.truncate(size)
        self.s3.settle()
        return dest

    def verify(self, date: str, *extra: str) -> tuple[int, dict | str]:
        self.capsys.readouterr()
        code = cli.main(["verify", "--date", date, "--json", "--log-level", "WARNING", *extra])
        out = self.capsys.readouterr()
        self.last_stderr = out.err
        try:
            return code, json.loads(out.out)
        except ValueError:
            return code, out.out + out.err


@pytest.fixture
def harness(s3, tmp_path, monkeypatch, capsys, source_pg, request):
    bucket = "t-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    h = Harness(s3, tmp_path, bucket, monkeypatch, capsys, source_pg)
    yield h
    assert own_clusters(keep=source_pg.root) == [], (
        "a disposable Postgres was left behind after the run"
    )


class FakeSlack:
    """A loopback HTTP endpoint standing in for Slack's incoming webhook: records each POST and
    answers with the statuses a test queues (then 200); "hang" answers nothing for 3 s."""

    SECRET_PATH = "/services/T0BUSFLOW/B0OPS/" + secrets.token_hex(12)

    def __init__(self):
        import http.server
        import threading

        self.posts: list[dict] = []
        self.replies: list = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts.append({"path": self.path, "json": json.loads(body or b"{}")})
                reply = outer.replies.pop(0) if outer.replies else 200
                if reply == "hang":
                    import time

                    time.sleep(3)
                    return
                if isinstance(reply, dict):  # a Web API answer: HTTP 200 with ok true/false
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(json.dumps(reply).encode())
                    return
                self.send_response(reply)
                self.end_headers()
                self.wfile.write(b"ok" if reply == 200 else b"invalid_token")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.SECRET_PATH}"

    def texts(self) -> list[str]:
        return [p["json"].get("text", "") for p in self.posts]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack(monkeypatch):
    fake = FakeSlack()
    monkeypatch.setenv("SLACK_OPS_WEBHOOK", fake.url)
    yield fake
    fake.close()


SERVER_ADMIN = "verify_admin"
RESTORE_PASSWORD = "restore-secret-" + secrets.token_hex(8)


@pytest.fixture(scope="session")
def restore_server():
    """A restore server the team keeps (the `server` target): a cluster of its own whose
    administrative role (a superuser here: PostgreSQL 15 lets only superusers give BYPASSRLS)
    must give its password (scram)."""
    with DisposablePostgres() as pg:
        SESSION_CLUSTERS.add(pg.root)
        with psycopg.connect(**pg.conninfo().kwargs(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                    sql.Identifier(SERVER_ADMIN), sql.Literal(RESTORE_PASSWORD)
                )
            )
            hba = pg.data_dir / "pg_hba.conf"
            hba.write_text(f"local all {SERVER_ADMIN} scram-sha-256\n" + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
        yield pg


def restore_server_conninfo(
    pg: DisposablePostgres, password: str = RESTORE_PASSWORD, user: str = SERVER_ADMIN
):
    """How the `server` target reaches the restore server: its administrative role, with its
    password."""
    return ConnInfo(str(pg.root), pg.port, user, "postgres", password=password)


def use_server(monkeypatch, restore_server) -> None:
    """Point the job at the restore server (the `server` target)."""
    for name, value in {
        "BUSFLOW_RESTORE_TARGET": "server",
        "BUSFLOW_RESTORE_SERVER_HOST": str(restore_server.root),
        "BUSFLOW_RESTORE_SERVER_PORT": str(restore_server.port),
        "BUSFLOW_RESTORE_SERVER_USER": SERVER_ADMIN,
        "BUSFLOW_RESTORE_SERVER_PASSWORD": RESTORE_PASSWORD,
    }.items():
        monkeypatch.setenv(name, value)


def restore_database(pg: DisposablePostgres, name: str) -> RestoreDatabase:
    """A fresh database in `pg` owned by a restore role of its own, as the targets make it."""
    return provision(pg.conninfo(), name, f"{name}_owner")


@pytest.fixture(scope="session")
def docker_engine():
    """`make test-deploy`'s Docker engine with both images built (deployed/topology.py)."""
    from busflow_verify_tests.deployed.topology import engine_with_images

    yield from engine_with_images()
