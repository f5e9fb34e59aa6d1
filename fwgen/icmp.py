"""ICMP and ICMPv6 message types as a policy names them (``icmp: [echo-request, 3/4]``).

A name is one that both nft and iptables accept for the type, so a reader of either
output recognizes it (tests/kernel/test_icmp_names.py asks both tools); the outputs
themselves always carry the numbers. An entry is a name, a type number ``N`` (every
code of it) or ``N/CODE``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

ICMPV4_NAMES = {
    "echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
    "echo-request": 8, "router-advertisement": 9, "router-solicitation": 10, "time-exceeded": 11,
    "parameter-problem": 12, "timestamp-request": 13, "timestamp-reply": 14,
    "address-mask-request": 17, "address-mask-reply": 18,
}
ICMPV6_NAMES = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3, "parameter-problem": 4,
    "echo-request": 128, "echo-reply": 129,
}
NAMES = {4: ICMPV4_NAMES, 6: ICMPV6_NAMES}

# Names only one of the tools reads (iptables' aliases and type/code names, nft's types),
# kept to answer a policy that uses one with the entry to write instead. Each tool's
# meaning of each is checked against the tool itself (tests/kernel/test_icmp_names.py).
TOOL_NAMES: dict[int, dict[str, tuple[str, str]]] = {  # family -> name -> (tool, entry)
    4: {
        "pong": ("iptables", "0"), "ping": ("iptables", "8"), "ttl-exceeded": ("iptables", "11"),
        "network-unreachable": ("iptables", "3/0"), "host-unreachable": ("iptables", "3/1"),
        "protocol-unreachable": ("iptables", "3/2"), "port-unreachable": ("iptables", "3/3"),
        "fragmentation-needed": ("iptables", "3/4"), "source-route-failed": ("iptables", "3/5"),
        "network-unknown": ("iptables", "3/6"), "host-unknown": ("iptables", "3/7"),
        "network-prohibited": ("iptables", "3/9"), "host-prohibited": ("iptables", "3/10"),
        "TOS-network-unreachable": ("iptables", "3/11"), "TOS-host-unreachable": ("iptables", "3/12"),
        "communication-prohibited": ("iptables", "3/13"), "host-precedence-violation": ("iptables", "3/14"),
        "precedence-cutoff": ("iptables", "3/15"), "network-redirect": ("iptables", "5/0"),
        "host-redirect": ("iptables", "5/1"), "TOS-network-redirect": ("iptables", "5/2"),
        "TOS-host-redirect": ("iptables", "5/3"), "ttl-zero-during-transit": ("iptables", "11/0"),
        "ttl-zero-during-reassembly": ("iptables", "11/1"), "ip-header-bad": ("iptables", "12/0"),
        "required-option-missing": ("iptables", "12/1"),
        "info-request": ("nft", "15"), "info-reply": ("nft", "16"),
    },
    6: {
        "no-route": ("ip6tables", "1/0"), "communication-prohibited": ("ip6tables", "1/1"),
        "beyond-scope": ("ip6tables", "1/2"), "address-unreachable": ("ip6tables", "1/3"),
        "port-unreachable": ("ip6tables", "1/4"), "failed-policy": ("ip6tables", "1/5"),
        "reject-route": ("ip6tables", "1/6"), "ttl-exceeded": ("ip6tables", "3"),
        "ttl-zero-during-transit": ("ip6tables", "3/0"), "ttl-zero-during-reassembly": ("ip6tables", "3/1"),
        "bad-header": ("ip6tables", "4/0"), "unknown-header-type": ("ip6tables", "4/1"),
        "unknown-option": ("ip6tables", "4/2"), "ping": ("ip6tables", "128"), "pong": ("ip6tables", "129"),
        "router-solicitation": ("ip6tables", "133"), "router-advertisement": ("ip6tables", "134"),
        "neighbour-solicitation": ("ip6tables", "135"), "neighbor-solicitation": ("ip6tables", "135"),
        "neighbour-advertisement": ("ip6tables", "136"), "neighbor-advertisement": ("ip6tables", "136"),
        "redirect": ("ip6tables", "137"),
        "mld-listener-query": ("nft", "130"), "mld-listener-report": ("nft", "131"),
        "mld-listener-done": ("nft", "132"), "mld-listener-reduction": ("nft", "132"),
        "nd-router-solicit": ("nft", "133"), "nd-router-advert": ("nft", "134"),
        "nd-neighbor-solicit": ("nft", "135"), "nd-neighbor-advert": ("nft", "136"),
        "nd-redirect": ("nft", "137"), "router-renumbering": ("nft", "138"),
        "ind-neighbor-solicit": ("nft", "141"), "ind-neighbor-advert": ("nft", "142"),
        "mld2-listener-report": ("nft", "143"),
    },
}
_NUMBERS = re.compile(r"([0-9]{1,3})(?:/([0-9]{1,3}))?")


# What Linux connection tracking makes of each ICMP type, and so whether a rule of the
# Linux outputs ever sees it (their rules see only NEW packets; PLATFORMS.md, proven in
# tests/differential): conntrack starts a connection only with a request.
REQUESTS = {4: frozenset({8, 13, 15, 17}), 6: frozenset({128, 139})}
REPLIES = {4: frozenset({0, 14, 16, 18}), 6: frozenset({129, 140})}  # established, or invalid
ERRORS = {4: frozenset({3, 4, 5, 11, 12}), 6: frozenset(range(0, 128))}  # related, or invalid


def linux_fate(family: int, icmp_type: int) -> str | None:
    """How the Linux outputs decide an ICMP type before any rule, in words; None for a
    request, which the rules decide."""
    if icmp_type in REQUESTS[family]:
        return None
    if icmp_type in REPLIES[family]:
        return "accepted when it answers the host's own request (established), dropped otherwise (invalid)"
    if icmp_type in ERRORS[family]:
        return "accepted when it is about a connection of the host (related), dropped otherwise (invalid)"
    if family == 6 and icmp_type in CONTROL_V6:
        return (f"accepted before any rule with hop limit {CONTROL_V6[icmp_type]}, as neighbour discovery and "
                "multicast listener discovery require")
    return "dropped as invalid: connection tracking starts no connection with it"


# RFC 4890 section 4.4.1, the link-local ICMPv6 control messages a host must not drop,
# as (type, hop limit, what): accepted when they carry the hop limit their link scope
# gives them, and BEFORE conntrack's INVALID drop, since conntrack marks 141, 142, 148,
# 149 and 153 INVALID. Echo (128/129) is deliberately absent: the policy defaults decide
# it, as they do for ICMPv4 echo. The error messages (1 destination unreachable, 2 packet
# too big, 3 time exceeded, 4 parameter problem) pass as RELATED to the connection they
# report on, by the established/related rule; an unsolicited one is INVALID and dropped.
ICMPV6_CONTROL: tuple[tuple[int, int, str], ...] = (
    (133, 255, "router solicitation"),
    (134, 255, "router advertisement"),
    (135, 255, "neighbour solicitation"),
    (136, 255, "neighbour advertisement"),
    (141, 255, "inverse neighbour discovery solicitation"),
    (142, 255, "inverse neighbour discovery advertisement"),
    (130, 1, "multicast listener query"),
    (131, 1, "multicast listener report"),
    (132, 1, "multicast listener done"),
    (143, 1, "multicast listener report v2"),
    (148, 255, "certificate path solicitation"),
    (149, 255, "certificate path advertisement"),
    (151, 1, "multicast router advertisement"),
    (152, 1, "multicast router solicitation"),
    (153, 1, "multicast router termination"),
)
CONTROL_V6 = {icmp_type: hoplimit for icmp_type, hoplimit, _ in ICMPV6_CONTROL}


class IcmpType(NamedTuple):
    type: int
    code: int | None  # None: every code

    def span(self) -> tuple[int, int]:
        """The (type << 8 | code) interval this entry covers."""
        lo = self.type << 8 | (self.code or 0)
        return lo, (lo if self.code is not None else self.type << 8 | 0xFF)

    def __str__(self) -> str:
        return str(self.type) if self.code is None else f"{self.type}/{self.code}"


def parse_entry(text: str, family: int) -> IcmpType | None:
    """``echo-request``, ``8`` or ``3/4``; None when the text is neither a name of this
    family nor numbers within 0-255 (the caller reports it, with a suggestion)."""
    if text in NAMES[family]:
        return IcmpType(NAMES[family][text], None)
    match = _NUMBERS.fullmatch(text)
    if not match or any(part and (int(part) > 255 or part != str(int(part))) for part in match.groups()):
        return None
    return IcmpType(int(match[1]), int(match[2]) if match[2] is not None else None)


def tool_hint(text: str, family: int) -> str | None:
    """For a name only one tool reads: which tool, and the entry that means it here
    (the shared name when the entry is a whole type that has one)."""
    if text not in TOOL_NAMES[family]:
        return None
    tool, entry = TOOL_NAMES[family][text]
    write = type_name(family, int(entry)) if "/" not in entry else None
    kind = "ICMPv6" if family == 6 else "ICMP"
    return f"'{text}' is what {tool} calls {kind} {'type' if '/' not in entry else 'type/code'} {entry}; " \
        f"write {write or entry}"


def type_name(family: int, number: int) -> str | None:
    """The policy name of an ICMP type number, when it has one."""
    return next((name for name, n in NAMES[family].items() if n == number), None)
