"""``published_ports: enforce`` on a Kubernetes node: NodePorts, with real packets.

The node namespace has a bridge ``cni0`` (10.244.1.1/24, fd00:244:1::1/64) with a pod
namespace on a veth (10.244.1.5, fd00:244:1::5) running listeners on 80-83, forwarding
on, and kube-proxy's iptables layout (iptables mode) built as kube-proxy builds it: its
jump rules first, each ensured with ``-C`` and inserted at the top of its built-in chain
when missing (``FORWARD -j KUBE-FORWARD`` first of all), then its chains with one
``iptables-restore --noflush``: nat ``KUBE-SERVICES`` -> ``KUBE-NODEPORTS`` (for local
destinations) -> ``KUBE-EXT-*`` (``KUBE-MARK-MASQ``: mark 0x4000) -> ``KUBE-SVC-*`` ->
``KUBE-SEP-*`` (DNAT to the pod), and filter ``KUBE-FORWARD``, which accepts every packet
carrying the 0x4000 mark. The filter FORWARD policy is DROP, so a NodePort is open only
through kube-proxy's accept. A neighbour connects to the node's NodePorts.

The accept in ``KUBE-FORWARD`` comes before anything another tool puts into filter
FORWARD (Docker's ``DOCKER-USER`` included), which is why fwgen judges published
connections in mangle FORWARD: the mutation case moves fwgen's judging chain into
filter FORWARD, as the old ``DOCKER-USER`` design had it, and the denied NodePort opens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fwgen.build import build
from fwgen.explain import Explainer
from fwgen.registry import bundled
from tests.kernel.hostsim import bridged_guest, chains_named
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

NODE, PEER, PEER_ADMIN = "10.0.6.1", "10.0.6.2", "10.0.6.3"
NODE6, PEER6, PEER6_ADMIN = "fd00:6::1", "fd00:6::2", "fd00:6::3"
POD, POD6 = "10.244.1.5", "fd00:244:1::5"
CLUSTER_IP, CLUSTER_IP6 = "10.96.0.10", "fd00:96::10"  # the Service of NodePort 30080, port 80
# NodePort -> the pod's port (one Service each)
NODEPORTS = {30080: 80, 30081: 81, 30082: 82, 30083: 83}

POLICY = f"""\
version: 1
name: node
targets: [iptables, nftables]
published_ports: enforce
defaults: {{inbound: deny, outbound: allow}}
acknowledge: [ssh-lockout, published-ports-closed]
rules:
  - name: web
    action: allow
    protocol: tcp
    ports: [30080]
  - name: no-30081
    action: deny
    protocol: tcp
    ports: [30081]
  - name: admins
    action: allow
    protocol: tcp
    ports: [30083]
    from: [{PEER_ADMIN}, "{PEER6_ADMIN}"]
"""

PROBES = {f"{'v6 ' if six else ''}{port} from {'admin' if admin else 'peer'}": (
    NODE6 if six else NODE, port, (PEER6_ADMIN if admin else PEER6) if six else (PEER_ADMIN if admin else PEER))
    for six in (False, True) for port in NODEPORTS for admin in (False, True)}


def _chain(name: str, family: int) -> str:
    """kube-proxy's chain names carry a hash of the Service; one per family here."""
    return f"{name}-{'V4' if family == 4 else 'V6'}"


def kube_proxy_syncs(node: Namespace) -> None:
    """What kube-proxy does on every sync, both families: ensure its jumps (``-C``, else
    ``-I`` at the top: iptables.Prepend), then restore its chains with --noflush."""
    for family, tool in ((4, "iptables"), (6, "ip6tables")):
        jumps = [  # kube-proxy's iptablesJumpChains, in its order (each prepended)
            ("filter", "KUBE-EXTERNAL-SERVICES", "INPUT", ["-m", "conntrack", "--ctstate", "NEW"],
             "kubernetes externally-visible service portals"),
            ("filter", "KUBE-EXTERNAL-SERVICES", "FORWARD", ["-m", "conntrack", "--ctstate", "NEW"],
             "kubernetes externally-visible service portals"),
            ("filter", "KUBE-NODEPORTS", "INPUT", [], "kubernetes health check service ports"),
            ("filter", "KUBE-SERVICES", "FORWARD", ["-m", "conntrack", "--ctstate", "NEW"],
             "kubernetes service portals"),
            ("filter", "KUBE-SERVICES", "OUTPUT", ["-m", "conntrack", "--ctstate", "NEW"],
             "kubernetes service portals"),
            ("filter", "KUBE-FORWARD", "FORWARD", [], "kubernetes forwarding rules"),
            ("nat", "KUBE-SERVICES", "OUTPUT", [], "kubernetes service portals"),
            ("nat", "KUBE-SERVICES", "PREROUTING", [], "kubernetes service portals"),
            ("nat", "KUBE-POSTROUTING", "POSTROUTING", [], "kubernetes postrouting rules"),
        ]
        for table, chain, builtin, extra, comment in jumps:
            node.run([tool, "-t", table, "-N", chain], check=False)  # EnsureChain
            rule = [builtin, *extra, "-m", "comment", "--comment", comment, "-j", chain]
            if node.run([tool, "-t", table, "-C", *rule], check=False).returncode != 0:
                node.run([tool, "-t", table, "-I", *rule])
        node.run([f"{tool}-restore", "--noflush"], input=kube_proxy_chains(family))


def kube_proxy_chains(family: int) -> str:
    pod, pod_net = (POD, "10.244.0.0/16") if family == 4 else (POD6, "fd00:244::/48")
    plen = "32" if family == 4 else "128"
    nat = ["*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-POSTROUTING - [0:0]",
           ":KUBE-MARK-MASQ - [0:0]"]
    rules = [
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE '
        "--random-fully",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    ]
    for nodeport, port in NODEPORTS.items():
        svc, ext, sep = (_chain(f"KUBE-{kind}-WEB{nodeport}", family) for kind in ("SVC", "EXT", "SEP"))
        target = f"{pod}:{port}" if family == 4 else f"[{pod}]:{port}"
        nat += [f":{svc} - [0:0]", f":{ext} - [0:0]", f":{sep} - [0:0]"]
        name = f"default/web{nodeport}:http"
        rules += [
            f'-A KUBE-NODEPORTS -p tcp -m comment --comment "{name}" -m tcp --dport {nodeport} -j {ext}',
            f'-A {ext} -m comment --comment "masquerade traffic for {name} external destinations" -j KUBE-MARK-MASQ',
            f"-A {ext} -j {svc}",
            f'-A {svc} ! -s {pod_net} -m comment --comment "{name} cluster IP" -j KUBE-MARK-MASQ',
            f'-A {svc} -m comment --comment "{name} -> {target}" -j {sep}',
            f'-A {sep} -s {pod}/{plen} -m comment --comment "{name}" -j KUBE-MARK-MASQ',
            f'-A {sep} -p tcp -m comment --comment "{name}" -m tcp -j DNAT --to-destination {target}',
        ]
    cluster_ip = CLUSTER_IP if family == 4 else CLUSTER_IP6
    svc = _chain("KUBE-SVC-WEB30080", family)
    rules.append(f'-A KUBE-SERVICES -d {cluster_ip}/{plen} -p tcp -m comment --comment "default/web30080:http '
                 f'cluster IP" -m tcp --dport 80 -j {svc}')
    rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the '
                 'last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    filter_ = [
        "*filter", ":KUBE-FORWARD - [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-EXTERNAL-SERVICES - [0:0]",
        ":KUBE-NODEPORTS - [0:0]",
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate '
        "RELATED,ESTABLISHED -j ACCEPT",
        "COMMIT",
    ]
    return "\n".join(nat + rules + ["COMMIT"] + filter_) + "\n"


class Node:
    def __init__(self, node: Namespace, pod: Namespace, peer: Namespace) -> None:
        self.node, self.pod, self.peer = node, pod, peer

    def probe(self, cases: dict[str, tuple[str, int, str]] = PROBES) -> dict[str, str]:
        with serve(self.pod, ["0.0.0.0", "::"], tcp=sorted(NODEPORTS.values())) as listener:
            listener.wait_ready()
            probes = [Probe("tcp", dst, port, src, timeout=0.7, id=name) for name, (dst, port, src) in cases.items()]
            results = run_probes(self.peer, probes)
        return {r.probe.id: "open" if r.status == "connected" else "closed" for r in results}  # type: ignore[misc]


@pytest.fixture
def node() -> Iterator[Node]:
    with Namespace() as host, Namespace() as pod, Namespace() as peer:
        bridged_guest(host, pod, "cni0", ("10.244.1.1/24", "fd00:244:1::1/64"), (POD + "/24", POD6 + "/64"),
                      host_if="vethpod")
        connect(host, peer, host_addrs=[NODE, NODE6], peer_addrs=[PEER, PEER_ADMIN, PEER6, PEER6_ADMIN],
                host_if="eth0", peer_if="eth0")
        static_neighbours(host, "eth0", [PEER, PEER_ADMIN, PEER6, PEER6_ADMIN], mac_address(peer, "eth0"))
        static_neighbours(peer, "eth0", [NODE, NODE6], mac_address(host, "eth0"))
        peer.run(["ip", "route", "add", "10.96.0.0/12", "via", NODE])  # cluster IPs, through the node
        peer.run(["ip", "-6", "route", "add", "fd00:96::/64", "via", NODE6])
        sysctl(host, "net.ipv4.ip_forward", 1)
        sysctl(host, "net.ipv6.conf.all.forwarding", 1)
        for tool in ("iptables", "ip6tables"):
            host.run([tool, "-P", "FORWARD", "DROP"])
        yield Node(host, pod, peer)


def outputs(tmp_path: Path, target: str) -> tuple[dict[str, str], Explainer]:
    path = tmp_path / "node.yaml"
    text = POLICY.replace("name: node\n", "name: node\niptables: {mode: chains}\n") if target == "chains" else POLICY
    path.write_text(text, encoding="utf-8")
    return build(str(path), bundled()).files, Explainer.from_file(str(path), bundled())


def load(node: Node, target: str, files: dict[str, str]) -> None:
    if target == "nftables":
        load_nft(node.node, files["nftables/node.nft"])
    elif target == "chains":  # on the running node: kube-proxy's chains stay, and their jumps stay first
        for tool, name in (("iptables-restore", "rules.v4"), ("ip6tables-restore", "rules.v6")):
            node.node.run([tool, "--noflush"], input=files[f"iptables/{name}"])
    else:  # table mode replaces filter (and mangle): kube-proxy notices and syncs its rules again
        load_iptables(node.node, files["iptables/rules.v4"], files["iptables/rules.v6"])
        for tool in ("iptables", "ip6tables"):
            node.node.run([tool, "-P", "FORWARD", "DROP"])
        kube_proxy_syncs(node.node)
    # kube-proxy's next sync changes nothing, whatever fwgen loaded
    before = chains_named(node.node, "KUBE-")
    kube_proxy_syncs(node.node)
    assert chains_named(node.node, "KUBE-") == before


def expected(explainer: Explainer) -> dict[str, str]:
    return {name: "open" if explainer.verdict("in", "tcp", port, src, local=dst).action != "deny" else "closed"
            for name, (dst, port, src) in PROBES.items()}


@pytest.mark.parametrize("target", ["iptables", "chains", "nftables"])
def test_nodeports_follow_the_policy(node: Node, tmp_path: Path, target: str) -> None:
    kube_proxy_syncs(node.node)
    assert node.probe() == dict.fromkeys(PROBES, "open")  # the positive control: kube-proxy alone opens them all
    files, explainer = outputs(tmp_path, target)
    want = expected(explainer)
    assert want["30080 from peer"] == want["30083 from admin"] == "open"
    assert want["30081 from peer"] == want["30082 from peer"] == want["30083 from peer"] == "closed"
    load(node, target, files)
    if target != "nftables":  # KUBE-FORWARD is still first in filter FORWARD, before anything of fwgen's
        for tool in ("iptables", "ip6tables"):
            forward = node.node.run([tool, "-S", "FORWARD"]).stdout.splitlines()
            assert forward[0] == "-P FORWARD DROP" and all("-j KUBE-" in rule for rule in forward[1:]), forward
    assert node.probe() == want


def judging_in_filter_forward(text: str) -> str:
    """The mutation: fwgen's mangle section moved into the filter table, its judging
    chain jumped to from filter FORWARD (where DOCKER-USER's jump would be)."""
    mangle = text.split("*mangle\n")[1].split("COMMIT\n")[0]
    rest = text.replace(f"*mangle\n{mangle}COMMIT\n", "")
    head, filter_ = rest.split("*filter\n")
    chains = [line for line in mangle.splitlines() if line.startswith(":")]
    rules = [line for line in mangle.splitlines() if line.startswith("-A")]
    body, _, tail = filter_.rpartition("COMMIT\n")
    return head + "*filter\n" + "\n".join(chains) + "\n" + body + "\n".join(rules) + "\nCOMMIT\n" + tail


def test_a_judging_chain_in_filter_forward_is_caught(node: Node, tmp_path: Path) -> None:
    """Judged in filter FORWARD, after kube-proxy's KUBE-FORWARD has accepted the marked
    NodePort connection, the denied NodePorts stay open: the harness sees it."""
    kube_proxy_syncs(node.node)
    files, explainer = outputs(tmp_path, "chains")
    broken = {name: judging_in_filter_forward(text) for name, text in files.items() if name.startswith("iptables/")}
    assert "*mangle" not in broken["iptables/rules.v4"] and "-A FORWARD " in broken["iptables/rules.v4"]
    load(node, "chains", broken)
    fates = node.probe()
    assert fates["30081 from peer"] == fates["v6 30081 from peer"] == "open"
    assert fates != expected(explainer)


CLUSTER_PROBES = {"cluster IP": (CLUSTER_IP, 80, PEER), "v6 cluster IP": (CLUSTER_IP6, 80, PEER6)}


@pytest.mark.parametrize("target", ["chains", "nftables"])
def test_a_connection_to_a_cluster_ip_is_judged_too(node: Node, tmp_path: Path, target: str) -> None:
    """The caveat rollout-published.md states: enforce judges every DNATed forwarded
    connection, so one to a Service's cluster IP (not an address of the node) is judged
    by the inbound rules on the cluster IP's port too: the policy has no rule for 80, and
    the default inbound deny closes it, as fwgen explain says for port 80."""
    kube_proxy_syncs(node.node)
    assert node.probe(CLUSTER_PROBES) == dict.fromkeys(CLUSTER_PROBES, "open")  # the positive control
    files, explainer = outputs(tmp_path, target)
    assert {explainer.verdict("in", "tcp", 80, src).action for _, _, src in CLUSTER_PROBES.values()} == {"deny"}
    load(node, target, files)
    assert node.probe(CLUSTER_PROBES) == dict.fromkeys(CLUSTER_PROBES, "closed")
