"""The first-match engine: the one computation of which rule decides which traffic.

A connection is a point of the match space; per direction and address family it has
five axes, each a range of integers:

- ``WHAT``: protocol and selector (``ir.what_span``: the port for tcp and udp, type and
  code for ICMP);
- ``REMOTE`` and ``LOCAL``: the peer's and the host's address;
- ``INTERFACE``: the arrival (in) or leaving (out) interface, as the rank of its name
  among the names and prefixes the rules mention (``InterfaceAxis``);
- ``PROFILE``: the Windows profile (domain, private, public).

A rule's match is a product: a set of intervals per axis (``None``: the whole axis).
``partition`` cuts the space, axis by axis, into boxes on which the same rules apply;
the rules of a box are a bitmask in policy order, so its first match is the lowest bit.
The targets (verdict maps, the Windows precedence compilation), lint and diff all read
their first-match answers from here. ``fwgen explain`` does not: it stays a plain,
separate interpreter that the tests hold this engine's results to.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from fwgen import ir

Span = tuple[int, int]  # inclusive
Spans = tuple[Span, ...]  # sorted, disjoint
Match = tuple[Spans | None, ...]  # one entry per axis; None = the whole axis

WHAT, REMOTE, LOCAL, INTERFACE, PROFILE = range(5)
PROFILES = ("domain", "private", "public")
ADDRESS_SIZE = {4: 1 << 32, 6: 1 << 128}


def lowest(mask: int) -> int:
    """The position of the lowest set bit: the first rule of a mask."""
    return (mask & -mask).bit_length() - 1


def bits(mask: int) -> Iterator[int]:
    """The positions of the set bits, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def cut(spans_of: Sequence[tuple[int, Spans | None]], size: int) -> tuple[list[int], list[int]]:
    """Cut the axis [0, size) at every edge of the given rules' intervals: the segment
    starts, and per segment the mask of the rules (``(bit, spans)``) covering it.

    A sweep: each interval switches its rule's bit on at its start and off after its
    end. A rule's own intervals are disjoint, so an XOR of toggles is exact (touching
    intervals of one rule toggle twice at the seam and stay on)."""
    toggles: dict[int, int] = {}
    everywhere = 0
    for bit, spans in spans_of:
        flag = 1 << bit
        if spans is None:
            everywhere |= flag
            continue
        for lo, hi in spans:
            toggles[lo] = toggles.get(lo, 0) ^ flag
            if hi + 1 < size:
                toggles[hi + 1] = toggles.get(hi + 1, 0) ^ flag
    starts = sorted(toggles.keys() | {0})
    masks = []
    current = 0
    for start in starts:
        current ^= toggles.get(start, 0)
        masks.append(current | everywhere)
    return starts, masks


def group(starts: list[int], masks: list[int], size: int) -> dict[int, list[Span]]:
    """mask -> the joined intervals of the segments with that mask (in axis order)."""
    out: dict[int, list[Span]] = {}
    for i, mask in enumerate(masks):
        end = starts[i + 1] - 1 if i + 1 < len(starts) else size - 1
        spans = out.setdefault(mask, [])
        if spans and spans[-1][1] + 1 == starts[i]:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((starts[i], end))
    return out


def first_match(spans_of: Sequence[Spans], size: int) -> list[tuple[int, int, int]]:
    """One axis, rules in order: ``(lo, hi, position)`` for every maximal interval the
    rule at ``position`` decides (the first covering it), sorted; intervals no rule
    covers are absent, and what lies past the axis is cut off.

    The case every target asks for, on thousands of rules: the intervals sorted by
    start; one that overlaps no other is decided by its own rule (the usual case: a
    policy's runs of port-only rules rarely repeat a port), and each cluster of
    overlapping ones goes through ``_sweep``. Registry's 11,654 intervals: 45M
    instructions, where a sweep over all of them (a dict of edges) took 210M."""
    flat = sorted([(lo, hi, position) for position, spans in enumerate(spans_of) for lo, hi in spans])
    out: list[tuple[int, int, int]] = []
    i, count = 0, len(flat)
    while i < count:
        lo, hi, position = flat[i]
        if lo >= size:
            break
        if i + 1 == count or flat[i + 1][0] > hi:  # overlaps nothing (the ones before end before lo)
            hi = min(hi, size - 1)
            if out and out[-1][2] == position and out[-1][1] + 1 == lo:
                out[-1] = (out[-1][0], hi, position)
            else:
                out.append((lo, hi, position))
            i += 1
            continue
        reach, j = hi, i + 1  # the cluster: up to the first interval starting past all of it
        while j < count and flat[j][0] <= reach:
            reach = max(reach, flat[j][1])
            j += 1
        _sweep(flat[i:j], size, out)
        i = j
    return out


def _sweep(flat: list[tuple[int, int, int]], size: int, out: list[tuple[int, int, int]]) -> None:
    """Append to ``out`` the first match of the (lo, hi, position) intervals ``flat``,
    sorted by lo. From each point ``at`` the heap's top (the lowest position among the
    started intervals not yet ended) decides up to its own end or the next start,
    whichever comes first; intervals that ended are dropped when they reach the top."""
    covering: list[tuple[int, int]] = []  # a heap of (position, hi)
    i, count, at = 0, len(flat), flat[0][0]
    while at < size and (i < count or covering):
        if not covering and flat[i][0] > at:
            at = flat[i][0]  # a gap no rule covers
            if at >= size:
                break
        while i < count and flat[i][0] <= at:
            lo, hi, position = flat[i]
            heapq.heappush(covering, (position, hi))
            i += 1
        while covering and covering[0][1] < at:
            heapq.heappop(covering)
        if not covering:
            continue
        position, end = covering[0]
        if i < count and flat[i][0] <= end:
            end = flat[i][0] - 1
        end = min(end, size - 1)
        if out and out[-1][2] == position and out[-1][1] + 1 == at:
            out[-1] = (out[-1][0], end, position)
        else:
            out.append((at, end, position))
        at = end + 1


class Box(NamedTuple):
    """A product of interval sets, one per axis, and the rules covering all of it."""

    spans: tuple[Spans, ...]
    mask: int


Settled = Callable[[int, int], bool]  # (mask, next axis) -> nothing later axes cut matters


def partition(
    matches: Sequence[Match], sizes: Sequence[int], settled: Settled | None = None, *,
    candidates: int | None = None, axis: int = 0,
) -> Iterator[Box]:
    """Boxes that together cover the space exactly once, each with the mask of the
    rules (positions in ``matches``, in policy order) that cover all of it.

    Axis by axis, the rules that cover a piece of the axes cut so far are cut on the
    next axis. ``settled(mask, axis)`` may stop the cutting early: when it says the later
    axes cannot change what the caller reads from ``mask``, the box spans them whole and
    its mask is the rules covering the axes cut so far (``decided`` is the common case:
    its first rule matches every point of the later axes).

    ``candidates`` and ``axis`` start the cutting further in: only those rules, known to
    cover a piece of the axes before ``axis`` (the boxes then span only the later axes)."""

    # free[a]: the rules that match every point of the axes from a on; when all the
    # candidates are such, cutting further changes nothing, exactly
    free = [0] * (len(sizes) + 1)
    for bit, match in enumerate(matches):
        for a in range(len(sizes), -1, -1):
            if a < len(sizes) and match[a] is not None:
                break
            free[a] |= 1 << bit

    def recurse(axis: int, candidates: int, box: tuple[Spans, ...]) -> Iterator[Box]:
        if candidates & ~free[axis] == 0 or (settled is not None and settled(candidates, axis)):
            rest = tuple(((0, size - 1),) for size in sizes[axis:])
            yield Box(box + rest, candidates)
            return
        spans_of = [(bit, matches[bit][axis]) for bit in bits(candidates)]
        starts, masks = cut(spans_of, sizes[axis])
        for mask, spans in group(starts, masks, sizes[axis]).items():
            yield from recurse(axis + 1, mask, box + (tuple(spans),))

    yield from recurse(axis, (1 << len(matches)) - 1 if candidates is None else candidates, ())


def decided(matches: Sequence[Match], groups: Sequence[int] = ()) -> Settled:
    """The ``settled`` test for first-match answers: within each group (a mask of rules,
    for diff's two policies; by default all rules are one group), the first rule of the
    box is not restricted on any later axis, or there is none."""
    restricted_until = [max((axis + 1 for axis, spans in enumerate(m) if spans is not None), default=0)
                        for m in matches]
    groups = tuple(groups) or ((1 << len(matches)) - 1,)

    def settled(mask: int, axis: int) -> bool:
        for members in groups:
            mine = mask & members
            if mine and restricted_until[lowest(mine)] > axis:
                return False
        return True

    return settled


class InterfaceAxis:
    """Interface names as an axis: every name and prefix the rules mention cuts the
    (sorted) space of names, and a name's point is the rank of the piece it falls in.

    An exact name ``wg0`` covers the one name; a prefix ``eth*`` every name starting with
    ``eth`` (so ``eth*`` and ``eth0`` overlap, and first match decides ``eth0``)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        edges: set[str] = {""}
        for pattern in patterns:
            low, high = self._bounds(pattern)
            edges.add(low)
            if high is not None:
                edges.add(high)
        self.edges = sorted(edges)
        self.size = len(self.edges)

    @staticmethod
    def _bounds(pattern: str) -> tuple[str, str | None]:
        """[low, high): the names a pattern covers, in string order."""
        if pattern.endswith("*"):
            prefix = pattern[:-1]
            return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None
        return pattern, pattern + "\0"

    def spans(self, patterns: Sequence[str] | None) -> Spans | None:
        if patterns is None:
            return None
        out = []
        for pattern in patterns:
            low, high = self._bounds(pattern)
            first = self.edges.index(low)
            last = (self.edges.index(high) if high is not None else self.size) - 1
            out.append((first, last))
        return tuple(_merge(out))

    def describe(self, spans: Spans, patterns: Sequence[str]) -> str:
        """Interfaces ``spans`` as a reader says them, in terms of the rules' ``patterns``:
        ``wg0``, ``eth*, wg0``, ``eth* but eth0``, ``any interface but wg0``."""
        ranks = {p: {r for lo, hi in self.spans([p]) or () for r in range(lo, hi + 1)} for p in sorted(set(patterns))}

        def cover(target: set[int]) -> list[str] | None:
            parts, left = [], set(target)
            for pattern in sorted(ranks, key=lambda p: -len(ranks[p])):
                if ranks[pattern] <= target and ranks[pattern] & left:
                    parts.append(pattern)
                    left -= ranks[pattern]
            if not left:
                return parts
            for pattern in sorted(ranks, key=lambda p: len(ranks[p])):  # "eth* but eth0"
                extra = ranks[pattern] - target
                if left <= ranks[pattern] and extra:
                    exceptions = [q for q in ranks if ranks[q] and ranks[q] <= extra]
                    if set().union(*(ranks[q] for q in exceptions)) == extra:
                        return parts + [f"{pattern} but {', '.join(exceptions)}"]
            return None

        wanted = {r for lo, hi in spans for r in range(lo, hi + 1)}
        direct, other = cover(wanted), cover(set(range(self.size)) - wanted)
        if direct is not None and (other is None or len(direct) <= len(other)):
            return ", ".join(direct)
        if other is not None:
            return f"any interface but {', '.join(other)}"
        return "some interfaces"


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def network_spans(networks: Sequence[ir.IPv4Network | ir.IPv6Network] | None) -> Spans | None:
    if networks is None:
        return None
    return tuple(_merge([(int(n.network_address), int(n.broadcast_address)) for n in networks]))


def profile_spans(profiles: Sequence[str] | None) -> Spans | None:
    if profiles is None:
        return None
    return tuple(_merge([(PROFILES.index(p), PROFILES.index(p)) for p in profiles]))


class Space(NamedTuple):
    """The axes of one direction and family, with the rules' matches on them."""

    family: int
    rules: tuple[ir.Rule, ...]  # those that apply to the family, in order
    matches: tuple[Match, ...]
    sizes: tuple[int, ...]
    interfaces: InterfaceAxis
    positions: dict[int, int]  # a rule's position in the list ``space`` was given -> its bit here


def space(rules: Sequence[ir.Rule], family: int, interfaces: InterfaceAxis | None = None) -> Space:
    """The match space of ``rules`` (one direction) for one address family; the
    interface axis is cut at the rules' patterns unless one is given (diff shares one
    between two policies)."""
    chosen = [k for k, r in enumerate(rules) if r.applies_to(family)]
    axis = interfaces or InterfaceAxis([p for k in chosen for p in rules[k].interfaces or ()])
    matches = tuple(
        (r.what(), network_spans(r.remote(family)), network_spans(r.local(family)),
         axis.spans(r.interfaces), profile_spans(r.profiles))
        for r in (rules[k] for k in chosen)
    )
    sizes = (ir.WHAT_SIZE, ADDRESS_SIZE[family], ADDRESS_SIZE[family], axis.size, len(PROFILES))
    return Space(family, tuple(rules[k] for k in chosen), matches, sizes, axis,
                 {k: bit for bit, k in enumerate(chosen)})
