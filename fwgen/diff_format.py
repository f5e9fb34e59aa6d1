"""Presentation of a ``fwgen diff`` result: text, markdown (a PR comment) and JSON.

Ports are labelled with their IANA names (``1261 (mpshrsv)``, ``6000-6063 (x11)``; at
most three names, then ``…``); remote addresses are written as ``any``, ``any IPv4``,
the collapsed CIDR list, or ``any except …`` when the complement is shorter.
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
import json
from collections.abc import Iterator
from typing import Any

from fwgen import icmp
from fwgen.diff import OTHER, SPACE, Change, DiffResult, Intervals, Outcome
from fwgen.registry import Registry
from fwgen.targets.common import icmp_entries

MAX_NAMES = 3
ARROW = "→"


# ---------------------------------------------------------------------- ports


class PortNamer:
    """Registry names over port ranges, in port order (names at one port sorted, as
    ``Registry.names_at`` gives them)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._index: dict[str, tuple[list[int], list[str], list[tuple[int, int, str]]]] = {}

    def _table(self, protocol: str) -> tuple[list[int], list[str], list[tuple[int, int, str]]]:
        table = self._index.get(protocol)
        if table is None:
            singles: set[tuple[int, str]] = set()
            spans: set[tuple[int, int, str]] = set()
            for record in self.registry.records:
                if not record.name or record.port_lo is None or record.port_hi is None:
                    continue
                if record.protocol not in (protocol, ""):
                    continue
                if record.port_lo == record.port_hi:
                    singles.add((record.port_lo, record.name))
                else:
                    spans.add((record.port_lo, record.port_hi, record.name))
            ordered = sorted(singles)
            table = ([p for p, _ in ordered], [n for _, n in ordered], sorted(spans))
            self._index[protocol] = table
        return table

    def _names_in(self, protocol: str, lo: int, hi: int) -> Iterator[tuple[int, str]]:
        ports, names, spans = self._table(protocol)
        start, end = bisect.bisect_left(ports, lo), bisect.bisect_right(ports, hi)
        singles = ((ports[i], names[i]) for i in range(start, end))
        wide = sorted((max(a, lo), n) for a, b, n in spans if a <= hi and b >= lo)
        return heapq.merge(singles, wide)

    def names(self, protocols: tuple[str, ...], ranges: Intervals) -> tuple[list[str], bool]:
        """Up to MAX_NAMES distinct names over ``ranges``, and whether there are more.
        A single port gets all its names (``80 (http, www, www-http)``); otherwise each
        port contributes its first name only (``80,443 (http, https)``)."""
        single = len(ranges) == 1 and ranges[0][0] == ranges[0][1]
        found: list[str] = []
        last_port = -1
        for protocol in protocols:
            for lo, hi in ranges:
                for port, name in self._names_in(protocol, lo, hi):
                    if port == last_port and not single:
                        continue
                    last_port = port
                    if name not in found:
                        if len(found) == MAX_NAMES:
                            return found, True
                        found.append(name)
            last_port = -1
        return found, False

    def label(self, protocols: tuple[str, ...], ranges: Intervals) -> str:
        """``1261,1274 (mpshrsv, t1distproc)``, ``6000-6063 (x11)``, ``8050``."""
        text = ports_text(ranges)
        names, more = self.names(protocols, ranges)
        if more:
            names.append("…")
        return f"{text} ({', '.join(names)})" if names else text


def ports_text(ranges: Intervals) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


# ---------------------------------------------------------------------- addresses

_MAKE: dict[int, Any] = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}


def cidrs(family: int, intervals: Intervals) -> list[str]:
    make = _MAKE[family]
    return [
        str(net)
        for lo, hi in intervals
        for net in ipaddress.summarize_address_range(make(lo), make(hi))
    ]


def _complement(family: int, intervals: Intervals) -> Intervals:
    gaps: list[tuple[int, int]] = []
    at = 0
    for lo, hi in intervals:
        if lo > at:
            gaps.append((at, lo - 1))
        at = hi + 1
    if at < SPACE[family]:
        gaps.append((at, SPACE[family] - 1))
    return tuple(gaps)


def _full(family: int, intervals: Intervals) -> bool:
    return intervals == ((0, SPACE[family] - 1),)


def remote_networks(change: Change) -> list[str]:
    """The remote addresses as collapsed CIDRs, IPv4 first."""
    return cidrs(4, change.v4) + cidrs(6, change.v6)


def remote_text(v4: Intervals, v6: Intervals) -> str:
    """``any``, ``any IPv4``, ``192.0.2.0/24, 2001:db8::/32``, ``any except 10.0.0.0/8``,
    ``any IPv6 except 2001:db8::/32``: whichever lists the fewest items."""
    if _full(4, v4) and _full(6, v6):
        return "any"
    listed: list[str] = []
    for family, spans in ((4, v4), (6, v6)):
        if _full(family, spans):
            listed.append(f"any IPv{family}")
        else:
            listed.extend(cidrs(family, spans))
    options = [(len(listed), 0, ", ".join(listed))]
    for family, spans, other in ((4, v4, v6), (6, v6, v4)):
        if spans and not other:
            rest = cidrs(family, _complement(family, spans))
            options.append((len(rest) + 1, 1, f"any IPv{family} except {', '.join(rest)}"))
    rest = cidrs(4, _complement(4, v4)) + cidrs(6, _complement(6, v6))
    options.append((len(rest) + 1, 2, f"any except {', '.join(rest)}"))
    return min(options)[2]


# ---------------------------------------------------------------------- outcomes


def outcome_text(outcome: Outcome, other: Outcome) -> str:
    """``allow``, ``monitor``, ``deny``, ``allow +log``; ``deny (drop)`` only when the
    other side is a deny enforced differently."""
    text = outcome.action
    if outcome.action == "deny" and other.action == "deny" and other.enforced != outcome.enforced:
        text += f" ({outcome.enforced})"
    if outcome.logged and outcome.action != "monitor":
        text += " +log"
    return text


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {"verdict": outcome.action, "enforced": outcome.enforced, "logged": outcome.logged}


# ---------------------------------------------------------------------- formats


def protocols_text(change: Change, sep: str = ",") -> str:
    """``tcp,udp``, ``icmp``, ``esp``, ``every other protocol``, ``gre and every other protocol``
    (markdown separates with ``", "``, as 1.0 did)."""
    named = sep.join(p for p in change.protocols if p != OTHER)
    if OTHER not in change.protocols:
        return named
    return f"{named} and every other protocol" if named else "every other protocol"


def selectors_text(change: Change, namer: PortNamer) -> str:
    """What the change covers within its protocols: ports with their names for tcp and
    udp, ICMP types (``8 (echo-request), 3/4``), nothing for every packet of the rest."""
    if set(change.protocols) <= {"tcp", "udp"}:
        return namer.label(change.protocols, change.ports)
    if change.ports == ((0, 0xFFFF),):
        return ""
    family = 6 if change.protocols == ("icmpv6",) else 4
    direct = _icmp_text(family, list(change.ports))
    rest = _icmp_text(family, _outside(list(change.ports), 0xFFFF))
    return f"every type but {rest}" if len(rest) < len(direct) else direct


def _outside(spans: list[tuple[int, int]], top: int) -> list[tuple[int, int]]:
    """[0, top] without the sorted, disjoint ``spans``."""
    out, at = [], 0
    for lo, hi in spans:
        if lo > at:
            out.append((at, lo - 1))
        at = hi + 1
    return out + ([(at, top)] if at <= top else [])


def _icmp_text(family: int, spans: list[tuple[int, int]]) -> str:
    """ICMP (type << 8 | code) intervals in words: ``8 (echo-request), 3/4, 20-29``
    (whole types in runs, a named one with its name)."""
    entries = icmp_entries(spans)
    out: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if len(run) > 2:
            out.append(f"{run[0]}-{run[-1]}")
        else:
            for t in run:
                name = icmp.type_name(family, t)
                out.append(f"{t} ({name})" if name else str(t))
        run.clear()

    for entry in entries:
        if "/" in entry:
            flush()
            out.append(entry)
            continue
        t = int(entry)
        if run and (t != run[-1] + 1 or icmp.type_name(family, t) or icmp.type_name(family, run[-1])):
            flush()
        run.append(t)
    flush()
    return ", ".join(out)


def where_text(change: Change) -> str:
    """``from 192.0.2.0/24``, plus ``local 10.9.0.2``, ``on wg0``, ``in profiles domain``."""
    peer = "from" if change.direction == "in" else "to"
    text = f"{peer} {remote_text(change.v4, change.v6)}"
    if change.local is not None:
        family, spans = change.local
        text += f" local {', '.join(cidrs(family, spans))}"
    if change.interfaces is not None:
        text += f" on {change.interfaces}"
    if change.profiles is not None:
        text += f" in profile{'s' if len(change.profiles) > 1 else ''} {','.join(change.profiles)}"
    return text


def text_lines(result: DiffResult, namer: PortNamer) -> list[str]:
    lines = []
    for change in result.changes:
        what = " ".join(part for part in (protocols_text(change), selectors_text(change, namer)) if part)
        lines.append(
            f"{change.direction} {what} {where_text(change)}: "
            f"{outcome_text(change.before, change.after)} {ARROW} {outcome_text(change.after, change.before)}"
        )
    lines += result.settings
    if not lines:
        lines.append("no semantic change")
    if result.metadata:
        lines.append(f"metadata changed: {', '.join(result.metadata)}")
    return lines


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def code(text: str) -> str:
    """``text`` as inline code in a table cell or a heading."""
    return f"`{_cell(text)}`"


def markdown(result: DiffResult, namer: PortNamer, heading: str | None = None) -> str:
    """The PR comment: ``heading`` (by default ``### fwgen diff: `OLD` → `NEW```), the
    table, the number of changes and the metadata changed."""
    if heading is None:
        heading = f"### fwgen diff: {code(result.old)} {ARROW} {code(result.new)}"
    out = [heading, ""]
    if result.changes:
        out.append("| direction | protocol | ports (names) | remote | before | after |")
        out.append("|---|---|---|---|---|---|")
        for c in result.changes:
            cells = [
                c.direction, protocols_text(c, ", "), selectors_text(c, namer),
                where_text(c).split(" ", 1)[1], outcome_text(c.before, c.after), outcome_text(c.after, c.before),
            ]
            out.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
        out.append("")
        count = len(result.changes)
        out.append(f"{count} semantic change{'s' if count != 1 else ''}.")
    elif not result.settings:
        out.append("No semantic change.")
    if result.settings:
        if result.changes:
            out.append("")
        out += [f"- {_cell(text)}" for text in result.settings]
    if result.metadata:
        out.append("")
        out.append(f"Metadata changed: {', '.join(result.metadata)}.")
    return "\n".join(out) + "\n"


def _ported(change: Change) -> bool:
    return set(change.protocols) <= {"tcp", "udp"}


def _icmp(change: Change) -> bool:
    return change.protocols in (("icmp",), ("icmpv6",))


def as_json(result: DiffResult, namer: PortNamer) -> dict[str, Any]:
    return {
        "old": result.old,
        "new": result.new,
        "changed": result.changed,
        "count": len(result.changes),
        "changes": [
            {
                "direction": c.direction,
                "protocols": list(c.protocols),
                "ports": [[lo, hi] for lo, hi in c.ports] if _ported(c) else [],
                "icmp": icmp_entries(list(c.ports)) if _icmp(c) and c.ports != ((0, 0xFFFF),) else [],
                "ports_text": selectors_text(c, namer),
                "remote": remote_networks(c),
                "remote_text": remote_text(c.v4, c.v6),
                "local": cidrs(*c.local) if c.local is not None else None,
                "interfaces": c.interfaces,
                "profiles": list(c.profiles) if c.profiles is not None else None,
                "before": _outcome_json(c.before),
                "after": _outcome_json(c.after),
            }
            for c in result.changes
        ],
        "metadata_changed": list(result.metadata),
        "settings_changed": list(result.settings),
    }


def render(result: DiffResult, registry: Registry, fmt: str = "text") -> str:
    """The whole output for ``--format`` text, markdown or json, newline-terminated."""
    namer = PortNamer(registry)
    if fmt == "json":
        return json.dumps(as_json(result, namer), indent=2, ensure_ascii=False) + "\n"
    if fmt == "markdown":
        return markdown(result, namer)
    return "".join(line + "\n" for line in text_lines(result, namer))
