"""nftables target: one ``table inet NAME`` serving IPv4 and IPv6.

Shape of the output:
- the file declares, deletes and redefines its own table, so ``nft -f`` replaces
  exactly that table, atomically, on a fresh host and on every re-run; other tables
  (Docker's, iptables-nft's) are never touched;
- ports and addresses live in named interval sets, so the number of rules grows with
  the number of policy rules, never with the number of ports;
- every policy rule owns a chain ``rule_NAME`` holding its rate-limited log line (when
  logged) and its verdict with a named counter ``rule_NAME``, readable with
  ``nft list counter inet NAME rule_NAME``; base-chain rules only match and jump.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from fwgen import render as rendering
from fwgen import sanitize
from fwgen.ir import ALL_PORTS, Action, Direction, PortRange, Protocol, Rule, Ruleset
from fwgen.targets import TargetOutput
from fwgen.targets.common import ICMPV6_ESSENTIAL, log_burst, log_tag, rule_summary

NAME = "nftables"
ELEMENTS_PER_LINE = 12
REJECT_CHAIN = "deny_reject"

_ICMPV6_NAMES = {
    1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded",
    4: "parameter-problem", 130: "mld-listener-query", 131: "mld-listener-report",
    132: "mld-listener-done", 133: "nd-router-solicit", 134: "nd-router-advert",
    135: "nd-neighbor-solicit", 136: "nd-neighbor-advert", 141: "ind-neighbor-solicit",
    142: "ind-neighbor-advert", 143: "mld2-listener-report",
}


@dataclass(frozen=True)
class NftSet:
    name: str
    type: str
    lines: tuple[str, ...]  # element lines, comma-joined


@dataclass(frozen=True)
class NftRule:
    text: str
    comment: str = ""


@dataclass(frozen=True)
class NftChain:
    name: str
    base: str  # "" for regular chains, else "type filter hook input priority filter; policy drop;"
    rules: tuple[NftRule, ...]


def object_name(rule: Rule) -> str:
    """nft identifiers must start with a letter and must not be keywords: the prefix
    guarantees both, and rule names are unique, so object names are too."""
    return f"rule_{rule.name}"


def _elements(items: list[str]) -> tuple[str, ...]:
    return tuple(
        ", ".join(items[i : i + ELEMENTS_PER_LINE]) for i in range(0, len(items), ELEMENTS_PER_LINE)
    )


def _networks(networks: tuple[ipaddress.IPv4Network, ...] | tuple[ipaddress.IPv6Network, ...]) -> list[str]:
    return [str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in networks]


def _verdict(ruleset: Ruleset, action: Action) -> str:
    if action is Action.DENY:
        return f"goto {REJECT_CHAIN}" if ruleset.defaults.reject else "drop"
    return "accept"


def _lower_rule(ruleset: Ruleset, rule: Rule) -> tuple[list[NftSet], NftChain, list[NftRule]]:
    """The sets, the rule's own chain, and the base-chain rules that jump to it."""
    obj = object_name(rule)
    sets: list[NftSet] = []
    comment = sanitize.nft_comment(
        rule_summary(ruleset, rule) + (f": {rule.comment}" if rule.comment else "")
    )

    # Protocol groups: one set shared by tcp and udp when they cover the same ports.
    tcp, udp = rule.port_ranges(Protocol.TCP), rule.port_ranges(Protocol.UDP)
    groups: list[tuple[str, tuple[PortRange, ...], str]] = []
    if tcp and tcp == udp:
        groups.append(("meta l4proto { tcp, udp }", tcp, "ports"))
    else:
        groups.extend(
            (f"meta l4proto {proto.value}", ranges, proto.value)
            for proto, ranges in rule.ports
        )
    port_matches: list[str] = []
    for l4, ranges, suffix in groups:
        if ranges == ALL_PORTS:
            port_matches.append(l4)
            continue
        set_name = f"{obj}_{suffix}"
        sets.append(NftSet(set_name, "inet_service", _elements([str(r) for r in ranges])))
        port_matches.append(f"{l4} th dport @{set_name}")

    address_matches: list[str] = []
    if rule.remote_v4 is None and rule.remote_v6 is None:
        address_matches.append("")
    else:
        field = "saddr" if rule.direction is Direction.IN else "daddr"
        for family, networks, nft_type, l3 in (
            (4, rule.remote_v4, "ipv4_addr", "ip"),
            (6, rule.remote_v6, "ipv6_addr", "ip6"),
        ):
            if not networks:
                continue
            set_name = f"{obj}_v{family}"
            sets.append(NftSet(set_name, nft_type, _elements(_networks(networks))))
            address_matches.append(f"{l3} {field} @{set_name}")

    jumps = [
        NftRule(" ".join(part for part in (addr, ports, f"jump {obj}") if part), comment)
        for addr in address_matches
        for ports in port_matches
    ]
    body: list[NftRule] = []
    if rule.logged:
        monitor = ruleset.monitor
        body.append(NftRule(
            f"limit rate {monitor.rate}/{monitor.per} burst {log_burst(ruleset)} packets "
            f'log prefix "{log_tag(ruleset, rule)}"'
        ))
    body.append(NftRule(f"counter name {obj} {_verdict(ruleset, rule.action)}", comment))
    return sets, NftChain(obj, "", tuple(body)), jumps


def _prologue(direction: Direction) -> list[NftRule]:
    iface = "iif" if direction is Direction.IN else "oif"
    rules = [
        NftRule("ct state invalid drop", "always: invalid packets"),
        NftRule("ct state established,related accept", "always: established and related traffic"),
        NftRule(f'{iface} "lo" accept', "always: loopback"),
    ]
    # RFC 4890's list, grouped into one rule per (code, hop limit) shape.
    groups: dict[tuple[int | None, int | None], list[int]] = {}
    for icmp_type, code, hoplimit, _ in ICMPV6_ESSENTIAL:
        groups.setdefault((code, hoplimit), []).append(icmp_type)
    by_code: list[str] = []
    for (code, hoplimit), types in groups.items():
        names = ", ".join(_ICMPV6_NAMES.get(t, str(t)) for t in types)
        if code is not None:
            by_code.append(f"{names} . {code}")
            continue
        text = f"icmpv6 type {{ {names} }}"
        if hoplimit is not None:
            text += f" ip6 hoplimit {hoplimit}"
        rules.append(NftRule(f"{text} accept", "always: ICMPv6 IPv6 needs (RFC 4890)"))
    rules.append(NftRule(
        f"icmpv6 type . icmpv6 code {{ {', '.join(by_code)} }} accept",
        "always: ICMPv6 errors IPv6 needs (RFC 4890)",
    ))
    return rules


def lower(ruleset: Ruleset) -> dict[str, object]:
    """The template's view model: sets, per-rule chains and the two base chains."""
    sets: list[NftSet] = []
    rule_chains: list[NftChain] = []
    base_chains: list[NftChain] = []
    uses_reject = False
    for direction, hook in ((Direction.IN, "input"), (Direction.OUT, "output")):
        default = ruleset.defaults.for_direction(direction)
        rules = _prologue(direction)
        for rule in ruleset.rules_for(direction):
            rule_sets, chain, jumps = _lower_rule(ruleset, rule)
            sets.extend(rule_sets)
            rule_chains.append(chain)
            rules.extend(jumps)
            uses_reject |= rule.action is Action.DENY and ruleset.defaults.reject
        policy = "accept" if default is Action.ALLOW else "drop"
        if default is Action.DENY:
            rules.append(NftRule(
                f"counter name default_{hook} {_verdict(ruleset, Action.DENY)}",
                f"default: {direction.value}bound deny",
            ))
            uses_reject |= ruleset.defaults.reject
        base_chains.append(NftChain(hook, f"type filter hook {hook} priority filter; policy {policy};", tuple(rules)))
    counters = [chain.name for chain in rule_chains] + [
        f"default_{hook}" for direction, hook in ((Direction.IN, "input"), (Direction.OUT, "output"))
        if ruleset.defaults.for_direction(direction) is Action.DENY
    ]
    return {
        "header": [sanitize.shell_comment(line) for line in rendering.header_lines(ruleset, NAME)],
        "description": sanitize.shell_comment(ruleset.description, 500),
        "table": ruleset.name,
        "counters": counters,
        "sets": sets,
        "reject_chain": REJECT_CHAIN if uses_reject else "",
        "rule_chains": rule_chains,
        "base_chains": base_chains,
    }


def render(ruleset: Ruleset) -> TargetOutput:
    text = rendering.render("nftables/table.nft.j2", **lower(ruleset))
    return TargetOutput(files={f"nftables/{ruleset.name}.nft": text})
