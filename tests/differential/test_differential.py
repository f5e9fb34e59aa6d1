"""Random and example policies through the real kernel (iptables v4+v6 in one lab,
nftables in another): every probe's fate must equal `fwgen explain`'s verdict.

Each policy is checked on its targets (``targets:``): one that matches on the interface
is for iptables and nftables and is checked in the kernel only, one that matches on the
Windows profile is checked in the Windows model only, every other one everywhere.

Random policies come in two kinds:
- seeded: for each coverage feature (``policygen.FEATURES``), FWGEN_SEEDED_POLICIES
  policies (default 5) built to have it, drawn by hypothesis with ``derandomize``: the
  same policies on every run, so the coverage minimums hold by construction, every day;
- exploration: FWGEN_RANDOM_POLICIES more (default 10), drawn afresh on every run, on
  top of the seeded ones.
A failing policy is written to .fwgen-failures/ (and hypothesis prints its blob); copy
it into tests/differential/regressions/ to keep it as a regression case.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from fwgen.build import BuildResult, build
from fwgen.explain import Explainer
from fwgen.registry import bundled
from tests.differential.harness import PROBES, Case, Lab, Report, check_policy, choose_cases, concurrently, tally
from tests.differential.policygen import (
    FEATURES,
    Coverage,
    features,
    mentions_multi_port_name,
    mentions_select,
    policy,
    to_yaml,
)
from tests.differential.windows_check import exclusive_problems, windows_cases, windows_problems
from tests.kernel.netns import KernelLog

ROOT = Path(__file__).resolve().parents[2]
FAILURES = ROOT / ".fwgen-failures"
# the example policies and the example fleet's hosts (built with their includes)
EXAMPLES = sorted((ROOT / "policies").glob("*.yaml")) + sorted((ROOT / "policies" / "fleet").glob("*.yaml"))
REGRESSIONS = sorted((Path(__file__).parent / "regressions").glob("*.yaml"))
SEEDED_POLICIES = int(os.environ.get("FWGEN_SEEDED_POLICIES", "5"))
RANDOM_POLICIES = int(os.environ.get("FWGEN_RANDOM_POLICIES", "10"))
SELECT_TARGETS = ("iptables", "nftables", "windows model")  # PROBES' names of the targets


def run_policy(labs: dict[str, Lab], log: KernelLog, text: str, workdir: Path,
               previous_windows: str | None = None) -> tuple[BuildResult, list[Report]]:
    """Build a policy for its targets (``targets:``, else all) and check each: iptables
    and nftables each in its own lab, concurrently, and the Windows script in the
    Windows Firewall model."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = workdir / f"{digest}.yaml"
    path.write_text(text, encoding="utf-8")
    registry = bundled()
    result = build(str(path), registry)
    assert {name.split("/")[0] for name in result.files} == set(result.targets)  # the policy's targets only
    explainer = Explainer.from_file(str(path), registry)
    cases = choose_cases(result.ruleset, seed=int(digest, 16))
    reports: dict[str, Report] = {}

    def one(target: str) -> None:
        reports[target] = check_policy(labs[target], result.ruleset, result.files, explainer, cases, log)

    concurrently(*(functools.partial(one, target) for target in labs if target in result.targets))
    rules = (yaml.safe_load(text) or {}).get("rules") or []
    selected = frozenset(i for i, r in enumerate(rules, 1) if isinstance(r, dict) and "select" in r)
    for report in reports.values():
        tally(report.target, result.ruleset, [(o.case, o.rule) for o in report.outcomes], selected)
    if "windows" in result.targets:
        windows = Report("windows")
        script = result.files[f"windows/{result.ruleset.name}.cmd"]
        wcases = windows_cases(result.ruleset, cases)
        decided: list[tuple[Case, str | None]] = []
        windows.problems = windows_problems(script, explainer, wcases, previous_windows, decided) + \
            exclusive_problems(result.ruleset, explainer, wcases)
        windows.outcomes = [None] * len(wcases)  # type: ignore[list-item]
        tally("windows model", result.ruleset, decided, selected)
        reports["windows"] = windows
    return result, [reports[t] for t in (*labs, "windows") if t in reports]


def _record_failure(text: str, problems: list[str]) -> str:
    FAILURES.mkdir(exist_ok=True)
    path = FAILURES / f"{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    path.write_text(text, encoding="utf-8")
    shown = "\n".join(problems[:20])
    return f"{len(problems)} disagreement(s); policy saved as {path}\n{shown}\n--- policy ---\n{text}"


def _with_fast_logging(text: str) -> str:
    """Examples log at 10/minute; the harness checks one log line per logged probe, so it
    raises the cap (verdicts do not depend on it)."""
    data = yaml.safe_load(text)
    data.setdefault("monitor", {})["rate"] = "10000/second"
    return yaml.safe_dump(data, sort_keys=False)


@pytest.mark.parametrize("policy_path", EXAMPLES + REGRESSIONS, ids=lambda p: p.stem)
def test_example_policies_agree_with_explain(labs: tuple[dict[str, Lab], KernelLog], policy_path: Path,
                                             tmp_path: Path) -> None:
    text = _with_fast_logging(policy_path.read_text(encoding="utf-8"))
    for shared in policy_path.parent.iterdir():  # what a fleet host includes, where it expects it
        if shared.is_dir():
            shutil.copytree(shared, tmp_path / shared.name)
    result, reports = run_policy(*labs, text, tmp_path)
    problems = [p for r in reports for p in r.problems]
    assert not problems, _record_failure(text, problems)
    assert [r.target for r in reports] == list(result.targets)
    assert len(result.targets) >= 2
    assert all(len(r.outcomes) > 50 for r in reports)


@pytest.mark.parametrize("policy_path", EXAMPLES, ids=lambda p: p.stem)
def test_example_policies_agree_in_iptables_chains_mode(labs: tuple[dict[str, Lab], KernelLog], policy_path: Path,
                                                        tmp_path: Path) -> None:
    """``iptables: {mode: chains}``: the same verdicts, logs and counters, from fwgen's own
    chains added (``--noflush``) to open tables."""
    data = yaml.safe_load(_with_fast_logging(policy_path.read_text(encoding="utf-8")))
    data["iptables"] = {"mode": "chains"}
    text = yaml.safe_dump(data, sort_keys=False)
    for shared in policy_path.parent.iterdir():
        if shared.is_dir():
            shutil.copytree(shared, tmp_path / shared.name)
    path = tmp_path / f"{policy_path.stem}.yaml"
    path.write_text(text, encoding="utf-8")
    result = build(str(path), bundled(), ("iptables",))
    assert "# fwgen iptables mode: chains\n" in result.files["iptables/rules.v4"]
    explainer = Explainer.from_file(str(path), bundled())
    cases = choose_cases(result.ruleset, seed=int(hashlib.sha256(text.encode()).hexdigest()[:12], 16))
    lab_set, log = labs
    report = check_policy(lab_set["iptables"], result.ruleset, result.files, explainer, cases, log)
    assert not report.problems, _record_failure(text, report.problems)
    assert len(report.outcomes) > 50


def _random_policies(labs: tuple[dict[str, Lab], KernelLog], workdir: Path, feature: str | None,
                     count: int) -> Coverage:
    """Run ``count`` random policies (built to have ``feature``, drawn the same on every
    run; or, without one, drawn afresh); every one must agree with explain."""
    coverage = Coverage()
    probes: dict[str, int] = {}
    previous: dict[str, str] = {}

    @settings(max_examples=count, deadline=None, print_blob=True, derandomize=feature is not None,
              database=None if feature is not None else settings.default.database,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=policy(feature, mix=True))
    def check(data: dict[str, Any]) -> None:
        text = to_yaml(data)
        result, reports = run_policy(*labs, text, workdir, previous.get("windows"))
        coverage.add(data, result.ruleset)
        for r in reports:
            probes[r.target] = probes.get(r.target, 0) + len(r.outcomes)
        if "windows" in result.targets:
            previous["windows"] = result.files[f"windows/{result.ruleset.name}.cmd"]
        problems = [p for r in reports for p in r.problems]
        assert not problems, _record_failure(text, problems)
        if feature is not None:  # the generator kept its promise
            found = features(result.ruleset)
            found.multi_port_name = mentions_multi_port_name(data)
            found.select = mentions_select(data)
            assert getattr(found, feature), f"a policy built to have {feature} does not:\n{text}"

    check()
    print(f"\n{coverage.report()}; cases checked per target: {probes}")
    return coverage


@pytest.mark.parametrize("feature", FEATURES)
def test_seeded_random_policies_agree_with_explain(labs: tuple[dict[str, Lab], KernelLog], feature: str,
                                                   tmp_path: Path) -> None:
    decided = "select: such a rule decided"
    before = {t: PROBES[(t, decided)] for t in SELECT_TARGETS}
    coverage = _random_policies(labs, tmp_path, feature, SEEDED_POLICIES)
    assert coverage.counts[feature] == coverage.policies >= SEEDED_POLICIES
    if feature == "select":  # the probes reached the select rules themselves, on every target
        reached = {t: PROBES[(t, decided)] - before[t] for t in SELECT_TARGETS}
        assert min(reached.values()) >= SEEDED_POLICIES, reached


def test_random_policies_agree_with_explain(labs: tuple[dict[str, Lab], KernelLog], tmp_path: Path) -> None:
    """Exploration on top of the seeded draw: new policies on every run."""
    coverage = _random_policies(labs, tmp_path, None, RANDOM_POLICIES)
    assert coverage.policies >= min(RANDOM_POLICIES, 1)
