"""The JSON verdict other tools read (README: the JSON verdict of `busflow-verify verify --json`).

Built from what a run recorded: its check evaluations, step failures and asset metadata. A
partition is verified only when the run completed and every expected check has an evaluation
that passed; a check that did not run is not a pass.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from busflow_verify.core.failures import Finding, failure_label


@dataclass
class CheckOutcome:
    check: str  # "asset:check_name"
    passed: bool | None  # None: did not run
    findings: list[dict[str, Any]] = field(default_factory=list)
    description: str | None = None
    severity: str = "ERROR"  # of a failure: WARN is informational (a notice), ERROR a failure

    @property
    def informational(self) -> bool:
        return self.passed is False and self.severity == "WARN" and bool(self.findings)

    @property
    def ok(self) -> bool:
        return self.passed is True or self.informational


@dataclass
class RunFacts:
    partition: str
    run_id: str
    run_status: str
    checks: list[CheckOutcome]
    step_failures: list[dict[str, Any]]  # finding dicts (already in the catalogue's shape)
    dump: dict[str, Any] | None = None
    row_counts: dict[str, int] | None = None
    row_count_deltas: list[dict[str, Any]] | None = None
    baseline_partition: str | None = None
    orphans: list[dict[str, Any]] | None = None
    restore: dict[str, Any] | None = None
    size_guard: dict[str, Any] | None = None
    f1_triage: dict[str, Any] | None = None
    column_signature: dict[str, Any] | None = None  # per table, [[column, type], ...]


def is_verified(facts: RunFacts) -> bool:
    return (
        facts.run_status == "SUCCESS"
        and not facts.step_failures
        and all(c.ok for c in facts.checks)
    )


def _with_f1_triage(failure: dict[str, Any], f1: dict[str, Any] | None) -> dict[str, Any]:
    """F1's answer to its own steps 1-3, found after the restore, in the F1 failure itself."""
    if failure["code"] != "F1" or not f1:
        return failure
    return {
        **failure,
        "summary": f"{failure['summary']}. Triage: {f1['conclusion']}",
        "details": {**failure["details"], "triage": f1},
    }


@dataclass(frozen=True)
class Verdict:
    """One run's verdict, built once from what the run recorded (`build_verdict`); the steps
    after the run (promotion, the #ops message) return a new one (`dataclasses.replace`).
    `to_json` is the JSON other tools read."""

    partition: str
    verified: bool
    run_id: str | None = None
    run_status: str | None = None
    dump: dict[str, Any] | None = None
    failures: tuple[dict[str, Any], ...] = ()
    notices: tuple[dict[str, Any], ...] = ()
    row_counts: dict[str, int] = field(default_factory=dict)
    orphans: tuple[dict[str, Any], ...] = ()
    row_count_baseline: str | None = None
    row_count_deltas: tuple[dict[str, Any], ...] = ()
    size_guard: dict[str, Any] | None = None
    restore: dict[str, Any] | None = None
    checks: tuple[dict[str, Any], ...] = ()
    cutover_halt: dict[str, Any] | None = None
    primary_down: bool = False  # this run found the offsite primary unreachable
    primary_down_since: str | None = None  # when that outage began (F5 step 3)
    promoted: bool = False
    promotion: dict[str, Any] | None = None  # verify --promote: the decision and the pointer
    alert: dict[str, Any] | None = None  # the #ops delivery
    evidence: dict[str, Any] | None = None  # the signed evidence written (core/report/evidence.py)

    def with_failure(self, failure: dict[str, Any]) -> Verdict:
        return replace(self, failures=(*self.failures, failure))

    def to_json(self) -> dict[str, Any]:
        out = {
            "partition": self.partition,
            "verified": self.verified,
            "dump": self.dump,
            "failures": list(self.failures),
            "notices": list(self.notices),
            "row_counts": self.row_counts,
            "orphans": list(self.orphans),
            "row_count_baseline": self.row_count_baseline,
            "row_count_deltas": list(self.row_count_deltas),
            "size_guard": self.size_guard,
            "restore": self.restore,
            "checks": list(self.checks),
            "run_id": self.run_id,
            "run_status": self.run_status,
            "cutover_halt": self.cutover_halt,
        }
        if self.primary_down:
            out["primary_down_since"] = self.primary_down_since
        out["promoted"] = self.promoted
        if self.promotion is not None:
            out["promotion"] = self.promotion
        if self.alert is not None:
            out["alert"] = self.alert
        if self.evidence is not None:
            out["evidence"] = self.evidence
        return out


DPIA_AFTER = dt.timedelta(hours=24)


def dpia_note(since: dt.datetime | None, now: dt.datetime | None = None) -> str | None:
    """F5 step 3: an offsite outage of more than 24 h needs a DPIA note."""
    if since is None:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    if now - since <= DPIA_AFTER:
        return None
    return (
        f"The offsite primary has been failing since {since:%Y-%m-%d %H:%M} UTC (> 24 h): a "
        "DPIA note is required, offsite residency is part of the audit contract (F5 step 3)."
    )


def _with_dpia(entries: list[dict[str, Any]], note: str | None) -> list[dict[str, Any]]:
    if not note:
        return entries
    return [
        {
            **e,
            "summary": f"{e['summary']} {note}",
            "details": {**e["details"], "dpia_note_required": True},
        }
        if e["code"] == "F5"
        else e
        for e in entries
    ]


def build_verdict(
    facts: RunFacts,
    *,
    halt: dict[str, Any] | None = None,
    primary_down: bool = False,
    primary_down_since: dt.datetime | None = None,
) -> Verdict:
    """The verdict of a run from its facts, the cutover halt standing and, when this run found
    the primary unreachable, since when it has been failing (F5 step 3's DPIA rule)."""
    failures = list(facts.step_failures)
    notices = []
    for check in facts.checks:
        if check.informational:
            notices += check.findings
        elif check.passed is False:
            failures += [_with_f1_triage(f, facts.f1_triage) for f in check.findings]
    if not failures and not is_verified(facts):
        missing = [c.check for c in facts.checks if c.passed is None]
        failures.append(
            Finding(
                "VERIFY_JOB_ERROR",
                f"run {facts.run_id} ended {facts.run_status} without evaluating "
                f"{', '.join(missing) or 'all checks'}: the day is not verified",
                {"missing_checks": missing, "run_id": facts.run_id},
            ).to_dict()
        )
    note = dpia_note(primary_down_since) if primary_down else None
    dump = facts.dump or {}
    return Verdict(
        partition=facts.partition,
        verified=is_verified(facts),
        dump={k: dump.get(k) for k in ("key", "size_bytes", "endpoint", "bucket", "last_modified")}
        if dump
        else None,
        failures=tuple(_with_dpia(failures, note)),
        notices=tuple(_with_dpia(notices, note)),
        row_counts=facts.row_counts or {},
        orphans=tuple(facts.orphans or []),
        row_count_baseline=facts.baseline_partition,
        row_count_deltas=tuple(facts.row_count_deltas or []),
        size_guard=facts.size_guard,
        restore=facts.restore,
        checks=tuple({"check": c.check, "passed": c.passed} for c in facts.checks),
        run_id=facts.run_id,
        run_status=facts.run_status,
        cutover_halt=halt,
        primary_down=primary_down,
        primary_down_since=primary_down_since.isoformat() if primary_down_since else None,
    )


def format_verdict(verdict: Verdict) -> str:
    """The verdict for a person reading a terminal (#ops has its own format:
    core/report/alerts.py)."""
    head = "VERIFIED" if verdict.verified else "NOT VERIFIED"
    lines = [f"backup verify {verdict.partition}: {head}"]
    dump = verdict.dump
    if dump:
        lines.append(
            f"  dump      s3://{dump.get('bucket')}/{dump['key']}  "
            f"{dump['size_bytes']:,} bytes  ({dump['endpoint']} endpoint)"
        )
    server = (verdict.restore or {}).get("server")
    if server:
        lines.append(f"  restored  with PostgreSQL {server['version']}: {server['why']}")
    for check in verdict.checks:
        mark = {True: "pass", False: "FAIL", None: "did not run"}[check["passed"]]
        lines.append(f"  check     {check['check']:<52} {mark}")
    for n in verdict.notices:
        lines.append(f"  notice    {failure_label(n)} (informational): {n['summary']}")
    for f in verdict.failures:
        lines.append(
            f"  FAILURE   {failure_label(f)}  severity {f['severity']}  "
            f"page {' '.join(f['escalate_to'])}"
        )
        lines.append(f"            {f['summary']}")
        if f.get("next_step"):
            lines.append(f"            next: {f['next_step']}")
    counts = verdict.row_counts
    if counts:
        base = verdict.row_count_baseline
        lines.append(f"  row counts (vs last verified dump: {base or 'none yet'})")
        deltas = {d["table"]: d for d in verdict.row_count_deltas}
        for table, n in counts.items():
            d = deltas.get(table, {})
            change = f"  {d['ratio']:+.2%}" if d.get("ratio") is not None else ""
            lines.append(f"            {table:<40} {n:>12,}{change}  {d.get('status', '')}")
    for o in verdict.orphans:
        state = "ok" if o["passed"] else "OVER"
        found = o["orphans"] if o["orphans"] is not None else o.get("error")
        classes = (
            f", {o['expected_orphans']} expected / {o['unexpected_orphans']} unexpected "
            f"across {o['tenants']} tenant(s)"
            if o.get("tenants") is not None
            else ""
        )
        lines.append(
            f"  orphans   {o['child']} -> {o['parent']}: {found} "
            f"(max {o['max_orphans']}) {state}{classes}"
        )
    lines.append(f"  run       {verdict.run_id}")
    return "\n".join(lines)
