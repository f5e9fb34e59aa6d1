"""Load rule files into a real kernel inside throwaway network namespaces and probe them.

Why: ``iptables-restore --test`` and ``nft -c`` accept files that a real apply rejects or that
do not filter what we think (see /work/shared/PLATFORMS.md).  The only proof is to apply the
file in a namespace and send real packets between namespaces we created ourselves.

Safety rules built in: packets only go between our own namespaces over our own veth pairs;
every subprocess has a timeout; namespaces (and processes started in them) are removed on exit
even when the test fails; nothing is ever skipped - missing tools or privileges raise.
"""
from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PROBE_SCRIPT = Path(__file__).with_name("probe.py")
NS_PREFIX = "fwgen-"
_counter = itertools.count(1)
_NF_LOG_ALL_NETNS = Path("/proc/sys/net/netfilter/nf_log_all_netns")


class NetnsError(RuntimeError):
    """A command in (or about) a namespace failed; the message carries its stderr."""


def ensure_tools() -> None:
    """Fail loudly (never skip) when the kernel tooling is missing or we cannot use netns."""
    missing = [t for t in ("ip", "nft", "iptables-restore", "ip6tables-restore")
               if shutil.which(t) is None]
    if missing:
        raise NetnsError(f"missing tools {missing}: install iproute2, nftables and iptables "
                         "(the CI script does: apt-get install iproute2 nftables iptables)")
    if os.geteuid() != 0:
        raise NetnsError("kernel tests need root (CAP_SYS_ADMIN + CAP_NET_ADMIN) for ip netns")


def _run(argv: Sequence[str], input: str | None = None, check: bool = True,
         timeout: float = 30.0, what: str = "") -> subprocess.CompletedProcess[str]:
    """subprocess.run with a timeout and an error message that includes stderr."""
    try:
        cp = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                            timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise NetnsError(f"{what}timed out after {timeout}s: {' '.join(argv)}") from e
    if check and cp.returncode != 0:
        raise NetnsError(f"{what}exit {cp.returncode}: {' '.join(argv)}\n"
                         f"stderr: {cp.stderr.strip()}\nstdout: {cp.stdout.strip()[:2000]}")
    return cp


class Namespace:
    """``with Namespace() as ns:`` - a uniquely named netns ``fwgen-<pid>-<n>`` with lo up.

    Processes started with :meth:`popen` (listeners) are killed before the namespace is
    deleted, because a live process would keep the namespace's sockets and rules alive."""

    def __init__(self) -> None:
        self.name = f"{NS_PREFIX}{os.getpid()}-{next(_counter)}"
        self._procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Namespace:
        ensure_tools()
        _run(["ip", "netns", "add", self.name], what="cannot create network namespace: ")
        try:
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        self._procs.clear()
        cp = _run(["ip", "netns", "del", self.name], check=False)
        if Path("/run/netns", self.name).exists():
            raise NetnsError(f"could not delete netns {self.name}: {cp.stderr.strip()}")

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], input: str | None = None, check: bool = True,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run argv inside the namespace; on failure raise NetnsError including stderr."""
        return _run(self.exec_argv(argv), input=input, check=check, timeout=timeout,
                    what=f"[netns {self.name}] ")

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """Start a background process in the namespace; it is killed in close()."""
        p = subprocess.Popen(self.exec_argv(argv), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._procs.append(p)
        return p

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"


def list_namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def cleanup_stale() -> list[str]:
    """Delete ``fwgen-<pid>-<n>`` namespaces whose creating process is dead (a killed run)."""
    stale = [p.name for p in Path("/run/netns").glob(f"{NS_PREFIX}*-*")
             if not Path("/proc", p.name.split("-")[1]).exists()]
    for name in stale:
        _run(["ip", "netns", "del", name], check=False)
    return stale


# --- loading rule files -------------------------------------------------------------------

def load_iptables(ns: Namespace, v4_text: str | None, v6_text: str | None) -> None:
    """Really apply rules.v4 / rules.v6 (not --test, which misses missing chains/targets)."""
    if v4_text is not None:
        ns.run(["iptables-restore"], input=v4_text)
    if v6_text is not None:
        ns.run(["ip6tables-restore"], input=v6_text)


def load_nft(ns: Namespace, text: str) -> None:
    ns.run(["nft", "-f", "-"], input=text)


def nft_check(ns: Namespace, text: str) -> None:
    """``nft -c`` needs CAP_NET_ADMIN, so it also runs in a namespace; it applies nothing."""
    ns.run(["nft", "-c", "-f", "-"], input=text)


# --- veth links ---------------------------------------------------------------------------

@dataclass
class Link:
    host_ns: Namespace
    peer_ns: Namespace
    host_if: str
    peer_if: str
    host_addrs: list[str]  # bare addresses, without prefix length
    peer_addrs: list[str]


def _with_prefix(addr: str) -> str:
    return addr if "/" in addr else addr + ("/64" if ":" in addr else "/24")


def connect(host_ns: Namespace, peer_ns: Namespace, host_addrs: Sequence[str] = (),
            peer_addrs: Sequence[str] = (), *, host_if: str | None = None, peer_if: str | None = None) -> Link:
    """Create a veth pair straight inside the two namespaces (so names never clash in the
    root namespace: ``host_if`` and ``peer_if`` may be fixed names, the same in several
    namespaces), add every address (IPv6 with ``nodad`` so it is usable at once; plain
    addresses get /24 or /64) and bring both ends up.  Deleting a namespace deletes the pair."""
    n = next(_counter)
    host_if, peer_if = host_if or f"fwh{n}", peer_if or f"fwp{n}"
    _run(["ip", "link", "add", host_if, "netns", host_ns.name, "type", "veth",
          "peer", "name", peer_if, "netns", peer_ns.name], what="veth: ")
    for ns, ifname, addrs in ((host_ns, host_if, host_addrs), (peer_ns, peer_if, peer_addrs)):
        # No duplicate address detection: a link-local address would stay tentative for
        # about a second, and neighbour discovery through it would fail meanwhile.
        sysctl(ns, f"net.ipv6.conf.{ifname}.accept_dad", 0)
        for a in addrs:
            extra = ["nodad"] if ":" in a else []
            ns.run(["ip", "addr", "add", _with_prefix(a), "dev", ifname, *extra])
        ns.run(["ip", "link", "set", ifname, "up"])
    for ns, ifname in ((host_ns, host_if), (peer_ns, peer_if)):
        _wait_until_up(ns, ifname)
    return Link(host_ns, peer_ns, host_if, peer_if, [a.split("/")[0] for a in host_addrs],
                [a.split("/")[0] for a in peer_addrs])


def static_neighbours(ns: Namespace, ifname: str, addresses: Sequence[str], mac: str) -> None:
    """Permanent neighbour (ARP and NDP) entries: ``addresses`` are at ``mac`` on ``ifname``.
    No resolution traffic then, no first packet waiting for it, and an address the other
    end has on another of its interfaces (which Linux answers ARP for, but not NDP) is
    reachable over this link too."""
    for address in addresses:
        ns.run(["ip", "neigh", "replace", address, "lladdr", mac, "dev", ifname, "nud", "permanent"])


def _wait_until_up(ns: Namespace, ifname: str, timeout: float = 5.0) -> None:
    """A veth end reports carrier a moment after ``ip link set up``; a packet sent before
    (an IPv6 one especially) can be lost, so wait for operstate UP."""
    end = time.monotonic() + timeout
    while json.loads(ns.run(["ip", "-j", "link", "show", "dev", ifname]).stdout)[0].get("operstate") != "UP":
        if time.monotonic() > end:
            raise NetnsError(f"{ifname} in {ns.name} is not up after {timeout} s")
        time.sleep(0.02)


# --- probes -------------------------------------------------------------------------------

@dataclass
class Probe:
    """One TCP connect or UDP datagram.  ``timeout``: how long a silently dropped TCP SYN may
    take before it counts as 'timeout' (UDP: how long to wait for an ICMP error).  With
    ``proto`` "raw", one packet of rawprobe.py's ``send`` (``packet``), sent at once."""
    proto: str  # "tcp" | "udp" | "raw"
    dst: str
    port: int
    src: str | None = None
    timeout: float | None = None
    id: str | None = None
    payload: str | None = None
    packet: dict | None = None


@dataclass
class ProbeResult:
    """status: tcp 'connected' | 'refused' (RST) | 'unreachable' (ICMP error or local EPERM/
    EACCES; ``icmp`` = [type, code] when an ICMP message arrived) | 'timeout' | 'error';
    udp 'sent' (judge delivery with a Listener) | 'refused' (ICMP port unreachable) |
    'unreachable' | 'error'.  ``errno`` is the socket error's name, e.g. 'EHOSTUNREACH'."""
    probe: Probe
    status: str
    errno: str | None
    icmp: list[int] | None
    elapsed: float


def run_probes(ns: Namespace, probes: Sequence[Probe]) -> list[ProbeResult]:
    """Run many probes concurrently in ONE subprocess inside ns; results keep input order.
    Thread-safe: probing several namespaces from threads just runs several subprocesses."""
    if not probes:
        return []
    specs = [{k: v for k, v in vars(p).items() if v is not None} | {"id": p.id or str(i)}
             for i, p in enumerate(probes)]
    longest = max(p.timeout or 0.5 for p in probes)
    batches = len(probes) // 2000 + 1  # probe.py runs at most 2000 probes at once
    cp = ns.run([sys.executable, str(PROBE_SCRIPT), "probe"], input=json.dumps(specs),
                timeout=15 + longest * batches * 2)
    return [ProbeResult(p, r["status"], r["errno"], r["icmp"], r["elapsed"])
            for p, r in zip(probes, json.loads(cp.stdout), strict=True)]


def tcp_connect(ns: Namespace, src_addr: str | None, dst_addr: str, port: int,
                timeout: float = 0.5) -> str:
    return run_probes(ns, [Probe("tcp", dst_addr, port, src_addr, timeout)])[0].status


def udp_send(ns: Namespace, src_addr: str | None, dst_addr: str, port: int,
             payload: str | None = None) -> str:
    return run_probes(ns, [Probe("udp", dst_addr, port, src_addr, payload=payload)])[0].status


class Listener:
    """A listener process in a namespace: one process, many ports, selectors.

    Start with :func:`listen` (one protocol) or :func:`serve` (tcp, udp and raw IP
    protocols at once); :meth:`stop` sends SIGTERM and returns the records
    ``{"proto", "dst", "port", "src", "payload"}`` (raw ones: rawprobe.py's receive
    records).  It waits for the child's READY line so a probe never races a port that is
    not bound yet."""

    def __init__(self, ns: Namespace, proto: str | None = None, addrs: Sequence[str] = (),
                 ports: Sequence[int] = (), deadline: float = 60.0, *, config: dict | None = None) -> None:
        self.records: list[dict] | None = None
        self._terminated = False
        cfg = config if config is not None else {"proto": proto, "addrs": list(addrs), "ports": list(ports)}
        self.proc = ns.popen([sys.executable, str(PROBE_SCRIPT), "listen"])
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({**cfg, "deadline": deadline}))
        self.proc.stdin.close()
        self.proc.stdin = None  # so that communicate() in stop() does not flush a closed pipe
        self._ns = ns

    def wait_ready(self) -> Listener:
        """Block until the child has bound everything (a separate step, so that several
        listeners can start at once and be waited for together)."""
        assert self.proc.stdout
        ready = select.select([self.proc.stdout], [], [], 15)[0]  # nothing is buffered yet
        if not ready or self.proc.stdout.readline().strip() != "READY":
            self.proc.kill()
            err = self.proc.communicate(timeout=5)[1]
            raise NetnsError(f"listener in {self._ns.name} did not start: {err.strip()}")
        return self

    def terminate(self) -> None:
        """Ask the child to stop (once: a second SIGTERM could reach it while Python shuts
        down, which restores the default action and kills it without its records)."""
        if not self._terminated and self.proc.poll() is None:
            self.proc.terminate()
        self._terminated = True

    def stop(self) -> list[dict]:
        if self.records is None:
            self.terminate()
            try:
                out, err = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise NetnsError("listener ignored SIGTERM") from None
            if self.proc.returncode != 0:
                raise NetnsError(f"listener failed ({self.proc.returncode}): {err.strip()}")
            self.records = json.loads(out)
        return self.records

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def received(self) -> set[tuple[str, int, str]]:
        """{(proto, port, source address)} seen so far (stops the listener)."""
        return {(r["proto"], r["port"], r["src"]) for r in self.stop()}

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        """Normal exit collects the records (so received() still works after the block);
        an exception just kills the process so the original error is not masked."""
        if exc_type is None and self.records is None:
            self.stop()
        else:
            self.kill()


def listen(ns: Namespace, proto: str, addr: str | Sequence[str], ports: Sequence[int],
           deadline: float = 60.0) -> Listener:
    """Bind ``proto`` ("tcp"/"udp") on every addr x port.  The process exits by itself after
    ``deadline`` seconds (bounded even if nobody stops it); its ports then close, so keep the
    deadline longer than the probing or probes will see 'refused'."""
    addrs = [addr] if isinstance(addr, str) else list(addr)
    return Listener(ns, proto, addrs, ports, deadline).wait_ready()


def serve(ns: Namespace, addrs: Sequence[str], tcp: Sequence[int] = (), udp: Sequence[int] = (),
          raw: Sequence[tuple[int, int]] = (), deadline: float = 60.0) -> Listener:
    """One listener for everything a probe batch sends to ``ns``: tcp and udp ports on
    every address of ``addrs``, and every packet of the raw ``(family, IP protocol)``
    pairs. Not yet waited for: call :meth:`Listener.wait_ready` before probing."""
    config = {"addrs": list(addrs), "bind": {"tcp": list(tcp), "udp": list(udp)},
              "raw": [list(pair) for pair in raw]}
    return Listener(ns, deadline=deadline, config=config)


class Agent:
    """A long-lived probe.py agent in a namespace: it listens (tcp, udp, raw IP protocols,
    as :func:`serve`) and probes (as :func:`run_probes`) without a process start per
    batch, which costs more than the probing itself on a small machine. Each command
    is answered in order; :meth:`listen`, :meth:`collect` and :meth:`probe` are split
    into a request and its answer so that several agents can work at the same time."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self._buffer = b""
        self._start()

    def _start(self) -> None:
        self.proc = subprocess.Popen(self.ns.exec_argv([sys.executable, str(PROBE_SCRIPT), "agent"]),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.ns._procs.append(self.proc)  # type: ignore[arg-type]  # killed in Namespace.close()
        self._buffer = b""

    def restart(self) -> None:
        """A fresh agent (after an error left this one in the middle of a command)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        self._start()

    def _request(self, command: dict) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(command).encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None

    def _died(self) -> NetnsError:
        self.proc.kill()
        err = self.proc.communicate(timeout=5)[1].decode(errors="replace")
        return NetnsError(f"probe agent in {self.ns.name} died ({self.proc.returncode}): {err.strip()[-3000:]}")

    def _answer(self, timeout: float) -> object:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.proc.kill()
                raise NetnsError(f"probe agent in {self.ns.name} did not answer within {timeout} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise self._died()
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def listen(self, addrs: Sequence[str], tcp: Sequence[int] = (), udp: Sequence[int] = (),
               raw: Sequence[tuple[int, int]] = (), deadline: float = 60.0) -> None:
        """Start binding (finish with :meth:`ready`)."""
        self._request({"op": "listen", "addrs": list(addrs), "bind": {"tcp": list(tcp), "udp": list(udp)},
                       "raw": [list(pair) for pair in raw], "deadline": deadline})

    def ready(self) -> None:
        """Block until everything :meth:`listen` asked for is bound."""
        answer = self._answer(15)
        if answer != "ready":
            raise NetnsError(f"probe agent in {self.ns.name}: expected ready, got {answer!r}")

    def probe(self, probes: Sequence[Probe]) -> list[ProbeResult]:
        if not probes:
            return []
        specs = [{k: v for k, v in vars(p).items() if v is not None} | {"id": p.id or str(i)}
                 for i, p in enumerate(probes)]
        self._request({"op": "probe", "probes": specs})
        longest = max(p.timeout or 0.5 for p in probes)
        answer = self._answer(15 + longest * (len(probes) // 2000 + 1) * 2)
        assert isinstance(answer, list)
        return [ProbeResult(p, r["status"], r["errno"], r["icmp"], r["elapsed"])
                for p, r in zip(probes, answer, strict=True)]

    def request_collect(self) -> None:
        """Stop recording (finish with :meth:`collected`)."""
        self._request({"op": "collect"})

    def collected(self) -> list[dict]:
        answer = self._answer(15)
        assert isinstance(answer, list)
        return answer


# --- raw packets (rawprobe.py) -------------------------------------------------------------

RAW_SCRIPT = Path(__file__).with_name("rawprobe.py")


def raw_send(ns: Namespace, packets: Sequence[dict]) -> None:
    """Send raw packets from ``ns`` (see rawprobe.py for the packet fields)."""
    if packets:
        ns.run([sys.executable, str(RAW_SCRIPT), "send"], input=json.dumps(list(packets)))


class RawReceiver:
    """Records every packet of some IP protocols delivered to a namespace (raw sockets),
    from READY until :meth:`stop`; like :class:`Listener`, it exits by itself after
    ``deadline`` seconds."""

    def __init__(self, ns: Namespace, family: int, protos: Sequence[int], deadline: float = 30.0) -> None:
        self.records: list[dict] | None = None
        self.proc = ns.popen([sys.executable, str(RAW_SCRIPT), "receive"])
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"family": family, "protos": list(protos), "deadline": deadline}))
        self.proc.stdin.close()
        self.proc.stdin = None
        ready = select.select([self.proc.stdout], [], [], 15)[0]
        if not ready or self.proc.stdout.readline().strip() != "READY":
            self.proc.kill()
            raise NetnsError(f"raw receiver in {ns.name} did not start: {self.proc.communicate(timeout=5)[1]}")

    def stop(self, settle: float = 0.2) -> list[dict]:
        """Wait ``settle`` seconds for packets in flight, then stop and return the records."""
        if self.records is None:
            time.sleep(settle)
            if self.proc.poll() is None:
                self.proc.terminate()
            out, err = self.proc.communicate(timeout=10)
            if self.proc.returncode != 0:
                raise NetnsError(f"raw receiver failed ({self.proc.returncode}): {err.strip()}")
            self.records = json.loads(out)
        return self.records

    def __enter__(self) -> RawReceiver:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None and self.records is None:
            self.stop()
        elif self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def sysctl(ns: Namespace, key: str, value: str | int) -> None:
    """Set a sysctl inside ``ns`` (net.* keys are per namespace), as sysctl(8) would."""
    path = "/proc/sys/" + key.replace(".", "/")
    ns.run(["sh", "-c", f'echo {value} > "$1"', "sh", path])


def mac_address(ns: Namespace, ifname: str) -> str:
    return json.loads(ns.run(["ip", "-j", "link", "show", ifname]).stdout)[0]["address"]


# --- kernel log ---------------------------------------------------------------------------

_log_lock = threading.Lock()
_active_captures = 0  # captures open in this process (guarded by _log_lock)
_LOG_LOCKFILE = "/run/fwgen-nf-log-all-netns.lock"


class KernelLog:
    """New kernel log messages since creation, read from /dev/kmsg.

    Why /dev/kmsg rather than parsing ``dmesg`` output: seeking to its end gives an exact
    position (records carry sequence numbers), so lines from before entry never leak in.
    A background thread drains it continuously: the ring buffer holds only ~128 KiB, and a
    probe batch can log more than that before anyone asks. Records the ring buffer
    overwrote anyway are counted in ``lost``, so a missing line is never silently blamed
    on the rules under test."""

    def __init__(self) -> None:
        self._fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self._fd, 0, os.SEEK_END)
        self._lines: list[str] = []
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self.lost = 0
        self._thread = threading.Thread(target=self._drain_forever, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        with self._mutex:
            for _ in range(100_000):  # bounded: the ring buffer holds far fewer records
                try:
                    rec = os.read(self._fd, 8192).decode(errors="replace")
                except BlockingIOError:
                    break
                except BrokenPipeError:  # the ring buffer overwrote unread records
                    self.lost += 1
                    continue
                self._lines.append(rec.split(";", 1)[-1].split("\n", 1)[0])

    def _drain_forever(self) -> None:
        while not self._stop.is_set():
            select.select([self._fd], [], [], 0.05)
            self._drain()

    def lines(self) -> list[str]:
        self._drain()
        with self._mutex:
            return list(self._lines)

    def wait_for(self, text: str, timeout: float = 3.0) -> list[str]:
        """Lines containing ``text``, polling until one shows up or ``timeout`` passes."""
        end = time.monotonic() + timeout
        while True:
            hits = [line for line in self.lines() if text in line]
            if hits or time.monotonic() >= end:
                return hits
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self._fd)


def read_nf_log_all_netns() -> str:
    return _NF_LOG_ALL_NETNS.read_text().strip()


@contextlib.contextmanager
def kernel_log_capture() -> Iterator[KernelLog]:
    """Enable logging from non-init namespaces (``net.netfilter.nf_log_all_netns=1``, off by
    default so containers cannot flood the host log), yield a KernelLog, and always restore
    the old value.  Captures are serialised - across threads by a lock, across processes
    (parallel test runs) by a flock - because two overlapping save/restore pairs of one
    global sysctl would leave it at 1 or switch it off under the other run's feet.
    A capture opened while another one is open in this process (a session-wide capture
    and a test's own) only gets its own reader: the outer one owns the sysctl."""
    global _active_captures
    if _active_captures:
        log = KernelLog()
        try:
            yield log
        finally:
            log.close()
        return
    if not _log_lock.acquire(timeout=60):
        raise NetnsError("kernel_log_capture: another thread holds the capture for 60 s")
    _active_captures += 1
    fd = os.open(_LOG_LOCKFILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for _ in range(1200):  # up to 60 s
            with contextlib.suppress(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            time.sleep(0.05)
        else:
            raise NetnsError(f"{_LOG_LOCKFILE} held by another process for 60 s")
        saved = read_nf_log_all_netns()
        try:
            _NF_LOG_ALL_NETNS.write_text("1\n")
            log = KernelLog()
            try:
                yield log
            finally:
                log.close()
        finally:
            _NF_LOG_ALL_NETNS.write_text(saved + "\n")
    finally:
        os.close(fd)  # releases the flock
        _active_captures -= 1
        _log_lock.release()


def counters_nft(ns: Namespace) -> str:
    """``nft list ruleset`` (with counters) for assertions on packet counts."""
    return ns.run(["nft", "list", "ruleset"]).stdout


def counters_iptables(ns: Namespace, v6: bool = False) -> str:
    """``iptables -L -v -n -x`` output: exact packet/byte counters per rule."""
    return ns.run(["ip6tables" if v6 else "iptables", "-L", "-v", "-n", "-x"]).stdout
