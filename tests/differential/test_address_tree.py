"""iptables' address trees (``iptables._Lowering.address_run``) through the kernel harness.

Consecutive rules on ports and remote networks alone whose lines would be more than
``iptables.TREE_MIN_LINES`` are written as trees of chains over the first-match partition
of the remote address space, one per group of ports the same rules cover, instead of one
line per network. Small policies never reach the threshold, so these tests force the
trees: one span per leaf and two children per inner chain, the deepest trees they make.
Random policies (seeded: the same every run) with blocks of address-restricted rules must
agree with ``fwgen explain`` on real packets, in table and chains mode, and the probes must
have gone down the trees' inner chains on both families (a coverage minimum, read from the
kernel's counters of the ``-g`` lines). A compiler whose address spans are one address off
is caught.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from fwgen.build import build
from fwgen.explain import Explainer
from fwgen.registry import bundled
from fwgen.targets import iptables
from tests.differential.harness import Lab, check_policy, choose_cases
from tests.differential.policygen import (
    HOT_HI,
    HOT_LO,
    NETWORKS_V4,
    NETWORKS_V6,
    PEER_V4,
    PEER_V6,
    port_entry,
)
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

ADDRESS_TREE = r"fwgen-\S*[io]a\d+"  # the name of a chain of an address tree
# Networks for the rules: the peers' own addresses, their neighbours (which no peer owns)
# and the policy generator's networks, so a rule's list collapses to many networks.
_NEIGHBOURS = tuple(str(ipaddress.ip_address(a) + d) for a in PEER_V4 + PEER_V6 for d in (-1, 1))
POOL = PEER_V4 + PEER_V6 + _NEIGHBOURS + NETWORKS_V4[:-1] + NETWORKS_V6[:-1]  # not 0.0.0.0/0, ::/0


@st.composite
def tree_policy(draw: st.DrawFn) -> dict[str, Any]:
    """A random policy (``policygen.policy``, the newer matches mixed in) with, in each
    direction, a block of 2-8 rules restricted to 1-10 remote networks each (overlapping:
    first match decides), most of them on ports shared within the block (one port group
    decided by several rules), at a random place among its rules; random actions and
    protocols."""
    data = linux_policy(draw)
    for direction in ("in", "out"):
        shared = draw(st.lists(st.integers(HOT_LO, HOT_HI).map(str), min_size=1, max_size=3, unique=True))
        block = []
        for i in range(draw(st.integers(2, 8))):
            rule, protocol = block_rule(draw, f"addr-{direction}-{i}", direction)
            ports = draw(st.sampled_from(["shared", "shared", "own", "all"]))
            if ports == "shared":
                rule["ports"] = draw(st.lists(st.sampled_from(shared), min_size=1, unique=True))
            elif ports == "own":
                rule["ports"] = draw(st.lists(port_entry(protocol), min_size=1, max_size=3))
            rule["from" if direction == "in" else "to"] = draw(
                st.lists(st.sampled_from(POOL), min_size=1, max_size=10, unique=True))
            block.append(rule)
        at = draw(st.integers(0, len(data["rules"])))
        data["rules"][at:at] = block
    return data


@pytest.mark.parametrize("mode", ["table", "chains"])
def test_forced_address_trees_agree_with_explain_and_are_traversed(
        labs: tuple[dict[str, Lab], KernelLog], tmp_path: Path, forced_tree: None, mode: str) -> None:
    seen = tree_policies(labs, tmp_path, tree_policy(), mode == "chains", ADDRESS_TREE)
    print(f"\n{mode} mode: {seen['policies']} policies, {seen['with_tree']} with an address tree, "
          f"{seen['probes']} iptables probes; inner address-tree chains entered (v4, v6): "
          f"{len(seen['nodes'][4])}, {len(seen['nodes'][6])}; packets {seen['packets']}")
    assert seen["policies"] == TREE_POLICIES
    assert seen["with_tree"] >= TREE_POLICIES // 2
    # coverage minimum: the probes went down the trees, on both families
    assert len(seen["nodes"][4]) >= 20 and len(seen["nodes"][6]) >= 20, seen["nodes"]


# Each peer's own address allowed (its span's both ends are that address), its neighbours
# not (nothing allows them): a span one address off either way misses a peer.
_PEERS = ", ".join(f'"{a}"' for a in PEER_V4 + PEER_V6)
MUTANT = ("version: 1\nname: addrmut\ndefaults: {inbound: deny, outbound: deny, deny: drop}\n"
          "monitor: {log_prefix: fwgenA, rate: 10000/second}\nacknowledge: [ssh-lockout]\nrules:\n"
          f"  - {{name: peers-in, action: allow, protocol: tcp, ports: [3000], from: [{_PEERS}]}}\n"
          f"  - {{name: peers-out, action: monitor, direction: out, protocol: udp, ports: [3001], to: [{_PEERS}]}}\n")


@pytest.fixture
def mutant(tmp_path: Path, forced_tree: None) -> Mutant:
    return built(MUTANT, tmp_path)


def _shift(files: dict[str, str], by: int) -> dict[str, str]:
    """Every inner chain's address span moved by ``by`` addresses (both ends)."""

    def moved(m: re.Match[str]) -> str:
        lo, hi = (ipaddress.ip_address(a) + by for a in (m[2], m[3]))
        return f"{m[1]}{lo}-{hi} -g "

    return {name: re.sub(r"^(-A \S+ -m iprange --(?:src|dst)-range )(\S+)-(\S+) -g ", moved, text, flags=re.M)
            for name, text in files.items()}


def test_real_address_tree_passes(labs: tuple[dict[str, Lab], KernelLog],
                                  mutant: Mutant) -> None:
    files = mutant.files
    assert files["iptables/rules.v4"].count(" -m iprange ") >= 8  # deep trees, both directions
    assert files["iptables/rules.v6"].count(" -m iprange ") >= 6
    assert problems(labs, mutant, files) == []
    counts = inner_traversals(labs[0]["iptables"], ADDRESS_TREE)
    assert sum(1 for n in counts[4].values() if n) >= 8 and sum(1 for n in counts[6].values() if n) >= 6, counts


@pytest.mark.parametrize("by", [1, -1])
def test_an_address_span_off_by_one_is_caught(labs: tuple[dict[str, Lab], KernelLog],
                                              mutant: Mutant, by: int) -> None:
    files = mutant.files
    broken = _shift(files, by)
    assert broken != files
    found = problems(labs, mutant, broken)
    assert any("explain says allow" in p and "packet not delivered" in p for p in found), found
    assert any("2001:db8" in p for p in found) and any("198.51.100." in p for p in found), found  # v6, v4


# Overlapping networks of two rules on one port: the first decides the peers it holds.
ORDER = ("version: 1\nname: addrord\ndefaults: {inbound: allow, outbound: allow, deny: drop}\nrules:\n"
         f"  - {{name: peers-ok, action: allow, protocol: tcp, ports: [3000], from: [{_PEERS}]}}\n"
         "  - {name: rest-no, action: deny, protocol: tcp, ports: [3000], "
         "from: [198.51.100.0/24, 192.0.2.0/24, 203.0.113.0/24, '2001:db8::/32']}\n")


def test_a_last_match_address_partition_is_caught(labs: tuple[dict[str, Lab], KernelLog], tmp_path: Path,
                                                  forced_tree: None, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "addrord.yaml"
    path.write_text(ORDER, encoding="utf-8")
    explainer = Explainer.from_file(str(path), bundled())
    cases = choose_cases(build(str(path), bundled(), ("iptables",)).ruleset, seed=7)
    real = build(str(path), bundled(), ("iptables",))
    assert check_policy(labs[0]["iptables"], real.ruleset, real.files, explainer, cases, labs[1]).problems == []
    first_match = iptables._first_match
    monkeypatch.setattr(iptables, "_first_match", lambda rules, family: first_match(rules[::-1], family))
    broken = build(str(path), bundled(), ("iptables",))
    assert broken.files != real.files
    found = check_policy(labs[0]["iptables"], broken.ruleset, broken.files, explainer, cases, labs[1]).problems
    assert any("explain says allow" in p and "packet not delivered" in p for p in found), found
