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
