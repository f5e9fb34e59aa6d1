"""Benchmark policies: each case in fwgen's format and as the equivalent Aerleon YAML.

Every call to ``generate(case, seed)`` builds the policies anew from a seed, so each timed
run compiles text no tool has seen before: the seed picks a description nonce and shuffles
rule / port / service order (the set of (protocol, port, verdict) decisions stays the same).

Cases (all inbound, tcp and udp):

* ``large``     2,000 rules, one port each (1024-3023), actions cycling deny / allow /
                monitor. Aerleon: monitor = accept + ``logging: true``.
* ``ports5000`` one deny rule listing 5,000 separate ports 1024, 1026, ..., 11022.
* ``registry``  one monitor rule per tcp/udp service name of fwgen's bundled IANA
                registry (every name with a tcp/udp port), default inbound deny. Aerleon:
                one accept + logging term per name (split into a tcp and a udp term where
                the name's tcp and udp ports differ, because an Aerleon term applies all
                its ports to all its protocols), then a final deny term.

Aerleon runs once per target, so each of these cases has one Aerleon policy file per target:

* ``speedway``            (Aerleon's iptables generator that writes complete
                          ``iptables-restore`` tables) ``INPUT DROP``: one filter for IPv4
                          and one for IPv6, like fwgen's rules.v4 + rules.v6;
* ``nftables``            ``mixed INPUT`` (one dual-stack ``inet`` table, default drop);
* ``windows_advfirewall`` ``in`` (netsh; Aerleon allows no default action here).

The ``fleet`` case (``generate_fleet``, case names ``fleetN``) is many host policies at once:
N hosts of about 30 rules each, inbound and outbound, with addresses; see the comment
above ``generate_fleet`` for what it holds and where Aerleon's meaning differs.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import random
import re
from dataclasses import dataclass, field

CASES = ("large", "ports5000", "registry")
AERLEON_TARGETS = ("speedway", "nftables", "windows_advfirewall")
PROTOCOLS = ("tcp", "udp")

# (protocol, lo, hi) triples
Pair = tuple[str, int, int]


@dataclass
class Rule:
    """One inbound rule, kept tool-neutral: fwgen text for its ports, and its exact pairs."""

    name: str
    action: str  # allow | deny | monitor
    fwgen_ports: list[str]  # entries exactly as written in the fwgen policy
    pairs: list[Pair]  # what those entries mean (for Aerleon and the interval statistics)


@dataclass
class Case:
    name: str
    seed: int
    description: str
    rules: list[Rule]
    final_deny_term: bool  # Aerleon: add an explicit final deny term
    acknowledge: tuple[str, ...] = ()  # fwgen lint finding ids the policy acknowledges
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text

    # ---------------------------------------------------------------- statistics

    def intervals_per_rule(self) -> int:
        """Port intervals summed over rules, each rule's ports merged per protocol."""
        return sum(len(merge(r.pairs, p)) for r in self.rules for p in PROTOCOLS)

    def intervals_merged(self) -> dict[str, int]:
        """Distinct intervals of all the policy's ports, merged per protocol."""
        every = [pair for r in self.rules for pair in r.pairs]
        return {p: len(merge(every, p)) for p in PROTOCOLS}

    def write(self, directory: str) -> dict[str, str]:
        """Write every file under ``directory``; return relative path -> absolute path."""
        return write_files(self.files, directory)


def write_files(files: dict[str, str], directory: str) -> dict[str, str]:
    """Write relative path -> text under ``directory``; return relative -> absolute path."""
    out = {}
    made: set[str] = set()
    for rel, text in files.items():
        path = os.path.join(directory, rel)
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        out[rel] = path
    return out


def merge(pairs: list[Pair], protocol: str) -> list[tuple[int, int]]:
    """Merge one protocol's port ranges into disjoint, non-adjacent intervals."""
    spans = sorted((lo, hi) for p, lo, hi in pairs if p == protocol)
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text)


# -------------------------------------------------------------------------- cases


def _large(rng: random.Random) -> tuple[list[Rule], bool]:
    ports = list(range(1024, 3024))
    rng.shuffle(ports)  # which rule gets which port changes per run; actions cycle by position
    actions = ("deny", "allow", "monitor")
    rules = [
        Rule(f"r{i + 1}", actions[i % 3], [str(port)], [(p, port, port) for p in PROTOCOLS])
        for i, port in enumerate(ports)
    ]
    return rules, False


def _ports5000(rng: random.Random) -> tuple[list[Rule], bool]:
    ports = [1024 + 2 * i for i in range(5000)]
    rng.shuffle(ports)
    pairs = [(p, port, port) for port in sorted(ports) for p in PROTOCOLS]
    return [Rule("many-ports", "deny", [str(port) for port in ports], pairs)], False


@functools.lru_cache(maxsize=1)
def _registry_names() -> tuple[tuple[str, list[Pair]], ...]:
    """Every name of fwgen's bundled registry that has a tcp/udp port, with its pairs."""
    from fwgen import registry  # the checkout's fwgen (run.py puts it on sys.path)

    reg = registry.bundled()
    seen: dict[str, tuple[str, list[Pair]]] = {}
    for record in reg.records:
        if record.name and record.name.lower() not in seen:
            pairs = reg.pairs(record.name)
            if pairs:
                seen[record.name.lower()] = (record.name, pairs)
    return tuple(sorted(seen.values()))


def registry_names() -> list[tuple[str, list[Pair]]]:
    return list(_registry_names())


def _registry(rng: random.Random) -> tuple[list[Rule], bool]:
    names = registry_names()
    rng.shuffle(names)  # all rules are monitor rules, so order does not change the verdicts
    rules = [Rule(f"m{i + 1}", "monitor", [name], pairs) for i, (name, pairs) in enumerate(names)]
    return rules, True


_BUILDERS = {"large": _large, "ports5000": _ports5000, "registry": _registry}


def generate(case: str, seed: int, acknowledge: tuple[str, ...] = (),
             probe_port: int | None = None) -> Case:
    """``acknowledge``: lint finding ids for the fwgen policy's ``acknowledge:`` key (only
    fwgen versions with a linter know the key; run.py adds ids only when fwgen asks).
    ``probe_port``: end the case with a rule allowing that port, tcp and udp (in Aerleon's
    policy a term before the final deny): the data-plane benchmark's traffic
    (bench/dataplane.py) goes there, past every rule of the case."""
    rng = random.Random(f"{case}:{seed}")
    rules, final_deny = _BUILDERS[case](rng)
    if probe_port is not None:
        rules.append(Rule("probe", "allow", [str(probe_port)],
                          [(p, probe_port, probe_port) for p in PROTOCOLS]))
    nonce = f"{rng.getrandbits(64):016x}"
    c = Case(case, seed, f"fwgen bench {case} seed {seed} nonce {nonce}", rules, final_deny,
             acknowledge=acknowledge)
    c.files["fwgen/" + case + ".yaml"] = fwgen_policy(c)
    c.files.update(aerleon_files(c))
    return c


# -------------------------------------------------------------------------- fwgen


def fwgen_policy(case: Case) -> str:
    lines = [
        "version: 1",
        f"name: {case.name}",
        f"description: {_q(case.description)}",
        "defaults:",
        "  inbound: deny",
        "  outbound: allow",
        "  deny: drop",
    ]
    if case.acknowledge:
        lines.append(f"acknowledge: [{', '.join(case.acknowledge)}]")
    lines.append("rules:")
    for rule in case.rules:
        lines.append(f"  - name: {rule.name}")
        lines.append(f"    action: {rule.action}")
        ports = ", ".join(_fwgen_port(p) for p in rule.fwgen_ports)
        lines.append(f"    ports: [{ports}]")
    return "\n".join(lines) + "\n"


def _fwgen_port(entry: str) -> str:
    return entry if entry.isdigit() else _q(entry)


# -------------------------------------------------------------------------- Aerleon


def _aerleon_terms(case: Case) -> tuple[list[dict[str, object]], dict[str, list[Pair]]]:
    """Tool-neutral terms (name, protocols, service, action, logging) and the services."""
    terms: list[dict[str, object]] = []
    services: dict[str, list[Pair]] = {}
    for rule in case.rules:
        by_proto = {p: sorted((lo, hi) for q, lo, hi in rule.pairs if q == p) for p in PROTOCOLS}
        if by_proto["tcp"] == by_proto["udp"]:
            groups = [("", list(PROTOCOLS))]
        else:  # different ports per protocol: one term per protocol, or Aerleon over-matches
            groups = [(f"-{p}", [p]) for p in PROTOCOLS if by_proto[p]]
        for suffix, protos in groups:
            service = f"SVC_{rule.name.upper().replace('-', '_')}{suffix.upper().replace('-', '_')}"
            services[service] = [pair for pair in rule.pairs if pair[0] in protos]
            terms.append(
                {
                    "name": rule.name + suffix,
                    "protocol": protos,
                    "service": service,
                    "action": "deny" if rule.action == "deny" else "accept",
                    "logging": rule.action == "monitor",
                }
            )
    return terms, services


def _term_yaml(term: dict[str, object]) -> list[str]:
    protos = ", ".join(term["protocol"])  # type: ignore[arg-type]
    out = [
        f"      - name: {term['name']}",
        f"        protocol: [{protos}]",
        f"        destination-port: {term['service']}",
        f"        action: {term['action']}",
    ]
    if term["logging"]:
        out.append("        logging: true")
    return out


def _filter_yaml(target_line: str, comment: str, term_lines: list[str]) -> list[str]:
    return [
        "  - header:",
        f"      comment: {_q(comment)}",
        "      targets:",
        f"        {target_line}",
        "    terms:",
        *term_lines,
    ]


def aerleon_files(case: Case) -> dict[str, str]:
    terms, services = _aerleon_terms(case)
    term_lines = [line for t in terms for line in _term_yaml(t)]
    if case.final_deny_term:
        term_lines += ["      - name: default-deny", "        action: deny"]

    files: dict[str, str] = {}
    headers = {
        "speedway": ["speedway: INPUT DROP inet", "speedway: INPUT DROP inet6"],
        "nftables": ["nftables: mixed INPUT"],
        "windows_advfirewall": ["windows_advfirewall: in"],
    }
    for target in AERLEON_TARGETS:
        body = ["filters:"]
        for header in headers[target]:
            body += _filter_yaml(header, case.description, term_lines)
        files[f"aerleon/pol/{target}/{case.name}.yaml"] = "\n".join(body) + "\n"

    svc = ["services:"]
    for name, pairs in services.items():
        svc.append(f"  {name}:")
        for proto, lo, hi in pairs:
            port = str(lo) if lo == hi else f"{lo}-{hi}"
            svc += [f"    - port: {port}", f"      protocol: {proto}"]
    files["aerleon/def/services.yaml"] = "\n".join(svc) + "\n"
    files["aerleon/def/networks.yaml"] = (
        "networks:\n"
        "  ANY:\n    values:\n      - address: 0.0.0.0/0\n"
        "  ANY_V6:\n    values:\n      - address: ::/0\n"
    )
    return files


# ========================================================================== fleet
#
# ``fleetN``: N host policies (``fleet`` = ``fleet100``), for one directory build of
# fwgen against ONE ``aclgen --base_directory`` run over the equivalent Aerleon policies.
#
# Each host has FLEET_RULES rules: first ``admin-ssh`` (allow ssh/tcp from the ADMIN
# networks, so no policy trips fwgen's ssh-lockout check), then random rules drawn from
# a structure seed (fixed per benchmark invocation and N, so every run compiles the same
# decisions): about 70 % inbound (``from:``) and 30 % outbound (``direction: out``,
# ``to:``); actions allow / deny / monitor (45 / 30 / 25 %); protocol tcp and udp (no
# ``protocol:`` key), tcp or udp; 1-4 port entries, each an IANA service name of fwgen's
# bundled registry (sometimes with a /tcp or /udp suffix), a port or a range "N-M"; and in
# 65 % of the rules 1-2 of 64 fleet-wide named networks, each IPv4-only, IPv6-only or both.
# Defaults: inbound deny, outbound allow, deny = drop. Each timed run (its own seed)
# changes every host's description nonce and the order of each rule's port entries and
# addresses, so no tool sees the same text twice, and no verdict changes.
#
# Aerleon: the same networks and services as definitions (def/networks.yaml,
# def/services.yaml: one service per distinct port entry, shared by the fleet) and one
# policy per host in pol/, four filters each: inbound IPv4 (speedway ``INPUT DROP inet`` +
# nftables ``mixed INPUT`` + windows_advfirewall ``in``), inbound IPv6 (speedway ``INPUT
# DROP inet6``), outbound IPv4 (speedway ``OUTPUT ACCEPT inet`` + nftables ``mixed OUTPUT
# ACCEPT`` + windows_advfirewall ``out``) and outbound IPv6 (speedway ``OUTPUT ACCEPT
# inet6``), the same ordered terms in each of a direction's filters. One aclgen run writes
# NAME.ipt, NAME.nft and NAME.bat per host. Where the meanings would differ and how that
# is avoided:
#
# * Aerleon applies every port of a term to every protocol of the term (it logs "Term X
#   has service S which is not defined with protocol P, but will be matched"). A rule
#   whose tcp and udp port sets differ (``raid-am`` is 2013/tcp and 2007/udp, an entry
#   with a /tcp suffix) becomes one term per protocol, each naming only the services
#   with ports of its protocol (Aerleon keeps only that protocol's ports of a service).
#   ``name/udp`` is its own service holding only the udp ports.
# * Address families: a fwgen rule whose addresses are all IPv4 applies to IPv4 only.
#   Aerleon's speedway leaves such a term out of the inet6 filter ("will not be rendered,
#   as it has source address match specified but no source addresses of inet6 address
#   family"), nftables mixed writes only its ``ip saddr`` rule, netsh lists only its IPv4
#   addresses: the same meaning. A rule without addresses matches both families in both.
# * monitor = accept + ``logging: true``, as in the other cases. fwgen's monitor log is
#   rate-limited; Aerleon's speedway and nftables log every matching packet.
# * Not made equal: Aerleon's windows_advfirewall refuses a default action, so its
#   scripts leave inbound/outbound defaults to the Windows profile (fwgen's sets them);
#   Aerleon's speedway/nftables outputs lack fwgen's always-on rules (loopback, INVALID
#   drop, ICMPv6 neighbour discovery, reverse-path check), as in the other cases.

FLEET_DEFAULT_HOSTS = 100
FLEET_RULES = 30  # rules per host, admin-ssh included
FLEET_NETWORKS = 64  # named networks shared by the fleet, ADMIN included
_FLEET_CASE = re.compile(r"fleet(\d*)")


def fleet_hosts(case: str) -> int | None:
    """Hosts of a fleet case name: 'fleet' -> 100, 'fleet1000' -> 1000; else None."""
    m = _FLEET_CASE.fullmatch(case)
    if not m:
        return None
    n = int(m.group(1)) if m.group(1) else FLEET_DEFAULT_HOSTS
    return n if n >= 1 else None


def is_case(name: str) -> bool:
    return name in CASES or fleet_hosts(name) is not None


@dataclass
class FleetEntry:
    text: str  # the port entry as written in the fwgen policy
    token: str  # the Aerleon service that means the same ports
    pairs: list[Pair]  # its ports, restricted to the rule's protocols


@dataclass
class FleetRule:
    name: str
    direction: str  # in | out
    action: str  # allow | deny | monitor
    protocol: str | None  # None: tcp and udp (no protocol: key)
    entries: list[FleetEntry]
    networks: list[str]  # Aerleon network names; [] = any address

    @property
    def protocols(self) -> tuple[str, ...]:
        return PROTOCOLS if self.protocol is None else (self.protocol,)


@dataclass
class FleetHost:
    name: str
    rules: list[FleetRule]


@dataclass
class Fleet:
    name: str  # the case name, fleetN
    seed: int
    hosts: list[FleetHost]
    networks: dict[str, list[str]]  # Aerleon network name -> addresses (fwgen writes them inline)
    services: dict[str, list[Pair]]  # Aerleon service name -> pairs
    acknowledge: tuple[str, ...] = ()
    aerleon_terms: int = 0  # terms per direction's filter, summed over the hosts
    files: dict[str, str] = field(default_factory=dict)

    FWGEN_DIR = "fwgen"  # the directory fwgen builds (every policy directly in it)
    AERLEON_BASE = "aerleon"  # aclgen --base_directory (policies in its pol/)
    AERLEON_DEFS = "aerleon/def"  # aclgen --definitions_directory

    @property
    def rules(self) -> int:
        return sum(len(h.rules) for h in self.hosts)

    def write(self, directory: str) -> dict[str, str]:
        return write_files(self.files, directory)


class _Services:
    """Aerleon service names for port entries: one per distinct entry, shared by the fleet."""

    def __init__(self) -> None:
        self.defs: dict[str, list[Pair]] = {}
        self._by_key: dict[tuple[str, str], str] = {}

    def token(self, key: tuple[str, str], stem: str, pairs: list[Pair]) -> str:
        if key in self._by_key:
            return self._by_key[key]
        base = re.sub(r"[^A-Z0-9]", "_", stem.upper())
        token, n = base, 1
        while token in self.defs:  # 'cl/1' and 'cl-1' would both be S_CL_1
            n += 1
            token = f"{base}_{n}"
        self.defs[token] = pairs
        self._by_key[key] = token
        return token


def _fleet_networks(rng: random.Random) -> dict[str, list[str]]:
    nets = {"ADMIN": ["10.255.0.0/24", "fd00:0:ad::/64"]}
    for i in range(1, FLEET_NETWORKS):
        kind = rng.choice(("v4", "v4", "v6", "both", "both"))
        addrs: list[str] = []
        if kind in ("v4", "both"):
            for _ in range(rng.randint(1, 3)):
                plen = rng.choice((16, 20, 24, 24, 28, 32))
                addr = ipaddress.IPv4Address((10 << 24) | rng.getrandbits(24))
                addrs.append(str(ipaddress.ip_network(f"{addr}/{plen}", strict=False)))
        if kind in ("v6", "both"):
            for _ in range(rng.randint(1, 2)):
                plen = rng.choice((48, 56, 64, 64, 128))
                addr = ipaddress.IPv6Address((0xFD << 120) | rng.getrandbits(120))
                addrs.append(str(ipaddress.ip_network(f"{addr}/{plen}", strict=False)))
        nets[f"NET_{i:02d}"] = list(dict.fromkeys(addrs))
    return nets


@dataclass
class _Pools:
    """What the fleet's rules draw from: registry names, and the fleet's own application
    ports and port ranges (a fleet runs the same applications, so hosts share them)."""

    names: list[tuple[str, list[Pair]]]
    ssh: list[Pair]
    ports: list[int]
    ranges: list[tuple[int, int]]
    networks: list[str]  # named networks, ADMIN excluded


def _fleet_pools(rng: random.Random, networks: dict[str, list[str]]) -> _Pools:
    names = registry_names()
    ssh = next(pairs for name, pairs in names if name == "ssh")
    ports = rng.sample(range(1, 65536), 256)
    ranges = []
    for _ in range(64):
        lo = rng.randint(1024, 60000)
        ranges.append((lo, lo + rng.choice((1, 9, 99, 255, 999))))
    return _Pools(names, ssh, ports, ranges, [n for n in networks if n != "ADMIN"])


def _fleet_entry(rng: random.Random, protos: tuple[str, ...], pools: _Pools,
                 services: _Services) -> FleetEntry:
    kind = rng.choices(("name", "port", "range"), weights=(50, 25, 25))[0]
    if kind == "port":
        port = rng.choice(pools.ports)
        token = services.token(("port", str(port)), f"P_{port}",
                               [(p, port, port) for p in PROTOCOLS])
        return FleetEntry(str(port), token, [(p, port, port) for p in protos])
    if kind == "range":
        lo, hi = rng.choice(pools.ranges)
        token = services.token(("range", f"{lo}-{hi}"), f"P_{lo}_{hi}",
                               [(p, lo, hi) for p in PROTOCOLS])
        return FleetEntry(f"{lo}-{hi}", token, [(p, lo, hi) for p in protos])
    names = pools.names
    while True:
        name, pairs = rng.choice(names)
        have = sorted({p for p, _, _ in pairs} & set(protos))
        if have:
            break
    if len(protos) == 2 and rng.random() < 0.2:  # a /tcp or /udp suffix on a tcp+udp rule
        proto = rng.choice(have)
        mine = [x for x in pairs if x[0] == proto]
        token = services.token((name.lower(), proto), f"S_{name}_{proto}", mine)
        return FleetEntry(f"{name}/{proto}", token, mine)
    token = services.token((name.lower(), ""), f"S_{name}", list(pairs))
    return FleetEntry(name, token, [x for x in pairs if x[0] in protos])


def _fleet_host(rng: random.Random, name: str, pools: _Pools, services: _Services) -> FleetHost:
    ssh = FleetEntry("ssh", services.token(("ssh", ""), "S_ssh", pools.ssh),
                     [x for x in pools.ssh if x[0] == "tcp"])
    rules = [FleetRule("admin-ssh", "in", "allow", "tcp", [ssh], ["ADMIN"])]
    for i in range(2, FLEET_RULES + 1):
        direction = "out" if rng.random() < 0.3 else "in"
        action = rng.choices(("allow", "deny", "monitor"), weights=(45, 30, 25))[0]
        protocol = rng.choices((None, "tcp", "udp"), weights=(50, 35, 15))[0]
        protos = PROTOCOLS if protocol is None else (protocol,)
        entries: dict[str, FleetEntry] = {}
        for _ in range(rng.randint(1, 4)):
            e = _fleet_entry(rng, protos, pools, services)
            entries.setdefault(e.text.lower(), e)
        nets = [] if rng.random() < 0.35 else rng.sample(pools.networks, rng.randint(1, 2))
        rules.append(FleetRule(f"{direction}-r{i}", direction, action, protocol,
                               list(entries.values()), nets))
    return FleetHost(name, rules)


@functools.lru_cache(maxsize=4)
def _fleet_structure(hosts: int, structure_seed: int) -> tuple[
        tuple[FleetHost, ...], dict[str, list[str]], dict[str, list[Pair]]]:
    rng = random.Random(f"fleet:{structure_seed}:{hosts}")
    networks = _fleet_networks(rng)
    pools = _fleet_pools(rng, networks)
    services = _Services()
    width = max(4, len(str(hosts)))
    built = tuple(_fleet_host(rng, f"h{i:0{width}d}", pools, services)
                  for i in range(1, hosts + 1))
    return built, networks, services.defs


def generate_fleet(hosts: int, seed: int, structure_seed: int = 1,
                   acknowledge: tuple[str, ...] = ()) -> Fleet:
    """``hosts`` policies whose rules come from ``structure_seed`` (the same for every run
    of one benchmark); ``seed`` (one per run) sets the nonces and the text order."""
    structure, networks, services = _fleet_structure(hosts, structure_seed)
    rng = random.Random(f"fleet{hosts}:{seed}")
    nonce = f"{rng.getrandbits(64):016x}"
    hosts_now = []
    for host in structure:  # the same rules, entries and networks in a new text order
        rules = []
        for r in host.rules:
            entries, nets = list(r.entries), list(r.networks)
            rng.shuffle(entries)
            rng.shuffle(nets)
            rules.append(FleetRule(r.name, r.direction, r.action, r.protocol, entries, nets))
        hosts_now.append(FleetHost(host.name, rules))
    fleet = Fleet(f"fleet{hosts}", seed, hosts_now, networks, services, acknowledge)
    for host in fleet.hosts:
        desc = f"fwgen bench fleet{hosts} host {host.name} seed {seed} nonce {nonce}"
        fleet.files[f"{Fleet.FWGEN_DIR}/{host.name}.yaml"] = _fleet_fwgen_policy(fleet, host, desc)
        text, terms = _fleet_aerleon_policy(host, desc)
        fleet.files[f"{Fleet.AERLEON_BASE}/pol/{host.name}.yaml"] = text
        fleet.aerleon_terms += terms
    fleet.files[f"{Fleet.AERLEON_DEFS}/services.yaml"] = _services_yaml(services)
    net = ["networks:"]
    for name, addrs in networks.items():
        net += [f"  {name}:", "    values:", *(f"      - address: {a}" for a in addrs)]
    fleet.files[f"{Fleet.AERLEON_DEFS}/networks.yaml"] = "\n".join(net) + "\n"
    return fleet


def _fleet_fwgen_policy(fleet: Fleet, host: FleetHost, description: str) -> str:
    lines = [
        "version: 1",
        f"name: {host.name}",
        f"description: {_q(description)}",
        "defaults:",
        "  inbound: deny",
        "  outbound: allow",
        "  deny: drop",
    ]
    if fleet.acknowledge:
        lines.append(f"acknowledge: [{', '.join(fleet.acknowledge)}]")
    lines.append("rules:")
    for rule in host.rules:
        lines += [f"  - name: {rule.name}", f"    action: {rule.action}"]
        if rule.direction == "out":
            lines.append("    direction: out")
        if rule.protocol:
            lines.append(f"    protocol: {rule.protocol}")
        lines.append(f"    ports: [{', '.join(_fwgen_port(e.text) for e in rule.entries)}]")
        if rule.networks:
            addrs = dict.fromkeys(a for n in rule.networks for a in fleet.networks[n])
            key = "from" if rule.direction == "in" else "to"
            lines.append(f"    {key}: [{', '.join(_q(a) for a in addrs)}]")
    return "\n".join(lines) + "\n"


def _fleet_terms(rule: FleetRule) -> list[list[str]]:
    """The Aerleon terms of one rule (YAML lines each): one term, or one per protocol
    where the rule's tcp and udp port sets differ."""
    by_proto = {p: sorted({(lo, hi) for e in rule.entries for q, lo, hi in e.pairs if q == p})
                for p in rule.protocols}
    if len(rule.protocols) == 2 and by_proto["tcp"] == by_proto["udp"]:
        groups = [("", PROTOCOLS, [e.token for e in rule.entries])]
    else:
        groups = [(f"-{p}" if len(rule.protocols) == 2 else "", (p,),
                   [e.token for e in rule.entries if any(q == p for q, _, _ in e.pairs)])
                  for p in rule.protocols if by_proto[p]]
    terms = []
    for suffix, protos, tokens in groups:
        lines = [f"      - name: {rule.name}{suffix}", f"        protocol: [{', '.join(protos)}]"]
        if rule.networks:
            key = "source-address" if rule.direction == "in" else "destination-address"
            lines.append(f"        {key}: [{', '.join(rule.networks)}]")
        lines += [f"        destination-port: [{', '.join(tokens)}]",
                  f"        action: {'deny' if rule.action == 'deny' else 'accept'}"]
        if rule.action == "monitor":
            lines.append("        logging: true")
        terms.append(lines)
    return terms


_FLEET_FILTERS = {  # direction -> the targets of each of its filters
    "in": (["speedway: INPUT DROP inet", "nftables: mixed INPUT", "windows_advfirewall: in"],
           ["speedway: INPUT DROP inet6"]),
    "out": (["speedway: OUTPUT ACCEPT inet", "nftables: mixed OUTPUT ACCEPT",
             "windows_advfirewall: out"],
            ["speedway: OUTPUT ACCEPT inet6"]),
}


def _fleet_aerleon_policy(host: FleetHost, description: str) -> tuple[str, int]:
    body = ["filters:"]
    count = 0
    for direction, filters in _FLEET_FILTERS.items():
        terms = [t for r in host.rules if r.direction == direction for t in _fleet_terms(r)]
        count += len(terms)
        for targets in filters:
            body += ["  - header:", f"      comment: {_q(description)}", "      targets:",
                     *(f"        {t}" for t in targets), "    terms:",
                     *(line for t in terms for line in t)]
    return "\n".join(body) + "\n", count


def _services_yaml(services: dict[str, list[Pair]]) -> str:
    svc = ["services:"]
    for name, pairs in services.items():
        svc.append(f"  {name}:")
        for proto, lo, hi in pairs:
            port = str(lo) if lo == hi else f"{lo}-{hi}"
            svc += [f"    - port: {port}", f"      protocol: {proto}"]
    return "\n".join(svc) + "\n"
