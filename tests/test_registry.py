"""The IANA registry layer: bundled data, lookups, loaders, formatting, the bundle itself.

Expected values come from the registry data (edition 2026-08-17) and its README; the
tests read only files in the repository (fwgen/data), never ../shared.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import fwgen.registry as registry
from fwgen.errors import PolicyError
from fwgen.registry import Record, format_records
from fwgen.registry_sources import build_bundle

DATA = Path(registry.__file__).parent / "data"
XML_COPY = DATA / "service-names-port-numbers.xml.gz"
CSV_COPY = DATA / "service-names-port-numbers.csv.gz"
XML_SHA256 = "4bbf00ef4dd194ea3098d090b42a832c0f8aef704699956a4a7e24576a49631b"
CSV_SHA256 = "b27a00f94cabd719b9c29f1ff1ffc92be84d708282015dc8b933ee8574c8b884"


@pytest.fixture(scope="module")
def reg() -> registry.Registry:
    return registry.bundled()


@pytest.fixture(scope="module")
def csv_reg(tmp_path_factory: pytest.TempPathFactory) -> registry.Registry:
    path = tmp_path_factory.mktemp("iana") / "service-names-port-numbers.csv"
    path.write_bytes(gzip.decompress(CSV_COPY.read_bytes()))
    return registry.load(str(path))


def tcp_udp(lo: int, hi: int | None = None) -> list[tuple[str, int, int]]:
    hi = lo if hi is None else hi
    return [("tcp", lo, hi), ("udp", lo, hi)]


# --------------------------------------------------------------------------- metadata


def test_metadata(reg: registry.Registry) -> None:
    assert reg.edition == "2026-08-17"
    assert reg.sha256 == XML_SHA256
    assert reg.source_name == "service-names-port-numbers.xml"


def test_bundled_is_cached(reg: registry.Registry) -> None:
    assert registry.bundled() is reg


# --------------------------------------------------------------------------- pairs

PAIRS = [
    ("mpshrsv", tcp_udp(1261)),
    ("t1distproc", tcp_udp(1274)),
    ("x11", tcp_udp(6000, 6063)),
    ("http-alt", [("tcp", 591, 591), ("tcp", 8008, 8008), ("tcp", 8080, 8080),
                  ("udp", 591, 591), ("udp", 8008, 8008), ("udp", 8080, 8080)]),
    # raid-am is 2013/tcp and 2007/udp; 2013/udp is raid-cd and 2007/tcp is dectalk.
    ("raid-am", [("tcp", 2013, 2013), ("udp", 2007, 2007)]),
    ("raid-cd", [("udp", 2006, 2006), ("udp", 2013, 2013)]),  # 2006/tcp is invokator
    # ssh also has a 22/sctp row and a portless tcp row; neither adds a pair.
    ("ssh", tcp_udp(22)),
    ("http", tcp_udp(80)),
    ("ircu", [("tcp", 6665, 6669)]),  # a named range registered for tcp only
    ("agtp", [("tcp", 4480, 4480)]),
    ("agtp-quic", [("udp", 4480, 4480)]),
    ("msp", sorted(tcp_udp(18) + tcp_udp(2438))),
    # rows with a port and an empty protocol count as tcp and udp
    ("active-net", tcp_udp(3322, 3325)),
    ("flex-lm", tcp_udp(27000, 27009)),
    ("boe-cms", tcp_udp(6400)),
    ("boe-resssvr4", tcp_udp(6410)),
    # names with '/', '_', '.', '+', '*' are matched exactly, not normalized
    ("cl/1", tcp_udp(172)),
    ("cl-1", tcp_udp(172)),
    ("udt_os", sorted(tcp_udp(1382) + tcp_udp(3900))),
    ("z39.50", tcp_udp(210)),
    ("whois++", tcp_udp(63)),
    ("sql*net", tcp_udp(66)),
    ("sql-net", sorted(tcp_udp(66) + tcp_udp(150))),
    # known, but no tcp/udp port
    ("asap-sctp", []),  # sctp only
    ("wot", []),  # portless (DNS-SD) tcp and udp rows
    ("imap2", []),  # historic name, no port, no protocol
    ("rdp", []),  # two portless rows with no protocol
    # unknown
    ("no-such-service", None),
    ("whois", None),  # /etc/services name; IANA calls port 43 "nicname"
    ("", None),
    ("udt.os", None),  # no normalization: only suggest() treats '.' as '-'
]


@pytest.mark.parametrize(("name", "expected"), PAIRS)
def test_pairs(
    reg: registry.Registry, name: str, expected: list[tuple[str, int, int]] | None
) -> None:
    assert reg.pairs(name) == expected


@pytest.mark.parametrize(
    ("given", "canonical", "expected"),
    [
        ("SSH", "ssh", tcp_udp(22)),
        ("Ssh", "ssh", tcp_udp(22)),
        ("cailic", "CAIlic", tcp_udp(216)),
        ("CAILIC", "CAIlic", tcp_udp(216)),
        ("MPSHRSV", "mpshrsv", tcp_udp(1261)),
        ("ethernet-ip-1", "EtherNet-IP-1", tcp_udp(2222)),
        ("CL/1", "cl/1", tcp_udp(172)),
        ("X11", "x11", tcp_udp(6000, 6063)),
    ],
)
def test_case_insensitive(
    reg: registry.Registry, given: str, canonical: str, expected: list[tuple[str, int, int]]
) -> None:
    assert reg.canonical(given) == canonical
    assert reg.pairs(given) == expected


def test_canonical_unknown(reg: registry.Registry) -> None:
    assert reg.canonical("no-such-service") is None


def test_every_name_consistent(reg: registry.Registry) -> None:
    """For every name: any spelling gives the same answer, and names_at finds it back."""
    for name in {r.name for r in reg.records if r.name}:
        pairs = reg.pairs(name)
        assert pairs is not None
        assert reg.pairs(name.upper()) == pairs == reg.pairs(name.lower())
        assert reg.canonical(name.swapcase()) == name
        assert pairs == sorted(set(pairs))
        for proto, lo, hi in pairs:
            assert proto in ("tcp", "udp") and 0 <= lo <= hi <= 65535
            assert name in reg.names_at(proto, lo)
            assert name in reg.names_at(proto, hi)


# --------------------------------------------------------------------------- suggest


@pytest.mark.parametrize(
    ("typo", "first"),
    [
        ("mpshrv", ["mpshrsv"]),
        ("MPSHRV", ["mpshrsv"]),
        ("t1distprc", ["t1distproc"]),
        ("udt.os", ["udt-os", "udt_os"]),  # both spellings normalize to udt-os
        ("z39_50", ["z39-50", "z39.50"]),
        ("sshh", ["ssh"]),
    ],
)
def test_suggest(reg: registry.Registry, typo: str, first: list[str]) -> None:
    got = reg.suggest(typo)
    assert got[: len(first)] == first
    assert len(got) <= 3
    assert reg.suggest(typo) == got  # deterministic


def test_suggest_limit_and_filters(reg: registry.Registry) -> None:
    assert reg.suggest("mpshrv", limit=1) == ["mpshrsv"]
    assert len(reg.suggest("http", limit=10)) == 10
    assert reg.suggest("qqqqqqqqqqqq") == []
    # only names with a tcp/udp port are suggested: asap-sctp (sctp only), wot (portless)
    assert "asap-sctp" not in reg.suggest("asap-sctp", limit=10)
    assert "wot" not in reg.suggest("wot", limit=10)


# --------------------------------------------------------------------------- names_at


@pytest.mark.parametrize(
    ("protocol", "port", "expected"),
    [
        ("tcp", 80, ["http", "www", "www-http"]),
        ("tcp", 22, ["ssh"]),
        ("udp", 1261, ["mpshrsv"]),
        ("tcp", 2013, ["raid-am"]),
        ("udp", 2013, ["raid-cd"]),
        ("tcp", 2007, ["dectalk"]),
        ("udp", 2007, ["raid-am"]),
        ("udp", 6010, ["x11"]),  # inside the x11 range
        ("tcp", 6667, ["ircu"]),
        ("udp", 6667, []),  # ircu is tcp only
        ("tcp", 3324, ["active-net"]),  # empty-protocol range counts for tcp ...
        ("udp", 3324, ["active-net"]),  # ... and udp
        ("udp", 6405, ["boe-pagesvr"]),
        ("tcp", 4, []),  # Unassigned: unnamed rows are not listed
        ("tcp", 49152, []),
    ],
)
def test_names_at(reg: registry.Registry, protocol: str, port: int, expected: list[str]) -> None:
    assert reg.names_at(protocol, port) == expected


# --------------------------------------------------------------------------- query


def brief(records: list[Record]) -> list[tuple[str, int | None, int | None, str]]:
    return [(r.name, r.port_lo, r.port_hi, r.protocol) for r in records]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1274", [("t1distproc", 1274, 1274, "tcp"), ("t1distproc", 1274, 1274, "udp")]),
        ("6000-6001", [("x11", 6000, 6063, "tcp"), ("x11", 6000, 6063, "udp")]),
        ("x11", [("x11", 6000, 6063, "tcp"), ("x11", 6000, 6063, "udp")]),
        ("X11", [("x11", 6000, 6063, "tcp"), ("x11", 6000, 6063, "udp")]),
        (" 1274 ", [("t1distproc", 1274, 1274, "tcp"), ("t1distproc", 1274, 1274, "udp")]),
        ("5999-6000", [("cvsup", 5999, 5999, "tcp"), ("cvsup", 5999, 5999, "udp"),
                       ("x11", 6000, 6063, "tcp"), ("x11", 6000, 6063, "udp")]),
        ("9", [("discard", 9, 9, "tcp"), ("discard", 9, 9, "udp"),
               ("discard", 9, 9, "sctp"), ("discard", 9, 9, "dccp")]),
        ("4", [("", 4, 4, "tcp"), ("", 4, 4, "udp")]),  # unnamed rows are shown
        ("3323", [("active-net", 3322, 3325, "")]),
        ("29500", [("", 29170, 29998, "")]),  # the largest unassigned range
        ("49152-65535", []),
        ("mpshr", [("mpshrsv", 1261, 1261, "tcp"), ("mpshrsv", 1261, 1261, "udp")]),  # substring
        # exact match wins over substring (ssh would otherwise also match sshell, ...);
        # portless rows sort last
        ("ssh", [("ssh", 22, 22, "tcp"), ("ssh", 22, 22, "udp"), ("ssh", 22, 22, "sctp"),
                 ("ssh", None, None, "tcp")]),
        ("raid-am", [("raid-am", 2007, 2007, "udp"), ("raid-am", 2013, 2013, "tcp")]),
        ("no-such-service", []),
    ],
)
def test_query(reg: registry.Registry, text: str, expected: list[tuple[object, ...]]) -> None:
    assert brief(reg.query(text)) == expected


def test_query_substring_is_case_insensitive(reg: registry.Registry) -> None:
    names = {r.name for r in reg.query("ETHERNET")}
    assert {"EtherNet-IP-1", "EtherNet-IP-2", "EtherNet/IP-1"} <= names
    assert all("ethernet" in n.lower() for n in names)


@pytest.mark.parametrize("text", ["", "   ", "6010-6000", "70000", "65536-70000", "x11-"])
def test_query_matching_nothing(reg: registry.Registry, text: str) -> None:
    assert reg.query(text) == []


def test_query_returns_full_records(reg: registry.Registry) -> None:
    assert reg.query("1261")[0] == Record(
        "mpshrsv", 1261, 1261, "tcp", "mpshrsv", "Makoto Ikeyama", "", ""
    )


# --------------------------------------------------------------------------- record content


@pytest.mark.parametrize(
    ("name", "protocol", "port", "field", "expected"),
    [
        # no <assignee>: the person xref of the record is the assignee, mapped to its name
        ("mpshrsv", "tcp", 1261, "assignee", "Makoto Ikeyama"),
        ("smtp", "tcp", 25, "assignee", "IESG"),  # from <assignee>, not the contact
        ("nas", "tcp", 991, "assignee", "Vera Heinau; Heiko Schlichting"),
        ("unify", "tcp", 181, "assignee", "Daegis, Inc."),  # org only: the org name
        ("finger", "tcp", 79, "unauthorized",
         "Unauthorized use by some mail users (see [RFC4146] for details)"),
        ("", "", 100, "unauthorized", "Known Unauthorized Use on 100"),
        ("", "", 100, "description", "Unassigned"),
        # <br/> is a line break; raw newlines in the XML are just wrapping
        ("sql-net", "tcp", 66, "description",
         "Oracle SQL*NET\n"
         "IANA assigned this well-formed service name as a replacement for \"sql*net\"."),
        ("", "tcp", 2, "note",
         "De-assigned on 2025-02-13, previously compressnet by [Bernie_Volz]"),
        ("cl/1", "tcp", 172, "note",
         "This entry is an alias to \"cl-1\". This entry is now historic, not usable for use "
         "with many common service discovery mechanisms."),
        ("brski-reg-cmp", "tcp", None, "description",
         "Bootstrapping Remote Secure Key Infrastructure registrar with CMP capabilities "
         "according to the Lightweight CMP Profile (LCMPP) [RFC9483]"),
    ],
)
def test_record_fields(
    reg: registry.Registry, name: str, protocol: str, port: int | None, field: str, expected: str
) -> None:
    [rec] = [
        r for r in reg.records if (r.name, r.protocol, r.port_lo) == (name, protocol, port)
    ]
    assert getattr(rec, field) == expected


# --------------------------------------------------------------------------- counts


def test_counts(reg: registry.Registry) -> None:
    recs = reg.records
    assert len(recs) == len(reg) == 14_533
    assert Counter(r.protocol for r in recs) == {
        "tcp": 6606, "udp": 6356, "": 1467, "sctp": 93, "dccp": 11,
    }
    assert sum(1 for r in recs if not r.name) == 1_724
    assert sum(1 for r in recs if r.port_lo is None) == 1_070
    # 766 rows have a range in the number field; 6 of them are written "N-N" (4748-4748,
    # 6345-6345, ...), which the bundle stores as the single port N.
    assert sum(1 for r in recs if r.port_lo is not None and r.port_lo != r.port_hi) == 760
    assert sum(1 for r in recs if r.unauthorized) == 112
    names = {r.name for r in recs if r.name}
    assert len(names) == len({n.lower() for n in names}) == 7_327  # no two differ only by case
    assert len({r.name for r in recs if r.name and r.port_lo is not None}) == 6_341


def test_names_with_tcp_udp_port(reg: registry.Registry) -> None:
    # The README's 6,288 counts names with a row whose protocol is literally tcp or udp.
    # fwgen also reads a row with a port and an empty protocol as tcp+udp; that adds 16
    # names with no other tcp/udp row (active-net, satvid-datalnk, vrml-multi-use, swx,
    # flex-lm and the 11 boe-* names), so 6,304 names give pairs(). The other 37 of the
    # 6,341 names with a port are sctp/dccp only (asap-sctp, s1-control, ...).
    recs = reg.records
    literal = {
        r.name for r in recs if r.name and r.port_lo is not None and r.protocol in ("tcp", "udp")
    }
    assert len(literal) == 6_288
    with_pairs = {r.name for r in recs if r.name and reg.pairs(r.name)}
    assert len(with_pairs) == 6_304
    extra = with_pairs - literal
    assert len(extra) == 16
    assert {"active-net", "satvid-datalnk", "vrml-multi-use", "swx", "flex-lm", "boe-cms"} <= extra
    assert all(r.protocol == "" for r in recs if r.name in extra)


# --------------------------------------------------------------------------- CSV


def test_csv(csv_reg: registry.Registry, reg: registry.Registry) -> None:
    assert len(csv_reg.records) == 14_512
    assert csv_reg.edition == "2026-04-09 (csv)"
    assert csv_reg.sha256 == CSV_SHA256
    assert csv_reg.source_name == "service-names-port-numbers.csv"
    for name in ["mpshrsv", "t1distproc", "x11", "http-alt", "raid-am", "active-net", "cl/1",
                 "wot"]:
        assert csv_reg.pairs(name) == reg.pairs(name), name
    assert csv_reg.pairs("agtp") is None  # registered after the CSV's edition
    # the CSV has no <people> section: assignees stay person ids
    assert csv_reg.query("1261")[0] == Record(
        "mpshrsv", 1261, 1261, "tcp", "mpshrsv", "Makoto_Ikeyama", "", ""
    )


def test_csv_matches_xml(csv_reg: registry.Registry, reg: registry.Registry) -> None:
    """Apart from assignees (ids vs names) and line wrapping (the CSV cannot tell a <br/>
    from a wrapped line), the two loaders agree on every record the editions share."""

    def key(r: Record) -> tuple[object, ...]:
        return (r.name, r.port_lo, r.port_hi, r.protocol, r.description.replace("\n", " "),
                r.unauthorized, r.note.replace("\n", " "))

    xml, csv = Counter(map(key, reg.records)), Counter(map(key, csv_reg.records))
    assert sum((csv - xml).values()) == 9  # rows changed or split by the 2026-08-17 edition
    assert sum((xml - csv).values()) == 30


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("mpshrsv", "mpshrsv  1261  tcp,udp  mpshrsv\n  assignee: Makoto Ikeyama"),
        ("79", "finger  79  tcp,udp  Finger\n"
               "  assignee: David Zimmerman\n"
               "  unauthorized use reported: "
               "Unauthorized use by some mail users (see [RFC4146] for details)"),
        ("100", "(unassigned)  100  -  Unassigned\n"
                "  unauthorized use reported: Known Unauthorized Use on 100"),
        ("3323", "active-net  3322-3325  -  Active Networks\n"
                 "  protocol: none registered; fwgen treats it as tcp and udp\n"
                 "  assignee: Bob Braden"),
        ("9", "discard  9  tcp,udp  Discard\n"
              "  assignee: Jon Postel\n"
              "discard  9  sctp     Discard\n"
              "  assignee: Randall Stewart\n"
              "discard  9  dccp     Discard\n"
              "  assignee: Eddie Kohler"),
        ("66", "sql*net  66  tcp,udp  Oracle SQL*NET\n"
               "  assignee: Jack Haverty\n"
               "  note: This entry is an alias to \"sql-net\". This entry is now historic, "
               "not usable for use with many common service discovery mechanisms.\n"
               "sql-net  66  tcp,udp  Oracle SQL*NET\n"
               "    IANA assigned this well-formed service name as a replacement for \"sql*net\".\n"
               "  assignee: Jack Haverty"),
    ],
)
def test_format_records(reg: registry.Registry, query: str, text: str) -> None:
    assert format_records(reg.query(query)) == text + "\n"


def test_format_records_empty() -> None:
    assert format_records([]) == ""


# --------------------------------------------------------------------------- bundle


def test_bundle_rebuilds_identically() -> None:
    """The committed bundle is exactly what the bundler makes from the committed XML copy."""
    xml = gzip.decompress(XML_COPY.read_bytes())
    rebuilt = build_bundle(xml, "service-names-port-numbers.xml")
    assert rebuilt == (DATA / "registry.json").read_bytes()


def test_bundle_loads_without_parsers_or_heavy_imports() -> None:
    code = (
        "import sys, fwgen.registry as r; r.bundled().pairs('ssh'); "
        "print(sorted(m for m in ('fwgen.registry_sources', 'xml.parsers.expat', 'csv', "
        "'jinja2', 'click', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- bad files

NS = b"http://www.iana.org/assignments"
REG = b'<registry xmlns="%s" id="service-names-port-numbers">' % NS
CSV_HEAD = (
    b"Service Name,Port Number,Transport Protocol,Description,Assignee,Contact,"
    b"Registration Date,Modification Date,Reference,Service Code,"
    b"Unauthorized Use Reported,Assignment Notes\r\n"
)

BAD_FILES = [
    ("empty.xml", b""),
    ("text.txt", b"hello world\n"),
    ("binary.dat", b"\xff\xfe\x00\x01garbage"),
    ("other.xml", b'<?xml version="1.0"?>\n<foo/>\n'),
    ("other-registry.xml", b'<registry xmlns="%s" id="protocol-numbers"/>' % NS),
    ("broken.xml", REG + b"\n<record><name>x</record>"),
    ("no-records.xml", REG + b"<updated>2026-01-01</updated></registry>"),
    ("bad-port.xml", REG + b"\n<record><name>x</name><number>99999</number></record></registry>"),
    ("bad-proto.xml", REG + b"\n<record><name>x</name><protocol>ddp</protocol><number>4</number>"
                            b"</record></registry>"),
    ("services", b"tcpmux\t1/tcp\n"),
    ("other.csv", b"name,port\r\nssh,22\r\n"),
    ("short-row.csv", CSV_HEAD + b"ssh,22,tcp\r\n"),
    ("header-only.csv", CSV_HEAD),
]


@pytest.mark.parametrize(("filename", "content"), BAD_FILES, ids=[f for f, _ in BAD_FILES])
def test_bad_registry_file(tmp_path: Path, filename: str, content: bytes) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(PolicyError) as info:
        registry.load(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert "\n" not in message
    assert info.value.location is not None and info.value.location.path == str(path)


@pytest.mark.parametrize(
    ("filename", "content", "where"),
    [
        ("broken.xml", REG + b"\n<record><name>x</record>", ":2:18:"),
        ("bad-port.xml", REG + b"\n\n<record><name>x</name><number>99999</number></record>"
                               b"</registry>", ":3:1:"),
        ("short-row.csv", CSV_HEAD + b'ssh,22,tcp,"two\nlines",,,,,,,,\r\nssh,22,udp\r\n', ":4:1:"),
    ],
)
def test_bad_registry_file_location(
    tmp_path: Path, filename: str, content: bytes, where: str
) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(PolicyError, match=where):
        registry.load(str(path))


def test_missing_registry_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.xml"
    with pytest.raises(PolicyError) as info:
        registry.load(str(path))
    assert str(info.value) == f"fwgen: cannot read registry {path}: No such file or directory"


def test_minimal_xml_and_csv(tmp_path: Path) -> None:
    xml = tmp_path / "mini.xml"
    xml.write_text(
        '<registry xmlns="http://www.iana.org/assignments" id="service-names-port-numbers">\n'
        "<updated>2030-01-02</updated>\n"
        "<record><name>Foo</name><protocol>tcp</protocol><number>10-12</number>"
        '<description>a<br/>b</description><xref type="person" data="P_Q"/></record>\n'
        "<record><name>bar</name><number>7</number><description>bar</description></record>\n"
        '<people><person id="P_Q"><name>P Q</name></person></people></registry>\n'
    )
    r = registry.load(str(xml))
    assert r.edition == "2030-01-02"
    assert r.records == (
        Record("Foo", 10, 12, "tcp", "a\nb", "P Q", "", ""),
        Record("bar", 7, 7, "", "bar", "", "", ""),
    )
    assert r.pairs("foo") == [("tcp", 10, 12)]
    assert r.pairs("BAR") == tcp_udp(7)
    csv = tmp_path / "mini.csv"
    csv.write_bytes(
        CSV_HEAD + b'Foo,10-12,tcp,"a\nb",[P_Q],[P_Q],2001-02,2020-03-04,,,,\r\n'
    )
    c = registry.load(str(csv))
    assert c.edition == "2020-03-04 (csv)"
    assert c.records == (Record("Foo", 10, 12, "tcp", "a\nb", "P_Q", "", "", "2001-02", "2020-03-04", ""),)


def test_bundled_reads_the_edition_without_parsing_the_records():
    """The header line alone gives edition and hash; the rows are parsed on first use and
    are exactly the document's records."""
    registry.bundled.cache_clear()
    reg = registry.bundled()
    assert "_rows" not in reg.__dict__
    doc = json.loads((DATA / "registry.json").read_bytes())
    assert (reg.edition, reg.sha256, reg.source_name) == (
        doc["meta"]["edition"], doc["meta"]["sha256"], doc["meta"]["source_name"]
    )
    assert len(reg) == len(doc["records"]) > 10000
    assert reg.pairs("mpshrsv") == [("tcp", 1261, 1261), ("udp", 1261, 1261)]


def test_csv_and_xml_agree_on_what_selectors_read(csv_reg: registry.Registry, reg: registry.Registry) -> None:
    """Dates and references, which the selectors read, come out the same from both formats
    (the CSV edition is older: compare the records both have)."""
    def key(r: Record) -> tuple[object, ...]:
        return (r.name, r.port_lo, r.port_hi, r.protocol)

    xml = {key(r): r for r in reg.records}
    both = [(r, xml[key(r)]) for r in csv_reg.records if key(r) in xml]
    assert len(both) > 14_000
    differ = [(c, x) for c, x in both
              if (c.registered, c.modified, bool(c.reference)) != (x.registered, x.modified, bool(x.reference))]
    # every difference is a record IANA modified after the CSV's edition (2026-04-24)
    assert differ and all(x.modified > "2026-04-24" and c.registered == x.registered for c, x in differ), differ
    assert reg.query("1261")[0][8:] == ("", "", "")
    assert reg.query("22")[0].reference == "[RFC4251]"
