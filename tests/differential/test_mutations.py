"""The harnesses must be able to fail: deliberately broken compilers, each modelled on a
real peer bug, must be caught by the harness that covers them — and the real compiler,
on the same policy, must pass."""

from __future__ import annotations

import dataclasses
import functools
import re

import pytest

from fwgen.build import build
from fwgen.explain import Explainer
from fwgen.ir import ALL_PORTS, Action, Ruleset, what_protocol, what_span
from fwgen.registry import bundled
from fwgen.targets import iptables, nftables, windows
from fwgen.targets.windows import WinRule, add_rule_command
from tests.differential.harness import Lab, check_policy, choose_cases, concurrently
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


def test_chains_mode_passes_and_a_missing_jump_is_caught(labs, subject) -> None:
    """``iptables: {mode: chains}``: the real output passes; one whose OUTPUT jump is
    missing (fwgen's chain never reached: the outbound deny and monitor rules do nothing)
    is caught."""
    ruleset, _, explainer = subject
    sharing = dataclasses.replace(ruleset, options=ruleset.options._replace(iptables_chains=True))
    files = iptables.render(sharing).files
    assert _problems(labs, "iptables", sharing, files, explainer) == []
    broken = {name: text.replace("-A OUTPUT -j fwgen-mutant-out\n", "") for name, text in files.items()}
    assert broken != files
    problems = _problems(labs, "iptables", sharing, broken, explainer)
    assert any("explain says deny" in p for p in problems), problems


def test_drop_and_accept_swapped_for_one_family_is_caught(labs, subject) -> None:
    ruleset, files, explainer = subject
    swap = {"ACCEPT": "DROP", "DROP": "ACCEPT"}
    # every verdict the policy decides (not the always-rules: those would break IPv6 itself)
    v6 = re.sub(r'^(-A (?!.*"always: ).*-j )(ACCEPT|DROP)$', lambda m: m.group(1) + swap[m.group(2)],
                files["iptables/rules.v6"], flags=re.M)
    assert v6 != files["iptables/rules.v6"]
    problems = _problems(labs, "iptables", ruleset, {**files, "iptables/rules.v6": v6}, explainer)
    assert problems and all("2001:db8" in p for p in problems if " via " in p), problems


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


# --- the newer matches: interface, ICMP types, other protocols ----------------------------
#
# Each mutant is modelled on a real bug of a peer generator, and both Linux targets get it
# at once (their labs run concurrently); the Windows model gets it where it applies.

PROTO_POLICY = """\
version: 1
name: mutproto
defaults: {inbound: deny, outbound: allow, deny: drop}
monitor: {log_prefix: fwgenT, rate: 10000/second}
rules:
  - name: ping
    action: allow
    protocol: icmp
    icmp: [echo-request]
  - name: ping6
    action: allow
    protocol: icmpv6
    icmp: [echo-request]
  - name: tunnel
    action: allow
    protocol: gre
    from: [198.51.100.0/24, "2001:db8:1::/48"]
  - name: ipsec-in
    action: allow
    protocol: esp
  - name: no-esp-out
    action: deny
    direction: out
    protocol: esp
  - name: web
    action: allow
    protocol: tcp
    ports: [1261]
"""
INTERFACE_POLICY = """\
version: 1
name: mutif
targets: [iptables, nftables]
defaults: {inbound: deny, outbound: allow, deny: reject}
monitor: {log_prefix: fwgenT, rate: 10000/second}
rules:
  - name: lan-dns
    action: allow
    protocol: udp
    ports: [1261]
    interface: fwa0
  - name: lan-ping
    action: allow
    protocol: icmp
    interface: ["fwa*"]
  - name: no-b-out
    action: deny
    direction: out
    ports: [1300]
    interface: fwb0
"""
Subject = tuple[Ruleset, dict[str, str], Explainer]


def _subject(tmp_path_factory: pytest.TempPathFactory, name: str, text: str) -> Subject:
    path = tmp_path_factory.mktemp(name) / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    result = build(str(path), bundled())
    return result.ruleset, result.files, Explainer.from_file(str(path), bundled())


@pytest.fixture(scope="module")
def proto_subject(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    return _subject(tmp_path_factory, "mutproto", PROTO_POLICY)


@pytest.fixture(scope="module")
def iface_subject(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    return _subject(tmp_path_factory, "mutif", INTERFACE_POLICY)


def _kernel(labs: tuple[dict[str, Lab], KernelLog], subject: Subject,
            files: dict[str, dict[str, str]] | None = None) -> dict[str, list[str]]:
    """Each Linux target's disagreements, both labs at once; ``files``: the outputs to
    load per target (default: the real compiler's)."""
    ruleset, real, explainer = subject
    cases = choose_cases(ruleset, seed=7)
    found: dict[str, list[str]] = {}

    def one(target: str) -> None:
        loaded = (files or {}).get(target, real)
        found[target] = check_policy(labs[0][target], ruleset, loaded, explainer, cases, labs[1]).problems

    concurrently(*(functools.partial(one, target) for target in ("iptables", "nftables")))
    return found


def _windows(subject: Subject, script: str | None = None) -> list[str]:
    ruleset, files, explainer = subject
    cases = windows_cases(ruleset, choose_cases(ruleset, seed=7))
    return windows_problems(script or files[f"windows/{ruleset.name}.cmd"], explainer, cases)


def _disagreements(problems: list[str], *needles: str) -> list[str]:
    return [p for p in problems if all(n in p for n in needles)]


def test_real_compiler_passes_the_newer_matches(labs, proto_subject, iface_subject) -> None:
    assert _kernel(labs, proto_subject) == {"iptables": [], "nftables": []}
    assert _kernel(labs, iface_subject) == {"iptables": [], "nftables": []}
    assert _windows(proto_subject) == []


def test_ignoring_the_interface_is_caught(labs, iface_subject) -> None:
    """A generator that drops the interface match (as any target without interface names
    would, were it not refused): the rule then matches on every link."""
    ruleset, _, _ = iface_subject
    unbound = _with_rules(ruleset, interfaces=None)
    mutant = {"iptables": iptables.render(unbound).files, "nftables": nftables.render(unbound).files}
    for target, problems in _kernel(labs, iface_subject, mutant).items():
        assert _disagreements(problems, "in udp 1261", "via fwb0", "explain says deny", "delivered"), (target, problems)
        assert _disagreements(problems, "in icmp 8/0", "via fwb0", "explain says deny"), (target, problems)
        assert _disagreements(problems, "out tcp 1300", "via fwa0", "explain says allow", "not delivered"), \
            (target, problems)


def test_ignoring_the_icmp_type_is_caught(labs, proto_subject) -> None:
    """A generator that matches the protocol of an ICMP rule but not its types (an
    echo-request rule that allows every ICMP message)."""
    ruleset, files, _ = proto_subject
    every_type = dataclasses.replace(ruleset, rules=tuple(
        r._replace(other=tuple(sorted({what_span(what_protocol(lo)) for lo, _ in r.other})))
        if r.families != (4, 6) else r for r in ruleset.rules))
    mutant = {"iptables": iptables.render(every_type).files, "nftables": nftables.render(every_type).files}
    for target, problems in _kernel(labs, proto_subject, mutant).items():
        for query in ("icmp 13/0", "icmp 15/0", "icmp 17/0", "icmpv6 139/0"):
            assert _disagreements(problems, f"in {query}", "explain says deny", "delivered"), (target, query, problems)
    script = windows.render(every_type).files["windows/mutproto.cmd"]
    assert "protocol=icmpv4:8,any" in files["windows/mutproto.cmd"] and "protocol=icmpv4:8,any" not in script
    assert _disagreements(_windows(proto_subject, script), "in icmp 13/0", "explain says deny", "model allow")


def test_icmpv6_rule_as_a_bare_ipv4_accept_is_caught(labs, proto_subject) -> None:
    """Aerleon's fail-open: an ICMPv6 term rendered into an IPv4 filter loses its
    protocol and becomes "accept every new connection"."""
    ruleset, files, _ = proto_subject
    v4 = files["iptables/rules.v4"].splitlines()
    ping = max(i for i, line in enumerate(v4) if '"ping (' in line)
    v4.insert(ping + 1, '-A INPUT -m comment --comment "ping6 (mutproto.yaml:10) allow" -j ACCEPT')
    nft = re.sub(r"^(\s*)(icmpv6 type 128 accept)", r"\1meta nfproto ipv4 accept\n\1\2", files["nftables/mutproto.nft"],
                 flags=re.M)
    assert nft != files["nftables/mutproto.nft"]
    mutant = {"iptables": {**files, "iptables/rules.v4": "\n".join(v4) + "\n"},
              "nftables": {**files, "nftables/mutproto.nft": nft}}
    for target, problems in _kernel(labs, proto_subject, mutant).items():
        cases = [p for p in problems if " via " in p]
        assert _disagreements(cases, "in tcp", "explain says deny", "delivered"), (target, problems)
        assert _disagreements(cases, "in protocol 112", "explain says deny", "delivered"), (target, problems)
        assert all(":" not in p.split(" from ")[1].split(" ")[0] for p in cases), (target, problems)  # IPv4 only
    lines = files["windows/mutproto.cmd"].split("\r\n")
    ping6 = next(i for i, line in enumerate(lines) if "protocol=icmpv6:128,any" in line)
    bare = lines[ping6].replace("protocol=icmpv6:128,any", "protocol=any remoteip=0.0.0.0-255.255.255.255")
    lines.insert(ping6, bare)
    found = _windows(proto_subject, "\r\n".join(lines))
    assert _disagreements(found, "in tcp", "explain says deny", "model allow"), found
    assert not _disagreements(found, "from 2001:"), found


def test_ignoring_the_protocol_number_is_caught(labs, proto_subject) -> None:
    """iptables: ESP (50) written as AH (51); nftables: the GRE (47) rule without its
    protocol, matching every protocol; Windows: protocol=50 written as 51."""
    ruleset, files, _ = proto_subject
    v4, v6 = (re.sub(r" -p 50 ", " -p 51 ", files[f"iptables/rules.{f}"]) for f in ("v4", "v6"))
    nft = files["nftables/mutproto.nft"].replace(" meta l4proto 47 ", " ")
    assert v4 != files["iptables/rules.v4"] and nft != files["nftables/mutproto.nft"]
    mutant = {"iptables": {**files, "iptables/rules.v4": v4, "iptables/rules.v6": v6},
              "nftables": {**files, "nftables/mutproto.nft": nft}}
    found = _kernel(labs, proto_subject, mutant)
    assert _disagreements(found["iptables"], "in protocol 50", "explain says allow", "not delivered"), found
    assert _disagreements(found["iptables"], "in protocol 51", "explain says deny", "delivered"), found
    assert _disagreements(found["iptables"], "out protocol 50", "explain says deny", "delivered"), found
    assert _disagreements(found["nftables"], "in udp", "from 198.51.100.", "explain says deny", "delivered"), found
    assert _disagreements(found["nftables"], "in protocol 112", "from 2001:db8:1::5", "explain says deny"), found
    script = files["windows/mutproto.cmd"].replace("protocol=50 ", "protocol=51 ")
    windows_found = _windows(proto_subject, script)
    assert _disagreements(windows_found, "in protocol 50", "explain says allow", "model block"), windows_found
    assert _disagreements(windows_found, "in protocol 51", "explain says deny", "model allow"), windows_found
