"""``fwgen explain``: the reference first-match semantics (docs/policy-format.md), its
any-address region answer, its JSON and text output and its exit codes."""

from __future__ import annotations

import ast
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwgen import registry as registry_module
from fwgen.cli import main
from fwgen.errors import PolicyError
from fwgen.explain import Explainer, Verdict
from fwgen.policy import load_policy
from fwgen.resolve import resolve_ports

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


def test_explain_shares_no_compiler_code() -> None:
    """The reference must not use the code it judges: no IR compilation, no range
    merging, no target or lowering code."""
    tree = ast.parse((ROOT / "fwgen" / "explain.py").read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    fwgen_imports = {name for name in imported if name.startswith("fwgen")}
    assert fwgen_imports <= {
        "fwgen.errors", "fwgen.errors.PolicyError",
        "fwgen.policy", "fwgen.policy.Policy", "fwgen.policy.PolicyRule", "fwgen.policy.load_policy",
        "fwgen.registry", "fwgen.registry.Registry",
        "fwgen.resolve", "fwgen.resolve.resolve_ports",
    }, fwgen_imports


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


VERDICT_KEYS = ["verdict", "rule", "file", "line", "default", "logged", "enforced"]


def test_json_with_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run("policies/edge.yaml", "--direction", "in", "--protocol", "tcp", "--port", "ssh",
                       "--remote", "192.0.2.7", "--json")
    assert code == 0
    doc = json.loads(out)
    assert list(doc) == ["query", "verdicts"]
    assert doc["query"] == {"policy": "policies/edge.yaml", "direction": "in", "protocol": "tcp",
                            "port": "ssh", "remote": "192.0.2.7"}
    assert doc["verdicts"] == [{
        "port": 22, "port_names": ["ssh"], "verdict": "allow", "rule": "admin-ssh",
        "file": "policies/edge.yaml", "line": 15, "default": None, "logged": False, "enforced": "accept",
    }]


def test_json_without_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = run("policies/edge.yaml", "--direction", "in", "--protocol", "tcp", "--port", "22", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["query"]["port"] == 22 and doc["query"]["remote"] is None
    (answer,) = doc["verdicts"]
    assert list(answer) == ["port", "port_names", *VERDICT_KEYS, "regions"]
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
