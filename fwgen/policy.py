"""Policy format version 1: validate the YAML node tree into a located ``Policy``.

Everything here is syntax and shape: keys, types, names, addresses. Port entries are
kept as source text with their location; ``resolve`` turns them into ports with the
registry. Each problem is a ``PolicyError`` pointing at the offending value.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import yaml

from fwgen import finding_ids
from fwgen.errors import Location, PolicyError, shorten
from fwgen.targets.nft_keywords import NFT_KEYWORDS, OTHER_TABLES
from fwgen.yamlsource import BOOL_TAG, INT_TAG, NULL_TAG, STR_TAG, Document, Source, compose, describe

POLICY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,19}")
RULE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
RESERVED_RULE_NAME = re.compile(r"rule-[0-9]+")
LOG_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,16}")
RATE = re.compile(r"([1-9][0-9]{0,4})/(second|minute|hour)")
MAX_RATE = 10000  # iptables' limit match refuses faster rates
MAX_TEXT = 4096  # descriptions and comments: generous, but not unbounded

RANGES = {
    "well-known": (0, 1023),
    "registered": (1024, 49151),
    "dynamic": (49152, 65535),
}
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Text(NamedTuple):
    """A scalar's source text and where it was written."""

    value: str
    location: Location


class PolicyRule(NamedTuple):
    index: int  # type: ignore[assignment]  # 1-based position in the policy (shadows tuple.index)
    name: str
    location: Location  # the rule's first line
    action: str  # allow | deny | monitor
    log: bool
    direction: str  # in | out
    protocol: Text | None  # tcp | udp | any | icmp | icmpv6 | all | an IANA keyword | a number, when written
    ports: tuple[Text, ...] | None  # entries as written
    port_range: Text | None  # well-known | registered | dynamic
    remote: tuple[Network, ...] | None  # from (in) / to (out); None = any
    comment: str
    icmp: tuple[Text, ...] | None = None  # ICMP or ICMPv6 types: a name, N or N/CODE, as written
    local: tuple[Network, ...] | None = None  # the host's own addresses; None = any
    interfaces: tuple[Text, ...] | None = None  # names, a trailing * matching a prefix; None = any
    profiles: tuple[str, ...] | None = None  # Windows profiles; None = all three
    # where each key's value was written (errors about a key point there)
    keys: tuple[tuple[str, Location], ...] = ()

    def key_location(self, key: str) -> Location:
        """Where ``key``'s value was written, else the rule's own location."""
        return next((where for name, where in self.keys if name == key), self.location)


@dataclass(frozen=True)
class Policy:
    path: str
    sha256: str
    name: str
    description: str
    inbound: str
    outbound: str
    deny: str  # drop | reject
    log_prefix: str
    rate: int
    rate_per: str
    rules: tuple[PolicyRule, ...]
    acknowledge: tuple[str, ...] = ()  # lint finding ids the reviewers accepted (docs/lint.md)
    forward: str = "deny"  # allow | deny: routed traffic (iptables' FORWARD policy)
    antispoof: bool = True
    windows_exclusive: bool = False
    targets: tuple[Text, ...] | None = None  # the outputs the policy is for; None = all of them
    # The nodes it was read from, so lint can locate keys Policy keeps no location for.
    document: Document | None = field(default=None, compare=False, repr=False)


class _Reader:
    """Typed accessors over the node tree; every failure is located."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def at(self, node: yaml.Node) -> Location:
        return self.source.at(node)

    def fail(self, node: yaml.Node, message: str) -> PolicyError:
        return PolicyError(self.at(node), message)

    def mapping(
        self, node: yaml.Node, what: str, allowed: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """Keys to (key node, value node); unknown and duplicate keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping, got {describe(node)}")
        result: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != STR_TAG:
                raise self.fail(key_node, f"{what}: keys must be words, got {describe(key_node)}")
            key = key_node.value
            if key not in allowed:
                hint = _closest(key, allowed)
                raise self.fail(
                    key_node,
                    f"unknown key '{shorten(key)}' in {what}"
                    + (f" (did you mean '{hint}'?)" if hint else f" (expected one of: {', '.join(allowed)})"),
                )
            if key in result:
                first = self.at(result[key][0])
                raise self.fail(key_node, f"duplicate key '{key}' in {what} (first at line {first.line})")
            result[key] = (key_node, value_node)
        return result

    def scalar(self, node: yaml.Node, what: str) -> Text:
        if not isinstance(node, yaml.ScalarNode) or node.tag == NULL_TAG:
            raise self.fail(node, f"{what} must be a single value, got {describe(node)}")
        return Text(node.value, self.at(node))

    def text(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != STR_TAG:
            raise self.fail(node, f"{what} must be text, got {describe(node)}")
        if len(node.value) > MAX_TEXT:
            raise self.fail(node, f"{what} is longer than {MAX_TEXT} characters")
        return str(node.value)

    def choice(self, node: yaml.Node, what: str, options: tuple[str, ...]) -> str:
        if isinstance(node, yaml.ScalarNode) and node.tag == STR_TAG and node.value in options:
            return str(node.value)
        raise self.fail(node, f"{what} must be one of {' | '.join(options)}, got {describe(node)}")

    def pattern(self, node: yaml.Node, what: str, regex: re.Pattern[str], rule: str) -> str:
        value = self.text(node, what)
        if not regex.fullmatch(value):
            raise self.fail(node, f"{what} '{shorten(value)}' is not valid: it must match {rule}")
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool:
        if isinstance(node, yaml.ScalarNode) and node.tag == BOOL_TAG and node.value in ("true", "false"):
            return bool(node.value == "true")
        raise self.fail(node, f"{what} must be true or false, got {describe(node)}")

    def items(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        """A list, or a single scalar standing for a one-item list."""
        if isinstance(node, yaml.SequenceNode):
            if not node.value:
                raise self.fail(node, f"{what} is an empty list; omit the key instead")
            return list(node.value)
        if isinstance(node, yaml.ScalarNode) and node.tag != NULL_TAG:
            return [node]
        raise self.fail(node, f"{what} must be a list, got {describe(node)}")


def _closest(word: str, options: tuple[str, ...]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return matches[0] if matches else None


def load_policy(path: str) -> Policy:
    """Read and validate a policy file. ``path`` is echoed verbatim in error messages."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(None, f"{path}: cannot read policy: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError(Location(path, line, 1), "policy is not valid UTF-8") from None
    return parse_policy(Source(path, text), hashlib.sha256(raw).hexdigest())


TOP_KEYS = (
    "version", "name", "description", "targets", "defaults", "monitor", "rules", "acknowledge", "antispoof",
    "windows",
)
TARGET_NAMES = ("iptables", "nftables", "windows")
PROFILES = ("domain", "private", "public")
# Linux interface names: at most 15 characters (IFNAMSIZ - 1), none of them a slash,
# a colon or white space; a trailing * matches every name with that prefix.
INTERFACE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.-]{0,14})(\*?)")
PROTOCOL_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
DEFAULT_KEYS = ("inbound", "outbound", "deny", "forward")
WINDOWS_KEYS = ("exclusive",)
MONITOR_KEYS = ("log_prefix", "rate")
LOCATED_KEYS = ("from", "to", "icmp", "local", "interface", "profiles")
RULE_KEYS = (
    "name", "action", "log", "direction", "protocol", "ports", "range", "icmp", "from", "to", "local",
    "interface", "profiles", "comment",
)


def parse_policy(source: Source, sha256: str) -> Policy:
    reader = _Reader(source)
    root = compose(source)
    start = Location(source.path, 1, 1)
    if root is None:
        raise PolicyError(start, "policy is empty: it needs at least 'version: 1'")
    top = reader.mapping(root, "the policy", TOP_KEYS)

    if "version" not in top:
        raise PolicyError(reader.at(root), "missing 'version' (this fwgen reads 'version: 1')")
    version = top["version"][1]
    if not (isinstance(version, yaml.ScalarNode) and version.tag == INT_TAG and version.value == "1"):
        if isinstance(version, yaml.ScalarNode) and version.tag == STR_TAG and version.value.strip() == "1":
            raise reader.fail(
                version,
                f"version must be the number 1, not the text '{version.value}': write version: 1 without quotes",
            )
        found = shorten(str(version.value))
        raise reader.fail(version, f"unsupported version '{found}': this fwgen reads 'version: 1'")

    if "name" in top:
        name = reader.pattern(top["name"][1], "policy name", POLICY_NAME, "[a-z0-9][a-z0-9_-]{0,19}")
        _check_table_name(name, reader.at(top["name"][1]), from_file=False)
    else:
        name = Path(source.path).stem
        if not POLICY_NAME.fullmatch(name):
            raise PolicyError(
                start,
                f"the file name '{name}' is not a valid policy name ([a-z0-9][a-z0-9_-]{{0,19}}); "
                "add a 'name:' key",
            )
        _check_table_name(name, start, from_file=True)
    description = reader.text(top["description"][1], "description") if "description" in top else ""

    inbound, outbound, deny, forward = "deny", "allow", "drop", "deny"
    if "defaults" in top:
        defaults = reader.mapping(top["defaults"][1], "defaults", DEFAULT_KEYS)
        if "inbound" in defaults:
            inbound = reader.choice(defaults["inbound"][1], "defaults.inbound", ("allow", "deny"))
        if "outbound" in defaults:
            outbound = reader.choice(defaults["outbound"][1], "defaults.outbound", ("allow", "deny"))
        if "deny" in defaults:
            deny = reader.choice(defaults["deny"][1], "defaults.deny", ("drop", "reject"))
        if "forward" in defaults:
            forward = reader.choice(defaults["forward"][1], "defaults.forward", ("allow", "deny"))
    antispoof = reader.boolean(top["antispoof"][1], "antispoof") if "antispoof" in top else True
    windows_exclusive = False
    if "windows" in top:
        windows = reader.mapping(top["windows"][1], "windows", WINDOWS_KEYS)
        if "exclusive" in windows:
            windows_exclusive = reader.boolean(windows["exclusive"][1], "windows.exclusive")

    prefix, rate, per = "fwgen", 10, "minute"
    if "monitor" in top:
        monitor = reader.mapping(top["monitor"][1], "monitor", MONITOR_KEYS)
        if "log_prefix" in monitor:
            prefix = reader.pattern(monitor["log_prefix"][1], "monitor.log_prefix", LOG_PREFIX, "[A-Za-z0-9_.-]{1,16}")
        if "rate" in monitor:
            rate_node = monitor["rate"][1]
            rate_text = reader.text(rate_node, "monitor.rate")
            m = RATE.fullmatch(rate_text)
            if not m:
                raise reader.fail(
                    rate_node, f"monitor.rate '{shorten(rate_text)}' is not valid: write N/second, N/minute or N/hour"
                )
            rate, per = int(m.group(1)), m.group(2)
            if rate > MAX_RATE:
                raise reader.fail(rate_node, f"monitor.rate '{rate_text}' is too high: at most {MAX_RATE} per period")

    rules: list[PolicyRule] = []
    if "rules" in top:
        rules_node = top["rules"][1]
        if not isinstance(rules_node, yaml.SequenceNode):
            raise reader.fail(rules_node, f"rules must be a list, got {describe(rules_node)}")
        seen: dict[str, Location] = {}
        for index, rule_node in enumerate(rules_node.value, start=1):
            rule = _parse_rule(reader, rule_node, index)
            if rule.name in seen:
                raise PolicyError(
                    rule.location if rule.name.startswith("rule-") else _name_location(reader, rule_node),
                    f"duplicate rule name '{rule.name}' (first at line {seen[rule.name].line})",
                )
            seen[rule.name] = rule.location
            rules.append(rule)

    acknowledge = _parse_acknowledge(reader, top["acknowledge"][1]) if "acknowledge" in top else ()
    targets = _parse_targets(reader, top["targets"][1]) if "targets" in top else None

    return Policy(
        path=source.path, sha256=sha256, name=name, description=description,
        inbound=inbound, outbound=outbound, deny=deny,
        log_prefix=prefix, rate=rate, rate_per=per, rules=tuple(rules), acknowledge=acknowledge,
        forward=forward, antispoof=antispoof, windows_exclusive=windows_exclusive, targets=targets,
        document=Document(source, root),
    )


def _parse_acknowledge(reader: _Reader, node: yaml.Node) -> tuple[str, ...]:
    """``acknowledge: [ssh-lockout, ...]``: lint finding ids (docs/lint.md), each known, once."""
    known = finding_ids.IDS

    if not isinstance(node, yaml.SequenceNode):
        raise reader.fail(node, f"acknowledge must be a list of finding ids, got {describe(node)}")
    seen: dict[str, Location] = {}
    for item in node.value:
        if not (isinstance(item, yaml.ScalarNode) and item.tag == STR_TAG):
            raise reader.fail(item, f"an acknowledgement must be a finding id, got {describe(item)}")
        value = str(item.value)
        if value not in known:
            hint = _closest(value, known)
            raise reader.fail(
                item,
                f"unknown finding id '{shorten(value)}' in acknowledge"
                + (f" (did you mean '{hint}'?)" if hint else " (the ids are listed in docs/lint.md)"),
            )
        if value in seen:
            raise reader.fail(item, f"'{value}' is acknowledged twice (first at line {seen[value].line})")
        seen[value] = reader.at(item)
    return tuple(seen)


def _parse_targets(reader: _Reader, node: yaml.Node) -> tuple[Text, ...]:
    """``targets: [iptables, nftables]``: each a target name, once."""
    items = reader.items(node, "targets")
    seen: dict[str, Location] = {}
    for item in items:
        name = reader.choice(item, "a target", TARGET_NAMES)
        if name in seen:
            raise reader.fail(item, f"target '{name}' is listed twice (first at line {seen[name].line})")
        seen[name] = reader.at(item)
    return tuple(Text(name, where) for name, where in seen.items())


def _check_table_name(name: str, location: Location, from_file: bool) -> None:
    """The policy name becomes nft's ``table inet NAME``, which nft cannot quote."""

    what = f"policy name '{name}'" + (" (from the file name)" if from_file else "")
    fix = "; add a 'name:' key" if from_file else ""
    if name[0].isdigit():
        raise PolicyError(location, f"{what} cannot name an nftables table: it must start with a letter{fix}")
    if name in NFT_KEYWORDS:
        raise PolicyError(location, f"{what} is an nftables keyword and cannot name a table{fix}")
    if name in OTHER_TABLES:
        raise PolicyError(
            location,
            f"{what} is the name of a table of {OTHER_TABLES[name]}: fwgen's nftables file replaces "
            f"table inet {name}, so loading it could delete that table; "
            + ("add a 'name:' key" if from_file else "choose another name"),
        )


def _name_location(reader: _Reader, rule_node: yaml.Node) -> Location:
    for key, value in rule_node.value:
        if key.value == "name":
            return reader.at(value)
    return reader.at(rule_node)


def _parse_rule(reader: _Reader, node: yaml.Node, index: int) -> PolicyRule:
    what = f"rule {index}"
    keys = reader.mapping(node, what, RULE_KEYS)
    location = reader.at(node)

    if "name" in keys:
        name = reader.pattern(keys["name"][1], "rule name", RULE_NAME, "[a-z0-9][a-z0-9_-]{0,31}")
        if RESERVED_RULE_NAME.fullmatch(name):
            raise reader.fail(keys["name"][1], f"rule name '{name}' is reserved: rule-N names unnamed rules")
    else:
        name = f"rule-{index}"
    what = f"rule '{name}'"

    if "action" not in keys:
        raise PolicyError(location, f"{what} has no 'action' (allow | deny | monitor)")
    action = reader.choice(keys["action"][1], "action", ("allow", "deny", "monitor"))
    log = reader.boolean(keys["log"][1], "log") if "log" in keys else False
    direction = reader.choice(keys["direction"][1], "direction", ("in", "out")) if "direction" in keys else "in"

    protocol = None
    if "protocol" in keys:
        protocol = _parse_protocol(reader, keys["protocol"][1])

    if "ports" in keys and "range" in keys:
        raise reader.fail(keys["range"][0], f"{what} has both 'ports' and 'range': use one")
    ports = None
    if "ports" in keys:
        ports = tuple(reader.scalar(item, "a port entry") for item in reader.items(keys["ports"][1], "ports"))
    port_range = None
    if "range" in keys:
        reader.choice(keys["range"][1], "range", tuple(RANGES))
        port_range = reader.scalar(keys["range"][1], "range")

    remote_key, wrong_key = ("from", "to") if direction == "in" else ("to", "from")
    if wrong_key in keys:
        verb = "inbound" if direction == "in" else "outbound"
        raise reader.fail(
            keys[wrong_key][0],
            f"'{wrong_key}' does not apply to an {verb} rule: its remote peer is given by '{remote_key}'",
        )
    remote = None
    if remote_key in keys:
        remote = tuple(
            _parse_network(reader, item) for item in reader.items(keys[remote_key][1], remote_key)
        )

    icmp = None
    if "icmp" in keys:
        icmp = tuple(reader.scalar(item, "an ICMP type") for item in reader.items(keys["icmp"][1], "icmp"))
    local = None
    if "local" in keys:
        local = tuple(_parse_network(reader, item) for item in reader.items(keys["local"][1], "local"))
    interfaces = None
    if "interface" in keys:
        interfaces = _parse_interfaces(reader, keys["interface"][1])
    profiles = None
    if "profiles" in keys:
        profiles = _parse_profiles(reader, keys["profiles"][1])

    comment = reader.text(keys["comment"][1], "comment") if "comment" in keys else ""
    return PolicyRule(
        index=index, name=name, location=location, action=action, log=log, direction=direction,
        protocol=protocol, ports=ports, port_range=port_range, remote=remote, comment=comment,
        icmp=icmp, local=local, interfaces=interfaces, profiles=profiles,
        # only the keys whose own errors need it (locating costs a few microseconds a key)
        keys=tuple((key, reader.at(keys[key][1])) for key in LOCATED_KEYS if key in keys),
    )


def _parse_protocol(reader: _Reader, node: yaml.Node) -> Text:
    """A protocol word (tcp, udp, any, icmp, icmpv6, all, or an IANA keyword) or a number
    0-255; ``resolve`` gives it its meaning."""
    if isinstance(node, yaml.ScalarNode) and node.tag == INT_TAG and node.value.isdigit():
        if int(node.value) > 255 or (len(node.value) > 1 and node.value.startswith("0")):
            raise reader.fail(node, f"protocol number {node.value} is not 0-255 (written without leading zeros)")
        return Text(node.value, reader.at(node))
    if isinstance(node, yaml.ScalarNode) and node.tag == STR_TAG and PROTOCOL_WORD.fullmatch(node.value):
        return Text(node.value, reader.at(node))
    raise reader.fail(
        node,
        "protocol must be tcp | udp | any | icmp | icmpv6 | all, an IANA protocol keyword or a number 0-255, "
        f"got {describe(node)}",
    )


def _parse_interfaces(reader: _Reader, node: yaml.Node) -> tuple[Text, ...]:
    out: list[Text] = []
    for item in reader.items(node, "interface"):
        value = reader.scalar(item, "an interface")
        if value.value == "*":
            raise reader.fail(item, "interface '*' matches every interface: omit the key instead")
        if item.tag != STR_TAG or not INTERFACE.fullmatch(value.value):
            raise reader.fail(
                item,
                f"'{shorten(value.value)}' is not an interface name: at most 15 letters, digits, '_', '.' or '-' "
                "(not starting with '.' or '-'), with an optional trailing '*' for a prefix",
            )
        out.append(value)
    return tuple(out)


def _parse_profiles(reader: _Reader, node: yaml.Node) -> tuple[str, ...]:
    seen: dict[str, Location] = {}
    for item in reader.items(node, "profiles"):
        profile = reader.choice(item, "a profile", PROFILES)
        if profile in seen:
            raise reader.fail(item, f"profile '{profile}' is listed twice (first at line {seen[profile].line})")
        seen[profile] = reader.at(item)
    return tuple(seen)


def list_hint(text: str) -> str:
    """For a value that holds several items written without brackets (``from:
    192.0.2.0/24, 10.0.0.0/8`` is one plain scalar in YAML): how to write a list."""
    items = [item for item in re.split(r"[,\s]+", text.strip()) if item]
    if len(items) < 2:
        return ""
    return f"; to give several, write a YAML list: [{', '.join(items)}]"


def _parse_network(reader: _Reader, node: yaml.Node) -> Network:
    if not isinstance(node, yaml.ScalarNode) or node.tag not in (STR_TAG, INT_TAG):
        raise reader.fail(node, f"an address must be an IP address or CIDR network, got {describe(node)}")
    text = str(node.value)
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise reader.fail(
                node, f"'{shorten(text)}' is not an IP address or CIDR network{list_hint(text)}"
            ) from None
        raise reader.fail(
            node, f"'{text}' has host bits set: write the network {loose} (or the host address alone)"
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        raise reader.fail(
            node, f"'{text}' is IPv4-mapped IPv6 (::ffff:0:0/96): write the IPv4 address instead"
        )
    return network
