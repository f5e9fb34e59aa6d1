"""The pipeline, in one place: load -> resolve -> compile to IR -> render each target ->
write atomically. The CLI and the tests both call these functions.

Nothing is written until every requested target has rendered in memory, so a policy
error never leaves a half-written or partly updated output directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from fwgen import forked
from fwgen import render as rendering
from fwgen.errors import Location, PolicyError
from fwgen.files import Files
from fwgen.ir import Action, Direction, Ruleset
from fwgen.lint import check_errors
from fwgen.locator import Locator
from fwgen.policy import Policy, load_policy
from fwgen.registry import Registry
from fwgen.resolve import compile_policy
from fwgen.targets import BY_NAME, NAMES, Feature, Target

if TYPE_CHECKING:
    import queue
    import threading

TARGET_NAMES = NAMES
# Below this many rules a forked render saves less than the fork costs (2-3 ms): a
# 6,000-rule policy builds a fifth faster with it, a 2,000-rule one about as fast
# (bench_registry, 2026-12-03: the parent, checking and rendering iptables, 2,763M
# instructions, the child, rendering nftables and windows, 2,641M meanwhile, against
# 3,265M in one process before writing; callgrind's child starts with the parent's
# count, so a sum of both counts the work before the fork twice).
PARALLEL_MIN_RULES = 1000


class BuildWarning(NamedTuple):
    """A build warning: where (None: the policy as a whole) and what."""

    location: Location | None
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.location or self.path}: warning: {self.message}"


class BuildResult(NamedTuple):
    ruleset: Ruleset
    files: dict[str, str]  # relative path -> text, in a stable order
    warnings: list[BuildWarning]
    targets: tuple[str, ...] = NAMES  # the targets built
    name_location: Location | None = None  # where the policy's name is written (else its start)
    included: tuple[str, ...] = ()  # every file the policy includes (``Files.key`` of each)


def compile_file(policy_path: str, registry: Registry) -> Ruleset:
    return compile_policy(load_policy(policy_path), registry)


def build(
    policy_path: str, registry: Registry, targets: tuple[str, ...] | None = None, *,
    lint_errors: bool = False, parallel: bool = False, strict: bool = False, files: Files | None = None,
) -> BuildResult:
    """``targets``: the targets to build (default: the policy's ``targets:``, else all).
    ``lint_errors``: also refuse (``PolicyError`` at the finding) a policy with an
    unacknowledged error-level lint finding, as ``fwgen build`` does (docs/lint.md).
    ``strict``: a warning (what a target can express only approximately) is an error.
    ``parallel``: render the targets after the first in a forked child meanwhile (see
    ``fwgen.forked``; the output is the same). ``files``: where to read the policy and
    its includes (default: the file system)."""
    files = files or Files()
    policy = load_policy(policy_path, files)
    files.forget(policy_path)
    ruleset = compile_policy(policy, registry)
    try:
        chosen = choose_targets(policy, targets)
    except PolicyError as error:
        raise policy.chained(error) from None
    chosen_targets = [BY_NAME[name] for name in chosen]
    # The checks run while a forked child renders the targets after the first (they
    # cannot change what renders): a sixteenth of a 6,000-rule build's time, off the
    # longest path of its two processes. A check that fails stops the child.
    child = _start(ruleset, chosen_targets[1:]) if parallel else None
    try:
        warnings, about = _checks(policy, ruleset, registry, chosen, lint_errors, files)
        # The policy (and the YAML nodes the checks locate findings in) is released here,
        # before the targets render: for thousands of rules the nodes would otherwise
        # add a fifth to peak memory.
        del policy
        outputs = _render_all(ruleset, chosen_targets if child is None else chosen_targets[:1])
    except BaseException:
        if child is not None:
            child.cancel()
        raise
    if child is not None:  # the rest, from the child (or here, when it failed)
        theirs = child.result()
        outputs += theirs if isinstance(theirs, list) else _render_all(ruleset, chosen_targets[1:])
    outputs_of: dict[str, str] = {}
    for files_of, warnings_of in outputs:
        outputs_of.update(files_of)
        warnings.extend(BuildWarning(None, policy_path, text) for text in warnings_of)
    if strict and warnings:
        first = warnings[0]
        raise PolicyError(first.location, f"{first.message} (a warning; --strict makes it an error)")
    return BuildResult(ruleset, outputs_of, warnings, chosen, *about)


Rendered = tuple[dict[str, str], list[str]]  # one target's files and warnings


def _render_all(ruleset: Ruleset, targets: list[Target]) -> list[Rendered]:
    outputs = [target.render(ruleset) for target in targets]
    return [(output.files, list(output.warnings)) for output in outputs]


def _start(ruleset: Ruleset, rest: list[Target]) -> forked.Child | None:
    """A forked child rendering ``rest`` (the targets after the first), when the policy
    is large enough to pay for the fork and there are two cores; else None."""
    if not rest or len(ruleset.rules) < PARALLEL_MIN_RULES or (os.cpu_count() or 1) < 2:
        return None
    rendering.preload()  # the child then imports nothing
    return forked.start(lambda: _render_all(ruleset, rest))


def choose_targets(policy: Policy, asked: tuple[str, ...] | None) -> tuple[str, ...]:
    """The targets to build, in the table's order: those asked for (``-t``), else the
    policy's ``targets:``, else all. Asking for one the policy is not for is an error."""
    unknown = [name for name in asked or () if name not in BY_NAME]
    if unknown:
        raise PolicyError(None, f"unknown target '{unknown[0]}' (the targets are: {', '.join(NAMES)})")
    declared = tuple(t.value for t in policy.targets) if policy.targets is not None else NAMES
    if asked:
        foreign = [name for name in asked if name not in declared]
        if foreign:
            assert policy.targets is not None
            raise PolicyError(
                policy.targets[0].location,
                f"this policy is for {', '.join(declared)} (targets:), not {foreign[0]}",
            )
    wanted = set(asked or declared)
    return tuple(name for name in NAMES if name in wanted)


def _features(ruleset: Ruleset) -> list[tuple[Feature, int | None, int]]:
    """What the policy asks of its targets: (feature, the first rule's index, or None
    for the policy as a whole, and how many rules ask for it), in the order the rules
    first ask for each (a rule's interface, then profiles, then monitor or log)."""
    kinds = (Feature.INTERFACE, Feature.PROFILES, Feature.MONITOR, Feature.LOG)
    counts = [0] * len(kinds)  # by position in kinds: an enum's hash is Python code, slow per rule
    first_place = [0] * len(kinds)  # the place of the first rule asking, and its index
    first_index = [0] * len(kinds)
    for place, rule in enumerate(ruleset.rules):
        asked = (rule.interfaces is not None, rule.profiles is not None, rule.action is Action.MONITOR,
                 rule.action is not Action.MONITOR and rule.log)
        for kind, yes in enumerate(asked):
            if yes:
                if not counts[kind]:
                    first_place[kind], first_index[kind] = place, rule.index
                counts[kind] += 1
    order = sorted((first_place[kind], kind) for kind in range(len(kinds)) if counts[kind])
    found: list[tuple[Feature, int | None, int]] = [(kinds[k], first_index[k], counts[k]) for _, k in order]
    denies = Action.DENY in (ruleset.defaults.inbound, ruleset.defaults.outbound) or any(
        rule.action is Action.DENY for rule in ruleset.rules)
    if ruleset.defaults.reject and denies:
        found.append((Feature.REJECT, None, 1))
    if ruleset.options.published_ports:
        found.append((Feature.PUBLISHED_PORTS, None, 1))
        inbound_denies = ruleset.defaults.inbound is Action.DENY or any(
            rule.action is Action.DENY for rule in ruleset.rules if rule.direction is Direction.IN)
        if ruleset.defaults.reject and inbound_denies:
            found.append((Feature.PUBLISHED_REJECT, None, 1))
    return found


_FEATURE_KEY = {Feature.INTERFACE: "interface", Feature.PROFILES: "profiles", Feature.MONITOR: "action",
                Feature.LOG: "log"}
_POLICY_FEATURE_KEY = {Feature.REJECT: ("defaults", "deny"), Feature.PUBLISHED_PORTS: ("published_ports",),
                       Feature.PUBLISHED_REJECT: ("published_ports",)}


def check_targets(policy: Policy, ruleset: Ruleset, targets: tuple[str, ...]) -> list[BuildWarning]:
    """What the chosen targets cannot express is a located error (naming the rule, the
    feature and the target); what they express approximately, a located warning, one per
    target and feature, at its first rule."""
    where = Locator(policy)
    source = {rule.index: rule for rule in policy.rules}

    def location(feature: Feature, index: int | None) -> Location:
        if index is None:
            return where.top(*_POLICY_FEATURE_KEY[feature])
        return where.rule(source[index], _FEATURE_KEY[feature])

    features = _features(ruleset)
    warnings: list[BuildWarning] = []
    for name in targets:
        target = BY_NAME[name]
        for feature, index, _ in features:
            if feature in target.lacks:
                rule = f"rule '{source[index].name}' uses {feature.value}" if index is not None else feature.value
                others = [t for t in NAMES if feature not in BY_NAME[t].lacks]
                raise PolicyError(
                    location(feature, index),
                    f"{rule}, which {name} cannot express ({target.lacks[feature]}); "
                    f"say which targets this policy is for: targets: [{', '.join(others)}]",
                )
        for feature, index, count in features:
            if feature in target.degrades:
                which = "" if index is None else f" (rule '{source[index].name}'" + (
                    f" and {count - 1} more)" if count > 1 else ")")
                warnings.append(BuildWarning(location(feature, index), policy.path,
                                             f"{name}: {target.degrades[feature]}{which}"))
    warnings.sort(key=lambda w: (w.location.line, w.location.col) if w.location else (0, 0))
    return warnings


def _checks(
    policy: Policy, ruleset: Ruleset, registry: Registry, chosen: tuple[str, ...], lint_errors: bool, files: Files,
) -> tuple[list[BuildWarning], tuple[Location, tuple[str, ...]]]:
    """What the chosen targets cannot express (an error) or express approximately (the
    warnings), and with ``lint_errors`` the unacknowledged error-level lint findings;
    and where the policy's name is, with the files it includes."""
    try:
        warnings = check_targets(policy, ruleset, chosen)
        if lint_errors:
            check_errors(policy, ruleset, registry, chosen)
    except PolicyError as error:
        raise policy.chained(error) from None
    return warnings, (Locator(policy).top("name"), tuple(files.key(include.raw) for include in policy.includes))


def write_atomically(outdir: str | os.PathLike[str], files: dict[str, str]) -> list[Path]:
    """Write every file through a temporary file in its own directory and rename it
    into place: readers (and config management) never see a partial file.

    All or nothing: every file is staged before the first is renamed into place, and a
    rename that fails puts back the files already replaced. Any OS error is one
    unlocated ``PolicyError``, ``fwgen: cannot write PATH: REASON``; directories this
    call created are removed again."""
    staging = Staging()
    try:
        staging.add(outdir, files)
        return staging.commit()
    except BaseException:
        staging.discard()
        raise


class Staging:
    """Files written to temporary files beside their targets, not yet in place; made in
    one process or gathered from several (``parts``, ``join``), then committed (synced,
    renamed into place, all or nothing) or discarded."""

    def __init__(self) -> None:
        self.staged: list[tuple[str, Path]] = []  # (temporary file, target)
        self.created: list[Path] = []  # directories made for them
        self._known: set[Path] = set()  # directories that exist by now
        self.synced = False  # every staged file is on disk already (a ``Syncer`` did it)

    def add(self, outdir: str | os.PathLike[str], files: dict[str, str]) -> None:
        for relative, text in files.items():
            target = Path(outdir) / relative
            try:
                _stage(target, text, self.staged, self.created, self._known)
            except OSError as exc:
                raise _write_error(target, exc) from None

    def parts(self) -> tuple[list[tuple[str, Path]], list[Path]]:
        return self.staged, self.created

    def join(self, parts: tuple[list[tuple[str, Path]], list[Path]]) -> None:
        self.staged.extend(parts[0])
        self.created.extend(parts[1])

    def commit(self) -> list[Path]:
        """Sync every staged file (unless ``synced``), then rename them all into place;
        the targets."""
        try:
            if not self.synced:
                _sync(self.staged)
            targets = _replace_all(self.staged)
        except BaseException:
            _unlink_staged(self.staged)  # those not renamed yet (or put back)
            self.staged = []
            raise
        self.staged = []  # every one renamed: nothing is left to remove
        return targets

    def discard(self) -> None:
        """Remove every staged file and the directories made for them (deepest first)."""
        _unlink_staged(self.staged)
        self.staged = []
        for directory in sorted(set(self.created), key=lambda d: len(d.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        self.created = []


def _unlink_staged(staged: list[tuple[str, Path]]) -> None:
    for tmp, _ in staged:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write_error(target: Path, exc: OSError) -> PolicyError:
    return PolicyError(None, f"fwgen: cannot write {target}: {exc.strerror or exc}")


def _stage(target: Path, text: str, staged: list[tuple[str, Path]], created: list[Path], known: set[Path]) -> None:
    """Write ``text`` to a temporary file beside ``target`` (making its directories; not
    yet synced to disk: see ``_sync``)."""
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
    if target.parent not in known:
        missing = [d for d in (target.parent, *target.parent.parents) if d not in known and not d.exists()]
        for directory in reversed(missing):  # outermost first: no mkdir fails and is retried
            directory.mkdir(exist_ok=True)
        created.extend(reversed(missing))
        known.update((target.parent, *target.parent.parents))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    staged.append((tmp, target))
    # os.write rather than a text file object: that costs three system calls more per
    # file (lseek twice, ioctl) and Python's text layer, for one write
    try:
        os.fchmod(fd, 0o644)
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(fd, data):]  # a short write (a full disk) goes on, or raises
    finally:
        os.close(fd)


# Up to this many files sync one after the other: starting threads costs more than the
# waits they share (one policy writes five files; a fleet, thousands).
SERIAL_SYNC_MAX = 16
SYNC_THREADS = 32


def _sync_one(tmp: str, target: Path) -> None:
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _write_error(target, exc) from None


def _sync(staged: list[tuple[str, Path]]) -> None:
    """Every staged file on disk before the first rename (a crash then leaves the old
    file or the new one, never an empty one). Each fsync waits for the disk; many at
    once share the journal commits, so a fleet's thousands of files sync in threads."""
    syncer = Syncer()
    syncer.add(staged)
    syncer.wait()


class Syncer:
    """Syncs staged files (see ``_sync``) as they are handed to it: a fleet's, as its
    workers report them, so that its threads wait for the disk while the workers still
    build (fleet1000 left 0.1-0.3 s of syncing after the last host otherwise). Up to
    ``SERIAL_SYNC_MAX`` files in all are synced one after the other in ``wait``, which
    raises the first error; more start ``SYNC_THREADS`` threads, and ``wait`` raises the
    error of the file with the first path of those that could not be synced (a fleet's
    files arrive in an order that varies, the error named must not). Every thread has
    ended when it returns."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, Path]] = []  # files for no thread yet (all, until one starts)
        self._queue: queue.SimpleQueue[tuple[str, Path] | None] | None = None
        self._threads: list[threading.Thread] = []
        self._failed: list[tuple[str, PolicyError]] = []  # (the target's path, error)

    def add(self, staged: list[tuple[str, Path]]) -> None:
        self._pending += staged
        if self._queue is None and len(self._pending) > SERIAL_SYNC_MAX:
            import queue
            import threading

            self._queue = queue.SimpleQueue()
            self._threads = [threading.Thread(target=self._run) for _ in range(SYNC_THREADS)]
            for thread in self._threads:
                thread.start()
        if self._queue is not None:
            for item in self._pending:
                self._queue.put(item)
            self._pending = []

    def _run(self) -> None:
        work = self._queue
        assert work is not None
        while (item := work.get()) is not None:
            try:
                _sync_one(*item)
            except PolicyError as error:
                self._failed.append((str(item[1]), error))

    def wait(self) -> None:
        if self._queue is None:
            pending, self._pending = self._pending, []
            for tmp, target in pending:
                _sync_one(tmp, target)
            return
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        failed, self._queue, self._threads, self._failed = self._failed, None, [], []
        if failed:
            raise min(failed, key=lambda f: f[0])[1]


def _replace_all(staged: list[tuple[str, Path]]) -> list[Path]:
    """Rename every staged file into place; when one rename fails, undo the earlier ones
    (each replaced file was kept as a hard link beside it until all renames are done)."""
    done: list[tuple[Path, str | None]] = []  # (target, the old file's hard link, if any)
    try:
        for tmp, target in staged:
            kept = None
            try:
                if target.exists():
                    kept = f"{tmp}.old"
                    os.link(target, kept)
                os.replace(tmp, target)
            except OSError as exc:
                if kept is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(kept)
                raise _write_error(target, exc) from None
            done.append((target, kept))
    except BaseException:
        for target, kept in reversed(done):
            with contextlib.suppress(OSError):
                if kept is None:
                    os.unlink(target)
                else:
                    os.replace(kept, target)
        raise
    for _, kept in done:
        if kept is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(kept)
    return [target for _, target in staged]
