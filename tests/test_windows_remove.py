"""``windows/NAME-remove.cmd``, run in the Windows Firewall model (tests/winmodel): it
deletes every ``fwgen-NAME`` rule (and ``fwgen-NAME.new``), undoes the logging and
profile defaults the policy's script switched on, leaves other software's rules alone,
and running it again changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwgen.build import build
from fwgen.registry import bundled
from tests.winmodel.model import Profile, RuleStore, run_netsh, run_script

ROOT = Path(__file__).resolve().parents[1]
FOREIGN = 'advfirewall firewall add rule name="File and Printer Sharing (SMB-In)" dir=in action=allow ' \
          "protocol=tcp localport=445 profile=any"
OUTBOUND_DENY = """version: 1
name: strict
defaults: {inbound: allow, outbound: deny}
rules:
  - name: dns
    action: allow
    direction: out
    ports: [domain]
"""


def scripts(path: Path) -> tuple[str, str]:
    files = build(str(path), bundled(), ("windows",)).files
    name = path.stem
    return files[f"windows/{name}.cmd"], files[f"windows/{name}-remove.cmd"]


@pytest.mark.parametrize("policy", ["edge", "locked-down", "dormant-ports", "strict"])
def test_removal_script_undoes_the_policy_script(tmp_path: Path, policy: str) -> None:
    if policy == "strict":
        path = tmp_path / "strict.yaml"
        path.write_text(OUTBOUND_DENY, encoding="utf-8")
    else:
        path = ROOT / "policies" / f"{policy}.yaml"
    install, remove = scripts(path)
    store = RuleStore()
    run_netsh(FOREIGN, store)
    fresh = store.snapshot()
    assert run_script(install, store) == 0
    assert store.snapshot() != fresh  # the control: the policy's script changed something
    assert run_script(remove, store) == 0
    assert store.snapshot() == fresh
    assert run_script(remove, store) == 0  # again: nothing left to delete, still exit 0
    assert store.snapshot() == fresh


def test_removal_after_an_interrupted_run_deletes_the_staging_rules(tmp_path: Path) -> None:
    install, remove = scripts(ROOT / "policies" / "edge.yaml")
    store = RuleStore()
    staging_adds = [line for line in install.split("\r\n") if 'add rule name="fwgen-edge.new"' in line]
    run_netsh(staging_adds[0].removeprefix("netsh ").removesuffix(" || goto :failed"), store)
    assert [rule.name for rule in store.rules] == ["fwgen-edge.new"]
    assert run_script(remove, store) == 0
    assert store.rules == []


def test_removal_script_changes_only_what_the_policy_switched_on(tmp_path: Path) -> None:
    _, remove = scripts(ROOT / "policies" / "edge.yaml")  # blockinbound,allowoutbound: Windows' own default
    assert "firewallpolicy" not in remove and "state off" not in remove
    assert "logging allowedconnections disable" in remove and "logging droppedconnections disable" in remove
    path = tmp_path / "strict.yaml"
    path.write_text(OUTBOUND_DENY, encoding="utf-8")
    _, strict = scripts(path)
    assert "netsh advfirewall set allprofiles firewallpolicy blockinbound,allowoutbound || exit /b 1" in strict
    assert "logging" not in strict.split("rem Delete")[1]
    assert Profile().inbound == "blockinbound" and Profile().outbound == "allowoutbound"
