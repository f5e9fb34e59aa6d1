"""Many policies, one build: find the host policies, build them in parallel, and
gather every output under ``NAME/`` (and every error) before anything is written.

A directory stands for the ``*.yaml`` policies directly in it, less the files another
policy of the build includes (a fleet keeps its shared files in a subdirectory, or
includes them from the policies beside them). Each host is built exactly as
``fwgen build`` builds one policy; the hosts are spread over worker processes
(forked, so they start with every module and the registry already loaded) and each
worker reads a shared file once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

from fwgen.build import BuildWarning, build
from fwgen.errors import Location, PolicyError
from fwgen.files import Files, list_yaml
from fwgen.registry import Registry

# below this many policies per worker, a worker costs more than it saves
MIN_PER_WORKER = 4


class Host(NamedTuple):
    """One policy's build: its outputs (paths relative to ``NAME/``) and warnings."""

    path: str
    name: str
    name_location: Location
    files: dict[str, str]
    warnings: list[BuildWarning]
    includes: tuple[str, ...]  # the keys (real paths) of every file it includes


class Failed(NamedTuple):
    path: str
    message: str  # the error, as one line


class FleetResult(NamedTuple):
    hosts: list[Host]  # sorted by name
    errors: list[str]  # one line each, in the order of the policies
    files: dict[str, str]  # NAME/relative -> text, every host's


def policy_paths(arguments: Sequence[str]) -> tuple[list[str], set[str]]:
    """The policy files the arguments name (a directory: its ``*.yaml`` files), each
    once, in order; and which of them came from a directory (those may turn out to be
    included files, and are then not built as hosts)."""
    paths: list[str] = []
    listed: set[str] = set()
    seen: set[str] = set()
    for argument in arguments:
        directory = os.path.isdir(argument)
        for path in list_yaml(argument) if directory else [argument]:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                paths.append(path)
                if directory:
                    listed.add(path)
    return paths, listed


_REGISTRY: Registry | None = None  # the workers' (set before they fork)
_OPTIONS: tuple[tuple[str, ...] | None, bool, bool] = (None, False, False)  # targets, strict, parallel
_FILES: Files | None = None


def _build_one(path: str) -> Host | Failed:
    global _FILES
    assert _REGISTRY is not None
    if _FILES is None:
        _FILES = Files()
    targets, strict, parallel = _OPTIONS
    try:
        result = build(path, _REGISTRY, targets, lint_errors=True, strict=strict, files=_FILES, parallel=parallel)
    except PolicyError as error:
        return Failed(path, str(error))
    assert result.name_location is not None
    return Host(path, result.ruleset.name, result.name_location, result.files, result.warnings,
                result.included)


def build_fleet(
    arguments: Sequence[str], registry: Registry, targets: tuple[str, ...] | None = None, *,
    strict: bool = False, jobs: int | None = None, progress: Callable[[int], None] | None = None,
) -> FleetResult:
    """Build every policy the arguments name. ``jobs``: worker processes (default: one
    per core); ``progress(n)`` is called as each n policies finish."""
    global _REGISTRY, _OPTIONS, _FILES
    paths, listed = policy_paths(arguments)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(paths) // MIN_PER_WORKER))
    # one policy alone may still render its targets on two cores (``build(parallel=)``)
    _REGISTRY, _OPTIONS, _FILES = registry, (targets, strict, len(paths) == 1), None
    outcomes: list[Host | Failed] = []
    try:
        if jobs > 1 and hasattr(os, "fork"):
            outcomes = _in_workers(paths, jobs, progress)
        else:
            for path in paths:
                outcomes.append(_build_one(path))
                if progress:
                    progress(1)
    finally:
        _REGISTRY, _FILES = None, None
    return _gather(outcomes, listed)


def _in_workers(paths: list[str], jobs: int, progress: Callable[[int], None] | None) -> list[Host | Failed]:
    import multiprocessing

    from fwgen import render

    render.preload()  # the workers then import nothing
    context = multiprocessing.get_context("fork")
    chunk = max(1, len(paths) // (jobs * 8))
    outcomes = []
    with context.Pool(jobs) as pool:
        for outcome in pool.imap(_build_one, paths, chunksize=chunk):
            outcomes.append(outcome)
            if progress:
                progress(1)
    return outcomes


def _gather(outcomes: list[Host | Failed], listed: set[str]) -> FleetResult:
    """Drop the files (from directories) that another policy includes; check that no two
    hosts share a name; merge the outputs."""
    included = {key for o in outcomes if isinstance(o, Host) for key in o.includes}

    def is_host(outcome: Host | Failed) -> bool:
        return outcome.path not in listed or os.path.realpath(outcome.path) not in included

    outcomes = [o for o in outcomes if is_host(o)]
    errors = [o.message for o in outcomes if isinstance(o, Failed)]
    hosts = sorted((o for o in outcomes if isinstance(o, Host)), key=lambda h: (h.name, h.path))
    first: dict[str, Host] = {}
    for host in hosts:
        if host.name in first:
            errors.append(str(PolicyError(
                host.name_location,
                f"policy name '{host.name}' is also the name of {first[host.name].path}: each policy's outputs go "
                f"under NAME/, so the names of a build must differ",
            )))
        else:
            first[host.name] = host
    files = {f"{host.name}/{relative}": text for host in hosts for relative, text in host.files.items()}
    return FleetResult(hosts, errors, files)
