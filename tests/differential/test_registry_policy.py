"""The registry-scale policy (one monitor rule per registered tcp/udp service name, all
of them, default deny) through the kernel harness and the Windows model."""

from __future__ import annotations

import json
from pathlib import Path

from fwgen.registry import bundled
from tests.differential.harness import Lab
from tests.differential.test_differential import _record_failure, run_policy
from tests.kernel.netns import KernelLog


def registry_policy() -> str:
    registry = bundled()
    names = sorted({r.name for r in registry.records if r.name and registry.pairs(r.name)}, key=str.lower)
    rules = "".join(
        f"  - {{name: s{i}, action: monitor, ports: [{json.dumps(name)}]}}\n" for i, name in enumerate(names)
    )
    return (
        "version: 1\nname: registry\ndefaults: {inbound: deny, outbound: allow}\n"
        "monitor: {log_prefix: fwgenR, rate: 10000/second}\nrules:\n" + rules
    )


def test_registry_policy_agrees_with_explain(labs: tuple[dict[str, Lab], KernelLog], tmp_path: Path) -> None:
    text = registry_policy()
    assert text.count("action: monitor") > 6000
    result, reports = run_policy(*labs, text, tmp_path)
    assert len(result.ruleset.rules) > 6000
    problems = [p for r in reports for p in r.problems]
    assert not problems, _record_failure(text, problems)
    assert all(len(r.outcomes) >= 600 for r in reports)
