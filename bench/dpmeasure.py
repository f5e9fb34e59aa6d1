"""The measuring stations of the data-plane benchmark (bench/dataplane.py): per ruleset a
fresh namespace pair with the ruleset loaded into its host namespace and the programs of
dptraffic.py running on both sides, measured in short windows (TCP connections/s, UDP
packets/s of one established flow) that the harness interleaves between stations.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field

import dpnetns

TRAFFIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dptraffic.py")
# -I -S: no user site, no .pth files (this sandbox has one importing certifi at every start)
PYTHON = [sys.executable, "-I", "-S", TRAFFIC]
PROBE_PORT = 60001
CONNECT_TIMEOUT = 1.0  # a SYN the ruleset drops (or one retransmitted) fails after 1 s
READY_TIMEOUT = 60.0  # generous: process starts are slow on the loaded machine
START_LEAD = 0.2  # seconds between the last READY and the common start


@dataclass
class Ruleset:
    """What a measurement loads: kind 'none', 'nft' (files: one nft -f file) or 'ipt'
    (files: rules.v4, rules.v6)."""

    label: str
    kind: str
    files: tuple[str, ...] = ()
    error: str = ""  # why it is not measured (a build or load failure); first line
    loads: list[float] = field(default_factory=list)  # kernel load seconds, per try
    file_loads: list[list[float]] = field(default_factory=list)  # the same, per file


def load(ns: dpnetns.Namespace, rs: Ruleset) -> None:
    if rs.kind == "nft":
        ns.run(["nft", "-f", rs.files[0]])
    elif rs.kind == "ipt":
        ns.run(["iptables-restore"], rs.files[0])
        ns.run(["ip6tables-restore"], rs.files[1])
    elif rs.kind != "none":
        raise ValueError(rs.kind)


def _await_ready(procs: list[subprocess.Popen[str]], what: str) -> None:
    end = time.monotonic() + READY_TIMEOUT
    for p in procs:
        _expect(p, "READY", end - time.monotonic(), what)


def _readline(p: subprocess.Popen[str], timeout: float, what: str) -> str:
    assert p.stdout is not None
    if select.select([p.stdout], [], [], max(0.0, timeout))[0]:
        line = p.stdout.readline()
        if line:
            return line.strip()
    p.kill()
    err = p.communicate(timeout=10)[1]
    raise dpnetns.NetnsError(f"{what} did not answer within {timeout:.0f} s"
                             + (f": {dpnetns.first_line(err)}" if err.strip() else ""))


def _expect(p: subprocess.Popen[str], text: str, timeout: float, what: str) -> None:
    line = _readline(p, timeout, what)
    if line != text:
        raise dpnetns.NetnsError(f"{what}: expected {text!r}, got {line[:200]!r}")


@dataclass
class Window:
    """The counts of one window of one station."""

    seconds: float  # asked for; the rates divide by each worker's own elapsed time
    conn_rate: float = 0.0  # connections/s, summed over the clients
    udp_rate: float = 0.0  # datagrams/s that arrived
    established: bool = True  # UDP: the hello was answered before the window (a flow
    # conntrack has seen both ways); False where the ruleset dropped it
    connected: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    received: int = 0  # UDP datagrams that arrived at the receiver
    sent: int = 0
    dropped: int = 0  # arrived, but dropped for a full receive buffer (the receiver lagged)
    late: int = 0  # workers that started after the window's start (should stay 0)


class Station:
    """``with Station(rs, family, threads) as st``: a fresh namespace pair with ``rs``
    loaded into its host namespace, the servers listening there and the clients waiting
    in the peer namespace. Each ``tcp(seconds)`` / ``udp(seconds)`` call is one window:
    every client starts at the same moment and the counts come back. A fresh pair per
    station: no conntrack entry, socket or rule of one ruleset is left for another
    (there is no ``conntrack -F`` on every machine), and a ruleset is loaded as a host
    would load it, into an empty namespace."""

    def __init__(self, rs: Ruleset, family: int, threads: int) -> None:
        self.rs = rs
        self.dst = dpnetns.HOST_ADDRS[family]
        self.any = "::" if family == 6 else "0.0.0.0"
        self.threads = threads
        self.pair = dpnetns.Pair()

    def __enter__(self) -> Station:
        self.pair.__enter__()
        try:
            load(self.pair.host, self.rs)
            host, peer = self.pair.host, self.pair.peer
            server = json.dumps({"addr": self.any, "port": PROBE_PORT})
            client = json.dumps({"addr": self.dst, "port": PROBE_PORT,
                                 "connect_timeout": CONNECT_TIMEOUT})
            self.servers = [host.popen([*PYTHON, "tcp-server", server])]
            self.udp_server = host.popen([*PYTHON, "udp-server", server])
            self.tcp_clients = [peer.popen([*PYTHON, "tcp-client", client])
                                for _ in range(self.threads)]
            self.udp_client = peer.popen([*PYTHON, "udp-client", client])
            _await_ready([*self.servers, self.udp_server, *self.tcp_clients, self.udp_client],
                         f"traffic for {self.rs.label}")
        except BaseException:
            self.pair.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.pair.close()  # kills every process started in the pair

    def _window(self, procs: list[subprocess.Popen[str]], seconds: float) -> list[dict]:
        start = time.time() + START_LEAD
        line = json.dumps({"start": start, "end": start + seconds}) + "\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(line)
            p.stdin.flush()
        bound = START_LEAD + seconds + CONNECT_TIMEOUT + 60
        return [json.loads(_readline(p, bound, f"traffic for {self.rs.label}")) for p in procs]

    def tcp(self, seconds: float) -> Window:
        got = self._window(self.tcp_clients, seconds)
        w = Window(seconds, conn_rate=sum(g["connected"] / g["elapsed"] for g in got),
                   connected=sum(g["connected"] for g in got),
                   failed=sum(g["failed"] for g in got), late=sum(not g["on_time"] for g in got))
        for g in got:
            for name, n in g["errors"].items():
                w.errors[name] = w.errors.get(name, 0) + n
        return w

    def udp(self, seconds: float) -> Window:
        recv, sent = self._window([self.udp_server, self.udp_client], seconds)
        return Window(seconds, udp_rate=recv["received"] / sent["elapsed"],
                      established=sent["answered"], received=recv["received"],
                      sent=sent["sent"], dropped=recv["dropped"], late=int(not sent["on_time"]))
