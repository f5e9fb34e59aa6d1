"""The traffic of the data-plane benchmark (bench/dataplane.py): four small programs, each
run as its own process inside a network namespace (``ip netns exec NS python3 dptraffic.py
MODE JSON``). Standard library only.

* ``tcp-server``  listen on [ADDR]:PORT, accept and close every connection until SIGTERM.
* ``tcp-client``  for each window: connect, close, again, from START to END. The close
                  sends a RST (SO_LINGER 0), so the client leaves no TIME_WAIT socket
                  behind and never runs out of source ports; the connection was
                  established (connect() returned after the handshake) before it.
* ``udp-server``  for each window: answer the client's hello, then count the datagrams
                  that arrive on [ADDR]:PORT until shortly after END, and the ones the
                  kernel dropped for a full receive buffer meanwhile (``RcvbufErrors``:
                  the receiver lagged).
* ``udp-client``  one connected socket for the whole run: one flow, whose first datagram
                  creates the conntrack entry and whose answered hello makes it
                  ESTABLISHED (conntrack calls a UDP flow established once it has seen
                  a reply); in each window small datagrams as fast as it can.

Every program prints ``READY`` once set up (servers: bound). The clients and the UDP
server then read windows from stdin, one JSON line ``{"start": T0, "end": T1}`` each
(absolute ``time.time()`` values: the harness gives every worker of a measurement the
same window, however slowly the processes started), and answer each with one JSON line
of counts; they exit at the end of stdin. The TCP server runs until SIGTERM.
"""

from __future__ import annotations

import errno
import json
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator

DRAIN = 0.1  # seconds after a window's end in which its last datagrams still arrive
_stop = False


def _on_term(_signum: int, _frame: object) -> None:
    global _stop
    _stop = True


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _ready() -> None:
    print("READY", flush=True)


def tcp_server(cfg: dict) -> None:
    s = socket.socket(_family(cfg["addr"]), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((cfg["addr"], cfg["port"]))
    # a long accept queue (the harness raises net.core.somaxconn in the namespace): on the
    # busy machine the server is not always scheduled, and an overflow drops a SYN, which
    # costs its client a second
    s.listen(65535)
    s.settimeout(0.2)  # wake up now and then to see SIGTERM
    _ready()
    accepted = 0
    while not _stop:
        try:
            conn, _ = s.accept()
        except (TimeoutError, InterruptedError):
            continue
        except OSError as e:  # a connection reset while queued
            if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                continue
            raise
        conn.close()
        accepted += 1
    _answer({"accepted": accepted})


def _windows(wait: bool = True) -> Iterator[tuple[float, float, bool]]:
    """READY, then each (start, end) the harness sends, after sleeping until its start
    (``wait``). The flag is False when start had already passed (a late start)."""
    _ready()
    for line in sys.stdin:
        w = json.loads(line)
        start, end = w["start"], w["end"]
        on_time = time.time() <= start
        if wait:
            _wait_until(start)
        yield start, end, on_time


def _wait_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.02))


def _answer(result: dict) -> None:
    print(json.dumps(result), flush=True)


def _udp_rcvbuf_errors() -> int:
    """This network namespace's Udp RcvbufErrors (/proc/net/snmp is per namespace)."""
    with open("/proc/net/snmp", encoding="ascii") as fh:
        rows = [line.split() for line in fh if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def tcp_client(cfg: dict) -> None:
    dst = (cfg["addr"], cfg["port"])
    family = _family(cfg["addr"])
    linger = struct.pack("ii", 1, 0)
    timeout = cfg["connect_timeout"]
    for _, end, on_time in _windows():
        _answer(_tcp_window(dst, family, linger, timeout, end) | {"on_time": on_time})


def _tcp_window(dst: tuple[str, int], family: socket.AddressFamily, linger: bytes,
                timeout: float, end: float) -> dict:
    ok = failed = 0
    errors: dict[str, int] = {}
    clock = time.time
    t0 = clock()
    while clock() < end:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.settimeout(timeout)
        try:
            s.connect(dst)
            ok += 1
        except OSError as e:  # refused, timed out, unreachable: the ruleset said no
            failed += 1
            name = errno.errorcode.get(e.errno or 0, type(e).__name__)
            errors[name] = errors.get(name, 0) + 1
        s.close()
    # elapsed: the last connect may end after the window (a slow ruleset's, or a timeout)
    return {"connected": ok, "failed": failed, "errors": errors, "elapsed": clock() - t0}


def udp_server(cfg: dict) -> None:
    """Per window: the first datagram is the client's hello, answered (so that conntrack
    sees the flow in both directions: ESTABLISHED from then on) and not counted; then
    count until shortly after the window's end."""
    s = socket.socket(_family(cfg["addr"]), socket.SOCK_DGRAM)
    # SO_RCVBUFFORCE (root) ignores net.core.rmem_max: a big buffer rides out the moments
    # the receiver is not scheduled on the busy machine
    s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
    s.bind((cfg["addr"], cfg["port"]))
    s.settimeout(0.02)
    buf = bytearray(2048)
    recv = s.recv_into
    for _, end, _ in _windows(wait=False):
        dropped = _udp_rcvbuf_errors()
        got = 0
        hello = False
        while time.time() < end + DRAIN:  # the sender sends nothing outside the window
            try:
                if hello:
                    recv(buf)
                    got += 1
                else:
                    _, peer = s.recvfrom_into(buf)
                    s.sendto(b"hello", peer)
                    hello = True
            except (TimeoutError, InterruptedError):
                continue
        s.setblocking(False)
        while True:  # a receiver that lagged: what is still queued arrived in this window
            try:
                recv(buf)
                got += 1
            except (BlockingIOError, InterruptedError):
                break
        s.settimeout(0.02)
        _answer({"received": got, "dropped": _udp_rcvbuf_errors() - dropped, "hello": hello})


def udp_client(cfg: dict) -> None:
    """Per window: a hello datagram and its answer before the start (up to the start),
    then datagrams as fast as possible until the end."""
    s = socket.socket(_family(cfg["addr"]), socket.SOCK_DGRAM)
    s.connect((cfg["addr"], cfg["port"]))
    payload = b"x" * cfg.get("size", 16)
    send = s.send
    clock = time.time
    for start, end, on_time in _windows(wait=False):
        answered = False
        try:
            send(b"hello")
            s.settimeout(max(0.01, start - clock()))
            answered = s.recv(64) == b"hello"
        except OSError:  # no answer in time (a ruleset that drops it), or an ICMP error
            pass
        _wait_until(start)
        sent = errors = 0
        t0 = clock()
        while clock() < end:
            for _ in range(8):
                try:
                    send(payload)
                    sent += 1
                except OSError:  # ENOBUFS, or an ICMP error reported back on the socket
                    errors += 1
        _answer({"sent": sent, "errors": errors, "on_time": on_time, "answered": answered,
                 "elapsed": clock() - t0})


MODES = {"tcp-server": tcp_server, "tcp-client": tcp_client,
         "udp-server": udp_server, "udp-client": udp_client}


def main() -> int:
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    mode, cfg = sys.argv[1], json.loads(sys.argv[2])
    MODES[mode](cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
