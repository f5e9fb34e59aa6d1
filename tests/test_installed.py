"""`pip install .` (not editable), then `fwgen build` from any other directory: the
templates and the registry must travel inside the installed package. The README's test
command installs fwgen before running the suite, so this checks that installation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import fwgen

ROOT = Path(__file__).resolve().parents[1]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_installed_fwgen_builds_from_another_directory(tmp_path: Path) -> None:
    exe = shutil.which("fwgen")
    assert exe, "fwgen is not installed: run the README's test command (bash .ci/run)"
    where = subprocess.run(
        [sys.executable, "-c", "import fwgen, fwgen.render as r; print(fwgen.__file__); print(r.template_dir()); "
         "print(*(r.environment().get_template(t).filename for t in r.TEMPLATES))"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, check=True,
    ).stdout.split()
    # (the environment .ci/run installs into may itself live inside the checkout)
    assert not Path(where[0]).resolve().is_relative_to(ROOT / "fwgen"), "fwgen imported from the checkout"
    assert not Path(where[1]).resolve().is_relative_to(ROOT / "templates"), "templates found in the checkout"
    assert Path(where[0]).resolve().parent.parent.name == "site-packages", where[0]
    for loaded in where[2:]:  # the wheel carries the compiled templates, and they are current
        assert Path(loaded).parent.name == "compiled_templates", loaded

    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.strip() == f"fwgen, version {fwgen.__version__}"

    policy = tmp_path / "edge.yaml"
    policy.write_bytes((ROOT / "policies" / "edge.yaml").read_bytes())
    proc = subprocess.run([exe, "build", "edge.yaml", "-o", "built"], cwd=tmp_path, env=_clean_env(),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "built" / "edge"
    built = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert built == ["iptables/rules.v4", "iptables/rules.v6", "nftables/edge.nft", "windows/edge-remove.cmd",
                     "windows/edge.cmd"]
    golden = ROOT / "tests" / "golden" / "edge"
    for relative in built:
        assert (out / relative).read_bytes() == (golden / relative).read_bytes(), relative

    # a fleet, its shared files included, built from elsewhere in one command
    shutil.copytree(ROOT / "policies" / "fleet", tmp_path / "fleet")
    proc = subprocess.run([exe, "build", "fleet", "-o", "fleet-out"], cwd=tmp_path, env=_clean_env(),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("wrote 9 files for 3 policies under fleet-out ")
    for role in ("bastion", "db", "web"):
        for relative in ("iptables/rules.v4", "iptables/rules.v6", f"nftables/{role}.nft"):
            made = (tmp_path / "fleet-out" / role / relative).read_bytes()
            assert made == (ROOT / "tests" / "golden" / f"fleet-{role}" / relative).read_bytes(), (role, relative)

    # fwgen apply is in the installed package: it refuses a directory that is no build
    refused = subprocess.run([exe, "apply", "fleet", "--state-dir", str(tmp_path / "state")], cwd=tmp_path,
                             env=_clean_env(), capture_output=True, text=True, check=False)
    assert (refused.returncode, refused.stderr) == (
        1, "fwgen: fleet holds neither nftables/ nor iptables/: give a host's build directory, out/NAME\n")

    ports = subprocess.run([exe, "ports", "1274"], cwd=tmp_path, env=_clean_env(),
                           capture_output=True, text=True, check=True).stdout
    assert ports.startswith("t1distproc  1274  tcp,udp")
