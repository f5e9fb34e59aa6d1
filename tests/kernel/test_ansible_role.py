"""The Ansible role (roles/fwgen) run for real: ``ansible-playbook -c local`` inside a
network namespace that stands in for the host, with a temporary directory for its /etc,
the state directory, the build directory and Ansible's own files, so nothing of the
test machine changes. A peer namespace is the outside world: the reachability check is a
real TCP connect from it to the host's port 2222.

One play, run four times (ansible-playbook's start-up costs seconds, so the runs share
one lab): the first run changes and its rules are live; the second reports changed=0;
``--check --diff`` with an edited policy shows fwgen diff's line and changes nothing; a
lockout policy (it drops the port the check probes) rolls back, leaves the confirmed rules
loaded byte for byte, and fails the play with a clear message.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kernel.netns import Namespace, Probe, connect, listen, run_probes

ROOT = Path(__file__).resolve().parents[2]
HOST, PEER = "10.0.9.1", "10.0.9.2"
PORT = 2222  # what the reachability check probes: the stand-in for SSH
TIMEOUT = 15  # fwgen_timeout: seconds fwgen apply waits for the confirmation (two Ansible tasks run
# between the load and the confirmation: on a loaded 2-core machine they took over 4 s)

POLICY = f"""\
version: 1
name: roletest
targets: [nftables]
defaults: {{inbound: deny, outbound: allow}}
acknowledge: [ssh-lockout]
rules:
  - name: admin
    action: allow
    protocol: tcp
    ports: [{PORT}]
    from: [{PEER}]
  - name: web
    action: allow
    protocol: tcp
    ports: [80]
"""
EDITED = POLICY.replace("ports: [80]", "ports: [80, 443]")
LOCKOUT = POLICY.replace(f"ports: [{PORT}]", "ports: [2223]")  # the port the check probes is now denied

PLAYBOOK = """\
- name: fwgen
  hosts: target
  gather_facts: false
  roles:
    - role: fwgen
"""


@dataclass
class Lab:
    host: Namespace
    peer: Namespace
    work: Path

    @property
    def policy(self) -> Path:
        return self.work / "policies" / "roletest.yaml"

    def play(self, *args: str) -> subprocess.CompletedProcess[str]:
        """ansible-playbook in the host namespace, every path of Ansible's in ``work``."""
        bin_dir = Path(sys.executable).parent
        env = {
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
            "HOME": str(self.work / "home"),
            "ANSIBLE_HOME": str(self.work / "ansible"),
            "ANSIBLE_LOCAL_TEMP": str(self.work / "ansible" / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(self.work / "ansible" / "remote"),
            "ANSIBLE_ASYNC_DIR": str(self.work / "ansible" / "async"),
            "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "0",
            "ANSIBLE_CONFIG": str(self.work / "ansible.cfg"),  # an empty one: no ansible.cfg of this machine
            "LANG": "C.UTF-8",
        }
        argv = [str(bin_dir / "ansible-playbook"), "-i", str(self.work / "inventory.yml"), "-c", "local",
                str(self.work / "playbook.yml"), *args]
        return subprocess.run(self.host.exec_argv(["env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv]),
                              capture_output=True, text=True, timeout=240, cwd=self.work)

    def table(self) -> str:
        return self.host.run(["nft", "list", "table", "inet", "roletest"]).stdout

    def reachable(self) -> bool:
        return run_probes(self.peer, [Probe("tcp", HOST, PORT, PEER, timeout=1.0)])[0].status == "connected"


def recap(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    found = re.search(r"^target\s+:\s+(.*)$", result.stdout, re.MULTILINE)
    assert found, result.stdout[-3000:] + result.stderr[-3000:]
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", found.group(1))}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with Namespace() as host, Namespace() as peer:
        connect(host, peer, host_addrs=[HOST], peer_addrs=[PEER])
        work = tmp_path
        (work / "policies").mkdir()
        (work / "home").mkdir()
        (work / "ansible.cfg").write_text("[defaults]\n", encoding="utf-8")
        (work / "etc").mkdir()
        (work / "etc" / "nftables.conf").write_text("#!/usr/sbin/nft -f\n", encoding="utf-8")
        # the checkout's fwgen, on the controller and on the host alike
        wrapper = work / "fwgen"
        wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m fwgen \"$@\"\n", encoding="utf-8")
        wrapper.chmod(0o755)
        check = [sys.executable, "-c", f"import socket; socket.create_connection(('{HOST}', {PORT}), 2).close()"]
        (work / "inventory.yml").write_text(f"""\
all:
  hosts:
    target:
      ansible_python_interpreter: {sys.executable}
      fwgen_policy: {work}/policies/roletest.yaml
      fwgen_build_dir: {work}/build
      fwgen_controller_executable: {wrapper}
      fwgen_executable: {wrapper}
      fwgen_etc_dir: {work}/etc/fwgen
      fwgen_state_dir: {work}/state
      fwgen_nftables_conf: {work}/etc/nftables.conf
      fwgen_timeout: {TIMEOUT}
      fwgen_reachability_command: {[*peer.exec_argv(check)]!r}
""", encoding="utf-8")
        (work / "playbook.yml").write_text(PLAYBOOK, encoding="utf-8")
        with listen(host, "tcp", [HOST], [PORT], deadline=600):
            yield Lab(host, peer, work)


def test_the_role_deploys_keeps_idempotence_shows_the_diff_and_rolls_back_a_lockout(lab: Lab) -> None:
    lab.policy.write_text(POLICY, encoding="utf-8")
    assert lab.reachable()  # the positive control: before any rule

    first = lab.play()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert recap(first)["changed"] >= 2 and recap(first)["failed"] == 0
    confirmed = lab.table()
    assert "tcp dport 80 accept" in confirmed or "80 : accept" in confirmed
    assert lab.reachable()
    shipped = lab.work / "etc" / "fwgen" / "roletest" / "nftables" / "roletest.nft"
    boot = lab.work / "etc" / "fwgen" / "roletest.nft"
    assert boot.read_text() == shipped.read_text()
    assert (lab.work / "etc" / "nftables.conf").read_text().endswith(f'include "{boot}"\n')
    assert (lab.work / "etc" / "fwgen" / "roletest" / "policy" / "roletest.yaml").read_text() == POLICY

    second = lab.play()
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second)["changed"] == 0  # Ansible's idempotence convention

    lab.policy.write_text(EDITED, encoding="utf-8")
    checked = lab.play("--check", "--diff")
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert "in tcp 443 (https) from any: deny → allow" in checked.stdout  # fwgen diff's line
    assert lab.table() == confirmed and shipped.read_text() == boot.read_text()  # --check changed nothing

    lab.policy.write_text(LOCKOUT, encoding="utf-8")
    locked = lab.play()
    assert locked.returncode != 0
    assert recap(locked)["failed"] == 1
    assert "fwgen: the new rules of roletest were NOT kept on target: fwgen: not confirmed within " \
           f"{TIMEOUT} s; rolled back to the previous rules (the reachability check failed" in locked.stdout, \
        locked.stdout[-4000:]
    assert lab.table() == confirmed  # the confirmed rules, byte for byte
    assert lab.reachable()
    assert not shipped.exists()  # so the next run tries again
    assert "2223" not in boot.read_text()  # the boot copy is still the confirmed policy's


def test_the_example_playbook_uses_the_role(tmp_path: Path) -> None:
    """docs/examples/ansible/playbook.yml, as its README runs it (from its directory, its
    ansible.cfg finding roles/fwgen), passes ansible-playbook's syntax check."""
    example = ROOT / "docs" / "examples" / "ansible"
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "ANSIBLE_HOME": str(tmp_path / "ansible"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
           "ANSIBLE_CONFIG": str(example / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run([str(bin_dir / "ansible-playbook"), "-i", "inventory.yml", "playbook.yml",
                             "--syntax-check"], capture_output=True, text=True, timeout=120, cwd=example, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "playbook: playbook.yml" in result.stdout
