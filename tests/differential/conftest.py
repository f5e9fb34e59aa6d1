from __future__ import annotations

from collections.abc import Iterator

import pytest

from fwgen.targets import iptables
from tests.differential.harness import Lab, open_labs
from tests.kernel.netns import KernelLog, kernel_log_capture


@pytest.fixture(scope="session")
def labs() -> Iterator[tuple[dict[str, Lab], KernelLog]]:
    """One iptables lab and one nftables lab for the whole run, with kernel logging from
    namespaces switched on (and restored afterwards)."""
    labs = open_labs()
    try:
        with kernel_log_capture() as log:
            yield labs, log
    finally:
        for lab in labs.values():
            lab.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many probes of each new kind the session checked, per target."""
    from tests.differential.harness import PROBES

    if not PROBES:
        return
    terminalreporter.section("differential probes checked")
    for target in sorted({t for t, _ in PROBES}):
        kinds = sorted((what, n) for (t, what), n in PROBES.items() if t == target)
        terminalreporter.write_line(f"{target}: " + ", ".join(f"{what} {n}" for what, n in kinds))


@pytest.fixture
def forced_tree(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every run a tree: one interval (or address span) per leaf, two children per inner chain."""
    monkeypatch.setattr(iptables, "TREE_MIN_LINES", 0)
    monkeypatch.setattr(iptables, "TREE_LEAF", 1)
    monkeypatch.setattr(iptables, "TREE_FANOUT", 2)
    yield
