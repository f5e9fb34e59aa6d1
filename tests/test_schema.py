"""The JSON Schema of policy format v1 (fwgen/data/policy.schema.json, `fwgen schema`)
agrees with the loader: every example validates, and snippets the loader rejects the
schema rejects too (and the other way round for a table of valid snippets)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from fwgen import policy as loader
from fwgen.build import compile_file
from fwgen.cli import main
from fwgen.errors import PolicyError
from fwgen.registry import bundled
from fwgen.targets.nft_keywords import NFT_KEYWORDS, OTHER_TABLES

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "fwgen" / "data" / "policy.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
EXAMPLES = sorted((ROOT / "policies").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=../fwgen/data/policy.schema.json"


def schema_accepts(text: str) -> bool:
    return VALIDATOR.is_valid(yaml.safe_load(text))


def loader_accepts(tmp_path: Path, text: str) -> bool:
    """The whole front end: validation, then service and port resolution."""
    path = tmp_path / "snippet.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        compile_file(str(path), bundled())
    except PolicyError:
        return False
    return True


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("policy", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_validates(policy: Path) -> None:
    errors = sorted(VALIDATOR.iter_errors(yaml.safe_load(policy.read_text())), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("policy", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_names_the_schema_on_its_first_line(policy: Path) -> None:
    first = policy.read_text().splitlines()[0]
    assert first == MODELINE
    target = (policy.parent / first.split("$schema=", 1)[1]).resolve()
    assert target == SCHEMA_PATH.resolve()


HEAD = "version: 1\nname: snip\n"

# (id, policy text): the loader rejects each; so must the schema.
INVALID = [
    ("empty", ""),
    ("no-version", "name: snip\n"),
    ("version-2", "version: 2\n"),
    ("version-text", "version: '1'\n"),
    ("unknown-top-key", HEAD + "default:\n  inbound: deny\n"),
    ("unknown-rule-key", HEAD + "rules:\n  - action: allow\n    prots: [22]\n"),
    ("unknown-defaults-key", HEAD + "defaults:\n  routed: deny\n"),
    ("bad-forward", HEAD + "defaults:\n  forward: drop\n"),
    ("antispoof-text", HEAD + "antispoof: 'no'\n"),
    ("published-ports-bool", HEAD + "published_ports: true\n"),
    ("published-ports-typo", HEAD + "published_ports: enforced\n"),
    ("unknown-windows-key", HEAD + "windows:\n  exclusiv: true\n"),
    ("windows-exclusive-text", HEAD + "windows:\n  exclusive: 'true'\n"),
    ("unknown-iptables-key", HEAD + "iptables:\n  mod: chains\n"),
    ("bad-iptables-mode", HEAD + "iptables:\n  mode: share\n"),
    ("iptables-not-mapping", HEAD + "iptables: chains\n"),
    ("other-tools-table", "version: 1\nname: firewalld\n"),
    ("nft-keyword-esp", "version: 1\nname: esp\n"),
    ("unknown-monitor-key", HEAD + "monitor:\n  prefix: x\n"),
    ("bad-action", HEAD + "rules:\n  - action: permit\n"),
    ("no-action", HEAD + "rules:\n  - name: x\n    ports: [22]\n"),
    ("from-on-out-rule", HEAD + "rules:\n  - action: deny\n    direction: out\n    from: [192.0.2.0/24]\n"),
    ("to-on-default-in-rule", HEAD + "rules:\n  - action: deny\n    to: [192.0.2.0/24]\n"),
    ("to-on-in-rule", HEAD + "rules:\n  - action: deny\n    direction: in\n    to: 192.0.2.1\n"),
    ("ports-and-range", HEAD + "rules:\n  - action: deny\n    ports: [22]\n    range: registered\n"),
    ("name-uppercase", "version: 1\nname: Edge\n"),
    ("name-leading-dash", "version: 1\nname: -edge\n"),
    ("name-too-long", "version: 1\nname: " + "a" * 21 + "\n"),
    ("name-dot", "version: 1\nname: edge.v2\n"),
    ("name-digit-first", "version: 1\nname: 1edge\n"),
    ("name-nft-keyword", "version: 1\nname: counter\n"),
    ("name-number", "version: 1\nname: 12\n"),
    ("description-number", HEAD + "description: 5\n"),
    ("description-too-long", HEAD + "description: " + "x" * 4097 + "\n"),
    ("inbound-reject", HEAD + "defaults:\n  inbound: reject\n"),
    ("outbound-bool", HEAD + "defaults:\n  outbound: true\n"),
    ("deny-block", HEAD + "defaults:\n  deny: block\n"),
    ("defaults-list", HEAD + "defaults: [deny]\n"),
    ("log-prefix-space", HEAD + "monitor:\n  log_prefix: 'my fw'\n"),
    ("log-prefix-long", HEAD + "monitor:\n  log_prefix: abcdefghijklmnopq\n"),
    ("log-prefix-empty", HEAD + "monitor:\n  log_prefix: ''\n"),
    ("rate-day", HEAD + "monitor:\n  rate: 10/day\n"),
    ("rate-zero", HEAD + "monitor:\n  rate: 0/minute\n"),
    ("rate-too-high", HEAD + "monitor:\n  rate: 10001/second\n"),
    ("rate-huge", HEAD + "monitor:\n  rate: 99999/hour\n"),
    ("rate-number", HEAD + "monitor:\n  rate: 10\n"),
    ("rules-mapping", HEAD + "rules:\n  action: allow\n"),
    ("rules-text", HEAD + "rules: allow\n"),
    ("rule-text", HEAD + "rules:\n  - allow\n"),
    ("rule-name-reserved", HEAD + "rules:\n  - name: rule-3\n    action: allow\n"),
    ("rule-name-uppercase", HEAD + "rules:\n  - name: SSH\n    action: allow\n"),
    ("rule-name-too-long", HEAD + "rules:\n  - name: " + "a" * 33 + "\n    action: allow\n"),
    ("log-text", HEAD + "rules:\n  - action: deny\n    log: 'true'\n"),
    ("direction-both", HEAD + "rules:\n  - action: deny\n    direction: both\n"),
    ("protocol-unknown", HEAD + "rules:\n  - action: deny\n    protocol: icmp v6\n"),
    ("protocol-256", HEAD + "rules:\n  - action: deny\n    protocol: 256\n"),
    ("protocol-list", HEAD + "rules:\n  - action: deny\n    protocol: [tcp]\n"),
    ("icmp-256", HEAD + "rules:\n  - action: deny\n    protocol: icmp\n    icmp: [256]\n"),
    ("icmp-empty", HEAD + "rules:\n  - action: deny\n    protocol: icmp\n    icmp: []\n"),
    ("local-empty", HEAD + "rules:\n  - action: deny\n    local: []\n"),
    ("interface-slash", HEAD + "rules:\n  - action: deny\n    interface: eth0/1\n"),
    ("interface-long", HEAD + "rules:\n  - action: deny\n    interface: abcdefghijklmnop\n"),
    ("interface-star", HEAD + "rules:\n  - action: deny\n    interface: eth*0\n"),
    ("profiles-work", HEAD + "rules:\n  - action: deny\n    profiles: [work]\n"),
    ("profiles-twice", HEAD + "rules:\n  - action: deny\n    profiles: [domain, domain]\n"),
    ("targets-pf", HEAD + "targets: [pf]\n"),
    ("targets-twice", HEAD + "targets: [iptables, iptables]\n"),
    ("targets-empty", HEAD + "targets: []\n"),
    ("range-all", HEAD + "rules:\n  - action: deny\n    range: all\n"),
    ("ports-empty", HEAD + "rules:\n  - action: deny\n    ports: []\n"),
    ("ports-null", HEAD + "rules:\n  - action: deny\n    ports:\n"),
    ("port-null-entry", HEAD + "rules:\n  - action: deny\n    ports: [~]\n"),
    ("port-too-high", HEAD + "rules:\n  - action: deny\n    ports: [70000]\n"),
    ("port-negative", HEAD + "rules:\n  - action: deny\n    ports: [-1]\n"),
    ("port-float", HEAD + "rules:\n  - action: deny\n    ports: [22.5]\n"),
    ("port-bool", HEAD + "rules:\n  - action: deny\n    ports: [true]\n"),
    ("port-empty-text", HEAD + "rules:\n  - action: deny\n    ports: ['']\n"),
    ("port-mapping", HEAD + "rules:\n  - action: deny\n    ports: [{port: 22}]\n"),
    ("port-nested-list", HEAD + "rules:\n  - action: deny\n    ports: [[22]]\n"),
    ("from-empty", HEAD + "rules:\n  - action: deny\n    from: []\n"),
    ("from-number", HEAD + "rules:\n  - action: deny\n    from: [10]\n"),
    ("from-mapping", HEAD + "rules:\n  - action: deny\n    from: [{net: 10.0.0.0/8}]\n"),
    ("to-null", HEAD + "rules:\n  - action: deny\n    direction: out\n    to:\n"),
    ("comment-list", HEAD + "rules:\n  - action: deny\n    comment: [a]\n"),
    ("acknowledge-text", HEAD + "acknowledge: ssh-lockout\n"),
    ("acknowledge-unknown-id", HEAD + "acknowledge: [ssh-lockut]\n"),
    ("acknowledge-twice", HEAD + "acknowledge: [no-ntp-out, no-ntp-out]\n"),
    ("acknowledge-number", HEAD + "acknowledge: [1]\n"),
    ("acknowledge-null", HEAD + "acknowledge:\n"),
    ("select-and-ports", HEAD + "rules:\n  - action: monitor\n    select: undocumented\n    ports: [22]\n"),
    ("select-unknown", HEAD + "rules:\n  - action: monitor\n    select: [dormant]\n"),
    ("select-twice", HEAD + "rules:\n  - action: monitor\n    select: [undocumented, undocumented]\n"),
    ("select-empty", HEAD + "rules:\n  - action: monitor\n    select: []\n"),
    ("range-unknown", HEAD + "rules:\n  - action: monitor\n    range: user\n"),
    ("range-leading-zero", HEAD + "rules:\n  - action: monitor\n    range: '01-5'\n"),
]

# (id, policy text): the loader accepts each; so must the schema.
VALID = [
    ("minimal", "version: 1\nname: snip\n"),
    ("name-from-file", "version: 1\n"),
    ("no-rules", HEAD + "rules: []\n"),
    ("name-20", "version: 1\nname: a" + "b" * 19 + "\n"),
    ("name-chars", "version: 1\nname: a0_-z\n"),
    ("all-defaults", HEAD + "defaults:\n  inbound: allow\n  outbound: deny\n  deny: reject\n  forward: allow\n"),
    ("antispoof-off", HEAD + "antispoof: false\n"),
    ("published-ports-enforce", HEAD + "published_ports: enforce\n"),
    ("published-ports-ignore", HEAD + "published_ports: ignore\n"),
    ("windows-exclusive", HEAD + "windows:\n  exclusive: true\n"),
    ("windows-empty", HEAD + "windows: {}\n"),
    ("iptables-chains", HEAD + "iptables:\n  mode: chains\n"),
    ("iptables-table", HEAD + "iptables: {mode: table}\n"),
    ("monitor", HEAD + "monitor:\n  log_prefix: My_fw.1-2\n  rate: 10000/hour\n"),
    ("rate-1", HEAD + "monitor:\n  rate: 1/second\n"),
    ("acknowledge", HEAD + "acknowledge: [ssh-lockout, no-ntp-out]\n"),
    ("acknowledge-empty", HEAD + "acknowledge: []\n"),
    ("single-port-number", HEAD + "rules:\n  - action: allow\n    ports: 22\n"),
    ("single-port-name", HEAD + "rules:\n  - action: allow\n    ports: ssh\n"),
    ("port-forms", HEAD + "rules:\n  - action: allow\n    ports: [0, 65535, ssh, SSH, '6000-6063', mpshrsv/udp,"
     " '8000-8100/tcp', cl/1]\n"),
    ("range", HEAD + "rules:\n  - action: deny\n    range: dynamic\n"),
    ("from-default-in", HEAD + "rules:\n  - action: allow\n    from: [192.0.2.0/24, '2001:db8::/32']\n"),
    ("from-single", HEAD + "rules:\n  - action: allow\n    direction: in\n    from: 192.0.2.7\n"),
    ("to-out", HEAD + "rules:\n  - action: allow\n    direction: out\n    to: [198.51.100.7]\n"),
    ("everything", HEAD + "description: d\nrules:\n  - name: a-1_b\n    action: monitor\n    log: false\n"
     "    direction: out\n    protocol: udp\n    ports: [ntp]\n    to: 203.0.113.0/24\n    comment: c\n"),
    ("flow-style", HEAD + "rules:\n  - {name: x, action: deny, log: true, protocol: any, range: well-known}\n"),
    ("protocol-icmp", HEAD + "rules:\n  - action: deny\n    protocol: icmp\n"),
    ("protocol-forms", HEAD + "rules:\n  - {action: allow, protocol: esp}\n  - {action: allow, protocol: 112}\n"
     "  - {action: allow, protocol: GRE}\n  - {action: allow, protocol: all}\n  - {action: allow, protocol: icmpv6}\n"),
    ("icmp-types", HEAD + "rules:\n  - action: allow\n    protocol: icmp\n    icmp: [echo-request, 8, 3/4]\n"),
    ("icmp-single", HEAD + "rules:\n  - action: allow\n    protocol: icmpv6\n    icmp: echo-request\n"),
    ("local", HEAD + "rules:\n  - action: allow\n    ports: [ssh]\n    local: [10.9.0.2, '2001:db8::2']\n"),
    ("interface", HEAD + "rules:\n  - action: allow\n    protocol: all\n    interface: [wg0, eth*, br-lan.10]\n"
     "targets: [iptables, nftables]\n"),
    ("profiles", HEAD + "rules:\n  - action: allow\n    ports: [microsoft-ds]\n    profiles: [domain, private]\n"
     "targets: windows\n"),
    ("targets", HEAD + "targets: [nftables, iptables]\n"),
    ("select", HEAD + "rules:\n  - action: monitor\n    select: [undocumented, unauthorized-use]\n"
     "    range: registered\n"),
    ("select-one", HEAD + "rules:\n  - action: deny\n    log: true\n    protocol: udp\n    select: undocumented\n"),
    ("range-numeric", HEAD + "rules:\n  - action: deny\n    select: unauthorized-use\n    range: '1024-2048'\n"
     "  - action: deny\n    range: 1261\n  - action: deny\n    range: system\n"),
]


@pytest.mark.parametrize(("text"), [t for _, t in INVALID], ids=[i for i, _ in INVALID])
def test_loader_and_schema_both_reject(tmp_path: Path, text: str) -> None:
    assert not loader_accepts(tmp_path, text), "the loader accepts this snippet: fix the table"
    assert not schema_accepts(text), "the schema accepts a snippet the loader rejects"


@pytest.mark.parametrize(("text"), [t for _, t in VALID], ids=[i for i, _ in VALID])
def test_loader_and_schema_both_accept(tmp_path: Path, text: str) -> None:
    assert loader_accepts(tmp_path, text), "the loader rejects this snippet: fix the table"
    errors = [e.message for e in VALIDATOR.iter_errors(yaml.safe_load(text))]
    assert not errors


def _rule_schema() -> dict[str, Any]:
    rule: dict[str, Any] = SCHEMA["$defs"]["rule"]
    return rule


def test_keys_match_the_loader() -> None:
    """Every key the loader reads, and no other; a key added to the loader needs the schema too."""
    assert set(SCHEMA["properties"]) == set(loader.TOP_KEYS)
    assert set(SCHEMA["properties"]["defaults"]["properties"]) == set(loader.DEFAULT_KEYS)
    assert set(SCHEMA["properties"]["monitor"]["properties"]) == set(loader.MONITOR_KEYS)
    assert set(SCHEMA["properties"]["windows"]["properties"]) == set(loader.WINDOWS_KEYS)
    assert set(_rule_schema()["properties"]) == set(loader.RULE_KEYS)
    assert SCHEMA["required"] == ["version"]
    assert _rule_schema()["required"] == ["action"]
    for where in (SCHEMA, SCHEMA["properties"]["defaults"], SCHEMA["properties"]["monitor"],
                  SCHEMA["properties"]["windows"], _rule_schema()):
        assert where["additionalProperties"] is False


def test_patterns_match_the_loader() -> None:
    props = SCHEMA["properties"]
    assert props["name"]["pattern"] == f"^{loader.POLICY_NAME.pattern}$"
    assert props["monitor"]["properties"]["log_prefix"]["pattern"] == f"^{loader.LOG_PREFIX.pattern}$"
    assert props["monitor"]["properties"]["rate"]["pattern"] == "^[1-9][0-9]{0,4}/(second|minute|hour)$"
    assert _rule_schema()["properties"]["name"]["pattern"] == f"^{loader.RULE_NAME.pattern}$"
    assert _rule_schema()["properties"]["range"]["anyOf"][0]["enum"] == list(loader.RANGES)
    assert _rule_schema()["properties"]["range"]["anyOf"][1]["pattern"] == (
        "^(0|[1-9][0-9]{0,4})(-(0|[1-9][0-9]{0,4}))?$")
    assert loader.NUMERIC_RANGE.pattern == "(0|[1-9][0-9]{0,4})(?:-(0|[1-9][0-9]{0,4}))?"
    from fwgen.registry_select import SELECTORS
    assert _rule_schema()["properties"]["select"]["oneOf"][0]["enum"] == list(SELECTORS)


def test_nft_keywords_match() -> None:
    """Policy names that are nft keywords are refused; the schema carries the same list."""
    keywords, tables = [part["not"]["enum"] for part in SCHEMA["properties"]["name"]["allOf"] if "enum" in part["not"]]
    expected = sorted(k for k in NFT_KEYWORDS if loader.POLICY_NAME.fullmatch(k) and not k[0].isdigit())
    assert keywords == expected, "fwgen/targets/nft_keywords.py changed: update policy.schema.json"
    assert tables == sorted(OTHER_TABLES), "fwgen/targets/nft_keywords.py changed: update policy.schema.json"


def test_acknowledge_ids_match_the_linter() -> None:
    from fwgen.lint import checks

    items = SCHEMA["properties"]["acknowledge"]["items"]["anyOf"]
    assert [item["const"] for item in items] == [check.id for check in checks()], (
        "a lint check was added, removed or renamed: update acknowledge in policy.schema.json"
    )
    for item, check in zip(items, checks(), strict=True):
        assert item["description"].startswith(f"[{check.severity}] ")
    assert SCHEMA["properties"]["acknowledge"]["uniqueItems"] is True


def test_rate_limit_is_exact() -> None:
    """Every N from 0 to 99999 for each period: the schema agrees with the loader's rule."""
    rate = SCHEMA["properties"]["monitor"]["properties"]["rate"]
    validator = jsonschema.Draft202012Validator(rate)
    ok = re.compile(rate["pattern"])
    too_high = re.compile(rate["not"]["pattern"])
    for n in range(100000):
        for per in ("second", "hour"):
            text = f"{n}/{per}"
            m = loader.RATE.fullmatch(text)
            loader_ok = bool(m) and int(m.group(1)) <= loader.MAX_RATE
            schema_ok = bool(ok.search(text)) and not too_high.search(text)
            assert schema_ok == loader_ok, text
    for text in ("1/minute", "10000/minute", "10001/minute", "01/minute", "5/minutes", " 5/minute"):
        m = loader.RATE.fullmatch(text)
        assert validator.is_valid(text) == (bool(m) and int(m.group(1)) <= loader.MAX_RATE), text


def _described(node: Any, where: str) -> Iterator[str]:
    """Paths of schema keys (properties) that have no description."""
    if isinstance(node, dict):
        for key, sub in node.get("properties", {}).items():
            if "description" not in sub:
                yield f"{where}/{key}"
        for key, value in node.items():
            if key != "if":  # a condition, not a key a policy writer sees
                yield from _described(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _described(value, f"{where}/{i}")


def test_every_key_has_a_description() -> None:
    assert SCHEMA.get("description")
    assert list(_described(SCHEMA, "")) == []


def test_cli_prints_the_packaged_file_byte_for_byte() -> None:
    packaged = files("fwgen.data").joinpath("policy.schema.json").read_bytes()
    assert packaged == SCHEMA_PATH.read_bytes()
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    assert result.stdout_bytes == packaged
    assert json.loads(result.stdout_bytes) == SCHEMA
    assert packaged.endswith(b"}\n")


def test_real_process_prints_the_schema(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fwgen", "schema"], cwd=ROOT, capture_output=True, check=False)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout == SCHEMA_PATH.read_bytes()
    assert json.loads(proc.stdout)["title"]
