"""``fwgen build`` renders nftables and Windows in a forked child (fwgen/forked.py) while
the parent checks the policy and renders iptables: the output must be exactly the serial
output, and any failure of the child must leave the parent to do the work itself, with
errors raised in the parent as usual."""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path

import pytest

from fwgen import build as build_module
from fwgen import forked
from fwgen.build import build
from fwgen.errors import PolicyError
from fwgen.registry import bundled
from fwgen.targets import BY_NAME

POLICIES = sorted(Path(__file__).resolve().parent.parent.joinpath("policies").glob("*.yaml"))


@pytest.fixture(autouse=True)
def forking_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parallel path runs only with two or more CPUs and no other thread: make sure
    it is taken here, even after the kernel tests left their (idle) log-drain thread."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(build_module, "PARALLEL_MIN_RULES", 1)  # the example policies are small


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[forked.Child]:
    """The children ``forked.start`` starts (each must start)."""
    children: list[forked.Child] = []
    real_start = forked.start

    def start(compute):  # type: ignore[no-untyped-def]
        child = real_start(compute)
        assert child is not None
        children.append(child)
        return child

    monkeypatch.setattr(forked, "start", start)
    return children


def assert_one_child_reaped(started: list[forked.Child]) -> None:
    assert len(started) == 1
    with pytest.raises(ChildProcessError):  # reaped: no such child any more
        os.waitpid(started[0].pid, os.WNOHANG)


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_parallel_build_equals_serial_build(policy: Path, started: list[forked.Child]) -> None:
    serial = build(str(policy), bundled(), lint_errors=True)
    parallel = build(str(policy), bundled(), lint_errors=True, parallel=True)
    assert parallel.files == serial.files
    assert list(parallel.files) == list(serial.files)  # same order
    assert parallel.warnings == serial.warnings
    assert len(started) == 1  # one child, in the parallel build only


def test_the_child_computes_in_another_process() -> None:
    child = forked.start(lambda: [os.getpid(), {"a": "b"}])
    assert child is not None
    pid, value = child.result()  # type: ignore[misc]
    assert pid != os.getpid() and value == {"a": "b"}


def test_a_failing_child_reports_none() -> None:
    def fail() -> object:
        raise RuntimeError("in the child")

    child = forked.start(fail)
    assert child is not None
    assert child.result() is None


def test_a_failing_child_leaves_the_work_to_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = str(POLICIES[0])
    serial = build(policy, bundled())
    monkeypatch.setattr(forked, "start", lambda compute: _DeadChild())
    assert build(policy, bundled(), parallel=True).files == serial.files


def test_an_error_in_the_parent_stops_the_child(monkeypatch: pytest.MonkeyPatch, started: list[forked.Child]) -> None:
    def broken_render(ruleset):  # type: ignore[no-untyped-def]
        raise ValueError("iptables failed")

    monkeypatch.setattr(importlib.import_module(BY_NAME["iptables"].module), "render", broken_render)
    with pytest.raises(ValueError, match="iptables failed"):
        build(str(POLICIES[0]), bundled(), parallel=True)
    assert_one_child_reaped(started)


def test_a_failing_check_stops_the_child(started: list[forked.Child], tmp_path: Path) -> None:
    """The checks run in the parent while the child renders: an error-level lint finding
    raises there, located, and the child is stopped and reaped."""
    policy = tmp_path / "lock.yaml"
    policy.write_text("version: 1\nname: lock\ndefaults:\n  inbound: deny\nrules:\n"
                      "  - name: web\n    action: allow\n    ports: [443]\n")
    with pytest.raises(PolicyError, match=r"locks out SSH") as raised:
        build(str(policy), bundled(), lint_errors=True, parallel=True)
    assert raised.value.location is not None and raised.value.location.line == 4
    assert_one_child_reaped(started)
    assert build(str(policy), bundled(), parallel=True).files  # without the lint errors, it builds


class _DeadChild(forked.Child):
    """A child that died without a result."""

    def __init__(self) -> None:
        pass

    def result(self) -> object | None:
        return None


def test_no_fork_while_other_threads_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real thread count
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert threading.active_count() > 1
        assert forked.start(lambda: 1) is None
    finally:
        stop.set()
        thread.join()


def test_small_policies_render_without_a_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_module, "PARALLEL_MIN_RULES", 1000)
    monkeypatch.setattr(forked, "start", lambda compute: pytest.fail("forked for a small policy"))
    assert build(str(POLICIES[0]), bundled(), parallel=True).files == build(str(POLICIES[0]), bundled()).files
