"""Every bad input gets exactly one located line on stderr, exit status 1, and no
output file written or changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fwgen.cli import main

LINUX = "version: 1\ntargets: [iptables, nftables]\n"
# (file name, policy text, the exact line the user sees)
CASES = [
    ("unknown_key.yaml", "version: 1\nrules:\n  - action: allow\n    prots: [22]\n",
     "unknown_key.yaml:4:5: unknown key 'prots' in rule 1 (did you mean 'ports'?)"),
    ("top_key.yaml", "version: 1\ndefault:\n  inbound: deny\n",
     "top_key.yaml:2:1: unknown key 'default' in the policy (did you mean 'defaults'?)"),
    ("wrong_type.yaml", "version: 1\nrules:\n  - action: allow\n    log: yes\n",
     "wrong_type.yaml:4:10: log must be true or false, got a boolean 'yes'"),
    ("rules_type.yaml", "version: 1\nrules: allow\n",
     "rules_type.yaml:2:8: rules must be a list, got text 'allow'"),
    ("action_value.yaml", "version: 1\nrules:\n  - action: permit\n",
     "action_value.yaml:3:13: action must be one of allow | deny | monitor, got text 'permit'"),
    ("no_version.yaml", "rules: []\n",
     "no_version.yaml:1:1: missing 'version' (this fwgen reads 'version: 1')"),
    ("version2.yaml", "version: 2\n",
     "version2.yaml:1:10: unsupported version '2': this fwgen reads 'version: 1'"),
    ("version_text.yaml", "version: '1'\n",
     "version_text.yaml:1:10: version must be the number 1, not the text '1': write version: 1 without quotes"),
    ("version_float.yaml", "version: 1.0\n",
     "version_float.yaml:1:10: unsupported version '1.0': this fwgen reads 'version: 1'"),
    ("from_unbracketed.yaml", "version: 1\nrules:\n  - action: deny\n    from: 192.0.2.0/24, 10.0.0.0/8\n",
     "from_unbracketed.yaml:4:11: '192.0.2.0/24, 10.0.0.0/8' is not an IP address or CIDR network; "
     "to give several, write a YAML list: [192.0.2.0/24, 10.0.0.0/8]"),
    ("ports_unbracketed.yaml", "version: 1\nrules:\n  - action: deny\n    ports: ssh, 8080\n",
     "ports_unbracketed.yaml:4:12: 'ssh, 8080' is not a port number, \"N-M\" range or service name; "
     "to give several, write a YAML list: [ssh, 8080]"),
    ("unknown_service.yaml", "version: 1\nrules:\n  - action: monitor\n    ports: [mpshrv]\n",
     "unknown_service.yaml:4:13: unknown service 'mpshrv' (did you mean 'mpshrsv'?)"),
    ("port_high.yaml", "version: 1\nrules:\n  - action: deny\n    ports: [70000]\n",
     "port_high.yaml:4:13: port 70000 is out of range 0-65535"),
    ("port_reversed.yaml", "version: 1\nrules:\n  - action: deny\n    ports: [\"20-10\"]\n",
     "port_reversed.yaml:4:13: port range 20-10 is reversed: write 10-20"),
    ("port_negative.yaml", "version: 1\nrules:\n  - action: deny\n    ports: [-1]\n",
     "port_negative.yaml:4:13: port -1 is out of range 0-65535"),
    ("port_sexagesimal.yaml", "version: 1\nrules:\n  - action: deny\n    ports: [20:21]\n",
     "port_sexagesimal.yaml:4:13: '20:21' is not a port: YAML 1.1 reads it as the number 1221; "
     "write a range as \"N-M\" in quotes"),
    ("port_octal.yaml", "version: 1\nrules:\n  - action: deny\n    ports: [010]\n",
     "port_octal.yaml:4:13: port '010' has a leading zero (YAML 1.1 reads it as octal); write 10"),
    ("port_hex.yaml", "version: 1\nrules:\n  - action: deny\n    ports: [0x50]\n",
     "port_hex.yaml:4:13: '0x50' is not a decimal port (YAML 1.1 reads it as 80)"),
    ("port_float.yaml", "version: 1\nrules:\n  - action: deny\n    ports: [22.5]\n",
     "port_float.yaml:4:13: '22.5' is not a port number, \"N-M\" range or service name"),
    ("cidr33.yaml", "version: 1\nrules:\n  - action: deny\n    from: [10.0.0.0/33]\n",
     "cidr33.yaml:4:12: '10.0.0.0/33' is not an IP address or CIDR network"),
    ("host_bits.yaml", "version: 1\nrules:\n  - action: deny\n    from: [192.0.2.7/24]\n",
     "host_bits.yaml:4:12: '192.0.2.7/24' has host bits set: write the network 192.0.2.0/24 "
     "(or the host address alone)"),
    ("mapped.yaml", "version: 1\nrules:\n  - action: deny\n    from: [\"::ffff:0:0/96\"]\n",
     "mapped.yaml:4:12: '::ffff:0:0/96' is IPv4-mapped IPv6 (::ffff:0:0/96): write the IPv4 address instead"),
    ("from_out.yaml", "version: 1\nrules:\n  - action: deny\n    direction: out\n    from: [192.0.2.0/24]\n",
     "from_out.yaml:5:5: 'from' does not apply to an outbound rule: its remote peer is given by 'to'"),
    ("to_in.yaml", "version: 1\nrules:\n  - action: deny\n    to: [192.0.2.0/24]\n",
     "to_in.yaml:4:5: 'to' does not apply to an inbound rule: its remote peer is given by 'from'"),
    ("empty_from.yaml", "version: 1\nrules:\n  - action: deny\n    from: []\n",
     "empty_from.yaml:4:11: from is an empty list; omit the key instead"),
    ("dup_name.yaml", "version: 1\nrules:\n  - name: a\n    action: deny\n  - name: a\n    action: allow\n",
     "dup_name.yaml:5:11: duplicate rule name 'a' (first at line 3)"),
    ("reserved_name.yaml", "version: 1\nrules:\n  - name: rule-2\n    action: deny\n",
     "reserved_name.yaml:3:11: rule name 'rule-2' is reserved: rule-N names unnamed rules"),
    ("dup_key.yaml", "version: 1\nrules:\n  - action: deny\n    action: allow\n",
     "dup_key.yaml:4:5: duplicate key 'action' in rule 1 (first at line 3)"),
    ("syntax.yaml", "version: 1\nrules: [\n",
     "syntax.yaml:3:1: YAML syntax error: did not find expected node content"),
    ("tab.yaml", "version: 1\nrules:\n\t- action: deny\n",
     "tab.yaml:3:1: tab character: YAML indents with spaces; replace the tab"),
    ("ports_and_range.yaml", "version: 1\nrules:\n  - action: deny\n    ports: [22]\n    range: registered\n",
     "ports_and_range.yaml:5:5: rule 'rule-1' has both 'ports' and 'range': use one"),
    ("suffix_contradicts.yaml", "version: 1\nrules:\n  - action: deny\n    protocol: tcp\n    ports: [mpshrsv/udp]\n",
     "suffix_contradicts.yaml:5:13: 'mpshrsv/udp' contradicts the rule's protocol 'tcp'"),
    ("no_tcp_udp.yaml", "version: 1\nrules:\n  - action: deny\n    ports: [imap2]\n",
     "no_tcp_udp.yaml:4:13: service 'imap2' has no tcp or udp port in the IANA registry; "
     "write the port number instead"),
    ("wrong_protocol.yaml",
     "version: 1\nrules:\n  - action: deny\n    ports: [raid-am/tcp, ssh, afs3-vlserver/udp, imap/udp]\n",
     "wrong_protocol.yaml:4:50: service 'imap' is not registered for udp (it is 143/tcp); "
     "to match the number anyway, write 143/udp"),
    ("Bad Name.yaml", "version: 1\n",
     "Bad Name.yaml:1:1: the file name 'Bad Name' is not a valid policy name ([a-z0-9][a-z0-9_-]{0,19}); "
     "add a 'name:' key"),
    ("bad_name_key.yaml", "version: 1\nname: Edge\n",
     "bad_name_key.yaml:2:7: policy name 'Edge' is not valid: it must match [a-z0-9][a-z0-9_-]{0,19}"),
    ("nft_keyword.yaml", "version: 1\nname: accept\n",
     "nft_keyword.yaml:2:7: policy name 'accept' is an nftables keyword and cannot name a table"),
    ("nft_keyword_esp.yaml", "version: 1\nname: esp\n",
     "nft_keyword_esp.yaml:2:7: policy name 'esp' is an nftables keyword and cannot name a table"),
    ("firewalld.yaml", "version: 1\n",
     "firewalld.yaml:1:1: policy name 'firewalld' (from the file name) is the name of a table of firewalld: "
     "fwgen's nftables file replaces table inet firewalld, so loading it could delete that table; add a 'name:' key"),
    ("other_table.yaml", "version: 1\nname: filter\n",
     "other_table.yaml:2:7: policy name 'filter' is the name of a table of Debian's stock /etc/nftables.conf "
     "(table inet filter) and iptables-nft: fwgen's nftables file replaces table inet filter, so loading it could "
     "delete that table; choose another name"),
    ("bad_prefix.yaml", "version: 1\nmonitor:\n  log_prefix: \"x y\"\n",
     "bad_prefix.yaml:3:15: monitor.log_prefix 'x y' is not valid: it must match [A-Za-z0-9_.-]{1,16}"),
    ("bad_rate.yaml", "version: 1\nmonitor:\n  rate: 10/fortnight\n",
     "bad_rate.yaml:3:9: monitor.rate '10/fortnight' is not valid: write N/second, N/minute or N/hour"),
    ("no_action.yaml", "version: 1\nrules:\n  - ports: [22]\n",
     "no_action.yaml:3:5: rule 'rule-1' has no 'action' (allow | deny | monitor)"),
    # protocols, ICMP types, local addresses, interfaces, profiles, targets
    ("proto_unknown.yaml", "version: 1\nrules:\n  - action: allow\n    protocol: espp\n",
     "proto_unknown.yaml:4:15: unknown protocol 'espp' (did you mean 'esp'?)"),
    ("proto_number.yaml", "version: 1\nrules:\n  - action: allow\n    protocol: 256\n",
     "proto_number.yaml:4:15: protocol number 256 is not 0-255 (written without leading zeros)"),
    ("proto_zero.yaml", "version: 1\nrules:\n  - action: deny\n    protocol: 0\n",
     "proto_zero.yaml:4:15: protocol '0' is 0, HOPOPT: IPv6's hop-by-hop options header, which no packet has as "
     "its protocol (and iptables reads -p 0 as every protocol); a rule cannot match it"),
    ("proto_hopopt.yaml", "version: 1\nrules:\n  - action: allow\n    protocol: HOPOPT\n",
     "proto_hopopt.yaml:4:15: protocol 'HOPOPT' is 0, HOPOPT: IPv6's hop-by-hop options header, which no packet "
     "has as its protocol (and iptables reads -p 0 as every protocol); a rule cannot match it"),
    ("proto_ports.yaml", "version: 1\nrules:\n  - action: allow\n    protocol: esp\n    ports: [22]\n",
     "proto_ports.yaml:5:13: ports apply to tcp and udp only; this rule's protocol is esp"),
    ("all_ports.yaml", "version: 1\nrules:\n  - action: allow\n    protocol: all\n    ports: [22]\n",
     "all_ports.yaml:5:13: ports apply to tcp and udp only; this rule's protocol is all"),
    ("icmp_ports.yaml", "version: 1\nrules:\n  - action: allow\n    protocol: icmp\n    range: registered\n",
     "icmp_ports.yaml:5:12: a port range applies to tcp and udp only; this rule's protocol is icmp"),
    ("icmp_alone.yaml", "version: 1\nrules:\n  - action: allow\n    icmp: [echo-request]\n",
     "icmp_alone.yaml:4:11: icmp applies to protocol icmp or icmpv6 only; add protocol: icmp (or icmpv6)"),
    ("icmp_tcp.yaml", "version: 1\nrules:\n  - action: allow\n    protocol: tcp\n    icmp: [8]\n",
     "icmp_tcp.yaml:5:11: icmp applies to protocol icmp or icmpv6 only; this rule's protocol is tcp"),
    ("icmp_typo.yaml", "version: 1\nrules:\n  - action: allow\n    protocol: icmp\n    icmp: [echo-requst]\n",
     "icmp_typo.yaml:5:12: 'echo-requst' is not an ICMP type: write a number 0-255, TYPE/CODE, or one of "
     "address-mask-reply, address-mask-request, destination-unreachable, echo-reply, echo-request, "
     "parameter-problem, redirect, router-advertisement, router-solicitation, source-quench, time-exceeded, "
     "timestamp-reply, timestamp-request (did you mean 'echo-request'?)"),
    ("icmp_code.yaml", "version: 1\nrules:\n  - action: allow\n    protocol: icmpv6\n    icmp: [1/256]\n",
     "icmp_code.yaml:5:12: '1/256' is not an ICMPv6 type: write a number 0-255, TYPE/CODE, or one of "
     "destination-unreachable, echo-reply, echo-request, packet-too-big, parameter-problem, time-exceeded"),
    ("icmp_tool_name.yaml",
     "version: 1\nrules:\n  - action: allow\n    protocol: icmpv6\n    icmp: [echo-request, neighbour-solicitation]\n",
     "icmp_tool_name.yaml:5:26: 'neighbour-solicitation' is what ip6tables calls ICMPv6 type 135; write 135 "
     "(fwgen reads the names nft and iptables share)"),
    ("icmp_alias.yaml", "version: 1\nrules:\n  - action: allow\n    protocol: icmp\n    icmp: [ping]\n",
     "icmp_alias.yaml:5:12: 'ping' is what iptables calls ICMP type 8; write echo-request "
     "(fwgen reads the names nft and iptables share)"),
    ("icmp_other_family.yaml",
     "version: 1\nrules:\n  - action: allow\n    protocol: icmp\n    icmp: [packet-too-big]\n",
     "icmp_other_family.yaml:5:12: 'packet-too-big' is an ICMPv6 (IPv6) type, but this rule's protocol is icmp; "
     "write protocol: icmpv6 (in a rule of its own)"),
    ("icmp_v6_from.yaml",
     "version: 1\nrules:\n  - action: allow\n    protocol: icmp\n    from: [192.0.2.0/24, \"2001:db8::/32\"]\n",
     "icmp_v6_from.yaml:5:11: protocol icmp is IPv4 only, but from lists IPv6 addresses (2001:db8::/32); "
     "write them in a rule of their own"),
    ("icmpv6_v4_local.yaml",
     "version: 1\nrules:\n  - action: allow\n    protocol: icmpv6\n    local: [10.9.0.2]\n",
     "icmpv6_v4_local.yaml:5:12: protocol icmpv6 is IPv6 only, but local lists IPv4 addresses (10.9.0.2/32); "
     "write them in a rule of their own"),
    ("local_families.yaml",
     "version: 1\nrules:\n  - action: allow\n    from: [192.0.2.0/24]\n    local: [\"2001:db8::1\"]\n",
     "local_families.yaml:5:12: rule 'rule-1' can never match: its from and local addresses share no address "
     "family"),
    ("local_empty.yaml", "version: 1\nrules:\n  - action: allow\n    local: []\n",
     "local_empty.yaml:4:12: local is an empty list; omit the key instead"),
    ("local_bits.yaml", "version: 1\nrules:\n  - action: allow\n    local: [10.9.0.2/24]\n",
     "local_bits.yaml:4:13: '10.9.0.2/24' has host bits set: write the network 10.9.0.0/24 "
     "(or the host address alone)"),
    ("iface_space.yaml", LINUX + "rules:\n  - action: allow\n    interface: \"eth 0\"\n",
     "iface_space.yaml:5:16: 'eth 0' is not an interface name: at most 15 letters, digits, '_', '.' or '-' "
     "(not starting with '.' or '-'), with an optional trailing '*' for a prefix"),
    ("iface_wildcard.yaml", LINUX + "rules:\n  - action: allow\n    interface: \"e*0\"\n",
     "iface_wildcard.yaml:5:16: 'e*0' is not an interface name: at most 15 letters, digits, '_', '.' or '-' "
     "(not starting with '.' or '-'), with an optional trailing '*' for a prefix"),
    ("iface_long.yaml", LINUX + "rules:\n  - action: allow\n    interface: abcdefghijklmnop\n",
     "iface_long.yaml:5:16: 'abcdefghijklmnop' is not an interface name: at most 15 letters, digits, '_', '.' or "
     "'-' (not starting with '.' or '-'), with an optional trailing '*' for a prefix"),
    ("iface_windows.yaml", "version: 1\nrules:\n  - name: vpn\n    action: allow\n    interface: wg0\n",
     "iface_windows.yaml:5:16: rule 'vpn' uses interface, which windows cannot express (netsh has interface "
     "types only (interfacetype=lan|wireless|ras), not names); say which targets this policy is for: "
     "targets: [iptables, nftables]"),
    ("profiles_linux.yaml", "version: 1\nrules:\n  - action: allow\n    profiles: [domain]\n",
     "profiles_linux.yaml:4:15: rule 'rule-1' uses profiles, which iptables cannot express (profiles are Windows "
     "Firewall's; Linux has none); say which targets this policy is for: targets: [windows]"),
    ("profiles_typo.yaml", "version: 1\ntargets: [windows]\nrules:\n  - action: allow\n    profiles: [domian]\n",
     "profiles_typo.yaml:5:16: a profile must be one of domain | private | public, got text 'domian'"),
    ("targets_typo.yaml", "version: 1\ntargets: [iptable]\n",
     "targets_typo.yaml:2:11: a target must be one of iptables | nftables | windows, got text 'iptable'"),
    ("targets_twice.yaml", "version: 1\ntargets: [nftables, nftables]\n",
     "targets_twice.yaml:2:21: target 'nftables' is listed twice (first at line 2)"),
    ("published_typo.yaml", "version: 1\npublished_ports: enforced\n",
     "published_typo.yaml:2:18: published_ports must be one of ignore | enforce, got text 'enforced'"),
    ("published_bool.yaml", "version: 1\npublished_ports: true\n",
     "published_bool.yaml:2:18: published_ports must be one of ignore | enforce, got a boolean 'true'"),
    ("targets_empty.yaml", "version: 1\ntargets: []\n",
     "targets_empty.yaml:2:10: targets is an empty list; omit the key instead"),
]


@pytest.mark.parametrize("filename,text,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_located_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        filename: str, text: str, expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path(filename).write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["build", filename, "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert result.stderr == expected + "\n"
    assert result.stdout == ""
    assert not out.exists()


def test_error_leaves_existing_outputs_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    policy = Path("edge.yaml")
    policy.write_text("version: 1\nrules:\n  - action: allow\n    ports: [ssh]\n", encoding="utf-8")
    assert CliRunner().invoke(main, ["build", "edge.yaml"]).exit_code == 0
    before = {p: p.read_bytes() for p in Path("out").rglob("*") if p.is_file()}
    assert len(before) == 5
    policy.write_text("version: 1\nrules:\n  - action: allow\n    ports: [ssh, mpshrv]\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["build", "edge.yaml"])
    assert result.exit_code == 1
    after = {p: p.read_bytes() for p in Path("out").rglob("*") if p.is_file()}
    assert after == before


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nrules:\n  - action: deny\n    ports: [20:21]\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "fwgen", "build", str(policy), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{policy}:4:13: ")


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build"])
    assert result.exit_code == 2
    result = CliRunner().invoke(main, ["build", "x.yaml", "-t", "pf"])
    assert result.exit_code == 2


def test_missing_policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["build", "nope.yaml"])
    assert result.exit_code == 1
    assert result.stderr == "nope.yaml: cannot read policy: No such file or directory\n"


# ---------------------------------------------------------------------- OS errors on output

POLICY = "version: 1\nrules:\n  - action: allow\n    ports: [ssh]\n"


def _build(tmp_path: Path, out: str) -> object:
    (tmp_path / "edge.yaml").write_text(POLICY, encoding="utf-8")
    return CliRunner().invoke(main, ["build", "edge.yaml", "-o", out, "--flat"])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_output_under_a_regular_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("mine\n", encoding="utf-8")
    result = _build(tmp_path, "afile")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert result.stderr == "fwgen: cannot write afile/iptables/rules.v4: Not a directory\n"  # type: ignore[attr-defined]
    assert result.stdout == ""  # type: ignore[attr-defined]
    assert Path("afile").read_text(encoding="utf-8") == "mine\n"


def test_a_failing_file_replaces_nothing_of_the_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fourth file cannot be written: the three before it keep their old bytes, and
    directories made for the new files are removed again."""
    monkeypatch.chdir(tmp_path)
    assert _build(tmp_path, "out").exit_code == 0  # type: ignore[attr-defined]
    (tmp_path / "out" / "windows" / "edge.cmd").unlink()
    (tmp_path / "out" / "windows" / "edge.cmd").mkdir()
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            path.write_bytes(b"old " + path.name.encode())
    before = _files(tmp_path / "out")
    result = _build(tmp_path, "out")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert result.stderr == "fwgen: cannot write out/windows/edge.cmd: Is a directory\n"  # type: ignore[attr-defined]
    assert _files(tmp_path / "out") == before
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == sorted(
        ["iptables", "nftables", "windows", "rules.v4", "rules.v6", "edge.nft", "edge.cmd", "edge-remove.cmd"])

    fresh = tmp_path / "fresh"
    (fresh / "windows").mkdir(parents=True)
    (fresh / "windows" / "edge.cmd").mkdir()
    result = _build(tmp_path, "fresh")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*")) == ["windows", "windows/edge.cmd"]


def test_a_failing_rename_puts_back_the_files_already_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from fwgen import build as building

    monkeypatch.chdir(tmp_path)
    assert _build(tmp_path, "out").exit_code == 0  # type: ignore[attr-defined]
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            path.write_bytes(b"old " + path.name.encode())
    before = _files(tmp_path / "out")
    renames: list[str] = []
    real_replace = os.replace

    def replace(src: str, dst: object) -> None:
        if str(dst).endswith(".cmd") and not str(src).endswith(".old"):
            raise OSError(5, "Input/output error")
        renames.append(str(dst))
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(building.os, "replace", replace)
    result = _build(tmp_path, "out")
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert result.stderr == "fwgen: cannot write out/windows/edge.cmd: Input/output error\n"  # type: ignore[attr-defined]
    assert len(renames) == 6  # three files replaced, then put back
    assert _files(tmp_path / "out") == before
    assert not [p for p in (tmp_path / "out").rglob(".*")]  # no temporary file or kept link left


def test_output_error_in_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY, encoding="utf-8")
    (tmp_path / "afile").write_text("", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "fwgen", "build", "p.yaml", "-o", "afile/x", "--flat"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stderr == "fwgen: cannot write afile/x/iptables/rules.v4: Not a directory\n"


@pytest.mark.parametrize("registry,reason", [
    ("nowhere/registry.csv", "No such file or directory"),
    ("afile/registry.csv", "Not a directory"),
])
def test_unreadable_registry_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         registry: str, reason: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("", encoding="utf-8")
    Path("edge.yaml").write_text(POLICY, encoding="utf-8")
    for argv in (["build", "edge.yaml"], ["ports", "22"], ["lint", "edge.yaml"]):
        result = CliRunner().invoke(main, [*argv, "--registry", registry])
        assert result.exit_code == 1, argv
        assert result.stderr == f"fwgen: cannot read registry {registry}: {reason}\n"
    assert not Path("out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["apply"], "give OUT to apply, or --confirm"),
    (["apply", "out/edge", "--confirm"], "give OUT to apply, or --confirm"),
    (["apply", "--confirm", "-t", "nftables"], "--confirm takes no -t"),
    (["apply", "out/edge", "--timeout", "-1"], "--timeout"),
    (["remove"], "give OUT or --name NAME"),
    (["remove", "out/edge", "--name", "edge"], "give OUT or --name NAME"),
    (["remove", "--name", "edge"], "--name needs -t"),
])
def test_apply_and_remove_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_apply_refuses_a_directory_that_is_not_a_build(tmp_path: Path) -> None:
    (tmp_path / "both" / "nftables").mkdir(parents=True)
    (tmp_path / "both" / "iptables").mkdir()
    (tmp_path / "none").mkdir()
    runner = CliRunner()
    for out, expected in ((tmp_path / "none", "holds neither nftables/ nor iptables/"),
                          (tmp_path / "both", "holds both nftables/ and iptables/: name the one to load with -t"),
                          (tmp_path / "missing", "is not a directory")):
        result = runner.invoke(main, ["apply", str(out), "--state-dir", str(tmp_path / "s")])
        assert result.exit_code == 1 and expected in result.output and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "s").exists()  # refused before anything was touched
