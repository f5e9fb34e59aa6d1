"""``published_ports: enforce`` with real packets, on a host built as Docker builds one.

The host namespace has a bridge ``docker0`` (172.17.0.1/16, fd00:17::1/64) with a
container namespace on a veth (172.17.0.2, fd00:17::2) running listeners, forwarding
on, and Docker's own iptables layout, recreated with ``iptables-restore --noflush``
(Debian 12's iptables is iptables-nft, as Docker uses it): the nat table's
``PREROUTING -m addrtype --dst-type LOCAL -j DOCKER`` with one DNAT per published port,
and the filter table's FORWARD -> DOCKER-USER, DOCKER-ISOLATION-STAGE-1/2, the
RELATED,ESTABLISHED accept and DOCKER's accept per published container port. A
neighbour namespace sends real connections to the host's addresses.

Each case first probes with Docker's rules alone (the positive control: every
published port is open), then with fwgen's rules as the host loads them: nftables
next to Docker's tables; iptables in table mode first, then Docker restarting (it
recreates the filter chains the file replaced); iptables chains mode both at boot
(``iptables-restore --noflush`` on an empty host, before Docker has made any chain) and
on the running Docker host. A compiler matching the port after DNAT is caught (the
mutation case).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fwgen.build import build
from fwgen.explain import Explainer
from fwgen.registry import bundled
from tests.kernel.hostsim import bridged_guest, chains_named, fwgen
from tests.kernel.netns import (
    Namespace,
    Probe,
    connect,
    load_iptables,
    load_nft,
    mac_address,
    run_probes,
    serve,
    static_neighbours,
    sysctl,
)

HOST, HOST_OTHER, PEER, PEER_ADMIN = "10.0.5.1", "10.0.5.10", "10.0.5.2", "10.0.5.3"
HOST6, HOST6_OTHER, PEER6, PEER6_ADMIN = "fd00:5::1", "fd00:5::10", "fd00:5::2", "fd00:5::3"
CONTAINER, CONTAINER6 = "172.17.0.2", "fd00:17::2"
# (protocol, host port, container port): what `docker run -p` published
PUBLISHED = [("tcp", 8080, 80), ("tcp", 8081, 81), ("tcp", 8083, 83), ("tcp", 8084, 84), ("tcp", 8085, 85),
             ("udp", 5353, 53)]
UNPUBLISHED = 82  # the container listens on it; nothing publishes it
RANGE = (20000, 20047)  # published port for port (docker run -p 20000-20047:20000-20047): the random policies'

POLICY = f"""\
version: 1
name: dock
targets: [iptables, nftables]
published_ports: MODE
defaults: {{inbound: deny, outbound: allow}}
acknowledge: [ssh-lockout]
rules:
  - name: no-8080
    action: deny
    protocol: tcp
    ports: [8080]
  - name: web-alt
    action: allow
    protocol: tcp
    ports: [8081]
  - name: admin-only
    action: allow
    protocol: tcp
    ports: [8083]
    from: [{PEER_ADMIN}, "{PEER6_ADMIN}"]
  - name: main-address
    action: allow
    protocol: tcp
    ports: [8084]
    local: [{HOST}, "{HOST6}"]
  - name: dns-watch
    action: monitor
    protocol: udp
    ports: [5353]
"""

# probe id -> (protocol, destination, port, source)
PROBES = {
    "8080 denied": ("tcp", HOST, 8080, PEER),
    "8081 allowed": ("tcp", HOST, 8081, PEER),
    "8083 not from admin": ("tcp", HOST, 8083, PEER),
    "8083 from admin": ("tcp", HOST, 8083, PEER_ADMIN),
    "8084 to main address": ("tcp", HOST, 8084, PEER),
    "8084 to other address": ("tcp", HOST_OTHER, 8084, PEER),
    "8085 default deny": ("tcp", HOST, 8085, PEER),
    "udp 5353 monitored": ("udp", HOST, 5353, PEER),
    "82 unpublished, direct": ("tcp", CONTAINER, UNPUBLISHED, PEER),
    "82 unpublished, host port": ("tcp", HOST, UNPUBLISHED, PEER),
    "v6 8080 denied": ("tcp", HOST6, 8080, PEER6),
    "v6 8081 allowed": ("tcp", HOST6, 8081, PEER6),
    "v6 8083 not from admin": ("tcp", HOST6, 8083, PEER6),
    "v6 8083 from admin": ("tcp", HOST6, 8083, PEER6_ADMIN),
    "v6 8084 to main address": ("tcp", HOST6, 8084, PEER6),
    "v6 8084 to other address": ("tcp", HOST6_OTHER, 8084, PEER6),
    "v6 82 unpublished, direct": ("tcp", CONTAINER6, UNPUBLISHED, PEER6),
}
CLOSED = {"82 unpublished, direct", "82 unpublished, host port", "v6 82 unpublished, direct"}
# what the policy denies: closed with enforce, open with ignore (today's behaviour)
DENIED = {"8080 denied", "8083 not from admin", "8084 to other address", "8085 default deny",
          "v6 8080 denied", "v6 8083 not from admin", "v6 8084 to other address"}


def docker_layout(family: int, ns: Namespace) -> str:
    """Docker's nat and filter rules for the published ports, as an iptables-restore
    --noflush file; like Docker, it keeps an existing DOCKER-USER chain and its rules, and
    adds the FORWARD jump to it only when missing."""
    container = CONTAINER if family == 4 else f"[{CONTAINER6}]"
    plain = CONTAINER if family == 4 else CONTAINER6
    bridge_net = "172.17.0.0/16" if family == 4 else "fd00:17::/64"
    tool = "iptables" if family == 4 else "ip6tables"
    has_user = ns.run([tool, "-S", "DOCKER-USER"], check=False).returncode == 0
    has_jump = has_user and ns.run([tool, "-C", "FORWARD", "-j", "DOCKER-USER"], check=False).returncode == 0
    loopback = "127.0.0.0/8" if family == 4 else "::1/128"
    nat = [
        "*nat", ":DOCKER - [0:0]",
        "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
        f"-A OUTPUT ! -d {loopback} -m addrtype --dst-type LOCAL -j DOCKER",
        f"-A POSTROUTING -s {bridge_net} ! -o docker0 -j MASQUERADE",
        "-A DOCKER -i docker0 -j RETURN",
    ] + [f"-A DOCKER ! -i docker0 -p {proto} -m {proto} --dport {host} -j DNAT --to-destination {container}:{port}"
         for proto, host, port in PUBLISHED] + [
        f"-A DOCKER ! -i docker0 -p tcp -m tcp --dport {RANGE[0]}:{RANGE[1]} -j DNAT --to-destination {container}",
        "COMMIT"]
    filter_ = [
        "*filter", ":FORWARD DROP [0:0]", ":DOCKER - [0:0]", ":DOCKER-ISOLATION-STAGE-1 - [0:0]",
        ":DOCKER-ISOLATION-STAGE-2 - [0:0]",
    ] + ([] if has_user else [":DOCKER-USER - [0:0]"]) + ([] if has_jump else ["-A FORWARD -j DOCKER-USER"]) + [
        "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
        "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A FORWARD -o docker0 -j DOCKER",
        "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
        "-A FORWARD -i docker0 -o docker0 -j ACCEPT",
    ] + [f"-A DOCKER -d {plain} ! -i docker0 -o docker0 -p {proto} -m {proto} --dport {port} -j ACCEPT"
         for proto, _, port in PUBLISHED] + [
        f"-A DOCKER -d {plain} ! -i docker0 -o docker0 -p tcp -m tcp --dport {RANGE[0]}:{RANGE[1]} -j ACCEPT",
        "-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
        "-A DOCKER-ISOLATION-STAGE-1 -j RETURN",
        "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
        "-A DOCKER-ISOLATION-STAGE-2 -j RETURN",
        "-A DOCKER-USER -j RETURN",
        "COMMIT",
    ]
    return "\n".join(nat + filter_) + "\n"


def docker_starts(host: Namespace) -> None:
    for family, tool in ((4, "iptables-restore"), (6, "ip6tables-restore")):
        host.run([tool, "--noflush"], input=docker_layout(family, host))


class Lab:
    def __init__(self, host: Namespace, container: Namespace, peer: Namespace) -> None:
        self.host, self.container, self.peer = host, container, peer

    def probe(self, cases: dict[str, tuple[str, str, int, str]] = PROBES) -> dict[str, str]:
        """Each probe's fate: 'open' or 'closed' (a UDP datagram is open when the
        container's listener got it)."""
        tcp = [port for proto, _, port in PUBLISHED if proto == "tcp"] + [UNPUBLISHED]
        listener = serve(self.container, ["0.0.0.0", "::"], tcp=tcp + list(range(RANGE[0], RANGE[1] + 1)), udp=[53])
        with listener:
            listener.wait_ready()
            probes = [Probe(proto, dst, port, src, timeout=0.7, id=name, payload=name)
                      for name, (proto, dst, port, src) in cases.items()]
            results = {r.probe.id: r.status for r in run_probes(self.peer, probes)}
            # the unpublished port is really served: the host itself reaches it
            assert run_probes(self.host, [Probe("tcp", CONTAINER, UNPUBLISHED, timeout=2.0)])[0].status == "connected"
        got = {r["payload"] for r in listener.stop() if r["proto"] == "udp"}
        return {name: ("open" if (status == "connected" if cases[name][0] == "tcp" else name in got) else "closed")
                for name, status in results.items()}


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Namespace() as host, Namespace() as container, Namespace() as peer:
        bridged_guest(host, container, "docker0", ("172.17.0.1/16", "fd00:17::1/64"),
                      (CONTAINER + "/16", CONTAINER6 + "/64"), host_if="vethc")
        connect(host, peer, host_addrs=[HOST, HOST_OTHER, HOST6, HOST6_OTHER],
                peer_addrs=[PEER, PEER_ADMIN, PEER6, PEER6_ADMIN], host_if="eth0", peer_if="eth0")
        peer.run(["ip", "route", "add", "172.17.0.0/16", "via", HOST])
        peer.run(["ip", "-6", "route", "add", "fd00:17::/64", "via", HOST6])
        # permanent neighbour entries on the peer's link too (bridged_guest makes the guest's)
        static_neighbours(host, "eth0", [PEER, PEER_ADMIN, PEER6, PEER6_ADMIN], mac_address(peer, "eth0"))
        static_neighbours(peer, "eth0", [HOST, HOST_OTHER, HOST6, HOST6_OTHER], mac_address(host, "eth0"))
        sysctl(host, "net.ipv4.ip_forward", 1)
        sysctl(host, "net.ipv6.conf.all.forwarding", 1)
        yield Lab(host, container, peer)


CHAINS = "iptables: {mode: chains}\n"
# how fwgen's rules reach the host: nftables; iptables table mode; iptables chains mode at
# boot (before Docker has made a chain) and on the running Docker host
TARGETS = ["nftables", "iptables", "chains-at-boot", "chains"]


def policy_text(text: str, target: str) -> str:
    return text.replace("name: dock\n", "name: dock\n" + CHAINS, 1) if target.startswith("chains") else text


def outputs(tmp_path: Path, mode: str, target: str = "iptables") -> dict[str, str]:
    path = tmp_path / "dock.yaml"
    path.write_text(policy_text(POLICY.replace("MODE", mode), target), encoding="utf-8")
    return build(str(path), bundled()).files


def load(lab: Lab, target: str, files: dict[str, str]) -> None:
    if target == "nftables":
        load_nft(lab.host, files["nftables/dock.nft"])
        return
    if target.startswith("chains"):
        if target == "chains-at-boot":  # a reboot: no rule at all, then netfilter-persistent, then Docker
            lab.host.run(["nft", "flush", "ruleset"])
            assert chains_named(lab.host, "DOCKER") == []
        for tool, name in (("iptables-restore", "rules.v4"), ("ip6tables-restore", "rules.v6")):
            lab.host.run([tool, "--noflush"], input=files[f"iptables/{name}"])
        if target == "chains-at-boot":
            docker_starts(lab.host)
        return
    # table mode replaces the whole filter table, Docker's chains included ...
    load_iptables(lab.host, files["iptables/rules.v4"], files["iptables/rules.v6"])
    assert chains_named(lab.host, "DOCKER") == ["nat DOCKER"] * 2
    # ... until Docker starts (or restarts) and recreates them
    docker_starts(lab.host)


def expected(mode: str) -> dict[str, str]:
    closed = CLOSED | (DENIED if mode == "enforce" else set())
    return {name: "closed" if name in closed else "open" for name in PROBES}


@pytest.mark.parametrize("mode", ["enforce", "ignore"])
@pytest.mark.parametrize("target", TARGETS)
def test_published_ports_follow_the_policy(lab: Lab, tmp_path: Path, target: str, mode: str) -> None:
    docker_starts(lab.host)
    before = chains_named(lab.host, "DOCKER")
    assert len(before) == 10  # nat DOCKER; filter DOCKER, DOCKER-ISOLATION-STAGE-1/2, DOCKER-USER; both families
    assert lab.probe() == expected("docker alone")  # the positive control: every published port open
    files = outputs(tmp_path, mode, target)
    load(lab, target, files)
    assert chains_named(lab.host, "DOCKER") == before
    assert lab.probe() == expected(mode)
    if mode == "enforce" and target != "nftables":  # fwgen's one jump, in mangle FORWARD, and nothing in FORWARD
        for tool in ("iptables", "ip6tables"):
            forward = lab.host.run([tool, "-t", "mangle", "-S", "FORWARD"]).stdout.splitlines()
            assert [rule for rule in forward if "fwgen-" in rule] == [
                "-A FORWARD -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -m comment --comment "
                '"published_ports: new connections DNATed to a local container" -j '
                + ("fwgen-published" if target == "iptables" else "fwgen-dock-pub")]
            assert "fwgen-" not in lab.host.run([tool, "-t", "filter", "-S", "FORWARD"]).stdout
            assert "fwgen-" not in lab.host.run([tool, "-t", "filter", "-S", "DOCKER-USER"]).stdout
    if mode == "enforce":  # the monitor rule counted the one published datagram it decided
        if target == "nftables":
            counters = lab.host.run(["nft", "list", "counter", "inet", "dock", "rule_dns-watch"]).stdout
            assert "packets 1 " in counters, counters
        else:
            saved = lab.host.run(["iptables-save", "-c"]).stdout
            chain = "fwgen-published-5" if target == "iptables" else "fwgen-dock-pub-5"
            counts = re.findall(rf"^\[(\d+):\d+\] -A {chain} .* -j RETURN$", saved, re.MULTILINE)
            assert counts == ["1"], saved


@pytest.mark.parametrize("target", ["iptables", "chains", "nftables"])
def test_a_compiler_matching_the_port_after_dnat_is_caught(lab: Lab, tmp_path: Path, target: str) -> None:
    """The mutation: the same rules on the port the container sees (81, after DNAT)
    instead of the one the neighbour connected to (8081): the allowed port falls to the
    default deny, and the harness sees it."""
    files = outputs(tmp_path, "enforce", target)
    broken = {
        name: re.sub(r"-m conntrack --ctorigdstport", "--dport", text).replace("ct original proto-dst", "th dport")
        for name, text in files.items()
    }
    assert broken != files
    docker_starts(lab.host)
    load(lab, target, broken)
    fates = lab.probe()
    assert fates["8081 allowed"] == fates["v6 8081 allowed"] == "closed"
    assert fates != expected("enforce")


def random_policy(rng: random.Random, default: str) -> str:
    """Rules on the published range: overlapping ranges, every action, restricted to a
    client address or to one of the host's addresses, in both families."""
    rules = []
    for index in range(rng.randint(2, 7)):
        lo = rng.randint(*RANGE)
        hi = min(RANGE[1], lo + rng.choice([0, 0, 2, 7, 20]))
        rule: dict[str, object] = {"name": f"r{index}", "action": rng.choice(["allow", "deny", "monitor"]),
                                   "protocol": "tcp", "ports": [lo if lo == hi else f"{lo}-{hi}"]}
        local = rng.random() < 0.3  # with from: both of one family (else the rule could never match)
        v4 = rng.random() < 0.5
        if rng.random() < 0.4:
            clients = ([PEER, PEER_ADMIN, "10.0.5.0/24"] if v4 else [PEER6, PEER6_ADMIN]) if local else [
                PEER, PEER_ADMIN, "10.0.5.0/24", PEER6, PEER6_ADMIN]
            rule["from"] = rng.sample(clients, rng.randint(1, 2))
        if local:
            rule["local"] = [rng.choice([HOST, HOST_OTHER] if v4 else [HOST6, HOST6_OTHER])]
        rules.append(rule)
    return yaml.safe_dump({"version": 1, "name": "dock", "targets": ["iptables", "nftables"],
                           "published_ports": "enforce", "defaults": {"inbound": default},
                           "acknowledge": ["ssh-lockout"], "rules": rules}, sort_keys=False)


def random_cases(rng: random.Random, text: str) -> dict[str, tuple[str, str, int, str]]:
    """Every rule's range edges (and a few more ports), each from and to a random pair of
    the client's and the host's addresses of one family."""
    ports = {RANGE[0], RANGE[1]} | {rng.randint(*RANGE) for _ in range(4)}
    for rule in yaml.safe_load(text)["rules"]:
        lo, _, hi = str(rule["ports"][0]).partition("-")
        ports |= {p for p in (int(lo) - 1, int(lo), int(hi or lo), int(hi or lo) + 1) if RANGE[0] <= p <= RANGE[1]}
    pairs = [(PEER, HOST), (PEER, HOST_OTHER), (PEER_ADMIN, HOST), (PEER_ADMIN, HOST_OTHER),
             (PEER6, HOST6), (PEER6, HOST6_OTHER), (PEER6_ADMIN, HOST6), (PEER6_ADMIN, HOST6_OTHER)]
    cases = {}
    for port in sorted(ports):
        for src, dst in rng.sample(pairs, 2):
            cases[f"{port} {src} -> {dst}"] = ("tcp", dst, port, src)
    return cases


def apply_chains(lab: Lab, tmp_path: Path, files: dict[str, str]) -> None:
    """Chains mode as a host replaces its rules: ``fwgen apply`` (one jump each, the older
    policy's chains replaced)."""
    out = tmp_path / "out" / "dock"
    for name, text in files.items():
        if name.startswith("iptables/"):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text, encoding="utf-8")
    done = fwgen(lab.host, "apply", str(out), "--timeout", "0", "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    for tool in ("iptables", "ip6tables"):
        forward = lab.host.run([tool, "-t", "mangle", "-S", "FORWARD"]).stdout
        assert forward.count("-j fwgen-dock-pub") == 1, forward


@pytest.mark.parametrize("target", ["iptables", "chains", "nftables"])
def test_random_policies_agree_with_explain_on_published_ports(lab: Lab, tmp_path: Path, target: str) -> None:
    """Seeded random policies (the same every run): each published connection is open
    exactly when fwgen explain says allow or monitor for it, by the port and host
    address the client connected to."""
    rng = random.Random(f"published-{target}")
    docker_starts(lab.host)
    seen: set[str] = set()
    for round_ in range(4):
        text = random_policy(rng, ("deny", "allow")[round_ % 2])
        cases = random_cases(rng, text)
        if round_ == 0:  # the positive control: every published connection goes through before fwgen's rules
            assert set(lab.probe(cases).values()) == {"open"}
        path = tmp_path / "dock.yaml"
        path.write_text(policy_text(text, target), encoding="utf-8")
        files = build(str(path), bundled()).files
        if target == "chains":
            apply_chains(lab, tmp_path, files)
        else:
            load(lab, target, files)
        explainer = Explainer.from_file(str(path), bundled())
        expected = {name: "open" if explainer.verdict("in", "tcp", port, src, local=dst).action != "deny" else "closed"
                    for name, (_, dst, port, src) in cases.items()}
        fates = lab.probe(cases)
        wrong = {name: fate for name, fate in fates.items() if fate != expected[name]}
        assert not wrong, f"{text}\nexpected {({n: expected[n] for n in wrong})}"
        seen.update(expected.values())
    assert seen == {"open", "closed"}  # the policies open some published connections and close others


@pytest.mark.parametrize("target", ["iptables", "chains", "nftables"])
def test_reject_on_a_published_port_is_a_drop_on_iptables(lab: Lab, tmp_path: Path, target: str) -> None:
    """The degradation the build warns of: with defaults.deny reject, iptables drops a
    denied published connection (mangle has no REJECT: the SYN times out) where nftables
    rejects it (a TCP reset); the host's own denied port is rejected on both."""
    docker_starts(lab.host)
    path = tmp_path / "dock.yaml"
    path.write_text(policy_text(POLICY.replace("MODE", "enforce").replace(
        "defaults: {inbound: deny, outbound: allow}", "defaults: {inbound: deny, outbound: allow, deny: reject}"),
        target), encoding="utf-8")
    result = build(str(path), bundled())
    warned = [w.message for w in result.warnings if "REJECT does not exist" in w.message]
    assert len(warned) == 1 and warned[0].startswith("iptables: ")
    load(lab, target, result.files)
    probes = [Probe("tcp", HOST, 8080, PEER, timeout=1.0, id="published"),
              Probe("tcp", HOST, 8081, PEER, timeout=1.0, id="published, allowed"),
              Probe("tcp", HOST, 9999, PEER, timeout=1.0, id="the host's own")]
    with serve(lab.container, ["0.0.0.0"], tcp=[80, 81]) as listener:
        listener.wait_ready()
        got = {r.probe.id: r.status for r in run_probes(lab.peer, probes)}
    assert got == {"published": "timeout" if target != "nftables" else "refused",
                   "published, allowed": "connected", "the host's own": "refused"}
