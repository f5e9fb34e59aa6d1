"""Packet probes executed *inside* a network namespace (``ip netns exec NS python3 probe.py``).

Standard library only, because it runs as a bare script under whatever python3 ``netns.py``
passes.  Two modes, both speaking JSON so that one process start-up (~30 ms) serves thousands
of probes:

``probe.py probe``   stdin: JSON list of probes ``{"proto", "src", "dst", "port", "timeout"}``;
                     stdout: JSON list of results in the same order.  All probes run at once
                     in a single-threaded selector loop (non-blocking sockets), so a batch
                     costs about one timeout, not the sum of them.
``probe.py listen``  stdin: ``{"proto", "addrs", "ports", "deadline"}``; binds every
                     (addr, port), prints ``READY`` (so the caller knows SYNs will not hit a
                     closed port), then records every TCP connection / UDP datagram until
                     SIGTERM or the deadline and prints the records as one JSON line.

Why IP_RECVERR: a socket error alone cannot tell a TCP RST from an ICMP port-unreachable
(both give ECONNREFUSED).  With IP(V6)_RECVERR the kernel also queues the ICMP message itself
on the socket's error queue, so we can report which one it was.
"""
from __future__ import annotations

import errno
import json
import resource
import selectors
import signal
import socket
import struct
import sys
import time

IP_RECVERR, IPV6_RECVERR = 11, 25
MAX_IN_FLIGHT = 2000  # keeps file descriptors and ephemeral ports bounded for huge batches
UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM,
               errno.EPROTO, errno.EHOSTDOWN, errno.ENONET, errno.EMSGSIZE}


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _icmp_from_errqueue(sock: socket.socket) -> list[int] | None:
    """Return [icmp_type, icmp_code] of a queued ICMP error, or None (e.g. it was a RST)."""
    try:
        _, ancdata, _, _ = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
    except OSError:
        return None
    for _level, _type, data in ancdata:
        if len(data) >= 8:  # struct sock_extended_err: u32 errno, u8 origin, u8 type, u8 code
            _ee_errno, origin, itype, code = struct.unpack_from("=IBBB", data)
            if origin in (2, 3):  # SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6
                return [itype, code]
    return None


def _classify(proto: str, err: int, icmp: list[int] | None) -> str:
    if proto == "tcp" and err == errno.ECONNREFUSED and icmp is None:
        return "refused"  # a TCP RST
    if err == errno.ECONNREFUSED:
        return "unreachable" if proto == "tcp" else "refused"  # ICMP port unreachable
    if err in UNREACHABLE or icmp is not None:
        return "unreachable"
    if err == errno.ETIMEDOUT:
        return "timeout"
    return "error"


class _Probe:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.proto = spec["proto"]
        self.sock: socket.socket | None = None
        self.result: dict | None = None
        self.start = 0.0
        self.deadline = 0.0

    def finish(self, status: str, err: int = 0, icmp: list[int] | None = None) -> None:
        self.result = {"status": status, "errno": errno.errorcode.get(err) if err else None,
                       "icmp": icmp, "elapsed": round(time.monotonic() - self.start, 4)}
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def begin(self, sel: selectors.BaseSelector) -> None:
        """Open, bind and fire.  TCP waits for writability; UDP waits for an ICMP error."""
        s = self.spec
        self.start = time.monotonic()
        timeout = float(s.get("timeout", 0.5 if self.proto == "tcp" else 0.2))
        self.deadline = self.start + timeout
        fam = _family(s["dst"])
        kind = socket.SOCK_STREAM if self.proto == "tcp" else socket.SOCK_DGRAM
        self.sock = sock = socket.socket(fam, kind)
        sock.setblocking(False)
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        try:
            if s.get("src"):
                sock.bind((s["src"], 0))
            if self.proto == "tcp":
                err = sock.connect_ex((s["dst"], int(s["port"])))
                if err not in (0, errno.EINPROGRESS):
                    return self._fail(err)
                if err == 0:
                    return self.finish("connected")
                sel.register(sock, selectors.EVENT_WRITE, self)
            else:
                payload = s.get("payload") or f"fwgen-probe {s.get('id', '')}"
                sock.connect((s["dst"], int(s["port"])))
                sock.send(payload.encode())
                sel.register(sock, selectors.EVENT_READ, self)
        except OSError as e:
            self._fail(e.errno or 0)

    def _fail(self, err: int) -> None:
        assert self.sock is not None
        icmp = _icmp_from_errqueue(self.sock)
        self.finish(_classify(self.proto, err, icmp), err, icmp)

    def event(self, sel: selectors.BaseSelector) -> None:
        assert self.sock is not None
        sel.unregister(self.sock)
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0 and self.proto == "tcp":
            return self.finish("connected")
        if err == 0:  # UDP readable without error: a reply (nobody here sends one); call it sent
            return self.finish("sent")
        self._fail(err)

    def expire(self, sel: selectors.BaseSelector) -> None:
        assert self.sock is not None
        sel.unregister(self.sock)
        self.finish("timeout" if self.proto == "tcp" else "sent")


def run_probes(specs: list[dict]) -> list[dict]:
    """Run every probe concurrently; each loop iteration either finishes a probe or waits at
    most until the nearest deadline, so the whole batch ends after ~max(timeout)."""
    _raise_nofile()
    probes = [_Probe(s) for s in specs]
    pending = list(reversed(probes))
    active: list[_Probe] = []
    with selectors.DefaultSelector() as sel:
        while pending or active:
            while pending and len(active) < MAX_IN_FLIGHT:
                p = pending.pop()
                p.begin(sel)
                if p.result is None:
                    active.append(p)
            if not active:
                continue
            wait = max(0.0, min(p.deadline for p in active) - time.monotonic())
            for key, _ in sel.select(wait):
                key.data.event(sel)
            now = time.monotonic()
            for p in active:
                if p.result is None and now >= p.deadline:
                    p.expire(sel)
            active = [p for p in active if p.result is None]
    return [p.result or {} for p in probes]


def listen(cfg: dict) -> list[dict]:
    """Bind all (addr, port) pairs and record arrivals until SIGTERM or the deadline."""
    _raise_nofile()
    proto = cfg["proto"]
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    records: list[dict] = []
    sel = selectors.DefaultSelector()
    for addr in cfg["addrs"]:
        fam = _family(addr)
        for port in cfg["ports"]:
            s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, int(port)))
            if proto == "tcp":
                s.listen(4096)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, (addr, int(port)))
    print("READY", flush=True)

    def drain(wait: float) -> int:
        events = sel.select(wait)
        for key, _ in events:
            addr, port = key.data
            for _ in range(256):  # what is queued on this socket, but bounded
                try:
                    if proto == "tcp":
                        conn, peer = key.fileobj.accept()
                        conn.close()
                        payload = None
                    else:
                        data, peer = key.fileobj.recvfrom(65535)
                        payload = data.decode(errors="replace")
                except (BlockingIOError, InterruptedError):
                    break
                records.append({"proto": proto, "dst": addr, "port": port, "src": peer[0],
                                "payload": payload})
        return len(events)

    deadline = time.monotonic() + float(cfg.get("deadline", 30))
    while not stop["now"] and time.monotonic() < deadline:
        drain(min(0.05, max(0.0, deadline - time.monotonic())))
    for _ in range(1000):  # after SIGTERM: record what already arrived but was not read yet
        if not drain(0):
            break
    return records


def main() -> None:
    mode = sys.argv[1]
    cfg = json.load(sys.stdin)
    out = run_probes(cfg) if mode == "probe" else listen(cfg)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
