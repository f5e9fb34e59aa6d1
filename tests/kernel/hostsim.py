"""A simulated host for the rollout tests: Docker's chains and NAT rules as Docker 24+
lays them out (bridge docker0 172.17.0.0/16 and fd00:d0c::/64, one container publishing
port 8080 -> 80), a fail2ban jail chain ``f2b-sshd`` whose jump fail2ban inserts at INPUT 1,
a VPN's mangle rules (wg-quick's connmark restore, the MSS clamp in mangle FORWARD, where
fwgen's published-ports jump goes too), and helpers to run ``fwgen`` inside a namespace and
to read iptables state."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.kernel.netns import Namespace, NetnsError, connect, mac_address, static_neighbours, sysctl

ROOT = Path(__file__).resolve().parents[2]
BANNED = {4: "192.0.2.66", 6: "2001:db8:a::66"}  # fail2ban has banned this admin address


def docker_host_rules(family: int) -> str:
    """iptables-save of a Docker 24+ host with one published port, a fail2ban jail and a
    VPN's mangle rules."""
    bridge, container = ("172.17.0.0/16", "172.17.0.2") if family == 4 else ("fd00:d0c::/64", "fd00:d0c::2")
    plen = "32" if family == 4 else "128"
    loopback = "127.0.0.0/8" if family == 4 else "::1/128"
    reject = "icmp-port-unreachable" if family == 4 else "icmp6-port-unreachable"
    dnat = f"{container}:80" if family == 4 else f"[{container}]:80"
    return f"""*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p udp -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
-A FORWARD -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d {loopback} -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s {bridge} ! -o docker0 -j MASQUERADE
-A POSTROUTING -s {container}/{plen} -d {container}/{plen} -p tcp -m tcp --dport 80 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination {dnat}
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER -d {container}/{plen} ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
-A f2b-sshd -s {BANNED[family]}/{plen} -j REJECT --reject-with {reject}
-A f2b-sshd -j RETURN
COMMIT
"""


def save_tool(family: int) -> str:
    return "iptables-save" if family == 4 else "ip6tables-save"


def saved(ns: Namespace, family: int) -> str:
    """iptables-save without counters and without its dated comment lines."""
    text = ns.run([save_tool(family)]).stdout
    return "\n".join(re.sub(r" \[\d+:\d+\]$", "", line) for line in text.splitlines()
                     if not line.startswith("#")) + "\n"


def bridged_guest(host: Namespace, guest: Namespace, bridge: str, gateway: tuple[str, str],
                  addresses: tuple[str, str], host_if: str) -> None:
    """``guest`` behind a bridge of ``host``, as Docker (docker0) and a CNI (cni0) make
    one: the bridge holds the gateways (IPv4, IPv6, with prefix lengths), a veth pair
    ``host_if``/eth0 joins the guest (``addresses``, with prefix lengths), whose default
    routes go through the gateways. Neighbour entries are permanent both ways, so no
    first packet waits for ARP or neighbour discovery (which takes longer than a dropped
    SYN's timeout on the bridge)."""
    host.run(["ip", "link", "add", bridge, "type", "bridge"])
    sysctl(host, f"net.ipv6.conf.{bridge}.accept_dad", 0)
    host.run(["ip", "addr", "add", gateway[0], "dev", bridge])
    host.run(["ip", "addr", "add", gateway[1], "dev", bridge, "nodad"])
    connect(host, guest, peer_addrs=list(addresses), host_if=host_if, peer_if="eth0")
    host.run(["ip", "link", "set", host_if, "master", bridge])
    host.run(["ip", "link", "set", bridge, "up"])
    gateways = [address.split("/")[0] for address in gateway]
    guest.run(["ip", "route", "add", "default", "via", gateways[0]])
    guest.run(["ip", "-6", "route", "add", "default", "via", gateways[1]])
    static_neighbours(guest, "eth0", gateways, mac_address(host, bridge))
    static_neighbours(host, bridge, [address.split("/")[0] for address in addresses], mac_address(guest, "eth0"))


def chains_named(ns: Namespace, prefix: str) -> list[str]:
    """``TABLE CHAIN`` of every chain whose name starts with ``prefix``, both families
    (Docker's ``DOCKER``, kube-proxy's ``KUBE-``), sorted."""
    chains = []
    for family in (4, 6):
        table = ""
        for line in saved(ns, family).splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(f":{prefix}"):
                chains.append(f"{table} {line[1:].split()[0]}")
    return sorted(chains)


def _is_fwgen(line: str) -> bool:
    if line.startswith(":fwgen-") or line.startswith("-A fwgen-"):
        return True
    return line.startswith("-A ") and bool(re.search(r" -[jg] fwgen-\S*$", line))


def foreign(ns: Namespace, family: int) -> str:
    """Everything of iptables-save that is not fwgen's state (fwgen's chains and the rules
    jumping to them), leaving out a table that then holds nothing (no rules, no chains of
    its own, every policy ACCEPT): the raw table fwgen's reverse-path check made."""
    kept = [line for line in saved(ns, family).splitlines() if not _is_fwgen(line)]
    sections, current = [], []
    for line in kept:
        current.append(line)
        if line == "COMMIT":
            sections.append(current)
            current = []
    empty = [s for s in sections if all(line.startswith(("*", "COMMIT")) or re.fullmatch(r":\S+ ACCEPT", line)
                                         for line in s)]
    return "".join("\n".join(s) + "\n" for s in sections if s not in empty)


def fwgen_lines(ns: Namespace, family: int) -> list[str]:
    return [line for line in saved(ns, family).splitlines() if _is_fwgen(line)]


def jumps(ns: Namespace, family: int) -> list[str]:
    """fwgen's jumps from chains not its own, in iptables-save order."""
    return [line for line in fwgen_lines(ns, family) if not line.startswith((":fwgen-", "-A fwgen-"))]


def fwgen(ns: Namespace, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``python -m fwgen ARGS`` inside the namespace, this checkout's fwgen, no terminal."""
    argv = ns.exec_argv([sys.executable, "-m", "fwgen", *args])
    try:
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        raise NetnsError(f"fwgen {' '.join(args)} did not finish within {timeout} s") from error


def fwgen_background(ns: Namespace, *args: str) -> subprocess.Popen[str]:
    argv = ns.exec_argv([sys.executable, "-m", "fwgen", *args])
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
