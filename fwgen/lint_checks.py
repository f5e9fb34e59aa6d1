"""The checks of ``fwgen lint``, in the order docs/lint.md lists them.

Each check is a function registered with its id and severity; its docstring is its
documentation: a summary paragraph, an explanation, and an ``Example::`` policy with
the ``Finding::`` line it produces (tests/test_lint.py runs every example).
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator

from fwgen import icmp
from fwgen.errors import Location, shorten
from fwgen.intervals import merge_spans
from fwgen.ir import Action, Direction, Protocol
from fwgen.lint_context import LINUX_TARGETS, Check, Context, Decider, Span, count_ports, format_ports
from fwgen.policy import PolicyRule
from fwgen.registry import Registry
from fwgen.resolve import resolve_ports

Yield = Iterator[tuple[Location, str]]
CHECKS: list[Check] = []

IN, OUT, TCP, UDP = Direction.IN, Direction.OUT, Protocol.TCP, Protocol.UDP
WIDE = 1024  # an accepting rule on at least this many ports of a protocol is "very wide"
LINK_LOCAL = ipaddress.IPv6Network("fe80::/10")


def check(
    id: str, severity: str = "warning", after: bool = False
) -> Callable[[Callable[[Context], Yield]], Callable[[Context], Yield]]:
    def register(func: Callable[[Context], Yield]) -> Callable[[Context], Yield]:
        CHECKS.append(Check(id, severity, func, inspect.getdoc(func) or "", after))
        return func

    return register


# ---------------------------------------------------------------------- helpers


def _denied_everywhere(ctx: Context, direction: Direction, protocol: Protocol, port: int,
                       family: int | None = None, within: Span | None = None) -> list[Decider] | None:
    """The deciders when ``port`` is denied for every remote address (of ``family``,
    inside ``within``); None when something accepts it."""
    deciders: list[Decider] = []
    for _, _, decider in ctx.deciders(direction, protocol, port, family, within):
        if ctx.accepts(direction, decider):
            return None
        if decider not in deciders:
            deciders.append(decider)
    return deciders


def _blame(ctx: Context, direction: Direction, deciders: list[Decider]) -> tuple[Location, str]:
    """Where to report a denial and how to name who denies: the default first when it
    takes part (it is what a new rule would have to override), else the first rule."""
    ordered = sorted(deciders, key=lambda d: (d is not None, d or 0))
    names = ", ".join(ctx.name_line(d, direction) for d in ordered)
    first = ordered[0]
    location = ctx.default_location(direction) if first is None else ctx.rule[first].location
    return location, f"by {names}"


@functools.lru_cache(maxsize=4)
def _unauthorized(registry: Registry) -> dict[Protocol, list[tuple[int, int, str, str]]]:
    """Per protocol: (lo, hi, names, note) of the ports the registry marks "unauthorized
    use reported". When the note names ports inside its row's range, only those."""
    found: dict[tuple[str, int, int, str], set[str]] = {}
    for record in registry.records:
        if not record.unauthorized or record.port_lo is None or record.port_hi is None:
            continue
        if record.protocol not in ("tcp", "udp", ""):
            continue
        named = []
        for m in re.finditer(r"(?<![\w.])(\d+)(?:\s*-\s*(\d+))?(?![\w])", record.unauthorized):
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if record.port_lo <= lo <= hi <= record.port_hi:
                named.append((lo, hi))
        spans = named or [(record.port_lo, record.port_hi)]
        for proto in (record.protocol,) if record.protocol else ("tcp", "udp"):
            for lo, hi in spans:
                names = found.setdefault((proto, lo, hi, record.unauthorized), set())
                if record.name:
                    names.add(record.name)
    out: dict[Protocol, list[tuple[int, int, str, str]]] = {TCP: [], UDP: []}
    for (proto, lo, hi, note), names in sorted(found.items()):
        out[Protocol(proto)].append((lo, hi, ", ".join(sorted(names)), note))
    return out


def _intersect(spans: list[Span], lo: int, hi: int) -> list[Span]:
    return [(max(a, lo), min(b, hi)) for a, b in spans if a <= hi and b >= lo]


def _reachable(ctx: Context, index: int) -> dict[Protocol, list[Span]]:
    """The ports (per protocol) on which the rule decides for at least one address."""
    out: dict[Protocol, list[Span]] = {}
    for (protocol, _), facts in ctx.facts[index].ports.items():
        if facts.first:
            out.setdefault(protocol, []).extend(facts.spans)
    return {p: merge_spans(s) for p, s in out.items()}


def _ports_location(source: PolicyRule) -> Location:
    """Where a rule without port entries gets its ports: its ``select``, else its ``range``."""
    if source.select is not None:
        return source.key_location("select")
    return source.port_range.location if source.port_range else source.location


def _every_protocol(source: PolicyRule) -> bool:
    """``protocol: all``: a rule about protocols (and interfaces), naming no service."""
    return source.protocol is not None and source.protocol.value == "all"


def _any_address(networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] | None) -> str | None:
    """"every address" when ``networks`` (None = no restriction) cover a whole family."""
    if networks is None:
        return "every address"
    families = {n.version for n in networks if n.prefixlen == 0}
    if families == {4, 6}:
        return "every address"
    return f"every IPv{families.pop()} address" if families else None


# ---------------------------------------------------------------------- rule analysis


@check("shadowed", "warning")
def shadowed(ctx: Context) -> Yield:
    """A rule that can never match: earlier rules of its direction decide every
    (protocol, port, address) it covers.

    Names the earlier rules that take its traffic. Often harmless (the registry gives one
    port several names: http, www and www-http are all 80), but the rule is dead text that
    a reader will trust, and a misordered policy looks exactly like this.

    Example::

        version: 1
        defaults: {inbound: allow}
        rules:
          - name: no-x11
            action: deny
            ports: [x11]
          - name: no-x11-v4
            action: deny
            ports: ["6000-6010"]
            from: [192.0.2.0/24]

    Finding::

        example.yaml:7:5: warning: rule 'no-x11-v4' can never match: shadowed by 'no-x11' (line 4) [shadowed]
    """
    for rule in ctx.ruleset.rules:
        facts = ctx.facts[rule.index]
        if not facts.reached:
            names = ", ".join(ctx.name_line(d) for d in sorted(facts.deciders))
            yield rule.location, f"rule '{rule.name}' can never match: shadowed by {names}"


@check("redundant", "warning")
def redundant(ctx: Context) -> Yield:
    """A rule whose removal changes no verdict: wherever it decides, the rule after it
    (or the default) would decide the same way, with the same logging.

    Typical: an allow for an address range followed by the same allow for everyone, or a
    deny that only repeats `inbound: deny`. A shadowed rule is reported as shadowed
    instead. Where Windows is among the targets, a deny that repeats a deny default is
    not reported: on Windows the explicit block rule beats other software's allow rules,
    which the default does not (unless `windows: {exclusive: true}`).

    Example::

        version: 1
        rules:
          - name: ssh
            action: allow
            ports: [ssh]
          - name: no-telnet
            action: deny
            ports: [telnet]
        windows:
          exclusive: true

    Finding::

        example.yaml:6:5: warning: rule 'no-telnet' is redundant: without it the same traffic gets the same
        verdict from the default inbound deny [redundant]
    """
    # On Windows a deny default is the profile's block setting, which other software's
    # allow rules override; an explicit deny is a block rule, which beats them.
    windows_needs_denies = "windows" in ctx.targets and not ctx.ruleset.options.windows_exclusive
    for rule in ctx.ruleset.rules:
        facts = ctx.facts[rule.index]
        if windows_needs_denies and rule.action is Action.DENY and None in facts.takers:
            continue
        if facts.reached and not facts.changes:
            takers = sorted(facts.takers, key=lambda d: (d is None, d or 0))
            names = ", ".join(ctx.name_line(d, rule.direction) for d in takers)
            yield rule.location, (
                f"rule '{rule.name}' is redundant: without it the same traffic gets the same verdict from {names}"
            )


@check("partly-overridden", "warning")
def partly_overridden(ctx: Context) -> Yield:
    """Some of a rule's ports never reach it: for every address, an earlier rule with a
    different action decides them first.

    Says which ports and which rules. An earlier rule that only carves out some addresses
    (allow ssh from the admins, then deny ssh) is the usual exception pattern and is not
    reported; a port the rule names but can never act on is.

    Example::

        version: 1
        defaults: {inbound: allow}
        rules:
          - name: watch
            action: monitor
            ports: [mpshrsv]
          - name: close-dormant
            action: deny
            ports: ["1260-1280"]

    Finding::

        example.yaml:7:5: warning: rule 'close-dormant' is partly overridden: 1261/tcp+udp are decided first by
        'watch' (line 4, monitor), so this rule never applies to them [partly-overridden]
    """
    for rule in ctx.ruleset.rules:
        facts = ctx.facts[rule.index]
        if not facts.reached:
            continue
        lost: dict[Protocol, list[Span]] = {}
        by: set[int] = set()
        for (protocol, _), port in facts.ports.items():
            other = {d for d in port.deciders if ctx.rule[d].action is not rule.action}
            if not port.first and other:
                lost.setdefault(protocol, []).extend(port.spans)
                by |= other
        if lost:
            names = ", ".join(ctx.name_line(d, action=True) for d in sorted(by))
            yield rule.location, (
                f"rule '{rule.name}' is partly overridden: {format_ports(lost)} are decided first by {names}, "
                "so this rule never applies to them"
            )


# ---------------------------------------------------------------------- registry


@check("unauthorized-port", "warning")
def unauthorized_port(ctx: Context) -> Yield:
    """An allow or monitor rule accepts a port where the IANA registry reports
    unauthorized use.

    The finding quotes the registry's "Unauthorized Use Reported" note, shortened. Such
    ports are favourites of malware and squatting software; accept them only when
    the service is really there. Reported at the port entry (or `range:`) that brings
    them in; when the note names ports inside its row's range (x11's row says "port
    6003"), only those count. A `protocol: all` rule names no service and is left out.

    Example::

        version: 1
        rules:
          - name: ssh
            action: allow
            ports: [ssh]
          - name: lab
            action: allow
            ports: ["8000-8100/tcp"]

    Finding::

        example.yaml:8:13: warning: rule 'lab' allows 8001/tcp (vcom-tunnel: "Known Unauthorized Use on port
        8001"), 8010/tcp ("yes"), where the IANA registry reports unauthorized use [unauthorized-port]
    """
    marked = _unauthorized(ctx.registry)
    for source in ctx.policy.rules:
        rule = ctx.rule[source.index]
        if rule.action is Action.DENY or not ctx.facts[rule.index].reached or _every_protocol(source):
            continue
        reachable = _reachable(ctx, rule.index)
        hits = [
            (protocol, span, names, note)
            for protocol, spans in reachable.items()
            for lo, hi, names, note in marked[protocol]
            for span in _intersect(spans, lo, hi)
        ]
        for location, entry_hits in _by_entry(ctx, source, hits).items():
            verb = "allows" if rule.action is Action.ALLOW else "monitors (accepts)"
            yield location, (
                f"rule '{rule.name}' {verb} {_describe_hits(entry_hits)}, "
                "where the IANA registry reports unauthorized use"
            )


Hit = tuple[Protocol, Span, str, str]  # protocol, ports, registry names, note


def _by_entry(ctx: Context, source: PolicyRule, hits: list[Hit]) -> dict[Location, list[Hit]]:
    """Each hit under the first port entry of the rule that covers it."""
    if source.ports is None:
        where = _ports_location(source)
        return {where: hits} if hits else {}
    entries = [
        (entry.location, resolve_ports(source._replace(ports=(entry,)), ctx.registry))
        for entry in source.ports
    ]
    out: dict[Location, list[Hit]] = {}
    for hit in hits:
        protocol, (lo, hi), _, _ = hit
        # the first entry that holds the hit, else (it spans two entries) the first touching it
        holding = [at for at, ports in entries if any(r.lo <= lo and hi <= r.hi for r in ports.get(protocol, ()))]
        touching = [at for at, ports in entries if any(r.lo <= hi and lo <= r.hi for r in ports.get(protocol, ()))]
        out.setdefault((holding or touching or [source.location])[0], []).append(hit)
    return out


def _describe_hits(hits: list[Hit], limit: int = 3) -> str:
    grouped: dict[tuple[Span, str, str], list[str]] = {}
    for protocol, span, names, note in hits:
        grouped.setdefault((span, names, note), []).append(protocol.value)
    items = []
    for ((lo, hi), names, note), protocols in sorted(grouped.items()):
        port = str(lo) if lo == hi else f"{lo}-{hi}"
        label = f"{names}: " if names else ""
        items.append(f'{port}/{"+".join(protocols)} ({label}"{shorten(note, 48)}")')
    if len(items) > limit:
        items = items[:limit] + [f"and {len(items) - limit} more"]
    return ", ".join(items)


# ---------------------------------------------------------------------- lockout


@check("ssh-lockout", "error")
def ssh_lockout(ctx: Context) -> Yield:
    """Inbound tcp 22 (ssh) is denied from every address, by rules or by `inbound: deny`:
    the policy locks out SSH.

    Nothing allows it from anywhere, so loading the policy on a host managed over SSH
    cuts off the next login. An error: `fwgen build` refuses the policy. Allow ssh
    from the admin networks, or add `acknowledge: [ssh-lockout]` when the host really
    is not reached over SSH (managed from a console, or a Windows host).

    Example::

        version: 1
        rules:
          - name: web
            action: allow
            protocol: tcp
            ports: [http, https]

    Finding::

        example.yaml:1:1: error: inbound tcp 22 (ssh) is denied from every address, by the default inbound deny:
        applying this policy locks out SSH; allow ssh from your admin networks, or acknowledge ssh-lockout
        [ssh-lockout]
    """
    if not set(ctx.targets) & set(LINUX_TARGETS):
        return  # a Windows host: rdp-lockout
    deciders = _denied_everywhere(ctx, IN, TCP, 22)
    if deciders is not None:
        location, by = _blame(ctx, IN, deciders)
        yield location, (
            f"inbound tcp 22 (ssh) is denied from every address, {by}: "
            "applying this policy locks out SSH; allow ssh from your admin networks, or acknowledge ssh-lockout"
        )


REMOTE_ADMIN_WINDOWS = ((3389, "3389 (RDP)"), (5985, "5985 (WinRM)"), (5986, "5986 (WinRM over HTTPS)"))


@check("rdp-lockout", "error")
def rdp_lockout(ctx: Context) -> Yield:
    """Built for Windows alone, the policy denies inbound tcp 3389 (RDP), 5985 and 5986
    (WinRM) from every address: it locks out remote administration of the host.

    The Windows counterpart of `ssh-lockout`, checked when `windows` is the only target
    (`fwgen build -t windows`, `fwgen lint -t windows`). An error: `fwgen build` refuses
    the policy. Allow RDP or WinRM from the admin networks, or add
    `acknowledge: [rdp-lockout]` for a host managed another way.

    Example::

        version: 1
        rules:
          - name: smb
            action: allow
            protocol: tcp
            ports: [microsoft-ds]
            from: [10.0.0.0/8]

    Targets:: windows

    Finding::

        example.yaml:1:1: error: inbound tcp 3389 (RDP), 5985 (WinRM) and 5986 (WinRM over HTTPS) are denied from
        every address, by the default inbound deny: applying this policy on Windows locks out remote
        administration; allow RDP or WinRM from your admin networks, or acknowledge rdp-lockout [rdp-lockout]
    """
    if "windows" not in ctx.targets or set(ctx.targets) & set(LINUX_TARGETS):
        return
    deciders: list[Decider] = []
    for port, _ in REMOTE_ADMIN_WINDOWS:
        denied = _denied_everywhere(ctx, IN, TCP, port)
        if denied is None:
            return
        deciders += [d for d in denied if d not in deciders]
    location, by = _blame(ctx, IN, deciders)
    ports = ", ".join(label for _, label in REMOTE_ADMIN_WINDOWS[:-1]) + f" and {REMOTE_ADMIN_WINDOWS[-1][1]}"
    yield location, (
        f"inbound tcp {ports} are denied from every address, {by}: applying this policy on Windows locks out "
        "remote administration; allow RDP or WinRM from your admin networks, or acknowledge rdp-lockout"
    )


# ---------------------------------------------------------------------- traffic the defaults break


@check("no-dns-out")
def no_dns_out(ctx: Context) -> Yield:
    """Outbound DNS (53/udp, or 53/tcp) is denied to every address.

    Without udp, name resolution fails; without tcp, only answers too big for udp
    (DNSSEC, many records) fail, which is much harder to diagnose. Usually
    `outbound: deny` without a rule for `domain`. Allow `domain` (both protocols) to
    the resolvers.

    Example::

        version: 1
        defaults: {inbound: allow, outbound: deny}
        rules:
          - name: dns
            action: allow
            direction: out
            ports: [domain/udp]
          - name: ntp
            action: allow
            direction: out
            ports: [ntp/udp]

    Finding::

        example.yaml:2:38: warning: outbound DNS over tcp (53/tcp) is denied to every address, by the default
        outbound deny: answers too big for udp are retried over tcp and fail; allow domain to your resolvers
        [no-dns-out]
    """
    denied = {p: _denied_everywhere(ctx, OUT, p, 53) for p in (UDP, TCP)}
    missing = [p for p, by in denied.items() if by is not None]
    if not missing:
        return
    deciders = [d for p in missing for d in denied[p] or []]
    location, by = _blame(ctx, OUT, list(dict.fromkeys(deciders)))
    if len(missing) == 2:
        what, why = "outbound DNS (53/udp and 53/tcp)", "name resolution fails"
    elif missing == [TCP]:
        what, why = "outbound DNS over tcp (53/tcp)", "answers too big for udp are retried over tcp and fail"
    else:
        what, why = "outbound DNS over udp (53/udp)", "ordinary lookups fail"
    yield location, f"{what} is denied to every address, {by}: {why}; allow domain to your resolvers"


@check("no-ntp-out")
def no_ntp_out(ctx: Context) -> Yield:
    """Outbound NTP (123/udp) is denied to every address.

    The clock drifts, and TLS certificates, Kerberos and log correlation fail with it,
    slowly. Allow `ntp/udp` to the time servers.

    Example::

        version: 1
        defaults: {inbound: allow, outbound: deny}
        rules:
          - name: dns
            action: allow
            direction: out
            ports: [domain]

    Finding::

        example.yaml:2:38: warning: outbound NTP (123/udp) is denied to every address, by the default outbound
        deny: the clock will drift; allow ntp/udp to your time servers [no-ntp-out]
    """
    deciders = _denied_everywhere(ctx, OUT, UDP, 123)
    if deciders is not None:
        location, by = _blame(ctx, OUT, deciders)
        yield location, (
            f"outbound NTP (123/udp) is denied to every address, {by}: the clock will drift; "
            "allow ntp/udp to your time servers"
        )


@check("dhcpv6-replies")
def dhcpv6_replies(ctx: Context) -> Yield:
    """Inbound udp 546 (dhcpv6-client) is denied from every link-local address
    (fe80::/10): DHCPv6 replies are dropped.

    DHCPv6 replies (from servers and relays, udp 547) answer a Solicit the client sent
    to the multicast group ff02::1:2, so conntrack does not see them as established or
    related, and a host using DHCPv6 loses its address. Allow udp 546 from fe80::/10
    if the host uses DHCPv6 (fwgen matches destination ports only, so the rule cannot
    also require source port 547), or acknowledge it.

    Example::

        version: 1
        rules:
          - name: ssh
            action: allow
            ports: [ssh/tcp]

    Finding::

        example.yaml:1:1: warning: inbound udp 546 (dhcpv6-client) is denied from every link-local address, by
        the default inbound deny: DHCPv6 replies answer a multicast Solicit and are not established/related; if
        this host uses DHCPv6, allow udp 546 from fe80::/10 [dhcpv6-replies]
    """
    span = (int(LINK_LOCAL.network_address), int(LINK_LOCAL.broadcast_address))
    deciders = _denied_everywhere(ctx, IN, UDP, 546, family=6, within=span)
    if deciders is not None:
        location, by = _blame(ctx, IN, deciders)
        yield location, (
            f"inbound udp 546 (dhcpv6-client) is denied from every link-local address, {by}: DHCPv6 replies "
            "answer a multicast Solicit and are not established/related; if this host uses DHCPv6, "
            "allow udp 546 from fe80::/10"
        )


@check("dhcpv4-client")
def dhcpv4_client(ctx: Context) -> Yield:
    """Inbound udp 68 (bootpc) is denied from every IPv4 address: DHCP replies may be
    dropped.

    Offers and acks answering the client's broadcasts are not established/related.
    Clients that read raw packets (dhclient, systemd-networkd's first lease) see them
    before the firewall does; clients on ordinary udp sockets, and rebinding by
    broadcast, do not. Allow udp 68 from the DHCP servers if the host uses DHCP, or
    acknowledge it for a host with a static address.

    Example::

        version: 1
        rules:
          - name: ssh
            action: allow
            ports: [ssh/tcp]

    Finding::

        example.yaml:1:1: warning: inbound udp 68 (bootpc) is denied from every IPv4 address, by the default
        inbound deny: if this host uses DHCP, replies to its broadcasts are not established/related; allow udp
        68 from your DHCP servers [dhcpv4-client]
    """
    deciders = _denied_everywhere(ctx, IN, UDP, 68, family=4)
    if deciders is not None:
        location, by = _blame(ctx, IN, deciders)
        yield location, (
            f"inbound udp 68 (bootpc) is denied from every IPv4 address, {by}: if this host uses DHCP, "
            "replies to its broadcasts are not established/related; allow udp 68 from your DHCP servers"
        )


DHCPV6_SERVERS = ipaddress.IPv6Address("ff02::1:2")  # All_DHCP_Relay_Agents_and_Servers


@check("dhcpv4-renew")
def dhcpv4_renew(ctx: Context) -> Yield:
    """Outbound udp 67 (bootps) is denied to every IPv4 address: a DHCP client cannot
    renew its lease.

    A client renews by unicast to its server's port 67 over an ordinary udp socket,
    which the firewall filters (only the first broadcast of some clients bypasses it, on
    a raw socket), so the lease runs out and the host loses its address. Usually
    `outbound: deny` without a rule for it. Allow udp 67 to the DHCP servers if the host
    uses DHCP, or acknowledge it for a host with a static address.

    Example::

        version: 1
        defaults: {outbound: deny}
        acknowledge: [no-dns-out, no-ntp-out, dhcpv6-solicit]
        rules:
          - name: ssh
            action: allow
            ports: [ssh/tcp]

    Finding::

        example.yaml:2:22: warning: outbound udp 67 (bootps) is denied to every IPv4 address, by the default
        outbound deny: if this host uses DHCP, its lease renewals (unicast to the server) fail; allow udp 67 to
        your DHCP servers [dhcpv4-renew]
    """
    deciders = _denied_everywhere(ctx, OUT, UDP, 67, family=4)
    if deciders is not None:
        location, by = _blame(ctx, OUT, deciders)
        yield location, (
            f"outbound udp 67 (bootps) is denied to every IPv4 address, {by}: if this host uses DHCP, "
            "its lease renewals (unicast to the server) fail; allow udp 67 to your DHCP servers"
        )


@check("dhcpv6-solicit")
def dhcpv6_solicit(ctx: Context) -> Yield:
    """Outbound udp 547 (dhcpv6-server) is denied to ff02::1:2: a DHCPv6 client cannot
    ask for an address.

    A DHCPv6 client sends its Solicit, Request, Renew and Rebind to the multicast group
    ff02::1:2 (All_DHCP_Relay_Agents_and_Servers), port 547. Usually `outbound: deny`
    without a rule for it. Allow udp 547 to ff02::1:2 if the host uses DHCPv6, or
    acknowledge it.

    Example::

        version: 1
        defaults: {outbound: deny}
        acknowledge: [no-dns-out, no-ntp-out, dhcpv4-renew]
        rules:
          - name: ssh
            action: allow
            ports: [ssh/tcp]

    Finding::

        example.yaml:2:22: warning: outbound udp 547 (dhcpv6-server) is denied to ff02::1:2, by the default
        outbound deny: a DHCPv6 client sends its Solicit and Request there; if this host uses DHCPv6, allow
        udp 547 to ff02::1:2 [dhcpv6-solicit]
    """
    group = int(DHCPV6_SERVERS)
    deciders = _denied_everywhere(ctx, OUT, UDP, 547, family=6, within=(group, group))
    if deciders is not None:
        location, by = _blame(ctx, OUT, deciders)
        yield location, (
            f"outbound udp 547 (dhcpv6-server) is denied to {DHCPV6_SERVERS}, {by}: a DHCPv6 client sends its "
            f"Solicit and Request there; if this host uses DHCPv6, allow udp 547 to {DHCPV6_SERVERS}"
        )


# ---------------------------------------------------------------------- reviewer's notes


@check("ipv4-only-any")
def ipv4_only_any(ctx: Context) -> Yield:
    """`from: [0.0.0.0/0]` (or `to:`) with no IPv6 network: the rule is silently
    IPv4-only.

    It reads as "any address", but IPv6 traffic falls through to later rules and the
    default. Omit `from`/`to` to match every address, or add `"::/0"` to say so.

    Example::

        version: 1
        rules:
          - name: ssh
            action: allow
            ports: [ssh]
            from: [0.0.0.0/0]

    Finding::

        example.yaml:6:11: warning: rule 'ssh' matches IPv4 only: 'from: [0.0.0.0/0]' is every IPv4 address and
        no IPv6 one; omit 'from' to match every address, or add "::/0" [ipv4-only-any]
    """
    for source in ctx.policy.rules:
        remote = source.remote or ()
        if ctx.rule[source.index].families == (4,):
            continue  # protocol: icmp is IPv4 only by itself
        if any(n.version == 4 and n.prefixlen == 0 for n in remote) and all(n.version == 4 for n in remote):
            key = "from" if source.direction == "in" else "to"
            yield ctx.where.rule(source, key), (
                f"rule '{source.name}' matches IPv4 only: '{key}: [0.0.0.0/0]' is every IPv4 address and no IPv6 "
                f"one; omit '{key}' to match every address, or add \"::/0\""
            )


@check("icmp-state")
def icmp_state(ctx: Context) -> Yield:
    """An `icmp:` entry that no rule of the Linux outputs ever decides: a reply, an error
    or a neighbour discovery message, which connection tracking decides first.

    iptables and nftables accept established and related packets, and drop invalid
    ones, before any rule; a rule only sees packets that start a connection. For ICMP,
    only requests do: echo-request, timestamp-request, 15 (information request) and
    address-mask-request (IPv6: echo-request and 139, node information query). So an
    echo-reply is accepted when it answers the host's own ping and dropped otherwise,
    whatever a rule says; an error (destination-unreachable, time-exceeded, ...) is
    accepted when it is about one of the host's connections. Neighbour and multicast
    listener discovery (ICMPv6 133-136, 130-132, 143, ...) are accepted before any
    rule when their hop limit says they are link-local. Windows Firewall applies the
    rule to such a message; the Linux outputs cannot, so the policy would mean two
    things. Reported when the policy is built for iptables or nftables.

    Example::

        version: 1
        rules:
          - name: ssh
            action: allow
            ports: [ssh]
          - name: pong
            action: allow
            protocol: icmp
            icmp: [echo-request, echo-reply]

    Finding::

        example.yaml:9:26: warning: rule 'pong' names ICMP type 0 (echo-reply), which iptables and nftables
        decide before any rule: accepted when it answers the host's own request (established), dropped
        otherwise (invalid); remove it, or write the policy for Windows alone [icmp-state]
    """
    if not set(ctx.targets) & set(LINUX_TARGETS):
        return
    for source in ctx.policy.rules:
        if source.icmp is None:
            continue
        family = ctx.rule[source.index].families[0]
        kind = "ICMPv6" if family == 6 else "ICMP"
        for entry in source.icmp:
            found = icmp.parse_entry(entry.value, family)
            fate = icmp.linux_fate(family, found.type) if found is not None else None
            if fate is None or found is None:
                continue
            name = icmp.type_name(family, found.type)
            what = f"{kind} type {found}" + (f" ({name})" if name and found.code is None else "")
            yield entry.location, (
                f"rule '{source.name}' names {what}, which iptables and nftables decide before any rule: "
                f"{fate}; remove it, or write the policy for Windows alone"
            )


@check("log-on-monitor")
def log_on_monitor(ctx: Context) -> Yield:
    """`log: true` on a monitor rule, which always logs.

    It says nothing, and suggests to a reader that other monitor rules do not log.

    Example::

        version: 1
        rules:
          - name: ssh
            action: allow
            ports: [ssh]
          - name: watch
            action: monitor
            log: true
            ports: [mpshrsv]

    Finding::

        example.yaml:8:10: warning: rule 'watch': 'log: true' does nothing on a monitor rule, which always logs;
        remove it [log-on-monitor]
    """
    for source in ctx.policy.rules:
        if source.action == "monitor" and source.log:
            yield ctx.where.rule(source, "log"), (
                f"rule '{source.name}': 'log: true' does nothing on a monitor rule, which always logs; remove it"
            )


@check("wide-open")
def wide_open(ctx: Context) -> Yield:
    """A very wide inbound allow or monitor: at least 1024 ports of a protocol from any
    address of a family.

    `range: registered`, `range: dynamic`, no ports at all, a wide numeric range or
    `protocol: all`, from anywhere (no `from`, or `0.0.0.0/0` / `::/0`): every service
    that ever listens on the host is then reachable by the whole internet. Name the
    ports the host serves, or restrict `from`. A rule limited to an `interface` (a VPN
    or a private link: `wg0`) is left out: naming the interface is the restriction.

    Example::

        version: 1
        rules:
          - name: ssh
            action: allow
            ports: [ssh]
          - name: apps
            action: allow
            range: registered

    Finding::

        example.yaml:8:12: warning: rule 'apps' accepts 1024-49151/tcp+udp (48128 ports) from every address;
        name the ports this host serves, or restrict 'from' [wide-open]
    """
    for source in ctx.policy.rules:
        rule = ctx.rule[source.index]
        if rule.direction is not IN or rule.action is Action.DENY or not ctx.facts[rule.index].reached:
            continue
        if rule.interfaces is not None:
            continue
        anyone = _any_address(source.remote)
        ports = {proto: [(r.lo, r.hi) for r in ranges] for proto, ranges in rule.ports}
        widest = max((count_ports(spans) for spans in ports.values()), default=0)
        if anyone and _every_protocol(source):
            yield ctx.where.rule(source, "protocol"), (
                f"rule '{source.name}' accepts every IP protocol and port from {anyone}; "
                "name the protocols and ports this host serves, or restrict 'from' or 'interface'"
            )
        elif anyone and widest >= WIDE:
            where = _ports_location(source)
            yield where, (
                f"rule '{source.name}' accepts {format_ports(ports, limit=3)} ({widest} ports) from {anyone}; "
                "name the ports this host serves, or restrict 'from'"
            )


_PER_SECOND = {"second": 1, "minute": 60, "hour": 3600}


@check("reject-log-rate")
def reject_log_rate(ctx: Context) -> Yield:
    """`deny: reject` with logged inbound deny rules and a monitor rate above one line a
    second.

    During a port scan the host answers every probe (a reset or an ICMP error) and
    writes log lines at that rate for each such rule. Lower `monitor.rate` (the default
    is 10/minute), or use `deny: drop`.

    Example::

        version: 1
        defaults: {deny: reject}
        monitor: {rate: 50/second}
        rules:
          - name: ssh
            action: allow
            ports: [ssh]
          - name: no-x11
            action: deny
            log: true
            ports: [x11]

    Finding::

        example.yaml:3:17: warning: deny: reject with logged inbound deny rule(s) 'no-x11' at 50/second: a port
        scan gets every probe answered and logged at that rate; lower monitor.rate or use deny: drop
        [reject-log-rate]
    """
    policy = ctx.policy
    if policy.deny != "reject" or policy.rate / _PER_SECOND[policy.rate_per] <= 1:
        return
    logged = [
        r for r in ctx.ruleset.rules
        if r.direction is IN and r.action is Action.DENY and r.log and ctx.facts[r.index].reached
    ]
    if logged:
        names = ", ".join(f"'{r.name}'" for r in logged)
        yield ctx.where.top("monitor", "rate"), (
            f"deny: reject with logged inbound deny rule(s) {names} at {policy.rate}/{policy.rate_per}: "
            "a port scan gets every probe answered and logged at that rate; lower monitor.rate or use deny: drop"
        )


@check("published-ports-closed")
def published_ports_closed(ctx: Context) -> Yield:
    """`published_ports: enforce` with the default inbound deny: every port published to
    a local container that no inbound rule allows is closed.

    With `enforce`, a connection to a port Docker publishes (`docker run -p 8080:80`) or a
    Kubernetes NodePort is judged by the inbound rules by the port it was sent to (8080),
    so the default inbound deny now applies to it too. Check the published ports
    (`docker ps`, `kubectl get svc`) against the inbound rules, with `fwgen explain`.

    Example::

        version: 1
        published_ports: enforce
        rules:
          - name: ssh
            action: allow
            ports: [ssh]

    Finding::

        example.yaml:2:18: warning: published_ports: enforce with the default inbound deny: a port published
        to a local container (docker run -p, a NodePort) is reachable only where an inbound rule allows its
        host port [published-ports-closed]
    """
    if ctx.ruleset.options.published_ports and ctx.default(IN) is Action.DENY and set(ctx.targets) & set(
            LINUX_TARGETS):
        yield ctx.where.top("published_ports"), (
            "published_ports: enforce with the default inbound deny: a port published to a local container "
            "(docker run -p, a NodePort) is reachable only where an inbound rule allows its host port"
        )


@check("unused-acknowledge", "warning", after=True)
def unused_acknowledge(ctx: Context) -> Yield:
    """An `acknowledge:` entry that silences nothing.

    The finding it accepted is gone; remove the entry, so that a new finding of that
    kind is not hidden.

    Example::

        version: 1
        acknowledge: [no-ntp-out]
        rules:
          - name: ssh
            action: allow
            ports: [ssh]

    Finding::

        example.yaml:2:15: warning: acknowledge lists 'no-ntp-out', but there is no such finding to silence;
        remove it [unused-acknowledge]
    """
    for value, location in ctx.where.acknowledgements():
        if value in ctx.policy.acknowledge and value not in ctx.raised and value != "unused-acknowledge":
            yield location, (
                f"acknowledge lists '{value}', but there is no such finding to silence; remove it"
            )
