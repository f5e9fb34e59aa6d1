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

Aerleon runs once per target, so each case has one Aerleon policy file per target:

* ``speedway``            (Aerleon's iptables generator that writes complete
                          ``iptables-restore`` tables) ``INPUT DROP``: one filter for IPv4
                          and one for IPv6, like fwgen's rules.v4 + rules.v6;
* ``nftables``            ``mixed INPUT`` (one dual-stack ``inet`` table, default drop);
* ``windows_advfirewall`` ``in`` (netsh; Aerleon allows no default action here).
"""

from __future__ import annotations

import functools
import json
import os
import random
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
        out = {}
        for rel, text in self.files.items():
            path = os.path.join(directory, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
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


def generate(case: str, seed: int, acknowledge: tuple[str, ...] = ()) -> Case:
    """``acknowledge``: lint finding ids for the fwgen policy's ``acknowledge:`` key (only
    fwgen versions with a linter know the key; run.py adds ids only when fwgen asks)."""
    rng = random.Random(f"{case}:{seed}")
    rules, final_deny = _BUILDERS[case](rng)
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
