"""Golden files: every example policy's every output, byte for byte.

After an intended output change, regenerate with
    python3 -m pytest tests/test_golden.py --update-golden
and review the diff like any other change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fwgen.build import build
from fwgen.registry import bundled

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
# the example policies, and the example fleet's hosts (whose outputs name their includes)
EXAMPLES = sorted((ROOT / "policies").glob("*.yaml")) + sorted((ROOT / "policies" / "fleet").glob("*.yaml"))


def _key(policy: Path) -> str:
    return policy.stem if policy.parent.name == "policies" else f"{policy.parent.name}-{policy.stem}"


@pytest.mark.parametrize("policy", EXAMPLES, ids=[_key(p) for p in EXAMPLES])
def test_golden(policy: Path, request: pytest.FixtureRequest) -> None:
    result = build(str(policy), bundled())
    expected_dir = GOLDEN / _key(policy)
    if request.config.getoption("--update-golden"):
        for old in expected_dir.rglob("*"):
            if old.is_file():
                old.unlink()
        for relative, text in result.files.items():
            path = expected_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text.encode("utf-8"))
    on_disk = {
        str(p.relative_to(expected_dir)): p.read_bytes() for p in expected_dir.rglob("*") if p.is_file()
    }
    assert set(on_disk) == set(result.files), "outputs added or removed: run with --update-golden"
    for relative, text in result.files.items():
        assert text.encode("utf-8") == on_disk[relative], f"{policy.name}: {relative} differs from golden"


def test_every_example_has_golden_files() -> None:
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(_key(p) for p in EXAMPLES)
