"""The resolver as a table: port entry text and rule protocol in, (protocol, ranges) out."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from fwgen.ir import Action, Direction, PortRange, Protocol
from fwgen.policy import load_policy
from fwgen.registry import bundled
from fwgen.resolve import compile_policy, split_suffix

T, U = Protocol.TCP, Protocol.UDP


def _ports(tmp_path: Path, entries: str, protocol: str | None = None) -> dict[Protocol, list[str]]:
    text = "version: 1\nrules:\n  - action: allow\n"
    if protocol:
        text += f"    protocol: {protocol}\n"
    if entries:
        text += f"    {entries}\n"
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    rule = compile_policy(load_policy(str(path)), bundled()).rules[0]
    return {proto: [str(r) for r in ranges] for proto, ranges in rule.ports}


@pytest.mark.parametrize(
    "entries,protocol,expected",
    [
        ("ports: [mpshrsv]", None, {T: ["1261"], U: ["1261"]}),
        ("ports: [t1distproc]", None, {T: ["1274"], U: ["1274"]}),
        ("ports: x11", None, {T: ["6000-6063"], U: ["6000-6063"]}),
        ("ports: [http-alt]", None, {T: ["591", "8008", "8080"], U: ["591", "8008", "8080"]}),
        ("ports: [raid-am]", None, {T: ["2013"], U: ["2007"]}),
        ("ports: [raid-am]", "tcp", {T: ["2013"]}),
        ("ports: [ssh]", None, {T: ["22"], U: ["22"]}),
        ("ports: [SSH]", None, {T: ["22"], U: ["22"]}),
        ("ports: [ssh]", "tcp", {T: ["22"]}),
        ("ports: [ssh]", "any", {T: ["22"], U: ["22"]}),
        ("ports: [mpshrsv/udp]", None, {U: ["1261"]}),
        ("ports: [mpshrsv/udp]", "udp", {U: ["1261"]}),
        ("ports: [\"8000-8100/tcp\", 8050]", None, {T: ["8000-8100"], U: ["8050"]}),
        ("ports: [1, 2, 3, \"5-6\", 4]", "tcp", {T: ["1-6"]}),
        ("ports: [active-net]", None, {T: ["3322-3325"], U: ["3322-3325"]}),
        ("ports: [boe-cms]", "udp", {U: ["6400"]}),
        ("ports: [\"0\", 65535]", "udp", {U: ["0", "65535"]}),
        ("range: well-known", None, {T: ["0-1023"], U: ["0-1023"]}),
        ("range: registered", "udp", {U: ["1024-49151"]}),
        ("range: dynamic", "tcp", {T: ["49152-65535"]}),
        ("", None, {T: ["0-65535"], U: ["0-65535"]}),
        ("", "udp", {U: ["0-65535"]}),
    ],
)
def test_port_resolution(tmp_path: Path, entries: str, protocol: str | None,
                         expected: dict[Protocol, list[str]]) -> None:
    assert _ports(tmp_path, entries, protocol) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("ssh/tcp", ("ssh", T)),
        ("ssh/udp", ("ssh", U)),
        ("cl/1", ("cl/1", None)),
        ("cl/1/udp", ("cl/1", U)),
        ("ssh/sctp", ("ssh/sctp", None)),
        ("/tcp", ("/tcp", None)),
    ],
)
def test_split_suffix(text: str, expected: tuple[str, Protocol | None]) -> None:
    assert split_suffix(text) == expected


def test_name_with_slash_resolves(tmp_path: Path) -> None:
    assert _ports(tmp_path, 'ports: ["cl/1"]') == {T: ["172"], U: ["172"]}


def test_addresses_split_by_family(tmp_path: Path) -> None:
    path = tmp_path / "fam.yaml"
    path.write_text(
        "version: 1\nrules:\n"
        "  - action: deny\n    from: [192.0.2.0/25, 192.0.2.128/25, 198.51.100.7]\n"
        "  - action: deny\n    from: [\"2001:db8::/32\"]\n"
        "  - action: deny\n    direction: out\n    to: [0.0.0.0/0, \"::/0\"]\n"
        "  - action: deny\n",
        encoding="utf-8",
    )
    rules = compile_policy(load_policy(str(path)), bundled()).rules
    assert rules[0].remote_v4 == (ipaddress.IPv4Network("192.0.2.0/24"), ipaddress.IPv4Network("198.51.100.7/32"))
    assert rules[0].remote_v6 == () and not rules[0].applies_to(6)
    assert rules[1].remote_v4 == () and rules[1].applies_to(6) and not rules[1].applies_to(4)
    assert rules[2].direction is Direction.OUT and rules[2].applies_to(4) and rules[2].applies_to(6)
    assert rules[3].remote_v4 is None and rules[3].remote_v6 is None


def test_defaults_and_names(tmp_path: Path) -> None:
    path = tmp_path / "my-host.yaml"
    path.write_text(
        "version: 1\ndefaults:\n  inbound: allow\n  outbound: deny\n  deny: reject\n"
        "monitor:\n  log_prefix: LOG.x\n  rate: 3/hour\n"
        "rules:\n  - action: monitor\n    log: false\n  - name: second\n    action: deny\n    log: true\n",
        encoding="utf-8",
    )
    ruleset = compile_policy(load_policy(str(path)), bundled())
    assert ruleset.name == "my-host"
    assert (ruleset.defaults.inbound, ruleset.defaults.outbound, ruleset.defaults.reject) == (
        Action.ALLOW, Action.DENY, True)
    assert (ruleset.monitor.log_prefix, ruleset.monitor.rate, ruleset.monitor.per) == ("LOG.x", 3, "hour")
    first, second = ruleset.rules
    assert (first.name, first.index, first.logged) == ("rule-1", 1, True)
    assert (second.name, second.index, second.logged, second.location.line) == ("second", 2, True, 12)
    assert ruleset.source.filename == "my-host.yaml"
    assert ruleset.source.registry_edition == "2026-08-17"


def test_default_settings(tmp_path: Path) -> None:
    path = tmp_path / "min.yaml"
    path.write_text("version: 1\n", encoding="utf-8")
    ruleset = compile_policy(load_policy(str(path)), bundled())
    assert (ruleset.defaults.inbound, ruleset.defaults.outbound, ruleset.defaults.reject) == (
        Action.DENY, Action.ALLOW, False)
    assert (ruleset.monitor.log_prefix, ruleset.monitor.rate, ruleset.monitor.per) == ("fwgen", 10, "minute")
    assert ruleset.rules == ()


def test_merge_ranges_is_canonical() -> None:
    from fwgen.ir import merge_ranges

    assert merge_ranges([PortRange(5, 9), PortRange(1, 3), PortRange(4, 4), PortRange(20, 30),
                         PortRange(25, 26)]) == (PortRange(1, 9), PortRange(20, 30))


TRICKY_SCALARS = [
    "yes", "no", "on", "off", "true", "False", "~", "null", "", "0", "010", "0x50", "0o17", "1_000",
    "20:21", "1:2:3", "-1", "+1", ".5", "1e3", ".inf", "-.Inf", ".nan", "2001-12-14", "=", "<<",
    "http", "ssh/tcp", "x11", "10.0.0.0/8", "::1", "a b", "1-2", "mpshrsv",
]


def test_policy_loader_tags_every_scalar_as_the_safe_loader_does():
    """fwgen's loader remembers each distinct scalar's tag; it must resolve exactly as
    PyYAML's safe loader, for plain and quoted scalars, seen once or many times."""
    import yaml

    from fwgen.yamlsource import Source, compose

    items = [*TRICKY_SCALARS, *TRICKY_SCALARS]  # each twice: the second is remembered
    lines = ["plain:"] + [f"  - {s}" for s in items if s] + ["quoted:"]
    lines += [f"  - '{s}'" for s in items] + ['  - "' + s + '"' for s in items]
    lines += ["keys:"] + [f"  {s or 'empty'}: {s}" for s in dict.fromkeys(TRICKY_SCALARS) if s != "<<"]
    lines += ["block: |", "  yes", "folded: >", "  10", "bang: ! 10", "tagged: !!str 10", "null-key:"]
    text = "\n".join(lines) + "\n"

    def tags(node):
        if isinstance(node, yaml.ScalarNode):
            return [(node.tag, node.value, node.start_mark.line)]
        children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
        return [(node.tag, None, node.start_mark.line)] + [t for child in children for t in tags(child)]

    ours = tags(compose(Source("t.yaml", text)))
    theirs = tags(yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    assert ours == theirs
    assert {tag for tag, _, _ in ours} >= {
        "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:null", "tag:yaml.org,2002:str",
        "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp",
    }
