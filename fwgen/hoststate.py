"""What fwgen owns on a host, read and replaced with the platform's own tools.

iptables: "fwgen's state" is every chain whose name starts with ``fwgen-`` plus every rule
of another chain whose ``-j``/``-g`` target starts with ``fwgen-`` (a jump). A state is
read from ``iptables-save -c`` and replaced by one ``iptables-restore --noflush -c`` run
per family, one COMMIT per table: it declares (flushes) and fills the wanted chains,
deletes the jumps that are not wanted and adds the missing ones, and deletes the chains
no longer wanted, so each table changes atomically and every other chain, rule and chain
policy stays as it was. Counters of fwgen's rules are carried over by rule identity
(chain, comment, target, and the how-many-th such rule).

nftables: fwgen's state is its table, ``table inet NAME``; named counters are read with
``nft -j list counters`` and written into the new definition.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from fwgen.targets.iptables import CHAIN_PREFIX, CHAINS_MODE_LINE

TIMEOUT = 60.0
BUILTIN = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
# where fwgen's files put chains, checked for stale state on every load (and mangle, with
# published_ports: enforce: see replaced_tables)
OWNED_TABLES = ("raw", "filter")
_COUNTERS = re.compile(r"\[(\d+):(\d+)\]")
_SOURCE_LINE = re.compile(r" \([^()\s]+:\d+\)")


class HostError(Exception):
    """A command on the host failed; the message is one line."""


def run(argv: Sequence[str], input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=TIMEOUT)
    except FileNotFoundError:
        raise HostError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise HostError(f"{argv[0]} did not finish within {TIMEOUT:.0f} s") from None
    if check and done.returncode != 0:
        raise HostError(f"{' '.join(argv[:3])} failed: {_first_line(done.stderr or done.stdout)}")
    return done


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:2])[:400] or "no message"


# --- iptables ---------------------------------------------------------------------------


@dataclass
class Rule:
    chain: str
    spec: str  # everything after "-A CHAIN "
    counters: str = ""  # "[p:b]" or ""

    def tokens(self) -> list[str]:
        return shlex.split(self.spec)

    def target(self) -> str:
        words = self.tokens()
        for flag in ("-j", "-g", "--jump", "--goto"):
            if flag in words[:-1]:
                return words[words.index(flag) + 1]
        return ""

    def identity(self) -> tuple[str, str, str]:
        """What names a rule across versions: its chain, its comment without the policy
        line it names (``admin-ssh (edge.yaml:15) allow``: an edit above the rule moves
        it), and its target."""
        words = self.tokens()
        comment = words[words.index("--comment") + 1] if "--comment" in words[:-1] else ""
        return self.chain, _SOURCE_LINE.sub("", comment, count=1), self.target()

    def key(self) -> tuple[str, tuple[str, ...]]:
        return self.chain, tuple(self.tokens())


@dataclass
class Table:
    name: str
    chains: dict[str, str] = field(default_factory=dict)  # chain -> policy ("-" for user chains)
    rules: list[Rule] = field(default_factory=list)
    saved: bool = False  # a saved state: its jumps go back where they were

    def owned_chains(self) -> list[str]:
        return [chain for chain in self.chains if chain.startswith(CHAIN_PREFIX)]

    def owned_rules(self) -> list[Rule]:
        return [rule for rule in self.rules if rule.chain.startswith(CHAIN_PREFIX)]

    def jumps(self) -> list[tuple[int, Rule]]:
        """fwgen's jumps from other chains, each with its 1-based position in its chain."""
        found: list[tuple[int, Rule]] = []
        position: dict[str, int] = {}
        for rule in self.rules:
            position[rule.chain] = position.get(rule.chain, 0) + 1
            if not rule.chain.startswith(CHAIN_PREFIX) and rule.target().startswith(CHAIN_PREFIX):
                found.append((position[rule.chain], rule))
        return found

    def is_empty(self) -> bool:
        """Nothing but its built-in chains, accepting, without rules (a table nobody uses)."""
        return not self.rules and all(
            policy == "ACCEPT" for chain, policy in self.chains.items() if chain in BUILTIN.get(self.name, ())
        ) and set(self.chains) <= set(BUILTIN.get(self.name, ()))


def parse(text: str) -> dict[str, Table]:
    """iptables-save (with or without ``-c``) or iptables-restore text, by table."""
    tables: dict[str, Table] = {}
    table: Table | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = tables.setdefault(line[1:], Table(line[1:]))
        elif line == "COMMIT":
            table = None
        elif table is None:
            raise HostError(f"iptables text outside a table: {shlex.quote(line[:80])}")
        elif line.startswith(":"):
            name, policy = (line[1:].split() + ["-"])[:2]
            table.chains[name] = policy
        else:
            counters = ""
            match = _COUNTERS.match(line)
            if match:
                counters, line = match.group(0), line[match.end():].lstrip()
            words = line.split(None, 2)
            if len(words) < 2 or words[0] not in ("-A", "-I"):
                raise HostError(f"unexpected iptables line: {shlex.quote(line[:80])}")
            table.rules.append(Rule(words[1], words[2] if len(words) > 2 else "", counters))
    return tables


def is_chains_mode(text: str) -> bool:
    return any(line.strip() == f"# {CHAINS_MODE_LINE}" for line in text.splitlines()[:12])


@dataclass
class Family:
    number: int
    save: str
    restore: str
    nft_family: str  # the nf_tables family iptables-nft keeps this family's tables in


FAMILIES = {4: Family(4, "iptables-save", "iptables-restore", "ip"),
            6: Family(6, "ip6tables-save", "ip6tables-restore", "ip6")}


def save(family: Family) -> str:
    """Every table of the family that exists, with counters."""
    return run([family.save, "-c"]).stdout


def check_file(family: Family, text: str, sharing: bool) -> None:
    argv = [family.restore, "--test"] + (["--noflush"] if sharing else [])
    run(argv, input=text)


def _counted(rules: list[Rule], previous: list[Rule]) -> list[Rule]:
    """``rules`` with the counters of the previous rule of the same identity."""
    seen: dict[tuple[str, str, str], list[Rule]] = {}
    for rule in previous:
        seen.setdefault(rule.identity(), []).append(rule)
    taken: dict[tuple[str, str, str], int] = {}
    out = []
    for rule in rules:
        identity = rule.identity()
        index = taken.get(identity, 0)
        taken[identity] = index + 1
        old = seen.get(identity, [])
        counters = old[index].counters if identity[1] and index < len(old) and old[index].counters else "[0:0]"
        out.append(Rule(rule.chain, rule.spec, counters))
    return out


def table_mode_text(new: dict[str, Table], current: dict[str, Table]) -> str:
    """A table-mode file with the counters of the rules it replaces."""
    out = []
    for table in new.values():
        out.append(f"*{table.name}")
        out += [f":{chain} {policy} [0:0]" for chain, policy in table.chains.items()]
        previous = current[table.name].rules if table.name in current else []
        out += [f"{rule.counters} -A {rule.chain} {rule.spec}".rstrip() for rule in _counted(table.rules, previous)]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def replaced_tables(new: dict[str, Table], current: dict[str, Table]) -> list[str]:
    """The tables a table-mode load replaces: raw and filter, every table the file holds
    (mangle, with published_ports: enforce), and every other table holding fwgen's state
    (an older file's mangle chains, which the new file must not leave behind)."""
    names = list(OWNED_TABLES) + [name for name in new if name not in OWNED_TABLES]
    return names + [name for name, table in current.items()
                    if name not in names and (table.owned_chains() or table.jumps())]


def stale_text(new: dict[str, Table], current: dict[str, Table]) -> str:
    """The --noflush text that takes fwgen's state out of the tables a table-mode file
    does not hold (see ``replaced_tables``); "" when there is none."""
    stale = {name: current[name] for name in replaced_tables(new, current) if name not in new and name in current}
    return sharing_text({}, {name: table for name, table in stale.items() if name not in OWNED_TABLES})


def sharing_text(wanted: dict[str, Table], current: dict[str, Table], carry: bool = True) -> str:
    """The iptables-restore --noflush -c text that turns fwgen's state in ``current`` into
    the one ``wanted`` holds (chains and rules starting ``fwgen-``, and jumps to them; a
    wanted jump is ``-A`` when its position is unknown), leaving everything else alone."""
    out = []
    for name in sorted(set(wanted) | set(current) | set(OWNED_TABLES), key=lambda n: (n not in OWNED_TABLES, n)):
        want = wanted.get(name, Table(name))
        have = current.get(name, Table(name))
        if not want.owned_chains() and not have.owned_chains() and not have.jumps() and not want.jumps():
            continue
        lines = [f"*{name}"]
        stale = [chain for chain in have.owned_chains() if chain not in want.chains]
        lines += [f":{chain} - [0:0]" for chain in want.owned_chains() + stale]
        rules = _counted(want.owned_rules(), have.owned_rules()) if carry else want.owned_rules()
        lines += [f"{rule.counters} -A {rule.chain} {rule.spec}".lstrip() for rule in rules]
        wanted_jumps = _want_jumps(want)
        kept: set[tuple[str, tuple[str, ...]]] = set()
        length = {chain: sum(1 for rule in have.rules if rule.chain == chain) for chain in have.chains}
        keys = {rule.key() for _, rule in wanted_jumps}
        for _, rule in have.jumps():
            if rule.key() in keys and rule.key() not in kept:
                kept.add(rule.key())
                continue
            lines.append(f"-D {rule.chain} {rule.spec}")
            length[rule.chain] -= 1
        for position, rule in wanted_jumps:
            if rule.key() in kept:
                continue
            kept.add(rule.key())
            if position is None or position > length.get(rule.chain, 0):
                lines.append(f"-A {rule.chain} {rule.spec}")
            else:
                lines.append(f"-I {rule.chain} {position} {rule.spec}")
            length[rule.chain] = length.get(rule.chain, 0) + 1
        lines += [f"-X {chain}" for chain in stale]
        lines.append("COMMIT")
        out += lines
    return "\n".join(out) + "\n" if out else ""


def _want_jumps(table: Table) -> list[tuple[int | None, Rule]]:
    return [(position if table.saved else None, rule) for position, rule in table.jumps()]


def saved_state(text: str) -> dict[str, Table]:
    """A saved ``iptables-save -c``, as the state to go back to: its jumps keep their places."""
    tables = parse(text)
    for table in tables.values():
        table.saved = True
    return tables


def load(family: Family, text: str, noflush: bool) -> None:
    if text:
        run([family.restore, "-c"] + (["--noflush"] if noflush else []), input=text)


def drop_new_tables(family: Family, before: dict[str, Table]) -> None:
    """Delete the tables that did not exist before and are now empty (loading an empty
    ``*raw`` creates the table; iptables-save then lists it). iptables-nft keeps them as
    nf_tables tables of the same name."""
    for name, table in parse(save(family)).items():
        if name not in before and table.is_empty():
            run(["nft", "delete", "table", family.nft_family, name], check=False)


# --- nftables ---------------------------------------------------------------------------


def nft_table(name: str) -> str | None:
    done = run(["nft", "list", "table", "inet", name], check=False)
    return done.stdout if done.returncode == 0 else None


def nft_counters(name: str) -> dict[str, tuple[int, int]]:
    done = run(["nft", "-j", "list", "counters", "table", "inet", name], check=False)
    if done.returncode != 0:
        return {}
    found = {}
    for item in json.loads(done.stdout).get("nftables", []):
        counter = item.get("counter")
        if counter and counter.get("table") == name:
            found[counter["name"]] = (int(counter.get("packets", 0)), int(counter.get("bytes", 0)))
    return found


def with_nft_counters(text: str, counters: dict[str, tuple[int, int]]) -> str:
    """The file's named counter declarations (``counter NAME {`` then ``}``) holding the
    values the host's counters of those names have."""
    lines = text.split("\n")
    out = []
    for index, line in enumerate(lines):
        out.append(line)
        match = re.fullmatch(r"(\s*)counter (\S+) \{", line)
        if match and match.group(2) in counters and index + 1 < len(lines) and lines[index + 1].strip() == "}":
            packets, octets = counters[match.group(2)]
            out.append(f"{match.group(1)}\tpackets {packets} bytes {octets}")
    return "\n".join(out)


def nft_replace_with(name: str, saved: str | None) -> None:
    """Put back ``saved`` (``nft list table`` text) as table inet NAME, or no table."""
    if saved is None:
        if nft_table(name) is not None:
            run(["nft", "delete", "table", "inet", name])
        return
    run(["nft", "-f", "-"], input=f"table inet {name}\ndelete table inet {name}\n{saved}")
