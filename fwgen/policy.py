"""Policy format version 1: validate the YAML node tree into a located ``Policy``.

Everything here is syntax and shape: keys, types, names, addresses. Port entries are
kept as source text with their location; ``resolve`` turns them into ports with the
registry. Each problem is a ``PolicyError`` pointing at the offending value.
"""

from __future__ import annotations

import functools
import ipaddress
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import yaml

from fwgen import finding_ids
from fwgen.errors import Location, PolicyError, shorten
from fwgen.files import Files, Loaded, ReadError
from fwgen.registry_select import SELECTORS
from fwgen.targets.nft_keywords import NFT_KEYWORDS, OTHER_TABLES
from fwgen.yamlsource import BOOL_TAG, INT_TAG, NULL_TAG, STR_TAG, Document, Source, describe

POLICY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,19}")
RULE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
RESERVED_RULE_NAME = re.compile(r"rule-[0-9]+")
LOG_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,16}")
RATE = re.compile(r"([1-9][0-9]{0,4})/(second|minute|hour)")
MAX_RATE = 10000  # iptables' limit match refuses faster rates
MAX_TEXT = 4096  # descriptions and comments: generous, but not unbounded

# IANA's port ranges (RFC 6335 section 6): System (well-known), User (registered) and
# Dynamic (private) ports. A ``range`` may also be written as "N-M" (or N).
RANGES = {
    "system": (0, 1023),
    "well-known": (0, 1023),
    "registered": (1024, 49151),
    "dynamic": (49152, 65535),
}
NUMERIC_RANGE = re.compile(r"(0|[1-9][0-9]{0,4})(?:-(0|[1-9][0-9]{0,4}))?")
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
    port_range: Text | None  # system | well-known | registered | dynamic | "N-M" (``range_bounds``)
    remote: tuple[Network, ...] | None  # from (in) / to (out); None = any
    comment: str
    icmp: tuple[Text, ...] | None = None  # ICMP or ICMPv6 types: a name, N or N/CODE, as written
    local: tuple[Network, ...] | None = None  # the host's own addresses; None = any
    interfaces: tuple[Text, ...] | None = None  # names, a trailing * matching a prefix; None = any
    profiles: tuple[str, ...] | None = None  # Windows profiles; None = all three
    # where each key's value was written (errors about a key point there)
    keys: tuple[tuple[str, Location], ...] = ()
    select: tuple[Text, ...] | None = None  # registry selectors (fwgen.registry_select), as written

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
    iptables_mode: str = "table"  # table | chains (iptables: {mode: ...})
    published_ports: str = "ignore"  # ignore | enforce: DNATed forwarded connections judged by the inbound rules
    targets: tuple[Text, ...] | None = None  # the outputs the policy is for; None = all of them
    # every included file, in the order the includes first reached it
    includes: tuple[Include, ...] = ()
    # named groups (networks:, services:) of the policy and its includes
    networks: tuple[Group, ...] = ()
    services: tuple[Group, ...] = ()
    # The nodes it was read from, so lint can locate keys Policy keeps no location for.
    document: Document | None = field(default=None, compare=False, repr=False)
    # each rule's own file and node (rules may come from included files), in rule order
    rule_nodes: tuple[tuple[Source, yaml.Node], ...] = field(default=(), compare=False, repr=False)
    # for each included file (as messages name it): the include entries that reached it,
    # innermost first
    via: dict[str, tuple[Location, ...]] = field(default_factory=dict, compare=False, repr=False)

    def chained(self, error: PolicyError) -> PolicyError:
        """``error``, naming the includes that reached its file when that is an included one."""
        return _chained(error, self.via)

    @functools.cached_property
    def service_names(self) -> tuple[str, ...]:
        return tuple(group.name for group in self.services)

    @functools.cached_property
    def _relative(self) -> dict[str, str]:
        return {include.path: include.relative for include in self.includes}

    def file_of(self, rule: PolicyRule) -> str:
        """The file ``rule`` is written in, as outputs name it: "" for the policy itself,
        else the included file's path relative to the policy's directory."""
        return self._relative.get(rule.location.path, "") if self.includes else ""


def _chained(error: PolicyError, via: dict[str, tuple[Location, ...]]) -> PolicyError:
    if error.location is not None and not error.via and error.location.path in via:
        error.via = via[error.location.path]
    return error


class Include(NamedTuple):
    """A file a policy includes."""

    path: str  # as messages name it
    relative: str  # relative to the including policy's directory, as outputs name it
    sha256: str
    raw: str  # the path as read


class Group(NamedTuple):
    """A named group as written: ``networks:`` or ``services:`` NAME: [items]."""

    kind: str  # network | service
    name: str
    location: Location  # where the name is written
    items: tuple[yaml.Node, ...]
    source: Source  # the file the items' marks point into
    # services: the entries it stands for, groups expanded (filled in by the loader)
    entries: tuple[Text, ...] = ()


class _Reader:
    """Typed accessors over the node tree; every failure is located."""

    def __init__(self, source: Source) -> None:
        self.source = source
        # where a node was written: the source's own method, called directly (a fleet of
        # 100 hosts locates 14,000 nodes)
        self.at: Callable[[yaml.Node], Location] = source.at

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


def load_policy(path: str, files: Files | None = None) -> Policy:
    """Read and validate a policy file and every file it includes. ``path`` is echoed
    verbatim in error messages; ``files``: where to read (default: the file system)."""
    files = files or Files()
    loader = _Includes(files, path)
    try:
        return loader.policy()
    except PolicyError as error:
        raise loader.chained(error) from None


TOP_KEYS = (
    "version", "name", "description", "targets", "defaults", "monitor", "include", "networks", "services", "rules",
    "acknowledge", "antispoof", "windows", "iptables", "published_ports",
)
# what an included file may hold: the rest belongs to the host policy
FRAGMENT_KEYS = ("version", "include", "networks", "services", "rules")
MAX_INCLUDE_DEPTH = 8
# a relative path of plain characters (it is named in every output's header)
INCLUDE_PATH = re.compile(r"(?!/)[A-Za-z0-9_./-]{1,255}")
# a group name: never an address (no ':', not starting with a digit)
GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}")
TARGET_NAMES = ("iptables", "nftables", "windows")
PROFILES = ("domain", "private", "public")
# Linux interface names: at most 15 characters (IFNAMSIZ - 1), none of them a slash,
# a colon or white space; a trailing * matches every name with that prefix.
INTERFACE = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.-]{0,14})(\*?)")
PROTOCOL_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
DEFAULT_KEYS = ("inbound", "outbound", "deny", "forward")
WINDOWS_KEYS = ("exclusive",)
IPTABLES_KEYS = ("mode",)
IPTABLES_MODES = ("table", "chains")
MONITOR_KEYS = ("log_prefix", "rate")
LOCATED_KEYS = ("from", "to", "icmp", "local", "interface", "profiles", "select")
RULE_KEYS = (
    "name", "action", "log", "direction", "protocol", "ports", "select", "range", "icmp", "from", "to", "local",
    "interface", "profiles", "comment",
)
class _Fragment:
    """One file of a policy, read and checked for shape: its top-level keys, and its
    rules: each a rule node, or the files an include entry splices there."""

    def __init__(self, raw: str, loaded: Loaded, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> None:
        self.raw = raw  # the path as read
        self.path = loaded.source.path  # as messages name it
        self.loaded = loaded
        self.reader = _Reader(loaded.source)
        self.top = top
        self.rules: list[tuple[yaml.Node, tuple[_Fragment, ...]]] = []  # (node, spliced files; () for a rule)


class _Includes:
    """Loads a host policy and the files it includes, in three steps: walk the includes
    (reading each file once, refusing cycles, depth over 8 and keys that belong to the
    host), resolve the named groups, then read the rules in order, splicing included
    rules where their include entries stand."""

    def __init__(self, files: Files, path: str) -> None:
        self.files = files
        self.path = path
        self.fragments: dict[str, _Fragment] = {}  # by path as messages name it, in the order reached
        self.via: dict[str, tuple[Location, ...]] = {}
        self.spliced: dict[str, Location] = {}  # a file whose rules are spliced -> where
        self.groups: dict[str, dict[str, Group]] = {"network": {}, "service": {}}
        self.networks: dict[str, tuple[Network, ...]] = {}  # resolved
        self.services: dict[str, tuple[Text, ...]] = {}

    def chained(self, error: PolicyError) -> PolicyError:
        return _chained(error, self.via)

    def policy(self) -> Policy:
        host = self.visit(self.path, (), (), host=True)
        for kind, resolved in (("network", self.networks), ("service", self.services)):
            for name, group in self.groups[kind].items():
                if name not in resolved:
                    self._resolve(group, ())
        rules: list[PolicyRule] = []
        nodes: list[tuple[Source, yaml.Node]] = []
        seen: dict[str, Location] = {}
        for fragment, node in self._rule_nodes(host):
            rule = _parse_rule(fragment.reader, node, len(rules) + 1, self)
            if rule.name in seen:
                first = seen[rule.name]
                at = f"line {first.line}" if first.path == rule.location.path else str(first)
                raise PolicyError(
                    rule.location if rule.name.startswith("rule-") else _name_location(fragment.reader, node),
                    f"duplicate rule name '{rule.name}' (first at {at})",
                )
            seen[rule.name] = rule.location
            rules.append(rule)
            nodes.append((fragment.loaded.source, node))
        base = posixpath.dirname(self.path)
        includes = tuple(
            Include(f.path, posixpath.relpath(f.raw, base or "."), f.loaded.sha256, f.raw)
            for f in self.fragments.values() if f is not host)
        return _host_policy(
            host, tuple(rules), includes=includes,
            networks=tuple(self.groups["network"].values()),
            services=tuple(g._replace(entries=self.services[g.name]) for g in self.groups["service"].values()),
            rule_nodes=tuple(nodes), via=dict(self.via),
        )

    def _rule_nodes(self, fragment: _Fragment) -> Iterator[tuple[_Fragment, yaml.Node]]:
        for node, spliced in fragment.rules:
            if not spliced:
                yield fragment, node
            for child in spliced:
                yield from self._rule_nodes(child)

    # ------------------------------------------------------------------ the walk

    def visit(self, raw: str, stack: tuple[tuple[str, str], ...], via: tuple[Location, ...],
              host: bool) -> _Fragment:
        """Read ``raw`` (reached through the include entries ``via``, inside the files
        ``stack``: (key, name) each) and every file it includes."""
        try:
            loaded = self.files.load(raw)
        except ReadError as error:
            if not via:
                raise
            raise PolicyError(via[0], f"cannot read included file {self.files.display(raw)}: {error.reason}") from None
        name = loaded.source.path
        if name in self.fragments:
            return self.fragments[name]
        if via:
            self.via.setdefault(name, via)
        reader = _Reader(loaded.source)
        root = loaded.root
        if root is None:
            what = "policy" if host else "included file"
            raise PolicyError(Location(name, 1, 1), f"{what} is empty: it needs at least 'version: 1'")
        if host:
            top = reader.mapping(root, "the policy", TOP_KEYS)
        else:
            if isinstance(root, yaml.MappingNode):
                for key, _ in root.value:
                    if isinstance(key, yaml.ScalarNode) and key.value in TOP_KEYS and key.value not in FRAGMENT_KEYS:
                        raise reader.fail(key, f"'{key.value}' belongs to the host policy, not to an included file "
                                               f"(which holds {', '.join(FRAGMENT_KEYS)})")
            top = reader.mapping(root, "an included file", FRAGMENT_KEYS)
        _check_version(reader, root, top)
        fragment = self.fragments[name] = _Fragment(raw, loaded, top)
        stack = (*stack, (self.files.key(raw), posixpath.basename(name)))
        for kind, key in (("network", "networks"), ("service", "services")):
            if key in top:
                self._definitions(fragment, kind, top[key][1])
        if "include" in top:
            for where, text, child in self._entries(fragment, top["include"][1], stack):
                included = self.visit(child, stack, (where, *via), host=False)
                if "rules" in included.top:
                    raise PolicyError(
                        where,
                        f"{included.path} has rules, but a top-level include takes only networks and services; "
                        f"splice its rules where they belong in rules: (- include: {text})",
                    )
        if "rules" in top:
            rules_node = top["rules"][1]
            if not isinstance(rules_node, yaml.SequenceNode):
                raise reader.fail(rules_node, f"rules must be a list, got {describe(rules_node)}")
            for node in rules_node.value:
                # (a key that is not a scalar has a list as its value, never "include")
                if not (isinstance(node, yaml.MappingNode) and "include" in [k.value for k, _ in node.value]):
                    fragment.rules.append((node, ()))
                    continue
                entry_keys = reader.mapping(node, "an include entry in rules", ("include",))
                children = []
                for where, _, child in self._entries(fragment, entry_keys["include"][1], stack):
                    included = self.visit(child, stack, (where, *via), host=False)
                    if included.path in self.spliced:
                        raise PolicyError(where, f"the rules of {included.path} are already spliced at "
                                                 f"{self.spliced[included.path]}: a file's rules appear once")
                    self.spliced[included.path] = where
                    children.append(included)
                fragment.rules.append((node, tuple(children)))
        return fragment

    def _entries(self, fragment: _Fragment, node: yaml.Node,
                 stack: tuple[tuple[str, str], ...]) -> Iterator[tuple[Location, str, str]]:
        """(where, as written, path) of each file an ``include`` value names, each
        checked: a plain relative path, no cycle, no deeper than 8."""
        reader = fragment.reader
        for item in reader.items(node, "include"):
            text = reader.text(item, "an include path")
            where = reader.at(item)
            if not INCLUDE_PATH.fullmatch(text) or not text.endswith((".yaml", ".yml")):
                raise PolicyError(where, f"include path '{shorten(text)}' is not valid: write a relative path to a "
                                         ".yaml file, of letters, digits, '_', '.', '-' and '/'")
            child = self.files.join(fragment.raw, text)
            keys = [key for key, _ in stack]
            if self.files.key(child) in keys:
                cycle = [name for _, name in stack[keys.index(self.files.key(child)):]]
                raise PolicyError(where, f"include cycle: {' -> '.join([*cycle, cycle[0]])}")
            if len(stack) > MAX_INCLUDE_DEPTH:
                raise PolicyError(where, f"includes nest more than {MAX_INCLUDE_DEPTH} deep")
            yield where, text, child

    # ---------------------------------------------------------------- the groups

    def _definitions(self, fragment: _Fragment, kind: str, node: yaml.Node) -> None:
        """``networks:`` / ``services:``: NAME: [items], recorded for resolving."""
        reader = fragment.reader
        key = f"{kind}s"
        if not isinstance(node, yaml.MappingNode):
            raise reader.fail(node, f"{key} must be a mapping of names to lists, got {describe(node)}")
        known = self.groups[kind]
        for name_node, items_node in node.value:
            if not (isinstance(name_node, yaml.ScalarNode) and name_node.tag == STR_TAG
                    and GROUP_NAME.fullmatch(name_node.value)):
                raise reader.fail(name_node, f"{kind} name {describe(name_node)} is not valid: it must match "
                                             "[A-Za-z_][A-Za-z0-9_.-]{0,62}")
            name = str(name_node.value)
            where = reader.at(name_node)
            if name in known:
                first = known[name].location
                at = f"line {first.line}" if first.path == where.path else str(first)
                raise PolicyError(where, f"{kind} '{name}' is defined twice (first at {at})")
            items = tuple(reader.items(items_node, f"{kind} '{name}'"))
            known[name] = Group(kind, name, where, items, fragment.loaded.source)

    def _resolve(self, group: Group, trail: tuple[str, ...]) -> None:
        """Expand ``group``'s references to other groups of its kind (memoized)."""
        reader = _Reader(group.source)
        trail = (*trail, group.name)
        if group.kind == "network":
            networks: list[Network] = []
            for item in group.items:
                name = self._reference(reader, item, "network", trail)
                networks.extend(self.networks[name] if name else (_parse_network(reader, item, self),))
            self.networks[group.name] = tuple(networks)
        else:
            entries: list[Text] = []
            for item in group.items:
                name = self._reference(reader, item, "service", trail)
                entries.extend(self.services[name] if name else (reader.scalar(item, "a port entry"),))
            self.services[group.name] = tuple(entries)

    def _reference(self, reader: _Reader, item: yaml.Node, kind: str, trail: tuple[str, ...]) -> str | None:
        """The group ``item`` names (resolved by now), else None."""
        if not (isinstance(item, yaml.ScalarNode) and item.tag == STR_TAG and item.value in self.groups[kind]):
            return None
        name = str(item.value)
        if name in trail:
            cycle = " -> ".join((*trail[trail.index(name):], name))
            raise reader.fail(item, f"{kind} '{name}' refers to itself: {cycle}")
        resolved = self.networks if kind == "network" else self.services
        if name not in resolved:
            self._resolve(self.groups[kind][name], trail)
        return name

    def network(self, reader: _Reader, item: yaml.Node) -> tuple[Network, ...]:
        """An address list item of a rule: an address or network, or a network's name."""
        name = self._reference(reader, item, "network", ())
        return self.networks[name] if name else (_parse_network(reader, item, self),)

    def networks_of(self, reader: _Reader, items: list[yaml.Node]) -> tuple[Network, ...]:
        """A rule's address list (``from``, ``to``, ``local``), groups expanded."""
        if not self.groups["network"]:  # the usual policy: no names to look up
            return tuple(_parse_network(reader, item, self) for item in items)
        return tuple(network for item in items for network in self.network(reader, item))

    def ports_of(self, reader: _Reader, items: list[yaml.Node]) -> tuple[Text, ...]:
        """A rule's ``ports`` list: port entries, service groups expanded."""
        if not self.groups["service"]:
            return tuple(reader.scalar(item, "a port entry") for item in items)
        found: list[Text] = []
        for item in items:
            name = self._reference(reader, item, "service", ())
            if name:
                found.extend(self.services[name])
            else:
                found.append(reader.scalar(item, "a port entry"))
        return tuple(found)


def _check_version(reader: _Reader, root: yaml.Node, top: dict[str, tuple[yaml.Node, yaml.Node]]) -> None:
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


def _host_policy(host: _Fragment, rules: tuple[PolicyRule, ...], **loaded: object) -> Policy:
    """The host policy's own settings (name, defaults, monitor, ...) around its rules."""
    reader, top, source = host.reader, host.top, host.loaded.source
    start = Location(source.path, 1, 1)
    if "name" in top:
        name = reader.pattern(top["name"][1], "policy name", POLICY_NAME, "[a-z0-9][a-z0-9_-]{0,19}")
        _check_table_name(name, reader.at(top["name"][1]), from_file=False)
    else:
        name = Path(host.raw).stem
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
    published_ports = "ignore"
    if "published_ports" in top:
        published_ports = reader.choice(top["published_ports"][1], "published_ports", ("ignore", "enforce"))
    windows_exclusive = False
    if "windows" in top:
        windows = reader.mapping(top["windows"][1], "windows", WINDOWS_KEYS)
        if "exclusive" in windows:
            windows_exclusive = reader.boolean(windows["exclusive"][1], "windows.exclusive")
    iptables_mode = "table"
    if "iptables" in top:
        iptables = reader.mapping(top["iptables"][1], "iptables", IPTABLES_KEYS)
        if "mode" in iptables:
            iptables_mode = reader.choice(iptables["mode"][1], "iptables.mode", IPTABLES_MODES)

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

    acknowledge = _parse_acknowledge(reader, top["acknowledge"][1]) if "acknowledge" in top else ()
    targets = _parse_targets(reader, top["targets"][1]) if "targets" in top else None
    assert host.loaded.root is not None
    return Policy(
        path=source.path, sha256=host.loaded.sha256, name=name, description=description,
        inbound=inbound, outbound=outbound, deny=deny,
        log_prefix=prefix, rate=rate, rate_per=per, rules=rules, acknowledge=acknowledge,
        forward=forward, antispoof=antispoof, windows_exclusive=windows_exclusive,
        iptables_mode=iptables_mode, targets=targets, published_ports=published_ports,
        document=Document(source, host.loaded.root), **loaded,  # type: ignore[arg-type]
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


def _parse_rule(reader: _Reader, node: yaml.Node, index: int, groups: _Includes) -> PolicyRule:
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
        ports = groups.ports_of(reader, reader.items(keys["ports"][1], "ports"))
    if "ports" in keys and "select" in keys:
        raise reader.fail(
            keys["select"][0], f"{what} has both 'ports' and 'select': a rule selects its ports one way "
            "(write two rules for both)")
    select = _parse_select(reader, keys["select"][1]) if "select" in keys else None
    port_range = _parse_range(reader, keys["range"][1]) if "range" in keys else None

    remote_key, wrong_key = ("from", "to") if direction == "in" else ("to", "from")
    if wrong_key in keys:
        verb = "inbound" if direction == "in" else "outbound"
        raise reader.fail(
            keys[wrong_key][0],
            f"'{wrong_key}' does not apply to an {verb} rule: its remote peer is given by '{remote_key}'",
        )
    remote = None
    if remote_key in keys:
        remote = groups.networks_of(reader, reader.items(keys[remote_key][1], remote_key))

    icmp = None
    if "icmp" in keys:
        icmp = tuple(reader.scalar(item, "an ICMP type") for item in reader.items(keys["icmp"][1], "icmp"))
    local = None
    if "local" in keys:
        local = groups.networks_of(reader, reader.items(keys["local"][1], "local"))
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
        icmp=icmp, local=local, interfaces=interfaces, profiles=profiles, select=select,
        # only the keys whose own errors need it (locating costs a few microseconds a key)
        keys=tuple((key, reader.at(keys[key][1])) for key in LOCATED_KEYS if key in keys),
    )


def range_bounds(text: str) -> tuple[int, int]:
    """A ``range`` value (checked by ``_parse_range``) -> its first and last port."""
    if text in RANGES:
        return RANGES[text]
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def _parse_range(reader: _Reader, node: yaml.Node) -> Text:
    """``range``: an IANA range name, or "N-M" (or N) with 0 <= N <= M <= 65535."""
    names = " | ".join(RANGES)
    if isinstance(node, yaml.ScalarNode) and node.tag in (STR_TAG, INT_TAG):
        text = str(node.value)
        if node.tag == STR_TAG and text in RANGES:
            return Text(text, reader.at(node))
        m = NUMERIC_RANGE.fullmatch(text)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi > 65535 or lo > 65535:
                raise reader.fail(node, f"range '{text}' is not within 0-65535")
            if lo > hi:
                raise reader.fail(node, f"range {lo}-{hi} is reversed: write {hi}-{lo}")
            return Text(text, reader.at(node))
        hint = _closest(text, tuple(RANGES)) if node.tag == STR_TAG else None
        raise reader.fail(
            node, f"range '{shorten(text)}' is not valid: write {names}, or \"N-M\""
            + (f" (did you mean '{hint}'?)" if hint else ""))
    raise reader.fail(node, f"range must be one of {names}, or \"N-M\", got {describe(node)}")


def _parse_select(reader: _Reader, node: yaml.Node) -> tuple[Text, ...]:
    """``select: [undocumented, unauthorized-use]``: registry selectors, each known, once."""
    known = tuple(SELECTORS)
    seen: dict[str, Text] = {}
    for item in reader.items(node, "select"):
        if not (isinstance(item, yaml.ScalarNode) and item.tag == STR_TAG):
            raise reader.fail(item, f"a selector must be one of {' | '.join(known)}, got {describe(item)}")
        value = str(item.value)
        if value not in SELECTORS:
            hint = _closest(value, known)
            raise reader.fail(
                item, f"unknown selector '{shorten(value)}'"
                + (f" (did you mean '{hint}'?)" if hint else f" (the selectors are {', '.join(known)})"))
        if value in seen:
            raise reader.fail(item, f"selector '{value}' is listed twice (first at line {seen[value].location.line})")
        seen[value] = Text(value, reader.at(item))
    return tuple(seen.values())


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


_SEPARATOR = re.compile(r"[,\s]")


def list_hint(text: str) -> str:
    """For a value that holds several items written without brackets (``from:
    192.0.2.0/24, 10.0.0.0/8`` is one plain scalar in YAML): how to write a list."""
    if not _SEPARATOR.search(text):  # the usual value, one item: no split, no list
        return ""
    items = [item for item in re.split(r"[,\s]+", text.strip()) if item]
    if len(items) < 2:
        return ""
    return f"; to give several, write a YAML list: [{', '.join(items)}]"


def _parse_network(reader: _Reader, node: yaml.Node, groups: _Includes) -> Network:
    """An address or network (``groups``: the networks a name could have meant)."""
    if not isinstance(node, yaml.ScalarNode) or node.tag not in (STR_TAG, INT_TAG):
        raise reader.fail(node, f"an address must be an IP address or CIDR network, got {describe(node)}")
    text = str(node.value)
    network = _NETWORKS.get(text)
    if network is not None:
        return network
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            names = tuple(groups.groups["network"])
            if GROUP_NAME.fullmatch(text) and names:
                hint = _closest(text, names)
                raise reader.fail(node, f"unknown network '{shorten(text)}'"
                                  + (f" (did you mean '{hint}'?)" if hint else " (not an address, nor a name in "
                                                                               "networks:)")) from None
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
    if len(_NETWORKS) < 100_000:
        _NETWORKS[text] = network
    return network


# valid address text -> its network, shared by every policy a process reads (ipaddress
# objects are immutable)
_NETWORKS: dict[str, Network] = {}
