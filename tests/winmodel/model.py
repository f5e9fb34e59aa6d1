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
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17}
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
    protocol: int | None = None  # IP protocol number: tcp 6, udp 17
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
    too: a script must not depend on what Windows does there."""
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


def _protocol(value: str) -> int | None:
    text = value.lower()
    if text == "any":
        return None
    if text in PROTOCOL_NUMBERS or (text.isdigit() and int(text) <= 255):
        return PROTOCOL_NUMBERS.get(text) or int(text)
    raise ValueError(f"protocol={value!r}: expected tcp|udp|any|0-255 (icmp is not modelled)")


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
    protocol = _protocol(params.get("protocol", "any"))
    localport = _ports("localport", params.get("localport", "any"))
    remoteport = _ports("remoteport", params.get("remoteport", "any"))
    if (localport or remoteport) and protocol not in PROTOCOL_NUMBERS.values():
        raise ValueError("localport and remoteport need protocol=tcp or protocol=udp")
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
        name=name, dir=direction, action=action, protocol=protocol,
        localport=localport, remoteport=remoteport,
        localip=_addresses("localip", params.get("localip", "any")),
        remoteip=_addresses("remoteip", params.get("remoteip", "any")),
        profile=_profiles(params.get("profile", "any")),
        enable=_choice("enable", params.get("enable", "yes"), ("yes", "no")) == "yes",
        description=params.get("description", ""),
        edge=_choice("edge", params.get("edge", "no"), ("yes", "deferapp", "deferuser", "no")),
        interfacetype=_choice("interfacetype", params.get("interfacetype", "any"),
                              ("wireless", "lan", "ras", "any")),
        security=security, rmtcomputergrp=group,
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
                profile: str = "public", *, authenticated: bool = False) -> str:
        """"allow" or "block": among the enabled rules that match, allow-bypass beats
        block beats allow; with none, the profile default. ``port`` is the local port of
        an inbound and the remote port of an outbound connection. ``authenticated``: the
        peer is IPsec-authenticated (and in every rule's remote computer group)."""
        settings = self.profiles[profile]
        if settings.state == "off":
            return "allow"
        if direction == "in" and settings.inbound == "blockinboundalways":
            return "block"
        number = PROTOCOL_NUMBERS.get(str(protocol).lower()) or int(protocol)
        addr = ipaddress.ip_address(remote_addr)
        if not can_be_remote(addr):
            raise ValueError(f"{addr} is never the remote address of a connection Windows Firewall filters")
        actions = {r.action for r in self.rules
                   if _matches(r, direction, number, port, addr, profile, authenticated)}
        for action, result in (("bypass", "allow"), ("block", "block"), ("allow", "allow")):
            if action in actions:
                return result
        default = settings.inbound if direction == "in" else settings.outbound
        return "allow" if default.startswith("allow") else "block"


def can_be_remote(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Windows Firewall does not filter loopback traffic, and :: is no peer: a connection
    it decides never has ::1 or :: as its remote address (and [MS-FASP] forbids both in
    rules, see ``_addresses``)."""
    return not (addr.version == 6 and (addr.is_loopback or addr.is_unspecified))


def _matches(rule: Rule, direction: str, protocol: int, port: int | None,
             addr: ipaddress.IPv4Address | ipaddress.IPv6Address, profile: str,
             authenticated: bool) -> bool:
    if not rule.enable or rule.dir != direction or profile not in rule.profile:
        return False
    if (rule.security != "notrequired" and not authenticated) or rule.protocol not in (
            None, protocol):
        return False
    ours, other = rule.localport, rule.remoteport
    if direction == "out":
        ours, other = other, ours
    if ours is not None and (port is None or not any(lo <= port <= hi for lo, hi in ours)):
        return False
    if rule.remoteip is not None and not any(
            version == addr.version and lo <= int(addr) <= hi
            for version, (lo, hi) in rule.remoteip):
        return False
    if other is not None or rule.localip is not None or rule.interfacetype != "any":
        raise ValueError(f"rule {rule.name!r} restricts the other port, localip or "
                         "interfacetype: one connection's port and address cannot decide it")
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
