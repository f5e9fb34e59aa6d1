"""The Windows Firewall model (model.py), checked on examples from Microsoft's
documentation, then used to execute every generated Windows script."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from pathlib import Path

import pytest

from fwgen.build import build
from fwgen.ir import Action, Direction, Protocol, Ruleset
from fwgen.registry import bundled
from tests.winmodel.model import (
    CMD_LINE_LIMIT,
    NO_MATCH,
    NetshError,
    Rule,
    RuleStore,
    ScriptError,
    can_be_remote,
    parse_rule,
    run_script,
)

ROOT = Path(__file__).resolve().parents[2]
POLICIES = sorted((ROOT / "policies").glob("*.yaml"))
HEAD = "@echo off\r\nsetlocal\r\n"  # a bad line placed after it is line 3


def store_with(*rules: str, policy: str = "blockinbound,allowoutbound") -> RuleStore:
    store = RuleStore()
    for text in rules:
        store.add(parse_rule(text))
    inbound, outbound = policy.split(",")
    for settings in store.profiles.values():
        settings.inbound, settings.outbound = inbound, outbound
    return store


def script(*lines: str) -> str:
    return HEAD + "".join(line + "\r\n" for line in lines)


# --- precedence (Microsoft Learn "Windows Firewall rules", MS-FASP FW_RULE_ACTION) ----


def test_block_beats_a_more_specific_allow():
    """"Explicit block rules take precedence over any conflicting allow rules": an allow
    for one host does not punch a hole in a block of the port."""
    store = store_with(
        "name=block-1261 dir=in action=block protocol=tcp localport=1261",
        "name=admins dir=in action=allow protocol=tcp localport=1261 remoteip=10.1.2.3",
    )
    assert store.verdict("in", "tcp", 1261, "10.1.2.3") == "block"
    assert store.verdict("in", "tcp", 1261, "192.0.2.1") == "block"


def test_rule_order_does_not_matter():
    rules = ["name=a dir=in action=allow protocol=tcp localport=80",
             "name=b dir=in action=block protocol=tcp localport=80"]
    assert store_with(*rules).verdict("in", "tcp", 80, "192.0.2.1") == "block"
    assert store_with(*reversed(rules)).verdict("in", "tcp", 80, "192.0.2.1") == "block"


def test_allow_beats_the_blockinbound_default_and_the_default_decides_the_rest():
    """"Explicitly defined allow rules take precedence over the default block setting"."""
    store = store_with("name=web dir=in action=allow protocol=tcp localport=8080")
    assert store.verdict("in", "tcp", 8080, "192.0.2.1") == "allow"
    assert store.verdict("in", "tcp", 8081, "192.0.2.1") == "block"
    assert store.verdict("in", "udp", 8080, "192.0.2.1") == "block"
    assert store.verdict("out", "tcp", 8080, "192.0.2.1") == "allow"  # allowoutbound


def test_default_applies_when_nothing_matches():
    store = store_with("name=x dir=out action=allow protocol=udp remoteport=53",
                       policy="allowinbound,blockoutbound")
    assert store.verdict("in", "tcp", 22, "2001:db8::1") == "allow"
    assert store.verdict("out", "udp", 53, "2001:db8::1") == "allow"
    assert store.verdict("out", "udp", 54, "2001:db8::1") == "block"


def test_block_rule_beats_allowinbound_default():
    store = store_with("name=x dir=in action=block protocol=udp localport=6000-6063",
                       policy="allowinbound,allowoutbound")
    assert store.verdict("in", "udp", 6063, "198.51.100.7") == "block"
    assert store.verdict("in", "udp", 6064, "198.51.100.7") == "allow"


def test_blockinboundalways_blocks_even_matching_allow_rules():
    store = store_with("name=x dir=in action=allow protocol=tcp localport=22",
                       policy="blockinboundalways,allowoutbound")
    assert store.verdict("in", "tcp", 22, "192.0.2.1") == "block"


def test_outbound_rules_match_the_remote_port_inbound_rules_the_local_port():
    store = store_with("name=o dir=out action=block protocol=tcp remoteport=25")
    assert store.verdict("out", "tcp", 25, "192.0.2.1") == "block"
    assert store.verdict("in", "tcp", 25, "192.0.2.1") == "block"  # the default, not rule o
    store = store_with("name=o dir=out action=block protocol=tcp remoteport=25",
                       policy="allowinbound,allowoutbound")
    assert store.verdict("in", "tcp", 25, "192.0.2.1") == "allow"


def test_disabled_rules_and_other_profiles_never_match():
    store = store_with(
        "name=off dir=in action=block protocol=tcp localport=80 enable=no",
        "name=private dir=in action=block protocol=tcp localport=81 profile=private",
        policy="allowinbound,allowoutbound",
    )
    assert store.verdict("in", "tcp", 80, "192.0.2.1") == "allow"
    assert store.verdict("in", "tcp", 81, "192.0.2.1", profile="public") == "allow"
    assert store.verdict("in", "tcp", 81, "192.0.2.1", profile="private") == "block"


def test_remote_addresses_single_subnet_range_and_family():
    store = store_with(
        "name=x dir=in action=allow protocol=tcp localport=22 "
        "remoteip=192.0.2.0/24,198.51.100.10-198.51.100.20,2001:db8::5")
    allowed = ["192.0.2.0", "192.0.2.255", "198.51.100.10", "198.51.100.20", "2001:db8::5"]
    blocked = ["192.0.3.0", "198.51.100.21", "2001:db8::6", "::ffff:192.0.2.1"]
    assert [store.verdict("in", "tcp", 22, a) for a in allowed] == ["allow"] * len(allowed)
    assert [store.verdict("in", "tcp", 22, a) for a in blocked] == ["block"] * len(blocked)


def test_bypass_beats_block_only_for_authenticated_traffic():
    """MS-FASP: "Allow-bypass rules take precedence over block rules", and apply only to
    rules with FW_RULE_FLAGS_AUTHENTICATE; netsh: dir=in bypass needs rmtcomputergrp."""
    store = store_with(
        "name=block dir=in action=block protocol=tcp localport=445",
        "name=admins dir=in action=bypass protocol=tcp localport=445 security=authenticate "
        "rmtcomputergrp=D:(A;;CC;;;S-1-5-21-1-2-3-1000)",
    )
    assert store.verdict("in", "tcp", 445, "192.0.2.1", authenticated=True) == "allow"
    assert store.verdict("in", "tcp", 445, "192.0.2.1") == "block"


def test_authenticated_allow_does_not_match_unauthenticated_traffic():
    store = store_with("name=a dir=in action=allow protocol=tcp localport=3389 "
                       "security=authenticate")
    assert store.verdict("in", "tcp", 3389, "192.0.2.1") == "block"
    assert store.verdict("in", "tcp", 3389, "192.0.2.1", authenticated=True) == "allow"


@pytest.mark.parametrize("text", [
    "name=x dir=in action=bypass protocol=tcp localport=1",  # not authenticated
    "name=x dir=in action=bypass security=authenticate",  # inbound without computer group
    "name=x dir=in action=block security=authenticate",  # the flag is for allow actions
    "name=x dir=out action=allow security=authdynenc",  # authdynenc: dir=in only
    "name=x dir=in action=allow rmtcomputergrp=D:",  # group without security
])
def test_authentication_rules_are_validated(text):
    with pytest.raises(ValueError):
        parse_rule(text)


def test_rules_restricting_what_one_connection_does_not_say_are_refused():
    store = store_with("name=x dir=in action=block protocol=tcp localport=80 remoteport=99")
    with pytest.raises(ValueError, match="cannot decide"):
        store.verdict("in", "tcp", 80, "192.0.2.1")


# --- delete rule name= ("If multiple matches are found, all matching rules are deleted.")


def test_delete_removes_every_duplicate_case_insensitively_and_nothing_else():
    store = store_with("name=Dup dir=in action=allow", "name=dup dir=out action=block",
                       "name=DUP dir=in action=block", "name=other dir=in action=block")
    assert store.delete("dUp") == 3
    assert [r.name for r in store.rules] == ["other"]


def test_delete_of_a_missing_name_fails_with_no_rules_match():
    store = store_with("name=other dir=in action=block")
    with pytest.raises(NetshError, match=f"^{NO_MATCH}$"):
        store.delete("missing")
    assert len(store.rules) == 1


def test_delete_name_all_deletes_every_rule():
    store = store_with("name=a dir=in action=block", "name=b dir=out action=block")
    assert store.delete("all") == 2 and store.rules == []
    with pytest.raises(NetshError):
        store.delete("all")


def test_failed_delete_continues_without_guard_and_stops_with_it():
    add = 'netsh advfirewall firewall add rule name="a" dir=in action=allow'
    transcript: list[str] = []
    unguarded = script('netsh advfirewall firewall delete rule name="a"', add, "exit /b 0")
    assert run_script(unguarded, RuleStore(), transcript) == 0
    assert transcript == [NO_MATCH, "Ok."]
    store = RuleStore()
    guarded = script('netsh advfirewall firewall delete rule name="a" || exit /b 1', add)
    assert run_script(guarded, store) == 1 and store.rules == []
    quiet = script('netsh advfirewall firewall delete rule name="a" >nul 2>&1')
    transcript = []
    assert run_script(quiet, RuleStore(), transcript) == 1  # last errorlevel, output discarded
    assert transcript == []


def test_set_commands_change_profile_defaults_and_logging():
    store = RuleStore()
    assert run_script(script(
        "netsh advfirewall set allprofiles firewallpolicy allowinbound,blockoutbound",
        "netsh advfirewall set allprofiles logging droppedconnections enable",
        "netsh advfirewall set allprofiles state on",
        "exit /b 0"), store) == 0
    for settings in store.profiles.values():
        assert (settings.inbound, settings.outbound) == ("allowinbound", "blockoutbound")
        assert settings.log_dropped and not settings.log_allowed and settings.state == "on"


def test_quoted_values_and_case_insensitive_keys():
    store = RuleStore()
    run_script(script('netsh advfirewall firewall add rule NAME="fwgen edge" DIR=In '
                      'Action=Block protocol=TCP localport=1,2-3 description="a b (c): d"'), store)
    (rule,) = store.rules
    assert (rule.name, rule.dir, rule.action, rule.protocol) == ("fwgen edge", "in", "block", 6)
    assert rule.localport == ((1, 1), (2, 3)) and rule.description == "a b (c): d"


# --- the strict parser: every malformed line is a ScriptError naming its line --------

ADD = 'netsh advfirewall firewall add rule name="x" dir=in action=allow'
BAD_LINES = [
    ADD + " protocol=tcp localport=70000",
    ADD + " protocol=tcp localport=90-80",
    ADD + " protocol=tcp localport=80,",
    ADD + " protocol=tcp localport=rpc",
    ADD + " protocol=tcp localport=any,80",
    ADD + " protocol=any localport=80",
    ADD + " remoteport=80",
    ADD + " protocol=sctp",
    ADD + " protocol=256",
    ADD + " protocol=icmpv4",
    ADD + " remoteip=10.0.0.256",
    ADD + " remoteip=10.0.0.1/8",
    ADD + " remoteip=10.0.0.0/255.0.0.0",
    ADD + " remoteip=10.0.0.9-10.0.0.1",
    ADD + " remoteip=10.0.0.1-::1",
    ADD + " remoteip=10.0.0.1-",
    ADD + " remoteip=localsubnet",
    ADD + " localip=fe80::1/10",
    # [MS-FASP] 2.2.4, 2.2.6, 2.2.10: no /0 subnet, no :: or ::1 in an IPv6 subnet or range
    ADD + " remoteip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ADD + " remoteip=::1-::9",
    ADD + " remoteip=::2-::1",
    ADD + " remoteip=::1",
    ADD + " remoteip=::",
    ADD + " remoteip=::1/128",
    ADD + " remoteip=::/1",
    ADD + " remoteip=::/0",
    ADD + " remoteip=0.0.0.0/0",
    ADD + " localip=::1",
    ADD + " profile=work",
    ADD + " profile=public,public",
    ADD + " enable=maybe",
    ADD + " edge=sometimes",
    ADD + " interfacetype=bluetooth",
    ADD + " foo=bar",
    ADD + " program=C:\\x.exe",
    ADD + " dir=out",
    ADD + ' description="unterminated',
    ADD + ' description="a & b"',
    ADD + ' description="100%"',
    ADD + " description=a^b",
    ADD + " > out.txt",
    ADD + " | findstr Ok",
    ADD + " & del x",
    ADD + ' description="caf\u00e9"',
    ADD + "\tprotocol=tcp",
    ADD + " na\"me\"=y",
    ADD + " protocol",
    'netsh advfirewall firewall add rule dir=in action=allow',
    'netsh advfirewall firewall add rule name="x" action=allow',
    'netsh advfirewall firewall add rule name="x" dir=in',
    'netsh advfirewall firewall add rule name="" dir=in action=allow',
    'netsh advfirewall firewall add rule name=all dir=in action=allow',
    'netsh advfirewall firewall add rule name="x" dir=sideways action=allow',
    'netsh advfirewall firewall add rule name="x" dir=in action=deny',
    'netsh advfirewall firewall add rule name="x" dir=out action=block edge=yes',
    'netsh advfirewall firewall delete rule name="x" dir=in',
    "netsh advfirewall firewall delete rule",
    'netsh adv fire add rule name="x" dir=in action=allow',
    'netsh firewall add allowedprogram C:\\x.exe x ENABLE',
    'netsh advfirewall firewall set rule name="x" new enable=no',
    "netsh advfirewall set allprofiles firewallpolicy blockinbound",
    "netsh advfirewall set allprofiles firewallpolicy allowoutbound,blockinbound",
    "netsh advfirewall set allprofiles firewallpolicy notconfigured,allowoutbound",
    "netsh advfirewall set allprofiles logging filename C:\\fw.log",
    "netsh advfirewall set allprofiles logging allowedconnections on",
    "netsh advfirewall set currentprofile state on",
    "netsh advfirewall set allprofiles state maybe",
    "netsh advfirewall reset",
    "echo hello",
    "exit 1",
    "exit /b",
    "exit /b 0 >nul 2>&1",
    "setlocal || exit /b 1",
    "@echo on",
    ":: a comment",
    "rem 100% sure",
    "rem a ^",
    "set X=1",
    "netsh advfirewall firewall add rule name=\"x\" dir=in action=allow || exit /b 2",
    "netsh advfirewall firewall add rule name=\"x\" dir=in action=allow >nul",
    "rem " + "x" * (CMD_LINE_LIMIT - 4),
    ADD + " description=" + "x" * CMD_LINE_LIMIT,
]


@pytest.mark.parametrize("line", BAD_LINES, ids=lambda line: line[:60])
def test_malformed_line_raises_naming_the_line(line):
    store = RuleStore()
    with pytest.raises(ScriptError) as caught:
        run_script(script("rem fine", line, "exit /b 0"), store)
    assert caught.value.line == 4
    assert str(caught.value).startswith("line 4: ")


def test_line_length_limit_is_8190_characters():
    run_script(script("rem " + "x" * (CMD_LINE_LIMIT - 5)), RuleStore())
    with pytest.raises(ScriptError, match="line 3"):
        run_script(script("rem " + "x" * (CMD_LINE_LIMIT - 4)), RuleStore())


@pytest.mark.parametrize("text, line", [
    ("@echo off\nsetlocal\r\n", 1),
    ("@echo off\r\nsetlocal\rexit /b 0\r\n", 2),
    ("@echo off\r\nsetlocal\r\nexit /b 0\n", 3),
])
def test_line_endings_must_be_crlf(text, line):
    with pytest.raises(ScriptError) as caught:
        run_script(text, RuleStore())
    assert caught.value.line == line


def test_good_values_are_accepted():
    store = RuleStore()
    good = [
        ADD + " protocol=tcp localport=0-65535,1 remoteport=any",
        ADD + " protocol=UDP remoteip=any localip=10.0.0.0/8",
        ADD + " protocol=6 localport=80",
        ADD + " protocol=any remoteip=::2-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ADD + " remoteip=0.0.0.0-255.255.255.255,127.0.0.1,::2/127,2001:db8::/32,fe80::1",
        ADD + " protocol=47 profile=domain,private enable=no interfacetype=lan edge=deferapp",
        'netsh advfirewall firewall add rule name="x" dir=out action=bypass security=authenc',
    ]
    assert run_script(script(*good, "exit /b 0"), store) == 0
    assert len(store.rules) == len(good)


def test_exit_stops_the_script():
    store = RuleStore()
    assert run_script(script("exit /b 3", ADD), store) == 3 and store.rules == []


# --- the generated scripts ----------------------------------------------------------


def generated(path: Path) -> tuple[Ruleset, str]:
    result = build(str(path), bundled(), ("windows",))
    ((_, text),) = result.files.items()
    return result.ruleset, text


def policy_verdict(ruleset: Ruleset, direction: str, protocol: str, port: int,
                   addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The policy's own meaning: the first matching rule decides, else the default."""
    for rule in ruleset.rules:
        remote = rule.remote(addr.version)
        if (rule.direction.value == direction
                and any(r.lo <= port <= r.hi for r in rule.port_ranges(Protocol(protocol)))
                and (remote is None or any(addr in net for net in remote))):
            return "block" if rule.action is Action.DENY else "allow"
    default = ruleset.defaults.for_direction(Direction(direction))
    return "allow" if default is Action.ALLOW else "block"


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def probes(ruleset: Ruleset) -> tuple[list[int], list[Address]]:
    """Ports and addresses on both sides of every edge of every rule, plus random ones."""
    rng = random.Random(ruleset.name)
    ports = {0, 65535, *(rng.randrange(65536) for _ in range(20))}
    addrs = {ipaddress.IPv4Address(0), ipaddress.IPv4Address(2**32 - 1),
             ipaddress.IPv6Address(0), ipaddress.IPv6Address(2**128 - 1),
             *(ipaddress.IPv4Address(rng.randrange(2**32)) for _ in range(10)),
             *(ipaddress.IPv6Address(rng.randrange(2**128)) for _ in range(10))}
    for rule in ruleset.rules:
        for _, ranges in rule.ports:
            for r in ranges:
                ports |= {p for p in (r.lo - 1, r.lo, r.hi, r.hi + 1) if 0 <= p <= 65535}
        for family in (4, 6):
            for net in rule.remote(family) or ():
                lo, hi = int(net.network_address), int(net.broadcast_address)
                top = 2**32 - 1 if family == 4 else 2**128 - 1
                cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
                addrs |= {cls(a) for a in (lo - 1, lo, hi, hi + 1) if 0 <= a <= top}
    addrs = {a for a in addrs if can_be_remote(a)}
    return sorted(ports), sorted(addrs, key=lambda a: (a.version, int(a)))


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_generated_script_runs_and_gives_the_policy_verdicts(path):
    ruleset, text = generated(path)
    store = RuleStore()
    assert run_script(text, store) == 0
    assert store.rules and {r.name for r in store.rules} == {f"fwgen-{ruleset.name}"}
    ports, addrs = probes(ruleset)
    wrong = [
        (d, proto, port, str(addr), store.verdict(d, proto, port, str(addr)))
        for d in ("in", "out") for proto in ("tcp", "udp") for port in ports for addr in addrs
        if store.verdict(d, proto, port, str(addr)) != policy_verdict(ruleset, d, proto, port, addr)
    ]
    assert wrong == []


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_generated_script_sets_defaults_and_logging(path):
    ruleset, text = generated(path)
    store = RuleStore()
    run_script(text, store)
    inbound = "allowinbound" if ruleset.defaults.inbound is Action.ALLOW else "blockinbound"
    outbound = "allowoutbound" if ruleset.defaults.outbound is Action.ALLOW else "blockoutbound"
    logs_allowed = any(r.logged and r.accepts for r in ruleset.rules)
    logs_dropped = any(r.log and not r.accepts for r in ruleset.rules)
    for settings in store.profiles.values():
        assert (settings.inbound, settings.outbound) == (inbound, outbound)
        assert (settings.log_allowed, settings.log_dropped) == (logs_allowed, logs_dropped)


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_running_twice_leaves_the_same_store_as_once(path):
    _, text = generated(path)
    once, twice = RuleStore(), RuleStore()
    run_script(text, once)
    assert run_script(text, twice) == 0 and run_script(text, twice) == 0
    assert twice.snapshot() == once.snapshot()


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_script_leaves_other_rules_alone(path):
    ruleset, text = generated(path)
    foreign = parse_rule("name=Core-Networking dir=in action=allow protocol=udp localport=68")
    store = RuleStore()
    store.add(foreign)
    assert run_script(text, store) == 0
    assert [r for r in store.rules if r.name == "Core-Networking"] == [foreign]


def renamed(source: Path, name: str, tmp_path: Path) -> Path:
    text = source.read_text(encoding="utf-8")
    old = next(line for line in text.splitlines() if line.startswith("name: "))
    target = tmp_path / f"{name}-from-{source.stem}.yaml"
    target.write_text(text.replace(old, f"name: {name}", 1), encoding="utf-8")
    return target


@pytest.mark.parametrize("old, new", [("edge", "locked-down"), ("locked-down", "edge"),
                                      ("dormant-ports", "edge")])
def test_newer_script_replaces_every_rule_of_the_older_one(old, new, tmp_path):
    """Two versions of one policy (same ``name:``): running the old script and then the
    new one leaves exactly the rules and defaults the new one alone leaves."""
    old_path = renamed(ROOT / "policies" / f"{old}.yaml", "edge", tmp_path)
    new_path = renamed(ROOT / "policies" / f"{new}.yaml", "edge", tmp_path)
    (_, old_text), (_, new_text) = generated(old_path), generated(new_path)
    upgraded, fresh = RuleStore(), RuleStore()
    assert run_script(old_text, upgraded) == 0 and run_script(new_text, upgraded) == 0
    assert run_script(new_text, fresh) == 0
    (upgraded_rules, upgraded_profiles), (fresh_rules, fresh_profiles) = (
        upgraded.snapshot(), fresh.snapshot())
    assert upgraded_rules == fresh_rules
    for name, settings in upgraded_profiles.items():
        expected = fresh_profiles[name]
        assert (settings.inbound, settings.outbound) == (expected.inbound, expected.outbound)
        # fwgen only ever enables profile logging (documented in the script's header),
        # so an upgrade keeps whatever logging the older version switched on.
        assert settings.log_allowed >= expected.log_allowed
        assert settings.log_dropped >= expected.log_dropped


# --- cmd.exe labels and goto, netsh set rule (the two-phase replacement uses them) ---


def test_goto_on_failure_jumps_to_the_label():
    store = RuleStore(failing_add=2)
    text = script(
        ADD + " || goto :failed",
        ADD.replace('"x"', '"y"') + " || goto :failed",
        "exit /b 0",
        ":failed",
        'netsh advfirewall firewall delete rule name="x" >nul 2>&1',
        "exit /b 7",
    )
    assert run_script(text, store) == 7
    assert store.rules == []


def test_goto_needs_a_label():
    with pytest.raises(ScriptError, match="line 3: goto :nowhere: no such label"):
        run_script(script("goto :nowhere"), RuleStore())
    with pytest.raises(ScriptError, match="defined twice"):
        run_script(script(":a", ":a"), RuleStore())


def test_set_rule_renames_every_rule_of_the_name():
    store = store_with("name=a dir=in action=allow", "name=a dir=out action=block", "name=b dir=in action=allow")
    assert run_script(script('netsh advfirewall firewall set rule name="a" new name="c" || exit /b 1'), store) == 0
    assert sorted(r.name for r in store.rules) == ["b", "c", "c"]
    assert run_script(script('netsh advfirewall firewall set rule name="a" new name="c" || exit /b 1'), store) == 1


def test_remote_addresses_no_connection_has_are_refused():
    store = RuleStore()
    for address in ("::1", "::"):
        assert not can_be_remote(ipaddress.ip_address(address))
        with pytest.raises(ValueError, match="never the remote address"):
            store.verdict("in", "tcp", 80, address)
    assert can_be_remote(ipaddress.ip_address("::2")) and can_be_remote(ipaddress.ip_address("127.0.0.1"))


# --- the generated script replaces its rules in two phases ----------------------------


def _rule_set(rules: list[Rule] | tuple[Rule, ...]) -> list[Rule]:
    """The rules without their names (the staging name is a rename away)."""
    return sorted((dataclasses.replace(r, name="") for r in rules), key=repr)


@pytest.mark.parametrize("old, new", [("edge", "locked-down"), ("locked-down", "dormant-ports"),
                                      ("dormant-ports", "edge")])
def test_no_moment_without_a_whole_rule_set(old, new, tmp_path):
    """After every netsh command of the newer script, the store holds all of the older
    rules or all of the newer ones."""
    (_, old_text), (_, new_text) = (generated(renamed(ROOT / "policies" / f"{n}.yaml", "edge", tmp_path))
                                    for n in (old, new))
    store = RuleStore()
    assert run_script(old_text, store) == 0
    before = _rule_set(store.rules)
    fresh = RuleStore()
    assert run_script(new_text, fresh) == 0
    after = _rule_set(fresh.rules)
    seen: list[bool] = []

    def whole(current: RuleStore) -> None:
        rules = _rule_set(current.rules)
        contains = [all(rules.count(r) >= wanted.count(r) for r in wanted) for wanted in (before, after)]
        assert any(contains), "a moment without a whole rule set"
        seen.append(contains[1])

    assert run_script(new_text, store, after_netsh=whole) == 0
    assert seen and seen[-1]
    assert store.snapshot()[0] == fresh.snapshot()[0]


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_a_failed_add_keeps_the_old_rules_and_exits_1(path, tmp_path):
    """Every add in turn fails (as netsh fails a rule Windows refuses): the script exits 1
    and leaves exactly the rules and settings it found, with no staging rule."""
    ruleset, text = generated(path)
    older = generated(renamed(ROOT / "policies" / "edge.yaml", ruleset.name, tmp_path))[1]
    adds = text.count("firewall add rule")
    assert adds >= 1
    for failing in range(1, adds + 1):
        store = RuleStore()
        assert run_script(older, store) == 0
        found = store.snapshot()
        store.failing_add, store.adds = failing, 0
        assert run_script(text, store) == 1
        assert store.snapshot() == found, f"add {failing} failed"


# --- windows: {exclusive: true} -------------------------------------------------------

FOREIGN = [  # allow rules other software keeps (File and Printer Sharing, WinRM, a user's click)
    "name=FPS-SMB dir=in action=allow protocol=tcp localport=445",
    "name=WinRM dir=in action=allow protocol=tcp localport=5985",
    "name=App dir=in action=allow protocol=udp localport=any",
    "name=App-out dir=out action=allow protocol=tcp remoteport=any",
]


def exclusive(path: Path, tmp_path: Path) -> Path:
    text = path.read_text(encoding="utf-8") + "windows:\n  exclusive: true\n"
    target = tmp_path / path.name
    target.write_text(text, encoding="utf-8")
    return target


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_exclusive_verdicts_hold_beside_other_allow_rules(path, tmp_path):
    """Other software's allow rules open what the deny default leaves to the profile;
    with exclusive: true the policy's verdicts hold against them, and without them too."""
    ruleset, plain = generated(path)
    _, strict = generated(exclusive(path, tmp_path))
    ports, addrs = probes(ruleset)
    ports = sorted(set(ports) | {445, 5985})
    for text, with_foreign, must_hold in ((plain, False, True), (strict, False, True), (strict, True, True),
                                          (plain, True, False)):
        store = store_with(*(FOREIGN if with_foreign else []))
        assert run_script(text, store) == 0
        wrong = [
            (d, proto, port, str(addr))
            for d in ("in", "out") for proto in ("tcp", "udp") for port in ports for addr in addrs
            if store.verdict(d, proto, port, str(addr)) != policy_verdict(ruleset, d, proto, port, addr)
        ]
        if must_hold:
            assert wrong == [], (with_foreign, wrong[:5])
        elif Action.DENY in (ruleset.defaults.inbound, ruleset.defaults.outbound):
            assert wrong, "other software's allow rules were expected to override the deny default"
