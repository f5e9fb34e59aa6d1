"""iptables' dispatch trees (``iptables._Lowering.tree``) through the kernel harness.

Small policies stay linear (a protocol's lines in a run become a tree only above
``iptables.TREE_MIN_LINES``), so these tests force the tree: every run becomes one,
with one interval per leaf and two children per inner chain, the deepest trees the
policies can make. Random policies (seeded: the same ones every run) must agree with
``fwgen explain`` on real packets in both modes, and the probes must have gone through
the trees' inner chains on both families (a coverage minimum, read from the kernel's
counters of the ``-g`` lines). A compiler whose tree spans are off by one at a boundary
is caught.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwgen.build import build
from fwgen.explain import Explainer
from fwgen.registry import bundled
from fwgen.targets import iptables
from tests.differential.harness import Lab, check_policy, choose_cases
from tests.differential.policygen import policy, port_entry, to_yaml
from tests.differential.test_differential import _record_failure, run_policy
from tests.kernel.netns import KernelLog

TREE_POLICIES = 12
# `-A CHAIN ... -g CHILD` lines of a tree's inner chains, with iptables-save -c's counters
_GOTO = re.compile(r"^\[(\d+):\d+\] -A (\S+) .*-g (fwgen-\S*[io](?:tcp|udp)\d+)$", re.M)


@pytest.fixture
def forced_tree(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(iptables, "TREE_MIN_LINES", 0)
    monkeypatch.setattr(iptables, "TREE_LEAF", 1)
    monkeypatch.setattr(iptables, "TREE_FANOUT", 2)
    yield


def inner_traversals(lab: Lab) -> dict[int, Counter[str]]:
    """Per family, the packets each tree chain was entered with by a ``-g`` from its
    parent (the rules loaded now, counted since they were loaded)."""
    found: dict[int, Counter[str]] = {}
    for number, tool in ((4, "iptables-save"), (6, "ip6tables-save")):
        text = lab.host.run([tool, "-c", "-t", "filter"]).stdout
        found[number] = Counter({m[3]: int(m[1]) for m in _GOTO.finditer(text)})
    return found


@st.composite
def tree_policy(draw: st.DrawFn) -> dict[str, Any]:
    """A random policy (``policygen.policy``, the newer matches mixed in) with, in each
    direction, a block of 4-10 consecutive rules on ports alone (random ports, ranges,
    service names, protocols and actions) at a random place among its rules: random
    policies alone rarely have a port block of more than one interval, the tree's case."""
    data = draw(policy(None, mix=True))
    if data.get("targets") == ["windows"]:
        data["targets"] = ["iptables", "nftables"]  # the tree is iptables'; profiles are unused there
        for rule in data["rules"]:
            rule.pop("profiles", None)
    for direction in ("in", "out"):
        block = []
        for i in range(draw(st.integers(4, 10))):
            protocol = draw(st.sampled_from([None, "tcp", "udp"]))
            rule: dict[str, Any] = {"name": f"tree-{direction}-{i}",
                                    "action": draw(st.sampled_from(["allow", "deny", "monitor"])),
                                    "direction": direction}
            if protocol:
                rule["protocol"] = protocol
            rule["ports"] = draw(st.lists(port_entry(protocol), min_size=1, max_size=3))
            block.append(rule)
        at = draw(st.integers(0, len(data["rules"])))
        data["rules"][at:at] = block
    return data


def _chains_mode(text: str) -> str:
    data = yaml.safe_load(text)
    data["iptables"] = {"mode": "chains"}
    data["targets"] = ["iptables"]
    return yaml.safe_dump(data, sort_keys=False)


def _tree_policies(labs: tuple[dict[str, Lab], KernelLog], workdir: Path, chains_mode: bool) -> dict[str, Any]:
    seen: dict[str, Any] = {"policies": 0, "with_tree": 0, "nodes": {4: set(), 6: set()},
                            "packets": {4: 0, 6: 0}, "probes": 0}

    @settings(max_examples=TREE_POLICIES, deadline=None, print_blob=True, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=tree_policy())
    def check(data: dict[str, Any]) -> None:
        text = to_yaml(data)
        if chains_mode:
            text = _chains_mode(text)
        result, reports = run_policy(*labs, text, workdir)
        problems = [p for r in reports for p in r.problems]
        assert not problems, _record_failure(text, problems)
        seen["policies"] += 1
        seen["probes"] += sum(len(r.outcomes) for r in reports if r.target == "iptables")
        if ":fwgen-" in result.files["iptables/rules.v4"] and re.search(
                r"^:fwgen-\S*[io](tcp|udp)0 ", result.files["iptables/rules.v4"], re.M):
            seen["with_tree"] += 1
        for number, counts in inner_traversals(labs[0]["iptables"]).items():
            for chain, packets in counts.items():
                if packets:
                    seen["nodes"][number].add((seen["policies"], chain))
                    seen["packets"][number] += packets

    check()
    return seen


@pytest.mark.parametrize("mode", ["table", "chains"])
def test_forced_trees_agree_with_explain_and_are_traversed(labs: tuple[dict[str, Lab], KernelLog], tmp_path: Path,
                                                           forced_tree: None, mode: str) -> None:
    seen = _tree_policies(labs, tmp_path, chains_mode=mode == "chains")
    print(f"\n{mode} mode: {seen['policies']} policies, {seen['with_tree']} with a tree, "
          f"{seen['probes']} iptables probes; inner tree chains entered (v4, v6): "
          f"{len(seen['nodes'][4])}, {len(seen['nodes'][6])}; packets {seen['packets']}")
    assert seen["policies"] == TREE_POLICIES
    assert seen["with_tree"] >= TREE_POLICIES // 2
    # coverage minimum: the probes went down the trees, on both families
    assert len(seen["nodes"][4]) >= 20 and len(seen["nodes"][6]) >= 20, seen["nodes"]


# Allowed ports, spaced so every tree boundary is a port a rule allows and the port just
# past it one nothing allows (default deny): a span one port short either way is seen.
MUTANT = "version: 1\nname: treemut\ndefaults: {inbound: deny, outbound: deny, deny: drop}\n" \
    "monitor: {log_prefix: fwgenT, rate: 10000/second}\nrules:\n" + "".join(
        f"  - {{name: r{i}{d}, action: {'monitor' if i % 3 == 0 else 'allow'}, direction: {d}, "
        f"ports: [{2000 + 10 * i}{'-' + str(2003 + 10 * i) if i % 2 else ''}]}}\n"
        for i in range(12) for d in ("in", "out"))


@pytest.fixture
def mutant(tmp_path: Path, forced_tree: None) -> tuple[Any, dict[str, str], Explainer]:
    path = tmp_path / "treemut.yaml"
    path.write_text(MUTANT, encoding="utf-8")
    result = build(str(path), bundled(), ("iptables",))
    return result.ruleset, result.files, Explainer.from_file(str(path), bundled())


def _problems(labs: tuple[dict[str, Lab], KernelLog], ruleset: Any, files: dict[str, str],
              explainer: Explainer) -> list[str]:
    cases = choose_cases(ruleset, seed=int(hashlib.sha256(MUTANT.encode()).hexdigest()[:8], 16))
    return check_policy(labs[0]["iptables"], ruleset, files, explainer, cases, labs[1]).problems


def _shift(files: dict[str, str], end: str) -> dict[str, str]:
    """Every inner chain's span one port short at its ``end`` (lo or hi)."""

    def short(m: re.Match[str]) -> str:
        lo, hi = int(m[2]), int(m[3])
        lo, hi = (lo + 1, hi) if end == "lo" else (lo, hi - 1)
        return f"{m[1]}{lo}:{hi} -g "

    return {name: re.sub(r"^(-A \S+ -p \S+ --dport )(\d+):(\d+) -g ", short, text, flags=re.M)
            for name, text in files.items()}


def test_real_tree_passes(labs: tuple[dict[str, Lab], KernelLog], mutant: tuple[Any, dict[str, str], Explainer]
                          ) -> None:
    ruleset, files, explainer = mutant
    assert files["iptables/rules.v4"].count(" -g fwgen-") >= 20  # deep trees, both directions
    assert _problems(labs, ruleset, files, explainer) == []
    counts = inner_traversals(labs[0]["iptables"])
    assert sum(1 for n in counts[4].values() if n) >= 20 and sum(1 for n in counts[6].values() if n) >= 20


@pytest.mark.parametrize("end", ["lo", "hi"])
def test_a_tree_span_off_by_one_is_caught(labs: tuple[dict[str, Lab], KernelLog],
                                          mutant: tuple[Any, dict[str, str], Explainer], end: str) -> None:
    ruleset, files, explainer = mutant
    broken = _shift(files, end)
    assert broken != files
    problems = _problems(labs, ruleset, broken, explainer)
    assert any("explain says allow" in p and "packet not delivered" in p for p in problems), problems
    assert any("2001:db8" in p for p in problems) and any("203.0.113." in p for p in problems), problems  # v6, v4
