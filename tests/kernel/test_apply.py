"""``fwgen apply`` and ``fwgen remove`` run as the Ansible role runs them: in a network
namespace standing in for the host, with no terminal, the confirmation from a second
process. A good apply confirmed stays; an unconfirmed one is back to the previous rules
byte for byte (nft list table / iptables-save minus counters) within the timeout plus a
second; a broken file changes nothing; the counters of fwgen's rules survive a re-apply."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fwgen.build import build
from fwgen.registry import bundled
from tests.kernel.hostsim import docker_host_rules, foreign, fwgen, fwgen_background, saved
from tests.kernel.netns import Namespace, Probe, connect, listen, run_probes

ROOT = Path(__file__).resolve().parents[2]
EDGE = (ROOT / "policies" / "edge.yaml").read_text(encoding="utf-8")
# v2 of edge: 8080 allowed too, and every rule a line further down (rules keep their
# identity, and their counters, when an edit above them moves them)
EDGE_V2 = "# v2\n" + EDGE.replace("ports: [http, https]", "ports: [http, https, 8080]", 1)
MODES = {"nftables": "", "iptables": "", "chains": "iptables: {mode: chains}\n",
         # published_ports: enforce puts fwgen's chains into the mangle table too
         "table-published": "published_ports: enforce\n",
         "chains-published": "iptables: {mode: chains}\npublished_ports: enforce\n"}
TIMEOUT = 1.5


def built(tmp: Path, text: str, mode: str) -> Path:
    """OUT (out/edge) holding only the target of ``mode``."""
    target = "nftables" if mode == "nftables" else "iptables"
    tmp.mkdir(parents=True, exist_ok=True)
    policy = tmp / "edge.yaml"
    policy.write_text(text.replace("name: edge\n", "name: edge\n" + MODES[mode], 1), encoding="utf-8")
    out = tmp / "out" / "edge"
    for path, content in build(str(policy), bundled(), (target,)).files.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(content, encoding="utf-8")
    return out


def state_of(ns: Namespace, mode: str) -> str:
    """What a rollback must give back byte for byte: nft's whole ruleset, or both
    families' iptables-save minus counters."""
    if mode == "nftables":
        return ns.run(["nft", "list", "ruleset"]).stdout
    return saved(ns, 4) + saved(ns, 6)


def prepare(ns: Namespace, mode: str, tmp: Path, with_v1: bool) -> None:
    """The host before the apply: Docker's rules (iptables) or another tool's table
    (nftables), and, when ``with_v1``, edge v1 applied and kept."""
    if mode == "nftables":
        ns.run(["nft", "add table inet othertool"])
    else:
        ns.run(["iptables-restore"], input=docker_host_rules(4))
        ns.run(["ip6tables-restore"], input=docker_host_rules(6))
    if with_v1:
        done = fwgen(ns, "apply", str(built(tmp / "v1", EDGE, mode)), "--timeout", "0", "--state-dir", str(tmp / "s"))
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("with_v1", [True, False], ids=["over-v1", "first-apply"])
def test_unconfirmed_apply_rolls_back_byte_for_byte(tmp_path: Path, mode: str, with_v1: bool) -> None:
    out = built(tmp_path / "v2", EDGE_V2, mode)
    with Namespace() as host:
        prepare(host, mode, tmp_path, with_v1)
        before = state_of(host, mode)
        waiting = fwgen_background(host, "apply", str(out), "--timeout", str(TIMEOUT), "--state-dir",
                                   str(tmp_path / "s"))
        deadline = time.monotonic() + 15
        while not (tmp_path / "s" / "pending").exists():  # written once the new rules are loaded
            assert time.monotonic() < deadline and waiting.poll() is None, waiting.communicate()
            time.sleep(0.02)
        loaded = time.monotonic()
        assert state_of(host, mode) != before  # the control: the new rules are in
        _, err = waiting.communicate(timeout=TIMEOUT + 10)
        elapsed = time.monotonic() - loaded  # from the new rules loaded to the old ones back
        assert waiting.returncode == 1
        assert err == f"fwgen: not confirmed within {TIMEOUT:g} s; rolled back to the previous rules\n"
        assert elapsed < TIMEOUT + 1.0, elapsed
        assert state_of(host, mode) == before


@pytest.mark.parametrize("mode", list(MODES))
def test_confirmed_apply_stays(tmp_path: Path, mode: str) -> None:
    out = built(tmp_path / "v2", EDGE_V2, mode)
    state = str(tmp_path / "s")
    with Namespace() as host, Namespace() as reference:
        prepare(host, mode, tmp_path, with_v1=True)
        prepare(reference, mode, tmp_path / "ref", with_v1=False)
        done = fwgen(reference, "apply", str(out), "--timeout", "0", "--state-dir", str(tmp_path / "ref-s"))
        assert done.returncode == 0, done.stderr
        waiting = fwgen_background(host, "apply", str(out), "--timeout", "20", "--state-dir", state)
        pending = tmp_path / "s" / "pending"
        deadline = time.monotonic() + 15
        while not pending.exists():  # the rules are loaded once the apply waits
            assert time.monotonic() < deadline and waiting.poll() is None, waiting.communicate()
            time.sleep(0.05)
        confirmed = fwgen(host, "apply", "--confirm", "--state-dir", state)
        assert confirmed.returncode == 0, confirmed.stderr
        assert confirmed.stderr == "fwgen: confirmed; the new rules stay\n"
        _, err = waiting.communicate(timeout=10)
        assert waiting.returncode == 0, err
        assert err.startswith("fwgen: confirmed; keeping ")
        time.sleep(TIMEOUT)  # long after a rollback would have happened
        assert _without_counters(state_of(host, mode)) == _without_counters(state_of(reference, mode))
        # nothing is waiting any more
        late = fwgen(host, "apply", "--confirm", "--state-dir", state)
        assert late.returncode == 1 and "no fwgen apply is waiting" in late.stderr


def _without_counters(text: str) -> str:
    return re.sub(r"packets \d+ bytes \d+", "packets N bytes N", text)


@pytest.mark.parametrize("mode", list(MODES))
def test_a_broken_file_changes_nothing(tmp_path: Path, mode: str) -> None:
    out = built(tmp_path / "v2", EDGE_V2, mode)
    if mode == "nftables":
        path = out / "nftables" / "edge.nft"
        path.write_text(path.read_text().replace("accept", "acept", 1))
    else:
        path = out / "iptables" / "rules.v6"
        path.write_text(path.read_text().replace("-j ACCEPT", "-j ACCEPT --bogus", 1))
    with Namespace() as host:
        prepare(host, mode, tmp_path, with_v1=True)
        before = state_of(host, mode)
        done = fwgen(host, "apply", str(out), "--timeout", "5", "--state-dir", str(tmp_path / "s"))
        assert done.returncode == 1
        assert done.stderr.startswith("fwgen: refusing to apply: ") and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.endswith("; nothing changed\n")
        assert state_of(host, mode) == before


@pytest.mark.parametrize("mode", list(MODES))
def test_counters_survive_a_re_apply(tmp_path: Path, mode: str) -> None:
    out = built(tmp_path / "v1", EDGE, mode)
    state = str(tmp_path / "s")
    with Namespace() as host, Namespace() as peer:
        connect(host, peer, host_addrs=["192.0.2.1/24"], peer_addrs=["192.0.2.10/24"])
        assert fwgen(host, "apply", str(out), "--timeout", "0", "--state-dir", state).returncode == 0
        with listen(host, "tcp", "0.0.0.0", [1261]):
            assert [r.status for r in run_probes(peer, [Probe("tcp", "192.0.2.1", 1261, "192.0.2.10")])] == [
                "connected"]
        counted = _monitor_counter(host, mode)
        assert counted[0] >= 1  # the SYN at least: the check could fail
        done = fwgen(host, "apply", str(built(tmp_path / "v2", EDGE_V2, mode)), "--timeout", "0", "--state-dir", state)
        assert done.returncode == 0, done.stderr
        assert _monitor_counter(host, mode) == counted
        # the control: loading the file directly resets it
        if mode == "nftables":
            host.run(["nft", "-f", str(out / "nftables" / "edge.nft")])
            assert _monitor_counter(host, mode) == (0, 0)


def _monitor_counter(ns: Namespace, mode: str) -> tuple[int, int]:
    """The dormant-watch monitor rule's counter: nft's named counter, or the packets and
    bytes of the verdict rule in its iptables chain."""
    if mode == "nftables":
        text = ns.run(["nft", "list", "counter", "inet", "edge", "rule_dormant-watch"]).stdout
        found = re.search(r"packets (\d+) bytes (\d+)", text)
        assert found, text
        return int(found.group(1)), int(found.group(2))
    chain = "fwgen-edge-rule-3" if mode.startswith("chains") else "fwgen-rule-3"
    lines = [line for line in ns.run(["iptables-save", "-c"]).stdout.splitlines()
             if f"-A {chain} " in line and "-j ACCEPT" in line]
    assert len(lines) == 1, lines
    packets, octets = re.match(r"\[(\d+):(\d+)\]", lines[0]).groups()  # type: ignore[union-attr]
    return int(packets), int(octets)


def test_remove(tmp_path: Path) -> None:
    state = str(tmp_path / "s")
    with Namespace() as host:
        # nftables: only fwgen's table goes
        host.run(["nft", "add table inet othertool"])
        nft_out = built(tmp_path / "n", EDGE, "nftables")
        assert fwgen(host, "apply", str(nft_out), "--timeout", "0", "--state-dir", state).returncode == 0
        done = fwgen(host, "remove", str(nft_out))
        assert (done.returncode, done.stderr) == (0, "fwgen: removed table inet edge\n")
        assert host.run(["nft", "list", "tables"]).stdout == "table inet othertool\n"
        again = fwgen(host, "remove", "-t", "nftables", "--name", "edge")
        assert (again.returncode, again.stderr) == (0, "fwgen: no table inet edge; nothing to remove\n")

        # chains mode: fwgen's chains and jumps go, Docker's and fail2ban's stay as they were
        host.run(["iptables-restore"], input=docker_host_rules(4))
        host.run(["ip6tables-restore"], input=docker_host_rules(6))
        before = (saved(host, 4), saved(host, 6))
        chains_out = built(tmp_path / "c", EDGE, "chains")
        assert fwgen(host, "apply", str(chains_out), "--timeout", "0", "--state-dir", state).returncode == 0
        assert (saved(host, 4), saved(host, 6)) != before
        copied = chains_out.rename(chains_out.with_name("host-17"))  # the chains' names come from the files
        done = fwgen(host, "remove", str(copied))
        assert done.returncode == 0, done.stderr
        assert done.stderr == "fwgen: removed 5 chains of host-17 and their jumps (IPv4 and IPv6)\n"
        assert (foreign(host, 4), foreign(host, 6)) == before
        assert "fwgen-" not in saved(host, 4) + saved(host, 6)

        # table mode: nothing of it can go alone; the message says how to get the default back
        table_out = built(tmp_path / "t", EDGE, "iptables")
        assert fwgen(host, "apply", str(table_out), "--timeout", "0", "--state-dir", state).returncode == 0
        loaded = (saved(host, 4), saved(host, 6))
        for args in ([str(table_out)], ["-t", "iptables", "--name", "edge"]):
            done = fwgen(host, "remove", *args)
            assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
            assert "table mode" in done.stderr and "distribution default" in done.stderr
            assert (saved(host, 4), saved(host, 6)) == loaded


@pytest.mark.parametrize("answer", ["y", "n"])
def test_on_a_terminal_it_asks(tmp_path: Path, answer: str) -> None:
    """Like iptables-apply: on a terminal, y keeps the rules, anything else rolls back at once."""
    out = built(tmp_path / "v2", EDGE_V2, "nftables")
    with Namespace() as host:
        before = state_of(host, "nftables")
        master, slave = pty.openpty()
        try:
            process = subprocess.Popen(
                host.exec_argv([sys.executable, "-m", "fwgen", "apply", str(out), "--timeout", "20",
                                "--state-dir", str(tmp_path / "s")]),
                cwd=ROOT, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 15
            while not (tmp_path / "s" / "pending").exists():
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
            started = time.monotonic()
            os.write(master, f"{answer}\n".encode())
            _, err = process.communicate(timeout=10)
        finally:
            os.close(master)
            os.close(slave)
        assert err.startswith("fwgen: new rules loaded; keep them? [y/N] (rolling back in 20 s)\n"), err
        if answer == "y":
            assert process.returncode == 0 and "table inet edge" in state_of(host, "nftables")
        else:
            assert time.monotonic() - started < 5  # at once, not after the timeout
            assert process.returncode == 1 and err.endswith("not confirmed (answered no); rolled back to the "
                                                            "previous rules\n")
            assert state_of(host, "nftables") == before


@pytest.mark.parametrize("mode", list(MODES))
def test_first_apply_on_an_empty_host_rolls_back_to_empty(tmp_path: Path, mode: str) -> None:
    out = built(tmp_path / "v1", EDGE, mode)
    with Namespace() as host:
        assert host.run(["nft", "list", "ruleset"]).stdout == ""
        done = fwgen(host, "apply", str(out), "--timeout", "0.5", "--state-dir", str(tmp_path / "s"))
        assert done.returncode == 1 and done.stderr.endswith("rolled back to the previous rules\n"), done.stderr
        # no table at all: not fwgen's, not an empty filter or raw table left behind
        assert host.run(["nft", "list", "ruleset"]).stdout == ""
        assert host.run(["iptables-save"]).stdout == "" and host.run(["ip6tables-save"]).stdout == ""


def test_a_dropped_session_rolls_back(tmp_path: Path) -> None:
    """SIGHUP (the SSH session that ran the apply dropped, as a lockout does) rolls back
    at once, without waiting for the timeout."""
    out = built(tmp_path / "v2", EDGE_V2, "chains")
    with Namespace() as host:
        prepare(host, "chains", tmp_path, with_v1=True)
        before = state_of(host, "chains")
        waiting = fwgen_background(host, "apply", str(out), "--timeout", "60", "--state-dir", str(tmp_path / "s"))
        deadline = time.monotonic() + 15
        while not (tmp_path / "s" / "pending").exists():
            assert time.monotonic() < deadline and waiting.poll() is None, waiting.communicate()
            time.sleep(0.05)
        assert state_of(host, "chains") != before  # the control: v2 is loaded
        started = time.monotonic()
        waiting.send_signal(signal.SIGHUP)
        _, err = waiting.communicate(timeout=10)
        assert time.monotonic() - started < 3
        assert (waiting.returncode, err) == (1, "fwgen: stopped by SIGHUP; rolled back to the previous rules\n")
        assert state_of(host, "chains") == before


def test_table_mode_takes_an_older_files_published_chains_out_of_mangle(tmp_path: Path) -> None:
    """A table-mode file without published_ports: enforce holds no mangle table; applied
    over one with it, it must not leave the older judging chain deciding published
    connections (and a rollback puts it back)."""
    state = str(tmp_path / "s")
    with Namespace() as host:
        prepare(host, "iptables", tmp_path, with_v1=False)
        enforcing = built(tmp_path / "v1", EDGE, "table-published")
        assert fwgen(host, "apply", str(enforcing), "--timeout", "0", "--state-dir", state).returncode == 0
        loaded = state_of(host, "iptables")
        assert ":fwgen-published" in loaded and "-j fwgen-published" in loaded  # the control
        plain = built(tmp_path / "v2", EDGE_V2, "iptables")
        done = fwgen(host, "apply", str(plain), "--timeout", "0.5", "--state-dir", state)
        assert done.returncode == 1, done.stderr  # unconfirmed: back to the enforcing file
        assert state_of(host, "iptables") == loaded
        done = fwgen(host, "apply", str(plain), "--timeout", "0", "--state-dir", state)
        assert done.returncode == 0, done.stderr
        now = state_of(host, "iptables")
        assert "fwgen-published" not in now
        assert "-A FORWARD -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu" not in now  # replaced
