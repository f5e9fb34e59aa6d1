"""What every lint check reads: the policy, its IR, and the exact first-match facts.

The facts come from the first-match engine (``fwgen.engine``). Per direction, the what
axis (protocol and port, or ICMP type) is cut once over the rules of both address
families, into groups of points that the same rules cover; within each group, each
family's space (remote and local address, interface, profile) is partitioned into boxes
with the exact set of rules covering each. First match on a box tells, for every rule,
where it decides, who decides the traffic it covers but does not get, and who would
decide its traffic without it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from fwgen import engine, ir
from fwgen.errors import Location
from fwgen.intervals import merge_spans
from fwgen.ir import Action, Direction, Protocol
from fwgen.locator import Locator
from fwgen.policy import Policy
from fwgen.registry import Registry

Decider = int | None  # the deciding rule's index in the policy; None = the default
Span = tuple[int, int]  # an inclusive integer interval: ports or addresses
TARGETS = ("iptables", "nftables", "windows")
LINUX_TARGETS = ("iptables", "nftables")
SEVERITIES = ("error", "warning")
_PORT_PROTOCOLS = {ir.TCP_NUMBER: Protocol.TCP, ir.UDP_NUMBER: Protocol.UDP}


class Finding(NamedTuple):
    id: str
    severity: str  # error | warning
    location: Location
    message: str

    def __str__(self) -> str:
        text = f"{self.location}: {self.severity}: {self.message} [{self.id}]"
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

    def sort_key(self) -> tuple[str, int, int, str, str]:
        """By file (a policy's included files have their own lines), then position."""
        return (self.location.path, self.location.line, self.location.col, self.id, self.message)


class Check(NamedTuple):
    """One kind of finding: ``run`` yields (location, message) pairs."""

    id: str
    severity: str
    run: Callable[[Context], Iterable[tuple[Location, str]]]
    doc: str
    after: bool = False  # runs once the others' findings are known (ctx.raised)


@dataclass
class PortFacts:
    """One rule on one set of ports (of one protocol) that every rule covers alike."""

    spans: list[Span]
    first: bool = False  # the rule decides somewhere on these ports
    deciders: set[int] = field(default_factory=set)  # earlier rules deciding its traffic here


@dataclass
class RuleFacts:
    reached: bool = False  # decides some connection
    deciders: set[int] = field(default_factory=set)  # earlier rules deciding traffic it covers
    changes: bool = False  # removing it changes some verdict (action or logging)
    takers: set[Decider] = field(default_factory=set)  # who decides its traffic without it
    ports: dict[tuple[Protocol, int], PortFacts] = field(default_factory=dict)  # by (protocol, what group)


def port_spans(what: Iterable[Span]) -> dict[Protocol, list[Span]]:
    """The tcp and udp ports among intervals of the what axis."""
    out: dict[Protocol, list[Span]] = {}
    for lo, hi in what:
        for number, protocol in _PORT_PROTOCOLS.items():
            first, last = ir.what_span(number)
            if lo <= last and hi >= first:
                out.setdefault(protocol, []).append((max(lo, first) - first, min(hi, last) - first))
    return out


class Context:
    """Everything a check reads: the policy, its IR, the registry, the model, locations."""

    def __init__(
        self, policy: Policy, ruleset: ir.Ruleset, registry: Registry, targets: tuple[str, ...] = TARGETS
    ) -> None:
        self.policy = policy
        self.ruleset = ruleset
        self.registry = registry
        self.targets = targets  # the outputs the policy is built for: some findings depend on them
        self.rule = {r.index: r for r in ruleset.rules}
        self.source_rule = {r.index: r for r in policy.rules}
        self.raised: set[str] = set()  # ids found by the other checks (for ``after`` checks)
        self._spaces: dict[tuple[Direction, int], engine.Space] = {}

    @functools.cached_property
    def where(self) -> Locator:
        return Locator(self.policy)

    def space(self, direction: Direction, family: int) -> engine.Space:
        """Made once per context (a per-instance memo: a ``functools.cache`` on the method
        would keep every context, its policy and the policy's YAML nodes alive)."""
        found = self._spaces.get((direction, family))
        if found is None:
            found = self._spaces[(direction, family)] = engine.space(self.ruleset.rules_for(direction), family)
        return found

    # -- verdicts

    def default(self, direction: Direction) -> Action:
        return self.ruleset.defaults.for_direction(direction)

    def action(self, direction: Direction, decider: Decider) -> Action:
        return self.default(direction) if decider is None else self.rule[decider].action

    def verdict(self, direction: Direction, decider: Decider) -> tuple[Action, bool]:
        if decider is None:
            return self.default(direction), False
        return self.rule[decider].action, self.rule[decider].logged

    def accepts(self, direction: Direction, decider: Decider) -> bool:
        return self.action(direction, decider) is not Action.DENY

    def deciders(self, direction: Direction, protocol: Protocol, port: int, family: int | None = None,
                 within: Span | None = None) -> list[tuple[int, Span, Decider]]:
        """Who decides (protocol, port) for every connection: (family, remote span,
        decider), over every remote address (of ``family``, inside ``within``), local
        address, interface and profile."""
        number = ir.TCP_NUMBER if protocol is Protocol.TCP else ir.UDP_NUMBER
        point = ir.what_span(number, port, port)[0]
        covering = tuple(rule for rule in self.ruleset.rules_for(direction)
                         if any(lo <= point <= hi for lo, hi in rule.what()))
        out: list[tuple[int, Span, Decider]] = []
        for fam in (4, 6) if family is None else (family,):
            space = engine.space(covering, fam)
            settled = engine.decided(space.matches)
            for box in engine.partition(space.matches, space.sizes, settled, axis=engine.REMOTE):
                decider = space.rules[engine.lowest(box.mask)].index if box.mask else None
                for lo, hi in box.spans[0]:
                    if within is None or (lo <= within[1] and hi >= within[0]):
                        out.append((fam, (lo, hi), decider))
        return out

    # -- presentation

    def name_line(self, decider: Decider, direction: Direction = Direction.IN, action: bool = False) -> str:
        """``'web' (line 20)``, ``'web' (line 20, allow)``, ``'ssh' (base/rules.yaml line 9)``
        for a rule of an included file, or ``the default inbound deny``."""
        if decider is None:
            which = "inbound" if direction is Direction.IN else "outbound"
            return f"the default {which} {self.default(direction).value}"
        rule = self.rule[decider]
        extra = f", {rule.action.value}" if action else ""
        where = f"{rule.file} line" if rule.file else "line"
        return f"'{rule.name}' ({where} {rule.location.line}{extra})"

    def default_location(self, direction: Direction) -> Location:
        return self.where.top("defaults", "inbound" if direction is Direction.IN else "outbound")

    # -- the full analysis

    @functools.cached_property
    def facts(self) -> dict[int, RuleFacts]:
        facts = {r.index: RuleFacts() for r in self.ruleset.rules}
        for direction in Direction:
            rules = self.ruleset.rules_for(direction)
            what_of = [(bit, rule.what()) for bit, rule in enumerate(rules)]
            starts, masks = engine.cut(what_of, ir.WHAT_SIZE)
            for number, (mask, what) in enumerate(engine.group(starts, masks, ir.WHAT_SIZE).items()):
                if mask:
                    self._what_group(facts, direction, rules, mask, what, number)
        return facts

    def _what_group(self, facts: dict[int, RuleFacts], direction: Direction, rules: tuple[ir.Rule, ...],
                    mask: int, what: list[Span], number: int) -> None:
        """Every box on one group of what-points (points the same rules cover): its first
        rule decides; each other covering rule has it as a decider; without the first
        rule, the next one (or the default) would decide."""
        covered_by_first: dict[int, int] = {}  # first rule's index -> the rules its boxes also cover
        covering = [rules[bit].index for bit in engine.bits(mask)]
        for family in (4, 6):
            space = self.space(direction, family)
            position = {rule.index: bit for bit, rule in enumerate(space.rules)}
            candidates = sum(1 << position[i] for i in covering if i in position)
            if not candidates:
                continue
            for box in engine.partition(space.matches, space.sizes, candidates=candidates, axis=engine.REMOTE):
                if not box.mask:
                    continue
                indexes = [space.rules[bit].index for bit in engine.bits(box.mask)]
                first, after = indexes[0], (indexes[1] if len(indexes) > 1 else None)
                covered = 0
                for index in indexes[1:]:
                    covered |= 1 << index
                covered_by_first[first] = covered_by_first.get(first, 0) | covered
                own = facts[first]
                own.reached = True
                own.takers.add(after)
                if not own.changes and self.verdict(direction, after) != (
                    self.rule[first].action, self.rule[first].logged
                ):
                    own.changes = True
        ports = port_spans(what)
        for index in covering:
            rule_facts = facts[index]
            deciders = {first for first, others in covered_by_first.items() if others >> index & 1}
            rule_facts.deciders |= deciders
            for protocol, spans in ports.items():
                rule_facts.ports[(protocol, number)] = PortFacts(spans, index in covered_by_first, deciders)


# ---------------------------------------------------------------------- formatting


def format_ports(per_protocol: dict[Protocol, list[Span]], limit: int = 6) -> str:
    """``1261/tcp+udp, 1274/udp, 8000-8100/tcp`` (sorted by port; at most ``limit`` items)."""
    protocols: dict[Span, list[str]] = {}
    for protocol in ir.PROTOCOLS:
        for span in merge_spans(per_protocol.get(protocol, [])):
            protocols.setdefault(span, []).append(protocol.value)
    items = [
        f"{lo if lo == hi else f'{lo}-{hi}'}/{'+'.join(names)}" for (lo, hi), names in sorted(protocols.items())
    ]
    if len(items) > limit:
        items = items[:limit] + [f"and {len(items) - limit} more"]
    return ", ".join(items)


def count_ports(spans: Iterable[Span]) -> int:
    return sum(hi - lo + 1 for lo, hi in merge_spans(spans))
