"""The demo's generator and S3 server as building blocks: exact determinism, the orphan baseline
and the planted surge, both dump formats, production's extensions where the server has them (and
a database without them where it has not), and the S3 behaviour the pipeline relies on (sizes,
sparse 11 GB objects, error codes, an outage and its end)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess

import boto3
import botocore.exceptions
import psycopg
import pytest
from botocore.config import Config

from busflow_verify.core.postgres.cluster import DisposablePostgres
from busflow_verify.core.postgres.servers import installed
from busflow_verify.demo.busflow_db import (
    CRON_JOB,
    EXTENSIONS,
    TABLES,
    build_day,
    supported_extensions,
    write_nightly_dumps,
)
from busflow_verify.demo.s3server import RcloneS3Server, rclone_binary

pytestmark = pytest.mark.e2e

ORPHAN_MESSAGES = """
    SELECT count(*) FROM communications.messages m
    LEFT JOIN commerce.bookings b ON b.id = m.booking_id
    WHERE m.booking_id IS NOT NULL AND b.id IS NULL"""


def _has_all_extensions(server) -> bool:
    return set(EXTENSIONS) <= server.extensions and server.has_library("pg_cron")


NEWEST = installed()[0]


@pytest.fixture(scope="module")
def db(source_pg):
    with psycopg.connect(**source_pg.conninfo().kwargs(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS demo_db_gen")
        admin.execute("CREATE DATABASE demo_db_gen")
    with psycopg.connect(**source_pg.conninfo("demo_db_gen").kwargs(), autocommit=True) as conn:
        yield conn


def _client(server: RcloneS3Server, **overrides):
    args = {
        "endpoint_url": server.endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": server.access_key,
        "aws_secret_access_key": server.secret_key,
        "config": Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=2,
            read_timeout=10,
        ),
    }
    return boto3.client("s3", **{**args, **overrides})


def _error_code(call) -> tuple[str, int]:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        call()
    return err.value.response["Error"]["Code"], err.value.response["ResponseMetadata"][
        "HTTPStatusCode"
    ]


def test_every_night_grows_and_the_same_seed_gives_the_same_counts(db):
    nights = [build_day(db, day) for day in range(4)]
    assert list(nights[0]) == TABLES
    for before, after in zip(nights, nights[1:]):
        for table in TABLES[:3]:
            assert after[table] > before[table], table
    assert build_day(db, 2) == nights[2]
    assert build_day(db, 2, seed=7) == nights[2]
    assert nights[0]["public.tenant_scrub_logs"] == 1
    scaled = build_day(db, 0, scale=3)
    assert 2.5 * nights[0]["commerce.bookings"] < scaled["commerce.bookings"]


def test_baseline_orphans_are_few_and_logged_the_planted_surge_is_not(db):
    build_day(db, 1)
    baseline = db.execute(ORPHAN_MESSAGES).fetchone()[0]
    assert 0 < baseline < 200
    # the baseline comes from the scrubbed tenant, whose scrub-log entry records the tombstones
    scrubbed, tombstoned = db.execute(
        "SELECT tenant_id, rows_tombstoned FROM public.tenant_scrub_logs"
    ).fetchone()
    assert tombstoned > 0
    assert db.execute(
        """SELECT count(DISTINCT m.tenant_id) = 1 AND min(m.tenant_id) = %s
                         FROM communications.messages m WHERE m.booking_id IS NOT NULL AND NOT
                         EXISTS (SELECT 1 FROM commerce.bookings b WHERE b.id = m.booking_id)""",
        (scrubbed,),
    ).fetchone()[0]

    build_day(db, 1, planted="orphan_surge")
    assert db.execute(ORPHAN_MESSAGES).fetchone()[0] > 200
    assert db.execute("SELECT count(*) FROM public.tenant_scrub_logs").fetchone()[0] == 1

    with pytest.raises(ValueError, match="unknown planted"):
        build_day(db, 1, planted="meteor")


def test_nightly_dumps_are_real_dumps_in_both_formats(tmp_path):
    dates = [dt.date(2026, 11, 19), dt.date(2026, 11, 20)]
    custom = write_nightly_dumps(tmp_path / "c", dates, planted={dates[1]: "mass_delete"})
    assert [p.name for p in custom] == ["pg_dump_20261119_0100.dump", "pg_dump_20261120_0100.dump"]
    for path in custom:
        assert path.read_bytes()[:5] == b"PGDMP"
    # the planted mass delete makes the second night's dump smaller although the data grew
    assert custom[1].stat().st_size < custom[0].stat().st_size

    [plain] = write_nightly_dumps(tmp_path / "p", dates[:1], fmt="plain", hhmm="0230")
    assert plain.name == "pg_dump_20261119_0230.dump"
    head = plain.read_text()[:500]
    assert "PostgreSQL database dump" in head and not head.startswith("PGDMP")

    with pytest.raises(ValueError, match="unknown dump format"):
        write_nightly_dumps(tmp_path / "x", dates, fmt="tar")


def test_s3_server_serves_sizes_bodies_and_error_codes_and_survives_an_outage(tmp_path):
    assert os.access(rclone_binary(), os.X_OK)
    server = RcloneS3Server(tmp_path / "s3")
    with server:
        log_dir = server.log_file.parent
        assert log_dir.is_dir()
        bucket = server.bucket_dir("busflow-backups")
        key = "pg_dump_20261120_0100.dump"
        (bucket / key).write_bytes(b"PGDMP" + b"\0" * 995)
        big = bucket / "pg_dump_20261121_0100.dump"
        big.touch()
        os.truncate(big, 11 * 10**9)  # sparse: a realistic size, no disk
        server.settle()
        client = _client(server)

        listed = {
            o["Key"]: o["Size"]
            for o in client.list_objects_v2(Bucket="busflow-backups")["Contents"]
        }
        assert listed == {key: 1000, big.name: 11 * 10**9}
        assert client.head_object(Bucket="busflow-backups", Key=key)["ContentLength"] == 1000
        body = client.get_object(Bucket="busflow-backups", Key=key)["Body"].read()
        assert body[:5] == b"PGDMP" and len(body) == 1000
        head = client.head_object(Bucket="busflow-backups", Key=big.name)
        assert head["ContentLength"] == 11 * 10**9
        assert head["ETag"].strip('"') == ""  # no MD5 ETag: HEAD does not read the 11 GB

        assert _error_code(lambda: client.get_object(Bucket="busflow-backups", Key="nope")) == (
            "NoSuchKey",
            404,
        )
        assert _error_code(lambda: client.head_object(Bucket="busflow-backups", Key="nope")) == (
            "404",
            404,
        )  # HEAD has no body, so no S3 error code
        assert _error_code(lambda: client.list_objects_v2(Bucket="absent")) == ("NoSuchBucket", 404)
        wrong_secret = _client(server, aws_secret_access_key="not-the-secret")
        assert _error_code(lambda: wrong_secret.list_objects_v2(Bucket="busflow-backups")) == (
            "SignatureDoesNotMatch",
            403,
        )

        port = server.port
        server.stop()
        server.stop()  # idempotent
        assert not log_dir.exists()
        with pytest.raises(botocore.exceptions.EndpointConnectionError):
            client.head_object(Bucket="busflow-backups", Key=key)

        server.restart()
        assert server.port == port
        assert client.head_object(Bucket="busflow-backups", Key=key)["ContentLength"] == 1000
        proc = server._proc
    assert proc.poll() is not None  # the context manager stopped it
    assert server.log_file is None


def test_tenants_are_skewed(db):
    build_day(db, 0)
    sizes = dict(
        db.execute("SELECT tenant_id, count(*) FROM commerce.bookings GROUP BY 1").fetchall()
    )
    assert sizes[1] > 5 * sizes[20]


def test_mass_delete_drops_messages(db):
    clean = build_day(db, 2)["communications.messages"]
    dropped = build_day(db, 2, planted="mass_delete")["communications.messages"]
    assert dropped < 0.7 * clean


@pytest.mark.skipif(
    not _has_all_extensions(NEWEST), reason=f"{NEWEST.label} lacks one of {', '.join(EXTENSIONS)}"
)
def test_a_restored_demo_dump_carries_pgcrypto_pgvector_and_pg_cron(tmp_path):
    dates = [dt.date(2026, 11, 19), dt.date(2026, 11, 20)]
    dump = write_nightly_dumps(tmp_path, dates)[-1]  # the second night: the job scheduled once
    with DisposablePostgres() as pg:  # pg_cron's database: "restored", as for the pipeline
        with psycopg.connect(**pg.conninfo().kwargs(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE restored")
        target = pg.conninfo("restored")
        proc = subprocess.run(
            [pg.tool("pg_restore"), "--exit-on-error", *target.libpq_args(), str(dump)],
            capture_output=True,
            text=True,
            env=target.env(),
        )
        assert proc.returncode == 0, proc.stderr
        with psycopg.connect(**target.kwargs(), autocommit=True) as conn:
            extensions = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
            assert set(EXTENSIONS) <= extensions

            # pgvector: a vector(3) column, every 10th message embedded, an HNSW index that a
            # nearest-neighbour query uses
            assert (
                conn.execute("""
                SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                WHERE attrelid = 'communications.messages'::regclass AND attname = 'embedding'
                """).fetchone()[0]
                == "vector(3)"
            )
            [indexdef] = [
                r[0]
                for r in conn.execute(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = 'communications' "
                    "AND indexdef LIKE '%USING hnsw%'"
                )
            ]
            assert "(embedding vector_l2_ops)" in indexdef
            embedded, tenth, wrong = conn.execute("""
                SELECT count(embedding), count(*) FILTER (WHERE mod(id, 10) = 0),
                       count(*) FILTER (WHERE embedding IS DISTINCT FROM CASE WHEN mod(id, 10) = 0
                           THEN ARRAY[mod(id, 7), mod(id, 11), mod(tenant_id, 13)]::real[]::vector
                           END)
                FROM communications.messages""").fetchone()
            assert embedded == tenth > 500 and wrong == 0
            assert (
                conn.execute("SELECT embedding::text FROM communications.messages WHERE id = 10")
                .fetchone()[0]
                .startswith("[3,10,")
            )
            conn.execute("SET enable_seqscan = off")
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    "EXPLAIN SELECT id FROM communications.messages "
                    "ORDER BY embedding <-> '[1,2,3]' LIMIT 5"
                )
            )
            assert "messages_embedding_hnsw" in plan

            # pgcrypto: every booking's token is its SHA-256 prefix, computed again by pgcrypto
            bookings, tokens, mismatched = conn.execute("""
                SELECT count(*), count(card_token), count(*) FILTER (WHERE card_token IS DISTINCT
                    FROM left(encode(digest('card:' || id, 'sha256'), 'hex'), 16))
                FROM commerce.bookings""").fetchone()
            assert bookings == tokens > 1000 and mismatched == 0
            first_id, token = conn.execute(
                "SELECT id, card_token FROM commerce.bookings ORDER BY id LIMIT 1"
            ).fetchone()
            assert token == hashlib.sha256(f"card:{first_id}".encode()).hexdigest()[:16]

            # pg_cron: the one scrub job, as the source scheduled it (never launched here)
            assert conn.execute(
                "SELECT jobid, jobname, schedule, command, database, active FROM cron.job"
            ).fetchall() == [
                (
                    1,
                    CRON_JOB,
                    "0 4 * * *",
                    "DELETE FROM public.tenant_scrub_logs WHERE false",
                    "busflow",
                    True,
                )
            ]
            assert conn.execute("SHOW cron.launch_active_jobs").fetchone()[0] == "off"


def test_extensions_a_database_cannot_have_are_left_out(db):
    # the module's database is not the source cluster's pg_cron database ("restored")
    assert "pg_cron" not in supported_extensions(db)
    build_day(db, 0)
    names = {r[0] for r in db.execute("SELECT extname FROM pg_extension")}
    assert "pg_cron" not in names and set(supported_extensions(db)) <= names
    lacking = [s for s in installed() if not _has_all_extensions(s)]
    if not lacking:
        pytest.skip(f"every installed server has {', '.join(EXTENSIONS)}")
    server = lacking[0]  # here Debian's 15: pgcrypto, no pgvector, a pg_cron it does not preload
    with DisposablePostgres(bin_dir=str(server.bin_dir), cron_database="busflow") as pg:
        with psycopg.connect(**pg.conninfo().kwargs(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE busflow")
            preloaded = "pg_cron" in admin.execute("SHOW shared_preload_libraries").fetchone()[0]
        with psycopg.connect(**pg.conninfo("busflow").kwargs(), autocommit=True) as conn:
            has = [
                e for e in EXTENSIONS if e in server.extensions and (e != "pg_cron" or preloaded)
            ]
            assert supported_extensions(conn) == has
            assert build_day(conn, 0) == build_day(db, 0)  # the same rows either way
            names = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
            assert names - {"plpgsql"} == set(has)
            columns = {
                r[0]
                for r in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attnum > 0 AND attrelid IN "
                    "('communications.messages'::regclass, 'commerce.bookings'::regclass)"
                )
            }
            assert ("embedding" in columns) == ("vector" in has)
            assert ("card_token" in columns) == ("pgcrypto" in has)
