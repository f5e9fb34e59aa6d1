"""`fwgen build` over many policies: files and directories, OUT/NAME/ whatever the
count, shared files skipped as hosts, every error reported and nothing written, the
same bytes from parallel workers as from one process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fwgen.build import build
from fwgen.cli import main
from fwgen.fleet import build_fleet
from fwgen.registry import bundled

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT / "policies" / "fleet"
OPEN = "version: 1\ntargets: [nftables]\ndefaults: {inbound: allow}\n"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    shutil.copytree(FLEET, tmp_path / "fleet")
    return tmp_path / "fleet"


def test_one_policy_or_many_the_layout_is_out_name(tmp_path: Path) -> None:
    """The layout does not depend on how many files a glob matched."""
    one = tmp_path / "one"
    assert run("build", str(ROOT / "policies" / "edge.yaml"), "-o", str(one))[0] == 0
    many = tmp_path / "many"
    assert run("build", str(ROOT / "policies" / "edge.yaml"), str(ROOT / "policies" / "locked-down.yaml"),
               "-o", str(many))[0] == 0
    assert sorted(tree(one)) == ["edge/iptables/rules.v4", "edge/iptables/rules.v6", "edge/nftables/edge.nft",
                                 "edge/windows/edge-remove.cmd", "edge/windows/edge.cmd"]
    assert {k: v for k, v in tree(many).items() if k.startswith("edge/")} == tree(one)
    assert len(tree(many)) == 10


def test_flat_is_the_1x_layout_for_one_policy(tmp_path: Path) -> None:
    code, out, _ = run("build", str(ROOT / "policies" / "edge.yaml"), "-o", str(tmp_path), "--flat")
    assert code == 0 and sorted(tree(tmp_path)) == ["iptables/rules.v4", "iptables/rules.v6", "nftables/edge.nft",
                                                    "windows/edge-remove.cmd", "windows/edge.cmd"]
    assert out.splitlines()[0] == f"wrote {tmp_path / 'iptables' / 'rules.v4'}"
    code, _, err = run("build", str(FLEET), "-o", str(tmp_path / "x"), "--flat")
    assert code == 2 and "--flat builds exactly one policy file" in err


def test_a_directory_skips_the_files_its_policies_include(fleet: Path, tmp_path: Path) -> None:
    """A shared file beside the policies (not in a subdirectory) is not built as a host."""
    (fleet / "shared.yaml").write_text("version: 1\nnetworks:\n  extra: [192.0.2.99]\n", encoding="utf-8")
    web = fleet / "web.yaml"
    web.write_text(web.read_text(encoding="utf-8").replace("include: [base/networks.yaml]",
                                                           "include: [base/networks.yaml, shared.yaml]"),
                   encoding="utf-8")
    code, out, err = run("build", str(fleet), "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert out.startswith("wrote 9 files for 3 policies under ")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bastion", "db", "web"]
    assert not [p for p in (tmp_path / "out").rglob(".*")]


def test_parallel_workers_write_the_bytes_one_process_writes(fleet: Path, tmp_path: Path) -> None:
    for i in range(12):  # enough policies for several workers
        (fleet / f"h{i:02}.yaml").write_text(OPEN + f"name: h{i:02}\ninclude: [base/networks.yaml]\nrules:\n"
                                             f"  - include: base/rules.yaml\n  - action: deny\n    ports: [{i}]\n",
                                             encoding="utf-8")
    registry = bundled()
    serial = build_fleet([str(fleet)], registry, jobs=1)
    parallel = build_fleet([str(fleet)], registry, jobs=2)
    assert not serial.errors and serial.files == parallel.files
    assert [h.name for h in parallel.hosts] == ["bastion", "db", *(f"h{i:02}" for i in range(12)), "web"]
    alone = build(str(fleet / "web.yaml"), registry)
    assert {k[len("web/"):]: v for k, v in parallel.files.items() if k.startswith("web/")} == alone.files


def test_every_error_is_reported_and_nothing_written(fleet: Path, tmp_path: Path) -> None:
    (fleet / "broken.yaml").write_text("version: 1\nrules:\n  - action: permit\n", encoding="utf-8")
    (fleet / "typo.yaml").write_text(OPEN + "rules:\n  - action: monitor\n    ports: [mpshrv]\n", encoding="utf-8")
    out = tmp_path / "out"
    code, stdout, stderr = run("build", str(fleet), "-o", str(out))
    assert code == 1 and stdout == "" and not out.exists()
    assert stderr.splitlines() == [
        f"{fleet}/broken.yaml:3:13: action must be one of allow | deny | monitor, got text 'permit'",
        f"{fleet}/typo.yaml:6:13: unknown service 'mpshrv' (did you mean 'mpshrsv'?)",
        "fwgen: 2 policies have errors; nothing written",
    ]


def test_two_policies_with_one_name_are_an_error(fleet: Path, tmp_path: Path) -> None:
    (fleet / "web2.yaml").write_text(OPEN + "name: web\n", encoding="utf-8")
    code, _, stderr = run("build", str(fleet), "-o", str(tmp_path / "out"))
    assert code == 1 and not (tmp_path / "out").exists()
    assert stderr.splitlines()[0].startswith(f"{fleet}/web2.yaml:4:7: policy name 'web' is also the name of ")


def test_check_covers_the_whole_fleet(fleet: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run("build", str(fleet), "-o", str(out))[0] == 0
    assert run("build", "--check", str(fleet), "-o", str(out))[:2] == (0, "up to date: 9 files\n")
    rules = fleet / "base" / "networks.yaml"
    rules.write_text(rules.read_text(encoding="utf-8").replace("198.51.100.10", "198.51.100.11"), encoding="utf-8")
    code, stdout, stderr = run("build", "--check", str(fleet), "-o", str(out))
    assert code == 1 and len(stdout.splitlines()) == 9 and "9 of 9 output files out of date" in stderr


def test_stdout_names_each_file_under_its_policy() -> None:
    code, out, _ = run("build", str(FLEET), "-t", "nftables", "--stdout")
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("# ==> ")] == [
        "# ==> bastion/nftables/bastion.nft <==", "# ==> db/nftables/db.nft <==", "# ==> web/nftables/web.nft <=="]


def test_real_process_one_summary_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fwgen", "build", str(FLEET), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith("wrote 9 files for 3 policies under ")
    assert proc.stderr == ""


def test_parallel_workers_leave_nothing_behind_on_an_error(fleet: Path, tmp_path: Path) -> None:
    """The workers stage what they built in the output directory; one bad policy among
    many, and every staged file and every directory made for them is gone again."""
    for i in range(12):
        (fleet / f"h{i:02}.yaml").write_text(OPEN + f"name: h{i:02}\nrules:\n  - action: deny\n    ports: [{i}]\n",
                                             encoding="utf-8")
    (fleet / "h05.yaml").write_text(OPEN + "name: h05\nrules:\n  - action: deny\n    ports: [70000]\n",
                                    encoding="utf-8")
    out = tmp_path / "out"
    (out / "keep").mkdir(parents=True)
    (out / "keep" / "mine.txt").write_text("mine\n", encoding="utf-8")
    code, stdout, stderr = run("build", str(fleet), "-o", str(out), "-j", "2")
    assert code == 1 and stdout == ""
    assert stderr.splitlines() == [f"{fleet}/h05.yaml:7:13: port 70000 is out of range 0-65535"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["keep", "keep/mine.txt"]
    (fleet / "h05.yaml").unlink()
    code, stdout, _ = run("build", str(fleet), "-o", str(out), "-j", "2")
    assert code == 0 and stdout.startswith("wrote 20 files for 14 policies under ")
    assert not [p for p in out.rglob(".*")]  # no temporary file left


def test_a_warning_about_a_shared_file_is_printed_once(tmp_path: Path) -> None:
    shared = "version: 1\nrules:\n  - name: watch\n    action: monitor\n    ports: [mpshrsv]\n"
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "rules.yaml").write_text(shared, encoding="utf-8")
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(
            f"version: 1\nname: {name}\ndefaults: {{inbound: allow}}\nrules:\n  - include: base/rules.yaml\n",
            encoding="utf-8")
    code, _, stderr = run("build", str(tmp_path), "-o", str(tmp_path / "out"))
    assert code == 0
    shared_lines = [line for line in stderr.splitlines() if line.startswith(f"{tmp_path}/base/rules.yaml:")]
    assert len(shared_lines) == 1 and "monitor rules become allow rules" in shared_lines[0], stderr


@pytest.mark.parametrize("failure", ["raise", "exit"])
def test_a_failing_worker_fails_the_build_and_leaves_nothing_behind(
    fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str,
) -> None:
    """A worker that breaks (a bug raising in it, or the process dying) fails the whole
    build, and what the other worker staged meanwhile is removed again."""
    import os

    from fwgen import fleet as fleet_module

    for i in range(12):
        (fleet / f"h{i:02}.yaml").write_text(OPEN + f"name: h{i:02}\nrules:\n  - action: deny\n    ports: [{i}]\n",
                                             encoding="utf-8")
    real = fleet_module._build_one
    parent = os.getpid()

    def broken(path: str) -> object:
        if os.getpid() != parent and path.endswith("h11.yaml"):  # in a worker only
            if failure == "exit":
                os._exit(3)
            raise RuntimeError("a bug in the build")
        return real(path)

    monkeypatch.setattr(fleet_module, "_build_one", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="a bug in the build" if failure == "raise" else "a build worker failed"):
        build_fleet([str(fleet)], bundled(), jobs=2, stage=str(out))
    assert not out.exists()  # the staged files and every directory made for them are gone
    monkeypatch.setattr(fleet_module, "_build_one", real)
    result = build_fleet([str(fleet)], bundled(), jobs=2, stage=str(out))
    assert not result.errors and len(result.hosts) == 15
    assert result.staging is not None
    result.staging.discard()


def test_a_worker_held_up_by_one_policy_leaves_the_rest_to_the_other(
    fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The workers take the policies as they go, not a share dealt out in advance: while
    one worker is held up by h00, the other builds every other policy (h00 waits for
    that, so with shares dealt out in advance it would wait in vain)."""
    import os
    import time

    from fwgen import fleet as fleet_module

    for i in range(12):
        (fleet / f"h{i:02}.yaml").write_text(OPEN + f"name: h{i:02}\nrules:\n  - action: deny\n    ports: [{i}]\n",
                                             encoding="utf-8")
    policies = len(list(fleet.glob("*.yaml")))  # the hosts and the fleet's three roles
    log = tmp_path / "built"
    real = fleet_module._build_one

    def done() -> int:
        return len(log.read_text().splitlines()) if log.exists() else 0

    def logged(path: str) -> object:
        if path.endswith("h00.yaml"):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and done() < policies - 1:
                time.sleep(0.01)
        with open(log, "a", encoding="utf-8") as out:  # one short append: whole lines
            out.write(f"{os.getpid()} {Path(path).name}\n")
        return real(path)

    monkeypatch.setattr(fleet_module, "_build_one", logged)
    result = build_fleet([str(fleet)], bundled(), jobs=2)
    assert not result.errors and len(result.hosts) == 15
    built = [line.split() for line in log.read_text().splitlines()]
    assert len(built) == policies and built[-1][1] == "h00.yaml"  # h00 waited for all the others
    held = built[-1][0]
    order = sorted(p.name for p in fleet.glob("*.yaml"))  # the order the tickets go out in
    after = order[order.index("h00.yaml") + 1:]
    assert after and not [name for pid, name in built if pid == held and name in after]  # all the other's


def test_more_policies_than_the_pipe_of_tickets_holds(
    fleet: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parent tops up the pipe of tickets as the workers take them: with tickets of
    PIPE_BUF bytes the pipe holds only a few at a time (64 KiB on Linux: 16), and every
    one of 40 policies is still built, once."""
    import select

    from fwgen import fleet as fleet_module

    for i in range(37):
        rules = f"rules:\n  - action: deny\n    ports: [{1000 + i}]\n"
        (fleet / f"h{i:02}.yaml").write_text(OPEN + f"name: h{i:02}\n" + rules, encoding="utf-8")
    monkeypatch.setattr(fleet_module, "_TICKET", select.PIPE_BUF)
    registry = bundled()
    parallel = build_fleet([str(fleet)], registry, jobs=2)
    monkeypatch.undo()
    serial = build_fleet([str(fleet)], registry, jobs=1)
    assert not parallel.errors and len(parallel.hosts) == 40
    assert parallel.files == serial.files and [h.name for h in parallel.hosts] == [h.name for h in serial.hosts]


def test_a_build_reads_a_shared_file_once_and_keeps_no_host_policy(fleet: Path) -> None:
    """One ``Files`` across a fleet's builds (as each worker has): every host reads the
    shared base once, and keeps no host policy's YAML nodes once that host is built (a
    worker of fleet1000 held 500 hosts' nodes: 130 MiB peak, 43 MiB without)."""
    from fwgen.files import Files

    reads: list[str] = []

    class Counting(Files):
        def read_bytes(self, path: str) -> bytes:
            reads.append(Path(path).resolve().relative_to(fleet).as_posix())
            return super().read_bytes(path)

    files = Counting()
    hosts = sorted(p for p in fleet.glob("*.yaml"))
    assert len(hosts) >= 3
    for host in hosts:
        build(str(host), bundled(), files=files)
    shared = {name for name in reads if name not in {h.name for h in hosts}}
    assert len(shared) >= 2 and all(reads.count(name) == 1 for name in shared)
    assert sorted(name for name in reads if name not in shared) == sorted(h.name for h in hosts)
    kept = {Path(key).relative_to(fleet.resolve()).as_posix() for key in files._loaded}
    assert kept == shared  # the hosts are forgotten, the shared files kept
