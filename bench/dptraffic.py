"""The traffic of the data-plane benchmark (bench/dataplane.py): four small programs, each
run as its own process inside a network namespace (``ip netns exec NS python3 dptraffic.py
MODE JSON``). Standard library only.

* ``tcp-server``  listen on [ADDR]:PORT, accept and close every connection until SIGTERM.
* ``tcp-client``  from START to END (absolute ``time.time()`` values, shared by every
                  worker so their windows coincide, read from stdin after it printed
                  ``READY``): connect, close, again. The close
                  sends a RST (SO_LINGER 0), so the client leaves no TIME_WAIT socket
                  behind and never runs out of source ports; the connection was
                  established (connect() returned after the handshake) before it.
* ``udp-server``  count the datagrams that arrive on [ADDR]:PORT until SIGTERM (then
                  drain what is queued), and the datagrams the kernel dropped for a full
                  receive buffer meanwhile (``RcvbufErrors``: the receiver fell behind).
* ``udp-client``  one connected socket (one flow: the first datagram creates the
                  conntrack entry, every later one is established), sending small
                  datagrams as fast as it can from START to END.

Every program prints ``READY`` once set up (servers: bound) and one JSON line of counts at
exit; the clients then wait for one JSON line ``{"start": T0, "end": T1}`` on stdin, so the
harness starts every worker's window at once however slowly the processes started.
"""

from __future__ import annotations

import errno
import json
import signal
import socket
import struct
import sys
import time

_stop = False


def _on_term(_signum: int, _frame: object) -> None:
    global _stop
    _stop = True


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _ready() -> None:
    print("READY", flush=True)


def tcp_server(cfg: dict) -> dict:
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
    return {"accepted": accepted}


def _window() -> tuple[float, float, bool]:
    """READY, then the (start, end) the harness sends; sleep until start. The flag is
    False when start had already passed (a late start)."""
    _ready()
    w = json.loads(sys.stdin.readline())
    start, end = w["start"], w["end"]
    late = time.time() > start
    while (left := start - time.time()) > 0:
        time.sleep(min(left, 0.05))
    return start, end, not late


def _udp_rcvbuf_errors() -> int:
    """This network namespace's Udp RcvbufErrors (/proc/net/snmp is per namespace)."""
    with open("/proc/net/snmp", encoding="ascii") as fh:
        rows = [line.split() for line in fh if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def tcp_client(cfg: dict) -> dict:
    dst = (cfg["addr"], cfg["port"])
    family = _family(cfg["addr"])
    linger = struct.pack("ii", 1, 0)
    timeout = cfg["connect_timeout"]
    _, end, on_time = _window()
    ok = failed = 0
    errors: dict[str, int] = {}
    clock = time.time
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
    return {"connected": ok, "failed": failed, "errors": errors, "on_time": on_time}


def udp_server(cfg: dict) -> dict:
    s = socket.socket(_family(cfg["addr"]), socket.SOCK_DGRAM)
    # SO_RCVBUFFORCE (root) ignores net.core.rmem_max: a big buffer rides out the moments
    # the receiver is not scheduled on the busy machine
    s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
    s.bind((cfg["addr"], cfg["port"]))
    s.settimeout(0.2)
    dropped = _udp_rcvbuf_errors()
    _ready()
    buf = bytearray(2048)
    got = 0
    recv = s.recv_into
    while not _stop:
        try:
            recv(buf)
            got += 1
        except (TimeoutError, InterruptedError):
            continue
    s.setblocking(False)
    while True:  # what is still queued arrived too
        try:
            recv(buf)
            got += 1
        except (BlockingIOError, InterruptedError):
            break
    return {"received": got, "dropped": _udp_rcvbuf_errors() - dropped}


def udp_client(cfg: dict) -> dict:
    s = socket.socket(_family(cfg["addr"]), socket.SOCK_DGRAM)
    s.connect((cfg["addr"], cfg["port"]))
    payload = b"x" * cfg.get("size", 16)
    send = s.send
    _, end, on_time = _window()
    sent = errors = 0
    clock = time.time
    while clock() < end:
        for _ in range(64):
            try:
                send(payload)
                sent += 1
            except OSError:  # ENOBUFS, or an ICMP error reported back on the socket
                errors += 1
    return {"sent": sent, "errors": errors, "on_time": on_time}


MODES = {"tcp-server": tcp_server, "tcp-client": tcp_client,
         "udp-server": udp_server, "udp-client": udp_client}


def main() -> int:
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    mode, cfg = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(MODES[mode](cfg)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
