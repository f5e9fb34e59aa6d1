"""What a host recorded, read for ``fwgen report``: kernel log lines and firewall logs in
the formats hosts keep them, each detected from its content, and saved counters.

Log formats (one per input; the first line that is in one of them decides):

- ``journalctl -k -o json``: one JSON object a line; ``MESSAGE`` (a string, or the
  byte array journald writes for text that is not UTF-8), ``__REALTIME_TIMESTAMP``
  (microseconds since the epoch);
- syslog ``kern.log``: ``2026-12-02T06:07:58.123456+00:00 HOST kernel: MESSAGE``
  (rsyslog's RFC 3339 form, Debian's default) or ``Dec  2 06:07:58 HOST kernel:
  MESSAGE`` (the traditional form, which has no year: the newest year that does not put
  the line after the file's modification time);
- ``dmesg``: ``[  727.999017] MESSAGE`` (seconds since boot: no wall-clock time; with
  ``-x``, ``kern  :warn  : `` before it),
  ``dmesg -T``'s ``[Wed Dec  2 06:07:58 2026] MESSAGE`` (local time), ``dmesg
  --time-format iso``'s ``2026-12-02T06:07:58,123456+00:00 MESSAGE``, and ``dmesg -t``'s
  bare ``MESSAGE`` (no time at all);
- Windows ``pfirewall.log``: the W3C extended format, ``#Fields:`` naming the columns.

Times without a zone (``dmesg -T``, traditional syslog, pfirewall.log) are read in the
local time zone of the machine running the report. Gzipped files (``kern.log.2.gz``) are
read whole; ``-`` is standard input.
"""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

KERNEL_FORMATS = ("journal", "kern.log", "dmesg")
FORMAT_NAMES = {
    "journal": "journalctl -k -o json",
    "kern.log": "syslog kern.log",
    "dmesg": "dmesg",
    "pfirewall": "Windows pfirewall.log",
    "nft": "nft -j list counters",
    "iptables": "iptables-save -c",
}


class InputError(Exception):
    """An input that cannot be read at all: the report prints ``str()`` and exits 1."""


class KernelLine(NamedTuple):
    """One kernel log message: when (``None`` when the source has no wall-clock time),
    seconds since boot where the source gives only that, and where it was read."""

    when: datetime | None
    uptime: float | None
    message: str
    line: int


class WindowsLine(NamedTuple):
    """One pfirewall.log connection line, its fields by ``#Fields:`` name."""

    when: datetime | None
    fields: dict[str, str]
    line: int


class Parsed(NamedTuple):
    format: str  # a FORMAT_NAMES key, or "" when no line was in a known format
    kernel: list[KernelLine]
    windows: list[WindowsLine]
    lines: int  # non-empty lines read
    unparsed: list[int]  # the line numbers in no known shape


def read_bytes(path: str, stdin: bytes | None = None) -> str:
    """A file's text (gunzipped when it is gzip), or ``stdin`` for ``-``."""
    try:
        if path == "-":
            data = stdin if stdin is not None else b""
        else:
            with open(path, "rb") as handle:
                data = handle.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise InputError(f"{path}: cannot read: {reason}") from None
    return data.decode("utf-8", errors="replace")


_UPTIME = re.compile(r"\[\s*(\d+)\.(\d+)\] ?")
_DMESG_T = re.compile(r"\[([A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\] ?")
_ISO = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)")
_SYSLOG_ISO = re.compile(_ISO.pattern + r" (\S+) kernel: ?")
_SYSLOG_OLD = re.compile(r"([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (\S+) kernel: ?")
_DMESG_ISO = re.compile(_ISO.pattern + r" ")
# dmesg -x (--decode): "kern  :warn  : " before the time
_DMESG_LEVEL = re.compile(r"[a-z]+ *:[a-z]+ *: ")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), start=1)}
_KERNEL_FIELDS = re.compile(r"(?:^|\s)(?:IN|OUT)=")


def parse_iso(text: str) -> datetime:
    """An ISO 8601 time; without a zone, local time. ``ValueError`` when it is none."""
    found = datetime.fromisoformat(text.replace(",", ".").replace("Z", "+00:00"))
    return found if found.tzinfo else found.astimezone()


def _without_level(text: str) -> str:
    level = _DMESG_LEVEL.match(text)
    return text[level.end():] if level else text


def _strip_uptime(message: str) -> tuple[float | None, str]:
    m = _UPTIME.match(message)
    if m:
        return float(f"{m.group(1)}.{m.group(2)}"), message[m.end():]
    return None, message


def _syslog_old(text: str, reference: datetime) -> datetime:
    month, day, clock = text[:3], int(text[4:6]), text[7:]
    hour, minute, second = (int(x) for x in clock.split(":"))
    year = reference.year
    when = datetime(year, _MONTHS[month], day, hour, minute, second).astimezone()
    if when > reference + timedelta(days=1):  # a December line in a file written in January
        when = when.replace(year=year - 1)
    return when


def _kernel_line(fmt: str, text: str, number: int, reference: datetime, bare: bool = False) -> KernelLine | None:
    """One line of a kernel log format, or None when it is not in that format's shape
    (``bare``: dmesg -t output, where any line is a message)."""
    if fmt == "journal":
        try:
            entry = json.loads(text)
        except ValueError:
            return None
        if not isinstance(entry, dict) or "MESSAGE" not in entry:
            return None
        message = entry["MESSAGE"]
        if isinstance(message, list) and all(isinstance(b, int) and 0 <= b < 256 for b in message):
            message = bytes(message).decode("utf-8", errors="replace")
        stamp = entry.get("__REALTIME_TIMESTAMP")
        if not isinstance(message, str) or not (isinstance(stamp, str) and stamp.isdigit()):
            return None
        when = datetime.fromtimestamp(int(stamp) / 1e6, UTC)
        uptime, message = _strip_uptime(message)
        return KernelLine(when, uptime, message, number)
    if fmt == "kern.log":
        m = _SYSLOG_ISO.match(text)
        if m:
            try:
                when = parse_iso(m.group(1))
            except ValueError:
                return None
        else:
            m = _SYSLOG_OLD.match(text)
            if not m or m.group(1)[:3] not in _MONTHS:
                return None
            try:
                when = _syslog_old(m.group(1), reference)
            except ValueError:
                return None
        uptime, message = _strip_uptime(text[m.end():])
        return KernelLine(when, uptime, message, number)
    body = _without_level(text)  # dmesg
    m = _UPTIME.match(body)
    if m:
        return KernelLine(None, float(f"{m.group(1)}.{m.group(2)}"), body[m.end():], number)
    m = _DMESG_T.match(body)
    if m:
        try:
            return KernelLine(datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y").astimezone(), None,
                              body[m.end():], number)
        except ValueError:
            return None
    m = _DMESG_ISO.match(body)
    if m:
        try:
            return KernelLine(parse_iso(m.group(1)), None, body[m.end():], number)
        except ValueError:
            return None
    if bare or _KERNEL_FIELDS.search(body):  # dmesg -t: every line a message without a time
        return KernelLine(None, None, body, number)
    return None


def _detect(text: str) -> str:
    """The format of one line, or "" when it is in none."""
    if text.startswith("{"):
        return "journal"
    if text.startswith("#Version:") or text.startswith("#Fields:") or text.startswith("#Software:"):
        return "pfirewall"
    if _SYSLOG_ISO.match(text) or _SYSLOG_OLD.match(text):
        return "kern.log"
    body = _without_level(text)
    if _UPTIME.match(body) or _DMESG_T.match(body) or _DMESG_ISO.match(body) or _KERNEL_FIELDS.search(body):
        return "dmesg"
    return ""


def parse_log(text: str, reference: datetime) -> Parsed:
    """Every line of one log input, in the format its first recognisable line is in.
    ``reference``: the newest time a line can have (a file's modification time), for
    syslog's traditional lines, which have no year."""
    lines = text.splitlines()
    first = next((line.strip() for line in lines if _detect(line.strip())), "")
    fmt = _detect(first)
    opening = _kernel_line(fmt, first, 0, reference) if fmt == "dmesg" else None
    bare = opening is not None and opening.when is None and opening.uptime is None
    kernel: list[KernelLine] = []
    windows: list[WindowsLine] = []
    unparsed: list[int] = []
    count = 0
    columns: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        count += 1
        if fmt == "pfirewall":
            if line.startswith("#"):
                if line.startswith("#Fields:"):
                    columns = line[len("#Fields:"):].split()
                continue
            found_w = _windows_line(columns, line, number)
            if found_w is None:
                unparsed.append(number)
            else:
                windows.append(found_w)
            continue
        found = _kernel_line(fmt, line, number, reference, bare) if fmt else None
        if found is None:
            unparsed.append(number)
        else:
            kernel.append(found)
    return Parsed(fmt, kernel, windows, count, unparsed)


_W3C_NEEDED = ("action", "protocol", "src-ip", "dst-ip")


def _windows_line(columns: list[str], line: str, number: int) -> WindowsLine | None:
    values = line.split()
    if not columns or not all(c in columns for c in _W3C_NEEDED):
        return None
    if len(values) < len(columns) - 1 or len(values) > len(columns):  # pid is the optional last column
        return None
    fields = dict(zip(columns, values, strict=False))
    when = None
    if "date" in fields and "time" in fields:
        try:
            when = parse_iso(f"{fields['date']}T{fields['time']}")
        except ValueError:
            return None
    return WindowsLine(when, fields, number)


# --------------------------------------------------------------------------- counters


class Counter(NamedTuple):
    """One saved counter: nft's named counter (``table``, ``name``) or an iptables rule
    line (``table``: the chain, ``name``: the line's target, ``rule``: the line)."""

    kind: str  # "nft" | "iptables"
    table: str
    name: str
    packets: int
    rule: str = ""


# fwgen's rules live in filter; the judging of published ports (published_ports: enforce)
# in mangle. Chain names are unique across the two (fwgen-published, fwgen-NAME-pub...).
COUNTED_TABLES = ("filter", "mangle")


def parse_counters(path: str, text: str) -> tuple[str, list[Counter]]:
    """``nft -j list counters`` or ``iptables-save -c`` output (detected) as counters;
    ``InputError`` (located) when it is neither."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError as error:
            line = getattr(error, "lineno", 1)
            col = getattr(error, "colno", 1)
            raise InputError(f"{path}:{line}:{col}: not valid JSON ({getattr(error, 'msg', error)})") from None
        items = document.get("nftables") if isinstance(document, dict) else None
        if not isinstance(items, list):
            raise InputError(f"{path}:1:1: not nft -j output: no \"nftables\" list")
        counters = []
        for item in items:
            found = item.get("counter") if isinstance(item, dict) else None
            if isinstance(found, dict) and isinstance(found.get("packets"), int):
                counters.append(Counter("nft", f"{found.get('family', '')} {found.get('table', '')}",
                                        str(found.get("name", "")), found["packets"]))
        return "nft", counters
    counters = []
    table = ""
    seen_table = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("*"):
            table, seen_table = line[1:].strip(), True
            continue
        m = re.match(r"\[(\d+):(\d+)\] -A (\S+) (.*)$", line)
        if m and table in COUNTED_TABLES:
            rest = f" {m.group(4)}"
            target = rest.rsplit(" -j ", 1)[1].split()[0] if " -j " in rest else ""
            counters.append(Counter("iptables", m.group(3), target, int(m.group(1)), m.group(4)))
        elif line.startswith("-A ") and table in COUNTED_TABLES:
            raise InputError(f"{path}:{number}:1: a rule line without counters: save with iptables-save -c")
    if not seen_table:
        raise InputError(f"{path}:1:1: neither nft -j list counters nor iptables-save -c output")
    return "iptables", counters
