"""Random policies for the differential tests (hypothesis strategies), and the coverage
features that keep the generator honest.

Policies draw ports from a small hot region and a few registry names with several
ports or ranges, so rules overlap and shadow each other often; addresses come from a
pool whose networks nest and straddle the peer namespaces' addresses, in both families;
local networks nest and straddle the host's own addresses. Rules also match other
protocols (ICMP and ICMPv6 with types and codes, IANA keywords and numbers, ``all``),
the host's own address (``local``), the interface (``interface``, Linux-only policies)
and the Windows profile (``profiles``, Windows-only policies). Only documentation ranges
are used (RFC 5737, RFC 3849), and only inside namespaces the harness creates.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import strategies as st

from fwgen.ir import ICMP_NUMBER, ICMPV6_NUMBER, WHAT_SIZE, by_protocol

# The host's two links (interface names on the host side): peer A and peer B.
LINKS = ("fwa0", "fwb0")
# The peer namespaces own these, split between the links; policies restrict to networks
# around them.
PEER_V4 = ("198.51.100.5", "198.51.100.70", "198.51.100.130", "192.0.2.9", "203.0.113.77")
PEER_V6 = ("2001:db8:1::5", "2001:db8:1:0:8000::9", "2001:db8:2::7", "2001:db8:ff00::1")
PEER_LINK = {
    "198.51.100.5": "fwa0", "198.51.100.130": "fwa0", "203.0.113.77": "fwa0",
    "198.51.100.70": "fwb0", "192.0.2.9": "fwb0",
    "2001:db8:1::5": "fwa0", "2001:db8:2::7": "fwa0",
    "2001:db8:1:0:8000::9": "fwb0", "2001:db8:ff00::1": "fwb0",
}
# The host's own addresses (the iptables lab's; the nftables lab's are one higher, see
# harness.lab_address): the first two behind fwa0, the third behind fwb0.
HOST_V4 = ("203.0.113.2", "203.0.113.10", "203.0.113.18")
HOST_V6 = ("2001:db8:ffff::2", "2001:db8:ffff::10", "2001:db8:ffff::18")
HOST_LINK = {address: ("fwa0", "fwa0", "fwb0")[i % 3] for i, address in enumerate(HOST_V4 + HOST_V6)}
NETWORKS_V4 = (
    "198.51.100.0/24", "198.51.100.0/25", "198.51.100.64/26", "198.51.100.128/25",
    "198.51.100.130", "192.0.2.0/24", "192.0.2.8/29", "192.0.2.128/25", "0.0.0.0/0",
)
NETWORKS_V6 = (
    "2001:db8:1::/48", "2001:db8:1::/65", "2001:db8:1:0:8000::/65", "2001:db8:2::7",
    "2001:db8::/32", "2001:db8:ff00::/40", "2001:db8:9900::/40", "::/0",
)
# Networks of the host's addresses: each /31 holds one address of both labs; the single
# addresses are one lab's only (the other lab then never matches them: still a verdict).
LOCAL_V4 = (
    "203.0.113.2/31", "203.0.113.10/31", "203.0.113.18/31", "203.0.113.0/28", "203.0.113.16/28",
    "203.0.113.8/29", "203.0.113.0/24", "203.0.113.3", "203.0.113.10", "198.51.100.0/24",
)
LOCAL_V6 = (
    "2001:db8:ffff::2/127", "2001:db8:ffff::10/127", "2001:db8:ffff::18/127", "2001:db8:ffff::/124",
    "2001:db8:ffff::10/124", "2001:db8:ffff::/123", "2001:db8:ffff::/64", "2001:db8:ffff::11",
    "2001:db8:ffff::2", "2001:db8:1::/48",
)
# fwa0 and fwb0 exist, fwc0 nowhere; fw* matches both links, fwa* one.
INTERFACES = ("fwa0", "fwb0", "fw*", "fwa*", "fwb*", "fwc0")
PROFILES = ("domain", "private", "public")
# protocol: values as a policy writes them, and what each is: "tcp" or "udp" (ports),
# "both" (tcp and udp by ports), "icmp4"/"icmp6" (types), "number" (one protocol) or
# "all". Numbers are written both ways YAML allows (50 and "50"); 47, 50, 51 and 112 are
# the protocols the kernel harness sends (0, HOPOPT, is a located error: iptables reads
# -p 0 as every protocol).
PROTOCOLS = {
    "tcp": "tcp", "udp": "udp", "any": "both", "icmp": "icmp4", "icmpv6": "icmp6", "all": "all",
    "gre": "number", "esp": "number", "ah": "number", "vrrp": "number", 47: "number", 50: "number",
    51: "number", 112: "number", "47": "number", "ESP": "number", "sctp": "number", 132: "number",
    255: "number", "ipv6-icmp": "icmp6", 1: "icmp4", 6: "tcp", "UDP": "udp",
}
RAW_KEYWORDS = ("gre", "esp", "ah", "vrrp", 47, 50, 51, 112, "47", "ESP")
# icmp: entries, around the types conntrack tracks as new (which the kernel harness
# probes) and some it does not (which only the Windows model can see decided by a rule).
ICMP_ENTRIES = {
    "icmp4": ("echo-request", "8", "8/0", "8/3", "13", "timestamp-request", "15", "17", "address-mask-request",
              "17/1", "3/4", "destination-unreachable", "echo-reply", "0", "11", "14", "13/0"),
    "icmp6": ("echo-request", "128", "128/0", "128/1", "139", "139/0", "139/2", "1/4", "destination-unreachable",
              "129", "2", "140"),
}
# Registry names with several ports, ranges, one protocol only, or plain: every shape.
SERVICES = (
    "http-alt", "raid-am", "raid-cd", "x11", "mpshrsv", "t1distproc", "ssh", "domain",
    "msp", "ircu", "active-net", "imap", "rfile", "ntp", "https", "csdmbase",
)
MULTI_PORT_SERVICES = frozenset({"http-alt", "raid-am", "raid-cd", "x11", "msp", "ircu", "active-net", "csdmbase"})
HOT_LO, HOT_HI = 1250, 1290  # around mpshrsv (1261) and t1distproc (1274)
# select: rules (registry selectors), with the ranges that narrow them: each range holds
# pairs of both selectors for tcp and udp (unauthorized-use has none in 1240-1300).
SELECTORS = ("undocumented", "unauthorized-use")
SELECT_RANGES = {"undocumented": (None, "1240-1300", "1000-1600", "system", "registered"),
                 "unauthorized-use": (None, "1000-1600", "system", "registered")}


def _registry_protocols() -> dict[str, set[str]]:
    from fwgen.registry import bundled

    registry = bundled()
    return {name: {proto for proto, _, _ in registry.pairs(name) or []} for name in SERVICES}


_PROTOCOLS_OF = _registry_protocols()


@st.composite
def port_entry(draw: st.DrawFn, protocol: str | None) -> str:
    kind = draw(st.sampled_from(["number", "number", "range", "range", "service", "service"]))
    if kind == "number":
        text = str(draw(st.integers(HOT_LO, HOT_HI) | st.integers(1, 65535)))
    elif kind == "range":
        lo = draw(st.integers(HOT_LO, HOT_HI) | st.integers(1, 65000))
        text = f"{lo}-{draw(st.integers(lo, min(lo + draw(st.sampled_from([0, 3, 12, 40, 2000])), 65535)))}"
    else:
        name = draw(st.sampled_from(SERVICES))
        usable = _PROTOCOLS_OF[name] if protocol in (None, "any") else _PROTOCOLS_OF[name] & {protocol}
        if not usable:
            return str(draw(st.integers(HOT_LO, HOT_HI)))
        text = name
        if protocol in (None, "any") and draw(st.booleans()):
            return f"{name}/{draw(st.sampled_from(sorted(usable)))}"
        return text
    if protocol in (None, "any") and draw(st.integers(0, 3)) == 0:
        text += "/" + draw(st.sampled_from(["tcp", "udp"]))
    return text


@st.composite
def select_keys(draw: st.DrawFn) -> dict[str, Any]:
    """``select:`` (one selector or both) and, mostly, a ``range`` narrowing it."""
    chosen = draw(st.lists(st.sampled_from(SELECTORS), min_size=1, max_size=2, unique=True))
    out: dict[str, Any] = {"select": chosen if len(chosen) > 1 or draw(st.booleans()) else chosen[0]}
    ranges = set.intersection(*(set(SELECT_RANGES[s]) for s in chosen)) if len(chosen) == 1 else set(
        SELECT_RANGES["undocumented"]) | set(SELECT_RANGES["unauthorized-use"])
    port_range = draw(st.sampled_from(sorted(ranges, key=str)))
    if port_range is not None:
        out["range"] = port_range
    return out


@st.composite
def addresses(draw: st.DrawFn, pools: tuple[tuple[str, ...], tuple[str, ...]], families: str) -> list[str]:
    """1-3 networks of ``pools`` (v4, v6): ``families`` "v4", "v6" or "both" (of both
    pools, at least one of each: a rule's remote and local lists must share a family)."""
    v4, v6 = pools
    if families == "both":
        return [draw(st.sampled_from(v4)), draw(st.sampled_from(v6))] + draw(
            st.lists(st.sampled_from(v4 + v6), max_size=1))
    return draw(st.lists(st.sampled_from(v4 if families == "v4" else v6), min_size=1, max_size=3, unique=True))


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


@st.composite
def rule(draw: st.DrawFn, index: int, platform: str = "all", mix: bool = True) -> dict[str, Any]:
    """One rule. ``platform``: "all" (every target), "linux" (may use ``interface``) or
    "windows" (may use ``profiles``). Without ``mix``, a rule of fwgen 1.0's matches
    only (tcp and udp ports, remote addresses), as tests/test_lint.py draws them."""
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["name"] = f"r{index}-{draw(st.sampled_from(['a', 'web', 'x', 'watch']))}"
    out["action"] = draw(st.sampled_from(["allow", "deny", "monitor"]))
    if draw(st.integers(0, 4)) == 0:
        out["log"] = True
    direction = draw(st.sampled_from(["in", "in", "out"]))
    if direction == "out":
        out["direction"] = "out"
    old_style = not mix or draw(st.integers(0, 9)) < 6
    protocol = draw(st.sampled_from([None, None, "tcp", "udp", "any"] if old_style else sorted(PROTOCOLS, key=str)))
    kind = "both" if protocol is None else PROTOCOLS[protocol]
    if protocol is not None:
        out["protocol"] = protocol
    if kind in ("tcp", "udp", "both"):
        shape = draw(st.sampled_from(["ports"] * 8 + ["range", "none"] + (["select"] if mix else [])))
        if shape == "select":
            out.update(draw(select_keys()))
        elif shape == "ports":
            entries = draw(st.lists(port_entry(None if kind == "both" else kind), min_size=1, max_size=5))
            out["ports"] = entries if len(entries) > 1 or draw(st.booleans()) else entries[0]
        elif shape == "range":
            out["range"] = draw(st.sampled_from(["well-known", "registered", "dynamic"]))
    elif kind in ("icmp4", "icmp6") and draw(st.integers(0, 3)) > 0:
        out["icmp"] = draw(st.lists(st.sampled_from(ICMP_ENTRIES[kind]), min_size=1, max_size=3, unique=True))
    if not mix:
        if draw(st.integers(0, 2)) == 0:
            pool = draw(st.sampled_from(["v4", "v6", "both"]))
            choices = {"v4": NETWORKS_V4, "v6": NETWORKS_V6, "both": NETWORKS_V4 + NETWORKS_V6}[pool]
            out["from" if direction == "in" else "to"] = draw(
                st.lists(st.sampled_from(choices), min_size=1, max_size=3, unique=True))
        return out
    families = {"icmp4": "v4", "icmp6": "v6"}.get(kind) or draw(st.sampled_from(["v4", "v6", "both"]))
    if draw(st.integers(0, 2)) == 0:
        out["from" if direction == "in" else "to"] = _dedupe(draw(addresses((NETWORKS_V4, NETWORKS_V6), families)))
    if draw(st.integers(0, 3)) == 0:
        out["local"] = _dedupe(draw(addresses((LOCAL_V4, LOCAL_V6), families)))
    if platform == "linux" and draw(st.integers(0, 2)) == 0:
        names = draw(st.lists(st.sampled_from(INTERFACES), min_size=1, max_size=2, unique=True))
        out["interface"] = names if len(names) > 1 or draw(st.booleans()) else names[0]
    if platform == "windows" and draw(st.integers(0, 2)) == 0:
        out["profiles"] = draw(st.lists(st.sampled_from(PROFILES), min_size=1, max_size=2, unique=True))
    return out


OLD_FEATURES = (
    "overlapping", "shadowed", "mixed_families", "multi_port_name",
    "restricted_in", "restricted_out", "reject", "monitor",
)
NEW_FEATURES = ("icmp", "icmpv6", "ip_protocol", "protocol_all", "local", "interface", "profiles", "select")
FEATURES = OLD_FEATURES + NEW_FEATURES
# What each platform's policies say in ``targets:`` (a policy using interface must be
# for the Linux targets only, one using profiles for Windows only).
TARGETS = {"all": None, "linux": ["iptables", "nftables"], "windows": ["windows"]}


def platform_for(feature: str | None) -> st.SearchStrategy[str]:
    """The targets a policy is for: a policy built for a feature goes to the kernel (and,
    unless it needs the interface, to Windows too), except one built for profiles, which
    only Windows has; an exploration policy may be for any of them."""
    if feature == "interface":
        return st.just("linux")
    if feature == "profiles":
        return st.just("windows")
    if feature is not None:
        return st.sampled_from(["all", "all", "linux"])
    return st.sampled_from(["all", "all", "linux", "windows"])


@st.composite
def policy(draw: st.DrawFn, feature: str | None = None, mix: bool = False) -> dict[str, Any]:
    """A random policy; with ``feature`` (one of ``FEATURES``), one built to have it.
    ``mix``: its rules use the newer matches too (other protocols, ``local``, and, in a
    policy for Linux or Windows only, ``interface`` or ``profiles``); without it (the
    default, which tests/test_lint.py draws), fwgen 1.0's matches only, for every
    target, unless ``feature`` is a newer one.

    Forcing a feature makes coverage a property of the generator, not of luck:
    hypothesis draws choices unevenly (early examples favour a choice's first option),
    so a feature left to chance shows up in 2 of 50 policies one day and 30 the next."""
    platform = draw(platform_for(feature)) if mix or feature in NEW_FEATURES else "all"
    count = draw(st.integers(1, 8))
    rules = [draw(rule(i + 1, platform, mix)) for i in range(count)]
    # In a quarter of the policies, a rule that an earlier one shadows (independent random
    # rules make one too rarely): the same direction, protocol and ports as an earlier
    # rule that restricts nothing else, and any action.
    free = [r for r in rules if not set(r) & {"from", "to", "local", "interface", "profiles", "icmp"}]
    if free and draw(st.integers(0, 3)) == 0:
        model = draw(st.sampled_from(free))
        rules.append(_shadow(draw, model))
    data: dict[str, Any] = {
        "version": 1,
        "name": "rand",
        "defaults": {
            "inbound": draw(st.sampled_from(["allow", "deny"])),
            "outbound": draw(st.sampled_from(["allow", "deny"])),
            "deny": draw(st.sampled_from(["drop", "reject"])),
        },
        # high enough that the limiter's burst is not what these tests measure
        "monitor": {"log_prefix": "fwgenT", "rate": "10000/second"},
        "rules": rules,
    }
    if TARGETS[platform] is not None:
        data["targets"] = TARGETS[platform]
    if feature is not None:
        _force(draw, data, feature)
    return data


def _shadow(draw: st.DrawFn, model: dict[str, Any]) -> dict[str, Any]:
    same = {k: v for k, v in model.items() if k in ("direction", "protocol", "ports", "range", "select")}
    return {"action": draw(st.sampled_from(["allow", "deny", "monitor"])), **same}


def _insert(draw: st.DrawFn, rules: list[dict[str, Any]], *new: dict[str, Any]) -> None:
    """Insert ``new`` rules, in their order, at random places among ``rules``."""
    at = sorted(draw(st.lists(st.integers(0, len(rules)), min_size=len(new), max_size=len(new))))
    for offset, (position, item) in enumerate(zip(at, new, strict=True)):
        rules.insert(position + offset, item)


def _force(draw: st.DrawFn, data: dict[str, Any], feature: str) -> None:
    rules: list[dict[str, Any]] = data["rules"]
    action = draw(st.sampled_from(["allow", "deny", "monitor"]))
    direction = draw(st.sampled_from(["in", "out"]))
    peer = "from" if direction == "in" else "to"
    base = {"action": action, "direction": direction}
    if feature == "reject":
        data["defaults"]["deny"] = "reject"
    elif feature == "monitor":
        _insert(draw, rules, {"action": "monitor", "direction": direction, "ports": [draw(port_entry(None))]})
    elif feature in ("restricted_in", "restricted_out"):
        direction, peer = ("in", "from") if feature == "restricted_in" else ("out", "to")
        networks = draw(st.lists(st.sampled_from(NETWORKS_V4 + NETWORKS_V6), min_size=1, max_size=3, unique=True))
        _insert(draw, rules, {"action": action, "direction": direction, "ports": [draw(port_entry(None))],
                              peer: networks})
    elif feature == "mixed_families":
        pool = draw(st.sampled_from([NETWORKS_V4, NETWORKS_V6]))
        networks = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True))
        _insert(draw, rules, {**base, "ports": [draw(port_entry(None))], peer: networks})
    elif feature == "multi_port_name":
        _insert(draw, rules, {**base, "ports": [draw(st.sampled_from(sorted(MULTI_PORT_SERVICES)))]})
    elif feature == "overlapping":
        lo = draw(st.integers(HOT_LO, HOT_HI - 8))
        first = {**base, "ports": [f"{lo}-{lo + 5}"]}
        later = {"action": draw(st.sampled_from(["allow", "deny", "monitor"])), "direction": direction,
                 "ports": [f"{lo + draw(st.integers(0, 5))}-{lo + 8}"]}
        _insert(draw, rules, first, later)
    elif feature == "shadowed":
        model = {**base, "ports": [draw(port_entry(None))]}
        _insert(draw, rules, model, _shadow(draw, model))
    elif feature in ("icmp", "icmpv6"):
        kind = "icmp4" if feature == "icmp" else "icmp6"
        forced = {**base, "protocol": feature,
                  "icmp": draw(st.lists(st.sampled_from(ICMP_ENTRIES[kind]), min_size=1, max_size=3, unique=True))}
        if draw(st.booleans()):
            forced["local" if draw(st.booleans()) else peer] = draw(addresses(
                (LOCAL_V4, LOCAL_V6) if draw(st.booleans()) else (NETWORKS_V4, NETWORKS_V6),
                "v4" if feature == "icmp" else "v6"))
        _insert(draw, rules, forced)
    elif feature == "ip_protocol":
        forced = {**base, "protocol": draw(st.sampled_from(RAW_KEYWORDS))}
        if draw(st.booleans()):
            forced[peer] = _dedupe(draw(addresses((NETWORKS_V4, NETWORKS_V6), draw(st.sampled_from(
                ["v4", "v6", "both"])))))
        _insert(draw, rules, forced)
    elif feature == "protocol_all":
        forced = {**base, "protocol": "all"}
        restriction = draw(st.sampled_from([peer, "local", None]))
        if restriction is not None:
            pools = (LOCAL_V4, LOCAL_V6) if restriction == "local" else (NETWORKS_V4, NETWORKS_V6)
            forced[restriction] = _dedupe(draw(addresses(pools, draw(st.sampled_from(["v4", "v6", "both"])))))
        _insert(draw, rules, forced)
    elif feature == "local":
        forced = {**base, "local": _dedupe(draw(addresses((LOCAL_V4, LOCAL_V6), draw(st.sampled_from(
            ["v4", "v6", "both"])))))}
        if draw(st.booleans()):
            forced["ports"] = [draw(port_entry(None))]
        _insert(draw, rules, forced)
    elif feature == "interface":
        names = draw(st.lists(st.sampled_from(INTERFACES), min_size=1, max_size=2, unique=True))
        forced = {**base, "interface": names}
        what = draw(st.sampled_from(["ports", "icmp", "raw", "none"]))
        if what == "ports":
            forced["ports"] = [draw(port_entry(None))]
        elif what == "icmp":
            forced["protocol"] = draw(st.sampled_from(["icmp", "icmpv6"]))
        elif what == "raw":
            forced["protocol"] = draw(st.sampled_from(RAW_KEYWORDS))
        _insert(draw, rules, forced)
    elif feature == "select":
        forced = {**base, **draw(select_keys())}
        if draw(st.booleans()):
            forced["protocol"] = draw(st.sampled_from(["tcp", "udp"]))
        if draw(st.integers(0, 2)) == 0:
            forced[peer] = _dedupe(draw(addresses((NETWORKS_V4, NETWORKS_V6), draw(st.sampled_from(
                ["v4", "v6", "both"])))))
        _insert(draw, rules, forced)
        if draw(st.booleans()):  # a port rule after it: the pairs the select rule decides first stay its
            _insert(draw, rules, {"action": draw(st.sampled_from(["allow", "deny", "monitor"])),
                                  "direction": direction, "ports": [draw(port_entry(None))]})
    elif feature == "profiles":
        forced = {**base, "profiles": draw(st.lists(st.sampled_from(PROFILES), min_size=1, max_size=2, unique=True))}
        what = draw(st.sampled_from(["ports", "icmp", "raw", "local"]))
        if what == "ports":
            forced["ports"] = [draw(port_entry(None))]
        elif what == "icmp":
            forced["protocol"] = "icmp"
            forced["icmp"] = [draw(st.sampled_from(ICMP_ENTRIES["icmp4"]))]
        elif what == "raw":
            forced["protocol"] = draw(st.sampled_from(RAW_KEYWORDS))
        else:
            forced["local"] = _dedupe(draw(addresses((LOCAL_V4, LOCAL_V6), "both")))
        _insert(draw, rules, forced)
    else:
        raise ValueError(f"unknown feature {feature!r}")


def to_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


@dataclass
class Features:
    overlapping: bool = False
    shadowed: bool = False
    mixed_families: bool = False
    multi_port_name: bool = False
    restricted_in: bool = False
    restricted_out: bool = False
    reject: bool = False
    monitor: bool = False
    icmp: bool = False
    icmpv6: bool = False
    ip_protocol: bool = False
    protocol_all: bool = False
    local: bool = False
    interface: bool = False
    profiles: bool = False
    select: bool = False


EVERY_PROTOCOL = ((0, WHAT_SIZE - 1),)


def features(ruleset: Any) -> Features:
    """What kind of policy this was, computed from the compiled IR."""
    f = Features()
    rules = ruleset.rules
    f.reject = ruleset.defaults.reject
    f.monitor = any(r.logged for r in rules)
    f.mixed_families = any(r.applies_to(4) != r.applies_to(6) for r in rules)
    for r in rules:
        restricted = r.remote_v4 is not None or r.remote_v6 is not None
        if restricted and r.direction.value == "in":
            f.restricted_in = True
        if restricted and r.direction.value == "out":
            f.restricted_out = True
        numbers = set(by_protocol(r.other))
        if r.what() == EVERY_PROTOCOL:
            f.protocol_all = True
        else:
            f.icmp |= ICMP_NUMBER in numbers
            f.icmpv6 |= ICMPV6_NUMBER in numbers
            f.ip_protocol |= bool(numbers - {ICMP_NUMBER, ICMPV6_NUMBER})
        f.local |= r.local_v4 is not None or r.local_v6 is not None
        f.interface |= r.interfaces is not None
        f.profiles |= r.profiles is not None
    for i, later in enumerate(rules):
        for earlier in rules[:i]:
            if earlier.direction is not later.direction:
                continue
            for proto, ranges in later.ports:
                other = earlier.port_ranges(proto)
                if any(a.lo <= b.hi and b.lo <= a.hi for a in ranges for b in other):
                    f.overlapping = True
                covered = all(any(b.lo <= a.lo and a.hi <= b.hi for b in other) for a in ranges)
                if covered and earlier.remote_v4 is None and earlier.remote_v6 is None:
                    f.shadowed = True
    return f


def mentions_select(data: dict[str, Any]) -> bool:
    return any("select" in r for r in data["rules"])


def mentions_multi_port_name(data: dict[str, Any]) -> bool:
    for r in data["rules"]:
        entries = r.get("ports", [])
        for entry in entries if isinstance(entries, list) else [entries]:
            if str(entry).split("/")[0] in MULTI_PORT_SERVICES:
                return True
    return False


class Coverage:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.policies = 0

    def add(self, data: dict[str, Any], ruleset: Any) -> None:
        self.policies += 1
        found = features(ruleset)
        found.multi_port_name = mentions_multi_port_name(data)
        found.select = mentions_select(data)
        self.counts.update(k for k, v in vars(found).items() if v)

    def report(self) -> str:
        parts = ", ".join(f"{k} {self.counts[k]}" for k in FEATURES)
        return f"coverage over {self.policies} random policies: {parts}"


def peer_addresses() -> list[str]:
    return list(PEER_V4 + PEER_V6)


def family(addr: str) -> int:
    return ipaddress.ip_address(addr).version
