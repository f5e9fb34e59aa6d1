"""Registry selectors: sets of (protocol, port) pairs named by a property of the IANA
registry's records rather than by port (a rule's ``select:``, ``fwgen ports --select``).

- ``undocumented``: every name registered for the pair has no reference and no
  registration or modification date (mpshrsv 1261, t1distproc 1274: dormant services
  nobody can look up). Pairs with no named record are not in it.
- ``unauthorized-use``: a record for the pair, named or not (most are Unassigned rows),
  reports unauthorized use.

A record with a port and no protocol counts for tcp and for udp, a range record for
each of its ports (as everywhere in fwgen). Only tcp and udp pairs are selected. The
sets are computed from the registry given (the bundled edition unless ``--registry``),
once per registry.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from fwgen.registry import TCP_UDP, Record, Registry

SELECTORS = {
    "undocumented": "every name registered for the pair has no reference and no registration or modification date",
    "unauthorized-use": "the registry reports unauthorized use for the pair",
}

Pair = tuple[str, int]  # (protocol, port)


def _pairs_of(record: Record) -> list[Pair]:
    if record.port_lo is None or record.port_hi is None:
        return []
    protocols = TCP_UDP if record.protocol == "" else (record.protocol,)
    return [(p, port) for p in protocols if p in TCP_UDP for port in range(record.port_lo, record.port_hi + 1)]


def _documented(record: Record) -> bool:
    return bool(record.reference or record.registered or record.modified)


@functools.lru_cache(maxsize=4)
def _reasons(registry: Registry, selector: str) -> dict[Pair, tuple[str, ...]]:
    """The pairs ``selector`` selects, each with the registry names that put it there,
    sorted ('' for an unnamed record)."""
    found: dict[Pair, set[str]] = {}
    if selector == "undocumented":
        documented: set[Pair] = set()
        for record in registry.records:
            if not record.name:
                continue
            for pair in _pairs_of(record):
                found.setdefault(pair, set()).add(record.name)
                if _documented(record):
                    documented.add(pair)
        for pair in documented:
            del found[pair]
    elif selector == "unauthorized-use":
        for record in registry.records:
            if record.unauthorized:
                for pair in _pairs_of(record):
                    found.setdefault(pair, set()).add(record.name)
    else:
        raise ValueError(f"unknown selector {selector!r}")
    return {pair: tuple(sorted(names)) for pair, names in found.items()}


def select(registry: Registry, selectors: Iterable[str]) -> dict[str, list[int]]:
    """The union of the selectors' pairs: protocol ('tcp', 'udp') -> sorted ports."""
    ports: dict[str, set[int]] = {p: set() for p in TCP_UDP}
    for selector in selectors:
        for protocol, port in _reasons(registry, selector):
            ports[protocol].add(port)
    return {p: sorted(ports[p]) for p in TCP_UDP}


def reasons(
    registry: Registry, selectors: Iterable[str], protocol: str, port: int
) -> list[tuple[str, tuple[str, ...]]]:
    """Which of ``selectors`` select (protocol, port), each with the names that make it
    so ('' for an unnamed record); [] when none does."""
    out = []
    for selector in selectors:
        names = _reasons(registry, selector).get((protocol, port))
        if names is not None:
            out.append((selector, names))
    return out


def describe_reasons(found: list[tuple[str, tuple[str, ...]]]) -> str:
    """``select undocumented: mpshrsv``, ``select unauthorized-use: (unassigned)``, joined by '; '."""
    return "; ".join(
        f"select {selector}: {', '.join(name or '(unassigned)' for name in names)}" for selector, names in found
    )


def records(
    registry: Registry, selectors: Iterable[str], protocols: tuple[str, ...], lo: int, hi: int
) -> list[Record]:
    """The records behind the selected pairs of ``protocols`` within lo..hi, for
    ``fwgen ports --select``: each clipped to the pairs it contributes (its ports within
    lo..hi; its protocol narrowed to the one asked for), in registry order. Together
    their pairs are exactly the selection."""
    chosen = tuple(selectors)
    wanted: dict[Pair, set[str]] = {}
    for selector in chosen:
        for pair, names in _reasons(registry, selector).items():
            if pair[0] in protocols and lo <= pair[1] <= hi:
                wanted.setdefault(pair, set()).update(names)
    out: list[Record] = []
    for record in registry.records:
        if record.port_lo is None or record.port_hi is None or record.port_hi < lo or record.port_lo > hi:
            continue
        behind = ("unauthorized-use" in chosen and record.unauthorized) or ("undocumented" in chosen and record.name)
        if not behind:
            continue
        mine = [pair for pair in _pairs_of(record) if record.name in wanted.get(pair, ())]
        if not mine:
            continue
        by_protocol = {p: [port for q, port in mine if q == p] for p in TCP_UDP}
        if record.protocol == "" and by_protocol["tcp"] == by_protocol["udp"]:
            parts = [("", by_protocol["tcp"])]
        else:
            parts = [(p, ports) for p, ports in by_protocol.items() if ports]
        for protocol, ports in parts:
            out.extend(record._replace(port_lo=a, port_hi=b, protocol=protocol) for a, b in _runs(ports))
    return out


def _runs(ports: list[int]) -> list[tuple[int, int]]:
    """Sorted ports -> their runs of consecutive ports, (first, last)."""
    runs: list[tuple[int, int]] = []
    for port in ports:
        if runs and port == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], port)
        else:
            runs.append((port, port))
    return runs
