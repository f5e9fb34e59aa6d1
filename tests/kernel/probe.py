"""Packet probes executed *inside* a network namespace (``ip netns exec NS python3 probe.py``).

Standard library only, because it runs as a bare script under whatever python3 ``netns.py``
passes.  Two modes, both speaking JSON so that one process start-up (~30 ms) serves thousands
of probes:

``probe.py probe``   stdin: JSON list of probes ``{"proto", "src", "dst", "port", "timeout"}``;
                     stdout: JSON list of results in the same order.  All probes run at once
                     in a single-threaded selector loop (non-blocking sockets), so a batch
                     costs about one timeout, not the sum of them.  A probe
                     ``{"proto": "raw", "packet": {...}}`` is one packet of rawprobe.py's
                     ``send`` (ICMP, GRE, ESP, ...), sent at once (status ``sent``).
``probe.py listen``  stdin: ``{"proto", "addrs", "ports", "deadline"}``; binds every
                     (addr, port), prints ``READY`` (so the caller knows SYNs will not hit a
                     closed port), then records every TCP connection / UDP datagram until
                     SIGTERM or the deadline and prints the records as one JSON line.
                     Instead of ``proto`` and ``ports``, ``"bind": {"tcp": [ports], "udp":
                     [ports]}`` binds both protocols in one process, and ``"raw": [[family,
                     protocol], ...]`` also records every packet of those IP protocols
                     (rawprobe.py's receive records, with ``"family"``).
``probe.py agent``   both, for one namespace, as long as it lives (see ``agent``).

Why IP_RECVERR: a socket error alone cannot tell a TCP RST from an ICMP port-unreachable
(both give ECONNREFUSED).  With IP(V6)_RECVERR the kernel also queues the ICMP message itself
on the socket's error queue, so we can report which one it was.
"""
from __future__ import annotations

import contextlib
import errno
import json
import resource
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable

try:  # run as a script (the normal case), this directory is sys.path[0]
    import rawprobe
except ImportError:  # imported as tests.kernel.probe
    from tests.kernel import rawprobe

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
        """Open, bind and fire.  TCP waits for writability; UDP waits for an ICMP error;
        a raw packet is just sent."""
        s = self.spec
        self.start = time.monotonic()
        if self.proto == "raw":
            try:
                rawprobe.send([s["packet"]])
            except OSError as e:
                return self.finish("error", e.errno or 0)
            return self.finish("sent")
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


class _Listening:
    """Sockets bound for one listen config, and the records of what arrived on them."""

    def __init__(self, cfg: dict) -> None:
        _raise_nofile()
        bind = cfg["bind"] if "bind" in cfg else {cfg["proto"]: cfg["ports"]}
        self.records: list[dict] = []
        self.sel = selectors.DefaultSelector()
        # a byte here wakes the loop at once (SIGTERM's wakeup fd, or the agent's stop)
        self.wake_r, self.wake_w = socket.socketpair()
        for end in (self.wake_r, self.wake_w):
            end.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake",))
        for proto, ports in bind.items():
            for addr in cfg["addrs"]:
                fam = _family(addr)
                for port in ports:
                    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if fam == socket.AF_INET6:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.bind((addr, int(port)))
                    if proto == "tcp":
                        s.listen(4096)
                    s.setblocking(False)
                    self.sel.register(s, selectors.EVENT_READ, (proto, addr, int(port)))
        for family, protocol in cfg.get("raw", ()):
            rawprobe.open_receivers(self.sel, family, [protocol])

    def drain(self, wait: float) -> int:
        events = self.sel.select(wait)
        for key, _ in events:
            if key.data[0] == "wake":
                with contextlib.suppress(BlockingIOError):
                    self.wake_r.recv(64)
                continue
            if key.data[0] == "raw":
                _, family, protocol = key.data
                rawprobe.read_records(key.fileobj, family, protocol, self.records)  # type: ignore[arg-type]
                continue
            proto, addr, port = key.data
            for _ in range(256):  # what is queued on this socket, but bounded
                try:
                    if proto == "tcp":
                        conn, peer = key.fileobj.accept()  # type: ignore[union-attr]
                        conn.close()
                        payload = None
                    else:
                        data, peer = key.fileobj.recvfrom(65535)  # type: ignore[union-attr]
                        payload = data.decode(errors="replace")
                except (BlockingIOError, InterruptedError):
                    break
                self.records.append({"proto": proto, "dst": addr, "port": port, "src": peer[0],
                                     "payload": payload})
        return len(events)

    def run(self, stopped: Callable[[], bool], deadline: float) -> list[dict]:
        """Record until ``stopped()`` (checked whenever the loop wakes) or the deadline, then
        what had already arrived; close every socket but the wake pair."""
        end = time.monotonic() + deadline
        while not stopped() and time.monotonic() < end:
            self.drain(min(0.05, max(0.0, end - time.monotonic())))
        self.sel.unregister(self.wake_r)
        for _ in range(1000):  # after the stop: record what already arrived but was not read yet
            if not self.drain(0):
                break
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()
        return self.records  # the wake sockets stay open: whoever stops us may still write


def listen(cfg: dict) -> list[dict]:
    """Bind all (addr, port) pairs and record arrivals until SIGTERM or the deadline."""
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    listening = _Listening(cfg)
    signal.set_wakeup_fd(listening.wake_w.fileno())
    print("READY", flush=True)
    return listening.run(lambda: stop["now"], float(cfg.get("deadline", 30)))


class _Recording(threading.Thread):
    """A ``_Listening`` recording in a thread of its own, until ``collect``."""

    def __init__(self, cfg: dict) -> None:
        super().__init__(daemon=True)
        self.listening = _Listening(cfg)
        self.deadline = float(cfg.get("deadline", 60))
        self.stop = False
        self.records: list[dict] = []

    def run(self) -> None:
        self.records = self.listening.run(lambda: self.stop, self.deadline)

    def collect(self) -> list[dict]:
        self.stop = True
        self.listening.wake_w.send(b"x")
        self.join()
        self.listening.wake_r.close()
        self.listening.wake_w.close()
        return self.records


def agent() -> None:
    """One long-lived process per namespace, so a probe batch starts no process at all.
    stdin: one JSON command per line, each answered by one JSON line on stdout:
    ``{"op": "listen", ...listen config}`` binds and starts recording in a thread
    (answer ``"ready"``); ``{"op": "probe", "probes": [...]}`` runs a batch (answer: the
    results, as ``probe``); ``{"op": "collect"}`` stops the recording (answer: the
    records, as ``listen``). Exits at the end of its input."""
    recording: _Recording | None = None
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "listen":
            assert recording is None, "listen twice without collect"
            recording = _Recording(command)
            recording.start()
            answer: object = "ready"
        elif op == "probe":
            answer = run_probes(command["probes"])
        elif op == "collect":
            assert recording is not None, "collect without listen"
            answer, recording = recording.collect(), None
        else:
            raise SystemExit(f"unknown agent command {op!r}")
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def main() -> None:
    mode = sys.argv[1]
    if mode == "agent":
        return agent()
    cfg = json.load(sys.stdin)
    out = run_probes(cfg) if mode == "probe" else listen(cfg)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
