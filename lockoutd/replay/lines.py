"""The lines of an events file, read in batches so that replay judges thousands per call."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

# Bytes asked for per read: about a thousand events, few enough that progress (measured at the
# end of a read) is never far ahead. A pipe gives what it holds: a live stream is not held back.
_CHUNK_BYTES = 1 << 18


@dataclass(frozen=True, slots=True)
class Lines:
    """Consecutive lines of a file, blank lines left out."""

    values: list[bytes]
    """Each line without its line ending."""
    numbers: Sequence[int]
    """The line number (from 1) of each value, for messages about a bad line."""
    position: int
    """Bytes of the file read through the last of these lines."""


def read_lines(source: str) -> Iterator[Lines]:
    """The lines of ``source`` (a path, or ``-`` for standard input), a batch at a time."""
    with contextlib.ExitStack() as stack:
        handle = (
            cast(io.BufferedIOBase, sys.stdin.buffer)
            if source == "-"
            else stack.enter_context(open(source, "rb"))
        )
        yield from _batches(handle)


def _batches(handle: io.BufferedIOBase) -> Iterator[Lines]:
    read = position = 0
    rest = b""
    # read1: whatever one read returns, without waiting for the rest of the chunk.
    while chunk := handle.read1(_CHUNK_BYTES):
        position += len(chunk)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()  # the start of a line that the next chunk completes
        if lines:
            yield _lines(lines, read, position - len(rest))
            read += len(lines)
    if rest:
        yield _lines([rest], read, position)


def _lines(lines: list[bytes], before: int, position: int) -> Lines:
    # Split on "\n" only, as iterating over a binary file does; a "\r" before it is dropped.
    values = [line.rstrip(b"\r") for line in lines if line.strip()]
    if len(values) == len(lines):
        return Lines(values, range(before + 1, before + 1 + len(lines)), position)
    numbers = [before + n for n, line in enumerate(lines, start=1) if line.strip()]
    return Lines(values, numbers, position)
