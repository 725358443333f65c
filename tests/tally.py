"""Counts that the durability tests report at the end of a run (kill -9 trials, fuzzed files):
the issue's must-show asks for the numbers, not just a pass."""

from __future__ import annotations

from collections import Counter

counts: Counter[str] = Counter()


def add(name: str, n: int) -> None:
    counts[name] += n
