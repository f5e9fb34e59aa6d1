"""bench/dataplane.py, the data-plane benchmark, in its quick mode on two tiny policies:
the table has every row, and the harness measures the ruleset in the host namespace and
not something else: a policy that allows the probe port passes connections and
datagrams, one that drops it passes none (the positive and the negative control), while
"none" passes traffic in the same run. No rate is compared with a threshold: on the
loaded machine only zero against non-zero is stable. Needs root, like the kernel tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "bench" / "dataplane.py"
ROWS = ["none", "none (again)", "stateful minimum (nft, 3 rules)", "fwgen nftables",
        "fwgen iptables", "Aerleon 1.18 nftables", "Aerleon 1.18 iptables (speedway)"]

POLICY = """\
version: 1
name: {name}
defaults:
  inbound: deny
  outbound: allow
  deny: drop
acknowledge: [ssh-lockout]
rules:
  - name: unrelated
    action: allow
    protocol: tcp
    ports: [8080]
  - name: probe-port
    action: {action}
    ports: [60001]
"""


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _table(markdown: str, case: str) -> dict[str, list[str]]:
    """ruleset -> its cells, from the table under '### case'."""
    section = markdown.split(f"\n### {case}\n", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith(("| ruleset", "|---")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_quick_mode_measures_the_loaded_ruleset(tmp_path: Path) -> None:
    for name, action in (("allowprobe", "allow"), ("dropprobe", "deny")):
        (tmp_path / f"{name}.yaml").write_text(POLICY.format(name=name, action=action))
    out, js = tmp_path / "results.md", tmp_path / "results.json"
    with subprocess.Popen(
            [sys.executable, str(HARNESS), "--quick", "--duration", "0.5", "--threads", "2",
             "--policy", str(tmp_path / "allowprobe.yaml"),
             "--policy", str(tmp_path / "dropprobe.yaml"), "--output", str(out), "--json", str(js)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "round 1/1" in stderr  # it measured (the progress lines)
    # its namespaces (fwgendp-<its pid>-...) are gone; other runs' are not ours to judge
    assert not [n for n in _netns() if n.startswith(f"fwgendp-{proc.pid}-")]

    markdown = out.read_text()
    assert markdown.strip() == stdout.strip()  # the table printed is the one written
    for line in ("- nproc: ", "- kernel: ", "- nft / iptables: nftables v"):
        assert line in markdown
    for case in ("allowprobe", "dropprobe"):
        table = _table(markdown, case)
        assert list(table) == ROWS
        for label in ROWS[5:]:  # no Aerleon policy exists for a --policy file: said so
            assert table[label][0] == "no Aerleon policy for a --policy file"
        for label in ROWS[2:5]:
            assert table[label][4] != "—"  # a kernel load time

    rows = {case: {r["ruleset"]: r for r in v} for case, v in json.loads(js.read_text()).items()}
    for case in rows.values():  # "none" and the minimal ruleset pass traffic in both runs
        for label in ROWS[:3]:
            assert case[label]["conn_s"] > 0 and case[label]["udp_s"] > 0, case[label]
    for label in ROWS[3:5]:
        allowed, dropped = rows["allowprobe"][label], rows["dropprobe"][label]
        assert allowed["conn_s"] > 0 and allowed["udp_s"] > 0, allowed
        assert dropped["conn_s"] == 0 and dropped["udp_s"] == 0, dropped
        assert dropped["conn_failed"] > 0 and set(dropped["conn_errors"]) == {"TimeoutError"}
        assert _table(markdown, "dropprobe")[label][:4] == ["0", "0%", "0", "0%"]


def test_bad_options_are_one_line_errors() -> None:
    cp = subprocess.run([sys.executable, str(HARNESS), "--cases", "large,nosuch"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 2
    assert "unknown case(s) nosuch" in cp.stderr
    assert "Traceback" not in cp.stderr
