"""The monitor rate limit caps a flood of log lines, while every connection is still
accepted and counted."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from fwgen.build import build
from fwgen.registry import bundled
from tests.differential.harness import Lab
from tests.differential.policygen import PEER_LINK, PEER_V4, PEER_V6
from tests.kernel.netns import KernelLog, Probe, listen, run_probes

POLICY = """\
version: 1
name: flood
monitor: {log_prefix: fwgenF, rate: 5/minute}
rules:
  - name: watch
    action: monitor
    protocol: tcp
    ports: [1261]
"""
FLOOD = 40
# lab.peer is peer A: the addresses it owns
PEER_A = {f: [a for a in peers if PEER_LINK[a] == "fwa0"] for f, peers in ((4, PEER_V4), (6, PEER_V6))}


@pytest.mark.parametrize("target", ["iptables", "nftables"])
def test_limiter_caps_a_flood(labs: tuple[dict[str, Lab], KernelLog], tmp_path: Path, target: str) -> None:
    lab, log = labs[0][target], labs[1]
    path = tmp_path / "flood.yaml"
    path.write_text(POLICY, encoding="utf-8")
    result = build(str(path), bundled())
    lab.load(result.files, "flood")
    before = len(log.lines())
    probes = [Probe("tcp", lab.host_v4, 1261, PEER_A[4][i % len(PEER_A[4])], 1.0) for i in range(FLOOD)]
    with listen(lab.host, "tcp", ["0.0.0.0"], [1261]):
        statuses = [r.status for r in run_probes(lab.peer, probes)]
    assert statuses == ["connected"] * FLOOD
    log.wait_for("fwgenF watch ", timeout=2)
    lines = [line for line in log.lines()[before:]
             if "fwgenF watch " in line and f"DST={lab.host_v4} " in line and "DPT=1261 " in line]
    # a burst of 5 (one minute's worth), then 5/minute: the flood takes well under a
    # minute, so at most one more token can have been earned
    assert 5 <= len(lines) <= 6, lines
    counts = lab.counters(result.ruleset)
    assert counts["watch"] == FLOOD
    if target == "nftables":
        listing = lab.host.run(["nft", "list", "chain", "inet", "flood", "rule_watch"]).stdout
        assert re.search(r"limit rate 5/minute( burst 5 packets)? log", listing)  # nft omits the default burst


@pytest.mark.parametrize("target", ["iptables", "nftables"])
def test_limiter_per_family(labs: tuple[dict[str, Lab], KernelLog], tmp_path: Path, target: str) -> None:
    """30 IPv4 and 30 IPv6 connections to a monitored port. nftables' inet table has one
    limiter per rule: at most one burst of lines in all. iptables has one per rule in
    each of rules.v4 and rules.v6: a burst in each family (docs/targets.md says so)."""
    lab, log = labs[0][target], labs[1]
    path = tmp_path / "flood.yaml"
    path.write_text(POLICY, encoding="utf-8")
    result = build(str(path), bundled())
    lab.load(result.files, "flood")
    before = len(log.lines())
    peers = PEER_A
    hosts = {4: lab.host_v4, 6: lab.host_v6}
    probes = [Probe("tcp", hosts[f], 1261, peers[f][i % len(peers[f])], 1.0) for f in (4, 6) for i in range(30)]
    with listen(lab.host, "tcp", ["0.0.0.0", "::"], [1261]):
        statuses = [r.status for r in run_probes(lab.peer, probes)]
    assert statuses == ["connected"] * 60
    log.wait_for("fwgenF watch ", timeout=2)
    lines = [line for line in log.lines()[before:] if "fwgenF watch " in line and "DPT=1261 " in line]
    per_family = {f: sum(f"DST={ipaddress.ip_address(hosts[f]).exploded} " in line for line in lines) for f in (4, 6)}
    if target == "nftables":
        assert 5 <= sum(per_family.values()) <= 6, per_family
    else:
        assert all(5 <= n <= 6 for n in per_family.values()), per_family
    assert lab.counters(result.ruleset)["watch"] == 60
