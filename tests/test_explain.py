"""``fwgen explain``: the reference first-match semantics (docs/policy-format.md), its
any-address region answer, its JSON and text output and its exit codes."""

from __future__ import annotations

import ast
import dataclasses
import doctest
import io
import ipaddress
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwgen import icmp as icmp_module
from fwgen import ir
from fwgen import registry as registry_module
from fwgen.cli import main
from fwgen.errors import PolicyError
from fwgen.explain import Address, Condition, Explainer, Requirement, Verdict
from fwgen.ir import Ruleset
from fwgen.policy import PROFILES, load_policy
from fwgen.resolve import compile_policy, resolve_ports

ROOT = Path(__file__).resolve().parent.parent
EDGE = ROOT / "policies" / "edge.yaml"
POLICIES = sorted((ROOT / "policies").glob("*.yaml"))


@pytest.fixture(scope="module")
def registry() -> registry_module.Registry:
    return registry_module.bundled()


@pytest.fixture(scope="module")
def edge(registry: registry_module.Registry) -> Explainer:
    return Explainer.from_file(str(EDGE), registry)


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def explainer(tmp_path: Path, text: str, registry: registry_module.Registry) -> Explainer:
    return Explainer.from_file(write(tmp_path, text), registry)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["explain", *args])
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------------- semantics


def test_first_match_order(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, (
        "version: 1\n"
        "defaults: {inbound: allow}\n"
        "rules:\n"
        "  - name: lan\n"
        "    action: allow\n"
        "    ports: [22]\n"
        "    from: [10.0.0.0/8]\n"
        "  - name: rest\n"
        "    action: deny\n"
        "    ports: [22]\n"
    ), registry)
    assert e.verdict("in", "tcp", 22, "10.1.2.3") == Verdict("allow", "lan", 4, False, "accept")
    assert e.verdict("in", "tcp", 22, "11.0.0.1") == Verdict("deny", "rest", 8, False, "drop")
    assert e.verdict("in", "udp", 22, "2001:db8::1").rule == "rest"
    # another port: no rule, the default (inbound allow here)
    assert e.verdict("in", "tcp", 23, "11.0.0.1") == Verdict("allow", None, None, False, "accept")


def test_later_rule_never_overrides_earlier(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, (
        "version: 1\n"
        "rules:\n"
        "  - {name: all, action: deny, protocol: tcp}\n"
        "  - {name: ssh, action: allow, ports: [22], from: [192.0.2.0/24]}\n"
    ), registry)
    assert e.verdict("in", "tcp", 22, "192.0.2.1").rule == "all"
    assert e.verdict("in", "udp", 22, "192.0.2.1").rule == "ssh"
    assert e.verdict("in", "udp", 22, "192.0.3.1").rule is None


def test_address_families_are_separate(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, (
        "version: 1\n"
        "rules:\n"
        "  - {name: v4-all, action: allow, ports: [80], from: [0.0.0.0/0]}\n"
        "  - {name: v6-all, action: monitor, ports: [81], from: ['::/0']}\n"
    ), registry)
    assert e.verdict("in", "tcp", 80, "203.0.113.9").rule == "v4-all"
    assert e.verdict("in", "tcp", 80, "2001:db8::9").rule is None
    assert e.verdict("in", "tcp", 81, "2001:db8::9").rule == "v6-all"
    assert e.verdict("in", "tcp", 81, "203.0.113.9").rule is None
    assert e.regions("in", "tcp", 80) == [
        ([ipaddress.ip_network("0.0.0.0/0")], Verdict("allow", "v4-all", 3, False, "accept")),
        ([ipaddress.ip_network("::/0")], Verdict("deny", None, None, False, "drop")),
    ]


def test_mixed_family_rule(edge: Explainer) -> None:
    assert edge.verdict("in", "tcp", 22, "192.0.2.200").rule == "admin-ssh"
    assert edge.verdict("in", "tcp", 22, "2001:db8:a:ffff::1").rule == "admin-ssh"
    assert edge.verdict("in", "tcp", 22, "2001:db8:b::1").rule is None
    assert edge.verdict("in", "tcp", 22, "192.0.3.0").rule is None
    # admin-ssh is tcp only
    assert edge.verdict("in", "udp", 22, "192.0.2.1").rule is None
    assert edge.verdict("in", "tcp", 22, ipaddress.ip_address("192.0.2.1")).rule == "admin-ssh"


@pytest.mark.parametrize("inbound,outbound,deny", [
    ("deny", "allow", "drop"), ("allow", "deny", "reject"), ("allow", "allow", "drop"), ("deny", "deny", "reject"),
])
def test_defaults_both_ways(tmp_path: Path, registry: registry_module.Registry,
                            inbound: str, outbound: str, deny: str) -> None:
    e = explainer(tmp_path, (
        f"version: 1\ndefaults: {{inbound: {inbound}, outbound: {outbound}, deny: {deny}}}\n"
    ), registry)

    def expected(action: str) -> Verdict:
        return Verdict(action, None, None, False, deny if action == "deny" else "accept")

    for remote in ("198.51.100.1", "2001:db8::1"):
        for protocol in ("tcp", "udp"):
            assert e.verdict("in", protocol, 443, remote) == expected(inbound)
            assert e.verdict("out", protocol, 443, remote) == expected(outbound)


def test_unwritten_defaults(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, "version: 1\n", registry)
    assert e.verdict("in", "tcp", 1, "192.0.2.1") == Verdict("deny", None, None, False, "drop")
    assert e.verdict("out", "udp", 65535, "::1") == Verdict("allow", None, None, False, "accept")


def test_direction_is_respected(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, (
        "version: 1\n"
        "defaults: {outbound: deny}\n"
        "rules:\n"
        "  - {name: dns, action: allow, direction: out, ports: [domain], to: [198.51.100.53]}\n"
    ), registry)
    assert e.verdict("out", "udp", 53, "198.51.100.53").rule == "dns"
    assert e.verdict("out", "udp", 53, "198.51.100.54").action == "deny"
    assert e.verdict("in", "udp", 53, "198.51.100.53").rule is None


def test_monitor_log_and_reject(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, (
        "version: 1\n"
        "defaults: {deny: reject}\n"
        "rules:\n"
        "  - {name: watch, action: monitor, ports: [1261]}\n"
        "  - {name: closed, action: deny, log: true, ports: [1274]}\n"
        "  - {name: quiet, action: deny, ports: [1275]}\n"
        "  - {name: loud-allow, action: allow, log: true, ports: [1276]}\n"
        "  - {name: plain, action: allow, ports: [1277]}\n"
    ), registry)
    v = lambda port: e.verdict("in", "udp", port, "192.0.2.1")  # noqa: E731
    assert v(1261) == Verdict("monitor", "watch", 4, True, "accept")
    assert v(1274) == Verdict("deny", "closed", 5, True, "reject")
    assert v(1275) == Verdict("deny", "quiet", 6, False, "reject")
    assert v(1276) == Verdict("allow", "loud-allow", 7, True, "accept")
    assert v(1277) == Verdict("allow", "plain", 8, False, "accept")
    assert v(1278) == Verdict("deny", None, None, False, "reject")


def test_edge_policy(edge: Explainer) -> None:
    any4 = "203.0.113.5"
    assert edge.verdict("in", "tcp", 80, any4) == Verdict("allow", "web", 21, False, "accept")
    assert edge.verdict("in", "udp", 80, any4) == Verdict("deny", None, None, False, "drop")
    assert edge.verdict("in", "udp", 1261, any4) == Verdict("monitor", "dormant-watch", 25, True, "accept")
    assert edge.verdict("in", "tcp", 1274, "::1") == Verdict("monitor", "dormant-watch", 25, True, "accept")
    assert edge.verdict("in", "tcp", 6010, any4) == Verdict("deny", "no-x11", 29, True, "drop")
    assert edge.verdict("out", "tcp", 6010, any4) == Verdict("allow", None, None, False, "accept")


@pytest.mark.parametrize("port,rule", [(5999, None), (6000, "no-x11"), (6063, "no-x11"), (6064, None)])
def test_x11_range_edges(edge: Explainer, port: int, rule: str | None) -> None:
    for protocol in ("tcp", "udp"):
        verdict = edge.verdict("in", protocol, port, "198.51.100.1")
        assert verdict.rule == rule
        assert verdict.action == "deny"
        assert verdict.logged == (rule is not None)


def test_port_range_edges_and_protocol_suffix(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, (
        "version: 1\n"
        "defaults: {inbound: allow}\n"
        "rules:\n"
        "  - {name: r, action: deny, ports: ['8000-8100/tcp', 0, 65535]}\n"
        "  - {name: reg, action: monitor, range: registered, protocol: udp}\n"
    ), registry)
    t = lambda proto, port: e.verdict("in", proto, port, "192.0.2.1").rule  # noqa: E731
    assert [t("tcp", p) for p in (7999, 8000, 8100, 8101)] == [None, "r", "r", None]
    assert [t("udp", p) for p in (0, 1023, 1024, 8000, 49151, 49152, 65535)] == [
        "r", None, "reg", "reg", "reg", None, "r",
    ]


def test_bad_queries_raise(edge: Explainer) -> None:
    with pytest.raises(ValueError):
        edge.verdict("in", "tcp", 70000, "192.0.2.1")
    with pytest.raises(ValueError):
        edge.verdict("sideways", "tcp", 22, "192.0.2.1")
    with pytest.raises(ValueError):
        edge.verdict("in", "icmp", 22, "192.0.2.1")
    with pytest.raises(ValueError):
        edge.verdict("in", "tcp", 22, "not-an-address")


def test_policy_errors_propagate(tmp_path: Path, registry: registry_module.Registry) -> None:
    path = write(tmp_path, "version: 1\nrules:\n  - action: monitor\n    ports: [mpshrv]\n")
    with pytest.raises(PolicyError) as info:
        Explainer.from_file(path, registry)
    assert str(info.value) == f"{path}:4:13: unknown service 'mpshrv' (did you mean 'mpshrsv'?)"


def _explain_imports() -> set[str]:
    tree = ast.parse((ROOT / "fwgen" / "explain.py").read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    return {name for name in imported if name.startswith("fwgen")}


def test_explain_shares_no_compiler_code() -> None:
    """The reference must not use the code it judges: no IR compilation, no range
    merging, no first-match engine, no target, lowering, lint or diff code. It reads
    the policy, the registries and the resolving helpers of fwgen.resolve."""
    fwgen_imports = _explain_imports()
    assert fwgen_imports <= {
        "fwgen", "fwgen.icmp", "fwgen.protocols",
        "fwgen.errors", "fwgen.errors.PolicyError",
        "fwgen.policy", "fwgen.policy.PROFILES", "fwgen.policy.Policy", "fwgen.policy.PolicyRule",
        "fwgen.policy.load_policy",
        "fwgen.registry", "fwgen.registry.Registry", "fwgen.registry_select",
        "fwgen.resolve", "fwgen.resolve.resolve_ports", "fwgen.resolve.resolve_protocol",
        "fwgen.resolve.resolve_icmp", "fwgen.resolve.ProtocolChoice", "fwgen.resolve.check_groups",
    }, fwgen_imports


def test_explain_reaches_no_compiler_module() -> None:
    """Nor through the modules it imports (the late imports inside functions counted)."""
    from tests.test_imports import graph

    edges = graph()
    reached: set[str] = set()
    todo = ["fwgen.explain"]
    while todo:
        for nxt in edges[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    forbidden = {name for name in edges if name.startswith(("fwgen.lint", "fwgen.diff", "fwgen.targets"))}
    forbidden |= {"fwgen.engine", "fwgen.lowering", "fwgen.build", "fwgen.render", "fwgen.forked"}
    forbidden -= {"fwgen.targets.nft_keywords"}  # the policy loader's list of reserved table names
    assert "fwgen.lint" in forbidden and "fwgen.targets.iptables" in forbidden
    assert not reached & forbidden, reached & forbidden


def test_the_import_check_sees_a_forbidden_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whitelist above would catch an explain.py that imported the compiler."""
    real = (ROOT / "fwgen" / "explain.py").read_text(encoding="utf-8")
    for line in ("from fwgen.resolve import compile_policy", "from fwgen import engine", "import fwgen.ir"):
        fake = tmp_path / "fwgen" / "explain.py"
        fake.parent.mkdir(exist_ok=True)
        fake.write_text(real + "\n" + line + "\n", encoding="utf-8")
        monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
        with pytest.raises(AssertionError):
            test_explain_shares_no_compiler_code()
        monkeypatch.undo()


# ---------------------------------------------------------------------- regions


def test_regions_edge_ssh(edge: Explainer) -> None:
    regions = edge.regions("in", "tcp", 22)
    assert len(regions) == 2
    allow_nets, allow = regions[0]
    assert allow == Verdict("allow", "admin-ssh", 15, False, "accept")
    assert [str(n) for n in allow_nets] == ["192.0.2.0/24", "2001:db8:a::/48"]
    deny_nets, deny = regions[1]
    assert deny == Verdict("deny", None, None, False, "drop")
    assert len(deny_nets) == 24 + 48  # the complements of a /24 and of a /48


def test_regions_single_answer(edge: Explainer) -> None:
    assert edge.regions("in", "tcp", 443) == [
        ([ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")],
         Verdict("allow", "web", 21, False, "accept")),
    ]


def test_regions_overlapping_rules(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, (
        "version: 1\n"
        "defaults: {inbound: allow}\n"
        "rules:\n"
        "  - {name: a, action: allow, ports: [22], from: [10.1.0.0/16]}\n"
        "  - {name: b, action: deny, ports: [22], from: [10.0.0.0/8, '2001:db8::/32']}\n"
        "  - {name: c, action: monitor, ports: [22], from: [10.1.2.0/24, 11.0.0.0/8]}\n"
    ), registry)
    got = [([str(n) for n in nets], v.rule) for nets, v in e.regions("in", "tcp", 22)]
    assert got[0] == (["10.1.0.0/16"], "a")
    assert got[1][1] == "b"
    assert got[1][0][:1] == ["10.0.0.0/16"] and "2001:db8::/32" in got[1][0]
    assert got[2] == (["11.0.0.0/8"], "c")  # 10.1.2.0/24 is shadowed by a
    assert got[3][1] is None


def _naive(policy_path: str, registry: registry_module.Registry, direction: str, protocol: str,
           port: int, remote: str) -> tuple[str, str | None]:
    """The semantics as literally as they can be written: no precomputation at all."""
    policy = load_policy(policy_path)
    address = ipaddress.ip_address(remote)
    for rule in policy.rules:
        if rule.direction != direction:
            continue
        ranges = {p.value: r for p, r in resolve_ports(rule, registry).items()}.get(protocol, ())
        if not any(r.lo <= port <= r.hi for r in ranges):
            continue
        if rule.remote is None or any(address.version == n.version and address in n for n in rule.remote):
            return rule.action, rule.name
    return (policy.inbound if direction == "in" else policy.outbound), None


INTERESTING_V4 = ["0.0.0.0", "10.20.0.0", "10.20.255.255", "10.21.0.0", "192.0.2.0", "192.0.2.255",
                  "198.51.100.53", "203.0.113.0", "255.255.255.255"]
INTERESTING_V6 = ["::", "::1", "2001:db8:a::", "2001:db8:a:ffff:ffff:ffff:ffff:ffff", "2001:db8:100::53",
                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    policy_index=st.integers(0, len(POLICIES) - 1),
    direction=st.sampled_from(["in", "out"]),
    protocol=st.sampled_from(["tcp", "udp"]),
    port=st.one_of(st.integers(0, 65535), st.sampled_from(
        [0, 22, 53, 80, 443, 591, 1023, 1024, 1261, 1274, 2007, 2013, 5999, 6000, 6063, 6064,
         7999, 8000, 8080, 8100, 49151, 49152, 65535])),
    remote=st.one_of(
        st.sampled_from(INTERESTING_V4 + INTERESTING_V6),
        st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i))),
        st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i))),
    ),
)
def test_matches_naive_interpreter_and_regions(
    registry: registry_module.Registry, policy_index: int, direction: str, protocol: str, port: int, remote: str,
) -> None:
    path = str(POLICIES[policy_index])
    e = _explainers(path, registry)
    verdict = e.verdict(direction, protocol, port, remote)
    assert (verdict.action, verdict.rule) == _naive(path, registry, direction, protocol, port, remote)
    address = ipaddress.ip_address(remote)
    holders = [v for nets, v in e.regions(direction, protocol, port)
               if any(n.version == address.version and address in n for n in nets)]
    assert holders == [verdict]


_CACHE: dict[str, Explainer] = {}


def _explainers(path: str, registry: registry_module.Registry) -> Explainer:
    if path not in _CACHE:
        _CACHE[path] = Explainer.from_file(path, registry)
    return _CACHE[path]


@pytest.mark.parametrize("path", POLICIES, ids=[p.name for p in POLICIES])
def test_regions_partition_the_address_space(registry: registry_module.Registry, path: Path) -> None:
    e = Explainer.from_file(str(path), registry)
    for direction in ("in", "out"):
        for protocol in ("tcp", "udp"):
            for port in (22, 53, 80, 443, 591, 1261, 1274, 2007, 6000, 8050, 30000, 60000):
                regions = e.regions(direction, protocol, port)
                assert len({v for _, v in regions}) == len(regions)
                for family, whole in ((4, "0.0.0.0/0"), (6, "::/0")):
                    nets = sorted(n for nets, _ in regions for n in nets if n.version == family)
                    assert sum(n.num_addresses for n in nets) == ipaddress.ip_network(whole).num_addresses
                    assert list(ipaddress.collapse_addresses(nets)) == [ipaddress.ip_network(whole)]


# ---------------------------------------------------------------------- CLI text


def test_cli_exact_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    base = ["policies/edge.yaml", "--direction", "in", "--protocol", "tcp"]
    assert run(*base, "--port", "22", "--remote", "192.0.2.7") == (
        0, "in tcp 22 (ssh) from 192.0.2.7: allow (rule admin-ssh, policies/edge.yaml:15)\n", "")
    assert run(*base, "--port", "ssh") == (0, (
        "in tcp 22 (ssh): allow from 192.0.2.0/24, 2001:db8:a::/48 (rule admin-ssh, policies/edge.yaml:15); "
        "deny by drop otherwise (default inbound deny)\n"), "")
    assert run(*base, "--port", "1261")[1] == (
        "in tcp 1261 (mpshrsv): monitor, logged (rule dormant-watch, policies/edge.yaml:25)\n")
    assert run(*base, "--port", "6063", "--remote", "2001:db8::1")[1] == (
        "in tcp 6063 (x11) from 2001:db8::1: deny by drop, logged (rule no-x11, policies/edge.yaml:29)\n")
    assert run(*base, "--port", "80")[1] == "in tcp 80 (http, www, www-http): allow (rule web, policies/edge.yaml:21)\n"
    assert run(*base, "--port", "25")[1] == "in tcp 25 (smtp): deny by drop (default inbound deny)\n"


def test_cli_reject_and_outbound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert run("policies/locked-down.yaml", "--direction", "out", "--protocol", "udp", "--port", "domain")[1] == (
        "out udp 53 (domain): allow to 198.51.100.53/32, 2001:db8:100::53/128 "
        "(rule dns-out, policies/locked-down.yaml:19); deny by reject otherwise (default outbound deny)\n")
    assert run("policies/locked-down.yaml", "--direction", "out", "--protocol", "tcp", "--port", "2000",
               "--remote", "192.0.2.1")[1] == (
        "out tcp 2000 (cisco-sccp) to 192.0.2.1: deny by reject, logged "
        "(rule everything-else-out, policies/locked-down.yaml:40)\n")
    # an IPv6-only rule: the IPv4 space is "otherwise"
    assert run("policies/dormant-ports.yaml", "--direction", "in", "--protocol", "udp", "--port", "6000")[1] == (
        "in udp 6000 (x11): deny by reject from ::/0 (rule no-remote-x, policies/dormant-ports.yaml:23); "
        "allow otherwise (default inbound allow)\n")


def test_cli_service_with_several_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run("policies/dormant-ports.yaml", "--direction", "in", "--protocol", "tcp",
                       "--port", "http-alt", "--remote", "10.20.1.1")
    assert code == 0
    assert out.splitlines() == [
        "in tcp 591 (http-alt) from 10.20.1.1: allow (rule lab-mgmt, policies/dormant-ports.yaml:12)",
        "in tcp 8008 (http-alt) from 10.20.1.1: allow (rule lab-mgmt, policies/dormant-ports.yaml:12)",
        "in tcp 8080 (http-alt) from 10.20.1.1: allow (rule lab-mgmt, policies/dormant-ports.yaml:12)",
    ]
    # a name registered on different ports per protocol: only the asked protocol's
    code, out, _ = run("policies/dormant-ports.yaml", "--direction", "in", "--protocol", "udp", "--port", "raid-am")
    assert out == "in udp 2007 (raid-am): monitor, logged (rule watch-dormant, policies/dormant-ports.yaml:16)\n"


def test_cli_service_range_is_every_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run("policies/edge.yaml", "--direction", "in", "--protocol", "udp", "--port", "X11")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 64
    assert lines[0] == "in udp 6000 (x11): deny by drop, logged (rule no-x11, policies/edge.yaml:29)"
    assert lines[-1].startswith("in udp 6063 (x11): ")


def test_cli_port_without_registry_name(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\n")
    assert run(path, "--direction", "in", "--protocol", "udp", "--port", "8050")[1] == (
        "in udp 8050: deny by drop (default inbound deny)\n")


# ---------------------------------------------------------------------- CLI JSON


VERDICT_KEYS = ["verdict", "rule", "file", "line", "default", "logged", "enforced", "depends"]
NEW_QUERY_KEYS = {"protocol_number": 6, "icmp_type": None, "local": None, "interface": None, "profile": None}


def test_json_with_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run("policies/edge.yaml", "--direction", "in", "--protocol", "tcp", "--port", "ssh",
                       "--remote", "192.0.2.7", "--json")
    assert code == 0
    doc = json.loads(out)
    assert list(doc) == ["query", "verdicts"]
    assert doc["query"] == {"policy": "policies/edge.yaml", "direction": "in", "protocol": "tcp",
                            "port": "ssh", "remote": "192.0.2.7", **NEW_QUERY_KEYS}
    assert list(doc["query"])[:5] == ["policy", "direction", "protocol", "port", "remote"]  # the keys of 1.0 first
    assert doc["verdicts"] == [{
        "port": 22, "port_names": ["ssh"], "verdict": "allow", "rule": "admin-ssh",
        "file": "policies/edge.yaml", "line": 15, "default": None, "logged": False, "enforced": "accept",
        "depends": [], "linux_before_rules": None, "published_ports": False,
    }]


def test_json_without_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run("policies/edge.yaml", "--direction", "in", "--protocol", "tcp", "--port", "22", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["query"]["port"] == 22 and doc["query"]["remote"] is None
    (answer,) = doc["verdicts"]
    assert list(answer) == ["port", "port_names", *VERDICT_KEYS, "regions", "linux_before_rules",
                            "published_ports"]
    assert all(answer[k] is None for k in VERDICT_KEYS)  # depends on the address
    allow, deny = answer["regions"]
    assert list(allow) == ["networks", *VERDICT_KEYS]
    assert allow["networks"] == ["192.0.2.0/24", "2001:db8:a::/48"]
    assert (allow["verdict"], allow["rule"], allow["line"]) == ("allow", "admin-ssh", 15)
    assert deny["default"] == "inbound deny" and deny["rule"] is None and deny["file"] is None
    assert (deny["verdict"], deny["enforced"], deny["logged"]) == ("deny", "drop", False)
    assert "0.0.0.0/1" in deny["networks"] and "192.0.3.0/24" in deny["networks"]

    # the same for every address: the answer's own fields are filled in
    code, out, _ = run("policies/edge.yaml", "--direction", "in", "--protocol", "udp", "--port", "1274", "--json")
    (answer,) = json.loads(out)["verdicts"]
    assert (answer["verdict"], answer["rule"], answer["logged"]) == ("monitor", "dormant-watch", True)
    assert answer["regions"] == [{"networks": ["0.0.0.0/0", "::/0"],
                                  **{k: answer[k] for k in VERDICT_KEYS}}]


def test_json_several_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run("policies/edge.yaml", "--direction", "in", "--protocol", "tcp", "--port", "http-alt",
                       "--remote", "::1", "--json")
    assert code == 0
    assert [(a["port"], a["port_names"], a["verdict"]) for a in json.loads(out)["verdicts"]] == [
        (591, ["http-alt"], "deny"), (8008, ["http-alt"], "deny"), (8080, ["http-alt"], "deny"),
    ]


# ---------------------------------------------------------------------- exit codes


def test_exit_1_policy_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("typo.yaml").write_text("version: 1\nrules:\n  - action: monitor\n    ports: [mpshrv]\n", encoding="utf-8")
    assert run("typo.yaml", "--direction", "in", "--protocol", "tcp", "--port", "22") == (
        1, "", "typo.yaml:4:13: unknown service 'mpshrv' (did you mean 'mpshrsv'?)\n")
    assert run("missing.yaml", "--direction", "in", "--protocol", "tcp", "--port", "22") == (
        1, "", "missing.yaml: cannot read policy: No such file or directory\n")


def test_exit_1_unknown_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    base = ["policies/edge.yaml", "--direction", "in", "--protocol", "udp"]
    assert run(*base, "--port", "mpshrv") == (1, "", "unknown service 'mpshrv' (did you mean 'mpshrsv'?)\n")
    assert run(*base, "--port", "imap") == (
        1, "", "service 'imap' is not registered for udp (it is 143/tcp); "
               "to ask about the number anyway, give --port 143\n")
    assert run(*base, "--port", "imap2")[0] == 1


@pytest.mark.parametrize("args", [
    [],
    ["policies/edge.yaml", "--protocol", "tcp", "--port", "22"],
    ["policies/edge.yaml", "--direction", "in", "--port", "22"],
    ["policies/edge.yaml", "--direction", "in", "--protocol", "tcp"],
    ["policies/edge.yaml", "--direction", "both", "--protocol", "tcp", "--port", "22"],
    ["policies/edge.yaml", "--direction", "in", "--protocol", "icmp", "--port", "22"],
    ["policies/edge.yaml", "--direction", "in", "--protocol", "tcp", "--port", "70000"],
    ["policies/edge.yaml", "--direction", "in", "--protocol", "tcp", "--port", "20-21"],
    ["policies/edge.yaml", "--direction", "in", "--protocol", "tcp", "--port", "-1"],
    ["policies/edge.yaml", "--direction", "in", "--protocol", "tcp", "--port", "22", "--remote", "10.0.0.0/8"],
    ["policies/edge.yaml", "--direction", "in", "--protocol", "tcp", "--port", "22", "--remote", "::ffff:1.2.3.4"],
])
def test_exit_2_usage_error(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run(*args)
    assert code == 2 and out == ""


def test_real_process_exit_codes(tmp_path: Path) -> None:
    def proc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fwgen", "explain", *args],
                              capture_output=True, text=True, check=False, cwd=ROOT)

    ok = proc("policies/edge.yaml", "--direction", "in", "--protocol", "tcp", "--port", "443")
    assert (ok.returncode, ok.stdout, ok.stderr) == (
        0, "in tcp 443 (https): allow (rule web, policies/edge.yaml:21)\n", "")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - action: deny\n    ports: [20:21]\n", encoding="utf-8")
    failed = proc(str(bad), "--direction", "in", "--protocol", "tcp", "--port", "443")
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith(f"{bad}:4:13: ")
    usage = proc("policies/edge.yaml", "--direction", "in")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


# ---------------------------------------------------------------------- the newer matches


def V(action: str, rule: str | None, line: int | None, logged: bool = False, enforced: str | None = None,
      depends: tuple[Condition, ...] = ()) -> Verdict:
    return Verdict(action, rule, line, logged, enforced or ("drop" if action == "deny" else "accept"), depends)


ICMP_POLICY = (
    "version: 1\n"
    "rules:\n"
    "  - {name: ping, action: allow, protocol: icmp, icmp: [echo-request]}\n"  # line 3
    "  - {name: frag, action: monitor, protocol: icmp, icmp: [3/4]}\n"
    "  - {name: unreach, action: deny, protocol: icmp, icmp: ['3']}\n"
    "  - {name: ping6, action: allow, protocol: icmpv6, icmp: [echo-request, 1/4]}\n"
    "  - {name: any6, action: monitor, protocol: ipv6-icmp, from: ['2001:db8::/32']}\n"
    "  - {name: lan-icmp, action: allow, protocol: 1, from: [10.0.0.0/8]}\n"
)


@pytest.mark.parametrize("protocol,icmp,remote,rule", [
    ("icmp", (8, 0), "192.0.2.1", "ping"),
    ("icmp", (8, None), "192.0.2.1", "ping"),  # every code of echo-request
    ("icmp", (8, 1), "192.0.2.1", "ping"),  # a name is every code of its type
    ("icmp", (3, 4), "192.0.2.1", "frag"),
    ("icmp", (3, 3), "192.0.2.1", "unreach"),
    ("icmp", (3, 255), "192.0.2.1", "unreach"),
    ("icmp", (0, 0), "192.0.2.1", None),
    ("icmp", (0, 0), "10.1.1.1", "lan-icmp"),
    ("icmp", (128, 0), "192.0.2.1", None),  # 128 is ICMPv6's echo-request, not ICMP's
    (1, (8, 0), "192.0.2.1", "ping"),
    ("ICMP", (8, 0), "192.0.2.1", "ping"),
    ("icmpv6", (128, 0), "2001:db8::1", "ping6"),
    ("icmpv6", (128, 0), "2001:db9::1", "ping6"),
    ("icmpv6", (8, 0), "2001:db8::1", "any6"),  # 8 is ICMP's echo-request only
    ("icmpv6", (8, 0), "2001:db9::1", None),
    ("icmpv6", (1, 4), "2001:db9::1", "ping6"),
    ("icmpv6", (1, 3), "2001:db9::1", None),
    ("icmpv6", (1, 3), "2001:db8::5", "any6"),
    (58, (129, 0), "2001:db8::5", "any6"),
    ("ipv6-icmp", (128, 0), "2001:db9::1", "ping6"),
])
def test_icmp_types_and_codes(tmp_path: Path, registry: registry_module.Registry, protocol: str | int,
                              icmp: tuple[int, int | None], remote: str, rule: str | None) -> None:
    e = explainer(tmp_path, ICMP_POLICY, registry)
    verdict = e.verdict("in", protocol, None, remote, icmp=icmp)
    assert verdict.decided
    assert verdict.rule == rule
    assert verdict.action == {"ping": "allow", "frag": "monitor", "unreach": "deny", "ping6": "allow",
                              "any6": "monitor", "lan-icmp": "allow", None: "deny"}[rule]


def test_icmp_type_left_out_or_without_code(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, ICMP_POLICY, registry)
    ping, frag, unreach = V("allow", "ping", 3), V("monitor", "frag", 4, True), V("deny", "unreach", 5)
    # type 3 without a code: 3/4 is frag's, every other code unreach's
    assert e.verdict("in", "icmp", None, "192.0.2.1", icmp=(3, None)) == V(
        "deny", "unreach", 5, depends=(Condition(frag, (Requirement("icmp-type", ("3/4",)),)),))
    # no type at all: every rule for a type is a condition, in order; unreach's is "3" (every code)
    verdict = e.verdict("in", "icmp", None, "192.0.2.1")
    assert verdict == V("deny", None, None, depends=(
        Condition(ping, (Requirement("icmp-type", ("echo-request",)),)),
        Condition(frag, (Requirement("icmp-type", ("3/4",)),)),
        Condition(unreach, (Requirement("icmp-type", ("3",)),)),
    ))
    assert verdict.depends_on == ("icmp-type",) and not verdict.decided
    # a rule for every type decides without one
    assert e.verdict("in", "icmp", None, "10.0.0.1").depends[-1].verdict == unreach
    assert e.verdict("in", "icmp", None, "10.0.0.1").rule == "lan-icmp"
    # a type no rule's entries touch: no condition
    assert e.verdict("in", "icmp", None, "192.0.2.1", icmp=(13, None)) == V("deny", None, None)


def test_icmp_families(tmp_path: Path, registry: registry_module.Registry) -> None:
    """ICMP is IPv4's and ICMPv6 IPv6's: the other family is no question, and the
    any-address answer covers its own family only."""
    e = explainer(tmp_path, ICMP_POLICY, registry)
    with pytest.raises(ValueError, match="IPv4 only"):
        e.verdict("in", "icmp", None, "2001:db8::1", icmp=(8, 0))
    with pytest.raises(ValueError, match="IPv6 only"):
        e.verdict("in", "icmpv6", None, "192.0.2.1", icmp=(128, 0))
    with pytest.raises(ValueError, match="IPv6 only"):
        e.regions("in", "icmpv6", local="192.0.2.1")
    v4 = e.regions("in", "icmp", icmp=(0, 0))
    assert [([str(n) for n in nets], v.rule) for nets, v in v4][0] == (["10.0.0.0/8"], "lan-icmp")
    assert {n.version for nets, _ in v4 for n in nets} == {4}
    v6 = e.regions("in", "icmpv6", icmp=(8, 0))
    assert [([str(n) for n in nets], v.rule) for nets, v in v6][0] == (["2001:db8::/32"], "any6")
    assert {n.version for nets, _ in v6 for n in nets} == {6}
    assert sum(n.num_addresses for nets, _ in v6 for n in nets) == 2**128


PROTOCOL_POLICY = (
    "version: 1\n"
    "defaults: {deny: reject}\n"
    "rules:\n"
    "  - {name: esp-in, action: allow, protocol: esp}\n"  # line 4
    "  - {name: gre-num, action: deny, protocol: 47}\n"
    "  - {name: num-tcp, action: monitor, protocol: 6, ports: [8080]}\n"
    "  - {name: kw-udp, action: allow, protocol: UDP, ports: [53]}\n"
    "  - {name: everything, action: monitor, protocol: all, from: [203.0.113.0/24]}\n"
    "  - {name: sctp-late, action: allow, protocol: sctp}\n"
    "  - {name: any-late, action: deny, protocol: any, ports: [8080]}\n"
)


@pytest.mark.parametrize("protocol,port,remote,rule", [
    (50, None, "192.0.2.1", "esp-in"),
    ("esp", None, "2001:db8::1", "esp-in"),
    ("ESP", None, "203.0.113.1", "esp-in"),
    ("50", None, "192.0.2.1", "esp-in"),
    (47, None, "203.0.113.1", "gre-num"),
    ("gre", None, "192.0.2.1", "gre-num"),
    ("tcp", 8080, "192.0.2.1", "num-tcp"),  # protocol: 6 is tcp, with ports
    (6, 8080, "192.0.2.1", "num-tcp"),
    ("udp", 8080, "192.0.2.1", "any-late"),
    ("udp", 8080, "203.0.113.9", "everything"),
    ("udp", 53, "203.0.113.9", "kw-udp"),  # protocol: UDP is udp
    (17, 53, "192.0.2.1", "kw-udp"),
    ("tcp", 53, "192.0.2.1", None),
    # all: every port of tcp and udp, and every other protocol
    ("tcp", 0, "203.0.113.1", "everything"),
    ("tcp", 65535, "203.0.113.1", "everything"),
    ("udp", 0, "203.0.113.255", "everything"),
    ("udp", 65535, "203.0.113.255", "everything"),
    ("tcp", 65535, "203.0.114.0", None),
    ("icmp", None, "203.0.113.1", "everything"),
    (132, None, "203.0.113.1", "everything"),
    ("sctp", None, "192.0.2.1", "sctp-late"),
    ("hopopt", None, "203.0.113.1", "everything"),
    (0, None, "192.0.2.1", None),
    (255, None, "203.0.113.1", "everything"),
    (51, None, "192.0.2.1", None),
    ("icmpv6", None, "2001:db8::1", None),  # everything's from: is IPv4 only
])
def test_protocol_keywords_and_numbers(tmp_path: Path, registry: registry_module.Registry, protocol: str | int,
                                       port: int | None, remote: str, rule: str | None) -> None:
    e = explainer(tmp_path, PROTOCOL_POLICY, registry)
    verdict = e.verdict("in", protocol, port, remote)
    lines = {"esp-in": 4, "gre-num": 5, "num-tcp": 6, "kw-udp": 7, "everything": 8, "sctp-late": 9, "any-late": 10}
    assert (verdict.rule, verdict.line) == (rule, lines.get(rule or ""))
    if rule is None:
        assert verdict == V("deny", None, None, enforced="reject")


def test_protocol_regions(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, PROTOCOL_POLICY, registry)
    got = [([str(n) for n in nets], v.rule) for nets, v in e.regions("in", "sctp")]
    assert got[0] == (["203.0.113.0/24"], "everything")
    assert got[1][1] == "sctp-late" and "::/0" in got[1][0] and len(got) == 2
    assert e.regions("in", 50) == [
        ([ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")], V("allow", "esp-in", 4))]
    everything = V("monitor", "everything", 8, True)
    assert e.regions("in", "tcp", 1)[0] == ([ipaddress.ip_network("203.0.113.0/24")], everything)


@pytest.mark.parametrize("call,message", [
    (lambda e: e.verdict("in", "esp", 22, "192.0.2.1"), "tcp and udp only"),
    (lambda e: e.verdict("in", "tcp", None, "192.0.2.1"), "port must be"),
    (lambda e: e.verdict("in", "any", 22, "192.0.2.1"), "several protocols"),
    (lambda e: e.verdict("in", "all", None, "192.0.2.1"), "several protocols"),
    (lambda e: e.verdict("in", 256, None, "192.0.2.1"), "0-255"),
    (lambda e: e.verdict("in", "espp", None, "192.0.2.1"), "did you mean 'esp'"),
    (lambda e: e.verdict("in", "tcp", 22, "192.0.2.1", icmp=(8, 0)), "icmp and icmpv6 only"),
    (lambda e: e.verdict("in", "icmp", None, "192.0.2.1", icmp=(256, 0)), "0-255"),
    (lambda e: e.verdict("in", "icmp", None, "192.0.2.1", icmp=(8, -1)), "0-255"),
    (lambda e: e.verdict("in", "tcp", 22, "192.0.2.1", local="2001:db8::1"), "different address families"),
    (lambda e: e.verdict("in", "tcp", 22, "192.0.2.1", local="nowhere"), "local must be"),
    (lambda e: e.verdict("in", "tcp", 22, "192.0.2.1", interface="eth*"), "not a pattern"),
    (lambda e: e.verdict("in", "tcp", 22, "192.0.2.1", profile="office"), "profile must be"),
    (lambda e: e.regions("in", "udp", 53, icmp=(8, 0)), "icmp and icmpv6 only"),
])
def test_bad_new_queries_raise(edge: Explainer, call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(edge)


LOCAL_POLICY = (
    "version: 1\n"
    "rules:\n"
    "  - {name: web-v4, action: allow, protocol: tcp, ports: [443], local: [10.0.0.1]}\n"  # line 3
    "  - {name: web-v6, action: monitor, protocol: tcp, ports: [443], local: ['2001:db8::1']}\n"
    "  - {name: web-both, action: deny, protocol: tcp, ports: [443], local: [10.0.0.0/24, '2001:db8::/64'],\n"
    "     from: [192.0.2.0/24]}\n"
    "  - {name: smtp-src, action: deny, direction: out, protocol: tcp, ports: [25], local: [10.0.0.0/24]}\n"
)


@pytest.mark.parametrize("direction,port,remote,local,rule", [
    ("in", 443, "192.0.2.1", "10.0.0.1", "web-v4"),
    ("in", 443, "198.51.100.1", "10.0.0.1", "web-v4"),
    ("in", 443, "192.0.2.1", "10.0.0.2", "web-both"),
    ("in", 443, "198.51.100.1", "10.0.0.2", None),  # web-both is from 192.0.2.0/24 only
    ("in", 443, "192.0.2.1", "10.0.1.1", None),
    ("in", 443, "2001:db8:5::9", "2001:db8::1", "web-v6"),
    ("in", 443, "2001:db8:5::9", "2001:db8::2", None),  # web-both's from: has no IPv6: not for IPv6
    ("out", 25, "198.51.100.1", "10.0.0.200", "smtp-src"),
    ("out", 25, "198.51.100.1", "10.0.1.1", None),
    ("out", 25, "2001:db8::25", "2001:db8::1", None),  # smtp-src is IPv4 only (its local: is)
    ("in", 25, "192.0.2.1", "10.0.0.1", None),  # smtp-src is outbound
])
def test_local_addresses(tmp_path: Path, registry: registry_module.Registry, direction: str, port: int,
                         remote: str, local: str, rule: str | None) -> None:
    e = explainer(tmp_path, LOCAL_POLICY, registry)
    verdict = e.verdict(direction, "tcp", port, remote, local=local)
    assert verdict.decided and verdict.rule == rule
    assert e.verdict(direction, "tcp", port, remote, local=ipaddress.ip_address(local)) == verdict


def test_local_left_out(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, LOCAL_POLICY, registry)
    web_v4, web_v6 = V("allow", "web-v4", 3), V("monitor", "web-v6", 4, True)
    web_both = V("deny", "web-both", 5)
    # only the rules of the remote's family are conditions
    assert e.verdict("in", "tcp", 443, "192.0.2.1") == V("deny", None, None, depends=(
        Condition(web_v4, (Requirement("local", ("10.0.0.1/32",)),)),
        Condition(web_both, (Requirement("local", ("10.0.0.0/24",)),)),
    ))
    assert e.verdict("in", "tcp", 443, "2001:db8::9") == V("deny", None, None, depends=(
        Condition(web_v6, (Requirement("local", ("2001:db8::1/128",)),)),
    ))
    assert e.verdict("out", "tcp", 25, "2001:db8::25").decided  # smtp-src is not for IPv6
    # a local address narrows the any-remote answer to its family
    regions = e.regions("in", "tcp", 443, local="10.0.0.7")
    assert [([str(n) for n in nets], v.rule) for nets, v in regions][0] == (["192.0.2.0/24"], "web-both")
    assert {n.version for nets, _ in regions for n in nets} == {4}


INTERFACE_POLICY = (
    "version: 1\n"
    "rules:\n"
    "  - {name: eth0-first, action: monitor, protocol: udp, ports: [514], interface: [eth0]}\n"  # line 3
    "  - {name: eth-all, action: deny, protocol: udp, ports: [514], interface: ['eth*']}\n"
    "  - {name: eth-all-first, action: deny, protocol: udp, ports: [515], interface: ['eth*']}\n"
    "  - {name: eth0-late, action: allow, protocol: udp, ports: [515], interface: [eth0]}\n"
    "  - {name: vpn, action: allow, protocol: tcp, ports: [22], interface: [wg0, 'tun*']}\n"
    "  - {name: out-eth1, action: deny, direction: out, protocol: tcp, ports: [80], interface: [eth1]}\n"
)


@pytest.mark.parametrize("direction,protocol,port,interface,rule", [
    ("in", "udp", 514, "eth0", "eth0-first"),  # the exact name first: it decides eth0
    ("in", "udp", 514, "eth1", "eth-all"),
    ("in", "udp", 514, "eth", "eth-all"),  # a prefix matches the bare prefix too
    ("in", "udp", 514, "eth10", "eth-all"),
    ("in", "udp", 514, "eth0.100", "eth-all"),
    ("in", "udp", 514, "veth0", None),  # a prefix, not a substring
    ("in", "udp", 514, "Eth0", None),  # names are case-sensitive
    ("in", "udp", 515, "eth0", "eth-all-first"),  # the prefix first: eth0-late never decides
    ("in", "udp", 515, "lo", None),
    ("in", "tcp", 22, "wg0", "vpn"),
    ("in", "tcp", 22, "tun5", "vpn"),
    ("in", "tcp", 22, "tun", "vpn"),
    ("in", "tcp", 22, "wg01", None),  # an exact name is exact
    ("in", "tcp", 22, "wg", None),
    ("out", "tcp", 80, "eth1", "out-eth1"),  # out: the leaving interface
    ("out", "tcp", 80, "eth0", None),
    ("in", "tcp", 80, "eth1", None),
])
def test_interfaces(tmp_path: Path, registry: registry_module.Registry, direction: str, protocol: str, port: int,
                    interface: str, rule: str | None) -> None:
    e = explainer(tmp_path, INTERFACE_POLICY, registry)
    verdict = e.verdict(direction, protocol, port, "192.0.2.1", interface=interface)
    assert verdict.decided and verdict.rule == rule


def test_interface_left_out(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, INTERFACE_POLICY, registry)
    assert e.verdict("in", "udp", 514, "192.0.2.1") == V("deny", None, None, depends=(
        Condition(V("monitor", "eth0-first", 3, True), (Requirement("interface", ("eth0",)),)),
        Condition(V("deny", "eth-all", 4), (Requirement("interface", ("eth*",)),)),
    ))
    # eth0-late needs eth0, which eth-all-first's eth* already takes: it is no condition
    assert e.verdict("in", "udp", 515, "192.0.2.1") == V("deny", None, None, depends=(
        Condition(V("deny", "eth-all-first", 5), (Requirement("interface", ("eth*",)),)),
    ))
    verdict = e.verdict("in", "tcp", 22, "2001:db8::1")
    assert verdict.depends == (Condition(V("allow", "vpn", 7), (Requirement("interface", ("wg0", "tun*")),)),)
    assert verdict.depends_on == ("interface",)


PROFILE_POLICY = (
    "version: 1\n"
    "targets: [windows]\n"
    "rules:\n"
    "  - {name: office, action: allow, protocol: tcp, ports: [445], profiles: [private, domain]}\n"  # line 4
    "  - {name: public-watch, action: monitor, protocol: tcp, ports: [445], profiles: [public]}\n"
    "  - {name: never, action: deny, protocol: tcp, ports: [445], profiles: [private]}\n"
    "  - {name: home-rdp, action: allow, protocol: tcp, ports: [3389], profiles: [private], interface: [eth0]}\n"
)


@pytest.mark.parametrize("port,profile,rule", [
    (445, "domain", "office"), (445, "private", "office"), (445, "public", "public-watch"),
    (445, "PUBLIC", "public-watch"), (446, "domain", None), (3389, "domain", None),
])
def test_profiles(tmp_path: Path, registry: registry_module.Registry, port: int, profile: str,
                  rule: str | None) -> None:
    e = explainer(tmp_path, PROFILE_POLICY, registry)
    verdict = e.verdict("in", "tcp", port, "192.0.2.1", profile=profile)
    assert verdict.decided and verdict.rule == rule


def test_profile_and_interface_left_out(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, PROFILE_POLICY, registry)
    # profiles in the canonical order; never's [private] is within office's: no condition
    assert e.verdict("in", "tcp", 445, "192.0.2.1") == V("deny", None, None, depends=(
        Condition(V("allow", "office", 4), (Requirement("profile", ("domain", "private")),)),
        Condition(V("monitor", "public-watch", 5, True), (Requirement("profile", ("public",)),)),
    ))
    both = e.verdict("in", "tcp", 3389, "192.0.2.1")
    assert both.depends == (Condition(V("allow", "home-rdp", 7), (
        Requirement("interface", ("eth0",)), Requirement("profile", ("private",)))),)
    assert both.depends_on == ("interface", "profile")
    # one of the two given: the other is still a condition
    assert e.verdict("in", "tcp", 3389, "192.0.2.1", profile="private").depends == (
        Condition(V("allow", "home-rdp", 7), (Requirement("interface", ("eth0",)),)),)
    assert e.verdict("in", "tcp", 3389, "192.0.2.1", profile="public").decided
    assert e.verdict("in", "tcp", 3389, "192.0.2.1", profile="private", interface="eth0").rule == "home-rdp"


def test_depends_regions(tmp_path: Path, registry: registry_module.Registry) -> None:
    e = explainer(tmp_path, (
        "version: 1\n"
        "rules:\n"
        "  - {name: vpn, action: allow, protocol: tcp, ports: [22], interface: [wg0], from: [10.0.0.0/8]}\n"
    ), registry)
    (nets_a, a), (nets_b, b) = e.regions("in", "tcp", 22)
    assert nets_a == [ipaddress.ip_network("10.0.0.0/8")]
    assert a == V("deny", None, None, depends=(Condition(V("allow", "vpn", 3), (Requirement("interface", ("wg0",)),)),))
    assert b == V("deny", None, None) and ipaddress.ip_network("::/0") in nets_b
    assert e.regions("in", "tcp", 22, interface="wg0")[0] == (nets_a, V("allow", "vpn", 3))
    assert e.regions("in", "tcp", 22, interface="wg1") == [
        ([ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")], V("deny", None, None))]


def test_verdict_of_one_point_is_unchanged_without_new_keys(edge: Explainer) -> None:
    """The five-field Verdict of 1.0 still compares equal: depends defaults to ()."""
    verdict = edge.verdict("in", "tcp", 22, "192.0.2.7")
    assert verdict == Verdict("allow", "admin-ssh", 15, False, "accept")
    assert verdict.depends == () and verdict.decided and verdict.depends_on == ()
    # every dimension given changes nothing for rules that restrict none
    assert edge.verdict("in", "tcp", 22, "192.0.2.7", local="192.0.2.1", interface="eth0", profile="domain") == verdict


@pytest.mark.parametrize("text,message", [
    ("  - {action: allow, protocol: tcp, icmp: [echo-request]}\n", "icmp applies to protocol icmp or icmpv6 only"),
    ("  - {action: allow, icmp: ['8']}\n", "icmp applies to protocol icmp or icmpv6 only"),
    ("  - {action: allow, protocol: icmp, from: ['2001:db8::/32']}\n", "is IPv4 only, but from lists IPv6"),
    ("  - {action: allow, protocol: icmpv6, local: [10.0.0.1]}\n", "is IPv6 only, but local lists IPv4"),
    ("  - {action: allow, protocol: icmp, icmp: [packet-too-big]}\n", "'packet-too-big'"),
    ("  - {action: allow, protocol: icmpv6, icmp: [redirect]}\n", "'redirect'"),
    ("  - {action: allow, protocol: icmp, icmp: [echo-requets]}\n", "is not an ICMP type"),
    ("  - {action: allow, from: [10.0.0.0/8], local: ['2001:db8::1']}\n", "can never match"),
    ("  - {action: allow, protocol: espp}\n", "unknown protocol 'espp'"),
    ("  - {action: allow, protocol: esp, ports: [22]}\n", "ports apply to tcp and udp only"),
])
def test_policy_errors_are_builds(tmp_path: Path, registry: registry_module.Registry, text: str,
                                  message: str) -> None:
    """explain refuses what fwgen build refuses, with the same located message."""
    path = write(tmp_path, "version: 1\nrules:\n" + text)
    with pytest.raises(PolicyError) as built:
        compile_policy(load_policy(path), registry)
    with pytest.raises(PolicyError) as explained:
        Explainer.from_file(path, registry)
    assert str(explained.value) == str(built.value)
    assert message in str(explained.value)


# ---------------------------------------------------------------------- the newer matches, against resolve


def _ir_decides(ruleset: Ruleset, direction: str, number: int, selector: int, remote: Address, local: Address,
                interface: str, profile: str) -> str | None:
    """The first rule of the resolved policy (``resolve_rule``'s fields read literally)
    that matches a fully given connection; None for the default."""
    family = remote.version
    what = number << ir.SELECTOR_BITS | selector
    for rule in ruleset.rules:
        if rule.direction.value != direction or not rule.applies_to(family):
            continue
        if not any(lo <= what <= hi for lo, hi in rule.what()):
            continue
        remotes, locals_ = rule.remote(family), rule.local(family)
        if remotes is not None and not any(remote in n for n in remotes):
            continue
        if locals_ is not None and not any(local in n for n in locals_):
            continue
        if rule.interfaces is not None and not any(
            interface.startswith(p[:-1]) if p.endswith("*") else interface == p for p in rule.interfaces
        ):
            continue
        if rule.profiles is not None and profile not in rule.profiles:
            continue
        return rule.name
    return None


def _holds(requirement: Requirement, family: int, local: Address, interface: str, profile: str,
           icmp: tuple[int, int]) -> bool:
    values = requirement.values
    if requirement.dimension == "local":
        return any(local in ipaddress.ip_network(v) for v in values)
    if requirement.dimension == "interface":
        return any(interface.startswith(v[:-1]) if v.endswith("*") else interface == v for v in values)
    if requirement.dimension == "profile":
        return profile in values
    point = icmp[0] << 8 | icmp[1]
    spans = [icmp_module.parse_entry(v, family) for v in values]
    return any(s is not None and s.span()[0] <= point <= s.span()[1] for s in spans)


RULE_PROTOCOLS = [None, "tcp", "udp", "any", "all", "icmp", "icmpv6", "esp", "47", "6", "ipv6-icmp"]
REMOTES4 = ["192.0.2.0/24", "198.51.100.7", "0.0.0.0/0"]
REMOTES6 = ["2001:db8::/32", "2001:db8:1::1"]
LOCALS4 = ["10.0.0.1", "10.0.0.0/8"]
LOCALS6 = ["2001:db8:ff::1", "fd00::/8"]
IFACES = ["eth0", "eth*", "wg0", "e*"]
ICMP4 = ["echo-request", "3", "3/4", "0"]
ICMP6 = ["echo-request", "1/4", "129"]


@st.composite
def rules_yaml(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 7))):
        parts = [f"action: {draw(st.sampled_from(['allow', 'deny', 'monitor']))}"]
        direction = draw(st.sampled_from(["in", "out"]))
        parts.append(f"direction: {direction}")
        protocol = draw(st.sampled_from(RULE_PROTOCOLS))
        family = {"icmp": 4, "icmpv6": 6, "ipv6-icmp": 6}.get(protocol or "")
        if protocol is not None:
            parts.append(f"protocol: {protocol}")
        if protocol in (None, "tcp", "udp", "any", "6") and draw(st.booleans()):
            parts.append(f"ports: [{', '.join(draw(st.lists(st.sampled_from(['22', '53', '80-90']), min_size=1)))}]")
        if family is not None and draw(st.booleans()):
            entries = draw(st.lists(st.sampled_from(ICMP4 if family == 4 else ICMP6), min_size=1, max_size=2))
            parts.append(f"icmp: [{', '.join(entries)}]")
        for key, fours, sixes in (("from" if direction == "in" else "to", REMOTES4, REMOTES6),
                                  ("local", LOCALS4, LOCALS6)):
            if draw(st.booleans()):
                pool = fours if family == 4 else sixes if family == 6 else fours + sixes
                nets = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True))
                parts.append(f"{key}: [{', '.join(repr(n) for n in nets)}]")
        for key, choices in (("interface", IFACES), ("profiles", PROFILES)):
            if draw(st.booleans()):
                values = draw(st.lists(st.sampled_from(choices), min_size=1, max_size=2, unique=True))
                parts.append(f"{key}: [{', '.join(repr(v) for v in values)}]")
        lines.append("  - {" + ", ".join(parts) + "}\n")
    defaults = f"defaults: {{inbound: {draw(st.sampled_from(['allow', 'deny']))}, outbound: deny}}\n"
    return "version: 1\n" + defaults + "rules:\n" + "".join(lines)


QUERY_PROTOCOLS = [6, 17, 1, 58, 50, 47, 132]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policy=rules_yaml(), data=st.data())
def test_new_matches_agree_with_resolve(tmp_path: Path, registry: registry_module.Registry, policy: str,
                                        data: st.DataObject) -> None:
    """On random policies with every newer key: explain refuses exactly what the resolver
    refuses; a fully given question is decided, by the rule resolve_rule's fields say;
    and with dimensions left out, the conditions, applied to the values, give the same."""
    path = write(tmp_path, policy)
    try:
        ruleset = compile_policy(load_policy(path), registry)
    except PolicyError as error:
        with pytest.raises(PolicyError) as explained:
            Explainer.from_file(path, registry)
        assert str(explained.value) == str(error)
        return
    e = Explainer.from_file(path, registry)
    for _ in range(15):
        direction = data.draw(st.sampled_from(["in", "out"]))
        number = data.draw(st.sampled_from(QUERY_PROTOCOLS))
        family = {1: 4, 58: 6}.get(number) or data.draw(st.sampled_from([4, 6]))
        pool = ["192.0.2.9", "198.51.100.7", "203.0.113.1"] if family == 4 else ["2001:db8::9", "2001:db8:1::1",
                                                                                  "2001:db9::1"]
        remote = ipaddress.ip_address(data.draw(st.sampled_from(pool)))
        local = ipaddress.ip_address(data.draw(st.sampled_from(
            ["10.0.0.1", "10.9.9.9", "172.16.0.1"] if family == 4 else ["2001:db8:ff::1", "fd00::5", "2001:db9::5"])))
        interface = data.draw(st.sampled_from(["eth0", "eth1", "wg0", "e", "lo"]))
        profile = data.draw(st.sampled_from(PROFILES))
        port = data.draw(st.sampled_from([22, 53, 80, 85, 90, 91])) if number in (6, 17) else None
        icmp = (data.draw(st.sampled_from([0, 1, 3, 8, 128, 129])), data.draw(st.sampled_from([0, 4]))) \
            if number in (1, 58) else (0, 0)
        selector = port if port is not None else (icmp[0] << 8 | icmp[1] if number in (1, 58) else 0)
        full = e.verdict(direction, number, port, remote, local=local, interface=interface, profile=profile,
                         icmp=icmp if number in (1, 58) else None)
        expected = _ir_decides(ruleset, direction, number, selector, remote, local, interface, profile)
        assert full.decided and full.rule == expected, (policy, direction, number, port, remote, local, interface,
                                                        profile, icmp)
        # the same question with each dimension given or left out
        given_local = data.draw(st.booleans())
        given_interface = data.draw(st.booleans())
        given_profile = data.draw(st.booleans())
        given_icmp = number in (1, 58) and data.draw(st.booleans())
        partial = e.verdict(
            direction, number, port, remote, local=local if given_local else None,
            interface=interface if given_interface else None, profile=profile if given_profile else None,
            icmp=icmp if given_icmp else None,
        )
        chosen = next((c.verdict for c in partial.depends
                       if all(_holds(r, family, local, interface, profile, icmp) for r in c.requires)),
                      dataclasses.replace(partial, depends=()))
        assert chosen == full
        left_out = {"local": not given_local, "interface": not given_interface, "profile": not given_profile,
                    "icmp-type": number in (1, 58) and not given_icmp}
        assert all(left_out[d] for d in partial.depends_on)
        # and the any-address answer holds the same verdict where the remote is
        holders = [v for nets, v in e.regions(direction, number, port, local=local if given_local else None,
                                               interface=interface if given_interface else None,
                                               profile=profile if given_profile else None,
                                               icmp=icmp if given_icmp else None)
                   if any(n.version == family and remote in n for n in nets)]
        assert holders == [partial]


# ---------------------------------------------------------------------- CLI: the newer options


DOC = ROOT / "docs" / "explain.md"


def _doc_policies() -> dict[str, str]:
    """The example policies of docs/explain.md: each ```yaml block that starts with
    ``# NAME.yaml``, by that name."""
    blocks = re.findall(r"^```yaml\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    found = {b.splitlines()[0][2:]: str(b) for b in blocks if re.match(r"# [a-z-]+\.yaml\n", b)}
    assert {"host.yaml", "laptop.yaml"} <= set(found)
    return found


def _save_doc_policies(directory: Path) -> None:
    for name, text in _doc_policies().items():
        (directory / name).write_text(text, encoding="utf-8")


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    _save_doc_policies(tmp_path)
    monkeypatch.chdir(tmp_path)
    return "host.yaml"


LINUX_RELATED = ("; iptables and nftables decide this type before any rule: accepted when it is about a "
                 "connection of the host (related), dropped otherwise (invalid)")
LINUX_INVALID = ("; iptables and nftables decide this type before any rule: dropped as invalid: connection "
                 "tracking starts no connection with it")


def test_cli_new_options_text(host: str) -> None:
    base = [host, "--direction", "in"]
    assert run(*base, "--protocol", "esp", "--remote", "198.51.100.9") == (
        0, "in 50 (esp) from 198.51.100.9: allow (rule ipsec, host.yaml:18)\n", "")
    assert run(*base, "--protocol", "50", "--remote", "192.0.2.9")[1] == (
        "in 50 (esp) from 192.0.2.9: deny by reject (default inbound deny)\n")
    assert run(*base, "--protocol", "icmp", "--icmp-type", "echo-request", "--remote", "192.0.2.9")[1] == (
        "in icmp type 8 (echo-request) from 192.0.2.9: allow (rule ping, host.yaml:10)\n")
    assert run(*base, "--protocol", "icmpv6", "--icmp-type", "1/4", "--remote", "2001:db8::9")[1] == (
        "in icmpv6 type 1/4 (destination-unreachable) from 2001:db8::9: allow (rule ping6, host.yaml:14)"
        + LINUX_RELATED + "\n")
    assert run(*base, "--protocol", "ipv6-icmp", "--icmp-type", "200", "--remote", "2001:db8::9")[1] == (
        "in icmpv6 type 200 from 2001:db8::9: deny by reject (default inbound deny)" + LINUX_INVALID + "\n")
    assert run(*base, "--protocol", "tcp", "--port", "ssh", "--remote", "192.0.2.9", "--interface", "wg0")[1] == (
        "in tcp 22 (ssh) from 192.0.2.9 interface wg0: allow (rule vpn-admin, host.yaml:22)\n")
    assert run(*base, "--protocol", "6", "--port", "443", "--remote", "192.0.2.9", "--local", "10.0.0.1")[1] == (
        "in tcp 443 (https) from 192.0.2.9 local 10.0.0.1: allow (rule lan-web, host.yaml:27)\n")
    assert run("laptop.yaml", "--direction", "in", "--protocol", "tcp", "--port", "445", "--remote", "192.0.2.9",
               "--profile", "public")[1] == (
        "in tcp 445 (microsoft-ds) from 192.0.2.9 profile public: deny by drop (default inbound deny)\n")
    assert run("laptop.yaml", "--direction", "in", "--protocol", "tcp", "--port", "445", "--remote", "192.0.2.9",
               "--profile", "private")[1] == (
        "in tcp 445 (microsoft-ds) from 192.0.2.9 profile private: allow (rule office-smb, laptop.yaml:6)\n")
    assert run(*base, "--protocol", "61", "--remote", "192.0.2.9")[1] == (
        "in 61 from 192.0.2.9: deny by reject (default inbound deny)\n")  # 61 has no keyword


def test_cli_depends_on(host: str) -> None:
    base = [host, "--direction", "in"]
    assert run(*base, "--protocol", "tcp", "--port", "22", "--remote", "192.0.2.9")[1] == (
        "in tcp 22 (ssh) from 192.0.2.9: depends on --interface: allow when interface is wg0 "
        "(rule vpn-admin, host.yaml:22), else deny by reject (default inbound deny)\n")
    assert run(*base, "--protocol", "udp", "--port", "syslog", "--remote", "192.0.2.9")[1] == (
        "in udp 514 (syslog) from 192.0.2.9: depends on --interface: monitor, logged when interface is eth0 "
        "(rule eth0-syslog, host.yaml:32), else deny by reject, logged when interface matches eth* "
        "(rule eth-syslog, host.yaml:37), else deny by reject (default inbound deny)\n")
    assert run(*base, "--protocol", "tcp", "--port", "443", "--remote", "192.0.2.9")[1] == (
        "in tcp 443 (https) from 192.0.2.9: depends on --local: allow when local is 10.0.0.1 "
        "(rule lan-web, host.yaml:27), else deny by reject (default inbound deny)\n")
    laptop = ["laptop.yaml", "--direction", "in", "--protocol", "tcp"]
    assert run(*laptop, "--port", "445", "--remote", "192.0.2.9")[1] == (
        "in tcp 445 (microsoft-ds) from 192.0.2.9: depends on --profile: allow when profile is domain or private "
        "(rule office-smb, laptop.yaml:6), else deny by drop (default inbound deny)\n")
    assert run(*laptop, "--port", "3389", "--remote", "10.1.1.1")[1] == (
        "in tcp 3389 (ms-wbt-server) from 10.1.1.1: depends on --local, --profile: allow when local is 192.168.1.10 "
        "and profile is private (rule home-rdp, laptop.yaml:11), else deny by drop (default inbound deny)\n")
    assert run(*base, "--protocol", "icmp", "--remote", "192.0.2.9")[1] == (
        "in icmp from 192.0.2.9: depends on --icmp-type: allow when icmp type is echo-request "
        "(rule ping, host.yaml:10), else deny by reject (default inbound deny)\n")
    # several regions, one of them conditional
    assert run(*base, "--protocol", "tcp", "--port", "22")[1] == (
        "in tcp 22 (ssh): depends on --interface: allow from 203.0.113.0/24 when interface is wg0 "
        "(rule vpn-admin, host.yaml:22), else monitor, logged (rule watch-all, host.yaml:46); "
        "allow otherwise when interface is wg0 (rule vpn-admin, host.yaml:22), else deny by reject "
        "(default inbound deny)\n")


def test_cli_new_options_json(host: str) -> None:
    code, out, _ = run(host, "--direction", "in", "--protocol", "tcp", "--port", "22", "--remote", "192.0.2.9",
                       "--profile", "domain", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["query"] == {"policy": host, "direction": "in", "protocol": "tcp", "port": 22, "remote": "192.0.2.9",
                            "protocol_number": 6, "icmp_type": None, "local": None, "interface": None,
                            "profile": "domain"}
    (answer,) = doc["verdicts"]
    assert list(answer) == ["port", "port_names", *VERDICT_KEYS, "linux_before_rules", "published_ports"]
    assert (answer["verdict"], answer["default"], answer["enforced"]) == ("deny", "inbound deny", "reject")
    assert answer["depends"] == [{
        "requires": {"interface": ["wg0"]}, "verdict": "allow", "rule": "vpn-admin", "file": host, "line": 22,
        "default": None, "logged": False, "enforced": "accept",
    }]
    code, out, _ = run(host, "--direction", "in", "--protocol", "ICMPv6", "--icmp-type", "echo-request",
                       "--local", "2001:db8::1", "--interface", "eth0", "--json")
    doc = json.loads(out)
    assert doc["query"] == {"policy": host, "direction": "in", "protocol": "icmpv6", "port": None, "remote": None,
                            "protocol_number": 58, "icmp_type": "echo-request", "local": "2001:db8::1",
                            "interface": "eth0", "profile": None}
    (answer,) = doc["verdicts"]
    assert (answer["port"], answer["port_names"], answer["rule"], answer["depends"]) == (None, [], "ping6", [])
    assert answer["regions"] == [{"networks": ["::/0"], **{k: answer[k] for k in VERDICT_KEYS}}]


@pytest.mark.parametrize("args,message", [
    (["--protocol", "tcp"], "Missing option '--port'"),
    (["--protocol", "17"], "Missing option '--port'"),
    (["--protocol", "esp", "--port", "22"], "ports apply to tcp and udp only; 50 (esp) has none"),
    (["--protocol", "icmp", "--port", "8"], "ports apply to tcp and udp only"),
    (["--protocol", "any", "--port", "22"], "names several protocols"),
    (["--protocol", "all"], "names several protocols"),
    (["--protocol", "espp"], "unknown protocol 'espp' (did you mean 'esp'?)"),
    (["--protocol", "256"], "out of range 0-255"),
    (["--protocol", "-1"], "unknown protocol"),
    (["--protocol", "tcp", "--port", "22", "--icmp-type", "8"], "applies to icmp and icmpv6 only, not to tcp"),
    (["--protocol", "esp", "--icmp-type", "8"], "applies to icmp and icmpv6 only, not to 50 (esp)"),
    (["--protocol", "icmp", "--icmp-type", "bogus"], "'bogus' is not an ICMP type"),
    (["--protocol", "icmp", "--icmp-type", "packet-too-big"], "is not an ICMP type"),
    (["--protocol", "icmpv6", "--icmp-type", "redirect"], "is not an ICMPv6 type"),
    (["--protocol", "icmp", "--icmp-type", "3/256"], "is not an ICMP type"),
    (["--protocol", "icmp", "--remote", "2001:db8::1"], "is IPv6, but icmp is IPv4 only"),
    (["--protocol", "icmpv6", "--local", "10.0.0.1"], "is IPv4, but icmpv6 is IPv6 only"),
    (["--protocol", "tcp", "--port", "22", "--remote", "::1", "--local", "10.0.0.1"], "different address families"),
    (["--protocol", "tcp", "--port", "22", "--local", "10.0.0.0/8"], "is not an IPv4 or IPv6 address"),
    (["--protocol", "tcp", "--port", "22", "--local", "::ffff:10.0.0.1"], "IPv4-mapped"),
    (["--protocol", "tcp", "--port", "22", "--interface", "eth*"], "not an interface name"),
    (["--protocol", "tcp", "--port", "22", "--interface", "a b"], "not an interface name"),
    (["--protocol", "tcp", "--port", "22", "--interface", "sixteen-letters0"], "not an interface name"),
    (["--protocol", "tcp", "--port", "22", "--profile", "office"], "'office' is not one of"),
])
def test_cli_new_usage_errors(host: str, args: list[str], message: str) -> None:
    code, out, err = run(host, "--direction", "in", *args)
    assert (code, out) == (2, "")
    assert message in " ".join(err.split()), err


def test_cli_usage_error_before_policy_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad question is a usage error even when the policy is broken too."""
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text("version: 1\nrules:\n  - {action: allow, protocol: espp}\n", encoding="utf-8")
    assert run("bad.yaml", "--direction", "in", "--protocol", "esp", "--port", "22")[0] == 2
    assert run("bad.yaml", "--direction", "in", "--protocol", "esp") == (
        1, "", "bad.yaml:3:31: unknown protocol 'espp' (did you mean 'esp'?)\n")


# ---------------------------------------------------------------------- docs/explain.md


def _doc_examples() -> list[tuple[str, str]]:
    """Every ``$ fwgen explain ...`` of a console block of docs/explain.md, with the
    output printed under it."""
    text = DOC.read_text(encoding="utf-8")
    examples: list[tuple[str, str]] = []
    for block in re.findall(r"^```console\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
        for chunk in re.split(r"^(?=\$ )", block, flags=re.MULTILINE):
            if chunk.startswith("$ "):
                command, _, output = chunk.partition("\n")
                examples.append((command[2:], output))
    return examples


def test_the_doc_has_examples_of_each_option() -> None:
    examples = _doc_examples()
    commands = " ".join(command for command, _ in examples)
    for option in ("--remote", "--json", "--icmp-type", "--local", "--interface", "--profile", "--protocol esp",
                   "--protocol 50", "--protocol icmpv6", "--protocol gre", "--protocol sctp"):
        assert option in commands, option
    outputs = "".join(output for _, output in examples)
    for dimension in ("--local", "--interface", "--profile", "--icmp-type"):
        assert f"depends on {dimension}" in outputs, dimension
    assert '"depends": [\n' in outputs  # a JSON answer with a condition


@pytest.mark.parametrize("command,output", _doc_examples(), ids=[c for c, _ in _doc_examples()])
def test_doc_examples_are_real_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str,
                                      output: str) -> None:
    argv = shlex.split(command)
    assert argv[:2] == ["fwgen", "explain"]
    if argv[2].startswith("policies/"):
        monkeypatch.chdir(ROOT)
    else:
        _save_doc_policies(tmp_path)
        monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, argv[1:], prog_name="fwgen")
    assert result.output == output


def test_doc_python_session_is_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ```pycon session of docs/explain.md, run as a doctest (from a copy of the
    repository's policies/ with the doc's example policies beside it)."""
    (session,) = re.findall(r"^```pycon\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    _save_doc_policies(tmp_path)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "edge.yaml").write_bytes(EDGE.read_bytes())
    monkeypatch.chdir(tmp_path)
    test = doctest.DocTestParser().get_doctest(session, {}, "docs/explain.md", str(DOC), 0)
    assert len(test.examples) >= 10
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    failures = io.StringIO()
    runner.run(test, out=failures.write)
    assert runner.failures == 0, failures.getvalue()


def test_published_ports_enforce_says_the_verdict_holds_for_published_ports() -> None:
    policy = str(ROOT / "policies" / "docker-host.yaml")
    code, out, _ = run(policy, "--direction", "in", "--protocol", "tcp", "--port", "8080", "--remote", "203.0.113.5")
    assert (code, out) == (0, "in tcp 8080 (http-alt) from 203.0.113.5: deny by drop, logged (rule app-others, "
                              f"{policy}:29); the same for connections to ports published to local containers, by "
                              "their original port and address (published_ports: enforce; iptables and nftables)\n")
    code, out, _ = run(policy, "--direction", "out", "--protocol", "tcp", "--port", "8080", "--json")
    assert json.loads(out)["verdicts"][0]["published_ports"] is False  # outbound: nothing is published
    code, out, _ = run(policy, "--direction", "in", "--protocol", "tcp", "--port", "80", "--json")
    assert json.loads(out)["verdicts"][0]["published_ports"] is True
    code, out, _ = run(str(EDGE), "--direction", "in", "--protocol", "tcp", "--port", "80")
    assert "published" not in out  # published_ports: ignore (the default)


def test_the_published_note_says_iptables_drops_where_the_policy_rejects(tmp_path: Path) -> None:
    """REJECT exists only in iptables' filter table; published connections are judged in mangle."""
    text = (ROOT / "policies" / "docker-host.yaml").read_text(encoding="utf-8").replace("deny: drop", "deny: reject")
    policy = tmp_path / "docker-host.yaml"
    policy.write_text(text, encoding="utf-8")
    code, out, _ = run(str(policy), "--direction", "in", "--protocol", "tcp", "--port", "8081",
                       "--remote", "203.0.113.5")
    assert (code, out) == (0, "in tcp 8081 (sunproxyadmin) from 203.0.113.5: deny by reject (default inbound deny); "
                              "the same for connections to ports published to local containers, by their original port "
                              "and address (published_ports: enforce; iptables and nftables), but iptables drops a "
                              "denied one instead of rejecting it\n")
