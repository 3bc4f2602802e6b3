"""Noticing that the rule files changed, by looking at them now and then.

A Kubernetes ConfigMap volume updates by writing a new hidden folder and swapping the ``..data``
symlink to it in one rename; the visible files are symlinks through ``..data``. An editor may
rewrite a file in place, or write a new file and rename it over the old one. Each of these
changes the device, inode, size or modification time of what a rule path resolves to (or the
set of files in a folder), which :func:`fingerprint` records. Polling a few files every few
seconds costs nothing worth a watcher library and works on every file system, network ones too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from lockoutd.rules.loader import rule_files

Fingerprint = tuple[tuple[str, int, int, int, int], ...]


def fingerprint(paths: Iterable[Path]) -> Fingerprint:
    """What the rule files under ``paths`` are now: a change here means a reload is due."""
    try:
        files = rule_files(paths)
    except (OSError, ValueError):
        return ()
    seen = []
    for path in files:
        try:
            found = os.stat(path)  # follows symlinks: a swapped ..data changes the inode
        except OSError:
            continue  # gone between the listing and now: the next look sees the new state
        seen.append((str(path), found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns))
    return tuple(seen)


class RuleFilesWatch:
    """Remembers the rule files' fingerprint; :meth:`changed` says when it moved on."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self._paths = list(paths)
        self._last = fingerprint(self._paths)

    def changed(self) -> bool:
        now = fingerprint(self._paths)
        if now == self._last:
            return False
        self._last = now
        return True
