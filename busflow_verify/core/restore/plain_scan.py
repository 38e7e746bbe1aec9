"""A plain-text dump is untrusted input: read it once before psql ever sees it.

psql executes backslash meta-commands anywhere outside quotes and comments, and `\\!` runs a
shell command. pg_dump itself writes only `\\connect`, `\\restrict` and `\\unrestrict` (each at
the start of a line, with plain arguments); any other meta-command, or one of those with other
arguments (a backtick in an argument runs a shell command too), means the file was not written by
pg_dump alone and is refused before anything runs. So is a top-level statement that reaches
outside the database (COPY to or from a program or a server file, the server-file, large-object
file and dblink functions): the restore runs the dump's code as an unprivileged role, and these
are the statements that would need more (function bodies are left to that restriction).

The lexer follows psql's own (psqlscan.l, PostgreSQL 15) where it decides what runs: quotes,
E'' strings, dollar quotes, nested comments, `--` comments ending at CR or LF, semicolons ending a
statement only outside parentheses and outside a `BEGIN ... END` routine body, and COPY ... FROM
STDIN data running to a line that is exactly `\\.`. Lines are counted as psql counts them (LF
only). It assumes psql runs with -X and ON_ERROR_STOP=1 (a failing COPY FROM STDIN then stops
psql instead of running the data as SQL). Statements that could change how psql itself lexes
the rest of the file (standard_conforming_strings, a client-only encoding) are refused too.

The same pass collects what the restore needs: the extensions (and their schemas), where each
COPY block starts, each statement's lines and head (to name
the statement psql reports an error at), and the single-line ownership, privilege and extension
statements `write_restorable` leaves out of the copy psql runs. COPY data (the bulk of a dump) is
skipped line by line and never stored.
"""

from __future__ import annotations

import io
import re
import shutil
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ALLOWED_META = frozenset({"connect", "c", "restrict", "unrestrict"})
HEAD_CHARS = 200
_MASK_CAP = 16384  # characters of a statement's SQL text kept for classifying it
_END_COPY = frozenset({"\\.\n", "\\.\r\n", "\\.", "\\.\r"})  # psql: exactly `\.` on its line

_L = "A-Za-z_\u0080-\U0010ffff"  # psql's ident_start (any non-ASCII byte counts)
# A run of ordinary SQL is one token: identifiers (psql's: `$` may follow the first letter, so
# a$b$ is no dollar quote and abcE'x' no E'' string), numbers, operators, whitespace. A lone E or
# e before a quote starts an E'' string (after digits too: PostgreSQL 15 lexes 1e'x' as 1 E'x').
_RUN = rf"(?:(?![Ee]')[{_L}][{_L}0-9$]*|[^{_L}'\"$\\;()/\-]|-(?!-)|/(?!\*))+"
_SQL_TOKEN = re.compile(rf"--|/\*|[Ee]'|'|\"|\$(?:[{_L}][{_L}0-9]*)?\$|\\|[;()]|{_RUN}")
_NAMED = re.compile(r'[\w"]')  # what may end a function name before its "("
_WORD = re.compile(rf"[{_L}][{_L}0-9$]*")
_SPACES = re.compile(r"\s+")
_META = re.compile(r"\\([A-Za-z]+|[^\sA-Za-z]?)")
_NAME = r'("(?:[^"]|"")*"|[\w$]+)'
_CONNECT_ARGS = re.compile(
    r"""(?:[ \t]+-reuse-previous=(?:on|off))?"""
    r"""(?:[ \t]+(?:[A-Za-z0-9_]+|"[A-Za-z0-9_ .-]+"|"dbname='[A-Za-z0-9_ .-]+'"))?"""
    r"""[ \t]*\r?\n?\Z"""
)
_KEY_ARGS = re.compile(r"[ \t]+[A-Za-z0-9]+[ \t]*\r?\n?\Z")
_FUNCS = re.compile(
    r'(?<![\w$])"?(lo_import|lo_export|pg_read_file|pg_read_binary_file|pg_ls_dir|pg_ls_\w*dir'
    r"|pg_stat_file|pg_file_write|pg_file_rename|pg_file_unlink|pg_file_sync|pg_logdir_ls"
    r'|dblink\w*)"?\s*\(\Z',
    re.I,
)
_COPY_TOKEN = re.compile(rf'"(?:[^"]|"")*"|\'\'|[{_L}][{_L}0-9$]*|\S')
_EXTENSION = re.compile(rf"CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}(.*)", re.I | re.S)
_SCHEMA_OPTION = re.compile(rf"\bSCHEMA\s+{_NAME}", re.I)
_SETTING_WORDS = frozenset({"standard_conforming_strings", "client_encoding"})
_PG_DUMP_SETTING = re.compile(
    r"SET\s+(?:standard_conforming_strings\s*(?:=|TO)\s*'?on'?"
    r"|client_encoding\s*(?:=|TO)\s*'?([\w-]+)'?)\s*;?",
    re.I,
)
_CLIENT_ONLY_ENCODINGS = frozenset(
    {  # second bytes may be ASCII quotes or backslashes
        "sjis",
        "shiftjis",
        "mskanji",
        "shiftjis2004",
        "win932",
        "cp932",
        "big5",
        "win950",
        "cp950",
        "gbk",
        "win936",
        "cp936",
        "gb18030",
        "uhc",
        "win949",
        "cp949",
        "johab",
        "win1361",
    }
)
_LEAVE_OUT = [
    (kind, re.compile(pattern, re.I | re.S))
    for kind, pattern in [
        ("default_privileges", r"ALTER\s+DEFAULT\s+PRIVILEGES\s"),
        ("owner", rf"ALTER\s.*\sOWNER\s+TO\s+{_NAME}\s*"),
        ("grant", r"GRANT\s"),
        ("revoke", r"REVOKE\s"),
        ("session_authorization", r"(?:SET|RESET)\s+SESSION\s+AUTHORIZATION\b"),
        ("extension", r"CREATE\s+EXTENSION\s"),
        ("extension_comment", r"COMMENT\s+ON\s+EXTENSION\s"),
        ("schema", rf"CREATE\s+SCHEMA\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}\s*"),
    ]
]
_ROUTINE_WORDS = frozenset({"create", "or", "replace", "function", "procedure"})


@dataclass(frozen=True)
class LeaveOut:
    """A whole-line top-level statement the restorable copy replaces by a comment."""

    line: int
    kind: str  # owner, grant, revoke, default_privileges, session_authorization, ...
    head: str
    schema: str | None = None  # schema: the schema's name (left out only if dropped)
    crc: int = 0  # of the line, to check the copy replaces the line the scan saw


@dataclass
class PlainScan:
    extensions: list[str] = field(default_factory=list)
    extension_schemas: dict[str, str | None] = field(default_factory=dict)  # WITH SCHEMA
    copies: list[tuple[int, str]] = field(default_factory=list)  # (line, schema.table)
    unsafe: list[tuple[int, str]] = field(default_factory=list)  # (line, "\\!"), by line
    unsafe_statements: list[dict] = field(default_factory=list)  # {line, kind, statement}
    leave_out: list[LeaveOut] = field(default_factory=list)
    _starts: array = field(default_factory=lambda: array("q"), repr=False)
    _ends: array = field(default_factory=lambda: array("q"), repr=False)
    _heads: list[str] = field(default_factory=list, repr=False)

    def copy_table(self, name: str) -> list[str]:
        """Schema-qualified tables of the COPY blocks whose table is `name` (unqualified)."""
        return sorted({t for _, t in self.copies if t.split(".")[-1] == name or t == name})

    def statement_at(self, line: int) -> dict | None:
        """The statement psql means by `psql:FILE:LINE: ERROR`: psql counts the line at which
        it sent the statement, i.e. the line of its terminating semicolon (for COPY ... FROM
        stdin, the line of the data's `\\.`, which is the statement's end_line here). A line
        inside a statement also finds it. Two statements ending on one line: the first."""
        i = bisect_left(self._ends, line)
        if i == len(self._ends) or self._starts[i] > line:
            return None
        return {"start_line": self._starts[i], "end_line": self._ends[i], "head": self._heads[i]}


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


def _collapse(text: str) -> str:
    return " ".join(text.split())


class _Statement:
    """What is kept of one top-level statement while it is read: a short head of its text,
    its SQL outside literals and comments (capped; literals become ''), and psql's counters."""

    __slots__ = (
        "start",
        "at_line_start",
        "head",
        "mask",
        "mask_len",
        "tail",
        "paren",
        "begin",
        "words",
        "initials",
        "kinds",
        "settings",
    )

    def __init__(self, start: int, at_line_start: bool):
        self.start, self.at_line_start = start, at_line_start
        self.head, self.mask, self.mask_len, self.tail = "", [], 0, ""
        self.paren = self.begin = self.words = 0
        self.initials, self.kinds, self.settings = "", [], False

    def text(self, piece: str, sql: bool = True) -> None:
        if len(self.head) < 2 * HEAD_CHARS:
            self.head += piece
        if sql:
            self.sql(piece)

    def sql(self, piece: str) -> None:
        if self.mask_len < _MASK_CAP:
            self.mask.append(piece)
            self.mask_len += len(piece)
        self.tail = (self.tail + (piece if piece == "(" else _SPACES.sub(" ", piece)))[-96:]
        if (
            piece == "("
            and _NAMED.match(self.tail[:-1].rstrip()[-1:])
            and (match := _FUNCS.search(self.tail))
        ):
            kind = match[1].lower() + "()"
            if kind not in self.kinds:
                self.kinds.append(kind)

    def run(self, run: str) -> None:
        """A run of ordinary SQL: its words matter for the first four words and in a
        routine, and for the settings that change how psql lexes."""
        if self.words < 4 or self.routine():
            for word in _WORD.findall(run):
                self.word(word)
        elif "_" in run and _mentions_setting(run):
            self.settings = True

    def routine(self) -> bool:
        return self.initials.startswith(("cf", "cp", "corf", "corp"))

    def word(self, word: str) -> None:
        """psql's heuristic for SQL-standard routine bodies: in CREATE [OR REPLACE] FUNCTION or
        PROCEDURE, BEGIN ... END (and CASE ... END inside it) hide semicolons."""
        low = word.lower()
        if self.words < 4:
            self.initials += low[0] if low in _ROUTINE_WORDS else "-"
        self.words += 1
        if low in _SETTING_WORDS:
            self.settings = True
        if self.paren or not self.routine():
            return
        if low == "begin" or (low == "case" and self.begin):
            self.begin += 1
        elif low == "end" and self.begin:
            self.begin -= 1

    def masked(self) -> str:
        return _collapse("".join(self.mask))


class _Scanner:
    """The lexer (psql's quoting rules) and the statement it is in."""

    def __init__(self, scan: PlainScan):
        self.scan = scan
        self.state, self.tag, self.depth = "sql", "", 0
        self.stmt: _Statement | None = None
        self.number, self.line_start_sql, self.fresh = 0, True, True
        self.copy_next: list[int] = []  # statements whose COPY data follows this line
        self.finished: tuple[_Statement, int] | None = None  # last statement ended, its end col

    def feed(self, number: int, line: str) -> None:
        self.number, self.line_start_sql = number, self.state == "sql"
        self.fresh = self.line_start_sql and self.stmt is None
        pos, end = 0, len(line)
        while pos < end:
            pos = self._sql(line, pos) if self.state == "sql" else self._quoted(line, pos)
        if self.finished and self.stmt is None and self.state == "sql":
            stmt, col = self.finished
            if stmt.at_line_start and stmt.start == number and not line[col:].strip():
                _leave_out_candidate(self.scan, stmt, number, line)
        self.finished = None

    def _begin(self, line: str, col: int) -> _Statement:
        if self.stmt is None:
            self.stmt = _Statement(self.number, self.fresh and not line[:col].strip())
        return self.stmt

    def _sql(self, line: str, pos: int) -> int:
        match = _SQL_TOKEN.search(line, pos)
        stop = match.start() if match else len(line)
        if stop > pos:
            piece = line[pos:stop]
            if self.stmt is not None:
                self.stmt.text(piece)
            elif not piece.isspace():
                text = piece.lstrip()
                self._begin(line, stop - len(text)).text(text)
        return self._token(line, match) if match else len(line)

    def _token(self, line: str, match: re.Match) -> int:
        token, start, end = match.group(), match.start(), match.end()
        if token == "--":  # psql ends a -- comment at CR as well as at LF
            cr = line.find("\r", end)
            return self._gap(cr + 1 if cr >= 0 else len(line))
        if token == "\\":
            return self._meta(line, start)
        if token == "/*":
            self.state, self.depth = "comment", 1
            return self._gap(end)
        if self.stmt is None and (token == ";" or token.isspace()):
            return end  # an empty statement (psql sends nothing), or space between statements
        if self.stmt is None and token[0].isspace():
            start, token = end - len(token.lstrip()), token.lstrip()
        stmt = self._begin(line, start)
        if token == ";":
            stmt.text(";", sql=False)
            if stmt.paren == 0 and stmt.begin == 0:
                self._finish(self.number)
                self.finished = (stmt, end)
            return end
        if token in ("(", ")"):
            stmt.paren = stmt.paren + 1 if token == "(" else max(0, stmt.paren - 1)
        elif token[0] in "'\"$" or token in ("E'", "e'"):
            return self._open(stmt, token, end)
        else:
            stmt.run(token)
        stmt.text(token)
        return end

    def _gap(self, end: int) -> int:
        """A comment: a space in the statement it is in."""
        if self.stmt is not None:
            self.stmt.text(" ")
        return end

    def _open(self, stmt: _Statement, token: str, end: int) -> int:
        self.state, self.tag = {"'": ("string", ""), '"': ("ident", "")}.get(
            token, ("estring", "") if token in ("E'", "e'") else ("dollar", token)
        )
        stmt.text(token, sql=self.state == "ident")
        if self.state != "ident":
            stmt.sql("''")
        return end

    def _quoted(self, line: str, pos: int) -> int:
        state = self.state
        end = self._close(line, pos)
        if state == "comment":
            return end
        piece = line[pos:end]
        self.stmt.text(piece, sql=state == "ident")
        if state != "dollar" and not self.stmt.settings and _mentions_setting(piece):
            self.stmt.settings = True
        return end

    def _close(self, line: str, pos: int) -> int:
        """Where the quote or comment the lexer is in ends on this line (or the line's end)."""
        if self.state == "dollar":
            at = line.find(self.tag, pos)
            return self._end(at, len(self.tag), line)
        if self.state == "comment":
            return self._comment(line, pos)
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

    def _comment(self, line: str, pos: int) -> int:
        while True:
            match = _COMMENT_TOKEN.search(line, pos)
            if not match:
                return len(line)
            self.depth += 1 if match.group() == "/*" else -1
            pos = match.end()
            if self.depth == 0:
                self.state = "sql"
                return self._gap(pos)

    def _end(self, at: int, width: int, line: str) -> int:
        if at < 0:
            return len(line)
        self.state = "sql"
        return at + width

    def _meta(self, line: str, col: int) -> int:
        """A backslash outside quotes: psql runs a meta-command. pg_dump's own ones (at the
        start of a line, with plain arguments) pass; psql reads their arguments to the line's
        end, so the rest of the line is not SQL."""
        meta = _META.match(line, col)
        command, name = meta.group(0), meta.group(1)
        if self.line_start_sql and name in ALLOWED_META and not line[:col].strip():
            args = _CONNECT_ARGS if name in ("connect", "c") else _KEY_ARGS
            if not args.match(line, meta.end()):
                self.scan.unsafe.append((self.number, f"{command} with unexpected arguments"))
            return len(line)
        self.scan.unsafe.append((self.number, command))
        return meta.end() if meta.end() > col + 1 else col + 1

    def _finish(self, end_line: int) -> None:
        stmt, self.stmt = self.stmt, None
        scan = self.scan
        head = _collapse(stmt.head)[:HEAD_CHARS]
        scan._starts.append(stmt.start)
        scan._ends.append(end_line)
        scan._heads.append(head)
        masked = stmt.masked()
        kinds, first = list(stmt.kinds), masked[:16].split(" ", 1)[0].upper()
        if first == "COPY":
            kinds[:0] = self._copy(stmt, masked)
        elif first == "CREATE":
            _collect_extension(scan, masked)
        if stmt.settings and (not _PG_DUMP_SETTING.fullmatch(head) or _client_only(head)):
            kinds.append("a change of standard_conforming_strings or client_encoding")
        for kind in kinds:
            scan.unsafe.append((stmt.start, kind))
            scan.unsafe_statements.append({"line": stmt.start, "kind": kind, "statement": head})

    def _copy(self, stmt: _Statement, masked: str) -> list[str]:
        if stmt.mask_len >= _MASK_CAP:
            return ["COPY ... (too long to check)"]
        kind, from_stdin, table = _copy_target(masked)
        if from_stdin:
            self.scan.copies.append((stmt.start, table))
            self.copy_next.append(len(self.scan._ends) - 1)
        return [kind] if kind else []

    def end_of_copy(self, index: int, line: int) -> None:
        """The COPY data ended at `line`: psql reports the COPY's errors there (kept only when
        the COPY is the last statement so far, so that the end lines stay sorted)."""
        if index == len(self.scan._ends) - 1:
            self.scan._ends[index] = line

    def end_of_file(self) -> None:
        if self.stmt is not None:  # psql sends an unterminated last statement at the end
            self._finish(self.number)


_COMMENT_TOKEN = re.compile(r"/\*|\*/")


def _estring_end(line: str, pos: int) -> int:
    while pos < len(line):
        if line[pos] == "\\":
            pos += 2
            continue
        if line[pos] == "'":
            return pos
        pos += 1
    return -1


def _mentions_setting(text: str) -> bool:
    low = text.lower()
    return "standard_conforming_strings" in low or "client_encoding" in low


def _client_only(head: str) -> bool:
    match = _PG_DUMP_SETTING.fullmatch(head)
    return bool(
        match and match[1] and re.sub(r"[^a-z0-9]", "", match[1].lower()) in _CLIENT_ONLY_ENCODINGS
    )


def _copy_target(masked: str) -> tuple[str | None, bool, str]:
    """(refusal or None, whether psql reads data from the file, table) of a COPY statement
    (literals masked as ''): STDIN/STDOUT pass, PROGRAM and anything else (a file) do not."""
    tokens = _COPY_TOKEN.findall(masked)
    depth, name = 0, []
    for i, token in enumerate(tokens[1:], start=1):
        if token in ("(", ")"):
            depth = depth + 1 if token == "(" else max(0, depth - 1)
            name = name if token == ")" or depth > 1 or not name else name + ["("]
        elif depth == 0 and token.upper() in ("FROM", "TO"):
            source = tokens[i + 1].upper() if i + 1 < len(tokens) else ""
            table = ".".join(_unquote(t) for t in name if t not in (".", "("))
            if source in ("STDIN", "STDOUT"):
                return None, token.upper() == "FROM" and source == "STDIN", table
            where = "PROGRAM" if source == "PROGRAM" else "a server file"
            return f"COPY ... {token.upper()} {where}", False, table
        elif depth == 0 and "(" not in name:
            name.append(token)
    return None, False, ""


def _collect_extension(scan: PlainScan, masked: str) -> None:
    if match := _EXTENSION.match(masked):
        name = _unquote(match[1])
        schema = _SCHEMA_OPTION.search(match[2])
        scan.extensions.append(name)
        scan.extension_schemas[name] = _unquote(schema[1]) if schema else None


def _leave_out_candidate(scan: PlainScan, stmt: _Statement, number: int, line: str) -> None:
    masked = stmt.masked()
    for kind, pattern in _LEAVE_OUT:
        whole = kind in ("owner", "schema")  # the pattern must cover the statement
        if match := (pattern.fullmatch if whole else pattern.match)(masked):
            schema = _unquote(match[1]) if kind == "schema" else None
            scan.leave_out.append(LeaveOut(number, kind, scan._heads[-1], schema, _crc(line)))
            return


def _crc(line: str | bytes) -> int:
    """A fingerprint of a line that is the same whether it was read as bytes, or decoded with
    errors="replace" or "surrogateescape" (the scan and the copy may read differently)."""
    raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def scan_plain(lines: Iterable[str]) -> PlainScan:
    """Scan a plain dump (lines as str). A text file is switched to LF-only line splitting
    first (psql counts and ends lines at LF only; Python's default also splits at CR)."""
    if isinstance(lines, io.TextIOWrapper):
        try:
            lines.reconfigure(newline="\n")
        except (ValueError, io.UnsupportedOperation):
            pass
    scan = PlainScan()
    scanner, numbered, number = _Scanner(scan), enumerate(lines, start=1), 0
    for number, line in numbered:
        scanner.feed(number, line)
        while scanner.copy_next:  # psql reads each COPY's data from the following lines
            index = scanner.copy_next.pop(0)
            for number, line in numbered:  # noqa: B007 (`number` is read after the loop)
                # COPY data: nothing but the end marker matters
                if line in _END_COPY:
                    break
            scanner.end_of_copy(index, number)
    scanner.end_of_file()
    scan.unsafe.sort(key=lambda item: item[0])
    scan.unsafe_statements.sort(key=lambda item: item["line"])
    return scan


_CHUNK = 4 * 1024 * 1024


class _Lines:
    """Copies a text or binary stream in big chunks, stopping at given line numbers (LF only,
    like psql) to hand over one line; COPY data in between is never split into lines."""

    def __init__(self, src, dst):
        self.src, self.dst, self.number = src, dst, 1  # number: the line at self.off
        self._fill(src.read(_CHUNK))

    def _fill(self, buf) -> None:
        self.nl = "\n" if isinstance(buf, str) else b"\n"
        self.buf, self.off, self.left = buf, 0, buf.count(self.nl)

    def copy_to(self, target: int) -> bool:
        """Copy the lines before line `target`; False when the stream ends first."""
        while self.number + self.left < target:
            self.dst.write(self.buf[self.off :])
            self.number += self.left
            self._fill(self.src.read(_CHUNK))
            if not self.buf:
                return False
        start = self.off
        while self.number < target:
            self.off = self.buf.index(self.nl, self.off) + 1
            self.number, self.left = self.number + 1, self.left - 1
        self.dst.write(self.buf[start : self.off])
        return True

    def take(self):
        """The whole line at the cursor, its ending included (it may span chunks)."""
        end = self.buf.find(self.nl, self.off)
        while end < 0:
            more = self.src.read(_CHUNK)
            if not more:
                line = self.buf[self.off :]
                self.off = len(self.buf)
                return line
            self._fill(self.buf[self.off :] + more)
            end = self.buf.find(self.nl)
        line, self.off = self.buf[self.off : end + 1], end + 1
        self.number, self.left = self.number + 1, self.left - 1
        return line

    def rest(self) -> None:
        self.dst.write(self.buf[self.off :])
        shutil.copyfileobj(self.src, self.dst, _CHUNK)


def _comment_for(line, item: LeaveOut):
    """The comment line that takes the statement's place, with the line's own ending."""
    text = f"-- busflow-verify: left out: {item.head[:80]}"
    ending = line[len(line.rstrip("\r\n" if isinstance(line, str) else b"\r\n")) :]
    return (text if isinstance(line, str) else text.encode("utf-8")) + ending


def write_restorable(src, dst, scan: PlainScan, drop_schemas: Iterable[str] = ()) -> list[dict]:
    """Write a copy of the dump (src: a path or a text/binary file; dst likewise, same kind)
    in which the ownership and privilege statements, SET/RESET SESSION AUTHORIZATION,
    CREATE EXTENSION, COMMENT ON EXTENSION and CREATE SCHEMA of `drop_schemas` (made by the
    administrative step) are each replaced by a comment line: the line count stays the same,
    so psql's line numbers still point into the original; every other byte is copied as is.
    Returns what was left out, [{line, kind, statement}], in line order.

    Raises ValueError when a line to leave out is not the line the scan saw (the file changed,
    or the scan split lines differently)."""
    drop = set(drop_schemas)
    plan = [item for item in scan.leave_out if item.kind != "schema" or item.schema in drop]
    if isinstance(src, (str, Path)):
        with open(src, "rb") as fh:
            return write_restorable(fh, dst, scan, drop)
    if isinstance(dst, (str, Path)):
        with open(dst, "wb") as fh:
            return write_restorable(src, fh, scan, drop)
    lines = _Lines(src, dst)
    for item in plan:
        if not lines.copy_to(item.line):
            raise ValueError(f"the dump ends before line {item.line} (scanned: {item.head!r})")
        line = lines.take()
        if _crc(line) != item.crc:
            raise ValueError(
                f"line {item.line} is not the scanned {item.kind} statement {item.head[:80]!r}"
            )
        dst.write(_comment_for(line, item))
    lines.rest()
    return [{"line": item.line, "kind": item.kind, "statement": item.head} for item in plan]
