#!/usr/bin/env python3
"""What loading an iptables file costs the kernel per rule, and so the least any
iptables output of a policy can cost (issue 15's load goal).

A harness, not a test. Run as root:

    python3 bench/loadfloor.py                 # the registry case, 5 loads each
    python3 bench/loadfloor.py --case large --runs 9

It builds the case's fwgen outputs (bench/policies.py, with the data-plane bench's final
allow for port 60001), counts the lines of rules.v4 that the policy's meaning requires
(each rule's own chain holds its rate-limited LOG line and its verdict line, whose
counters are the rule's counters, and every port interval of the first-match partition
needs one line matching it: iptables has no verdict maps), and loads into fresh network
namespaces, median of --runs each:

- fwgen's rules.v4 as built;
- a file of exactly that many required lines, in the cheapest form iptables has
  (``-A INPUT -p tcp --dport N -j ACCEPT``: no comment, no chain, no log): the floor of
  any iptables output of this policy, whatever its dispatch;
- the same rules for ``nft -f``, to show the cost is the kernel's (nf_tables), not
  iptables-restore's parser.

Load times include ``ip netns exec`` (its own time is printed).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import measure  # noqa: E402
import run as bench_run  # noqa: E402

import policies  # noqa: E402

PROBE_PORT = 60001


def required_lines(rules_v4: str) -> dict[str, int]:
    """Lines of a built rules.v4 by kind: the leaf lines jumping to a rule's chain, the
    lines in the rules' chains, and every ``-A`` line."""
    with open(rules_v4, encoding="utf-8") as fh:
        text = fh.read()
    return {
        "all": len(re.findall(r"^-A ", text, re.M)),
        "jumps to a rule's chain": len(re.findall(r"^-A .* -j fwgen-rule-\d+$", text, re.M)),
        "in the rules' chains": len(re.findall(r"^-A fwgen-rule-\d+ ", text, re.M)),
    }


def cheapest_iptables(n: int, path: str) -> None:
    lines = ["*filter", ":INPUT DROP [0:0]"]
    lines += [f"-A INPUT -p tcp --dport {1 + i % 65535} -j ACCEPT" for i in range(n)]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines + ["COMMIT", ""]))


def cheapest_nft(n: int, path: str) -> None:
    lines = ["table ip floor {", "  chain input {",
             "    type filter hook input priority 0; policy drop;"]
    lines += [f"    tcp dport {1 + i % 65535} accept" for i in range(n)]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines + ["  }", "}", ""]))


def load_ipt(path: str, runs: int, err: str) -> float:
    times = []
    for _ in range(runs):
        with measure.Netns() as ns:
            r = ns.run(["iptables-restore"], path, err)
        if r.returncode != 0:
            raise SystemExit(f"loadfloor: iptables-restore {path} failed: {r.stderr.strip()[:200]}")
        times.append(r.wall)
    return statistics.median(times)


def load_nft(path: str, runs: int, err: str) -> float:
    times = []
    for _ in range(runs):
        r = measure.load_nft(path, err)
        if not r.ok:
            raise SystemExit(f"loadfloor: nft -f {path} failed: {r.error}")
        times.append(r.seconds)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="registry", choices=policies.CASES)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("loadfloor: error: run as root (network namespaces)", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="fwgen-loadfloor-")
    try:
        gen = policies.generate(args.case, 1, probe_port=PROBE_PORT)
        files = gen.write(work)
        out = os.path.join(work, "out")
        r = bench_run.Fwgen(None).build(files[f"fwgen/{args.case}.yaml"], out, os.path.join(work, "build.err"))
        bench_run.check(r, f"fwgen build ({args.case})")
        v4 = next(os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f == "rules.v4")
        counts = required_lines(v4)
        required = counts["jumps to a rule's chain"] + counts["in the rules' chains"]
        ipt_floor, nft_floor = os.path.join(work, "floor.v4"), os.path.join(work, "floor.nft")
        cheapest_iptables(required, ipt_floor)
        cheapest_nft(required, nft_floor)
        err = os.path.join(work, "load.err")
        rows = [
            (f"fwgen rules.v4 ({args.case})", counts["all"], load_ipt(v4, args.runs, err)),
            ("the required lines, cheapest form (iptables-restore)", required,
             load_ipt(ipt_floor, args.runs, err)),
            ("the same rules (nft -f)", required, load_nft(nft_floor, args.runs, err)),
        ]
        exec_s = measure.netns_exec_baseline()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    jumps, chained = counts["jumps to a rule's chain"], counts["in the rules' chains"]
    print(f"case {args.case}: rules.v4 has {counts['all']:,} rules; required: {jumps:,} lines "
          f"jumping to a rule's chain + {chained:,} lines in the rules' chains = {required:,}")
    print(f"median of {args.runs} loads into a fresh namespace; `ip netns exec true` takes {exec_s:.3f} s")
    print()
    print("| file | rules | load s | µs per rule |")
    print("|---|---:|---:|---:|")
    for label, n, s in rows:
        print(f"| {label} | {n:,} | {s:.3f} | {(s - exec_s) / n * 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
