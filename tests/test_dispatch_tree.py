"""The shape of iptables' dispatch trees (the kernel proof is
tests/differential/test_dispatch_tree.py): balanced, within their bounds, used only above
the threshold, named as fwgen's chains in both modes."""

from __future__ import annotations

import ipaddress
import re
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fwgen import hoststate
from fwgen.build import build
from fwgen.ir import Protocol, Ruleset
from fwgen.lowering import Node, balanced_tree
from fwgen.registry import bundled
from fwgen.targets import iptables


def _leaves(node: Node, depth: int = 0) -> list[tuple[int, Node]]:
    if not node.children:
        return [(depth, node)]
    return [leaf for child in node.children for leaf in _leaves(child, depth + 1)]


@settings(max_examples=200)
@given(st.integers(1, 3000), st.integers(1, 20), st.integers(2, 12))
def test_a_balanced_tree_keeps_every_entry_in_order_within_its_bounds(count: int, leaf: int, fanout: int) -> None:
    entries = [(3 * i, 3 * i + 1, i) for i in range(count)]
    tree = balanced_tree(entries, leaf, fanout)
    leaves = _leaves(tree)
    assert [e for _, node in leaves for e in node.entries] == entries
    assert all(1 <= len(node.entries) <= leaf for _, node in leaves)
    depth = max(d for d, _ in leaves)
    levels = 0
    while leaf * fanout ** levels < count:
        levels += 1
    assert depth <= levels  # logarithmic: ceil(log_fanout(count / leaf))

    def check(node: Node) -> None:
        assert node.lo == (node.entries or node.children)[0][0] and node.hi == (node.entries or node.children)[-1][1]
        if node.children:
            assert 2 <= len(node.children) <= fanout
            assert all(a.hi < b.lo for a, b in zip(node.children, node.children[1:], strict=False))
            for child in node.children:
                check(child)

    check(tree)


def _policy(tmp_path: Path, ports: int, chains: bool = False, name: str = "tree") -> dict[str, str]:
    rules = "".join(f"  - {{name: r{i}, action: monitor, protocol: tcp, "
                    f"ports: [{1000 + 2 * i}]}}\n" for i in range(ports))
    mode = "iptables: {mode: chains}\n" if chains else ""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"version: 1\nname: {name}\ndefaults: {{inbound: deny, outbound: allow}}\n{mode}rules:\n{rules}",
                    encoding="utf-8")
    return build(str(path), bundled(), ("iptables",)).files


def test_the_tree_starts_above_the_threshold(tmp_path: Path) -> None:
    linear = _policy(tmp_path, iptables.TREE_MIN_LINES)["iptables/rules.v4"]
    assert " -g fwgen-" not in linear and linear.count("-A INPUT -p tcp --dport ") == iptables.TREE_MIN_LINES
    tree = _policy(tmp_path, iptables.TREE_MIN_LINES + 1)["iptables/rules.v4"]
    assert re.findall(r"^-A INPUT -p tcp .*$", tree, re.M) == [
        re.search(r"^-A INPUT -p tcp -m comment .* -j fwgen-itcp0$", tree, re.M)[0]]  # type: ignore[index]
    assert tree.count(" -g fwgen-itcp") >= 2
    # each rule's own chain (r1's is fwgen-rule-2), still reached from its leaf
    assert re.search(r"^-A fwgen-itcp\d+ -p tcp --dport 1002 .* -j fwgen-rule-2$", tree, re.M)


def test_tree_chains_are_the_policys_own_in_chains_mode(tmp_path: Path) -> None:
    files = _policy(tmp_path, 3000, chains=True, name="a-long-name")
    prefix = iptables.policy_prefix("a-long-name")
    text = files["iptables/rules.v4"]
    declared = re.findall(r"^:(\S+) ", text, re.M)
    tree = [c for c in declared if re.fullmatch(re.escape(prefix) + r"-itcp\d+", c)]
    assert len(tree) > 100 and all(len(c) <= iptables.MAX_CHAIN for c in declared)
    assert all(c.startswith(prefix + "-") for c in declared)  # `fwgen remove` deletes them with the policy's
    owned = hoststate.parse(text)["filter"].owned_chains()
    assert set(tree) <= set(owned)
    assert [c for c in owned if c.endswith("-in")] == [f"{prefix}-in"]  # how `fwgen apply` finds the prefix


def _one_rule_ruleset(tmp: Path) -> Ruleset:
    path = tmp / "p.yaml"
    path.write_text("version: 1\nname: p\nrules:\n  - {name: r, action: allow, ports: [1]}\n", encoding="utf-8")
    return build(str(path), bundled(), ("iptables",)).ruleset


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.integers(1, 3)), min_size=1, max_size=80))
def test_the_line_count_is_the_lines_written(spec: list[tuple[int, bool, int]]) -> None:
    """The threshold counts lines without writing them; the count must be what is written."""
    with tempfile.TemporaryDirectory() as tmp:
        ruleset = _one_rule_ruleset(Path(tmp))
    rule = ruleset.rules[0]
    entries, port = [], 1
    for target, is_range, gap in spec:
        lo = port + gap
        hi = lo + (3 if is_range else 0)
        entries.append((lo, hi, ["ACCEPT", "DROP", "fwgen-rule-1", "fwgen-rule-2"][target], [rule]))
        port = hi
    lowering = iptables._Lowering(ruleset)
    assert iptables._line_count(entries) == len(lowering.grouped("INPUT", " -p tcp", entries))


def _networks_policy(tmp_path: Path, count: int, chains: bool = False, name: str = "nets") -> dict[str, str]:
    """One rule allowing ssh from ``count`` disjoint /24s (and one IPv6 network)."""
    networks = ", ".join(f"10.{i // 256}.{i % 256}.0/24" for i in range(0, 2 * count, 2))
    mode = "iptables: {mode: chains}\n" if chains else ""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"version: 1\nname: {name}\ndefaults: {{inbound: deny, outbound: allow}}\n{mode}"
                    f"acknowledge: [ssh-lockout]\nrules:\n  - {{name: clients, action: allow, protocol: tcp, "
                    f"ports: [ssh], from: [{networks}, '2001:db8::/48']}}\n", encoding="utf-8")
    return build(str(path), bundled(), ("iptables",)).files


def test_the_address_tree_starts_above_the_threshold(tmp_path: Path) -> None:
    linear = _networks_policy(tmp_path, iptables.TREE_MIN_LINES)["iptables/rules.v4"]
    assert " -m iprange " not in linear and linear.count("-A INPUT -p tcp -s 10.") == iptables.TREE_MIN_LINES
    files = _networks_policy(tmp_path, iptables.TREE_MIN_LINES + 1)
    tree = files["iptables/rules.v4"]
    # the base chain: one jump to the root, matching all but the address
    assert re.findall(r"^-A INPUT -p tcp .*$", tree, re.M) == [
        re.search(r"^-A INPUT -p tcp --dport 22 -m comment .* -j fwgen-ia0$", tree, re.M)[0]]  # type: ignore[index]
    inner = re.findall(r"^-A (fwgen-ia\d+) -m iprange --src-range (\S+)-(\S+) -g (fwgen-ia\d+)$", tree, re.M)
    assert len(inner) >= 5
    leaves = re.findall(r"^-A fwgen-ia\d+ -s (10\.\S+) -m comment .* -j ACCEPT$", tree, re.M)
    assert sorted(leaves) == sorted(f"10.{i // 256}.{i % 256}.0/24" for i in range(0, 2 * 65, 2))
    assert max(len(re.findall(rf"^-A {c} ", tree, re.M)) for c in set(re.findall(r"^:(fwgen-ia\d+) ", tree, re.M))
               ) <= max(iptables.TREE_LEAF, iptables.TREE_FANOUT)
    assert "fwgen-ia" not in files["iptables/rules.v6"]  # one IPv6 network: its line as before


def test_address_tree_chains_are_the_policys_own_in_chains_mode(tmp_path: Path) -> None:
    files = _networks_policy(tmp_path, 500, chains=True, name="a-long-name")
    prefix = iptables.policy_prefix("a-long-name")
    text = files["iptables/rules.v4"]
    declared = re.findall(r"^:(\S+) ", text, re.M)
    tree = [c for c in declared if re.fullmatch(re.escape(prefix) + r"-ia\d+", c)]
    assert len(tree) > 30 and all(len(c) <= iptables.MAX_CHAIN for c in declared)
    assert all(c.startswith(prefix + "-") for c in declared)
    assert set(tree) <= set(hoststate.parse(text)["filter"].owned_chains())


class _Nets:
    """A stand-in rule for ``iptables._first_match``: only its remote networks."""

    def __init__(self, index: int, nets: list[ipaddress.IPv4Network]) -> None:
        self.index, self.nets = index, tuple(ipaddress.collapse_addresses(nets))

    def remote(self, family: int) -> tuple[ipaddress.IPv4Network, ...]:
        return self.nets


_NET = st.builds(lambda host, prefix: ipaddress.ip_network(f"10.0.0.{host}/{prefix}", strict=False),
                 st.integers(0, 255), st.integers(24, 32))


@settings(max_examples=300)
@given(st.lists(st.lists(_NET, min_size=1, max_size=5), min_size=1, max_size=6))
def test_the_address_partition_is_first_match(nets: list[list[ipaddress.IPv4Network]]) -> None:
    rules = [_Nets(i, n) for i, n in enumerate(nets)]
    spans = iptables._first_match(rules, 4)  # type: ignore[arg-type]
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))  # sorted, disjoint
    assert all(not (a[2] is b[2] and a[1] + 1 == b[0]) for a, b in zip(spans, spans[1:], strict=False))  # joined
    decided = {address: rule for lo, hi, rule in spans for address in range(lo, hi + 1)}
    for address in range(int(ipaddress.ip_address("10.0.0.0")), int(ipaddress.ip_address("10.0.0.255")) + 1):
        first = next((r for r in rules if any(address in range(int(n.network_address), int(n.broadcast_address) + 1)
                                              for n in r.nets)), None)
        assert decided.get(address) is first


def test_port_groups_cut_where_the_covering_rules_change(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("version: 1\nname: g\nrules:\n"
                    "  - {name: a, action: allow, protocol: tcp, ports: [10-20, 30], from: [10.0.0.0/8]}\n"
                    "  - {name: b, action: deny, protocol: tcp, ports: [15-30], from: [10.0.0.0/8]}\n"
                    "  - {name: c, action: allow, protocol: tcp, ports: [40], from: [10.0.0.0/8]}\n",
                    encoding="utf-8")
    rules = list(build(str(path), bundled(), ("iptables",)).ruleset.rules)
    groups = [(ranges, [r.name for r in owners]) for ranges, owners in iptables._port_groups(rules, Protocol.TCP)]
    assert groups == [([(10, 14)], ["a"]), ([(15, 20), (30, 30)], ["a", "b"]), ([(21, 29)], ["b"]), ([(40, 40)], ["c"])]
