"""Prove that tests/kernel/netns.py itself works, with hand-written rule files.

Topology for every test: namespace ``host`` (where rules are loaded and listeners run) and
namespace ``client`` (where probes start), joined by one veth with two IPv4 and two IPv6
documentation addresses per side.  No test skips: missing tools or privileges fail."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.kernel import netns
from tests.kernel.netns import (
    Namespace,
    NetnsError,
    Probe,
    connect,
    kernel_log_capture,
    listen,
    load_iptables,
    load_nft,
    nft_check,
    run_probes,
    tcp_connect,
    udp_send,
)

H4, H4B, H6, H6B = "192.0.2.1", "192.0.2.11", "2001:db8::1", "2001:db8::11"
C4, C4B, C6, C6B = "192.0.2.2", "192.0.2.3", "2001:db8::2", "2001:db8::3"

NFT_DROP_1261 = """\
table inet fwgentest
delete table inet fwgentest
table inet fwgentest {
    chain input {
        type filter hook input priority 0; policy accept;
        tcp dport 1261 drop
        udp dport 1261 drop
    }
}
"""

V4_REJECT = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 1261 -j REJECT --reject-with tcp-reset
-A INPUT -p tcp --dport 1263 -j REJECT --reject-with icmp-port-unreachable
COMMIT
"""
V6_REJECT = V4_REJECT.replace("icmp-port-unreachable", "icmp6-adm-prohibited")


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    netns.ensure_tools()
    netns.cleanup_stale()


@pytest.fixture
def pair():
    with Namespace() as host, Namespace() as client:
        link = connect(host, client, [H4, H4B, H6, H6B], [C4, C4B, C6, C6B])
        yield host, client, link


def test_positive_control_without_rules(pair):
    host, client, link = pair
    assert link.host_addrs == [H4, H4B, H6, H6B]
    with listen(host, "tcp", [H4, H6], [1261, 1262]) as tcp, \
            listen(host, "udp", [H4B, H6B], [1261]) as udp:
        probes = [Probe("tcp", dst, port, src) for dst, src in ((H4, C4), (H4, C4B), (H6, C6))
                  for port in (1261, 1262)]
        probes += [Probe("udp", H4B, 1261, C4B, id="u4"), Probe("udp", H6B, 1261, C6, id="u6")]
        results = run_probes(client, probes)
        assert [r.status for r in results] == ["connected"] * 6 + ["sent"] * 2
        assert {("tcp", 1261, C4), ("tcp", 1262, C4B), ("tcp", 1262, C6)} <= tcp.received()
        assert {(r["src"], r["dst"], r["payload"]) for r in udp.stop()} == {
            (C4B, H4B, "fwgen-probe u4"), (C6, H6B, "fwgen-probe u6")}
    # nothing listens on 1264: the kernel answers RST (TCP) / ICMP port unreachable (UDP)
    assert tcp_connect(client, C4, H4, 1264) == "refused"
    assert udp_send(client, C6, H6, 1264) == "refused"


def test_nft_drop_times_out_while_neighbour_port_connects(pair):
    host, client, _ = pair
    nft_check(host, NFT_DROP_1261)
    load_nft(host, NFT_DROP_1261)
    load_nft(host, NFT_DROP_1261)  # the delete-and-recreate idiom must also work on re-runs
    with listen(host, "tcp", [H4, H6], [1261, 1262]) as tcp, \
            listen(host, "udp", [H4], [1261, 1262]) as udp:
        res = run_probes(client, [Probe("tcp", H4, 1261, C4, timeout=0.5),
                                  Probe("tcp", H4, 1262, C4), Probe("tcp", H6, 1261, C6),
                                  Probe("tcp", H6, 1262, C6), Probe("udp", H4, 1261, C4),
                                  Probe("udp", H4, 1262, C4)])
        assert [r.status for r in res] == ["timeout", "connected"] * 2 + ["sent", "sent"]
        assert 0.45 <= res[0].elapsed < 1.5
        assert {p for _, p, _ in tcp.received()} == {1262}
        assert [r["port"] for r in udp.stop()] == [1262]
    assert "tcp dport 1261 drop" in netns.counters_nft(host)


def test_nft_check_rejects_jump_to_missing_chain(pair):
    host, _, _ = pair
    bad = NFT_DROP_1261.replace("tcp dport 1261 drop", "tcp dport 1261 jump nosuch")
    with pytest.raises(NetnsError, match="nosuch"):
        nft_check(host, bad)
    with pytest.raises(NetnsError, match="nft"):
        load_nft(host, bad)


def test_iptables_reject_is_refused_quickly_v4_and_v6(pair):
    host, client, _ = pair
    load_iptables(host, V4_REJECT, V6_REJECT)
    with listen(host, "tcp", [H4, H6], [1261, 1262, 1263]):
        res = run_probes(client, [Probe("tcp", d, p, s, timeout=2.0) for d, s in
                                  ((H4, C4), (H6, C6)) for p in (1261, 1262, 1263)])
    assert [r.status for r in res] == ["refused", "connected", "unreachable"] * 2
    assert all(r.elapsed < 0.5 for r in res), res  # an answer, not a 2 s timeout
    assert res[0].icmp is None and res[0].errno == "ECONNREFUSED"  # RST, not ICMP
    assert res[2].icmp == [3, 3] and res[5].icmp == [1, 1]  # port-unreach / adm-prohibited


def test_iptables_missing_chain_raises_and_applies_nothing(pair):
    host, _, _ = pair
    bad = V4_REJECT.replace("COMMIT", "-A INPUT -p udp -j NOSUCHCHAIN\nCOMMIT")
    with pytest.raises(NetnsError, match="iptables-restore") as exc:
        load_iptables(host, bad, None)
    assert "stderr:" in str(exc.value) and host.name in str(exc.value)
    assert "REJECT" not in netns.counters_iptables(host)  # the failing file is atomic


def test_log_rule_reaches_dmesg_and_sysctl_is_restored(pair):
    host, client, _ = pair
    before = netns.read_nf_log_all_netns()
    rules = ("*filter\n:INPUT ACCEPT [0:0]\n"
             '-A INPUT -p tcp --dport 1261 -j LOG --log-prefix "fwgentest "\nCOMMIT\n')
    load_iptables(host, rules, None)
    with kernel_log_capture() as log:
        assert netns.read_nf_log_all_netns() == "1"
        assert tcp_connect(client, C4, H4, 1261) == "refused"
        hits = log.wait_for("fwgentest ", timeout=3)
    assert netns.read_nf_log_all_netns() == before
    assert any("DPT=1261" in h and f"SRC={C4}" in h for h in hits), hits


def test_sysctl_restored_even_when_the_body_fails():
    before = netns.read_nf_log_all_netns()
    with pytest.raises(ZeroDivisionError), kernel_log_capture():
        _ = 1 / 0
    assert netns.read_nf_log_all_netns() == before


def test_namespaces_and_listeners_are_gone_after_exit_even_on_failure():
    names = []
    with pytest.raises(RuntimeError, match="boom"):
        with Namespace() as a, Namespace() as b:
            connect(a, b, [H4], [C4])
            lst = listen(a, "tcp", [H4], [1261])
            names = [a.name, b.name]
            raise RuntimeError("boom")
    assert lst.proc.poll() is not None
    left = netns.list_namespaces()
    assert names and not set(names) & set(left)
    assert not any(Path("/run/netns", n).exists() for n in names)


def test_many_probes_in_one_batch_take_about_one_timeout(pair):
    host, client, _ = pair
    load_nft(host, NFT_DROP_1261.replace("tcp dport 1261", "tcp dport 20000-20499"))
    ports = list(range(20000, 21000))
    with listen(host, "tcp", [H4], ports) as tcp:
        start = time.monotonic()
        res = run_probes(client, [Probe("tcp", H4, p, C4, timeout=0.5) for p in ports])
        took = time.monotonic() - start
    assert [r.status for r in res] == ["timeout"] * 500 + ["connected"] * 500
    assert len(tcp.received()) == 500
    assert took < 3.0, took


def test_probes_in_several_namespaces_from_threads():
    with Namespace() as host, Namespace() as c1, Namespace() as c2:
        connect(host, c1, [H4], [C4])
        connect(host, c2, ["198.51.100.1"], ["198.51.100.2"])
        out: dict[str, str] = {}
        with listen(host, "tcp", [H4, "198.51.100.1"], [1262]):
            threads = [threading.Thread(target=lambda c=c, s=s, d=d: out.update(
                {c.name: tcp_connect(c, s, d, 1262)})) for c, s, d in
                ((c1, C4, H4), (c2, "198.51.100.2", "198.51.100.1"))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=20)
        assert out == {c1.name: "connected", c2.name: "connected"}


def test_ensure_tools_fails_loudly(monkeypatch):
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None if tool == "nft" else "/x")
    with pytest.raises(NetnsError, match=r"missing tools \['nft'\]"):
        netns.ensure_tools()


def test_command_failure_message_has_stderr(pair):
    host, _, _ = pair
    with pytest.raises(NetnsError, match="stderr: .*nosuchdev"):
        host.run(["ip", "link", "show", "nosuchdev"])
    assert host.run(["ip", "link", "show", "nosuchdev"], check=False).returncode != 0
