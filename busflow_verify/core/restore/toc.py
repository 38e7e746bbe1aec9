"""An archive's table of contents (`pg_restore -l`), and the list the restore runs from (`-L`).

The restore runs as an unprivileged role (core/postgres/privilege.py), so the entries the
administrative step already did (the extensions, their comments, the schemas made to hold them)
and the entries only a superuser may restore and that run code of their own (event triggers) are
left out of the list, each with its reason in the restore report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Entry types of more than one word, longest first, so "MATERIALIZED VIEW DATA" is not read as
# "MATERIALIZED VIEW" with the tag "DATA ..." (pg_dump's desc strings).
_MULTIWORD_DESCS = sorted(
    [
        "TABLE DATA",
        "MATERIALIZED VIEW",
        "MATERIALIZED VIEW DATA",
        "FK CONSTRAINT",
        "CHECK CONSTRAINT",
        "DEFAULT ACL",
        "SEQUENCE SET",
        "SEQUENCE OWNED BY",
        "EVENT TRIGGER",
        "FOREIGN TABLE",
        "FOREIGN DATA WRAPPER",
        "FOREIGN SERVER",
        "USER MAPPING",
        "LARGE OBJECT",
        "LARGE OBJECTS",
        "PROCEDURAL LANGUAGE",
        "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "ACCESS METHOD",
        "PUBLICATION TABLE",
        "PUBLICATION TABLES IN SCHEMA",
        "ROW SECURITY",
        "SECURITY LABEL",
        "INDEX ATTACH",
        "TABLE ATTACH",
        "SHELL TYPE",
        "DATABASE PROPERTIES",
        "SUBSCRIPTION TABLE",
    ],
    key=len,
    reverse=True,
)
_ENTRY = re.compile(r"^(?P<id>\d+); (?P<tableoid>\d+) (?P<oid>\d+) (?P<rest>.*)$")
_IDENT = r'"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*'
_CREATE_EXTENSION = re.compile(
    rf"^CREATE EXTENSION IF NOT EXISTS (?P<name>{_IDENT})(?: WITH SCHEMA (?P<schema>{_IDENT}))?;",
    re.M,
)
RUNS_OWN_CODE = ("EVENT TRIGGER",)  # superuser-only, and fires on the restore's own DDL


def unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


@dataclass(frozen=True)
class TocEntry:
    dump_id: int
    desc: str  # TABLE, INDEX, TABLE DATA, COMMENT, ...
    schema: str  # "-" when none
    name: str  # the tag: "bookings", "bookings bookings_pkey", "EXTENSION pgcrypto"
    line: str  # the listing's line, for -L

    @property
    def label(self) -> str:
        where = "" if self.schema == "-" else f"{self.schema}."
        return f"{self.desc} {where}{self.name}".strip()


def parse_entry(rest: str) -> tuple[str, str, str]:
    """(desc, schema, tag) of the part of a TOC line after the dump id and oids: "desc schema
    tag owner", where desc and tag may hold spaces and the owner is empty for some entries."""
    desc = next((d for d in _MULTIWORD_DESCS if rest.startswith(d + " ")), rest.split(" ", 1)[0])
    schema, _, tag_owner = rest[len(desc) :].lstrip(" ").partition(" ")
    tag = tag_owner[:-1] if tag_owner.endswith(" ") else tag_owner.rpartition(" ")[0]
    return desc, schema, tag.strip() or tag_owner.strip()


@dataclass
class Toc:
    """What an archive holds, from `pg_restore -l`."""

    entries: list[TocEntry] = field(default_factory=list)

    @property
    def extensions(self) -> list[str]:
        return [e.name.split()[0] for e in self.entries if e.desc == "EXTENSION"]

    @property
    def data(self) -> dict[int, str]:
        """Dump id of every TABLE DATA entry -> schema.table."""
        return {
            e.dump_id: f"{e.schema}.{e.name.split()[0]}"
            for e in self.entries
            if e.desc == "TABLE DATA"
        }

    @property
    def publishes(self) -> bool:
        """It adds tables to a publication."""
        return any(e.desc == "PUBLICATION TABLE" for e in self.entries)

    def entry(self, dump_id: int) -> TocEntry | None:
        return next((e for e in self.entries if e.dump_id == dump_id), None)

    def qualify(self, table: str) -> list[str]:
        return sorted({t for t in self.data.values() if t.split(".", 1)[1] == table or t == table})

    def extension_list(self) -> str:
        """A -L list of the EXTENSION entries alone (to read their CREATE EXTENSION lines)."""
        return "".join(e.line + "\n" for e in self.entries if e.desc == "EXTENSION")

    def restore_list(self, made_schemas: list[str]) -> tuple[str, list[dict[str, str]]]:
        """The -L list for the restore role, and what it leaves out and why."""
        lines, left_out = [], []
        for entry in self.entries:
            reason = _left_out_because(entry, made_schemas)
            lines.append(f";{entry.line}" if reason else entry.line)
            if reason:
                left_out.append({"entry": entry.label, "reason": reason})
        return "".join(line + "\n" for line in lines), left_out


def _left_out_because(entry: TocEntry, made_schemas: list[str]) -> str | None:
    first = entry.name.split(" ", 1)[0]
    if entry.desc == "EXTENSION" or (entry.desc == "COMMENT" and first == "EXTENSION"):
        return "created by the administrative step before the restore"
    if entry.desc == "SCHEMA" and unquote(first) in made_schemas:
        return "created by the administrative step to hold an extension"
    if entry.desc in RUNS_OWN_CODE or (
        entry.desc in ("COMMENT", "SECURITY LABEL") and entry.name.startswith("EVENT TRIGGER")
    ):
        return "an event trigger: superuser-only, and it would run on the restore's own DDL"
    return None


def parse_toc(listing: str) -> Toc:
    toc = Toc()
    for line in listing.splitlines():
        if match := _ENTRY.match(line):
            desc, schema, name = parse_entry(match["rest"])
            toc.entries.append(TocEntry(int(match["id"]), desc, schema, name, line))
    return toc


def extension_schemas(script: str) -> dict[str, str | None]:
    """Extension -> schema from the CREATE EXTENSION lines pg_restore prints for them."""
    return {
        unquote(m["name"]): unquote(m["schema"]) if m["schema"] else None
        for m in _CREATE_EXTENSION.finditer(script)
    }
