"""The pre-commit hooks (.pre-commit-hooks.yaml), run as pre-commit runs them: the
entry, then the args, as a process from the policy repository's root, over a fleet
whose policies share included files."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
HOOKS = {hook["id"]: hook for hook in MANIFEST}


def run_hook(repo: Path, hook_id: str) -> subprocess.CompletedProcess[str]:
    """``entry args...`` with no file names (pass_filenames: false), fwgen from this checkout."""
    hook = HOOKS[hook_id]
    argv = shlex.split(hook["entry"]) + hook.get("args", [])
    assert argv[0] == "fwgen"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fwgen", *argv[1:]], cwd=repo, env=env, capture_output=True,
                          text=True, check=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A policy repository: the example fleet under policies/ (three roles and their
    shared base), built into out/, plus a stand-alone policy."""
    shutil.copytree(ROOT / "policies" / "fleet", tmp_path / "policies")
    shutil.copyfile(ROOT / "policies" / "edge.yaml", tmp_path / "policies" / "edge.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "fwgen", "build", "policies", "-o", "out"], cwd=tmp_path, env=env,
                   check=True, capture_output=True)
    return tmp_path


def test_manifest() -> None:
    assert set(HOOKS) == {"fwgen-check", "fwgen-lint"}
    for hook in MANIFEST:
        assert {"id", "name", "entry", "language"} <= set(hook)
        assert hook["language"] == "python"
        assert hook["pass_filenames"] is False  # the whole fleet: a shared file changes many policies
        files = re.compile(hook["files"])
        for path in ("policies/edge.yaml", "policies/base/rules.yml"):
            assert files.search(path), path
        for path in (".pre-commit-config.yaml", ".github/workflows/ci.yaml", "out/edge/nftables/edge.nft"):
            assert not files.search(path), path


def test_check_hook_passes_when_up_to_date(repo: Path) -> None:
    done = run_hook(repo, "fwgen-check")
    assert (done.returncode, done.stdout) == (0, "up to date: 14 files\n"), done.stderr


def test_check_hook_sees_a_change_of_a_shared_file(repo: Path) -> None:
    """Editing base/rules.yaml, which no output is named after, makes every policy
    including it stale, and only those."""
    rules = repo / "policies" / "base" / "rules.yaml"
    rules.write_text(rules.read_text(encoding="utf-8").replace("[9100/tcp]", "[9100/tcp, 9101/tcp]"),
                     encoding="utf-8")
    before = {p: p.read_bytes() for p in (repo / "out").rglob("*") if p.is_file()}
    done = run_hook(repo, "fwgen-check")
    assert done.returncode == 1
    stale = sorted(line.split("/")[1] for line in done.stdout.splitlines())
    assert stale == ["bastion"] * 3 + ["db"] * 3 + ["web"] * 3  # iptables (2) and nftables of each role
    assert all(line.startswith("stale: out/") for line in done.stdout.splitlines())
    assert "9 of 14 output files out of date; rebuild with: fwgen build policies -o out" in done.stderr
    assert {p: p.read_bytes() for p in (repo / "out").rglob("*") if p.is_file()} == before  # writes nothing


def test_check_hook_reports_every_broken_policy(repo: Path) -> None:
    (repo / "policies" / "broken.yaml").write_text("version: 1\nrules:\n  - action: permit\n", encoding="utf-8")
    rules = repo / "policies" / "base" / "rules.yaml"
    rules.write_text(rules.read_text(encoding="utf-8").replace("[9100/tcp]", "[9100/tpc]"), encoding="utf-8")
    done = run_hook(repo, "fwgen-check")
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert "policies/broken.yaml:3:13: action must be one of allow | deny | monitor, got text 'permit'" in lines
    for role, line in (("bastion", 14), ("db", 12), ("web", 10)):
        assert any(f"(included from policies/{role}.yaml:{line}:14)" in error for error in lines), (role, lines)
    assert lines[-1] == "fwgen: 4 policies have errors; nothing written"


def test_lint_hook(repo: Path) -> None:
    done = run_hook(repo, "fwgen-lint")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "policies/edge.yaml" in done.stdout  # edge's DHCP warnings: it keeps no acknowledgements
    assert "policies/base/" not in done.stdout + done.stderr  # shared files: linted within each role
    bastion = repo / "policies" / "bastion.yaml"
    bastion.write_text(bastion.read_text(encoding="utf-8").replace("from: [admins]", "from: [admin]"),
                       encoding="utf-8")
    done = run_hook(repo, "fwgen-lint")
    assert done.returncode == 1
    assert "policies/bastion.yaml:13:12: unknown network 'admin' (did you mean 'admins'?)\n" in done.stderr
