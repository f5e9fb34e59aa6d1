"""Parsers for IANA's service-names-port-numbers files (XML and CSV), and the bundler.

Only ``fwgen.registry.load`` (``--registry FILE``) and the bundling step
(``python -m fwgen.registry bundle XML_PATH``) import this module; the packaged
registry is read from the pre-built bundle and never touches a parser.

Both parsers produce the same thing: a ``Parsed`` holding one ``Row`` per registry
record, in file order, with text fields normalized the same way (see ``clean``), so a
record read from the XML and the same record read from the CSV compare equal except
for the assignee (the XML maps person ids to names; the CSV only has the ids).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import re
import sys
from dataclasses import dataclass
from xml.parsers import expat

from fwgen.errors import Location, PolicyError
from fwgen.registry_format import BUNDLE_FORMAT, BUNDLE_PATH, COLUMNS, SOURCE_COPY_PATH

NS = "http://www.iana.org/assignments"
REGISTRY_ID = "service-names-port-numbers"
PROTOCOLS = ("", "tcp", "udp", "sctp", "dccp")
CSV_HEADER = (
    "Service Name,Port Number,Transport Protocol,Description,Assignee,Contact,"
    "Registration Date,Modification Date,Reference,Service Code,"
    "Unauthorized Use Reported,Assignment Notes"
).split(",")

# One record in COLUMNS order: (name, port_lo, port_hi, protocol, description, assignee,
# unauthorized, note, registered, modified, reference)
Row = tuple[str, "int | None", "int | None", str, str, str, str, str, str, str, str]

_PORT_RE = re.compile(r"(\d+)(?:-(\d+))?\Z")


@dataclass(frozen=True)
class Parsed:
    edition: str
    sha256: str
    source_name: str
    rows: list[Row]


def clean(text: str) -> str:
    """Normalize a text field: collapse whitespace within lines, drop blank lines."""
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _port(text: str, where: Location) -> tuple[int | None, int | None]:
    text = text.strip()
    if not text:
        return None, None
    m = _PORT_RE.match(text)
    if m:
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if lo <= hi <= 65535:
            return lo, hi
    raise PolicyError(where, f"bad port number {text!r} in IANA registry file")


def _protocol(text: str, where: Location) -> str:
    proto = text.strip().lower()
    if proto not in PROTOCOLS:
        raise PolicyError(
            where, f"unknown transport protocol {text.strip()!r} in IANA registry file"
        )
    return proto


def _not_a_registry(path: str, line: int = 1, col: int = 1, why: str = "") -> PolicyError:
    msg = "not an IANA service-names-port-numbers XML or CSV file"
    return PolicyError(Location(path, line, col), f"{msg}: {why}" if why else msg)


# --------------------------------------------------------------------------- detection


def parse_bytes(data: bytes, path: str, source_name: str | None = None) -> Parsed:
    """Parse an IANA registry file's bytes; XML or CSV is detected from the content.

    ``path`` is used in error locations; ``source_name`` (default: its basename) is recorded.
    """
    digest = hashlib.sha256(data).hexdigest()
    name = source_name or os.path.basename(path)
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return parse_xml(data, path, digest, name)
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    if first.split(b",", 1)[0].strip(b'"') == b"Service Name":
        return parse_csv(data, path, digest, name)
    if not data.strip():
        raise _not_a_registry(path, why="the file is empty")
    raise _not_a_registry(
        path, why="expected an XML document or the CSV header 'Service Name,Port Number,...'"
    )


def parse_file(path: str) -> Parsed:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PolicyError(None, f"fwgen: cannot read registry {path}: {e.strerror or e}") from None
    return parse_bytes(data, path)


# --------------------------------------------------------------------------- XML

_TEXT_FIELDS = frozenset({"name", "number", "protocol", "description", "note", "unauthorized"})


def _xref_text(attrs: dict[str, str]) -> str:
    kind, data = attrs.get("type", ""), attrs.get("data", "")
    if not data:
        return ""
    if kind == "rfc":
        return f"[{data.upper()}]"
    return f"[{data}]"


def parse_xml(data: bytes, path: str, digest: str, name: str) -> Parsed:
    parser = expat.ParserCreate(namespace_separator="}")
    prefix = NS + "}"
    stack: list[str] = []
    edition: list[str] = []
    # per record: its line, its text fields, its assignee ids, its other person ids,
    # its references (the xrefs of the record itself that name no person)
    raw: list[tuple[int, dict[str, str], list[str], list[str], list[str]]] = []
    people: dict[str, str] = {}
    rec: dict[str, str] | None = None
    assignees: list[str] = []
    contacts: list[str] = []
    references: list[str] = []
    ref_text: list[str] | None = None  # text of a record-level <xref type="text"> being read
    buf: list[str] | None = None  # text of the record field being read
    person_id: str | None = None
    person: dict[str, str] = {}
    top_text: list[str] | None = None  # text of the top-level <updated>
    rec_line = 0

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal rec, assignees, contacts, references, ref_text, buf, person_id, person, top_text, rec_line
        local = tag[len(prefix):] if tag.startswith(prefix) else tag
        depth = len(stack)
        stack.append(local)
        if depth == 0:
            if local != "registry" or not tag.startswith(prefix) or attrs.get("id") != REGISTRY_ID:
                found = f"<{local} id={attrs['id']!r}>" if "id" in attrs else f"<{local}>"
                raise _not_a_registry(
                    path, parser.CurrentLineNumber, parser.CurrentColumnNumber + 1,
                    f"root element is {found}, expected <registry id={REGISTRY_ID!r}> "
                    f"in namespace {NS}",
                )
        elif depth == 1:
            if local == "record":
                rec, assignees, contacts, references = {}, [], [], []
                rec["registered"] = attrs.get("date", "").strip()
                rec["modified"] = attrs.get("updated", "").strip()
                rec_line = parser.CurrentLineNumber
            elif local == "updated":
                top_text = []
        elif rec is not None:
            if buf is not None:  # markup inside a text field
                if local == "br":
                    buf.append("\n")
                elif local == "paragraph":
                    buf.append("\n")
                elif local == "xref":
                    buf.append(_xref_text(attrs))
            elif depth == 2 and local in _TEXT_FIELDS:
                buf = []
            elif local == "xref" and attrs.get("type") == "person" and attrs.get("data"):
                (assignees if "assignee" in stack else contacts).append(attrs["data"])
            elif depth == 2 and local == "xref":
                if _xref_text(attrs):
                    references.append(_xref_text(attrs))
                else:  # <xref type="text">ISO/IEC 13818-6 ...</xref>
                    ref_text = []
        elif depth == 2 and stack[1] == "people" and local == "person":
            person_id, person = attrs.get("id", ""), {}
        elif depth == 3 and person_id is not None and local in ("name", "org"):
            top_text = []

    def end(tag: str) -> None:
        nonlocal rec, buf, ref_text, person_id, top_text
        local = stack.pop()
        depth = len(stack)
        if rec is not None:
            if ref_text is not None and depth == 2:  # </xref> of a record-level text reference
                if "".join(ref_text).strip():
                    references.append(" ".join("".join(ref_text).split()))
                ref_text = None
            elif depth == 1:  # </record>
                raw.append((rec_line, rec, assignees, contacts, references))
                rec = None
            elif depth == 2 and buf is not None:
                rec[local] = "".join(buf)
                buf = None
            elif buf is not None and local == "paragraph":
                buf.append("\n")
        elif depth == 1 and local == "updated" and top_text is not None:
            edition.append("".join(top_text).strip())
            top_text = None
        elif depth == 3 and person_id is not None and top_text is not None:
            person[local] = " ".join("".join(top_text).split())
            top_text = None
        elif depth == 2 and person_id is not None:
            people[person_id] = person.get("name") or person.get("org") or person_id
            person_id = None

    def text(s: str) -> None:
        if buf is not None:  # raw newlines are source wrapping; <br/> and <paragraph> break lines
            buf.append(s.replace("\n", " "))
        elif ref_text is not None:
            ref_text.append(s)
        elif top_text is not None:
            top_text.append(s)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        why = f"invalid XML: {expat.ErrorString(e.code)}"
        raise _not_a_registry(path, e.lineno, e.offset + 1, why) from None
    if not raw:
        raise _not_a_registry(path, why="the registry has no <record> elements")

    rows: list[Row] = []
    for line, f, assignee_ids, contact_ids, refs in raw:
        where = Location(path, line, 1)
        lo, hi = _port(f.get("number", ""), where)
        ids = assignee_ids or contact_ids  # no <assignee>: the contact is the assignee
        rows.append((
            clean(f.get("name", "")),
            lo,
            hi,
            _protocol(f.get("protocol", ""), where),
            clean(f.get("description", "")),
            "; ".join(people.get(i, i) for i in ids),
            clean(f.get("unauthorized", "")),
            clean(f.get("note", "")),
            f["registered"],
            f["modified"],
            clean("\n".join(refs)),
        ))
    return Parsed(edition[0] if edition and edition[0] else "unknown", digest, name, rows)


# --------------------------------------------------------------------------- CSV

_ID_RE = re.compile(r"\[([^\]]+)\]")


def parse_csv(data: bytes, path: str, digest: str, name: str) -> Parsed:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise _not_a_registry(path, line, col, "the file is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[Row] = []
    newest = ""
    line = 1
    try:
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != CSV_HEADER:
            raise _not_a_registry(
                path, why="the CSV header is not IANA's 'Service Name,Port Number,...'"
            )
        line = reader.line_num + 1
        for fields in reader:
            where = Location(path, line, 1)
            line = reader.line_num + 1
            if not any(fields):
                continue
            if len(fields) != len(CSV_HEADER):
                n = len(CSV_HEADER)
                raise PolicyError(where, f"expected {n} CSV fields, found {len(fields)}")
            svc, number, proto, desc, assignee, _contact, reg, mod, ref, _sc, unauth, note = fields
            lo, hi = _port(number, where)
            ids = _ID_RE.findall(assignee)
            newest = max(newest, reg.strip(), mod.strip())
            rows.append((
                clean(svc),
                lo,
                hi,
                _protocol(proto, where),
                clean(desc),
                "; ".join(i.strip() for i in ids) if ids else clean(assignee),
                clean(unauth),
                clean(note),
                reg.strip(),
                mod.strip(),
                clean(ref),
            ))
    except csv.Error as e:
        raise PolicyError(Location(path, line, 1), f"malformed CSV: {e}") from None
    if not rows:
        raise _not_a_registry(path, why="the CSV has no data rows")
    return Parsed(f"{newest} (csv)" if newest else "csv", digest, name, rows)


# --------------------------------------------------------------------------- bundle


def bundle_bytes(parsed: Parsed) -> bytes:
    """The bundle: UTF-8 JSON, one record per line (so registry updates diff well). The
    first line is everything but the records, ending in ``"records":[``, so ``bundled()``
    reads the edition without parsing the records.

    Deterministic: keys sorted, no timestamps, nothing but the parsed data.
    """
    meta = {"edition": parsed.edition, "sha256": parsed.sha256, "source_name": parsed.source_name}

    def dump(value: object) -> str:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    records = ",\n".join(dump(list(row)) for row in parsed.rows)
    text = (
        f'{{"columns":{dump(list(COLUMNS))},"format":{BUNDLE_FORMAT},"meta":{dump(meta)},'
        f'"records":[\n{records}\n]}}\n'
    )
    return text.encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    """gzip with no file name and mtime 0, so the output depends only on ``data``."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return out.getvalue()


def read_source(path: str) -> tuple[bytes, str]:
    """The source bytes and basename; a ``.gz`` copy is decompressed and named without ``.gz``."""
    with open(path, "rb") as f:
        data = f.read()
    name = os.path.basename(path)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
        name = name.removesuffix(".gz")
    return data, name


def build_bundle(data: bytes, source_name: str, path: str | None = None) -> bytes:
    """The bundle for the registry file ``data`` whose file is named ``source_name``."""
    return bundle_bytes(parse_bytes(data, path or source_name, source_name))


def main(argv: list[str] | None = None) -> int:
    """``python -m fwgen.registry bundle XML_PATH``: rebuild ``fwgen/data``.

    Writes the bundle and a gzipped copy of the source (which tests rebuild from).
    ``XML_PATH`` may itself be that ``.gz`` copy.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "bundle":
        print("usage: python -m fwgen.registry bundle XML_PATH", file=sys.stderr)
        return 2
    try:
        data, name = read_source(args[1])
        bundle = build_bundle(data, name, args[1])
    except OSError as e:
        print(f"{args[1]}: {e.strerror or e}", file=sys.stderr)
        return 1
    except PolicyError as e:
        print(e, file=sys.stderr)
        return 1
    with open(BUNDLE_PATH, "wb") as f:
        f.write(bundle)
    copy = gzip_bytes(data)
    with open(SOURCE_COPY_PATH, "wb") as f:
        f.write(copy)
    print(f"wrote {BUNDLE_PATH} ({len(bundle)} bytes) and {SOURCE_COPY_PATH} ({len(copy)} bytes)")
    return 0
