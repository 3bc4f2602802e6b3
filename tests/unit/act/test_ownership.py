"""Telling lockoutd's own lock apart: versions read from ZITADEL's details, and the verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from lockoutd.act.ownership import (
    Verdict,
    Version,
    canonical_time,
    judge_unlock,
    made_by_our_call,
    read_version,
)

OURS = Version(7, "2026-12-07T10:00:00.123456Z")


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ({"sequence": "7", "changeDate": "2026-12-07T10:00:00.123456Z"}, OURS),
        ({"sequence": "7", "changeDate": "2026-12-07T10:00:00.123456000Z"}, OURS),
        ({"sequence": "7", "changeDate": "2026-12-07T10:00:00Z", "resourceOwner": "3"},
         Version(7, "2026-12-07T10:00:00Z")),
        ({"sequence": "7", "changeDate": "2026-12-07T10:00:00.000Z"},
         Version(7, "2026-12-07T10:00:00Z")),
    ],
)  # fmt: skip
def test_a_version_has_one_spelling_per_instant(details: dict[str, Any], expected: Version) -> None:
    """protojson writes 0, 3, 6 or 9 fraction digits; the same instant reads as one version."""
    assert read_version(details) == expected


@pytest.mark.parametrize(
    "details",
    [
        None,
        [],
        {},
        {"sequence": "7"},
        {"changeDate": "2026-12-07T10:00:00Z"},
        {"sequence": "-7", "changeDate": "2026-12-07T10:00:00Z"},
        {"sequence": "\u0667", "changeDate": "2026-12-07T10:00:00Z"},  # an Arabic-Indic 7
        {"sequence": True, "changeDate": "2026-12-07T10:00:00Z"},
        {"sequence": "1" * 21, "changeDate": "2026-12-07T10:00:00Z"},
        {"sequence": str(2**64), "changeDate": "2026-12-07T10:00:00Z"},
        {"sequence": "7", "changeDate": "2026-12-07 10:00:00"},
        {"sequence": "7", "changeDate": "2026-12-07T10:00:00+01:00"},
        {"sequence": "7", "changeDate": 1765101600},
    ],
)
def test_malformed_details_give_no_version(details: Any) -> None:
    """Without both parts, well formed, there is no fingerprint (and so no proof)."""
    assert read_version(details) is None


def test_canonical_time_refuses_what_is_not_utc_rfc3339() -> None:
    assert canonical_time("2026-12-07T10:00:00.5Z") == "2026-12-07T10:00:00.5Z"
    assert canonical_time("2026-12-07T10:00:00.1234567891Z") is None
    assert canonical_time("yesterday") is None


@pytest.mark.parametrize(
    ("ours", "locked", "current", "verdict"),
    [
        pytest.param(OURS, True, OURS, Verdict.UNLOCK, id="still our lock"),
        pytest.param(OURS, False, Version(8, "2026-12-07T10:01:00Z"), Verdict.NOT_LOCKED,
                     id="unlocked meanwhile"),
        pytest.param(OURS, True, Version(9, "2026-12-07T10:02:00Z"), Verdict.NOT_OURS,
                     id="unlocked and locked again"),
        pytest.param(OURS, True, Version(7, "2026-12-07T10:00:00.9Z"), Verdict.NOT_OURS,
                     id="same sequence, another time: a guessed sequence"),
        pytest.param(OURS, True, Version(6, "2026-12-07T09:00:00Z"), Verdict.WAIT,
                     id="read side behind"),
        pytest.param(None, True, OURS, Verdict.NOT_OURS, id="no fingerprint"),
        pytest.param(OURS, True, None, Verdict.NOT_OURS, id="no version read"),
    ],
)  # fmt: skip
def test_only_a_lock_at_our_very_version_is_undone(
    ours: Version | None, locked: bool, current: Version | None, verdict: Verdict
) -> None:
    assert judge_unlock(ours, locked, current) is verdict


def test_a_lock_found_after_the_call_is_ours_only_if_it_came_after_the_read() -> None:
    """The user was lockable at sequence 5 just before the call: a lock at 6 or later came
    after; a lock at 5 or before was there already (and a missing read proves nothing)."""
    assert made_by_our_call(5, Version(6, "2026-12-07T10:00:00Z"))
    assert not made_by_our_call(5, Version(5, "2026-12-07T10:00:00Z"))
    assert not made_by_our_call(None, Version(6, "2026-12-07T10:00:00Z"))
    assert not made_by_our_call(5, None)
