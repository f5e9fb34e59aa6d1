"""iptables target: ``iptables/rules.v4`` and ``iptables/rules.v6`` for iptables-restore.

Each file is a complete ``filter`` and ``raw`` table, as iptables-persistent loads it:
loading one replaces every filter and raw rule of that family on the host (Docker's
included). FORWARD drops routed traffic unless ``defaults.forward: allow``; the raw
table holds the reverse-path check (``antispoof``). Shape:
- INPUT/OUTPUT start with the always-rules (loopback addresses only from lo, the
  link-local control messages of ICMPv6 and IGMP, invalid, established, loopback); then
  consecutive rules that match on ports alone become their
  first-match partition of the port space, grouped by target (ACCEPT, DROP, the reject
  chain, or a logged rule's chain) into as few multiport lines as possible; a rule that
  restricts addresses keeps its place, one line per (network, port chunk);
- a logged (or monitor) rule N has its own chain ``fwgen-rule-N`` with the rate-limited
  LOG and the verdict, whose counters count every packet that rule decided;
- ports are numbers (never /etc/services names), compacted with multiport within
  its 15-slot limit (a range takes two slots).
"""

from __future__ import annotations

from typing import NamedTuple

from fwgen import render as rendering
from fwgen import sanitize
from fwgen.ir import PORT_MAX, PORT_MIN, PROTOCOLS, Action, Direction, PortRange, Rule, Ruleset
from fwgen.lowering import Run, partition, plan
from fwgen.targets import TargetOutput
from fwgen.targets.common import ICMPV6_CONTROL, IGMP, LOOPBACK, log_burst, log_tag, rule_summary

NAME = "iptables"
MULTIPORT_SLOTS = 15
REJECT_CHAIN = "fwgen-reject"
_PER = {"second": "second", "minute": "minute", "hour": "hour"}


class Family(NamedTuple):
    number: int
    filename: str
    icmp_unreachable: str
    icmp_prohibited: str


FAMILIES = (
    Family(4, "rules.v4", "icmp-port-unreachable", "icmp-admin-prohibited"),
    Family(6, "rules.v6", "icmp6-port-unreachable", "icmp6-adm-prohibited"),
)


def line(chain: str, match: str, target: str, comment: str = "") -> str:
    """One ``-A`` line: chain, matches, comment, then the jump (always last)."""
    text = f"-A {chain} {match}" if match else f"-A {chain}"
    if comment:
        text += f' -m comment --comment "{comment}"'
    return f"{text} -j {target}"


def chain_name(rule: Rule) -> str:
    return f"fwgen-rule-{rule.index}"  # <= 28 characters for any realistic index


def port_chunks(ranges: tuple[PortRange, ...] | list[PortRange]) -> list[str]:
    """Port match options, each within multiport's 15 slots (a range takes two)."""
    if len(ranges) == 1:
        r = ranges[0]
        if r.lo == PORT_MIN and r.hi == PORT_MAX:
            return [""]
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


def _target(ruleset: Ruleset, rule: Rule) -> str:
    """Logged rules jump to their own chain (LOG with the rule's prefix, then the verdict);
    every other rule's verdict is written directly."""
    return chain_name(rule) if rule.logged else _verdict(ruleset, rule.action)


class _Lowering:
    """What both families share, made once per render: each rule's comment (made safe;
    rules appear on many lines), each logged rule's chain, and the lines of each run
    (a run's lines do not depend on the family, and both families usually share it)."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.comments: dict[int, str] = {}
        self.identity: dict[int, list[str]] = {}
        self.runs: dict[tuple[str, int], tuple[Run, list[str]]] = {}  # (base, id(run)) -> (run, lines)
        monitor = ruleset.monitor
        self.limit = f"-m limit --limit {monitor.rate}/{_PER[monitor.per]} --limit-burst {log_burst(ruleset)}"

    def comment(self, rule: Rule) -> str:
        text = self.comments.get(rule.index)
        if text is None:
            summary = rule_summary(self.ruleset, rule) + (f": {rule.comment}" if rule.comment else "")
            text = self.comments[rule.index] = sanitize.iptables_comment(summary)
        return text

    def comment_of(self, rules: list[Rule]) -> str:
        if len(rules) == 1:
            return self.comment(rules[0])
        names = ", ".join(r.name for r in rules[:40]) + (f" and {len(rules) - 40} more" if len(rules) > 40 else "")
        return sanitize.iptables_comment(f"first match of rules {names}")

    def identity_chain(self, rule: Rule) -> list[str]:
        """A logged rule's own chain: the rate-limited LOG, then the verdict."""
        lines = self.identity.get(rule.index)
        if lines is None:
            own = chain_name(rule)
            lines = self.identity[rule.index] = [  # as line() writes them
                f'-A {own} {self.limit} -j LOG --log-prefix "{log_tag(self.ruleset, rule)}"',
                f'-A {own} -m comment --comment "{self.comment(rule)}" -j {_verdict(self.ruleset, rule.action)}',
            ]
        return lines

    def single(self, rule: Rule, family: Family, base: str) -> list[str]:
        """An address-restricted rule, in its place: one line per (network, port chunk)."""
        remote = rule.remote(family.number) or ()
        flag = "-s" if rule.direction is Direction.IN else "-d"
        comment, target = self.comment(rule), _target(self.ruleset, rule)
        return [
            line(base, " ".join(part for part in (f"-p {proto.value}", f"{flag} {net}", ports) if part),
                 target, comment)
            for net in remote
            for proto, ranges in rule.ports
            for ports in port_chunks(ranges)
        ]

    def run(self, run: Run, base: str) -> list[str]:
        """Consecutive address-free rules: their first-match partition of the port space,
        grouped by target. The intervals are disjoint, so grouping them changes nothing,
        and each target needs only as many lines as multiport's 15 slots require."""
        found = self.runs.get((base, id(run)))  # plan() hands both families the same Run
        if found is not None:
            return found[1]
        ruleset = self.ruleset
        lines: list[str] = []
        target_of = {rule.index: _target(ruleset, rule) for rule in run.rules}
        for proto in PROTOCOLS:
            # target -> (its intervals, touching ones joined; the rules owning them)
            by_target: dict[str, tuple[list[PortRange], list[Rule]]] = {}
            for ports, rule in partition(ruleset, run.rules, proto):
                target = target_of[rule.index]
                group = by_target.get(target)
                if group is None:
                    by_target[target] = ([ports], [rule])
                    continue
                ranges, rules = group
                if ranges[-1].hi + 1 == ports.lo:  # the interval before, same target
                    ranges[-1] = PortRange(ranges[-1].lo, ports.hi)
                else:
                    ranges.append(ports)
                if rules[-1] is not rule:
                    rules.append(rule)
            head = f"-A {base} -p {proto.value}"
            for target, (ranges, rules) in by_target.items():
                tail = f' -m comment --comment "{self.comment_of(rules)}" -j {target}'  # as line() writes it
                lines.extend(f"{head} {match}{tail}" if match else head + tail for match in port_chunks(ranges))
        self.runs[(base, id(run))] = (run, lines)  # keeping the run keeps its id unique
        return lines


def _prologue(family: Family, base: str) -> list[str]:
    """The always-rules: loopback destinations only from lo; link-local control messages
    (ICMPv6 neighbour discovery and MLD, IGMP) before conntrack's INVALID drop, which would
    take some of them; then established and related traffic, and loopback."""
    inbound = base == "INPUT"
    lines = []
    if inbound:
        lines.append(line(base, f"! -i lo -d {LOOPBACK[family.number]}", "DROP",
                          "always: loopback addresses arriving on another interface"))
    if family.number == 6:
        for icmp_type, hoplimit, what in ICMPV6_CONTROL:
            lines.append(line(base, f"-p ipv6-icmp --icmpv6-type {icmp_type} -m hl --hl-eq {hoplimit}", "ACCEPT",
                              f"always: ICMPv6 {what} (RFC 4890)"))
    else:
        lines.append(line(base, f"-p {IGMP} -m ttl --ttl-eq 1", "ACCEPT", "always: IGMP, link-local (TTL 1)"))
    lines += [
        line(base, "-m conntrack --ctstate INVALID", "DROP", "always: invalid packets"),
        line(base, "-m conntrack --ctstate RELATED,ESTABLISHED", "ACCEPT", "always: established and related"),
        line(base, "-i lo" if inbound else "-o lo", "ACCEPT", "always: loopback"),
    ]
    return lines


def _raw_lines(ruleset: Ruleset) -> list[str]:
    """The raw table's PREROUTING: the reverse-path check, unless ``antispoof: false``."""
    if not ruleset.options.antispoof:
        return []
    return [line("PREROUTING", "-m rpfilter --invert", "DROP",
                 "antispoof: the source is not routed back through the arrival interface")]


def lower(ruleset: Ruleset, family: Family, shared: _Lowering | None = None) -> dict[str, object]:
    """The template's view model for one family (``shared``: what the other family's
    lowering already made)."""
    shared = shared or _Lowering(ruleset)
    chains: dict[str, str] = {}
    lines: list[str] = []
    rule_lines: list[str] = []
    uses_reject = False
    for direction, base in ((Direction.IN, "INPUT"), (Direction.OUT, "OUTPUT")):
        default = ruleset.defaults.for_direction(direction)
        chains[base] = "ACCEPT" if default is Action.ALLOW else "DROP"
        lines.extend(_prologue(family, base))
        rules = ruleset.rules_for(direction, family.number)
        for segment in plan(ruleset, direction, family.number):
            if isinstance(segment, Run):
                lines.extend(shared.run(segment, base))
            else:
                lines.extend(shared.single(segment.rule, family, base))
        rule_lines.extend(text for rule in rules if rule.logged for text in shared.identity_chain(rule))
        if default is Action.DENY:
            lines.append(line(base, "", _verdict(ruleset, Action.DENY), f"default: {direction.value}bound deny"))
        uses_reject |= ruleset.defaults.reject and (
            default is Action.DENY or any(rule.action is Action.DENY for rule in rules)
        )
    user_chains = ([REJECT_CHAIN] if uses_reject else []) + [
        chain_name(rule) for rule in ruleset.rules if rule.logged and rule.applies_to(family.number)
    ]
    reject_lines = [
        line(REJECT_CHAIN, "-p tcp", "REJECT --reject-with tcp-reset"),
        line(REJECT_CHAIN, "-p udp", f"REJECT --reject-with {family.icmp_unreachable}"),
        line(REJECT_CHAIN, "", f"REJECT --reject-with {family.icmp_prohibited}"),
    ] if uses_reject else []
    return {
        "header": [
            sanitize.shell_comment(text) for text in rendering.header_lines(ruleset, f"{NAME} (IPv{family.number})")
        ],
        "description": sanitize.shell_comment(ruleset.description, 500),
        "policy": ruleset.name,
        "forward": "ACCEPT" if ruleset.defaults.forward is Action.ALLOW else "DROP",
        "builtin": [
            ("INPUT", chains["INPUT"]),
            ("FORWARD", "ACCEPT" if ruleset.defaults.forward is Action.ALLOW else "DROP"),
            ("OUTPUT", chains["OUTPUT"]),
        ],
        "raw": "\n".join(_raw_lines(ruleset)),
        "user_chains": user_chains,
        # every -A line, in order, one per line (thousands of them: joined here, not by
        # a template loop, which costs more than building them)
        "rules": "\n".join(lines + rule_lines + reject_lines),
    }


def render(ruleset: Ruleset) -> TargetOutput:
    shared = _Lowering(ruleset)
    files = {
        f"iptables/{family.filename}": rendering.render("iptables/rules.j2", **lower(ruleset, family, shared))
        for family in FAMILIES
    }
    return TargetOutput(files=files)
