"""fwgen.hooks (the pre-commit entry point) and .pre-commit-hooks.yaml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fwgen import hooks
from fwgen.cli import main as fwgen_main

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"


# -- plan: the fwgen command lines for pre-commit's "ENTRY ARGS... FILES..." --

@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["check", "-o", "out", "policies/a.yaml", "policies/b.yml"],
         [["build", "--check", "-o", "out", "--", "policies/a.yaml"],
          ["build", "--check", "-o", "out", "--", "policies/b.yml"]]),
        (["check", "policies/a.yaml"],  # fwgen's own default directory
         [["build", "--check", "-o", "out", "--", "policies/a.yaml"]]),
        (["check", "--output=built", "-t", "nftables", "--target=iptables", "a.yaml"],
         [["build", "--check", "-o", "built", "-t", "nftables", "-t", "iptables", "--", "a.yaml"]]),
        (["check", "-obuilt", "-tnftables", "a.yaml"],
         [["build", "--check", "-o", "built", "-t", "nftables", "--", "a.yaml"]]),
        (["check", "-o", "out/{stem}", "policies/edge.yaml", "policies/locked-down.yml"],
         [["build", "--check", "-o", "out/edge", "--", "policies/edge.yaml"],
          ["build", "--check", "-o", "out/locked-down", "--", "policies/locked-down.yml"]]),
        (["check", "-o", "a", "-o", "b", "p.yaml"],  # the last -o wins, as in fwgen
         [["build", "--check", "-o", "b", "--", "p.yaml"]]),
        (["check", "--registry", "iana.csv", "p.yaml"],
         [["build", "--check", "-o", "out", "--registry", "iana.csv", "--", "p.yaml"]]),
        (["lint", "policies/a.yaml", "policies/b.yaml"],
         [["lint", "--", "policies/a.yaml"], ["lint", "--", "policies/b.yaml"]]),
        (["lint", "--strict", "--registry=iana.xml", "--max-rules=50", "a.yaml"],
         [["lint", "--strict", "--registry", "iana.xml", "--max-rules=50", "--", "a.yaml"]]),
        (["check", "-o", "out", "--", "-odd.yaml"],
         [["build", "--check", "-o", "out", "--", "-odd.yaml"]]),
        (["check", "-o", "out"], []),  # pre-commit may run a hook with no files
        (["lint"], []),
    ],
)
def test_plan(argv: list[str], expected: list[list[str]]) -> None:
    assert hooks.plan(argv) == expected


@pytest.mark.parametrize("argv", [[], ["build"], ["check", "-o"], ["lint", "--registry"]])
def test_plan_usage_errors(argv: list[str]) -> None:
    with pytest.raises(hooks.UsageError):
        hooks.plan(argv)


def test_main_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert hooks.main(["bogus", "a.yaml"]) == 2
    err = capsys.readouterr().err
    assert "unknown hook 'bogus'" in err and "usage: python -m fwgen.hooks check" in err


# -- running the check hook for real --

@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A policy repository: two policies, each built into out/<stem>, cwd at its root."""
    (tmp_path / "policies").mkdir()
    for name in ("edge", "locked-down"):
        shutil.copyfile(POLICIES / f"{name}.yaml", tmp_path / "policies" / f"{name}.yaml")
    monkeypatch.chdir(tmp_path)
    for name in ("edge", "locked-down"):
        with pytest.raises(SystemExit) as done:
            fwgen_main.main(args=["build", f"policies/{name}.yaml", "-o", f"out/{name}"], prog_name="fwgen")
        assert done.value.code == 0
    return tmp_path


def test_check_hook_passes_when_up_to_date(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "-o", "out/{stem}", "policies/edge.yaml", "policies/locked-down.yaml"]
    assert hooks.main(argv) == 0
    assert capsys.readouterr().out == "up to date: 4 files\nup to date: 4 files\n"


def test_check_hook_fails_if_any_policy_is_stale(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "out" / "edge" / "nftables" / "edge.nft").unlink()
    argv = ["check", "-o", "out/{stem}", "policies/edge.yaml", "policies/locked-down.yaml"]
    assert hooks.main(argv) == 1
    out = capsys.readouterr().out
    # every policy is checked, the failing one first here, the passing one still reported
    assert out == f"missing: {Path('out/edge/nftables/edge.nft')}\nup to date: 4 files\n"
    assert hooks.main(["check", "-o", "out/{stem}", "policies/locked-down.yaml"]) == 0


def test_check_hook_reports_policy_errors(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = repo / "policies" / "broken.yaml"
    bad.write_text("version: 1\nrules:\n  - action: permit\n")
    argv = ["check", "-o", "out/{stem}", "policies/broken.yaml", "policies/edge.yaml"]
    assert hooks.main(argv) == 1
    captured = capsys.readouterr()
    assert "policies/broken.yaml:3:13: action must be one of allow | deny | monitor" in captured.err
    assert captured.out == "up to date: 4 files\n"
    assert not (repo / "out" / "broken").exists()


def test_check_hook_writes_nothing(repo: Path) -> None:
    policy = repo / "policies" / "edge.yaml"
    policy.write_text(policy.read_text().replace("ports: [http, https]", "ports: [https]"))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (repo / "out").rglob("*") if p.is_file()}
    assert hooks.main(["check", "-o", "out/{stem}", "policies/edge.yaml"]) == 1
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (repo / "out").rglob("*") if p.is_file()}
    assert after == before


def test_usage_error_from_fwgen_is_the_worst_status(repo: Path) -> None:
    assert hooks.main(["check", "-o", "out/{stem}", "--no-such-flag", "policies/edge.yaml"]) == 2


def test_run_fwgen_maps_exit_statuses(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(code: object) -> None:
        def main(**_: object) -> None:
            raise SystemExit(code)
        monkeypatch.setattr(fwgen_main, "main", main)

    for code, status in ((None, 0), (0, 0), (1, 1), (2, 2), ("message", 1)):
        fake(code)
        assert hooks.run_fwgen(["x"]) == status


def test_as_a_process(repo: Path) -> None:
    """`python -m fwgen.hooks`, the manifest's entry, from the policy repository's root."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "fwgen.hooks", "check", "-o", "out/{stem}", "policies/edge.yaml"]
    ok = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert (ok.returncode, ok.stdout) == (0, "up to date: 4 files\n"), ok.stderr
    (repo / "out" / "edge" / "windows" / "edge.cmd").write_text("rem stale\n")
    stale = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert (stale.returncode, stale.stdout) == (1, f"stale: {Path('out/edge/windows/edge.cmd')}\n")


# -- the manifest --

def test_manifest() -> None:
    manifest = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    by_id = {hook["id"]: hook for hook in manifest}
    assert set(by_id) == {"fwgen-check", "fwgen-lint"}
    assert by_id["fwgen-check"]["entry"] == "python -m fwgen.hooks check"
    assert by_id["fwgen-check"]["args"] == ["-o", "out"]
    assert by_id["fwgen-lint"]["entry"] == "python -m fwgen.hooks lint"
    for hook in manifest:
        assert {"id", "name", "entry", "language"} <= set(hook)
        assert hook["language"] == "python"
        assert hook.get("pass_filenames", True) is True
        files = re.compile(hook["files"])
        for path in ("policies/edge.yaml", "policies/sub/dmz.yml"):
            assert files.search(path), path
        for path in (".pre-commit-config.yaml", ".github/workflows/ci.yaml", "out/nftables/edge.nft"):
            assert not files.search(path), path
        # what pre-commit will run: entry, then args, then the files
        argv = hook["entry"].split()[3:] + hook.get("args", []) + ["policies/edge.yaml"]
        assert len(hooks.plan(argv)) == 1
