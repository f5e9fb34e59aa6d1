"""iptables chains mode (``iptables: {mode: chains}``) on a simulated Docker host with a
fail2ban jail, both families: loading leaves every foreign chain, rule, policy and table
byte-identical in iptables-save (counters aside), fwgen's policy decides packets to the
host, loading twice leaves one jump each, and v1 then v2 leaves v2's chains."""

from __future__ import annotations

from pathlib import Path

from fwgen.build import build
from fwgen.registry import bundled
from fwgen.targets.iptables import MAX_CHAIN, chains_for, policy_prefix
from tests.kernel.hostsim import BANNED, docker_host_rules, foreign, fwgen, fwgen_lines, jumps
from tests.kernel.netns import Namespace, Probe, connect, listen, run_probes

ROOT = Path(__file__).resolve().parents[2]
EDGE = (ROOT / "policies" / "edge.yaml").read_text(encoding="utf-8")
ADMIN = {4: "192.0.2.10", 6: "2001:db8:a::10"}
OTHER = {4: "203.0.113.10", 6: "2001:db8:ff::10"}
HOST = {4: ("192.0.2.1", "203.0.113.1"), 6: ("2001:db8:a::1", "2001:db8:ff::1")}
TOOLS = {4: "iptables-restore", 6: "ip6tables-restore"}


def chains_policy(text: str = EDGE, name: str = "edge") -> str:
    return text.replace("name: edge\n", f"name: {name}\niptables: {{mode: chains}}\n", 1)


def write_build(tmp: Path, text: str, name: str = "edge") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    policy = tmp / f"{name}.yaml"
    policy.write_text(text, encoding="utf-8")
    result = build(str(policy), bundled(), ("iptables",))
    out = tmp / "out" / name
    for path, content in result.files.items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(content, encoding="utf-8")
    return out


def docker_host(ns: Namespace) -> dict[int, str]:
    for family in (4, 6):
        ns.run([TOOLS[family]], input=docker_host_rules(family))
    return {family: foreign(ns, family) for family in (4, 6)}


def probes() -> list[Probe]:
    out = []
    for family in (4, 6):
        near, far = HOST[family]
        out += [
            Probe("tcp", near, 22, ADMIN[family]),  # allowed: admin-ssh
            Probe("tcp", far, 22, OTHER[family]),  # denied: ssh from elsewhere
            Probe("tcp", far, 443, OTHER[family]),  # allowed: web
            Probe("tcp", far, 8081, OTHER[family]),  # denied: the default (8080 is Docker's, DNATed)
            Probe("tcp", near, 22, BANNED[family]),  # fail2ban's REJECT, before fwgen's accept
        ]
    for probe in out:
        probe.timeout = 0.7
    return out


def statuses(host: Namespace, peer: Namespace) -> list[str]:
    with listen(host, "tcp", ["0.0.0.0", "::"], [22, 443, 8081]):
        return [result.status for result in run_probes(peer, probes())]


OPEN = ["connected"] * 5  # the positive control: Docker's and fail2ban's rules without fwgen
ENFORCED = ["connected", "timeout", "connected", "timeout", "unreachable"] * 2


def host_pair(host: Namespace, peer: Namespace) -> None:
    connect(host, peer, host_addrs=[f"{a}/24" for a in HOST[4]] + [f"{a}/48" for a in HOST[6]],
            peer_addrs=[f"{ADMIN[4]}/24", f"{OTHER[4]}/24", f"{BANNED[4]}/24",
                        f"{ADMIN[6]}/48", f"{OTHER[6]}/48", f"{BANNED[6]}/48"])


def test_chains_mode_shares_a_docker_and_fail2ban_host(tmp_path: Path) -> None:
    out = write_build(tmp_path, chains_policy())
    with Namespace() as host, Namespace() as peer:
        host_pair(host, peer)
        before = docker_host(host)
        # the fail2ban ban holds with or without fwgen; every other probe passes without it
        assert statuses(host, peer) == (OPEN[:4] + ["unreachable"]) * 2

        # at boot: the documented first load, plain iptables-restore --noflush
        for family in (4, 6):
            host.run([TOOLS[family], "--noflush"], input=(out / "iptables" / f"rules.v{family}").read_text())
        for family in (4, 6):
            assert foreign(host, family) == before[family]
            assert jumps(host, family) == ["-A PREROUTING -j fwgen-edge-pre", "-A INPUT -j fwgen-edge-in",
                                           "-A OUTPUT -j fwgen-edge-out"]
        assert statuses(host, peer) == ENFORCED
        first = {family: fwgen_lines(host, family) for family in (4, 6)}

        # then fwgen apply, twice: still one jump each, the same chains, nothing foreign touched
        for _ in range(2):
            done = fwgen(host, "apply", str(out), "--timeout", "0", "--state-dir", str(tmp_path / "state"))
            assert done.returncode == 0, done.stderr
            for family in (4, 6):
                assert foreign(host, family) == before[family]
                assert fwgen_lines(host, family) == first[family]
        # fail2ban's jump stays first in INPUT, fwgen's is after every rule that was there
        input_rules = [line for line in host.run(["iptables-save", "-t", "filter"]).stdout.splitlines()
                       if line.startswith("-A INPUT")]
        assert input_rules == ["-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd", "-A INPUT -j fwgen-edge-in"]
        assert statuses(host, peer) == ENFORCED


def test_loading_twice_without_apply_duplicates_the_jump(tmp_path: Path) -> None:
    """What the harness catches: iptables-restore --noflush run twice adds a second jump
    (PLATFORMS.md); fwgen apply then puts it back to one."""
    out = write_build(tmp_path, chains_policy())
    with Namespace() as host:
        before = docker_host(host)
        for _ in range(2):
            host.run(["iptables-restore", "--noflush"], input=(out / "iptables" / "rules.v4").read_text())
        assert jumps(host, 4).count("-A INPUT -j fwgen-edge-in") == 2
        done = fwgen(host, "apply", str(out), "--timeout", "0", "--state-dir", str(tmp_path / "state"))
        assert done.returncode == 0, done.stderr
        assert jumps(host, 4) == ["-A PREROUTING -j fwgen-edge-pre", "-A INPUT -j fwgen-edge-in",
                                  "-A OUTPUT -j fwgen-edge-out"]
        assert foreign(host, 4) == before[4]


def test_v1_then_v2_leaves_v2s_chains(tmp_path: Path) -> None:
    v1 = write_build(tmp_path / "v1", chains_policy())
    # v2: no web rule (so the logged rules' chains are renumbered), no reverse-path check
    v2_text = chains_policy().replace("  - name: web\n    action: allow\n    protocol: tcp\n    ports: [http, https]\n",
                                      "", 1) + "antispoof: false\n"
    assert v2_text.count("name: web") == 0
    v2 = write_build(tmp_path / "v2", v2_text)
    with Namespace() as host, Namespace() as peer:
        host_pair(host, peer)
        before = docker_host(host)
        state = str(tmp_path / "state")
        assert fwgen(host, "apply", str(v1), "--timeout", "0", "--state-dir", state).returncode == 0
        assert statuses(host, peer) == ENFORCED
        done = fwgen(host, "apply", str(v2), "--timeout", "0", "--state-dir", state)
        assert done.returncode == 0, done.stderr
        for family in (4, 6):
            assert foreign(host, family) == before[family]
            assert jumps(host, family) == ["-A INPUT -j fwgen-edge-in", "-A OUTPUT -j fwgen-edge-out"]
            chains = sorted(line.split()[0][1:] for line in fwgen_lines(host, family) if line.startswith(":"))
            assert chains == ["fwgen-edge-in", "fwgen-edge-out", "fwgen-edge-rule-2", "fwgen-edge-rule-3"]
        # 443 is closed now: v2's rules decide
        assert statuses(host, peer) == ["connected", "timeout", "timeout", "timeout", "unreachable"] * 2

        # a renamed policy replaces the old one's chains and jumps entirely
        v3 = write_build(tmp_path / "v3", chains_policy(name="edge2"), name="edge2")
        assert fwgen(host, "apply", str(v3), "--timeout", "0", "--state-dir", state).returncode == 0
        for family in (4, 6):
            assert foreign(host, family) == before[family]
            assert jumps(host, family) == ["-A PREROUTING -j fwgen-edge2-pre", "-A INPUT -j fwgen-edge2-in",
                                           "-A OUTPUT -j fwgen-edge2-out"]
            assert not [line for line in fwgen_lines(host, family) if "fwgen-edge-" in line]


def test_chain_names_fit_and_differ_for_long_names() -> None:
    names = ["a", "edge", "abcdefghij", "abcdefghijk", "abcdefghijkl", "a" * 20, "a" * 19 + "b"]
    prefixes = [policy_prefix(name) for name in names]
    assert len(set(prefixes)) == len(names)
    assert all(len(prefix + "-rule-999999") <= MAX_CHAIN for prefix in prefixes)
    assert policy_prefix("edge") == "fwgen-edge"
    assert policy_prefix("a" * 20).startswith("fwgen-aaaa.")


def test_chains_mode_file_shape(tmp_path: Path) -> None:
    result = build(str(write_policy(tmp_path, chains_policy())), bundled(), ("iptables",))
    v4 = result.files["iptables/rules.v4"]
    assert "# fwgen iptables mode: chains\n" in v4
    assert ":INPUT" not in v4 and ":FORWARD" not in v4 and "FORWARD" not in v4.split("*filter")[1]
    assert chains_for(result.ruleset).input == "fwgen-edge-in"
    table = build(str(write_policy(tmp_path, EDGE)), bundled(), ("iptables",)).files["iptables/rules.v4"]
    assert "mode: chains" not in table and ":INPUT DROP [0:0]" in table


def write_policy(tmp: Path, text: str) -> Path:
    path = tmp / "edge.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def mangle(host: Namespace, family: int) -> list[str]:
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    return [line for line in host.run([tool, "-c", "-t", "mangle"]).stdout.splitlines() if not line.startswith("#")]


def test_published_ports_chains_share_the_mangle_table(tmp_path: Path) -> None:
    """published_ports: enforce in chains mode: fwgen's judging chain in mangle, one jump
    from mangle FORWARD after the rules there (a VPN's MSS clamp), handled by apply and
    remove like the INPUT/OUTPUT jumps: twice -> one jump; an unconfirmed v2 -> v1 back;
    counters carried over; remove -> mangle exactly as before."""
    out = write_build(tmp_path / "v1", chains_policy() + "published_ports: enforce\n")
    v2 = write_build(tmp_path / "v2", chains_policy().replace("ports: [http, https]", "ports: [http]", 1)
                     + "published_ports: enforce\n")
    state = str(tmp_path / "state")
    with Namespace() as host:
        before = docker_host(host)
        mangle_before = {family: mangle(host, family) for family in (4, 6)}
        assert any("TCPMSS" in line for line in mangle_before[4])  # the foreign rule is there to keep
        for _ in range(2):
            done = fwgen(host, "apply", str(out), "--timeout", "0", "--state-dir", state)
            assert done.returncode == 0, done.stderr
        first = {family: fwgen_lines(host, family) for family in (4, 6)}
        for family in (4, 6):
            assert foreign(host, family) == before[family]
            tool = "iptables" if family == 4 else "ip6tables"
            forward = host.run([tool, "-t", "mangle", "-S", "FORWARD"]).stdout.splitlines()
            assert forward[1:] == [
                "-A FORWARD -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu",
                "-A FORWARD -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -m comment --comment "
                '"published_ports: new connections DNATed to a local container" -j fwgen-edge-pub']
            assert "fwgen-edge-pub" not in host.run([tool, "-t", "filter", "-S"]).stdout
        # a counter of the judging chain survives a re-apply (iptables -R -c sets one)
        rule = host.run(["iptables", "-t", "mangle", "-S", "fwgen-edge-pub"]).stdout.splitlines()[1]
        assert rule.startswith("-A fwgen-edge-pub ") and "admin-ssh" in rule, rule
        host.run(["sh", "-c", f"iptables -t mangle -R fwgen-edge-pub 1 -c 7 700 {rule[len('-A fwgen-edge-pub '):]}"])
        assert fwgen(host, "apply", str(out), "--timeout", "0", "--state-dir", state).returncode == 0
        counted = [line for line in mangle(host, 4) if line.startswith("[7:700] -A fwgen-edge-pub ")]
        assert len(counted) == 1 and "admin-ssh" in counted[0], mangle(host, 4)
        # v2 unconfirmed: back to v1's chains and jumps, byte for byte
        done = fwgen(host, "apply", str(v2), "--timeout", "0.5", "--state-dir", state)
        assert done.returncode == 1 and done.stderr.endswith("rolled back to the previous rules\n"), done.stderr
        assert {family: fwgen_lines(host, family) for family in (4, 6)} == first
        # remove: mangle is exactly as it was before fwgen
        done = fwgen(host, "remove", str(out))
        assert done.returncode == 0, done.stderr
        assert {family: mangle(host, family) for family in (4, 6)} == mangle_before
        assert {family: foreign(host, family) for family in (4, 6)} == before
