"""A plain-text dump is untrusted input: read it once before psql ever sees it.

psql executes backslash meta-commands anywhere outside quotes and comments, and `\\!` runs a
shell command. pg_dump itself writes only `\\connect`, `\\restrict` and `\\unrestrict` (each at
the start of a line); any other meta-command means the file was not written by pg_dump alone and
is refused before anything runs. The same pass collects what the restore needs to know: the
extensions the dump creates, the roles it hands objects to, and where each COPY block starts.

COPY data (the bulk of a dump) is skipped line by line until its `\\.` terminator.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

ALLOWED_META = frozenset({"connect", "c", "restrict", "unrestrict"})

_TOKEN = re.compile(r"--|/\*|\*/|[Ee]'|'|\"|\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$|\\")
_META = re.compile(r"\\([A-Za-z]+|[^\sA-Za-z]?)")
_COPY = re.compile(r"^COPY\s+(\S+)\s.*FROM stdin;\s*$")
_EXTENSION = re.compile(r"^CREATE EXTENSION (?:IF NOT EXISTS )?(\"[^\"]+\"|[A-Za-z0-9_]+)", re.I)
_OWNER = re.compile(r"\bOWNER TO (\"[^\"]+\"|[A-Za-z0-9_]+);")
_GRANTEE = re.compile(r"^(?:GRANT|REVOKE) .* (?:TO|FROM) (\"[^\"]+\"|[A-Za-z0-9_]+)(?: WITH .*)?;")
_BUILTIN_ROLES = re.compile(r"^(PUBLIC|pg_\w+|CURRENT_USER|SESSION_USER|CURRENT_ROLE)$", re.I)


@dataclass
class PlainScan:
    extensions: list[str] = field(default_factory=list)
    roles: set[str] = field(default_factory=set)
    copies: list[tuple[int, str]] = field(default_factory=list)  # (line, schema.table)
    unsafe: list[tuple[int, str]] = field(default_factory=list)  # (line, "\\!")

    def copy_table(self, name: str) -> list[str]:
        """Schema-qualified tables of the COPY blocks whose table is `name` (unqualified)."""
        return sorted({t for _, t in self.copies if t.split(".")[-1] == name or t == name})


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


class _Lexer:
    """Tracks quotes, comments and dollar quotes across lines; reports meta-commands."""

    def __init__(self):
        self.state, self.tag, self.depth = "sql", "", 0

    def meta_commands(self, line: str) -> list[tuple[int, str]]:
        found, pos = [], 0
        while pos < len(line):
            pos = self._advance(line, pos, found)
        return found

    def _advance(self, line: str, pos: int, found: list) -> int:
        if self.state == "sql":
            match = _TOKEN.search(line, pos)
            if not match:
                return len(line)
            token, end = match.group(), match.end()
            if token == "--":
                return len(line)
            if token == "\\":
                meta = _META.match(line, match.start())
                found.append((match.start(), meta.group(0)))
                return meta.end() if meta.end() > match.start() + 1 else end
            self.state, self.tag, self.depth = {
                "/*": ("comment", "", 1), "'": ("string", "", 0), '"': ("ident", "", 0),
            }.get(token, ("estring", "", 0) if token.lower() == "e'" else ("dollar", token, 0))
            if token == "*/":
                self.state = "sql"
            return end
        return self._close(line, pos)

    def _close(self, line: str, pos: int) -> int:
        if self.state == "dollar":
            at = line.find(self.tag, pos)
            return self._end(at, len(self.tag), line)
        if self.state == "comment":
            match = re.compile(r"/\*|\*/").search(line, pos)
            if not match:
                return len(line)
            self.depth += 1 if match.group() == "/*" else -1
            if self.depth == 0:
                self.state = "sql"
            return match.end()
        quote = '"' if self.state == "ident" else "'"
        at = pos
        while True:
            at = line.find(quote, at) if self.state != "estring" else _estring_end(line, at)
            if at < 0:
                return len(line)
            if line.startswith(quote * 2, at):  # '' or "" inside: an escaped quote
                at += 2
                continue
            return self._end(at, 1, line)

    def _end(self, at: int, width: int, line: str) -> int:
        if at < 0:
            return len(line)
        self.state = "sql"
        return at + width


def _estring_end(line: str, pos: int) -> int:
    while pos < len(line):
        if line[pos] == "\\":
            pos += 2
            continue
        if line[pos] == "'":
            return pos
        pos += 1
    return -1


def scan_plain(lines: Iterable[str]) -> PlainScan:
    scan, lexer, in_copy = PlainScan(), _Lexer(), False
    for number, line in enumerate(lines, start=1):
        if in_copy:
            in_copy = line.rstrip("\r\n") != "\\."
            continue
        at_line_start = lexer.state == "sql"
        for col, command in lexer.meta_commands(line):
            name = command[1:]
            if not (at_line_start and name in ALLOWED_META and not line[:col].strip()):
                scan.unsafe.append((number, command))
        if not at_line_start:
            continue
        _collect(scan, number, line)
        in_copy = bool(_COPY.match(line)) and lexer.state == "sql"
    return scan


def _collect(scan: PlainScan, number: int, line: str) -> None:
    if match := _COPY.match(line):
        scan.copies.append((number, ".".join(_unquote(p) for p in match[1].split("."))))
    elif match := _EXTENSION.match(line):
        scan.extensions.append(_unquote(match[1]))
    for pattern in (_OWNER, _GRANTEE):
        if (match := pattern.search(line)) and not _BUILTIN_ROLES.match(_unquote(match[1])):
            scan.roles.add(_unquote(match[1]))
