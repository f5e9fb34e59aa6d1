"""Every generated iptables and nftables file is applied to a real kernel in a
throwaway network namespace (not `--test`, not `nft -c` alone), and the edge example is
probed with real packets."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwgen.build import build
from fwgen.registry import bundled
from tests.kernel.netns import (
    Namespace,
    Probe,
    connect,
    kernel_log_capture,
    listen,
    load_iptables,
    load_nft,
    run_probes,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "policies").glob("*.yaml"))

# Synthetic policies for shapes the examples do not cover.
SYNTHETIC = {
    "many-ports": (
        "version: 1\ndefaults:\n  inbound: allow\n  outbound: deny\n  deny: reject\n"
        "rules:\n"
        "  - action: deny\n    log: true\n    ports: [" + ", ".join(str(p) for p in range(2000, 2200, 2)) + "]\n"
        "  - action: monitor\n    direction: out\n    protocol: udp\n"
        "    ports: [\"100-200\", \"300-400\", 500, \"600-700\", 800, \"900-950\", \"1000-1100\", 1200,"
        " \"1300-1400\"]\n"
        "    to: [192.0.2.0/24, 198.51.100.0/25, \"2001:db8::/32\", \"2001:db8:1::1\"]\n"
    ),
    "hostile": (
        "version: 1\nname: hostile\n"
        "description: \"x\\\"; flush ruleset; # \\n-A INPUT -j ACCEPT\\r\\n} table ip evil {\"\n"
        "rules:\n"
        "  - name: a\n    action: deny\n    ports: [22]\n"
        "    comment: \"\\\" -j ACCEPT\\n-A INPUT -j ACCEPT\\n} chain x { accept ; } \\\\ ' % & | < > ^ \\u00e9\\u4e2d"
        + "x" * 400 + "\"\n"
    ),
    "all-ports": (
        "version: 1\ndefaults:\n  inbound: deny\n  outbound: deny\n"
        "rules:\n  - action: allow\n  - action: allow\n    direction: out\n    to: [\"::/0\"]\n"
    ),
}


def _policies(tmp_path: Path) -> list[Path]:
    paths = list(EXAMPLES)
    for name, text in SYNTHETIC.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


def test_every_output_loads_into_a_real_kernel(tmp_path: Path) -> None:
    registry = bundled()
    for policy in _policies(tmp_path):
        result = build(str(policy), registry)
        name = result.ruleset.name
        with Namespace() as ipt, Namespace() as nft:
            load_iptables(ipt, result.files["iptables/rules.v4"], result.files["iptables/rules.v6"])
            saved_v4 = ipt.run(["iptables-save"]).stdout
            saved_v6 = ipt.run(["ip6tables-save"]).stdout
            for rule in result.ruleset.rules:
                chain = f":fwgen-rule-{rule.index} "
                assert (chain in saved_v4) == (rule.logged and rule.applies_to(4)), (policy.name, rule.name)
                assert (chain in saved_v6) == (rule.logged and rule.applies_to(6)), (policy.name, rule.name)

            # A table of another tool must survive, and re-loading must work (atomic replace).
            nft.run(["nft", "add table inet othertool"])
            text = result.files[f"nftables/{name}.nft"]
            load_nft(nft, text)
            load_nft(nft, text)
            listing = nft.run(["nft", "list", "ruleset"]).stdout
            assert "table inet othertool" in listing
            assert listing.count(f"table inet {name} ") == 1
            counters = nft.run(["nft", "list", "counters", "table", "inet", name]).stdout
            for rule in result.ruleset.rules:
                has_counter = rule.logged or rule.action.value == "deny"
                assert (f"counter rule_{rule.name} " in counters) == has_counter, (policy.name, rule.name)


def test_hostile_text_injects_nothing(tmp_path: Path) -> None:
    path = _policies(tmp_path)[-2]
    assert path.stem == "hostile"
    result = build(str(path), bundled())
    with Namespace() as ipt, Namespace() as nft:
        load_iptables(ipt, result.files["iptables/rules.v4"], result.files["iptables/rules.v6"])
        rules = [line for line in ipt.run(["iptables-save"]).stdout.splitlines() if line.startswith("-A")]
        # loopback destinations from elsewhere, IGMP, invalid, established, loopback, the
        # rule's tcp and udp jumps, the default drop; and the raw table's reverse-path check
        assert len([r for r in rules if r.startswith("-A INPUT")]) == 8
        targets: dict[str, list[str]] = {}
        for r in rules:
            targets.setdefault(r.split()[1], []).append(r.rsplit(" -j ", 1)[1])
        assert targets == {
            "PREROUTING": ["DROP"],
            "INPUT": ["DROP", "ACCEPT", "DROP", "ACCEPT", "ACCEPT", "DROP", "DROP", "DROP"],
            "OUTPUT": ["ACCEPT", "DROP", "ACCEPT", "ACCEPT"],
        }
        load_nft(nft, result.files["nftables/hostile.nft"])
        tables = nft.run(["nft", "list", "tables"]).stdout.split("\n")
        assert [t for t in tables if t] == ["table inet hostile"]
        chains = nft.run(["nft", "list", "chains"]).stdout
        assert sorted(line.split()[1] for line in chains.splitlines() if line.strip().startswith("chain ")) == [
            "input", "output", "prerouting", "rule_a"]
        assert len(nft.run(["nft", "-a", "list", "chain", "inet", "hostile", "rule_a"]).stdout.split("drop")) == 2


ADMIN_V4, OTHER_V4 = "192.0.2.10", "203.0.113.10"
ADMIN_V6, OTHER_V6 = "2001:db8:a::10", "2001:db8:ff::10"
HOST_V4, HOST_V6 = "192.0.2.1", "2001:db8:a::1"


@pytest.mark.parametrize("target", ["iptables", "nftables"])
def test_edge_example_with_real_packets(target: str) -> None:
    result = build(str(ROOT / "policies" / "edge.yaml"), bundled())
    with Namespace() as host, Namespace() as peer, kernel_log_capture() as log:
        connect(host, peer, host_addrs=[HOST_V4 + "/24", "203.0.113.1/24", HOST_V6 + "/48", "2001:db8:ff::1/48"],
                peer_addrs=[ADMIN_V4 + "/24", OTHER_V4 + "/24", ADMIN_V6 + "/48", OTHER_V6 + "/48"])
        if target == "iptables":
            load_iptables(host, result.files["iptables/rules.v4"], result.files["iptables/rules.v6"])
        else:
            load_nft(host, result.files["nftables/edge.nft"])
        probes = [
            Probe("tcp", HOST_V4, 22, ADMIN_V4), Probe("tcp", "203.0.113.1", 22, OTHER_V4),
            Probe("tcp", HOST_V6, 22, ADMIN_V6), Probe("tcp", "2001:db8:ff::1", 22, OTHER_V6),
            Probe("tcp", "203.0.113.1", 443, OTHER_V4),
            Probe("tcp", HOST_V4, 1261, ADMIN_V4), Probe("tcp", HOST_V6, 1274, ADMIN_V6),
            Probe("tcp", HOST_V4, 6010, ADMIN_V4), Probe("tcp", HOST_V4, 8080, ADMIN_V4),
        ]
        for p in probes:
            p.timeout = 0.7
        with listen(host, "tcp", ["0.0.0.0", "::"], [22, 443, 1261, 1274, 6010, 8080]):
            results = [r.status for r in run_probes(peer, probes)]
        assert results == [
            "connected", "timeout", "connected", "timeout", "connected",
            "connected", "connected", "timeout", "timeout",
        ]
        lines = log.wait_for("DPT=1274")
        assert any("fwgen dormant-watch " in line and "DPT=1261" in line for line in log.lines())
        assert any("fwgen dormant-watch " in line for line in lines)
        assert any("fwgen no-x11 " in line and "DPT=6010" in line for line in log.lines())
