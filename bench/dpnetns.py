"""Network namespaces for the data-plane benchmark (bench/dataplane.py).

A ``Pair`` is two namespaces made for one measurement: "host" (where a ruleset is loaded
and the servers listen) and "peer" (the clients), joined by a veth pair with fixed
addresses and permanent neighbour entries (no ARP or neighbour discovery: a ruleset that
does not allow ICMPv6 still passes IPv6, and no first packet waits for resolution).
Names are ``fwgendp-<pid>-<n>``, unique per process; every namespace this process made is
deleted when its ``with`` block ends, on errors and Ctrl-C included, and processes started
in it are killed first. ``cleanup_stale()`` deletes the namespaces of a killed run.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

PREFIX = "fwgendp-"
HOST_IF, PEER_IF = "dph", "dpp"
HOST_MAC, PEER_MAC = "02:00:00:d0:00:01", "02:00:00:d0:00:02"
HOST_ADDRS = {4: "10.199.0.1", 6: "fd00:199::1"}
PEER_ADDRS = {4: "10.199.0.2", 6: "fd00:199::2"}
_counter = itertools.count(1)


class NetnsError(RuntimeError):
    pass


def run(argv: Sequence[str], input_path: str | None = None,
        timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run argv; raise NetnsError with its first line of stderr when it fails."""
    with open(input_path or os.devnull, "rb") as inp:
        try:
            cp = subprocess.run(list(argv), stdin=inp, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise NetnsError(f"timed out after {timeout:.0f} s: {' '.join(argv)}") from e
    out = subprocess.CompletedProcess(cp.args, cp.returncode,
                                      cp.stdout.decode(errors="replace"),
                                      cp.stderr.decode(errors="replace"))
    if out.returncode != 0:
        raise NetnsError(first_line(out.stderr) or f"exit {out.returncode}: {' '.join(argv)}")
    return out


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip() and not line.startswith("# Warning"):
            return line.strip()[:200]
    return ""


class Namespace:
    def __init__(self, role: str) -> None:
        self.name = f"{PREFIX}{os.getpid()}-{next(_counter)}-{role}"
        self.procs: list[subprocess.Popen[str]] = []

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], input_path: str | None = None) -> None:
        run(self.exec_argv(argv), input_path)

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        p = subprocess.Popen(self.exec_argv(argv), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def sysctl(self, key: str, value: object) -> None:
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def delete(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError, OSError):
                pass
        self.procs.clear()
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


class Pair:
    """``with Pair() as pair``: pair.host, pair.peer (Namespace), the veth between them."""

    def __init__(self) -> None:
        self.host = Namespace("host")
        self.peer = Namespace("peer")
        self._made: list[Namespace] = []

    def __enter__(self) -> Pair:
        try:
            for ns in (self.host, self.peer):
                run(["ip", "netns", "add", ns.name])
                self._made.append(ns)
                ns.run(["ip", "link", "set", "lo", "up"])
            run(["ip", "link", "add", HOST_IF, "address", HOST_MAC, "netns", self.host.name,
                 "type", "veth", "peer", "name", PEER_IF, "address", PEER_MAC,
                 "netns", self.peer.name])
            for ns, ifname, addrs, other, mac in (
                    (self.host, HOST_IF, HOST_ADDRS, PEER_ADDRS, PEER_MAC),
                    (self.peer, PEER_IF, PEER_ADDRS, HOST_ADDRS, HOST_MAC)):
                ns.sysctl(f"net.ipv6.conf.{ifname}.accept_dad", 0)
                ns.run(["ip", "addr", "add", f"{addrs[4]}/24", "dev", ifname])
                ns.run(["ip", "addr", "add", f"{addrs[6]}/64", "dev", ifname, "nodad"])
                for fam in (4, 6):
                    ns.run(["ip", "neigh", "replace", other[fam], "lladdr", mac, "dev",
                            ifname, "nud", "permanent"])
                ns.run(["ip", "link", "set", ifname, "up"])
            for ns, ifname in ((self.host, HOST_IF), (self.peer, PEER_IF)):
                _wait_until_up(ns, ifname)
            # the accept queue may hold a burst while the server waits for a core
            self.host.sysctl("net.core.somaxconn", 65535)
            self.host.sysctl("net.ipv4.tcp_max_syn_backlog", 65535)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        while self._made:
            self._made.pop().delete()


def _wait_until_up(ns: Namespace, ifname: str, timeout: float = 10.0) -> None:
    """A veth end reports carrier a moment after ``ip link set up``; a packet sent before
    can be lost."""
    end = time.monotonic() + timeout
    while True:
        out = run(ns.exec_argv(["ip", "-j", "link", "show", "dev", ifname])).stdout
        if json.loads(out)[0].get("operstate") == "UP":
            return
        if time.monotonic() > end:
            raise NetnsError(f"{ifname} in {ns.name} is not up after {timeout:.0f} s")
        time.sleep(0.02)


def list_ours() -> list[str]:
    root = Path("/run/netns")
    return sorted(p.name for p in root.glob(f"{PREFIX}*")) if root.is_dir() else []


def cleanup_stale() -> list[str]:
    """Delete ``fwgendp-<pid>-...`` namespaces whose creating process is gone."""
    stale = [n for n in list_ours() if not Path("/proc", n.split("-")[1]).exists()]
    for name in stale:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    return stale
