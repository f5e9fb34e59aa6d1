"""Run a generated netsh script through the Windows Firewall model and compare every
case's verdict with explain's. Windows has no reject and no per-rule logging, so the
comparison is on the fate alone: allow and monitor must be allowed, deny blocked."""

from __future__ import annotations

import ipaddress

from fwgen.explain import Explainer
from fwgen.ir import Ruleset
from tests.differential.harness import Case
from tests.winmodel.model import RuleStore, run_script


def windows_problems(script: str, explainer: Explainer, cases: list[Case],
                     previous_script: str | None = None) -> list[str]:
    problems: list[str] = []
    store = RuleStore()
    code = run_script(script, store)
    if code != 0:
        return [f"windows: script exited {code}"]
    for case in cases:
        expected = explainer.verdict(case.direction, case.protocol, case.port, case.remote)
        got = store.verdict(case.direction, case.protocol, case.port, case.remote)
        if got != ("block" if expected.action == "deny" else "allow"):
            problems.append(f"windows: {case}: explain says {expected.action} (rule {expected.rule}), model {got}")
    clean = store.snapshot()
    if run_script(script, store) != 0 or store.snapshot() != clean:
        problems.append("windows: running the script twice does not leave exactly one clean run's rules")
    if previous_script is not None:
        upgraded = RuleStore()
        if run_script(previous_script, upgraded) != 0 or run_script(script, upgraded) != 0:
            problems.append("windows: the older policy's script followed by this one failed")
        elif upgraded.snapshot()[0] != clean[0]:
            problems.append("windows: after an older policy's script, the rules differ from a clean run")
    return problems


def windows_cases(ruleset: Ruleset, kernel_cases: list[Case]) -> list[Case]:
    """The kernel cases' ports, each also at every policy network's edges (first and last
    address, and one beyond each): the model costs nothing per probe, so it gets them all."""
    edges: set[str] = {c.remote for c in kernel_cases}
    for rule in ruleset.rules:
        for networks in (rule.remote_v4 or (), rule.remote_v6 or ()):
            for net in networks:
                top = 2 ** net.max_prefixlen - 1
                first, last = int(net.network_address), int(net.broadcast_address)
                for value in (first - 1, first, last, last + 1):
                    if 0 <= value <= top:
                        edges.add(str(ipaddress.ip_address(value) if net.version == 4
                                      else ipaddress.IPv6Address(value)))
    points = sorted({(c.direction, c.protocol, c.port) for c in kernel_cases})
    return [Case(d, p, port, remote) for d, p, port in points for remote in sorted(edges)]
