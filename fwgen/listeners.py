"""What listens on a host, read from ``ss -Htulpn`` (Linux) or ``netstat -ano`` (Windows)
output, for ``fwgen audit``. The format is detected from the content.

``ss -Htulpn``: ``NETID STATE RECV-Q SEND-Q LOCAL:PORT PEER:PORT [users:(("name",pid=N,fd=M),...)]``;
the local address is ``0.0.0.0`` (IPv4, any), ``[::]`` (IPv6 only, any), ``*`` (both
families), an address, each with an optional ``%DEVICE`` (bound to that interface).
``netstat -ano``: Microsoft's ``Proto  Local Address  Foreign Address  State  PID``, TCP
rows LISTENING, UDP rows without a state; ``0.0.0.0`` and ``[::]`` are the wildcards and
an IPv6 ``%N`` is a zone index, not an interface name. Connections that are not
listening (ESTABLISHED, TIME_WAIT, ...) are skipped, as are the headers; any other line
is a located error, never a guess.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from fwgen.errors import Location, PolicyError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Process(NamedTuple):
    name: str  # '' when the output names none (netstat -ano gives the pid only)
    pid: int | None


class Listener(NamedTuple):
    """One listening socket."""

    protocol: str  # tcp | udp
    address: str  # as the tool printed it, without brackets and %DEVICE: 0.0.0.0, ::, *, 192.0.2.1
    local: Address | None  # None: any address (of ``families``)
    families: tuple[int, ...]  # (4,), (6,) or (4, 6)
    port: int
    interface: str | None  # ss: bound to this device (%eth0); None: any
    processes: tuple[Process, ...]
    location: Location  # the line it was read from

    @property
    def endpoint(self) -> str:
        """As ss writes it: ``0.0.0.0:22``, ``[::]:22``, ``*:80``, ``0.0.0.0%lo:68``, ``[fe80::1%eth0]:546``."""
        host = self.address + (f"%{self.interface}" if self.interface else "")
        return f"[{host}]:{self.port}" if ":" in self.address else f"{host}:{self.port}"

    @property
    def loopback(self) -> bool:
        return self.local is not None and self.local.is_loopback or self.interface == "lo"


class Parsed(NamedTuple):
    format: str  # "ss -Htulpn" | "netstat -ano"
    listeners: tuple[Listener, ...]
    skipped: int  # rows that are not listening sockets (netstat's connections)


_SS_USER = re.compile(r'\("((?:[^"\\]|\\.)*)",pid=([0-9]+)(?:,fd=[0-9]+)?\)')
_SS_NETIDS = ("tcp", "udp")
_SS_LISTENING = {"tcp": "LISTEN", "udp": "UNCONN"}
_NETSTAT_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "TCPV6": "tcp", "UDPV6": "udp"}
_NETSTAT_HEADERS = ("active connections", "proto ")


def decode(data: bytes, path: str) -> str:
    """The text of a listeners file: UTF-8, or UTF-16 with a BOM (what PowerShell's
    ``netstat -ano > file`` writes)."""
    try:
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        text = data[: error.start]
        line = text.count(b"\n") + 1
        col = len(text) - (text.rfind(b"\n") + 1) + 1
        raise PolicyError(Location(path, line, col), "not text (UTF-8 or UTF-16): not ss or netstat output") from None


def parse(text: str, path: str) -> Parsed:
    """Listeners from ``ss -Htulpn`` or ``netstat -ano`` output (detected from the first
    line that is not blank). Empty output is no listeners."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    first = next(((n, line) for n, line in enumerate(lines, 1) if line.strip()), None)
    if first is None:
        return Parsed("ss -Htulpn", (), 0)
    n, line = first
    word = line.split()[0]
    if word in _SS_NETIDS or word == "Netid":
        return _parse_ss(lines, path)
    if word.upper() in _NETSTAT_PROTOCOLS and word.isupper() or line.strip().lower().startswith(_NETSTAT_HEADERS):
        return _parse_netstat(lines, path)
    raise PolicyError(Location(path, n, _col(line)), f"not ss -Htulpn or netstat -ano output: '{_shown(line)}'")


def _col(line: str) -> int:
    return len(line) - len(line.lstrip()) + 1


def _shown(line: str, limit: int = 60) -> str:
    text = " ".join("".join(c if c.isprintable() or c.isspace() else "?" for c in line).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _endpoint(text: str, where: Location, what: str) -> tuple[str, str | None, int]:
    """``[fe80::1%eth0]:546`` -> ("fe80::1", "eth0", 546); ``0.0.0.0%lo:68``; ``*:80``."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise PolicyError(where, f"{what} '{_shown(text)}' is not ADDRESS:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host, _, zone = host.partition("%")
    return host, zone or None, int(port)


def _address(host: str, where: Location) -> tuple[Address | None, tuple[int, ...]]:
    if host == "*":
        return None, (4, 6)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise PolicyError(where, f"'{_shown(host)}' is not an IP address") from None
    if address.is_unspecified:
        return None, (address.version,)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped, (4,)
    return address, (address.version,)


def _parse_ss(lines: list[str], path: str) -> Parsed:
    listeners: list[Listener] = []
    skipped = 0
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0] == "Netid":  # blank, or the header of ss without -H
            continue
        where = Location(path, n, _col(line))
        netid = fields[0]
        if netid not in _SS_NETIDS or len(fields) < 6:
            raise PolicyError(where, f"not an ss -Htulpn line (NETID STATE RECV-Q SEND-Q LOCAL PEER [PROCESS]): "
                                     f"'{_shown(line)}'")
        if fields[1] != _SS_LISTENING[netid]:
            skipped += 1
            continue
        host, interface, port = _endpoint(fields[4], where, "local address")
        local, families = _address(host, where)
        rest = " ".join(fields[6:])
        processes = tuple(Process(name, int(pid)) for name, pid in _SS_USER.findall(rest))
        if rest and not processes:
            raise PolicyError(where, f"cannot read the process column '{_shown(rest)}' (users:((\"NAME\",pid=N,...)))")
        listeners.append(Listener(netid, host, local, families, port, interface, processes, where))
    return Parsed("ss -Htulpn", tuple(listeners), skipped)


def _parse_netstat(lines: list[str], path: str) -> Parsed:
    listeners: list[Listener] = []
    skipped = 0
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or line.strip().lower().startswith(_NETSTAT_HEADERS):
            continue
        where = Location(path, n, _col(line))
        protocol = _NETSTAT_PROTOCOLS.get(fields[0]) if fields[0].isupper() else None
        shape = (protocol == "tcp" and len(fields) == 5) or (protocol == "udp" and len(fields) == 4)
        if protocol is None or not shape or not fields[-1].isdigit() or not fields[-1].isascii():
            raise PolicyError(where, "not a netstat -ano line (Proto, Local Address, Foreign Address, State, PID): "
                                     f"'{_shown(line)}'")
        if protocol == "tcp" and fields[3] != "LISTENING":
            skipped += 1
            continue
        host, _zone, port = _endpoint(fields[1], where, "local address")
        local, families = _address(host, where)
        listeners.append(Listener(protocol, host, local, families, port, None, (Process("", int(fields[-1])),), where))
    return Parsed("netstat -ano", tuple(listeners), skipped)
