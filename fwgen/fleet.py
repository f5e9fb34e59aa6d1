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

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from fwgen.build import BuildWarning, Staging, Syncer, build
from fwgen.errors import Location, PolicyError
from fwgen.files import Files, list_yaml
from fwgen.policy import Policy, load_policy
from fwgen.registry import Registry
from fwgen.targets import TARGETS

# below this many policies per worker, a worker costs more than it saves
MIN_PER_WORKER = 4


class Host(NamedTuple):
    """One policy's build: its outputs (paths relative to ``NAME/``) and warnings."""

    path: str
    name: str
    name_location: Location
    files: dict[str, str]  # empty when the worker staged them (``staged``)
    warnings: list[BuildWarning]
    includes: tuple[str, ...]  # the keys (real paths) of every file it includes
    staged: tuple[list[tuple[str, Path]], list[Path]] | None = None  # ``Staging.parts``
    names: tuple[str, ...] = ()  # the files' paths relative to NAME/, in order


class Failed(NamedTuple):
    path: str
    message: str  # the error, as one line


class FleetResult(NamedTuple):
    hosts: list[Host]  # sorted by name
    errors: list[str]  # one line each, in the order of the policies
    files: dict[str, str]  # NAME/relative -> text, every host's (not when staged)
    staging: Staging | None = None  # the workers' staged files (``build_fleet(stage=)``)
    file_count: int = 0  # how many files in all


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


def load_hosts(paths: Sequence[str], listed: set[str], files: Files) -> list[tuple[str, Policy | PolicyError]]:
    """Each policy (or the error that stops it), in order, less the files from a
    directory (``listed``) that another of them includes: the hosts of a fleet."""
    loaded: list[tuple[str, Policy | PolicyError]] = []
    for path in paths:
        try:
            loaded.append((path, load_policy(path, files)))
        except PolicyError as error:
            loaded.append((path, error))
    included = {files.key(i.raw) for _, p in loaded if isinstance(p, Policy) for i in p.includes}
    return [(path, p) for path, p in loaded if path not in listed or files.key(path) not in included]


_REGISTRY: Registry | None = None  # the workers' (set before they fork)
# targets, strict, parallel (one policy's targets on two cores), the directory to stage in
_OPTIONS: tuple[tuple[str, ...] | None, bool, bool, str | None] = (None, False, False, None)
_FILES: Files | None = None


def _build_one(path: str) -> Host | Failed:
    global _FILES
    assert _REGISTRY is not None
    if _FILES is None:
        _FILES = Files()
    targets, strict, parallel, stage = _OPTIONS
    try:
        result = build(path, _REGISTRY, targets, lint_errors=True, strict=strict, files=_FILES, parallel=parallel)
    except PolicyError as error:
        return Failed(path, str(error))
    assert result.name_location is not None
    host = Host(path, result.ruleset.name, result.name_location, result.files, result.warnings, result.included,
                names=tuple(result.files))
    if stage is None:
        return host
    # the worker writes (not yet in place) what it built: writing is a fifth of a fleet's work
    staging = Staging()
    try:
        staging.add(stage, {f"{host.name}/{relative}": text for relative, text in host.files.items()})
    except PolicyError as error:
        staging.discard()
        return Failed(path, str(error))
    return host._replace(files={}, staged=staging.parts())


def build_fleet(
    arguments: Sequence[str], registry: Registry, targets: tuple[str, ...] | None = None, *,
    strict: bool = False, jobs: int | None = None, progress: Callable[[int], None] | None = None,
    stage: str | None = None,
) -> FleetResult:
    """Build every policy the arguments name. ``jobs``: worker processes (default: one
    per core); ``progress(n)`` is called as each n policies finish. ``stage``: the
    output directory, where the workers stage what they built (the result's
    ``staging``: commit it, or it is discarded already when there are errors)."""
    global _REGISTRY, _OPTIONS, _FILES
    paths, listed = policy_paths(arguments)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(paths) // MIN_PER_WORKER))
    # one policy alone may still render its targets on two cores (``build(parallel=)``)
    _REGISTRY, _OPTIONS, _FILES = registry, (targets, strict, len(paths) == 1, stage), None
    syncer = Syncer() if stage is not None else None  # syncs what is staged as it arrives
    arrived: list[Host | Failed] = []

    def done(outcome: Host | Failed) -> None:
        arrived.append(outcome)
        if syncer is not None and isinstance(outcome, Host) and outcome.staged is not None:
            syncer.add(outcome.staged[0])
        if progress:
            progress(1)

    try:
        if jobs > 1 and hasattr(os, "fork"):
            outcomes = _in_workers(paths, jobs, done)
        else:
            for path in paths:
                done(_build_one(path))
            outcomes = arrived
        result = _gather(outcomes, listed)
        if syncer is not None and not result.errors:
            syncer.wait()  # an OS error: the build's error, and nothing is written
    except BaseException:
        _discard(arrived, syncer)
        raise
    finally:
        _REGISTRY, _FILES = None, None
    if stage is None:
        return result
    if result.errors:
        _discard(arrived, syncer)
        return result
    kept = {id(host) for host in result.hosts}
    _discard([o for o in outcomes if id(o) not in kept])  # files the others include
    staging = Staging()
    for host in result.hosts:
        assert host.staged is not None
        staging.join(host.staged)
    staging.synced = True
    return result._replace(staging=staging)


def _discard(outcomes: Sequence[Host | Failed], syncer: Syncer | None = None) -> None:
    """Remove what the outcomes staged (once ``syncer`` has stopped syncing any of it)."""
    if syncer is not None:
        with contextlib.suppress(PolicyError):
            syncer.wait()
    staging = Staging()
    for outcome in outcomes:
        if isinstance(outcome, Host) and outcome.staged is not None:
            staging.join(outcome.staged)
    staging.discard()


def _in_workers(paths: list[str], jobs: int, done: Callable[[Host | Failed], None]) -> list[Host | Failed]:
    """Fork ``jobs`` workers that share the policies out as they go: each takes the next
    policy's number from a pipe of tickets (``_TICKET`` bytes each), builds it, and sends
    its number and outcome (pickled, after its length) through its own pipe; ``done`` is
    called with each outcome as it arrives. (Dealt out in advance, worker k taking
    policies k, k + jobs, ..., the two workers of fleet1000 finished 70-200 ms apart, one
    of them idle meanwhile, and a fleet with a few large policies left one idle for as
    long as those took.) A worker that fails fails the build (the caller removes what
    the outcomes ``done`` was given staged)."""
    import pickle
    import selectors

    from fwgen import render

    render.preload()  # the workers then import nothing
    # made once here rather than in every worker: each target's line shapes, and the
    # registry's index of names (any policy naming a service needs it)
    for target in TARGETS:
        render.shapes(target.lines)
    if _REGISTRY is not None:
        _REGISTRY.pairs("ssh")
    # Every ticket goes in by a write of whole tickets of at most PIPE_BUF bytes, which
    # a pipe takes whole or not at all, so a read of one ticket always gets one whole.
    tickets = b"".join(n.to_bytes(_TICKET, "big") for n in range(len(paths)))
    ticket_read, ticket_write = os.pipe()
    os.set_blocking(ticket_write, False)
    tickets = tickets[_put_tickets(ticket_write, tickets):]
    workers: list[tuple[int, int]] = []  # (pid, the read end of its pipe)
    received: dict[int, Host | Failed] = {}  # policy number -> its outcome
    errors: list[BaseException] = []
    try:
        for _ in range(jobs):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # never returns
                _work(paths, ticket_read, write_fd, [ticket_write, read_fd, *(fd for _, fd in workers)])
            os.close(write_fd)
            workers.append((pid, read_fd))
        os.close(ticket_read)
        ticket_read = -1
        if not tickets:
            os.close(ticket_write)
            ticket_write = -1
        pending = {fd: bytearray() for _, fd in workers}
        with selectors.DefaultSelector() as selector:
            for _, fd in workers:
                selector.register(fd, selectors.EVENT_READ)
            if ticket_write >= 0:
                selector.register(ticket_write, selectors.EVENT_WRITE)
            while selector.get_map():
                for key, _ in selector.select():
                    if key.fd == ticket_write:
                        try:
                            tickets = tickets[_put_tickets(ticket_write, tickets):]
                        except BrokenPipeError:  # every worker is gone: they said why
                            tickets = b""
                        if not tickets:
                            selector.unregister(ticket_write)
                            os.close(ticket_write)
                            ticket_write = -1
                        continue
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        selector.unregister(key.fd)
                        continue
                    data = pending[key.fd]
                    data += chunk
                    while len(data) >= 4 and len(data) >= 4 + (size := int.from_bytes(data[:4], "big")):
                        message = pickle.loads(data[4:4 + size])
                        del data[:4 + size]
                        if isinstance(message, BaseException):
                            errors.append(message)
                            continue
                        number, outcome = message
                        received[number] = outcome
                        done(outcome)
    except BaseException as error:
        errors.append(error)
    finally:
        for fd in (ticket_read, ticket_write):
            if fd >= 0:
                os.close(fd)
        statuses = [os.waitpid(pid, 0)[1] for pid, _ in workers]
        for _, fd in workers:
            os.close(fd)
    if errors or any(statuses) or len(received) != len(paths):
        raise errors[0] if errors else RuntimeError("fwgen: a build worker failed")
    return [received[number] for number in range(len(paths))]


_TICKET = 4  # bytes: a policy's number in the pipe of tickets


def _put_tickets(fd: int, tickets: bytes) -> int:
    """Write as many of ``tickets`` into the (non-blocking) pipe as it takes now, in
    writes of whole tickets of at most PIPE_BUF bytes; how many bytes went in."""
    import select

    chunk = select.PIPE_BUF // _TICKET * _TICKET
    done = 0
    while done < len(tickets):
        try:
            done += os.write(fd, tickets[done:done + chunk])
        except BlockingIOError:  # full: the rest when the workers have taken some
            break
    return done


def _work(paths: list[str], tickets: int, write_fd: int, others: list[int]) -> None:
    """A worker: build the policy of each ticket it takes (see ``_in_workers``) until
    there are none left, send each number and outcome (or the error that stops it) to
    the parent, exit. ``others``: the parent's descriptors to close."""
    import pickle

    def send(value: object) -> None:
        try:
            data = pickle.dumps(value)
        except Exception:  # an error that does not pickle: its text, then
            import traceback

            data = pickle.dumps(RuntimeError(traceback.format_exc()))
        pipe.write(len(data).to_bytes(4, "big") + data)
        pipe.flush()

    status = 1
    try:
        for fd in others:
            os.close(fd)
        with os.fdopen(write_fd, "wb") as pipe:
            try:
                while ticket := os.read(tickets, _TICKET):
                    assert len(ticket) == _TICKET  # the pipe only ever holds whole tickets
                    number = int.from_bytes(ticket, "big")
                    send((number, _build_one(paths[number])))
            except BaseException as error:  # raised again in the parent
                send(error)
        status = 0
    finally:
        os._exit(status)


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
    return FleetResult(hosts, errors, files, file_count=sum(len(host.names) for host in hosts))
