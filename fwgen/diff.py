"""``fwgen diff OLD NEW``: the semantic difference of two policies.

A change is a set of new connections (direction, protocol, ports, remote addresses)
whose outcome differs: the verdict (allow | deny | monitor), how a deny is enforced
(drop | reject) or whether it is logged. Rule names, lines, comments, the policy's name
and description, formatting and key order are not part of an outcome.

The computation is exact and follows the first-match semantics of ``fwgen explain``
(docs/explain.md): per direction and protocol, the port line is cut at every rule edge
of both policies, so on each elementary port interval the same rules of each policy
apply. Where the two policies' applicable rules (their outcomes and remote networks, in
order) are identical, nothing can differ and the interval is skipped; elsewhere each
policy's first-match partition of the IPv4 and IPv6 address spaces is computed on
integer intervals and the two partitions are intersected. Pieces with the same
(addresses, before, after) on adjacent or distant ports are merged into one change, and
the same change on tcp and on udp is one change.

The arithmetic works on integers rather than ``ipaddress`` networks and builds no
``Explainer`` (whose set-up is quadratic in the number of rules, seconds at 2,000): a
2,000-rule policy diffs in a few hundredths of a second after loading. tests/test_diff.py
checks the result against the reference interpreter: ``Explainer.verdict`` on random
policy pairs, ``Explainer.regions`` on every pair of example policies.

Policies are read from files, or from git as ``git:REV:PATH`` (``git show REV:PATH`` in
the current directory's repository); errors in those name the policy as
``git:REV:PATH:LINE:COL``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import NamedTuple, cast

from fwgen import engine, ir, protocols
from fwgen.errors import PolicyError
from fwgen.files import Files, GitFiles
from fwgen.intervals import merge_spans
from fwgen.policy import Policy, load_policy
from fwgen.registry import Registry
from fwgen.resolve import check_groups, resolve_rule

DIRECTIONS = ("in", "out")
PROTOCOLS = ("tcp", "udp")
PORT_MAX = 65535
FAMILIES = (4, 6)
SPACE = {4: 1 << 32, 6: 1 << 128}

Intervals = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent [lo, hi]


class Outcome(NamedTuple):
    """What a policy does with a connection, as far as the diff is concerned."""

    action: str  # allow | deny | monitor
    enforced: str  # accept | drop | reject
    logged: bool


@dataclass(frozen=True)
class Change:
    """Connections whose outcome changed: on ``ports`` of each of ``protocols`` in
    ``direction``, from/to the remote addresses ``v4`` and ``v6`` (integer intervals).

    ``protocols``: ``tcp``, ``udp``, ``icmp``, ``icmpv6``, an IANA keyword (``esp``), a
    number, or ``other`` (every protocol no rule of either policy names on its own).
    ``ports``: the ports for tcp and udp, (type << 8 | code) intervals for ICMP, and
    ``((0, 65535),)`` (every packet) for the rest. The other fields narrow the change
    when a rule does: ``local`` (the family and the host's own addresses), the
    interfaces in words, the Windows profiles; None means any."""

    direction: str
    protocols: tuple[str, ...]
    ports: Intervals
    v4: Intervals
    v6: Intervals
    before: Outcome
    after: Outcome
    local: tuple[int, Intervals] | None = None
    interfaces: str | None = None
    profiles: tuple[str, ...] | None = None
    interface_set: InterfaceSet | None = None  # the interfaces exactly (None: any)

    def on_interface(self, name: str) -> bool:
        """Whether the change concerns connections on interface ``name``."""
        return self.interface_set is None or self.interface_set.holds(name)


class InterfaceSet(NamedTuple):
    """Interfaces as ranks of the direction's interface axis (``engine.InterfaceAxis``)."""

    spans: Intervals
    edges: tuple[str, ...]  # the axis: rank r holds the names from edges[r] below edges[r + 1]

    def holds(self, name: str) -> bool:
        rank = bisect.bisect_right(self.edges, name) - 1
        return any(lo <= rank <= hi for lo, hi in self.spans)


@dataclass(frozen=True)
class DiffResult:
    old: str  # the policies as the user named them
    new: str
    changes: tuple[Change, ...]
    metadata: tuple[str, ...]  # changed non-semantic fields: "name", "description", ...
    # changed host-wide settings that decide verdicts beyond the rules' connections:
    # "published_ports: ignore → enforce"
    settings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.changes or self.settings)


# A rule as the diff reads it: its outcome, and its remote intervals per family
# (None = any address of the family; () = never this family).
Sig = tuple[Outcome, Intervals | None, Intervals | None]


# ---------------------------------------------------------------------- loading


def load_spec(spec: str) -> Policy:
    """A policy file, or ``git:REV:PATH`` read with ``git show REV:PATH``."""
    if spec.startswith("git:"):
        return load_git(spec)
    return load_policy(spec)


def load_git(spec: str) -> Policy:
    """``git:REV:PATH``: the policy, and every file it includes, as they were at REV."""
    rev, sep, path = spec[len("git:"):].partition(":")
    if not sep or not rev or not path:
        raise PolicyError(None, f"{spec}: not a git policy reference: write git:REV:PATH")
    return load_policy(path, GitFiles(rev))


def parse_text(raw: bytes, path: str, display: str) -> Policy:
    """Parse policy bytes exactly as ``load_policy`` parses the file ``path`` (its name
    defaults to the stem of ``path``), reporting errors and naming the policy as
    ``display``."""
    files = _Named(display)
    files.remember_bytes(path, raw)
    return load_policy(path, files)


class _Named(Files):
    """The file system, but the policy's own file is given, and named ``display``."""

    def __init__(self, display: str) -> None:
        super().__init__()
        self._display = display
        self._path = ""

    def remember_bytes(self, path: str, raw: bytes) -> None:
        self._path = path
        self._raw = raw

    def display(self, path: str) -> str:
        return self._display if path == self._path else path

    def read_bytes(self, path: str) -> bytes:
        return self._raw if path == self._path else super().read_bytes(path)


# ---------------------------------------------------------------------- the computation


def _outcome(action: str, logged: bool, deny: str) -> Outcome:
    return Outcome(action, deny if action == "deny" else "accept", logged)


def _defaults(policy: Policy) -> dict[str, Outcome]:
    return {
        "in": _outcome(policy.inbound, False, policy.deny),
        "out": _outcome(policy.outbound, False, policy.deny),
    }


def _signature(rule: ir.Rule, outcome: Outcome) -> tuple[object, ...]:
    """All of a rule but its what-points: two lists of rules with equal signatures, in
    order, decide every point they both cover alike."""
    return (outcome, rule.remote_v4, rule.remote_v6, rule.local_v4, rule.local_v6, rule.interfaces,
            rule.profiles, rule.families)


def _unrestricted(rule: ir.Rule) -> bool:
    return (rule.remote_v4 is None and rule.remote_v6 is None and rule.local_v4 is None and rule.local_v6 is None
            and rule.interfaces is None and rule.profiles is None and rule.families == (4, 6))


# A piece of a change before merging: in one family, the box (remote, local, interface,
# profile spans; None = the whole axis) where the outcome goes from before to after.
Piece = tuple[int, Intervals, Intervals | None, Intervals | None, Intervals | None, Outcome, Outcome]


class _Direction:
    """Both policies' rules of one direction, in one engine space per family."""

    def __init__(self, old: tuple[ir.Rule, ...], new: tuple[ir.Rule, ...], old_deny: str, new_deny: str,
                 defaults: tuple[Outcome, Outcome]) -> None:
        self.rules = old + new
        self.old_count = len(old)
        self.outcomes = [_outcome(r.action.value, r.logged, old_deny) for r in old] + [
            _outcome(r.action.value, r.logged, new_deny) for r in new]
        self.signatures = [_signature(r, o) for r, o in zip(self.rules, self.outcomes, strict=True)]
        self.defaults = defaults
        patterns = [p for r in self.rules for p in r.interfaces or ()]
        self.interfaces = engine.InterfaceAxis(patterns)
        self.patterns = patterns
        self.spaces = {f: engine.space(self.rules, f, self.interfaces) for f in FAMILIES}

    def pieces(self, mask: int) -> list[Piece]:
        """Where one group of what-points, covered by the rules of ``mask`` (old and new
        together), changes: per family, every box whose first old rule and first new rule
        (or the defaults) differ in outcome, boxes that differ in one of local, interface
        or profile only united along it, and a dimension left whole given as None."""
        found: list[Piece] = []
        for family, space in self.spaces.items():
            old_bits = new_bits = 0
            for position in engine.bits(mask):
                bit = space.positions.get(position)
                if bit is not None:
                    if position < self.old_count:
                        old_bits |= 1 << bit
                    else:
                        new_bits |= 1 << bit
            settled = engine.decided(space.matches, (old_bits, new_bits))
            boxes: list[_Box] = []
            for box in engine.partition(space.matches, space.sizes, settled, candidates=old_bits | new_bits,
                                        axis=engine.REMOTE):
                mine, theirs = box.mask & old_bits, box.mask & new_bits
                before = self.outcomes[space_index(space, mine)] if mine else self.defaults[0]
                after = self.outcomes[space_index(space, theirs)] if theirs else self.defaults[1]
                if before != after:
                    remote, local, interface, profile = box.spans
                    boxes.append((remote, local, interface, profile, before, after))
            whole = (((0, engine.ADDRESS_SIZE[family] - 1),), ((0, space.interfaces.size - 1),),
                     ((0, len(engine.PROFILES) - 1),))
            for remote, local, interface, profile, was, now in _united(boxes):
                narrowed = [None if spans == full else spans
                            for spans, full in zip((local, interface, profile), whole, strict=True)]
                found.append((family, remote, narrowed[0], narrowed[1], narrowed[2], was, now))
        return found


_Box = tuple[Intervals, Intervals, Intervals, Intervals, Outcome, Outcome]  # remote, local, interface, profile


def _united(boxes: list[_Box]) -> list[_Box]:
    """Boxes equal but in one of profile, interface or local, united along it (so "in
    profiles private,public" is one line, not two)."""
    for axis in (3, 2, 1):
        united: dict[tuple[object, ...], list[tuple[int, int]]] = {}
        for box in boxes:
            united.setdefault(box[:axis] + box[axis + 1:], []).extend(box[axis])  # type: ignore[arg-type]
        boxes = [cast(_Box, key[:axis] + (tuple(merge_spans(spans)),) + key[axis:]) for key, spans in united.items()]
    return boxes


def space_index(space: engine.Space, mask: int) -> int:
    """The position (in the rules the space was made from) of a mask's first rule."""
    bit = engine.lowest(mask)
    return next(position for position, b in space.positions.items() if b == bit)


def _protocol_label(number: int, mentioned: set[int]) -> str:
    if number not in mentioned:
        return OTHER
    if number in _LABELS:
        return _LABELS[number]
    rows = protocols.bundled().by_number(number)
    return rows[0].name if rows and rows[0].name and rows[0].number == rows[0].last else str(number)


_LABELS = {ir.TCP_NUMBER: "tcp", ir.UDP_NUMBER: "udp", ir.ICMP_NUMBER: "icmp", ir.ICMPV6_NUMBER: "icmpv6"}
OTHER = "other"  # every protocol no rule of either policy names on its own
ORDER = {"tcp": 0, "udp": 1, "icmp": 2, "icmpv6": 3, OTHER: 1000}


def _mentioned(rules: tuple[ir.Rule, ...]) -> set[int]:
    """Protocols a rule names on its own (icmp, esp, 47): not those only ``all`` covers."""
    found = {ir.TCP_NUMBER, ir.UDP_NUMBER}
    for rule in rules:
        for lo, hi in rule.other:
            if ir.what_protocol(lo) == ir.what_protocol(hi):
                found.add(ir.what_protocol(lo))
    return found


def diff_policies(old: Policy, new: Policy, registry: Registry) -> DiffResult:
    old_rules, new_rules = _compiled(old, registry), _compiled(new, registry)
    old_defaults, new_defaults = _defaults(old), _defaults(new)
    mentioned = _mentioned(old_rules + new_rules)
    # (direction, protocol, selector key, v4, v6, before, after, local, interfaces, profiles) -> selectors
    lines: dict[tuple[object, ...], list[tuple[int, int]]] = {}
    for direction in DIRECTIONS:
        a = tuple(r for r in old_rules if r.direction.value == direction)
        b = tuple(r for r in new_rules if r.direction.value == direction)
        side = _Direction(a, b, old.deny, new.deny, (old_defaults[direction], new_defaults[direction]))
        defaults_same = old_defaults[direction] == new_defaults[direction]
        what_of = [(position, rule.what()) for position, rule in enumerate(side.rules)]
        starts, masks = engine.cut(what_of, ir.WHAT_SIZE)
        memo: dict[tuple[object, ...], list[Piece]] = {}
        for mask, what in engine.group(starts, masks, ir.WHAT_SIZE).items():
            positions = list(engine.bits(mask))
            old_sigs = tuple(side.signatures[k] for k in positions if k < side.old_count)
            new_sigs = tuple(side.signatures[k] for k in positions if k >= side.old_count)
            if old_sigs == new_sigs and (defaults_same or any(
                    _unrestricted(side.rules[k]) for k in positions if k < side.old_count)):
                continue
            key = (old_sigs, new_sigs)
            pieces = memo.get(key)
            if pieces is None:
                pieces = memo[key] = side.pieces(mask)
            if pieces:
                _collect(lines, direction, side, what, pieces, mentioned)
    return DiffResult(old.path, new.path, _changes(lines), metadata_changes(old, new), setting_changes(old, new))


def check(policy: Policy, registry: Registry) -> None:
    """Raise the ``PolicyError`` diffing ``policy`` would raise (an unknown service, a
    group that resolves to nothing, ...), located and with its include chain."""
    _compiled(policy, registry)


def _compiled(policy: Policy, registry: Registry) -> tuple[ir.Rule, ...]:
    try:
        check_groups(policy, registry)
        return tuple(resolve_rule(rule, registry, groups=policy.service_names) for rule in policy.rules)
    except PolicyError as error:
        raise policy.chained(error) from None


def _collect(lines: dict[tuple[object, ...], list[tuple[int, int]]], direction: str, side: _Direction,
             what: list[tuple[int, int]], pieces: list[Piece], mentioned: set[int]) -> None:
    """File one what-group's pieces under their lines: the same (outcomes, local,
    interfaces, profiles) over both families is one line, its v4 and v6 remote addresses
    side by side (local addresses being a family's own, a line with them is one family's)."""
    Key = tuple[Outcome, Outcome, tuple[int, Intervals] | None, Intervals | None, Intervals | None]
    by_key: dict[Key, dict[int, list[tuple[int, int]]]] = {}
    for family, remote, local_spans, interface, profile, before, after in pieces:
        where: Key = (before, after, (family, local_spans) if local_spans else None, interface, profile)
        by_key.setdefault(where, {4: [], 6: []})[family].extend(remote)
    for (before, after, local, interface, profile), addresses in by_key.items():
        v4, v6 = tuple(merge_spans(addresses[4])), tuple(merge_spans(addresses[6]))
        interfaces = (side.interfaces.describe(interface, side.patterns), interface,
                      tuple(side.interfaces.edges)) if interface else None
        profiles = tuple(engine.PROFILES[i] for lo, hi in profile for i in range(lo, hi + 1)) if profile else None
        for number, selectors in ir.by_protocol(tuple(what)).items():
            label = _protocol_label(number, mentioned)
            if label == OTHER or number not in (ir.TCP_NUMBER, ir.UDP_NUMBER, ir.ICMP_NUMBER, ir.ICMPV6_NUMBER):
                selectors = [(0, 0xFFFF)]  # a protocol without ports or types: every packet
            # ICMP exists in IPv4 only, ICMPv6 in IPv6 only (and so do their rules); "every
            # other protocol" says so by itself
            mine = (v4, v6) if label == OTHER else (v4, ()) if number == ir.ICMP_NUMBER else (
                ((), v6) if number == ir.ICMPV6_NUMBER else (v4, v6))
            if mine == ((), ()):
                continue
            lines.setdefault((direction, label, *mine, before, after, local, interfaces, profiles), []).extend(
                selectors)


def _changes(lines: dict[tuple[object, ...], list[tuple[int, int]]]) -> tuple[Change, ...]:
    # The same change on several protocols (tcp and udp, say) is one change for all.
    merged: dict[tuple[object, ...], list[str]] = {}
    for (direction, label, v4, v6, before, after, local, interfaces, profiles), selectors in lines.items():
        ports = tuple(merge_spans(selectors))
        key = (direction, ports, v4, v6, before, after, local, interfaces, profiles, label in ("icmp", "icmpv6"))
        protocols = merged.setdefault(key, [])
        if str(label) not in protocols:
            protocols.append(str(label))
    changes = [
        Change(direction, tuple(sorted(protocols, key=lambda p: ORDER.get(p, 10))), ports, v4, v6, before, after,  # type: ignore[arg-type]
               local, interfaces[0] if interfaces else None, profiles,  # type: ignore[arg-type,index]
               InterfaceSet(interfaces[1], interfaces[2]) if interfaces else None)  # type: ignore[index]
        for (direction, ports, v4, v6, before, after, local, interfaces, profiles, _), protocols in merged.items()
    ]
    changes.sort(key=lambda c: (
        DIRECTIONS.index(c.direction), ORDER.get(c.protocols[0], 10), c.protocols[0], c.ports,
        not c.v4, c.v4, c.v6, c.before, c.after, c.protocols, repr(c.local), c.interfaces or "", c.profiles or (),
        c.interface_set or (),
    ))
    return tuple(changes)


def setting_changes(old: Policy, new: Policy) -> tuple[str, ...]:
    """``published_ports``: with enforce, forwarded connections to ports published to
    local containers get the inbound verdicts; with ignore, the container runtime's."""
    if old.published_ports == new.published_ports:
        return ()
    return (f"published_ports: {old.published_ports} → {new.published_ports} (connections to ports published "
            "to local containers: " + ("judged by the inbound rules" if new.published_ports == "enforce"
                                       else "no longer judged by the inbound rules") + ")",)


def metadata_changes(old: Policy, new: Policy) -> tuple[str, ...]:
    """Changed fields that decide no verdict."""
    fields = {
        "name": (old.name, new.name),
        "description": (old.description, new.description),
        "monitor.log_prefix": (old.log_prefix, new.log_prefix),
        "monitor.rate": ((old.rate, old.rate_per), (new.rate, new.rate_per)),
        "rule names": (sorted(r.name for r in old.rules), sorted(r.name for r in new.rules)),
        "comments": (sorted(r.comment for r in old.rules if r.comment),
                     sorted(r.comment for r in new.rules if r.comment)),
    }
    return tuple(field for field, (a, b) in fields.items() if a != b)


def diff_specs(old: str, new: str, registry: Registry) -> DiffResult:
    """Load both policies (files or ``git:REV:PATH``) and diff them. ``PolicyError`` for
    an unreadable or invalid policy."""
    return diff_policies(load_spec(old), load_spec(new), registry)
