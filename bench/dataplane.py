#!/usr/bin/env python3
"""Data-plane benchmark: what each ruleset costs the kernel (bench/README.md, "Data plane").

    python3 bench/dataplane.py                   # large, ports5000, registry; 3 rounds
    python3 bench/dataplane.py --cases registry --rounds 5
    python3 bench/dataplane.py --quick           # 1 round of 1 s each: smoke test

Run as root. For each case (bench/policies.py, plus a final allow for the probe port
60001), fwgen (this checkout, or --fwgen-cmd) and Aerleon 1.18 (bench/.venv-aerleon, as
bench/run.py makes it) build the outputs; each output is loaded into fresh network
namespaces to time its load, then, round after round, every ruleset (and "none", twice
a round) is loaded into the host namespace of a fresh namespace pair and the peer
namespace measures through it: new TCP connections/s (--threads clients, connect and
close) and the packets/s of one established UDP flow. Rates are reported as medians
over the rounds and as the median per-round share of "none" measured in the same round.
The table goes to stdout and to bench/dataplane-results.md (--output).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import aerleon_env  # noqa: E402
import dpnetns  # noqa: E402
import measure  # noqa: E402
import run as bench_run  # noqa: E402  (fwgen runner and machine info of the build bench)
from dpmeasure import PROBE_PORT, Ruleset, Station, Window  # noqa: E402

import policies  # noqa: E402

LABELS = ("none", "fwgen nftables", "fwgen iptables", "Aerleon 1.18 nftables",
          "Aerleon 1.18 iptables (speedway)")
NONE_AGAIN = "none (again)"
MINIMAL = "stateful minimum (nft, 3 rules)"
# What any stateful ruleset costs at least: conntrack, and the probe port's accept.
MINIMAL_NFT = f"""table inet fwgendp_minimum {{
  chain input {{
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    tcp dport {PROBE_PORT} accept
    udp dport {PROBE_PORT} accept
  }}
}}
"""
DEFAULT_OUTPUT = os.path.join(BENCH_DIR, "dataplane-results.md")
SEED = 1  # the case's rule order; the rates do not depend on it


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Case:
    def __init__(self, name: str, source: str, workdir: str):
        self.name = name
        self.source = source  # how it was made, for the report
        minimal = os.path.join(workdir, "minimum.nft")
        with open(minimal, "w", encoding="utf-8") as fh:
            fh.write(MINIMAL_NFT)
        self.rulesets: list[Ruleset] = [Ruleset("none", "none"),
                                        Ruleset(MINIMAL, "nft", (minimal,))]
        self.notes: list[str] = []
        self.rounds: list[dict[str, dict]] = []  # per round: label -> _round_row()
        # label -> proto -> every (none window, its window) of every round
        self.windows: dict[str, dict[str, list[tuple[Window, Window]]]] = {}


# ---------------------------------------------------------------------------- building


def _fwgen_files(out: str) -> tuple[str, str, str]:
    """(nft file, rules.v4, rules.v6) of one fwgen build (OUT/NAME/... or 1.x's OUT/...)."""
    def one(pattern: str) -> str:
        found = sorted(glob.glob(os.path.join(out, "**", pattern), recursive=True))
        if len(found) != 1:
            raise bench_run.HarnessError(f"fwgen build: expected one {pattern} under {out}, "
                                         f"found {len(found)}")
        return found[0]
    return one("nftables/*.nft"), one("iptables/rules.v4"), one("iptables/rules.v6")


def _fwgen_build(fwgen: bench_run.Fwgen, policy: str, out: str) -> bench_run.measure.ProcResult:
    return fwgen.build(policy, out, out + ".stderr")


def build_case(name: str, workdir: str, fwgen: bench_run.Fwgen, aerleon: bool) -> Case:
    """A bench case with the probe-port allow: fwgen's outputs and Aerleon's."""
    case = Case(name, f"bench/policies.py case {name} + final allow for port {PROBE_PORT}",
                workdir)
    ack: tuple[str, ...] = ()
    gen = policies.generate(name, SEED, ack, probe_port=PROBE_PORT)
    files = gen.write(workdir)
    policy = files[f"fwgen/{name}.yaml"]
    out = os.path.join(workdir, "out-fwgen")
    r = _fwgen_build(fwgen, policy, out)
    ids = sorted(set(bench_run._FINDING.findall(r.stderr)))
    if r.returncode == 1 and ids:  # the linter's error findings, as bench/run.py handles them
        ack = tuple(ids)
        gen = policies.generate(name, SEED, ack, probe_port=PROBE_PORT)
        files = gen.write(workdir)
        shutil.rmtree(out, ignore_errors=True)
        r = _fwgen_build(fwgen, policy, out)
        case.notes.append(f"the fwgen policy acknowledges {', '.join(ack)} (its linter asked)")
    bench_run.check(r, f"fwgen build ({name})")
    _add_fwgen(case, out)
    if not aerleon:
        _add_missing_aerleon(case, "not built (--no-aerleon)")
        return case
    definitions = os.path.join(workdir, "aerleon", "def")
    for target, label in (("nftables", LABELS[3]), ("speedway", LABELS[4])):
        pol = files[f"aerleon/pol/{target}/{name}.yaml"]
        a_out = os.path.join(workdir, "out-aerleon", target)
        log(f"  {name}: aclgen {target}")
        r = measure.run_process(aerleon_env.aclgen_argv(pol, definitions, a_out),
                                env=bench_run.child_env(),
                                stderr_path=os.path.join(workdir, f"aclgen-{target}.log"))
        path = aerleon_env.output_path(a_out, pol, target)
        if r.returncode != 0 or not os.path.isfile(path):
            case.rulesets.append(Ruleset(label, "none", error="aclgen failed: "
                                         + dpnetns.first_line(r.stderr)))
        elif target == "nftables":
            case.rulesets.append(Ruleset(label, "nft", (path,)))
        else:  # one *filter block for both families: split as bench/run.py does
            case.rulesets.append(Ruleset(label, "ipt", measure.split_speedway(path, a_out)))
            as_is = _load_as_is(path, a_out)
            if as_is:
                case.notes.append(f"Aerleon's speedway file as written does not load "
                                  f"(`{as_is}`): measured split into its IPv4 and its IPv6 "
                                  "filter, as bench/run.py loads it")
    return case


def _load_as_is(path: str, workdir: str) -> str:
    """iptables-restore of the file as aclgen wrote it, in a fresh namespace: '' when it
    loads, else the first line of the error."""
    with measure.Netns() as ns:
        r = ns.run(["iptables-restore"], path, os.path.join(workdir, "as-is.stderr"))
    return "" if r.returncode == 0 else dpnetns.first_line(r.stderr)


def policy_case(path: str, workdir: str, fwgen: bench_run.Fwgen) -> Case:
    """--policy FILE: a fwgen policy of your own (it should allow or deny port 60001);
    fwgen's outputs only, there is no Aerleon equivalent."""
    stem = os.path.splitext(os.path.basename(path))[0]
    case = Case(stem, f"--policy {path}", workdir)
    out = os.path.join(workdir, "out-fwgen")
    bench_run.check(_fwgen_build(fwgen, os.path.abspath(path), out), f"fwgen build ({path})")
    _add_fwgen(case, out)
    _add_missing_aerleon(case, "no Aerleon policy for a --policy file")
    return case


def _add_fwgen(case: Case, out: str) -> None:
    nft, v4, v6 = _fwgen_files(out)
    case.rulesets.append(Ruleset(LABELS[1], "nft", (nft,)))
    case.rulesets.append(Ruleset(LABELS[2], "ipt", (v4, v6)))
    rules = measure.file_stats(v4, "iptables")
    with open(v4, encoding="utf-8") as fh:
        lines = sum(1 for _ in fh)
    case.notes.append(f"fwgen rules.v4: {lines:,} lines, {rules.rules:,} `-A` rules")


def _add_missing_aerleon(case: Case, why: str) -> None:
    for label in LABELS[3:]:
        case.rulesets.append(Ruleset(label, "none", error=why))


# ---------------------------------------------------------------------------- measuring


def load_times(case: Case, runs: int) -> None:
    """Each output into a fresh namespace, ``runs`` times (the first failure stops it)."""
    for rs in case.rulesets:
        if rs.kind == "none" or rs.error:
            continue
        for i in range(runs):
            err = os.path.join(os.path.dirname(rs.files[0]), f"load-{rs.kind}-{i}")
            if rs.kind == "nft":
                results = [measure.load_nft(rs.files[0], err)]
            else:
                results = list(measure.load_iptables(rs.files[0], rs.files[1], err))
            bad = next((x for x in results if not x.ok), None)
            if bad:
                rs.error = f"does not load: `{bad.error}`"
                break
            rs.loads.append(sum(x.seconds for x in results))
            rs.file_loads.append([x.seconds for x in results])


def run_rounds(case: Case, args: argparse.Namespace) -> None:
    """Each round: a fresh station (namespace pair, servers, clients) per ruleset, one for
    "none" and a second "none" (the noise check). The TCP windows, then the UDP windows,
    go none, A, none, B, ...: every ruleset's window right after one of "none", so drift
    on the loaded machine hits both alike; the ruleset order rotates every slice."""
    measured = [rs for rs in case.rulesets if rs.kind != "none" and not rs.error]
    measured.insert(0, Ruleset(NONE_AGAIN, "none"))
    slices = max(1, round(args.duration / args.slice))
    seconds = args.duration / slices
    for r in range(args.rounds):
        got: dict[str, dict[str, list[tuple[Window, Window]]]] = {
            rs.label: {"tcp": [], "udp": []} for rs in measured}
        nones: dict[str, list[tuple[Window, Window]]] = {"tcp": [], "udp": []}
        with contextlib.ExitStack() as stack:
            none = stack.enter_context(Station(Ruleset("none", "none"), args.family, args.threads))
            stations = [stack.enter_context(Station(rs, args.family, args.threads))
                        for rs in measured]
            for proto in ("tcp", "udp"):
                for k in range(slices):
                    shift = (k + r) % len(stations)
                    for st in stations[shift:] + stations[:shift]:
                        base = getattr(none, proto)(seconds)
                        got[st.rs.label][proto].append((base, getattr(st, proto)(seconds)))
                        nones[proto].append((base, base))
        row = {"none": _round_row(nones)} | {label: _round_row(v) for label, v in got.items()}
        case.rounds.append(row)
        for label, v in [("none", nones), *got.items()]:
            for proto in ("tcp", "udp"):
                case.windows.setdefault(label, {"tcp": [], "udp": []})[proto] += v[proto]
        log(f"  {case.name} round {r + 1}/{args.rounds}: " + "; ".join(
            f"{label} {x['conn_s']:,.0f} conn/s {x['conn_share']:.0%}, "
            f"{x['udp_s']:,.0f} pkt/s {x['udp_share']:.0%}" for label, x in row.items()))


def _round_row(windows: dict[str, list[tuple[Window, Window]]]) -> dict:
    """One ruleset over some windows: medians of the window rates and of each window's
    share of the "none" window just before it (a median, so a window that a burst of the
    machine's other work hit does not move the result); failures summed."""
    row: dict = {"windows": len(windows["tcp"])}
    for proto, attr, key in (("tcp", "conn_rate", "conn"), ("udp", "udp_rate", "udp")):
        base = [getattr(b, attr) for b, _ in windows[proto]]
        mine = [getattr(w, attr) for _, w in windows[proto]]
        row[f"{key}_s"] = _med(mine)
        row[f"{key}_share"] = _med([m / b for m, b in zip(mine, base, strict=True) if b])
    tcp = [w for _, w in windows["tcp"]]
    udp = [w for _, w in windows["udp"]]
    errors: dict[str, int] = {}
    for w in tcp:
        for name, n in w.errors.items():
            errors[name] = errors.get(name, 0) + n
    return row | {"conn_failed": sum(w.failed for w in tcp), "conn_errors": errors,
                  "udp_dropped": sum(w.dropped for w in udp),
                  "udp_unanswered": sum(not w.established for w in udp if w.received),
                  "late": sum(w.late for w in tcp + udp)}


# ---------------------------------------------------------------------------- report


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(case: Case) -> list[dict]:
    """One row per ruleset, over every window of every round (``_round_row``), with the
    per-round shares for the report."""
    rows = []
    labels = [rs.label for rs in case.rulesets]
    labels.insert(1, NONE_AGAIN)
    errors = {rs.label: rs.error for rs in case.rulesets}
    loads = {rs.label: rs.loads for rs in case.rulesets}
    for label in labels:
        row: dict = {"ruleset": label, "error": errors.get(label, ""),
                     "load_s": _med(loads[label]) if loads.get(label) else None}
        if label in case.windows and not row["error"]:
            row |= _round_row(case.windows[label])
            row["conn_shares"] = [r[label]["conn_share"] for r in case.rounds]
            row["udp_shares"] = [r[label]["udp_share"] for r in case.rounds]
        rows.append(row)
    return rows


def case_table(case: Case, rows: list[dict], args: argparse.Namespace) -> list[str]:
    out = [f"### {case.name}", "", f"Policy: {case.source}. {args.rounds} round"
           f"{'s' if args.rounds != 1 else ''} of {args.duration:g} s per rate and ruleset "
           f"(windows of {args.duration / max(1, round(args.duration / args.slice)):.2g} s, "
           "each right after one of \"none\"; rates and shares: medians over the windows); "
           f"IPv{args.family}; {args.threads} TCP clients; load s = median of "
           f"{args.load_runs} load{'s' if args.load_runs != 1 else ''} into a fresh namespace "
           "(`ip netns exec` included; iptables = iptables-restore + ip6tables-restore).", "",
           "| ruleset | connections/s | share | UDP packets/s | share | load s |",
           "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row["error"]:
            out.append(f"| {row['ruleset']} | {row['error']} | — | — | — | — |")
            continue
        load = "—" if row["load_s"] is None else f"{row['load_s']:.3f}"
        out.append(f"| {row['ruleset']} | {row['conn_s']:,.0f} | {row['conn_share']:.0%} | "
                   f"{row['udp_s']:,.0f} | {row['udp_share']:.0%} | {load} |")
    out.append("")
    out.append(f"- \"{NONE_AGAIN}\" is a second station without rules, measured like the "
               "rulesets: its distance from 100% is the noise of this run. "
               f"\"{MINIMAL}\": `ct state established,related accept` and accept port "
               f"{PROBE_PORT}, policy drop: the least a stateful ruleset costs (conntrack).")
    for row in rows:
        if row.get("conn_shares") and row["ruleset"] != "none" and len(row["conn_shares"]) > 1:
            out.append(f"- {row['ruleset']}: shares per round, connections "
                       + " / ".join(f"{x:.0%}" for x in row["conn_shares"]) + "; UDP "
                       + " / ".join(f"{x:.0%}" for x in row["udp_shares"]))
        if row.get("conn_failed"):
            errs = ", ".join(f"{k} {n}" for k, n in sorted(row["conn_errors"].items()))
            out.append(f"- {row['ruleset']}: {row['conn_failed']} connects failed ({errs})")
        if row.get("udp_dropped"):
            out.append(f"- {row['ruleset']}: {row['udp_dropped']:,} datagrams arrived but were "
                       "dropped for a full receive buffer (not counted)")
        if row.get("udp_unanswered"):
            out.append(f"- {row['ruleset']}: in {row['udp_unanswered']} UDP windows the flow "
                       "passed but its hello was not answered (not an established flow)")
        if row.get("late"):
            out.append(f"- {row['ruleset']}: {row['late']} workers started late")
    for rs in case.rulesets:
        if rs.kind == "ipt" and rs.file_loads and not rs.error:
            v4, v6 = (_med([x[i] for x in rs.file_loads]) for i in (0, 1))
            out.append(f"- {rs.label} load: IPv4 file {v4:.3f} s + IPv6 file {v6:.3f} s")
    out += [f"- {n}" for n in case.notes]
    return out + [""]


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", help=f"comma-separated, of {','.join(policies.CASES)} "
                   "(default: all three; none with --policy)")
    p.add_argument("--policy", action="append", default=[], metavar="FILE",
                   help="also measure this fwgen policy (fwgen outputs only; repeatable)")
    p.add_argument("--rounds", type=int, help="rounds over every ruleset (default 3)")
    p.add_argument("--duration", type=float, help="seconds per rate measurement (default 3)")
    p.add_argument("--slice", type=float, default=0.5,
                   help="seconds per window: --duration is cut into windows of about this")
    p.add_argument("--threads", type=int, default=4, help="TCP client processes (default 4)")
    p.add_argument("--load-runs", type=int, help="kernel loads per output (default 5)")
    p.add_argument("--family", type=int, choices=(4, 6), default=4,
                   help="address family of the traffic (default 4)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round of 1 s, 1 load (explicit options win)")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="results file (markdown)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--keep", action="store_true", help="keep the work directory (outputs)")
    p.add_argument("--no-aerleon", action="store_true", help="fwgen's outputs only")
    p.add_argument("--fwgen-cmd", help="run this fwgen command (default: this checkout)")
    args = p.parse_args(argv)
    quick = {"rounds": 1, "duration": 1.0, "load_runs": 1}
    full = {"rounds": 3, "duration": 3.0, "load_runs": 5}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.cases is None:
        args.cases = "" if args.policy else ",".join(policies.CASES)
    args.case_list = [c for c in args.cases.split(",") if c]
    bad = [c for c in args.case_list if c not in policies.CASES]
    if bad:
        p.error(f"unknown case(s) {', '.join(bad)}; known: {', '.join(policies.CASES)}")
    if not args.case_list and not args.policy:
        p.error("nothing to measure")
    if args.rounds < 1 or args.threads < 1 or args.load_runs < 1:
        p.error("--rounds, --threads and --load-runs must be >= 1")
    if args.duration <= 0 or args.slice <= 0:
        p.error("--duration and --slice must be > 0")
    args.command = shlex.join(["python3", "bench/dataplane.py", *(sys.argv[1:] if argv is None else argv)])
    return args


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every ``with Pair()``: namespaces go


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("dataplane: error: run as root (network namespaces)", file=sys.stderr)
        return 1
    missing = [t for t in ("ip", "nft", "iptables-restore", "ip6tables-restore")
               if shutil.which(t) is None]
    if missing:
        print(f"dataplane: error: missing {', '.join(missing)}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _on_sigterm)
    stale = dpnetns.cleanup_stale()
    if stale:
        log(f"deleted {len(stale)} namespaces of a killed run")
    aerleon = bool(args.case_list) and not args.no_aerleon
    aerleon_version = aerleon_env.ensure_venv(log) if aerleon else "not used"
    fwgen = bench_run.Fwgen(args.fwgen_cmd)
    workdir = tempfile.mkdtemp(prefix="fwgen-dataplane-")
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        cases = []
        for name in args.case_list:
            log(f"building {name}")
            d = os.path.join(workdir, name)
            os.makedirs(d)
            cases.append(build_case(name, d, fwgen, aerleon))
        for path in args.policy:
            d = os.path.join(workdir, "policy-" + str(len(cases)))
            os.makedirs(d)
            cases.append(policy_case(path, d, fwgen))
        all_rows = {}
        for case in cases:
            log(f"{case.name}: kernel load times")
            load_times(case, args.load_runs)
            run_rounds(case, args)
            all_rows[case.name] = summary(case)
        exec_base = measure.netns_exec_baseline()
    except (bench_run.HarnessError, dpnetns.NetnsError, OSError) as e:
        print(f"dataplane: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dataplane: interrupted; namespaces removed", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info = bench_run.machine_info(fwgen, aerleon_version)
    text = ["## Data plane: results", "",
            f"Command: `{args.command}`  ",
            f"Taken {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average before {load_start}, "
            f"after {load_end} (on {info[0][1]} cores: above ~1 means other work shared the "
            f"machine); `ip netns exec true` takes {exec_base:.3f} s.", "",
            *(f"- {k}: {v}" for k, v in info), ""]
    for case in cases:
        text += case_table(case, all_rows[case.name], args)
    report = "\n".join(text)
    print(report)
    with open(args.output, "w", encoding="utf-8") as fh:
        fh.write(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(all_rows, fh, indent=1)
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
