"""``fwgen report`` counts exactly the probes a real kernel saw.

A policy monitoring 1261 and 1274 (mpshrsv, t1distproc), a logged deny (x11), an
unlogged deny, a monitor rule nobody knocks on and one whose name is too long for
iptables' log prefix is built and loaded into a namespace (iptables, then nftables).
Peers of both families, at known addresses, send known numbers of probes in two
batches. The kernel log is captured with the real ``dmesg`` in each of its forms, and
rendered as a kern.log (plain and gzip-rotated) and as ``journalctl -k -o json`` lines
from dmesg's own times; the counters are saved with ``nft -j list counters`` and
``iptables-save -c``. The report must give exactly the probes sent per rule, port and
source: from counters always, from log lines while under the limiter's burst (the
x11 flood goes past it, and must be reported as a lower bound beside its exact counter).
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import secrets
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fwgen import report as reporting
from fwgen.build import build
from fwgen.explain import Explainer
from fwgen.policy import load_policy
from fwgen.registry import bundled
from fwgen.report_format import document
from tests.kernel.netns import Namespace, Probe, connect, kernel_log_capture, load_iptables, load_nft, run_probes

HOST_V4, HOST_V4B, HOST_V6, HOST_V6B = "192.0.2.1", "198.51.100.1", "2001:db8:1::1", "2001:db8:2::1"
PEERS = ["192.0.2.10", "192.0.2.11", "198.51.100.7", "2001:db8:1::10", "2001:db8:1::11", "2001:db8:2::5"]
LONG_NAME = "long-named-watch-for-tags"  # "PREFIX NAME " is over 29 characters: logged as rule-N
RATE = 20  # per minute; the burst is as large


def policy_text(prefix: str) -> str:
    return f"""version: 1
name: knock
defaults: {{inbound: deny, outbound: allow, deny: drop}}
monitor: {{log_prefix: {prefix}, rate: {RATE}/minute}}
rules:
  - name: dormant-watch
    action: monitor
    ports: [mpshrsv, t1distproc]
  - name: no-x11
    action: deny
    log: true
    ports: [x11]
  - name: quiet
    action: deny
    ports: [9999]
  - name: never-hit
    action: monitor
    ports: [1999]
  - name: {LONG_NAME}
    action: monitor
    ports: [2999]
"""


def _target_of(address: str) -> str:
    return {"192.0.2": HOST_V4, "198.51.100": HOST_V4B, "2001:db8:1:": HOST_V6, "2001:db8:2:": HOST_V6B}[
        next(k for k in ("192.0.2", "198.51.100", "2001:db8:1:", "2001:db8:2:") if address.startswith(k))]


# (protocol, port, source, how many): batch A, then batch B
BATCH_A = [
    ("tcp", 1261, "192.0.2.10", 3), ("udp", 1274, "192.0.2.10", 1), ("tcp", 1274, "192.0.2.11", 2),
    ("udp", 1261, "198.51.100.7", 1), ("tcp", 1261, "2001:db8:1::10", 2), ("tcp", 1274, "2001:db8:1::11", 1),
    ("udp", 1274, "2001:db8:2::5", 2),
    ("tcp", 2999, "192.0.2.11", 1), ("tcp", 2999, "2001:db8:2::5", 1),
    ("udp", 9999, "192.0.2.10", 2), ("udp", 9999, "2001:db8:1::10", 1),
    ("udp", 7777, "198.51.100.7", 1), ("udp", 7777, "2001:db8:2::5", 1),
]
BATCH_B = [("tcp", 1261, "198.51.100.7", 2), ("udp", 1274, "2001:db8:1::11", 1), ("udp", 6005, "198.51.100.7", 60)]
RULE_OF = {1261: "dormant-watch", 1274: "dormant-watch", 6005: "no-x11", 9999: "quiet", 7777: "default-inbound",
           2999: LONG_NAME}


def probes(batch: list[tuple[str, int, str, int]]) -> list[Probe]:
    return [Probe(proto, _target_of(src), port, src, timeout=0.5) for proto, port, src, n in batch for _ in range(n)]


def expected(batches: list[list[tuple[str, int, str, int]]]) -> dict[str, Counter[tuple[str, int, str]]]:
    """Per rule: (protocol, port, source) -> probes sent."""
    found: dict[str, Counter[tuple[str, int, str]]] = {}
    for batch in batches:
        for proto, port, src, n in batch:
            found.setdefault(RULE_OF[port], Counter())[(proto, port, str(ipaddress.ip_address(src)))] += n
    return found


def problems(doc: dict, sent: dict[str, Counter[tuple[str, int, str]]], target: str, logs: bool = True,
             counters: bool = True) -> list[str]:
    """What the report's JSON gets wrong about the probes sent (empty: nothing)."""
    wrong: list[str] = []
    rules = {r["name"]: r for r in doc["rules"]}
    for name in ("dormant-watch", "no-x11", "quiet", "never-hit", LONG_NAME, "default-inbound"):
        total = sum(sent.get(name, Counter()).values())
        row = rules[name]
        has_counter = name != "quiet" or target == "nftables"  # iptables: an unlogged deny has no chain
        if counters and row["counted"] != (total if has_counter else None):
            wrong.append(f"{name}: counted {row['counted']}, sent {total}")
        if logs and row["log_prefix"] is not None:
            if total <= RATE and row["logged"] != total:
                wrong.append(f"{name}: logged {row['logged']}, sent {total} (under the burst)")
            if total > RATE and not (RATE <= row["logged"] < total and row["logged_is_lower_bound"]):
                wrong.append(f"{name}: logged {row['logged']} of {total} is not a lower bound at the burst")
            if counters and total <= RATE and row["logged_is_lower_bound"]:
                wrong.append(f"{name}: logged equals its counter, yet called a lower bound")
    if logs:
        ports = {(p["protocol"], p["port"]): p for p in doc["ports"]}
        want: dict[tuple[str, int], Counter[str]] = {}
        for name in ("dormant-watch", LONG_NAME):
            for (proto, port, src), n in sent.get(name, Counter()).items():
                want.setdefault((proto, port), Counter())[src] += n
        for key, sources in want.items():
            got = {s["address"]: s["count"] for s in ports.get(key, {"sources": []})["sources"]}
            if got != dict(sources):
                wrong.append(f"{key}: sources {got}, sent {dict(sources)}")
        if ("tcp", 1261) in ports and ports[("tcp", 1261)]["services"] != ["mpshrsv"]:
            wrong.append(f"tcp/1261 services {ports[('tcp', 1261)]['services']}")
        if "never-hit" not in doc["zero_hits"]:
            wrong.append(f"zero hits {doc['zero_hits']} lack never-hit")
    return wrong


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "fwgen", "report", *args], capture_output=True, input=stdin,
                          timeout=120)


def report_json(*args: str, stdin: bytes | None = None) -> dict:
    done = cli(*args, "--format", "json", stdin=stdin)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def _iso_lines(dmesg_iso: str) -> list[tuple[datetime, str]]:
    out = []
    for line in dmesg_iso.splitlines():
        stamp, _, message = line.partition(" ")
        out.append((datetime.fromisoformat(stamp.replace(",", ".")), message))
    return out


@pytest.mark.parametrize("target", ["iptables", "nftables"])
def test_report_counts_the_probes_sent(target: str, tmp_path: Path) -> None:
    # this run's own lines, whatever else logs meanwhile or the ring buffer still holds
    prefix = f"rp{secrets.token_hex(3)}-{target[:3]}"
    policy = tmp_path / "knock.yaml"
    policy.write_text(policy_text(prefix), encoding="utf-8")
    result = build(str(policy), bundled())
    with Namespace() as host, Namespace() as peer, kernel_log_capture() as log:
        connect(host, peer, host_addrs=[HOST_V4 + "/24", HOST_V4B + "/24", HOST_V6 + "/64", HOST_V6B + "/64"],
                peer_addrs=[p + ("/64" if ":" in p else "/24") for p in PEERS])
        if target == "iptables":
            load_iptables(host, result.files["iptables/rules.v4"], result.files["iptables/rules.v6"])
        else:
            load_nft(host, result.files["nftables/knock.nft"])
        first = run_probes(peer, probes(BATCH_A))
        assert {r.status for r in first if r.probe.proto == "tcp"} == {"refused"}  # accepted, nothing listens
        # every batch-A line is in the log before batch B starts (the window test needs the order)
        sent_a = expected([BATCH_A])
        logged_a = sum(sum(sent_a[n].values()) for n in ("dormant-watch", LONG_NAME))
        for _ in range(200):
            if len([line for line in log.lines() if line.startswith(prefix + " ")]) >= logged_a:
                break
            time.sleep(0.05)
        run_probes(peer, probes(BATCH_B))
        mine = log.wait_for(f"{prefix} no-x11 ", timeout=10)
        assert len(mine) >= RATE
        captured = [line for line in log.lines() if line.startswith(prefix + " ")]
        dumps = {fmt: subprocess.run(["dmesg", *flags], capture_output=True, text=True, check=True).stdout
                 for fmt, flags in (("raw", []), ("T", ["-T"]), ("t", ["-t"]), ("iso", ["--time-format", "iso"]),
                                    ("x", ["-x"]))}
        if target == "iptables":
            counters = [host.run(["iptables-save", "-c"]).stdout, host.run(["ip6tables-save", "-c"]).stdout]
        else:
            counters = [host.run(["nft", "-j", "list", "counters"]).stdout]
    sent = expected([BATCH_A, BATCH_B])
    # the oracle for the parser: the kernel's own lines, counted by their tags
    tags = Counter(line.split(" ")[1] for line in captured)
    long_rule = next(r for r in result.ruleset.rules if r.name == LONG_NAME)
    assert tags["dormant-watch"] == sum(sent["dormant-watch"].values())
    assert tags[f"rule-{long_rule.index}"] == 2 and tags[LONG_NAME] == 0

    counter_files = []
    for i, text in enumerate(counters):
        path = tmp_path / f"counters{i}"
        path.write_text(text, encoding="utf-8")
        counter_files += ["--counters", str(path)]
    for fmt, text in dumps.items():
        path = tmp_path / f"dmesg-{fmt}.txt"
        path.write_text(text, encoding="utf-8")
        doc = report_json(str(policy), str(path), *counter_files)
        assert doc["inputs"][0]["format"] == "dmesg", fmt
        assert problems(doc, sent, target) == [], fmt

    # kern.log (rsyslog's RFC 3339 form), the older half rotated and gzipped; and the journal
    timed = _iso_lines(dumps["iso"])
    syslog = [f"{stamp.isoformat()} knockhost kernel: {message}" for stamp, message in timed]
    half = len(syslog) // 2
    (tmp_path / "kern.log.1.gz").write_bytes(gzip.compress(("\n".join(syslog[:half]) + "\n").encode()))
    (tmp_path / "kern.log").write_text("\n".join(syslog[half:]) + "\n", encoding="utf-8")
    journal = [json.dumps({"__REALTIME_TIMESTAMP": str(int(stamp.timestamp() * 1e6)), "MESSAGE": message,
                           "_TRANSPORT": "kernel", "SYSLOG_IDENTIFIER": "kernel", "PRIORITY": "4"})
               for stamp, message in timed]
    (tmp_path / "journal.json").write_text("\n".join(journal) + "\n", encoding="utf-8")
    doc = report_json(str(policy), str(tmp_path / "kern.log.1.gz"), str(tmp_path / "kern.log"), *counter_files)
    assert [i["format"] for i in doc["inputs"][:2]] == ["kern.log", "kern.log"]
    assert problems(doc, sent, target) == []
    doc = report_json(str(policy), "-", *counter_files, stdin=(tmp_path / "journal.json").read_bytes())
    assert doc["inputs"][0]["format"] == "journal" and problems(doc, sent, target) == []

    # --since between the batches (a time from the log itself): batch B only
    ours = [stamp for stamp, message in timed if message.startswith(prefix + " ")]
    last_a = ours[logged_a - 1]
    first_b = ours[logged_a]
    assert last_a < first_b
    since = (last_a + (first_b - last_a) / 2).isoformat()
    doc = report_json(str(policy), str(tmp_path / "journal.json"), "--since", since)
    assert problems(doc, expected([BATCH_B]), target, counters=False) == []
    doc = report_json(str(policy), str(tmp_path / "journal.json"), "--until", since)
    assert {r["name"]: r["logged"] for r in doc["rules"] if r["logged"]} == {"dormant-watch": 12, LONG_NAME: 2}
    # dmesg's seconds since boot are no wall-clock time: left out of a window, and said so
    doc = report_json(str(policy), str(tmp_path / "dmesg-raw.txt"), "--since", since)
    assert doc["inputs"][0]["without_time"] >= len(captured) and not any(r["logged"] for r in doc["rules"])
    assert any("no wall-clock time" in note for note in doc["notes"])

    # the same semantics as fwgen explain: each port's knocks are its verdict's rule's
    explainer = Explainer(load_policy(str(policy)), bundled())
    doc = report_json(str(policy), str(tmp_path / "journal.json"), *counter_files)
    for port in doc["ports"]:
        for source in port["sources"]:
            verdict = explainer.verdict("in", port["protocol"], port["port"], source["address"])
            assert [verdict.rule] == port["rules"], (port, source)

    # a broken mapping (every rule tagged as its index) is caught by the same checks
    path_args = (str(tmp_path / "journal.json"),)
    real = reporting.make_report(str(policy), bundled(), path_args, tuple(counter_files[1::2]))[0]
    assert real is not None and problems(document(real), sent, target) == []
    original = reporting.log_tag
    try:
        reporting.log_tag = lambda ruleset, rule: f"{ruleset.monitor.log_prefix} rule-{rule.index} "
        broken = reporting.make_report(str(policy), bundled(), path_args, tuple(counter_files[1::2]))[0]
    finally:
        reporting.log_tag = original
    assert broken is not None
    assert any("dormant-watch: logged 0" in p for p in problems(document(broken), sent, target))


def test_journal_is_run_and_a_missing_journalctl_is_one_line(tmp_path: Path) -> None:
    policy = Path(__file__).resolve().parents[2] / "policies" / "edge.yaml"
    done = cli(str(policy), "--journal", "--format", "json")
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["inputs"][0]["path"] == "journalctl -k -o json"
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "fwgen", "report", str(policy), "--journal"], capture_output=True,
                          env=env, timeout=60, text=True)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "--journal: journalctl not found; pass the kernel log as files instead\n"


def test_since_is_a_time_or_a_duration() -> None:
    policy = Path(__file__).resolve().parents[2] / "policies" / "edge.yaml"
    done = cli(str(policy), "--journal", "--since", "yesterday")
    assert done.returncode == 2 and b"'yesterday' is not a time" in done.stderr
    assert cli(str(policy), "--journal", "--since", "7d", "--until", str(datetime.now() + timedelta(1))).returncode == 0


# ------------------------------------------------------------------ the docs' story (docs/report.md)

EDGE_POLICY = Path(__file__).resolve().parents[2] / "policies" / "edge.yaml"
EDGE_IF = "edge0"  # the host's interface: its lines are this story's, whatever else logs meanwhile
EDGE_KNOCKS = [
    ("tcp", 1261, "203.0.113.45", 3), ("tcp", 1274, "203.0.113.45", 2), ("udp", 1261, "203.0.113.46", 1),
    ("tcp", 1274, "2001:db8:ff::beef", 2), ("tcp", 1274, "192.0.2.10", 1), ("udp", 6010, "203.0.113.45", 14),
]


def edge_story(out: Path) -> tuple[Path, Path]:
    """The edge example on nftables, knocked on from four peers: writes a kern.log of
    the host's lines (rsyslog's form, from dmesg's own times) and the saved counters."""
    result = build(str(EDGE_POLICY), bundled())
    hosts = {"192.0.2": "192.0.2.1", "203.0.113": "203.0.113.1", "2001:db8:ff:": "2001:db8:ff::1"}
    with Namespace() as host, Namespace() as peer, kernel_log_capture() as log:
        connect(host, peer, host_addrs=["192.0.2.1/24", "203.0.113.1/24", "2001:db8:ff::1/48"],
                peer_addrs=["192.0.2.10/24", "203.0.113.45/24", "203.0.113.46/24", "2001:db8:ff::beef/48"],
                host_if=EDGE_IF)
        load_nft(host, result.files["nftables/edge.nft"])
        run_probes(peer, [Probe(proto, next(v for k, v in hosts.items() if src.startswith(k)), port, src,
                                timeout=0.5) for proto, port, src, n in EDGE_KNOCKS for _ in range(n)])
        log.wait_for(f"IN={EDGE_IF} ", timeout=10)
        for _ in range(200):  # every line in (the flood stops at the burst: 10 + 9 knocks)
            if len([line for line in log.lines() if f"IN={EDGE_IF} " in line]) >= 19:
                break
            time.sleep(0.05)
        iso = subprocess.run(["dmesg", "--time-format", "iso"], capture_output=True, text=True, check=True).stdout
        counters = host.run(["nft", "-j", "list", "counters"]).stdout
        # this capture's lines (each names its packet's ID and ports), not an earlier run's
        # that the ring buffer still holds
        captured = {line.rstrip() for line in log.lines() if f" IN={EDGE_IF} " in line}
    kern = out / "kern.log"
    kern.write_text("".join(f"{stamp.isoformat()} edge kernel: {message}\n" for stamp, message in _iso_lines(iso)
                            if message.rstrip() in captured), encoding="utf-8")
    saved = out / "counters.json"
    saved.write_text(counters, encoding="utf-8")
    return kern, saved


def test_the_edge_story(tmp_path: Path) -> None:
    kern, saved = edge_story(tmp_path)
    doc = report_json(str(EDGE_POLICY), str(kern), "--counters", str(saved))
    rules = {r["name"]: (r["logged"], r["counted"], r["logged_is_lower_bound"]) for r in doc["rules"]}
    assert rules["dormant-watch"] == (9, 9, False)
    logged_x11, counted_x11, bound = rules["no-x11"]
    assert (counted_x11, bound) == (14, True) and 10 <= logged_x11 < 14
    ports = {(p["protocol"], p["port"]): {s["address"]: s["count"] for s in p["sources"]} for p in doc["ports"]}
    assert ports[("tcp", 1261)] == {"203.0.113.45": 3}
    assert ports[("tcp", 1274)] == {"192.0.2.10": 1, "203.0.113.45": 2, "2001:db8:ff::beef": 2}
    assert ports[("udp", 1261)] == {"203.0.113.46": 1}
    assert doc["networks"][:2] == [{"network": "192.0.2.0/24", "count": 1},
                                   {"network": "203.0.113.0/24", "count": 6 + logged_x11}]


if __name__ == "__main__":  # python -m tests.kernel.test_report DIR: the capture docs/report.md shows
    story_dir = Path(sys.argv[1])
    story_dir.mkdir(parents=True, exist_ok=True)
    print(*edge_story(story_dir))
