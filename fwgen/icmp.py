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


def type_name(family: int, number: int) -> str | None:
    """The policy name of an ICMP type number, when it has one."""
    return next((name for name, n in NAMES[family].items() if n == number), None)
