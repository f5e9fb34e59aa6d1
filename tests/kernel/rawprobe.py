"""Raw packets, sent and counted *inside* a network namespace (``ip netns exec NS python3
rawprobe.py MODE``): what TCP and UDP sockets cannot make, such as ICMP and ICMPv6 of a
given type and hop limit, IGMP, packets of any IP protocol number, and frames with a
destination the routing table would never send out (127.0.0.1 on the wire).

Standard library only, like probe.py. Two modes, speaking JSON:

``rawprobe.py send``     stdin: JSON list of packets; sends each once, in order.
    ``{"family": 4|6, "proto": N, "dst", "src"?, "hops"?, "icmp"?: [type, code],
       "ident"?: N, "header"?: true, "payload"?: text}`` - an IP packet through a raw
    socket of protocol N. ICMP and ICMPv6 get their header and checksum, with ``ident``
    (default 0x4657) as the identifier conntrack keys echo and the other query types on;
    with ``header``, GRE (47), ESP (50), AH (51) and VRRP (112) get a minimal well-formed
    header of their own before the payload (see ``HEADERS``); other protocols carry the
    payload bytes alone.
    ``{"frame": IFNAME, "dst_mac", "src", "dst", "dport", "payload"?}`` - an Ethernet
    frame holding IPv4/UDP, written straight to the link (AF_PACKET), routing bypassed.
``rawprobe.py receive``  stdin: ``{"family": 4|6, "protos": [N, ...], "deadline"}``;
    opens a raw socket per protocol, prints ``READY``, and records every packet of those
    protocols delivered to this namespace until SIGTERM or the deadline, then prints
    ``[{"proto", "src", "dst", "hops", "icmp": [type, code] | null, "payload"}]``.

probe.py's ``listen`` mode opens the same receiving sockets (``open_receivers``,
``read_records``) beside its TCP and UDP ones, and its ``probe`` mode sends these packets
(``send``) in the same batch as its connects, so that one process per namespace does all.
"""
from __future__ import annotations

import json
import selectors
import signal
import socket
import struct
import sys
import time

ICMP, ICMPV6 = 1, 58
ETH_P_IP = 0x0800
# A receiving raw socket sees every packet of its protocol, and a batch can hold hundreds:
# a buffer this size (SO_RCVBUFFORCE, root) never drops one while the reader is busy.
RECEIVE_BUFFER = 16 << 20
SO_RCVBUFFORCE = 33  # Linux; the socket module does not name it


def _gre(packet: dict) -> bytes:
    """GRE version 0 (RFC 2784): no flags, protocol type of the payload (IPv4 or IPv6)."""
    return struct.pack("!HH", 0, 0x86DD if packet["family"] == 6 else 0x0800)


def _esp(packet: dict) -> bytes:
    """ESP (RFC 4303): SPI and sequence number; the rest is opaque ciphertext."""
    return struct.pack("!II", 0x46570000 | packet.get("ident", 1) & 0xFFFF, 1)


def _ah(packet: dict) -> bytes:
    """AH (RFC 4302) in tunnel mode: next header IPv4 (4) or IPv6 (41), length 4 (24
    octets: 12 fixed, a 96-bit ICV). Tunnel mode because conntrack looks past an IPv6
    AH header: with no next header (59) behind it the packet is INVALID, with TCP behind
    it a malformed TCP segment; an inner IP packet is tracked as a new one."""
    inner = 41 if packet["family"] == 6 else 4
    return struct.pack("!BBHII", inner, 4, 0, 0x46570000 | packet.get("ident", 1) & 0xFFFF, 1) + bytes(12)


def _vrrp(packet: dict) -> bytes:
    """VRRP version 3 advertisement (RFC 5798): VRID 1, priority 100, no addresses."""
    return struct.pack("!BBBBHH", 0x31, 1, 100, 0, 100, 0)


HEADERS = {47: _gre, 50: _esp, 51: _ah, 112: _vrrp}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _icmp_message(icmp: list[int], payload: bytes, v6: bool, ident: int = 0x4657) -> bytes:
    """An ICMP(v6) message; its checksum is the kernel's job for ICMPv6 raw sockets."""
    icmp_type, code = icmp
    body = struct.pack("!HH", ident & 0xFFFF, 1) + payload  # identifier ("FW"), sequence 1 / rest of header
    header = struct.pack("!BBH", icmp_type, code, 0)
    if v6:
        return header + body
    return struct.pack("!BBH", icmp_type, code, _checksum(header + body)) + body


def _send_ip(packet: dict) -> None:
    v6 = packet["family"] == 6
    proto = packet["proto"]
    payload = packet.get("payload", "fwgen").encode()
    if "icmp" in packet:
        data = _icmp_message(packet["icmp"], payload, v6, packet.get("ident", 0x4657))
    elif packet.get("header"):
        data = HEADERS[proto](packet) + payload
    else:
        data = payload
    family = socket.AF_INET6 if v6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        if "src" in packet:
            sock.bind((packet["src"], 0))
        hops = packet.get("hops")
        if hops is not None:
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hops)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, hops)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, hops)
        if not v6 and "src" in packet and packet["dst"].startswith("224."):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(packet["src"]))
        sock.sendto(data, (packet["dst"], 0))


def _send_frame(packet: dict) -> None:
    """IPv4/UDP in an Ethernet frame to ``dst_mac`` on ``frame`` (the interface)."""
    payload = packet.get("payload", "fwgen").encode()
    src, dst = socket.inet_aton(packet["src"]), socket.inet_aton(packet["dst"])
    udp = struct.pack("!HHHH", 40000, packet["dport"], 8 + len(payload), 0) + payload  # no UDP checksum
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x4657, 0, 64, 17, 0, src, dst)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP)) as sock:
        sock.bind((packet["frame"], 0))
        mine = sock.getsockname()[4]
        dst_mac = bytes.fromhex(packet["dst_mac"].replace(":", ""))
        sock.send(dst_mac + mine + struct.pack("!H", ETH_P_IP) + header + udp)


def send(packets: list[dict]) -> None:
    for packet in packets:
        (_send_frame if "frame" in packet else _send_ip)(packet)


def _record_v4(proto: int, data: bytes) -> dict:
    ihl = (data[0] & 0x0F) * 4
    body = data[ihl:]
    icmp = [body[0], body[1]] if proto == ICMP and len(body) >= 2 else None
    rest = body[8:] if proto == ICMP else body
    return {"proto": proto, "src": socket.inet_ntoa(data[12:16]), "dst": socket.inet_ntoa(data[16:20]),
            "hops": data[8], "icmp": icmp, "payload": rest.decode("utf-8", "replace")}


def _record_v6(proto: int, data: bytes, src: str, ancdata: list) -> dict:
    hops = None
    for level, kind, value in ancdata:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
            hops = struct.unpack("i", value[:4])[0]
    icmp = [data[0], data[1]] if proto == ICMPV6 and len(data) >= 2 else None
    rest = data[8:] if proto == ICMPV6 else data
    return {"proto": proto, "src": src.split("%")[0], "dst": None, "hops": hops, "icmp": icmp,
            "payload": rest.decode("utf-8", "replace")}


def open_receivers(sel: selectors.BaseSelector, family: int, protos: list[int]) -> list[socket.socket]:
    """A non-blocking raw socket per protocol, registered with ``sel`` (data: the family
    and the protocol); read what arrives with ``read_records``."""
    v6 = family == 6
    socks = []
    for proto in protos:
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW, proto)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, ("raw", family, proto))
        socks.append(sock)
    return socks


def read_records(sock: socket.socket, family: int, proto: int, records: list[dict]) -> None:
    """Append a record for every packet queued on a socket of ``open_receivers``."""
    while True:
        try:
            data, ancdata, _, address = sock.recvmsg(65535, 256)
        except BlockingIOError:
            return
        record = _record_v6(proto, data, address[0], ancdata) if family == 6 else _record_v4(proto, data)
        records.append({**record, "family": family})


def receive(cfg: dict) -> list[dict]:
    sel = selectors.DefaultSelector()
    socks = open_receivers(sel, cfg["family"], cfg["protos"])
    records: list[dict] = []
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    print("READY", flush=True)
    end = time.monotonic() + cfg.get("deadline", 30)

    def drain(wait: float) -> None:
        for key, _ in sel.select(wait):
            _, family, proto = key.data
            read_records(key.fileobj, family, proto, records)  # type: ignore[arg-type]

    while not stop["now"] and time.monotonic() < end:
        drain(0.05)
    drain(0)  # what arrived before the signal
    for sock in socks:
        sock.close()
    return records


def main() -> None:
    mode = sys.argv[1]
    cfg = json.load(sys.stdin)
    if mode == "send":
        send(cfg)
        print(json.dumps({"sent": len(cfg)}))
    elif mode == "receive":
        print(json.dumps(receive(cfg)))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
