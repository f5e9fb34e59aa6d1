"""Where policy files are read from: the working tree, or a git revision.

A policy and the files it includes are read through one ``Files``, so a policy read
from ``git:REV:PATH`` includes its files as they were at REV too. Paths are kept as
the user wrote them (relative to the current directory, or for git to the repository
root), joined with the including file's directory; ``display`` is how messages name
a file. A ``Files`` remembers what it read: a fleet's shared files are read (and
their YAML composed) once.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import subprocess

import yaml

from fwgen.errors import Location, PolicyError
from fwgen.yamlsource import Source, compose


class ReadError(PolicyError):
    """A file that cannot be read: ``reason`` says why (an include names its entry)."""

    def __init__(self, display: str, reason: str) -> None:
        super().__init__(None, f"{display}: cannot read policy: {reason}")
        self.reason = reason


class Loaded:
    """One file, read and composed: its source, YAML root node (None when empty) and sha256."""

    __slots__ = ("root", "sha256", "source")

    def __init__(self, source: Source, root: yaml.Node | None, sha256: str) -> None:
        self.source, self.root, self.sha256 = source, root, sha256


class Files:
    """The file system (relative paths are relative to the current directory)."""

    def __init__(self) -> None:
        self._loaded: dict[str, Loaded] = {}

    def display(self, path: str) -> str:
        return path

    def read_bytes(self, path: str) -> bytes:
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise ReadError(self.display(path), str(exc.strerror)) from None

    def join(self, base: str, relative: str) -> str:
        """``relative`` (as an include entry writes it) from the directory of ``base``."""
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(base), relative))
        if base.startswith("./") and not joined.startswith(("../", "/")) and joined != "..":
            joined = "./" + joined  # git: ./ means "from the current directory"
        return joined

    def key(self, path: str) -> str:
        """Two paths naming the same file have the same key."""
        return os.path.realpath(path)

    def remember(self, source: Source, sha256: str) -> None:
        """Take ``source`` as the text of the file ``source.path`` (not read from disk)."""
        self._loaded[self.key(source.path)] = Loaded(source, compose(source), sha256)

    def load(self, path: str) -> Loaded:
        """Read, decode and compose ``path`` (once per ``Files``); errors name ``display``."""
        key = self.key(path)
        found = self._loaded.get(key)
        if found is not None and found.source.path == self.display(path):
            return found
        raw = self.read_bytes(path)
        display = self.display(path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise PolicyError(Location(display, line, 1), "policy is not valid UTF-8") from None
        source = Source(display, text)
        loaded = Loaded(source, compose(source), hashlib.sha256(raw).hexdigest())
        self._loaded[key] = loaded
        return loaded


class GitFiles(Files):
    """The files of one git revision (``git show REV:PATH`` in the current repository);
    messages name them ``git:REV:PATH``."""

    def __init__(self, rev: str) -> None:
        super().__init__()
        self.rev = rev

    def display(self, path: str) -> str:
        return f"git:{self.rev}:{path}"

    def key(self, path: str) -> str:
        return path

    def read_bytes(self, path: str) -> bytes:
        spec = self.display(path)
        try:
            proc = subprocess.run(["git", "--no-pager", "show", f"{self.rev}:{path}"], capture_output=True,
                                  check=False)
        except OSError as exc:
            raise ReadError(spec, f"cannot run git: {exc.strerror}") from None
        if proc.returncode != 0:
            raise ReadError(spec, git_message(proc.stderr))
        if proc.stdout.startswith(f"tree {self.rev}:{path}\n".encode()):
            raise ReadError(spec, f"'{path}' is a directory in {self.rev}")
        return proc.stdout

    def list_yaml(self, directory: str) -> list[str]:
        """The ``*.yaml`` files directly in ``directory`` at this revision."""
        spec = self.display(directory)
        prefix = directory.rstrip("/") + "/"
        try:
            proc = subprocess.run(["git", "--no-pager", "ls-tree", "--name-only", self.rev, "--", prefix],
                                  capture_output=True, check=False)
        except OSError as exc:
            raise PolicyError(None, f"{spec}: cannot list: cannot run git: {exc.strerror}") from None
        if proc.returncode != 0:
            raise PolicyError(None, f"{spec}: cannot list: {git_message(proc.stderr)}")
        names = proc.stdout.decode("utf-8", "replace").splitlines()
        return sorted(prefix + posixpath.basename(n) for n in names if n.endswith((".yaml", ".yml")))


def git_message(stderr: bytes) -> str:
    """git's error output as one short clause."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    fatal = [line[len("fatal: "):] for line in lines if line.startswith("fatal: ")]
    hints = [line[len("hint: "):] for line in lines if line.startswith("hint: ")]
    message = (fatal or lines or ["git show failed"])[0].rstrip(".")
    if hints:
        message += "; " + hints[0][:1].lower() + hints[0][1:]
    return message


def list_yaml(directory: str) -> list[str]:
    """The ``*.yaml`` (and ``*.yml``) files directly in ``directory``, sorted."""
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise PolicyError(None, f"{directory}: cannot list: {exc.strerror}") from None
    return sorted(posixpath.join(directory, n) for n in names
                  if n.endswith((".yaml", ".yml")) and os.path.isfile(os.path.join(directory, n)))
