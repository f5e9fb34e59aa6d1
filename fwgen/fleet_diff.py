"""``fwgen diff OLD NEW`` of two fleets: each a directory, or ``git:REV:DIR`` (the
directory as it was at REV). Per host the semantic diff of ``fwgen diff``; and per file
that differs between the two sides, the hosts whose meaning that file's change alone
changes.

A side's hosts are its directory's ``*.yaml`` policies less the files another of them
includes (what ``fwgen build DIR`` builds). Hosts pair up by policy name; a host on one
side only is added or removed.

Files are matched by their path relative to the directory (``base/rules.yaml``, or
``../common/x.yaml`` outside it). A file F that differs changes the host H (H on both
sides, including F, or F being H's own file) when H loaded from the old side with only
F's new version in place of the old one decides some connection differently from H on
the old side. Where F's new version cannot be read with the rest of the old side (F was
removed, or it names a group only another changed file defines), its effect cannot be
told apart from the others': F then counts for H when H changed at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fwgen import diff, diff_format, fleet
from fwgen.diff import DiffResult
from fwgen.errors import PolicyError
from fwgen.files import Files, GitFiles, Loaded, OverlayFiles
from fwgen.policy import Policy, load_policy
from fwgen.registry import Registry


class FleetError(Exception):
    """Trouble on either side: every error, one line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class Host:
    name: str
    path: str  # as read
    relative: str  # its own file, relative to the fleet's directory
    policy: Policy

    def uses(self) -> dict[str, tuple[str, str]]:
        """Every file the host is made of (its own and its includes), by path relative
        to the directory: (path as read, sha256)."""
        found = {self.relative: (self.path, self.policy.sha256)}
        for include in self.policy.includes:
            found.setdefault(include.relative, (include.raw, include.sha256))
        return found


@dataclass
class Side:
    spec: str  # as the user named it
    directory: str  # as the side's Files reads it
    files: Files
    hosts: dict[str, Host] = field(default_factory=dict)  # by name

    def path_of(self, relative: str) -> str:
        """A path relative to the directory, as this side's Files reads it."""
        return self.files.join(posixpath.join(self.directory, "-"), relative)

    def contents(self) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for host in self.hosts.values():
            for relative, entry in host.uses().items():
                found.setdefault(relative, entry)
        return found

    def sha256(self, relative: str, known: dict[str, tuple[str, str]]) -> str | None:
        """The file's sha256 on this side (None: there is no such file)."""
        if relative in known:
            return known[relative][1]
        try:
            return hashlib.sha256(self.files.read_bytes(self.path_of(relative))).hexdigest()
        except PolicyError:
            return None

    def loaded(self, relative: str, known: dict[str, tuple[str, str]]) -> Loaded | None:
        path = known[relative][0] if relative in known else self.path_of(relative)
        try:
            return self.files.load(path)
        except PolicyError:
            return None


@dataclass(frozen=True)
class FileChange:
    file: str  # relative to the directory
    status: str  # changed | added | removed
    hosts: tuple[str, ...]  # the hosts it changes, sorted


@dataclass(frozen=True)
class FleetDiff:
    old: str
    new: str
    files: tuple[FileChange, ...]  # sorted by file
    results: dict[str, DiffResult]  # every host on both sides, by name (sorted)
    own: dict[str, str]  # host -> its own file, relative to the directory (new side)
    own_changed: frozenset[str]  # hosts whose own file differs
    changed_by: dict[str, tuple[str, ...]]  # host -> the changed files that change it
    added: dict[str, str]  # host -> its file (new side)
    removed: dict[str, str]  # host -> its file (old side)
    of: int  # hosts in the new fleet

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or any(r.changed for r in self.results.values()))


# ---------------------------------------------------------------------- the sides


def _git_spec(spec: str) -> tuple[str, str] | None:
    rev, sep, path = spec[len("git:"):].partition(":")
    return (rev, path) if spec.startswith("git:") and sep and rev and path else None


def is_fleet(spec: str) -> bool:
    """Whether ``spec`` names a directory: a local one, or ``git:REV:DIR`` a tree at REV."""
    git = _git_spec(spec)
    if git is not None:
        return GitFiles(git[0]).is_tree(git[1])
    return not spec.startswith("git:") and os.path.isdir(spec)


def load_side(spec: str, registry: Registry) -> tuple[Side, list[str]]:
    """A fleet's hosts, loaded and checked, and its errors (one line each)."""
    git = _git_spec(spec)
    files: Files
    if git is not None:
        rev, directory = git
        gitfiles = GitFiles(rev)
        files = gitfiles
        paths = gitfiles.list_yaml(directory)
        gitfiles.prefetch(paths)
    else:
        directory = spec
        files = Files()
        paths, _ = fleet.policy_paths([directory])
    side = Side(spec, directory, files)
    errors: list[str] = []
    # as fleet.build_fleet: a listed file another policy includes is not a host
    for path, policy in fleet.load_hosts(paths, set(paths), files):
        if isinstance(policy, PolicyError):
            errors.append(str(policy))
            continue
        try:
            diff.check(policy, registry)
        except PolicyError as error:
            errors.append(str(error))
            continue
        if policy.name in side.hosts:
            errors.append(f"{files.display(path)}: policy name '{policy.name}' is also the name of "
                          f"{files.display(side.hosts[policy.name].path)}: the hosts of a fleet pair up by name, "
                          f"so their names must differ")
            continue
        side.hosts[policy.name] = Host(policy.name, path, posixpath.basename(path), policy)
    return side, errors


# ---------------------------------------------------------------------- the diff


def diff_fleets(old_spec: str, new_spec: str, registry: Registry) -> FleetDiff:
    """Both fleets' hosts diffed, and each changed file's hosts. ``FleetError`` (every
    error of both sides) when either has a bad policy; ``PolicyError`` when a directory
    cannot be listed."""
    old, old_errors = load_side(old_spec, registry)
    new, new_errors = load_side(new_spec, registry)
    if old_errors or new_errors:
        raise FleetError(old_errors + new_errors)
    paired = sorted(set(old.hosts) & set(new.hosts))
    results = {name: diff.diff_policies(old.hosts[name].policy, new.hosts[name].policy, registry)
               for name in paired}
    old_known, new_known = old.contents(), new.contents()
    # own files of hosts added, removed or renamed away are reported as hosts, not files
    included = {include.relative for side in (old, new) for host in side.hosts.values()
                for include in host.policy.includes}
    paired_own = {new.hosts[name].relative for name in paired}
    own_only = {host.relative for side in (old, new) for host in side.hosts.values()} - included - paired_own
    changed_by: dict[str, list[str]] = {name: [] for name in paired}
    changes: list[FileChange] = []
    for relative in sorted((set(old_known) | set(new_known)) - own_only):
        before, after = old.sha256(relative, old_known), new.sha256(relative, new_known)
        if before == after:
            continue
        status = "added" if before is None else "removed" if after is None else "changed"
        replacement = new.loaded(relative, new_known) if after is not None else None
        hosts = []
        for name in paired:
            host = old.hosts[name]
            if new.hosts[name].relative == relative:
                target = host.path  # the host's own file (perhaps renamed)
            elif relative in host.uses() and relative != host.relative:
                target = host.uses()[relative][0]
            else:
                continue
            if _changes_host(host, OverlayFiles(old.files, target, replacement, f"removed in {new_spec}"),
                             results[name], registry):
                hosts.append(name)
                changed_by[name].append(relative)
        changes.append(FileChange(relative, status, tuple(hosts)))
    return FleetDiff(
        old_spec, new_spec, tuple(changes), results,
        own={name: host.relative for name, host in sorted(new.hosts.items())},
        own_changed=frozenset(name for name in paired
                              if old.hosts[name].relative != new.hosts[name].relative
                              or old.hosts[name].policy.sha256 != new.hosts[name].policy.sha256),
        changed_by={name: tuple(files) for name, files in changed_by.items()},
        added={name: new.hosts[name].relative for name in sorted(set(new.hosts) - set(old.hosts))},
        removed={name: old.hosts[name].relative for name in sorted(set(old.hosts) - set(new.hosts))},
        of=len(new.hosts),
    )


def _changes_host(host: Host, overlay: OverlayFiles, whole: DiffResult, registry: Registry) -> bool:
    """Whether the host, read with the overlay's one file replaced, decides a connection
    differently; when that cannot be read alone, whether the host changed at all."""
    try:
        alone = load_policy(host.path, overlay)
        return bool(diff.diff_policies(host.policy, alone, registry).changed)
    except PolicyError:
        return whole.changed


# ---------------------------------------------------------------------- output


def _hosts_word(count: int) -> str:
    return "host" if count == 1 else "hosts"


def summary_lines(result: FleetDiff, code: Callable[[str], str] = str) -> list[str]:
    """``base/rules.yaml changes 2 of 3 hosts (db, web)``, one per changed file; then the
    hosts added and removed. ``code``: how a file or host name is written (markdown's
    backticks)."""
    lines = []
    for change in result.files:
        status = "" if change.status == "changed" else f" ({change.status})"
        names = f" ({', '.join(change.hosts)})" if change.hosts else ""
        lines.append(f"{code(change.file)}{status} changes {len(change.hosts)} of {result.of} "
                     f"{_hosts_word(result.of)}{names}")
    lines += [f"host added: {code(name)} ({code(path)})" for name, path in result.added.items()]
    lines += [f"host removed: {code(name)} ({code(path)})" for name, path in result.removed.items()]
    return lines


def _shown(result: FleetDiff) -> list[str]:
    """The hosts that get a section: changed, metadata changed, or own file edited."""
    return [name for name, r in result.results.items()
            if r.changed or r.metadata or name in result.own_changed]


def _heading(result: FleetDiff, name: str) -> tuple[str, str]:
    """(the host's file and whether it was edited, what changed it)."""
    own = result.own[name] + (", own file changed" if name in result.own_changed else "")
    by = result.changed_by[name]
    if by:
        return own, "changed by " + ", ".join(by)
    return own, "changed by the changed files together" if result.results[name].changed else ""


def text(result: FleetDiff, namer: diff_format.PortNamer) -> str:
    lines = summary_lines(result)
    shown = _shown(result)
    if lines and shown:
        lines.append("")
    for name in shown:
        own, by = _heading(result, name)
        lines.append(f"{name} ({own})" + (f": {by}" if by else ""))
        lines += ["  " + line for line in diff_format.text_lines(result.results[name], namer)]
    unchanged = [name for name in result.results if name not in shown]
    if not lines:
        lines.append(f"no semantic change ({len(unchanged)} {_hosts_word(len(unchanged))})")
    elif unchanged:
        lines.append(f"unchanged: {', '.join(unchanged)}")
    return "".join(line + "\n" for line in lines)


def markdown(result: FleetDiff, namer: diff_format.PortNamer) -> str:
    code = diff_format.code
    out = [f"### fwgen diff: {code(result.old)} {diff_format.ARROW} {code(result.new)}", ""]
    out += ["- " + line for line in summary_lines(result, code)]
    changed = [name for name, r in result.results.items() if r.changed]
    if len(out) > 2:
        out.append("")
    if changed:
        out.append(f"{len(changed)} of {len(result.results)} {_hosts_word(len(result.results))} changed: "
                   f"{', '.join(changed)}.")
    else:
        out.append(f"No semantic change in {len(result.results)} {_hosts_word(len(result.results))}.")
    text = "\n".join(out) + "\n"
    for name in _shown(result):
        r = result.results[name]
        heading = f"#### {name}: {code(r.old)} {diff_format.ARROW} {code(r.new)}\n\n{_markdown_note(result, name)}"
        text += "\n" + diff_format.markdown(r, namer, heading)
    return text


def _markdown_note(result: FleetDiff, name: str) -> str:
    code = diff_format.code
    parts = []
    if name in result.own_changed:
        parts.append(f"Own file {code(result.own[name])} changed.")
    by = result.changed_by[name]
    if by:
        parts.append(f"Changed by {', '.join(code(f) for f in by)}.")
    elif result.results[name].changed:
        parts.append("Changed by the changed files together.")
    return " ".join(parts) or f"Own file {code(result.own[name])}."


def as_json(result: FleetDiff, namer: diff_format.PortNamer) -> dict[str, Any]:
    return {
        "old": result.old,
        "new": result.new,
        "changed": result.changed,
        "summary": [{"file": c.file, "status": c.status, "changes": len(c.hosts), "of": result.of,
                     "hosts": list(c.hosts)} for c in result.files],
        "hosts": {
            name: {**diff_format.as_json(r, namer), "changed_by": list(result.changed_by[name]),
                   "own_file_changed": name in result.own_changed}
            for name, r in result.results.items()
        },
        "added": list(result.added),
        "removed": list(result.removed),
    }


def render(result: FleetDiff, registry: Registry, fmt: str = "text") -> str:
    """The whole output for ``--format`` text, markdown or json, newline-terminated."""
    namer = diff_format.PortNamer(registry)
    if fmt == "json":
        return json.dumps(as_json(result, namer), indent=2, ensure_ascii=False) + "\n"
    if fmt == "markdown":
        return markdown(result, namer)
    return text(result, namer)


def run(old: str, new: str, registry: Registry, fmt: str) -> tuple[str, list[str], int]:
    """The command: (output, error lines, exit status: 0 no host changed, 1 some did or a
    host was added or removed, 2 trouble)."""
    if is_fleet(old) != is_fleet(new):
        directory, policy = (old, new) if is_fleet(old) else (new, old)
        try:
            diff.load_spec(policy)
        except PolicyError as error:
            return "", [str(error)], 2
        return "", [f"{directory} is a directory but {policy} is not: diff two policies or two directories"], 2
    try:
        result = diff_fleets(old, new, registry)
    except FleetError as error:
        return "", error.lines, 2
    except PolicyError as error:
        return "", [str(error)], 2
    return render(result, registry, fmt), [], 1 if result.changed else 0
