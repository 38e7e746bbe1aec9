"""A stored dump that is not the one its manifest describes is the stored object's fault, not an
outage: both endpoints answer normally, so it is F2 STORED_OBJECT_MISMATCH (P1, @security-oncall),
never F5's "both endpoints down", and no cutover halt is set. Real servers: the source Postgres,
the primary and the mirror as two `rclone serve s3`."""

from __future__ import annotations

import pytest

from busflow_verify.core.store.manifest import manifest_key
from busflow_verify.core.store.producer import produce
from busflow_verify_tests.conftest import busflow_sql, database_with, pg_dump_of

pytestmark = pytest.mark.e2e

DAY, KEY = "2026-11-20", "pg_dump_20261120_0100.dump"


@pytest.fixture(scope="module")
def source(source_pg):
    """The night's source (its DSN), and the same data with seven bookings fewer."""
    database_with(
        source_pg, "stored_fewer", busflow_sql() + "DELETE FROM commerce.bookings WHERE id <= 7"
    )
    return database_with(source_pg, "stored_src", busflow_sql())


def _fail(verdict) -> dict:
    [failure] = verdict["failures"]
    assert (failure["code"], failure["name"], failure["severity"]) == (
        "F2",
        "STORED_OBJECT_MISMATCH",
        "P1",
    )
    assert failure["escalate_to"] == ["@infra-oncall", "@security-oncall"]
    assert "not the one the producer wrote" in failure["summary"]
    assert "not an outage" in failure["summary"]
    assert verdict["cutover_halt"] is None  # no outage: cutover work is not halted
    assert "Compare it with the mirror's copy" in failure["next_step"]
    return failure


def test_another_dump_beside_the_manifest_is_the_stored_objects_fault(
    harness, source, source_pg, fallback_s3, monkeypatch, tmp_path
):
    """The issue's case: another dump, seven rows fewer, beside the first's manifest, on both
    endpoints. HEAD tells before a byte is downloaded."""
    first = produce(source, tmp_path / KEY)
    other = pg_dump_of(source_pg, "stored_fewer", tmp_path / "other.dump")
    assert other.stat().st_size != first.manifest.size_bytes
    harness.put(KEY, other)
    harness.put(manifest_key(KEY), first.manifest_path)
    harness.mirror_to(fallback_s3, monkeypatch)
    code, verdict = harness.verify(DAY)
    assert code == 1, verdict
    failure = _fail(verdict)
    size = other.stat().st_size
    assert failure["details"]["cause"] == "size_mismatch"
    assert (
        f"is {size:,} bytes, its manifest says {first.manifest.size_bytes:,}"
        in (failure["summary"])
    )
    assert (
        f"the fallback endpoint's copy is {size:,} bytes (not the manifest's size either)"
        in (failure["summary"])
    )
    assert verdict["restore"] is None  # nothing was downloaded


def test_the_same_wrong_bytes_from_both_endpoints_are_the_stored_objects_fault(
    harness, source, fallback_s3, monkeypatch, tmp_path
):
    """Same size, one byte changed in the stored object on both endpoints: each delivers the
    same bytes twice and the manifest's SHA-256 refuses them. Not F5."""
    first = produce(source, tmp_path / KEY)
    data = bytearray(first.dump_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    harness.put(KEY, bytes(data))
    harness.put(manifest_key(KEY), first.manifest_path)
    harness.mirror_to(fallback_s3, monkeypatch)
    code, verdict = harness.verify(DAY)
    assert code == 1, verdict
    failure = _fail(verdict)
    assert failure["details"]["cause"] == "sha256_mismatch"
    assert "alike at every attempt" in failure["summary"]
    assert "the manifest says " + first.manifest.sha256 in failure["summary"]
