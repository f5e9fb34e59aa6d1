"""``fwgen diff OLD NEW``: the semantic difference of two policies.

A change is a set of new connections (direction, protocol, ports, remote addresses)
whose outcome differs: the verdict (allow | deny | monitor), how a deny is enforced
(drop | reject) or whether it is logged. Rule names, lines, comments, the policy's name
and description, formatting and key order are not part of an outcome.

The computation is exact and follows the first-match semantics of ``fwgen explain``
(docs/explain.md): per direction and protocol, the port line is cut at every rule edge
of both policies, so on each elementary port interval the same rules of each policy
apply. Where the two policies' applicable rules (their outcomes and remote networks, in
order) are identical, nothing can differ and the interval is skipped; elsewhere each
policy's first-match partition of the IPv4 and IPv6 address spaces is computed on
integer intervals and the two partitions are intersected. Pieces with the same
(addresses, before, after) on adjacent or distant ports are merged into one change, and
the same change on tcp and on udp is one change.

The arithmetic works on integers rather than ``ipaddress`` networks and builds no
``Explainer`` (whose set-up is quadratic in the number of rules, seconds at 2,000): a
2,000-rule policy diffs in a few hundredths of a second after loading. tests/test_diff.py
checks the result against the reference interpreter: ``Explainer.verdict`` on random
policy pairs, ``Explainer.regions`` on every pair of example policies.

Policies are read from files, or from git as ``git:REV:PATH`` (``git show REV:PATH`` in
the current directory's repository); errors in those name the policy as
``git:REV:PATH:LINE:COL``.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from fwgen.errors import Location, PolicyError
from fwgen.intervals import merge_spans
from fwgen.policy import Network, Policy, load_policy, parse_policy
from fwgen.registry import Registry
from fwgen.resolve import resolve_ports
from fwgen.yamlsource import Source

DIRECTIONS = ("in", "out")
PROTOCOLS = ("tcp", "udp")
PORT_MAX = 65535
FAMILIES = (4, 6)
SPACE = {4: 1 << 32, 6: 1 << 128}

Intervals = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent [lo, hi]


class Outcome(NamedTuple):
    """What a policy does with a connection, as far as the diff is concerned."""

    action: str  # allow | deny | monitor
    enforced: str  # accept | drop | reject
    logged: bool


@dataclass(frozen=True)
class Change:
    """Connections whose outcome changed: on ``ports`` of each of ``protocols``
    (``("tcp",)``, ``("udp",)`` or ``("tcp", "udp")``) in ``direction``, from/to the
    remote addresses ``v4`` and ``v6`` (integer intervals)."""

    direction: str
    protocols: tuple[str, ...]
    ports: Intervals
    v4: Intervals
    v6: Intervals
    before: Outcome
    after: Outcome


@dataclass(frozen=True)
class DiffResult:
    old: str  # the policies as the user named them
    new: str
    changes: tuple[Change, ...]
    metadata: tuple[str, ...]  # changed non-semantic fields: "name", "description", ...


# A rule as the diff reads it: its outcome, and its remote intervals per family
# (None = any address of the family; () = never this family).
Sig = tuple[Outcome, Intervals | None, Intervals | None]


# ---------------------------------------------------------------------- loading


def load_spec(spec: str) -> Policy:
    """A policy file, or ``git:REV:PATH`` read with ``git show REV:PATH``."""
    if spec.startswith("git:"):
        return load_git(spec)
    return load_policy(spec)


def load_git(spec: str) -> Policy:
    rev, sep, path = spec[len("git:"):].partition(":")
    if not sep or not rev or not path:
        raise PolicyError(None, f"{spec}: not a git policy reference: write git:REV:PATH")
    try:
        proc = subprocess.run(
            ["git", "--no-pager", "show", f"{rev}:{path}"], capture_output=True, check=False
        )
    except OSError as exc:
        raise PolicyError(None, f"{spec}: cannot read policy: cannot run git: {exc.strerror}") from None
    if proc.returncode != 0:
        raise PolicyError(None, f"{spec}: cannot read policy: {_git_message(proc.stderr)}")
    if proc.stdout.startswith(f"tree {rev}:{path}\n".encode()):
        raise PolicyError(None, f"{spec}: cannot read policy: '{path}' is a directory in {rev}")
    return parse_text(proc.stdout, path, spec)


def _git_message(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    fatal = [line[len("fatal: "):] for line in lines if line.startswith("fatal: ")]
    hints = [line[len("hint: "):] for line in lines if line.startswith("hint: ")]
    message = (fatal or lines or ["git show failed"])[0].rstrip(".")
    if hints:
        message += "; " + hints[0][:1].lower() + hints[0][1:]
    return message


def parse_text(raw: bytes, path: str, display: str) -> Policy:
    """Parse policy bytes exactly as ``load_policy`` parses the file ``path`` (its name
    defaults to the stem of ``path``), reporting errors and naming the policy as
    ``display``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError(Location(display, line, 1), "policy is not valid UTF-8") from None
    with relocated(display):
        policy = parse_policy(Source(path, text), hashlib.sha256(raw).hexdigest())
    return dataclasses.replace(policy, path=display)


@contextmanager
def relocated(display: str) -> Iterator[None]:
    """Re-raise located errors as located in ``display``."""
    try:
        yield
    except PolicyError as error:
        if error.location is None or error.location.path == display:
            raise
        where = Location(display, error.location.line, error.location.col)
        raise PolicyError(where, error.message) from None


# ---------------------------------------------------------------------- reading rules


def _outcome(action: str, logged: bool, deny: str) -> Outcome:
    return Outcome(action, deny if action == "deny" else "accept", logged)


def _merge(spans: list[tuple[int, int]]) -> Intervals:
    return tuple(merge_spans(spans))


class _Cache:
    """What both policies of a diff share: resolved ports and remote intervals by what
    the rule says (most rules are the same in both)."""

    def __init__(self) -> None:
        self.ports: dict[tuple[str | None, tuple[str, ...] | None, str | None], list[tuple[str, Intervals]]] = {}
        self.remote: dict[tuple[Network, ...] | None, tuple[Intervals | None, Intervals | None]] = {}


def _tables(policy: Policy, registry: Registry, cache: _Cache) -> dict[tuple[str, str], list[tuple[Intervals, Sig]]]:
    """Per (direction, protocol): each applicable rule's port intervals and Sig, in order.
    ``cache`` is shared by both policies of a diff."""
    tables: dict[tuple[str, str], list[tuple[Intervals, Sig]]] = {
        (d, p): [] for d in DIRECTIONS for p in PROTOCOLS
    }
    with relocated(policy.path):
        for rule in policy.rules:
            port_key = (
                rule.protocol.value if rule.protocol else None,
                tuple(entry.value for entry in rule.ports) if rule.ports is not None else None,
                rule.port_range.value if rule.port_range else None,
            )
            ports = cache.ports.get(port_key)
            if ports is None:
                ports = cache.ports[port_key] = [
                    (protocol.value, tuple((r.lo, r.hi) for r in ranges))
                    for protocol, ranges in resolve_ports(rule, registry).items()
                ]
            remote = cache.remote.get(rule.remote)
            if remote is None:
                remote = cache.remote[rule.remote] = (
                    _family_intervals(rule.remote, 4), _family_intervals(rule.remote, 6)
                )
            sig: Sig = (
                _outcome(rule.action, rule.action == "monitor" or rule.log, policy.deny),
                remote[0], remote[1],
            )
            for protocol, ranges in ports:
                tables[(rule.direction, protocol)].append((ranges, sig))
    return tables


def _family_intervals(networks: tuple[Network, ...] | None, family: int) -> Intervals | None:
    if networks is None:
        return None
    return _merge([
        (int(n.network_address), int(n.broadcast_address)) for n in networks if n.version == family
    ])


def _defaults(policy: Policy) -> dict[str, Outcome]:
    return {
        "in": _outcome(policy.inbound, False, policy.deny),
        "out": _outcome(policy.outbound, False, policy.deny),
    }


# ---------------------------------------------------------------------- the sweep


def _candidates(
    rules: list[tuple[Intervals, Sig]], starts: list[int]
) -> Iterator[tuple[Sig, ...]]:
    """For each elementary port interval (beginning at ``starts[i]``), the Sigs of the
    rules that apply there, in policy order, cut after the first rule that matches
    every address (later rules can never decide)."""
    index = {start: i for i, start in enumerate(starts)}
    adds: dict[int, list[int]] = {}
    removes: dict[int, list[int]] = {}
    for pos, (ranges, _) in enumerate(rules):
        for lo, hi in ranges:
            adds.setdefault(index[lo], []).append(pos)
            if hi < PORT_MAX:
                removes.setdefault(index[hi + 1], []).append(pos)
    active: dict[int, Sig] = {}
    current: tuple[Sig, ...] = ()
    for i in range(len(starts)):
        touched = False
        for pos in removes.get(i, ()):
            del active[pos]
            touched = True
        for pos in adds.get(i, ()):
            active[pos] = rules[pos][1]
            touched = True
        if touched:
            chosen: list[Sig] = []
            for pos in sorted(active):
                sig = active[pos]
                chosen.append(sig)
                if sig[1] is None and sig[2] is None:
                    break
            current = tuple(chosen)
        yield current


def _remote(sig: Sig, family: int) -> Intervals | None:
    return sig[1] if family == 4 else sig[2]


def _matches(intervals: Intervals | None, address: int) -> bool:
    if intervals is None:
        return True
    i = bisect.bisect_right(intervals, (address, 1 << 129)) - 1
    return i >= 0 and address <= intervals[i][1]


Runs = tuple[tuple[int, int, Outcome], ...]


def _partition(default: Outcome, sigs: tuple[Sig, ...]) -> dict[int, Runs]:
    """First-match outcome over each address family, as maximal runs [lo, hi, outcome]."""
    result: dict[int, Runs] = {}
    for family in FAMILIES:
        size = SPACE[family]
        cuts = {0}
        for sig in sigs:
            for lo, hi in _remote(sig, family) or ():
                cuts.add(lo)
                if hi + 1 < size:
                    cuts.add(hi + 1)
        bounds = sorted(cuts)
        runs: list[tuple[int, int, Outcome]] = []
        for j, lo in enumerate(bounds):
            hi = bounds[j + 1] - 1 if j + 1 < len(bounds) else size - 1
            outcome = default
            for sig in sigs:
                if _matches(_remote(sig, family), lo):
                    outcome = sig[0]
                    break
            if runs and runs[-1][2] == outcome:
                runs[-1] = (runs[-1][0], hi, outcome)
            else:
                runs.append((lo, hi, outcome))
        result[family] = tuple(runs)
    return result


Delta = tuple[tuple[Outcome, Outcome, Intervals, Intervals], ...]


def _intersect(old: dict[int, Runs], new: dict[int, Runs]) -> Delta:
    """Where the two partitions disagree: (before, after, v4, v6) per outcome pair."""
    found: dict[tuple[Outcome, Outcome], dict[int, list[tuple[int, int]]]] = {}
    for family in FAMILIES:
        a, b = old[family], new[family]
        i = j = 0
        while i < len(a) and j < len(b):
            lo = max(a[i][0], b[j][0])
            hi = min(a[i][1], b[j][1])
            if a[i][2] != b[j][2]:
                spans = found.setdefault((a[i][2], b[j][2]), {4: [], 6: []})[family]
                if spans and spans[-1][1] + 1 == lo:
                    spans[-1] = (spans[-1][0], hi)
                else:
                    spans.append((lo, hi))
            if a[i][1] == hi:
                i += 1
            if b[j][1] == hi:
                j += 1
    return tuple(
        (before, after, tuple(spans[4]), tuple(spans[6]))
        for (before, after), spans in found.items()
    )


def diff_policies(old: Policy, new: Policy, registry: Registry) -> DiffResult:
    cache = _Cache()
    old_tables, new_tables = _tables(old, registry, cache), _tables(new, registry, cache)
    old_defaults, new_defaults = _defaults(old), _defaults(new)
    partitions: dict[tuple[Outcome, tuple[Sig, ...]], dict[int, Runs]] = {}
    deltas: dict[tuple[Outcome, tuple[Sig, ...], Outcome, tuple[Sig, ...]], Delta] = {}

    def partition(default: Outcome, sigs: tuple[Sig, ...]) -> dict[int, Runs]:
        key = (default, sigs)
        cached = partitions.get(key)
        if cached is None:
            cached = partitions[key] = _partition(default, sigs)
        return cached

    # (direction, protocol, v4, v6, before, after) -> port intervals (as lists)
    lines: dict[tuple[str, str, Intervals, Intervals, Outcome, Outcome], list[list[int]]] = {}
    for direction in DIRECTIONS:
        d_old, d_new = old_defaults[direction], new_defaults[direction]
        for protocol in PROTOCOLS:
            a_rules, b_rules = old_tables[(direction, protocol)], new_tables[(direction, protocol)]
            if a_rules == b_rules and d_old == d_new:
                continue
            cuts = {0}
            for rules in (a_rules, b_rules):
                for ranges, _ in rules:
                    for lo, hi in ranges:
                        cuts.add(lo)
                        if hi < PORT_MAX:
                            cuts.add(hi + 1)
            starts = sorted(cuts)
            pairs = zip(_candidates(a_rules, starts), _candidates(b_rules, starts), strict=True)
            for i, (a_sigs, b_sigs) in enumerate(pairs):
                if a_sigs == b_sigs and (d_old == d_new or _covers_all(a_sigs)):
                    continue
                key = (d_old, a_sigs, d_new, b_sigs)
                delta = deltas.get(key)
                if delta is None:
                    delta = deltas[key] = _intersect(partition(d_old, a_sigs), partition(d_new, b_sigs))
                if not delta:
                    continue
                lo = starts[i]
                hi = starts[i + 1] - 1 if i + 1 < len(starts) else PORT_MAX
                for before, after, v4, v6 in delta:
                    ports = lines.setdefault((direction, protocol, v4, v6, before, after), [])
                    if ports and ports[-1][1] + 1 == lo:
                        ports[-1][1] = hi
                    else:
                        ports.append([lo, hi])
    # The same change on tcp and on udp is one change for both.
    merged: dict[tuple[str, Intervals, Intervals, Intervals, Outcome, Outcome], list[str]] = {}
    for (direction, protocol, v4, v6, before, after), ports in lines.items():
        merged.setdefault(
            (direction, tuple((lo, hi) for lo, hi in ports), v4, v6, before, after), []
        ).append(protocol)
    changes = [
        Change(direction, tuple(protocols), ports, v4, v6, before, after)
        for (direction, ports, v4, v6, before, after), protocols in merged.items()
    ]
    changes.sort(key=lambda c: (
        DIRECTIONS.index(c.direction), PROTOCOLS.index(c.protocols[0]), c.ports,
        not c.v4, c.v4, c.v6, c.before, c.after, c.protocols,
    ))
    return DiffResult(old.path, new.path, tuple(changes), metadata_changes(old, new))


def _covers_all(sigs: tuple[Sig, ...]) -> bool:
    """A rule here matches every address, so the default never decides."""
    return bool(sigs) and sigs[-1][1] is None and sigs[-1][2] is None


def metadata_changes(old: Policy, new: Policy) -> tuple[str, ...]:
    """Changed fields that decide no verdict."""
    fields = {
        "name": (old.name, new.name),
        "description": (old.description, new.description),
        "monitor.log_prefix": (old.log_prefix, new.log_prefix),
        "monitor.rate": ((old.rate, old.rate_per), (new.rate, new.rate_per)),
        "rule names": (sorted(r.name for r in old.rules), sorted(r.name for r in new.rules)),
        "comments": (sorted(r.comment for r in old.rules), sorted(r.comment for r in new.rules)),
    }
    return tuple(field for field, (a, b) in fields.items() if a != b)


def diff_specs(old: str, new: str, registry: Registry) -> DiffResult:
    """Load both policies (files or ``git:REV:PATH``) and diff them. ``PolicyError`` for
    an unreadable or invalid policy."""
    return diff_policies(load_spec(old), load_spec(new), registry)
