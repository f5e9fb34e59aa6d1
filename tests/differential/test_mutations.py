"""The harnesses must be able to fail: deliberately broken compilers, each modelled on a
real peer bug, must be caught by the harness that covers them — and the real compiler,
on the same policy, must pass."""

from __future__ import annotations

import dataclasses
import re

import pytest

from fwgen.build import build
from fwgen.explain import Explainer
from fwgen.ir import ALL_PORTS, Action, Ruleset
from fwgen.registry import bundled
from fwgen.targets import iptables, nftables
from fwgen.targets.windows import WinRule, add_rule_command
from tests.differential.harness import Lab, check_policy, choose_cases
from tests.differential.windows_check import windows_cases, windows_problems
from tests.kernel.netns import KernelLog

POLICY = """\
version: 1
name: mutant
defaults: {inbound: deny, outbound: allow, deny: drop}
monitor: {log_prefix: fwgenT, rate: 10000/second}
rules:
  - name: admin
    action: allow
    ports: [1261]
    from: [198.51.100.0/25, "2001:db8:1::/48"]
  - name: closed
    action: deny
    ports: [1261, "1270-1280"]
  - name: web
    action: allow
    ports: [8080]
  - name: watch
    action: monitor
    direction: out
    ports: [1300]
    to: [192.0.2.0/24]
  - name: out-closed
    action: deny
    direction: out
    ports: ["1290-1310"]
"""


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ruleset, dict[str, str], Explainer]:
    path = tmp_path_factory.mktemp("mutant") / "mutant.yaml"
    path.write_text(POLICY, encoding="utf-8")
    result = build(str(path), bundled())
    return result.ruleset, result.files, Explainer.from_file(str(path), bundled())


def _problems(labs: tuple[dict[str, Lab], KernelLog], target: str, ruleset: Ruleset,
              files: dict[str, str], explainer: Explainer) -> list[str]:
    cases = choose_cases(ruleset, seed=7)
    return check_policy(labs[0][target], ruleset, files, explainer, cases, labs[1]).problems


def _with_rules(ruleset: Ruleset, **change: object) -> Ruleset:
    return dataclasses.replace(ruleset, rules=tuple(r._replace(**change) for r in ruleset.rules))


@pytest.mark.parametrize("target", ["iptables", "nftables"])
def test_real_compiler_passes(labs: tuple[dict[str, Lab], KernelLog], subject, target: str) -> None:
    ruleset, files, explainer = subject
    assert _problems(labs, target, ruleset, files, explainer) == []


def test_real_windows_script_passes(subject) -> None:
    ruleset, files, explainer = subject
    cases = windows_cases(ruleset, choose_cases(ruleset, seed=7))
    assert windows_problems(files["windows/mutant.cmd"], explainer, cases) == []


def test_nftables_dropping_destination_ports_is_caught(labs, subject) -> None:
    """Capirca's released nftables generator: the port match silently disappears."""
    ruleset, _, explainer = subject
    portless = dataclasses.replace(ruleset, rules=tuple(
        r._replace(ports=tuple((proto, ALL_PORTS) for proto, _ in r.ports)) for r in ruleset.rules))
    files = nftables.render(portless).files
    problems = _problems(labs, "nftables", ruleset, files, explainer)
    assert any("explain says deny" in p or "explain says allow" in p for p in problems), problems


def test_iptables_ignoring_addresses_is_caught(labs, subject) -> None:
    ruleset, _, explainer = subject
    files = iptables.render(_with_rules(ruleset, remote_v4=None, remote_v6=None)).files
    problems = _problems(labs, "iptables", ruleset, files, explainer)
    assert any("1261" in p and "explain says deny" in p for p in problems), problems


def test_drop_and_accept_swapped_for_one_family_is_caught(labs, subject) -> None:
    ruleset, files, explainer = subject
    swap = {"ACCEPT": "DROP", "DROP": "ACCEPT"}
    # every verdict the policy decides (not the always-rules: those would break IPv6 itself)
    v6 = re.sub(r'^(-A (?!.*"always: ).*-j )(ACCEPT|DROP)$', lambda m: m.group(1) + swap[m.group(2)],
                files["iptables/rules.v6"], flags=re.M)
    assert v6 != files["iptables/rules.v6"]
    problems = _problems(labs, "iptables", ruleset, {**files, "iptables/rules.v6": v6}, explainer)
    assert problems and all("2001:db8" in p for p in problems if "Case(" in p), problems


def test_naive_one_to_one_windows_rules_are_caught(subject) -> None:
    """Aerleon's Windows output: one netsh rule per policy term, as if order mattered."""
    ruleset, files, explainer = subject
    real = files["windows/mutant.cmd"].split("\r\n")
    adds = [i for i, line in enumerate(real) if " add rule " in line]
    naive: list[str] = []
    for rule in ruleset.rules:
        for proto, ranges in rule.ports:
            remote = None if rule.remote_v4 is None and rule.remote_v6 is None else tuple(
                str(n) for n in (*(rule.remote_v4 or ()), *(rule.remote_v6 or ())))
            win = WinRule(rule.direction, "block" if rule.action is Action.DENY else "allow", proto.value,
                          None if ranges == ALL_PORTS else ranges, remote, f"naive {rule.name}")
            naive.append(add_rule_command("fwgen-mutant.new", win) + " || goto :failed")
    script = "\r\n".join(real[: adds[0]] + naive + real[adds[-1] + 1 :])
    problems = windows_problems(script, explainer, windows_cases(ruleset, choose_cases(ruleset, seed=7)))
    assert any("198.51.100" in p and "model block" in p for p in problems), problems
