"""A strict model of Windows Firewall that executes fwgen's ``.cmd`` scripts.

It follows Microsoft's documentation:

* Microsoft Learn, "Windows Firewall rules": "Explicitly defined allow rules take
  precedence over the default block setting"; "Explicit block rules take precedence over
  any conflicting allow rules"; "Windows Firewall doesn't support weighted,
  administrator-assigned rule ordering." (Its "More specific rules take precedence over
  less specific rules, except if there are explicit block rules" only ranks allow rules
  among themselves, never changing a verdict, so the model has no notion of specificity.)
* [MS-FASP] Firewall and Advanced Security Protocol, 2.2.34 FW_RULE_ACTION: "Allow-bypass
  rules take precedence over block rules, and block rules take precedence over allow
  rules"; bypass rules "are applicable only to rules that at least specify the
  FW_RULE_FLAGS_AUTHENTICATE flag", which "MUST be set only on rules that have the allow
  actions" (FW_RULE_FLAGS); FW_RULE_FLAGS_ACTIVE: "The rule is enabled if this flag is set;
  otherwise, it is disabled."
* Microsoft Learn, Windows Commands, "netsh advfirewall" (and TechNet "Netsh AdvFirewall
  Firewall Commands"): the add rule parameters and values
  ("localport=0-65535|<port range>[,...]|RPC|RPC-EPMap|IPHTTPS|any", ...) and remarks:
  "Rule name should be unique and can't be "all"", "If action=bypass, the remote computer
  group must be specified when dir=in", "If a remote computer or user group is specified,
  security must be: authenticate, authenc, authdynenc, or authnoencap", "Edge can only be
  specified for inbound rules", "Authdynenc is valid only when dir=in"; delete rule: "If
  multiple matches are found, all matching rules are deleted.", "If name=all is specified,
  all rules are deleted"; firewallpolicy: "blockinbound - Blocks inbound connections that
  don't match an inbound rule", "blockinboundalways - Blocks all inbound connections even
  if the connection matches a rule". A delete matching nothing prints "No rules match the
  specified criteria." and exits 1 (observed netsh behaviour: the reference has no exit
  codes).
* Microsoft Learn, "Command prompt (Cmd.exe) command-line string limitation": "The maximum
  length of the string that you can use at the command prompt is 8191 characters."
* Protocols. netsh add rule: "protocol=0-255|icmpv4|icmpv6|icmpv4:type,code|icmpv6:type,code|
  tcp|udp|any", "interfacetype=wireless|lan|ras|any". [MS-FASP] 2.2.37 FW_RULE: wIpProtocol
  "If the value is within the range 0 to 255, the value describes a protocol in IETF IANA
  numbers ... If the value is 256, the rule matches any protocol" (IANA: 1 is ICMP, the
  ICMP of IPv4; 58 is IPv6-ICMP); V4TypeCodeList "A condition that specifies the list of ICMP
  types of the traffic that the rule matches. This field applies only when wIpProtocol
  specifies ICMP v4" (V6TypeCodeList likewise for ICMP v6); LocalAddresses "A condition that
  specifies the addresses of the local host of the traffic that the rule matches. An empty
  LocalAddresses structure means that this condition is not applied" (RemoteAddresses
  likewise); dwLocalInterfaceTypes "0x00000000 means that the condition matches all interface
  types"; and the semantic checks "If the wIpProtocol field is not 1, 6, 17, or 58, the
  LocalPorts, RemotePorts, V4TypeCodeList, and V6TypeCodeList field MUST be empty", "The
  dwV4AddressKeywords and dwV6AddressKeywords fields of LocalAddresses MUST be 0". 2.2.16
  FW_ICMP_TYPE_CODE: "It specifies an ICMP type and either its specific code or all codes for
  that type"; "When wCode contains 0x100, it expresses any ICMP code belonging to the
  corresponding ICMP type" (there is no value for every type with one code). 2.2.24
  FW_RULE_STATUS_SEMANTIC_ERROR_LADDR_INTF: "A local address cannot be used together with
  either an interface or an interface type." INetFwRule::IcmpTypesAndCodes: ""*" indicates
  all ICMP types and codes."

The model's choices where those leave room:

* ``protocol=icmpv4``, ``protocol=1`` and ``protocol=icmpv4:any,any`` all denote every ICMPv4
  message (no type-code condition), so they build the same Rule (``icmp=None``); likewise
  icmpv6 and 58. ``icmpv4:any,CODE`` with a number for CODE is refused: FW_ICMP_TYPE_CODE
  has no "every type" value, and netsh does not say what it makes of it.
* ICMPv4 (1) is carried by IPv4 and ICMPv6 (58) by IPv6 only: a protocol 1 rule never
  matches an IPv6 connection, nor a protocol 58 rule an IPv4 one; an address of the other
  family never matches a localip or remoteip list. A rule no connection could match (ICMP of
  one family with localip or remoteip only of the other, or localip only of one family and
  remoteip only of the other) is refused: netsh's reaction to it is not documented.
* A rule restricting what a queried connection does not say (the other port, the local
  address when no ``local_addr`` is given, the interface type) makes ``verdict`` raise:
  one connection's fields cannot decide it.

Where the documentation leaves a behaviour open (address or port keywords, subnets with
host bits, ``% ^ & | < >`` anywhere but the two known suffixes, non-ASCII text, netsh
abbreviations), the model refuses with ScriptError rather than guess.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

NO_MATCH = "No rules match the specified criteria."
CMD_LINE_LIMIT = 8191  # a line of this many characters or more is refused
PROFILES = ("domain", "private", "public")
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17}  # the protocols with ports
ICMP_NUMBERS = {"icmpv4": 1, "icmpv6": 58}  # the protocols with ICMP types and codes
ICMP_FAMILY = {1: 4, 58: 6}  # the IP version that carries each
PROTOCOL_NAMES = {**PROTOCOL_NUMBERS, **ICMP_NUMBERS}  # the names protocol= and verdict take
AUTHENTICATED = ("authenticate", "authenc", "authdynenc", "authnoencap")
Span = tuple[int, int]  # an inclusive range of ports, or of addresses as integers


class ScriptError(Exception):
    """The script is malformed or leaves the modelled subset. Names the line."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line, self.reason = line, reason


class NetshError(Exception):
    """A well-formed netsh command that fails when it runs (netsh exits 1)."""


@dataclass(frozen=True)
class Rule:
    """One rule of the store; ``None`` means any."""

    name: str
    dir: str  # in | out
    action: str  # allow | block | bypass
    protocol: int | None = None  # IP protocol number 0-255: icmpv4 1, tcp 6, udp 17, icmpv6 58
    icmp: tuple[int, int | None] | None = None  # icmpv4:/icmpv6: (type, code), code None: every code
    localport: tuple[Span, ...] | None = None
    remoteport: tuple[Span, ...] | None = None
    localip: tuple[tuple[int, Span], ...] | None = None  # (IP version, span)
    remoteip: tuple[tuple[int, Span], ...] | None = None
    profile: frozenset[str] = frozenset(PROFILES)
    enable: bool = True
    description: str = ""
    edge: str = "no"
    interfacetype: str = "any"
    security: str = "notrequired"
    rmtcomputergrp: str | None = None


@dataclass
class Profile:
    """One profile's settings, as on a fresh install."""

    state: str = "on"
    inbound: str = "blockinbound"  # | allowinbound | blockinboundalways
    outbound: str = "allowoutbound"  # | blockoutbound
    log_allowed: bool = False
    log_dropped: bool = False


# --- add rule parameter values -------------------------------------------------------


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value.lower() not in allowed:
        raise ValueError(f"{key}={value!r}: expected one of {'|'.join(allowed)}")
    return value.lower()


def _items(key: str, value: str) -> list[str]:
    items = value.split(",")
    if "" in items or (len(items) > 1 and "any" in (i.lower() for i in items)):
        raise ValueError(f"{key}={value!r}: empty item, or 'any' inside a list")
    return items


def _ports(key: str, value: str) -> tuple[Span, ...] | None:
    if value.lower() == "any":
        return None
    spans = []
    for item in _items(key, value):
        if re.fullmatch(r"[A-Za-z-]+", item):
            raise ValueError(f"{key}={item}: port keywords are not supported by the model")
        match = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", item)
        lo, hi = (int(match[1]), int(match[2] or match[1])) if match else (1, 0)
        if not lo <= hi <= 65535:
            raise ValueError(f"{key}: {item!r} is not a port or a range within 0-65535")
        spans.append((lo, hi))
    return tuple(spans)


def _addresses(key: str, value: str) -> tuple[tuple[int, Span], ...] | None:
    """Single addresses, CIDR subnets (without host bits) and ``first-last`` ranges, as
    [MS-FASP] allows them: 2.2.4 FW_IPV4_SUBNET ("A dwSubNetMask of 0x00000000 is
    invalid"); 2.2.6 FW_IPV6_SUBNET ("dwNumPrefixBits MUST NOT be greater than 128 and
    not less than 1. The address SHOULD NOT be an unspecified address ... and it MUST
    not be a loopback address"); 2.2.10 FW_IPV6_ADDRESS_RANGE ("Begin and End MUST NOT
    contain either an unspecified or a loopback address"; a single address is a range
    whose Begin equals its End, [MS-GPFAS] 2.2.2.11). The model refuses the SHOULD NOT
    too: a script must not depend on what Windows does there. ``localip=`` and
    ``remoteip=`` are both FW_ADDRESSES ([MS-FASP] 2.2.37), so both are checked here alike
    (and keywords, which LocalAddresses MUST NOT have, are refused for both)."""
    if value.lower() == "any":
        return None
    spans = []
    for item in _items(key, value):
        if item.isalpha():
            raise ValueError(f"{key}={item}: address keywords are not supported by the model")
        try:
            if "/" in item:
                if not re.fullmatch(r"[^/]+/\d{1,3}", item):
                    raise ValueError("the prefix is not a length")
                net = ipaddress.ip_network(item)
                if net.prefixlen == 0:
                    raise ValueError("a subnet's prefix length (mask) must not be 0")
                if net.version == 6 and (net.network_address.is_unspecified or net.network_address.is_loopback):
                    raise ValueError("an IPv6 subnet's address must be neither :: nor ::1")
                lo, hi = net.network_address, net.broadcast_address
            else:
                first, dash, last = item.partition("-")
                lo, hi = ipaddress.ip_address(first), ipaddress.ip_address(last if dash else first)
                if lo.version != hi.version or int(lo) > int(hi):
                    raise ValueError("the range mixes families or is reversed")
                if lo.version == 6 and any(a.is_unspecified or a.is_loopback for a in (lo, hi)):
                    raise ValueError("an IPv6 range must neither begin nor end at :: or ::1")
        except ValueError as exc:
            raise ValueError(f"{key}: {item!r} is not an address, subnet or range: {exc}") from None
        spans.append((lo.version, (int(lo), int(hi))))
    return tuple(spans)


def _protocol(value: str) -> tuple[int | None, tuple[int, int | None] | None]:
    """The protocol number (None: any) and the ICMP (type, code) condition of ``protocol=``
    (None: every message; a code of None: every code of the type)."""
    text = value.lower()
    if text == "any":
        return None, None
    if text in PROTOCOL_NAMES:
        return PROTOCOL_NAMES[text], None
    if re.fullmatch(r"\d{1,3}", text) and int(text) <= 255:
        return int(text), None
    match = re.fullmatch(r"(icmpv4|icmpv6):(\d{1,3}|any),(\d{1,3}|any)", text)
    if not match:
        raise ValueError(f"protocol={value!r}: expected 0-255|icmpv4|icmpv6|icmpv4:type,code|"
                         "icmpv6:type,code|tcp|udp|any")
    icmp_type, code = (None if item == "any" else int(item) for item in (match[2], match[3]))
    if any(item is not None and item > 255 for item in (icmp_type, code)):
        raise ValueError(f"protocol={value!r}: an ICMP type and code are 0-255 or any")
    if icmp_type is None:
        if code is not None:
            raise ValueError(f"protocol={value!r}: FW_ICMP_TYPE_CODE specifies a type and one or all "
                             "of its codes; a code of every type is not modelled")
        return ICMP_NUMBERS[match[1]], None  # any,any: every message, as plain icmpv4/icmpv6
    return ICMP_NUMBERS[match[1]], (icmp_type, code)


def _families(addresses: tuple[tuple[int, Span], ...] | None) -> set[int]:
    return {4, 6} if addresses is None else {version for version, _ in addresses}


def _profiles(value: str) -> frozenset[str]:
    if value.lower() == "any":
        return frozenset(PROFILES)
    items = [_choice("profile", item, PROFILES) for item in _items("profile", value)]
    if len(set(items)) != len(items):
        raise ValueError(f"profile={value!r}: a profile is repeated")
    return frozenset(items)


# --- netsh arguments and add rule ----------------------------------------------------


def tokenize(text: str) -> list[tuple[str | None, str]]:
    """netsh arguments, split at spaces outside double quotes, as (key, value) pairs with
    the key lower-cased (netsh ignores its case) and the value's enclosing quotes removed;
    a bare word gives (None, word). Quotes anywhere else are refused."""
    if not all(" " <= ch <= "~" for ch in text) or text.count('"') % 2:
        raise ValueError("character outside printable ASCII, or unbalanced double quote")
    tokens: list[tuple[str | None, str]] = []
    for raw in re.findall(r'(?:[^ "]|"[^"]*")+', text):
        pair = re.fullmatch(r'([A-Za-z]+)=(?:"([^"]*)"|([^"]+))', raw)
        if pair:
            tokens.append((pair[1].lower(), pair[2] if pair[2] is not None else pair[3]))
        elif re.fullmatch(r"[A-Za-z][A-Za-z,]*", raw):
            tokens.append((None, raw))
        else:
            raise ValueError(f"malformed netsh argument {raw!r}")
    return tokens


def _pairs(tokens: list[tuple[str | None, str]]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for key, value in tokens:
        if key is None or key in pairs:
            raise ValueError(f"stray word {value!r}" if key is None else f"{key} given twice")
        pairs[key] = value
    return pairs


ADD_PARAMETERS = ("name", "dir", "action", "protocol", "localport", "remoteport", "localip",
                  "remoteip", "profile", "enable", "description", "edge", "interfacetype",
                  "security", "rmtcomputergrp")
NOT_MODELLED = ("program", "service", "rmtusrgrp")  # valid netsh, outside the model


def rule_from_parameters(params: dict[str, str]) -> Rule:
    """Validate ``add rule`` parameters as netsh does and build the stored rule."""
    for key in params:
        if key not in ADD_PARAMETERS:
            raise ValueError(f"parameter {key} is " + (
                "not supported by the model" if key in NOT_MODELLED else "unknown"))
    missing = [key for key in ("name", "dir", "action") if key not in params]
    if missing:
        raise ValueError(f"missing required parameter(s) {', '.join(missing)}")
    name = params["name"]
    if not name.strip() or name.lower() == "all":
        raise ValueError(f"name={name!r}: a rule name must be non-empty and not 'all'")
    direction = _choice("dir", params["dir"], ("in", "out"))
    action = _choice("action", params["action"], ("allow", "block", "bypass"))
    protocol, icmp = _protocol(params.get("protocol", "any"))
    localport = _ports("localport", params.get("localport", "any"))
    remoteport = _ports("remoteport", params.get("remoteport", "any"))
    if (localport or remoteport) and protocol not in PROTOCOL_NUMBERS.values():
        raise ValueError("localport and remoteport need protocol=tcp or protocol=udp")
    localip = _addresses("localip", params.get("localip", "any"))
    remoteip = _addresses("remoteip", params.get("remoteip", "any"))
    interfacetype = _choice("interfacetype", params.get("interfacetype", "any"),
                            ("wireless", "lan", "ras", "any"))
    if localip is not None and interfacetype != "any":
        raise ValueError("a local address cannot be used together with an interface type "
                         "([MS-FASP] FW_RULE_STATUS_SEMANTIC_ERROR_LADDR_INTF)")
    families = _families(localip) & _families(remoteip) & (
        {ICMP_FAMILY[protocol]} if protocol in ICMP_FAMILY else {4, 6})
    if not families:
        raise ValueError("the rule matches no connection: its protocol, localip and remoteip leave "
                         "no IP version (ICMPv4 is IPv4's, ICMPv6 IPv6's); netsh's reaction is not documented")
    if "edge" in params and direction != "in":
        raise ValueError("edge can only be specified for inbound rules")
    security = _choice("security", params.get("security", "notrequired"),
                       AUTHENTICATED + ("notrequired",))
    group = params.get("rmtcomputergrp")
    problems = [
        (security != "notrequired" and action == "block",
         "security (FW_RULE_FLAGS_AUTHENTICATE) is for allow and bypass rules only"),
        (security == "authdynenc" and direction != "in", "authdynenc is valid only for dir=in"),
        (group is not None and security == "notrequired", "rmtcomputergrp needs security="),
        (action == "bypass" and security == "notrequired", "action=bypass needs security="),
        (action == "bypass" and direction == "in" and group is None,
         "action=bypass with dir=in needs rmtcomputergrp"),
    ]
    for failed, reason in problems:
        if failed:
            raise ValueError(reason)
    return Rule(
        name=name, dir=direction, action=action, protocol=protocol, icmp=icmp,
        localport=localport, remoteport=remoteport, localip=localip, remoteip=remoteip,
        profile=_profiles(params.get("profile", "any")),
        enable=_choice("enable", params.get("enable", "yes"), ("yes", "no")) == "yes",
        description=params.get("description", ""),
        edge=_choice("edge", params.get("edge", "no"), ("yes", "deferapp", "deferuser", "no")),
        interfacetype=interfacetype, security=security, rmtcomputergrp=group,
    )


def parse_rule(text: str) -> Rule:
    """``parse_rule('name=x dir=in action=block protocol=tcp localport=80')``."""
    return rule_from_parameters(_pairs(tokenize(text)))


# --- The rule store ------------------------------------------------------------------


@dataclass
class RuleStore:
    """The local rule store: rules without order, duplicate names allowed, and the
    settings of the three profiles."""

    rules: list[Rule] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=lambda: {p: Profile() for p in PROFILES})
    # For tests of a script's failure path: the add with this number (counted from 1 over
    # the store's life) fails as netsh fails a rule Windows refuses when it runs.
    failing_add: int | None = None
    adds: int = 0

    def add(self, rule: Rule) -> None:
        self.adds += 1
        if self.adds == self.failing_add:
            raise NetshError("An error occurred while adding the rule (injected by the test).")
        self.rules.append(rule)

    def rename(self, name: str, new_name: str) -> int:
        """``set rule name=X new name=Y``: every rule called ``name`` is renamed."""
        found = [i for i, r in enumerate(self.rules) if r.name.lower() == name.lower()]
        if not found:
            raise NetshError(NO_MATCH)
        for i in found:
            self.rules[i] = dataclasses.replace(self.rules[i], name=new_name)
        return len(found)

    def delete(self, name: str) -> int:
        """Delete every rule called ``name`` (compared case-insensitively; ``all`` means
        every rule) and return how many; NetshError when there is none."""
        keep = [r for r in self.rules if name.lower() not in ("all", r.name.lower())]
        deleted = len(self.rules) - len(keep)
        if not deleted:
            raise NetshError(NO_MATCH)
        self.rules = keep
        return deleted

    def snapshot(self) -> tuple[tuple[Rule, ...], dict[str, Profile]]:
        """Everything a script can change; equal for equal stores (rules have no order)."""
        profiles = {name: Profile(**vars(settings)) for name, settings in self.profiles.items()}
        return tuple(sorted(self.rules, key=repr)), profiles

    def verdict(self, direction: str, protocol: str | int, port: int | None, remote_addr: str,
                profile: str = "public", *, local_addr: str | None = None,
                icmp: tuple[int, int] | None = None, authenticated: bool = False) -> str:
        """"allow" or "block" for a new connection (or ICMP message): among the enabled
        rules that match, allow-bypass beats block beats allow; with none, the profile
        default.

        ``protocol``: tcp, udp, icmpv4, icmpv6 or a number 0-255. ``port`` (tcp and udp
        only, else None): the local port of an inbound and the remote port of an outbound
        connection. ``icmp`` (protocols 1 and 58 only, else None): the message's (type,
        code). ``local_addr``: the host's own address, of the remote address's family; a
        rule restricting localip needs it. ``authenticated``: the peer is IPsec-authenticated
        (and in every rule's remote computer group). ValueError: a malformed query, or a
        rule that restricts what the query does not say."""
        connection = _connection(direction, protocol, port, remote_addr, profile, local_addr, icmp,
                                 authenticated)
        settings = self.profiles[profile]
        if settings.state == "off":
            return "allow"
        if direction == "in" and settings.inbound == "blockinboundalways":
            return "block"
        actions = {r.action for r in self.rules if _matches(r, connection)}
        for action, result in (("bypass", "allow"), ("block", "block"), ("allow", "allow")):
            if action in actions:
                return result
        default = settings.inbound if direction == "in" else settings.outbound
        return "allow" if default.startswith("allow") else "block"


def can_be_remote(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Windows Firewall does not filter loopback traffic, and :: is no peer: a connection
    it decides never has ::1 or :: as its remote (or local) address (and [MS-FASP] forbids
    both in rules, see ``_addresses``)."""
    return not (addr.version == 6 and (addr.is_loopback or addr.is_unspecified))


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Connection:
    """One queried connection, validated."""

    direction: str
    protocol: int
    port: int | None
    remote: Address
    local: Address | None
    icmp: tuple[int, int] | None
    profile: str
    authenticated: bool


def _connection(direction: str, protocol: str | int, port: int | None, remote_addr: str, profile: str,
                local_addr: str | None, icmp: tuple[int, int] | None, authenticated: bool) -> Connection:
    if direction not in ("in", "out") or profile not in PROFILES:
        raise ValueError(f"direction {direction!r} or profile {profile!r}: expected in|out and "
                         f"{'|'.join(PROFILES)}")
    if isinstance(protocol, str) and protocol.lower() in PROTOCOL_NAMES:
        number = PROTOCOL_NAMES[protocol.lower()]
    elif isinstance(protocol, int) and not isinstance(protocol, bool) and 0 <= protocol <= 255:
        number = protocol
    else:
        raise ValueError(f"protocol {protocol!r}: expected {'|'.join(PROTOCOL_NAMES)} or a number 0-255")

    def is_byte(value: object, top: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top

    if number in PROTOCOL_NUMBERS.values() and not is_byte(port, 65535):
        raise ValueError(f"port {port!r}: a tcp or udp connection has a port 0-65535")
    if number not in PROTOCOL_NUMBERS.values() and port is not None:
        raise ValueError(f"port {port!r}: only tcp and udp connections have ports")
    if number in ICMP_FAMILY and not (isinstance(icmp, tuple) and len(icmp) == 2
                                      and all(is_byte(item, 255) for item in icmp)):
        raise ValueError(f"icmp {icmp!r}: an ICMP message has a (type, code), each 0-255")
    if number not in ICMP_FAMILY and icmp is not None:
        raise ValueError(f"icmp {icmp!r}: only protocols 1 (icmpv4) and 58 (icmpv6) have types and codes")
    remote = ipaddress.ip_address(remote_addr)
    local = None if local_addr is None else ipaddress.ip_address(local_addr)
    for kind, addr in (("remote", remote), ("local", local)):
        if addr is not None and not can_be_remote(addr):
            raise ValueError(f"{addr} is never the {kind} address of a connection Windows Firewall filters")
    if local is not None and local.version != remote.version:
        raise ValueError(f"{local} and {remote}: one connection's addresses are of one IP version")
    return Connection(direction, number, port, remote, local, icmp, profile, authenticated)


def _within(addresses: tuple[tuple[int, Span], ...], addr: Address) -> bool:
    return any(version == addr.version and lo <= int(addr) <= hi for version, (lo, hi) in addresses)


def _matches(rule: Rule, connection: Connection) -> bool:
    """Whether the rule matches: False as soon as a condition the connection decides fails,
    ValueError when the rest depends on what the connection does not say."""
    c = connection
    if not rule.enable or rule.dir != c.direction or c.profile not in rule.profile:
        return False
    if rule.security != "notrequired" and not c.authenticated:
        return False
    if rule.protocol is not None and (rule.protocol != c.protocol
                                      or ICMP_FAMILY.get(rule.protocol, c.remote.version) != c.remote.version):
        return False  # another protocol, or ICMP of the other IP version
    if rule.icmp is not None:  # then rule.protocol is c.protocol, 1 or 58, and c.icmp is set
        icmp_type, code = rule.icmp
        if c.icmp is None or c.icmp[0] != icmp_type or code not in (None, c.icmp[1]):
            return False
    ours, other = rule.localport, rule.remoteport
    if c.direction == "out":
        ours, other = other, ours
    if ours is not None and (c.port is None or not any(lo <= c.port <= hi for lo, hi in ours)):
        return False
    if rule.remoteip is not None and not _within(rule.remoteip, c.remote):
        return False
    undecided = []
    if rule.localip is not None:
        if c.local is not None:
            if not _within(rule.localip, c.local):
                return False
        elif c.remote.version not in _families(rule.localip):
            return False  # the local address is of the remote's family, which localip lacks
        else:
            undecided.append("localip (give local_addr)")
    if other is not None:
        undecided.append("the other port")
    if rule.interfacetype != "any":
        undecided.append("interfacetype")
    if undecided:
        raise ValueError(f"rule {rule.name!r} restricts {', '.join(undecided)}: one connection's "
                         "fields cannot decide it")
    return True


# --- netsh commands ------------------------------------------------------------------


_SET_TARGETS = {"allprofiles": PROFILES, "domainprofile": ("domain",),
                "privateprofile": ("private",), "publicprofile": ("public",)}


def _netsh_set(words: list[str], store: RuleStore) -> None:
    """``advfirewall set <profile> firewallpolicy|logging|state ...``."""
    target, setting, *values = words + [""] * (2 - len(words))
    if target not in _SET_TARGETS:
        raise ValueError(f"unsupported netsh advfirewall set {' '.join(words)!r}")
    profiles = [store.profiles[p] for p in _SET_TARGETS[target]]
    if setting == "firewallpolicy" and len(values) == 1 and values[0].count(",") == 1:
        inbound, outbound = values[0].split(",")
        _choice("inbound policy", inbound, ("blockinbound", "blockinboundalways", "allowinbound"))
        _choice("outbound policy", outbound, ("allowoutbound", "blockoutbound"))
        changes = {"inbound": inbound, "outbound": outbound}
    elif setting == "logging" and len(values) == 2:
        kind = _choice("logging", values[0], ("allowedconnections", "droppedconnections"))
        on = _choice(kind, values[1], ("enable", "disable")) == "enable"
        changes = {"log_allowed" if kind == "allowedconnections" else "log_dropped": on}
    elif setting == "state" and len(values) == 1:
        changes = {"state": _choice("state", values[0], ("on", "off"))}
    else:
        raise ValueError(f"unsupported netsh advfirewall set {' '.join(words)!r}")
    for settings in profiles:
        for attribute, value in changes.items():
            setattr(settings, attribute, value)


def run_netsh(arguments: str, store: RuleStore) -> str:
    """Run what follows ``netsh`` and return its message. NetshError: the command failed
    when run; ValueError: it is malformed or outside the model."""
    tokens = tokenize(arguments)
    words = []
    while tokens and tokens[0][0] is None:
        words.append(tokens.pop(0)[1].lower())
    if words == ["advfirewall", "firewall", "add", "rule"]:
        store.add(rule_from_parameters(_pairs(tokens)))
        return "Ok."
    if words == ["advfirewall", "firewall", "set", "rule"]:
        # netsh advfirewall firewall set rule name=X new name=Y (the model renames only)
        if len(tokens) != 3 or tokens[0][0] != "name" or tokens[1] != (None, "new") or tokens[2][0] != "name":
            raise ValueError("set rule: the model supports exactly: name=OLD new name=NEW")
        old_name, new_name = tokens[0][1], tokens[2][1]
        if not new_name.strip() or new_name.lower() == "all":
            raise ValueError(f"name={new_name!r}: a rule name must be non-empty and not 'all'")
        return f"Updated {store.rename(old_name, new_name)} rule(s).\nOk."
    if words == ["advfirewall", "firewall", "delete", "rule"]:
        params = _pairs(tokens)
        if set(params) != {"name"}:
            raise ValueError("delete rule: the model supports exactly one parameter, name=")
        return f"Deleted {store.delete(params['name'])} rule(s).\nOk."
    if words[:2] == ["advfirewall", "set"] and not tokens:
        _netsh_set(words[2:], store)
        return "Ok."
    raise ValueError(f"unsupported netsh command {' '.join(words)!r}")


# --- cmd.exe -------------------------------------------------------------------------

_GUARD = re.compile(r" \|\| (exit /b 1|goto :[a-z_]+)$")  # run it when the exit code is not 0
_QUIET = " >nul 2>&1"  # discard the command's output
_METACHARACTERS = set("&|<>^%")


def _check_characters(line: str) -> None:
    if not all(" " <= ch <= "~" for ch in line):
        raise ValueError("character outside printable ASCII")
    if _METACHARACTERS.intersection(line):
        found = " ".join(sorted(_METACHARACTERS.intersection(line)))
        raise ValueError(f"cmd.exe metacharacter(s) {found} outside the known suffixes")


def _labels(lines: list[str]) -> dict[str, int]:
    """``:name`` lines (cmd.exe compares labels case-insensitively) -> their index."""
    found: dict[str, int] = {}
    for index, line in enumerate(lines):
        text = line.strip().lower()
        if text.startswith(":"):
            if not re.fullmatch(r":[a-z_]+", text):
                raise ScriptError(index + 1, f"the model knows labels of letters and _ only: {text!r}")
            if text in found:
                raise ScriptError(index + 1, f"label {text} defined twice")
            found[text] = index
    return found


def run_script(text: str, store: RuleStore, transcript: list[str] | None = None,
               after_netsh: Callable[[RuleStore], None] | None = None) -> int:
    """Execute a .cmd script as cmd.exe would, for the subset fwgen uses, and return its
    exit code. netsh messages not sent to nul are appended to ``transcript``.

    The subset: ``@echo off``, ``setlocal``, ``rem``, ``:label`` lines, ``goto :label``,
    ``exit /b N``, and netsh commands, each optionally followed by ``>nul 2>&1`` and by
    ``|| exit /b 1`` or ``|| goto :label`` (run when netsh exits non-zero). Running off
    the end returns the last command's exit code, as cmd.exe does. ``after_netsh`` is
    called with the store after every netsh command (to check what holds in between)."""
    lines = text.split("\r\n")
    for number, line in enumerate(lines, 1):
        if "\r" in line or "\n" in line:
            raise ScriptError(number, "line ending is not CRLF")
    if lines[-1] == "":
        lines = lines[:-1]
    labels = _labels(lines)

    def jump(target: str, number: int) -> int:
        if target.lower() not in labels:
            raise ScriptError(number, f"goto {target}: no such label")
        return labels[target.lower()] + 1

    errorlevel = 0
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index]
        index += 1
        try:
            if len(line) >= CMD_LINE_LIMIT:
                raise ValueError(f"{len(line)} characters: cmd.exe takes at most "
                                 f"{CMD_LINE_LIMIT - 1}")
            line = line.lstrip(" ")
            command = line.lower()
            if command in ("", "rem") or command.startswith("rem ") or command.startswith(":"):
                _check_characters(line)
                continue
            guard = _GUARD.search(command)
            if guard:
                line, command = line[: guard.start()], command[: guard.start()]
            quiet = command.endswith(_QUIET)
            if quiet:
                line, command = line[: -len(_QUIET)], command[: -len(_QUIET)]
            _check_characters(line)
            exit_code = re.fullmatch(r"exit /b (\d+)", command)
            goto = re.fullmatch(r"goto (:[a-z_]+)", command)
            if exit_code or goto or command in ("@echo off", "setlocal"):
                if guard or quiet:
                    raise ValueError("the model knows '>nul 2>&1' and '|| ...' after netsh only")
                if exit_code:
                    return int(exit_code[1])
                if goto:
                    index = jump(goto[1], number)
                continue
            if not command.startswith("netsh "):
                raise ValueError(f"unknown command {line.split(' ')[0]!r}")
            try:
                message, errorlevel = run_netsh(line[len("netsh "):], store), 0
            except NetshError as failure:
                message, errorlevel = str(failure), 1
            if transcript is not None and not quiet:
                transcript.append(message)
            if after_netsh is not None:
                after_netsh(store)
            if errorlevel and guard:
                action = guard[1]
                if action == "exit /b 1":
                    return 1
                index = jump(action[len("goto "):], number)
        except ValueError as problem:
            raise ScriptError(number, str(problem)) from None
    return errorlevel
