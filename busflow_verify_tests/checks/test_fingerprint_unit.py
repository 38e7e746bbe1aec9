"""The fingerprint's pure logic: which columns are left out and why, what verify hashes of a
restored table, the value's form, and the comparison with the manifest's."""

from __future__ import annotations

from dataclasses import replace

import pytest

from busflow_verify.core.checks import fingerprint as fp
from busflow_verify.core.checks.fingerprint import ColumnType, Fingerprint, FingerprintRequest
from busflow_verify.core.checks.sequences import SequenceState, sequences_behind
from busflow_verify.core.store.manifest import (
    EXACT,
    Manifest,
    ManifestError,
    TableCount,
    compare_counts,
    fingerprint_note,
)
from busflow_verify_tests.store.test_manifest_unit import manifest

TYPES = {
    1: ColumnType("int4", True, (), None),
    2: ColumnType("money", True, (), None),
    3: ColumnType("price", False, (2,), None),  # a domain over money
    4: ColumnType("_price", False, (3,), None),  # an array of it
    5: ColumnType("float8", True, (), None),
    6: ColumnType("vector", False, (), "vector"),
    7: ColumnType("_vector", False, (6,), None),
    8: ColumnType("regclass", True, (), None),
    9: ColumnType("pair", False, (1, 2), None),  # a composite with a money field
}
COLUMNS = [
    ("id", 1, False),
    ("total", 2, False),
    ("price", 3, False),
    ("prices", 4, False),
    ("ratio", 5, False),
    ("embeddings", 7, False),
    ("rel", 8, False),
    ("pair", 9, False),
    ("cents", 1, True),
]


def test_columns_left_out_with_their_reason():
    got = fp._decide(COLUMNS, TYPES, 15)
    assert got.columns == ("id", "ratio", "embeddings")
    assert set(got.left_out) == {"total", "price", "prices", "rel", "pair", "cents"}
    assert got.left_out["prices"].startswith("money: its text form follows lc_monetary")
    assert got.left_out["cents"] == fp.GENERATED
    assert "search_path" in got.left_out["rel"]
    assert got.extension_columns == {"embeddings": "vector"}
    assert got.builtin_columns == ("id", "ratio")
    older = fp._decide(COLUMNS, TYPES, 11)
    assert "ratio" not in older.columns
    assert older.left_out["ratio"].startswith("float8: PostgreSQL 11 writes it in another")


def test_the_value_is_the_sum_modulo_2_64_in_hex():
    assert fp.as_fingerprint(None) == "0" * 16
    assert fp.as_fingerprint(-1) == "f" * 16
    assert fp.as_fingerprint(2**64 + 5) == "0000000000000005"


def test_one_statement_counts_and_fingerprints():
    text = fp.count_statement("shop", "or ders", [("id", 'we"ird')]).as_string(None)
    assert text == (
        'SELECT count(*), sum(pg_catalog.hashtextextended(ROW("id", "we""ird")::text, 0)) '
        'FROM "shop"."or ders"'
    )
    assert fp.count_statement("s", "t").as_string(None) == 'SELECT count(*) FROM "s"."t"'


REQUEST = FingerprintRequest(("id", "e"), {"e": "vector"}, {"vector": "0.8.0"}, "UTF8")


def test_verify_hashes_every_column_when_the_extension_matches():
    plan = fp.plan(REQUEST, ["id", "e", "new"], {"vector": "0.8.0"}, "UTF8")
    assert (plan.columns, plan.variant, plan.left_out) == (("id", "e"), "all", {})


def test_an_extension_of_another_version_leaves_its_columns_out_here():
    plan = fp.plan(REQUEST, ["id", "e"], {"vector": "0.7.4"}, "UTF8")
    assert (plan.columns, plan.variant) == (("id",), "builtin")
    assert plan.left_out["e"].startswith("vector 0.8.0 at the source, 0.7.4 here")


def test_missing_columns_and_another_encoding():
    plan = fp.plan(REQUEST, ["id"], {"vector": "0.8.0"}, "UTF8")
    assert plan.columns is None and plan.problem == "the restored table lacks column(s) e"
    plan = fp.plan(REQUEST, ["id", "e"], {"vector": "0.8.0"}, "LATIN1")
    assert plan.columns is None and "encoding is UTF8" in plan.not_compared


def _manifest(**counts: TableCount) -> Manifest:
    return replace(
        manifest(),
        extensions={"vector": "0.8.0"},
        tables={k.replace("__", "."): v for k, v in counts.items()},
        encoding="UTF8",
        fingerprint_method=fp.METHOD,
    )


ORDERS = TableCount(
    400, EXACT, "00000000000000aa", ("id", "e"), {"total": "money: ..."}, {"e": "vector"}, "bb" * 8
)


def test_round_trip_and_a_malformed_fingerprint_named():
    m = _manifest(shop__orders=ORDERS, shop__notes=TableCount(3, EXACT))
    back = Manifest.from_json(m.to_json(), "test")
    assert back == m
    assert back.fingerprint_requests() == {
        "shop.orders": FingerprintRequest(("id", "e"), {"e": "vector"}, {"vector": "0.8.0"}, "UTF8")
    }
    data = m.to_dict()
    data["tables"]["shop.orders"]["fingerprint"] = "xyz"
    with pytest.raises(ManifestError) as info:
        Manifest.from_dict(data, "s3://b/k")
    assert info.value.field == "tables.shop.orders.fingerprint"
    assert replace(m, fingerprint_method="other/9").fingerprint_requests() == {}


def test_equal_counts_and_another_fingerprint_is_dump_content_differs():
    m = _manifest(shop__orders=ORDERS)
    same = compare_counts(
        m, {"shop.orders": 400}, "s3://b/k", {"shop.orders": Fingerprint("00000000000000aa")}
    )
    assert same.findings == [] and same.fingerprints_matched == 1
    assert fingerprint_note(m, same).startswith("1 table(s)' fingerprints match")
    assert "shop.orders.total (money: ...)" in fingerprint_note(m, same)
    got = compare_counts(
        m, {"shop.orders": 400}, "s3://b/k", {"shop.orders": Fingerprint("00000000000000ab")}
    )
    [finding] = got.findings
    assert finding.name == "DUMP_CONTENT_DIFFERS" and finding.mode.code == "F2"
    assert (
        "shop.orders: source fingerprint 00000000000000aa, restored 00000000000000ab, the counts "
        "match (400 rows); left out: total (money: ...)" in finding.summary
    )
    # verify left the extension's columns out: the manifest's fingerprint without them
    builtin = Fingerprint("bb" * 8, "builtin", {"e": "vector 0.8.0 at the source, 0.7 here"})
    assert compare_counts(m, {"shop.orders": 400}, "s", {"shop.orders": builtin}).findings == []
    # other counts: DUMP_INCOMPLETE, and the fingerprints are not what is reported
    [finding] = compare_counts(
        m, {"shop.orders": 399}, "s", {"shop.orders": Fingerprint("ff" * 8)}
    ).findings
    assert finding.name == "DUMP_INCOMPLETE"
    lacks = Fingerprint(None, problem="the restored table lacks column(s) e")
    [finding] = compare_counts(m, {"shop.orders": 400}, "s", {"shop.orders": lacks}).findings
    assert "shop.orders: the restored table lacks column(s) e, the counts match" in finding.summary


def test_the_note_says_when_only_counts_are_compared():
    m = replace(_manifest(shop__notes=TableCount(3, EXACT)), fingerprint_method=None)
    result = compare_counts(m, {"shop.notes": 3}, "s")
    assert (
        fingerprint_note(m, result) == "no fingerprints in this manifest: compared by counts only"
    )
    newer = replace(m, fingerprint_method="sum-something-else/2")
    assert "is not the one this verifier computes" in fingerprint_note(newer, result)


def test_a_sequence_behind_names_both_numbers():
    ok = SequenceState("s.a_seq", "s.a.id", 10, True, 11, "max", 10, False)
    behind = SequenceState("s.b_seq", "s.b.id", 100, True, 101, "max", 16049, True)
    assert sequences_behind([ok]) == []
    [finding] = sequences_behind([ok, behind])
    assert finding.name == "SEQUENCE_BEHIND" and finding.mode.severity == "P2"
    assert "s.b_seq (owned by s.b.id): last_value 100, the column's max 16,049" in finding.summary
    assert "s.a_seq" not in finding.summary
