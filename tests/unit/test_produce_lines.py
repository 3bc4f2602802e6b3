"""Events typed in a shell: JSON objects keyed by user, stamped with the time if they have none."""

from __future__ import annotations

import io
import json

from lockoutd.testing.produce import records_from


def test_lines_become_keyed_records_and_bad_lines_are_reported() -> None:
    errors = io.StringIO()
    lines = io.StringIO(
        '{"type": "auth.login.failed", "user_id": "7", "occurred_at": "2026-11-02T09:00:00Z"}\n'
        "\n"
        '{"type": "auth.login.failed", "login_name": "Alice@Example.com"}\n'
        "[1, 2]\n"
        "{oops\n"
    )
    records = records_from(lines, errors)
    assert [key for key, _ in records] == [b"7", b"Alice@Example.com"]
    first, second = (json.loads(value) for _, value in records)
    assert first["occurred_at"] == "2026-11-02T09:00:00Z"
    assert second["occurred_at"].endswith("Z")
    reported = errors.getvalue().splitlines()
    assert reported[0] == "line 4: not a JSON object; skipped"
    assert reported[1].startswith("line 5: not JSON")
    assert len(reported) == 2
