"""iptables target: ``iptables/rules.v4`` and ``iptables/rules.v6`` for iptables-restore.

Each file is a complete ``filter`` and ``raw`` table (and, with ``published_ports:
enforce``, ``mangle``), as iptables-persistent loads it: loading one replaces every rule
of those tables of that family on the host (Docker's included); in chains mode
(``iptables: {mode: chains}``) only fwgen's own chains and one jump to each. FORWARD
drops routed traffic unless ``defaults.forward: allow`` (table mode); the raw table holds
the reverse-path check (``antispoof``), mangle the judging of published container ports
(``published``). Shape:
- INPUT/OUTPUT start with the always-rules (loopback addresses only from lo, the
  link-local control messages of ICMPv6 and IGMP, invalid, established, loopback); then
  consecutive rules that match on ports alone become their first-match partition of
  the port space, grouped by target (ACCEPT, DROP, the reject chain, or a logged rule's
  chain) into as few multiport lines as possible; every other rule keeps its place, one
  line per (protocol part, remote network, local network, interface, port chunk);
- a logged (or monitor) rule N has its own chain ``fwgen-rule-N`` with the rate-limited
  LOG and the verdict, whose counters count every packet that rule decided;
- ports and protocols are numbers (never /etc/services or /etc/protocols names; tcp and
  udp are iptables' own words), ports compacted with multiport within its 15-slot limit
  (a range takes two slots).

The syntax of every kind of line is the templates' (``templates/iptables/lines.j2``,
one macro each; ``rules.j2`` lays out the file); this module decides which lines exist
and fills them.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address, summarize_address_range
from typing import NamedTuple

from fwgen import engine, sanitize
from fwgen import render as rendering
from fwgen.engine import ADDRESS_SIZE
from fwgen.icmp import ICMPV6_CONTROL
from fwgen.ir import (
    ICMP_NUMBER,
    ICMPV6_NUMBER,
    PORT_MAX,
    PORT_MIN,
    PROTOCOLS,
    WHAT_SIZE,
    Action,
    Direction,
    Protocol,
    Rule,
    Ruleset,
    by_protocol,
)
from fwgen.lowering import Node, Run, Single, balanced_tree, partition, plan
from fwgen.targets import BY_NAME, TargetOutput
from fwgen.targets.common import (
    IGMP,
    LOOPBACK,
    icmp_entries,
    log_burst,
    log_tag,
    network_texts,
    rule_summary,
)

NAME = "iptables"
TEMPLATE = BY_NAME[NAME].template
LINES = BY_NAME[NAME].lines
MULTIPORT_SLOTS = 15
CHAIN_PREFIX = "fwgen-"  # every chain fwgen makes; what a jump to fwgen's state targets
CHAINS_MODE_LINE = "fwgen iptables mode: chains"  # the header line of a chains-mode file
MAX_CHAIN = 28  # iptables' chain name limit (XT_EXTENSION_MAXNAMELEN - 1 - 3 for the -j)
# A run's lines of one protocol above this many become a dispatch tree of chains (see
# ``_Lowering.tree``): at most TREE_LEAF port intervals per leaf chain, TREE_FANOUT
# children per inner chain. Consecutive rules on ports and remote networks alone whose
# lines in one family would be more than TREE_MIN_LINES get trees over the remote address
# instead, one per group of ports the same rules cover, unless a protocol has more than
# TREE_MAX_GROUPS such groups (``_Lowering.address_run``). Read at render time (the
# tests lower them to force trees).
TREE_MIN_LINES = 64
TREE_LEAF = 16
TREE_FANOUT = 8
TREE_MAX_GROUPS = 64
PUBLISHED_CHAIN = "fwgen-published"  # published_ports: enforce (table mode), in the mangle table
MANGLE_BUILTIN = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
_PER = {"second": "second", "minute": "minute", "hour": "hour"}
EVERY_PROTOCOL = ((0, WHAT_SIZE - 1),)


class Family(NamedTuple):
    number: int
    filename: str
    icmp_unreachable: str
    icmp_prohibited: str


FAMILIES = (
    Family(4, "rules.v4", "icmp-port-unreachable", "icmp-admin-prohibited"),
    Family(6, "rules.v6", "icmp6-port-unreachable", "icmp6-adm-prohibited"),
)


def shapes() -> rendering.Shapes:
    return rendering.shapes(LINES)


def line(chain: str, matches: str, target: str, comment: str = "") -> str:
    """One ``-A`` line: chain, matches (each starting with a space), comment, then the
    jump (always last)."""
    shape = shapes()
    return shape.rule(chain, matches, comment, target) if comment else shape.bare_rule(chain, matches, target)


class Chains(NamedTuple):
    """The chains a file fills: the built-in ones in table mode, fwgen's own in chains mode."""

    input: str
    output: str
    prerouting: str  # raw table: the reverse-path check
    reject: str
    rule: str  # a logged rule N's chain is this + N
    tree: str = CHAIN_PREFIX  # a dispatch tree's chains: this + i|o + tcp|udp + N

    def tree_node(self, inbound: bool, protocol: str, number: int) -> str:
        name = f"{self.tree}{'i' if inbound else 'o'}{protocol}{number}"
        assert len(name) <= MAX_CHAIN, name
        return name

    def address_node(self, inbound: bool, number: int) -> str:
        """A chain of an address tree (``_Lowering.address_run``): this + i|o + a + N."""
        name = f"{self.tree}{'i' if inbound else 'o'}a{number}"
        assert len(name) <= MAX_CHAIN, name
        return name

    def of(self, rule: Rule) -> str:
        name = f"{self.rule}{rule.index}"
        assert len(name) <= MAX_CHAIN, name
        return name


TABLE_CHAINS = Chains("INPUT", "OUTPUT", "PREROUTING", "fwgen-reject", "fwgen-rule-")
# the built-in chain each of fwgen's base chains is jumped to from, per table
JUMPS = (("raw", "PREROUTING", "prerouting"), ("filter", "INPUT", "input"), ("filter", "OUTPUT", "output"))


def policy_prefix(name: str) -> str:
    """``fwgen-NAME`` for names of up to 10 characters; a longer name is cut to 4 and
    followed by ``.`` and 5 hex digits of its sha256 (a policy name never holds a dot, so
    the two forms never meet). With the longest suffix, ``-rule-NNNNNN``, that stays
    within iptables' 28 characters."""
    if len(name) <= 10:
        return f"{CHAIN_PREFIX}{name}"
    return f"{CHAIN_PREFIX}{name[:4]}.{hashlib.sha256(name.encode()).hexdigest()[:5]}"


def chains_for(ruleset: Ruleset) -> Chains:
    if not ruleset.options.iptables_chains:
        return TABLE_CHAINS
    prefix = policy_prefix(ruleset.name)
    return Chains(f"{prefix}-in", f"{prefix}-out", f"{prefix}-pre", f"{prefix}-reject", f"{prefix}-rule-",
                  f"{prefix}-")


def chain_name(rule: Rule) -> str:
    """A logged rule's chain in table mode (see ``Chains.of``)."""
    return TABLE_CHAINS.of(rule)


def port_chunks(ranges: Sequence[tuple[int, int]], shape: rendering.Shapes | None = None) -> list[str]:
    """Port matches for sorted, disjoint (lo, hi) ranges, each within multiport's 15
    slots (a range takes two)."""
    shape = shape or shapes()
    if len(ranges) == 1:
        return [port_match(*ranges[0], shape)]
    texts = [str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in ranges]
    if 2 * len(ranges) <= MULTIPORT_SLOTS:  # fits one match, however many are ranges
        return [shape.ports(",".join(texts))]
    chunks: list[list[str]] = [[]]
    used = 0
    for (lo, hi), text in zip(ranges, texts, strict=True):
        slots = 1 if lo == hi else 2
        if used + slots > MULTIPORT_SLOTS:
            chunks.append([])
            used = 0
        chunks[-1].append(text)
        used += slots
    return [shape.ports(",".join(chunk)) for chunk in chunks]


def port_match(lo: int, hi: int, shape: rendering.Shapes) -> str:
    """The match of one port range (none for every port)."""
    if lo == PORT_MIN and hi == PORT_MAX:
        return ""
    return shape.port(str(lo)) if lo == hi else shape.port_range(str(lo), str(hi))


PortMatches = Callable[[Sequence[tuple[int, int]], rendering.Shapes], list[str]]


def _verdict(ruleset: Ruleset, action: Action, chains: Chains) -> str:
    if action is Action.DENY:
        return chains.reject if ruleset.defaults.reject else "DROP"
    return "ACCEPT"


def _target(ruleset: Ruleset, rule: Rule, chains: Chains) -> str:
    """Logged rules jump to their own chain (LOG with the rule's prefix, then the verdict);
    every other rule's verdict is written directly."""
    return chains.of(rule) if rule.logged else _verdict(ruleset, rule.action, chains)


def _original_ports(ranges: Sequence[tuple[int, int]], shape: rendering.Shapes) -> list[str]:
    """Matches on a connection's original destination port (before DNAT), one per range:
    conntrack takes one port or range per match, there is no multiport for it."""
    if len(ranges) == 1 and ranges[0] == (PORT_MIN, PORT_MAX):
        return [""]
    return [shape.original_port(str(lo) if lo == hi else f"{lo}:{hi}") for lo, hi in ranges]


def _protocol_parts(rule: Rule, ports_of: PortMatches = port_chunks) -> list[tuple[str, str]]:
    """The (protocol, port or ICMP type) matches of a rule, one per line it needs, as
    (protocol match, selector match); one empty pair when it matches every protocol.
    ``ports_of`` writes the port matches (``--dport``, or the original destination port)."""
    shape = shapes()
    if rule.other and rule.what() == EVERY_PROTOCOL:  # tcp and udp ports alone never are every protocol
        return [("", "")]
    parts = [(shape.protocol(proto.value), ports) for proto, ranges in rule.ports
             for ports in ports_of(ranges, shape)]
    for number, selectors in by_protocol(rule.other).items():
        head = shape.protocol(str(number))
        if number in (ICMP_NUMBER, ICMPV6_NUMBER) and selectors != [(0, 0xFFFF)]:
            kind = shape.icmp_type if number == ICMP_NUMBER else shape.icmpv6_type
            parts += [(head, kind(entry)) for entry in icmp_entries(selectors)]
        else:
            parts.append((head, ""))
    return parts


class _Lowering:
    """What both families share, made once per render: each rule's comment (made safe;
    rules appear on many lines), each logged rule's chain, and the lines of each run
    (a run's lines do not depend on the family, and both families usually share it)."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.chains = chains_for(ruleset)
        self.logged = [rule for rule in ruleset.rules if rule.logged]
        self.comments: dict[int, str] = {}
        # the logged rules of a family (their indexes) -> their chains' names and lines
        self.identities: dict[tuple[int, ...], tuple[list[str], list[str]]] = {}
        # rule -> its (interface and protocol, selector) matches, comment and target
        self.heads: dict[int, tuple[list[tuple[str, str]], str, str]] = {}
        self.singles: dict[int, list[str]] = {}  # the lines of rules that are the same in both families
        self.runs: dict[tuple[str, int], tuple[Run, Dispatch]] = {}  # (base, id(run)) -> (run, its lines)
        self.tree_nodes: dict[tuple[str, str], int] = {}  # (base, protocol) -> tree chains made so far
        monitor = ruleset.monitor
        self.rate, self.burst = f"{monitor.rate}/{_PER[monitor.per]}", str(log_burst(ruleset))

    def comment(self, rule: Rule) -> str:
        text = self.comments.get(rule.index)
        if text is None:
            summary = rule_summary(self.ruleset, rule) + (f": {rule.comment}" if rule.comment else "")
            text = self.comments[rule.index] = sanitize.iptables_comment(summary)
        return text

    def comment_of(self, rules: list[Rule]) -> str:
        if len(rules) == 1:
            return self.comment(rules[0])
        names = ", ".join(r.name for r in rules[:40]) + (f" and {len(rules) - 40} more" if len(rules) > 40 else "")
        return sanitize.iptables_comment(f"first match of rules {names}")

    def identity_chains(self, logged: list[Rule]) -> tuple[list[str], list[str]]:
        """The own chains of a family's logged rules: their names (in rule order) and
        their lines (the inbound rules' first), each the rate-limited LOG, then the
        verdict. Made once when both families have the same logged rules (registry:
        6,304 of them, 12,608 lines)."""
        key = tuple(rule.index for rule in logged)
        found = self.identities.get(key)
        if found is None:
            shape = shapes()
            names = [self.chains.of(rule) for rule in logged]
            lines: list[str] = []
            for direction in (Direction.IN, Direction.OUT):
                for rule, own in zip(logged, names, strict=True):
                    if rule.direction is direction:
                        lines += [
                            shape.log_rule(own, self.rate, self.burst, log_tag(self.ruleset, rule)),
                            shape.rule(own, "", self.comment(rule), _verdict(self.ruleset, rule.action, self.chains)),
                        ]
            found = self.identities[key] = (names, lines)
        return found

    def namer(self, key: tuple[str, str], make: Callable[[int], str]) -> Callable[[], str]:
        """The names of a tree's chains, ``make(N)``, N counting on from the chains
        already made under ``key`` (per base chain and protocol, or address family)."""

        def name() -> str:
            number = self.tree_nodes.get(key, 0)
            self.tree_nodes[key] = number + 1
            return make(number)

        return name

    def single_heads(self, rule: Rule) -> tuple[list[tuple[str, str]], str, str]:
        """A rule's (interface and protocol, selector) matches, comment and target."""
        made = self.heads.get(rule.index)
        if made is None:
            shape = shapes()
            interface = shape.in_interface if rule.direction is Direction.IN else shape.out_interface
            interfaces = [interface(name.replace("*", "+")) for name in rule.interfaces or ()] or [""]
            heads = [(via + protocol, selector) for via in interfaces for protocol, selector in _protocol_parts(rule)]
            made = self.heads[rule.index] = (heads, self.comment(rule), _target(self.ruleset, rule, self.chains))
        return made

    def single(self, rule: Rule, family: Family, base: str) -> list[str]:
        """A rule with any match beyond ports, in its place: one line per (interface,
        protocol part, remote network, local network)."""
        found = self.singles.get(rule.index)
        if found is not None:
            return found
        shape = shapes()
        inbound = rule.direction is Direction.IN
        heads, comment, target = self.single_heads(rule)
        remote_nets, local_nets = network_texts(self.ruleset, rule, family.number)
        if remote_nets is None and local_nets is None:
            lines = [shape.rule(base, head + selector, comment, target) for head, selector in heads]
            other = 6 if family.number == 4 else 4
            if network_texts(self.ruleset, rule, other) == (None, None):
                self.singles[rule.index] = lines  # no address in either family: the other's lines too
            return lines
        remote_flag, local_flag = (shape.source, shape.destination) if inbound else (shape.destination, shape.source)
        remotes = [remote_flag(net) for net in remote_nets or ()] or [""]
        locals_ = [local_flag(net) for net in local_nets or ()] or [""]
        return [
            shape.rule(base, head + remote + local + selector, comment, target)
            for head, selector in heads
            for remote in remotes
            for local in locals_
        ]

    def address_run(self, rules: list[Rule], family: Family, base: str) -> Dispatch | None:
        """Consecutive rules on tcp/udp ports and remote networks alone (``address_only``)
        as dispatch trees over the remote address, or None for ``single``'s lines: when
        their lines in this family would be more than TREE_MIN_LINES, and no protocol
        needs more than TREE_MAX_GROUPS port groups (each group is a line of the base
        chain at least).

        Per protocol, the rules' ports are cut into groups of ports that the same rules
        (in order) cover (``_port_groups``); per group, the remote address space is cut
        into the first-match partition of those rules' networks (``_first_match``):
        disjoint address spans, each with the rule deciding it (a tcp and a udp group of
        the same rules share one tree). The base chain jumps (``-j``) to a group's root
        for its ports; inner chains send a packet on (``-g``)
        to the one child whose span (``-m iprange``) holds its remote address; a leaf holds
        one line per span (``-s NET`` when the span is one network) with its rule's
        comment and target. The spans are disjoint, so their order changes nothing; an
        address no rule's networks hold falls off the end of a chain and, every step
        below the root being a goto, returns to the base chain's next line, as if it had
        passed the rules' lines there. So first-match order, each rule's own chain,
        counter and log line are unchanged, and a packet meets at most TREE_FANOUT lines
        per level and TREE_LEAF in its leaf instead of every network of every rule."""
        number = family.number
        if sum(len(self.single_heads(r)[0]) * len(r.remote(number) or ()) for r in rules) <= TREE_MIN_LINES:
            return None
        groups = [(proto, _port_groups(rules, proto)) for proto in PROTOCOLS]
        if any(len(found) > TREE_MAX_GROUPS for _, found in groups):
            return None
        shape = shapes()
        inbound = rules[0].direction is Direction.IN
        remote_flag = shape.source if inbound else shape.destination
        span = shape.source_range if inbound else shape.destination_range
        address = IPv4Address if number == 4 else IPv6Address
        targets = {rule.index: _target(self.ruleset, rule, self.chains) for rule in rules}
        made = Dispatch([], [], [])
        name = self.namer((base, f"a{number}"), functools.partial(self.chains.address_node, inbound))

        def goto(chain: str, child: Node, child_chain: str) -> str:
            return shape.bare_goto(chain, span(str(address(child.lo)), str(address(child.hi))), child_chain)

        def leaf(chain: str, node: Node) -> list[str]:  # a line per span, -s when it is one network
            lines = []
            for lo, hi, rule in node.entries:
                first, last = address(lo), address(hi)
                nets = list(summarize_address_range(first, last))
                match = remote_flag(str(nets[0])) if len(nets) == 1 else span(str(first), str(last))
                lines.append(shape.rule(chain, match, self.comment(rule), targets[rule.index]))
            return lines

        roots: dict[tuple[int, ...], str] = {}  # the rules of a group -> its tree (tcp and udp share it)
        for proto, found in groups:
            head = shape.protocol(proto.value)
            for ranges, owners in found:
                key_rules = tuple(rule.index for rule in owners)
                root = roots.get(key_rules)
                if root is None:
                    root = roots[key_rules] = name()
                    _emit_tree(made, balanced_tree(_first_match(owners, number), TREE_LEAF, TREE_FANOUT), root,
                               name, goto, leaf)
                made.lines.extend(shape.rule(base, head + ports, self.comment_of(owners), root)
                                  for ports in port_chunks(ranges, shape))
        return made

    def run(self, run: Run, base: str) -> Dispatch:
        """Consecutive port-only rules: their first-match partition of the port space,
        grouped by target. The intervals are disjoint, so grouping them changes nothing,
        and each target needs only as many lines as multiport's 15 slots require. A
        protocol whose lines would be more than TREE_MIN_LINES becomes a tree of chains
        instead (``tree``)."""
        found = self.runs.get((base, id(run)))  # plan() hands both families the same Run
        if found is not None:
            return found[1]
        ruleset, shape = self.ruleset, shapes()
        made = Dispatch([], [], [])
        target_of = {rule.index: _target(ruleset, rule, self.chains) for rule in run.rules}
        for proto in PROTOCOLS:
            # (lo, hi, target, the rules deciding it): touching intervals of one target joined
            entries: list[tuple[int, int, str, list[Rule]]] = []
            for (lo, hi), rule in partition(ruleset, run.rules, proto):
                target = target_of[rule.index]
                if entries and entries[-1][2] == target and entries[-1][1] + 1 == lo:
                    last = entries[-1]
                    entries[-1] = (last[0], hi, target, last[3] if last[3][-1] is rule else [*last[3], rule])
                else:
                    entries.append((lo, hi, target, [rule]))
            # a line holds at least one interval and at most 15: up to the threshold it is
            # never a tree (counting the lines is then not needed), beyond 15 times it always is
            if len(entries) <= TREE_MIN_LINES or (
                len(entries) <= MULTIPORT_SLOTS * TREE_MIN_LINES and _line_count(entries) <= TREE_MIN_LINES
            ):
                made.lines.extend(self.grouped(base, shape.protocol(proto.value), entries))
            else:
                self.tree(made, base, proto.value, entries)
        self.runs[(base, id(run))] = (run, made)  # keeping the run keeps its id unique
        return made

    def grouped(self, chain: str, head: str, entries: list[tuple[int, int, str, list[Rule]]]) -> list[str]:
        """Lines of ``chain`` for the entries of one protocol: one per target (in the order
        of its first interval) and multiport chunk."""
        shape = shapes()
        if len({entry[2] for entry in entries}) == len(entries):
            # every target once (a dispatch tree's leaf, where each logged rule has its
            # own chain): a line per entry, in port order, without grouping them
            # (registry: its runs' lowering 337M -> 294M instructions)
            return [shape.rule(chain, head + port_match(lo, hi, shape), self.comment_of(rules), target)
                    for lo, hi, target, rules in entries]
        by_target: dict[str, tuple[list[tuple[int, int]], list[Rule]]] = {}
        for lo, hi, target, rules in entries:
            group = by_target.get(target)
            if group is None:
                by_target[target] = ([(lo, hi)], list(rules))
                continue
            group[0].append((lo, hi))
            owners = group[1]
            for rule in rules:
                if rule is not owners[-1]:
                    owners.append(rule)
        return [shape.rule(chain, head + match, self.comment_of(rules), target)
                for target, (ranges, rules) in by_target.items() for match in port_chunks(ranges, shape)]

    def tree(self, made: Dispatch, base: str, protocol: str,
             entries: list[tuple[int, int, str, list[Rule]]]) -> None:
        """The dispatch tree of one protocol's entries (``lowering.balanced_tree``): the
        base chain jumps (``-j``) to the root for the protocol; an inner chain sends a
        packet on (``-g``) to the one child whose port span holds its port; a leaf chain
        holds its entries' lines, as the base chain would. A packet no entry covers falls
        off the end of a chain and, every step below the root being a goto, returns to
        the base chain's next line, as it would have passed the lines there. So a packet
        meets at most TREE_FANOUT lines per level and TREE_LEAF in its leaf instead of
        every line before its own. The tree is over line units (``_units``), so a block
        of one target, packed into multiport lines, makes as few chains as lines allow."""
        shape = shapes()
        head = shape.protocol(protocol)
        inbound = base == self.chains.input
        name = self.namer((base, protocol), functools.partial(self.chains.tree_node, inbound, protocol))

        def goto(chain: str, child: Node, child_chain: str) -> str:
            match = shape.port(str(child.lo)) if child.lo == child.hi else shape.port_range(
                str(child.lo), str(child.hi))
            return shape.bare_goto(chain, head + match, child_chain)

        def leaf(chain: str, node: Node) -> list[str]:
            return self.grouped(chain, head, [e for unit in node.entries for e in unit[2]])

        root = name()
        # each rule once, in order (by index: hashing a Rule hashes its ports)
        rules = {rule.index: rule for entry in entries for rule in entry[3]}
        made.lines.append(shape.rule(base, head, self.comment_of(list(rules.values())), root))
        _emit_tree(made, balanced_tree(_units(entries), TREE_LEAF, TREE_FANOUT), root, name, goto, leaf)


def _line_count(entries: list[tuple[int, int, str, list[Rule]]]) -> int:
    """How many lines ``_Lowering.grouped`` writes for the entries (as ``port_chunks``
    packs each target's intervals), without writing them."""
    slots: dict[str, list[int]] = {}  # target -> its intervals' slots
    for lo, hi, target, _ in entries:
        slots.setdefault(target, []).append(1 if lo == hi else 2)
    count = 0
    for used in slots.values():
        if len(used) == 1 or sum(used) <= MULTIPORT_SLOTS:
            count += 1
            continue
        chunk = 0
        count += 1
        for n in used:
            if chunk + n > MULTIPORT_SLOTS:
                count, chunk = count + 1, 0
            chunk += n
    return count


def _units(entries: list[tuple[int, int, str, list[Rule]]]) -> list[tuple[int, int, list[tuple[int, int, str,
                                                                                         list[Rule]]]]]:
    """(lo, hi, entries) for each run of consecutive entries of one target that one
    multiport match holds (15 slots, a range taking two): the units of a dispatch tree,
    one line each at most."""
    units: list[tuple[int, int, list[tuple[int, int, str, list[Rule]]]]] = []
    members: list[tuple[int, int, str, list[Rule]]] = []
    target, used = "", 0
    for entry in entries:
        slots = 1 if entry[0] == entry[1] else 2
        if entry[2] != target or used + slots > MULTIPORT_SLOTS:
            if members:
                units.append((members[0][0], members[-1][1], members))
            members, target, used = [], entry[2], 0
        members.append(entry)
        used += slots
    units.append((members[0][0], members[-1][1], members))
    return units


def address_only(rule: Rule, family: int) -> bool:
    """The rule matches on tcp/udp ports and remote networks of ``family`` alone (no
    other protocol, local address or interface): ``_Lowering.address_run``'s kind."""
    return (not rule.other and rule.local(family) is None and rule.interfaces is None
            and bool(rule.remote(family)) and bool(rule.ports))


def _port_groups(rules: list[Rule], proto: Protocol) -> list[tuple[list[tuple[int, int]], list[Rule]]]:
    """The ports of ``proto`` that ``rules`` have, cut where the set of rules covering
    them changes (``engine.cut``): (port ranges, the rules covering them, in order) per
    distinct set, in the order of its first port."""
    spans_of = [(bit, ranges) for bit, rule in enumerate(rules) for p, ranges in rule.ports if p is proto]
    starts, masks = engine.cut(spans_of, PORT_MAX + 1)
    return [(spans, [rules[bit] for bit in engine.bits(mask)])
            for mask, spans in engine.group(starts, masks, PORT_MAX + 1).items() if mask]


def _first_match(rules: list[Rule], family: int) -> list[tuple[int, int, Rule]]:
    """The first-match partition of the remote address space of ``family`` by the
    rules' networks, in order (``engine.first_match``): disjoint, sorted (lo, hi,
    deciding rule) spans, touching spans of one rule joined."""
    spans_of = [tuple((int(net.network_address), int(net.broadcast_address)) for net in rule.remote(family) or ())
                for rule in rules]
    return [(lo, hi, rules[position]) for lo, hi, position in engine.first_match(spans_of, ADDRESS_SIZE[family])]


def _emit_tree(made: Dispatch, node: Node, chain: str, name: Callable[[], str],
               goto: Callable[[str, Node, str], str], leaf: Callable[[str, Node], list[str]]) -> None:
    """Write a dispatch tree into ``made``, root (``chain``) first, then each subtree in
    axis order: an inner chain holds ``goto(chain, child, child's chain)`` for each child
    (a ``-g`` to the one child whose span holds the packet), a leaf ``leaf(chain, node)``."""
    made.chains.append(chain)
    if not node.children:
        made.chain_lines.extend(leaf(chain, node))
        return
    named = [(child, name()) for child in node.children]
    made.chain_lines.extend(goto(chain, child, child_chain) for child, child_chain in named)
    for child, child_chain in named:
        _emit_tree(made, child, child_chain, name, goto, leaf)


class Dispatch(NamedTuple):
    """A run's lines in its base chain, and the chains of its dispatch trees (root first)
    with their lines."""

    lines: list[str]
    chains: list[str]
    chain_lines: list[str]


@functools.cache
def _prologue(family: Family, base: str, inbound: bool) -> list[str]:
    """The always-rules: loopback destinations only from lo; link-local control messages
    (ICMPv6 neighbour discovery and MLD, IGMP) before conntrack's INVALID drop, which would
    take some of them; then established and related traffic, and loopback. The same in
    every policy: made once per process (do not change the list)."""
    shape = shapes()
    lines = []
    if inbound:
        lines.append(line(base, shape.not_in_interface("lo") + shape.destination(LOOPBACK[family.number]), "DROP",
                          "always: loopback addresses arriving on another interface"))
    if family.number == 6:
        for icmp_type, hoplimit, what in ICMPV6_CONTROL:
            match = shape.protocol("ipv6-icmp") + shape.control_icmpv6_type(str(icmp_type)) + shape.hop_limit(
                str(hoplimit))
            lines.append(line(base, match, "ACCEPT", f"always: ICMPv6 {what} (RFC 4890)"))
    else:
        lines.append(line(base, shape.protocol(str(IGMP)) + shape.ttl("1"), "ACCEPT",
                          "always: IGMP, link-local (TTL 1)"))
    lines += [
        line(base, shape.conntrack("INVALID"), "DROP", "always: invalid packets"),
        line(base, shape.conntrack("RELATED,ESTABLISHED"), "ACCEPT", "always: established and related"),
        line(base, shape.in_interface("lo") if inbound else shape.out_interface("lo"), "ACCEPT", "always: loopback"),
    ]
    return lines


def _raw_lines(ruleset: Ruleset, chains: Chains) -> list[str]:
    """The raw table's PREROUTING: the reverse-path check, unless ``antispoof: false``."""
    if not ruleset.options.antispoof:
        return []
    return [line(chains.prerouting, shapes().reverse_path_fails(), "DROP",
                 "antispoof: the source is not routed back through the arrival interface")]


class Published(NamedTuple):
    """The mangle table's part of ``published_ports: enforce``."""

    builtin: list[tuple[str, str]]  # table mode: mangle's built-in chains and their policies
    chains: list[str]  # the judging chain, then the logged rules' own chains
    lines: list[str]  # the judging chain's lines, the logged rules' chains' lines, the jump


def published_chain_name(rule: Rule, chain: str = PUBLISHED_CHAIN) -> str:
    """A logged rule's own chain in the judging chain ``chain``: ``fwgen-published-N``,
    ``fwgen-NAME-pub-N`` (within 28 characters: see ``policy_prefix``)."""
    name = f"{chain}-{rule.index}"
    assert len(name) <= MAX_CHAIN, name
    return name


def published_chain(ruleset: Ruleset) -> str:
    """The judging chain: ``fwgen-published`` in table mode, ``fwgen-NAME-pub`` in chains mode."""
    return f"{policy_prefix(ruleset.name)}-pub" if ruleset.options.iptables_chains else PUBLISHED_CHAIN


def published(ruleset: Ruleset, family: Family, shared: _Lowering) -> Published:
    """``published_ports: enforce``, in the mangle table, whose FORWARD chain the kernel
    runs before every filter FORWARD rule (priority -150 against 0), whichever order
    Docker and kube-proxy put theirs in, and which exists without them. One jump from
    mangle FORWARD sends forwarded new connections that were DNATed (to a local
    container, a pod) to the judging chain, which judges them by the inbound rules, in
    order, on the connection's original destination port and address (``--ctorigdstport``,
    ``--ctorigdst``); the remote address, protocol and arrival interface DNAT leaves as
    they were. An allowed connection returns, so the filter table's chains still decide
    (Docker's accept only what it published); a denied one is dropped, which is final.
    REJECT exists only in the filter table, so a reject is a drop here (a build warning)."""
    shape = shapes()
    chain = published_chain(ruleset)
    lines: list[str] = []
    chains = [chain]
    chain_lines: list[str] = []
    for rule in ruleset.rules_for(Direction.IN, family.number):
        verdict = "RETURN" if rule.accepts else "DROP"
        comment, target, write = shared.comment(rule), verdict, shape.rule
        if rule.logged:
            # its own chain: the rate-limited LOG, then the verdict; entered by goto, so
            # its RETURN returns from the judging chain, not to the judging chain's next line
            target, write = published_chain_name(rule, chain), shape.goto_rule
            chains.append(target)
            chain_lines += [shape.log_rule(target, shared.rate, shared.burst, log_tag(ruleset, rule)),
                            shape.rule(target, "", comment, verdict)]
        interfaces = [shape.in_interface(name.replace("*", "+")) for name in rule.interfaces or ()] or [""]
        remote_nets, local_nets = network_texts(ruleset, rule, family.number)
        remotes = [shape.source(net) for net in remote_nets or ()] or [""]
        locals_ = [shape.original_destination(net) for net in local_nets or ()] or [""]
        lines += [
            write(chain, via + protocol + remote + local + selector, comment, target)
            for via in interfaces
            for protocol, selector in _protocol_parts(rule, _original_ports)
            for remote in remotes
            for local in locals_
        ]
    if ruleset.defaults.inbound is Action.DENY:
        lines.append(line(chain, "", "DROP", "default: inbound deny (published ports)"))
    jump = line("FORWARD", shape.conntrack("NEW") + shape.conntrack("DNAT"), chain,
                "published_ports: new connections DNATed to a local container")
    builtin = [] if ruleset.options.iptables_chains else [(name, "ACCEPT") for name in MANGLE_BUILTIN]
    return Published(builtin, chains, lines + chain_lines + [jump])


def lower(ruleset: Ruleset, family: Family, shared: _Lowering | None = None) -> dict[str, object]:
    """The template's view model for one family (``shared``: what the other family's
    lowering already made). In chains mode the base chains are fwgen's own, each ending
    with the default's verdict, and the built-in chains only jump to them."""
    shared = shared or _Lowering(ruleset)
    shape = shapes()
    own = shared.chains
    sharing = ruleset.options.iptables_chains
    chains: dict[str, str] = {}
    lines: list[str] = []
    tree_chains: list[str] = []
    tree_lines: list[str] = []
    uses_reject = False
    logged = [rule for rule in shared.logged if rule.applies_to(family.number)]
    for direction, builtin, base in ((Direction.IN, "INPUT", own.input), (Direction.OUT, "OUTPUT", own.output)):
        default = ruleset.defaults.for_direction(direction)
        chains[builtin] = "ACCEPT" if default is Action.ALLOW else "DROP"
        lines.extend(_prologue(family, base, direction is Direction.IN))
        pending: list[Rule] = []  # consecutive address_only rules, written when the next segment is not one
        for segment in (*plan(ruleset, direction, family.number), None):
            if isinstance(segment, Single) and address_only(segment.rule, family.number):
                pending.append(segment.rule)
                continue
            if pending:
                made = shared.address_run(pending, family, base)
                if made is None:
                    for rule in pending:
                        lines.extend(shared.single(rule, family, base))
                else:
                    lines.extend(made.lines)
                    tree_chains.extend(made.chains)
                    tree_lines.extend(made.chain_lines)
                pending = []
            if isinstance(segment, Run):
                dispatch = shared.run(segment, base)
                lines.extend(dispatch.lines)
                tree_chains.extend(dispatch.chains)
                tree_lines.extend(dispatch.chain_lines)
            elif segment is not None:
                lines.extend(shared.single(segment.rule, family, base))
        if default is Action.DENY:
            lines.append(line(base, "", _verdict(ruleset, Action.DENY, own), f"default: {direction.value}bound deny"))
        elif sharing:  # the chain decides every packet it sees, as the chain policy does in table mode
            lines.append(line(base, "", "ACCEPT", f"default: {direction.value}bound allow"))
        uses_reject |= ruleset.defaults.reject and (
            default is Action.DENY
            or any(rule.action is Action.DENY for rule in ruleset.rules_for(direction, family.number))
        )
    user_chains, rule_lines = shared.identity_chains(logged)
    judged = published(ruleset, family, shared) if ruleset.options.published_ports else Published([], [], [])
    user_chains = ([own.reject] if uses_reject else []) + user_chains
    reject_lines = [
        line(own.reject, shape.protocol("tcp"), shape.reject("tcp-reset")),
        line(own.reject, shape.protocol("udp"), shape.reject(family.icmp_unreachable)),
        line(own.reject, "", shape.reject(family.icmp_prohibited)),
    ] if uses_reject else []
    forward = "ACCEPT" if ruleset.defaults.forward is Action.ALLOW else "DROP"
    raw = _raw_lines(ruleset, own)
    jumps = {table: [line(builtin, "", getattr(own, field)) for t, builtin, field in JUMPS
                     if t == table and (table == "filter" or raw)]
             for table in ("raw", "filter")} if sharing else {"raw": [], "filter": []}
    return {
        "header": [
            sanitize.shell_comment(text) for text in rendering.header_lines(ruleset, f"{NAME} (IPv{family.number})")
        ],
        "description": sanitize.shell_comment(ruleset.description, 500),
        "policy": ruleset.name,
        "forward": forward,
        "sharing": sharing,
        "published": ruleset.options.published_ports,
        "mode_line": CHAINS_MODE_LINE,
        "prefix": policy_prefix(ruleset.name),
        "builtin": [] if sharing else [("INPUT", chains["INPUT"]), ("FORWARD", forward), ("OUTPUT", chains["OUTPUT"])],
        "raw_chains": [own.prerouting] if sharing and raw else [],
        "raw": "\n".join(raw + jumps["raw"]),
        "mangle_builtin": judged.builtin,
        "mangle_chains": judged.chains,
        "mangle": "\n".join(judged.lines),
        # the declarations of fwgen's own chains, one per line (one per logged rule: joined
        # here, as the rules are)
        "user_chains": "\n".join(
            map(shape.user_chain, ([own.input, own.output] if sharing else []) + tree_chains + user_chains)),
        # every -A line, in order, one per line (thousands of them: joined here, not by
        # a template loop, which costs more than building them)
        "rules": "\n".join(lines + tree_lines + rule_lines + reject_lines + jumps["filter"]),
    }


def render(ruleset: Ruleset) -> TargetOutput:
    shared = _Lowering(ruleset)
    files = {
        f"iptables/{family.filename}": rendering.render(TEMPLATE, **lower(ruleset, family, shared))
        for family in FAMILIES
    }
    return TargetOutput(files=files)
