"""`fwgen build --check`: compare what fwgen would write with what is under -o DIR,
list stale and missing files, exit 1 when any, and never write anything."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fwgen.cli import main

ROOT = Path(__file__).resolve().parents[1]
EDGE = ROOT / "policies" / "edge.yaml"
EDGE_FILES = ["edge/iptables/rules.v4", "edge/iptables/rules.v6", "edge/nftables/edge.nft", "edge/windows/edge.cmd",
              "edge/windows/edge-remove.cmd"]


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under root (bytes, mtime_ns, inode) and every directory (by path)."""
    snap: dict[str, tuple[bytes, int, int]] = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        data = path.read_bytes() if path.is_file() else b"<dir>"
        snap[str(path.relative_to(root))] = (data, st.st_mtime_ns, st.st_ino)
    return snap


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of edge.yaml and a fresh build of it under tmp_path/out."""
    policy = tmp_path / "edge.yaml"
    shutil.copyfile(EDGE, policy)
    out = tmp_path / "out"
    code, _, err = _run("build", str(policy), "-o", str(out))
    assert code == 0, err
    return policy, out


def test_fresh_build_is_up_to_date(built: tuple[Path, Path]) -> None:
    policy, out = built
    code, stdout, _ = _run("build", "--check", str(policy), "-o", str(out))
    assert (code, stdout) == (0, "up to date: 5 files\n")


def test_edited_policy_lists_stale_files(built: tuple[Path, Path]) -> None:
    policy, out = built
    text = policy.read_text()
    assert "ports: [http, https]" in text
    policy.write_text(text.replace("ports: [http, https]", "ports: [http, https, 8443]"))
    code, stdout, stderr = _run("build", "--check", str(policy), "-o", str(out))
    assert code == 1
    # every output embeds the policy's sha256, so every file is stale, in build order
    assert stdout.splitlines() == [f"stale: {out / rel}" for rel in EDGE_FILES]
    assert "5 of 5 output files out of date" in stderr
    assert f"fwgen build {policy} -o {out}" in stderr


def test_hand_edited_output_is_stale(built: tuple[Path, Path]) -> None:
    policy, out = built
    nft = out / "edge" / "nftables" / "edge.nft"
    nft.write_bytes(nft.read_bytes() + b"# local change\n")
    code, stdout, _ = _run("build", "--check", str(policy), "-o", str(out))
    assert (code, stdout) == (1, f"stale: {nft}\n")


def test_crlf_output_is_stale(built: tuple[Path, Path]) -> None:
    """Byte for byte: a checkout that turned LF into CRLF is not what fwgen writes."""
    policy, out = built
    v4 = out / "edge" / "iptables" / "rules.v4"
    v4.write_bytes(v4.read_bytes().replace(b"\n", b"\r\n"))
    code, stdout, _ = _run("build", "--check", str(policy), "-o", str(out))
    assert (code, stdout) == (1, f"stale: {v4}\n")


def test_deleted_file_is_missing(built: tuple[Path, Path]) -> None:
    policy, out = built
    (out / "edge" / "windows" / "edge.cmd").unlink()
    code, stdout, _ = _run("build", "--check", str(policy), "-o", str(out))
    assert (code, stdout) == (1, f"missing: {out / 'edge' / 'windows' / 'edge.cmd'}\n")


def test_missing_and_stale_together(built: tuple[Path, Path]) -> None:
    policy, out = built
    shutil.rmtree(out / "edge" / "iptables")
    (out / "edge" / "windows" / "edge.cmd").write_text("rem old\n")
    code, stdout, _ = _run("build", "--check", str(policy), "-o", str(out))
    assert code == 1
    assert stdout.splitlines() == [
        f"missing: {out / 'edge' / 'iptables/rules.v4'}",
        f"missing: {out / 'edge' / 'iptables/rules.v6'}",
        f"stale: {out / 'edge' / 'windows/edge.cmd'}",
    ]


def test_no_output_dir_at_all(tmp_path: Path) -> None:
    out = tmp_path / "never-built"
    code, stdout, _ = _run("build", "--check", str(EDGE), "-o", str(out))
    assert code == 1
    assert stdout.splitlines() == [f"missing: {out / rel}" for rel in EDGE_FILES]
    assert not out.exists()


def test_directory_in_place_of_a_file_is_stale(built: tuple[Path, Path]) -> None:
    policy, out = built
    nft = out / "edge" / "nftables" / "edge.nft"
    nft.unlink()
    nft.mkdir()
    code, stdout, _ = _run("build", "--check", str(policy), "-o", str(out))
    assert (code, stdout) == (1, f"stale: {nft}\n")


def test_unrelated_files_are_not_reported(built: tuple[Path, Path]) -> None:
    policy, out = built
    (out / "README").write_text("not fwgen's\n")
    (out / "edge" / "nftables" / "other.nft").write_text("table inet other {}\n")
    (out / "edge" / "iptables" / ".rules.v4.abc.tmp").write_text("leftover\n")
    code, stdout, _ = _run("build", "--check", str(policy), "-o", str(out))
    assert (code, stdout) == (0, "up to date: 5 files\n")


def test_targets_limit_what_is_checked(built: tuple[Path, Path]) -> None:
    policy, out = built
    shutil.rmtree(out / "edge" / "windows")
    (out / "edge" / "iptables" / "rules.v6").write_text("stale\n")
    code, stdout, _ = _run("build", "--check", str(policy), "-o", str(out), "-t", "nftables")
    assert (code, stdout) == (0, "up to date: 1 files\n")
    code, stdout, stderr = _run("build", "--check", str(policy), "-o", str(out), "-t", "iptables", "-t", "nftables")
    assert (code, stdout) == (1, f"stale: {out / 'edge' / 'iptables/rules.v6'}\n")
    assert f"-o {out} -t iptables -t nftables" in stderr
    code, stdout, _ = _run("build", "--check", str(policy), "-o", str(out), "-t", "nftables", "-t", "windows")
    assert (code, stdout) == (1, f"missing: {out / 'edge' / 'windows/edge.cmd'}\n"
                                 f"missing: {out / 'edge' / 'windows/edge-remove.cmd'}\n")
    # built for Windows alone, the policy would lock out RDP and WinRM (rdp-lockout)
    code, stdout, stderr = _run("build", "--check", str(policy), "-o", str(out), "-t", "windows")
    assert (code, stdout) == (1, "") and stderr.endswith("[rdp-lockout]\n")


def test_a_target_built_alone_checks_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run("build", str(EDGE), "-o", str(out), "-t", "nftables")[0] == 0
    assert _run("build", "--check", str(EDGE), "-o", str(out), "-t", "nftables") == (0, "up to date: 1 files\n", "")
    code, stdout, _ = _run("build", "--check", str(EDGE), "-o", str(out))
    assert code == 1 and stdout.count("missing: ") == 4


def test_check_never_writes(built: tuple[Path, Path]) -> None:
    policy, out = built
    (out / "edge" / "windows" / "edge.cmd").unlink()
    (out / "edge" / "iptables" / "rules.v4").write_text("stale\n")
    old = os.stat(out / "edge" / "iptables" / "rules.v4").st_mtime_ns - 10**9
    os.utime(out / "edge" / "iptables" / "rules.v4", ns=(old, old))
    before = _snapshot(out.parent)
    for args in ([], ["-t", "windows"], ["-t", "iptables"]):
        code, _, _ = _run("build", "--check", str(policy), "-o", str(out), *args)
        assert code == 1
    assert _snapshot(out.parent) == before
    policy.write_text(policy.read_text() + "  - {action: deny, ports: [23]}\n")
    before = _snapshot(out.parent)
    assert _run("build", "--check", str(policy), "-o", str(out))[0] == 1
    assert _snapshot(out.parent) == before


def test_policy_error_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    policy = tmp_path / "typo.yaml"
    policy.write_text("version: 1\nrules:\n  - action: monitor\n    ports: [mpshrv]\n")
    out = tmp_path / "out"
    code, stdout, stderr = _run("build", "--check", str(policy), "-o", str(out))
    assert (code, stdout) == (1, "")
    assert stderr == f"{policy}:4:13: unknown service 'mpshrv' (did you mean 'mpshrsv'?)\n"
    assert not out.exists()


def test_check_with_stdout_is_a_usage_error(tmp_path: Path) -> None:
    code, stdout, stderr = _run("build", "--check", "--stdout", str(EDGE), "-o", str(tmp_path / "out"))
    assert code == 2
    assert "--check and --stdout exclude each other" in stderr
    assert not (tmp_path / "out").exists()


def test_warnings_still_go_to_stderr(built: tuple[Path, Path]) -> None:
    policy, out = built
    code, stdout, stderr = _run("build", "--check", str(policy), "-o", str(out))
    assert code == 0 and stdout == "up to date: 5 files\n"
    assert f"{policy}: warning: windows:" in stderr


def test_real_process_exit_codes(tmp_path: Path) -> None:
    """The installed entry point's behaviour, through `python -m fwgen` on this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fwgen", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, check=False)

    shutil.copyfile(EDGE, tmp_path / "edge.yaml")
    missing = run("build", "--check", "edge.yaml")
    assert missing.returncode == 1
    assert missing.stdout.splitlines() == [f"missing: {Path('out') / rel}" for rel in EDGE_FILES]
    assert run("build", "edge.yaml").returncode == 0
    fresh = run("build", "--check", "edge.yaml")
    assert (fresh.returncode, fresh.stdout) == (0, "up to date: 5 files\n")
    assert run("build", "--check", "--bogus", "edge.yaml").returncode == 2


def test_process_exit_flushes_everything_first(tmp_path: Path) -> None:
    """``entry`` ends the process with ``os._exit``: every byte a command printed still
    arrives (more than a pipe's buffer), each status is the command's (0, and 1 for a
    bad policy, with nothing written), and a reader that closes the pipe early gets the
    interpreter's usual outcome (no traceback), not a hang or a lost status."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "fwgen"]
    whole = subprocess.run([*argv, "ports", "a"], env=env, capture_output=True, text=True, check=False)
    assert whole.returncode == 0
    lines = whole.stdout.splitlines()
    assert len(whole.stdout) > 65536 and len(lines) > 1000  # more than one pipe buffer
    assert whole.stdout.endswith("\n") and lines[-1].strip()
    (tmp_path / "bad.yaml").write_text("version: 1\nrules:\n  - name: x\n    action: alow\n")
    bad = subprocess.run([*argv, "build", "bad.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("bad.yaml:4:") and "Traceback" not in bad.stderr
    assert not (tmp_path / "out").exists()
    early = subprocess.run(f"{shlex.join([*argv, 'ports', 'a'])} | head -n 1", shell=True, env=env,
                           capture_output=True, text=True, check=False)
    assert early.returncode == 0 and len(early.stdout.splitlines()) == 1
    assert "Traceback" not in early.stderr
