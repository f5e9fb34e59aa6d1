"""Compute one value in a forked child while the parent works on something else.

``fwgen build`` renders iptables itself and nftables + windows in a child, so a policy
of thousands of rules renders on two cores. This is an optimization only: when fork is
unavailable (Windows) or the child fails in any way, ``result()`` says so with ``None``
and the caller does the work itself, so every error is still raised in the parent, in
the usual way. The child never returns into the caller's code: it sends its value
(``marshal``: plain str, list, tuple and dict) through a pipe and leaves with
``os._exit``, running no cleanup and flushing none of the parent's buffers.
"""

from __future__ import annotations

import marshal
import os
import sys
from collections.abc import Callable


class Child:
    def __init__(self, pid: int, read_fd: int) -> None:
        self.pid = pid
        self.read_fd = read_fd

    def result(self) -> object | None:
        """The child's value, or None when it failed (non-zero exit, killed, bad data)."""
        with os.fdopen(self.read_fd, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(self.pid, 0)
        if status != 0:
            return None
        try:
            value: object = marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            return None
        return value

    def cancel(self) -> None:
        """Stop and reap the child (the parent failed; its value is not wanted)."""
        import signal  # only on this error path

        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(self.read_fd)
        os.waitpid(self.pid, 0)


def start(compute: Callable[[], object]) -> Child | None:
    """Fork a child computing ``compute()``; None when this platform cannot fork, or when
    this process runs other threads (a lock one of them holds would stay held forever in
    the child: the CLI has no threads, an embedding program may)."""
    threading = sys.modules.get("threading")
    if not hasattr(os, "fork") or (threading is not None and threading.active_count() > 1):
        return None
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # the child
        status = 1
        try:
            os.close(read_fd)
            data = marshal.dumps(compute())  # type: ignore[arg-type]  # plain values only
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(data)
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    return Child(pid, read_fd)
