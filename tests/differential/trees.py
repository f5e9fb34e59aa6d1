"""What the kernel tests of iptables' dispatch trees share (test_dispatch_tree.py: trees
over ports; test_address_tree.py: trees over remote addresses; the ``forced_tree`` fixture, in conftest.py, forces the
deepest trees): running seeded random policies through them in table and chains mode, and reading
from the kernel's counters which inner chains the probes went down."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwgen.build import build
from fwgen.explain import Explainer
from fwgen.ir import Ruleset
from fwgen.registry import bundled
from tests.differential.harness import Lab, check_policy, choose_cases
from tests.differential.policygen import policy, to_yaml
from tests.differential.test_differential import _record_failure, run_policy
from tests.kernel.netns import KernelLog

TREE_POLICIES = 12


def inner_traversals(lab: Lab, child: str) -> dict[int, Counter[str]]:
    """Per family, the packets each tree chain whose name matches ``child`` (a regex) was
    entered with by a ``-g`` from its parent (the rules loaded now, since they were loaded)."""
    goto = re.compile(rf"^\[(\d+):\d+\] -A (\S+) .*-g ({child})$", re.M)
    found: dict[int, Counter[str]] = {}
    for number, tool in ((4, "iptables-save"), (6, "ip6tables-save")):
        text = lab.host.run([tool, "-c", "-t", "filter"]).stdout
        found[number] = Counter({m[3]: int(m[1]) for m in goto.finditer(text)})
    return found


def chains_mode(text: str) -> str:
    data = yaml.safe_load(text)
    data["iptables"] = {"mode": "chains"}
    data["targets"] = ["iptables"]
    return yaml.safe_dump(data, sort_keys=False)


def tree_policies(labs: tuple[dict[str, Lab], KernelLog], workdir: Path, strategy: st.SearchStrategy[dict[str, Any]],
                  in_chains_mode: bool, child: str) -> dict[str, Any]:
    """TREE_POLICIES seeded policies of ``strategy`` through every target (``run_policy``,
    which fails on any disagreement with explain); how many had a tree (a chain named
    ``child`` numbered 0) and which inner chains the probes entered, per family."""
    seen: dict[str, Any] = {"policies": 0, "with_tree": 0, "nodes": {4: set(), 6: set()},
                            "packets": {4: 0, 6: 0}, "probes": 0}
    first = child.replace(r"\d+", "0")
    root = re.compile(rf"^:{first} ", re.M)

    @settings(max_examples=TREE_POLICIES, deadline=None, print_blob=True, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=strategy)
    def check(data: dict[str, Any]) -> None:
        text = to_yaml(data)
        if in_chains_mode:
            text = chains_mode(text)
        result, reports = run_policy(*labs, text, workdir)
        problems = [p for r in reports for p in r.problems]
        assert not problems, _record_failure(text, problems)
        seen["policies"] += 1
        seen["probes"] += sum(len(r.outcomes) for r in reports if r.target == "iptables")
        if root.search(result.files["iptables/rules.v4"]):
            seen["with_tree"] += 1
        for number, counts in inner_traversals(labs[0]["iptables"], child).items():
            for chain, packets in counts.items():
                if packets:
                    seen["nodes"][number].add((seen["policies"], chain))
                    seen["packets"][number] += packets

    check()
    return seen


class Mutant(NamedTuple):
    """A fixed policy built for iptables (with the trees forced), for a mutation test."""

    text: str
    ruleset: Ruleset
    files: dict[str, str]
    explainer: Explainer


def built(text: str, workdir: Path) -> Mutant:
    path = workdir / f"{yaml.safe_load(text)['name']}.yaml"
    path.write_text(text, encoding="utf-8")
    result = build(str(path), bundled(), ("iptables",))
    return Mutant(text, result.ruleset, result.files, Explainer.from_file(str(path), bundled()))


def problems(labs: tuple[dict[str, Lab], KernelLog], mutant: Mutant, files: dict[str, str]) -> list[str]:
    """What the iptables lab finds wrong with ``files`` (the mutant's, or broken ones)
    against explain's verdicts, on probes chosen from the mutant's policy."""
    cases = choose_cases(mutant.ruleset, seed=int(hashlib.sha256(mutant.text.encode()).hexdigest()[:8], 16))
    return check_policy(labs[0]["iptables"], mutant.ruleset, files, mutant.explainer, cases, labs[1]).problems


def linux_policy(draw: st.DrawFn) -> dict[str, Any]:
    """A random policy (``policygen.policy``, the newer matches mixed in) for a target
    the trees are in: a Windows-only one is made a Linux one (profiles dropped)."""
    data: dict[str, Any] = draw(policy(None, mix=True))
    if data.get("targets") == ["windows"]:
        data["targets"] = ["iptables", "nftables"]
        for rule in data["rules"]:
            rule.pop("profiles", None)
    return data


def block_rule(draw: st.DrawFn, name: str, direction: str) -> tuple[dict[str, Any], str | None]:
    """A rule of a block a tree is made of: a random action and protocol (tcp, udp or
    both), and the protocol drawn (None for both)."""
    protocol = draw(st.sampled_from([None, "tcp", "udp"]))
    rule: dict[str, Any] = {"name": name, "action": draw(st.sampled_from(["allow", "deny", "monitor"])),
                            "direction": direction}
    if protocol:
        rule["protocol"] = protocol
    return rule, protocol
