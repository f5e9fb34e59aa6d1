"""``select:`` in the real kernel: a dormant-watch rule (undocumented and unauthorized-use
pairs of the registered range) loaded by iptables and nftables; real probes on 1261 and
1274 are monitored (delivered, logged, counted), a documented neighbour (1284, iee-qfx)
and an unassigned unflagged port (1276) are denied, a pair an earlier rule names stays
that rule's, and a seeded sample of the pairs ``fwgen ports --select`` lists is monitored too; the Windows model
agrees. A compiler that keeps only the first selector is caught."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest

from fwgen.build import build
from fwgen.explain import Explainer
from fwgen.registry import bundled
from tests.differential.harness import Case, Lab, _probeable, check_policy, concurrently
from tests.differential.windows_check import windows_cases, windows_problems
from tests.kernel.netns import KernelLog
from tests.test_registry_select import _listing

POLICY = """\
version: 1
name: dormant
defaults: {inbound: deny, outbound: allow, deny: drop}
monitor: {log_prefix: fwgenD, rate: 10000/second}
rules:
  - name: ssh
    action: allow
    ports: [ssh]
  - name: close-t1
    action: deny
    ports: [t1distproc/udp]
  - name: dormant-watch
    action: monitor
    select: [undocumented, unauthorized-use]
    range: registered
"""
REMOTES = ("198.51.100.5", "2001:db8:1::5")
FIXED = [("tcp", 1261), ("udp", 1261), ("tcp", 1274), ("udp", 1274), ("tcp", 1284), ("udp", 1284),
         ("tcp", 1276), ("udp", 1491), ("tcp", 22)]


def _cases(seed: int = 14) -> list[Case]:
    """The fixed cases and a seeded sample of what ``fwgen ports --select`` lists."""
    listed, _ = _listing(["--select", "undocumented,unauthorized-use", "--range", "registered"])
    sample = random.Random(seed).sample(sorted(pair for pair in listed if _probeable(pair[1])), 40)
    return [Case("in", p, port, remote) for p, port in FIXED + sample for remote in REMOTES]


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict[str, str], Explainer, Path]:
    path = tmp_path_factory.mktemp("dormant") / "dormant.yaml"
    path.write_text(POLICY, encoding="utf-8")
    result = build(str(path), bundled())
    return result.ruleset, result.files, Explainer.from_file(str(path), bundled()), path


def test_dormant_ports_are_monitored_in_the_kernel(labs: tuple[dict[str, Lab], KernelLog], subject) -> None:
    ruleset, files, explainer, _ = subject
    cases = _cases()
    reports = {}

    def one(target: str) -> None:
        reports[target] = check_policy(labs[0][target], ruleset, files, explainer, cases, labs[1])

    concurrently(*(functools.partial(one, t) for t in labs[0]))
    for target, report in reports.items():
        assert report.problems == [], (target, report.problems)
        by_case = {(o.case.protocol, o.case.port, o.case.remote): o for o in report.outcomes}
        for remote in REMOTES:
            for p, port in (("tcp", 1261), ("udp", 1261), ("tcp", 1274)):
                o = by_case[(p, port, remote)]
                assert (o.expected, o.rule, o.delivered, o.logged) == ("monitor", "dormant-watch", True, True), o
            for p, port, rule in (("udp", 1274, "close-t1"), ("tcp", 1284, None), ("udp", 1284, None),
                                  ("tcp", 1276, None)):
                o = by_case[(p, port, remote)]
                assert (o.expected, o.rule, o.delivered) == ("deny", rule, False), o
            o = by_case[("udp", 1491, remote)]  # unauthorized use reported, unassigned
            assert (o.expected, o.rule, o.delivered) == ("monitor", "dormant-watch", True), o
        monitored = [o for o in report.outcomes if o.rule == "dormant-watch"]
        assert len(monitored) >= 2 * 40 and all(o.delivered for o in monitored)
    wcases = windows_cases(ruleset, cases)
    assert windows_problems(files["windows/dormant.cmd"], explainer, wcases) == []


def test_a_compiler_keeping_only_the_first_selector_is_caught(labs: tuple[dict[str, Lab], KernelLog], subject,
                                                              tmp_path: Path) -> None:
    """The mutant resolves ``select: [undocumented, unauthorized-use]`` as undocumented
    alone (a union read as its first member): the unauthorized-use-only pairs (1491, an
    unassigned row with reported unauthorized use) are dropped where explain monitors."""
    ruleset, _, explainer, _ = subject
    mutant_path = tmp_path / "dormant.yaml"
    mutant_path.write_text(POLICY.replace("select: [undocumented, unauthorized-use]", "select: [undocumented]"),
                           encoding="utf-8")
    mutant = build(str(mutant_path), bundled()).files
    cases = [Case("in", "udp", 1491, remote) for remote in REMOTES] + [
        Case("in", "tcp", 1261, remote) for remote in REMOTES]
    problems: dict[str, list[str]] = {}

    def one(target: str) -> None:
        problems[target] = check_policy(labs[0][target], ruleset, mutant, explainer, cases, labs[1]).problems

    concurrently(*(functools.partial(one, t) for t in labs[0]))
    for target, found in problems.items():
        assert any("1491" in p and "explain says monitor" in p for p in found), (target, found)
        assert not any(" 1261 " in p for p in found), (target, found)
    windows = windows_problems(mutant["windows/dormant.cmd"], explainer, windows_cases(ruleset, cases))
    assert any("1491" in p for p in windows), windows
