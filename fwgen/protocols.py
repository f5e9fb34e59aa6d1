"""The IANA Assigned Internet Protocol Numbers registry, so that policies can name IP protocols.

The registry gives the values of the IPv4 Protocol and IPv6 Next Header fields (tcp 6,
esp 50, vrrp 112, ...). fwgen ships IANA's own CSV unmodified in
``fwgen/data/protocol-numbers-1.csv`` and parses it with ``csv`` on first use (9 KB, about
1.5 ms). Generated rules carry numbers, never names: iptables and nft resolve
names through the host's /etc/protocols, which differs from host to host.

Which keywords a policy can use (``Protocol.name``, ``ProtocolRegistry.lookup``):

* one token of ``[A-Za-z0-9][A-Za-z0-9._+-]*``, matched case-insensitively (``IPv6-ICMP``,
  ``ipv6-icmp``); IANA has no two keywords that differ only by case;
* a keyword marked ``(deprecated)`` (``ARGUS (deprecated)``) is named by the bare keyword
  (``argus``): the number still means that protocol, and a policy denying or watching it
  is reasonable; ``Protocol.deprecated`` lets a linter say so;
* not multi-word keywords (``ISIS over IPv4``, ``Mobility Header``) nor ``A/N``: no spelling
  of them is a token, and inventing one (``mobility-header``) would be fwgen's name, not
  IANA's; a policy writes their number;
* not ``Reserved`` (255): a status, not a protocol; nor the numbers with no keyword (61,
  63, 68, 99, 114, 253, 254): they are reachable by number only;
* a name given to two different numbers would resolve to neither (no edition has one);
  two rows for one number (84 was TTP and IPTM in older editions) are both names of it.

A range row (``148-252``, Unassigned) stays one ``Protocol`` with ``number`` its first and
``last`` its last number; a single number has ``last == number``.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import re
from collections.abc import Sequence
from typing import NamedTuple

from fwgen.errors import Location, PolicyError

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
BUNDLE_PATH = os.path.join(DATA_DIR, "protocol-numbers-1.csv")
HEADER = ("Decimal", "Keyword", "Protocol", "IPv6 Extension Header", "Reference")
MAX_NUMBER = 255  # the Protocol / Next Header field is one octet

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_DECIMAL = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_DEPRECATED = " (deprecated)"
_STATUS_KEYWORDS = frozenset({"reserved"})  # in the Keyword column, but not protocols
# Spellings other tools use for a protocol IANA calls otherwise. Only suggest() knows them,
# so a policy still says IANA's keyword; without them 'icmpv6' would fuzzy-match 'icmp',
# ICMP for IPv4, a suggestion that would open the wrong protocol.
_OTHER_SPELLINGS = {"icmpv6": "ipv6-icmp", "icmp6": "ipv6-icmp", "ospf": "ospfigp"}


class Protocol(NamedTuple):
    """One row of the CSV: description and reference as IANA wrote them (a wrapped line
    keeps its newline), the other fields stripped of surrounding blanks."""

    number: int  # the first number of a range row
    keyword: str  # IANA's spelling, '' if none
    description: str  # IANA's "Protocol" column
    ipv6_extension_header: bool  # "Y"; "N" and empty are both False
    reference: str
    last: int  # == number, except for a range row such as 148-252

    @property
    def deprecated(self) -> bool:
        return self.keyword.lower().endswith(_DEPRECATED)

    @property
    def name(self) -> str:
        """The lower-case word a policy can write for this row; '' if it has none."""
        bare = self.keyword[: -len(_DEPRECATED)] if self.deprecated else self.keyword
        if bare.lower() in _STATUS_KEYWORDS or not _TOKEN.fullmatch(bare):
            return ""
        return bare.lower()


def _assigned(row: Protocol) -> bool:
    """A single number given to a protocol: it has a keyword (usable as a name or not) that
    is not a status."""
    return row.number == row.last and row.keyword != "" and row.keyword.lower() not in _STATUS_KEYWORDS


class ProtocolRegistry:
    """All rows of one edition, with lookups by number and by keyword."""

    def __init__(self, rows: Sequence[Protocol], sha256: str, source_name: str) -> None:
        self.rows = tuple(rows)
        self.sha256 = sha256
        self.source_name = source_name
        numbers: dict[str, set[int]] = {}
        for row in self.rows:
            if row.name:
                numbers.setdefault(row.name, set()).add(row.number)
        self._names = {name: next(iter(nums)) for name, nums in numbers.items() if len(nums) == 1}
        # The CSV carries no date; numbers are handed out in order, so the highest assigned
        # one (not 253-255: experimentation and Reserved) names the edition honestly.
        newest = max((r for r in self.rows if _assigned(r)), key=lambda r: r.number, default=None)
        self.edition = f"highest assigned {newest.number} ({newest.keyword})" if newest else "none assigned"

    def __repr__(self) -> str:
        return f"<ProtocolRegistry {self.source_name} {self.edition}, {len(self.rows)} rows>"

    @property
    def names(self) -> list[str]:
        """Every name ``lookup`` resolves, sorted."""
        return sorted(self._names)

    def by_number(self, number: int) -> list[Protocol]:
        """The rows covering ``number``, in file order: one for most, two for a number with
        two keywords, the range row for an unassigned one; [] outside 0..255."""
        return [r for r in self.rows if r.number <= number <= r.last]

    def lookup(self, word: str) -> int | None:
        """The number a policy means by ``word`` (case-insensitive); None if it names no
        protocol. Numbers themselves are not words: ``lookup("6")`` is None. ASCII only, so
        that no Unicode case folding makes a name of another word ('s\u212aip' is not skip)."""
        return self._names.get(word.lower()) if word.isascii() else None

    def suggest(self, word: str, limit: int = 3) -> list[str]:
        """Close names for a typo ('espp' -> ['esp', 'wesp']), lower case as policies write
        them, best first; a tie goes to the same letters reordered ('tpc' -> 'tcp', not
        '3pc'), then by name; only names ``lookup`` resolves. Another tool's
        spelling comes first with IANA's ('icmpv6' -> 'ipv6-icmp', not 'icmp')."""
        from difflib import SequenceMatcher

        key = word.lower().replace("_", "-")
        known = _OTHER_SPELLINGS.get(key, "")
        matcher = SequenceMatcher(autojunk=False)
        matcher.set_seq2(key)
        letters = sorted(key)
        scored: list[tuple[float, bool, str]] = [(-2.0, False, known)] if known in self._names else []
        for name in self._names.keys() - {known}:
            matcher.set_seq1(name)
            if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
                score = matcher.ratio()
                if score >= 0.6:
                    scored.append((-score, sorted(name) != letters, name))
        return [name for *_, name in sorted(scored)[:limit]]

    def query(self, text: str) -> list[Protocol]:
        """For ``fwgen protocols QUERY``: a number ('50'), a range ('50-51': rows overlapping
        it), or a word: rows whose keyword or bare name is the word (case-insensitive), or
        else rows whose keyword or description contains it. File order, which is number
        order. Never raises: an empty query or a reversed range matches nothing."""
        text = text.strip()
        lo_s, dash, hi_s = (part.strip() for part in text.partition("-"))
        if not text:
            return []
        if lo_s.isdigit() and (not dash or hi_s.isdigit()) and lo_s.isascii() and hi_s.isascii():
            lo = int(lo_s)
            hi = int(hi_s) if dash else lo
            return [r for r in self.rows if r.number <= hi and r.last >= lo]
        needle = text.lower()
        exact = [r for r in self.rows if needle in (r.keyword.lower(), r.name)]
        if exact:
            return exact
        return [
            r for r in self.rows
            if needle in r.keyword.lower() or needle in " ".join(r.description.split()).lower()
        ]


# ---------------------------------------------------------------------- loading


def parse(data: bytes, source_name: str) -> ProtocolRegistry:
    """Read IANA's protocol-numbers CSV. Raises ``PolicyError`` located at the bad row, so a
    damaged file is never half-read into a firewall."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PolicyError(Location(source_name, 1, 1), f"not UTF-8: {e.reason}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    if tuple(h.strip() for h in header) != HEADER:
        raise PolicyError(Location(source_name, 1, 1),
                          "not IANA's protocol-numbers CSV: the header must be " + ",".join(HEADER))
    rows: list[Protocol] = []
    line = reader.line_num + 1  # where the next record starts (fields may hold newlines)
    for fields in reader:
        where, line = Location(source_name, line, 1), reader.line_num + 1
        if not fields:
            continue
        if len(fields) != len(HEADER):
            raise PolicyError(where, f"expected {len(HEADER)} fields, found {len(fields)}")
        decimal, keyword, description, extension, reference = fields
        m = _DECIMAL.fullmatch(decimal.strip())
        lo = int(m[1]) if m else -1
        hi = int(m[2]) if m and m[2] else lo
        if not m or not lo <= hi <= MAX_NUMBER:
            raise PolicyError(where, f"bad protocol number {decimal!r} (0..{MAX_NUMBER} or a range)")
        if extension.strip() not in ("Y", "N", ""):
            raise PolicyError(where, f"bad IPv6 Extension Header value {extension!r} (Y, N or empty)")
        rows.append(Protocol(lo, keyword.strip(), description, extension.strip() == "Y", reference, hi))
    return ProtocolRegistry(rows, hashlib.sha256(data).hexdigest(), source_name)


@functools.cache
def bundled() -> ProtocolRegistry:
    """The registry packaged with fwgen (cached): never a file outside the package."""
    with open(BUNDLE_PATH, "rb") as f:
        return parse(f.read(), os.path.basename(BUNDLE_PATH))


# ---------------------------------------------------------------------- display


def _field(label: str, value: str) -> list[str]:
    first, *rest = value.split("\n")
    return [f"  {label}: {first}".rstrip()] + [f"    {line.strip()}" for line in rest]


def format_protocols(rows: Sequence[Protocol]) -> str:
    """Human-readable text for ``fwgen protocols``: one block per row. Every line ends with
    a newline; '' for no rows.

        50  ESP  Encap Security Payload
          ipv6 extension header
          reference: [RFC4303]
    """
    heads = [
        (str(r.number) if r.number == r.last else f"{r.number}-{r.last}", r.keyword or "-") for r in rows
    ]
    widths = [max((len(h[c]) for h in heads), default=0) for c in range(2)]
    lines: list[str] = []
    for (number, keyword), r in zip(heads, rows, strict=True):
        first, *more = r.description.split("\n")
        lines.append(f"{number.ljust(widths[0])}  {keyword.ljust(widths[1])}  {first}".rstrip())
        lines.extend(f"    {line.strip()}" for line in more)
        if r.keyword and not r.name:
            lines.append(f"  not a name a policy can use: write the number {number}")
        if r.ipv6_extension_header:
            lines.append("  ipv6 extension header")
        if r.reference:
            lines += _field("reference", r.reference)
    return "".join(line + "\n" for line in lines)
