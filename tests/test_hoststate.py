"""fwgen.hoststate's plans, without a kernel (tests/kernel/test_sharing.py and
test_apply.py load them into one): what iptables-restore --noflush text turns the host's
fwgen state into the wanted one, and how counters follow a rule."""

from __future__ import annotations

from fwgen import hoststate

HOST = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:f2b-sshd - [0:0]
:fwgen-edge-in - [0:0]
:fwgen-edge-rule-4 - [0:0]
[0:0] -A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
[5:300] -A INPUT -j fwgen-edge-in
[0:0] -A INPUT -s 10.0.0.1/32 -j DROP
[0:0] -A INPUT -j fwgen-edge-in
[7:420] -A fwgen-edge-in -p tcp -m comment --comment "watch (edge.yaml:25) monitor" -j ACCEPT
[0:0] -A fwgen-edge-rule-4 -j DROP
COMMIT
"""
FILE = """# fwgen iptables mode: chains
*filter
:fwgen-edge-in - [0:0]
:fwgen-edge-out - [0:0]
-A fwgen-edge-in -p tcp -m comment --comment "watch (edge.yaml:26) monitor" -j ACCEPT
-A fwgen-edge-out -j ACCEPT
-A INPUT -j fwgen-edge-in
-A OUTPUT -j fwgen-edge-out
COMMIT
"""


def test_the_plan_keeps_one_jump_adds_the_missing_and_deletes_the_stale() -> None:
    plan = hoststate.sharing_text(hoststate.parse(FILE), hoststate.parse(HOST)).splitlines()
    assert plan == [
        "*filter",
        ":fwgen-edge-in - [0:0]",
        ":fwgen-edge-out - [0:0]",
        ":fwgen-edge-rule-4 - [0:0]",  # stale: flushed, then deleted
        # the counters follow the rule, though an edit above moved its line (25 -> 26)
        '[7:420] -A fwgen-edge-in -p tcp -m comment --comment "watch (edge.yaml:26) monitor" -j ACCEPT',
        "[0:0] -A fwgen-edge-out -j ACCEPT",
        "-D INPUT -j fwgen-edge-in",  # the second copy; the first stays where it is
        "-A OUTPUT -j fwgen-edge-out",
        "-X fwgen-edge-rule-4",
        "COMMIT",
    ]
    assert hoststate.is_chains_mode(FILE) and not hoststate.is_chains_mode(HOST)


def test_a_saved_state_puts_its_jumps_back_where_they_were() -> None:
    now = hoststate.parse(HOST.replace("[5:300] -A INPUT -j fwgen-edge-in\n", "").replace(
        "[0:0] -A INPUT -j fwgen-edge-in\n", "[0:0] -A INPUT -j fwgen-web-in\n"))
    saved = hoststate.saved_state(HOST.replace("[0:0] -A INPUT -j fwgen-edge-in\n", ""))
    plan = hoststate.sharing_text(saved, now, carry=False).splitlines()
    assert "-D INPUT -j fwgen-web-in" in plan
    assert "-I INPUT 2 -j fwgen-edge-in" in plan  # after fail2ban's jump, before the DROP
    assert '[7:420] -A fwgen-edge-in -p tcp -m comment --comment "watch (edge.yaml:25) monitor" -j ACCEPT' in plan


def test_nothing_of_fwgen_anywhere_is_no_plan() -> None:
    assert hoststate.sharing_text({}, hoststate.parse("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\nCOMMIT\n")) == ""


def test_nft_counters_are_written_into_the_declarations() -> None:
    text = "table inet edge {\n\tcounter rule_a {\n\t}\n\tcounter rule_b {\n\t}\n}\n"
    assert hoststate.with_nft_counters(text, {"rule_a": (3, 180)}) == (
        "table inet edge {\n\tcounter rule_a {\n\t\tpackets 3 bytes 180\n\t}\n\tcounter rule_b {\n\t}\n}\n")
