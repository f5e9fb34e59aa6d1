"""iptables target: ``iptables/rules.v4`` and ``iptables/rules.v6`` for iptables-restore.

Each file is a complete ``filter`` table, as iptables-persistent loads it: loading one
replaces every filter rule of that family on the host (Docker's included). Shape:
- INPUT/OUTPUT start with the always-rules (invalid, established, loopback, and the
  ICMPv6 IPv6 needs), then one match line per (address, port chunk) of each policy
  rule, jumping to the rule's own chain ``fwgen-rule-N``;
- ``fwgen-rule-N`` holds the rate-limited LOG (when logged) and the verdict, so its
  verdict line counts every packet the policy rule decided (``iptables -vL fwgen-rule-N``);
- ports are numbers (never /etc/services names), compacted with multiport within
  its 15-slot limit (a range takes two slots).
"""

from __future__ import annotations

from dataclasses import dataclass

from fwgen import render as rendering
from fwgen import sanitize
from fwgen.ir import ALL_PORTS, Action, Direction, PortRange, Rule, Ruleset
from fwgen.targets import TargetOutput
from fwgen.targets.common import ICMPV6_ESSENTIAL, log_burst, log_tag, rule_summary

NAME = "iptables"
MULTIPORT_SLOTS = 15
REJECT_CHAIN = "fwgen-reject"
_PER = {"second": "second", "minute": "minute", "hour": "hour"}


@dataclass(frozen=True)
class Family:
    number: int
    filename: str
    icmp_unreachable: str
    icmp_prohibited: str


FAMILIES = (
    Family(4, "rules.v4", "icmp-port-unreachable", "icmp-admin-prohibited"),
    Family(6, "rules.v6", "icmp6-port-unreachable", "icmp6-adm-prohibited"),
)


@dataclass(frozen=True)
class Line:
    chain: str
    match: str  # everything between the chain and -j
    target: str  # the -j argument with its options
    comment: str = ""


def chain_name(rule: Rule) -> str:
    return f"fwgen-rule-{rule.index}"  # <= 28 characters for any realistic index


def port_chunks(ranges: tuple[PortRange, ...]) -> list[str]:
    """Port match options, each within multiport's 15 slots (a range takes two)."""
    if ranges == ALL_PORTS:
        return [""]
    if len(ranges) == 1:
        r = ranges[0]
        return [f"--dport {r.lo}" if r.lo == r.hi else f"--dport {r.lo}:{r.hi}"]
    chunks: list[list[str]] = [[]]
    used = 0
    for r in ranges:
        slots = 1 if r.lo == r.hi else 2
        if used + slots > MULTIPORT_SLOTS:
            chunks.append([])
            used = 0
        chunks[-1].append(str(r.lo) if r.lo == r.hi else f"{r.lo}:{r.hi}")
        used += slots
    return ["-m multiport --dports " + ",".join(chunk) for chunk in chunks]


def _verdict(ruleset: Ruleset, action: Action) -> str:
    if action is Action.DENY:
        return REJECT_CHAIN if ruleset.defaults.reject else "DROP"
    return "ACCEPT"


def _rule_lines(ruleset: Ruleset, rule: Rule, family: Family) -> tuple[list[Line], list[Line]]:
    """(match lines for INPUT/OUTPUT, lines of the rule's own chain)."""
    base = "INPUT" if rule.direction is Direction.IN else "OUTPUT"
    own = chain_name(rule)
    comment = sanitize.iptables_comment(
        rule_summary(ruleset, rule) + (f": {rule.comment}" if rule.comment else "")
    )
    remote = rule.remote(family.number)
    flag = "-s" if rule.direction is Direction.IN else "-d"
    addresses = [""] if remote is None else [f"{flag} {net}" for net in remote]
    matches: list[Line] = []
    for address in addresses:
        for proto, ranges in rule.ports:
            for ports in port_chunks(ranges):
                match = " ".join(part for part in (f"-p {proto.value}", address, ports) if part)
                matches.append(Line(base, match, own, comment))
    body: list[Line] = []
    if rule.logged:
        monitor = ruleset.monitor
        body.append(Line(
            own,
            f"-m limit --limit {monitor.rate}/{_PER[monitor.per]} --limit-burst {log_burst(ruleset)}",
            f'LOG --log-prefix "{log_tag(ruleset, rule)}"',
        ))
    body.append(Line(own, "", _verdict(ruleset, rule.action), comment))
    return matches, body


def _prologue(family: Family, base: str) -> list[Line]:
    iface = "-i lo" if base == "INPUT" else "-o lo"
    lines = [
        Line(base, "-m conntrack --ctstate INVALID", "DROP", "always: invalid packets"),
        Line(base, "-m conntrack --ctstate RELATED,ESTABLISHED", "ACCEPT", "always: established and related"),
        Line(base, iface, "ACCEPT", "always: loopback"),
    ]
    if family.number == 6:
        for icmp_type, code, hoplimit, what in ICMPV6_ESSENTIAL:
            match = f"-p ipv6-icmp --icmpv6-type {icmp_type}" + (f"/{code}" if code is not None else "")
            if hoplimit is not None:
                match += f" -m hl --hl-eq {hoplimit}"
            lines.append(Line(base, match, "ACCEPT", f"always: ICMPv6 {what} (RFC 4890)"))
    return lines


def lower(ruleset: Ruleset, family: Family) -> dict[str, object]:
    chains: dict[str, str] = {}
    lines: list[Line] = []
    rule_lines: list[Line] = []
    uses_reject = False
    for direction, base in ((Direction.IN, "INPUT"), (Direction.OUT, "OUTPUT")):
        default = ruleset.defaults.for_direction(direction)
        chains[base] = "ACCEPT" if default is Action.ALLOW else "DROP"
        lines.extend(_prologue(family, base))
        for rule in ruleset.rules_for(direction, family.number):
            matches, body = _rule_lines(ruleset, rule, family)
            lines.extend(matches)
            rule_lines.extend(body)
            uses_reject |= rule.action is Action.DENY and ruleset.defaults.reject
        if default is Action.DENY:
            lines.append(Line(base, "", _verdict(ruleset, Action.DENY), f"default: {direction.value}bound deny"))
            uses_reject |= ruleset.defaults.reject
    user_chains = ([REJECT_CHAIN] if uses_reject else []) + [
        chain_name(rule) for rule in ruleset.rules if rule.applies_to(family.number)
    ]
    reject_lines = [
        Line(REJECT_CHAIN, "-p tcp", "REJECT --reject-with tcp-reset"),
        Line(REJECT_CHAIN, "-p udp", f"REJECT --reject-with {family.icmp_unreachable}"),
        Line(REJECT_CHAIN, "", f"REJECT --reject-with {family.icmp_prohibited}"),
    ] if uses_reject else []
    return {
        "header": [sanitize.shell_comment(line) for line in rendering.header_lines(ruleset, f"{NAME} (IPv{family.number})")],
        "description": sanitize.shell_comment(ruleset.description, 500),
        "policy": ruleset.name,
        "builtin": [("INPUT", chains["INPUT"]), ("FORWARD", "ACCEPT"), ("OUTPUT", chains["OUTPUT"])],
        "user_chains": user_chains,
        "lines": lines + rule_lines + reject_lines,
    }


def render(ruleset: Ruleset) -> TargetOutput:
    files = {
        f"iptables/{family.filename}": rendering.render("iptables/rules.j2", **lower(ruleset, family))
        for family in FAMILIES
    }
    return TargetOutput(files=files)
