"""Registry selectors (``select:``, ``fwgen ports --select``): the sets, computed here
from IANA's XML with ElementTree (no fwgen parser, no selector code), equal what
fwgen selects; the listing equals what the build matches and what explain says, on
every (protocol, port) pair; bad input is one located line."""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from fwgen import registry_select
from fwgen.build import build
from fwgen.cli import main
from fwgen.errors import PolicyError
from fwgen.explain import Explainer, format_answer
from fwgen.registry import bundled
from fwgen.registry_format import SOURCE_COPY_PATH

NS = {"a": "http://www.iana.org/assignments"}
Pair = tuple[str, int]


def _independent_sets() -> tuple[str, set[Pair], set[Pair], set[Pair]]:
    """From the bundled edition's own XML: (edition, undocumented, unauthorized-use,
    the unauthorized-use pairs of named records)."""
    root = ET.fromstring(gzip.decompress(Path(SOURCE_COPY_PATH).read_bytes()))
    edition = root.findtext("a:updated", namespaces=NS) or ""
    documented: dict[Pair, list[bool]] = {}
    unauthorized: set[Pair] = set()
    named_unauthorized: set[Pair] = set()
    for record in root.findall("a:record", NS):
        name = (record.findtext("a:name", namespaces=NS) or "").strip()
        number = (record.findtext("a:number", namespaces=NS) or "").strip()
        protocol = (record.findtext("a:protocol", namespaces=NS) or "").strip()
        if not number:
            continue
        lo, _, hi = number.partition("-")
        pairs = [(p, port) for p in (("tcp", "udp") if protocol == "" else (protocol,)) if p in ("tcp", "udp")
                 for port in range(int(lo), int(hi or lo) + 1)]
        has_doc = bool(record.get("date") or record.get("updated")) or any(
            x.get("type") != "person" for x in record.findall("a:xref", NS))
        for pair in pairs:
            if name:
                documented.setdefault(pair, []).append(has_doc)
            if (record.findtext("a:unauthorized", namespaces=NS) or "").strip():
                unauthorized.add(pair)
                if name:
                    named_unauthorized.add(pair)
    undocumented = {pair for pair, docs in documented.items() if not any(docs)}
    return edition, undocumented, unauthorized, named_unauthorized


def _as_pairs(selected: dict[str, list[int]]) -> set[Pair]:
    return {(p, port) for p, ports in selected.items() for port in ports}


def test_selector_sets_equal_an_independent_reading_of_the_registry() -> None:
    edition, undocumented, unauthorized, named = _independent_sets()
    registry = bundled()
    assert edition == registry.edition
    assert _as_pairs(registry_select.select(registry, ["undocumented"])) == undocumented
    assert _as_pairs(registry_select.select(registry, ["unauthorized-use"])) == unauthorized
    assert _as_pairs(registry_select.select(registry, ["undocumented", "unauthorized-use"])) == (
        undocumented | unauthorized)
    assert {("tcp", 1261), ("udp", 1261), ("tcp", 1274), ("udp", 1274)} <= undocumented
    assert ("tcp", 1284) not in undocumented  # iee-qfx: registered 2009-10-19
    if edition == "2026-08-17":  # the figures the issue gives for this edition
        assert len(undocumented) == 7349
        assert sum(1024 <= port <= 49151 for _, port in undocumented) == 6141
        assert len(unauthorized) == 3600
        assert len(named) == 206


def _listing(args: list[str]) -> tuple[set[Pair], str]:
    result = CliRunner().invoke(main, ["ports", *args])
    assert result.exit_code == 0, result.output
    pairs: set[Pair] = set()
    lines = result.output.splitlines()
    for line in lines[:-1]:
        if line.startswith(" "):
            continue
        _, ports, protocols, *_ = line.split()
        lo, _, hi = ports.partition("-")
        for p in ("tcp", "udp") if protocols == "-" else protocols.split(","):
            pairs.update((p, port) for port in range(int(lo), int(hi or lo) + 1))
    return pairs, lines[-1]


POLICY = """\
version: 1
name: dormant
defaults: {inbound: deny, outbound: allow}
rules:
  - name: close-t1
    action: deny
    ports: [t1distproc/udp]
  - name: dormant-watch
    action: monitor
    select: [undocumented, unauthorized-use]
    range: registered
  - name: mpshrsv-later
    action: allow
    ports: [mpshrsv]
"""


def test_listing_equals_the_build_and_explain_on_every_pair(tmp_path: Path) -> None:
    """``fwgen ports --select`` lists exactly the pairs the select rule matches: the
    compiled rule's ports, and explain's answer on all 131,072 tcp and udp ports."""
    registry = bundled()
    listed, count = _listing(["--select", "undocumented,unauthorized-use", "--range", "registered"])
    expected = {pair for pair in _as_pairs(registry_select.select(registry, ["undocumented", "unauthorized-use"]))
                if 1024 <= pair[1] <= 49151}
    assert listed == expected
    tcp, udp = (sum(p == q for q, _ in listed) for p in ("tcp", "udp"))
    assert count == (f"{len(listed)} tcp/udp pairs undocumented or unauthorized-use in registered (1024-49151): "
                     f"{tcp} tcp, {udp} udp (IANA edition {registry.edition})")
    path = tmp_path / "dormant.yaml"
    path.write_text(POLICY, encoding="utf-8")
    rule = build(str(path), registry).ruleset.rules[1]
    assert rule.name == "dormant-watch"
    built = {(p.value, port) for p, ranges in rule.ports for r in ranges for port in range(r.lo, r.hi + 1)}
    assert built == listed
    explainer = Explainer.from_file(str(path), registry)
    decided = {(p, port) for p in ("tcp", "udp") for port in range(65536)
               if explainer.verdict("in", p, port, "192.0.2.7").rule == "dormant-watch"}
    assert decided == listed - {("udp", 1274)}  # close-t1 decides it first
    assert explainer.verdict("in", "udp", 1274, "192.0.2.7").rule == "close-t1"
    assert explainer.verdict("in", "tcp", 1261, "192.0.2.7").rule == "dormant-watch"  # not mpshrsv-later


def test_explain_names_the_selector(tmp_path: Path) -> None:
    path = tmp_path / "dormant.yaml"
    path.write_text(POLICY, encoding="utf-8")
    explainer = Explainer.from_file(str(path), bundled())
    answer = format_answer(explainer, "in", "tcp", 1261, None)
    assert answer == (f"in tcp 1261 (mpshrsv): monitor, logged (rule dormant-watch, {path}:8) "
                      "(select undocumented: mpshrsv)")
    assert format_answer(explainer, "in", "tcp", 1053, None).endswith(
        "(select undocumented: remote-as; select unauthorized-use: remote-as)")
    assert format_answer(explainer, "in", "udp", 1274, None) == (
        f"in udp 1274 (t1distproc): deny by drop (rule close-t1, {path}:5)")
    assert format_answer(explainer, "in", "tcp", 1284, None) == (
        "in tcp 1284 (iee-qfx): deny by drop (default inbound deny)")
    unnamed = format_answer(explainer, "in", "tcp", 28011, None)
    assert unnamed.endswith("(select unauthorized-use: (unassigned))"), unnamed


def test_ports_select_narrowed_by_protocol_and_numeric_range() -> None:
    listed, count = _listing(["--select", "undocumented", "--protocol", "udp", "--range", "1261-1274"])
    assert listed == {("udp", port) for port in range(1261, 1275)}
    assert count.startswith("14 udp pairs undocumented in 1261-1274: 14 udp (IANA edition ")


@pytest.mark.parametrize(("args", "message"), [
    (["--select", "dormant"], "unknown selector 'dormant' (the selectors are undocumented, unauthorized-use)"),
    (["--select", "undocumneted"], "unknown selector 'undocumneted' (did you mean 'undocumented'?)"),
    (["--select", "undocumented", "--range", "49151-1024"], "'49151-1024' is not system"),
    (["1261", "--select", "undocumented"], "give a QUERY or --select SEL[,SEL], not both"),
    (["1261", "--range", "registered"], "--range and --protocol narrow a --select"),
    ([], "missing QUERY (a port, a range or a service name) or --select SEL[,SEL]"),
])
def test_ports_select_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["ports", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_ports_query_naming_a_selector_points_to_select() -> None:
    result = CliRunner().invoke(main, ["ports", "undocumented"])
    assert result.exit_code == 1
    assert result.output == (f"no registry entry matches 'undocumented' (IANA edition {bundled().edition}); "
                             "for the pairs the selector means: fwgen ports --select undocumented\n")


def test_ports_select_nothing_is_exit_1() -> None:
    result = CliRunner().invoke(main, ["ports", "--select", "unauthorized-use", "--range", "dynamic"])
    assert result.exit_code == 1
    assert "no tcp/udp pairs unauthorized-use in dynamic (49152-65535)" in result.output


RULE = "version: 1\nname: sel\nrules:\n  - name: watch\n    action: monitor\n"


@pytest.mark.parametrize(("body", "message"), [
    ("    select: [undocumneted]\n", "6:14: unknown selector 'undocumneted' (did you mean 'undocumented'?)"),
    ("    select: dormant\n", "6:13: unknown selector 'dormant' (the selectors are undocumented, unauthorized-use)"),
    ("    select: [undocumented, undocumented]\n",
     "6:28: selector 'undocumented' is listed twice (first at line 6)"),
    ("    select: []\n", "6:13: select is an empty list; omit the key instead"),
    ("    select: [1]\n", "6:14: a selector must be one of undocumented | unauthorized-use, got a number '1'"),
    ("    ports: [22]\n    select: undocumented\n",
     "7:5: rule 'watch' has both 'ports' and 'select': a rule selects its ports one way (write two rules for both)"),
    ("    select: undocumented\n    range: user\n",
     "7:12: range 'user' is not valid: write system | well-known | registered | dynamic, or \"N-M\""),
    ("    select: undocumented\n    range: '70000'\n", "7:12: range '70000' is not within 0-65535"),
    ("    select: undocumented\n    range: 2000-1000\n", "7:12: range 2000-1000 is reversed: write 1000-2000"),
    ("    select: undocumented\n    protocol: icmp\n",
     "6:13: select applies to tcp and udp only; this rule's protocol is icmp"),
    ("    select: unauthorized-use\n    range: dynamic\n",
     "6:13: rule 'watch' selects nothing: the registry (edition 2026-08-17) has no tcp/udp pair that is "
     "unauthorized-use in range dynamic"),
])
def test_select_errors_are_located(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "sel.yaml"
    path.write_text(RULE + body, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        build(str(path), bundled())
    assert str(info.value) == f"{path}:{message}"
    with pytest.raises(PolicyError) as again:  # explain refuses it with the same line
        Explainer.from_file(str(path), bundled())
    assert str(again.value) == str(info.value)


def test_select_cli_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "sel.yaml"
    path.write_text(RULE + "    select: [dormant]\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["build", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"{path}:6:14: unknown selector 'dormant' (the selectors are undocumented, unauthorized-use)"]
    assert not (tmp_path / "out").exists()


def test_range_names_and_numbers_without_select_keep_their_meaning(tmp_path: Path) -> None:
    """1.x: ``range`` alone matches every port of the range; system is well-known's IANA
    name; "N-M" the same as the numbers."""
    text = ("version: 1\nname: r\nrules:\n  - {action: deny, range: well-known}\n  - {action: deny, range: system}\n"
            "  - {action: deny, range: '1261-1274'}\n  - {action: deny, range: 1261}\n")
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    rules = build(str(path), bundled()).ruleset.rules
    spans = [[(p.value, r.lo, r.hi) for p, ranges in rule.ports for r in ranges] for rule in rules]
    assert spans == [[("tcp", 0, 1023), ("udp", 0, 1023)]] * 2 + [
        [("tcp", 1261, 1274), ("udp", 1261, 1274)], [("tcp", 1261, 1261), ("udp", 1261, 1261)]]


def test_diff_and_lint_read_select_rules(tmp_path: Path) -> None:
    """diff compares what a select rule matches; lint locates its findings at ``select``."""
    old = tmp_path / "old.yaml"
    new = tmp_path / "new.yaml"
    old.write_text("version: 1\nname: d\nrules:\n  - name: watch\n    action: deny\n    log: true\n"
                   "    ports: [1261, 1274]\n", encoding="utf-8")
    new.write_text("version: 1\nname: d\nrules:\n  - name: watch\n    action: deny\n    log: true\n"
                   "    select: undocumented\n    range: \"1250-1290\"\n", encoding="utf-8")
    diff = CliRunner().invoke(main, ["diff", str(old), str(new)])
    assert diff.output == ("in tcp,udp 1250-1260,1262-1273,1275,1277-1283,1285-1286,1288-1290 (swldy-sias, "
                           "servergraph, bspne-pcc, …) from any: deny → deny +log\n")
    watch = tmp_path / "watch.yaml"
    watch.write_text("version: 1\nname: w\nrules:\n  - name: watch\n    action: monitor\n"
                     "    select: [unauthorized-use]\n", encoding="utf-8")
    lint = CliRunner().invoke(main, ["lint", str(watch)])
    found = [line for line in lint.output.splitlines() if "[wide-open]" in line or "[unauthorized-port]" in line]
    assert len(found) == 2 and all(line.startswith(f"{watch}:6:13: warning: rule 'watch' ") for line in found), found


@pytest.mark.parametrize("which", ["undocumented", "unauthorized-use"])
def test_listing_of_one_selector_equals_the_independent_set(which: str) -> None:
    _, undocumented, unauthorized, _ = _independent_sets()
    listed, count = _listing(["--select", which])
    expected = undocumented if which == "undocumented" else unauthorized
    assert listed == expected
    assert count.startswith(f"{len(expected)} tcp/udp pairs {which}: ")
