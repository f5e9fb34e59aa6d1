"""Measuring: child processes (wall clock + peak RSS), output statistics, kernel loads."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

# ------------------------------------------------------------------------ processes


@dataclass
class ProcResult:
    argv: list[str]
    wall: float  # seconds, spawn to reap
    maxrss_kb: int  # ru_maxrss of the child (and any children it waited for), KiB
    cpu: float  # user + system CPU seconds of the child: less disturbed by a busy machine
    returncode: int
    stderr: str


SPAWN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spawn.py")


def run_process(
    argv: list[str],
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    stdin_path: str | None = None,
    stderr_path: str | None = None,
) -> ProcResult:
    """Run one fresh process; wall clock from just before its spawn until it is reaped.

    A small launcher (bench/spawn.py) starts it and reaps it with ``os.wait4``, so
    ``ru_maxrss`` is that process's own peak RSS (Linux: KiB), not the harness's (which
    an exec straight from the harness would carry over; see spawn.py). stdout is
    discarded, stderr goes to a file (a pipe could fill up and stall a chatty child such
    as aclgen).
    """
    stderr_path = stderr_path or os.devnull
    fd, result_path = tempfile.mkstemp(prefix="fwgen-bench-spawn-", suffix=".json")
    os.close(fd)
    try:
        with open(stderr_path, "wb") as err, open(stdin_path or os.devnull, "rb") as inp:
            subprocess.run([sys.executable, "-I", "-S", SPAWN, result_path, *argv], cwd=cwd, env=env,
                           stdin=inp, stdout=subprocess.DEVNULL, stderr=err, check=True)
        with open(result_path, encoding="utf-8") as fh:
            record = json.load(fh)
    finally:
        os.unlink(result_path)
    if "error" in record:
        raise OSError(f"cannot run {argv[0]}: {record['error']}")
    returncode = os.waitstatus_to_exitcode(record["status"])
    text = ""
    if stderr_path != os.devnull:
        with open(stderr_path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    return ProcResult(argv, record["wall"], record["maxrss_kb"], record["cpu"], returncode, text)


def run_parallel(
    argvs: list[list[str]],
    jobs: int,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    stderr_path: str | None = None,
) -> ProcResult:
    """Run every argv as its own fresh process, at most ``jobs`` at a time (like
    ``xargs -P jobs``), as one timed unit: wall clock from just before the first fork
    until the last child is reaped; CPU = the sum of the children's; peak RSS = the largest
    child's; returncode = the first non-zero one (else 0); stderr = all of theirs, in
    start order. The caller must have no other children running (``os.wait4(-1)``).
    The children are started from the harness itself, so their RSS is an upper bound
    (see bench/spawn.py)."""
    if not argvs:
        raise ValueError("run_parallel: nothing to run")
    base = stderr_path or os.devnull
    running: dict[int, tuple[int, subprocess.Popen[bytes], str]] = {}
    rusages: dict[int, tuple[int, float, int]] = {}  # index -> (maxrss, cpu, returncode)
    errs: list[str] = []
    todo = list(enumerate(argvs))
    todo.reverse()
    with open(os.devnull, "rb") as inp:
        t0 = time.perf_counter()
        while todo or running:
            while todo and len(running) < max(1, jobs):
                index, argv = todo.pop()
                err_path = os.devnull if base == os.devnull else f"{base}.{index}"
                errs.append(err_path)
                with open(err_path, "wb") as err:
                    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=inp,
                                            stdout=subprocess.DEVNULL, stderr=err)
                running[proc.pid] = (index, proc, err_path)
            pid, status, usage = os.wait4(-1, 0)
            if pid not in running:
                continue
            index, proc, _ = running.pop(pid)
            proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
            rusages[index] = (usage.ru_maxrss, usage.ru_utime + usage.ru_stime, proc.returncode)
        wall = time.perf_counter() - t0
    text = []
    for path in errs:
        if path != os.devnull:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text.append(fh.read())
    codes = [rusages[i][2] for i in range(len(argvs))]
    return ProcResult(
        [*argvs[0], f"(+ {len(argvs) - 1} more processes, {jobs} at a time)"],
        wall,
        max(r[0] for r in rusages.values()),
        sum(r[1] for r in rusages.values()),
        next((c for c in codes if c), 0),
        "".join(text),
    )


def speed_probe(env: dict[str, str] | None = None, python: str = sys.executable) -> float:
    """Seconds a bare interpreter (``python -c pass``) takes to start and exit: a gauge of
    how fast the machine is at the moment for what a short build spends most of its time
    on (process start, imports, page faults). Shared virtual cores drift a lot."""
    return run_process([python, "-c", "pass"], env=env).wall


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------------ output stats


@dataclass
class FileStats:
    path: str
    bytes: int
    longest_line: int
    rules: int  # nft: rule lines inside chains; iptables: -A lines; netsh: add rule lines
    elements: int = 0  # nft only: elements of named sets / maps


def nft_counts(text: str) -> tuple[int, int]:
    """(rule lines inside chains, elements of named sets/maps) of an nft -f file.

    A rule spread over several lines (one ending in '{', e.g. an inline vmap) counts once."""
    stack: list[str] = []
    rules = elements = 0
    collecting = False  # inside a multi-line 'elements = { ... }'
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        top = stack[-1] if stack else None
        if collecting:
            elements += _count_items(line.split("}")[0])
            collecting = "}" not in line
        elif top in ("set", "map") and line.startswith("elements"):
            body = line.split("=", 1)[1].strip()
            if body.startswith("{"):
                body = body[1:]
            elements += _count_items(body.split("}")[0])
            collecting = "}" not in body
        elif line.endswith("{"):
            if top == "chain":  # a rule continued over several lines
                rules += 1
                stack.append("rule")
            else:
                stack.append(line.split()[0])  # table / chain / set / map / counter ...
        elif line.startswith("}"):
            if stack:
                stack.pop()
        elif top == "chain" and not line.startswith(("type ", "policy ")):
            rules += 1
    return rules, elements


def _count_items(text: str) -> int:
    return sum(1 for item in text.split(",") if item.strip())


def file_stats(path: str, kind: str) -> FileStats:
    """kind: 'nftables', 'iptables' or 'windows'."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    lines = text.splitlines()
    longest = max((len(line) for line in lines), default=0)
    size = os.path.getsize(path)
    if kind == "nftables":
        rules, elements = nft_counts(text)
        return FileStats(path, size, longest, rules, elements)
    if kind == "iptables":
        return FileStats(path, size, longest, sum(1 for ln in lines if ln.startswith("-A ")))
    if kind == "windows":
        return FileStats(path, size, longest, sum(1 for ln in lines if " add rule " in ln))
    raise ValueError(kind)


def split_speedway(path: str, out_dir: str) -> tuple[str, str]:
    """Aerleon's speedway writes the IPv4 and the IPv6 filter into ONE ``*filter`` block,
    which neither iptables-restore nor ip6tables-restore accepts. Split it at each
    filter's '# Speedway' header comment (its address family is on a '# inet' /
    '# inet6' line) into a v4 and a v6 file, each wrapped in *filter ... COMMIT."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    sections: list[list[str]] = []
    for line in lines:
        if line in ("*filter", "COMMIT"):
            continue
        if line.startswith("# Speedway ") or not sections:
            sections.append([])
        sections[-1].append(line)
    v4: list[str] = []
    v6: list[str] = []
    for section in sections:
        (v6 if "# inet6" in section else v4).extend(section)
    out = []
    for name, body in (("aerleon.v4", v4), ("aerleon.v6", v6)):
        p = os.path.join(out_dir, name)
        with open(p, "w", encoding="utf-8") as fh:
            fh.write("\n".join(["*filter", *body, "COMMIT"]) + "\n")
        out.append(p)
    return out[0], out[1]


# ------------------------------------------------------------------------ kernel loads

_NS_COUNTER = 0


def netns_available() -> bool:
    """Root, ip, nft, iptables-restore and ip6tables-restore, and a namespace can be made."""
    if os.geteuid() != 0:
        return False
    try:
        with Netns() as ns:
            return run_process(["ip", "netns", "exec", ns.name, "true"]).returncode == 0
    except (OSError, RuntimeError):
        return False


class Netns:
    """A throwaway network namespace; always deleted on exit. The root namespace's rules
    are never touched: every load runs under ``ip netns exec NAME``."""

    def __init__(self) -> None:
        global _NS_COUNTER
        _NS_COUNTER += 1
        self.name = f"fwgenbench-{os.getpid()}-{_NS_COUNTER}"

    def __enter__(self) -> Netns:
        r = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"ip netns add {self.name}: {r.stderr.strip()}")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)

    def run(self, argv: list[str], stdin_path: str | None, err_path: str) -> ProcResult:
        return run_process(["ip", "netns", "exec", self.name, *argv], stdin_path=stdin_path,
                           stderr_path=err_path)


@dataclass
class LoadResult:
    seconds: float  # wall time of 'ip netns exec NS <loader>', process start included
    ok: bool
    error: str = ""


def load_nft(path: str, err_path: str) -> LoadResult:
    with Netns() as ns:
        r = ns.run(["nft", "-f", path], None, err_path)
    return LoadResult(r.wall, r.returncode == 0, _first_line(r.stderr))


def load_iptables(v4: str, v6: str, err_path: str) -> tuple[LoadResult, LoadResult]:
    """iptables-restore then ip6tables-restore, in one fresh namespace."""
    with Netns() as ns:
        r4 = ns.run(["iptables-restore"], v4, err_path + ".v4")
        r6 = ns.run(["ip6tables-restore"], v6, err_path + ".v6")
    return (LoadResult(r4.wall, r4.returncode == 0, _first_line(r4.stderr)),
            LoadResult(r6.wall, r6.returncode == 0, _first_line(r6.stderr)))


def netns_exec_baseline(runs: int = 5) -> float:
    """Median wall time of 'ip netns exec NS true': the fixed cost inside each load time."""
    with Netns() as ns:
        return median([ns.run(["true"], None, os.devnull).wall for _ in range(runs)])


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip() and not line.startswith("# Warning"):
            return line.strip()[:200]
    return ""
