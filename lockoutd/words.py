"""Counted nouns in messages: "1 rule", "2 rules", never "1 rules"."""

from __future__ import annotations


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and ``noun``, in the plural unless ``number`` is 1 (``plural`` if irregular)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
