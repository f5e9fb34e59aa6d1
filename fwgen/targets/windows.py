"""Windows Firewall target: a ``.cmd`` script of ``netsh advfirewall`` commands.

Windows Firewall has no rule order: a matching block rule beats every allow rule, and
an allow rule beats the profile default. A first-match policy therefore cannot be
translated rule by rule ("allow 1261 from 10.0.0.0/8, then deny 1261" would block
10.0.0.0/8 too). Instead, for every direction x protocol x address family, the port
space and the address space are cut at every rule edge; each resulting cell gets its
first-match verdict; then block rules cover exactly the cells a deny rule decided and
allow rules exactly the cells an allow or monitor rule decided. Cells left to the
default get no rule at all: the profile default (``firewallpolicy``) handles them.
"""

from __future__ import annotations

import os

import ipaddress
import re
from dataclasses import dataclass

from fwgen import render as _render
from fwgen.ir import (
    PORT_MAX,
    PORT_MIN,
    Action,
    Direction,
    PortRange,
    Protocol,
    PROTOCOLS,
    Rule,
    Ruleset,
    merge_ranges,
)
from fwgen.sanitize import windows_text
from fwgen.targets import TargetOutput

NAME = "windows"
TEMPLATE = "windows/script.cmd.j2"

#: cmd.exe refuses command lines of 8,191 characters or more; stay well below.
CMD_LINE_LIMIT = 8191
LINE_BUDGET = 8000
#: Longest description written (``windows_text`` limit); chunk sizing assumes it.
DESCRIPTION_LIMIT = 200
_DESCRIPTION_BASE_LIMIT = 176  # room for " part NNN/NNN"

_POLICY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,19}\Z")
_FAMILY_MAX = {4: (1 << 32) - 1, 6: (1 << 128) - 1}
_EXIT_ON_ERROR = " || exit /b 1"

BLOCK = "block"
ALLOW = "allow"
_VERDICT_ORDER = {BLOCK: 0, ALLOW: 1}


@dataclass(frozen=True)
class WinRule:
    """One ``netsh advfirewall firewall add rule`` line."""

    direction: Direction
    action: str  # 'allow' | 'block'
    protocol: Protocol
    ports: tuple[PortRange, ...] | None  # None = any port
    remote: tuple[str, ...] | None  # netsh remoteip tokens; None = any
    description: str


def rule_name(ruleset: Ruleset) -> str:
    """The one netsh rule name every rule of this policy shares."""
    if not _POLICY_NAME.match(ruleset.name):
        raise ValueError(f"policy name {ruleset.name!r} is not valid for a Windows rule name")
    return f"fwgen-{ruleset.name}"


# ---------------------------------------------------------------------------------------
# Interval helpers (inclusive integer intervals, sorted and disjoint)

Interval = tuple[int, int]


def _merge(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _subtract(a: list[Interval], b: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    j = 0
    for lo, hi in a:
        cur = lo
        while j < len(b) and b[j][1] < cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] <= hi:
            if b[k][0] > cur:
                out.append((cur, b[k][0] - 1))
            cur = max(cur, b[k][1] + 1)
            if cur > hi:
                break
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return out


def _rule_addresses(rule: Rule, family: int) -> list[Interval]:
    remote = rule.remote(family)
    if remote is None:
        return [(0, _FAMILY_MAX[family])]
    return _merge([(int(n.network_address), int(n.broadcast_address)) for n in remote])


def _rule_ports(rule: Rule, protocol: Protocol) -> list[Interval]:
    return [(r.lo, r.hi) for r in merge_ranges(rule.port_ranges(protocol))]


def _verdict(rule: Rule) -> str:
    return ALLOW if rule.accepts else BLOCK


# ---------------------------------------------------------------------------------------
# Compilation: first-match cells -> grouped allow/block rule sets


@dataclass(frozen=True)
class _Group:
    """A ports x addresses product, all of it decided with one verdict."""

    verdict: str
    ports: tuple[Interval, ...]
    v4: tuple[Interval, ...]
    v6: tuple[Interval, ...]
    deciders: frozenset[int]  # indexes into ruleset.rules

    def addresses(self, family: int) -> tuple[Interval, ...]:
        return self.v4 if family == 4 else self.v6


@dataclass
class _Region:
    """The address cells of one family whose covering rules are the same: they share a
    first-match port map. ``won`` maps verdict -> (ports, {rule id: ports it decided})."""

    family: int
    cells: list[Interval]
    won: dict[str, tuple[list[Interval], dict[int, list[Interval]]]]


def _paint_ports(
    rule_ids: tuple[int, ...], rules: tuple[Rule, ...], ports: dict[int, list[Interval]]
) -> dict[str, tuple[list[Interval], dict[int, list[Interval]]]]:
    """First match over the port space for one address cell."""
    result: dict[str, tuple[list[Interval], dict[int, list[Interval]]]] = {}
    unassigned: list[Interval] = [(PORT_MIN, PORT_MAX)]
    for rid in rule_ids:
        if not unassigned:
            break
        rule_ports = ports[rid]
        won = _intersect(unassigned, rule_ports)
        if won:
            got, deciders = result.setdefault(_verdict(rules[rid]), ([], {}))
            got.extend(won)
            deciders[rid] = won
            unassigned = _subtract(unassigned, rule_ports)
    return {v: (_merge(p), d) for v, (p, d) in result.items()}


def _address_cells(
    rule_ids: list[int], addresses: dict[int, list[Interval]], family: int
) -> list[tuple[Interval, tuple[int, ...]]]:
    """Cut the address space at every rule edge: [(cell, ids of rules covering it)]."""
    events: dict[int, list[tuple[int, int]]] = {0: []}
    top = _FAMILY_MAX[family]
    for rid in rule_ids:
        for lo, hi in addresses[rid]:
            events.setdefault(lo, []).append((rid, 1))
            if hi < top:
                events.setdefault(hi + 1, []).append((rid, -1))
    cuts = sorted(events)
    active: dict[int, int] = {}
    cells: list[tuple[Interval, tuple[int, ...]]] = []
    for i, pos in enumerate(cuts):
        for rid, delta in events[pos]:
            count = active.get(rid, 0) + delta
            if count:
                active[rid] = count
            else:
                active.pop(rid, None)
        end = cuts[i + 1] - 1 if i + 1 < len(cuts) else top
        cells.append(((pos, end), tuple(sorted(active))))
    return cells


def _regions(ruleset: Ruleset, direction: Direction, protocol: Protocol) -> list[_Region]:
    """Every address cell of both families with its first-match port map."""
    rules = ruleset.rules
    ports = {i: _rule_ports(r, protocol) for i, r in enumerate(rules)}
    regions: list[_Region] = []
    for family in (4, 6):
        ids = [
            i
            for i, r in enumerate(rules)
            if r.direction is direction and r.applies_to(family) and ports[i]
        ]
        addresses = {i: _rule_addresses(rules[i], family) for i in ids}
        by_key: dict[tuple[int, ...], _Region] = {}
        for cell, active in _address_cells(ids, addresses, family):
            if not active:
                continue
            region = by_key.get(active)
            if region is None:
                region = by_key[active] = _Region(family, [], _paint_ports(active, rules, ports))
            region.cells.append(cell)
        regions += [r for r in by_key.values() if r.won]
    return regions


def _deciders(regions: list[_Region], verdict: str, ports: list[Interval]) -> frozenset[int]:
    return frozenset(
        rid
        for region in regions
        for rid, won in region.won[verdict][1].items()
        if _intersect(won, ports)
    )


def _group_by_ports(regions: list[_Region], verdict: str) -> list[_Group]:
    """Address cells with the same port set share a rule; then rules over the same
    address set merge their ports."""
    by_ports: dict[tuple[Interval, ...], list[_Region]] = {}
    for region in regions:
        if verdict in region.won:
            by_ports.setdefault(tuple(region.won[verdict][0]), []).append(region)
    by_addresses: dict[tuple[tuple[Interval, ...], tuple[Interval, ...]], list[_Region]] = {}
    for members in by_ports.values():
        v4 = tuple(_merge([c for r in members if r.family == 4 for c in r.cells]))
        v6 = tuple(_merge([c for r in members if r.family == 6 for c in r.cells]))
        by_addresses.setdefault((v4, v6), []).extend(members)
    groups = []
    for (v4, v6), members in by_addresses.items():
        ports = _merge([p for r in members for p in r.won[verdict][0]])
        groups.append(_Group(verdict, tuple(ports), v4, v6, _deciders(members, verdict, ports)))
    return groups


def _group_by_addresses(regions: list[_Region], verdict: str) -> list[_Group]:
    """Ports decided the same way over the same address set share a rule."""
    members = [r for r in regions if verdict in r.won]
    events: dict[int, list[tuple[int, int]]] = {PORT_MIN: []}
    for i, region in enumerate(members):
        for lo, hi in region.won[verdict][0]:
            events.setdefault(lo, []).append((i, 1))
            if hi < PORT_MAX:
                events.setdefault(hi + 1, []).append((i, -1))
    cuts = sorted(events)
    active: set[int] = set()
    by_regions: dict[tuple[int, ...], list[Interval]] = {}
    for k, pos in enumerate(cuts):
        for i, delta in events[pos]:
            if delta > 0:
                active.add(i)
            else:
                active.discard(i)
        if active:
            end = cuts[k + 1] - 1 if k + 1 < len(cuts) else PORT_MAX
            by_regions.setdefault(tuple(sorted(active)), []).append((pos, end))
    groups = []
    for ids, ports in by_regions.items():
        chosen = [members[i] for i in ids]
        v4 = tuple(_merge([c for r in chosen if r.family == 4 for c in r.cells]))
        v6 = tuple(_merge([c for r in chosen if r.family == 6 for c in r.cells]))
        merged = _merge(ports)
        groups.append(_Group(verdict, tuple(merged), v4, v6, _deciders(chosen, verdict, merged)))
    return groups


def _sort_groups(groups: list[_Group]) -> list[_Group]:
    return sorted(groups, key=lambda g: (_VERDICT_ORDER[g.verdict], g.ports, g.v4, g.v6))


# ---------------------------------------------------------------------------------------
# Formatting


def _address_token(family: int, lo: int, hi: int) -> str:
    cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    if lo == hi:
        return str(cls(lo))
    size = hi - lo + 1
    top = _FAMILY_MAX[family]
    if size & (size - 1) == 0 and lo % size == 0 and size <= top:  # an exact prefix, not /0
        bits = 32 if family == 4 else 128
        return f"{cls(lo)}/{bits - size.bit_length() + 1}"
    return f"{cls(lo)}-{cls(hi)}"


def _remote_tokens(group: _Group) -> tuple[str, ...] | None:
    if group.v4 == ((0, _FAMILY_MAX[4]),) and group.v6 == ((0, _FAMILY_MAX[6]),):
        return None
    return tuple(
        _address_token(f, lo, hi) for f in (4, 6) for lo, hi in group.addresses(f)
    )


def _mention(rule: Rule) -> str:
    # basename only: output must not depend on the path fwgen was given
    return f"{rule.name} ({os.path.basename(rule.location.path)}:{rule.location.line}) {rule.action.value}"


def _description(policy: str, rules: list[Rule]) -> str:
    """``fwgen NAME: rule admin-ssh (policy.yaml:12) allow`` naming the deciding rules."""
    if len(rules) == 1:
        rule = rules[0]
        text = f"fwgen {policy}: rule {_mention(rule)}"
        if rule.comment:
            text += f": {rule.comment}"
        return windows_text(text, _DESCRIPTION_BASE_LIMIT)
    head = f"fwgen {policy}: rules "
    mentions = [_mention(rule) for rule in rules]
    text = windows_text(head + mentions[0], _DESCRIPTION_BASE_LIMIT)
    for k in range(2, len(mentions) + 1):
        rest = len(mentions) - k
        candidate = head + ", ".join(mentions[:k]) + (f" +{rest} more" if rest else "")
        if len(windows_text(candidate, 10_000)) > _DESCRIPTION_BASE_LIMIT:
            break
        text = windows_text(candidate, 10_000)
    else:
        return text
    if k == 2:  # not even two fit: name the first and count the rest
        return windows_text(head + mentions[0], _DESCRIPTION_BASE_LIMIT - 12) + (
            f" +{len(mentions) - 1} more"
        )
    return text  # the longest candidate that fit, with its "+N more"


def _port_option(direction: Direction) -> str:
    return "localport" if direction is Direction.IN else "remoteport"


def add_rule_command(name: str, rule: WinRule) -> str:
    """The netsh command for one rule (without the ``|| exit /b 1`` guard)."""
    parts = [
        f'netsh advfirewall firewall add rule name="{name}"',
        f"dir={rule.direction.value}",
        f"action={rule.action}",
        f"protocol={rule.protocol.value}",
    ]
    if rule.ports is not None:
        parts.append(f"{_port_option(rule.direction)}={','.join(str(p) for p in rule.ports)}")
    if rule.remote is not None:
        parts.append(f"remoteip={','.join(rule.remote)}")
    parts += ["profile=any", "enable=yes", f'description="{rule.description}"']
    return " ".join(parts)


def _chunk(tokens: list[str], budget: int) -> list[list[str]]:
    """Greedy split of a comma-joined list into pieces of at most ``budget`` characters."""
    chunks: list[list[str]] = [[]]
    used = 0
    for token in tokens:
        extra = len(token) + (1 if chunks[-1] else 0)
        if chunks[-1] and used + extra > budget:
            chunks.append([])
            extra = len(token)
            used = 0
        chunks[-1].append(token)
        used += extra
    return chunks


def _split(
    ports: list[str] | None, remote: list[str] | None, avail: int
) -> list[tuple[list[str] | None, list[str] | None]]:
    """Cut a (ports x addresses) rule into product pieces that each fit ``avail``
    characters of list text, with as few pieces as a simple search finds."""
    p_len = len(",".join(ports)) if ports is not None else 0
    a_len = len(",".join(remote)) if remote is not None else 0
    if p_len + a_len <= avail:
        return [(ports, remote)]
    if ports is None or remote is None:
        only = ports if ports is not None else remote
        assert only is not None
        pieces = _chunk(only, avail)
        return [(c, remote) if ports is not None else (ports, c) for c in pieces]
    budgets = {avail * k // 16 for k in range(1, 16)}
    if p_len < avail:
        budgets.add(p_len)
    if a_len < avail:
        budgets.add(avail - a_len)
    best: tuple[int, int, list[list[str]], list[list[str]]] | None = None
    for b in sorted(budgets):
        pc = _chunk(ports, b)
        ac = _chunk(remote, avail - b)
        cost = len(pc) * len(ac)
        if best is None or cost < best[0]:
            best = (cost, b, pc, ac)
    assert best is not None
    return [(p, a) for p in best[2] for a in best[3]]


def _emit(
    ruleset: Ruleset, direction: Direction, protocol: Protocol, group: _Group
) -> list[WinRule]:
    """The WinRules of one group: one, or several chunks when a line would be too long."""
    name = rule_name(ruleset)
    port_objects = {str(r): r for r in (PortRange(lo, hi) for lo, hi in group.ports)}
    port_tokens = None if group.ports == ((PORT_MIN, PORT_MAX),) else list(port_objects)
    remote = _remote_tokens(group)
    remote_tokens = list(remote) if remote is not None else None
    description = _description(ruleset.name, [ruleset.rules[i] for i in sorted(group.deciders)])
    sizing = WinRule(
        direction,
        group.verdict,
        protocol,
        () if port_tokens is not None else None,
        () if remote_tokens is not None else None,
        "x" * DESCRIPTION_LIMIT,
    )
    fixed = len(add_rule_command(name, sizing)) + len(_EXIT_ON_ERROR)
    pieces = _split(port_tokens, remote_tokens, LINE_BUDGET - fixed)
    out = []
    for n, (p, a) in enumerate(pieces, 1):
        text = description if len(pieces) == 1 else f"{description} part {n}/{len(pieces)}"
        out.append(
            WinRule(
                direction=direction,
                action=group.verdict,
                protocol=protocol,
                ports=tuple(port_objects[t] for t in p) if p is not None else None,
                remote=tuple(a) if a is not None else None,
                description=windows_text(text, DESCRIPTION_LIMIT),
            )
        )
    return out


def lower(ruleset: Ruleset) -> list[WinRule]:
    """The exact, order-free Windows rule set of a first-match policy.

    Per direction x protocol x verdict, two exact groupings of the first-match cells are
    tried (cells with the same port set share a rule; ports with the same address set
    share a rule) and the one giving fewer netsh rules is kept.
    """
    rule_name(ruleset)  # validates the policy name
    out: list[WinRule] = []
    for direction in (Direction.IN, Direction.OUT):
        for protocol in PROTOCOLS:
            regions = _regions(ruleset, direction, protocol)
            for verdict in (BLOCK, ALLOW):
                best: list[WinRule] | None = None
                for grouping in (_group_by_addresses, _group_by_ports):
                    candidate = [
                        w
                        for g in _sort_groups(grouping(regions, verdict))
                        for w in _emit(ruleset, direction, protocol, g)
                    ]
                    if best is None or len(candidate) < len(best):
                        best = candidate
                out += best or []
    return out


# ---------------------------------------------------------------------------------------
# Script


def _degradations(ruleset: Ruleset) -> tuple[list[str], list[str]]:
    """(warnings, netsh set commands) for what Windows Firewall cannot express per rule."""
    warnings: list[str] = []
    commands: list[str] = []
    rules = ruleset.rules
    if ruleset.defaults.reject:
        warnings.append(
            "windows: reject is not supported by Windows Firewall; deny rules and deny "
            "defaults drop silently"
        )
    monitors = [r for r in rules if r.action is Action.MONITOR]
    logged_allows = [r for r in rules if r.action is Action.ALLOW and r.log]
    logged_denies = [r for r in rules if r.action is Action.DENY and r.log]
    if monitors:
        m = ruleset.monitor
        warnings.append(
            f"windows: {len(monitors)} monitor rule(s) become allow rules; Windows Firewall "
            f"has no per-rule logging, rate limit ({m.rate}/{m.per}) or counters, so logging "
            "of allowed connections is enabled for all profiles"
        )
    if logged_allows:
        warnings.append(
            f"windows: log on {len(logged_allows)} allow rule(s) becomes logging of all "
            "allowed connections for all profiles (no per-rule logging)"
        )
    if logged_denies:
        warnings.append(
            f"windows: log on {len(logged_denies)} deny rule(s) becomes logging of all "
            "dropped connections for all profiles (no per-rule logging)"
        )
    if monitors or logged_allows:
        commands.append("netsh advfirewall set allprofiles logging allowedconnections enable")
    if logged_denies:
        commands.append("netsh advfirewall set allprofiles logging droppedconnections enable")
    return warnings, commands


def _sentences(text: str) -> str:
    return ". ".join(part[:1].upper() + part[1:] for part in text.split("; ")) + "."


def render(ruleset: Ruleset) -> TargetOutput:
    name = rule_name(ruleset)
    rules = lower(ruleset)
    warnings, logging_commands = _degradations(ruleset)
    d = ruleset.defaults
    inbound = "blockinbound" if d.inbound is Action.DENY else "allowinbound"
    outbound = "blockoutbound" if d.outbound is Action.DENY else "allowoutbound"

    counts = {(v, dr): 0 for v in (BLOCK, ALLOW) for dr in Direction}
    for r in rules:
        counts[(r.action, r.direction)] += 1
    header = [*_render.header_lines(ruleset, NAME)]
    if ruleset.description:
        header.append(f"description: {ruleset.description}")
    header += [
        "Windows Firewall has no rule order (block beats allow, allow beats the profile "
        "default). This first-match policy was compiled into block rules covering exactly "
        "what it denies and allow rules covering exactly what it allows. The rest is left "
        "to the profile default.",
        f"rules: {len(rules)} named {name} (inbound {counts[(BLOCK, Direction.IN)]} block "
        f"{counts[(ALLOW, Direction.IN)]} allow, outbound {counts[(BLOCK, Direction.OUT)]} "
        f"block {counts[(ALLOW, Direction.OUT)]} allow). Defaults: {inbound},{outbound}.",
        "Windows core-networking allow rules still apply to traffic the policy leaves to "
        "the default.",
    ]
    header += [_sentences(w.removeprefix("windows: ")) for w in warnings]
    if logging_commands:
        header.append(
            "Profile logging is only ever enabled by this script, never disabled. The log "
            "(pfirewall.log) does not name the rule."
        )

    commands = [add_rule_command(name, r) for r in rules]
    commands.append(f"netsh advfirewall set allprofiles firewallpolicy {inbound},{outbound}")
    # The policy means nothing while the firewall is off.
    commands.append("netsh advfirewall set allprofiles state on")
    commands += logging_commands
    text = _render.render(
        TEMPLATE,
        header=[windows_text(line, 1000) for line in header],
        delete_command=f'netsh advfirewall firewall delete rule name="{name}"',
        commands=commands,
    )
    if "\r" in text:
        raise AssertionError("carriage return in rendered Windows script")
    text = text.replace("\n", "\r\n")
    for line in text.split("\r\n"):
        if len(line) >= CMD_LINE_LIMIT:
            raise AssertionError(f"cmd.exe line of {len(line)} characters")
    return TargetOutput(files={f"windows/{ruleset.name}.cmd": text}, warnings=warnings)
