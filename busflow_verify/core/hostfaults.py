"""Faults of the verify host, named as the host's: never an F-code of the backup.

A full disk during the data section shows up as a failed COPY ("could not extend file ...: No
space left on device"), which the F2 tree would read as source-side corruption and answer with
"snapshot the source". Everything that can fail on the host's side (the download's pwrite,
initdb, CREATE DATABASE, a restore section, VACUUM) is first put through `host_fault`, which
recognises the operating system's and PostgreSQL's words for a full disk, a lack of memory, a
refused path and a server that will not start, from a live exception or from the text a
subprocess or a recorded step error left.
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

from busflow_verify.core.failures import Finding

_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_NO_SPACE = re.compile(
    r"No space left on device|Disk quota exceeded|could not extend file|Check free disk space|"
    r"DiskFull|\b53100\b",
)
# the server's "ERROR:  out of memory" or the OS's; not pg_restore's own "error: out of memory",
# which a corrupt archive's absurd length field also causes (that is the dump's: F2)
_NO_MEMORY = re.compile(
    r"ERROR:\s+out of memory|Cannot allocate memory|MemoryError|OutOfMemory|\b53200\b"
)
# the operating system's refusal (capitalised strerror), not PostgreSQL's "permission denied for"
_REFUSED_PATH = re.compile(r"""(?:"(?P<path>/[^"]+)"|'(?P<qpath>/[^']+)'|\S*): Permission denied""")
_NOT_STARTING = re.compile(r"ClusterStartError|disposable Postgres did not start|initdb failed")
_PATH_IN_TEXT = re.compile(r"""(?:file|directory) "(?P<path>[^"]+)"|'(?P<qpath>/[^']+)'""")


def host_fault(
    error: BaseException | str,
    stage: str,
    path: str | Path | None = None,
    needed_bytes: int | None = None,
    where: str = "the verify host",
) -> Finding | None:
    """HOST_OUT_OF_SPACE or VERIFY_HOST_FAULT for a host-side error met at `stage` (e.g. "the
    download", "restoring data"); None when the error is not the host's. `path` is where the
    bytes were going (its filesystem's free space is read now); `where` names the machine (a
    restore server's disk is that server's, not the verify host's)."""
    text, errnos, filename = _facts(error)
    if errnos & _NO_SPACE_ERRNOS or _NO_SPACE.search(text):
        return out_of_space(stage, path or filename or _path_in(text), needed_bytes, where, text)
    if errno.ENOMEM in errnos or _NO_MEMORY.search(text):
        return _fault("out_of_memory", f"{where} ran out of memory during {stage}", stage, text)
    refused = _REFUSED_PATH.search(text)
    if errnos & {errno.EACCES, errno.EPERM} or refused:
        named = filename or (refused and (refused["path"] or refused["qpath"])) or path
        on = f" on {named}" if named else ""
        summary = f"{where} refused access{on} during {stage} (permission denied)"
        return _fault("permission_denied", summary, stage, text, path=str(named or ""))
    if _NOT_STARTING.search(text):
        summary = f"the disposable Postgres on {where} did not start during {stage}"
        return _fault("server_not_starting", summary, stage, text)
    return None


def out_of_space(
    stage: str,
    path: str | Path | None,
    needed_bytes: int | None = None,
    where: str = "the verify host",
    error: str = "",
    cause: str = "out_of_space",
    free: int | None = None,
) -> Finding:
    """HOST_OUT_OF_SPACE naming the path, its free bytes and the bytes needed (when known).
    `free` is the caller's measurement when it has one (measured once: a second reading of a
    busy filesystem would disagree with the first), else it is measured here."""
    if free is None and path and where == "the verify host":
        free = free_bytes(path)
    said = [f"{where} ran out of disk space during {stage}"]
    if path:
        said.append(f"at {path}")
    amounts = []
    if free is not None:
        amounts.append(f"{free:,} bytes free")
    if needed_bytes is not None:
        amounts.append(f"{needed_bytes:,} needed")
    summary = " ".join(said) + (f" ({', '.join(amounts)})" if amounts else "")
    summary += ": the backup is not implicated; free space or move the scratch dir"
    details = {
        "cause": cause,
        "stage": stage,
        "path": str(path) if path else None,
        "free_bytes": free,
        "needed_bytes": needed_bytes,
        "host": where,
    }
    if error:
        details["error"] = _telling_line(error, _NO_SPACE)
    return Finding("HOST_OUT_OF_SPACE", summary, details)


def free_bytes(path: str | Path) -> int | None:
    """Free bytes of the filesystem `path` is on (its nearest existing parent)."""
    try:
        return shutil.disk_usage(existing_parent(path)).free
    except OSError:
        return None


def existing_parent(path: str | Path) -> Path:
    """`path`, or its nearest parent that exists (a scratch dir not made yet)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _fault(cause: str, summary: str, stage: str, text: str, **extra) -> Finding:
    summary += ": the backup is not implicated; fix the host, re-run the date"
    pattern = {"out_of_memory": _NO_MEMORY, "permission_denied": _REFUSED_PATH}.get(cause)
    details = {"cause": cause, "stage": stage, "error": _telling_line(text, pattern), **extra}
    return Finding("VERIFY_HOST_FAULT", summary, details)


def _facts(error: BaseException | str) -> tuple[str, set[int], str | None]:
    """(the text of the error and its causes, their errnos, the first filename an OSError named)."""
    if isinstance(error, str):
        return error, set(), None
    texts, errnos, filename, seen = [], set(), None, set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(f"{type(current).__name__}: {current}")
        if isinstance(current, OSError) and current.errno is not None:
            errnos.add(current.errno)
            filename = filename or (str(current.filename) if current.filename else None)
        sqlstate = getattr(current, "sqlstate", None)
        if sqlstate:
            texts.append(f"SQLSTATE {sqlstate}")
        current = current.__cause__ or current.__context__
    return "\n".join(texts), errnos, filename


def _path_in(text: str) -> str | None:
    match = _PATH_IN_TEXT.search(text)
    return (match["path"] or match["qpath"]) if match else None


def _telling_line(text: str, pattern: re.Pattern | None = None) -> str:
    """The first line that says what happened (matches `pattern`), else the first line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    telling = [line for line in lines if pattern and pattern.search(line)]
    return (telling or lines or [""])[0][:500]
