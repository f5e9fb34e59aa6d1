"""``fwgen audit`` against real listeners: a namespace of our own with tcp and udp
sockets, IPv4, IPv6 and both, a loopback one and one on 1261; ``ip netns exec NS fwgen
audit POLICY`` runs ``ss -Htulpn`` itself inside it, and the findings must be exactly
what the policy says about each socket, with the listener's real process and pid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.kernel.netns import Namespace, NetnsError

ROOT = Path(__file__).resolve().parents[2]
POLICY = """\
version: 1
name: audited
defaults: {inbound: deny, outbound: allow}
rules:
  - name: ssh
    action: allow
    ports: [ssh]
  - name: web
    action: allow
    protocol: tcp
    ports: [8080]
    from: [192.0.2.0/24, "2001:db8::/32"]
  - name: dormant-watch
    action: deny
    log: true
    select: [undocumented]
    protocol: udp
    range: "1261-1274"
  - name: watch-dns
    action: monitor
    protocol: udp
    ports: [5353]
"""
# (kind, family, address, port, v6only): what the listener process binds
SOCKETS = [
    ("tcp", 4, "0.0.0.0", 8080, None),
    ("tcp", 6, "::", 22, 1),
    ("udp", 4, "0.0.0.0", 1261, None),
    ("udp", 6, "::", 1274, 0),
    ("tcp", 4, "127.0.0.1", 5432, None),
    ("udp", 6, "::1", 5433, None),
    ("tcp", 6, "::", 1284, 0),
    ("udp", 6, "2001:db8::1", 5353, None),
]
LISTENER = r"""
import socket, sys, json
held = []
for kind, family, address, port, v6only in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6,
                      socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((address, port))
    if kind == "tcp":
        s.listen()
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


def _audit(ns: Namespace, policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(ns.exec_argv([sys.executable, "-m", "fwgen", "audit", str(policy), *args]),
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def _wait_listening(ns: Namespace, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = ns.run(["ss", "-Htuln"]).stdout
        if len([line for line in out.splitlines() if line.strip()]) >= count:
            return
        time.sleep(0.1)
    raise NetnsError(f"listeners did not come up within 60 s: {out}")


def test_audit_of_real_listeners(tmp_path: Path) -> None:
    policy = tmp_path / "audited.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    with Namespace() as ns:
        ns.run(["ip", "address", "add", "2001:db8::1/64", "dev", "lo", "nodad"])
        proc = ns.popen([sys.executable, "-c", LISTENER, json.dumps(SOCKETS)])
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        _wait_listening(ns, len(SOCKETS))
        pid = proc.pid  # ip netns exec execs the listener itself
        done = _audit(ns, policy, "--format", "json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        strict = _audit(ns, policy, "--strict")
        text = _audit(ns, policy)
    assert doc["source"] == "ss -Htulpn, run by fwgen"
    assert doc["summary"] == {"listeners": 8, "exposed": 3, "denied": 3, "loopback": 2, "watched": 3,
                              "need_a_look": 4}
    found = [(f["status"], f["protocol"], f["address"], f["port"], f["families"], f["exposed_to"], f["watched"],
              [(p["name"], p["pid"]) for p in f["processes"]]) for f in doc["listeners"]]
    name = Path(sys.executable).name[:15]  # the kernel's comm: the name exec was given
    me = [(name, pid)]
    assert found == [
        ("denied", "udp", "0.0.0.0", 1261, [4], [], ["select rule dormant-watch (select undocumented: mpshrsv)"], me),
        ("denied", "udp", "*", 1274, [4, 6], [], ["select rule dormant-watch (select undocumented: t1distproc)"],
         me),
        ("exposed", "udp", "2001:db8::1", 5353, [6], ["everyone"], ["monitor rule watch-dns"], me),
        ("denied", "tcp", "*", 1284, [4, 6], [], [], me),
        ("exposed", "tcp", "::", 22, [6], ["everyone"], [], me),
        ("exposed", "tcp", "0.0.0.0", 8080, [4], ["192.0.2.0/24"], [], me),
        ("loopback", "tcp", "127.0.0.1", 5432, [4], [], [], me),
        ("loopback", "udp", "::1", 5433, [6], [], [], me),
    ]
    by_port = {f["port"]: f for f in doc["listeners"]}
    assert by_port[1261]["outcomes"][0]["logged"] is True and by_port[1261]["outcomes"][0]["enforced"] == "drop"
    assert by_port[1284]["outcomes"] == [{"networks": ["everyone"], "verdict": "deny", "rule": None, "line": None,
                                          "logged": False, "enforced": "drop", "depends": []}]
    assert by_port[1284]["note"] == "the policy lets no one in: a dead service or a forgotten rule"
    assert strict.returncode == 1 and strict.stdout == text.stdout
    assert text.returncode == 0
    assert text.stdout.splitlines()[1] == (
        f"watched denied: udp 0.0.0.0:1261 (mpshrsv), {name} (pid {pid}): deny by drop, logged from everyone "
        f"(rule dormant-watch, {policy}:13) (select undocumented: mpshrsv)")
    assert f"loopback: tcp 127.0.0.1:5432 (postgresql), {name} (pid {pid}): bound to loopback only" in text.stdout


def test_audit_reports_a_missing_ss(tmp_path: Path) -> None:
    policy = tmp_path / "audited.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "fwgen", "audit", str(policy)], capture_output=True, text=True,
                          timeout=60, env=env, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr == "fwgen: cannot run ss -Htulpn: No such file or directory\n"
    assert done.stdout == ""
