"""`busflow-verify allowlist check`: no raised or added tolerance without a new scrub-log UUID."""

from __future__ import annotations

import pytest
import yaml

from busflow_verify import cli

U1 = "0b7f4a0e-2a57-4c3e-9a64-1f0e3c2b8d11"
U2 = "5c1d9e8f-7b6a-4d3c-8e2f-0a1b2c3d4e5f"
BASE = {
    "soft_fks": [
        {
            "child": "communications.messages.booking_id",
            "parent": "commerce.bookings.id",
            "max_orphans": 200,
            "justification": [U1],
        }
    ]
}


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def changed(**entry_changes):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["soft_fks"][0].update(entry_changes)
    return data


def check(tmp_path, capsys, current):
    base = write(tmp_path / "base.yaml", BASE)
    new = write(tmp_path / "new.yaml", current)
    capsys.readouterr()
    code = cli.main(["allowlist", "check", "--base", base, "--file", new])
    return code, capsys.readouterr().out


def test_unchanged_passes(tmp_path, capsys):
    assert check(tmp_path, capsys, BASE)[0] == 0


def test_raised_without_a_new_uuid_fails_naming_the_entry(tmp_path, capsys):
    code, out = check(tmp_path, capsys, changed(max_orphans=500))
    assert code == 1
    assert (
        "entry communications.messages.booking_id -> commerce.bookings.id: max_orphans "
        "raised 200 -> 500"
    ) in out


def test_raised_with_a_new_uuid_passes(tmp_path, capsys):
    assert check(tmp_path, capsys, changed(max_orphans=500, justification=[U1, U2]))[0] == 0


def test_lowered_passes(tmp_path, capsys):
    assert check(tmp_path, capsys, changed(max_orphans=10))[0] == 0


@pytest.mark.parametrize(
    "entry, code",
    [
        ({"max_orphans": 50}, 1),
        ({"max_orphans": 50, "justification": [U2]}, 0),
        ({"max_orphans": 0}, 0),
    ],
)
def test_an_added_entry_needs_a_uuid_unless_its_tolerance_is_zero(tmp_path, capsys, entry, code):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["soft_fks"].append(
        {"child": "operations.service_legs.booking_id", "parent": "commerce.bookings.id", **entry}
    )
    got, out = check(tmp_path, capsys, data)
    assert got == code
    if code:
        assert "entry operations.service_legs.booking_id -> commerce.bookings.id is added" in out


def test_a_malformed_file_is_a_usage_error(tmp_path, capsys):
    base = write(tmp_path / "base.yaml", BASE)
    bad = tmp_path / "bad.yaml"
    bad.write_text("soft_fks:\n  - child: x\n")
    assert cli.main(["allowlist", "check", "--base", base, "--file", str(bad)]) == 2
