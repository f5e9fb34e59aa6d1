"""``fwgen apply``: load one host's build directory with automatic rollback, and
``fwgen remove``: take fwgen's rules off the host again.

apply checks every file with the platform's own check, saves what it will replace (nftables:
fwgen's table or its absence; iptables table mode: every table of the family, chains mode:
the same, of which only fwgen's state is put back), loads the new files with the counters
of fwgen's rules carried over, and then waits: on a terminal it asks, elsewhere it waits for
``fwgen apply --confirm`` (a file in the state directory). Without a confirmation within the
timeout, or when the process is told to stop (SIGHUP when the SSH session drops, SIGTERM,
SIGINT), it puts the saved state back. See docs/rollout.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fwgen import hoststate
from fwgen.hoststate import FAMILIES, HostError
from fwgen.targets.iptables import CHAIN_PREFIX, policy_prefix

DEFAULT_STATE_DIR = "/var/lib/fwgen"
DEFAULT_TIMEOUT = 30.0
POLL = 0.1  # seconds between looks for a confirmation
CONFIRM_WAIT = 10.0  # how long --confirm waits for the apply to answer
LINUX_TARGETS = ("nftables", "iptables")


class ApplyError(Exception):
    """One line for the user; exit status 1."""


class _Stop(Exception):
    """A signal asked the waiting apply to stop: roll back."""


# --- what to load -----------------------------------------------------------------------


@dataclass
class HostBuild:
    target: str
    nft: Path | None = None  # nftables/NAME.nft
    name: str = ""  # the nft table name, or the policy name of an iptables file
    v4: str = ""  # iptables texts
    v6: str = ""
    sharing: bool = False  # iptables chains mode
    prefix: str = ""  # chains mode: what every chain of the policy starts with (fwgen-NAME)


def pick_target(out: Path, target: str | None) -> str:
    """-t when given; otherwise the one Linux target OUT holds (nftables/ or iptables/)."""
    present = [name for name in LINUX_TARGETS if (out / name).is_dir()]
    if target:
        if target not in present:
            raise ApplyError(f"fwgen: {out} has no {target}/ directory (build it with fwgen build -t {target})")
        return target
    if len(present) == 1:
        return present[0]
    if not present:
        raise ApplyError(f"fwgen: {out} holds neither nftables/ nor iptables/: give a host's build directory, out/NAME")
    raise ApplyError(f"fwgen: {out} holds both nftables/ and iptables/: name the one to load with -t")


def read_files(out: Path, target: str) -> HostBuild:
    try:
        if target == "nftables":
            found = sorted((out / "nftables").glob("*.nft"))
            if len(found) != 1:
                raise ApplyError(f"fwgen: {out / 'nftables'} must hold exactly one .nft file, found {len(found)}")
            return HostBuild(target, nft=found[0], name=found[0].stem)
        v4 = (out / "iptables" / "rules.v4").read_text(encoding="utf-8")
        v6 = (out / "iptables" / "rules.v6").read_text(encoding="utf-8")
    except OSError as error:
        raise ApplyError(f"fwgen: cannot read {error.filename}: {error.strerror}") from None
    sharing = hoststate.is_chains_mode(v4)
    if sharing != hoststate.is_chains_mode(v6):
        raise ApplyError(f"fwgen: {out / 'iptables'}: rules.v4 and rules.v6 were built in different modes")
    inputs = [chain for chain in hoststate.parse(v4).get("filter", hoststate.Table("filter")).owned_chains()
              if chain.endswith("-in")] if sharing else []
    return HostBuild(target, name=out.name, v4=v4, v6=v6, sharing=sharing, prefix=inputs[0][:-3] if inputs else "")


def check(files: HostBuild) -> None:
    """The files' own checks: ``nft -c -f``, ``iptables-restore --test``."""
    try:
        if files.nft is not None:
            hoststate.run(["nft", "-c", "-f", str(files.nft)])
            return
        for number, text in ((4, files.v4), (6, files.v6)):
            hoststate.check_file(FAMILIES[number], text, files.sharing)
    except HostError as error:
        raise ApplyError(f"fwgen: refusing to apply: {error}; nothing changed") from None


# --- save, load, put back ---------------------------------------------------------------


@dataclass
class Saved:
    nft: str | None = None  # nft list table text, None when there was no table
    iptables: dict[int, str] | None = None  # family -> iptables-save -c text


def save(files: HostBuild, state_dir: Path) -> Saved:
    if files.target == "nftables":
        saved = Saved(nft=hoststate.nft_table(files.name))
        _write(state_dir / f"previous-nftables-{files.name}.nft", saved.nft if saved.nft is not None else "")
        return saved
    texts = {number: hoststate.save(family) for number, family in FAMILIES.items()}
    for number, text in texts.items():
        _write(state_dir / f"previous-iptables.v{number}", text)
    return Saved(iptables=texts)


def load(files: HostBuild, saved: Saved) -> None:
    """Load the new files, carrying fwgen's counters over; a failing load changes nothing
    of that family (each restore is atomic per table)."""
    if files.nft is not None:
        text = files.nft.read_text(encoding="utf-8")
        hoststate.run(["nft", "-f", "-"], input=hoststate.with_nft_counters(text, hoststate.nft_counters(files.name)))
        return
    assert saved.iptables is not None
    loaded = []
    try:
        for number, text in ((4, files.v4), (6, files.v6)):
            family, current = FAMILIES[number], hoststate.parse(saved.iptables[number])
            new = hoststate.parse(text)
            if files.sharing:
                hoststate.load(family, hoststate.sharing_text(new, current), noflush=True)
            else:
                hoststate.load(family, hoststate.table_mode_text(new, current), noflush=False)
                hoststate.load(family, hoststate.stale_text(new, current), noflush=True)
            loaded.append(number)
    except HostError:
        _put_back(files, saved, loaded)
        raise


def put_back(files: HostBuild, saved: Saved) -> None:
    _put_back(files, saved, [4, 6])


def _put_back(files: HostBuild, saved: Saved, numbers: list[int]) -> None:
    if files.target == "nftables":
        hoststate.nft_replace_with(files.name, saved.nft)
        return
    assert saved.iptables is not None
    for number in numbers:
        family, text = FAMILIES[number], saved.iptables[number]
        before = hoststate.parse(text)
        if files.sharing:
            current = hoststate.parse(hoststate.save(family))
            hoststate.load(family, hoststate.sharing_text(hoststate.saved_state(text), current, carry=False),
                           noflush=True)
        else:  # every table the file replaced (mangle too, with published_ports: enforce)
            owned = hoststate.replaced_tables(hoststate.parse(files.v4 if number == 4 else files.v6), before)
            kept = "".join(_section(text, name) for name in owned if name in before)
            empty = "".join(f"*{name}\n" + "".join(f":{chain} ACCEPT [0:0]\n" for chain in hoststate.BUILTIN[name])
                            + "COMMIT\n" for name in owned if name not in before)
            hoststate.load(family, kept + empty, noflush=False)
        hoststate.drop_new_tables(family, before)


def _section(save_text: str, table: str) -> str:
    out, inside = [], False
    for line in save_text.splitlines():
        if line == f"*{table}":
            inside = True
        if inside and not line.startswith("#"):
            out.append(line)
        if inside and line == "COMMIT":
            break
    return "\n".join(out) + "\n"


# --- the state directory and the confirmation -------------------------------------------


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _state_dir(path: str) -> Path:
    state = Path(path)
    try:
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise ApplyError(f"fwgen: cannot use state directory {state}: {error.strerror}") from None
    return state


@contextlib.contextmanager
def _locked(state: Path) -> Iterator[None]:
    with open(state / "lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ApplyError(f"fwgen: another fwgen apply is running (state directory {state})") from None
        yield


@contextlib.contextmanager
def _stopping_rolls_back() -> Iterator[None]:
    """SIGHUP (the session dropped), SIGTERM and SIGINT end the wait with a rollback."""
    def stop(signum: int, frame: object) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _say(text: str) -> None:
    """A line for the user; the terminal may be gone (SIGHUP), which must not stop a rollback."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def _wait(state: Path, token: str, timeout: float, ask: bool) -> str:
    """"" when confirmed within ``timeout`` seconds (``fwgen apply --confirm``, whose
    confirm file holds this apply's token, or on a terminal an answer of y), else why not."""
    deadline = time.monotonic() + timeout
    confirm = state / "confirm"
    if ask:
        _say(f"fwgen: new rules loaded; keep them? [y/N] (rolling back in {timeout:g} s)")
    while True:
        with contextlib.suppress(OSError):
            if confirm.read_text(encoding="utf-8").strip() == token:
                return ""
        left = deadline - time.monotonic()
        if left <= 0:
            return f"not confirmed within {timeout:g} s"
        if ask:
            ready, _, _ = select.select([sys.stdin], [], [], min(POLL, left))
            if ready:
                answer = sys.stdin.readline().strip().lower()
                return "" if answer in ("y", "yes") else "not confirmed (answered no)"
        else:
            time.sleep(min(POLL, left))


def apply(out: Path, target: str | None, timeout: float, state_path: str,
          ask: Callable[[], bool] = lambda: sys.stdin.isatty()) -> str:
    """Load OUT; return the line to print on success (exit 0); raise ApplyError (exit 1)."""
    if not out.is_dir():
        raise ApplyError(f"fwgen: {out} is not a directory")
    chosen = pick_target(out, target)
    files = read_files(out, chosen)
    check(files)
    state = _state_dir(state_path)
    with _locked(state):
        token = secrets.token_hex(8)
        for leftover in ("confirm", "outcome"):
            with contextlib.suppress(FileNotFoundError):
                (state / leftover).unlink()
        try:
            saved = save(files, state)
        except (HostError, OSError) as error:
            raise ApplyError(f"fwgen: cannot save the current rules: {error}; nothing changed") from None
        with _stopping_rolls_back():
            try:
                load(files, saved)
            except HostError as error:
                raise ApplyError(f"fwgen: loading failed, previous rules kept: {error}") from None
            except _Stop as stop:
                failed = _roll_back(files, saved)
                raise ApplyError(f"fwgen: stopped by {stop} while loading; " + (
                    f"the ROLLBACK FAILED: {failed}; the previous rules are in {state}" if failed
                    else "rolled back to the previous rules")) from None
            if timeout == 0:
                return f"fwgen: loaded {_what(files)} (no confirmation asked: --timeout 0)"
            _write(state / "pending", json.dumps({"pid": os.getpid(), "token": token, "target": chosen}))
            kept, why, failed = False, "interrupted", ""
            try:
                why = _wait(state, token, timeout, ask())
                kept = not why
            except _Stop as stop:
                why = f"stopped by {stop}"
            finally:
                if not kept:
                    failed = _roll_back(files, saved)
                _write(state / "outcome", f"{'kept' if kept else 'rolled-back'} {token}\n")
                with contextlib.suppress(FileNotFoundError):
                    (state / "pending").unlink()
    if failed:
        raise ApplyError(f"fwgen: {why}, and the ROLLBACK FAILED: {failed}; the previous rules are in {state}")
    if not kept:
        raise ApplyError(f"fwgen: {why}; rolled back to the previous rules")
    return f"fwgen: confirmed; keeping {_what(files)}"


def _roll_back(files: HostBuild, saved: Saved) -> str:
    """Put the saved state back, deaf to the signals that asked for it (a second SIGHUP
    must not cut a rollback short); "" or why it failed."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    try:
        put_back(files, saved)
        return ""
    except HostError as error:
        return str(error)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _what(files: HostBuild) -> str:
    if files.nft is not None:
        return f"table inet {files.name}"
    return f"the iptables rules of {files.name} ({'chains' if files.sharing else 'table'} mode)"


def confirm(state_path: str) -> str:
    """Tell the waiting apply to keep its rules; return its answer's line (exit 0) or raise."""
    state = Path(state_path)
    try:
        pending = json.loads((state / "pending").read_text(encoding="utf-8"))
        token, pid = str(pending["token"]), int(pending["pid"])
    except (OSError, ValueError, KeyError):
        raise ApplyError(f"fwgen: no fwgen apply is waiting for confirmation (state directory {state})") from None
    _write(state / "confirm", token + "\n")
    deadline = time.monotonic() + CONFIRM_WAIT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            outcome = (state / "outcome").read_text(encoding="utf-8").split()
            if outcome[1:] == [token]:
                if outcome[0] == "kept":
                    return "fwgen: confirmed; the new rules stay"
                raise ApplyError("fwgen: too late: the apply had already rolled back")
        if not _alive(pid):
            raise ApplyError("fwgen: the waiting fwgen apply is gone; nothing confirmed")
        time.sleep(POLL)
    raise ApplyError(f"fwgen: the waiting fwgen apply did not answer within {CONFIRM_WAIT:g} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- removal ----------------------------------------------------------------------------

TABLE_MODE_HELP = (
    "in iptables table mode fwgen's files are the whole filter and raw tables (and mangle, "
    "with published_ports: enforce), so there is no part of "
    "them to take out alone; to go back to the distribution default (no rules, every policy ACCEPT), "
    "load an empty ruleset with iptables-restore and ip6tables-restore (docs/rollout.md#removal), delete "
    "/etc/iptables/rules.v4 and rules.v6, and restart Docker, fail2ban and kube-proxy so they add their "
    "rules again"
)


def remove(out: Path | None, name: str | None, target: str | None) -> str:
    """Take fwgen's rules of one policy off the host; a line to print (exit 0) or raise."""
    prefix = ""
    if out is not None:
        target = pick_target(out, target)
        files = read_files(out, target)
        name, prefix = files.name, files.prefix
        if target == "iptables" and not files.sharing:
            raise ApplyError(f"fwgen: nothing removed: {TABLE_MODE_HELP}")
    if target is None or name is None:
        raise ApplyError("fwgen: name the target with -t when removing by --name")
    try:
        if target == "nftables":
            if hoststate.nft_table(name) is None:
                return f"fwgen: no table inet {name}; nothing to remove"
            hoststate.run(["nft", "delete", "table", "inet", name])
            return f"fwgen: removed table inet {name}"
        return _remove_chains(prefix or policy_prefix(name), name)
    except HostError as error:
        raise ApplyError(f"fwgen: {error}") from None


def _remove_chains(own: str, name: str) -> str:
    """Delete the chains named ``own-...`` and the jumps to them, both families."""
    prefix = own + "-"
    removed: set[str] = set()
    table_mode = False
    for family in FAMILIES.values():
        current = hoststate.parse(hoststate.save(family))
        wanted: dict[str, hoststate.Table] = {}
        for table in current.values():
            keep = hoststate.Table(table.name, saved=True)
            for chain in table.owned_chains():
                if chain.startswith(prefix):
                    removed.add(chain)
                else:
                    keep.chains[chain] = "-"
                    table_mode |= chain == "fwgen-reject" or chain.startswith("fwgen-rule-")
            keep.rules = [rule for rule in table.rules if rule.chain in keep.chains
                          or (not rule.chain.startswith(CHAIN_PREFIX)
                              and rule.target().startswith(CHAIN_PREFIX)
                              and not rule.target().startswith(prefix))]
            wanted[table.name] = keep
            table_mode |= any(rule.chain == "INPUT" and rule.identity()[1].startswith("always: ")
                              for rule in table.rules)
        hoststate.load(family, hoststate.sharing_text(wanted, current, carry=True), noflush=True)
    if removed:
        return f"fwgen: removed {len(removed)} chains of {name} and their jumps (IPv4 and IPv6)"
    if table_mode:
        raise ApplyError(f"fwgen: no chains of {name}; the host has fwgen's table-mode rules: {TABLE_MODE_HELP}")
    return f"fwgen: no chains of {name}; nothing to remove"
