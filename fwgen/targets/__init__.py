"""The explicit table of output targets. Each target module exposes ``NAME`` and
``render(ruleset) -> TargetOutput``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TargetOutput:
    files: dict[str, str]  # path relative to the output directory -> text
    warnings: list[str] = field(default_factory=list)
