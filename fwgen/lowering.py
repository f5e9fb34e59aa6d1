"""IR -> IR passes shared by the targets: find the runs of rules that match on ports
alone, and compute their first-match partition of the port space (made once per
ruleset: ``plan`` and ``partition`` remember what they made in ``Ruleset.derived``, so
iptables, nftables and Windows share it).

Rules that do not restrict addresses decide on (protocol, port) only, so a run of them
is equivalent to a map from disjoint port intervals to the first rule covering each one.
A map needs one lookup, whatever the number of ports, and its entries can be written in
any order or grouped by verdict without changing the meaning. Rules that restrict
addresses keep their place in the order between such runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple, TypeVar

from fwgen.ir import Direction, PortRange, Protocol, Rule, Ruleset

K = TypeVar("K")


class Run(NamedTuple):
    """Consecutive rules without address restrictions."""

    rules: tuple[Rule, ...]


class Single(NamedTuple):
    """A rule that restricts addresses, kept in its place."""

    rule: Rule


def segments(rules: tuple[Rule, ...]) -> Iterator[Run | Single]:
    run: list[Rule] = []
    for rule in rules:
        if rule.remote_v4 is None and rule.remote_v6 is None:
            run.append(rule)
            continue
        if run:
            yield Run(tuple(run))
            run = []
        yield Single(rule)
    if run:
        yield Run(tuple(run))


def plan(ruleset: Ruleset, direction: Direction, family: int | None = None) -> tuple[Run | Single, ...]:
    """``segments(ruleset.rules_for(direction, family))``, made once per ruleset for each
    distinct rule list: iptables' two families and nftables' inet table usually select
    the same rules, so they share the runs."""
    rules = ruleset.rules_for(direction, family)
    key = ("plan", direction, tuple(rule.index for rule in rules))
    memo = ruleset.derived
    found = memo.get(key)
    if found is None:
        found = memo[key] = tuple(segments(rules))
    return found  # type: ignore[return-value]


def partition(ruleset: Ruleset, rules: Iterable[Rule], protocol: Protocol) -> list[tuple[PortRange, Rule]]:
    """``first_match_partition`` of those of ``rules`` (rules of ``ruleset``, in order)
    that have ports in ``protocol``, made once per ruleset for each distinct list: every
    target asks for the same ones, and for thousands of rules it is the costly part."""
    rules = tuple(rules)
    memo = ruleset.derived
    asked = ("partition", protocol, tuple(rule.index for rule in rules))
    found = memo.get(asked)
    if found is None:
        covering = [(rule, ranges) for rule in rules if (ranges := rule.port_ranges(protocol))]
        key = ("partition", protocol, tuple(rule.index for rule, _ in covering))
        found = memo.get(key)
        if found is None:
            found = memo[key] = _paint(covering)
        memo[asked] = found
    return found  # type: ignore[return-value]


def first_match_partition(rules: tuple[Rule, ...], protocol: Protocol) -> list[tuple[PortRange, Rule]]:
    """Disjoint, sorted port intervals, each with the first rule (in order) covering it."""
    return _paint([(rule, rule.port_ranges(protocol)) for rule in rules])


def _paint(covering: list[tuple[Rule, tuple[PortRange, ...]]]) -> list[tuple[PortRange, Rule]]:
    """The first-match partition of rules given in order with their port ranges.

    "Paint once": cut the port line at every range edge; then walk the rules in order and
    give each still-unpainted elementary interval inside a rule's range to that rule. A
    union-find "next unpainted" pointer skips painted intervals, so each is visited once.
    """
    ranges = [(rule, pr) for rule, prs in covering for pr in prs]
    cuts = sorted({edge for _, pr in ranges for edge in (pr.lo, pr.hi + 1)})
    position = {edge: i for i, edge in enumerate(cuts)}
    owner: list[Rule | None] = [None] * max(len(cuts) - 1, 0)
    following = list(range(len(cuts)))  # following[i]: first unpainted interval >= i

    def unpainted(i: int) -> int:
        root = i
        while following[root] != root:
            root = following[root]
        while following[i] != root:
            following[i], i = root, following[i]
        return root

    for rule, (lo, hi) in ranges:
        i, end = position[lo], position[hi + 1]
        if following[i] != i:
            i = unpainted(i)
        while i < end:
            owner[i] = rule
            following[i] = i + 1
            i += 1
            if following[i] != i:
                i = unpainted(i)
    return [
        (PortRange(cuts[i], cuts[i + 1] - 1), rule) for i, rule in enumerate(owner) if rule is not None
    ]


def join_touching(partition: list[tuple[PortRange, Rule]], key: Callable[[Rule], K]) -> list[tuple[int, int, K]]:
    """(lo, hi, key) for each run of touching intervals whose rules have the same
    ``key`` (the verdict a target writes for them): the canonical, deterministic form of
    a verdict map."""
    joined: list[tuple[int, int, K]] = []
    for ports, rule in partition:
        k = key(rule)
        if joined and joined[-1][2] == k and joined[-1][1] + 1 == ports.lo:
            joined[-1] = (joined[-1][0], ports.hi, k)
        else:
            joined.append((ports.lo, ports.hi, k))
    return joined
