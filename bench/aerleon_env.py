"""The Aerleon side: a private virtualenv (bench/.venv-aerleon) and aclgen invocations.

fwgen never depends on Aerleon; only this benchmark installs it, into its own venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

AERLEON_VERSION = "1.18.0"  # pinned: numbers are comparable only against one version
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(BENCH_DIR, ".venv-aerleon")
ACLGEN = os.path.join(VENV, "bin", "aclgen")
VENV_PYTHON = os.path.join(VENV, "bin", "python")

# Aerleon target -> (output suffix, fwgen-style kind for statistics)
TARGET_OUTPUT = {
    "speedway": (".ipt", "iptables"),
    "nftables": (".nft", "nftables"),
    "windows_advfirewall": (".bat", "windows"),
}


def installed_version() -> str | None:
    if not os.path.exists(ACLGEN) or not os.path.exists(VENV_PYTHON):
        return None
    r = subprocess.run(
        [VENV_PYTHON, "-c", "import importlib.metadata as m; print(m.version('aerleon'))"],
        capture_output=True, text=True,
    )
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_venv(log: Callable[[str], None] = print) -> str:
    """Create or reuse bench/.venv-aerleon with aerleon==AERLEON_VERSION; return the version."""
    version = installed_version()
    if version == AERLEON_VERSION:
        return version
    if not os.path.exists(VENV_PYTHON):
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    log(f"installing aerleon=={AERLEON_VERSION} into {VENV}")
    subprocess.run(
        [VENV_PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"aerleon=={AERLEON_VERSION}"],
        check=True,
    )
    version = installed_version()
    if version != AERLEON_VERSION:
        raise RuntimeError(f"aerleon {AERLEON_VERSION} not importable in {VENV} (got {version})")
    return version


def aclgen_argv(policy_file: str, definitions: str, output_dir: str) -> list[str]:
    """One aclgen run for one policy file (its header names exactly one target).

    With --policy_file aclgen renders in-process (no worker pool)."""
    return [
        ACLGEN,
        "--policy_file", policy_file,
        "--base_directory", os.path.dirname(policy_file),
        "--definitions_directory", definitions,
        "--output_directory", output_dir,
    ]


def output_path(output_dir: str, policy_file: str, target: str) -> str:
    stem = os.path.splitext(os.path.basename(policy_file))[0]
    return os.path.join(output_dir, stem + TARGET_OUTPUT[target][0])


def aclgen_dir_argv(base_directory: str, definitions: str, output_dir: str,
                    max_renderers: int | None = None) -> list[str]:
    """ONE aclgen run over every policy under ``base_directory`` (aclgen renders each
    ``*/pol/*.yaml`` it finds, every target its headers name, in a pool of
    ``--max_renderers`` processes, Aerleon's default 10 when None)."""
    argv = [
        ACLGEN,
        "--base_directory", base_directory,
        "--definitions_directory", definitions,
        "--output_directory", output_dir,
    ]
    if max_renderers:
        argv += ["--max_renderers", str(max_renderers)]
    return argv


def fleet_output_paths(output_dir: str, names: list[str]) -> dict[str, list[str]]:
    """target -> the files a directory run writes for policies base/pol/NAME.yaml whose
    filters name every target (aclgen writes them to output_dir/NAME.SUFFIX)."""
    return {target: [os.path.join(output_dir, name + suffix) for name in names]
            for target, (suffix, _) in TARGET_OUTPUT.items()}
