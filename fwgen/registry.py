"""The IANA Service Name and Transport Protocol Port Number Registry, as fwgen uses it.

``bundled()`` loads the copy packaged in ``fwgen/data/registry.json`` (built from IANA's
XML by ``python -m fwgen.registry bundle XML_PATH``); ``load(path)`` reads an IANA XML or
CSV file given with ``--registry FILE``. Both give a ``Registry``: every record, plus
lookups by service name (``pairs``, ``canonical``, ``suggest``) and by port
(``names_at``, ``query``).

Semantics worth knowing (see the data README for the full list of quirks):

* Names are matched case-insensitively (the registry has no two names that differ only
  by case) and otherwise exactly: ``udt_os`` and ``udt-os`` are two different names.
* A row with a port and an empty protocol (the named ranges ``active-net`` ... and the
  ``boe-*`` rows) means both tcp and udp.
* One name may cover several ports (``http-alt`` is 591, 8008 and 8080) and a row may be
  a range (``x11`` is 6000-6063).

Loading is cheap: the bundle is one JSON document whose records stay plain lists; they
are parsed, and ``Record`` objects and the lookup indexes built, on first use.
"""

from __future__ import annotations

import functools
import gc
import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from fwgen.registry_format import BUNDLE_FORMAT, BUNDLE_PATH, COLUMNS

TCP_UDP = ("tcp", "udp")
# Display / sort order of protocols; '' (no protocol registered) last.
_PROTO_ORDER = {"tcp": 0, "udp": 1, "sctp": 2, "dccp": 3, "": 4}


class Record(NamedTuple):
    """One registry row (one ``<record>`` of the XML, one line of the CSV)."""

    name: str  # '' for unnamed rows (Unassigned/Reserved)
    port_lo: int | None  # None for portless rows
    port_hi: int | None
    protocol: str  # '', 'tcp', 'udp', 'sctp', 'dccp'
    description: str
    assignee: str
    unauthorized: str  # the "Unauthorized Use Reported" text, '' if none
    note: str
    registered: str = ""  # the Registration Date (YYYY-MM-DD or YYYY-MM), '' if none
    modified: str = ""  # the Modification Date, '' if none
    reference: str = ""  # the Reference column ([RFC...], URIs), '' if none


def _fuzzy_key(name: str) -> str:
    """The form names are compared in for suggestions: lower case, with _ / . as -."""
    return name.lower().replace("_", "-").replace("/", "-").replace(".", "-")


class Registry:
    """All records of one registry edition, with name and port lookups."""

    def __init__(
        self, edition: str, sha256: str, source_name: str,
        rows: Sequence[Sequence[Any]] | Callable[[], Sequence[Sequence[Any]]],
    ):
        """``rows`` are sequences in ``COLUMNS`` order (the bundle's and the parsers' form),
        or a function returning them, called on first use: a build whose policy names no
        service needs only the edition and hash, never the 14,000 rows."""
        self.edition = edition
        self.sha256 = sha256
        self.source_name = source_name
        if callable(rows):
            self._read_rows = rows
        else:
            self.__dict__["_rows"] = rows

    @functools.cached_property
    def _rows(self) -> Sequence[Sequence[Any]]:
        return self._read_rows()

    @functools.cached_property
    def derived(self) -> dict[str, Any]:
        """A memo for values other modules derive from this (immutable) registry, each
        under a key naming it (``resolve.entry_pairs``: resolved port entries)."""
        return {}

    def __repr__(self) -> str:
        return f"<Registry {self.source_name} edition {self.edition}, {len(self._rows)} records>"

    def __len__(self) -> int:
        return len(self._rows)

    # ------------------------------------------------------------------ lazy structures

    @functools.cached_property
    def records(self) -> tuple[Record, ...]:
        return tuple(Record(*row) for row in self._rows)

    @functools.cached_property
    def _by_name(self) -> dict[str, list[int]]:
        """Lower-cased name -> indexes of its rows, in file order."""
        index: dict[str, list[int]] = {}
        for i, row in enumerate(self._rows):
            if row[0]:
                index.setdefault(row[0].lower(), []).append(i)
        return index

    @functools.cached_property
    def _fuzzy(self) -> dict[str, list[str]]:
        """Fuzzy key -> the names (with a tcp/udp port) that have it, sorted."""
        keys: dict[str, set[str]] = {}
        for row in self._rows:
            if row[0] and row[1] is not None and (row[3] in TCP_UDP or row[3] == ""):
                keys.setdefault(_fuzzy_key(row[0]), set()).add(row[0])
        return {k: sorted(v) for k, v in keys.items()}

    @functools.cached_property
    def _by_port(self) -> tuple[dict[tuple[str, int], set[str]], list[tuple[str, int, int, str]]]:
        """(protocol, port) -> names of single-port rows; and the named range rows."""
        single: dict[tuple[str, int], set[str]] = {}
        ranges: list[tuple[str, int, int, str]] = []
        for name, lo, hi, proto, *_ in self._rows:
            if not name or lo is None:
                continue
            for p in (TCP_UDP if proto == "" else (proto,)):
                if lo == hi:
                    single.setdefault((p, lo), set()).add(name)
                else:
                    ranges.append((p, lo, hi, name))
        return single, ranges

    def _record(self, i: int) -> Record:
        if "records" in self.__dict__:
            return self.records[i]
        return Record(*self._rows[i])

    # ------------------------------------------------------------------ lookups

    def pairs(self, name: str) -> list[tuple[str, int, int]] | None:
        """Case-insensitive. The (protocol, lo, hi) tcp/udp pairs the name means, sorted,
        deduplicated; rows with a port and an empty protocol give both tcp and udp. None if
        the name is not in the registry at all; [] if it is known but has no tcp/udp port
        (e.g. sctp-only, or portless)."""
        rows = self._by_name.get(name.lower())
        if rows is None:
            return None
        out: set[tuple[str, int, int]] = set()
        for i in rows:
            _, lo, hi, proto = self._rows[i][:4]
            if lo is None:
                continue
            if proto in TCP_UDP:
                out.add((proto, lo, hi))
            elif proto == "":
                out.add(("tcp", lo, hi))
                out.add(("udp", lo, hi))
        return sorted(out)

    def canonical(self, name: str) -> str | None:
        """The registry's spelling of ``name`` given in any case; None if unknown."""
        rows = self._by_name.get(name.lower())
        return None if rows is None else self._rows[rows[0]][0]

    def suggest(self, name: str, limit: int = 3) -> list[str]:
        """Close names for a typo ('mpshrv' -> ['mpshrsv']): case-insensitive, also treating
        _ / . as -, only names that have a tcp/udp port. Best match first; ties by name."""
        from difflib import SequenceMatcher

        key = _fuzzy_key(name)
        matcher = SequenceMatcher(autojunk=False)
        matcher.set_seq2(key)
        scored: list[tuple[float, str]] = []
        for cand in self._fuzzy:
            matcher.set_seq1(cand)
            if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
                score = matcher.ratio()
                if score >= 0.6:
                    scored.append((-score, cand))
        scored.sort()
        out: list[str] = []
        for _, cand in scored:
            for n in self._fuzzy[cand]:
                if len(out) < limit:
                    out.append(n)
        return out

    def names_at(self, protocol: str, port: int) -> list[str]:
        """Names of the records for ``protocol`` covering ``port`` (ranges too), sorted, unique.
        A row with an empty protocol counts for tcp and for udp."""
        protocol = protocol.lower()
        single, ranges = self._by_port
        names = set(single.get((protocol, port), ()))
        names.update(n for p, lo, hi, n in ranges if p == protocol and lo <= port <= hi)
        return sorted(names)

    def query(self, text: str) -> list[Record]:
        """For ``fwgen ports QUERY``: a port number ('1274'), a range ('6000-6010': rows
        overlapping it), or a name (case-insensitive exact match; if there is none, the
        names containing the text). All protocols, unnamed rows included for port queries.
        Sorted by port (portless rows last), then protocol (tcp, udp, sctp, dccp, none).
        Never raises: an empty query, a reversed range or a port above 65535 matches nothing."""
        text = text.strip()
        lo_s, dash, hi_s = text.partition("-")
        lo_s, hi_s = lo_s.strip(), hi_s.strip()
        if not text:
            return []
        if lo_s.isdigit() and (not dash or hi_s.isdigit()) and lo_s.isascii() and hi_s.isascii():
            lo = int(lo_s)
            hi = int(hi_s) if dash else lo
            if lo > hi:
                return []
            hits = [
                i for i, row in enumerate(self._rows)
                if row[1] is not None and row[1] <= hi and row[2] >= lo
            ]
        else:
            exact = self._by_name.get(text.lower())
            if exact is not None:
                hits = list(exact)
            else:
                needle = text.lower()
                hits = [i for i, row in enumerate(self._rows) if needle in row[0].lower()]

        def order(i: int) -> tuple[Any, ...]:
            name, lo, hi, proto, *_ = self._rows[i]
            proto_rank = _PROTO_ORDER.get(proto, 9)
            return (lo is None, lo or 0, hi or 0, proto_rank, proto, name.lower(), i)

        return [self._record(i) for i in sorted(hits, key=order)]


# ---------------------------------------------------------------------- loading


@functools.cache
def bundled() -> Registry:
    """The registry packaged with fwgen (cached). Its rows are parsed on first use."""
    with open(BUNDLE_PATH, "rb") as f:
        data = f.read()
    # The bundle's first line is the whole document but its records, so the edition is
    # known without parsing them (see registry_sources.bundle_bytes).
    head = data.partition(b"\n")[0]
    try:
        header = json.loads(head + b"]}") if head.endswith(b'"records":[') else _parse(data)
    except ValueError:
        header = _parse(data)
    if header.get("format") != BUNDLE_FORMAT or tuple(header.get("columns", ())) != COLUMNS:
        raise RuntimeError(f"{BUNDLE_PATH}: unsupported bundle format; rebuild it with "
                           "python -m fwgen.registry bundle XML_PATH")
    meta = header["meta"]
    return Registry(meta["edition"], meta["sha256"], meta["source_name"], lambda: _parse(data)["records"])


def _parse(data: bytes) -> dict[str, Any]:
    # The bundle is ~130,000 small objects; pausing the cyclic GC while they are created
    # roughly halves the load time (none of them can be part of a cycle).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        doc: dict[str, Any] = json.loads(data)
    finally:
        if gc_was_enabled:
            gc.enable()
    return doc


def load(path: str) -> Registry:
    """Read an IANA service-names-port-numbers XML or CSV file (detected by content).

    Raises ``PolicyError`` (located in ``path``) if it is neither."""
    from fwgen.registry_sources import parse_file

    parsed = parse_file(path)
    return Registry(parsed.edition, parsed.sha256, parsed.source_name, parsed.rows)


# ---------------------------------------------------------------------- display


def _port_text(lo: int | None, hi: int | None) -> str:
    if lo is None:
        return "-"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _field(label: str, value: str) -> list[str]:
    first, *rest = value.split("\n")
    return [f"  {label}: {first}"] + [f"    {line}" for line in rest]


def format_records(records: Sequence[Record]) -> str:
    """Human-readable text for ``fwgen ports``: one block per service and port, rows that
    differ only in protocol merged (``tcp,udp``). Every line ends with a newline; '' for
    no records.

        mpshrsv  1261  tcp,udp  mpshrsv
          assignee: Makoto Ikeyama
    """
    groups: dict[tuple[Any, ...], list[str]] = {}
    for r in records:
        key = (r.name, r.port_lo, r.port_hi, r.description, r.assignee, r.unauthorized, r.note)
        protos = groups.setdefault(key, [])
        if r.protocol not in protos:
            protos.append(r.protocol)
    heads = [
        (name or "(unassigned)", _port_text(lo, hi), ",".join(p or "-" for p in protos))
        for (name, lo, hi, *_), protos in groups.items()
    ]
    widths = [max((len(h[c]) for h in heads), default=0) for c in range(3)]
    lines: list[str] = []
    for head, (key, protos) in zip(heads, groups.items(), strict=True):
        name, lo, _hi, desc, assignee, unauthorized, note = key
        first, *more = desc.split("\n")
        cols = [text.ljust(width) for text, width in zip(head, widths, strict=True)]
        lines.append("  ".join(cols + [first]).rstrip())
        lines.extend(f"    {line}" for line in more)
        if name and lo is not None and "" in protos:
            lines.append("  protocol: none registered; fwgen treats it as tcp and udp")
        if assignee:
            lines += _field("assignee", assignee)
        if unauthorized:
            lines += _field("unauthorized use reported", unauthorized)
        if note:
            lines += _field("note", note)
    return "".join(line + "\n" for line in lines)


if __name__ == "__main__":
    import sys

    from fwgen.registry_sources import main

    sys.exit(main())
