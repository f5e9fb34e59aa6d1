"""The normalized intermediate representation every target (and explain/diff) reads.

The IR knows nothing about any platform. A policy compiles to one ``Ruleset``: its
defaults, its monitor settings and its ordered rules, each rule already resolved to
concrete (protocol, port ranges) and per-family remote networks, and each keeping the
source location it came from.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from dataclasses import dataclass
from typing import NamedTuple

from fwgen.errors import Location
from fwgen.intervals import merge_spans

IPv4Network = ipaddress.IPv4Network
IPv6Network = ipaddress.IPv6Network

PORT_MIN = 0
PORT_MAX = 65535


class _FastEnum(enum.Enum):
    """Members are singletons compared by identity, so they hash by identity too: Enum's
    own ``__hash__`` is a Python-level call, paid on every dict or set lookup keyed by a
    member (tens of thousands per build). No output depends on hash order."""

    __hash__ = object.__hash__


class Action(_FastEnum):
    ALLOW = "allow"
    DENY = "deny"
    MONITOR = "monitor"


class Direction(_FastEnum):
    IN = "in"
    OUT = "out"


class Protocol(_FastEnum):
    TCP = "tcp"
    UDP = "udp"


PROTOCOLS = (Protocol.TCP, Protocol.UDP)


class _Span(NamedTuple):
    lo: int
    hi: int


class PortRange(_Span):
    """Ports ``lo``..``hi``, inclusive: an immutable (lo, hi) pair, ordered as one."""

    __slots__ = ()

    def __new__(cls, lo: int, hi: int) -> PortRange:
        if not PORT_MIN <= lo <= hi <= PORT_MAX:
            raise ValueError(f"bad port range {lo}-{hi}")
        # tuple.__new__ as the NamedTuple's own __new__ does, one Python call fewer
        # (a port range is made per service pair, 12,000 times in bench registry)
        return tuple.__new__(cls, (lo, hi))

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.lo <= port <= self.hi


ALL_PORTS = (PortRange(PORT_MIN, PORT_MAX),)

# What a packet is, as one integer: its IP protocol number (the IPv4 Protocol or IPv6
# Next Header field, after extension headers) above 16 bits of selector, which is the
# destination port for tcp and udp and (type << 8 | code) for ICMP and ICMPv6. Every
# match on protocol, port or ICMP type is a set of intervals of this axis.
SELECTOR_BITS = 16
WHAT_SIZE = 256 << SELECTOR_BITS
TCP_NUMBER, UDP_NUMBER, ICMP_NUMBER, ICMPV6_NUMBER = 6, 17, 1, 58
Span = tuple[int, int]  # inclusive


def what_span(protocol: int, lo: int = 0, hi: int = (1 << SELECTOR_BITS) - 1) -> Span:
    return protocol << SELECTOR_BITS | lo, protocol << SELECTOR_BITS | hi


def what_protocol(value: int) -> int:
    return value >> SELECTOR_BITS


def by_protocol(what: tuple[tuple[int, int], ...]) -> dict[int, list[tuple[int, int]]]:
    """Intervals of the what axis, per protocol number: its selector intervals."""
    out: dict[int, list[tuple[int, int]]] = {}
    for lo, hi in what:
        for number in range(lo >> SELECTOR_BITS, (hi >> SELECTOR_BITS) + 1):
            base = number << SELECTOR_BITS
            out.setdefault(number, []).append((max(lo, base) - base, min(hi, base | 0xFFFF) - base))
    return out


def merge_ranges(ranges: list[PortRange] | tuple[PortRange, ...]) -> tuple[PortRange, ...]:
    """Sort and merge overlapping or adjacent ranges: the canonical form of a port set."""
    if len(ranges) == 1:
        return tuple(ranges)
    merged: list[PortRange] = []
    for r in sorted(ranges):
        if merged and r.lo <= merged[-1].hi + 1:
            if r.hi > merged[-1].hi:
                merged[-1] = PortRange(merged[-1].lo, r.hi)
        else:
            merged.append(r)
    return tuple(merged)


class Rule(NamedTuple):
    """One policy rule, resolved.

    ``ports`` lists only the protocols the rule covers, each with its merged ranges.
    ``remote_v4``/``remote_v6``: ``None`` means any address of that family; an empty
    tuple means the rule does not apply to that family at all.
    """

    index: int  # type: ignore[assignment]  # 1-based position in the policy (shadows tuple.index)
    name: str
    location: Location
    action: Action
    log: bool
    direction: Direction
    ports: tuple[tuple[Protocol, tuple[PortRange, ...]], ...]
    remote_v4: tuple[IPv4Network, ...] | None
    remote_v6: tuple[IPv6Network, ...] | None
    comment: str = ""
    # The matches beyond 1.0's (their defaults mean "not restricted"):
    other: tuple[Span, ...] = ()  # protocols but tcp and udp, as sorted, merged intervals of the what axis
    local_v4: tuple[IPv4Network, ...] | None = None  # the host's own address; same conventions as remote
    local_v6: tuple[IPv6Network, ...] | None = None
    interfaces: tuple[str, ...] | None = None  # arrival (in) or leaving (out) interface; "eth*" a prefix
    profiles: tuple[str, ...] | None = None  # Windows profiles, sorted; None = all three
    families: tuple[int, ...] = (4, 6)  # ICMP is IPv4's only, ICMPv6 IPv6's
    # the file the rule is written in, as outputs name it: "" for the policy file itself,
    # else an included file's path relative to the policy's directory
    file: str = ""

    @property
    def logged(self) -> bool:
        """Monitor rules always log; allow and deny rules log when ``log: true``."""
        return self.action is Action.MONITOR or self.log

    @property
    def accepts(self) -> bool:
        return self.action is not Action.DENY

    def applies_to(self, family: int) -> bool:
        if family not in self.families:
            return False
        remote, local = (self.remote_v4, self.local_v4) if family == 4 else (self.remote_v6, self.local_v6)
        return (remote is None or len(remote) > 0) and (local is None or len(local) > 0)

    def remote(self, family: int) -> tuple[IPv4Network, ...] | tuple[IPv6Network, ...] | None:
        return self.remote_v4 if family == 4 else self.remote_v6

    def local(self, family: int) -> tuple[IPv4Network, ...] | tuple[IPv6Network, ...] | None:
        return self.local_v4 if family == 4 else self.local_v6

    @property
    def ports_only(self) -> bool:
        """It matches on tcp and udp ports alone: no other protocol, no address, interface
        or profile, both families. Such rules can share a verdict map."""
        return (
            not self.other and self.remote_v4 is None and self.remote_v6 is None and self.local_v4 is None
            and self.local_v6 is None and self.interfaces is None and self.profiles is None
            and self.families == (4, 6)
        )

    def what(self) -> tuple[Span, ...]:
        """Every (protocol, selector) it matches, as sorted intervals of the what axis."""
        spans = [
            what_span(TCP_NUMBER if protocol is Protocol.TCP else UDP_NUMBER, r.lo, r.hi)
            for protocol, ranges in self.ports for r in ranges
        ]
        return tuple(merge_spans(spans + list(self.other)))

    def port_ranges(self, protocol: Protocol) -> tuple[PortRange, ...]:
        for proto, ranges in self.ports:
            if proto is protocol:
                return ranges
        return ()


class Defaults(NamedTuple):
    inbound: Action  # ALLOW or DENY
    outbound: Action  # ALLOW or DENY
    reject: bool  # deny: reject (True) or drop (False)
    forward: Action = Action.DENY  # routed traffic, where a target governs it (iptables' FORWARD)

    def for_direction(self, direction: Direction) -> Action:
        return self.inbound if direction is Direction.IN else self.outbound


class MonitorSettings(NamedTuple):
    log_prefix: str
    rate: int
    per: str  # second | minute | hour


class Options(NamedTuple):
    """Host-wide settings that are not rules."""

    antispoof: bool = True  # drop packets failing the reverse-path check (rpfilter / fib)
    windows_exclusive: bool = False  # Windows: the default deny as explicit block rules
    iptables_chains: bool = False  # iptables: only fwgen's own chains, sharing the tables (mode: chains)
    # forwarded new connections DNATed to a local container are judged by the inbound rules
    published_ports: bool = False


class SourceInfo(NamedTuple):
    """Where the IR came from; goes into every output header (no absolute paths)."""

    filename: str  # basename only
    sha256: str
    registry_edition: str
    registry_sha256: str
    # every included file (path relative to the policy's directory, sha256), as reached
    includes: tuple[tuple[str, str], ...] = ()

    def where(self, rule: Rule) -> str:
        """The file a rule is written in, as outputs name it."""
        return rule.file or self.filename


@dataclass(frozen=True)
class Ruleset:
    name: str
    description: str
    defaults: Defaults
    monitor: MonitorSettings
    rules: tuple[Rule, ...]
    source: SourceInfo
    options: Options = Options()

    @functools.cached_property
    def derived(self) -> dict[object, object]:
        """A memo for values the targets derive from this (immutable) ruleset and share,
        such as ``lowering.plan``; never part of equality."""
        return {}

    def rules_for(self, direction: Direction, family: int | None = None) -> tuple[Rule, ...]:
        """The rules of one direction (and, given a family, those that apply to it), in
        order; made once per ruleset (every target asks for the same ones)."""
        key = ("rules_for", direction, family)
        found = self.derived.get(key)
        if found is None:
            found = self.derived[key] = tuple(
                r for r in self.rules if r.direction is direction and (family is None or r.applies_to(family))
            )
        return found  # type: ignore[return-value]
