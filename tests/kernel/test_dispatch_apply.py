"""A policy large enough for iptables' dispatch tree, in chains mode, through ``fwgen
apply`` and ``fwgen remove`` on a host with Docker's rules: the tree's chains are the
policy's, so a re-apply replaces them (a connection to a port in the tree is decided and
counted by its rule's chain before and after, the counter surviving), and remove deletes
them with the rest, leaving the other tools' rules as they were."""

from __future__ import annotations

import re
from pathlib import Path

from fwgen.build import build
from fwgen.registry import bundled
from tests.kernel.hostsim import docker_host_rules, foreign, fwgen, saved
from tests.kernel.netns import Namespace, Probe, connect, listen, run_probes

PORT = 1261  # watched by rule "probe", in the middle of the tree


def policy(extra: int) -> str:
    rules = [f"  - {{name: m{i}, action: monitor, protocol: tcp, ports: [{2000 + 2 * i}]}}\n" for i in range(extra)]
    rules.insert(extra // 2, f"  - {{name: probe, action: monitor, protocol: tcp, ports: [{PORT}]}}\n")
    return ("version: 1\nname: big\ndefaults: {inbound: deny, outbound: allow}\niptables: {mode: chains}\n"
            "rules:\n" + "".join(rules))


def built(tmp: Path, text: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "big.yaml").write_text(text, encoding="utf-8")
    out = tmp / "out" / "big"
    for path, content in build(str(tmp / "big.yaml"), bundled(), ("iptables",)).files.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(content, encoding="utf-8")
    return out


def probe_counter(ns: Namespace) -> int:
    """Packets of rule "probe"'s verdict line, in its own chain (found by its comment)."""
    found = [line for line in ns.run(["iptables-save", "-c"]).stdout.splitlines()
             if re.match(r"\[\d+:\d+\] -A fwgen-big-rule-\d+ .*\"probe \(", line)]
    assert len(found) == 1, found
    return int(re.match(r"\[(\d+):", found[0])[1])  # type: ignore[index]


def test_a_tree_is_applied_replaced_and_removed_with_the_policy(tmp_path: Path) -> None:
    state = str(tmp_path / "s")
    v1, v2 = built(tmp_path / "v1", policy(200)), built(tmp_path / "v2", policy(201))
    text = (v1 / "iptables" / "rules.v4").read_text(encoding="utf-8")
    tree = re.findall(r"^:(fwgen-big-itcp\d+) ", text, re.M)
    assert len(tree) > 10 and "-A fwgen-big-in -p tcp -m comment" in text and " -g fwgen-big-itcp" in text
    with Namespace() as host, Namespace() as peer:
        connect(host, peer, host_addrs=["192.0.2.1/24"], peer_addrs=["192.0.2.10/24"])
        host.run(["iptables-restore"], input=docker_host_rules(4))
        host.run(["ip6tables-restore"], input=docker_host_rules(6))
        before = (saved(host, 4), saved(host, 6))
        done = fwgen(host, "apply", str(v1), "--timeout", "0", "--state-dir", state)
        assert done.returncode == 0, done.stderr
        with listen(host, "tcp", "0.0.0.0", [PORT, 2001]):
            results = run_probes(peer, [Probe("tcp", "192.0.2.1", PORT, "192.0.2.10"),
                                        Probe("tcp", "192.0.2.1", 2001, "192.0.2.10", 0.5)])
        assert [r.status for r in results] == ["connected", "timeout"]  # 2001: in the tree's span, no rule's
        counted = probe_counter(host)
        assert counted >= 1
        done = fwgen(host, "apply", str(v2), "--timeout", "0", "--state-dir", state)
        assert done.returncode == 0, done.stderr
        assert probe_counter(host) == counted  # the rule's counter survives the tree's replacement
        loaded = saved(host, 4)
        assert loaded.count("-j fwgen-big-in") == 1  # one jump from INPUT, as before
        assert set(re.findall(r"^:(fwgen-big-itcp\d+) ", loaded, re.M)) == set(
            re.findall(r"^:(fwgen-big-itcp\d+) ", (v2 / "iptables" / "rules.v4").read_text(encoding="utf-8"), re.M))
        done = fwgen(host, "remove", str(v2))
        assert done.returncode == 0, done.stderr
        assert (foreign(host, 4), foreign(host, 6)) == before
        assert "fwgen-" not in saved(host, 4) + saved(host, 6)
