"""Run a generated netsh script through the Windows Firewall model and compare every
case's verdict with explain's. Windows has no reject and no per-rule logging, so the
comparison is on the fate alone: allow and monitor must be allowed, deny blocked."""

from __future__ import annotations

import dataclasses
import ipaddress

from fwgen.explain import Explainer
from fwgen.ir import Ruleset
from fwgen.targets import windows
from tests.differential.harness import Case
from tests.winmodel.model import RuleStore, can_be_remote, parse_rule, run_script


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


# Allow rules other software keeps: between them they allow every tcp and udp connection.
FOREIGN_ALLOW_ALL = tuple(
    parse_rule(f"name=Other-{d}-{p} dir={d} action=allow protocol={p}") for d in ("in", "out") for p in ("tcp", "udp")
)


def exclusive_problems(ruleset: Ruleset, explainer: Explainer, cases: list[Case]) -> list[str]:
    """``windows: {exclusive: true}``: the same policy's script, run in a store whose other
    software allows everything, must still give exactly explain's verdicts."""
    script = windows.render(dataclasses.replace(
        ruleset, options=ruleset.options._replace(windows_exclusive=True))).files[f"windows/{ruleset.name}.cmd"]
    store = RuleStore()
    for rule in FOREIGN_ALLOW_ALL:
        store.add(rule)
    if run_script(script, store) != 0:
        return ["windows exclusive: script failed"]
    problems = []
    for case in cases:
        expected = explainer.verdict(case.direction, case.protocol, case.port, case.remote)
        got = store.verdict(case.direction, case.protocol, case.port, case.remote)
        if got != ("block" if expected.action == "deny" else "allow"):
            problems.append(f"windows exclusive: {case}: explain says {expected.action} (rule {expected.rule}), "
                            f"model {got} beside other software's allow rules")
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
                        address = ipaddress.ip_address(value) if net.version == 4 else ipaddress.IPv6Address(value)
                        if can_be_remote(address):
                            edges.add(str(address))
    points = sorted({(c.direction, c.protocol, c.port) for c in kernel_cases})
    return [Case(d, p, port, remote) for d, p, port in points for remote in sorted(edges)]
