"""``fwgen report``: who knocked on which monitored or denied port, from what the host
recorded (``fwgen.logsources`` reads it; ``fwgen.report_format`` prints the answer).

Kernel log lines name their rule by the prefix fwgen writes (``fwgen.targets.common.
log_tag``, the very function the targets use): ``PREFIX NAME `` , or ``PREFIX rule-N ``
when that would pass iptables' 29 characters (``rule-N`` names are reserved, and N is
the rule's position, so every tag of one policy is distinct). A line with the policy's
prefix and a name the policy does not have is counted as unknown (an older version of
the policy, or another policy sharing the prefix), never guessed. Counters: nft's named
counters of ``table inet NAME`` (``rule_NAME``, ``default_input``, ...) and, in
``iptables-save -c`` output, the verdict line of each logged rule's own chain and the
default deny line; both count every packet the rule decided.

A pfirewall.log line names no rule: it is attributed to the verdict ``fwgen explain``
gives its connection (direction, protocol, port, remote and local address).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fwgen import logsources
from fwgen.errors import PolicyError
from fwgen.explain import Explainer
from fwgen.ir import Action, Direction, Ruleset
from fwgen.logsources import FORMAT_NAMES, Counter, InputError, KernelLine, WindowsLine
from fwgen.policy import Policy
from fwgen.registry import Registry
from fwgen.targets.common import log_burst, log_tag
from fwgen.targets.iptables import chains_for, published_chain, published_chain_name
from fwgen.targets.nftables import PUBLISHED_DEFAULT, object_name

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_FIELD = re.compile(r"([A-Z]+)=(\S*)")
_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "UDPLITE": "udplite", "SCTP": "sctp", "DCCP": "dccp", "ICMP": "icmp",
              "ICMPV6": "icmpv6"}
PORTED = ("tcp", "udp", "udplite", "sctp", "dccp")
DEFAULT = {"in": "default-inbound", "out": "default-outbound"}  # how the report names the defaults


@dataclass
class Seen:
    """A count with the first and last time it was seen (a time, or seconds since boot)."""

    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    first_uptime: float | None = None
    last_uptime: float | None = None

    def add(self, when: datetime | None, uptime: float | None) -> None:
        self.count += 1
        if when is not None:
            self.first = when if self.first is None else min(self.first, when)
            self.last = when if self.last is None else max(self.last, when)
        elif uptime is not None:
            self.first_uptime = uptime if self.first_uptime is None else min(self.first_uptime, uptime)
            self.last_uptime = uptime if self.last_uptime is None else max(self.last_uptime, uptime)


@dataclass
class RuleRow:
    name: str
    action: str
    direction: str
    tag: str | None  # its kernel log prefix, when logged
    logged: Seen = field(default_factory=Seen)
    counted: int | None = None


@dataclass
class PortRow:
    protocol: str
    port: int | None  # None for protocols without ports (ICMP: the type is in ``icmp``)
    services: list[str]
    rules: set[str] = field(default_factory=set)
    logged: Seen = field(default_factory=Seen)
    sources: dict[Address, Seen] = field(default_factory=dict)


@dataclass
class InputRow:
    path: str
    format: str
    lines: int = 0
    matched: int = 0  # lines attributed to a rule (or default) of the policy
    unparsed: int = 0
    first_unparsed: int | None = None
    outside: int = 0  # outside --since/--until
    untimed: int = 0  # left out of a window: the line has no wall-clock time
    unknown: dict[str, int] = field(default_factory=dict)  # tag name -> lines
    disagree: int = 0  # pfirewall: the logged action is not the policy's verdict
    undetermined: int = 0  # pfirewall: the verdict depends on what the log does not record


@dataclass
class Report:
    policy: str
    prefix: str
    rate: str
    burst: int
    since: datetime | None
    until: datetime | None
    rules: dict[str, RuleRow]
    inputs: list[InputRow] = field(default_factory=list)
    ports: dict[tuple[str, int | None], PortRow] = field(default_factory=dict)
    sources: dict[Address, Seen] = field(default_factory=dict)
    counters_read: bool = False
    windows_read: bool = False
    kernel_read: bool = False

    def observable(self, row: RuleRow) -> bool:
        """Whether anything read could have recorded a hit of this rule."""
        return (self.kernel_read and row.tag is not None) or row.counted is not None or self.windows_read

    def zero_hits(self) -> list[RuleRow]:
        return [row for row in self.rules.values()
                if self.observable(row) and row.logged.count == 0 and not row.counted]

    def lower_bound(self, row: RuleRow) -> bool:
        """Logged lines are rate-limited: exact only where a counter says so."""
        return row.counted is None or row.counted > row.logged.count

    def earliest(self) -> datetime | None:
        times = [row.logged.first for row in self.rules.values() if row.logged.first is not None]
        return min(times) if times else None


class Reader:
    """The policy's view of what hosts record, filled one input at a time."""

    def __init__(self, policy: Policy, ruleset: Ruleset, registry: Registry,
                 since: datetime | None = None, until: datetime | None = None) -> None:
        self.policy, self.ruleset, self.registry = policy, ruleset, registry
        self.since, self.until = since, until
        monitor = ruleset.monitor
        rows = {rule.name: RuleRow(rule.name, rule.action.value, rule.direction.value,
                                   log_tag(ruleset, rule) if rule.logged else None) for rule in ruleset.rules}
        for direction in Direction:
            if ruleset.defaults.for_direction(direction) is Action.DENY:
                name = DEFAULT[direction.value]
                rows[name] = RuleRow(name, "deny", direction.value, None)
        self.report = Report(ruleset.name, monitor.log_prefix, f"{monitor.rate}/{monitor.per}",
                             log_burst(ruleset), since, until, rows)
        self.by_tag = {rule.tag: rule for rule in rows.values() if rule.tag}
        self._explainer: Explainer | None = None

    # ------------------------------------------------------------------ logs

    def read_log(self, path: str, stdin: bytes | None = None) -> None:
        """One LOG input (``-``: ``stdin``); ``InputError`` when it cannot be read."""
        text = logsources.read_bytes(path, stdin)
        try:
            reference = datetime.fromtimestamp(os.stat(path).st_mtime, UTC) if path != "-" else None
        except OSError:
            reference = None
        self.read_text(path, text, reference)

    def read_text(self, path: str, text: str, reference: datetime | None = None) -> None:
        parsed = logsources.parse_log(text, reference or datetime.now(UTC))
        if not parsed.format and parsed.lines:
            known = ", ".join(FORMAT_NAMES[f] for f in ("journal", "kern.log", "dmesg", "pfirewall"))
            raise InputError(f"{path}: no line is in a known format ({known})")
        row = InputRow(path, parsed.format or "empty", parsed.lines, unparsed=len(parsed.unparsed),
                       first_unparsed=parsed.unparsed[0] if parsed.unparsed else None)
        self.report.inputs.append(row)
        if parsed.format == "pfirewall":
            self.report.windows_read = True
            for line in parsed.windows:
                self._windows(row, line)
        elif parsed.format:
            self.report.kernel_read = True
            for kernel in parsed.kernel:
                self._kernel(row, kernel)

    def _in_window(self, row: InputRow, when: datetime | None) -> bool:
        if self.since is None and self.until is None:
            return True
        if when is None:
            row.untimed += 1
            return False
        if (self.since is not None and when < self.since) or (self.until is not None and when > self.until):
            row.outside += 1
            return False
        return True

    def _unparsed(self, row: InputRow, number: int) -> None:
        row.unparsed += 1
        if row.first_unparsed is None or number < row.first_unparsed:
            row.first_unparsed = number

    def _kernel(self, row: InputRow, line: KernelLine) -> None:
        message = line.message
        if not message.startswith(self.report.prefix + " "):
            return  # another program's line, or another prefix's
        name = message[len(self.report.prefix) + 1:].split(" ", 1)[0]
        rule = self.by_tag.get(f"{self.report.prefix} {name} ")
        fields = dict(_FIELD.findall(message))
        if "SRC" not in fields or "PROTO" not in fields or "IN" not in fields:
            return self._unparsed(row, line.line)  # our prefix, but not a netfilter LOG line
        if rule is None:
            if self._in_window(row, line.when):
                shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name[:40])
                row.unknown[shown] = row.unknown.get(shown, 0) + 1
            return None
        try:
            remote = ipaddress.ip_address(fields["SRC"] if rule.direction == "in" else fields["DST"])
            protocol = _PROTOCOLS.get(fields["PROTO"].upper()) or fields["PROTO"]
            port = int(fields["DPT"]) if protocol in PORTED and "DPT" in fields else None
        except (KeyError, ValueError):
            return self._unparsed(row, line.line)
        if not self._in_window(row, line.when):
            return None
        row.matched += 1
        self._hit(rule, protocol, port, remote, line.when, line.uptime)
        return None

    def _hit(self, rule: RuleRow, protocol: str, port: int | None, remote: Address, when: datetime | None,
             uptime: float | None) -> None:
        rule.logged.add(when, uptime)
        if rule.action == "allow":
            return  # a logged allow: counted per rule, not a knock on a watched port
        key = (protocol, port)
        found = self.report.ports.get(key)
        if found is None:
            services = self.registry.names_at(protocol, port) if port is not None and protocol in ("tcp", "udp") \
                else []
            found = self.report.ports[key] = PortRow(protocol, port, services)
        found.rules.add(rule.name)
        found.logged.add(when, uptime)
        found.sources.setdefault(remote, Seen()).add(when, uptime)
        self.report.sources.setdefault(remote, Seen()).add(when, uptime)

    # ------------------------------------------------------------------ pfirewall.log

    def _windows(self, row: InputRow, line: WindowsLine) -> None:
        f = line.fields
        path, action = f.get("path", "RECEIVE").upper(), f["action"].upper()
        if action not in ("ALLOW", "DROP") or path not in ("RECEIVE", "SEND"):
            return  # INFO-EVENTS-LOST, FORWARD, UNKNOWN: no connection of this host's rules
        direction = "in" if path == "RECEIVE" else "out"
        protocol_text = f["protocol"].lower()
        try:
            remote = ipaddress.ip_address(f["src-ip"] if direction == "in" else f["dst-ip"])
            local = ipaddress.ip_address(f["dst-ip"] if direction == "in" else f["src-ip"])
            number = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}.get(protocol_text)
            if number is None:
                number = int(protocol_text)
            port = int(f["dst-port"]) if number in (6, 17) else None
            icmp = (int(f["icmptype"]), int(f["icmpcode"])) if number in (1, 58) and f.get("icmptype", "-") != "-" \
                else None
            if remote.version != local.version or not 0 <= number <= 255:
                raise ValueError("mixed address families")
        except (KeyError, ValueError):
            return self._unparsed(row, line.line)
        if not self._in_window(row, line.when):
            return None
        verdict = self._explain().verdict(direction, number, port, remote, local=local, icmp=icmp)
        if not verdict.decided:
            row.undetermined += 1
            return None
        if (action == "DROP") != (verdict.action == "deny"):
            row.disagree += 1
            return None
        name = verdict.rule or DEFAULT[direction]
        rule = self.report.rules.get(name)
        if rule is None:  # a default allow: not a knock anyone watches
            return None
        row.matched += 1
        protocol = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}.get(number, str(number))
        self._hit(rule, protocol, port, remote, line.when, None)
        return None

    def _explain(self) -> Explainer:
        if self._explainer is None:
            self._explainer = Explainer(self.policy, self.registry)
        return self._explainer

    # ------------------------------------------------------------------ counters

    def read_counters(self, path: str, stdin: bytes | None = None) -> None:
        kind, counters = logsources.parse_counters(path, logsources.read_bytes(path, stdin))
        self.report.inputs.append(InputRow(path, kind, len(counters), self._count(kind, counters)))
        self.report.counters_read = True

    def _count(self, kind: str, counters: list[Counter]) -> int:
        """Adds the counters of this policy's rules; returns how many there were."""
        names: dict[tuple[str, str], str] = {}
        if kind == "nft":
            table = f"inet {self.ruleset.name}"
            names = {(table, object_name(rule)): rule.name for rule in self.ruleset.rules}
            names |= {(table, "default_input"): DEFAULT["in"], (table, "default_output"): DEFAULT["out"],
                      (table, PUBLISHED_DEFAULT): DEFAULT["in"]}
            keyed = [((c.table, c.name), c.packets) for c in counters]
        else:
            # a logged rule's own chains (fwgen-rule-N; fwgen-published-N or fwgen-NAME-pub-N for forwarded
            # connections DNATed to a container): their verdict line; the default deny lines
            chains = chains_for(self.ruleset)
            logged = [rule for rule in self.ruleset.rules if rule.logged]
            names = {(chains.of(rule), ""): rule.name for rule in logged}
            judging = published_chain(self.ruleset)  # in the mangle table, either mode
            names |= {(published_chain_name(rule, judging), ""): rule.name for rule in logged}
            defaults = {chains.input: DEFAULT["in"], chains.output: DEFAULT["out"], judging: DEFAULT["in"]}
            names |= {(chain, ""): name for chain, name in defaults.items()}
            keyed = [((c.table, ""), c.packets) for c in counters
                     if (c.table in defaults and '--comment "default: ' in c.rule)
                     or (c.table not in defaults and c.name != "LOG")]
        used = 0
        for key, packets in keyed:
            name = names.get(key)
            if name is None or name not in self.report.rules:
                continue
            row = self.report.rules[name]
            row.counted = (row.counted or 0) + packets
            used += 1
        return used



def journal_text() -> str:
    """``journalctl -k -o json``'s output; ``InputError`` when it cannot be run."""
    import subprocess

    try:
        done = subprocess.run(["journalctl", "-k", "-o", "json", "--no-pager"], capture_output=True, timeout=300)
    except FileNotFoundError:
        raise InputError("--journal: journalctl not found; pass the kernel log as files instead") from None
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InputError(f"--journal: journalctl -k -o json failed: {error}") from None
    if done.returncode != 0:
        reason = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit {done.returncode}"])[0]
        raise InputError(f"--journal: journalctl -k -o json failed: {reason}")
    return done.stdout.decode("utf-8", errors="replace")


def make_report(policy_path: str, registry: Registry, logs: tuple[str, ...] = (), counters: tuple[str, ...] = (),
                journal: bool = False, since: datetime | None = None, until: datetime | None = None,
                stdin: bytes | None = None) -> tuple[Report | None, list[str]]:
    """The report of one policy (a file, or ``git:REV:PATH``) over every input, or None
    and one line per input that could not be read (``PolicyError`` for the policy)."""
    from fwgen.files import GitFiles
    from fwgen.policy import load_policy
    from fwgen.resolve import compile_policy

    if policy_path.startswith("git:"):  # the policy as it was at a revision (the one loaded)
        rev, sep, path = policy_path[len("git:"):].partition(":")
        if not sep or not rev or not path:
            raise PolicyError(None, f"{policy_path}: not a git policy reference: write git:REV:PATH")
        policy = load_policy(path, GitFiles(rev))
    else:
        policy = load_policy(policy_path)
    reader = Reader(policy, compile_policy(policy, registry), registry, since, until)
    errors: list[str] = []
    for path in logs:
        try:
            reader.read_log(path, stdin)
        except InputError as error:
            errors.append(str(error))
    if journal:
        try:
            reader.read_text("journalctl -k -o json", journal_text())
        except InputError as error:
            errors.append(str(error))
    for path in counters:
        try:
            reader.read_counters(path, stdin)
        except InputError as error:
            errors.append(str(error))
    return (None if errors else reader.report), errors
