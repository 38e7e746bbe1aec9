"""A broken verifier still gives a verdict (exit 3), and runs at once are safe: simultaneous
first runs on a fresh DAGSTER_HOME, and simultaneous promotions of different dates."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3
import dagster as dg
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from busflow_verify import cli
from busflow_verify.cli.parser import EXIT_VERIFIER_BROKE
from busflow_verify.cli.verify import exit_status
from busflow_verify.core.store import pointer as ptr
from busflow_verify.core.verdict import Verdict
from busflow_verify.defs.alerts import OUTBOX_DIR
from busflow_verify.defs.instance import INSTANCE_LOCK
from busflow_verify.defs.promotion import promote
from busflow_verify.defs.resources import BackupStore, S3Endpoint
from busflow_verify_tests.conftest import ACCESS_KEY, SECRET_KEY

DAY = "2026-11-20"
REPO = Path(__file__).resolve().parents[2]


def _boom(exc):
    def raise_it(*args, **kwargs):
        raise exc

    return raise_it


def _instance_creation_fails(monkeypatch, exc) -> None:
    """Both ways of making the instance raise (`get`, and `from_ref`: defs/instance.py's)."""
    for name in ("get", "from_ref"):
        monkeypatch.setattr(dg.DagsterInstance, name, staticmethod(_boom(exc)))


# --- a crash outside the job still ends with a verdict -------------------------------------------


@pytest.mark.e2e
def test_a_crash_creating_the_instance_prints_a_verdict_tells_ops_and_exits_3(
    harness, slack, monkeypatch
):
    _instance_creation_fails(
        monkeypatch, sqlite3.OperationalError("table runs already exists\nsecond line")
    )
    code, verdict = harness.verify(DAY)
    assert code == EXIT_VERIFIER_BROKE == 3
    assert isinstance(verdict, dict), verdict
    assert verdict["partition"] == DAY and verdict["verified"] is False
    [failure] = verdict["failures"]
    assert failure["code"] == "VERIFY_JOB_ERROR"
    assert "OperationalError: table runs already exists" in failure["summary"]
    assert "second line" not in failure["summary"]
    assert verdict["alert"]["delivered"] is True
    assert len(slack.posts) == 1 and "VERIFY_JOB_ERROR" in slack.texts()[0]


@pytest.mark.e2e
def test_a_crash_reading_the_verdict_back_keeps_the_message_in_the_outbox(harness, monkeypatch):
    monkeypatch.setattr(
        "busflow_verify.defs.finish.verdict_for_run", _boom(RuntimeError("storage went away"))
    )
    code, verdict = harness.verify(DAY)
    assert code == 3 and verdict["verified"] is False
    [failure] = verdict["failures"]
    assert failure["code"] == "VERIFY_JOB_ERROR"
    assert "RuntimeError: storage went away" in failure["summary"]
    assert verdict["run_id"]  # the run was launched: its id is in the verdict
    [kept] = sorted((harness.home / OUTBOX_DIR).glob("*.json"))
    message = json.loads(kept.read_text())
    assert message["partition"] == DAY and "VERIFY_JOB_ERROR" in message["text"]
    assert message["run_id"] == verdict["run_id"]


@pytest.mark.e2e
def test_a_crash_never_shows_a_secret(harness, slack, monkeypatch):
    monkeypatch.setenv("BUSFLOW_RESTORE_SERVER_PASSWORD", "pw-" + "x" * 12)
    path = slack.SECRET_PATH
    monkeypatch.setattr(
        "dagster.JobDefinition.execute_in_process",
        _boom(
            ValueError(
                f"POST {slack.url} failed; key {SECRET_KEY}; path {path}; pw pw-{'x' * 12}; "
                f"see {harness.s3.endpoint}/some/object"
            )
        ),
    )
    code, verdict = harness.verify(DAY)
    assert code == 3
    everything = json.dumps(verdict) + harness.last_stderr + "".join(slack.texts())
    for secret in (slack.url, path, SECRET_KEY, "pw-" + "x" * 12):
        assert secret not in everything
    summary = verdict["failures"][0]["summary"]
    assert summary.startswith("the verifier broke while running the job: ValueError: POST ***")
    assert f"{harness.s3.endpoint}/***" in summary  # the host stays, the path goes


@pytest.mark.e2e
def test_a_crashed_step_exits_3_and_reads_as_text(harness, monkeypatch):
    shutil.rmtree(harness.bucket_dir)  # the job's own handling: VERIFY_JOB_ERROR, no such bucket
    code, verdict = harness.verify(DAY)
    assert code == 3, verdict
    assert {f["code"] for f in verdict["failures"]} == {"VERIFY_JOB_ERROR"}
    harness.capsys.readouterr()
    _instance_creation_fails(monkeypatch, OSError("disk full"))
    assert cli.main(["verify", "--date", DAY, "--log-level", "ERROR"]) == 3
    out = harness.capsys.readouterr().out
    assert f"backup verify {DAY}: NOT VERIFIED" in out
    assert "VERIFY_JOB_ERROR" in out and "OSError: disk full" in out


def test_the_exit_status_rule():
    def verdict(verified, *codes):
        return Verdict(DAY, verified, failures=tuple({"code": c} for c in codes))

    assert exit_status(verdict(True, "F4")) == 0
    assert exit_status(verdict(False, "F3")) == 1
    assert exit_status(verdict(False, "VERIFY_JOB_ERROR", "DUMP_MISSING")) == 1
    assert exit_status(verdict(False, "VERIFY_JOB_ERROR")) == 3
    assert exit_status(verdict(False, "VERIFY_JOB_ERROR", "F4")) == 3
    assert exit_status(verdict(False)) == 3  # not verified, nothing found: not a verdict


# --- simultaneous first runs on a fresh DAGSTER_HOME -------------------------------------------


@pytest.mark.e2e
def test_simultaneous_first_runs_on_a_fresh_home_all_give_a_verdict(harness):
    """Without the instance lock about one round in three crashed (alembic "more than one
    head", "table runs already exists"): exit 1, a traceback, no JSON."""
    env_names = (
        "BACKUP_PRIMARY_ENDPOINT",
        "BACKUP_BUCKET",
        "BACKUP_ACCESS_KEY_ID",
        "BACKUP_SECRET_ACCESS_KEY",
        "BUSFLOW_VERIFY_CONFIG_DIR",
    )
    base = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME",)}
    base.update({k: os.environ[k] for k in env_names})
    for round_no in range(3):
        home = harness.tmp / f"fresh-home-{round_no}"
        home.mkdir()
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        env = {**base, "DAGSTER_HOME": str(home)}
        command = [sys.executable, "-m", "busflow_verify.cli", "verify", "--date", DAY, "--json"]
        procs = [
            subprocess.Popen(
                [*command, "--log-level", "ERROR"],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode in (0, 1), (round_no, proc.returncode, err[-3000:])
            assert "Traceback" not in err, err[-3000:]
            verdict = json.loads(out)
            assert verdict["partition"] == DAY
            assert {f["code"] for f in verdict["failures"]} == {"DUMP_MISSING"}
        assert (home / INSTANCE_LOCK).exists()


# --- simultaneous promotions ---------------------------------------------------------------------


def _verdict(day: str) -> Verdict:
    return Verdict(
        partition=day,
        verified=True,
        dump={"key": f"pg_dump_{day.replace('-', '')}_0100.dump", "size_bytes": 1},
        run_id=f"run-{day}",
    )


DATES = [f"2026-11-{d:02d}" for d in (14, 15, 16, 17, 18)]


def _recording_writes(monkeypatch):
    """Every pointer write that the store accepted, in order."""
    writes: list[tuple[str, str]] = []
    guard = threading.Lock()
    real = ptr.write_pointer

    def write(client, bucket, prefix, record, **conditions):
        with guard:  # held across the PUT: the list's order is the store's order
            real(client, bucket, prefix, record, **conditions)
            writes.append((prefix, record["partition"]))

    monkeypatch.setattr(ptr, "write_pointer", write)
    return writes


def _race(promote_one, dates, observe):
    """Promote every date at once (a barrier), watching the pointer meanwhile."""
    seen: list[str] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            record = observe()
            if record and (not seen or seen[-1] != record["partition"]):
                seen.append(record["partition"])
            time.sleep(0.002)

    barrier = threading.Barrier(len(dates))
    outcomes: dict[str, dict] = {}
    errors: list[BaseException] = []

    def one(day):
        try:
            barrier.wait()
            outcomes[day] = promote_one(day)
        except BaseException as exc:  # noqa: B036 (reported by the test)
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=one, args=(d,)) for d in dates]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    watcher.join()
    if (record := observe()) and (not seen or seen[-1] != record["partition"]):
        seen.append(record["partition"])
    assert not errors, errors
    return outcomes, seen


def _client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.mark.e2e
def test_the_loopback_s3_server_ignores_conditional_writes(harness):
    """What rclone serve s3 does with If-None-Match / If-Match (why the lock object exists):
    both are accepted and applied, and GET/HEAD give no ETag. The probe must agree."""
    client = _client(harness.s3.endpoint)
    key = "probe.json"
    client.put_object(Bucket=harness.bucket, Key=key, Body=b"1")
    refused = []
    for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"no-such-etag"'}):
        try:
            client.put_object(Bucket=harness.bucket, Key=key, Body=b"2", **condition)
        except ClientError as exc:
            refused.append(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    honoured = refused == [412, 412]
    assert ptr.supports_conditional_writes(client, harness.bucket, "probe/") is honoured
    if not honoured:  # rclone 1.75: both overwrote the object
        assert client.get_object(Bucket=harness.bucket, Key=key)["Body"].read() == b"2"


@pytest.mark.e2e
def test_promotions_at_once_end_on_the_newest_and_never_move_back(harness, monkeypatch):
    """Real promote() against the loopback S3 server, three dates at once, two rounds."""
    writes = _recording_writes(monkeypatch)
    observer = _client(harness.s3.endpoint)
    for round_no in range(2):
        prefix = f"race{round_no}/"
        store = BackupStore(
            primary=S3Endpoint(
                endpoint_url=harness.s3.endpoint,
                access_key_id=ACCESS_KEY,
                secret_access_key=SECRET_KEY,
            ),
            bucket=harness.bucket,
            prefix=prefix,
        )
        order = DATES[2:][round_no % 2 :] + DATES[2:][: round_no % 2]  # three at once
        outcomes, seen = _race(
            lambda day, store=store: promote(_verdict(day), store, log=lambda m: None),
            order,
            lambda prefix=prefix: ptr.read_pointer(observer, harness.bucket, prefix),
        )
        assert seen == sorted(seen) and seen[-1] == DATES[-1], seen
        assert outcomes[DATES[-1]]["promoted"] is True
        mine = [day for p, day in writes if p == prefix]
        assert mine == sorted(mine) and len(set(mine)) == len(mine), mine
        assert ptr.read_pointer(observer, harness.bucket, prefix)["partition"] == DATES[-1]
        assert {o.get("method") for o in outcomes.values() if o["promoted"]} <= {
            "lock-object",
            "conditional-write",
        }
        assert not list((harness.bucket_dir / prefix).glob(f"{ptr.LOCK_NAME}/*"))  # released


class ConditionalStore:
    """An in-memory S3 that honours If-Match / If-None-Match on PUT (as AWS S3 and MinIO do),
    slow enough that promotions interleave."""

    def __init__(self):
        self.meta = type("Meta", (), {"endpoint_url": f"memory://{uuid.uuid4().hex}"})
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.guard = threading.Lock()
        self.version = 0
        self.refused = 0

    @staticmethod
    def _error(code, status):
        return ClientError(
            {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
        )

    def get_object(self, Bucket, Key):  # noqa: N803 (boto3's names)
        time.sleep(0.002)
        with self.guard:
            if Key not in self.objects:
                raise self._error("NoSuchKey", 404)
            body, etag = self.objects[Key]

        class Body:
            def read(self):
                return body

        return {"Body": Body(), "ETag": etag}

    def head_object(self, Bucket, Key):  # noqa: N803
        return {"ETag": self.get_object(Bucket, Key)["ETag"]}

    def put_object(self, Bucket, Key, Body, IfMatch=None, IfNoneMatch=None, **_):  # noqa: N803
        time.sleep(0.002)
        with self.guard:
            exists = Key in self.objects
            if (IfNoneMatch == "*" and exists) or (
                IfMatch and (not exists or self.objects[Key][1] != IfMatch)
            ):
                self.refused += 1
                raise self._error("PreconditionFailed", 412)
            self.version += 1
            self.objects[Key] = (Body, f'"v{self.version}"')
        return {"ETag": f'"v{self.version}"'}


def test_conditional_writes_race_ends_on_the_newest_and_never_moves_back(monkeypatch):
    """The If-Match path, on a store that honours it: eight dates at once, many rounds."""
    writes = _recording_writes(monkeypatch)
    dates = [f"2026-11-{d:02d}" for d in range(10, 18)]
    refused = 0
    for round_no in range(15):
        writes.clear()
        store = ConditionalStore()
        assert ptr.supports_conditional_writes(store, "b", "") is True
        order = dates[round_no % len(dates) :] + dates[: round_no % len(dates)]

        def promote_one(day, store=store):
            def decide(current):
                move, why = ptr.promotion_decision(_verdict(day), current)
                return move, why, ptr.pointer_record(_verdict(day)) if move else None

            advanced = ptr.advance_pointer(store, "b", "", decide, attempts=20)
            return {"promoted": advanced.moved, "method": advanced.method}

        outcomes, seen = _race(promote_one, order, lambda s=store: ptr.read_pointer(s, "b", ""))
        assert seen == sorted(seen) and seen[-1] == dates[-1], seen
        assert {o["method"] for o in outcomes.values()} == {"conditional-write"}
        refused += store.refused - 2  # the probe's two refusals
        accepted = [day for _, day in writes]
        assert accepted == sorted(accepted) and len(set(accepted)) == len(accepted), accepted
    assert refused > 0  # the race really happened: stale writes were refused and re-decided


@pytest.mark.e2e
def test_a_crashed_contenders_lock_keys_block_only_until_they_expire(harness):
    """A promotion that died holding the lock (or while choosing) leaves keys that expire: the
    next promotion waits for them, no longer, and deletes them."""
    client = _client(harness.s3.endpoint)
    folder = ptr.lock_key("crashed/") + "/"
    past, soon = time.time_ns() - 10**9, time.time_ns() + 2 * 10**9
    client.put_object(Bucket=harness.bucket, Key=f"{folder}ticket-000000000001-dead-{past:020d}")
    client.put_object(Bucket=harness.bucket, Key=f"{folder}choosing-hung-{soon:020d}")
    started, started_ns = time.monotonic(), time.time_ns()
    with ptr.pointer_lock(
        client, harness.bucket, "crashed/", expiry_seconds=600, wait_seconds=300
    ) as still_held:
        waited = time.monotonic() - started
        still_held()
    # the hung contender's key held it until it expired, and no longer: the dead holder's ticket
    # expired 1 s ago and never counted (a slow loopback store can stretch the wait, and the two
    # writes above eat into it: the key's time left when the lock was asked for is the bound)
    left = (soon - started_ns) / 1e9
    assert waited > left - 0.1 > 0, (waited, left)
    assert not list((harness.bucket_dir / "crashed").glob(f"{ptr.LOCK_NAME}/*"))
