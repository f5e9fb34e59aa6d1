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

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from tests.differential.harness import Lab
from tests.differential.policygen import port_entry
from tests.differential.trees import (
    TREE_POLICIES,
    Mutant,
    block_rule,
    built,
    inner_traversals,
    linux_policy,
    problems,
    tree_policies,
)
from tests.kernel.netns import KernelLog

PORT_TREE = r"fwgen-\S*[io](?:tcp|udp)\d+"  # the name of a chain of a port tree


@st.composite
def tree_policy(draw: st.DrawFn) -> dict[str, Any]:
    """A random policy (``policygen.policy``, the newer matches mixed in) with, in each
    direction, a block of 4-10 consecutive rules on ports alone (random ports, ranges,
    service names, protocols and actions) at a random place among its rules: random
    policies alone rarely have a port block of more than one interval, the tree's case."""
    data = linux_policy(draw)
    for direction in ("in", "out"):
        block = []
        for i in range(draw(st.integers(4, 10))):
            rule, protocol = block_rule(draw, f"tree-{direction}-{i}", direction)
            rule["ports"] = draw(st.lists(port_entry(protocol), min_size=1, max_size=3))
            block.append(rule)
        at = draw(st.integers(0, len(data["rules"])))
        data["rules"][at:at] = block
    return data


@pytest.mark.parametrize("mode", ["table", "chains"])
def test_forced_trees_agree_with_explain_and_are_traversed(labs: tuple[dict[str, Lab], KernelLog], tmp_path: Path,
                                                           forced_tree: None, mode: str) -> None:
    seen = tree_policies(labs, tmp_path, tree_policy(), mode == "chains", PORT_TREE)
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
def mutant(tmp_path: Path, forced_tree: None) -> Mutant:
    return built(MUTANT, tmp_path)


def _shift(files: dict[str, str], end: str) -> dict[str, str]:
    """Every inner chain's span one port short at its ``end`` (lo or hi)."""

    def short(m: re.Match[str]) -> str:
        lo, hi = int(m[2]), int(m[3])
        lo, hi = (lo + 1, hi) if end == "lo" else (lo, hi - 1)
        return f"{m[1]}{lo}:{hi} -g "

    return {name: re.sub(r"^(-A \S+ -p \S+ --dport )(\d+):(\d+) -g ", short, text, flags=re.M)
            for name, text in files.items()}


def test_real_tree_passes(labs: tuple[dict[str, Lab], KernelLog], mutant: Mutant
                          ) -> None:
    files = mutant.files
    assert files["iptables/rules.v4"].count(" -g fwgen-") >= 20  # deep trees, both directions
    assert problems(labs, mutant, files) == []
    counts = inner_traversals(labs[0]["iptables"], PORT_TREE)
    assert sum(1 for n in counts[4].values() if n) >= 20 and sum(1 for n in counts[6].values() if n) >= 20


@pytest.mark.parametrize("end", ["lo", "hi"])
def test_a_tree_span_off_by_one_is_caught(labs: tuple[dict[str, Lab], KernelLog],
                                          mutant: Mutant, end: str) -> None:
    files = mutant.files
    broken = _shift(files, end)
    assert broken != files
    found = problems(labs, mutant, broken)
    assert any("explain says allow" in p and "packet not delivered" in p for p in found), found
    assert any("2001:db8" in p for p in found) and any("203.0.113." in p for p in found), found  # v6, v4
