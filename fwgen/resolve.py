"""Resolve a validated policy into the IR: port entries and service names become
(protocol, port ranges); addresses split by family.

A port entry is read from its source text, never from what YAML made of it:
``20:21`` (YAML 1.1: 1221), ``010`` (8) and ``0x50`` (80) are errors here.
"""

from __future__ import annotations

import difflib
import ipaddress
import itertools
import os
import re
from collections.abc import Iterable
from typing import NamedTuple, TypeVar

from fwgen import icmp, ir, protocols, registry_select
from fwgen.errors import PolicyError, shorten
from fwgen.intervals import merge_spans
from fwgen.ir import Action, Direction, PortRange, Protocol, Span
from fwgen.policy import PROFILES, Policy, PolicyRule, Text, list_hint, range_bounds
from fwgen.registry import Registry

_DECIMAL = re.compile(r"[0-9]+")
_RANGE = re.compile(r"([0-9]+)-([0-9]+)")
_SEXAGESIMAL = re.compile(r"[0-9]+(?::[0-9]+)+")
_HEX_OR_OCTAL = re.compile(r"0[xXoO][0-9a-fA-F_]+")
_NUMBERISH = re.compile(r"[-+0-9._:]+")

_BOTH = (Protocol.TCP, Protocol.UDP)
# dict lookups are far cheaper than Enum(value)
_PROTOCOL = {p.value: p for p in Protocol}
_ACTION = {a.value: a for a in Action}
_DIRECTION = {d.value: d for d in Direction}

Pair = tuple[Protocol, PortRange]
_N = TypeVar("_N", ipaddress.IPv4Network, ipaddress.IPv6Network)


def split_suffix(text: str) -> tuple[str, Protocol | None]:
    """``mpshrsv/udp`` -> ("mpshrsv", UDP); ``cl/1`` stays whole: registry names may hold '/'."""
    head, slash, tail = text.rpartition("/")
    if slash and tail in ("tcp", "udp") and head:
        return head, Protocol(tail)
    return text, None


def _port_number(text: str, entry: Text) -> int:
    if len(text) > 1 and text.startswith("0"):
        raise PolicyError(
            entry.location,
            f"port '{entry.value}' has a leading zero (YAML 1.1 reads it as octal); write {int(text)}",
        )
    value = int(text)
    if value > ir.PORT_MAX:
        raise PolicyError(entry.location, f"port {value} is out of range 0-65535")
    return value


def parse_number_or_range(body: str, entry: Text) -> PortRange | None:
    """A decimal port or ``N-M`` range, or None when the text is not numeric at all
    (then it is a service name). Numeric-looking text that is neither is an error."""
    if body[:1].isalpha():  # none of the numeric forms below starts with a letter
        return None
    if _DECIMAL.fullmatch(body):
        port = _port_number(body, entry)
        return PortRange(port, port)
    m = _RANGE.fullmatch(body)
    if m:
        lo, hi = _port_number(m.group(1), entry), _port_number(m.group(2), entry)
        if lo > hi:
            raise PolicyError(entry.location, f"port range {lo}-{hi} is reversed: write {hi}-{lo}")
        return PortRange(lo, hi)
    if _SEXAGESIMAL.fullmatch(body):
        value = 0
        for part in body.split(":"):
            value = value * 60 + int(part)
        raise PolicyError(
            entry.location,
            f"'{entry.value}' is not a port: YAML 1.1 reads it as the number {value}; "
            f"write a range as \"N-M\" in quotes",
        )
    if _HEX_OR_OCTAL.fullmatch(body):
        raise PolicyError(
            entry.location, f"'{entry.value}' is not a decimal port (YAML 1.1 reads it as {int(body, 0)})"
        )
    if body.startswith("-") and body[1:].isdigit():
        raise PolicyError(entry.location, f"port {body} is out of range 0-65535")
    if _NUMBERISH.fullmatch(body):
        raise PolicyError(entry.location, f"'{entry.value}' is not a port number, \"N-M\" range or service name")
    return None


def _service_pairs(
    registry: Registry, name: str, protocols: tuple[Protocol, ...], entry: Text, groups: tuple[str, ...] = ()
) -> list[Pair]:
    pairs = registry.pairs(name)
    if pairs is None:
        suggestions = difflib.get_close_matches(name, groups, n=1, cutoff=0.75) or registry.suggest(name, limit=1)
        hint = f" (did you mean '{suggestions[0]}'?)" if suggestions else ""
        raise PolicyError(entry.location, f"unknown service '{shorten(name)}'{hint}")
    if not pairs:
        raise PolicyError(
            entry.location,
            f"service '{name}' has no tcp or udp port in the IANA registry; write the port number instead",
        )
    chosen = [(_PROTOCOL[proto], PortRange(lo, hi)) for proto, lo, hi in pairs if _PROTOCOL[proto] in protocols]
    if not chosen:
        asked = "/".join(p.value for p in protocols)
        registered = ", ".join(f"{PortRange(lo, hi)}/{proto}" for proto, lo, hi in pairs)
        numbers = ", ".join(sorted({f"{PortRange(lo, hi)}/{asked}" for _, lo, hi in pairs}))
        raise PolicyError(
            entry.location,
            f"service '{name}' is not registered for {asked} (it is {registered}); "
            f"to match the number anyway, write {numbers}",
        )
    return chosen


class ProtocolChoice(NamedTuple):
    """What a rule's ``protocol`` means: ``kind`` is "ports" (tcp and udp, or one of
    them, selected by ports), "icmp" (ICMP of one family, by type), "number" (one other
    IP protocol, every packet) or "all" (every protocol)."""

    kind: str
    ports: tuple[Protocol, ...] = ()  # "ports": tcp and/or udp
    number: int | None = None  # "icmp": 1 or 58; "number": the protocol
    family: int | None = None  # "icmp": 4 or 6


_WORDS = {
    "tcp": ProtocolChoice("ports", (Protocol.TCP,)), "udp": ProtocolChoice("ports", (Protocol.UDP,)),
    "any": ProtocolChoice("ports", _BOTH), "all": ProtocolChoice("all"),
    "icmp": ProtocolChoice("icmp", number=ir.ICMP_NUMBER, family=4),
    "icmpv6": ProtocolChoice("icmp", number=ir.ICMPV6_NUMBER, family=6),
}
_BY_NUMBER = {ir.TCP_NUMBER: "tcp", ir.UDP_NUMBER: "udp", ir.ICMP_NUMBER: "icmp", ir.ICMPV6_NUMBER: "icmpv6"}


def resolve_protocol(rule: PolicyRule) -> ProtocolChoice:
    """``protocol`` as written (default: tcp and udp) -> what it selects. IANA keywords
    (case-insensitive) and numbers naming tcp, udp, ICMP or ICMPv6 mean those."""
    if rule.protocol is None:
        return _WORDS["any"]
    text = rule.protocol.value
    if text in _WORDS:
        return _WORDS[text]
    if text.isdigit():
        number = int(text)
    else:
        registry = protocols.bundled()
        found = registry.lookup(text)
        if found is None:
            suggestions = registry.suggest(text, limit=1)
            hint = f" (did you mean '{suggestions[0]}'?)" if suggestions else ""
            raise PolicyError(rule.protocol.location, f"unknown protocol '{shorten(text)}'{hint}")
        number = found
    if number == 0:
        raise PolicyError(
            rule.protocol.location,
            f"protocol '{shorten(text)}' is 0, HOPOPT: IPv6's hop-by-hop options header, which no packet has as its "
            "protocol (and iptables reads -p 0 as every protocol); a rule cannot match it",
        )
    if number in _BY_NUMBER:
        return _WORDS[_BY_NUMBER[number]]
    return ProtocolChoice("number", number=number)


def resolve_ports(
    rule: PolicyRule, registry: Registry, choice: ProtocolChoice | None = None, groups: tuple[str, ...] = ()
) -> dict[Protocol, tuple[PortRange, ...]]:
    """The rule's tcp and udp ports per protocol, merged; protocols it does not cover are
    absent (a rule for another protocol covers neither; ``protocol: all`` every port).
    ``choice``: the rule's ``resolve_protocol``, when the caller has it; ``groups``: the
    policy's service group names (an unknown name may be a misspelt one of them)."""
    choice = choice or resolve_protocol(rule)
    if choice.kind != "ports":
        written = rule.protocol.value if rule.protocol else ""
        if rule.ports is not None:
            raise PolicyError(
                rule.ports[0].location, f"ports apply to tcp and udp only; this rule's protocol is {written}"
            )
        if rule.select is not None:
            raise PolicyError(
                rule.select[0].location, f"select applies to tcp and udp only; this rule's protocol is {written}"
            )
        if rule.port_range is not None:
            raise PolicyError(
                rule.port_range.location, f"a port range applies to tcp and udp only; this rule's protocol is {written}"
            )
        return {proto: ir.ALL_PORTS for proto in ir.PROTOCOLS} if choice.kind == "all" else {}
    default_protocols = choice.ports
    pairs: list[Pair] = []
    if rule.ports is not None:
        # An entry's pairs depend only on its text, the rule's protocols and the registry:
        # remembered per registry (only entries that resolved; an error is raised anew,
        # located, every time). A fleet's hosts repeat each other's entries: 4,195
        # distinct of 7,478 in bench fleet100.
        known = registry.derived.setdefault("resolve.entry_pairs", {})
        for entry in rule.ports:
            key = (entry.value, default_protocols)
            found = known.get(key)
            if found is None:
                found = known[key] = _entry_pairs(entry, registry, default_protocols, groups)
            pairs.extend(found)
    elif rule.select is not None:
        pairs.extend(_selected_pairs(rule, registry, default_protocols))
    else:
        lo, hi = range_bounds(rule.port_range.value) if rule.port_range else (ir.PORT_MIN, ir.PORT_MAX)
        pairs.extend((proto, PortRange(lo, hi)) for proto in default_protocols)
    by_protocol: dict[Protocol, list[PortRange]] = {}
    for proto, port_range in pairs:
        by_protocol.setdefault(proto, []).append(port_range)
    merged: dict[Protocol, tuple[PortRange, ...]] = {}
    for proto in ir.PROTOCOLS:
        ranges = by_protocol.get(proto)
        if ranges:  # one range, the usual case, is merged as it is (no call)
            merged[proto] = (ranges[0],) if len(ranges) == 1 else ir.merge_ranges(ranges)
    return merged


def _entry_pairs(
    entry: Text, registry: Registry, default_protocols: tuple[Protocol, ...], groups: tuple[str, ...]
) -> tuple[Pair, ...]:
    """One ``ports`` entry -> its (protocol, range) pairs, in the order written."""
    rule_protocol = default_protocols[0].value if len(default_protocols) == 1 else None
    body, suffix = split_suffix(entry.value)
    if suffix and rule_protocol in ("tcp", "udp") and suffix.value != rule_protocol:
        raise PolicyError(
            entry.location,
            f"'{entry.value}' contradicts the rule's protocol '{rule_protocol}'",
        )
    protocols = (suffix,) if suffix else default_protocols
    hint = list_hint(entry.value)  # no service name holds a comma or a space
    if hint:
        raise PolicyError(
            entry.location,
            f"'{shorten(entry.value)}' is not a port number, \"N-M\" range or service name{hint}",
        )
    port_range = parse_number_or_range(body, entry)
    if port_range is not None:
        return tuple((proto, port_range) for proto in protocols)
    return tuple(_service_pairs(registry, body, protocols, entry, groups))


def _selected_pairs(rule: PolicyRule, registry: Registry, protocols: tuple[Protocol, ...]) -> list[Pair]:
    """A ``select`` rule's pairs: the union of its selectors, narrowed by ``range`` and
    ``protocol``, as runs of consecutive ports. An error when nothing is left."""
    assert rule.select is not None
    lo, hi = range_bounds(rule.port_range.value) if rule.port_range else (ir.PORT_MIN, ir.PORT_MAX)
    selected = registry_select.select(registry, [entry.value for entry in rule.select])
    pairs: list[Pair] = []
    for proto in protocols:
        start = previous = -2
        for port in selected[proto.value]:
            if not lo <= port <= hi:
                continue
            if port != previous + 1:
                if start >= 0:
                    pairs.append((proto, PortRange(start, previous)))
                start = port
            previous = port
        if start >= 0:
            pairs.append((proto, PortRange(start, previous)))
    if not pairs:
        names = ", ".join(entry.value for entry in rule.select)
        scope = f" in range {rule.port_range.value}" if rule.port_range else ""
        asked = "/".join(p.value for p in protocols)
        raise PolicyError(
            rule.select[0].location,
            f"rule '{rule.name}' selects nothing: the registry (edition {registry.edition}) has no {asked} pair "
            f"that is {names}{scope}",
        )
    return pairs


def _split_families(
    networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> tuple[tuple[ipaddress.IPv4Network, ...], tuple[ipaddress.IPv6Network, ...]]:
    """Per family, the networks collapsed."""
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return _collapse(v4), _collapse(v6)


def _collapse(networks: list[_N]) -> tuple[_N, ...]:
    """``ipaddress.collapse_addresses``, in one sort when no two networks overlap or
    touch (the usual list): then nothing merges, and its result is the networks in
    order. Collapsing was half of resolving bench fleet100 (collapse_addresses builds
    supernets and re-sorts even when it merges nothing)."""
    if len(networks) < 2:
        return tuple(networks)
    spans = sorted((int(n.network_address), int(n.broadcast_address), n) for n in networks)
    for (_, hi, _), (next_lo, _, _) in itertools.pairwise(spans):
        if next_lo <= hi + 1:
            return tuple(ipaddress.collapse_addresses(networks))
    return tuple(n for _, _, n in spans)


def resolve_icmp(rule: PolicyRule, choice: ProtocolChoice) -> tuple[Span, ...]:
    """The (type << 8 | code) intervals of the rule's ``icmp`` entries (every type when
    it has none); an error for a name or number that is no type of its family."""
    if rule.icmp is None:
        return ((0, 0xFFFF),)
    assert choice.family is not None
    spans = []
    for entry in rule.icmp:
        found = icmp.parse_entry(entry.value, choice.family)
        other = 10 - choice.family  # 4 <-> 6
        if found is None and (entry.value in icmp.NAMES[other] or entry.value in icmp.TOOL_NAMES[other]) \
                and entry.value not in icmp.TOOL_NAMES[choice.family]:
            raise PolicyError(
                entry.location,
                f"'{entry.value}' is an {'ICMPv6' if other == 6 else 'ICMP'} (IPv{other}) type, but this rule's "
                f"protocol is {rule.protocol.value if rule.protocol else ''}; write protocol: "
                f"{'icmpv6' if other == 6 else 'icmp'} (in a rule of its own)",
            )
        hint_line = icmp.tool_hint(entry.value, choice.family) if found is None else None
        if hint_line:
            raise PolicyError(entry.location, hint_line + " (fwgen reads the names nft and iptables share)")
        if found is None:
            names = sorted(icmp.NAMES[choice.family])
            hint = difflib.get_close_matches(entry.value, names, n=1, cutoff=0.6)
            raise PolicyError(
                entry.location,
                f"'{shorten(entry.value)}' is not an {'ICMPv6' if choice.family == 6 else 'ICMP'} type: write a "
                "number 0-255, TYPE/CODE, or one of " + ", ".join(names)
                + (f" (did you mean '{hint[0]}'?)" if hint else ""),
            )
        spans.append(found.span())
    return tuple(merge_spans(spans))


def _addresses(
    rule: PolicyRule, key: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None,
    families: tuple[int, ...],
) -> tuple[tuple[ipaddress.IPv4Network, ...] | None, tuple[ipaddress.IPv6Network, ...] | None]:
    if networks is None:
        return None, None
    if len(families) == 1:
        foreign = [n for n in networks if n.version != families[0]]
        if foreign:
            protocol = rule.protocol.value if rule.protocol else ""
            raise PolicyError(
                rule.key_location(key),
                f"protocol {protocol} is IPv{families[0]} only, but {key} lists IPv{foreign[0].version} "
                f"addresses ({foreign[0]}); write them in a rule of their own",
            )
    return _split_families(networks)


def resolve_rule(rule: PolicyRule, registry: Registry, file: str = "", groups: tuple[str, ...] = ()) -> ir.Rule:
    """``file``: the rule's file as outputs name it (``Policy.file_of``); ``groups``: the
    policy's service group names."""
    choice = resolve_protocol(rule)
    if rule.icmp is not None and choice.kind != "icmp":
        fix = f"this rule's protocol is {rule.protocol.value}" if rule.protocol else "add protocol: icmp (or icmpv6)"
        raise PolicyError(rule.key_location("icmp"), f"icmp applies to protocol icmp or icmpv6 only; {fix}")
    ports = resolve_ports(rule, registry, choice, groups)
    other: tuple[Span, ...] = ()
    families: tuple[int, ...] = (4, 6)
    if choice.kind == "icmp":
        assert choice.number is not None and choice.family is not None
        other = tuple(ir.what_span(choice.number, lo, hi) for lo, hi in resolve_icmp(rule, choice))
        families = (choice.family,)
    elif choice.kind == "number":
        assert choice.number is not None
        other = (ir.what_span(choice.number),)
    elif choice.kind == "all":
        tcp, udp = ir.what_span(ir.TCP_NUMBER), ir.what_span(ir.UDP_NUMBER)
        other = ((0, tcp[0] - 1), (tcp[1] + 1, udp[0] - 1), (udp[1] + 1, ir.WHAT_SIZE - 1))
    remote_key = "from" if rule.direction == "in" else "to"
    remote_v4, remote_v6 = _addresses(rule, remote_key, rule.remote, families) if rule.remote else (None, None)
    local_v4, local_v6 = _addresses(rule, "local", rule.local, families) if rule.local else (None, None)
    resolved = ir.Rule(
        index=rule.index,
        name=rule.name,
        location=rule.location,
        action=_ACTION[rule.action],
        log=rule.log,
        direction=_DIRECTION[rule.direction],
        ports=tuple(ports.items()),
        remote_v4=remote_v4,
        remote_v6=remote_v6,
        comment=rule.comment,
        other=other,
        local_v4=local_v4,
        local_v6=local_v6,
        interfaces=tuple(entry.value for entry in rule.interfaces) if rule.interfaces is not None else None,
        profiles=tuple(p for p in PROFILES if p in rule.profiles) if rule.profiles is not None else None,
        families=families,
        file=file,
    )
    if rule.local is not None and not any(resolved.applies_to(family) for family in families):
        raise PolicyError(
            rule.key_location("local"),
            f"rule '{rule.name}' can never match: its {remote_key} and local addresses share no address family",
        )
    return resolved


def check_groups(policy: Policy, registry: Registry) -> None:
    """Every service group as ``ports`` would check it, used or not, and none named as an
    IANA service (a rule writing that name would mean the group, silently)."""
    for group in policy.services:
        if registry.pairs(group.name) is not None:
            raise PolicyError(
                group.location,
                f"service group '{group.name}' has the name of an IANA service: a rule's ports: [{group.name}] "
                "would no longer mean the registered port; choose another name",
            )
        stand_in = PolicyRule(index=0, name=group.name, location=group.location, action="allow", log=False,
                              direction="in", protocol=None, ports=group.entries, port_range=None, remote=None,
                              comment="")
        resolve_ports(stand_in, registry, groups=policy.service_names)


def compile_policy(policy: Policy, registry: Registry) -> ir.Ruleset:
    """Policy -> IR: the one normalized form every target, explain and diff read. Errors
    in included files name the includes that reached them."""
    try:
        return _compile(policy, registry)
    except PolicyError as error:
        raise policy.chained(error) from None


def _compile(policy: Policy, registry: Registry) -> ir.Ruleset:
    check_groups(policy, registry)
    # every rule is the policy file's own when nothing is included (no call per rule)
    file_of = policy.file_of if policy.includes else None
    groups = policy.service_names
    return ir.Ruleset(
        name=policy.name,
        description=policy.description,
        defaults=ir.Defaults(
            inbound=Action(policy.inbound),
            outbound=Action(policy.outbound),
            reject=policy.deny == "reject",
            forward=_ACTION[policy.forward],
        ),
        monitor=ir.MonitorSettings(policy.log_prefix, policy.rate, policy.rate_per),
        rules=tuple(resolve_rule(rule, registry, file_of(rule) if file_of else "", groups) for rule in policy.rules),
        source=ir.SourceInfo(
            filename=os.path.basename(policy.path),
            sha256=policy.sha256,
            registry_edition=registry.edition,
            registry_sha256=registry.sha256,
            includes=tuple((include.relative, include.sha256) for include in policy.includes),
        ),
        options=ir.Options(
            antispoof=policy.antispoof, windows_exclusive=policy.windows_exclusive,
            iptables_chains=policy.iptables_mode == "chains", published_ports=policy.published_ports == "enforce",
        ),
    )
