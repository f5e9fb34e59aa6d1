"""``fwgen explain``: the reference semantics every generated rule set is judged against.

This is a plain ordered first-match interpreter over the loaded policy
(``fwgen.policy.load_policy``) with each rule's ports resolved by
``fwgen.resolve.resolve_ports``. It deliberately shares nothing else with the
compiler: no IR ``Ruleset`` (``compile_policy``), no ``merge_ranges``, no target or
lowering code. Address matching is done here, with ``ipaddress``, on
``PolicyRule.remote``.

Semantics (docs/policy-format.md): for direction d, protocol p, port n and remote
address a, the first rule with direction d whose resolved ports for p contain n and
whose remote list contains a (or has none) decides, and its action is the verdict;
when no rule matches, the default for d does. A rule whose addresses are all IPv4
never matches an IPv6 remote, and vice versa. Every deny, the default deny included,
is enforced by ``defaults.deny`` (drop or reject); a verdict is logged when its rule
is a monitor rule or has ``log: true`` (a default is never logged).

``Explainer.regions`` answers for every remote address at once by partitioning each
address family at the boundaries of the networks of the rules that cover the port,
and evaluating the first-match interpreter once per piece.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any

from fwgen.errors import PolicyError
from fwgen.policy import Policy, PolicyRule, load_policy
from fwgen.registry import Registry
from fwgen.resolve import resolve_ports

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DIRECTIONS = ("in", "out")
PROTOCOLS = ("tcp", "udp")
PORT_MAX = 65535
_BITS = {4: 32, 6: 128}
_ANY = {4: ipaddress.IPv4Network("0.0.0.0/0"), 6: ipaddress.IPv6Network("::/0")}
_DEFAULT_KEY = 1 << 62  # sorts a default verdict after every rule


@dataclass(frozen=True)
class Verdict:
    """What happens to a new connection: the answer ``fwgen explain`` gives."""

    action: str  # "allow" | "deny" | "monitor"
    rule: str | None  # deciding rule name, None for the default
    line: int | None  # the rule's line in the policy file, None for the default
    logged: bool
    enforced: str  # "accept" | "drop" | "reject"


# The any-address answer: each distinct verdict with the networks where it applies.
Regions = list[tuple[list[Network], Verdict]]


@dataclass(frozen=True, eq=False)
class _Rule:
    """One policy rule as the interpreter reads it."""

    index: int
    verdict: Verdict
    # Per family (4, 6): sorted, non-overlapping [lo, hi] integer intervals of the
    # remote networks; None = any address of that family; () = never this family.
    remote: dict[int, tuple[tuple[int, ...], tuple[int, ...]] | None]
    networks: dict[int, tuple[Network, ...] | None]

    def matches(self, family: int, address: int) -> bool:
        intervals = self.remote[family]
        if intervals is None:
            return True
        los, his = intervals
        i = bisect.bisect_right(los, address) - 1
        return i >= 0 and address <= his[i]


def _intervals(networks: list[Network]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sorted disjoint [lo, hi] integer intervals covering ``networks``."""
    spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in networks)
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple(m[0] for m in merged), tuple(m[1] for m in merged)


class _Table:
    """The rules of one (direction, protocol), with the port axis cut into segments
    on which the same rules apply (precomputed, so a query is two bisections)."""

    def __init__(self, rules: list[tuple[_Rule, list[tuple[int, int]]]]) -> None:
        # A sweep over the port axis: a rule enters the active set at each range's start
        # and leaves after its end; each segment's candidates are the active rules in
        # policy order. Linear in the segments times the rules active in them.
        entering: dict[int, list[int]] = {}
        leaving: dict[int, list[int]] = {}
        for position, (_, ranges) in enumerate(rules):
            for lo, hi in ranges:
                entering.setdefault(lo, []).append(position)
                leaving.setdefault(hi + 1, []).append(position)
        self.starts = sorted({0, *entering, *(p for p in leaving if p <= PORT_MAX)})
        self.segments: list[tuple[_Rule, ...]] = []
        active: Counter[int] = Counter()  # a rule may enter twice (several ranges)
        for start in self.starts:
            for position in leaving.get(start, ()):
                active[position] -= 1
                if not active[position]:
                    del active[position]
            for position in entering.get(start, ()):
                active[position] += 1
            self.segments.append(tuple(rules[position][0] for position in sorted(active)))

    def candidates(self, port: int) -> tuple[_Rule, ...]:
        return self.segments[bisect.bisect_right(self.starts, port) - 1]


def _address(remote: str | Address) -> Address:
    if isinstance(remote, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return remote
    return ipaddress.ip_address(remote)


def _norm(value: Any, options: tuple[str, ...], what: str) -> str:
    text = str(getattr(value, "value", value)).lower()
    if text not in options:
        raise ValueError(f"{what} must be one of {', '.join(options)}, got {value!r}")
    return text


class Explainer:
    """First-match reference interpreter for one policy (precomputed per policy)."""

    def __init__(self, policy: Policy, registry: Registry) -> None:
        self.policy = policy
        self.registry = registry
        self.path = policy.path
        self._index_by_name = {rule.name: rule.index for rule in policy.rules}
        self.defaults = {
            "in": self._default_verdict(policy.inbound),
            "out": self._default_verdict(policy.outbound),
        }
        per_table: dict[tuple[str, str], list[tuple[_Rule, list[tuple[int, int]]]]] = {
            (d, p): [] for d in DIRECTIONS for p in PROTOCOLS
        }
        for rule in policy.rules:
            resolved = resolve_ports(rule, registry)  # PolicyError on a bad entry
            compiled = self._compile_rule(rule)
            for protocol, ranges in resolved.items():
                per_table[(rule.direction, protocol.value)].append(
                    (compiled, [(r.lo, r.hi) for r in ranges])
                )
        self._tables = {key: _Table(rules) for key, rules in per_table.items()}
        self._regions_cache: dict[tuple[str, str, tuple[_Rule, ...]], Regions] = {}

    @classmethod
    def from_file(cls, path: str, registry: Registry) -> Explainer:
        return cls(load_policy(path), registry)

    # ------------------------------------------------------------------ building

    def _enforced(self, action: str) -> str:
        return self.policy.deny if action == "deny" else "accept"

    def _default_verdict(self, action: str) -> Verdict:
        return Verdict(
            action=action, rule=None, line=None, logged=False, enforced=self._enforced(action)
        )

    def _compile_rule(self, rule: PolicyRule) -> _Rule:
        verdict = Verdict(
            action=rule.action,
            rule=rule.name,
            line=rule.location.line,
            logged=rule.action == "monitor" or rule.log,
            enforced=self._enforced(rule.action),
        )
        remote: dict[int, tuple[tuple[int, ...], tuple[int, ...]] | None] = {}
        networks: dict[int, tuple[Network, ...] | None] = {}
        for family in (4, 6):
            if rule.remote is None:
                remote[family] = None
                networks[family] = None
            else:
                nets = [n for n in rule.remote if n.version == family]
                remote[family] = _intervals(nets)
                networks[family] = tuple(nets)
        return _Rule(index=rule.index, verdict=verdict, remote=remote, networks=networks)

    # ------------------------------------------------------------------ queries

    def _candidates(self, direction: str, protocol: str, port: int) -> tuple[_Rule, ...]:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= PORT_MAX:
            raise ValueError(f"port must be an integer 0-{PORT_MAX}, got {port!r}")
        return self._tables[(direction, protocol)].candidates(port)

    def _first_match(
        self, direction: str, candidates: tuple[_Rule, ...], family: int, address: int
    ) -> Verdict:
        for rule in candidates:
            if rule.matches(family, address):
                return rule.verdict
        return self.defaults[direction]

    def verdict(self, direction: str, protocol: str, port: int, remote: str | Address) -> Verdict:
        """The verdict for a new connection to/from ``remote`` on ``protocol``/``port``."""
        direction = _norm(direction, DIRECTIONS, "direction")
        protocol = _norm(protocol, PROTOCOLS, "protocol")
        address = _address(remote)
        candidates = self._candidates(direction, protocol, port)
        return self._first_match(direction, candidates, address.version, int(address))

    def regions(self, direction: str, protocol: str, port: int) -> Regions:
        """The answer for every remote address: each distinct verdict with the networks
        (collapsed CIDRs, IPv4 first) where it applies. Ordered by the deciding rule's
        position in the policy, the default last. Together the networks cover exactly
        0.0.0.0/0 and ::/0, without overlap."""
        direction = _norm(direction, DIRECTIONS, "direction")
        protocol = _norm(protocol, PROTOCOLS, "protocol")
        candidates = self._candidates(direction, protocol, port)
        key = (direction, protocol, candidates)
        cached = self._regions_cache.get(key)
        if cached is None:
            cached = self._partition(direction, candidates)
            self._regions_cache[key] = cached
        return [(list(nets), verdict) for nets, verdict in cached]

    def _partition(self, direction: str, candidates: tuple[_Rule, ...]) -> Regions:
        order: dict[Verdict, int] = {}
        pieces: dict[Verdict, list[Network]] = {}
        for family in (4, 6):
            size = 1 << _BITS[family]
            cuts = {0, size}
            for rule in candidates:
                nets = rule.networks[family]
                for net in nets or ():
                    cuts.add(int(net.network_address))
                    cuts.add(int(net.broadcast_address) + 1)
            bounds = sorted(cuts)
            make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
            run_start, run_verdict = 0, None
            for lo in bounds[:-1]:
                verdict = self._first_match(direction, candidates, family, lo)
                if verdict != run_verdict:
                    if run_verdict is not None:
                        pieces.setdefault(run_verdict, []).extend(
                            ipaddress.summarize_address_range(make(run_start), make(lo - 1))
                        )
                    run_start, run_verdict = lo, verdict
            assert run_verdict is not None
            pieces.setdefault(run_verdict, []).extend(
                ipaddress.summarize_address_range(make(run_start), make(size - 1))
            )
        for verdict in pieces:
            order[verdict] = self._rule_position(verdict)
        result: list[tuple[list[Network], Verdict]] = []
        for verdict in sorted(pieces, key=lambda v: order[v]):
            found = pieces[verdict]
            v4 = [n for n in found if isinstance(n, ipaddress.IPv4Network)]
            v6 = [n for n in found if isinstance(n, ipaddress.IPv6Network)]
            collapsed: list[Network] = [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]
            result.append((collapsed, verdict))
        return result

    def _rule_position(self, verdict: Verdict) -> int:
        if verdict.rule is None:
            return _DEFAULT_KEY
        return self._index_by_name[verdict.rule]

    # ------------------------------------------------------------------ presentation

    def source(self, verdict: Verdict, direction: str) -> str:
        """``rule admin-ssh, edge.yaml:14`` or ``default inbound deny``."""
        if verdict.rule is None:
            which = "inbound" if direction == "in" else "outbound"
            return f"default {which} {verdict.action}"
        return f"rule {verdict.rule}, {self.path}:{verdict.line}"

    def port_label(self, protocol: str, port: int) -> str:
        """``1261 (mpshrsv)``; the bare number when the registry names nothing there."""
        names = self.registry.names_at(protocol, port)
        return f"{port} ({', '.join(names)})" if names else str(port)


# ---------------------------------------------------------------------- helpers


def service_ports(registry: Registry, name: str, protocol: str) -> list[int]:
    """Every port the registry gives ``name`` on ``protocol`` (ranges expanded), sorted.
    ``PolicyError`` (unlocated) for an unknown name or one without a port there."""
    pairs = registry.pairs(name)
    if pairs is None:
        suggestions = registry.suggest(name, limit=1)
        hint = f" (did you mean '{suggestions[0]}'?)" if suggestions else ""
        raise PolicyError(None, f"unknown service '{name}'{hint}")
    if not pairs:
        raise PolicyError(
            None,
            f"service '{name}' has no tcp or udp port in the IANA registry; "
            "ask for a port number instead",
        )
    ports = sorted(
        {port for proto, lo, hi in pairs if proto == protocol for port in range(lo, hi + 1)}
    )
    if not ports:
        registered = ", ".join(
            f"{lo}/{proto}" if lo == hi else f"{lo}-{hi}/{proto}" for proto, lo, hi in pairs
        )
        raise PolicyError(
            None,
            f"service '{name}' is not registered for {protocol} (it is {registered}); "
            f"to ask about the number anyway, give --port {pairs[0][1]}",
        )
    return ports


def describe(verdict: Verdict) -> str:
    """``allow``, ``allow, logged``, ``monitor, logged``, ``deny by drop``,
    ``deny by reject, logged``."""
    text = verdict.action
    if verdict.action == "deny":
        text += f" by {verdict.enforced}"
    if verdict.logged:
        text += ", logged"
    return text


def _otherwise_index(regions: list[tuple[list[Network], Verdict]]) -> int:
    """The outcome told as "otherwise": the one needing the most networks to list
    (ties: the later one, so the default when it is among them)."""
    best = 0
    for i, (nets, _) in enumerate(regions):
        if len(nets) >= len(regions[best][0]):
            best = i
    return best


def format_answer(
    explainer: Explainer, direction: str, protocol: str, port: int, remote: Address | None
) -> str:
    """One line: ``in tcp 22 (ssh) from 192.0.2.7: allow (rule admin-ssh, edge.yaml:14)``,
    or without a remote, the any-address answer."""
    label = explainer.port_label(protocol, port)
    peer = "from" if direction == "in" else "to"
    if remote is not None:
        verdict = explainer.verdict(direction, protocol, port, remote)
        return (
            f"{direction} {protocol} {label} {peer} {remote}: "
            f"{describe(verdict)} ({explainer.source(verdict, direction)})"
        )
    regions = explainer.regions(direction, protocol, port)
    if len(regions) == 1:
        verdict = regions[0][1]
        return (
            f"{direction} {protocol} {label}: "
            f"{describe(verdict)} ({explainer.source(verdict, direction)})"
        )
    other = _otherwise_index(regions)
    parts = []
    for i, (nets, verdict) in enumerate(regions):
        if i == other:
            continue
        scope = f"{peer} {', '.join(str(n) for n in nets)}"
        parts.append(f"{describe(verdict)} {scope} ({explainer.source(verdict, direction)})")
    verdict = regions[other][1]
    parts.append(f"{describe(verdict)} otherwise ({explainer.source(verdict, direction)})")
    return f"{direction} {protocol} {label}: " + "; ".join(parts)


def _verdict_fields(
    explainer: Explainer, verdict: Verdict | None, direction: str
) -> dict[str, Any]:
    if verdict is None:
        return {
            "verdict": None, "rule": None, "file": None, "line": None,
            "default": None, "logged": None, "enforced": None,
        }
    which = "inbound" if direction == "in" else "outbound"
    return {
        "verdict": verdict.action,
        "rule": verdict.rule,
        "file": explainer.path if verdict.rule is not None else None,
        "line": verdict.line,
        "default": f"{which} {verdict.action}" if verdict.rule is None else None,
        "logged": verdict.logged,
        "enforced": verdict.enforced,
    }


def answer_json(
    explainer: Explainer, direction: str, protocol: str, port: int, remote: Address | None
) -> dict[str, Any]:
    """One answer of ``--json``. Without a remote, the verdict fields describe the
    answer when it is the same for every address, and are null when it depends on the
    address; ``regions`` then lists every outcome."""
    out: dict[str, Any] = {
        "port": port,
        "port_names": explainer.registry.names_at(protocol, port),
    }
    if remote is not None:
        verdict = explainer.verdict(direction, protocol, port, remote)
        out.update(_verdict_fields(explainer, verdict, direction))
        return out
    regions = explainer.regions(direction, protocol, port)
    uniform = regions[0][1] if len(regions) == 1 else None
    out.update(_verdict_fields(explainer, uniform, direction))
    out["regions"] = [
        {"networks": [str(n) for n in nets], **_verdict_fields(explainer, verdict, direction)}
        for nets, verdict in regions
    ]
    return out
