"""Inclusive integer intervals (ports, or addresses as integers), in their canonical form.

``explain`` keeps its own copy on purpose: the reference semantics shares no code with
what it judges.
"""

from __future__ import annotations

from collections.abc import Iterable

Span = tuple[int, int]  # inclusive [lo, hi]


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sort and merge overlapping or adjacent intervals."""
    merged: list[Span] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged
