"""Same input, byte-identical output: whatever the working directory, locale or
PYTHONHASHSEED, in separate processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build(policy: Path, outdir: Path, cwd: Path, env_extra: dict[str, str]) -> dict[str, bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(env_extra)
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run(
        [sys.executable, "-m", "fwgen", "build", str(policy), "-o", str(outdir)],
        cwd=cwd, env=env, check=True, capture_output=True,
    )
    return {str(p.relative_to(outdir)): p.read_bytes() for p in sorted(outdir.rglob("*")) if p.is_file()}


def test_two_processes_build_identical_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    for policy in sorted((ROOT / "policies").glob("*.yaml")):
        first = _build(policy, tmp_path / "out1" / policy.stem, tmp_path / "a",
                       {"PYTHONHASHSEED": "1", "LANG": "C", "LC_ALL": "C", "TZ": "UTC"})
        second = _build(policy, tmp_path / "out2" / policy.stem, tmp_path / "b" / "deeper",
                        {"PYTHONHASHSEED": "4242", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                         "TZ": "Pacific/Kiritimati"})
        assert first and first == second
        for text in first.values():
            assert str(tmp_path).encode() not in text and str(ROOT).encode() not in text
