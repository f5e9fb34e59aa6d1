"""nftables target: one ``table inet NAME`` serving IPv4 and IPv6.

Shape of the output:
- the file declares, deletes and redefines its own table, so ``nft -f`` replaces
  exactly that table, atomically, on a fresh host and on every re-run; other tables
  (Docker's, iptables-nft's) are never touched;
- consecutive rules that match on ports alone become one verdict-map lookup per
  protocol (``th dport vmap @input_1_tcp``): each port interval maps to the verdict of
  the first rule covering it, adjacent intervals with the same verdict merged;
- a rule that restricts addresses keeps its place, with named interval sets for its
  ports and networks;
- so the number of rules grows with the number of policy rules that need an identity,
  never with the number of ports: every deny, monitor or logged rule owns a chain
  ``rule_NAME`` holding its rate-limited log line (when logged) and its verdict with a
  named counter ``rule_NAME`` (``nft list counter inet NAME rule_NAME``); a plain allow
  is just ``accept``.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import NamedTuple

from fwgen import render as rendering
from fwgen import sanitize
from fwgen.icmp import ICMPV6_CONTROL
from fwgen.ir import (
    ALL_PORTS,
    ICMP_NUMBER,
    ICMPV6_NUMBER,
    PROTOCOLS,
    WHAT_SIZE,
    Action,
    Direction,
    Protocol,
    Rule,
    Ruleset,
    by_protocol,
)
from fwgen.lowering import Run, join_touching, partition, plan
from fwgen.targets import BY_NAME, TargetOutput
from fwgen.targets.common import (
    ANTISPOOF_EXEMPT_ICMPV6,
    IGMP,
    LOOPBACK,
    icmp_entries,
    log_burst,
    log_tag,
    network_text,
    rule_summary,
)

NAME = "nftables"
TEMPLATE = BY_NAME[NAME].template
LINES = BY_NAME[NAME].lines
ELEMENTS_PER_LINE = 12
MAP_ELEMENTS_PER_LINE = 6
REJECT_CHAIN = "deny_reject"
PUBLISHED_DEFAULT = "default_published"  # the counter of the published chain's default deny

_ICMPV6_NAMES = {
    1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded",
    4: "parameter-problem", 130: "mld-listener-query", 131: "mld-listener-report",
    132: "mld-listener-done", 133: "nd-router-solicit", 134: "nd-router-advert",
    135: "nd-neighbor-solicit", 136: "nd-neighbor-advert", 141: "ind-neighbor-solicit",
    142: "ind-neighbor-advert", 143: "mld2-listener-report",
}


class NftSet(NamedTuple):
    name: str
    type: str
    lines: tuple[str, ...]  # element lines: comma-separated, each but the last ending in ","


def shapes() -> rendering.Shapes:
    return rendering.shapes(LINES)


def nft_rule(text: str, comment: str = "") -> str:
    """One rule line: the statement, then its comment (already made safe)."""
    return shapes().commented(text, comment) if comment else text


class NftChain(NamedTuple):
    name: str
    base: str  # "" for regular chains, else "type filter hook input priority filter; policy drop;"
    rules: tuple[str, ...]  # rule lines


def object_name(rule: Rule) -> str:
    """nft identifiers must start with a letter and must not be keywords: the prefix
    guarantees both, and rule names are unique, so object names are too."""
    return f"rule_{rule.name}"


def _elements(items: list[str], per_line: int = ELEMENTS_PER_LINE) -> tuple[str, ...]:
    if 0 < len(items) <= per_line:
        return (", ".join(items),)
    return tuple(", ".join(items[i : i + per_line]) + ("," if i + per_line < len(items) else "")
                 for i in range(0, len(items), per_line))


@functools.lru_cache(maxsize=1 << 16)
def _network(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """A network as an element, a single address without its prefix length; remembered
    across rulesets, as ``common.network_text``."""
    text = network_text(network)
    return text.partition("/")[0] if network.prefixlen == network.max_prefixlen else text


def _verdict(ruleset: Ruleset, action: Action) -> str:
    if action is Action.DENY:
        return shapes().goto(REJECT_CHAIN) if ruleset.defaults.reject else "drop"
    return "accept"


def has_identity(rule: Rule) -> bool:
    """Rules whose matches must stay distinguishable (their own counter, and a limiter
    and log line when logged) get their own chain; a plain allow is just ``accept``."""
    return rule.logged or rule.action is Action.DENY


def _dispatch(rule: Rule) -> str:
    return shapes().jump(object_name(rule)) if has_identity(rule) else "accept"


def _comment(ruleset: Ruleset, rule: Rule) -> str:
    """A rule's comment, made once per ruleset (its lines and its chain both carry it)."""
    key = ("nftables comment", rule.index)
    found = ruleset.derived.get(key)
    if found is None:
        found = ruleset.derived[key] = sanitize.nft_comment(
            rule_summary(ruleset, rule) + (f": {rule.comment}" if rule.comment else ""))
    return found  # type: ignore[return-value]


def _identity_chain(ruleset: Ruleset, rule: Rule, rate: str, burst: str) -> NftChain:
    obj, shape = object_name(rule), shapes()
    body: list[str] = []
    if rule.logged:
        body.append(shape.logged(rate, burst, log_tag(ruleset, rule)))
    body.append(nft_rule(shape.counted(obj, _verdict(ruleset, rule.action)), _comment(ruleset, rule)))
    return NftChain(obj, "", tuple(body))


def _port_groups(tcp: object, udp: object) -> list[tuple[str, str]]:
    """(l4 match, name suffix) per protocol group: one shared group when tcp and udp agree."""
    shape = shapes()
    if tcp and tcp == udp:
        return [(shape.protocols(shape.anonymous_set("tcp, udp")), "ports")]
    return [(shape.protocols(p.value), p.value) for p, v in ((Protocol.TCP, tcp), (Protocol.UDP, udp)) if v]


_ICMP_FAMILY = {ICMP_NUMBER: "icmp", ICMPV6_NUMBER: "icmpv6"}
EVERY_PROTOCOL = ((0, WHAT_SIZE - 1),)


def _protocol_matches(rule: Rule, obj: str, published: bool = False) -> tuple[list[NftSet], list[str]]:
    """The rule's (protocol, port or ICMP type) matches, one per line it needs: named
    sets for its tcp and udp ports (``published``: matched on the connection's original
    destination port); nothing at all when it matches every protocol."""
    shape = shapes()
    if rule.other and rule.what() == EVERY_PROTOCOL:  # tcp and udp ports alone never are every protocol
        return [], [""]
    sets: list[NftSet] = []
    matches: list[str] = []
    tcp, udp = rule.port_ranges(Protocol.TCP), rule.port_ranges(Protocol.UDP)
    for l4, suffix in _port_groups(tcp, udp):
        ranges = udp if suffix == "udp" else tcp
        if ranges == ALL_PORTS:
            matches.append(l4)
            continue
        set_name = f"{obj}_{suffix}"
        sets.append(NftSet(set_name, "inet_service", _elements([str(r) for r in ranges])))
        matches.append((shape.original_port_in_set if published else shape.port_in_set)(l4, set_name))
    whole: list[int] = []  # protocols matched on every packet
    for number, selectors in by_protocol(rule.other).items():
        family = _ICMP_FAMILY.get(number)
        if family is None or selectors == [(0, 0xFFFF)]:
            whole.append(number)
            continue
        entries = icmp_entries(selectors)
        types = [e for e in entries if "/" not in e]
        pairs = [e.replace("/", " . ") for e in entries if "/" in e]
        if types:
            matches.append(shape.icmp_types(family, types[0] if len(types) == 1 else shape.anonymous_set(
                ", ".join(types))))
        if pairs:
            matches.append(shape.icmp_types_codes(family, ", ".join(pairs)))
    if whole:
        listed = ", ".join(str(n) for n in whole)
        matches.append(shape.protocols(listed if len(whole) == 1 else shape.anonymous_set(listed)))
    return sets, matches


def _lower_single(ruleset: Ruleset, rule: Rule, published: bool = False) -> tuple[list[NftSet], list[str]]:
    """A rule with any match beyond ports: named sets for its ports and networks, one
    base-chain rule per (family, interface, protocol part). ``published``: an inbound
    rule's lines for the published chain, on the original destination port and address
    (the sets are the input chain's)."""
    obj, shape = object_name(rule), shapes()
    sets, protocol_matches = _protocol_matches(rule, obj, published)
    inbound = rule.direction is Direction.IN
    remote_field, local_field = ("saddr", "daddr") if inbound else ("daddr", "saddr")
    address_matches: list[str] = []
    for family, nft_type, l3 in ((4, "ipv4_addr", "ip"), (6, "ipv6_addr", "ip6")):
        remote, local = rule.remote(family), rule.local(family)
        if (remote is None and local is None) or not rule.applies_to(family):
            continue
        parts = []
        for networks, field, suffix in ((remote, remote_field, f"v{family}"), (local, local_field, f"local_v{family}")):
            if networks:
                set_name = f"{obj}_{suffix}"
                sets.append(NftSet(set_name, nft_type, _elements([_network(network) for network in networks])))
                if published and field == "daddr":
                    parts.append(shape.original_address_in_set(l3, set_name))
                else:
                    parts.append(shape.address_in_set(l3, field, set_name))
        address_matches.append(" ".join(parts))
    if not address_matches:
        address_matches = [""]
    interfaces = [shape.interface("iifname" if inbound else "oifname", name) for name in rule.interfaces or ()]
    comment, dispatch = _comment(ruleset, rule), _dispatch(rule)
    tails = [" ".join([part for part in (via, protocol, dispatch) if part])
             for via in interfaces or [""] for protocol in protocol_matches]
    rules = [shape.commented(f"{addr} {tail}" if addr else tail, comment) for addr in address_matches for tail in tails]
    return sets, rules


def _run_comment(ruleset: Ruleset, run: Run) -> str:
    first, last = run.rules[0], run.rules[-1]
    if first is last:
        return _comment(ruleset, first)
    first_file, last_file = ruleset.source.where(first), ruleset.source.where(last)
    if first_file == last_file:
        where = f"{first_file}:{first.location.line}-{last.location.line}"
    else:
        where = f"{first_file}:{first.location.line} .. {last_file}:{last.location.line}"
    return sanitize.nft_comment(f"first match of rules {first.name} .. {last.name} ({where})")


def _lower_run(ruleset: Ruleset, run: Run, map_name: str, published: bool = False) -> tuple[list[NftSet], list[str]]:
    """Consecutive port-only rules: one verdict map lookup per protocol group, mapping
    each port interval to its first-match rule's verdict (``published``: looked up by
    the original destination port)."""
    dispatch = {rule.index: _dispatch(rule) for rule in run.rules}
    maps = {
        proto: [f"{lo} : {verdict}" if lo == hi else f"{lo}-{hi} : {verdict}" for lo, hi, verdict in join_touching(
            partition(ruleset, run.rules, proto), lambda rule: dispatch[rule.index])]
        for proto in PROTOCOLS
    }
    sets: list[NftSet] = []
    rules: list[str] = []
    shape, comment = shapes(), _run_comment(ruleset, run)
    for l4, suffix in _port_groups(maps[Protocol.TCP], maps[Protocol.UDP]):
        name = f"{map_name}_{suffix}"
        sets.append(NftSet(name, "inet_service : verdict", _elements(
            maps[Protocol.UDP if suffix == "udp" else Protocol.TCP], MAP_ELEMENTS_PER_LINE)))
        rules.append(nft_rule((shape.original_port_vmap if published else shape.port_vmap)(l4, name), comment))
    return sets, rules


@functools.cache
def _prologue(direction: Direction) -> tuple[str, ...]:
    """The always-rules, as iptables writes them (see ``iptables._prologue``); the same
    in every policy, so made once per process."""
    shape = shapes()
    inbound = direction is Direction.IN
    rules = []
    if inbound:
        rules += [
            nft_rule(f"{shape.address_not_from('lo', l3, LOOPBACK[family])} drop",
                     "always: loopback addresses arriving on another interface")
            for family, l3 in ((4, "ip"), (6, "ip6"))
        ]
    # RFC 4890's list, one rule per hop limit.
    by_hoplimit: dict[int, list[int]] = {}
    for icmp_type, hoplimit, _ in ICMPV6_CONTROL:
        by_hoplimit.setdefault(hoplimit, []).append(icmp_type)
    for hoplimit, types in by_hoplimit.items():
        names = ", ".join(_ICMPV6_NAMES.get(t, str(t)) for t in types)
        types_match = shape.icmp_types("icmpv6", shape.anonymous_set(names))
        match = f"{types_match} {shape.header_field('ip6', 'hoplimit', str(hoplimit))}"
        rules.append(nft_rule(f"{match} accept", "always: ICMPv6 link-local control IPv6 needs (RFC 4890)"))
    rules += [
        nft_rule(f"{shape.header_field('ip', 'protocol', str(IGMP))} {shape.header_field('ip', 'ttl', '1')} accept",
                 "always: IGMP, link-local (TTL 1)"),
        nft_rule(f"{shape.conntrack('invalid')} drop", "always: invalid packets"),
        nft_rule(f"{shape.conntrack('established,related')} accept", "always: established and related traffic"),
        nft_rule(f"{shape.interface('iif' if inbound else 'oif', 'lo')} accept", "always: loopback"),
    ]
    return tuple(rules)


def _antispoof_chain(ruleset: Ruleset) -> list[NftChain]:
    """The reverse-path check, in its own base chain before conntrack (priority raw)."""
    return [_prerouting()] if ruleset.options.antispoof else []


@functools.cache
def _prerouting() -> NftChain:
    """The antispoof chain, the same in every policy: made once per process."""
    shape = shapes()
    exempt = shape.anonymous_set(", ".join(_ICMPV6_NAMES[t] for t in ANTISPOOF_EXEMPT_ICMPV6))
    return NftChain("prerouting", shape.raw_chain("prerouting"), (
        nft_rule(f"{shape.icmp_types('icmpv6', exempt)} accept",
                 "antispoof: neighbour discovery, which DAD sends from ::"),
        nft_rule(f"{shape.reverse_path_fails()} drop",
                 "antispoof: the source is not routed back through the arrival interface"),
    ))


def _published_chain(ruleset: Ruleset) -> NftChain:
    """``published_ports: enforce``: a forward-hook chain that judges new connections
    DNATed to a local container (Docker published ports, Kubernetes NodePorts) by the
    inbound rules, in order, on the connection's original destination port and address
    (``ct original proto-dst``, ``ct original ip daddr``), using the input chain's maps
    and sets. Its accept ends only this chain (the runtime's own chains still decide);
    its drop is final."""
    shape = shapes()
    rules = [  # "ct status != dnat" would compare the whole status word: "!" tests the bit
        nft_rule(f"{shape.not_new()} accept", "published_ports: only new connections are judged"),
        nft_rule(f"{shape.not_dnat()} accept", "published_ports: only connections DNATed to this host"),
    ]
    for number, segment in enumerate(plan(ruleset, Direction.IN), start=1):
        if isinstance(segment, Run):
            rules.extend(_lower_run(ruleset, segment, f"input_{number}", published=True)[1])
        else:
            rules.extend(_lower_single(ruleset, segment.rule, published=True)[1])
    if ruleset.defaults.inbound is Action.DENY:
        rules.append(nft_rule(shape.counted(PUBLISHED_DEFAULT, _verdict(ruleset, Action.DENY)),
                              "default: inbound deny (published ports)"))
    return NftChain("published", shape.base_chain("forward", "accept"), tuple(rules))


def lower(ruleset: Ruleset) -> dict[str, object]:
    """The template's view model: sets, verdict maps, per-rule chains and the two base chains."""
    sets: list[NftSet] = []
    maps: list[NftSet] = []
    base_chains: list[NftChain] = []
    for direction, hook in ((Direction.IN, "input"), (Direction.OUT, "output")):
        default = ruleset.defaults.for_direction(direction)
        rules = list(_prologue(direction))
        for number, segment in enumerate(plan(ruleset, direction), start=1):
            if isinstance(segment, Run):
                run_maps, run_rules = _lower_run(ruleset, segment, f"{hook}_{number}")
                maps.extend(run_maps)
                rules.extend(run_rules)
            else:
                rule_sets, single_rules = _lower_single(ruleset, segment.rule)
                sets.extend(rule_sets)
                rules.extend(single_rules)
        policy = "accept" if default is Action.ALLOW else "drop"
        if default is Action.DENY:
            rules.append(nft_rule(
                shapes().counted(f"default_{hook}", _verdict(ruleset, Action.DENY)),
                f"default: {direction.value}bound deny",
            ))
        base_chains.append(NftChain(hook, shapes().base_chain(hook, policy), tuple(rules)))
    base_chains = _antispoof_chain(ruleset) + base_chains
    identities = [rule for rule in ruleset.rules if has_identity(rule)]
    monitor = ruleset.monitor
    rate, burst = f"{monitor.rate}/{monitor.per}", str(log_burst(ruleset))
    defaults_deny = [
        direction for direction in Direction if ruleset.defaults.for_direction(direction) is Action.DENY
    ]
    uses_reject = ruleset.defaults.reject and (
        bool(defaults_deny) or any(rule.action is Action.DENY for rule in ruleset.rules)
    )
    counters = [object_name(rule) for rule in identities] + [
        f"default_{'input' if d is Direction.IN else 'output'}" for d in defaults_deny]
    if ruleset.options.published_ports:
        base_chains.append(_published_chain(ruleset))
        if ruleset.defaults.inbound is Action.DENY:
            counters.append(PUBLISHED_DEFAULT)
    return {
        "header": [sanitize.shell_comment(line) for line in rendering.header_lines(ruleset, NAME)],
        "description": sanitize.shell_comment(ruleset.description, 500),
        "table": ruleset.name,
        "counters": counters,
        "sets": sets,
        "reject_chain": REJECT_CHAIN if uses_reject else "",
        "rule_chains": [_identity_chain(ruleset, rule, rate, burst) for rule in identities],
        "maps": maps,
        "base_chains": base_chains,
    }


def render(ruleset: Ruleset) -> TargetOutput:
    text = rendering.render(TEMPLATE, **lower(ruleset))
    return TargetOutput(files={f"nftables/{ruleset.name}.nft": text})
