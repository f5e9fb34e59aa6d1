"""IR -> IR passes shared by the targets: find the runs of rules that match on ports
alone, and their first-match partition of the port space (made once per ruleset:
``plan`` and ``partition`` remember what they made in ``Ruleset.derived``, so iptables,
nftables and Windows share it). The first match itself is ``engine.first_match``.

Rules that match on tcp and udp ports alone (``Rule.ports_only``) decide on (protocol,
port) only, so a run of them is equivalent to a map from disjoint port intervals to the
first rule covering each one. A map needs one lookup, whatever the number of ports, and
its entries can be written in any order or grouped by verdict without changing the
meaning. Every other rule (addresses, interfaces, other protocols) keeps its place in
the order between such runs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from fwgen import engine
from fwgen.ir import PORT_MAX, Direction, PortRange, Protocol, Rule, Ruleset, merge_ranges

K = TypeVar("K")
_INDEX = operator.attrgetter("index")


class Run(NamedTuple):
    """Consecutive rules that match on ports alone."""

    rules: tuple[Rule, ...]


class Single(NamedTuple):
    """A rule with any other match, kept in its place."""

    rule: Rule


def segments(rules: tuple[Rule, ...]) -> Iterator[Run | Single]:
    run: list[Rule] = []
    for rule in rules:
        if rule.ports_only:
            run.append(rule)
            continue
        if run:
            yield Run(tuple(run))
            run = []
        yield Single(rule)
    if run:
        yield Run(tuple(run))


def plan(ruleset: Ruleset, direction: Direction, family: int | None = None) -> tuple[Run | Single, ...]:
    """``segments(ruleset.rules_for(direction, family))``, made once per ruleset. A
    family's plan is the direction's without the rules of the other family alone (rules
    on ports alone apply to both), so iptables' two families and nftables' inet table
    share every run."""
    memo = ruleset.derived
    key = ("plan", direction, family)
    found = memo.get(key)
    if found is None:
        if family is None:
            found = tuple(segments(ruleset.rules_for(direction)))
        else:
            found = _for_family(memo, plan(ruleset, direction), family)
        memo[key] = found
    return found  # type: ignore[return-value]


def _for_family(memo: dict[object, object], whole: tuple[Run | Single, ...], family: int) -> tuple[Run | Single, ...]:
    """The segments of ``whole`` that apply to ``family``, runs a dropped rule separated
    joined; one ``Run`` object per distinct joined run (both families may make it)."""
    kept = [segment for segment in whole if isinstance(segment, Run) or segment.rule.applies_to(family)]
    if len(kept) == len(whole):
        return whole
    joined: list[Run | Single] = []
    for segment in kept:
        before = joined[-1] if joined else None
        if isinstance(segment, Run) and isinstance(before, Run):
            rules = before.rules + segment.rules
            run_key = ("run", tuple(rule.index for rule in rules))
            shared = memo.get(run_key)
            if not isinstance(shared, Run):
                shared = memo[run_key] = Run(rules)
            joined[-1] = shared
        else:
            joined.append(segment)
    return tuple(joined)


def partition(ruleset: Ruleset, rules: Iterable[Rule], protocol: Protocol) -> list[tuple[PortRange, Rule]]:
    """``first_match_partition`` of those of ``rules`` (rules of ``ruleset``, in order)
    that have ports in ``protocol``, made once per ruleset for each distinct list: every
    target asks for the same ones, and for thousands of rules it is the costly part."""
    rules = tuple(rules)
    memo = ruleset.derived
    asked = ("partition", protocol, tuple(map(_INDEX, rules)))  # map: cheaper than a generator (registry: 6M a call)
    found = memo.get(asked)
    if found is None:
        covering = tuple(rule for rule in rules if rule.port_ranges(protocol))
        key = ("partition", protocol, tuple(map(_INDEX, covering)))
        found = memo.get(key)
        if found is None:
            found = memo[key] = first_match_partition(covering, protocol)
        memo[asked] = found
    return found  # type: ignore[return-value]


def first_match_partition(rules: tuple[Rule, ...], protocol: Protocol) -> list[tuple[PortRange, Rule]]:
    """Disjoint, sorted port intervals, each with the first rule (in order) covering it;
    touching intervals of one rule are one."""
    if len(rules) == 1:  # most runs are one rule: its ranges, in canonical form
        rule = rules[0]
        return [(ports, rule) for ports in merge_ranges(rule.port_ranges(protocol))]
    if not rules:
        return []
    decided = engine.first_match([rule.port_ranges(protocol) for rule in rules], PORT_MAX + 1)
    return [(PortRange._make((lo, hi)), rules[position]) for lo, hi, position in decided]  # ports already


def join_touching(partition: list[tuple[PortRange, Rule]], key: Callable[[Rule], K]) -> list[tuple[int, int, K]]:
    """(lo, hi, key) for each run of touching intervals whose rules have the same
    ``key`` (the verdict a target writes for them): the canonical, deterministic form of
    a verdict map."""
    joined: list[tuple[int, int, K]] = []
    for (lo, hi), rule in partition:
        k = key(rule)
        if joined and joined[-1][2] == k and joined[-1][1] + 1 == lo:
            joined[-1] = (joined[-1][0], hi, k)
        else:
            joined.append((lo, hi, k))
    return joined


class Node(NamedTuple):
    """A node of a balanced tree over sorted, disjoint (lo, hi, key) entries: ``lo``..``hi``
    spans its first entry's lo to its last entry's hi; a leaf holds entries, an inner
    node its children (disjoint, in order)."""

    lo: int
    hi: int
    entries: tuple[tuple[Any, ...], ...]  # a leaf's (each starting lo, hi); () in an inner node
    children: tuple[Node, ...]  # an inner node's; () in a leaf


def balanced_tree(entries: Sequence[tuple[Any, ...]], leaf: int, fanout: int) -> Node:
    """The shallowest tree over ``entries`` (tuples starting with lo and hi) whose leaves
    hold at most ``leaf`` entries and inner nodes at most ``fanout`` children, the
    children of a level as even in size as they can be: its depth is
    ceil(log_fanout(len / leaf)), so finding an entry's leaf takes O(fanout * log(len))
    comparisons of disjoint spans, whatever the number of entries."""
    assert entries and leaf >= 1 and fanout >= 2
    levels, leaves = 0, 1
    while leaves * leaf < len(entries):
        levels, leaves = levels + 1, leaves * fanout
    # the smallest fanout that still reaches every entry in ``levels`` levels: as even as can be
    width = fanout
    while levels and width > 2 and (width - 1) ** levels * leaf >= len(entries):
        width -= 1
    return _node(tuple(entries), levels, width, leaf)


def _node(entries: tuple[tuple[Any, ...], ...], levels: int, width: int, leaf: int) -> Node:
    if levels == 0 or len(entries) <= leaf:
        return Node(entries[0][0], entries[-1][1], entries, ())
    parts = min(width, len(entries))
    size, extra = divmod(len(entries), parts)
    children, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        children.append(_node(entries[start:end], levels - 1, width, leaf))
        start = end
    return Node(entries[0][0], entries[-1][1], (), tuple(children))
