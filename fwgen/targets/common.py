"""Decisions shared by the Linux targets, so iptables and nftables cannot drift apart."""

from __future__ import annotations

import functools
import ipaddress

from fwgen.ir import Action, Direction, Rule, Ruleset

# iptables truncates --log-prefix at 29 characters; nft allows 127. One tag for both
# keeps the log lines of the two targets identical and greppable.
LOG_PREFIX_MAX = 29
LOG_BURST_MAX = 10000  # iptables' --limit-burst maximum

# IPv4's counterpart of MLD: IGMP (protocol 2) queries and reports, link-local with TTL 1.
# Behind a snooping switch a host that drops them stops receiving its multicast groups.
IGMP = 2
# Loopback destinations that must arrive on lo: with route_localnet=1 (kube-proxy sets it)
# the kernel delivers 127.0.0.0/8 from a real interface to loopback-bound services.
LOOPBACK = {4: "127.0.0.0/8", 6: "::1"}
# The ICMPv6 messages the nftables reverse-path check lets through: DAD sends neighbour
# solicitations from ::, which fib cannot route back (as firewalld does; ip6t_rpfilter
# passes :: by itself).
ANTISPOOF_EXEMPT_ICMPV6 = (134, 135)


def icmp_entries(selectors: list[tuple[int, int]]) -> list[str]:
    """ICMP (type << 8 | code) intervals as the entries iptables and nft match on:
    ``T`` for every code of type T, ``T/C`` for one code."""
    entries: list[str] = []
    for lo, hi in selectors:
        for icmp_type in range(lo >> 8, (hi >> 8) + 1):
            first, last = max(lo, icmp_type << 8) & 0xFF, min(hi, icmp_type << 8 | 0xFF) & 0xFF
            if (first, last) == (0, 0xFF):
                entries.append(str(icmp_type))
            else:
                entries += [f"{icmp_type}/{code}" for code in range(first, last + 1)]
    return entries


def log_tag(ruleset: Ruleset, rule: Rule) -> str:
    """The kernel log prefix of a rule: ``PREFIX NAME `` when it fits iptables' limit,
    else ``PREFIX rule-INDEX `` (rule-N names are reserved, so this is unambiguous)."""
    tag = f"{ruleset.monitor.log_prefix} {rule.name} "
    if len(tag) > LOG_PREFIX_MAX:
        tag = f"{ruleset.monitor.log_prefix} rule-{rule.index} "
    return tag


def log_burst(ruleset: Ruleset) -> int:
    """A burst of one period's worth of lines, then the rate."""
    return min(ruleset.monitor.rate, LOG_BURST_MAX)


def network_texts(ruleset: Ruleset, rule: Rule, family: int) -> tuple[list[str] | None, list[str] | None]:
    """A rule's remote and local networks of one family as text (``None``: any address),
    made once per ruleset: both targets write them, and an IPv6 address is slow to print."""
    key = ("network_texts", rule.index, family)
    found = ruleset.derived.get(key)
    if found is None:
        found = ruleset.derived[key] = tuple(
            None if networks is None else [network_text(network) for network in networks]
            for networks in (rule.remote(family), rule.local(family))
        )
    return found  # type: ignore[return-value]


@functools.lru_cache(maxsize=1 << 16)
def network_text(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """``str(network)``, remembered across rulesets: the hosts of a fleet share most of
    their networks (fleet100: 7,431 networks, 166 distinct), and printing an IPv6
    network costs ten times looking it up."""
    return str(network)


# an action's word, looked up (Enum.value costs as much as the rest of a summary's fields)
_VERBS = {action: action.value for action in Action}


def rule_summary(ruleset: Ruleset, rule: Rule) -> str:
    """How a generated rule names its policy rule: name, source line, action."""
    verb = _VERBS[rule.action] + (" +log" if rule.log else "")
    return f"{rule.name} ({ruleset.source.where(rule)}:{rule.location.line}) {verb}"


def chain_direction(direction: Direction) -> str:
    return "input" if direction is Direction.IN else "output"
