"""One data-plane measurement (bench/dataplane.py): a fresh namespace pair, one ruleset
loaded into its host namespace, then the TCP connection rate and the UDP packet rate
from the peer, with the programs of dptraffic.py.

A fresh pair for every measurement: no conntrack entry, socket or rule of one ruleset's
measurement is left for the next (there is no ``conntrack -F`` on every machine), and a
ruleset is loaded exactly as a host would load it, into an empty namespace.
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


@dataclass
class Sample:
    conn_rate: float  # connections/s, all clients together
    conn_failed: int
    conn_errors: dict[str, int]
    accepted: int
    udp_rate: float  # datagrams/s that arrived at the receiver
    udp_sent: int
    udp_dropped: int  # arrived but dropped for a full receive buffer (the receiver lagged)
    late: int  # workers that started after the common start (should be 0)


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
        assert p.stdout is not None
        left = max(0.0, end - time.monotonic())
        if not select.select([p.stdout], [], [], left)[0] or p.stdout.readline().strip() != "READY":
            p.kill()
            err = p.communicate(timeout=10)[1]
            raise dpnetns.NetnsError(f"{what} did not start: {dpnetns.first_line(err)}")


def _result(p: subprocess.Popen[str], timeout: float, what: str) -> dict:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise dpnetns.NetnsError(f"{what} did not finish within {timeout:.0f} s") from None
    if p.returncode != 0:
        raise dpnetns.NetnsError(f"{what} failed: {dpnetns.first_line(err)}")
    return json.loads(out.strip().splitlines()[-1])


def _stop(server: subprocess.Popen[str], what: str) -> dict:
    server.terminate()  # ip netns exec passes SIGTERM on: it execs the program
    return _result(server, 30, what)


def _go(clients: list[subprocess.Popen[str]], duration: float) -> float:
    """Send every client the same window, starting shortly after now; return its start."""
    start = time.time() + START_LEAD
    line = json.dumps({"start": start, "end": start + duration}) + "\n"
    for c in clients:
        assert c.stdin is not None
        c.stdin.write(line)
        c.stdin.close()
        c.stdin = None  # communicate() must not flush a closed pipe
    return start


def tcp_rate(pair: dpnetns.Pair, dst: str, threads: int, duration: float) -> dict:
    server = pair.host.popen([*PYTHON, "tcp-server", json.dumps(
        {"addr": "::" if ":" in dst else "0.0.0.0", "port": PROBE_PORT})])
    _await_ready([server], "tcp server")
    cfg = json.dumps({"addr": dst, "port": PROBE_PORT, "connect_timeout": CONNECT_TIMEOUT})
    clients = [pair.peer.popen([*PYTHON, "tcp-client", cfg]) for _ in range(threads)]
    _await_ready(clients, "tcp client")
    _go(clients, duration)
    got = [_result(c, duration + CONNECT_TIMEOUT + 60, "tcp client") for c in clients]
    accepted = _stop(server, "tcp server")["accepted"]
    errors: dict[str, int] = {}
    for g in got:
        for name, n in g["errors"].items():
            errors[name] = errors.get(name, 0) + n
    return {"rate": sum(g["connected"] for g in got) / duration,
            "failed": sum(g["failed"] for g in got), "errors": errors, "accepted": accepted,
            "late": sum(not g["on_time"] for g in got)}


def udp_rate(pair: dpnetns.Pair, dst: str, duration: float) -> dict:
    server = pair.host.popen([*PYTHON, "udp-server", json.dumps(
        {"addr": "::" if ":" in dst else "0.0.0.0", "port": PROBE_PORT})])
    _await_ready([server], "udp server")
    client = pair.peer.popen([*PYTHON, "udp-client", json.dumps({"addr": dst, "port": PROBE_PORT})])
    _await_ready([client], "udp client")
    _go([client], duration)
    sent = _result(client, duration + 60, "udp client")
    time.sleep(0.2)  # the last datagrams are still on their way through the softirq
    got = _stop(server, "udp server")
    return {"rate": got["received"] / duration, "sent": sent["sent"],
            "dropped": got["dropped"], "late": int(not sent["on_time"])}


def measure(rs: Ruleset, family: int, threads: int, duration: float) -> Sample:
    """Load ``rs`` into a fresh host namespace and measure both rates through it."""
    dst = dpnetns.HOST_ADDRS[family]
    with dpnetns.Pair() as pair:
        load(pair.host, rs)
        tcp = tcp_rate(pair, dst, threads, duration)
        udp = udp_rate(pair, dst, duration)
    return Sample(tcp["rate"], tcp["failed"], tcp["errors"], tcp["accepted"], udp["rate"],
                  udp["sent"], udp["dropped"], tcp["late"] + udp["late"])
