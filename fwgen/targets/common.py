"""Decisions shared by the Linux targets, so iptables and nftables cannot drift apart."""

from __future__ import annotations

from fwgen.ir import Direction, Rule, Ruleset

# iptables truncates --log-prefix at 29 characters; nft allows 127. One tag for both
# keeps the log lines of the two targets identical and greppable.
LOG_PREFIX_MAX = 29
LOG_BURST_MAX = 10000  # iptables' --limit-burst maximum

# RFC 4890 section 4.4.1, traffic to and from a host that must not be dropped, as
# (type, code or None, hop limit or None). Echo (128/129) is deliberately absent: the
# policy defaults decide it, as they do for ICMPv4 echo.
ICMPV6_ESSENTIAL: tuple[tuple[int, int | None, int | None, str], ...] = (
    (1, None, None, "destination-unreachable"),
    (2, None, None, "packet-too-big"),
    (3, 0, None, "time-exceeded: hop limit exceeded in transit"),
    (4, 1, None, "parameter-problem: unrecognized next header"),
    (4, 2, None, "parameter-problem: unrecognized option"),
    (133, None, 255, "router solicitation"),
    (134, None, 255, "router advertisement"),
    (135, None, 255, "neighbour solicitation"),
    (136, None, 255, "neighbour advertisement"),
    (141, None, 255, "inverse neighbour discovery solicitation"),
    (142, None, 255, "inverse neighbour discovery advertisement"),
    (130, None, 1, "multicast listener query"),
    (131, None, 1, "multicast listener report"),
    (132, None, 1, "multicast listener done"),
    (143, None, 1, "multicast listener report v2"),
    (148, None, 255, "certificate path solicitation"),
    (149, None, 255, "certificate path advertisement"),
    (151, None, 1, "multicast router advertisement"),
    (152, None, 1, "multicast router solicitation"),
    (153, None, 1, "multicast router termination"),
)


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


def rule_summary(ruleset: Ruleset, rule: Rule) -> str:
    """How a generated rule names its policy rule: name, source line, action."""
    verb = rule.action.value + (" +log" if rule.log else "")
    return f"{rule.name} ({ruleset.source.filename}:{rule.location.line}) {verb}"


def chain_direction(direction: Direction) -> str:
    return "input" if direction is Direction.IN else "output"
