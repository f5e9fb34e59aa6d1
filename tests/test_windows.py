"""Windows Firewall target: the order-free rule set must decide every connection exactly
as the first-match policy does.

The checker here is written independently of fwgen.targets.windows: it models Windows
Firewall (a matching block rule wins, else a matching allow rule, else the profile
default) over the WinRule list, and over the rules parsed back out of the script.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwgen.errors import Location
from fwgen.intervals import merge_spans
from fwgen.ir import (
    Action,
    Defaults,
    Direction,
    MonitorSettings,
    PortRange,
    Protocol,
    Rule,
    Ruleset,
    SourceInfo,
    merge_ranges,
)
from fwgen.targets import windows
from fwgen.targets.windows import WinRule, lower

SOURCE = SourceInfo("p.yaml", "a" * 64, "2026-08-17", "b" * 64)
MONITOR = MonitorSettings("fwgen", 10, "minute")
TCP, UDP = Protocol.TCP, Protocol.UDP
IN, OUT = Direction.IN, Direction.OUT
ALLOW, DENY, MON = Action.ALLOW, Action.DENY, Action.MONITOR
V4_MAX = ipaddress.IPv4Address((1 << 32) - 1)
V6_MAX = ipaddress.IPv6Address((1 << 128) - 1)
CMD_LIMIT = 8191


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def ports(*spec: int | tuple[int, int]) -> tuple[PortRange, ...]:
    return merge_ranges([PortRange(s, s) if isinstance(s, int) else PortRange(*s) for s in spec])


def rule(
    index: int,
    action: Action,
    tcp: tuple[PortRange, ...] = (),
    udp: tuple[PortRange, ...] = (),
    v4: tuple[ipaddress.IPv4Network, ...] | None = None,
    v6: tuple[ipaddress.IPv6Network, ...] | None = None,
    direction: Direction = IN,
    name: str | None = None,
    log: bool = False,
    comment: str = "",
) -> Rule:
    by_proto = tuple((p, r) for p, r in ((TCP, tcp), (UDP, udp)) if r)
    return Rule(
        index=index,
        name=name or f"r{index}",
        location=Location("p.yaml", 10 + index, 1),
        action=action,
        log=log,
        direction=direction,
        ports=by_proto,
        remote_v4=v4,
        remote_v6=v6,
        comment=comment,
    )


def ruleset(
    *rules: Rule,
    inbound: Action = DENY,
    outbound: Action = ALLOW,
    reject: bool = False,
    name: str = "web",
    description: str = "test policy",
) -> Ruleset:
    return Ruleset(
        name=name,
        description=description,
        defaults=Defaults(inbound, outbound, reject),
        monitor=MONITOR,
        rules=tuple(rules),
        source=SOURCE,
    )


# --------------------------------------------------------------------------------------
# Independent models


class Intervals:
    """A set of integers given as inclusive (lo, hi) pairs, in any order, overlapping or not."""

    def __init__(self, pairs) -> None:
        merged: list[list[int]] = []
        for lo, hi in sorted(pairs):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.los = [m[0] for m in merged]
        self.his = [m[1] for m in merged]

    def __contains__(self, x: int) -> bool:
        i = bisect.bisect_right(self.los, x) - 1
        return i >= 0 and x <= self.his[i]


class IRModel:
    """First match over the IR rules, straight from the policy semantics."""

    def __init__(self, rs: Ruleset) -> None:
        self.rs = rs
        self.rules = [
            (
                r,
                {p: Intervals((pr.lo, pr.hi) for pr in r.port_ranges(p)) for p in (TCP, UDP)},
                {
                    f: None
                    if r.remote(f) is None
                    else Intervals(
                        (int(n.network_address), int(n.broadcast_address)) for n in r.remote(f)
                    )
                    for f in (4, 6)
                },
            )
            for r in rs.rules
        ]

    def accepts(self, d: Direction, p: Protocol, port: int, addr) -> bool:
        for r, by_proto, remote in self.rules:
            if r.direction is not d or port not in by_proto[p]:
                continue
            nets = remote[addr.version]
            if nets is not None and int(addr) not in nets:
                continue
            return r.action is not DENY
        default = self.rs.defaults.inbound if d is IN else self.rs.defaults.outbound
        return default is ALLOW


def parse_token(token: str):
    """A netsh remoteip token -> (first, last) address."""
    if "-" in token:
        a, b = token.split("-")
        lo, hi = ipaddress.ip_address(a), ipaddress.ip_address(b)
        assert lo.version == hi.version and lo <= hi, token
        return lo, hi
    n = ipaddress.ip_network(token, strict=True)
    return n.network_address, n.broadcast_address


class WinModel:
    """Windows Firewall: block beats allow beats the profile default; no order."""

    def __init__(self, rules: list[tuple], inbound: Action, outbound: Action) -> None:
        # rules: (direction, action, protocol, [(lo, hi) ports] | None, [(a, b)] | None)
        self.rules = rules
        self.defaults = {IN: inbound, OUT: outbound}
        self.compiled = [
            (
                rd,
                action,
                rp,
                None if rports is None else Intervals(rports),
                None
                if remote is None
                else {
                    v: Intervals((int(lo), int(hi)) for lo, hi in remote if lo.version == v)
                    for v in (4, 6)
                },
            )
            for rd, action, rp, rports, remote in rules
        ]

    @classmethod
    def from_winrules(cls, rules: list[WinRule], rs: Ruleset) -> WinModel:
        return cls(
            [
                (
                    w.direction,
                    w.action,
                    Protocol(w.protocol),
                    None if w.ports is None else [(p.lo, p.hi) for p in w.ports],
                    None if w.remote is None else [parse_token(t) for t in w.remote],
                )
                for w in rules
            ],
            rs.defaults.inbound,
            rs.defaults.outbound,
        )

    def accepts(self, d: Direction, p: Protocol, port: int, addr) -> bool:
        allowed = False
        for rd, action, rp, rports, remote in self.compiled:
            if rd is not d or rp is not p:
                continue
            if rports is not None and port not in rports:
                continue
            if remote is not None and int(addr) not in remote[addr.version]:
                continue
            if action == "block":
                return False
            assert action == "allow"
            allowed = True
        return allowed or self.defaults[d] is ALLOW


ADD_LINE = re.compile(
    r'^netsh advfirewall firewall add rule name="(?P<name>fwgen-[a-z0-9_-]+)\.new" '
    r"dir=(?P<dir>in|out) action=(?P<action>allow|block) protocol=(?P<proto>tcp|udp)"
    r"(?: (?P<portopt>localport|remoteport)=(?P<ports>[0-9,-]+))?"
    r"(?: remoteip=(?P<remote>[0-9a-f.:/,-]+))?"
    r' profile=any enable=yes description="(?P<desc>[A-Za-z0-9 _.,:/()+=@#-]*)"'
    r" \|\| goto :failed$"
)


def parse_script(text: str) -> list[tuple]:
    """The add-rule lines of a script, in WinModel form (checks each line's shape)."""
    out = []
    for line in text.split("\r\n"):
        if not line.startswith("netsh advfirewall firewall add rule"):
            continue
        m = ADD_LINE.match(line)
        assert m, line
        d = Direction(m["dir"])
        if m["ports"] is not None:
            assert m["portopt"] == ("localport" if d is IN else "remoteport"), line
        port_list = None
        if m["ports"] is not None:
            port_list = []
            for tok in m["ports"].split(","):
                lo, _, hi = tok.partition("-")
                port_list.append((int(lo), int(hi or lo)))
        remote = None if m["remote"] is None else [parse_token(t) for t in m["remote"].split(",")]
        out.append((d, m["action"], Protocol(m["proto"]), port_list, remote))
    return out


# --------------------------------------------------------------------------------------
# Probe points: every edge +-1 and some random points


def probe_ports(rs: Ruleset, rng: random.Random, extra: int = 10) -> list[int]:
    pts = {0, 1, 65534, 65535}
    for r in rs.rules:
        for _, ranges in r.ports:
            for pr in ranges:
                pts.update({pr.lo - 1, pr.lo, pr.hi, pr.hi + 1})
    pts.update(rng.randint(0, 65535) for _ in range(extra))
    return sorted(p for p in pts if 0 <= p <= 65535)


def probe_addresses(rs: Ruleset, rng: random.Random, extra: int = 10) -> list:
    pts: set = set()
    for family, top in ((4, (1 << 32) - 1), (6, (1 << 128) - 1)):
        cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
        ints = {0, 1, top - 1, top}
        for r in rs.rules:
            for n in r.remote(family) or ():
                lo, hi = int(n.network_address), int(n.broadcast_address)
                ints.update({lo - 1, lo, lo + 1, hi - 1, hi, hi + 1})
        ints.update(rng.randint(0, top) for _ in range(extra))
        pts.update(cls(i) for i in ints if 0 <= i <= top)
    # :: and ::1 are never the remote address of a connection Windows Firewall filters
    # (and [MS-FASP] keeps them out of rules): fwgen leaves them out of its address lists
    pts -= {ipaddress.IPv6Address(0), ipaddress.IPv6Address(1)}
    return sorted(pts, key=lambda a: (a.version, a))


def assert_equivalent(rs: Ruleset, rng: random.Random | None = None, max_pairs: int | None = None):
    rng = rng or random.Random(1261)
    winrules = lower(rs)
    model = WinModel.from_winrules(winrules, rs)
    text = windows.render(rs).files[f"windows/{rs.name}.cmd"]
    parsed = WinModel(parse_script(text), rs.defaults.inbound, rs.defaults.outbound)
    assert parsed.rules == model.rules  # the script says what lower() says
    port_pts, addr_pts = probe_ports(rs, rng), probe_addresses(rs, rng)
    if max_pairs is None or len(port_pts) * len(addr_pts) <= max_pairs:
        pairs = [(p, a) for p in port_pts for a in addr_pts]
    else:  # every probe port and every probe address at least once, plus random pairs
        pairs = [(p, addr_pts[i % len(addr_pts)]) for i, p in enumerate(port_pts)]
        pairs += [(rng.choice(port_pts), a) for a in addr_pts]
        pairs += [(rng.choice(port_pts), rng.choice(addr_pts)) for _ in range(max_pairs)]
    ir = IRModel(rs)
    for d in (IN, OUT):
        for proto in (TCP, UDP):
            for port, addr in pairs:
                want = ir.accepts(d, proto, port, addr)
                got = model.accepts(d, proto, port, addr)
                assert got == want, (d, proto, port, str(addr), want, winrules)
    return winrules


# --------------------------------------------------------------------------------------
# Hand-written cases


def test_allow_from_network_then_deny_same_port():
    rs = ruleset(
        rule(1, ALLOW, tcp=ports(1261), v4=(net("10.0.0.0/8"),), v6=()),
        rule(2, DENY, tcp=ports(1261)),
        inbound=ALLOW,
    )
    rules = assert_equivalent(rs)
    assert rules == [
        WinRule(
            IN,
            "block",
            "tcp",
            ports(1261),
            (
                "0.0.0.0-9.255.255.255",
                "11.0.0.0-255.255.255.255",
                "::2-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
            "fwgen web: rule r2 (p.yaml:12) deny",
        ),
        WinRule(
            IN, "allow", "tcp", ports(1261), ("10.0.0.0/8",), "fwgen web: rule r1 (p.yaml:11) allow"
        ),
    ]
    model = WinModel.from_winrules(rules, rs)
    assert model.accepts(IN, TCP, 1261, ipaddress.ip_address("10.1.2.3"))
    assert not model.accepts(IN, TCP, 1261, ipaddress.ip_address("11.0.0.0"))
    assert not model.accepts(IN, TCP, 1261, ipaddress.ip_address("2001:db8::1"))
    assert model.accepts(IN, UDP, 1261, ipaddress.ip_address("11.0.0.0"))


def test_overlapping_port_ranges():
    rs = ruleset(
        rule(1, DENY, tcp=ports((100, 200)), v4=(net("192.0.2.0/24"),)),
        rule(2, ALLOW, tcp=ports((150, 300), 443), udp=ports((150, 160))),
        rule(3, DENY, tcp=ports((250, 400))),
        rule(4, MON, tcp=ports((0, 65535)), v4=(net("198.51.100.0/25"),), v6=()),
        rule(5, ALLOW, tcp=ports((1, 5), (7, 9))),
        rule(6, DENY, tcp=ports((3, 8))),
    )
    assert_equivalent(rs)


def test_v4_only_and_v6_only_rules():
    rs = ruleset(
        rule(1, ALLOW, tcp=ports(22), v4=(net("10.0.0.0/8"), net("172.16.0.0/12")), v6=()),
        rule(2, ALLOW, tcp=ports(22), v4=(), v6=(net("2001:db8::/32"),)),
        rule(3, DENY, tcp=ports(22), v4=(), v6=None),
        rule(4, ALLOW, udp=ports(53), v4=None, v6=()),
        inbound=ALLOW,
    )
    rules = assert_equivalent(rs)
    blocks = [w for w in rules if w.action == "block"]
    # rule 3 blocks IPv6 except 2001:db8::/32 only; IPv4 on 22 is left to the default.
    assert blocks and all(":" in t for w in blocks for t in w.remote)
    udp = [w for w in rules if w.protocol == "udp"]
    assert udp == [
        WinRule(
            IN,
            "allow",
            "udp",
            ports(53),
            ("0.0.0.0-255.255.255.255",),
            "fwgen web: rule r4 (p.yaml:14) allow",
        )
    ]


def test_outbound_rules_use_remoteport():
    rs = ruleset(
        rule(1, ALLOW, tcp=ports(443), udp=ports(53), direction=OUT, v4=(net("203.0.113.0/24"),)),
        rule(2, DENY, tcp=ports((0, 65535)), direction=OUT, v6=()),
        rule(3, ALLOW, tcp=ports(25), direction=IN),
        outbound=DENY,
        inbound=ALLOW,
    )
    rules = assert_equivalent(rs)
    text = windows.render(rs).files["windows/web.cmd"]
    for line in text.split("\r\n"):
        if "dir=out" in line:
            assert "localport=" not in line
        if "dir=in" in line:
            assert "remoteport=" not in line
    assert any(w.direction is OUT and w.ports == ports(443) for w in rules)
    assert "firewallpolicy allowinbound,blockoutbound || exit /b 1" in text


@pytest.mark.parametrize("inbound", [ALLOW, DENY])
@pytest.mark.parametrize("outbound", [ALLOW, DENY])
def test_both_defaults(inbound, outbound):
    rs = ruleset(
        rule(1, ALLOW, tcp=ports(22), v4=(net("10.0.0.0/8"),)),
        rule(2, DENY, tcp=ports((1, 1023))),
        rule(3, ALLOW, udp=ports(123), direction=OUT),
        rule(4, DENY, udp=ports((1, 1000)), direction=OUT, v6=(net("fe80::/10"),)),
        inbound=inbound,
        outbound=outbound,
    )
    rules = assert_equivalent(rs)
    text = windows.render(rs).files["windows/web.cmd"]
    policy = (
        f"{'block' if inbound is DENY else 'allow'}inbound,"
        f"{'block' if outbound is DENY else 'allow'}outbound"
    )
    assert f"netsh advfirewall set allprofiles firewallpolicy {policy} || exit /b 1\r\n" in text
    # explicit block rules stay even under a block default
    assert any(w.action == "block" and w.direction is IN for w in rules)
    assert any(w.action == "block" and w.direction is OUT for w in rules)


def test_default_cells_emit_nothing():
    assert lower(ruleset()) == []
    text = windows.render(ruleset()).files["windows/web.cmd"]
    assert "add rule" not in text
    # a deny under a deny default still blocks (core-networking allows cannot override it)
    rules = lower(ruleset(rule(1, DENY, tcp=ports(445)), inbound=DENY))
    assert [(w.action, w.ports, w.remote) for w in rules] == [("block", ports(445), None)]


def test_any_address_and_any_port_are_omitted():
    rs = ruleset(rule(1, ALLOW, tcp=ports((0, 65535))), rule(2, DENY, udp=ports((0, 65535))))
    rules = lower(rs)
    assert [(w.action, w.protocol, w.ports, w.remote) for w in rules] == [
        ("allow", "tcp", None, None),
        ("block", "udp", None, None),
    ]
    text = windows.render(rs).files["windows/web.cmd"]
    line = next(l for l in text.split("\r\n") if "protocol=tcp" in l)
    assert "localport" not in line and "remoteip" not in line


def test_address_tokens_are_cidrs_ranges_or_single_addresses():
    rs = ruleset(
        rule(
            1,
            ALLOW,
            tcp=ports(80),
            v4=(net("192.0.2.1/32"), net("192.0.2.4/30"), net("192.0.2.8/29")),
            v6=(net("2001:db8::/64"), net("2001:db8:0:1::/64"), net("2001:db8:1::5/128")),
        ),
    )
    rules = assert_equivalent(rs)
    assert [w.remote for w in rules] == [
        ("192.0.2.1", "192.0.2.4-192.0.2.15", "2001:db8::/63", "2001:db8:1::5")
    ]


def test_monitor_and_logging_degradations():
    rs = ruleset(
        rule(1, MON, tcp=ports(22)),
        rule(2, DENY, tcp=ports(23), log=True),
        reject=True,
    )
    out = windows.render(rs)
    text = out.files["windows/web.cmd"]
    # the build reports each degradation the target table declares, at its rule
    # (tests/test_targets.py); the target adds the policy-wide one
    assert len(out.warnings) == 1 and "the default inbound deny" in out.warnings[0]
    logging = "netsh advfirewall set allprofiles logging {} enable || exit /b 1\r\n"
    assert logging.format("allowedconnections") in text
    assert logging.format("droppedconnections") in text
    assert "rem Reject is not supported" in text
    assert [(w.action, w.ports) for w in lower(rs)] == [("block", ports(23)), ("allow", ports(22))]


def test_no_degradation_notes_when_not_needed():
    out = windows.render(ruleset(rule(1, ALLOW, tcp=ports(22)), rule(2, DENY, tcp=ports(23)), inbound=ALLOW))
    text = out.files["windows/web.cmd"]
    assert out.warnings == []
    assert "logging" not in text and "reject" not in text.lower() and "other software" not in text


def test_a_deny_default_says_other_allow_rules_beat_it():
    for inbound, outbound, which in ((DENY, ALLOW, "inbound"), (ALLOW, DENY, "outbound"),
                                      (DENY, DENY, "inbound and outbound")):
        out = windows.render(ruleset(rule(1, ALLOW, tcp=ports(22)), inbound=inbound, outbound=outbound))
        assert [w for w in out.warnings if "other software" in w] == [
            f"windows: the default {which} deny is the block setting of the profiles, which every allow rule "
            "of other software (File and Printer Sharing, WinRM, rules users allowed) overrides; set exclusive: "
            "true under windows: to write it as block rules that beat them"
        ]
        assert f"rem The default {which} deny is the block setting" in out.files["windows/web.cmd"]


# --------------------------------------------------------------------------------------
# Script structure


def test_script_structure():
    rs = ruleset(
        rule(1, ALLOW, tcp=ports(22), v4=(net("10.0.0.0/8"),)),
        rule(2, DENY, tcp=ports(22)),
        rule(3, MON, udp=ports(514), direction=OUT),
    )
    text = windows.render(rs).files["windows/web.cmd"]
    assert text.endswith("\r\n")
    assert text.count("\n") == text.count("\r\n") and "\r\r" not in text
    lines = text.split("\r\n")[:-1]
    assert lines[0] == "@echo off" and lines[1] == "setlocal"
    clear = 'netsh advfirewall firewall delete rule name="fwgen-web.new" >nul 2>&1'
    delete = 'netsh advfirewall firewall delete rule name="fwgen-web" >nul 2>&1'
    rename = 'netsh advfirewall firewall set rule name="fwgen-web.new" new name="fwgen-web" || exit /b 1'
    assert lines.count(clear) == 2 and lines.count(delete) == 1 and lines.count(rename) == 1
    adds = [i for i, l in enumerate(lines) if "add rule" in l]
    settings = [i for i, l in enumerate(lines) if l.startswith("netsh advfirewall set allprofiles")]
    # clear a staging set, add the new rules, delete the old ones, rename, then the settings
    assert lines.index(clear) < adds[0] and adds[-1] < lines.index(delete) < lines.index(rename) < settings[0]
    assert all(l.startswith("rem ") for l in lines[2 : lines.index(clear)] if l)
    ending = [l for l in lines[settings[-1] + 1:] if l and not l.startswith("rem ")]
    assert ending == ["exit /b 0", ":failed", clear, "exit /b 1"]
    for i, l in enumerate(lines):
        if i in adds:
            assert l.endswith(" || goto :failed"), l
            assert ' name="fwgen-web.new" ' in l and " profile=any enable=yes " in l
        elif i in settings:
            assert l.endswith(" || exit /b 1"), l
        assert len(l) < CMD_LIMIT
        assert l.isascii() and "%" not in l
    assert text.encode("ascii")
    assert text.splitlines()[2].startswith("rem Generated by fwgen")


def test_output_is_deterministic():
    def build():
        return ruleset(
            rule(
                1,
                ALLOW,
                tcp=ports(22, 80, (8000, 8100)),
                v4=(net("10.0.0.0/8"), net("192.0.2.0/24")),
                v6=(net("2001:db8::/32"),),
            ),
            rule(2, DENY, tcp=ports((1, 1024)), udp=ports(53)),
            rule(3, MON, udp=ports((5000, 6000)), direction=OUT, v4=(net("198.51.100.7/32"),)),
        )

    a, b = windows.render(build()), windows.render(build())
    assert a.files == b.files and a.warnings == b.warnings
    assert list(a.files) == ["windows/web.cmd", "windows/web-remove.cmd"]
    assert lower(build()) == lower(build())


def test_invalid_policy_name_is_refused():
    with pytest.raises(ValueError):
        windows.render(ruleset(name='x" & calc'))


# --------------------------------------------------------------------------------------
# Sanitization

HOSTILE = (
    'evil" & del /q C:\\* %PATH% ^| calc > out.txt <in ^^\r\n'
    'netsh advfirewall reset\n"&echo pwned'
)

SAFE_LINE = re.compile(
    r'^(@echo off|setlocal|exit /b [01]|:failed|rem [A-Za-z0-9 _.,:/()+=@#-]*|'
    r'netsh advfirewall firewall delete rule name="fwgen-web(\.new)?" >nul 2>&1|'
    r'netsh advfirewall firewall set rule name="fwgen-web\.new" new name="fwgen-web" \|\| exit /b 1|'
    r"netsh advfirewall set allprofiles [a-z ,]+ \|\| exit /b 1|)$"
)


def test_hostile_text_cannot_create_a_command():
    rs = ruleset(
        rule(1, ALLOW, tcp=ports(22), comment=HOSTILE, name=HOSTILE),
        rule(2, DENY, tcp=ports(22), name="deny%ALL%", comment=HOSTILE),
        rule(3, MON, udp=ports(9), comment=HOSTILE),
        description=HOSTILE,
    )
    text = windows.render(rs).files["windows/web.cmd"]
    lines = text.split("\r\n")
    assert lines[-1] == ""
    for line in lines:
        assert ADD_LINE.match(line) or SAFE_LINE.match(line), line
        if ADD_LINE.match(line):
            assert line.count('"') == 4
    assert not any(l.lstrip().startswith("netsh advfirewall reset") for l in lines)
    assert "%" not in text and "^" not in text and "|" not in text.replace("|| exit /b 1", "").replace(
        "|| goto :failed", "")
    assert "&" not in text.replace(">nul 2>&1", "")
    descriptions = [w.description for w in lower(rs)]
    safe = re.compile(r"[A-Za-z0-9 _.,:/()+=@#-]*")
    assert all(safe.fullmatch(d) and len(d) <= 200 for d in descriptions)
    assert any("del /q C:__ _PATH_" in d for d in descriptions)


# --------------------------------------------------------------------------------------
# Size: long lists are chunked under the cmd.exe limit, all with the same name


def big_ruleset() -> Ruleset:
    many_ports = ports(*[1000 + 3 * i for i in range(5000)])
    nets4 = tuple(net(f"10.{i // 100}.{(i % 100) * 2}.0/24") for i in range(200))
    nets6 = tuple(net(f"2001:db8:{i * 2:x}::/48") for i in range(100))
    return ruleset(
        rule(1, ALLOW, tcp=many_ports, v4=nets4, v6=nets6, name="many"),
        rule(2, DENY, tcp=ports((1000, 20000))),
        rule(3, DENY, udp=many_ports, direction=OUT, v4=nets4, v6=nets6),
        inbound=ALLOW,
    )


def test_long_lists_are_chunked_below_cmd_limit():
    rs = big_ruleset()
    assert len(rs.rules[0].port_ranges(TCP)) == 5000
    assert len(rs.rules[0].remote_v4) + len(rs.rules[0].remote_v6) == 300
    out = windows.render(rs)
    text = out.files["windows/web.cmd"]
    lines = text.split("\r\n")
    adds = [l for l in lines if "add rule" in l]
    assert len(adds) > 3  # had to be chunked
    assert max(len(l) for l in lines) < CMD_LIMIT
    assert all(' name="fwgen-web.new" ' in l for l in adds)
    assert all(ADD_LINE.match(l) for l in adds)
    assert any(" part 1/" in l for l in adds)
    assert_equivalent(rs, random.Random(7), max_pairs=2500)


# --------------------------------------------------------------------------------------
# Random policies


def _v4_networks():
    base = st.integers(0, 255).map(lambda i: (10 << 24) | i)
    small = st.builds(
        lambda a, plen: ipaddress.ip_network((a, plen), strict=False), base, st.integers(26, 32)
    )
    wide = st.sampled_from(
        [net("0.0.0.0/1"), net("10.0.0.0/8"), net("10.0.0.128/25"), net("0.0.0.0/0")]
    )
    return st.one_of(small, small, wide)


def _v6_networks():
    base = st.integers(0, 255).map(lambda i: (0x20010DB8 << 96) | i)
    small = st.builds(
        lambda a, plen: ipaddress.ip_network((a, plen), strict=False), base, st.integers(122, 128)
    )
    wide = st.sampled_from([net("2001:db8::/32"), net("::/1"), net("::/0")])
    return st.one_of(small, small, wide)


def _remote(networks):
    return st.one_of(
        st.none(),
        st.just(()),
        st.lists(networks, min_size=1, max_size=3).map(lambda ns: tuple(sorted(set(ns)))),
    )


_port = st.one_of(st.integers(0, 40), st.sampled_from([65534, 65535]))
_range = st.builds(lambda lo, w: PortRange(lo, min(65535, lo + w)), _port, st.integers(0, 8))
_ranges = st.one_of(
    st.lists(_range, min_size=1, max_size=3).map(merge_ranges),
    st.just((PortRange(0, 65535),)),
)


@st.composite
def random_rulesets(draw):
    n = draw(st.integers(0, 7))
    rules = []
    for i in range(1, n + 1):
        protos = draw(st.sampled_from([(TCP,), (UDP,), (TCP, UDP)]))
        by_proto = {p: draw(_ranges) for p in protos}
        rules.append(
            rule(
                i,
                draw(st.sampled_from([ALLOW, DENY, MON])),
                tcp=by_proto.get(TCP, ()),
                udp=by_proto.get(UDP, ()),
                v4=draw(_remote(_v4_networks())),
                v6=draw(_remote(_v6_networks())),
                direction=draw(st.sampled_from([IN, OUT])),
                log=draw(st.booleans()),
            )
        )
    return ruleset(
        *rules,
        inbound=draw(st.sampled_from([ALLOW, DENY])),
        outbound=draw(st.sampled_from([ALLOW, DENY])),
        reject=draw(st.booleans()),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_rulesets(), st.integers(0, 2**32))
def test_random_policies_match_first_match_semantics(rs, seed):
    assert_equivalent(rs, random.Random(seed), max_pairs=1500)


# --------------------------------------------------------------------------------------
# Scale: first-match painting, many rules, many address regions


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(
            st.builds(lambda lo, w: (lo, min(65535, lo + w)), _port, st.integers(0, 12)),
            min_size=1,
            max_size=3,
        ),
        max_size=8,
    )
)
def test_paint_gives_each_port_its_first_matching_rule(spec):
    port_lists = {rid: merge_spans(ranges) for rid, ranges in enumerate(spec)}
    rs = ruleset(*(rule(rid + 1, ALLOW, tcp=ports(*spans)) for rid, spans in port_lists.items()))
    runs = windows._paint(rs, tuple(port_lists), 6)  # tcp
    assert runs == sorted(runs)
    # disjoint, and touching runs belong to different rules
    assert all(a[1] < b[0] and (a[1] + 1 < b[0] or a[2] != b[2]) for a, b in itertools.pairwise(runs))
    painted = {}
    for lo, hi, rid in runs:
        for port in range(lo, hi + 1):
            painted[port] = rid
    for port in [*range(0, 60), *range(65520, 65536)]:
        want = next((rid for rid, rs in port_lists.items() if any(lo <= port <= hi for lo, hi in rs)), None)
        assert painted.get(port) == want, port
    assert set(painted) <= {*range(0, 60), *range(65520, 65536)}


def test_many_single_port_rules():
    rs = ruleset(
        *(rule(i + 1, (DENY, ALLOW, MON)[i % 3], tcp=ports(1024 + i), udp=ports(1024 + i)) for i in range(400))
    )
    rules = assert_equivalent(rs, random.Random(3), max_pairs=300)
    # one block and one allow rule per protocol, each naming a few deciders and counting the rest
    assert [(w.action, w.protocol) for w in rules] == [("block", "tcp"), ("allow", "tcp"), ("block", "udp"),
                                                       ("allow", "udp")]
    assert rules[1].description.endswith(" more")
    assert rules[1].ports == tuple(PortRange(1025 + 3 * i, 1026 + 3 * i) for i in range(133))


def test_many_address_restricted_rules():
    rng = random.Random(300)

    def networks(family: int) -> tuple:
        """1-3 overlapping networks of one family, or () (the rule is not for it)."""
        if rng.random() < 0.3:
            return ()
        if family == 4:
            base, shift, lengths = 10 << 24, 8, [16, 20, 24]
        else:
            base, shift, lengths = 0x20010DB8 << 96, 64, [48, 56, 64]
        nets = {
            ipaddress.ip_network((base | rng.getrandbits(16) << shift, rng.choice(lengths)), strict=False)
            for _ in range(rng.randint(1, 3))
        }
        return tuple(sorted(nets))

    restricted = [
        rule(
            i + 1,
            rng.choice([ALLOW, DENY, MON]),
            tcp=ports((lo := rng.randint(1000, 1300), lo + rng.choice([0, 0, 5, 50]))),
            udp=ports(rng.randint(1000, 1300)),
            v4=networks(4),
            v6=networks(6),
            direction=rng.choice([IN, IN, OUT]),
        )
        for i in range(300)
    ]
    anywhere = [rule(301 + i, (DENY, ALLOW, MON)[i % 3], tcp=ports(1000 + 2 * i)) for i in range(200)]
    assert_equivalent(ruleset(*restricted, *anywhere), random.Random(4), max_pairs=400)


def test_many_one_port_rules_group_into_few():
    """3,000 one-port rules become one block and one allow region per protocol (speed is
    measured in bench/, not here)."""
    actions = (DENY, ALLOW, MON)
    rs = ruleset(*(rule(i + 1, actions[i % 3], tcp=ports(1024 + i), udp=ports(1024 + i)) for i in range(3000)))
    rules = lower(rs)
    # per protocol one block rule and one allow rule, cut in two below the cmd.exe limit
    assert [(w.action, w.protocol) for w in rules] == [
        (a, p) for p in ("tcp", "udp") for a in ("block", "allow", "allow")]


# ---------------------------------------------------------------------- the new matches


WIN_POLICY = """\
version: 1
name: win
targets: [windows]
rules:
  - name: admin
    action: allow
    ports: [ms-wbt-server]
    from: [192.0.2.0/24]
  - name: ping
    action: allow
    protocol: icmp
    icmp: [echo-request, 3/4]
  - name: no-ping6
    action: deny
    protocol: icmpv6
    icmp: [echo-request]
  - name: esp
    action: allow
    protocol: esp
    local: [10.9.0.2]
  - name: smb
    action: allow
    ports: [microsoft-ds]
    from: [10.0.0.0/8, "2001:db8::/32"]
    profiles: [domain, private]
  - name: public-web
    action: allow
    ports: [https]
    profiles: [public]
    local: [10.9.0.3, "2001:db8:ffff::3"]
"""


def test_profiles_local_icmp_and_protocols_agree_with_explain(tmp_path) -> None:
    """Every (profile, local address, protocol, port or ICMP type, remote) probe: the
    script run in the Windows Firewall model gives explain's verdict."""
    from fwgen.build import build
    from fwgen.explain import Explainer
    from fwgen.registry import bundled
    from tests.winmodel.model import RuleStore, run_script

    path = tmp_path / "win.yaml"
    path.write_text(WIN_POLICY, encoding="utf-8")
    result = build(str(path), bundled())
    script = result.files["windows/win.cmd"]
    store = RuleStore()
    assert run_script(script, store) == 0
    explainer = Explainer.from_file(str(path), bundled())
    questions = [("tcp", port, None) for port in (443, 444, 445, 3389)] + [("udp", 445, None)]
    questions += [("icmp", None, t) for t in ((8, 0), (3, 4), (3, 3), (13, 0))]
    questions += [("icmpv6", None, (128, 0)), ("esp", None, None), ("ah", None, None), ("gre", None, None)]
    checked = 0
    for profile in ("domain", "private", "public"):
        for local in ("10.9.0.2", "10.9.0.3", "10.9.0.4", "2001:db8:ffff::3", "2001:db8:ffff::4"):
            family = 6 if ":" in local else 4
            for remote in ("192.0.2.7", "10.1.2.3", "198.51.100.1") if family == 4 else ("2001:db8::7", "2001:db9::1"):
                for protocol, port, icmp in questions:
                    if (protocol == "icmp" and family == 6) or (protocol == "icmpv6" and family == 4):
                        continue
                    v = explainer.verdict("in", protocol, port, remote, local=local, profile=profile, icmp=icmp)
                    assert v.decided
                    model_protocol = {"icmp": "icmpv4", "esp": 50, "ah": 51, "gre": 47}.get(protocol, protocol)
                    got = store.verdict("in", model_protocol, port, remote, profile, local_addr=local, icmp=icmp)
                    where = (profile, local, protocol, port, icmp, remote)
                    assert got == ("block" if v.action == "deny" else "allow"), where
                    checked += 1
    assert checked > 300
    # A rule for every profile is one netsh rule, not one per profile context (when no
    # rule limits local addresses, which cut contexts too: those repeat per local cell).
    path.write_text(WIN_POLICY.split("  - name: public-web")[0], encoding="utf-8")
    plain = build(str(path), bundled()).files["windows/win.cmd"]
    admin = [line for line in plain.splitlines() if "localport=3389" in line]
    assert len(admin) == 2 and all("profile=any" in line for line in admin)  # tcp and udp
