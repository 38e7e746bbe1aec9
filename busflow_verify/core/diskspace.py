"""Disk before work: will the dump and the restored database fit, before a byte is downloaded?

The download needs the dump's size (HEAD) in the scratch dir; an ephemeral restore needs the
restored database's size in the cluster's data dir, estimated from the dump's size times the
restored/dump ratio of the trailing verified runs (their own measurements), or verify.yaml's
`disk_space.restored_per_dump_byte` when there is no history. Needs on the same filesystem add
up. Too little free space is HOST_OUT_OF_SPACE, naming each path, its free and needed bytes.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from busflow_verify.core.failures import Finding
from busflow_verify.core.hostfaults import existing_parent, free_bytes, out_of_space


@dataclass(frozen=True)
class SpaceNeed:
    path: Path  # where the bytes will go (it, or its nearest existing parent, is measured)
    bytes: int
    what: str  # "the downloaded dump", "the restored database"


def restored_estimate(
    dump_bytes: int, history: list[tuple[int, int]], default_ratio: float
) -> tuple[int, str]:
    """(estimated restored bytes, how it was estimated). `history`: (dump bytes, restored bytes)
    of trailing verified runs; the highest of their ratios is used (a database only grows)."""
    ratios = [restored / dumped for dumped, restored in history if dumped > 0 and restored > 0]
    if ratios:
        ratio = max(ratios)
        how = (
            f"{ratio:.2f} x the dump, the highest restored/dump ratio of the last "
            f"{len(ratios)} verified run(s) (median {statistics.median(ratios):.2f})"
        )
    else:
        ratio = default_ratio
        how = f"{ratio:.2f} x the dump (disk_space.restored_per_dump_byte: no verified run yet)"
    return int(dump_bytes * ratio), how


def check_space(needs: list[SpaceNeed], headroom: float = 1.0) -> Finding | None:
    """HOST_OUT_OF_SPACE when a filesystem has less free than its needs (summed) x `headroom`."""
    by_device: dict[int, list[SpaceNeed]] = {}
    for need in needs:
        by_device.setdefault(_device(need.path), []).append(need)
    for group in by_device.values():
        needed = int(sum(n.bytes for n in group) * headroom)
        free = free_bytes(group[0].path)
        if free is None or free >= needed:
            continue
        what = " and ".join(f"{n.what} ({n.bytes:,} bytes)" for n in group)
        finding = out_of_space(
            "the free-space check before the download",
            group[0].path,
            needed,
            cause="not_enough_free_space",
            free=free,
        )
        finding.summary = (
            f"not enough free space on the verify host at {group[0].path}: {free:,} bytes free, "
            f"{needed:,} needed for {what} with {headroom:.2f}x headroom; nothing was "
            "downloaded. The backup is not implicated: free space or move the scratch dir"
        )
        finding.details["needs"] = [
            {"path": str(n.path), "bytes": n.bytes, "what": n.what} for n in group
        ]
        return finding
    return None


def _device(path: Path) -> int:
    return os.stat(existing_parent(path)).st_dev
