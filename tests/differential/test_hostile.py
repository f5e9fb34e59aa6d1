"""Hostile text in every place policy text can reach an output.

Names, comments, descriptions and prefixes are generated with quotes, newlines, ``;``,
``#``, ``{``, ``%``, ``&``, ``^``, unicode and lengths far past every platform limit.
Each policy must either be refused with a located error, or build outputs that load and
hold exactly the rules of the same policy with that text left out — the same rules the
differential tests prove against explain. No text can add, remove or change a rule.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwgen.build import build
from fwgen.errors import PolicyError
from fwgen.registry import bundled
from tests.differential.harness import Lab
from tests.kernel.netns import KernelLog, load_iptables, load_nft

NASTY = list("\"'\n\r\t;#{}%&^|<>\\$`!*()[]=,/") + ["\u00e9", "\u4e2d", "\U0001f525", "\u202e", "\x00", "\x1b"]
hostile_text = st.one_of(
    st.text(alphabet=st.sampled_from(NASTY) | st.characters(codec="utf-8"), max_size=60),
    st.builds(lambda n, s: "x" * n + s, st.integers(100, 9000), st.text(alphabet=st.sampled_from(NASTY), max_size=10)),
    st.sampled_from([
        '" -j ACCEPT\n-A INPUT -j ACCEPT', '"; flush ruleset; table ip evil { chain c { accept; } }',
        "x\r\nnetsh advfirewall reset & echo", "%PATH%^&|<>", "} } chain input { policy accept; }",
    ]),
)
BASE: dict[str, Any] = {
    "version": 1, "name": "hostile",
    "defaults": {"inbound": "deny", "outbound": "deny", "deny": "reject"},
    "rules": [
        {"name": "ssh", "action": "allow", "protocol": "tcp", "ports": ["ssh"], "from": ["198.51.100.0/24"]},
        {"name": "watch", "action": "monitor", "ports": ["mpshrsv", "1274-1280"]},
        {"name": "no-x", "action": "deny", "log": True, "direction": "out", "ports": ["x11"], "to": ["2001:db8::/32"]},
    ],
}

_NFT_COMMENT = re.compile(r' comment "[^"]*"')
_IPT_COMMENT = re.compile(r' -m comment --comment (?:"[^"]*"|\S+)')
_CHAIN_COUNTERS = re.compile(r" \[\d+:\d+\]$", re.MULTILINE)


def _policy(**text: str) -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    if "description" in text:
        data["description"] = text["description"]
    if "comment" in text:
        for rule in data["rules"]:
            rule["comment"] = text["comment"]
    if "rule_name" in text:
        data["rules"][1]["name"] = text["rule_name"]
    if "name" in text:
        data["name"] = text["name"]
    if "prefix" in text:
        data["monitor"] = {"log_prefix": text["prefix"]}
    return data


def _loaded(labs: dict[str, Lab], files: dict[str, str], name: str) -> tuple[str, str]:
    """The rules as the kernel holds them, comments removed."""
    ipt, nft = labs["iptables"].host, labs["nftables"].host
    ipt.run(["nft", "flush", "ruleset"])  # no table of an earlier policy's (mangle, with published_ports)
    load_iptables(ipt, files["iptables/rules.v4"], files["iptables/rules.v6"])
    saved = ipt.run(["iptables-save"]).stdout + ipt.run(["ip6tables-save"]).stdout
    saved = "\n".join(line for line in saved.splitlines() if not line.startswith("#"))
    nft.run(["nft", "flush", "ruleset"])
    load_nft(nft, files[f"nftables/{name}.nft"])
    listing = re.sub(r"packets \d+ bytes \d+", "packets N bytes N", nft.run(["nft", "list", "ruleset"]).stdout)
    saved = _CHAIN_COUNTERS.sub(" [N:N]", saved)  # a chain policy's counters move with any packet that arrives
    return _IPT_COMMENT.sub("", saved), _NFT_COMMENT.sub("", listing).replace("table inet " + name, "table inet NAME")


def _check(labs: dict[str, Lab], tmp: Path, data: dict[str, Any], baseline: dict[str, Any]) -> None:
    path = tmp / "hostile.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    try:
        result = build(str(path), bundled())
    except PolicyError as error:
        assert re.match(rf"{re.escape(str(path))}:\d+:\d+: \S", str(error)), str(error)
        assert "\n" not in str(error)
        return
    base_path = tmp / "baseline.yaml"
    base_path.write_text(yaml.safe_dump(baseline), encoding="utf-8")
    expected = build(str(base_path), bundled())
    name = result.ruleset.name
    assert _loaded(labs, result.files, name) == _loaded(labs, expected.files, expected.ruleset.name)
    windows = result.files[f"windows/{name}.cmd"]
    for line in windows.split("\r\n"):
        assert len(line) < 8191
        allowed = r"(@echo off|setlocal|rem [ -~]*|exit /b [01]|:failed|netsh advfirewall [ -~]+)"
        assert line == "" or re.fullmatch(allowed, line), line
    # every netsh line keeps its quotes balanced and carries no cmd.exe metacharacter
    for line in windows.split("\r\n"):
        if line.startswith("netsh"):
            body = line.removesuffix(" || exit /b 1").removesuffix(" || goto :failed").removesuffix(" >nul 2>&1")
            assert body.count('"') % 2 == 0 and not set(body) & set("%&|<>^"), line


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=hostile_text, where=st.sampled_from(["description", "comment", "rule_name", "name", "prefix"]))
def _hostile(labs: dict[str, Lab], tmp: Path, text: str, where: str) -> None:
    structural = where in ("name", "rule_name", "prefix")  # a valid one changes the rules legitimately
    _check(labs, tmp, _policy(**{where: text}), _policy(**({where: text} if structural else {})))


def test_hostile_text_never_changes_a_rule(labs: tuple[dict[str, Lab], KernelLog], tmp_path: Path) -> None:
    _hostile(labs[0], tmp_path)


def test_fixed_injection_attempts(labs: tuple[dict[str, Lab], KernelLog], tmp_path: Path) -> None:
    attempts = ['" -j ACCEPT\n-A INPUT -j ACCEPT', '"; flush ruleset; table ip evil { }', "%x%&del *^|", "a" * 5000]
    for text in attempts:
        for where in ("description", "comment"):
            _check(labs[0], tmp_path, _policy(**{where: text}), _policy())
