"""The PostgreSQL installations on this machine, and which one restores a given dump.

pg_restore reads archives of its own major and older, never newer ones, so a dump must be
restored by a server at least as new as the pg_dump that wrote it. Candidates: a configured bin
dir, production's major installed by `make install` (/opt/busflow-pg/*, tools/postgres-newest),
every Debian major (/usr/lib/postgresql/*), and `pg_config` on PATH. The choice is the newest
server that has every extension the dump creates (newest: its pg_restore reads every archive
the others read); when none has them all, the newest that can read the dump, so the preflight
names what that server lacks and where it is found.
"""

from __future__ import annotations

import functools
import glob
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from busflow_verify.core.proc import child_env

SEARCHED = ("/opt/busflow-pg/*/bin", "/usr/lib/postgresql/*/bin")
# The newest archive version each pg_dump major writes (pg_backup_archiver.h): a server reads
# an archive when it writes that version or a newer one.
ARCHIVE_VERSIONS = {
    12: (1, 14),
    13: (1, 14),
    14: (1, 14),
    15: (1, 14),
    16: (1, 15),
    17: (1, 16),
    18: (1, 16),
}


class PostgresBinariesNotFound(RuntimeError):
    """No complete PostgreSQL installation where one was looked for."""


@dataclass(frozen=True)
class Server:
    """One installation: its bin dir, version and extensions."""

    bin_dir: Path
    version: str  # "18.6"
    sharedir: Path
    pkglibdir: Path

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def label(self) -> str:
        return f"PostgreSQL {self.version} ({self.bin_dir})"

    def reads_archive(self, archive_version: tuple[int, int]) -> bool:
        newest = ARCHIVE_VERSIONS.get(self.major, max(ARCHIVE_VERSIONS.values()))
        return archive_version <= newest

    @property
    def extensions(self) -> frozenset[str]:
        return frozenset(p.stem for p in (self.sharedir / "extension").glob("*.control"))

    def has_library(self, name: str) -> bool:
        return (self.pkglibdir / f"{name}.so").exists()

    @property
    def cron_can_hold_jobs(self) -> bool:
        """Its pg_cron has `cron.launch_active_jobs` (1.5+): a restored job can be kept from
        running from the first second. An older pg_cron would run the copy's jobs."""
        library = self.pkglibdir / "pg_cron.so"
        return library.exists() and b"launch_active_jobs" in library.read_bytes()

    @property
    def restorable_extensions(self) -> frozenset[str]:
        """The extensions a dump may create here: pg_cron only where its jobs can be held."""
        return self.extensions - ({"pg_cron"} if not self.cron_can_hold_jobs else set())


@functools.lru_cache(maxsize=32)
def describe(bin_dir: str) -> Server | None:
    """The server in `bin_dir`, or None when it is not a complete one (no initdb/pg_ctl)."""
    path = Path(bin_dir)
    if not all((path / tool).exists() for tool in ("initdb", "pg_ctl", "pg_restore", "pg_config")):
        return None
    out = subprocess.run(
        [str(path / "pg_config"), "--version", "--sharedir", "--pkglibdir"],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    lines = out.stdout.splitlines()
    match = re.search(r"PostgreSQL (\d+(?:\.\d+)?)", lines[0] if lines else "")
    if out.returncode != 0 or not match or len(lines) < 3:
        return None
    return Server(path, match[1], Path(lines[1]), Path(lines[2]))


def installed(explicit: str | None = None) -> list[Server]:
    """Every complete installation found, newest first; `explicit` alone when given."""
    if explicit:
        server = describe(str(Path(explicit)))
        if server is None:
            raise PostgresBinariesNotFound(
                f"{explicit} holds no complete PostgreSQL (initdb, pg_ctl, pg_restore, pg_config)"
            )
        return [server]
    dirs = [p for pattern in SEARCHED for p in glob.glob(pattern)]
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, env=child_env()
        )
        dirs.append(out.stdout.strip())
    found = {s.bin_dir.resolve(): s for s in filter(None, map(describe, dirs))}
    if not found:
        raise PostgresBinariesNotFound(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in /opt/busflow-pg/*/bin, "
            "/usr/lib/postgresql/*/bin or via pg_config; run `make install`"
        )
    return sorted(found.values(), key=lambda s: tuple(map(int, s.version.split("."))), reverse=True)


@dataclass(frozen=True)
class Choice:
    server: Server | None  # None: no installed server reads the dump
    reason: str
    lacking: tuple[str, ...] = ()  # extensions the chosen server does not have


def choose(
    servers: list[Server],
    archive_version: tuple[int, int] | None,
    dumped_by_major: int | None,
    extensions: list[str],
) -> Choice:
    """The server to restore a dump with (see the module's docstring)."""
    able = [
        s
        for s in servers
        if (archive_version is None or s.reads_archive(archive_version))
        and (dumped_by_major is None or s.major >= dumped_by_major)
    ]
    written = (
        f"pg_dump {dumped_by_major}"
        if dumped_by_major
        else f"archive {'.'.join(map(str, archive_version))}"
        if archive_version
        else "the dump"
    )
    if not able:
        newest = servers[0].label if servers else "none"
        return Choice(None, f"no installed server reads {written} (newest: {newest})")
    wanted = set(extensions)
    for server in able:
        if wanted <= server.restorable_extensions:
            has = f" and has {', '.join(sorted(wanted))}" if wanted else ""
            return Choice(server, f"the newest installed server that reads {written}{has}")
    server = able[0]
    lacking = tuple(sorted(wanted - server.restorable_extensions))
    return Choice(
        server,
        f"the newest installed server that reads {written}; no installed "
        f"server has all of {', '.join(sorted(wanted))}",
        lacking,
    )


def major_of(dumped_by: str | None) -> int | None:
    """18 from "18.6 (Debian 18.6-1)" or "15.18"; None when unknown."""
    match = re.match(r"\s*(\d+)", dumped_by or "")
    return int(match[1]) if match else None
