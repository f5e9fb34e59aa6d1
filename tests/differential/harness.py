"""The differential harness: load ONE target's output into a real kernel and check that
every real packet's fate equals `fwgen explain`'s verdict.

A ``Lab`` is three network namespaces: the "host", which loads the rule set, and two
peers, each joined to the host by a veth of a fixed name (``fwa0`` to peer A, ``fwb0``
to peer B). The peers own the addresses of ``policygen.PEER_V4``/``PEER_V6``, split
between them (``policygen.PEER_LINK``); the host routes each one through its own link,
so a probe's interface follows from its remote address. The host owns several addresses
per family (``policygen.HOST_V4``/``HOST_V6``, two behind ``fwa0``, one behind ``fwb0``;
each lab its own, see ``lab_address``), and every probe names the one it uses: the
destination of an inbound probe, the bound source of an outbound one. Neighbour entries
are static, so no resolution traffic crosses the links.

Probes, in both directions, both families:
- TCP connects and UDP datagrams to ports at every rule's range edges;
- ICMP and ICMPv6 messages of the types conntrack treats as NEW (``ICMP_NEW``: echo,
  timestamp, information and address mask requests; ICMPv6 echo and node information
  queries), at every rule's type/code edges. Every other type is decided before any
  rule (INVALID, or RELATED to a connection): tests/kernel/test_icmp_state.py proves it,
  so it is never probed as rule-decided here;
- raw IP packets of GRE, ESP, AH and VRRP (``RAW_PROTOCOLS``), each with a minimal
  well-formed header (tests/kernel/rawprobe.py), counted by a raw socket on the
  receiving side.
Each probe runs twice: first with no rule set (the positive control: it must be
delivered, so "not delivered" can never mean "nobody was listening"), then with the
policy's rules.

Checks for every probe: delivered iff explain (asked with the remote and local address,
the interface and the ICMP type, so that every verdict is decided) says allow or
monitor; a TCP connect denied with reject fails at once (reset or ICMP error), not by
timeout; a logged verdict leaves a kernel log line with the policy's prefix, the
interface, the addresses and what nf_log prints for the protocol (``DPT=`` for tcp and
udp, ``PROTO=ICMP TYPE=8 CODE=0 ID=...``, ``PROTO=47``, ``PROTO=ESP SPI=...``; see
``log_needles``); and each monitor rule's counter reads back exactly the number of its
delivered probes.

Conntrack keys ICMP queries on their identifier, and GRE (version 0), ESP, AH and VRRP
on the address pair alone, and it remembers a flow across rule reloads: so every ICMP
probe has an identifier of its own, and a raw-protocol probe between a remote and a
host address goes in one direction only (``raw_direction``), or the reverse probe would
be a reply (ESTABLISHED) and pass whatever the rules say.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fwgen.explain import Explainer
from fwgen.ir import ICMP_NUMBER, ICMPV6_NUMBER, Direction, Rule, Ruleset, by_protocol
from fwgen.targets.iptables import chains_for
from tests.differential.policygen import HOST_LINK, HOST_V4, HOST_V6, LINKS, PEER_LINK, PEER_V4, PEER_V6
from tests.kernel.netns import (
    Agent,
    KernelLog,
    Namespace,
    NetnsError,
    Probe,
    ProbeResult,
    connect,
    load_iptables,
    load_nft,
    mac_address,
    static_neighbours,
)

TCP_TIMEOUT = 0.6
# How long a UDP probe waits for an ICMP error. Delivery is judged by the listener, never
# by the prober's status, so this only has to outlast the datagram's trip over the veth.
UDP_WAIT = 0.1
# Client sockets take their source ports from here (set in every namespace), and no probe
# targets it: a listener must never find its port taken by a concurrent probe's socket.
CLIENT_PORTS = (60000, 61999)
OPEN_IPTABLES = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
TARGETS = ("iptables", "nftables")
# Each lab's host addresses are the canonical ones (policygen.HOST_V4/HOST_V6, the
# iptables lab's) plus this offset: the two labs log to one kernel log at the same time,
# and a log line is told apart by its host address. The policies' local networks are
# /31s and wider, so a network holds both labs' address or neither (except the single
# addresses policygen lists on purpose).
LAB_OFFSET = {"iptables": 0, "nftables": 1}
ICMP_NEW = {4: (8, 13, 15, 17), 6: (128, 139)}  # the query types conntrack tracks as NEW
RAW_PROTOCOLS = (47, 50, 51, 112)  # GRE, ESP, AH, VRRP
ICMP_PROTOCOL = {4: "icmp", 6: "icmpv6"}
SETTLE = 0.05  # after the last probe, for datagrams and raw packets still in flight


def family(address: str) -> int:
    return ipaddress.ip_address(address).version


def lab_address(target: str, canonical: str) -> str:
    return str(ipaddress.ip_address(canonical) + LAB_OFFSET[target])


@dataclass(frozen=True)
class Case:
    """One probe, as explain is asked about it. ``local`` is the canonical host address
    (``policygen.HOST_V4``/``HOST_V6``; each lab uses its own, ``lab_address``), None for
    the family's first; ``profile`` is the Windows profile (the model only)."""

    direction: str  # in | out
    protocol: str | int  # tcp | udp | icmp | icmpv6 | an IP protocol number (RAW_PROTOCOLS)
    port: int | None  # tcp and udp only
    remote: str  # the peer's address
    local: str | None = None
    icmp: tuple[int, int] | None = None  # icmp and icmpv6 only: (type, code)
    profile: str | None = None

    @property
    def family(self) -> int:
        return family(self.remote)

    @property
    def interface(self) -> str:
        """The host interface the probe arrives on (in) or leaves by (out)."""
        return PEER_LINK[self.remote]

    @property
    def canonical_local(self) -> str:
        return self.local or (HOST_V4 if self.family == 4 else HOST_V6)[0]

    @property
    def kind(self) -> str:
        """tcp | udp | icmp | icmpv6 | raw"""
        return self.protocol if isinstance(self.protocol, str) else "raw"


@dataclass(frozen=True)
class Sent:
    """How one probe went: what the prober said, whether the other side got it, and the
    packet's actual addresses and ICMP identifier (or ESP/AH SPI)."""

    status: str
    delivered: bool
    src: str
    dst: str
    ident: int


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
    sent: Sent | None = None
    local: str = ""  # the lab's own host address


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


def restricts_more(rule: Rule) -> bool:
    """The rule matches on something besides protocol and port: a probe must vary the
    remote address, the local address and the link to meet every side of it."""
    return any(x is not None for x in (rule.remote_v4, rule.remote_v6, rule.local_v4, rule.local_v6,
                                       rule.interfaces))


def icmp_points(rules: tuple[Rule, ...], number: int, types: tuple[int, ...] | None) -> set[tuple[int, int]]:
    """(type, code) pairs at the edges of every rule's ICMP type/code intervals of
    protocol ``number`` (1 or 58), and code 0 of every type in ``types``; only types in
    ``types`` (None: every type)."""
    points = {(t, 0) for t in types or ()}
    for rule in rules:
        for lo, hi in by_protocol(rule.other).get(number, ()):
            if (lo, hi) == (0, 0xFFFF):
                continue
            for value in (lo - 1, lo, hi, hi + 1):
                if 0 <= value <= 0xFFFF and (types is None or value >> 8 in types):
                    points.add((value >> 8, value & 0xFF))
    return points


def raw_direction(remote: str, local: str) -> str:
    """The one direction raw-protocol probes between these two addresses take (see the
    module docstring): alternating over the pairs, so each direction meets every remote
    address and every host address."""
    peers = PEER_V4 + PEER_V6
    hosts = HOST_V4 + HOST_V6
    return "in" if (peers.index(remote) + hosts.index(local)) % 2 == 0 else "out"


def choose_cases(ruleset: Ruleset, seed: int, per_direction: int = 600) -> list[Case]:
    """Range edges (lo-1, lo, hi, hi+1) and middles of every rule, a few random ports, each
    from or to several peer addresses (all of them where a rule restricts addresses, the
    local address or the interface), the host addresses taking turns; ICMP and ICMPv6
    queries at every rule's type/code edges; every raw protocol. At most
    ``per_direction`` tcp and udp cases per direction."""
    rng = random.Random(seed)
    hosts = {4: HOST_V4, 6: HOST_V6}
    cases: list[Case] = []
    for direction in Direction:
        rules = ruleset.rules_for(direction)
        restricted = any(restricts_more(r) for r in rules)

        def remotes(fam: int | None = None, restricted: bool = restricted) -> list[str]:
            pool = list(PEER_V4 + PEER_V6) if restricted else [rng.choice(PEER_V4), rng.choice(PEER_V6)]
            return [a for a in pool if fam is None or family(a) == fam]

        mine: list[Case] = []
        for protocol in ("tcp", "udp"):
            ports: set[int] = {p for p in (rng.randint(1, 65535) for _ in range(3)) if _probeable(p)}
            for r in rules:
                for proto, ranges in r.ports:
                    if proto.value == protocol:
                        for pr in ranges:
                            ports |= _edges(pr.lo, pr.hi)
            for j, port in enumerate(sorted(ports)):
                for i, remote in enumerate(remotes()):
                    local = hosts[family(remote)][(i + j) % 3]
                    mine.append(Case(direction.value, protocol, port, remote, local))
        if len(mine) > per_direction:
            keep = set(rng.sample(range(len(mine)), per_direction))
            mine = [c for i, c in enumerate(mine) if i in keep]
        cases.extend(mine)
        for fam, number in ((4, ICMP_NUMBER), (6, ICMPV6_NUMBER)):
            for j, point in enumerate(sorted(icmp_points(rules, number, ICMP_NEW[fam]))):
                for i, remote in enumerate(remotes(fam)):
                    local = hosts[fam][(i + j) % 3]
                    cases.append(Case(direction.value, ICMP_PROTOCOL[fam], None, remote, local, point))
        for protocol in RAW_PROTOCOLS:
            for remote in remotes():
                for local in hosts[family(remote)]:
                    if raw_direction(remote, local) == direction.value:
                        cases.append(Case(direction.value, protocol, None, remote, local))
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


_TAG = re.compile(r"fwgen:([a-z]+-\d+);")


class Lab:
    """The host and two peers; lives across many policies."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.host_v4s = tuple(lab_address(target, a) for a in HOST_V4)
        self.host_v6s = tuple(lab_address(target, a) for a in HOST_V6)
        self.host_v4, self.host_v6 = self.host_v4s[0], self.host_v6s[0]
        # identifiers of ICMP queries and ESP/AH SPIs: unique per probe (see the module
        # docstring); a 16-bit counter wraps only after far more probes than conntrack's
        # ICMP timeout (30 s) ever sees
        self._ident = itertools.count(random.Random(target).randrange(1 << 16))
        self._namespaces: list[Namespace] = []
        try:
            self.host = self._namespace()
            self.peers = {link: self._namespace() for link in LINKS}
            self._wire()
            self.agents = {ns.name: Agent(ns) for ns in self._namespaces}
        except BaseException:
            self.close()
            raise
        self.peer = self.peers[LINKS[0]]  # peer A

    def _namespace(self) -> Namespace:
        ns = Namespace().__enter__()
        self._namespaces.append(ns)
        return ns

    def _wire(self) -> None:
        own = {canonical: actual for canonical, actual in zip(HOST_V4 + HOST_V6, self.host_v4s + self.host_v6s,
                                                              strict=True)}
        for link, peer in self.peers.items():
            host_addrs = [own[a] + ("/128" if ":" in a else "/32") for a in own if HOST_LINK[a] == link]
            remotes = [a for a in PEER_V4 + PEER_V6 if PEER_LINK[a] == link]
            peer_if = "fwp" + link[2]
            connect(self.host, peer, host_addrs=host_addrs, peer_addrs=[a + ("/128" if ":" in a else "/32")
                                                                      for a in remotes],
                    host_if=link, peer_if=peer_if)
            for address in remotes:
                self.host.run(["ip", "-6" if ":" in address else "-4", "route", "add", address, "dev", link])
            peer.run(["ip", "route", "add", "default", "dev", peer_if])
            peer.run(["ip", "-6", "route", "add", "default", "dev", peer_if])
            static_neighbours(self.host, link, remotes, mac_address(peer, peer_if))
            static_neighbours(peer, peer_if, list(own.values()), mac_address(self.host, link))
        for ns in self._namespaces:
            ns.run(["sh", "-c", f"echo {CLIENT_PORTS[0]} {CLIENT_PORTS[1]} > /proc/sys/net/ipv4/ip_local_port_range"])

    def close(self) -> None:
        for ns in self._namespaces:
            ns.close()
        self._namespaces.clear()

    def open(self) -> None:
        # our own throwaway namespace only; iptables-nft's tables are nf_tables tables, so this
        # also takes away an earlier policy's mangle table (published_ports: enforce)
        self.host.run(["nft", "flush", "ruleset"])
        if self.target == "iptables":
            load_iptables(self.host, OPEN_IPTABLES, OPEN_IPTABLES)

    def load(self, files: dict[str, str], name: str) -> None:
        """Load one policy's output into a clean host (no table of an earlier policy)."""
        self.open()
        if self.target == "iptables" and "# fwgen iptables mode: chains\n" in files["iptables/rules.v4"]:
            # chains mode: added to the open tables, as on a host other tools share
            self.host.run(["iptables-restore", "--noflush"], input=files["iptables/rules.v4"])
            self.host.run(["ip6tables-restore", "--noflush"], input=files["iptables/rules.v6"])
        elif self.target == "iptables":
            load_iptables(self.host, files["iptables/rules.v4"], files["iptables/rules.v6"])
        else:
            load_nft(self.host, files[f"nftables/{name}.nft"])

    def local(self, case: Case) -> str:
        """The lab's own host address for a case."""
        return lab_address(self.target, case.canonical_local)

    def host_addr(self, remote: str) -> str:
        return self.host_v4 if family(remote) == 4 else self.host_v6

    def send(self, cases: list[Case], tag: str) -> list[Sent]:
        """Run every case once, all at the same time: each namespace's agent listens (tcp,
        udp and raw sockets), then each sends its probes. A ``Sent`` per case, in order."""
        idents = [next(self._ident) & 0xFFFF for _ in cases]
        plans = []  # per case: (client namespace, server namespace, src, dst)
        for case in cases:
            local, peer = self.local(case), self.peers[case.interface]
            plans.append((peer, self.host, case.remote, local) if case.direction == "in"
                         else (self.host, peer, local, case.remote))
        namespaces = [self.host, *self.peers.values()]
        statuses: dict[int, ProbeResult] = {}
        try:
            for ns in namespaces:
                mine = [c for c, plan in zip(cases, plans, strict=True) if plan[1] is ns]
                raw = sorted({(c.family, _ip_protocol(c)) for c in mine if c.kind not in ("tcp", "udp")})
                self.agents[ns.name].listen(["0.0.0.0", "::"], tcp=sorted({c.port for c in mine if c.kind == "tcp"}),
                                            udp=sorted({c.port for c in mine if c.kind == "udp"}), raw=raw)
            for ns in namespaces:
                self.agents[ns.name].ready()

            def probe(client: Namespace) -> None:
                idx = [i for i, plan in enumerate(plans) if plan[0] is client]
                # raw packets first: they are sent at once, and have the TCP timeout to arrive
                idx.sort(key=lambda i: cases[i].kind in ("tcp", "udp"))
                probes = [_probe(cases[i], plans[i][2], plans[i][3], f"{tag}-{i}", idents[i]) for i in idx]
                for i, result in zip(idx, self.agents[client.name].probe(probes), strict=True):
                    statuses[i] = result

            concurrently(*(lambda ns=ns: probe(ns) for ns in namespaces))
            time.sleep(SETTLE)
            for ns in namespaces:
                self.agents[ns.name].request_collect()
            records = {ns.name: self.agents[ns.name].collected() for ns in namespaces}
        except BaseException:
            for agent in self.agents.values():
                agent.restart()  # none is left half-way through a command
            raise
        got: set[tuple[str, Any, str]] = set()  # (namespace, what arrived, its tag)
        for name, found in records.items():
            for r in found:
                match = _TAG.search(r.get("payload") or "")
                if match is None:
                    continue
                what = r["proto"] if r["proto"] == "udp" else (r["proto"], tuple(r["icmp"] or ()), _norm(r["src"]))
                got.add((name, what, match[1]))
        sent = []
        for i, (case, (_, server, src, dst)) in enumerate(zip(cases, plans, strict=True)):
            status = statuses[i].status
            if case.kind == "tcp":
                delivered = status == "connected"
            elif case.kind == "udp":
                delivered = (server.name, "udp", f"{tag}-{i}") in got
            else:
                what = (_ip_protocol(case), case.icmp or (), _norm(src))
                delivered = (server.name, what, f"{tag}-{i}") in got
            sent.append(Sent(status, delivered, src, dst, idents[i]))
        return sent

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
        own = chains_for(ruleset)
        wanted = {own.of(rule) for rule in monitors}
        totals: Counter[str] = Counter()
        for tool in ("iptables", "ip6tables"):
            last: dict[str, int] = {}
            chain = ""
            for line in self.host.run([tool, "-vnxL"]).stdout.splitlines():
                fields = line.split()
                if line.startswith("Chain "):
                    chain = fields[1]
                elif chain in wanted and fields and fields[0].isdigit():
                    last[chain] = int(fields[0])
            totals.update(last)
        return {rule.name: totals[own.of(rule)] for rule in monitors}


def _norm(address: str) -> str:
    return str(ipaddress.ip_address(address))


def _ip_protocol(case: Case) -> int:
    if case.kind == "icmp":
        return ICMP_NUMBER
    if case.kind == "icmpv6":
        return ICMPV6_NUMBER
    assert isinstance(case.protocol, int)
    return case.protocol


def _probe(case: Case, src: str, dst: str, tag: str, ident: int) -> Probe:
    if case.kind in ("tcp", "udp"):
        assert case.port is not None
        timeout = TCP_TIMEOUT if case.kind == "tcp" else UDP_WAIT
        return Probe(case.kind, dst, case.port, src, timeout, payload=f"fwgen:{tag};")
    packet: dict[str, Any] = {"family": case.family, "proto": _ip_protocol(case), "src": src, "dst": dst,
                              "ident": ident, "payload": f"fwgen:{tag};".ljust(20)}
    if case.icmp is not None:
        packet["icmp"] = list(case.icmp)
    else:
        packet["header"] = True
    return Probe("raw", dst, 0, src, packet=packet)


def log_needles(prefix: str, case: Case, sent: Sent) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a kernel log line of this probe contains, and what it must not contain: the
    prefix, the interface, the addresses, and what nf_log prints for the protocol
    (checked against the kernel: tcp/udp ``DPT=``; ``PROTO=ICMP TYPE=8 CODE=0 ID=..``,
    the ID for echo only; ``PROTO=47``, ``PROTO=112``; IPv4 ESP and AH ``PROTO=ESP
    SPI=0x..``; IPv6 AH, an extension header, the protocol behind it, ``PROTO=41``;
    IPv6 ESP no protocol at all)."""
    src, dst = (ipaddress.ip_address(a).exploded if ":" in a else a for a in (sent.src, sent.dst))
    via = f"IN={case.interface} " if case.direction == "in" else f"OUT={case.interface} "
    need = [f"{prefix} ", via, f"SRC={src} ", f"DST={dst} "]
    forbid: list[str] = []
    spi = f"SPI=0x{0x46570000 | sent.ident:x} "
    if case.kind in ("tcp", "udp"):
        need += [f"PROTO={case.kind.upper()} ", f"DPT={case.port} "]
    elif case.icmp is not None:
        icmp_type, code = case.icmp
        need.append(f"PROTO={'ICMP' if case.kind == 'icmp' else 'ICMPv6'} TYPE={icmp_type} CODE={code} ")
        if icmp_type in (8, 128):
            need.append(f"ID={sent.ident} ")
    elif case.protocol == 50 and case.family == 4:
        need.append(f"PROTO=ESP {spi}")
    elif case.protocol == 51 and case.family == 4:
        need.append(f"PROTO=AH {spi}")
    elif case.protocol == 51:
        need.append("PROTO=41 ")
    elif case.protocol == 50:
        forbid.append("PROTO=")
    else:
        need.append(f"PROTO={case.protocol} ")
    return tuple(need), tuple(forbid)


def ask(explainer: Explainer, case: Case, local: str, profile: str | None = None) -> Any:
    """explain's verdict for a case, every dimension given."""
    return explainer.verdict(case.direction, case.protocol, case.port, case.remote, local=local,
                             interface=case.interface, profile=profile, icmp=case.icmp)


def describe_case(case: Case, local: str | None = None) -> str:
    """``in tcp 22 from 198.51.100.5 to 203.0.113.2 via fwa0``: the probe as it went
    (``local``: the lab's address; without it, the canonical one and, in place of the
    interface, the Windows profile)."""
    what = f"{case.kind} {case.port}" if case.port is not None else (
        f"{case.kind} {case.icmp[0]}/{case.icmp[1]}" if case.icmp else f"protocol {case.protocol}")
    mine = local or case.canonical_local
    way = f"from {case.remote} to {mine}" if case.direction == "in" else f"from {mine} to {case.remote}"
    where = f"via {case.interface}" if local is not None else f"profile {case.profile or 'public'}"
    return f"{case.direction} {what} {way} {where}"


def check_policy(lab: Lab, ruleset: Ruleset, files: dict[str, str], explainer: Explainer,
                 cases: list[Case], log: KernelLog | None) -> Report:
    report = Report(lab.target)
    lab.open()
    control = lab.send(cases, "c")
    for case, sent in zip(cases, control, strict=True):
        if not sent.delivered:
            report.fail(f"positive control not delivered ({sent.status}): {describe_case(case, lab.local(case))}")
    lab.load(files, ruleset.name)
    seen_before = len(log.lines()) if log else 0
    results = lab.send(cases, "p")
    for case, sent, csent in zip(cases, results, control, strict=True):
        local = lab.local(case)
        v = ask(explainer, case, local)
        outcome = Outcome(case, v.action, csent.status, sent.status, sent.delivered, v.rule, v.logged, v.enforced,
                          sent, local)
        report.outcomes.append(outcome)
        what = describe_case(case, local)
        if not v.decided:
            report.fail(f"{what}: explain's verdict depends on {', '.join(v.depends_on)}: the harness must "
                        "give every dimension")
        elif sent.delivered != (v.action != "deny"):
            report.fail(f"{what}: explain says {v.action} (rule {v.rule}), packet "
                        f"{'delivered' if sent.delivered else 'not delivered'} ({sent.status})")
        elif v.action == "deny" and case.direction == "in" and case.kind == "tcp":
            if v.enforced == "reject" and sent.status not in ("refused", "unreachable"):
                report.fail(f"{what}: reject should fail fast, got {sent.status}")
            if v.enforced == "drop" and sent.status != "timeout":
                report.fail(f"{what}: drop should time out, got {sent.status}")
    if log is not None:
        lines = log.lines()[seen_before:]
        prefix = ruleset.monitor.log_prefix
        for o in report.outcomes:
            if o.logged and (o.delivered or o.expected == "deny") and not report.problems:
                assert o.sent is not None
                need, forbid = log_needles(prefix, o.case, o.sent)
                if not any(all(n in line for n in need) and not any(f in line for f in forbid) for line in lines):
                    lost = f" (the kernel log ring buffer overwrote {log.lost} records)" if log.lost else ""
                    report.fail(f"{describe_case(o.case, o.local)}: {o.expected} by {o.rule} left no kernel log "
                                f"line {need}{' without ' + str(forbid) if forbid else ''}{lost}")
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


# Probes checked over the session, per (target, what): the summary at the end of the run
# (tests/differential/conftest.py) prints them.
PROBES: Counter[tuple[str, str]] = Counter()
_MATCHES = {"local": lambda r: r.local_v4 is not None or r.local_v6 is not None,
            "interface": lambda r: r.interfaces is not None, "profiles": lambda r: r.profiles is not None}


def tally(target: str, ruleset: Ruleset, decided: list[tuple[Case, str | None]],
          selected: frozenset[int] = frozenset()) -> None:
    """Count checked probes: per protocol kind (icmp, icmpv6, each raw protocol, tcp,
    udp), and, for local, interface, profiles and select, those a rule with that match
    could decide (one of the probe's direction has it) and those such a rule did decide.
    ``selected``: the positions (``Rule.index``) of the rules written with ``select:``,
    which the IR does not mark (a select rule resolves to ports)."""
    by_name = {rule.name: rule for rule in ruleset.rules}
    matches = {**_MATCHES, "select": lambda r: r.index in selected}
    present = {(d.value, match) for d in Direction for match, has in matches.items()
               if any(has(r) for r in ruleset.rules_for(d))}
    for case, rule in decided:
        kind = f"protocol {case.protocol}" if case.kind == "raw" else case.kind
        PROBES[(target, kind)] += 1
        for match, has in matches.items():
            if (case.direction, match) in present:
                PROBES[(target, f"{match}: a rule could decide")] += 1
                if rule is not None and has(by_name[rule]):
                    PROBES[(target, f"{match}: such a rule decided")] += 1
