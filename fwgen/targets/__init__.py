"""The explicit table of output targets. Each target module exposes ``NAME`` and
``render(ruleset) -> TargetOutput``."""

from __future__ import annotations

from typing import NamedTuple


class TargetOutput(NamedTuple):
    files: dict[str, str]  # path relative to the output directory -> text
    warnings: tuple[str, ...] | list[str] = ()
