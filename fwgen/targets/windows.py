"""Windows Firewall target: a ``.cmd`` script of ``netsh advfirewall`` commands.

Windows Firewall has no rule order: a matching block rule beats every allow rule, and
an allow rule beats the profile default. A first-match policy therefore cannot be
translated rule by rule ("allow 1261 from 10.0.0.0/8, then deny 1261" would block
10.0.0.0/8 too). Instead, for every direction x protocol x address family, the port
space and the address space are cut at every rule edge; each resulting cell gets its
first-match verdict; then block rules cover exactly the cells a deny rule decided and
allow rules exactly the cells an allow or monitor rule decided. Cells left to the
default get no rule at all: the profile default (``firewallpolicy``) handles them.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from fwgen import engine
from fwgen import render as _render
from fwgen.errors import Location
from fwgen.intervals import merge_spans
from fwgen.ir import (
    ALL_PORTS,
    ICMP_NUMBER,
    ICMPV6_NUMBER,
    PORT_MAX,
    PORT_MIN,
    PROTOCOLS,
    SELECTOR_BITS,
    TCP_NUMBER,
    UDP_NUMBER,
    Action,
    Direction,
    PortRange,
    Protocol,
    Rule,
    Ruleset,
    by_protocol,
)
from fwgen.lowering import join_touching, partition
from fwgen.sanitize import windows_text
from fwgen.targets import BY_NAME, TargetOutput
from fwgen.targets.common import icmp_entries

NAME = "windows"
TEMPLATE = BY_NAME[NAME].template
LINES = BY_NAME[NAME].lines

#: cmd.exe refuses command lines of 8,191 characters or more; stay well below.
CMD_LINE_LIMIT = 8191
LINE_BUDGET = 8000
#: Longest description written (``windows_text`` limit); chunk sizing assumes it.
DESCRIPTION_LIMIT = 200
_DESCRIPTION_BASE_LIMIT = 176  # room for " part NNN/NNN"

_POLICY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,19}\Z")
_FAMILY_MAX = {4: (1 << 32) - 1, 6: (1 << 128) - 1}
_GUARD = " || goto :failed"

BLOCK = "block"
ALLOW = "allow"


class WinRule(NamedTuple):
    """One ``netsh advfirewall firewall add rule`` line."""

    direction: Direction
    action: str  # 'allow' | 'block'
    protocol: str  # netsh's value: tcp, udp, icmpv4, icmpv4:8,any, icmpv6:..., a number, any
    ports: tuple[PortRange, ...] | None  # None = any port
    remote: tuple[str, ...] | None  # netsh remoteip tokens; None = any
    description: str
    local: tuple[str, ...] | None = None  # netsh localip tokens; None = any
    profiles: tuple[str, ...] | None = None  # None = all three (profile=any)


def rule_name(ruleset: Ruleset) -> str:
    """The one netsh rule name every rule of this policy shares."""
    if not _POLICY_NAME.match(ruleset.name):
        raise ValueError(f"policy name {ruleset.name!r} is not valid for a Windows rule name")
    return f"fwgen-{ruleset.name}"


def staging_name(ruleset: Ruleset) -> str:
    """The name the script adds the new rules under before they replace the old ones
    (``.`` never occurs in a policy name, so no policy's rules are called this)."""
    return f"{rule_name(ruleset)}.new"


# ---------------------------------------------------------------------------------------
# Interval helpers (inclusive integer intervals, sorted and disjoint)

Interval = tuple[int, int]




def _verdict(rule: Rule) -> str:
    return ALLOW if rule.accepts else BLOCK


# ---------------------------------------------------------------------------------------
# Compilation: first-match cells -> grouped allow/block rule sets
#
# For one direction x protocol unit (tcp, udp, ICMPv4, ICMPv6, each other IP protocol):
#
# 0. Contexts (``_contexts``): the local address and profile axes are cut at every edge of
#    the rules' ``local`` and ``profiles``; each product of local cells and profiles
#    that the same rules cover is one context. A policy without either has one.
# 1. Cut (``_space``): in a context, the remote address space of each family is cut at
#    every edge of its rules' networks (``engine.cut``). Every address cell is covered by
#    a fixed list of rules; cells covered by the same list share one first-match map
#    (rule ids are indexes into ``ruleset.rules``, so a list in id order is a list in
#    policy order).
# 2. Paint: the first-match partition of the unit's selector axis (ports, or ICMP type and
#    code), as a list of runs (lo, hi, rule id): ``lowering.partition`` for tcp and udp,
#    which the Linux targets share, else ``engine.first_match``. It is painted once per
#    family for the rules for any remote address (the ``_Base``); a cell's map is the
#    base except within the selectors of the cell's own address-restricted rules (its
#    windows), and is kept as that difference (``_PortMap``).
# 3. Group (``_group_by_ports`` / ``_group_by_addresses``): for each verdict, the maps of
#    all cells are gathered into selectors x addresses products, one per netsh rule.


class _Group(NamedTuple):
    """A ports x addresses product, all of it decided with one verdict."""

    verdict: str
    ports: tuple[Interval, ...]
    v4: tuple[Interval, ...]
    v6: tuple[Interval, ...]
    deciders: frozenset[int]  # indexes into ruleset.rules

    def addresses(self, family: int) -> tuple[Interval, ...]:
        return self.v4 if family == 4 else self.v6


Run = tuple[int, int, int]  # (lo, hi, rule id): ports lo..hi are decided by that rule


@dataclass(eq=False)  # compared (and hashed) by identity
class _Base:
    """The first-match runs of the rules for any remote address of one context and
    family, which all of its cells' maps share but where their own rules decide."""

    runs: list[Run]  # ascending
    ends: list[int]  # the last selector of each run
    of_verdict: dict[str, list[Run]]  # verdict -> its runs
    deciders: dict[str, frozenset[int]]  # verdict -> the rule ids of its runs
    maps: int = 0  # the maps made from it (a mask of their places in the ``_Space``)


def _base(runs: list[Run], verdicts: Sequence[str]) -> _Base:
    of_verdict: dict[str, list[Run]] = {}
    for run in runs:
        of_verdict.setdefault(verdicts[run[2]], []).append(run)
    deciders = {v: frozenset(rid for _, _, rid in r) for v, r in of_verdict.items()}
    return _Base(runs, [hi for _, hi, _ in runs], of_verdict, deciders)


class _PortMap(NamedTuple):
    """The first-match map of one cell's rules, as a difference from its base's: the
    base's runs with ``removed`` taken out and ``added`` put in."""

    base: _Base
    removed: list[Run]  # runs of the base
    added: list[Run]  # none of them runs of the base
    deciders: dict[str, frozenset[int]]  # verdict -> the rule ids of its runs (the whole map's)
    changes: dict[str, list[Run]]  # verdict -> its runs of removed and added


def _port_map(base: _Base, alone: list[Run], verdicts: Sequence[str]) -> _PortMap:
    """The map of the base's rules and some address-restricted rules together, from the
    restricted rules' own runs ``alone``: the base's runs they meet are replaced
    (``verdicts``: each rule's, by id)."""
    if not alone:
        return _PortMap(base, [], [], base.deciders, {})
    removed: list[Run] = []
    done = 0  # the base's runs before runs[done] are in removed or out of reach
    for lo, hi, _ in alone:
        first = max(bisect.bisect_left(base.ends, lo), done)  # the first run not ending before lo
        done = first
        while done < len(base.runs) and base.runs[done][0] <= hi:
            done += 1
        removed += base.runs[first:done]
    added = _overlay(removed, alone)
    same = set(removed).intersection(added)  # where the restricted rules change nothing
    if same:
        removed = [run for run in removed if run not in same]
        added = [run for run in added if run not in same]
    gone: set[int] = set()  # the rules with no run left
    if removed:
        gone = {rid for _, _, rid in removed} - {run[2] for run in base.runs if run not in removed}
    changes: dict[str, list[Run]] = {}
    for run in removed + added:
        changes.setdefault(verdicts[run[2]], []).append(run)
    deciders: dict[str, set[int]] = {}
    for _, _, rid in added:
        deciders.setdefault(verdicts[rid], set()).add(rid)
    for verdict, rids in base.deciders.items():
        deciders.setdefault(verdict, set()).update(rids - gone)
    return _PortMap(base, removed, added, {v: frozenset(r) for v, r in deciders.items() if r}, changes)


def _overlay(first: list[Run], second: list[Run]) -> list[Run]:
    """The first-match runs of two disjoint lists of rules together, from each list's
    own runs: wherever both decide, the rule earlier in the policy (the lower id) does.
    Touching runs of one rule are joined, as ``_paint`` gives them."""
    if not first:
        return second
    out: list[Run] = []

    def put(lo: int, hi: int, rid: int) -> None:
        if out and out[-1][2] == rid and out[-1][1] + 1 == lo:
            out[-1] = (out[-1][0], hi, rid)
        else:
            out.append((lo, hi, rid))

    i, at = 0, 0  # first[i] is the next run of first to write, from ``at`` on
    for b_lo, b_hi, b in second:
        while i < len(first) and first[i][1] < b_lo:  # first alone, before b
            put(max(first[i][0], at), first[i][1], first[i][2])
            i += 1
        if i < len(first) and max(first[i][0], at) < b_lo:  # first alone, up to b_lo
            put(max(first[i][0], at), b_lo - 1, first[i][2])
        at = b_lo
        while at <= b_hi:
            if i < len(first) and first[i][0] <= at:  # both decide here
                hi = min(first[i][1], b_hi)
                put(at, hi, min(first[i][2], b))
                if first[i][1] <= hi:
                    i += 1
            else:  # second alone, up to the next run of first
                hi = min(first[i][0] - 1, b_hi) if i < len(first) else b_hi
                put(at, hi, b)
            at = hi + 1
    for lo, hi, rid in first[i:]:
        put(max(lo, at), hi, rid)
    return out


class _Unit(NamedTuple):
    """One netsh protocol value's worth of rules: its IP protocol number, and the address
    families it exists in (ICMP in IPv4 only, ICMPv6 in IPv6 only)."""

    number: int
    families: tuple[int, ...]


def _units(rules: list[Rule]) -> list[_Unit]:
    numbers = {TCP_NUMBER if protocol is Protocol.TCP else UDP_NUMBER for r in rules for protocol, _ in r.ports}
    numbers |= {number for r in rules if r.other for number in by_protocol(r.other)}
    special = {ICMP_NUMBER: (4,), ICMPV6_NUMBER: (6,)}
    return [_Unit(n, special.get(n, (4, 6))) for n in sorted(numbers, key=lambda n: (n not in _PORTS, n))]


_PORTS = {TCP_NUMBER: Protocol.TCP, UDP_NUMBER: Protocol.UDP}


def _selectors(rule: Rule, number: int) -> tuple[Interval, ...]:
    """The rule's intervals of a unit's selector axis (ports, or ICMP type << 8 | code)."""
    if number in _PORTS:
        return tuple((r.lo, r.hi) for r in rule.port_ranges(_PORTS[number]))
    return tuple(by_protocol(rule.other).get(number, ()))


def _covering(rules: tuple[Rule, ...], ids: list[int], units: list[_Unit]) -> dict[int, list[int]]:
    """Per unit's protocol number, the rules (ids, in order) that cover some of it."""
    found: dict[int, list[int]] = {unit.number: [] for unit in units}
    others = [unit.number for unit in units if unit.number not in _PORTS]
    for i in ids:
        rule = rules[i]
        for protocol, _ in rule.ports:
            found[TCP_NUMBER if protocol is Protocol.TCP else UDP_NUMBER].append(i)
        if rule.other:
            spans = [(lo >> SELECTOR_BITS, hi >> SELECTOR_BITS) for lo, hi in rule.other]
            for number in others:
                if any(lo <= number <= hi for lo, hi in spans):
                    found[number].append(i)
    return found


def _paint(ruleset: Ruleset, rule_ids: tuple[int, ...], number: int) -> list[Run]:
    """First match over the unit's selector axis for rules ``rule_ids`` (in policy
    order), its touching intervals of the same rule joined into runs; made once per
    ruleset for each list (the contexts of a unit share most of theirs)."""
    key = ("windows runs", number, rule_ids)
    found = ruleset.derived.get(key)
    if found is None:
        rules = ruleset.rules
        if number in _PORTS:  # the partition the Linux targets share
            cells = partition(ruleset, (rules[rid] for rid in rule_ids), _PORTS[number])
            found = join_touching(cells, lambda rule: rule.index - 1)  # the rule's id: its place in ruleset.rules
        else:
            decided = engine.first_match([_selectors(rules[rid], number) for rid in rule_ids], 1 << SELECTOR_BITS)
            found = [(lo, hi, rule_ids[position]) for lo, hi, position in decided]
        ruleset.derived[key] = found
    return found  # type: ignore[return-value]


class _Context(NamedTuple):
    """Local addresses x profiles that the same rules cover."""

    local: dict[int, tuple[Interval, ...]]  # family -> local address cells
    profiles: tuple[str, ...]
    rule_ids: tuple[int, ...]  # the rules covering it, in policy order


def _contexts(ruleset: Ruleset, rule_ids: list[int], families: tuple[int, ...]) -> list[_Context]:
    """Cut the local address and profile axes (see the compilation notes above): each
    context is a product of local cells and profiles that the same rules' ``local`` and
    ``profiles`` leave out. (Which rules apply to a family at all is the address cut's affair:
    a rule here is only ever left out for its local addresses or profiles.)"""
    rules = ruleset.rules
    if all(rules[i].local_v4 is None and rules[i].local_v6 is None and rules[i].profiles is None for i in rule_ids):
        whole: dict[int, tuple[Interval, ...]] = {f: ((0, engine.ADDRESS_SIZE[f] - 1),) for f in families}
        return [_Context(whole, engine.PROFILES, tuple(rule_ids))] if rule_ids else []
    by_profiles = [i for i in rule_ids if rules[i].profiles is not None]
    # excluded rules -> family -> local cells, per profile
    found: dict[tuple[int, ...], dict[str, dict[int, list[Interval]]]] = {}
    for family in families:
        # A rule whose local addresses are all of the other family has none here: an
        # empty list, inside no cell, so it is left out of every context of this family.
        restricted = [i for i in rule_ids if rules[i].local(family) is not None]
        spans_of = [(bit, engine.network_spans(rules[i].local(family)) or ()) for bit, i in enumerate(restricted)]
        starts, masks = engine.cut(spans_of, engine.ADDRESS_SIZE[family])
        for mask, cells in engine.group(starts, masks, engine.ADDRESS_SIZE[family]).items():
            outside = {i for bit, i in enumerate(restricted) if not mask >> bit & 1}
            for profile in engine.PROFILES:
                left_out = outside | {i for i in by_profiles if profile not in rules[i].profiles}  # type: ignore[operator]
                excluded = tuple(sorted(left_out))
                found.setdefault(excluded, {}).setdefault(profile, {}).setdefault(family, []).extend(cells)
    contexts = []
    for excluded, by_profile in found.items():
        # profiles whose local cells are the same share one context
        by_cells: dict[tuple[tuple[int, tuple[Interval, ...]], ...], list[str]] = {}
        for profile in engine.PROFILES:
            if profile in by_profile:
                local = tuple((f, tuple(merge_spans(c))) for f, c in sorted(by_profile[profile].items()))
                by_cells.setdefault(local, []).append(profile)
        ids = tuple(i for i in rule_ids if i not in excluded)
        if ids:
            contexts += [_Context(dict(local), tuple(profiles), ids) for local, profiles in by_cells.items()]
    return contexts


@dataclass
class _Space:
    """A context's remote address cells, by the first-match map they share (each map's
    cells are those of one mask of ``engine.cut`` in each family it is in).

    A family's cells are the segments of its cut, in address order; a set of them is a
    mask of their places, so the cells of several maps are an OR of masks, and their
    merged intervals are that mask's runs of set bits (``_runs``), not a sort and merge
    of lists."""

    maps: list[_PortMap]
    segments: list[dict[int, int]]  # per map: family -> its segments (a mask of their places)
    bases: list[_Base]
    starts: dict[int, list[int]]  # family -> where each segment of its cut starts
    merged: dict[int, tuple[tuple[Interval, ...], tuple[Interval, ...]]]  # see addresses

    def addresses(self, members: int) -> tuple[tuple[Interval, ...], tuple[Interval, ...]]:
        """The IPv4 and IPv6 cells of the maps ``members`` (a mask of their places), merged."""
        found = self.merged.get(members)
        if found is None:
            v4 = v6 = 0
            for m in engine.bits(members):
                of_map = self.segments[m]
                v4 |= of_map.get(4, 0)
                v6 |= of_map.get(6, 0)
            found = self.merged[members] = (_runs(v4, self.starts.get(4, []), _FAMILY_MAX[4]),
                                            _runs(v6, self.starts.get(6, []), _FAMILY_MAX[6]))
        return found


def _runs(segments: int, starts: list[int], top: int) -> tuple[Interval, ...]:
    """The merged intervals of some segments of a cut (a mask of their places; the
    segment at place k runs from starts[k] to the next start, the last one to ``top``)."""
    out = []
    while segments:
        low = segments & -segments
        first = low.bit_length() - 1  # the first segment of the lowest run of set bits
        segments += low  # clears that run and sets the bit just above it ...
        past = (segments & -segments).bit_length() - 1  # ... at the place after the run,
        segments &= segments - 1  # ... which is dropped too
        out.append((starts[first], starts[past] - 1 if past < len(starts) else top))
    return tuple(out)


class _Cut(NamedTuple):
    """One family's remote address space, cut at the edges of rules' networks."""

    starts: list[int]  # where each segment starts, ascending (the first at 0)
    segments: dict[int, int]  # mask of rule ids -> the segments they cover (a mask of their places)


def _remote_cut(ruleset: Ruleset, family: int, restricted: tuple[int, ...]) -> _Cut:
    """The remote address space of one family cut at the edges of the ``restricted``
    rules' networks.

    The space is cut once per ruleset and family, at the networks of every rule, and
    each space takes its own rules' bits of that cut's masks: a segment is then covered
    by those of its rules, and ``_runs`` joins the finer segments again. (Cutting per
    space, 8 times per fleet100 host, was a fifth of the Windows target's time.)"""
    if not restricted:  # one segment, covered by no rule
        return _Cut([0], {0: 1})
    key = ("windows remote cut", family)
    whole: _Cut | None = ruleset.derived.get(key)  # type: ignore[assignment]
    if whole is None:
        rules = ruleset.rules
        spans_of = [(i, engine.network_spans(rule.remote(family))) for i, rule in enumerate(rules)
                    if rule.remote(family) is not None]
        starts, masks = engine.cut(spans_of, engine.ADDRESS_SIZE[family])  # the bits are rule ids
        whole = ruleset.derived[key] = _Cut(starts, _segments_of(masks))
    mine = 0
    for i in restricted:
        mine |= 1 << i
    segments: dict[int, int] = {}
    for mask, places in whole.segments.items():
        segments[mask & mine] = segments.get(mask & mine, 0) | places
    return _Cut(whole.starts, segments)


def _segments_of(masks: list[int]) -> dict[int, int]:
    """mask -> the places of the segments with that mask (a mask of them)."""
    segments: dict[int, int] = {}
    for place, mask in enumerate(masks):
        segments[mask] = segments.get(mask, 0) | 1 << place
    return segments


def _space(ruleset: Ruleset, context: _Context, number: int, verdicts: Sequence[str]) -> _Space:
    """Every remote address cell of the context's families with its first-match map
    (``verdicts``: each rule's, by id).

    The rules for any address cover every cell; a cell's map is theirs with the few
    address-restricted rules covering it laid over (``_port_map``), so the whole
    partition of the selector axis is painted once per family, not once per cell."""
    rules = ruleset.rules
    space = _Space([], [], [], {}, {})
    place: dict[tuple[tuple[int, ...], int], int] = {}  # (the rules for any address, a mask of the others) -> map
    bases: dict[tuple[int, ...], _Base] = {}  # the rules for any address -> their runs
    for family in context.local:
        # Rules for any address cover every cell: only the others cut the address space.
        everywhere: list[int] = []
        restricted: list[int] = []
        for i in context.rule_ids:
            rule = rules[i]
            remote = rule.remote_v4 if family == 4 else rule.remote_v6
            if remote is None and rule.local_v4 is None and rule.local_v6 is None and family in rule.families:
                everywhere.append(i)
            elif rule.applies_to(family):
                (everywhere if remote is None else restricted).append(i)
        ids = tuple(everywhere)
        cut = _remote_cut(ruleset, family, tuple(restricted))
        space.starts[family] = cut.starts
        for mask, segments in cut.segments.items():
            if not ids and not mask:
                continue  # left to the default
            m = place.get((ids, mask))
            if m is None:
                base = bases.get(ids)
                if base is None:
                    base = bases[ids] = _base(_paint(ruleset, ids, number), verdicts)
                    space.bases.append(base)
                alone: list[Run] = []
                if mask:
                    extra = tuple(engine.bits(mask))
                    if len(extra) == 1:  # one rule decides all of its own selectors
                        alone = [(lo, hi, extra[0]) for lo, hi in _selectors(rules[extra[0]], number)]
                    else:
                        alone = _paint(ruleset, extra, number)
                m = place[ids, mask] = len(space.maps)
                space.maps.append(_port_map(base, alone, verdicts))
                space.segments.append({})
                base.maps |= 1 << m
            space.segments[m][family] = segments
    return space


def _groupings(space: _Space, verdicts: Sequence[str]) -> dict[str, tuple[list[_Group], list[_Group]]]:
    """Per verdict, the cells' maps gathered into groups in two exact ways: ports decided
    the same way over the same address set share a rule (by addresses), and address
    cells with the same port set share a rule (by ports). ``verdicts``: each rule's."""
    out = {}
    for verdict in (BLOCK, ALLOW):
        members = [m for m, port_map in enumerate(space.maps) if verdict in port_map.deciders]
        if len(members) <= 1:  # no sweep: one map's ports are one group (in both ways)
            port_map = space.maps[members[0]] if members else None
            alone = [] if port_map is None else [_Group(
                verdict, _ports(port_map, verdict, verdicts), *space.addresses(1 << members[0]),
                port_map.deciders[verdict])]
            out[verdict] = (alone, alone)
            continue
        # pos -> (maps, rule id) of the runs starting or ending there: a base's runs are
        # the runs of all of its maps, each map's removed and added runs toggle it out
        # and in again
        toggles: dict[int, list[tuple[int, int]]] = {}
        for base in space.bases:
            _toggle(toggles, base.of_verdict.get(verdict, []), base.maps)
        for m, port_map in enumerate(space.maps):
            if verdict in port_map.changes:
                _toggle(toggles, port_map.changes[verdict], 1 << m)
        records = _sweep(toggles)
        by_addresses = [
            _Group(verdict, tuple(ports), *space.addresses(key), frozenset(deciders))
            for key, (ports, deciders) in records.items()
        ]
        # The maps with the same port set are those in the same keys.
        keys_of: dict[int, list[int]] = {}  # map -> the records it is in
        parts = list(records.values())
        for i, key in enumerate(records):
            for m in engine.bits(key):
                keys_of.setdefault(m, []).append(i)
        classes: dict[tuple[int, ...], int] = {}  # records -> the maps in exactly those
        for m, keys in keys_of.items():
            classes[tuple(keys)] = classes.get(tuple(keys), 0) | 1 << m
        by_ports = []
        for mine, alike in classes.items():
            ports = parts[mine[0]][0] if len(mine) == 1 else merge_spans([p for i in mine for p in parts[i][0]])
            deciders = frozenset().union(*(space.maps[m].deciders[verdict] for m in engine.bits(alike)))
            by_ports.append(_Group(verdict, tuple(ports), *space.addresses(alike), deciders))
        out[verdict] = (by_addresses, by_ports)
    return out


def _ports(port_map: _PortMap, verdict: str, verdicts: Sequence[str]) -> tuple[Interval, ...]:
    """The merged selectors a map decides with ``verdict``."""
    runs = port_map.base.of_verdict.get(verdict, [])
    if port_map.removed or port_map.added:
        removed = set(port_map.removed)
        runs = sorted([run for run in runs if run not in removed]
                      + [run for run in port_map.added if verdicts[run[2]] == verdict])
    merged: list[Interval] = []
    for lo, hi, _ in runs:
        if merged and merged[-1][1] + 1 == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _toggle(toggles: dict[int, list[tuple[int, int]]], runs: list[Run], maps: int) -> None:
    for lo, hi, rid in runs:
        toggles.setdefault(lo, []).append((maps, rid))
        if hi < PORT_MAX:
            toggles.setdefault(hi + 1, []).append((maps, rid))


def _sweep(toggles: dict[int, list[tuple[int, int]]]) -> dict[int, tuple[list[Interval], set[int]]]:
    """A sweep over the port space, at the edges of one verdict's runs (``toggles``):
    key (the maps deciding a port with the verdict, as a mask) -> its ports and the rules
    deciding them."""
    cuts = sorted(toggles)
    key = 0
    deciding: dict[int, int] = {}  # rule id -> the maps it decides the current port for
    found: dict[int, tuple[list[Interval], set[int]]] = {}
    for k, pos in enumerate(cuts):
        here = toggles[pos]
        for maps, rid in here:
            key ^= maps  # each map has one run at a port at most
            mine = deciding.get(rid, 0) ^ maps
            if mine:
                deciding[rid] = mine
            else:
                del deciding[rid]
        if not key:
            continue
        end = cuts[k + 1] - 1 if k + 1 < len(cuts) else PORT_MAX
        record = found.get(key)
        if record is None:
            record = found[key] = ([], set())
        ports, deciders = record
        if ports and ports[-1][1] == pos - 1:  # the same key as just before: the rules not
            ports[-1] = (ports[-1][0], end)  # toggled here are in already
            deciders.update(rid for _, rid in here if rid in deciding)
        else:
            ports.append((pos, end))
            deciders.update(deciding)
    return found


def _sort_groups(groups: list[_Group]) -> list[_Group]:
    """The groups of one verdict, in the order their rules are written."""
    return sorted(groups, key=lambda g: (g.ports, g.v4, g.v6))


# ---------------------------------------------------------------------------------------
# Formatting


@functools.lru_cache(maxsize=1 << 16)
def _address_token(family: int, lo: int, hi: int) -> str:
    if lo == hi:
        return _address(family, lo)
    size = hi - lo + 1
    top = _FAMILY_MAX[family]
    if size & (size - 1) == 0 and lo % size == 0 and size <= top:  # an exact prefix, not /0
        bits = 32 if family == 4 else 128
        return f"{_address(family, lo)}/{bits - size.bit_length() + 1}"
    return f"{_address(family, lo)}-{_address(family, hi)}"


def _address(family: int, value: int) -> str:
    if family == 4:  # as ipaddress writes it, without making an object
        return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"
    return str(ipaddress.IPv6Address(value))


# [MS-FASP] 2.2.10 FW_IPV6_ADDRESS_RANGE: "Begin and End MUST NOT contain either an
# unspecified or a loopback address"; 2.2.6 FW_IPV6_SUBNET: the address "SHOULD NOT be an
# unspecified address ... and it MUST not be a loopback address". Neither :: nor ::1 is
# ever the remote address of a connection Windows Firewall filters (loopback traffic is
# not filtered; :: is no peer), so they are left out of every IPv6 address list.
_IPV6_NEVER_REMOTE = (0, 1)  # ::, ::1


def _without_unspecified_and_loopback(spans: tuple[Interval, ...]) -> list[Interval]:
    first_allowed = _IPV6_NEVER_REMOTE[-1] + 1
    return [(max(lo, first_allowed), hi) for lo, hi in spans if hi >= first_allowed]


def _address_tokens(cells: dict[int, tuple[Interval, ...]], families: tuple[int, ...]) -> tuple[str, ...] | None:
    """netsh remoteip/localip tokens for address cells: None for every address of the
    ``families`` that matter (the unit's); an empty tuple when the cells hold only
    addresses no connection has."""
    if all(cells.get(f) == ((0, _FAMILY_MAX[f]),) for f in families):
        return None
    return tuple(
        [_address_token(4, lo, hi) for lo, hi in cells.get(4, ())]
        + [_address_token(6, lo, hi) for lo, hi in _without_unspecified_and_loopback(cells.get(6, ()))]
    )


def _remote_tokens(group: _Group, families: tuple[int, ...] = (4, 6)) -> tuple[str, ...] | None:
    return _address_tokens({4: group.v4, 6: group.v6}, families)


def _mention(rule: Rule) -> str:
    if rule.location.line == 0:  # exclusive mode's stand-in for a deny default
        return rule.name
    # basename only: output must not depend on the path fwgen was given
    return f"{rule.name} ({rule.file or os.path.basename(rule.location.path)}:{rule.location.line}) {rule.action.value}"


def _description(policy: str, rules: list[Rule], mention: Callable[[Rule], str] = _mention) -> str:
    """``fwgen NAME: rule admin-ssh (policy.yaml:12) allow`` naming the deciding rules
    (``mention``: ``_mention``, or a memo of it)."""
    if len(rules) == 1:
        rule = rules[0]
        text = f"fwgen {policy}: rule {mention(rule)}"
        if rule.comment:
            text += f": {rule.comment}"
        return windows_text(text, _DESCRIPTION_BASE_LIMIT)
    head = f"fwgen {policy}: rules "
    mentions = [mention(rules[0])]  # grows one by one: only the first few ever fit
    # While every piece is safe text, so is the whole: windows_text only cuts it short
    # (the head ends in one space, which the next piece follows).
    clean = _clean(head[:-1]) and _clean(mentions[0])

    def safe(text: str, limit: int) -> str:
        return text[:limit].rstrip() if clean else windows_text(text, limit)

    text = safe(head + mentions[0], _DESCRIPTION_BASE_LIMIT)
    for k in range(2, len(rules) + 1):
        mentions.append(mention(rules[k - 1]))
        clean = clean and _clean(mentions[-1])
        rest = len(rules) - k
        candidate = safe(head + ", ".join(mentions) + (f" +{rest} more" if rest else ""), 10_000)
        if len(candidate) > _DESCRIPTION_BASE_LIMIT:
            break
        text = candidate
    else:
        return text
    if k == 2:  # not even two fit: name the first and count the rest
        return windows_text(head + mentions[0], _DESCRIPTION_BASE_LIMIT - 12) + (
            f" +{len(rules) - 1} more"
        )
    return text  # the longest candidate that fit, with its "+N more"


@functools.lru_cache(maxsize=4096)
def _clean(text: str) -> bool:
    """``windows_text`` leaves it as it is (so too any join of such texts by ``", "``)."""
    return windows_text(text, len(text)) == text


def _port_option(direction: Direction) -> str:
    return "localport" if direction is Direction.IN else "remoteport"


def add_rule_command(name: str, rule: WinRule) -> str:
    """The netsh command for one rule (without its ``||`` guard)."""
    shape = _render.shapes(LINES)
    direction, action, protocol, ports, remote, description, local, profiles = rule
    options = ""
    if ports is not None:
        options += shape.option(_port_option(direction), ",".join(map(str, ports)))
    if remote is not None:
        options += shape.option("remoteip", ",".join(remote))
    if local is not None:
        options += shape.option("localip", ",".join(local))
    return shape.add_rule(name, direction.value, action, protocol, options,
                          ",".join(profiles) if profiles is not None else "any", description)


def _chunk(tokens: list[str], budget: int) -> list[list[str]]:
    """Greedy split of a comma-joined list into pieces of at most ``budget`` characters."""
    chunks: list[list[str]] = [[]]
    used = 0
    for token in tokens:
        extra = len(token) + (1 if chunks[-1] else 0)
        if chunks[-1] and used + extra > budget:
            chunks.append([])
            extra = len(token)
            used = 0
        chunks[-1].append(token)
        used += extra
    return chunks


def _list_length(tokens: list[str] | None) -> int:
    return len(",".join(tokens)) if tokens is not None else 0


def _split(
    ports: list[str] | None, remote: list[str] | None, avail: int
) -> list[tuple[list[str] | None, list[str] | None]]:
    """Cut a (ports x addresses) rule into product pieces that each fit ``avail``
    characters of list text, with as few pieces as a simple search finds."""
    p_len, a_len = _list_length(ports), _list_length(remote)
    if p_len + a_len <= avail:
        return [(ports, remote)]
    if ports is None or remote is None:
        only = ports if ports is not None else remote
        assert only is not None
        pieces = _chunk(only, avail)
        return [(c, remote) if ports is not None else (ports, c) for c in pieces]
    budgets = {avail * k // 16 for k in range(1, 16)}
    if p_len < avail:
        budgets.add(p_len)
    if a_len < avail:
        budgets.add(avail - a_len)
    best: tuple[int, int, list[list[str]], list[list[str]]] | None = None
    for b in sorted(budgets):
        pc = _chunk(ports, b)
        ac = _chunk(remote, avail - b)
        cost = len(pc) * len(ac)
        if best is None or cost < best[0]:
            best = (cost, b, pc, ac)
    assert best is not None
    return [(p, a) for p in best[2] for a in best[3]]


def _protocol_values(number: int, selectors: tuple[Interval, ...]) -> list[tuple[str, tuple[Interval, ...] | None]]:
    """netsh protocol values for a group's selectors, each with the ports it keeps
    (None: no port option): tcp and udp list their ports, ICMP one rule per type (and
    code), any other protocol matches every packet."""
    if number in _PORTS:
        return [(_PORTS[number].value, None if selectors == ((PORT_MIN, PORT_MAX),) else selectors)]
    if number in _ICMP:
        keyword = _ICMP[number]
        if selectors == ((0, (1 << SELECTOR_BITS) - 1),):
            return [(keyword, None)]
        values: list[tuple[str, tuple[Interval, ...] | None]] = []
        for entry in icmp_entries(list(selectors)):
            icmp_type, _, code = entry.partition("/")
            values.append((f"{keyword}:{icmp_type},{code or 'any'}", None))
        return values
    return [(str(number), None)]


_ICMP = {ICMP_NUMBER: "icmpv4", ICMPV6_NUMBER: "icmpv6"}


class _Writer:
    """Writes the WinRules of one lowering's groups, making what they share once: the
    rule name, each set of deciding rules' description, each port list's tokens, and
    the length of each kind of command without its lists."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.name = rule_name(ruleset)
        self.descriptions: dict[frozenset[int], str] = {}
        self.mentions: dict[int, str] = {}  # rule id -> _mention
        self.final: dict[str, str] = {}  # text -> windows_text(text, DESCRIPTION_LIMIT)
        self.port_tokens: dict[tuple[Interval, ...], tuple[list[str], tuple[PortRange, ...], int]] = {}
        self.fixed: dict[tuple[object, ...], int] = {}
        self.longest_of: dict[tuple[tuple[str, ...] | None, tuple[str, ...] | None], int] = {}

    def description(self, deciders: frozenset[int]) -> str:
        found = self.descriptions.get(deciders)
        if found is None:
            rules = self.ruleset.rules
            found = self.descriptions[deciders] = _description(
                self.ruleset.name, [rules[i] for i in sorted(deciders)], self.mention)
        return found

    def mention(self, rule: Rule) -> str:
        found = self.mentions.get(rule.index)
        if found is None:
            found = self.mentions[rule.index] = _mention(rule)
        return found

    def final_text(self, text: str) -> str:
        found = self.final.get(text)
        if found is None:
            found = self.final[text] = windows_text(text, DESCRIPTION_LIMIT)
        return found

    def ports(self, selectors: tuple[Interval, ...]) -> tuple[list[str], tuple[PortRange, ...], int]:
        """The port tokens, their ranges and the length of their list."""
        found = self.port_tokens.get(selectors)
        if found is None:
            ranges = tuple(PortRange._make(s) for s in selectors)  # tcp and udp selectors are ports
            tokens = list(map(str, ranges))
            found = self.port_tokens[selectors] = (tokens, ranges, len(",".join(tokens)))
        return found

    def fixed_length(self, sizing: WinRule) -> int:
        """The length of a command (with its guard) whose lists are empty (``()``, or
        None when left out) and whose description is the longest there is."""
        found = self.fixed.get(sizing)
        if found is None:
            longest = sizing._replace(description="x" * DESCRIPTION_LIMIT)
            found = self.fixed[sizing] = len(add_rule_command(self.name, longest)) + len(_GUARD)
        return found

    def longest(self, local: tuple[str, ...] | None, profiles: tuple[str, ...] | None) -> int:
        """The most ``fixed_length`` gives for these local addresses and profiles: both
        lists, the longer port option and direction, the longest protocol value."""
        found = self.longest_of.get((local, profiles))
        if found is None:
            longest = WinRule(Direction.OUT, BLOCK, "icmpv6:255,255", (), (), "", local, profiles)
            found = self.longest_of[local, profiles] = self.fixed_length(longest)
        return found

    def count(self, direction: Direction, unit: _Unit, context: _Context, local: tuple[str, ...] | None,
              group: _Group) -> int | list[WinRule]:
        """``len(self.emit(...))`` when every line of the rules surely fits (no port token
        is longer than 11 characters, no IPv4 one than 31, no IPv6 one than 79), without
        making them: the rules of the grouping not kept are never made. Else the rules."""
        if local == () or (not group.v4 and all(hi <= 1 for _, hi in group.v6)):  # see _address_tokens
            return 0
        profiles = None if context.profiles == engine.PROFILES else context.profiles
        n = len(_protocol_values(unit.number, group.ports)) if unit.number in _ICMP else 1
        most = 12 * len(group.ports) + 32 * len(group.v4) + 80 * len(group.v6)
        if most <= LINE_BUDGET - self.longest(local, profiles):
            return n  # fits, whatever the protocol value and lists are
        whole = all(group.addresses(f) == ((0, _FAMILY_MAX[f]),) for f in unit.families)
        addresses = 0 if whole else 32 * len(group.v4) + 80 * len(group.v6)
        for protocol, selectors in _protocol_values(unit.number, group.ports):
            sizing = WinRule(direction, group.verdict, protocol, None if selectors is None else (),
                             None if whole else (), "", local, profiles)
            if 12 * len(selectors or ()) + addresses > LINE_BUDGET - self.fixed_length(sizing):
                return self.emit(direction, unit, context, local, group)
        return n

    def emit(
        self, direction: Direction, unit: _Unit, context: _Context, local: tuple[str, ...] | None, group: _Group
    ) -> list[WinRule]:
        """The WinRules of one group: one, or several chunks when a line would be too long
        (``local``: the context's local address tokens)."""
        remote = _remote_tokens(group, unit.families)
        if remote == () or local == ():
            return []
        profiles = None if context.profiles == engine.PROFILES else context.profiles
        description = self.description(group.deciders)
        out = []
        room = LINE_BUDGET - self.longest(local, profiles)
        remote_length = len(",".join(remote)) if remote is not None else 0
        for protocol, selectors in _protocol_values(unit.number, group.ports):
            port_tokens, port_ranges, ports_length = self.ports(selectors) if selectors is not None else (None, None, 0)
            if ports_length + remote_length <= room:  # one rule, whatever the protocol value (most groups)
                out.append(WinRule(direction, group.verdict, protocol, port_ranges, remote,
                                   self.final_text(description), local, profiles))
                continue
            sizing = WinRule(direction, group.verdict, protocol, () if port_tokens is not None else None,
                             () if remote is not None else None, "", local, profiles)
            avail = LINE_BUDGET - self.fixed_length(sizing)  # the exact room
            pieces = _split(port_tokens, list(remote) if remote is not None else None, avail)
            port_objects = dict(zip(port_tokens or (), port_ranges or (), strict=True))
            for n, (p, a) in enumerate(pieces, 1):
                text = description if len(pieces) == 1 else f"{description} part {n}/{len(pieces)}"
                out.append(WinRule(
                    direction=direction, action=group.verdict, protocol=protocol,
                    ports=tuple(port_objects[t] for t in p) if p is not None else None,
                    remote=tuple(a) if a is not None else None,
                    description=self.final_text(text), local=local, profiles=profiles,
                ))
        return out


def _with_explicit_defaults(ruleset: Ruleset) -> Ruleset:
    """``windows: {exclusive: true}``: the ruleset with each deny default as a last rule
    that denies every tcp and udp port to and from every address, so that what the
    default decides becomes block rules (which beat other software's allow rules)."""
    denying = [d for d in Direction if ruleset.defaults.for_direction(d) is Action.DENY]
    extra = tuple(
        Rule(  # indexes after the policy's rules (ids are positions); line 0 marks them
            index=len(ruleset.rules) + n, name=f"default {direction.value}bound deny",
            location=Location(ruleset.source.filename, 0, 0), action=Action.DENY, log=False,
            direction=direction, ports=tuple((protocol, ALL_PORTS) for protocol in PROTOCOLS),
            remote_v4=None, remote_v6=None,
        )
        for n, direction in enumerate(denying, start=1)
    )
    return dataclasses.replace(ruleset, rules=ruleset.rules + extra) if extra else ruleset


def lower(ruleset: Ruleset) -> list[WinRule]:
    """The exact, order-free Windows rule set of a first-match policy.

    Per direction x protocol unit x context x verdict, two exact groupings of the
    first-match cells are tried (cells with the same port set share a rule; ports with
    the same address set share a rule) and the one giving fewer netsh rules is kept.
    """
    rule_name(ruleset)  # validates the policy name
    if ruleset.options.windows_exclusive:
        ruleset = _with_explicit_defaults(ruleset)
    out: list[WinRule] = []
    writer = _Writer(ruleset)
    verdicts = [_verdict(rule) for rule in ruleset.rules]
    for direction in (Direction.IN, Direction.OUT):
        of_direction = [i for i, r in enumerate(ruleset.rules) if r.direction is direction]
        emitted_direction: list[WinRule] = []
        units = _units([ruleset.rules[i] for i in of_direction])
        covering_of = _covering(ruleset.rules, of_direction, units)
        for unit in units:
            for context in _contexts(ruleset, covering_of[unit.number], unit.families):
                local = _address_tokens(context.local, unit.families)
                groupings = _groupings(_space(ruleset, context, unit.number, verdicts), verdicts)
                counted: dict[_Group, int | list[WinRule]] = {}  # both groupings often agree
                for verdict in (BLOCK, ALLOW):
                    best: tuple[int, list[_Group]] | None = None
                    for groups in groupings[verdict]:
                        count = 0
                        for g in groups:
                            n = counted.get(g)
                            if n is None:
                                n = counted[g] = writer.count(direction, unit, context, local, g)
                            count += n if isinstance(n, int) else len(n)
                        if best is None or count < best[0]:
                            best = (count, groups)
                    assert best is not None
                    for g in _sort_groups(best[1]):  # only the grouping kept is put in order
                        made = counted[g]
                        emitted_direction += made if isinstance(made, list) else writer.emit(
                            direction, unit, context, local, g)
        out += _every_protocol(_united_profiles(emitted_direction))
    return out


def _united_profiles(rules: list[WinRule]) -> list[WinRule]:
    """Rules that differ only in their profiles become one rule for all of them (in the
    place of the first): the contexts cut the profile axis wherever any rule limits
    its profiles, so a rule for every profile would otherwise repeat per context."""
    if all(rule.profiles is None for rule in rules):  # each rule is for all of them already
        return list(dict.fromkeys(rules))
    profiles: dict[WinRule, list[str]] = {}
    for rule in rules:
        key = rule._replace(profiles=None)
        found = profiles.setdefault(key, [])
        found.extend(rule.profiles or engine.PROFILES)
    out = []
    for key, names in profiles.items():
        united = tuple(p for p in engine.PROFILES if p in names)
        out.append(key._replace(profiles=None if united == engine.PROFILES else united))
    return out


#: netsh's protocol values that together name every IP protocol
_EVERY_PROTOCOL = frozenset({str(n) for n in range(256)} | {"tcp", "udp", "icmpv4", "icmpv6"}) - {
    str(TCP_NUMBER), str(UDP_NUMBER), str(ICMP_NUMBER), str(ICMPV6_NUMBER)}


def _every_protocol(rules: list[WinRule]) -> list[WinRule]:
    """Rules that differ only in their protocol and together name every IP protocol
    (each on every port or ICMP type) become one ``protocol=any`` rule: netsh has no
    protocol lists, and ``protocol: all`` would otherwise take one rule per number."""
    whole = [r for r in rules if r.ports is None and ":" not in r.protocol]
    groups: dict[tuple[object, ...], list[WinRule]] = {}
    for r in whole:
        groups.setdefault((r.action, r.remote, r.local, r.profiles), []).append(r)
    merged: dict[int, WinRule] = {}  # id of the first rule of a merged group -> the merged rule
    dropped: set[int] = set()
    for members in groups.values():
        if len(members) == len(_EVERY_PROTOCOL) and {r.protocol for r in members} >= _EVERY_PROTOCOL:
            first = members[0]
            merged[id(first)] = first._replace(protocol="any")
            dropped |= {id(r) for r in members[1:]}
    return [merged.get(id(r), r) for r in rules if id(r) not in dropped]


# ---------------------------------------------------------------------------------------
# Script


def _degradations(ruleset: Ruleset) -> tuple[list[str], list[str], list[str]]:
    """(header notes, warnings, netsh set commands) for what Windows Firewall cannot
    express as the policy says it. The notes count what the script does about each
    degradation the target table declares (``fwgen.targets``); the build reports those
    as located warnings itself, so the warnings here are only the policy-wide ones."""
    notes: list[str] = []
    commands: list[str] = []
    rules = ruleset.rules
    if ruleset.defaults.reject:
        notes.append("reject is not supported by Windows Firewall; deny rules and deny defaults drop silently")
    monitors = [r for r in rules if r.action is Action.MONITOR]
    logged_allows = [r for r in rules if r.action is Action.ALLOW and r.log]
    logged_denies = [r for r in rules if r.action is Action.DENY and r.log]
    if monitors:
        m = ruleset.monitor
        notes.append(
            f"{len(monitors)} monitor rule(s) become allow rules; Windows Firewall has no per-rule logging, "
            f"rate limit ({m.rate}/{m.per}) or counters, so logging of allowed connections is enabled for all "
            "profiles"
        )
    if logged_allows:
        notes.append(
            f"log on {len(logged_allows)} allow rule(s) becomes logging of all allowed connections for all "
            "profiles (no per-rule logging)"
        )
    if logged_denies:
        notes.append(
            f"log on {len(logged_denies)} deny rule(s) becomes logging of all dropped connections for all "
            "profiles (no per-rule logging)"
        )
    if monitors or logged_allows:
        commands.append("netsh advfirewall set allprofiles logging allowedconnections enable")
    if logged_denies:
        commands.append("netsh advfirewall set allprofiles logging droppedconnections enable")
    warnings: list[str] = []
    denying = [d.value + "bound" for d in Direction if ruleset.defaults.for_direction(d) is Action.DENY]
    if denying and not ruleset.options.windows_exclusive:
        warnings.append(
            f"windows: the default {' and '.join(denying)} deny is the block setting of the profiles, "
            "which every allow rule of other software (File and Printer Sharing, WinRM, rules users "
            "allowed) overrides; set exclusive: true under windows: to write it as block rules that "
            "beat them"
        )
    return notes, warnings, commands


def _sentences(text: str) -> str:
    return ". ".join(part[:1].upper() + part[1:] for part in text.split("; ")) + "."


def render(ruleset: Ruleset) -> TargetOutput:
    name, staging = rule_name(ruleset), staging_name(ruleset)
    rules = lower(ruleset)
    notes, warnings, logging_commands = _degradations(ruleset)
    d = ruleset.defaults
    inbound = "blockinbound" if d.inbound is Action.DENY else "allowinbound"
    outbound = "blockoutbound" if d.outbound is Action.DENY else "allowoutbound"

    counts = {(v, dr): 0 for v in (BLOCK, ALLOW) for dr in Direction}
    for r in rules:
        counts[(r.action, r.direction)] += 1
    header = [*_render.header_lines(ruleset, NAME)]
    if ruleset.description:
        header.append(f"description: {ruleset.description}")
    header += [
        "Windows Firewall has no rule order (block beats allow, allow beats the profile "
        "default). This first-match policy was compiled into block rules covering exactly "
        "what it denies and allow rules covering exactly what it allows. The rest is left "
        "to the profile default.",
        f"rules: {len(rules)} named {name} (inbound {counts[(BLOCK, Direction.IN)]} block "
        f"{counts[(ALLOW, Direction.IN)]} allow, outbound {counts[(BLOCK, Direction.OUT)]} "
        f"block {counts[(ALLOW, Direction.OUT)]} allow). Defaults: {inbound},{outbound}.",
        "Windows core-networking allow rules still apply to traffic the policy leaves to "
        "the default.",
        f"The script adds the new rules as {staging}, then deletes the old {name} rules and "
        f"renames the new ones, so there is no moment without rules. If an add fails, it deletes "
        f"the {staging} rules, keeps the old rules and exits 1.",
    ]
    if ruleset.options.windows_exclusive:
        header.append(
            "windows exclusive: what the deny defaults decide for tcp and udp is written as "
            "block rules, which beat every allow rule of other software too."
        )
    header += [_sentences(text) for text in notes + [w.removeprefix("windows: ") for w in warnings]]
    if logging_commands:
        header.append(
            "Profile logging is only ever enabled by this script, never disabled. The log "
            "(pfirewall.log) does not name the rule."
        )

    settings = [f"netsh advfirewall set allprofiles firewallpolicy {inbound},{outbound}"]
    # The policy means nothing while the firewall is off.
    settings.append("netsh advfirewall set allprofiles state on")
    settings += logging_commands
    deletes = {
        "delete_staging": f'netsh advfirewall firewall delete rule name="{staging}"',
        "delete_old": f'netsh advfirewall firewall delete rule name="{name}"',
    }
    text = _render.render(
        TEMPLATE,
        removal=False,
        header=[windows_text(line, 1000) for line in header],
        adds=[add_rule_command(staging, r) for r in rules],
        rename=f'netsh advfirewall firewall set rule name="{staging}" new name="{name}"' if rules else "",
        settings=settings,
        **deletes,
    )
    removal = _render.render(
        TEMPLATE,
        removal=True,
        header=[windows_text(line, 1000) for line in _removal_header(ruleset, name, staging, logging_commands)],
        adds=[],
        rename="",
        settings=_undo(inbound, outbound, logging_commands),
        **deletes,
    )
    return TargetOutput(files={f"windows/{ruleset.name}.cmd": _crlf(text),
                               f"windows/{ruleset.name}-remove.cmd": _crlf(removal)}, warnings=warnings)


# What a fresh Windows install has, which the removal script goes back to where the
# policy's script changed it (Microsoft Learn, "Windows Firewall": inbound blocked,
# outbound allowed; profile logging of allowed and dropped connections off).
WINDOWS_DEFAULT_POLICY = ("blockinbound", "allowoutbound")


def _undo(inbound: str, outbound: str, logging_commands: list[str]) -> list[str]:
    """The settings commands that undo what the policy's script switched on."""
    commands = []
    if (inbound, outbound) != WINDOWS_DEFAULT_POLICY:
        commands.append("netsh advfirewall set allprofiles firewallpolicy " + ",".join(WINDOWS_DEFAULT_POLICY))
    commands += [command.removesuffix(" enable") + " disable" for command in logging_commands]
    return commands


def _removal_header(ruleset: Ruleset, name: str, staging: str, logging_commands: list[str]) -> list[str]:
    """Plain words only: Windows text keeps no quote or semicolon (``windows_text``)."""
    logging = ", and switches off the profile logging that script enabled" if logging_commands else ""
    return [
        *_render.header_lines(ruleset, NAME),
        f"Removes what {ruleset.name}.cmd installed: every rule named {name} (and {staging}, left by an "
        f"interrupted run){logging}. The firewall state stays on. Where the policy set other profile "
        f"defaults, they go back to the Windows defaults {','.join(WINDOWS_DEFAULT_POLICY)}. Rules of other "
        "software are not touched. Running it again changes nothing.",
    ]


def _crlf(text: str) -> str:
    if "\r" in text:
        raise AssertionError("carriage return in rendered Windows script")
    text = text.replace("\n", "\r\n")
    if max(map(len, text.split("\r\n"))) >= CMD_LINE_LIMIT:  # (the loop below only then)
        for line in text.split("\r\n"):
            if len(line) >= CMD_LINE_LIMIT:
                raise AssertionError(f"cmd.exe line of {len(line)} characters")
    return text
