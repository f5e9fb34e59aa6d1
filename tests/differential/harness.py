"""The differential harness: load ONE target's output into a real kernel and check that
every real packet's fate equals `fwgen explain`'s verdict.

A ``Lab`` is a pair of network namespaces joined by a veth: the "host", which loads the
rule set, and the "peer", which owns several IPv4 and IPv6 addresses inside and outside
the policies' networks. Inbound probes go from a peer address to the host; outbound
probes from the host to a peer address. Each probe runs twice: first with no rule set
(the positive control: it must be delivered, so "not delivered" can never mean "nobody
was listening"), then with the policy's rules.

Checks for every probe: delivered iff explain says allow or monitor; a TCP connect
denied with reject fails at once (reset or ICMP error), not by timeout; a logged verdict
leaves a kernel log line with the policy's prefix, the addresses and ``DPT=port``; and
each monitor rule's counter reads back exactly the number of its delivered probes.
"""

from __future__ import annotations

import ipaddress
import random
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fwgen.explain import Explainer
from fwgen.ir import Direction, Ruleset
from tests.differential.policygen import PEER_V4, PEER_V6
from tests.kernel.netns import (
    KernelLog,
    Namespace,
    NetnsError,
    Probe,
    connect,
    listen,
    load_iptables,
    load_nft,
    run_probes,
)

TCP_TIMEOUT = 0.6
# Client sockets take their source ports from here (set in both namespaces), and no probe
# targets it: a listener must never find its port taken by a concurrent probe's socket.
CLIENT_PORTS = (60000, 61999)
OPEN_IPTABLES = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
TARGETS = ("iptables", "nftables")
HOSTS = {"iptables": ("203.0.113.1", "2001:db8:ffff::1"), "nftables": ("203.0.113.2", "2001:db8:ffff::2")}


@dataclass(frozen=True)
class Case:
    direction: str  # in | out
    protocol: str  # tcp | udp
    port: int
    remote: str  # the peer's address


@dataclass
class Outcome:
    case: Case
    expected: str  # allow | deny | monitor
    control: str
    status: str
    delivered: bool
    rule: str | None
    logged: bool
    enforced: str


@dataclass
class Report:
    target: str
    outcomes: list[Outcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.problems.append(f"{self.target}: {message}")


def _probeable(port: int) -> bool:
    return 1 <= port <= 65535 and not CLIENT_PORTS[0] <= port <= CLIENT_PORTS[1]


def _edges(lo: int, hi: int) -> set[int]:
    return {p for p in (lo - 1, lo, hi, hi + 1, (lo + hi) // 2) if _probeable(p)}


def choose_cases(ruleset: Ruleset, seed: int, per_direction: int = 600) -> list[Case]:
    """Range edges (lo-1, lo, hi, hi+1) and middles of every rule, a few random ports, each
    from or to several peer addresses (all of them where a rule restricts addresses)."""
    rng = random.Random(seed)
    cases: list[Case] = []
    for direction in Direction:
        rules = ruleset.rules_for(direction)
        restricted = any(r.remote_v4 is not None or r.remote_v6 is not None for r in rules)
        for protocol in ("tcp", "udp"):
            ports: set[int] = {p for p in (rng.randint(1, 65535) for _ in range(3)) if _probeable(p)}
            for r in rules:
                for proto, ranges in r.ports:
                    if proto.value == protocol:
                        for pr in ranges:
                            ports |= _edges(pr.lo, pr.hi)
            for port in sorted(ports):
                if restricted:
                    remotes = list(PEER_V4 + PEER_V6)
                else:
                    remotes = [rng.choice(PEER_V4), rng.choice(PEER_V6)]
                cases.extend(Case(direction.value, protocol, port, a) for a in remotes)
        mine = [c for c in cases if c.direction == direction.value]
        if len(mine) > per_direction:
            keep = set(rng.sample(range(len(mine)), per_direction))
            cases = [c for c in cases if c.direction != direction.value] + [
                c for i, c in enumerate(mine) if i in keep]
    return cases


def concurrently(*calls: Callable[[], None]) -> None:
    """Run the calls in threads; re-raise the first exception in the caller's thread."""
    errors: list[BaseException] = []

    def guarded(call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


class Lab:
    """Two namespaces and a veth; lives across many policies."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.host_v4, self.host_v6 = HOSTS[target]
        self.host = Namespace().__enter__()
        self.peer = Namespace().__enter__()
        link = connect(self.host, self.peer, host_addrs=[f"{self.host_v4}/32", f"{self.host_v6}/128"],
                       peer_addrs=[f"{a}/32" for a in PEER_V4] + [f"{a}/128" for a in PEER_V6])
        for ns, ifname in ((self.host, link.host_if), (self.peer, link.peer_if)):
            ns.run(["sh", "-c", f"echo {CLIENT_PORTS[0]} {CLIENT_PORTS[1]} > /proc/sys/net/ipv4/ip_local_port_range"])
            ns.run(["ip", "route", "add", "default", "dev", ifname])
            ns.run(["ip", "-6", "route", "add", "default", "dev", ifname])

    def close(self) -> None:
        self.host.close()
        self.peer.close()

    def open(self) -> None:
        if self.target == "iptables":
            load_iptables(self.host, OPEN_IPTABLES, OPEN_IPTABLES)
        else:
            self.host.run(["nft", "flush", "ruleset"])  # our own throwaway namespace only

    def load(self, files: dict[str, str], name: str) -> None:
        """Load one policy's output into a clean host (no table of an earlier policy)."""
        self.open()
        if self.target == "iptables":
            load_iptables(self.host, files["iptables/rules.v4"], files["iptables/rules.v6"])
        else:
            load_nft(self.host, files[f"nftables/{name}.nft"])

    def host_addr(self, remote: str) -> str:
        return self.host_v4 if ipaddress.ip_address(remote).version == 4 else self.host_v6

    def send(self, cases: list[Case], tag: str) -> list[tuple[str, bool]]:
        """Run every case once; (probe status, delivered) per case, in order."""
        results: list[tuple[str, bool] | None] = [None] * len(cases)

        def direction(dir_name: str, client: Namespace, server: Namespace) -> None:
            idx = [i for i, c in enumerate(cases) if c.direction == dir_name]
            if not idx:
                return
            probes = []
            for i in idx:
                c = cases[i]
                host = self.host_addr(c.remote)
                src, dst = (c.remote, host) if dir_name == "in" else (host, c.remote)
                probes.append(Probe(c.protocol, dst, c.port, src, TCP_TIMEOUT, payload=f"{tag}-{i}"))
            tcp_ports = sorted({cases[i].port for i in idx if cases[i].protocol == "tcp"})
            udp_ports = sorted({cases[i].port for i in idx if cases[i].protocol == "udp"})
            with listen(server, "tcp", ["0.0.0.0", "::"], tcp_ports) as lt, \
                    listen(server, "udp", ["0.0.0.0", "::"], udp_ports) as lu:
                statuses = run_probes(client, probes)
                # a datagram takes microseconds on a veth; the listener drains before exiting
            got = {r["payload"] for r in lu.stop() if r.get("payload")}
            lt.stop()
            for i, res in zip(idx, statuses, strict=True):
                c = cases[i]
                delivered = res.status == "connected" if c.protocol == "tcp" else f"{tag}-{i}" in got
                results[i] = (res.status, delivered)

        concurrently(lambda: direction("in", self.peer, self.host), lambda: direction("out", self.host, self.peer))
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def counters(self, ruleset: Ruleset) -> dict[str, int]:
        """Packets counted per monitor rule, read back from the kernel (one listing per
        tool: a policy can have thousands of rules)."""
        monitors = [rule for rule in ruleset.rules if rule.action.value == "monitor"]
        if self.target == "nftables":
            listing = self.host.run(["nft", "list", "counters", "table", "inet", ruleset.name]).stdout
            found = {m.group(1): int(m.group(2)) for m in re.finditer(
                r"counter (\S+) \{[^}]*?packets (\d+)", listing)}
            return {rule.name: found.get(f"rule_{rule.name}", -1) for rule in monitors}
        # iptables -vnxL: each rule chain's verdict line is its last line
        totals: Counter[str] = Counter()
        for tool in ("iptables", "ip6tables"):
            last: dict[str, int] = {}
            chain = ""
            for line in self.host.run([tool, "-vnxL"]).stdout.splitlines():
                fields = line.split()
                if line.startswith("Chain "):
                    chain = fields[1]
                elif chain.startswith("fwgen-rule-") and fields and fields[0].isdigit():
                    last[chain] = int(fields[0])
            totals.update(last)
        return {rule.name: totals[f"fwgen-rule-{rule.index}"] for rule in monitors}


def _log_needle(lab: Lab, case: Case, prefix: str) -> tuple[str, ...]:
    host = lab.host_addr(case.remote)
    src, dst = (case.remote, host) if case.direction == "in" else (host, case.remote)
    src, dst = (ipaddress.ip_address(a).exploded if ":" in a else a for a in (src, dst))
    return (f"{prefix} ", f"SRC={src} ", f"DST={dst} ", f"PROTO={case.protocol.upper()} ", f"DPT={case.port} ")


def check_policy(lab: Lab, ruleset: Ruleset, files: dict[str, str], explainer: Explainer,
                 cases: list[Case], log: KernelLog | None) -> Report:
    report = Report(lab.target)
    lab.open()
    control = lab.send(cases, "c")
    for case, (status, delivered) in zip(cases, control, strict=True):
        if not delivered:
            report.fail(f"positive control not delivered ({status}): {case}")
    lab.load(files, ruleset.name)
    seen_before = len(log.lines()) if log else 0
    results = lab.send(cases, "p")
    for case, (status, delivered), (cstatus, _) in zip(cases, results, control, strict=True):
        v = explainer.verdict(case.direction, case.protocol, case.port, case.remote)
        outcome = Outcome(case, v.action, cstatus, status, delivered, v.rule, v.logged, v.enforced)
        report.outcomes.append(outcome)
        if delivered != (v.action != "deny"):
            report.fail(f"{case}: explain says {v.action} (rule {v.rule}), packet "
                        f"{'delivered' if delivered else 'not delivered'} ({status})")
        elif v.action == "deny" and case.direction == "in" and case.protocol == "tcp":
            if v.enforced == "reject" and status not in ("refused", "unreachable"):
                report.fail(f"{case}: reject should fail fast, got {status}")
            if v.enforced == "drop" and status != "timeout":
                report.fail(f"{case}: drop should time out, got {status}")
    if log is not None:
        lines = log.lines()[seen_before:]
        prefix = ruleset.monitor.log_prefix
        for o in report.outcomes:
            if o.logged and (o.delivered or o.expected == "deny") and not report.problems:
                needle = _log_needle(lab, o.case, prefix)
                if not any(all(n in line for n in needle) for line in lines):
                    lost = f" (the kernel log ring buffer overwrote {log.lost} records)" if log.lost else ""
                    report.fail(f"{o.case}: {o.expected} by {o.rule} left no kernel log line {needle}{lost}")
    counts = lab.counters(ruleset)
    expected_counts = Counter(o.rule for o in report.outcomes if o.expected == "monitor" and o.delivered)
    for rule in ruleset.rules:
        if rule.action.value == "monitor" and counts[rule.name] != expected_counts[rule.name]:
            report.fail(f"counter of monitor rule {rule.name}: {counts[rule.name]} packets, "
                        f"{expected_counts[rule.name]} probes delivered")
    return report


def open_labs() -> dict[str, Lab]:
    labs: dict[str, Lab] = {}
    try:
        for target in TARGETS:
            labs[target] = Lab(target)
    except NetnsError:
        for lab in labs.values():
            lab.close()
        raise
    return labs


def describe(outcomes: list[Outcome]) -> dict[str, Any]:
    return dict(Counter(o.expected for o in outcomes))
