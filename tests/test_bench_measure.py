"""bench/measure.py's run_process: a timed child's peak RSS is its own, whatever the
harness's (bench/spawn.py says why it takes a launcher), and its exit status, stderr
and start failures come back as before."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A harness that holds 200 MiB, then measures `python -c pass` both ways: started by
# run_process, and exec'd straight from the harness (the positive control).
BIG_HARNESS = f"""
import json, os, subprocess, sys
sys.path.insert(0, {str(ROOT / "bench")!r})
import measure
big = bytearray(200 << 20)
for i in range(0, len(big), 4096):
    big[i] = 1
measured = measure.run_process([sys.executable, "-c", "pass"])
direct = subprocess.Popen([sys.executable, "-c", "pass"])
_, _, usage = os.wait4(direct.pid, 0)
print(json.dumps({{"measured": measured.maxrss_kb, "direct": usage.ru_maxrss, "code": measured.returncode}}))
"""


def test_a_child_reports_its_own_peak_rss_not_the_harness() -> None:
    out = subprocess.run([sys.executable, "-c", BIG_HARNESS], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found["direct"] > 200 * 1024  # exec'd straight from the harness: the harness's peak
    assert found["measured"] < 100 * 1024  # through the launcher: python -c pass's own
    assert found["code"] == 0


@pytest.fixture
def measure():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import measure as module

        yield module
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_exit_status_stderr_stdin_and_working_directory(measure, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "in.txt").write_text("from stdin")
    script = ("import os, sys; sys.stderr.write(sys.stdin.read() + ' in ' + os.path.basename(os.getcwd())"
              " + ' ' + os.environ['FWGEN_BENCH_TEST']); sys.exit(3)")
    r = measure.run_process([sys.executable, "-c", script], cwd=str(tmp_path), env={"FWGEN_BENCH_TEST": "env"},
                            stdin_path=str(tmp_path / "in.txt"), stderr_path=str(tmp_path / "err.txt"))
    assert r.returncode == 3
    assert r.stderr == f"from stdin in {tmp_path.name} env"
    assert r.wall > 0 and r.cpu > 0 and r.maxrss_kb > 0


def test_a_program_that_cannot_start_is_an_os_error(measure, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError, match="cannot run .*no-such-program"):
        measure.run_process([str(tmp_path / "no-such-program")])
