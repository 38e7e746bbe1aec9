"""`verify.yaml` and `soft-fk-allowlist.yaml`, validated at load.

Unknown keys and bad values are rejected with the file, the key path and its line named, so a
typo in a tolerance can never silently fall back to a default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated
from uuid import UUID

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

VERIFY_FILE = "verify.yaml"
ALLOWLIST_FILE = "soft-fk-allowlist.yaml"
CONFIG_DIR_ENV = "BUSFLOW_VERIFY_CONFIG_DIR"
DEFAULT_CONFIG_DIR = Path("config") / "backup-verify"

_IDENT = r"[A-Za-z_][A-Za-z0-9_$]*"
_TABLE = re.compile(rf"^{_IDENT}\.{_IDENT}$")
_COLUMN = re.compile(rf"^{_IDENT}\.{_IDENT}\.{_IDENT}$")
_IDENT_ONLY = re.compile(rf"^{_IDENT}$")

Ratio = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


RUNBOOK_LARGEST_TABLES = ["commerce.bookings", "communications.messages", "operations.service_legs"]


class SizeGuardConfig(_Strict):
    min_bytes: Annotated[int, Field(ge=0)] = 10_000_000_000
    max_median_ratio: Annotated[float, Field(gt=1)] = 2.0
    trailing_days: Annotated[int, Field(ge=1, le=90)] = 7
    # F1 triage: still restore and count a dump that failed the size guard, to gather the
    # evidence of F1 step 1 (it is never promoted either way).
    restore_on_failure: bool = True
    # F1 step 1's "largest tables", whose rows are compared with the size change.
    largest_tables: list[str] = RUNBOOK_LARGEST_TABLES
    # rows are "proportional" to the size when rows_ratio / size_ratio is within 1 +/- this
    proportionality_tolerance: Annotated[float, Field(gt=0, lt=1)] = 0.25
    # F1 step 3's deadline: pg_cron jobs whose name matches this (case-insensitive regex) are
    # the scrub cycle a re-run pg_dump must beat
    scrub_job_pattern: str = "scrub"

    @field_validator("scrub_job_pattern")
    @classmethod
    def _pattern(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return pattern

    @field_validator("largest_tables")
    @classmethod
    def _table_names(cls, tables: list[str]) -> list[str]:
        for name in tables:
            if not _TABLE.match(name):
                raise ValueError(f"table {name!r} is not schema.table")
        return tables


class Tolerance(_Strict):
    max_drop_ratio: Annotated[float, Field(ge=0, le=1)] | None = None
    max_growth_ratio: Ratio | None = None


class RowCountConfig(_Strict):
    max_drop_ratio: Annotated[float, Field(ge=0, le=1)] = 0.05
    max_growth_ratio: Ratio = 0.50
    tables: dict[str, Tolerance] = {}

    @field_validator("tables")
    @classmethod
    def _table_names(cls, tables: dict[str, Tolerance]) -> dict[str, Tolerance]:
        for name in tables:
            if not _TABLE.match(name):
                raise ValueError(f"table {name!r} is not schema.table")
        return tables

    def tolerance_for(self, table: str) -> tuple[float, float]:
        """(max_drop_ratio, max_growth_ratio) for a table, overrides first."""
        override = self.tables.get(table, Tolerance())
        drop = (
            override.max_drop_ratio if override.max_drop_ratio is not None else self.max_drop_ratio
        )
        growth = (
            override.max_growth_ratio
            if override.max_growth_ratio is not None
            else self.max_growth_ratio
        )
        return drop, growth


class AlertsConfig(_Strict):
    """#ops delivery (F4): retries of 5xx, 429 and connection errors, with exponential backoff."""

    attempts: Annotated[int, Field(ge=1, le=10)] = 4
    backoff_seconds: Annotated[float, Field(ge=0, le=60)] = 1.0
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0


class ScrubLogConfig(_Strict):
    """Where the GDPR scrub log lives in the restored dump (F3 triage)."""

    table: str = "public.tenant_scrub_logs"
    id_column: str = "id"
    tenant_column: str = "tenant_id"

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not _TABLE.match(value):
            raise ValueError(f"table {value!r} is not schema.table")
        return value

    @field_validator("id_column", "tenant_column")
    @classmethod
    def _column(cls, value: str) -> str:
        if not _IDENT_ONLY.match(value):
            raise ValueError(f"{value!r} is not a column name")
        return value


class SweepConfig(_Strict):
    max_connections: Annotated[int, Field(ge=1, le=32)] = 2  # independent sweeps in parallel


class RestoreBudgetConfig(_Strict):
    """The restore time is the RTO (core/checks/rto_budget.py): a WARN check, never blocking."""

    max_seconds: Annotated[float, Field(gt=0)] = 14400.0  # all sections, inspection included
    max_median_ratio: Annotated[float, Field(gt=1)] = 1.5  # x the trailing verified median
    trailing_runs: Annotated[int, Field(ge=1, le=90)] = 7  # verified runs the median is over
    growth_floor_seconds: Annotated[float, Field(ge=0)] = 60.0  # shorter: the ratio is noise


class DiskSpaceConfig(_Strict):
    """The free-space check before the download (core/diskspace.py): the dump plus the restored
    database must fit where they go, with headroom."""

    # restored bytes per dump byte when no verified run has measured it (custom dumps compress
    # about 3-6x; the trailing verified runs' own ratio is used when there is one)
    restored_per_dump_byte: Annotated[float, Field(gt=0, le=100)] = 5.0
    headroom_ratio: Annotated[float, Field(ge=1, le=10)] = 1.1  # needed x this must be free
    check: bool = True  # false skips the check (the faults are still named when they happen)


class DeadmanConfig(_Strict):
    """The dead-man's switch (core/report/deadman.py): VERIFICATION_STALE when nothing verified for
    longer than this."""

    max_age_hours: Annotated[float, Field(gt=0, le=24 * 14)] = 26.0


class EvidenceConfig(_Strict):
    """The signed evidence of each run (core/report/evidence.py): on a bucket with Object Lock
    enabled, each evidence object is kept in COMPLIANCE mode for this many days (0: no
    retention is asked for; the object is still never overwritten)."""

    retention_days: Annotated[int, Field(ge=0, le=36500)] = 0


class VerifyConfig(_Strict):
    size_guard: SizeGuardConfig = SizeGuardConfig()
    row_counts: RowCountConfig = RowCountConfig()
    alerts: AlertsConfig = AlertsConfig()
    scrub_log: ScrubLogConfig = ScrubLogConfig()
    sweep: SweepConfig = SweepConfig()
    restore_budget: RestoreBudgetConfig = RestoreBudgetConfig()
    disk_space: DiskSpaceConfig = DiskSpaceConfig()
    deadman: DeadmanConfig = DeadmanConfig()
    evidence: EvidenceConfig = EvidenceConfig()


class ColumnRef(_Strict):
    schema_name: str
    table: str
    column: str

    @classmethod
    def parse(cls, text: str) -> ColumnRef:
        if not isinstance(text, str) or not _COLUMN.match(text):
            raise ValueError(f"{text!r} is not schema.table.column")
        schema, table, column = text.split(".")
        return cls(schema_name=schema, table=table, column=column)

    def __str__(self) -> str:
        return f"{self.schema_name}.{self.table}.{self.column}"

    @property
    def table_name(self) -> str:
        return f"{self.schema_name}.{self.table}"


class SoftFK(_Strict):
    child: str
    parent: str
    max_orphans: Annotated[int, Field(ge=0)]
    tenant_column: str | None = None  # a column of the child table naming the tenant
    justification: list[UUID] = []  # tenant_scrub_logs ids that justify the tolerance

    @field_validator("tenant_column")
    @classmethod
    def _tenant_column(cls, value: str | None) -> str | None:
        if value is not None and not _IDENT_ONLY.match(value):
            raise ValueError(f"{value!r} is not a column name")
        return value

    @field_validator("child", "parent")
    @classmethod
    def _column_ref(cls, value: str) -> str:
        ColumnRef.parse(value)
        return value

    @property
    def child_ref(self) -> ColumnRef:
        return ColumnRef.parse(self.child)

    @property
    def parent_ref(self) -> ColumnRef:
        return ColumnRef.parse(self.parent)


class SoftFKAllowlist(_Strict):
    soft_fks: list[SoftFK] = []

    @model_validator(mode="after")
    def _no_duplicates(self) -> SoftFKAllowlist:
        seen = set()
        for fk in self.soft_fks:
            if (fk.child, fk.parent) in seen:
                raise ValueError(f"duplicate soft FK {fk.child} -> {fk.parent}")
            seen.add((fk.child, fk.parent))
        return self


class ConfigError(Exception):
    """A configuration file or variable is wrong; the message names the file, key and line."""


def config_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The config folder: explicit (BUSFLOW_VERIFY_CONFIG_DIR, read by defs/environment.py), or
    config/backup-verify.

    The default is looked up in the working directory first, then in the checkout this package
    lives in, so `dagster dev` and the CLI find it from anywhere in the project.
    """
    if explicit:
        return Path(explicit)
    here = Path.cwd() / DEFAULT_CONFIG_DIR
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / DEFAULT_CONFIG_DIR


def load_verify_config(folder: Path) -> VerifyConfig:
    return _load(folder / VERIFY_FILE, VerifyConfig)


def load_allowlist(folder: Path) -> SoftFKAllowlist:
    return load_allowlist_file(folder / ALLOWLIST_FILE)


def load_allowlist_file(path: Path) -> SoftFKAllowlist:
    return _load(Path(path), SoftFKAllowlist)


def _load(path: Path, model: type[BaseModel]):
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found (set {CONFIG_DIR_ENV} to the folder holding "
            f"{VERIFY_FILE} and {ALLOWLIST_FILE})"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: line 1: expected a mapping of keys, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(path, text, exc)) from None


def _describe(path: Path, text: str, exc: ValidationError) -> str:
    problems = []
    root = yaml.compose(text)
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        key = _key_path(loc)
        line = _line_of(root, loc)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        where = f"line {line}: " if line else ""
        problems.append(f"{path}: {where}key {key}: {msg}")
    return "; ".join(problems)


def _key_path(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_of(node, loc) -> int | None:
    """The 1-based line of the YAML node at `loc`, as deep as the path can be followed."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                break
            line = match[0][0].start_mark.line + 1
            node = match[0][1]
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
