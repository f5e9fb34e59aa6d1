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
from types import ModuleType
from typing import NamedTuple

from fwgen import forked
from fwgen import render as rendering
from fwgen.errors import PolicyError
from fwgen.ir import Ruleset
from fwgen.policy import load_policy
from fwgen.registry import Registry
from fwgen.resolve import compile_policy


def _targets() -> dict[str, ModuleType]:
    """The explicit table of targets (imported lazily: `fwgen ports` needs none)."""
    from fwgen.targets import iptables, nftables, windows

    return {module.NAME: module for module in (iptables, nftables, windows)}


TARGET_NAMES = ("iptables", "nftables", "windows")
# Below this many rules a forked render saves less than the fork costs (2-3 ms): a
# 6,000-rule policy builds a fifth faster with it, a 2,000-rule one about as fast.
PARALLEL_MIN_RULES = 1000


class BuildResult(NamedTuple):
    ruleset: Ruleset
    files: dict[str, str]  # relative path -> text, in a stable order
    warnings: list[str]


def compile_file(policy_path: str, registry: Registry) -> Ruleset:
    return compile_policy(load_policy(policy_path), registry)


def build(
    policy_path: str, registry: Registry, targets: tuple[str, ...] = TARGET_NAMES, *,
    lint_errors: bool = False, parallel: bool = False,
) -> BuildResult:
    """``lint_errors``: also refuse (``PolicyError`` at the finding) a policy with an
    unacknowledged error-level lint finding, as ``fwgen build`` does (docs/lint.md).
    ``parallel``: render the targets after the first in a forked child meanwhile (see
    ``fwgen.forked``; the output is the same)."""
    ruleset = _checked_ruleset(policy_path, registry, lint_errors, targets)
    outputs = _render(ruleset, [name for name in TARGET_NAMES if name in targets], parallel)
    files: dict[str, str] = {}
    warnings: list[str] = []
    for files_of, warnings_of in outputs:
        files.update(files_of)
        warnings.extend(warnings_of)
    return BuildResult(ruleset, files, warnings)


Rendered = tuple[dict[str, str], list[str]]  # one target's files and warnings


def _render(ruleset: Ruleset, names: list[str], parallel: bool) -> list[Rendered]:
    table = _targets()

    def render(names: list[str]) -> list[Rendered]:
        outputs = [table[name].render(ruleset) for name in names]
        return [(output.files, list(output.warnings)) for output in outputs]

    first, rest = names[:1], names[1:]
    child = None
    if parallel and rest and len(ruleset.rules) >= PARALLEL_MIN_RULES and (os.cpu_count() or 1) > 1:
        rendering.preload()  # the child then imports nothing
        child = forked.start(lambda: render(rest))
    if child is None:
        return render(names)
    try:
        mine = render(first)
    except BaseException:
        child.cancel()
        raise
    theirs = child.result()
    return mine + (theirs if isinstance(theirs, list) else render(rest))


def _checked_ruleset(policy_path: str, registry: Registry, lint_errors: bool, targets: tuple[str, ...]) -> Ruleset:
    """The policy (and the YAML nodes lint locates findings in) is released when this
    returns, before the targets render: for thousands of rules the nodes would otherwise
    add a fifth to peak memory."""
    policy = load_policy(policy_path)
    ruleset = compile_policy(policy, registry)
    if lint_errors:
        from fwgen.lint import check_errors

        check_errors(policy, ruleset, registry, tuple(name for name in TARGET_NAMES if name in targets))
    return ruleset


def write_atomically(outdir: str | os.PathLike[str], files: dict[str, str]) -> list[Path]:
    """Write every file through a temporary file in its own directory and rename it
    into place: readers (and config management) never see a partial file.

    All or nothing: every file is staged before the first is renamed into place, and a
    rename that fails puts back the files already replaced. Any OS error is one
    unlocated ``PolicyError``, ``fwgen: cannot write PATH: REASON``; directories this
    call created are removed again."""
    staged: list[tuple[str, Path]] = []
    created: list[Path] = []  # directories made here, outermost first
    try:
        for relative, text in files.items():
            target = Path(outdir) / relative
            try:
                _stage(target, text, staged, created)
            except OSError as exc:
                raise _write_error(target, exc) from None
        return _replace_all(staged)
    except BaseException:
        _unlink_staged(staged)
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    finally:
        _unlink_staged(staged)


def _unlink_staged(staged: list[tuple[str, Path]]) -> None:
    for tmp, _ in staged:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write_error(target: Path, exc: OSError) -> PolicyError:
    return PolicyError(None, f"fwgen: cannot write {target}: {exc.strerror or exc}")


def _stage(target: Path, text: str, staged: list[tuple[str, Path]], created: list[Path]) -> None:
    """Write ``text`` to a temporary file beside ``target`` (making its directories)."""
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
    missing = [d for d in (target.parent, *target.parent.parents) if not d.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    created.extend(reversed(missing))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    staged.append((tmp, target))
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)


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
