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
from typing import TYPE_CHECKING

import yaml

from fwgen.errors import Location, PolicyError
from fwgen.yamlsource import Source, compose

if TYPE_CHECKING:
    import subprocess


def _run_git(args: list[str], **options: object) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run``, imported only when a ``git:`` path is read (a build that reads
    none starts 8M instructions sooner, of 634M)."""
    import subprocess

    return subprocess.run(args, **options)  # type: ignore[call-overload,no-any-return]


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

    def forget(self, path: str) -> None:
        """Read ``path`` anew when it is loaded again: a build forgets its host policy
        once loaded (no other build reads it, except as an include), so that its YAML
        nodes go with the policy rather than live as long as the ``Files`` (a fleet
        worker's, or a single policy's build while its targets render)."""
        self._loaded.pop(self.key(path), None)

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
        self._raw: dict[str, bytes] = {}  # read ahead by prefetch

    def display(self, path: str) -> str:
        return f"git:{self.rev}:{path}"

    def key(self, path: str) -> str:
        return path

    def read_bytes(self, path: str) -> bytes:
        raw = self._raw.pop(path, None)
        if raw is not None:
            return raw
        spec = self.display(path)
        try:
            proc = _run_git(["git", "--no-pager", "show", f"{self.rev}:{path}"], capture_output=True,
                            check=False)
        except OSError as exc:
            raise ReadError(spec, f"cannot run git: {exc.strerror}") from None
        if proc.returncode != 0:
            raise ReadError(spec, git_message(proc.stderr))
        if proc.stdout.startswith(f"tree {self.rev}:{path}\n".encode()):
            raise ReadError(spec, f"'{path}' is a directory in {self.rev}")
        return proc.stdout

    def list_yaml(self, directory: str) -> list[str]:
        """The ``*.yaml`` (and ``*.yml``) files directly in ``directory`` at this revision,
        sorted, as paths to read (``directory`` as ``git show`` takes it: from the
        repository root, or ``./DIR`` from the current directory). Symbolic links are left
        out (git holds their target's name, not a policy)."""
        spec = self.display(directory)
        prefix = dir_prefix(directory)
        # --full-tree: without it, ls-tree run in a subdirectory lists only the part of
        # the tree under that subdirectory's own path
        entries = self._git(["ls-tree", "-z", "--full-tree", f"{self.rev}:{prefix}"], f"{spec}: cannot list")
        names = []
        for entry in entries.split(b"\0"):
            meta, tab, name = entry.partition(b"\t")
            mode, _, kind = meta.partition(b" ")
            text = name.decode("utf-8", "replace")
            if tab and kind.startswith(b"blob") and mode in (b"100644", b"100755") and text.endswith((".yaml", ".yml")):
                names.append(prefix + text)
        return sorted(names)

    def is_tree(self, path: str) -> bool:
        """Whether ``path`` names a directory at this revision (False when it names a file,
        or nothing: reading it then says why)."""
        try:
            proc = _run_git(["git", "--no-pager", "cat-file", "-t", f"{self.rev}:{dir_prefix(path)}"],
                            capture_output=True, check=False)
        except OSError:
            return False
        return proc.returncode == 0 and proc.stdout.strip() == b"tree"

    def prefetch(self, paths: list[str]) -> None:
        """Read many files with one ``git cat-file --batch`` (instead of one ``git show``
        each); files it cannot read are left for ``read_bytes`` to report."""
        if not paths:
            return
        request = "".join(f"{self.rev}:{path}\n" for path in paths).encode()
        try:
            out = self._git(["cat-file", "--batch"], f"{self.display(paths[0])}: cannot read policy", request)
        except PolicyError:
            return
        at = 0
        for path in paths:
            end = out.index(b"\n", at)
            header = out[at:end].split()
            at = end + 1
            if len(header) == 3 and header[1] == b"blob":
                size = int(header[2])
                self._raw[path] = out[at:at + size]
                at += size + 1
            elif len(header) == 3:  # a tree or another object: skipped, with its contents
                at += int(header[2]) + 1

    def _git(self, args: list[str], what: str, stdin: bytes | None = None) -> bytes:
        try:
            proc = _run_git(["git", "--no-pager", *args], input=stdin, capture_output=True, check=False)
        except OSError as exc:
            raise PolicyError(None, f"{what}: cannot run git: {exc.strerror}") from None
        if proc.returncode != 0:
            raise PolicyError(None, f"{what}: {git_message(proc.stderr)}")
        return proc.stdout


class OverlayFiles(Files):
    """``base``'s files, but the one at ``path`` (as ``base`` reads it) is ``replacement``:
    another version of that file, already read (None: the file is gone). Everything else
    comes from ``base``, and from its cache."""

    def __init__(self, base: Files, path: str, replacement: Loaded | None, gone: str = "removed") -> None:
        super().__init__()
        self.base, self.path, self.replacement, self.gone = base, path, replacement, gone
        self._key = base.key(path)

    def display(self, path: str) -> str:
        return self.base.display(path)

    def key(self, path: str) -> str:
        return self.base.key(path)

    def join(self, base: str, relative: str) -> str:
        return self.base.join(base, relative)

    def read_bytes(self, path: str) -> bytes:
        return self.base.read_bytes(path)

    def load(self, path: str) -> Loaded:
        if self.base.key(path) != self._key:
            return self.base.load(path)
        if self.replacement is None:
            raise ReadError(self.display(path), self.gone)
        return self.replacement


def dir_prefix(directory: str) -> str:
    """``directory`` normalized, with a trailing slash, as git names a tree
    (``policies/``, ``./fleet/``; ``./`` for the current directory)."""
    path = posixpath.normpath(directory)
    if path == ".":
        return "./"
    if directory.startswith("./") and not path.startswith(".."):
        path = "./" + path
    return path + "/"


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
