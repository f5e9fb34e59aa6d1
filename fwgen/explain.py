"""``fwgen explain``: the reference semantics every generated rule set is judged against.

This is a plain ordered first-match interpreter over the loaded policy
(``fwgen.policy.load_policy``), each rule's protocol, ports and ICMP types resolved by
the helpers of ``fwgen.resolve`` (``resolve_protocol``, ``resolve_ports``,
``resolve_icmp``). It deliberately shares nothing else with the compiler: no IR
``Ruleset`` (``compile_policy``), no ``merge_ranges``, no first-match engine, no target
or lowering code. Address, interface and profile matching are done here, on the
``PolicyRule`` fields.

Semantics (docs/policy-format.md, and ``fwgen.resolve.resolve_rule`` for the newer
keys): a connection is a direction d, an IP protocol p (with the port n for tcp and
udp, the type and code for ICMP and ICMPv6), the remote address a and, when the
question gives them, the host's own (local) address, the interface and the Windows
profile. The first rule with direction d that matches all of them decides, and its
action is the verdict; when no rule matches, the default for d does. A rule matches

- p: ``tcp``/``udp``/``any`` through its ports (``resolve_ports``); ``all`` every
  protocol (every port of tcp and udp included); ``icmp``/``icmpv6`` that protocol with
  the types of its ``icmp:`` entries (every type without them); a keyword or a number
  that one protocol;
- a and the local address: its ``from``/``to`` and ``local`` lists (none = any). A rule
  applies to an address family only when each list it has holds addresses of that
  family, and an icmp rule only to IPv4, an icmpv6 rule only to IPv6;
- the interface: a name exactly, or a ``prefix*`` every name starting with the prefix;
- the profile: one of its ``profiles`` (none = every profile).

Every deny, the default deny included, is enforced by ``defaults.deny`` (drop or
reject); a verdict is logged when its rule is a monitor rule or has ``log: true`` (a
default is never logged).

A question may leave out the local address, the interface, the profile or the ICMP
type. When a rule that would otherwise match restricts a left-out dimension, the answer
depends on it: the loop records the rule as a ``Condition`` (what it needs of the
left-out dimensions) and goes on to the next rule. The ``Verdict`` returned is the one
that decides when none of its ``depends`` conditions holds; each condition, in policy
order, decides instead when it holds (a decision list, exact).

``Explainer.regions`` answers for every remote address at once by partitioning each
address family at the boundaries of the networks of the rules that cover the protocol
and port, and evaluating the first-match interpreter once per piece.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

from fwgen import icmp as icmp_types
from fwgen import protocols, registry_select
from fwgen.errors import PolicyError
from fwgen.policy import PROFILES, Policy, PolicyRule, load_policy
from fwgen.registry import Registry
from fwgen.resolve import ProtocolChoice, check_groups, resolve_icmp, resolve_ports, resolve_protocol

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Intervals = tuple[tuple[int, ...], tuple[int, ...]]  # sorted disjoint [lo, hi]: the los, the his
IcmpQuery = tuple[int, int | None]  # (type, code); code None = any code

DIRECTIONS = ("in", "out")
PROTOCOLS = ("tcp", "udp")  # the protocols with ports
PORT_MAX = 65535
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
PROTOCOL_NUMBERS = {"tcp": TCP, "udp": UDP, "icmp": ICMP, "icmpv6": ICMPV6}
PROTOCOL_WORDS = {number: word for word, number in PROTOCOL_NUMBERS.items()}
ICMP_FAMILY = {ICMP: 4, ICMPV6: 6}
# What a question may leave out, in the order conditions name them (the CLI options).
DIMENSIONS = ("local", "interface", "profile", "icmp-type")
_ALL_TYPES = (0, 0xFFFF)  # (type << 8 | code) of every ICMP message
_BITS = {4: 32, 6: 128}
_DEFAULT_KEY = 1 << 62  # sorts a default verdict after every rule


class Requirement(NamedTuple):
    """What a rule needs of one dimension the question left out, as the policy writes it:
    ``("interface", ("wg0", "tun*"))``, ``("local", ("192.0.2.0/24",))``,
    ``("profile", ("domain",))``, ``("icmp-type", ("echo-request", "3/4"))``."""

    dimension: str  # one of DIMENSIONS
    values: tuple[str, ...]  # any one of them will do


@dataclass(frozen=True)
class Condition:
    """A rule that decides instead of the verdict it belongs to, when the left-out
    dimensions meet all its ``requires`` (and no earlier condition holds)."""

    verdict: Verdict  # that rule's own verdict (never itself conditional)
    requires: tuple[Requirement, ...]  # in DIMENSIONS order


@dataclass(frozen=True)
class Verdict:
    """What happens to a new connection: the answer ``fwgen explain`` gives.

    ``depends`` is empty when the question settles it. Otherwise the fields are the
    answer when none of the conditions holds, and each condition (in policy order) the
    answer when it holds: the answer depends on the dimensions ``depends_on`` lists."""

    action: str  # "allow" | "deny" | "monitor"
    rule: str | None  # deciding rule name, None for the default
    line: int | None  # the rule's line in the policy file, None for the default
    logged: bool
    enforced: str  # "accept" | "drop" | "reject"
    depends: tuple[Condition, ...] = ()

    @property
    def decided(self) -> bool:
        """True when the answer does not depend on anything the question left out."""
        return not self.depends

    @property
    def depends_on(self) -> tuple[str, ...]:
        """The left-out dimensions the answer depends on, in DIMENSIONS order."""
        found = {req.dimension for condition in self.depends for req in condition.requires}
        return tuple(d for d in DIMENSIONS if d in found)


# The any-address answer: each distinct verdict with the networks where it applies.
Regions = list[tuple[list[Network], Verdict]]


class _Rest(NamedTuple):
    """The parts of a question beyond protocol, port and remote address, as the rules
    read them; None where the question leaves them out."""

    local: int | None  # the host's address as an integer, of the remote's family
    interface: str | None
    profile: str | None
    icmp: tuple[int, int] | None  # the (type << 8 | code) interval asked about; None: not ICMP


_NOTHING = _Rest(None, None, None, None)


def _inside(intervals: Intervals, value: int) -> bool:
    los, his = intervals
    i = bisect.bisect_right(los, value) - 1
    return i >= 0 and value <= his[i]


def _interface_matches(pattern: str, name: str) -> bool:
    """``eth0`` matches that name only; ``eth*`` every name starting with ``eth``."""
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


@dataclass(frozen=True, eq=False)
class _Rule:
    """One policy rule as the interpreter reads it."""

    index: int
    verdict: Verdict
    # The IP protocols other than tcp and udp it matches (tcp and udp go by ports, in
    # the tables); None = every one (protocol: all).
    others: frozenset[int] | None
    families: tuple[int, ...]  # the address families it applies to
    # Per family (4, 6): the networks of ``from``/``to`` and of ``local``, as intervals
    # and as written; None = any address of that family.
    remote: dict[int, Intervals | None]
    networks: dict[int, tuple[Network, ...] | None]
    local: dict[int, Intervals | None]
    local_networks: dict[int, tuple[Network, ...] | None]
    interfaces: tuple[str, ...] | None  # None = any interface
    profiles: tuple[str, ...] | None  # None = every profile
    icmp: Intervals | None  # (type << 8 | code) intervals; None = every type (or not ICMP)
    icmp_entries: tuple[tuple[str, int, int], ...]  # each entry as written, with its interval
    plain: bool  # restricted by nothing but protocol, port, remote and family

    def covers(self, number: int) -> bool:
        return self.others is None or number in self.others

    def matches_remote(self, family: int, address: int) -> bool:
        intervals = self.remote[family]
        return intervals is None or _inside(intervals, address)

    def requires(self, family: int, rest: _Rest) -> tuple[Requirement, ...] | None:
        """Whether the rule matches the rest of the question (protocol, port, remote and
        family matched already): None when it does not, () when it does, else what it
        needs of the dimensions the question left out."""
        if self.plain:
            return ()
        needs: list[Requirement] = []
        local = self.local[family]
        if local is not None:
            if rest.local is None:
                nets = self.local_networks[family] or ()
                needs.append(Requirement("local", tuple(str(n) for n in nets)))
            elif not _inside(local, rest.local):
                return None
        if self.interfaces is not None:
            if rest.interface is None:
                needs.append(Requirement("interface", self.interfaces))
            elif not any(_interface_matches(p, rest.interface) for p in self.interfaces):
                return None
        if self.profiles is not None:
            if rest.profile is None:
                needs.append(Requirement("profile", self.profiles))
            elif rest.profile not in self.profiles:
                return None
        if self.icmp is not None and rest.icmp is not None:
            lo, hi = rest.icmp
            los, his = self.icmp
            i = bisect.bisect_right(los, lo) - 1
            if not (i >= 0 and hi <= his[i]):  # not every message asked about is the rule's
                overlapping = tuple(text for text, a, b in self.icmp_entries if a <= hi and lo <= b)
                if not overlapping:
                    return None
                needs.append(Requirement("icmp-type", overlapping))
        return tuple(needs)


def _intervals(networks: list[Network]) -> Intervals:
    """Sorted disjoint [lo, hi] integer intervals covering ``networks``."""
    return _merge([(int(n.network_address), int(n.broadcast_address)) for n in networks])


def _merge(spans: list[tuple[int, int]]) -> Intervals:
    merged: list[list[int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple(m[0] for m in merged), tuple(m[1] for m in merged)


def _covers(dimension: str, earlier: str, later: str) -> bool:
    """Every value meeting the requirement value ``later`` meets ``earlier`` too."""
    if dimension == "interface":
        return earlier == later or (earlier.endswith("*") and later.startswith(earlier[:-1]))
    if dimension == "local":
        a, b = ipaddress.ip_network(earlier), ipaddress.ip_network(later)
        return a.version == b.version and b.network_address in a and b.broadcast_address in a
    return earlier == later


def _subsumes(earlier: tuple[Requirement, ...], later: tuple[Requirement, ...]) -> bool:
    """Whenever ``later`` holds, ``earlier`` does (each dimension ``earlier`` restricts,
    ``later`` restricts too, to values ``earlier`` covers), so a condition ``later``
    after ``earlier`` never decides. Sound, not complete: it may keep a condition that
    cannot decide, never drop one that can."""
    mine = {req.dimension: req.values for req in later}
    return all(
        req.dimension in mine
        and all(any(_covers(req.dimension, e, v) for e in req.values) for v in mine[req.dimension])
        for req in earlier
    )


class _Table:
    """The rules of one (direction, protocol), with the port axis cut into segments
    on which the same rules apply (precomputed, so a query is two bisections)."""

    def __init__(self, rules: list[tuple[_Rule, list[tuple[int, int]]]]) -> None:
        # A sweep over the port axis: a rule enters the active set at each range's start
        # and leaves after its end; each segment's candidates are the active rules in
        # policy order. Linear in the segments times the rules active in them.
        entering: dict[int, list[int]] = {}
        leaving: dict[int, list[int]] = {}
        for position, (_, ranges) in enumerate(rules):
            for lo, hi in ranges:
                entering.setdefault(lo, []).append(position)
                leaving.setdefault(hi + 1, []).append(position)
        self.starts = sorted({0, *entering, *(p for p in leaving if p <= PORT_MAX)})
        self.segments: list[tuple[_Rule, ...]] = []
        active: Counter[int] = Counter()  # a rule may enter twice (several ranges)
        for start in self.starts:
            for position in leaving.get(start, ()):
                active[position] -= 1
                if not active[position]:
                    del active[position]
            for position in entering.get(start, ()):
                active[position] += 1
            self.segments.append(tuple(rules[position][0] for position in sorted(active)))

    def candidates(self, port: int) -> tuple[_Rule, ...]:
        return self.segments[bisect.bisect_right(self.starts, port) - 1]


def _address(remote: str | Address, what: str = "address") -> Address:
    if isinstance(remote, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return remote
    try:
        return ipaddress.ip_address(remote)
    except ValueError:
        raise ValueError(f"{what} must be an IPv4 or IPv6 address, got {remote!r}") from None


def _norm(value: Any, options: tuple[str, ...], what: str) -> str:
    text = str(getattr(value, "value", value)).lower()
    if text not in options:
        raise ValueError(f"{what} must be one of {', '.join(options)}, got {value!r}")
    return text


def parse_protocol(text: str) -> int:
    """A protocol as a question names it: tcp, udp, icmp, icmpv6, an IANA keyword of the
    bundled protocol registry (case-insensitive: ``esp``, ``IPv6-ICMP``) or a number
    0-255. ``ValueError`` (with a suggestion for a typo) otherwise."""
    word = text.lower()
    if word in PROTOCOL_NUMBERS:
        return PROTOCOL_NUMBERS[word]
    if word in ("any", "all"):
        raise ValueError(f"'{text}' names several protocols: ask about one (tcp, udp, icmp, a keyword or a number)")
    if text.isascii() and text.isdigit():
        number = int(text)
        if number > protocols.MAX_NUMBER:
            raise ValueError(f"protocol number {number} is out of range 0-{protocols.MAX_NUMBER}")
        return number
    registry = protocols.bundled()
    found = registry.lookup(text)
    if found is None:
        suggestions = registry.suggest(text, limit=1)
        hint = f" (did you mean '{suggestions[0]}'?)" if suggestions else ""
        raise ValueError(f"unknown protocol '{text}'{hint}")
    return found


def protocol_number(protocol: str | int | Any) -> int:
    """``verdict``'s protocol argument as a number: "tcp", "udp", "icmp", "icmpv6", an
    int 0-255 or a keyword (see ``parse_protocol``)."""
    if isinstance(protocol, int) and not isinstance(protocol, bool):
        if not 0 <= protocol <= protocols.MAX_NUMBER:
            raise ValueError(f"protocol number must be 0-{protocols.MAX_NUMBER}, got {protocol}")
        return protocol
    text = getattr(protocol, "value", protocol)
    if not isinstance(text, str):
        raise ValueError(f"protocol must be a name or a number 0-255, got {protocol!r}")
    found = PROTOCOL_NUMBERS.get(text)
    return found if found is not None else parse_protocol(text)


def parse_icmp_type(text: str, number: int) -> IcmpQuery:
    """``echo-request``, ``8`` or ``3/4`` for ICMP (``number`` 1) or ICMPv6 (58): the
    (type, code) asked about, the code None when not given. ``ValueError`` otherwise."""
    family = ICMP_FAMILY[number]
    found = icmp_types.parse_entry(text.lower(), family)
    if found is None:
        what = "ICMP" if family == 4 else "ICMPv6"
        names = sorted(icmp_types.NAMES[family])
        hint = difflib.get_close_matches(text.lower(), names, n=1, cutoff=0.6)
        raise ValueError(
            f"'{text}' is not an {what} type: write a number 0-255, TYPE/CODE, or one of {', '.join(names)}"
            + (f" (did you mean '{hint[0]}'?)" if hint else "")
        )
    return found.type, found.code


def _icmp_span(number: int, icmp: IcmpQuery | None) -> tuple[int, int]:
    if icmp is None:
        return _ALL_TYPES
    if not (isinstance(icmp, tuple) and len(icmp) == 2):
        raise ValueError(f"icmp must be (type, code), got {icmp!r}")
    kind, code = icmp
    for value, what in ((kind, "type"), (code, "code")):
        if value is None and what == "code":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
            raise ValueError(f"ICMP {what} must be an integer 0-255, got {value!r}")
    if code is None:
        return kind << 8, kind << 8 | 0xFF
    return kind << 8 | code, kind << 8 | code


class Explainer:
    """First-match reference interpreter for one policy (precomputed per policy)."""

    def __init__(self, policy: Policy, registry: Registry) -> None:
        self.policy = policy
        self.registry = registry
        self.path = policy.path
        self._index_by_name = {rule.name: rule.index for rule in policy.rules}
        # the file each rule is written in (an included file's path, as messages name it)
        self.file_of = {rule.name: rule.location.path for rule in policy.rules}
        # the select rules' selectors (their ports come from the registry)
        self._selectors = {
            rule.name: tuple(entry.value for entry in rule.select) for rule in policy.rules if rule.select is not None
        }
        self.defaults = {
            "in": self._default_verdict(policy.inbound),
            "out": self._default_verdict(policy.outbound),
        }
        per_table: dict[tuple[str, str], list[tuple[_Rule, list[tuple[int, int]]]]] = {
            (d, p): [] for d in DIRECTIONS for p in PROTOCOLS
        }
        self._rules: dict[str, list[_Rule]] = {d: [] for d in DIRECTIONS}
        for rule in policy.rules:
            # The checks and their order are resolve_rule's, so explain refuses what
            # fwgen build refuses, with the same located message.
            choice = resolve_protocol(rule)  # PolicyError for an unknown protocol
            if rule.icmp is not None and choice.kind != "icmp":
                fix = (f"this rule's protocol is {rule.protocol.value}" if rule.protocol
                       else "add protocol: icmp (or icmpv6)")
                raise PolicyError(rule.key_location("icmp"), f"icmp applies to protocol icmp or icmpv6 only; {fix}")
            resolved = resolve_ports(rule, registry, groups=policy.service_names)  # PolicyError on a bad entry
            compiled = self._compile_rule(rule, choice)
            self._rules[rule.direction].append(compiled)
            for protocol, ranges in resolved.items():
                per_table[(rule.direction, protocol.value)].append(
                    (compiled, [(r.lo, r.hi) for r in ranges])
                )
        self._tables = {key: _Table(rules) for key, rules in per_table.items()}
        self._others: dict[tuple[str, int], tuple[_Rule, ...]] = {}
        self._regions_cache: dict[tuple[Any, ...], Regions] = {}

    @classmethod
    def from_file(cls, path: str, registry: Registry) -> Explainer:
        policy = load_policy(path)
        try:
            check_groups(policy, registry)  # as fwgen build does
            return cls(policy, registry)
        except PolicyError as error:
            raise policy.chained(error) from None

    # ------------------------------------------------------------------ building

    def _enforced(self, action: str) -> str:
        return self.policy.deny if action == "deny" else "accept"

    def _default_verdict(self, action: str) -> Verdict:
        return Verdict(
            action=action, rule=None, line=None, logged=False, enforced=self._enforced(action)
        )

    def _compile_rule(self, rule: PolicyRule, choice: ProtocolChoice) -> _Rule:
        verdict = Verdict(
            action=rule.action,
            rule=rule.name,
            line=rule.location.line,
            logged=rule.action == "monitor" or rule.log,
            enforced=self._enforced(rule.action),
        )
        families: tuple[int, ...] = (4, 6)
        others: frozenset[int] | None = frozenset()
        icmp_spans: Intervals | None = None
        entries: list[tuple[str, int, int]] = []
        if choice.kind == "icmp":
            assert choice.number is not None and choice.family is not None
            families, others = (choice.family,), frozenset({choice.number})
            spans = resolve_icmp(rule, choice)  # PolicyError for a type of the other family
            if rule.icmp is not None:
                icmp_spans = _merge(list(spans))
                for entry in rule.icmp:
                    found = icmp_types.parse_entry(entry.value, choice.family)
                    assert found is not None  # resolve_icmp read it
                    entries.append((entry.value, *found.span()))
        elif choice.kind == "number":
            assert choice.number is not None
            others = frozenset({choice.number})
        elif choice.kind == "all":
            others = None
        remote_key = "from" if rule.direction == "in" else "to"
        if len(families) == 1:
            for key, listed in ((remote_key, rule.remote), ("local", rule.local)):
                foreign = [n for n in listed or () if n.version != families[0]]
                if foreign:
                    written = rule.protocol.value if rule.protocol else ""
                    raise PolicyError(
                        rule.key_location(key),
                        f"protocol {written} is IPv{families[0]} only, but {key} lists IPv{foreign[0].version} "
                        f"addresses ({foreign[0]}); write them in a rule of their own",
                    )
        remote: dict[int, Intervals | None] = {}
        networks: dict[int, tuple[Network, ...] | None] = {}
        local: dict[int, Intervals | None] = {}
        local_networks: dict[int, tuple[Network, ...] | None] = {}
        for family in (4, 6):
            for given, spans_out, nets_out in ((rule.remote, remote, networks), (rule.local, local, local_networks)):
                if given is None:
                    spans_out[family] = None
                    nets_out[family] = None
                else:
                    ours = [n for n in given if n.version == family]
                    spans_out[family] = _intervals(ours)
                    nets_out[family] = tuple(ours)
        # A family applies when each address list the rule has holds some of its addresses.
        applies = tuple(
            f for f in families
            if (networks[f] is None or networks[f]) and (local_networks[f] is None or local_networks[f])
        )
        if not applies:
            raise PolicyError(
                rule.key_location("local"),
                f"rule '{rule.name}' can never match: its {remote_key} and local addresses share no address family",
            )
        interfaces = tuple(entry.value for entry in rule.interfaces) if rule.interfaces is not None else None
        profiles = tuple(p for p in PROFILES if p in rule.profiles) if rule.profiles is not None else None
        return _Rule(
            index=rule.index, verdict=verdict, others=others, families=applies,
            remote=remote, networks=networks, local=local, local_networks=local_networks,
            interfaces=interfaces, profiles=profiles, icmp=icmp_spans, icmp_entries=tuple(entries),
            plain=rule.local is None and interfaces is None and profiles is None and icmp_spans is None,
        )

    # ------------------------------------------------------------------ queries

    def _candidates(self, direction: str, number: int, port: int | None) -> tuple[_Rule, ...]:
        """The rules of ``direction`` that cover the protocol (and port), in order."""
        if number in (TCP, UDP):
            if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= PORT_MAX:
                raise ValueError(f"port must be an integer 0-{PORT_MAX}, got {port!r}")
            return self._tables[(direction, PROTOCOL_WORDS[number])].candidates(port)
        if port is not None:
            raise ValueError(f"a port applies to tcp and udp only, not to protocol {number}")
        key = (direction, number)
        found = self._others.get(key)
        if found is None:
            found = self._others[key] = tuple(r for r in self._rules[direction] if r.covers(number))
        return found

    def _decide(
        self, direction: str, candidates: tuple[_Rule, ...], family: int, remote: int, rest: _Rest
    ) -> Verdict:
        """The first-match loop: the first rule that matches decides; a rule that matches
        only if a left-out dimension does becomes a condition, and the loop goes on."""
        conditions: list[Condition] = []
        for rule in candidates:
            if family not in rule.families or not rule.matches_remote(family, remote):
                continue
            if rule.plain and not conditions:
                return rule.verdict
            requires = rule.requires(family, rest)
            if requires is None:
                continue
            if requires:
                if not any(_subsumes(c.requires, requires) for c in conditions):
                    conditions.append(Condition(rule.verdict, requires))
                continue
            return dataclasses.replace(rule.verdict, depends=tuple(conditions)) if conditions else rule.verdict
        default = self.defaults[direction]
        return dataclasses.replace(default, depends=tuple(conditions)) if conditions else default

    def _families(self, number: int, address: Address | None, what: str = "local") -> tuple[int, ...]:
        """The address families a question about protocol ``number`` can be in: ICMP's is
        IPv4, ICMPv6's IPv6; a given address narrows them to its own."""
        families = (ICMP_FAMILY[number],) if number in ICMP_FAMILY else (4, 6)
        if address is not None:
            if address.version not in families:
                raise ValueError(
                    f"protocol {protocol_label(number)} is IPv{families[0]} only; {what} {address} is "
                    f"IPv{address.version}"
                )
            families = (address.version,)
        return families

    def _rest(
        self, number: int, local: str | Address | None, interface: str | None, profile: str | None,
        icmp: IcmpQuery | None,
    ) -> tuple[Address | None, str | None, str | None, tuple[int, int] | None]:
        """The optional dimensions of a question, checked."""
        local_address = _address(local, "local") if local is not None else None
        if interface is not None and (not isinstance(interface, str) or not interface or "*" in interface):
            raise ValueError(f"interface must be a name (not a pattern), got {interface!r}")
        if profile is not None:
            profile = _norm(profile, PROFILES, "profile")
        if number in ICMP_FAMILY:
            span: tuple[int, int] | None = _icmp_span(number, icmp)
        elif icmp is not None:
            raise ValueError(f"an ICMP type applies to icmp and icmpv6 only, not to protocol {number}")
        else:
            span = None
        return local_address, interface, profile, span

    def verdict(
        self, direction: str, protocol: str | int, port: int | None, remote: str | Address, *,
        local: str | Address | None = None, interface: str | None = None, profile: str | None = None,
        icmp: IcmpQuery | None = None,
    ) -> Verdict:
        """The verdict for a new connection to/from ``remote``: on ``protocol`` "tcp" or
        "udp" to ``port``, or on "icmp", "icmpv6", a keyword or a number 0-255 (``port``
        None; ``icmp`` the (type, code) for ICMP and ICMPv6, the code None for any).
        ``local``, ``interface`` and ``profile`` are the host's address, the interface
        (arrival for in, leaving for out) and the Windows profile; when a rule restricts
        one that is not given, the verdict ``depends`` on it."""
        direction = _norm(direction, DIRECTIONS, "direction")
        number = PROTOCOL_NUMBERS.get(protocol) if isinstance(protocol, str) else None
        if number is None:
            number = protocol_number(protocol)
        address = _address(remote, "remote")
        candidates = self._candidates(direction, number, port)
        if local is None and interface is None and profile is None and icmp is None and number in (TCP, UDP):
            rest = _NOTHING  # the harness's question
        else:
            local_address, interface, profile, span = self._rest(number, local, interface, profile, icmp)
            self._families(number, address, "remote")
            if local_address is not None and local_address.version != address.version:
                raise ValueError(f"local {local_address} and remote {address} are of different address families")
            rest = _Rest(int(local_address) if local_address is not None else None, interface, profile, span)
        return self._decide(direction, candidates, address.version, int(address), rest)

    def regions(
        self, direction: str, protocol: str | int, port: int | None = None, *,
        local: str | Address | None = None, interface: str | None = None, profile: str | None = None,
        icmp: IcmpQuery | None = None,
    ) -> Regions:
        """The answer for every remote address: each distinct verdict with the networks
        (collapsed CIDRs, IPv4 first) where it applies. Ordered by the deciding rule's
        position in the policy (for one that depends on a left-out dimension, its first
        condition's), the default last. Together the networks cover exactly
        the address space of the question's families (0.0.0.0/0 and ::/0; for ICMP only
        0.0.0.0/0, for ICMPv6 ::/0, with ``local`` that address's), without overlap."""
        direction = _norm(direction, DIRECTIONS, "direction")
        number = protocol_number(protocol)
        candidates = self._candidates(direction, number, port)
        local_address, interface, profile, span = self._rest(number, local, interface, profile, icmp)
        families = self._families(number, local_address)
        key = (direction, number, candidates, families, local_address, interface, profile, span)
        cached = self._regions_cache.get(key)
        if cached is None:
            rest = _Rest(int(local_address) if local_address is not None else None, interface, profile, span)
            cached = self._partition(direction, candidates, families, rest)
            self._regions_cache[key] = cached
        return [(list(nets), verdict) for nets, verdict in cached]

    def _partition(
        self, direction: str, candidates: tuple[_Rule, ...], families: tuple[int, ...], rest: _Rest
    ) -> Regions:
        order: dict[Verdict, tuple[int, int]] = {}
        pieces: dict[Verdict, list[Network]] = {}
        for family in families:
            size = 1 << _BITS[family]
            cuts = {0, size}
            for rule in candidates:
                nets = rule.networks[family]
                for net in nets or ():
                    cuts.add(int(net.network_address))
                    cuts.add(int(net.broadcast_address) + 1)
            bounds = sorted(cuts)
            make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
            run_start, run_verdict = 0, None
            for lo in bounds[:-1]:
                verdict = self._decide(direction, candidates, family, lo, rest)
                if verdict != run_verdict:
                    if run_verdict is not None:
                        pieces.setdefault(run_verdict, []).extend(
                            ipaddress.summarize_address_range(make(run_start), make(lo - 1))
                        )
                    run_start, run_verdict = lo, verdict
            assert run_verdict is not None
            pieces.setdefault(run_verdict, []).extend(
                ipaddress.summarize_address_range(make(run_start), make(size - 1))
            )
        for verdict in pieces:
            order[verdict] = self._rule_position(verdict)
        result: list[tuple[list[Network], Verdict]] = []
        for verdict in sorted(pieces, key=lambda v: order[v]):
            found = pieces[verdict]
            v4 = [n for n in found if isinstance(n, ipaddress.IPv4Network)]
            v6 = [n for n in found if isinstance(n, ipaddress.IPv6Network)]
            collapsed: list[Network] = [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]
            result.append((collapsed, verdict))
        return result

    def _rule_position(self, verdict: Verdict) -> tuple[int, int]:
        """Where the first rule that may decide ``verdict`` is (its first condition's, for
        one that depends on a left-out dimension), then its own rule's; a default last."""
        first = verdict.depends[0].verdict if verdict.depends else verdict
        return (
            _DEFAULT_KEY if first.rule is None else self._index_by_name[first.rule],
            _DEFAULT_KEY if verdict.rule is None else self._index_by_name[verdict.rule],
        )

    # ------------------------------------------------------------------ presentation

    def source(self, verdict: Verdict, direction: str) -> str:
        """``rule admin-ssh, edge.yaml:14`` or ``default inbound deny``."""
        if verdict.rule is None:
            which = "inbound" if direction == "in" else "outbound"
            return f"default {which} {verdict.action}"
        return f"rule {verdict.rule}, {self.file_of[verdict.rule]}:{verdict.line}"

    def selected(self, verdict: Verdict, what: tuple[str, int] | None) -> list[tuple[str, tuple[str, ...]]]:
        """When ``verdict``'s rule is a select rule and ``what`` (protocol, port) a tcp or
        udp question: the selectors that put the port in it, each with the registry names
        that make it so ('' for an unnamed record); else []."""
        selectors = self._selectors.get(verdict.rule) if verdict.rule is not None else None
        if not selectors or what is None:
            return []
        return registry_select.reasons(self.registry, selectors, *what)

    def is_select(self, verdict: Verdict) -> bool:
        """Whether ``verdict``'s rule is a select rule."""
        return verdict.rule in self._selectors

    def because(self, verdict: Verdict, what: tuple[str, int] | None) -> str:
        """`` (select undocumented: mpshrsv)`` for a select rule's verdict, else ''."""
        found = self.selected(verdict, what)
        return f" ({registry_select.describe_reasons(found)})" if found else ""

    def port_label(self, protocol: str, port: int) -> str:
        """``1261 (mpshrsv)``; the bare number when the registry names nothing there."""
        names = self.registry.names_at(protocol, port)
        return f"{port} ({', '.join(names)})" if names else str(port)


# ---------------------------------------------------------------------- helpers


def service_ports(registry: Registry, name: str, protocol: str) -> list[int]:
    """Every port the registry gives ``name`` on ``protocol`` (ranges expanded), sorted.
    ``PolicyError`` (unlocated) for an unknown name or one without a port there."""
    pairs = registry.pairs(name)
    if pairs is None:
        suggestions = registry.suggest(name, limit=1)
        hint = f" (did you mean '{suggestions[0]}'?)" if suggestions else ""
        raise PolicyError(None, f"unknown service '{name}'{hint}")
    if not pairs:
        raise PolicyError(
            None,
            f"service '{name}' has no tcp or udp port in the IANA registry; "
            "ask for a port number instead",
        )
    ports = sorted(
        {port for proto, lo, hi in pairs if proto == protocol for port in range(lo, hi + 1)}
    )
    if not ports:
        registered = ", ".join(
            f"{lo}/{proto}" if lo == hi else f"{lo}-{hi}/{proto}" for proto, lo, hi in pairs
        )
        raise PolicyError(
            None,
            f"service '{name}' is not registered for {protocol} (it is {registered}); "
            f"to ask about the number anyway, give --port {pairs[0][1]}",
        )
    return ports


def protocol_names(number: int) -> list[str]:
    """The IANA keywords (as a policy writes them) of protocol ``number``: ``["esp"]``."""
    return [row.name for row in protocols.bundled().by_number(number) if row.name]


def protocol_label(number: int) -> str:
    """``tcp``, ``udp``, ``icmp``, ``icmpv6`` (the policy's words); any other protocol by
    number and IANA keyword: ``50 (esp)``; the bare number when it has no keyword."""
    if number in (TCP, UDP):
        return PROTOCOL_WORDS[number]
    if number in ICMP_FAMILY:
        return "icmp" if ICMP_FAMILY[number] == 4 else "icmpv6"
    names = protocol_names(number)
    return f"{number} ({', '.join(names)})" if names else str(number)


def icmp_label(number: int, icmp: IcmpQuery) -> str:
    """``type 8 (echo-request)``, ``type 3/4 (destination-unreachable)``, ``type 200``."""
    kind, code = icmp
    name = icmp_types.type_name(ICMP_FAMILY[number], kind)
    text = f"type {kind}" if code is None else f"type {kind}/{code}"
    return f"{text} ({name})" if name else text


def describe(verdict: Verdict) -> str:
    """``allow``, ``allow, logged``, ``monitor, logged``, ``deny by drop``,
    ``deny by reject, logged``."""
    text = verdict.action
    if verdict.action == "deny":
        text += f" by {verdict.enforced}"
    if verdict.logged:
        text += ", logged"
    return text


def _requirement_text(requirement: Requirement) -> str:
    """``interface is wg0 or matches tun*``, ``local is 10.0.0.1 or is in 10.1.0.0/16``,
    ``profile is domain or private``, ``icmp type is echo-request or 3/4``."""
    values = requirement.values
    if requirement.dimension == "interface":
        exact = [v for v in values if not v.endswith("*")]
        patterns = [v for v in values if v.endswith("*")]
        parts = [f"{verb} {' or '.join(vs)}" for verb, vs in (("is", exact), ("matches", patterns)) if vs]
        return "interface " + " or ".join(parts)
    if requirement.dimension == "local":
        nets = [ipaddress.ip_network(v) for v in values]
        hosts = [str(n.network_address) for n in nets if n.num_addresses == 1]
        wider = [str(n) for n in nets if n.num_addresses > 1]
        parts = [f"{verb} {' or '.join(vs)}" for verb, vs in (("is", hosts), ("is in", wider)) if vs]
        return "local " + " or ".join(parts)
    word = "icmp type" if requirement.dimension == "icmp-type" else requirement.dimension
    return f"{word} is {' or '.join(values)}"


def describe_condition(condition: Condition) -> str:
    """``interface is wg0``, ``local is in 192.0.2.0/24 and profile is domain``."""
    return " and ".join(_requirement_text(r) for r in condition.requires)


def _otherwise_index(regions: list[tuple[list[Network], Verdict]]) -> int:
    """The outcome told as "otherwise": the one needing the most networks to list
    (ties: the later one, so the default when it is among them)."""
    best = 0
    for i, (nets, _) in enumerate(regions):
        if len(nets) >= len(regions[best][0]):
            best = i
    return best


def _outcome(
    explainer: Explainer, verdict: Verdict, direction: str, scope: str = "", what: tuple[str, int] | None = None
) -> str:
    """``allow[ SCOPE] (rule ...)``; for a verdict that depends on a left-out dimension,
    each condition and then the verdict itself, ``allow[ SCOPE] when interface is wg0
    (rule vpn, ...), else deny by drop (default ...)``. A select rule's verdict on
    ``what`` (protocol, port) adds why it covers the port: ``(select undocumented: mpshrsv)``."""
    at = f" {scope}" if scope else ""
    if verdict.decided:
        return f"{describe(verdict)}{at} ({explainer.source(verdict, direction)}){explainer.because(verdict, what)}"
    parts = []
    for i, condition in enumerate(verdict.depends):
        parts.append(
            f"{describe(condition.verdict)}{at if i == 0 else ''} when {describe_condition(condition)} "
            f"({explainer.source(condition.verdict, direction)}){explainer.because(condition.verdict, what)}"
        )
    parts.append(f"{describe(verdict)} ({explainer.source(verdict, direction)}){explainer.because(verdict, what)}")
    return ", else ".join(parts)


def _depends_prefix(verdicts: list[Verdict]) -> str:
    found = {d for verdict in verdicts for d in verdict.depends_on}
    if not found:
        return ""
    return "depends on " + ", ".join(f"--{d}" for d in DIMENSIONS if d in found) + ": "


def query_label(
    explainer: Explainer, direction: str, protocol: str | int, port: int | None, remote: Address | None, *,
    local: Address | None = None, interface: str | None = None, profile: str | None = None,
    icmp: IcmpQuery | None = None,
) -> str:
    """``in tcp 22 (ssh) from 192.0.2.7``, ``out 50 (esp) to 192.0.2.7 local 10.0.0.1``,
    ``in icmp type 8 (echo-request) interface eth0 profile public``."""
    number = protocol_number(protocol)
    if number in (TCP, UDP):
        assert port is not None
        text = f"{direction} {PROTOCOL_WORDS[number]} {explainer.port_label(PROTOCOL_WORDS[number], port)}"
    else:
        text = f"{direction} {protocol_label(number)}"
        if icmp is not None and number in ICMP_FAMILY:
            text += f" {icmp_label(number, icmp)}"
    if remote is not None:
        text += f" {'from' if direction == 'in' else 'to'} {remote}"
    for word, value in (("local", local), ("interface", interface), ("profile", profile)):
        if value is not None:
            text += f" {word} {value}"
    return text


def format_answer(
    explainer: Explainer, direction: str, protocol: str | int, port: int | None, remote: Address | None, *,
    local: Address | None = None, interface: str | None = None, profile: str | None = None,
    icmp: IcmpQuery | None = None,
) -> str:
    """One line: ``in tcp 22 (ssh) from 192.0.2.7: allow (rule admin-ssh, edge.yaml:14)``,
    or without a remote, the any-address answer. An answer that depends on a left-out
    dimension starts ``depends on --interface: ``."""
    dims: dict[str, Any] = {"local": local, "interface": interface, "profile": profile, "icmp": icmp}
    label = query_label(explainer, direction, protocol, port, remote, **dims)
    what = _what(protocol, port)
    peer = "from" if direction == "in" else "to"
    note = "; ".join(n for n in (linux_before_rules(protocol, icmp), published_note(explainer, direction)) if n)
    note = f"; {note}" if note else ""
    if remote is not None:
        verdict = explainer.verdict(direction, protocol, port, remote, **dims)
        return f"{label}: {_depends_prefix([verdict])}{_outcome(explainer, verdict, direction, what=what)}{note}"
    regions = explainer.regions(direction, protocol, port, **dims)
    prefix = _depends_prefix([verdict for _, verdict in regions])
    if len(regions) == 1:
        return f"{label}: {prefix}{_outcome(explainer, regions[0][1], direction, what=what)}{note}"
    other = _otherwise_index(regions)
    parts = []
    for i, (nets, verdict) in enumerate(regions):
        if i != other:
            parts.append(_outcome(explainer, verdict, direction, f"{peer} {', '.join(str(n) for n in nets)}", what))
    parts.append(_outcome(explainer, regions[other][1], direction, "otherwise", what))
    return f"{label}: {prefix}" + "; ".join(parts) + note


def _what(protocol: str | int, port: int | None) -> tuple[str, int] | None:
    """(protocol word, port) of a tcp or udp question; None for other protocols."""
    number = protocol_number(protocol)
    return (PROTOCOL_WORDS[number], port) if number in (TCP, UDP) and port is not None else None


def linux_before_rules(protocol: str | int, icmp: IcmpQuery | None) -> str | None:
    """For an ICMP message that starts no connection (a reply, an error, neighbour
    discovery): what iptables and nftables do with it before any rule, which the verdict
    (the policy's, and Windows Firewall's) does not say. None for everything else."""
    number = protocol_number(protocol)
    if icmp is None or number not in ICMP_FAMILY:
        return None
    fate = icmp_types.linux_fate(ICMP_FAMILY[number], icmp[0])
    return f"iptables and nftables decide this type before any rule: {fate}" if fate else None


def judges_published(explainer: Explainer, direction: str) -> bool:
    """Whether an inbound answer also holds for forwarded connections DNATed to a local
    container (``published_ports: enforce``; the Linux targets)."""
    return direction == "in" and explainer.policy.published_ports == "enforce"


def published_note(explainer: Explainer, direction: str) -> str | None:
    if not judges_published(explainer, direction):
        return None
    note = ("the same for connections to ports published to local containers, by their original port and "
            "address (published_ports: enforce; iptables and nftables)")
    if explainer.policy.deny == "reject":  # iptables judges them in the mangle table, which has no REJECT
        note += ", but iptables drops a denied one instead of rejecting it"
    return note


def _fields(
    explainer: Explainer, verdict: Verdict, direction: str, what: tuple[str, int] | None = None
) -> dict[str, Any]:
    which = "inbound" if direction == "in" else "outbound"
    out: dict[str, Any] = {
        "verdict": verdict.action,
        "rule": verdict.rule,
        "file": explainer.file_of[verdict.rule] if verdict.rule is not None else None,
        "line": verdict.line,
        "default": f"{which} {verdict.action}" if verdict.rule is None else None,
        "logged": verdict.logged,
        "enforced": verdict.enforced,
    }
    if explainer.is_select(verdict):  # why the select rule covers the port (null name: an unnamed row)
        out["select"] = [
            {"selector": selector, "names": [name or None for name in names]}
            for selector, names in explainer.selected(verdict, what)
        ]
    return out


def _verdict_fields(
    explainer: Explainer, verdict: Verdict | None, direction: str, what: tuple[str, int] | None = None
) -> dict[str, Any]:
    if verdict is None:
        return {
            "verdict": None, "rule": None, "file": None, "line": None,
            "default": None, "logged": None, "enforced": None, "depends": None,
        }
    out = _fields(explainer, verdict, direction, what)
    out["depends"] = [
        {"requires": {r.dimension: list(r.values) for r in c.requires},
         **_fields(explainer, c.verdict, direction, what)}
        for c in verdict.depends
    ]
    return out


def answer_json(
    explainer: Explainer, direction: str, protocol: str | int, port: int | None, remote: Address | None, *,
    local: Address | None = None, interface: str | None = None, profile: str | None = None,
    icmp: IcmpQuery | None = None,
) -> dict[str, Any]:
    """One answer of ``--json``. Without a remote, the verdict fields describe the
    answer when it is the same for every address, and are null when it depends on the
    address; ``regions`` then lists every outcome. ``depends`` lists the conditions
    on left-out dimensions (empty when there are none)."""
    number = protocol_number(protocol)
    what = _what(protocol, port)
    dims: dict[str, Any] = {"local": local, "interface": interface, "profile": profile, "icmp": icmp}
    out: dict[str, Any] = {
        "port": port,
        "port_names": explainer.registry.names_at(PROTOCOL_WORDS[number], port)
        if number in (TCP, UDP) and port is not None else [],
    }
    if remote is not None:
        verdict = explainer.verdict(direction, protocol, port, remote, **dims)
        out.update(_verdict_fields(explainer, verdict, direction, what))
    else:
        regions = explainer.regions(direction, protocol, port, **dims)
        uniform = regions[0][1] if len(regions) == 1 else None
        out.update(_verdict_fields(explainer, uniform, direction, what))
        out["regions"] = [
            {"networks": [str(n) for n in nets], **_verdict_fields(explainer, verdict, direction, what)}
            for nets, verdict in regions
        ]
    out["linux_before_rules"] = linux_before_rules(protocol, icmp)
    out["published_ports"] = judges_published(explainer, direction)
    return out
