#!/usr/bin/env python3
"""fwgen vs Aerleon benchmark harness.

    python3 bench/run.py --runs 5     # the numbers in bench/README.md
    python3 bench/run.py --quick      # 1 run each: smoke test

Per case (bench/policies.py) and run: fresh seeded policies in a fresh temp dir, then, each
a fresh process timed by wall clock with its peak RSS from wait4: fwgen building all three
targets in one invocation, then Aerleon's aclgen once per target. Afterwards (untimed) the
outputs are measured and loaded into throwaway network namespaces. Medians are reported;
the results table goes to stdout and bench/results.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
PYCACHE = os.path.join(BENCH_DIR, ".pycache")
sys.pycache_prefix = PYCACHE  # the harness's own import of fwgen writes nothing under fwgen/
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, REPO)

import aerleon_env  # noqa: E402
import fwgen_env  # noqa: E402
import measure  # noqa: E402

import policies  # noqa: E402

FWGEN_TARGETS = ("iptables", "nftables", "windows")
AERLEON_LABEL = {"speedway": "iptables (speedway)", "nftables": "nftables",
                 "windows_advfirewall": "windows_advfirewall"}
HELP_RUNS = 20
DEFAULT_CASES = (*policies.CASES, "fleet100")


def child_env() -> dict[str, str]:
    """The environment of every timed process, fwgen's and aclgen's alike: bytecode is
    cached (in bench/.pycache, outside the source tree) even when the caller sets
    PYTHONDONTWRITEBYTECODE, so after the untimed warm-up neither tool recompiles its
    sources on every run."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    return env


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- fwgen


class Fwgen:
    """How fwgen is run: by default the checkout, ``python -m fwgen`` with the checkout on
    PYTHONPATH (the same code the installed ``fwgen`` script runs) and the interpreter of
    bench/.venv-fwgen (``fwgen_env``: fwgen's dependencies at the lock's versions, as
    Aerleon runs from its venv); ``--fwgen-cmd`` runs another command, e.g. an installed
    console script."""

    python = sys.executable  # main() sets fwgen_env's venv interpreter

    def __init__(self, cmd: str | None, source: str = REPO):
        self.env = child_env()
        if cmd:
            self.argv = shlex.split(cmd)
        else:
            self.argv = [Fwgen.python, "-m", "fwgen"]
            self.env["PYTHONPATH"] = source + os.pathsep + self.env.get("PYTHONPATH", "")
        self.describe = " ".join(self.argv) + (f" (PYTHONPATH={source})" if not cmd and source != REPO else "")

    @classmethod
    def baseline(cls, spec: str) -> Fwgen:
        """``--baseline``: a source tree of another fwgen (a directory holding fwgen/, e.g.
        a ``git worktree`` of the last release), else a command."""
        if os.path.isdir(os.path.join(spec, "fwgen")):
            return cls(None, os.path.abspath(spec))
        return cls(spec)

    def build(self, policy: str, out: str, err: str) -> measure.ProcResult:
        return measure.run_process([*self.argv, "build", policy, "-o", out],
                                   cwd=os.path.dirname(policy), env=self.env, stderr_path=err)

    def build_fleet(self, directory: str, out: str, err: str, mode: str,
                    jobs: int) -> measure.ProcResult:
        """Every policy of ``directory`` into OUT/NAME/..., timed as one unit.

        mode 'dir': ONE ``fwgen build DIR -o OUT`` process (the directory build);
        'files': one ``fwgen build DIR/NAME.yaml -o OUT/NAME`` process per policy, ``jobs``
        at a time, for an fwgen without directory builds (the generated policies' names
        are their file stems, so both modes write the same tree)."""
        cwd = os.path.dirname(directory)
        if mode == "dir":
            return measure.run_process([*self.argv, "build", directory, "-o", out], cwd=cwd,
                                       env=self.env, stderr_path=err)
        names = sorted(f[:-5] for f in os.listdir(directory) if f.endswith(".yaml"))
        argvs = [[*self.argv, "build", os.path.join(directory, n + ".yaml"), "-o",
                  os.path.join(out, n)] for n in names]
        return measure.run_parallel(argvs, jobs, cwd=cwd, env=self.env, stderr_path=err)

    def help(self) -> measure.ProcResult:
        return measure.run_process([*self.argv, "--help"], env=self.env)

    def version(self) -> str:
        r = subprocess.run([*self.argv, "--version"], env=self.env, capture_output=True,
                           text=True)
        return r.stdout.strip() or r.stderr.strip()

    @staticmethod
    def fleet_outputs(out: str, names: list[str], mode: str) -> dict[str, list[str]]:
        """target -> the files a fleet build must write: OUT/NAME/... per policy (in files
        mode each build's own OUT is OUT/NAME, so a fwgen whose one-file builds write
        OUT/NAME/ too puts them under OUT/NAME/NAME/)."""
        got: dict[str, list[str]] = defaultdict(list)
        for name in names:
            root = os.path.join(out, name) if mode == "files" else out
            for target, items in Fwgen.outputs(root, name).items():
                got[target] += [path for _, path in items]
        return got

    @staticmethod
    def outputs(out: str, case: str) -> dict[str, list[tuple[str, str]]]:
        """target -> [(label, path)] of a build of policy ``case`` with ``-o out``: under
        OUT/NAME/ (fwgen 2's layout, for one file too), else directly under OUT (1.x's)."""
        if os.path.isdir(os.path.join(out, case)):
            out = os.path.join(out, case)
        return {
            "iptables": [("rules.v4", os.path.join(out, "iptables", "rules.v4")),
                         ("rules.v6", os.path.join(out, "iptables", "rules.v6"))],
            "nftables": [(f"{case}.nft", os.path.join(out, "nftables", f"{case}.nft"))],
            "windows": [(f"{case}.cmd", os.path.join(out, "windows", f"{case}.cmd"))],
        }


_FINDING = re.compile(r"\[([a-z0-9][a-z0-9-]*)\]\s*$", re.MULTILINE)  # '... [ssh-lockout]'


class HarnessError(RuntimeError):
    pass


def check(result: measure.ProcResult, what: str) -> None:
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise HarnessError(f"{what} failed (exit {result.returncode}): "
                           f"{shlex.join(result.argv)}\n{tail}")


def require_file(path: str, what: str) -> None:
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise HarnessError(f"{what}: no output at {path}")


def require_files(paths: list[str], what: str, out_dir: str) -> None:
    """Every expected output exists and is non-empty, else stop with how many are missing
    (a tool that exits 0 having written nothing, or only part of a fleet)."""
    missing = [p for p in paths if not os.path.isfile(p) or os.path.getsize(p) == 0]
    if missing:
        found = sum(len(files) for _, _, files in os.walk(out_dir))
        raise HarnessError(f"{what}: {len(missing)} of {len(paths)} expected output files "
                           f"missing or empty under {out_dir} ({found} files there), e.g. "
                           + ", ".join(os.path.relpath(p, out_dir) for p in missing[:3]))


# ---------------------------------------------------------------------------- one case


class CaseResults:
    def __init__(self, name: str):
        self.name = name
        self.wall: dict[str, list[float]] = defaultdict(list)  # 'fwgen' / aerleon target
        self.rss: dict[str, list[int]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)
        # (tool, target, file label) -> list of FileStats
        self.stats: dict[tuple[str, str, str], list[measure.FileStats]] = defaultdict(list)
        # (tool, target, file label) -> list of LoadResult
        self.loads: dict[tuple[str, str, str], list[measure.LoadResult]] = defaultdict(list)
        self.policy_rules = 0
        self.intervals_per_rule = 0
        self.intervals_merged: dict[str, int] = {}
        self.aerleon_terms = 0
        self.warnings: set[str] = set()
        self.acknowledge: tuple[str, ...] = ()  # lint finding ids fwgen asked to acknowledge
        self.probe: list[float] = []  # measure.speed_probe() before each timed run


# The per-run temp dirs, removed when the harness is done rather than after each run: on
# a filesystem without a journal (this machine's ext4 root, where /tmp is), creating a
# file within a minute or so of deleting many scans past every recently deleted inode
# (the kernel's ``recently_deleted`` check). Removing a fleet1000 run's 14,000 files made
# the next run's fwgen, creating 9,000 files and directories seconds later, slower: 4.65
# and 5.27 s after a first run of 4.30 s (3.66 s into a fresh directory, 4.06 s right
# after such a removal), a cost the harness caused, for fwgen only (Aerleon's run starts
# after fwgen's). See bench/README.md.
_LEFT: list[str] = []


def leave(workdir: str, keep: bool) -> None:
    if keep:
        log(f"  kept {workdir}")
    else:
        _LEFT.append(workdir)


def remove_workdirs() -> None:
    for workdir in _LEFT:
        shutil.rmtree(workdir, ignore_errors=True)
    _LEFT.clear()


def run_case(name: str, runs: int, seed: int, fwgen: Fwgen, kernel: bool, keep: bool,
             baseline: Fwgen | None = None) -> CaseResults:
    res = CaseResults(name)
    # Untimed warm-up (bytecode caches, page cache) on its own seed, which also verifies
    # that every tool produces every output for this case before anything is timed.
    for i in [-1, *range(runs)]:
        timed = i >= 0
        case = policies.generate(name, seed * 1000 + i if timed else -seed - 1, res.acknowledge)
        workdir = tempfile.mkdtemp(prefix=f"fwgen-bench-{name}-{f'run{i}' if timed else 'warmup'}-")
        try:
            files = case.write(workdir)
            fw_policy = files[f"fwgen/{name}.yaml"]
            definitions = os.path.join(workdir, "aerleon", "def")

            # --- timed: fwgen (all three targets, one process), then Aerleon per target
            if timed:
                res.probe.append(measure.speed_probe(child_env(), Fwgen.python))
            out = os.path.join(workdir, "out-fwgen")
            r = fwgen.build(fw_policy, out, os.path.join(workdir, "fwgen.stderr"))
            if not timed and r.returncode == 1:
                # fwgen versions with a linter refuse a policy with an error-level finding
                # (e.g. [ssh-lockout]: default inbound deny and no ssh rule) unless the policy
                # lists it under 'acknowledge:'. The benchmark policies are deliberate, so
                # acknowledge what the warm-up build names, once, and use that for every run.
                ids = sorted(set(_FINDING.findall(r.stderr)) - set(res.acknowledge))
                if ids:
                    res.acknowledge = (*res.acknowledge, *ids)
                    case = policies.generate(name, -seed - 1, res.acknowledge)
                    files = case.write(workdir)
                    r = fwgen.build(fw_policy, out, os.path.join(workdir, "fwgen.stderr"))
            check(r, f"fwgen build ({name})")
            for line in r.stderr.splitlines():
                if "warning" in line:
                    res.warnings.add("fwgen: " + line.split("warning:", 1)[-1].strip()[:160])
            if baseline is not None:
                # The baseline builds the same policy right after (or, every other run,
                # right before: out of order, to spread the machine's drift over both).
                b = baseline.build(fw_policy, os.path.join(workdir, "out-baseline"),
                                   os.path.join(workdir, "baseline.stderr"))
                check(b, f"baseline fwgen build ({name})")
                if timed and i % 2:
                    r = fwgen.build(fw_policy, out, os.path.join(workdir, "fwgen.stderr"))
                    check(r, f"fwgen build ({name})")
                if timed:
                    res.wall["baseline"].append(b.wall)
                    res.rss["baseline"].append(b.maxrss_kb)
                    res.cpu["baseline"].append(b.cpu)
            if timed:
                res.wall["fwgen"].append(r.wall)
                res.rss["fwgen"].append(r.maxrss_kb)
                res.cpu["fwgen"].append(r.cpu)
            aerleon_outputs = {}
            for target in policies.AERLEON_TARGETS:
                pol = files[f"aerleon/pol/{target}/{name}.yaml"]
                a_out = os.path.join(workdir, "out-aerleon", target)
                r = measure.run_process(aerleon_env.aclgen_argv(pol, definitions, a_out),
                                        env=child_env(), stderr_path=os.path.join(workdir, f"aclgen-{target}.log"))
                check(r, f"aclgen {target} ({name})")
                path = aerleon_env.output_path(a_out, pol, target)
                require_file(path, f"aclgen {target} ({name})")
                aerleon_outputs[target] = path
                if timed:
                    res.wall[target].append(r.wall)
                    res.rss[target].append(r.maxrss_kb)
                    res.cpu[target].append(r.cpu)
            if not timed:
                continue

            # --- untimed: output statistics and kernel loads
            res.policy_rules = len(case.rules)
            res.intervals_per_rule = case.intervals_per_rule()
            res.intervals_merged = case.intervals_merged()
            res.aerleon_terms = case.files[f"aerleon/pol/nftables/{name}.yaml"].count("- name: ")
            fw_files = Fwgen.outputs(out, name)
            for target, items in fw_files.items():
                for label, path in items:
                    require_file(path, f"fwgen {target} ({name})")
                    res.stats[("fwgen", target, label)].append(measure.file_stats(path, target))
            for target, path in aerleon_outputs.items():
                kind = aerleon_env.TARGET_OUTPUT[target][1]
                res.stats[("aerleon", target, os.path.basename(path))].append(
                    measure.file_stats(path, kind))
            if kernel:
                err = os.path.join(workdir, "load")
                (_, nft), = fw_files["nftables"]
                res.loads[("fwgen", "nftables", "")].append(measure.load_nft(nft, err + ".nft"))
                (_, v4), (_, v6) = fw_files["iptables"]
                l4, l6 = measure.load_iptables(v4, v6, err + ".ipt")
                res.loads[("fwgen", "iptables", "rules.v4")].append(l4)
                res.loads[("fwgen", "iptables", "rules.v6")].append(l6)
                res.loads[("aerleon", "nftables", "")].append(
                    measure.load_nft(aerleon_outputs["nftables"], err + ".anft"))
                a4, a6 = measure.split_speedway(aerleon_outputs["speedway"], workdir)
                l4, l6 = measure.load_iptables(a4, a6, err + ".aipt")
                res.loads[("aerleon", "speedway", "v4")].append(l4)
                res.loads[("aerleon", "speedway", "v6")].append(l6)
            log(f"  {name} run {i + 1}/{runs}: fwgen {res.wall['fwgen'][-1]:.3f}s, aerleon "
                + ", ".join(f"{t} {res.wall[t][-1]:.3f}s" for t in policies.AERLEON_TARGETS))
        finally:
            leave(workdir, keep)
    return res


# ---------------------------------------------------------------------------- fleet

FLEET_WARMUP_HOSTS = 20  # the untimed warm-up builds a small fleet: every check, little time
FLEET_GOAL_RATIO_HOSTS, FLEET_GOAL_RATIO = 100, 25.0  # fleet of 100: >= 25x faster than Aerleon
FLEET_GOAL_WALL_HOSTS, FLEET_GOAL_WALL = 1000, 5.0  # 1,000 hosts in at most 5 s wall
NO_SLOWER = 1.05  # single-policy cases against --baseline: fwgen/baseline wall, noise allowance


class FleetResults:
    def __init__(self, name: str, hosts: int):
        self.name = name
        self.hosts = hosts
        self.wall: dict[str, list[float]] = defaultdict(list)  # 'fwgen' / 'baseline' / 'aerleon'
        self.rss: dict[str, list[int]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)
        self.modes: dict[str, str] = {}  # 'fwgen' / 'baseline' -> 'dir' | 'files'
        # (tool, target) -> per run: (files, rules, bytes, longest line), summed over hosts
        self.outputs: dict[tuple[str, str], list[tuple[int, int, int, int]]] = defaultdict(list)
        self.loads: dict[tuple[str, str], list[measure.LoadResult]] = defaultdict(list)
        self.policy_rules = 0
        self.aerleon_terms = 0
        self.services = 0
        self.networks = 0
        self.warnings: set[str] = set()
        self.acknowledge: tuple[str, ...] = ()
        self.probe: list[float] = []


def _fleet_build(tool: Fwgen, label: str, fw_dir: str, out: str, err: str, res: FleetResults,
                 args: argparse.Namespace) -> measure.ProcResult:
    """One fleet build; the first one (warm-up) also decides the mode: 'dir' unless this
    fwgen refuses a directory (click: "... is a directory", exit 2: no directory builds),
    then 'files' (one process per policy, --fleet-jobs at a time)."""
    mode = res.modes.get(label) or (args.fleet_mode if args.fleet_mode != "auto" else "dir")
    r = tool.build_fleet(fw_dir, out, err, mode, args.fleet_jobs)
    if label not in res.modes:
        if (args.fleet_mode == "auto" and r.returncode == 2
                and "is a directory" in r.stderr):
            shutil.rmtree(out, ignore_errors=True)
            mode = "files"
            r = tool.build_fleet(fw_dir, out, err, mode, args.fleet_jobs)
        res.modes[label] = mode
    return r


def run_fleet(name: str, hosts: int, args: argparse.Namespace, fwgen: Fwgen,
              baseline: Fwgen | None, kernel: bool) -> FleetResults:
    res = FleetResults(name, hosts)
    jobs_note = f"{args.fleet_jobs} at a time"
    for i in [-1, *range(args.runs)]:
        timed = i >= 0
        n = hosts if timed else min(hosts, FLEET_WARMUP_HOSTS)
        seed = args.seed * 1000 + i if timed else -args.seed - 1
        fleet = policies.generate_fleet(n, seed, args.seed, res.acknowledge)
        workdir = tempfile.mkdtemp(prefix=f"fwgen-bench-{name}-{f'run{i}' if timed else 'warmup'}-")
        try:
            fleet.write(workdir)
            fw_dir = os.path.join(workdir, policies.Fleet.FWGEN_DIR)
            names = [h.name for h in fleet.hosts]
            if timed:
                res.probe.append(measure.speed_probe(child_env(), Fwgen.python))
            tools = [("fwgen", fwgen)] + ([("baseline", baseline)] if baseline else [])
            if timed and i % 2:
                tools.reverse()  # the baseline first on odd runs: neither always goes first
            for label, tool in tools:
                out = os.path.join(workdir, f"out-{label}")
                err = os.path.join(workdir, f"{label}.stderr")
                r = _fleet_build(tool, label, fw_dir, out, err, res, args)
                if not timed and r.returncode == 1 and label == "fwgen":
                    # as in run_case: acknowledge the error-level lint findings fwgen names
                    ids = sorted(set(_FINDING.findall(r.stderr)) - set(res.acknowledge))
                    if ids:
                        res.acknowledge = (*res.acknowledge, *ids)
                        fleet = policies.generate_fleet(n, seed, args.seed, res.acknowledge)
                        fleet.write(workdir)
                        shutil.rmtree(out, ignore_errors=True)
                        r = _fleet_build(tool, label, fw_dir, out, err, res, args)
                check(r, f"{label} fwgen fleet build ({name}, {res.modes[label]} mode)")
                expected = Fwgen.fleet_outputs(out, names, res.modes[label])
                require_files([p for ps in expected.values() for p in ps],
                              f"{label} fwgen fleet build ({name})", out)
                for line in r.stderr.splitlines():
                    if "warning" in line and label == "fwgen":
                        res.warnings.add("fwgen: " + line.split("warning:", 1)[-1].strip()[:160])
                if timed:
                    res.wall[label].append(r.wall)
                    res.rss[label].append(r.maxrss_kb)
                    res.cpu[label].append(r.cpu)
                    if label == "fwgen":
                        fw_out = expected

            a_out = os.path.join(workdir, "out-aerleon")
            r = measure.run_process(
                aerleon_env.aclgen_dir_argv(os.path.join(workdir, policies.Fleet.AERLEON_BASE),
                                            os.path.join(workdir, policies.Fleet.AERLEON_DEFS),
                                            a_out, args.aerleon_renderers),
                env=child_env(), stderr_path=os.path.join(workdir, "aclgen.log"))
            check(r, f"aclgen --base_directory ({name})")
            a_expected = aerleon_env.fleet_output_paths(a_out, names)
            require_files([p for ps in a_expected.values() for p in ps],
                          f"aclgen --base_directory ({name})", a_out)
            if not timed:
                continue
            res.wall["aerleon"].append(r.wall)
            res.rss["aerleon"].append(r.maxrss_kb)
            res.cpu["aerleon"].append(r.cpu)

            # --- untimed: output totals, and the first host's outputs into the kernel
            res.policy_rules = fleet.rules
            res.aerleon_terms = fleet.aerleon_terms
            res.services, res.networks = len(fleet.services), len(fleet.networks)
            for tool, by_target, kinds in (
                    ("fwgen", fw_out, {t: t for t in FWGEN_TARGETS}),
                    ("aerleon", a_expected, {t: k for t, (_, k) in aerleon_env.TARGET_OUTPUT.items()})):
                for target, paths in by_target.items():
                    st = [measure.file_stats(p, kinds[target]) for p in paths]
                    res.outputs[(tool, target)].append(
                        (len(st), sum(x.rules for x in st), sum(x.bytes for x in st),
                         max(x.longest_line for x in st)))
            if kernel:
                first = os.path.join(workdir, "load")
                v4, v6, nft = fw_out["iptables"][0], fw_out["iptables"][1], fw_out["nftables"][0]
                res.loads[("fwgen", "nftables")].append(measure.load_nft(nft, first + ".nft"))
                l4, l6 = measure.load_iptables(v4, v6, first + ".ipt")
                res.loads[("fwgen", "iptables v4")].append(l4)
                res.loads[("fwgen", "iptables v6")].append(l6)
                res.loads[("aerleon", "nftables")].append(
                    measure.load_nft(a_expected["nftables"][0], first + ".anft"))
                a4, a6 = measure.split_speedway(a_expected["speedway"][0], workdir)
                l4, l6 = measure.load_iptables(a4, a6, first + ".aipt")
                res.loads[("aerleon", "speedway v4")].append(l4)
                res.loads[("aerleon", "speedway v6")].append(l6)
            log(f"  {name} run {i + 1}/{args.runs}: fwgen {res.wall['fwgen'][-1]:.3f}s "
                f"({res.modes['fwgen']}"
                + (f", {jobs_note}" if res.modes["fwgen"] == "files" else "") + ")"
                + (f", baseline {res.wall['baseline'][-1]:.3f}s ({res.modes['baseline']})"
                   if baseline else "")
                + f", aerleon {res.wall['aerleon'][-1]:.3f}s")
        finally:
            leave(workdir, args.keep)
    return res


def _mode_text(mode: str, jobs: int) -> str:
    if mode == "dir":
        return "one `fwgen build DIR -o OUT` process"
    return f"one `fwgen build FILE -o OUT/NAME` process per policy, {jobs} at a time"


def fleet_report(fleets: list[FleetResults], args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    w = out.append
    has_base = all(f.wall.get("baseline") for f in fleets)
    w("### Fleet: N host policies in one build (fresh processes; fwgen = all three targets "
      "of every host, Aerleon = ONE `aclgen --base_directory` run, all three targets)")
    w("")
    for f in fleets:
        w(f"- {f.name}: fwgen ran as {_mode_text(f.modes['fwgen'], args.fleet_jobs)}"
          + (f"; the baseline as {_mode_text(f.modes['baseline'], args.fleet_jobs)}"
             if has_base else "")
          + f"; aclgen with --max_renderers "
          f"{args.aerleon_renderers or '10 (its default)'}. {f.policy_rules} fwgen rules; "
          f"{f.aerleon_terms} Aerleon terms (each in its direction's IPv4 and IPv6 filters), "
          f"{f.services} services, {f.networks} networks.")
    w("")
    head = "| case | hosts | fwgen wall s | ms per host | Aerleon wall s | ms per host | Aerleon/fwgen |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if has_base:
        head += " baseline wall s | fwgen/baseline |"
        rule += "---:|---:|"
    w(head)
    w(rule)
    for f in fleets:
        fw, ae = med(f.wall["fwgen"]), med(f.wall["aerleon"])
        row = (f"| {f.name} | {f.hosts} | {fmt_s(fw)} | {fw * 1000 / f.hosts:.1f} | {fmt_s(ae)} | "
               f"{ae * 1000 / f.hosts:.1f} | {ae / fw:.1f}x |")
        if has_base:
            bw = med(f.wall["baseline"])
            row += f" {fmt_s(bw)} | {fw / bw:.2f} |"
        w(row)
    w("")
    w("CPU time (user + system, the children each process waited for included) and peak RSS "
      "(the largest single process) of the same runs:")
    w("")
    w("| case | fwgen CPU s | Aerleon CPU s | Aerleon/fwgen | fwgen peak RSS MiB | "
      "Aerleon peak RSS MiB |")
    w("|---|---:|---:|---:|---:|---:|")
    for f in fleets:
        fc, ac = med(f.cpu["fwgen"]), med(f.cpu["aerleon"])
        w(f"| {f.name} | {fmt_s(fc)} | {fmt_s(ac)} | {ac / fc:.1f}x | {mib(max(f.rss['fwgen']))} | "
          f"{mib(max(f.rss['aerleon']))} |")
    w("")
    w("Outputs, summed over the hosts (median over runs; longest line = max). Rules counted "
      "as in the single-policy tables.")
    w("")
    w("| case | tool | target | files | rules | bytes | longest line |")
    w("|---|---|---|---:|---:|---:|---:|")
    for f in fleets:
        for (tool, target), runs in f.outputs.items():
            label = AERLEON_LABEL.get(target, target) if tool == "aerleon" else target
            w(f"| {f.name} | {tool} | {label} | {_med_int(x[0] for x in runs)} | "
              f"{_med_int(x[1] for x in runs)} | {_med_int(x[2] for x in runs)} | "
              f"{max(x[3] for x in runs)} |")
    w("")
    loads = [f"{f.name}: " + ", ".join(f"{tool} {what} {_load_cell(v)}"
                                       for (tool, what), v in f.loads.items())
             for f in fleets if f.loads]
    if loads:
        w("Kernel load of the first host's outputs, seconds (a fresh network namespace each, "
          "as above; Aerleon's speedway file split into v4 and v6): " + "; ".join(loads) + ".")
        w("")
    return out


def fleet_goals(fleets: list[FleetResults]) -> list[tuple[bool, str]]:
    goals = []
    for f in fleets:
        fw, ae = med(f.wall["fwgen"]), med(f.wall["aerleon"])
        if f.hosts == FLEET_GOAL_RATIO_HOSTS:
            goals.append((ae / fw >= FLEET_GOAL_RATIO,
                          f"{f.name}: fwgen {ae / fw:.1f}x faster than Aerleon's one aclgen run "
                          f"({fw:.3f} s against {ae:.3f} s), goal >= {FLEET_GOAL_RATIO:.0f}x"))
        if f.hosts == FLEET_GOAL_WALL_HOSTS:
            goals.append((fw <= FLEET_GOAL_WALL,
                          f"{f.name}: fwgen {fw:.3f} s wall for {f.hosts} hosts <= "
                          f"{FLEET_GOAL_WALL:.0f} s"))
    return goals


# ---------------------------------------------------------------------------- report

med = measure.median


def fmt_s(x: float) -> str:
    return f"{x:.3f}"


def mib(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def git_state() -> tuple[str, str]:
    """(HEAD, uncommitted changes under fwgen/ and templates/) of the checkout (read only)."""
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "fwgen",
                            "templates"], capture_output=True, text=True).stdout.strip()
    return head, dirty


def machine_info(fwgen: Fwgen, aerleon_version: str) -> list[tuple[str, str]]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()

    def tool_version(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "n/a"

    git, dirty = git_state()
    return [
        ("nproc", nproc),
        ("CPU", cpu),
        ("kernel", platform.release()),
        ("Python", platform.python_version() + f" (the harness: {sys.executable}; fwgen: {Fwgen.python})"),
        ("fwgen", f"{fwgen.version()} (checkout {git}"
                  f"{', with uncommitted changes in fwgen/ or templates/' if dirty else ''}; "
                  f"run as `{fwgen.describe}`)"),
        ("Aerleon", f"{aerleon_version} ({aerleon_env.ACLGEN})"),
        ("nft / iptables",
         f"{tool_version(['nft', '--version'])} / {tool_version(['iptables', '--version'])}"),
    ]


def report(results: list[CaseResults], fleets: list[FleetResults], args: argparse.Namespace,
           info: list[tuple[str, str]],
           help_times: list[float], help_rss: list[int], bare_python: float, load_start: str, load_end: str,
           baseline: float | None, git_changed: bool) -> tuple[str, list[tuple[bool, str]]]:
    A = policies.AERLEON_TARGETS
    out: list[str] = []
    w = out.append
    w(f"## fwgen vs Aerleon: results ({args.runs} run{'s' if args.runs != 1 else ''} per case, medians)")
    w("")
    w(f"Command: `{args.command}`  ")
    w(f"Taken {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average before {load_start}, "
      f"after {load_end} (on {info[0][1]} cores: above ~1 means other work shared the machine).")
    w("")
    if git_changed:
        w("**The fwgen checkout changed while this ran** (HEAD or fwgen/ / templates/ edits by "
          "other work): runs may mix versions.")
        w("")
    for k, v in info:
        w(f"- {k}: {v}")
    w("")
    if results:
        w("### Build wall time, seconds (fresh process each; fwgen = all three targets in one "
          "invocation, Aerleon = one aclgen run per target)")
        w("")
        w("| case | fwgen all 3 | Aerleon iptables (speedway) | Aerleon nftables | Aerleon windows | "
          "Aerleon sum of 3 | Aerleon/fwgen iptables | nftables | windows | all 3 |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            f = med(r.wall["fwgen"])
            a = [med(r.wall[t]) for t in A]
            total = med([sum(x) for x in zip(*(r.wall[t] for t in A), strict=False)])
            w(f"| {r.name} | {fmt_s(f)} | " + " | ".join(fmt_s(x) for x in a)
              + f" | {fmt_s(total)} | " + " | ".join(f"{x / f:.1f}x" for x in [*a, total]) + " |")
        w("")
        w("Ratios compare fwgen's time for all three targets with Aerleon's time for ONE target "
          "(the last column: with the sum of Aerleon's three runs).")
        w("")
        w("### CPU time (user + system) of the same processes, seconds, median")
        w("")
        w("Less disturbed than wall time when other work shares the machine; the goals use wall time.")
        w("")
        w("| case | fwgen all 3 | Aerleon iptables (speedway) | Aerleon nftables | Aerleon windows | "
          "Aerleon/fwgen iptables | all 3 |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            f = med(r.cpu["fwgen"])
            a = [med(r.cpu[t]) for t in A]
            total = med([sum(x) for x in zip(*(r.cpu[t] for t in A), strict=False)])
            w(f"| {r.name} | {fmt_s(f)} | " + " | ".join(fmt_s(x) for x in a)
              + f" | {a[0] / f:.1f}x | {total / f:.1f}x |")
        w("")
        if all(r.wall.get("baseline") for r in results):
            w(f"### fwgen against the baseline (`{args.baseline}`), same policies, same runs, medians")
            w("")
            w("| case | fwgen wall s | baseline wall s | fwgen/baseline | fwgen CPU s | baseline CPU s | "
              "fwgen/baseline | fwgen RSS MiB | baseline RSS MiB |")
            w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for r in results:
                fw, bw = med(r.wall["fwgen"]), med(r.wall["baseline"])
                fc, bc = med(r.cpu["fwgen"]), med(r.cpu["baseline"])
                w(f"| {r.name} | {fmt_s(fw)} | {fmt_s(bw)} | {fw / bw:.2f} | {fmt_s(fc)} | {fmt_s(bc)} | "
                  f"{fc / bc:.2f} | {mib(max(r.rss['fwgen']))} | {mib(max(r.rss['baseline']))} |")
            w("")
            w("On odd runs fwgen builds a second time after the baseline and that build is the one "
              "counted, so neither always goes first.")
            w("")
        w("### Peak RSS of each process, MiB (max over runs; ru_maxrss from wait4)")
        w("")
        w("| case | fwgen all 3 | Aerleon iptables (speedway) | Aerleon nftables | Aerleon windows |")
        w("|---|---:|---:|---:|---:|")
        for r in results:
            w(f"| {r.name} | {mib(max(r.rss['fwgen']))} | "
              + " | ".join(mib(max(r.rss[t])) for t in A) + " |")
        w("")
    w(f"`fwgen --help`: median {med(help_times) * 1000:.1f} ms over "
      f"{len(help_times)} runs (min {min(help_times) * 1000:.1f}, max "
      f"{max(help_times) * 1000:.1f}), peak RSS {mib(max(help_rss))} MiB; for reference, "
      f"the bare interpreter (`python -c pass`, same environment) takes {bare_python * 1000:.1f} ms.")
    w("")
    probes = [p for r in [*results, *fleets] for p in r.probe]
    if probes:
        w(f"Machine speed during the runs: the bare interpreter (`python -c pass`), timed before "
          f"each run, took {min(probes) * 1000:.0f}-{max(probes) * 1000:.0f} ms (median "
          f"{med(probes) * 1000:.0f}); short builds slow down with it, for both tools alike.")
        w("")

    if results:
        w("### fwgen outputs (median over runs; longest line = max over runs)")
        w("")
        w("Rules: iptables `-A` lines per file; nftables rule lines inside chains (set/map "
          "elements counted separately); windows `add rule` lines. Kernel load: wall time of "
          "`ip netns exec NS nft -f FILE` (resp. `iptables-restore`, `ip6tables-restore`) into a "
          "fresh throwaway network namespace"
          + (f", including the ~{baseline * 1000:.0f} ms cost of `ip netns exec NS true`."
             if baseline is not None else " (not measured: --no-kernel or no netns here)."))
        w("")
        w("| case | target | file | rules | set elements | bytes | longest line | kernel load s |")
        w("|---|---|---|---:|---:|---:|---:|---:|")
        for r in results:
            for (tool, target, label), stats in r.stats.items():
                if tool != "fwgen":
                    continue
                load = r.loads.get((tool, target, label if target == "iptables" else ""))
                w(f"| {r.name} | {target} | {label} | {_med_int(s.rules for s in stats)} | "
                  f"{_med_int(s.elements for s in stats) if target == 'nftables' else ''} | "
                  f"{_med_int(s.bytes for s in stats)} | {max(s.longest_line for s in stats)} | "
                  f"{_load_cell(load)} |")
        w("")
        w("nftables rules against the policy's port intervals (ports merged into intervals per "
          "protocol: within each rule, and over the whole policy):")
        w("")
        w("| case | policy rules | nft rules | nft set elements | intervals, per rule | "
          "intervals, whole policy tcp + udp |")
        w("|---|---:|---:|---:|---:|---:|")
        for r in results:
            nft = next(s for (tool, t, _), s in r.stats.items() if tool == "fwgen" and t == "nftables")
            w(f"| {r.name} | {r.policy_rules} | {_med_int(s.rules for s in nft)} | "
              f"{_med_int(s.elements for s in nft)} | {r.intervals_per_rule} | "
              f"{r.intervals_merged['tcp']} + {r.intervals_merged['udp']} |")
        w("")

        w("### Aerleon outputs, for comparison")
        w("")
        w("Same counting. The speedway file holds the IPv4 and the IPv6 filter in ONE `*filter` "
          "block, which iptables-restore cannot load as is; for the load test it is split into a "
          "v4 and a v6 file. Kernel load = does it load (and how long), same method as fwgen's.")
        w("")
        w("| case | target | terms in policy | rules | bytes | longest line | kernel load s |")
        w("|---|---|---:|---:|---:|---:|---:|")
        for r in results:
            for (tool, target, _label), stats in r.stats.items():
                if tool != "aerleon":
                    continue
                if target == "speedway":
                    loads = [r.loads.get(("aerleon", "speedway", "v4")),
                             r.loads.get(("aerleon", "speedway", "v6"))]
                    cell = " / ".join(_load_cell(x) for x in loads) if loads[0] else "n/a"
                    if loads[0]:
                        cell += " (v4 / v6)"
                elif target == "nftables":
                    cell = _load_cell(r.loads.get(("aerleon", "nftables", "")))
                else:
                    cell = "n/a (Windows)"
                w(f"| {r.name} | {AERLEON_LABEL[target]} | {r.aerleon_terms} | "
                  f"{_med_int(s.rules for s in stats)} | {_med_int(s.bytes for s in stats)} | "
                  f"{max(s.longest_line for s in stats)} | {cell} |")
        w("")

    if fleets:
        out.extend(fleet_report(fleets, args))

    # ---- goals
    goals: list[tuple[bool, str]] = []
    by = {r.name: r for r in results}
    if "large" in by:
        fl = med(by["large"].wall["fwgen"])
        al = med(by["large"].wall["speedway"])
        goals.append((fl <= 0.25, f"(a) large: fwgen all three targets {fl:.3f} s <= 0.25 s"))
        goals.append((al / fl >= 25, f"(a) large: fwgen {al / fl:.1f}x faster than Aerleon's "
                      f"iptables target alone ({al:.3f} s), goal >= 25x"))
    if "registry" in by:
        fr = med(by["registry"].wall["fwgen"])
        goals.append((fr <= 0.5, f"(c) registry: fwgen all three targets {fr:.3f} s <= 0.5 s"))
    if results and all(r.wall.get("baseline") for r in results):
        for r in results:
            ratio = med(r.wall["fwgen"]) / med(r.wall["baseline"])
            goals.append((ratio <= NO_SLOWER, f"{r.name}: fwgen no slower than the baseline: "
                          f"fwgen/baseline wall {ratio:.2f} <= {NO_SLOWER:.2f}"))
    goals += fleet_goals(fleets)
    if results:
        peak = max(max(r.rss["fwgen"]) for r in results)
        goals.append((peak <= 80 * 1024, f"fwgen peak RSS {mib(peak)} MiB <= 80 MiB (max over the "
                      "single-policy cases and runs)"))
    h = med(help_times)
    goals.append((h <= 0.1, f"fwgen --help {h * 1000:.1f} ms <= 100 ms (median of {len(help_times)})"))
    longest = max(
        [*(max(s.longest_line for s in stats) for r in results
           for (tool, t, _), stats in r.stats.items() if tool == "fwgen" and t == "windows"),
         *(max(x[3] for x in v) for f in fleets for (tool, t), v in f.outputs.items()
           if tool == "fwgen" and t == "windows")],
        default=0,
    )
    goals.append((longest <= 8191, f"every fwgen netsh line <= 8,191 characters (longest {longest})"))
    w("### Goals")
    w("")
    w("```")
    for ok, text in goals:
        w(f"{'PASS' if ok else 'FAIL'} {text}")
    w("```")
    w("")
    a_long = max(
        [*(max(s.longest_line for s in stats) for r in results
           for (tool, t, _), stats in r.stats.items() if tool == "aerleon" and t == "windows_advfirewall"),
         *(max(x[3] for x in v) for f in fleets for (tool, t), v in f.outputs.items()
           if tool == "aerleon" and t == "windows_advfirewall")],
        default=0,
    )
    w(f"For comparison, Aerleon's longest windows_advfirewall line: {a_long} characters"
      + (" (over cmd.exe's 8,191 limit)." if a_long > 8191 else "."))
    acks = [f"{r.name}: {', '.join(r.acknowledge)}" for r in [*results, *fleets] if r.acknowledge]
    if acks:
        w("")
        w("fwgen's linter refused the generated policies until they acknowledged these findings "
          "(added as `acknowledge:` to every run's fwgen policy): " + "; ".join(acks) + ".")
    warnings = sorted({wn for r in [*results, *fleets] for wn in r.warnings})
    if warnings:
        w("")
        w("fwgen build warnings seen: " + "; ".join(f"`{x}`" for x in warnings[:6]))
    return "\n".join(out) + "\n", goals


def _med_int(values: Iterable[float]) -> int:
    return int(round(med([float(v) for v in values])))


def _load_cell(loads: list[measure.LoadResult] | None) -> str:
    if not loads:
        return "n/a"
    failed = [x for x in loads if not x.ok]
    if failed:
        return f"FAILED: {failed[0].error.replace('|', '/')[:90]}"
    return fmt_s(med([x.seconds for x in loads]))


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="timed runs per case and tool (default 5)")
    p.add_argument("--quick", action="store_true", help="1 run each (smoke test)")
    p.add_argument("--seed", type=int, default=1, help="base seed of the generated policies")
    p.add_argument("--cases", default=",".join(DEFAULT_CASES),
                   help=f"comma-separated cases: {', '.join(policies.CASES)}, and fleetN (N host "
                   f"policies in one build; fleet = fleet{policies.FLEET_DEFAULT_HOSTS}), e.g. "
                   f"fleet100,fleet1000 (default {','.join(DEFAULT_CASES)})")
    p.add_argument("--fleet-mode", choices=("auto", "dir", "files"), default="auto",
                   help="how fwgen (and the baseline) build a fleet: dir = one 'fwgen build DIR -o OUT', "
                   "files = one 'fwgen build FILE -o OUT/NAME' per policy, --fleet-jobs at a time; "
                   "auto (default) = dir unless that fwgen refuses a directory, then files")
    p.add_argument("--fleet-jobs", type=int, default=os.cpu_count() or 1,
                   help="processes at a time in files mode (default: the number of cores, "
                   f"{os.cpu_count()})")
    p.add_argument("--aerleon-renderers", type=int,
                   help="aclgen --max_renderers for the fleet (default: aclgen's own, 10)")
    p.add_argument("--no-kernel", action="store_true", help="skip the network-namespace loads")
    p.add_argument("--fwgen-cmd", help="run fwgen as this command instead of the checkout's "
                   "'python -m fwgen' (e.g. an installed 'fwgen' script)")
    p.add_argument("--baseline", help="also time another fwgen on the same policies in the same runs: "
                   "a source tree (a directory holding fwgen/, e.g. a git worktree of the last release) "
                   "or a command")
    p.add_argument("--output", default=os.path.join(BENCH_DIR, "results.md"),
                   help="where to write the markdown table (default bench/results.md)")
    p.add_argument("--keep", action="store_true", help="keep the per-run temp dirs")
    p.add_argument("--strict", action="store_true", help="exit 1 when a goal FAILs")
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 1
    if args.runs < 1:
        p.error("--runs must be >= 1")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if not policies.is_case(c)]
    if unknown:
        p.error(f"unknown case(s): {', '.join(unknown)}")
    if args.fleet_jobs < 1:
        p.error("--fleet-jobs must be >= 1")
    # 'fleet' is fleet100; each case once, in the order given
    cases = list(dict.fromkeys(c if c in policies.CASES else f"fleet{policies.fleet_hosts(c)}"
                               for c in cases))
    given = argv if argv is not None else sys.argv[1:]
    args.command = " ".join(["python3 bench/run.py", *(shlex.quote(a) for a in given)])

    aerleon_version = aerleon_env.ensure_venv(log)
    Fwgen.python = fwgen_env.ensure_venv(log)
    fwgen = Fwgen(args.fwgen_cmd)
    info = machine_info(fwgen, aerleon_version)
    git_start = git_state()
    load_start = " ".join(open("/proc/loadavg").read().split()[:3])
    kernel = not args.no_kernel and measure.netns_available()
    if not args.no_kernel and not kernel:
        log("warning: cannot create network namespaces (need root, ip, nft, iptables): "
            "kernel loads skipped")
    baseline = measure.netns_exec_baseline() if kernel else None

    log(f"fwgen --help x{HELP_RUNS} (after one warm-up)")
    check(fwgen.help(), "fwgen --help")
    helps = [fwgen.help() for _ in range(HELP_RUNS)]
    for h in helps:
        check(h, "fwgen --help")
    # The interpreter's own start-up, for reading the --help time (site-packages .pth files
    # run at every start and are not fwgen's).
    bare = [measure.run_process([Fwgen.python, "-c", "pass"], env=child_env()).wall
            for _ in range(HELP_RUNS)]

    results = []
    fleets = []
    try:
        for name in cases:
            log(f"case {name}: warm-up + {args.runs} run(s)")
            base = Fwgen.baseline(args.baseline) if args.baseline else None
            hosts = policies.fleet_hosts(name)
            if hosts is None:
                results.append(run_case(name, args.runs, args.seed, fwgen, kernel, args.keep, base))
            else:
                fleets.append(run_fleet(name, hosts, args, fwgen, base, kernel))
    except HarnessError as e:
        log(f"error: {e}")
        return 2
    finally:
        remove_workdirs()
    load_end = " ".join(open("/proc/loadavg").read().split()[:3])

    text, goals = report(results, fleets, args, info, [h.wall for h in helps],
                         [h.maxrss_kb for h in helps], med(bare), load_start, load_end, baseline,
                         git_state() != git_start)
    print(text)
    with open(args.output, "w", encoding="utf-8") as fh:
        fh.write(text)
    log(f"wrote {args.output}")
    return 1 if args.strict and not all(ok for ok, _ in goals) else 0


if __name__ == "__main__":
    sys.exit(main())
