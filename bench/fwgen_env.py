"""The fwgen side's interpreter: a private virtualenv (bench/.venv-fwgen) holding fwgen's
runtime dependencies at the lock's versions (.ci/constraints.txt), not fwgen itself:
the harness runs the checkout's code with it (``python -m fwgen``, the checkout on
PYTHONPATH).

Aerleon runs from a venv of its own (``aerleon_env``), and so does fwgen: a venv's
interpreter starts without the base installation's site-packages, whose ``.pth`` files
run at every start. On this machine one of them (the sandbox's CA injection) imports
certifi: ``python -c pass`` takes 40 ms with the base interpreter against 13 ms with
either venv's, 27 ms that every timed fwgen process paid and no aclgen run did.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
VENV = os.path.join(BENCH_DIR, ".venv-fwgen")
PYTHON = os.path.join(VENV, "bin", "python")
LOCK = os.path.join(REPO, ".ci", "constraints.txt")
STAMP = os.path.join(VENV, ".stamp")


def requirements() -> list[str]:
    """fwgen's runtime dependencies, as pyproject.toml names them."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


def _stamp(wanted: list[str]) -> str:
    with open(LOCK, "rb") as fh:
        lock = fh.read()
    return hashlib.sha256("\n".join(wanted).encode() + b"\0" + lock).hexdigest()


def ensure_venv(log: Callable[[str], None] = print) -> str:
    """Create or reuse bench/.venv-fwgen with fwgen's dependencies pinned by the lock (made
    anew when either changes); return its interpreter."""
    wanted = requirements()
    stamp = _stamp(wanted)
    try:
        with open(STAMP, encoding="utf-8") as fh:
            if fh.read() == stamp and os.path.exists(PYTHON):
                return PYTHON
    except FileNotFoundError:
        pass
    log(f"creating {VENV} (fwgen's dependencies at the lock's versions)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=True)
    env = dict(os.environ, PIP_CONSTRAINT=LOCK)
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted],
                   check=True, env=env)
    with open(STAMP, "w", encoding="utf-8") as fh:
        fh.write(stamp)
    return PYTHON
