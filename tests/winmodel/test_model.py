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


# --- protocols, ICMP types and codes, localip, profiles: every dimension of a verdict ---

V4, V6 = "192.0.2.1", "2001:db8::1"


@pytest.mark.parametrize("value, protocol, icmp", [
    ("any", None, None),
    ("tcp", 6, None),
    ("UDP", 17, None),
    ("0", 0, None),
    ("47", 47, None),
    ("255", 255, None),
    ("icmpv4", 1, None),
    ("ICMPv4", 1, None),
    ("1", 1, None),
    ("icmpv4:any,any", 1, None),  # every message, the same rule as plain icmpv4
    ("icmpv4:8,any", 1, (8, None)),
    ("icmpv4:3,4", 1, (3, 4)),
    ("icmpv4:0,0", 1, (0, 0)),
    ("icmpv4:255,255", 1, (255, 255)),
    ("icmpv6", 58, None),
    ("58", 58, None),
    ("icmpv6:any,any", 58, None),
    ("icmpv6:128,0", 58, (128, 0)),
    ("ICMPV6:135,ANY", 58, (135, None)),
    ('"icmpv6:2,0"', 58, (2, 0)),
])
def test_protocol_forms_are_parsed(value, protocol, icmp):
    rule = parse_rule(f"name=x dir=in action=allow protocol={value}")
    assert (rule.protocol, rule.icmp) == (protocol, icmp)


@pytest.mark.parametrize("forms", [("icmpv4", "1", "icmpv4:any,any", "ICMPv4:ANY,ANY"),
                                   ("icmpv6", "58", "icmpv6:any,any")])
def test_every_message_forms_are_one_rule(forms):
    rules = {parse_rule(f"name=x dir=in action=block protocol={form}") for form in forms}
    assert len(rules) == 1
    (rule,) = rules
    assert rule != parse_rule(f"name=x dir=in action=block protocol={forms[0]}:8,any")


ICMP_STORE = (
    "name=icmp dir=in action=allow protocol=icmpv4",
    "name=no-echo dir=in action=block protocol=icmpv4:8,any",
    "name=no-host-unreachable dir=in action=block protocol=icmpv4:3,1",
    "name=off dir=in action=block protocol=icmpv4:0,any enable=no",
    "name=echo6 dir=in action=allow protocol=icmpv6:128,0",
    "name=bypass dir=in action=bypass protocol=icmpv4:8,0 security=authenticate "
    "rmtcomputergrp=D:(A;;CC;;;S-1-5-21-1-2-3-1000)",
)


@pytest.mark.parametrize("protocol, icmp, authenticated, expected", [
    ("icmpv4", (8, 0), False, "block"),  # the block icmpv4:8,any beats the allow icmpv4
    ("icmpv4", (8, 255), False, "block"),  # any code of type 8
    (1, (8, 1), False, "block"),
    ("icmpv4", (0, 0), False, "allow"),  # type 0 is unaffected (and the disabled block never matches)
    ("icmpv4", (3, 1), False, "block"),  # code 1 of type 3
    ("icmpv4", (3, 0), False, "allow"),
    ("icmpv4", (3, 2), False, "allow"),
    ("icmpv4", (1, 3), False, "allow"),
    ("icmpv4", (8, 0), True, "allow"),  # the bypass for 8,0 beats the block
    ("icmpv4", (8, 3), True, "block"),  # but not for another code
    ("icmpv6", (128, 0), False, "allow"),
    (58, (128, 1), False, "block"),  # the default: code 1 is not 128,0
    ("ICMPv6", (129, 0), False, "block"),
    ("icmpv6", (8, 0), False, "block"),  # the icmpv4 rules are not icmpv6's
])
def test_icmp_types_and_codes(protocol, icmp, authenticated, expected):
    store = store_with(*ICMP_STORE)
    address = V6 if str(protocol).lower() in ("icmpv6", "58") else V4
    assert store.verdict("in", protocol, None, address, icmp=icmp, authenticated=authenticated) == expected


@pytest.mark.parametrize("rule, policy, protocol, remote, expected", [
    ("action=allow protocol=icmpv4", "blockinbound", "icmpv4", V4, "allow"),
    ("action=allow protocol=icmpv4", "blockinbound", 1, V6, "block"),  # never an IPv6 connection
    ("action=block protocol=icmpv4", "allowinbound", 1, V4, "block"),
    ("action=block protocol=icmpv4", "allowinbound", 1, V6, "allow"),
    ("action=block protocol=1", "allowinbound", "icmpv6", V6, "allow"),  # nor ICMPv6
    ("action=allow protocol=icmpv6", "blockinbound", "icmpv6", V6, "allow"),
    ("action=allow protocol=icmpv6", "blockinbound", 58, V4, "block"),  # never an IPv4 connection
    ("action=block protocol=icmpv6:128,any", "allowinbound", 58, V6, "block"),
    ("action=block protocol=icmpv6:128,any", "allowinbound", 58, V4, "allow"),
    ("action=block protocol=icmpv4 remoteip=192.0.2.0/24,2001:db8::/32", "allowinbound", 1, V4, "block"),
    ("action=block protocol=icmpv4 remoteip=192.0.2.0/24,2001:db8::/32", "allowinbound", 1, V6, "allow"),
    ("action=block remoteip=2001:db8::/32", "allowinbound", 1, V6, "block"),  # any protocol: the address decides
    ("action=block remoteip=2001:db8::/32", "allowinbound", 1, V4, "allow"),
])
def test_icmp_of_one_family_never_matches_the_other(rule, policy, protocol, remote, expected):
    store = store_with(f"name=x dir=in {rule}", policy=f"{policy},allowoutbound")
    assert store.verdict("in", protocol, None, remote, icmp=(128, 0)) == expected


@pytest.mark.parametrize("direction, protocol, port, remote, expected", [
    ("in", 47, None, V4, "block"),
    ("in", 47, None, V6, "block"),  # a protocol number other than ICMP's has no family
    ("in", "tcp", 47, V4, "allow"),  # the block for protocol=47 does not touch tcp
    ("in", "udp", 47, V4, "allow"),
    ("in", 48, None, V4, "allow"),
    ("in", 0, None, V4, "allow"),
    ("out", 47, None, V4, "allow"),
    ("out", 50, None, V4, "block"),
    ("in", 50, None, V4, "allow"),
    ("in", "tcp", 1723, V4, "block"),  # protocol=6 is tcp
    ("in", 6, 1723, V4, "block"),
    ("in", 6, 1724, V4, "allow"),
    ("in", "udp", 1723, V4, "allow"),
])
def test_protocol_numbers(direction, protocol, port, remote, expected):
    store = store_with("name=gre dir=in action=block protocol=47",
                       "name=esp dir=out action=block protocol=50",
                       "name=pptp dir=in action=block protocol=6 localport=1723",
                       policy="allowinbound,allowoutbound")
    assert store.verdict(direction, protocol, port, remote) == expected


@pytest.mark.parametrize("direction, protocol, port, remote, local, expected", [
    ("in", "tcp", 443, V4, "10.9.0.2", "allow"),
    ("in", "tcp", 443, V4, "10.9.0.3", "block"),
    ("in", "tcp", 443, V4, "10.9.0.1", "block"),
    ("in", "tcp", 444, V4, None, "block"),  # the port decides it: no local address needed
    ("in", "tcp", 443, V6, None, "block"),  # an IPv6 connection's local address is IPv6: not 10.9.0.2
    ("in", "tcp", 443, V6, "2001:db8::2", "block"),
    ("in", "udp", 53, V4, "10.9.0.0", "allow"),
    ("in", "udp", 53, V4, "10.9.0.3", "allow"),
    ("in", "udp", 53, V4, "10.9.0.4", "block"),
    ("in", "udp", 53, V6, "2001:db8::10", "allow"),
    ("in", "udp", 53, V6, "2001:db8::20", "allow"),
    ("in", "udp", 53, V6, "2001:db8::21", "block"),
    ("out", "tcp", 25, V4, "10.9.0.2", "allow"),
    ("out", "tcp", 25, V4, "10.9.0.3", "block"),
    ("in", "icmpv4", None, V4, "10.9.0.2", "allow"),
    ("in", "icmpv4", None, V4, "10.9.0.9", "block"),
])
def test_localip_matches_the_hosts_own_address(direction, protocol, port, remote, local, expected):
    store = store_with(
        "name=svc dir=in action=allow protocol=tcp localport=443 localip=10.9.0.2",
        "name=dns dir=in action=allow protocol=udp localport=53 localip=10.9.0.0/30,2001:db8::10-2001:db8::20",
        "name=smtp dir=out action=allow protocol=tcp remoteport=25 localip=10.9.0.2",
        "name=ping dir=in action=allow protocol=icmpv4:8,any localip=10.9.0.2",
        policy="blockinbound,blockoutbound")
    icmp = (8, 0) if protocol == "icmpv4" else None
    assert store.verdict(direction, protocol, port, remote, local_addr=local, icmp=icmp) == expected


@pytest.mark.parametrize("action, defaults, expected", [
    ("allow", {"domain": "blockinbound", "private": "blockinbound", "public": "blockinbound"},
     {"domain": "allow", "private": "allow", "public": "block"}),
    ("block", {"domain": "allowinbound", "private": "allowinbound", "public": "allowinbound"},
     {"domain": "block", "private": "block", "public": "allow"}),
    ("allow", {"domain": "blockinbound", "private": "allowinbound", "public": "allowinbound"},
     {"domain": "allow", "private": "allow", "public": "allow"}),
    ("block", {"domain": "allowinbound", "private": "blockinbound", "public": "blockinbound"},
     {"domain": "block", "private": "block", "public": "block"}),
    ("allow", {"domain": "allowinbound", "private": "allowinbound", "public": "blockinbound"},
     {"domain": "allow", "private": "allow", "public": "block"}),  # public's own default, not theirs
])
def test_rules_of_other_profiles_decide_nothing(action, defaults, expected):
    store = store_with(f"name=p dir=in action={action} protocol=tcp localport=80 profile=domain,private",
                       f"name=i dir=in action={action} protocol=icmpv4 profile=domain,private")
    for name, inbound in defaults.items():
        store.profiles[name].inbound = inbound
    assert {name: store.verdict("in", "tcp", 80, V4, name) for name in defaults} == expected
    assert {name: store.verdict("in", "icmpv4", None, V4, name, icmp=(8, 0)) for name in defaults} == expected
    unmatched = store.verdict("in", "tcp", 81, V4, "domain")  # no rule: the domain profile's default
    assert unmatched == ("allow" if defaults["domain"] == "allowinbound" else "block")


@pytest.mark.parametrize("rule, query, kwargs", [
    ("dir=in action=allow protocol=tcp localport=443 localip=10.9.0.2", ("in", "tcp", 443, V4), {}),
    ("dir=in action=block protocol=icmpv4 localip=10.9.0.0/24,2001:db8::/32", ("in", "icmpv4", None, V4),
     {"icmp": (8, 0)}),
    ("dir=out action=block localip=2001:db8::/32", ("out", 47, None, V6), {}),
    ("dir=in action=block protocol=tcp localport=80 remoteport=99", ("in", "tcp", 80, V4), {}),
    ("dir=out action=block protocol=udp localport=5353 remoteport=53", ("out", "udp", 53, V4), {}),
    ("dir=in action=allow interfacetype=wireless", ("in", 47, None, V4), {}),
    ("dir=in action=allow protocol=icmpv6 interfacetype=ras", ("in", "icmpv6", None, V6), {"icmp": (135, 0)}),
    ("dir=out action=block protocol=tcp interfacetype=lan", ("out", "tcp", 80, V4), {"local_addr": "10.0.0.1"}),
])
def test_a_query_missing_a_field_a_rule_restricts_raises(rule, query, kwargs):
    store = store_with(f"name=x {rule}")
    with pytest.raises(ValueError, match="cannot decide"):
        store.verdict(*query, **kwargs)


@pytest.mark.parametrize("query, kwargs", [
    (("in", "tcp", None, V4), {}),  # tcp and udp have a port
    (("in", "udp", 65536, V4), {}),
    (("in", "tcp", True, V4), {}),
    (("in", "tcp", 80, V4), {"icmp": (8, 0)}),  # only ICMP has types
    (("in", "icmpv4", None, V4), {}),  # ICMP has a type and a code
    (("in", 1, None, V4), {"icmp": (8,)}),
    (("in", "icmpv4", None, V4), {"icmp": (256, 0)}),
    (("in", "icmpv6", None, V6), {"icmp": (128, -1)}),
    (("in", "icmpv4", 0, V4), {"icmp": (8, 0)}),  # only tcp and udp have ports
    (("in", 47, 80, V4), {}),
    (("in", 47, None, V4), {"icmp": (8, 0)}),
    (("in", "gre", None, V4), {}),
    (("in", "47", None, V4), {}),
    (("in", 256, None, V4), {}),
    (("in", -1, None, V4), {}),
    (("in", "any", None, V4), {}),
    (("in", "tcp", 80, V4), {"local_addr": V6}),  # one connection, one IP version
    (("in", "tcp", 80, V6), {"local_addr": "::1"}),
    (("in", "tcp", 80, V6), {"local_addr": "::"}),
    (("in", "tcp", 80, V4), {"local_addr": "10.0.0.256"}),
    (("in", "tcp", 80, "::1"), {}),
    (("sideways", "tcp", 80, V4), {}),
    (("in", "tcp", 80, V4, "work"), {}),
])
@pytest.mark.parametrize("state", ["on", "off"])
def test_malformed_queries_raise(query, kwargs, state):
    store = RuleStore()
    for settings in store.profiles.values():
        settings.state = state
    with pytest.raises(ValueError):
        store.verdict(*query, **kwargs)


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
    ADD + " protocol=0006",
    ADD + " protocol=icmp",
    ADD + " protocol=icmpv5:8,0",
    ADD + " protocol=icmpv4:256,0",
    ADD + " protocol=icmpv4:8,256",
    ADD + " protocol=icmpv4:8",
    ADD + " protocol=icmpv4:8,",
    ADD + " protocol=icmpv4:,0",
    ADD + " protocol=icmpv4:,",
    ADD + " protocol=icmpv4:",
    ADD + " protocol=icmpv4:any",
    ADD + " protocol=icmpv4:any,0",  # FW_ICMP_TYPE_CODE has a type and one or all of its codes
    ADD + " protocol=icmpv4:8,0,3,0",
    ADD + " protocol=icmpv4:8:0",
    ADD + " protocol=icmpv4:-1,0",
    ADD + " protocol=icmpv4:echo,0",
    ADD + " protocol=icmpv4:8,*",
    ADD + " protocol=icmpv6:1000,0",
    ADD + " protocol=tcp:80,0",
    ADD + " protocol=icmpv4 localport=80",
    ADD + " protocol=icmpv4:8,0 remoteport=80",
    ADD + " protocol=icmpv6 localport=80",
    ADD + " protocol=1 localport=80",
    ADD + " protocol=47 remoteport=80",
    # rules no connection can match: ICMP of one family, addresses only of the other
    ADD + " protocol=icmpv4 remoteip=2001:db8::1",
    ADD + " protocol=icmpv4:8,any localip=2001:db8::/32",
    ADD + " protocol=icmpv6 remoteip=192.0.2.0/24",
    ADD + " protocol=58 localip=10.0.0.1",
    ADD + " localip=10.0.0.1 remoteip=2001:db8::1",
    # [MS-FASP] FW_RULE_STATUS_SEMANTIC_ERROR_LADDR_INTF
    ADD + " localip=10.0.0.1 interfacetype=lan",
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
# localip= is validated by the same [MS-FASP] rules as remoteip=
BAD_LINES += [line.replace(" remoteip=", " localip=") for line in BAD_LINES
              if " remoteip=" in line and " localip=" not in line and "protocol=icmp" not in line]


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
        ADD + " protocol=icmpv4:8,any remoteip=192.0.2.0/24,2001:db8::/32 localip=10.0.0.1",
        ADD + " protocol=ICMPv6:any,any localip=2001:db8::1 interfacetype=any",
        ADD + " protocol=icmpv6:135,0 localip=::2-2001:db8::ffff remoteip=fe80::/10",
        ADD + " protocol=1 profile=public",
        ADD + " protocol=0 localip=10.0.0.0/8,2001:db8::/32 remoteip=2001:db8:1::/48",
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
    assert sorted(result.files) == [f"windows/{result.ruleset.name}-remove.cmd", f"windows/{result.ruleset.name}.cmd"]
    return result.ruleset, result.files[f"windows/{result.ruleset.name}.cmd"]


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
