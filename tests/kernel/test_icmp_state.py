"""Which ICMP and ICMPv6 messages the rules of a policy decide, proven with real packets.

fwgen's rules (and explain's verdicts) are about opening a connection: every output
drops conntrack's INVALID packets and accepts ESTABLISHED and RELATED ones before any
rule (docs/policy-format.md, "Always, before any rule"). For ICMP that splits the types:

- conntrack tracks only the queries as NEW: echo, timestamp, information and address
  mask requests (8, 13, 15, 17); for ICMPv6 echo and node information queries (128,
  139). Only these are decided by the rules, and the differential harness probes
  exactly these (``harness.ICMP_NEW``); ``test_conntrack_classifies_icmp_types`` reads
  conntrack's verdict on each type back from the kernel;
- every other type is INVALID when it arrives unsolicited (replies, errors reporting on
  no connection, router messages), or untracked (ICMPv6 neighbour discovery and
  multicast listener messages, which the always-rules accept with their link-local
  hop limit): ``test_unsolicited_replies_and_errors_are_dropped_whatever_the_rules_say``
  loads a policy that allows every inbound ICMP and ICMPv6 message by the rules and
  shows that an unsolicited echo reply, destination unreachable, time exceeded, ... is
  still dropped on both targets, while each query type is delivered.

Each packet has its positive control: with no rules loaded it is delivered.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fwgen.build import build
from fwgen.explain import Explainer
from fwgen.registry import bundled
from tests.differential.harness import ICMP_NEW
from tests.kernel.netns import Namespace, RawReceiver, connect, load_iptables, load_nft, raw_send

HOST = {4: "198.51.100.1", 6: "2001:db8:f::1"}
PEER = {4: "198.51.100.2", 6: "2001:db8:f::2"}
PROTOCOL = {4: 1, 6: 58}
STATES = ("new", "established", "related", "invalid", "untracked")
# Types conntrack does not track as new, by what they are; sent unsolicited.
UNSOLICITED = {
    4: {0: "echo reply", 3: "destination unreachable", 4: "source quench", 5: "redirect", 9: "router advertisement",
        10: "router solicitation", 11: "time exceeded", 12: "parameter problem", 14: "timestamp reply",
        16: "information reply", 18: "address mask reply"},
    6: {1: "destination unreachable", 2: "packet too big", 3: "time exceeded", 4: "parameter problem",
        129: "echo reply", 140: "node information reply", 141: "inverse neighbour discovery solicitation",
        144: "home agent address discovery request", 200: "private experimentation"},
}
UNTRACKED_V6 = {130: "multicast listener query", 133: "router solicitation", 135: "neighbour solicitation"}
OPEN = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
PERMISSIVE = """\
version: 1
name: icmpall
defaults: {inbound: allow, outbound: allow}
rules:
  - name: every-icmp
    action: allow
    protocol: icmp
  - name: every-icmpv6
    action: allow
    protocol: icmpv6
  - name: everything
    action: allow
    protocol: all
"""


def _pair() -> tuple[Namespace, Namespace]:
    host, peer = Namespace().__enter__(), Namespace().__enter__()
    try:
        connect(host, peer, [f"{HOST[4]}/24", f"{HOST[6]}/64"], [f"{PEER[4]}/24", f"{PEER[6]}/64"])
    except BaseException:
        host.close()
        peer.close()
        raise
    return host, peer


def _delivered(host: Namespace, peer: Namespace, family: int, types: list[int], hops: int = 64) -> set[int]:
    """The types of those ICMP(v6) messages from the peer that reach a raw socket on the host."""
    packets = [{"family": family, "proto": PROTOCOL[family], "src": PEER[family], "dst": HOST[family],
                "icmp": [t, 0], "ident": 0x4600 + t, "hops": hops, "payload": f"fwgen-state-{t};".ljust(20)}
               for t in types]
    with RawReceiver(host, family, [PROTOCOL[family]]) as receiver:
        raw_send(peer, packets)
    found = set()
    for record in receiver.stop():
        match = re.search(r"fwgen-state-(\d+);", record["payload"])
        if match and record["icmp"] and record["icmp"][0] == int(match[1]) and record["src"] == PEER[family]:
            found.add(int(match[1]))
    return found


def test_conntrack_classifies_icmp_types() -> None:
    """A table that only counts, per type and conntrack state, what arrives: the query
    types are NEW, everything else INVALID (or, for neighbour discovery and multicast
    listener messages, untracked)."""
    types = {4: sorted({*ICMP_NEW[4], *UNSOLICITED[4]}), 6: sorted({*ICMP_NEW[6], *UNSOLICITED[6], *UNTRACKED_V6})}
    rules = [f'meta l4proto {PROTOCOL[f]} {"icmp" if f == 4 else "icmpv6"} type {t} ct state {state} '
             f'counter comment "{f} {t} {state}"' for f in (4, 6) for t in types[f] for state in STATES]
    table = "table inet probe {\n chain input { type filter hook input priority 0;\n" + "\n".join(rules) + "\n}\n}\n"
    host, peer = _pair()
    try:
        host.run(["nft", "-f", "-"], input=table)
        for family in (4, 6):
            assert _delivered(host, peer, family, types[family], hops=255 if family == 6 else 64) == set(types[family])
        listing = host.run(["nft", "list", "table", "inet", "probe"]).stdout
    finally:
        host.close()
        peer.close()
    seen: dict[tuple[int, int], list[str]] = {}
    for m in re.finditer(r'packets (\d+) bytes \d+ comment "(\d) (\d+) (\w+)"', listing):
        if m[1] != "0":
            seen.setdefault((int(m[2]), int(m[3])), []).append(m[4])
    for family in (4, 6):
        for t in types[family]:
            expected = "new" if t in ICMP_NEW[family] else "untracked" if family == 6 and t in UNTRACKED_V6 \
                else "invalid"
            assert seen.get((family, t)) == [expected], (family, t, seen.get((family, t)))


@pytest.mark.parametrize("target", ["iptables", "nftables"])
def test_unsolicited_replies_and_errors_are_dropped_whatever_the_rules_say(tmp_path: Path, target: str) -> None:
    path = tmp_path / "icmpall.yaml"
    path.write_text(PERMISSIVE, encoding="utf-8")
    files = build(str(path), bundled()).files
    explainer = Explainer.from_file(str(path), bundled())
    host, peer = _pair()
    try:
        for loaded in (False, True):
            load_iptables(host, OPEN, OPEN)
            host.run(["nft", "flush", "ruleset"])  # our own throwaway namespace only
            if loaded and target == "iptables":
                load_iptables(host, files["iptables/rules.v4"], files["iptables/rules.v6"])
            elif loaded:
                load_nft(host, files["nftables/icmpall.nft"])
            for family in (4, 6):
                unsolicited = sorted(UNSOLICITED[family])
                queries = sorted(ICMP_NEW[family])
                for t in unsolicited + queries:  # the rules allow every one of them
                    verdict = explainer.verdict("in", "icmp" if family == 4 else "icmpv6", None, PEER[family],
                                                local=HOST[family], icmp=(t, 0))
                    assert (verdict.action, verdict.rule) == ("allow", "every-icmp" + ("v6" if family == 6 else ""))
                got = _delivered(host, peer, family, unsolicited + queries)
                if not loaded:  # the positive control: every one arrives without rules
                    assert got == set(unsolicited + queries), (family, got)
                else:  # the queries are decided by the rules; the rest never reach them
                    assert got == set(queries), (family, sorted(got), [UNSOLICITED[family][t] for t in got
                                                                        if t in UNSOLICITED[family]])
    finally:
        host.close()
        peer.close()
