"""What an audit of fwgen's outputs found around the policy, each reproduced with real
packets in throwaway namespaces: every test here failed on fwgen 1.0's output and passes
on today's (CHANGELOG.md, 1.1.0). Each probe has a positive control: the same packet
with no rules loaded (or through the path the policy allows) is delivered, so "not
delivered" can only mean the rules stopped it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fwgen.build import build
from fwgen.icmp import ICMPV6_CONTROL
from fwgen.registry import bundled
from tests.kernel.netns import (
    Namespace,
    Probe,
    RawReceiver,
    connect,
    listen,
    load_iptables,
    load_nft,
    mac_address,
    raw_send,
    run_probes,
    sysctl,
)

OPEN = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
TARGETS = ("iptables", "nftables")
UDP_PORT = 5000
TCP_TIMEOUT = 0.6


def outputs(tmp_path: Path, text: str, name: str = "audit") -> dict[str, str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"version: 1\nname: {name}\nacknowledge: [ssh-lockout]\n{text}", encoding="utf-8")
    return build(str(path), bundled(), ("iptables", "nftables")).files


def load(ns: Namespace, target: str, files: dict[str, str] | None, name: str = "audit") -> None:
    """Load one target's output into ``ns`` after clearing both (None: no rules at all)."""
    load_iptables(ns, OPEN, OPEN)
    ns.run(["iptables", "-t", "raw", "-F"])
    ns.run(["ip6tables", "-t", "raw", "-F"])
    ns.run(["nft", "flush", "ruleset"])  # our own throwaway namespace only
    if files is None:
        return
    if target == "iptables":
        load_iptables(ns, files["iptables/rules.v4"], files["iptables/rules.v6"])
    else:
        load_nft(ns, files[f"nftables/{name}.nft"])


def delivered(server: Namespace, client: Namespace, sends: list[tuple[str, str]], port: int = UDP_PORT,
              bind: tuple[str, ...] = ("0.0.0.0", "::")) -> list[bool]:
    """UDP datagrams (source, destination) from ``client``: which ones ``server`` got."""
    probes = [Probe("udp", dst, port, src, payload=f"d{i}") for i, (src, dst) in enumerate(sends)]
    with listen(server, "udp", list(bind), [port]) as listener:
        run_probes(client, probes)
        time.sleep(0.3)  # a first datagram waits for neighbour discovery on each hop
    got = {r["payload"] for r in listener.stop()}
    return [f"d{i}" in got for i in range(len(sends))]


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[list[Namespace]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(Namespace()) for _ in range(count)]


# ---------------------------------------------------------------------- 1. FORWARD


def test_iptables_forward_drops_unless_the_policy_routes(tmp_path: Path) -> None:
    """rules.v4/rules.v6 replace the filter table: with FORWARD ACCEPT a forwarding host
    (Docker, Kubernetes, a WireGuard hub) routed everything whatever the policy said."""
    with namespaces(3) as (client, router, server):
        connect(client, router, ["198.51.100.2/24", "2001:db8:c::2/64"], ["198.51.100.1/24", "2001:db8:c::1/64"])
        connect(server, router, ["203.0.113.2/24", "2001:db8:d::2/64"], ["203.0.113.1/24", "2001:db8:d::1/64"])
        for ns, v4, v6 in ((client, "198.51.100.1", "2001:db8:c::1"), (server, "203.0.113.1", "2001:db8:d::1")):
            ns.run(["ip", "route", "add", "default", "via", v4])
            ns.run(["ip", "-6", "route", "add", "default", "via", v6])
        sysctl(router, "net.ipv4.ip_forward", 1)
        sysctl(router, "net.ipv6.conf.all.forwarding", 1)
        sends = [("198.51.100.2", "203.0.113.2"), ("2001:db8:c::2", "2001:db8:d::2")]

        load(router, "iptables", None)
        assert delivered(server, client, sends) == [True, True]  # the router routes
        load(router, "iptables", outputs(tmp_path, "defaults: {inbound: deny, outbound: deny}\n"))
        assert delivered(server, client, sends) == [False, False]
        load(router, "iptables", outputs(tmp_path, "defaults: {forward: allow}\n"))
        assert delivered(server, client, sends) == [True, True]
        # nftables: fwgen's table has no forward chain; the host's other tables decide
        load(router, "nftables", outputs(tmp_path, "defaults: {inbound: deny, outbound: deny}\n"))
        assert delivered(server, client, sends) == [True, True]


# ---------------------------------------------------------------------- 2. martian loopback


@pytest.mark.parametrize("target", TARGETS)
def test_loopback_destination_from_the_wire_is_dropped(tmp_path: Path, target: str) -> None:
    """With route_localnet=1 (kube-proxy sets it) a frame to 127.0.0.1 arriving on a real
    interface reached a service bound to 127.0.0.1 (CVE-2020-8558). ::1 from the wire the
    kernel drops by itself, so only IPv4 can show the hole."""
    with namespaces(2) as (host, peer):
        link = connect(host, peer, ["192.0.2.1/24"], ["192.0.2.2/24"])
        sysctl(host, "net.ipv4.conf.all.route_localnet", 1)
        sysctl(host, f"net.ipv4.conf.{link.host_if}.route_localnet", 1)
        frame = {"frame": link.peer_if, "dst_mac": mac_address(host, link.host_if), "src": "192.0.2.2",
                 "dst": "127.0.0.1", "dport": UDP_PORT, "payload": "martian"}
        policy = outputs(tmp_path, "defaults: {inbound: allow}\n")  # only the always-rules can stop it
        for files in (None, policy):
            load(host, target, files)
            with listen(host, "udp", ["127.0.0.1", "192.0.2.1"], [UDP_PORT]) as listener:
                raw_send(peer, [frame])
                run_probes(peer, [Probe("udp", "192.0.2.1", UDP_PORT, "192.0.2.2", payload="plain")])
            got = {r["payload"] for r in listener.stop()}
            assert "plain" in got  # the rules let ordinary traffic in
            assert ("martian" in got) == (files is None), files is None


# ---------------------------------------------------------------------- 3. reverse path


def _two_links(host: Namespace, peer_a: Namespace, peer_b: Namespace) -> None:
    """peer A routes 192.0.2.0/24 and 2001:db8:a::/48 for the host; peer B owns addresses
    of those networks too (spoofed: the host would answer them through A)."""
    connect(host, peer_a, ["198.51.100.1/24", "2001:db8:1::1/64"], ["198.51.100.2/24", "2001:db8:1::2/64",
                                                                    "192.0.2.5/32", "2001:db8:a::5/128"])
    connect(host, peer_b, ["203.0.113.1/24", "2001:db8:2::1/64"], ["203.0.113.2/24", "2001:db8:2::2/64",
                                                                   "192.0.2.99/32", "2001:db8:a::99/128"])
    host.run(["ip", "route", "add", "192.0.2.0/24", "via", "198.51.100.2"])
    host.run(["ip", "-6", "route", "add", "2001:db8:a::/48", "via", "2001:db8:1::2"])
    for ns, v4, v6 in ((peer_a, "198.51.100.1", "2001:db8:1::1"), (peer_b, "203.0.113.1", "2001:db8:2::1")):
        ns.run(["ip", "route", "add", "default", "via", v4])
        ns.run(["ip", "-6", "route", "add", "default", "via", v6])
    for interface in ("all", "default"):  # IPv4's own check off: the rules must do it (IPv6 has none)
        sysctl(host, f"net.ipv4.conf.{interface}.rp_filter", 0)


ALLOW_ADMIN = f"""rules:
  - name: admin
    action: allow
    protocol: udp
    ports: [{UDP_PORT}]
    from: [192.0.2.0/24, "2001:db8:a::/48"]
"""


@pytest.mark.parametrize("target", TARGETS)
def test_address_restrictions_are_not_met_by_a_spoofed_source(tmp_path: Path, target: str) -> None:
    with namespaces(3) as (host, peer_a, peer_b):
        _two_links(host, peer_a, peer_b)
        honest = [("192.0.2.5", "198.51.100.1"), ("2001:db8:a::5", "2001:db8:1::1")]
        spoofed = [("192.0.2.99", "203.0.113.1"), ("2001:db8:a::99", "2001:db8:2::1")]
        load(host, target, None)
        assert delivered(host, peer_b, spoofed) == [True, True]  # nothing in the kernel stops them
        load(host, target, outputs(tmp_path, ALLOW_ADMIN))
        assert delivered(host, peer_a, honest) == [True, True]
        assert delivered(host, peer_b, spoofed) == [False, False]
        # antispoof: false, for hosts with asymmetric routing, leaves the check out
        load(host, target, outputs(tmp_path, "antispoof: false\n" + ALLOW_ADMIN))
        assert delivered(host, peer_b, spoofed) == [True, True]
        assert delivered(host, peer_a, honest) == [True, True]


# ---------------------------------------------------------------------- 4. ICMPv6 (RFC 4890)


def _icmpv6_received(host: Namespace, peer: Namespace, hops: dict[int, int]) -> set[int]:
    packets = [{"family": 6, "proto": 58, "src": "2001:db8:f::2", "dst": "2001:db8:f::1", "hops": limit,
                "icmp": [icmp_type, 0], "payload": f"t{icmp_type}"} for icmp_type, limit in hops.items()]
    with RawReceiver(host, 6, [58]) as receiver:
        raw_send(peer, packets)
    return {int(r["payload"][1:]) for r in receiver.stop()
            if r["payload"].startswith("t") and r["src"] == "2001:db8:f::2"}


@pytest.mark.parametrize("target", TARGETS)
def test_every_promised_icmpv6_type_passes(tmp_path: Path, target: str) -> None:
    """Conntrack marks 141, 142, 148, 149 and 153 INVALID: with ``ct state invalid drop``
    first they were dropped although docs/targets.md promises them."""
    promised = {icmp_type: hoplimit for icmp_type, hoplimit, _ in ICMPV6_CONTROL}
    with namespaces(2) as (host, peer):
        connect(host, peer, ["2001:db8:f::1/64"], ["2001:db8:f::2/64"])
        load(host, target, None)
        assert _icmpv6_received(host, peer, promised) == set(promised)
        load(host, target, outputs(tmp_path, "defaults: {inbound: deny, outbound: deny}\n"))
        assert _icmpv6_received(host, peer, promised) == set(promised)
        # each is accepted only with the hop limit of its link scope
        assert _icmpv6_received(host, peer, {t: 64 for t in promised}) == set()


@pytest.mark.parametrize("target", TARGETS)
def test_icmp_errors_pass_as_related(tmp_path: Path, target: str) -> None:
    """Errors (destination unreachable here) have no accept of their own: they pass as
    RELATED to the connection they report on, in both families; an unsolicited one is
    INVALID and dropped."""
    with namespaces(2) as (host, peer):
        connect(host, peer, ["198.51.100.1/24", "2001:db8:f::1/64"], ["198.51.100.2/24", "2001:db8:f::2/64"])
        load(host, target, outputs(tmp_path, "defaults: {inbound: deny, outbound: allow}\n"))
        closed = [Probe("udp", dst, 9, src, 1.0) for src, dst in (("198.51.100.1", "198.51.100.2"),
                                                                   ("2001:db8:f::1", "2001:db8:f::2"))]
        assert [r.status for r in run_probes(host, closed)] == ["refused", "refused"]
        for family, proto, src, dst, unreachable in ((4, 1, "198.51.100.2", "198.51.100.1", [3, 3]),
                                                     (6, 58, "2001:db8:f::2", "2001:db8:f::1", [1, 4])):
            with RawReceiver(host, family, [proto]) as receiver:
                raw_send(peer, [{"family": family, "proto": proto, "src": src, "dst": dst, "icmp": unreachable,
                                 "payload": "unsolicited"}])
            assert [r for r in receiver.stop() if r["payload"].endswith("unsolicited")] == []


# ---------------------------------------------------------------------- 5. IGMP


@pytest.mark.parametrize("target", TARGETS)
def test_igmp_with_ttl_1_passes_both_ways(tmp_path: Path, target: str) -> None:
    """IPv6's MLD was accepted, IPv4's IGMP dropped: behind a snooping switch the host
    stops receiving its multicast groups."""
    with namespaces(2) as (host, peer):
        link = connect(host, peer, ["198.51.100.1/24"], ["198.51.100.2/24"])
        for ns, interface in ((host, link.host_if), (peer, link.peer_if)):
            ns.run(["ip", "route", "add", "224.0.0.0/4", "dev", interface])

        def igmp(sender: Namespace, receiver_ns: Namespace, src: str, ttl: int) -> bool:
            with RawReceiver(receiver_ns, 4, [2]) as receiver:
                raw_send(sender, [{"family": 4, "proto": 2, "src": src, "dst": "224.0.0.1", "hops": ttl,
                                   "payload": f"igmp{ttl}"}])
            return any(r["payload"].endswith(f"igmp{ttl}") for r in receiver.stop())

        load(host, target, None)
        assert igmp(peer, host, "198.51.100.2", 1) and igmp(host, peer, "198.51.100.1", 1)
        load(host, target, outputs(tmp_path, "defaults: {inbound: deny, outbound: deny}\n"))
        assert igmp(peer, host, "198.51.100.2", 1), "inbound IGMP (TTL 1)"
        assert igmp(host, peer, "198.51.100.1", 1), "outbound IGMP (TTL 1)"
        assert not igmp(peer, host, "198.51.100.2", 2), "only link-local IGMP (TTL 1) is accepted"

