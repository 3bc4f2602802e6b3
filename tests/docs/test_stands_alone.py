"""The repository stands alone: what it cites, a reader of the repository can open."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Documents that live outside the repository, tracker numbers, and paths of one machine.
OUTSIDE = re.compile(
    r"SPEC(\.md| section| §)|shared/(SPEC|reference|STYLE)|/work/|\bissue #?[0-9]+\b",
    re.IGNORECASE,
)


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"],  # noqa: S607 - git from PATH, as a developer runs it
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    files = [REPO / name.decode() for name in listed if name]
    return [path for path in files if path.suffix != ".json" and path.is_file()]


def test_no_file_cites_a_document_or_issue_outside_the_repository() -> None:
    """Code, docs and tests point to the README's sections or docs/, never to what a clone lacks."""
    this = Path(__file__).resolve()
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in tracked_text_files()
        if path != this
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert found == []
