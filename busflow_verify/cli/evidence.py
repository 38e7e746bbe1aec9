"""`busflow-verify evidence verify | list | write`: the signed evidence of verify runs
(docs/operating.md: Evidence).

verify: 0 when the evidence holds (its signature with a configured public key, the statement,
the chain to the date's earlier evidence, the dump as the bucket holds it now), 1 with the reason
otherwise. list: the date's evidence objects. write: (re)write a completed run's evidence, or
every pending one; 0 when written (or already there), 1 when not.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

from busflow_verify.cli.parser import EXIT_NOT_VERIFIED, EXIT_VERIFIED, UsageError
from busflow_verify.cli.scrub import scrub


def evidence(args) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    _require_store()
    run = {"verify": _verify, "list": _list, "write": _write}[args.action]
    try:
        return run(args)
    except (BotoCoreError, ClientError) as exc:  # the bucket itself: named, never a traceback
        print(
            scrub(
                f"busflow-verify: the bucket could not be read ({type(exc).__name__}: {exc}); "
                "check BACKUP_PRIMARY_ENDPOINT, BACKUP_BUCKET and the credentials"
            ),
            file=sys.stderr,
        )
        return EXIT_NOT_VERIFIED


def _require_store() -> None:
    from busflow_verify.defs import environment

    missing = [n for n in environment.REQUIRED[:2] if not environment.is_set(n)]
    if missing:
        raise UsageError(
            f"environment variable(s) not set: {', '.join(missing)} (the bucket the evidence is in)"
        )


def _date(args) -> str:
    if not args.date:
        raise UsageError(f"evidence {args.action} needs --date YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(args.date).isoformat()
    except ValueError:
        raise UsageError(f"--date {args.date!r} is not a date (YYYY-MM-DD)") from None


def _public_keys() -> list:
    from busflow_verify.core.report.signing import PUBLIC_KEY_ENV, KeyProblem, load_public_keys
    from busflow_verify.defs import environment

    value = environment.evidence_public_keys()
    if value is None:
        raise UsageError(
            f"{PUBLIC_KEY_ENV} is not set: give the public key(s) the evidence is checked "
            "against (a PEM file; never the key the evidence could carry)"
        )
    try:
        return load_public_keys(value)
    except KeyProblem as exc:
        raise UsageError(str(exc)) from None


def _verify(args) -> int:
    from busflow_verify.core.store.audit import audit
    from busflow_verify.defs.resources import built_backup_store

    partition, keys = _date(args), _public_keys()
    with built_backup_store() as store:
        result = audit(
            store.primary.client(), store.bucket, store.prefix, partition, keys, args.run
        )
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        print("\n".join(_audit_lines(result)))
    return EXIT_VERIFIED if result.holds else EXIT_NOT_VERIFIED


def _audit_lines(result) -> list[str]:
    head = "HOLDS" if result.holds else "DOES NOT HOLD"
    lines = [f"evidence {result.partition}: {head}"]
    if result.key:
        lines.append(f"  object    {result.key}")
    predicate = result.predicate or {}
    if predicate:
        run = predicate.get("run") or {}
        verdict = "VERIFIED" if predicate.get("verified") else "NOT VERIFIED"
        lines.append(f"  run       {run.get('run_id')}  {verdict}  ended {run.get('ended_at')}")
        lines.append(f"  signed by {result.keyid}")
        dump = predicate.get("dump") or {}
        if dump.get("sha256"):
            lines.append(
                f"  dump      {dump.get('key')}  {dump.get('size_bytes'):,} bytes  "
                f"sha256 {dump['sha256']}"
            )
        lines.append(f"  chain     {len(result.chain)} earlier evidence object(s) of the date")
    lines += [f"  PROBLEM   {p}" for p in result.problems]
    return lines


def _list(args) -> int:
    from busflow_verify.core.report.signing import signature_keyids
    from busflow_verify.core.store.evidence import (
        list_evidence,
        read_evidence,
        run_id_of,
        sha256_hex,
    )
    from busflow_verify.defs.resources import built_backup_store

    partition = _date(args)
    rows = []
    with built_backup_store() as store:
        client = store.primary.client()
        for obj in list_evidence(client, store.bucket, store.prefix, partition):
            data = read_evidence(client, store.bucket, obj.key) or b""
            rows.append(
                {
                    "key": obj.key,
                    "run_id": run_id_of(obj.key),
                    "size_bytes": obj.size_bytes,
                    "last_modified": obj.last_modified,
                    "sha256": sha256_hex(data),
                    "keyids": signature_keyids(data),
                }
            )
    for row in rows:
        print(
            json.dumps(row)
            if args.json
            else f"{row['key']}  run {row['run_id']}  {row['size_bytes']} bytes  "
            f"sha256 {row['sha256']}  signed by {','.join(row['keyids']) or '-'}"
        )
    if not rows and not args.json:
        print(f"no evidence for {partition}")
    return EXIT_VERIFIED


def _write(args) -> int:
    from busflow_verify.defs import environment
    from busflow_verify.defs import evidence as ev
    from busflow_verify.defs.instance import open_instance
    from busflow_verify.defs.resources import built_backup_store

    def log(message):
        print(scrub(message), file=sys.stderr)

    if not environment.dagster_home():
        raise UsageError("DAGSTER_HOME is not set (the instance the runs are read from)")
    with open_instance() as instance, built_backup_store() as store:
        if args.pending:
            results = ev.write_pending(instance, store, log)
        else:
            partition = _date(args)
            run_id = _run_to_write(instance, partition, args.run)
            outcome = ev.write_for_run(instance, run_id, store, log)
            results = [{"partition": partition, "run_id": run_id, **outcome.to_json()}]
    return EXIT_VERIFIED if print_written(results) else EXIT_NOT_VERIFIED


def print_written(results: list[dict]) -> bool:
    """A line per run whose evidence was written (or not, and why); True when all were."""
    for r in results:
        state = f"written {r['key']}" if r["written"] else f"NOT written: {r.get('reason')}"
        print(scrub(f"evidence {r['partition']}  {r['run_id']}  {state}"))
    return all(r["written"] for r in results)


def _run_to_write(instance, partition: str, run_id: str | None) -> str:
    """`--run`, checked to be a completed run of the date; else the date's latest."""
    from busflow_verify.defs.run_history import COMPLETED, PARTITION_TAG, latest_completed_runs

    if run_id is None:
        record = latest_completed_runs(instance).get(partition)
        if record is None:
            raise UsageError(f"no completed verify run of {partition} in the instance")
        return record.dagster_run.run_id
    run = instance.get_run_by_id(run_id)
    if run is None or run.tags.get(PARTITION_TAG) != partition or run.status not in COMPLETED:
        raise UsageError(f"--run {run_id} is no completed verify run of {partition}")
    return run_id
