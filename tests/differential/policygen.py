"""Random policies for the differential tests (hypothesis strategies), and the coverage
features that keep the generator honest.

Policies draw ports from a small hot region and a few registry names with several
ports or ranges, so rules overlap and shadow each other often; addresses come from a
pool whose networks nest and straddle the peer namespace's addresses, in both families.
Only documentation ranges are used (RFC 5737, RFC 3849), and only inside namespaces the
harness creates.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import strategies as st

# The peer namespace owns these; policies restrict to networks around them.
PEER_V4 = ("198.51.100.5", "198.51.100.70", "198.51.100.130", "192.0.2.9", "203.0.113.77")
PEER_V6 = ("2001:db8:1::5", "2001:db8:1:0:8000::9", "2001:db8:2::7", "2001:db8:ff00::1")
HOST_V4 = "203.0.113.1"
HOST_V6 = "2001:db8:ffff::1"
NETWORKS_V4 = (
    "198.51.100.0/24", "198.51.100.0/25", "198.51.100.64/26", "198.51.100.128/25",
    "198.51.100.130", "192.0.2.0/24", "192.0.2.8/29", "192.0.2.128/25", "0.0.0.0/0",
)
NETWORKS_V6 = (
    "2001:db8:1::/48", "2001:db8:1::/65", "2001:db8:1:0:8000::/65", "2001:db8:2::7",
    "2001:db8::/32", "2001:db8:ff00::/40", "2001:db8:9900::/40", "::/0",
)
# Registry names with several ports, ranges, one protocol only, or plain: every shape.
SERVICES = (
    "http-alt", "raid-am", "raid-cd", "x11", "mpshrsv", "t1distproc", "ssh", "domain",
    "msp", "ircu", "active-net", "imap", "rfile", "ntp", "https", "csdmbase",
)
MULTI_PORT_SERVICES = frozenset({"http-alt", "raid-am", "raid-cd", "x11", "msp", "ircu", "active-net", "csdmbase"})
HOT_LO, HOT_HI = 1250, 1290  # around mpshrsv (1261) and t1distproc (1274)


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
def rule(draw: st.DrawFn, index: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["name"] = f"r{index}-{draw(st.sampled_from(['a', 'web', 'x', 'watch']))}"
    out["action"] = draw(st.sampled_from(["allow", "deny", "monitor"]))
    if draw(st.integers(0, 4)) == 0:
        out["log"] = True
    direction = draw(st.sampled_from(["in", "in", "out"]))
    if direction == "out":
        out["direction"] = "out"
    protocol = draw(st.sampled_from([None, None, "tcp", "udp", "any"]))
    if protocol:
        out["protocol"] = protocol
    shape = draw(st.sampled_from(["ports"] * 8 + ["range", "none"]))
    if shape == "ports":
        entries = draw(st.lists(port_entry(protocol), min_size=1, max_size=5))
        out["ports"] = entries if len(entries) > 1 or draw(st.booleans()) else entries[0]
    elif shape == "range":
        out["range"] = draw(st.sampled_from(["well-known", "registered", "dynamic"]))
    if draw(st.integers(0, 2)) == 0:
        pool = draw(st.sampled_from(["v4", "v6", "both"]))
        choices = {"v4": NETWORKS_V4, "v6": NETWORKS_V6, "both": NETWORKS_V4 + NETWORKS_V6}[pool]
        out["from" if direction == "in" else "to"] = draw(
            st.lists(st.sampled_from(choices), min_size=1, max_size=3, unique=True)
        )
    return out


FEATURES = (
    "overlapping", "shadowed", "mixed_families", "multi_port_name",
    "restricted_in", "restricted_out", "reject", "monitor",
)


@st.composite
def policy(draw: st.DrawFn, feature: str | None = None) -> dict[str, Any]:
    """A random policy; with ``feature`` (one of ``FEATURES``), one built to have it.

    Forcing a feature makes coverage a property of the generator, not of luck:
    hypothesis draws choices unevenly (early examples favour a choice's first option),
    so a feature left to chance shows up in 2 of 50 policies one day and 30 the next."""
    count = draw(st.integers(1, 8))
    rules = [draw(rule(i + 1)) for i in range(count)]
    # In a quarter of the policies, a rule that an earlier one shadows (independent random
    # rules make one too rarely): the same direction, protocol and ports as an earlier
    # rule that restricts no address, and any action.
    free = [r for r in rules if "from" not in r and "to" not in r]
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
    if feature is not None:
        _force(draw, data, feature)
    return data


def _shadow(draw: st.DrawFn, model: dict[str, Any]) -> dict[str, Any]:
    same = {k: v for k, v in model.items() if k in ("direction", "protocol", "ports", "range")}
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
        _insert(draw, rules, {"action": action, "direction": direction, "ports": [draw(port_entry(None))],
                              peer: networks})
    elif feature == "multi_port_name":
        _insert(draw, rules, {"action": action, "direction": direction,
                              "ports": [draw(st.sampled_from(sorted(MULTI_PORT_SERVICES)))]})
    elif feature == "overlapping":
        lo = draw(st.integers(HOT_LO, HOT_HI - 8))
        first = {"action": action, "direction": direction, "ports": [f"{lo}-{lo + 5}"]}
        later = {"action": draw(st.sampled_from(["allow", "deny", "monitor"])), "direction": direction,
                 "ports": [f"{lo + draw(st.integers(0, 5))}-{lo + 8}"]}
        _insert(draw, rules, first, later)
    elif feature == "shadowed":
        model = {"action": action, "direction": direction, "ports": [draw(port_entry(None))]}
        _insert(draw, rules, model, _shadow(draw, model))
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
        self.counts.update(k for k, v in vars(found).items() if v)

    def report(self) -> str:
        parts = ", ".join(f"{k} {self.counts[k]}" for k in sorted(vars(Features())))
        return f"coverage over {self.policies} random policies: {parts}"


def peer_addresses() -> list[str]:
    return list(PEER_V4 + PEER_V6)


def family(addr: str) -> int:
    return ipaddress.ip_address(addr).version
