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

import hashlib
import ipaddress
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
from tests.differential.policygen import (
    HOT_HI,
    HOT_LO,
    NETWORKS_V4,
    NETWORKS_V6,
    PEER_V4,
    PEER_V6,
    policy,
    port_entry,
    to_yaml,
)
from tests.differential.test_differential import _record_failure, run_policy
from tests.kernel.netns import KernelLog

TREE_POLICIES = 12
# `-A CHAIN ... -g CHILD` lines of an address tree's inner chains, with iptables-save -c's counters
_GOTO = re.compile(r"^\[(\d+):\d+\] -A (\S+) .*-g (fwgen-\S*[io]a\d+)$", re.M)
# Networks for the rules: the peers' own addresses, their neighbours (which no peer owns)
# and the policy generator's networks, so a rule's list collapses to many networks.
_NEIGHBOURS = tuple(str(ipaddress.ip_address(a) + d) for a in PEER_V4 + PEER_V6 for d in (-1, 1))
POOL = PEER_V4 + PEER_V6 + _NEIGHBOURS + NETWORKS_V4[:-1] + NETWORKS_V6[:-1]  # not 0.0.0.0/0, ::/0


@pytest.fixture
def forced_tree(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(iptables, "TREE_MIN_LINES", 0)
    monkeypatch.setattr(iptables, "TREE_LEAF", 1)
    monkeypatch.setattr(iptables, "TREE_FANOUT", 2)
    yield


def inner_traversals(lab: Lab) -> dict[int, Counter[str]]:
    """Per family, the packets each address-tree chain was entered with by a ``-g`` from
    its parent (the rules loaded now, counted since they were loaded)."""
    found: dict[int, Counter[str]] = {}
    for number, tool in ((4, "iptables-save"), (6, "ip6tables-save")):
        text = lab.host.run([tool, "-c", "-t", "filter"]).stdout
        found[number] = Counter({m[3]: int(m[1]) for m in _GOTO.finditer(text)})
    return found


@st.composite
def tree_policy(draw: st.DrawFn) -> dict[str, Any]:
    """A random policy (``policygen.policy``, the newer matches mixed in) with, in each
    direction, a block of 2-8 rules restricted to 1-10 remote networks each (overlapping:
    first match decides), most of them on ports shared within the block (one port group
    decided by several rules), at a random place among its rules; random actions and
    protocols."""
    data = draw(policy(None, mix=True))
    if data.get("targets") == ["windows"]:
        data["targets"] = ["iptables", "nftables"]  # the tree is iptables'; profiles are unused there
        for rule in data["rules"]:
            rule.pop("profiles", None)
    for direction in ("in", "out"):
        shared = draw(st.lists(st.integers(HOT_LO, HOT_HI).map(str), min_size=1, max_size=3, unique=True))
        block = []
        for i in range(draw(st.integers(2, 8))):
            protocol = draw(st.sampled_from([None, "tcp", "udp"]))
            rule: dict[str, Any] = {"name": f"addr-{direction}-{i}",
                                    "action": draw(st.sampled_from(["allow", "deny", "monitor"])),
                                    "direction": direction}
            if protocol:
                rule["protocol"] = protocol
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
        if re.search(r"^:fwgen-\S*[io]a0 ", result.files["iptables/rules.v4"], re.M):
            seen["with_tree"] += 1
        for number, counts in inner_traversals(labs[0]["iptables"]).items():
            for chain, packets in counts.items():
                if packets:
                    seen["nodes"][number].add((seen["policies"], chain))
                    seen["packets"][number] += packets

    check()
    return seen


@pytest.mark.parametrize("mode", ["table", "chains"])
def test_forced_address_trees_agree_with_explain_and_are_traversed(
        labs: tuple[dict[str, Lab], KernelLog], tmp_path: Path, forced_tree: None, mode: str) -> None:
    seen = _tree_policies(labs, tmp_path, chains_mode=mode == "chains")
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
def mutant(tmp_path: Path, forced_tree: None) -> tuple[Any, dict[str, str], Explainer]:
    path = tmp_path / "addrmut.yaml"
    path.write_text(MUTANT, encoding="utf-8")
    result = build(str(path), bundled(), ("iptables",))
    return result.ruleset, result.files, Explainer.from_file(str(path), bundled())


def _problems(labs: tuple[dict[str, Lab], KernelLog], ruleset: Any, files: dict[str, str],
              explainer: Explainer) -> list[str]:
    cases = choose_cases(ruleset, seed=int(hashlib.sha256(MUTANT.encode()).hexdigest()[:8], 16))
    return check_policy(labs[0]["iptables"], ruleset, files, explainer, cases, labs[1]).problems


def _shift(files: dict[str, str], by: int) -> dict[str, str]:
    """Every inner chain's address span moved by ``by`` addresses (both ends)."""

    def moved(m: re.Match[str]) -> str:
        lo, hi = (ipaddress.ip_address(a) + by for a in (m[2], m[3]))
        return f"{m[1]}{lo}-{hi} -g "

    return {name: re.sub(r"^(-A \S+ -m iprange --(?:src|dst)-range )(\S+)-(\S+) -g ", moved, text, flags=re.M)
            for name, text in files.items()}


def test_real_address_tree_passes(labs: tuple[dict[str, Lab], KernelLog],
                                  mutant: tuple[Any, dict[str, str], Explainer]) -> None:
    ruleset, files, explainer = mutant
    assert files["iptables/rules.v4"].count(" -m iprange ") >= 8  # deep trees, both directions
    assert files["iptables/rules.v6"].count(" -m iprange ") >= 6
    assert _problems(labs, ruleset, files, explainer) == []
    counts = inner_traversals(labs[0]["iptables"])
    assert sum(1 for n in counts[4].values() if n) >= 8 and sum(1 for n in counts[6].values() if n) >= 6, counts


@pytest.mark.parametrize("by", [1, -1])
def test_an_address_span_off_by_one_is_caught(labs: tuple[dict[str, Lab], KernelLog],
                                              mutant: tuple[Any, dict[str, str], Explainer], by: int) -> None:
    ruleset, files, explainer = mutant
    broken = _shift(files, by)
    assert broken != files
    problems = _problems(labs, ruleset, broken, explainer)
    assert any("explain says allow" in p and "packet not delivered" in p for p in problems), problems
    assert any("2001:db8" in p for p in problems) and any("198.51.100." in p for p in problems), problems  # v6, v4


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
    problems = check_policy(labs[0]["iptables"], broken.ruleset, broken.files, explainer, cases, labs[1]).problems
    assert any("explain says allow" in p and "packet not delivered" in p for p in problems), problems
