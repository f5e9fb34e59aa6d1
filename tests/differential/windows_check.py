"""Run a generated netsh script through the Windows Firewall model and compare every
case's verdict with explain's. Windows has no reject and no per-rule logging, so the
comparison is on the fate alone: allow and monitor must be allowed, deny blocked.

The model is asked about every dimension a Windows rule can restrict: the protocol (tcp,
udp, ICMPv4 and ICMPv6 with type and code, any other number), the port, the remote and
the local address and the profile in force; explain is asked the same (every verdict
decided: a policy for Windows cannot restrict the interface). Unlike the kernel, the
model decides every ICMP type by the rules (it has no connection tracking), so it gets
every type/code edge of the policy, not only the types conntrack tracks as new.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

from fwgen.explain import Explainer
from fwgen.ir import ICMP_NUMBER, ICMPV6_NUMBER, TCP_NUMBER, UDP_NUMBER, Rule, Ruleset, by_protocol
from fwgen.targets import windows
from tests.differential.harness import ICMP_NEW, ICMP_PROTOCOL, RAW_PROTOCOLS, Case, describe_case, icmp_points
from tests.differential.policygen import EVERY_PROTOCOL, HOST_V4, HOST_V6, PEER_V4, PEER_V6, PROFILES
from tests.winmodel.model import RuleStore, can_be_remote, parse_rule, run_script

# Other protocols every policy's script is asked about, besides those its rules name:
# the kernel harness's, SCTP, 0 (HOPOPT: iptables' word for "every protocol") and 255.
EXTRA_PROTOCOLS = (*RAW_PROTOCOLS, 0, 132, 255)
# Besides the rules' edges, ICMP messages every script is asked about: the queries and
# some of the messages only a rule can decide on Windows (echo reply, errors).
EXTRA_ICMP = {4: {(0, 0), (3, 4), (11, 0)}, 6: {(129, 0), (1, 4), (2, 0)}}


def _model_protocol(case: Case) -> str | int:
    return "icmpv4" if case.protocol == "icmp" else case.protocol


def _verdicts(store: RuleStore, explainer: Explainer, case: Case) -> tuple[str, str, str | None]:
    """(explain's action, the model's verdict, explain's rule)."""
    local = case.canonical_local
    expected = explainer.verdict(case.direction, case.protocol, case.port, case.remote, local=local,
                                 profile=case.profile, icmp=case.icmp)
    if not expected.decided:
        raise AssertionError(f"{describe_case(case)}: explain's verdict depends on {expected.depends_on}")
    got = store.verdict(case.direction, _model_protocol(case), case.port, case.remote, case.profile or "public",
                        local_addr=local, icmp=case.icmp)
    return expected.action, got, expected.rule


def _compare(store: RuleStore, explainer: Explainer, cases: list[Case], label: str, extra: str = "",
             decided: list[tuple[Case, str | None]] | None = None) -> list[str]:
    problems = []
    for case in cases:
        action, got, rule = _verdicts(store, explainer, case)
        if decided is not None:
            decided.append((case, rule))
        if got != ("block" if action == "deny" else "allow"):
            problems.append(f"{label}: {describe_case(case)}: explain says {action} (rule {rule}), model {got}{extra}")
    return problems


def windows_problems(script: str, explainer: Explainer, cases: list[Case], previous_script: str | None = None,
                     decided: list[tuple[Case, str | None]] | None = None) -> list[str]:
    """Every case's verdict, and the script's re-runs; ``decided`` collects each case
    with the rule that decided it (None: a default)."""
    problems: list[str] = []
    store = RuleStore()
    code = run_script(script, store)
    if code != 0:
        return [f"windows: script exited {code}"]
    problems += _compare(store, explainer, cases, "windows", decided=decided)
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
    return _compare(store, explainer, cases, "windows exclusive", " beside other software's allow rules")


def _edges(networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> set[str]:
    """The first and last address of each network, and one beyond each."""
    found: set[str] = set()
    for net in networks:
        top = 2 ** net.max_prefixlen - 1
        first, last = int(net.network_address), int(net.broadcast_address)
        for value in (first - 1, first, last, last + 1):
            if 0 <= value <= top:
                address = ipaddress.ip_address(value) if net.version == 4 else ipaddress.IPv6Address(value)
                if can_be_remote(address):
                    found.add(str(address))
    return found


def _other_protocols(rules: tuple[Rule, ...]) -> set[int]:
    """Protocol numbers (but tcp, udp, ICMP and ICMPv6) the rules name, one either side of
    each, and EXTRA_PROTOCOLS."""
    numbers = set(EXTRA_PROTOCOLS)
    for rule in rules:
        if rule.what() != EVERY_PROTOCOL:
            for number in by_protocol(rule.other):
                numbers |= {n for n in (number - 1, number, number + 1) if 0 <= n <= 255}
    return numbers - {TCP_NUMBER, UDP_NUMBER, ICMP_NUMBER, ICMPV6_NUMBER}


def windows_cases(ruleset: Ruleset, kernel_cases: list[Case]) -> list[Case]:
    """The kernel cases' tcp and udp ports; every ICMP and ICMPv6 type/code edge of the
    rules; the protocols the rules name (and their neighbours); each from or to every
    remote address of the kernel cases and every policy network's edges (first and last
    address, and one beyond each), from or to the host addresses and every local
    network's edges taking turns, and, for a policy with profiles, under each of the
    three profiles: the model costs little per probe, so it gets many."""
    remotes: set[str] = {c.remote for c in kernel_cases} | set(PEER_V4 + PEER_V6)
    locals_: set[str] = set(HOST_V4 + HOST_V6)
    for rule in ruleset.rules:
        remotes |= _edges((*(rule.remote_v4 or ()), *(rule.remote_v6 or ())))
        locals_ |= _edges((*(rule.local_v4 or ()), *(rule.local_v6 or ())))
    by_family = {f: (sorted(a for a in remotes if ipaddress.ip_address(a).version == f),
                     sorted(a for a in locals_ if ipaddress.ip_address(a).version == f)) for f in (4, 6)}
    profiles: tuple[str | None, ...] = PROFILES if any(r.profiles is not None for r in ruleset.rules) else (None,)
    points: list[tuple[str, str | int, int | None, tuple[int, int] | None, tuple[int, ...]]] = [
        (d, p, port, None, (4, 6)) for d, p, port in sorted({(c.direction, str(c.protocol), c.port)
                                                               for c in kernel_cases if c.kind in ("tcp", "udp")})
    ]
    for direction in ("in", "out"):
        rules = tuple(r for r in ruleset.rules if r.direction.value == direction)
        for fam, number in ((4, ICMP_NUMBER), (6, ICMPV6_NUMBER)):
            icmp = icmp_points(rules, number, None) | {(t, 0) for t in ICMP_NEW[fam]} | EXTRA_ICMP[fam]
            points += [(direction, ICMP_PROTOCOL[fam], None, point, (fam,)) for point in sorted(icmp)]
        points += [(direction, number, None, None, (4, 6)) for number in sorted(_other_protocols(rules))]
    cases = []
    for j, (direction, protocol, port, icmp, families) in enumerate(points):
        for fam in families:
            fam_remotes, fam_locals = by_family[fam]
            for k in range(max(len(fam_remotes), len(fam_locals))):
                for profile in profiles:
                    cases.append(Case(direction, protocol, port, fam_remotes[k % len(fam_remotes)],
                                      fam_locals[(k + j) % len(fam_locals)], icmp, profile))
    return cases
