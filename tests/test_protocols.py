"""The IANA protocol-numbers layer: the bundled copy, lookups, quirks, parsing, formatting.

Expected values come from the bundled CSV (highest assigned number 147, BIT-EMU). The
tests read fwgen/data; ../shared only for the byte-for-byte comparison, skipped if absent.
"""

from __future__ import annotations

import ast
import hashlib
import tomllib
from pathlib import Path

import pytest

import fwgen.protocols as protocols
from fwgen.errors import PolicyError
from fwgen.protocols import Protocol, ProtocolRegistry, format_protocols, parse

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = Path(protocols.__file__).parent / "data" / "protocol-numbers-1.csv"
SHARED = Path("/work/shared/iana/protocol-numbers-1.csv")
SHA256 = "a3f8874be460b6b0cff0e1ffd0d3b5c64295b812e18122d1f2e1d3b18858907b"
HEADER = "Decimal,Keyword,Protocol,IPv6 Extension Header,Reference\n"


@pytest.fixture(scope="module")
def reg() -> ProtocolRegistry:
    return protocols.bundled()


def csv_registry(*lines: str) -> ProtocolRegistry:
    return parse((HEADER + "".join(line + "\n" for line in lines)).encode(), "test.csv")


# --------------------------------------------------------------------------- the bundled copy


def test_metadata(reg: ProtocolRegistry) -> None:
    assert reg.edition == "highest assigned 147 (BIT-EMU)"
    assert reg.sha256 == SHA256 == hashlib.sha256(BUNDLED.read_bytes()).hexdigest()
    assert reg.source_name == "protocol-numbers-1.csv"
    assert len(reg.rows) == 152  # 0-147, 148-252, 253, 254, 255
    assert protocols.bundled() is reg


def test_bundle_is_inside_the_package() -> None:
    assert Path(protocols.BUNDLE_PATH) == BUNDLED
    assert BUNDLED.stat().st_size == 9_078


def test_bundle_is_iana_copy_byte_for_byte() -> None:
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent")
    assert BUNDLED.read_bytes() == SHARED.read_bytes()


def test_wheel_ships_csv() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "*.csv" in config["tool"]["setuptools"]["package-data"]["fwgen.data"]


def test_rows_cover_every_number_in_order(reg: ProtocolRegistry) -> None:
    assert [r.number for r in reg.rows] == sorted(r.number for r in reg.rows)
    assert all(reg.by_number(n) for n in range(256))
    assert all(0 <= r.number <= r.last <= 255 for r in reg.rows)


def test_imports_no_other_fwgen_module() -> None:
    """fwgen.registry and fwgen.policy will import this module: it must import neither."""
    tree = ast.parse(Path(protocols.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            assert node.module is not None
            if node.module == "fwgen":
                imported.update(f"fwgen.{alias.name}" for alias in node.names)
            else:
                imported.add(node.module)
    assert {m for m in imported if m == "fwgen" or m.startswith("fwgen.")} <= {"fwgen.errors"}


# --------------------------------------------------------------------------- lookup

LOOKUPS = [
    ("tcp", 6), ("TCP", 6), ("Tcp", 6),
    ("udp", 17),
    ("icmp", 1),
    ("ipv6-icmp", 58), ("IPv6-ICMP", 58), ("IPV6-ICMP", 58),
    ("igmp", 2),
    ("gre", 47),
    ("esp", 50), ("ESP", 50),
    ("ah", 51),
    ("ospfigp", 89), ("OSPFIGP", 89),
    ("vrrp", 112),
    ("sctp", 132),
    ("udplite", 136), ("UDPLite", 136),
    ("hopopt", 0),
    ("ipv4", 4), ("ipv6", 41),
    ("iptm", 84),
    ("bit-emu", 147),
    ("3pc", 34),  # starts with a digit
    ("tp++", 39), ("ax.25", 93),  # '+' and '.' are token characters
    ("manet", 138),  # IANA writes it in lower case
    # deprecated keywords resolve by the bare keyword only
    ("argus", 13), ("swipe", 53), ("micp", 95), ("sm", 122),
    ("ARGUS (deprecated)", None), ("argus (deprecated)", None),
    # multi-word and '/' keywords are not names; neither is any made-up spelling of them
    ("ISIS over IPv4", None), ("isis", None), ("isis-over-ipv4", None),
    ("Mobility Header", None), ("mobility-header", None),
    ("A/N", None), ("a-n", None),
    ("reserved", None), ("Reserved", None),  # 255: a status, not a protocol
    # other tools' spellings are not IANA keywords (suggest() offers IANA's)
    ("ospf", None), ("icmpv6", None), ("ttp", None),
    ("6", None), ("148", None), ("", None), (" tcp", None), ("tcp ", None), ("s\u212aip", None),
]


@pytest.mark.parametrize(("word", "number"), LOOKUPS)
def test_lookup(reg: ProtocolRegistry, word: str, number: int | None) -> None:
    assert reg.lookup(word) == number


def test_every_name_resolves_to_its_row(reg: ProtocolRegistry) -> None:
    for row in reg.rows:
        if row.name:
            assert reg.lookup(row.name) == reg.lookup(row.name.upper()) == row.number
            assert row in reg.by_number(reg.lookup(row.name) or 0)
    # 152 rows: 8 have no keyword (61, 63, 68, 99, 114, 253, 254 and the range 148-252),
    # and 4 keywords are not names (below), so 140 names
    assert len(reg.names) == 140
    assert [r.number for r in reg.rows if not r.keyword] == [61, 63, 68, 99, 114, 148, 253, 254]
    assert [r.keyword for r in reg.rows if r.keyword and not r.name] == [
        "A/N", "ISIS over IPv4", "Mobility Header", "Reserved",
    ]


@pytest.mark.parametrize(
    ("number", "keyword", "deprecated"),
    [(13, "ARGUS (deprecated)", True), (53, "SWIPE (deprecated)", True), (95, "MICP (deprecated)", True),
     (122, "SM (deprecated)", True), (50, "ESP", False)],
)
def test_deprecated(reg: ProtocolRegistry, number: int, keyword: str, deprecated: bool) -> None:
    [row] = reg.by_number(number)
    assert (row.keyword, row.deprecated) == (keyword, deprecated)


# --------------------------------------------------------------------------- by_number

BY_NUMBER = [
    (6, [("TCP", "Transmission Control", False, "[RFC9293]")]),
    (50, [("ESP", "Encap Security Payload", True, "[RFC4303]")]),
    (58, [("IPv6-ICMP", "ICMP for IPv6", False, "[RFC8200]")]),
    (0, [("HOPOPT", "IPv6 Hop-by-Hop Option", True, "[RFC8200]")]),
    (145, [("NSH", "Network Service Header", False, "[RFC9491]")]),  # 'N' is False
    (135, [("Mobility Header", "", True, "[RFC6275]")]),
    # numbers with an empty keyword
    (61, [("", "any host internal protocol", False, "[Internet_Assigned_Numbers_Authority]")]),
    (63, [("", "any local network", False, "[Internet_Assigned_Numbers_Authority]")]),
    (68, [("", "any distributed file system", False, "[Internet_Assigned_Numbers_Authority]")]),
    (99, [("", "any private encryption scheme", False, "[Internet_Assigned_Numbers_Authority]")]),
    (114, [("", "any 0-hop protocol", False, "[Internet_Assigned_Numbers_Authority]")]),
    (253, [("", "Use for experimentation and testing", True, "[RFC3692]")]),
    (254, [("", "Use for experimentation and testing", True, "[RFC3692]")]),
    (255, [("Reserved", "", False, "[Internet_Assigned_Numbers_Authority]")]),
    # the bundled edition has one row for 84 (IPTM); older editions also had TTP (below)
    (84, [("IPTM", "Internet Protocol Traffic Manager", False, "[Jim_Stevens][1]")]),
    # the quoted newline inside a field is kept
    (56, [("TLSP", "Transport Layer Security Protocol        \nusing Kryptonet key management", False,
           "[Christer_Oberg]")]),
    (256, []), (-1, []),
]


@pytest.mark.parametrize(("number", "expected"), BY_NUMBER)
def test_by_number(reg: ProtocolRegistry, number: int, expected: list[tuple[object, ...]]) -> None:
    got = reg.by_number(number)
    assert [(r.keyword, r.description, r.ipv6_extension_header, r.reference) for r in got] == expected
    assert all(r.number == r.last == number for r in got)


@pytest.mark.parametrize("number", [148, 200, 252])
def test_range_row(reg: ProtocolRegistry, number: int) -> None:
    assert reg.by_number(number) == [
        Protocol(148, "", "Unassigned", False, "[Internet_Assigned_Numbers_Authority]", 252)
    ]


def test_double_row_and_clashing_names() -> None:
    """As in IANA's editions with both TTP and IPTM at 84: two names for one number."""
    reg = csv_registry(
        "84,TTP,Transaction Transport Protocol,,[Jim_Stevens]",
        "84,IPTM,Internet Protocol Traffic Manager,,[Jim_Stevens]",
        "200,Dup,First,,",
        "201,DUP,Second,,",
    )
    assert [r.keyword for r in reg.by_number(84)] == ["TTP", "IPTM"]
    assert reg.lookup("ttp") == reg.lookup("iptm") == 84
    assert [r.keyword for r in reg.query("84")] == ["TTP", "IPTM"]
    assert reg.lookup("dup") is None  # one name, two numbers: neither
    assert reg.names == ["iptm", "ttp"]
    assert reg.edition == "highest assigned 201 (DUP)"


# --------------------------------------------------------------------------- suggest


@pytest.mark.parametrize(
    ("typo", "first"),
    [
        ("espp", ["esp", "wesp"]),
        ("ESPP", ["esp"]),
        ("tcpp", ["tcp"]),
        ("tpc", ["tcp"]),  # ties with 3pc, mtp, ptp: a transposition wins the tie
        ("dup", ["udp"]),
        ("ospf", ["ospfigp"]),
        ("vrpp", ["vrrp"]),
        ("udp-lite", ["udplite"]),
        ("ipv6_icmp", ["ipv6-icmp"]),
        ("ipv6icmp", ["ipv6-icmp"]),
        # fuzzy matching alone would offer icmp, ICMP for IPv4, first
        ("icmpv6", ["ipv6-icmp", "icmp"]),
        ("ICMP6", ["ipv6-icmp", "icmp"]),
        ("arguss", ["argus"]),  # bare keyword of ARGUS (deprecated)
    ],
)
def test_suggest(reg: ProtocolRegistry, typo: str, first: list[str]) -> None:
    got = reg.suggest(typo)
    assert got[: len(first)] == first
    assert len(got) <= 3
    assert reg.suggest(typo) == got  # deterministic


def test_suggest_limit_and_filters(reg: ProtocolRegistry) -> None:
    assert reg.suggest("espp", limit=1) == ["esp"]
    assert reg.suggest("icmpv6", limit=1) == ["ipv6-icmp"]
    assert reg.suggest("qqqqqqqq") == []
    assert reg.suggest("mobility-header") == []  # no multi-word keyword is ever offered
    assert reg.suggest("reserved") == []
    assert all(reg.lookup(s) is not None for w in ("ip", "ipsec", "l2tpv3", "is-is") for s in reg.suggest(w))


# --------------------------------------------------------------------------- query


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("50", [50]),
        (" 50 ", [50]),
        ("50-51", [50, 51]),
        ("50 - 51", [50, 51]),
        ("146-149", [146, 147, 148]),  # the range row once
        ("200", [148]),
        ("250-255", [148, 253, 254, 255]),
        ("255-300", [255]),
        ("256", []), ("51-50", []), ("", []), ("  ", []), ("50-", []), ("\u0665", []),
        ("esp", [50]), ("ESP", [50]),  # exact keyword wins over substring (wesp)
        ("ipv6-icmp", [58]),
        ("argus", [13]),  # the bare name
        ("argus (deprecated)", [13]),
        ("isis over ipv4", [124]),
        ("mobility header", [135]),
        ("a/n", [107]),
        ("isis", [124]),  # substring of a keyword
        ("ospf", [89]),
        ("udplite", [136]),
        ("ipv6-", [43, 44, 58, 59, 60]),
        ("hop-by-hop", [0]),  # substring of a description
        ("experimentation", [253, 254]),
        ("security protocol using", [56]),  # across the wrapped line
        ("no-such-protocol", []),
    ],
)
def test_query(reg: ProtocolRegistry, text: str, numbers: list[int]) -> None:
    assert [r.number for r in reg.query(text)] == numbers


def test_query_returns_full_rows(reg: ProtocolRegistry) -> None:
    assert reg.query("vrrp") == [Protocol(112, "VRRP", "Virtual Router Redundancy Protocol", False, "[RFC9568]", 112)]


# --------------------------------------------------------------------------- parsing


def test_parse_handles_crlf_bom_and_quoted_newlines() -> None:
    """IANA's port CSV ends rows with CRLF and wraps fields with bare LF; accept that too."""
    data = "\ufeff" + HEADER.replace("\n", "\r\n") + '1,ICMP,"two\nlines",,[RFC792]\r\n50,ESP,Esp,Y,"[a]\n[b]"\r\n'
    reg = parse(data.encode(), "crlf.csv")
    assert [(r.number, r.description, r.reference) for r in reg.rows] == [
        (1, "two\nlines", "[RFC792]"), (50, "Esp", "[a]\n[b]"),
    ]


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ("Number,Keyword\n", "bad.csv:1:1", "not IANA's protocol-numbers CSV"),
        ("", "bad.csv:1:1", "not IANA's protocol-numbers CSV"),
        (HEADER + "256,X,,,\n", "bad.csv:2:1", "bad protocol number '256'"),
        (HEADER + "20-10,X,,,\n", "bad.csv:2:1", "bad protocol number '20-10'"),
        (HEADER + "six,X,,,\n", "bad.csv:2:1", "bad protocol number 'six'"),
        (HEADER + '1,A,"x\ny",,\n2,B,,yes,\n', "bad.csv:4:1", "bad IPv6 Extension Header value 'yes'"),
        (HEADER + "1,A,,\n", "bad.csv:2:1", "expected 5 fields, found 4"),
    ],
)
def test_parse_errors(body: str, where: str, message: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse(body.encode(), "bad.csv")
    assert str(e.value).startswith(f"{where}: {message}")


def test_parse_rejects_non_utf8() -> None:
    with pytest.raises(PolicyError, match="not UTF-8"):
        parse(HEADER.encode() + b"1,\xff,,,\n", "bad.csv")


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("50-51", "50  ESP  Encap Security Payload\n"
                  "  ipv6 extension header\n"
                  "  reference: [RFC4303]\n"
                  "51  AH   Authentication Header\n"
                  "  ipv6 extension header\n"
                  "  reference: [RFC4302]"),
        ("6", "6  TCP  Transmission Control\n  reference: [RFC9293]"),
        ("56", "56  TLSP  Transport Layer Security Protocol\n"
               "    using Kryptonet key management\n"
               "  reference: [Christer_Oberg]"),
        ("124", "124  ISIS over IPv4\n"
                "  not a name a policy can use: write the number 124\n"
                "  reference: [Tony_Przygienda]"),
        ("200", "148-252  -  Unassigned\n  reference: [Internet_Assigned_Numbers_Authority]"),
        ("61", "61  -  any host internal protocol\n  reference: [Internet_Assigned_Numbers_Authority]"),
        ("argus", "13  ARGUS (deprecated)  ARGUS\n  reference: [Robert_W_Scheifler]"),
    ],
)
def test_format_protocols(reg: ProtocolRegistry, query: str, text: str) -> None:
    assert format_protocols(reg.query(query)) == text + "\n"


def test_format_nothing() -> None:
    assert format_protocols([]) == ""


# --------------------------------------------------------------------------- fwgen protocols


def test_cli_prints_the_rows_as_format_protocols_does(reg: ProtocolRegistry) -> None:
    from click.testing import CliRunner

    from fwgen.cli import main

    for query in ("esp", "GRE", "47-51", "112", "ospf"):
        result = CliRunner().invoke(main, ["protocols", query])
        assert result.exit_code == 0, query
        assert result.stdout == format_protocols(reg.query(query)) != ""
    assert CliRunner().invoke(main, ["protocols", "vrrp"]).stdout.startswith("112  VRRP  Virtual Router Redundancy")


def test_cli_nothing_found_is_one_line_exit_1() -> None:
    from click.testing import CliRunner

    from fwgen.cli import main

    result = CliRunner().invoke(main, ["protocols", "nosuch"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "no protocol registry entry matches 'nosuch' (highest assigned 147 (BIT-EMU))\n"
