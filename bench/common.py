"""Shared helpers: paths, the machine description, results tables written to ``bench/results/``."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA = BENCH / "data"
RESULTS = BENCH / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    try:
        commit = subprocess.run(  # noqa: S603 - git with fixed arguments
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "commit": commit,
    }


def rss_bytes() -> int:
    """The resident set size of this process now."""
    with open("/proc/self/statm", encoding="utf-8") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize()


def pin_to_one_core() -> int | None:
    """Run this process on one core (the last one); return it, None where that is unsupported."""
    try:
        core = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return core
    except (AttributeError, OSError):
        return None


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for raw, row in zip(rows, cells[1:], strict=True):
        padded = [
            c.ljust(w) if isinstance(v, str) else c.rjust(w)
            for v, c, w in zip(raw, row, widths, strict=True)
        ]
        lines.append("| " + " | ".join(padded) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def report(
    name: str,
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    notes: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> Path:
    """Print the results table and write it to ``bench/results/NAME.md`` (and ``NAME.json``)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = "\n".join(
        [
            f"## {title}",
            "",
            f"{stamp}; {info['nproc']} cores, {info['cpu']}, {info['memory_gib']} GiB; "
            f"Python {info['python']}; lockoutd {info['commit']}",
            "",
            table(headers, rows),
            *([""] + [f"- {note}" for note in notes] if notes else []),
            "",
        ]
    )
    print(text)
    path = RESULTS / f"{name}.md"
    path.write_text(text, encoding="utf-8")
    (RESULTS / f"{name}.json").write_text(
        json.dumps(
            {
                "title": title,
                "at": stamp,
                "machine": info,
                "headers": list(headers),
                "rows": [list(r) for r in rows],
                "notes": list(notes),
                **(extra or {}),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"written to {path.relative_to(REPO)}", file=sys.stderr)
    return path


RULE_SETS: dict[int, list[Path]] = {
    1: [BENCH / "rules" / "one.yaml"],
    5: [REPO / "rules"],
    20: [REPO / "rules", BENCH / "rules" / "extra15.yaml"],
}
"""Rule paths by number of rules: the shipped brute-force rule, the shipped five, and 15 more."""


WINDOWS_CHOICES = ("compiled", "pure Python")


def use_windows(kind: str) -> None:
    """Build the engines that follow with the compiled windows or the pure-Python reference, and
    decode with the check that goes with them (the compiled one, or the reference).

    The daemon chooses once at start (``LOCKOUTD_NO_EXTENSIONS``); a benchmark runs both sides
    in one process to measure them side by side on the same data.
    """
    from lockoutd.decide import core, windows
    from lockoutd.decode import native

    native.use_check(native.check_of(kind))
    core.DISPATCH = core.dispatch_for(kind)
    if kind == core.PURE_PYTHON:
        core.EventWindows, core.DistinctWindows = windows.EventWindows, windows.DistinctWindows
        return
    from lockoutd.decide import _cwindows  # fails loudly when the core was not built

    core.EventWindows, core.DistinctWindows = _cwindows.EventWindows, _cwindows.DistinctWindows
