"""fwgen lint: every finding on real policies (the examples, copied and modified), with
its exact line; acknowledgements; exit codes; fwgen build refusing error findings; the
docs generated from the checks; and the exact rule model against the reference
interpreter (fwgen explain)."""

from __future__ import annotations

import copy
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from fwgen import ir
from fwgen import lint as lint_module
from fwgen.build import build
from fwgen.cli import main
from fwgen.errors import PolicyError
from fwgen.explain import Explainer
from fwgen.finding_ids import IDS
from fwgen.ir import Protocol
from fwgen.lint import Context, doc_examples, docs_markdown, finding_ids, lint_file
from fwgen.policy import load_policy
from fwgen.registry import bundled
from fwgen.resolve import compile_policy

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"
EXAMPLES = sorted(POLICIES.glob("*.yaml"))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # findings then start with the short file name


def example(name: str, edit: Callable[[str], str] | None = None, as_name: str | None = None) -> str:
    """Copy policies/NAME.yaml into the current (temporary) directory, edited."""
    text = (POLICIES / f"{name}.yaml").read_text(encoding="utf-8")
    if edit is not None:
        text = edit(text)
    path = Path(as_name or f"{name}.yaml")
    path.write_text(text, encoding="utf-8")
    return str(path)


def replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert text.count(old) == 1, old
        return text.replace(old, new)

    return edit


def append(extra: str) -> Callable[[str], str]:
    return lambda text: text + extra


def at(path: str, needle: str, part: str = "") -> str:
    """``PATH:LINE:COL`` of the first line holding ``needle``; the column of ``part``
    inside it when given (``at(p, "inbound: deny", "deny")``: the value)."""
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        col = line.find(needle)
        if col >= 0:
            return f"{path}:{number}:{col + needle.find(part) + 1}"
    raise AssertionError(f"{needle!r} not in {path}")


def line_of(path: str, needle: str) -> int:
    return int(at(path, needle).split(":")[1])


def run(*args: str) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout.splitlines(), result.stderr


LINUX = ("iptables", "nftables")
ALL = ("iptables", "nftables", "windows")


def findings(path: str, targets: tuple[str, ...] = ALL) -> list[str]:
    return [str(f) for f in lint_file(path, bundled(), targets)]


def with_id(path: str, finding_id: str, targets: tuple[str, ...] = ALL) -> list[str]:
    return [f for f in findings(path, targets) if f.endswith(f"[{finding_id}]")]


DHCP4 = ("warning: inbound udp 68 (bootpc) is denied from every IPv4 address, by the default inbound deny: "
         "if this host uses DHCP, replies to its broadcasts are not established/related; "
         "allow udp 68 from your DHCP servers [dhcpv4-client]")
DHCP6 = ("warning: inbound udp 546 (dhcpv6-client) is denied from every link-local address, by the default "
         "inbound deny: DHCPv6 replies answer a multicast Solicit and are not established/related; "
         "if this host uses DHCPv6, allow udp 546 from fe80::/10 [dhcpv6-replies]")


# ---------------------------------------------------------------------- the examples


def test_examples_exact_findings() -> None:
    edge = example("edge")
    inbound = at(edge, "inbound: deny", "deny")  # defaults.inbound's value
    assert findings(edge) == [f"{inbound}: {DHCP4}", f"{inbound}: {DHCP6}"]

    locked = example("locked-down")
    inbound = at(locked, "inbound: deny", "deny")
    outbound = at(locked, "outbound: deny", "deny")
    assert findings(locked) == [
        f"{inbound}: {DHCP4}", f"{inbound}: {DHCP6}",
        f"{outbound}: warning: outbound udp 67 (bootps) is denied to every IPv4 address, by the default outbound "
        "deny: if this host uses DHCP, its lease renewals (unicast to the server) fail; allow udp 67 to your DHCP "
        "servers [dhcpv4-renew]",
        f"{outbound}: warning: outbound udp 547 (dhcpv6-server) is denied to ff02::1:2, by the default outbound "
        "deny: a DHCPv6 client sends its Solicit and Request there; if this host uses DHCPv6, allow udp 547 to "
        "ff02::1:2 [dhcpv6-solicit]",
    ]

    dormant = example("dormant-ports")
    watch = line_of(dormant, "- name: watch-dormant")
    lab_ports = at(dormant, '"8000-8100/tcp"')
    assert findings(dormant) == [
        f"{lab_ports}: warning: rule 'lab-mgmt' allows 8001/tcp (vcom-tunnel: "
        '"Known Unauthorized Use on port 8001"), 8010/tcp ("yes"), where the IANA registry reports '
        "unauthorized use [unauthorized-port]",
        f"{at(dormant, 'name: close-dormant')}: warning: rule 'close-dormant' is partly overridden: "
        f"1261/tcp+udp, 1274/udp, 2007/udp, 2013/tcp are decided first by 'watch-dormant' (line {watch}, "
        "monitor), so this rule never applies to them [partly-overridden]",
    ]


@pytest.mark.parametrize("policy", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_build_and_lint_without_errors(policy: Path) -> None:
    path = example(policy.stem)
    assert build(path, bundled(), lint_errors=True).files
    code, out, err = run("lint", path)
    assert (code, err) == (0, "") and out
    code, _, _ = run("lint", "--strict", path)
    assert code == 1  # they do have warnings


# ---------------------------------------------------------------------- rule analysis


def test_shadowed_by_several_rules() -> None:
    # ssh from the admin /24 is admin-ssh's, http and https are web's: together they
    # cover all of it, though neither does alone
    path = example("edge", append(
        "  - name: late\n"
        "    action: deny\n"
        "    protocol: tcp\n"
        "    ports: [ssh, http, https]\n"
        "    from: [192.0.2.0/24]\n"
    ))
    ssh, web = line_of(path, "name: admin-ssh"), line_of(path, "name: web")
    assert with_id(path, "shadowed") == [
        f"{at(path, 'name: late')}: warning: rule 'late' can never match: "
        f"shadowed by 'admin-ssh' (line {ssh}), 'web' (line {web}) [shadowed]"
    ]
    assert with_id(path, "redundant") == with_id(path, "partly-overridden") == []


def test_not_shadowed_when_a_corner_is_left() -> None:
    # 192.0.3.0/24 still reaches the rule on ssh: not shadowed; http and https never do
    path = example("edge", append(
        "  - name: late\n"
        "    action: deny\n"
        "    protocol: tcp\n"
        "    ports: [ssh, http, https]\n"
        "    from: [192.0.2.0/23]\n"
    ))
    web = line_of(path, "name: web")
    assert with_id(path, "shadowed") == []
    assert with_id(path, "partly-overridden") == [
        f"{at(path, 'name: late')}: warning: rule 'late' is partly overridden: 80/tcp, 443/tcp are decided "
        f"first by 'web' (line {web}, allow), so this rule never applies to them [partly-overridden]"
    ]


def test_shadowed_by_other_name_for_the_same_port() -> None:
    path = example("edge", append("  - name: www-again\n    action: allow\n    protocol: tcp\n    ports: [www]\n"))
    web = line_of(path, "name: web")
    assert with_id(path, "shadowed") == [
        f"{at(path, 'name: www-again')}: warning: rule 'www-again' can never match: "
        f"shadowed by 'web' (line {web}) [shadowed]"
    ]


def test_redundant_before_a_wider_rule_with_the_same_action() -> None:
    path = example("edge", replace("  - name: web\n", (
        "  - name: partners-web\n"
        "    action: allow\n"
        "    protocol: tcp\n"
        "    ports: [https]\n"
        "    from: [198.51.100.0/24]\n"
        "  - name: web\n"
    )))
    web = line_of(path, "name: web")
    assert with_id(path, "redundant") == [
        f"{at(path, 'name: partners-web')}: warning: rule 'partners-web' is redundant: without it the same "
        f"traffic gets the same verdict from 'web' (line {web}) [redundant]"
    ]


def test_redundant_repeating_the_default() -> None:
    path = example("locked-down", append(
        "  - name: no-telnet-out\n    action: deny\n    direction: out\n    ports: [telnet]\n"
    ))
    expected = [
        f"{at(path, 'name: no-telnet-out')}: warning: rule 'no-telnet-out' is redundant: without it the same "
        "traffic gets the same verdict from the default outbound deny [redundant]"
    ]
    assert with_id(path, "redundant", LINUX) == expected
    # built for Windows too, the explicit block beats other software's allow rules: keep it
    assert with_id(path, "redundant", ALL) == with_id(path, "redundant", ("windows",)) == []
    exclusive = example("locked-down", append(
        "  - name: no-telnet-out\n    action: deny\n    direction: out\n    ports: [telnet]\n"
        "windows:\n  exclusive: true\n"
    ))
    assert with_id(exclusive, "redundant", ALL) == expected


def test_lockout_follows_the_targets() -> None:
    path = example("edge", replace("ports: [ssh]", "ports: [telnet]"))
    ssh = with_id(path, "ssh-lockout", LINUX)
    assert len(ssh) == 1 and with_id(path, "ssh-lockout", ALL) == ssh
    assert with_id(path, "ssh-lockout", ("windows",)) == []
    rdp = with_id(path, "rdp-lockout", ("windows",))
    assert rdp == [
        f"{at(path, 'inbound: deny', 'deny')}: error: inbound tcp 3389 (RDP), 5985 (WinRM) and 5986 (WinRM over "
        "HTTPS) are denied from every address, by the default inbound deny: applying this policy on Windows locks "
        "out remote administration; allow RDP or WinRM from your admin networks, or acknowledge rdp-lockout "
        "[rdp-lockout]"
    ]
    assert with_id(path, "rdp-lockout", ALL) == with_id(path, "rdp-lockout", LINUX) == []
    winrm = example("edge", append("  - name: winrm\n    action: allow\n    ports: [5986/tcp]\n"
                                   "    from: [10.0.0.0/8]\n"), as_name="winrm.yaml")
    assert with_id(winrm, "rdp-lockout", ("windows",)) == []
    # fwgen build asks for the acknowledgement that fits the targets
    code, out, err = run("build", path, "-t", "windows", "--stdout")
    assert code == 1 and err.endswith("[rdp-lockout]\n")
    code, out, err = run("build", path, "-t", "nftables", "--stdout")
    assert code == 1 and err.endswith("[ssh-lockout]\n")
    locked = example("edge", replace("version: 1", "version: 1\nacknowledge: [rdp-lockout]"), as_name="ack.yaml")
    assert run("build", locked, "-t", "windows", "--stdout")[0] == 0


def test_logging_deny_is_not_redundant_with_the_default() -> None:
    # no-x11 only repeats inbound: deny, but it logs: removing it changes what is logged
    assert with_id(example("edge"), "redundant") == []


# ---------------------------------------------------------------------- registry notes


def test_unauthorized_port_on_monitor_rule_at_its_entry() -> None:
    path = example("edge", replace("ports: [mpshrsv, t1distproc]", "ports: [mpshrsv, t1distproc, x11/tcp]"))
    assert with_id(path, "unauthorized-port") == [
        f"{at(path, 'x11/tcp')}: warning: rule 'dormant-watch' monitors (accepts) 6003/tcp "
        '(x11: "Known Unauthorized Use on port 6003"), where the IANA registry reports unauthorized use '
        "[unauthorized-port]"
    ]


def test_unauthorized_port_not_reported_for_deny_or_unreached_ports() -> None:
    # no-x11 denies 6003; a later allow of x11 never gets 6003 (shadowed, reported as such)
    path = example("edge", append("  - name: x11-late\n    action: allow\n    ports: [x11]\n"))
    assert with_id(path, "unauthorized-port") == []
    assert len(with_id(path, "shadowed")) == 1


# ---------------------------------------------------------------------- lockout

WITHOUT_ADMIN_SSH = replace(
    "  - name: admin-ssh\n"
    "    action: allow\n"
    "    protocol: tcp\n"
    "    ports: [ssh]\n"
    '    from: [192.0.2.0/24, "2001:db8:a::/48"]\n'
    "    comment: SSH from the admin network only\n",
    "",
)
LOCKOUT = ("inbound tcp 22 (ssh) is denied from every address, by the default inbound deny: applying this "
           "policy locks out SSH; allow ssh from your admin networks, or acknowledge ssh-lockout [ssh-lockout]")


def test_lockout_by_default_is_an_error_at_the_default(tmp_path: Path) -> None:
    path = example("edge", WITHOUT_ADMIN_SSH)
    where = at(path, "inbound: deny", "deny")
    code, out, err = run("lint", path)
    assert code == 1 and err == ""
    assert out == [f"{where}: {DHCP4}", f"{where}: {DHCP6}", f"{where}: error: {LOCKOUT}"]

    code, out, err = run("build", path, "-o", "out")
    assert (code, out) == (1, [])
    assert err == f"{where}: {LOCKOUT}\n"
    assert not (tmp_path / "out").exists()
    # the library call builds it unless asked to lint (random test policies lock out SSH all the time)
    assert build(path, bundled()).files
    with pytest.raises(PolicyError) as info:
        build(path, bundled(), lint_errors=True)
    assert str(info.value) == f"{where}: {LOCKOUT}"


def test_lockout_by_a_rule_under_inbound_allow() -> None:
    no_ssh = "rules:\n  - name: no-ssh\n    action: deny\n    ports: [ssh]\n"
    path = example("dormant-ports", replace("rules:\n", no_ssh))
    line = line_of(path, "name: no-ssh")
    assert with_id(path, "ssh-lockout") == [
        f"{at(path, 'name: no-ssh')}: error: inbound tcp 22 (ssh) is denied from every address, by 'no-ssh' "
        f"(line {line}): applying this policy locks out SSH; allow ssh from your admin networks, "
        "or acknowledge ssh-lockout [ssh-lockout]"
    ]


def test_ssh_over_ipv6_only_is_not_a_lockout() -> None:
    path = example("edge", replace('from: [192.0.2.0/24, "2001:db8:a::/48"]', 'from: ["2001:db8:a::/48"]'))
    assert with_id(path, "ssh-lockout") == []


def test_acknowledgement_silences_and_build_proceeds(tmp_path: Path) -> None:
    path = example("edge", lambda t: WITHOUT_ADMIN_SSH(t) + "acknowledge: [ssh-lockout, dhcpv4-client]\n")
    code, out, _ = run("lint", path)
    assert code == 0
    assert [line.rsplit("[", 1)[1] for line in out] == ["dhcpv6-replies]"]
    assert run("lint", "--strict", path)[0] == 1
    code, out, _ = run("build", path, "-o", "out")
    assert code == 0 and (tmp_path / "out" / "edge" / "nftables" / "edge.nft").exists()
    # the acknowledgement changes no output
    Path("plain").mkdir()
    plain = example("edge", WITHOUT_ADMIN_SSH, as_name="plain/edge.yaml")

    def rules(policy: str) -> list[str]:
        text = build(policy, bundled()).files["nftables/edge.nft"]
        return [line for line in text.splitlines() if not line.startswith("# policy:")]

    assert rules(plain) == rules(path)


def test_strict_exit_codes() -> None:
    clean = example("edge", append("acknowledge: [dhcpv4-client, dhcpv6-replies]\n"))
    assert run("lint", clean) == (0, [], "")
    assert run("lint", "--strict", clean) == (0, [], "")
    warned = example("edge", as_name="warned.yaml")
    assert run("lint", warned)[0] == 0
    assert run("lint", "--strict", warned)[0] == 1
    locked = example("edge", WITHOUT_ADMIN_SSH, as_name="locked.yaml")
    assert run("lint", locked)[0] == 1
    assert run("lint", "--strict", locked)[0] == 1


def test_unknown_acknowledgement_is_a_located_error(tmp_path: Path) -> None:
    path = example("edge", append("acknowledge: [dhcpv4-client, ssh-lockuot]\n"))
    expected = (
        f"{at(path, 'ssh-lockuot')}: unknown finding id 'ssh-lockuot' in acknowledge (did you mean 'ssh-lockout'?)"
    )
    assert run("lint", path) == (1, [], expected + "\n")
    code, out, err = run("build", path, "-o", "out")
    assert (code, out, err) == (1, [], expected + "\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text,needle,message", [
    ("acknowledge: [no-dns-out, no-dns-out]\n", "no-dns-out]",
     "'no-dns-out' is acknowledged twice (first at line {line})"),
    ("acknowledge: no-dns-out\n", "no-dns-out",
     "acknowledge must be a list of finding ids, got text 'no-dns-out'"),
    ("acknowledge: [42]\n", "42", "an acknowledgement must be a finding id, got a number '42'"),
    ("acknowledge: [everything]\n", "everything",
     "unknown finding id 'everything' in acknowledge (the ids are listed in docs/lint.md)"),
])
def test_bad_acknowledge(text: str, needle: str, message: str) -> None:
    path = example("edge", append(text))
    line = line_of(path, "acknowledge:")
    assert run("lint", path) == (1, [], f"{at(path, needle)}: {message.format(line=line)}\n")


def test_empty_acknowledge_is_allowed() -> None:
    assert load_policy(example("edge", append("acknowledge: []\n"))).acknowledge == ()


def test_unused_acknowledgement() -> None:
    path = example("edge", append("acknowledge: [no-ntp-out, dhcpv4-client]\n"))
    assert with_id(path, "unused-acknowledge") == [
        f"{at(path, 'no-ntp-out')}: warning: acknowledge lists 'no-ntp-out', but there is no such finding "
        "to silence; remove it [unused-acknowledge]"
    ]


# ---------------------------------------------------------------------- traffic the defaults break

DNS_OUT = (
    "  - name: dns-out\n"
    "    action: allow\n"
    "    direction: out\n"
    "    ports: [domain]\n"
    '    to: [198.51.100.53, "2001:db8:100::53"]\n'
)


def test_no_dns_out() -> None:
    path = example("locked-down", replace(DNS_OUT, ""))
    assert with_id(path, "no-dns-out") == [
        f"{at(path, 'outbound: deny', 'deny')}: warning: outbound DNS (53/udp and 53/tcp) is denied to every "
        "address, by the default outbound deny: name resolution fails; allow domain to your resolvers [no-dns-out]"
    ]


def test_no_dns_over_tcp() -> None:
    path = example("locked-down", replace("ports: [domain]", "ports: [domain/udp]"))
    assert with_id(path, "no-dns-out") == [
        f"{at(path, 'outbound: deny', 'deny')}: warning: outbound DNS over tcp (53/tcp) is denied to every "
        "address, by the default outbound deny: answers too big for udp are retried over tcp and fail; "
        "allow domain to your resolvers [no-dns-out]"
    ]


def test_no_ntp_out() -> None:
    path = example("locked-down", replace("    protocol: udp\n    ports: [ntp]", "    protocol: tcp\n    ports: [ntp]"))
    assert with_id(path, "no-ntp-out") == [
        f"{at(path, 'outbound: deny', 'deny')}: warning: outbound NTP (123/udp) is denied to every address, by "
        "the default outbound deny: the clock will drift; allow ntp/udp to your time servers [no-ntp-out]"
    ]


def test_dhcp_allowed_silences_both() -> None:
    path = example("edge", append(
        "  - name: dhcp-client\n"
        "    action: allow\n"
        "    protocol: udp\n"
        "    ports: [dhcpv6-client, bootpc]\n"
        '    from: ["fe80::/10", 10.0.0.1]\n'
    ))
    assert findings(path) == []


def test_dhcpv6_from_global_addresses_only_is_reported() -> None:
    path = example("edge", append(
        "  - name: dhcp6\n    action: allow\n    protocol: udp\n    ports: [546]\n    from: [\"2001:db8::/32\"]\n"
    ))
    assert len(with_id(path, "dhcpv6-replies")) == 1
    assert with_id(path, "dhcpv4-client") != []


# ---------------------------------------------------------------------- reviewer's notes


def test_ipv4_only_any() -> None:
    path = example("edge", replace("    ports: [http, https]\n", "    ports: [http, https]\n    from: [0.0.0.0/0]\n"))
    assert with_id(path, "ipv4-only-any") == [
        f"{at(path, '[0.0.0.0/0]')}: warning: rule 'web' matches IPv4 only: 'from: [0.0.0.0/0]' is every IPv4 "
        "address and no IPv6 one; omit 'from' to match every address, or add \"::/0\" [ipv4-only-any]"
    ]
    # with ::/0 it says what it means; and the dormant-ports IPv6-only rule is not flagged
    both_families = '    ports: [http, https]\n    from: [0.0.0.0/0, "::/0"]\n'
    both = example("edge", replace("    ports: [http, https]\n", both_families), as_name="both.yaml")
    assert with_id(both, "ipv4-only-any") == []


def test_log_on_monitor() -> None:
    path = example("edge", replace("    action: monitor\n", "    action: monitor\n    log: true\n"))
    assert with_id(path, "log-on-monitor") == [
        f"{at(path, 'log: true', 'true')}: warning: rule 'dormant-watch': 'log: true' does nothing on a "
        "monitor rule, which always logs; remove it [log-on-monitor]"
    ]


def test_wide_open() -> None:
    path = example("edge", append("  - name: apps\n    action: allow\n    range: registered\n"))
    assert with_id(path, "wide-open") == [
        f"{at(path, 'range: registered', 'registered')}: warning: rule 'apps' accepts 1024-49151/tcp+udp "
        "(48128 ports) from every address; name the ports this host serves, or restrict 'from' [wide-open]"
    ]
    narrow = example("edge", append("  - name: apps\n    action: allow\n    range: registered\n"
                                    "    from: [10.0.0.0/8]\n"), as_name="narrow.yaml")
    assert with_id(narrow, "wide-open") == []


def test_reject_log_rate() -> None:
    path = example("dormant-ports", replace("rules:\n", "monitor: {rate: 20/second}\nrules:\n"))
    assert with_id(path, "reject-log-rate") == [
        f"{at(path, '20/second')}: warning: deny: reject with logged inbound deny rule(s) 'close-dormant' at "
        "20/second: a port scan gets every probe answered and logged at that rate; lower monitor.rate or use "
        "deny: drop [reject-log-rate]"
    ]
    assert with_id(example("dormant-ports", as_name="default-rate.yaml"), "reject-log-rate") == []


# ---------------------------------------------------------------------- CLI details


def test_policy_that_does_not_load() -> None:
    path = example("edge", replace("ports: [mpshrsv, t1distproc]", "ports: [mpshrv, t1distproc]"))
    code, out, err = run("lint", path)
    assert (code, out) == (1, [])
    assert err == f"{at(path, 'mpshrv')}: unknown service 'mpshrv' (did you mean 'mpshrsv'?)\n"


def test_usage_errors_exit_2() -> None:
    assert run("lint")[0] == 2
    assert run("lint", "x.yaml", "--bogus")[0] == 2


def test_findings_sorted_by_position() -> None:
    path = example("edge", lambda t: WITHOUT_ADMIN_SSH(t) + (
        "  - name: www-again\n    action: allow\n    protocol: tcp\n    ports: [www]\n"
        "acknowledge: [no-ntp-out]\n"
    ))
    positions = [tuple(int(x) for x in f.split(":")[1:3]) for f in findings(path)]
    assert positions == sorted(positions) and len(positions) == 5


# ---------------------------------------------------------------------- docs


def test_every_documented_example_gives_its_finding() -> None:
    for check in lint_module.checks():
        policy, expected, targets = doc_examples(check)
        Path("example.yaml").write_text(policy, encoding="utf-8")
        assert expected in findings("example.yaml", targets), check.id


def test_docs_are_generated_from_the_checks() -> None:
    on_disk = (ROOT / "docs" / "lint.md").read_text(encoding="utf-8")
    assert on_disk == docs_markdown(), "regenerate: python -m fwgen.lint > docs/lint.md"
    for finding_id in finding_ids():
        assert f"\n### {finding_id}\n" in on_disk
    assert len(set(finding_ids())) == len(finding_ids())
    assert finding_ids() == IDS, "a check was added or renamed: update fwgen/finding_ids.py (acknowledge: reads it)"


def test_acknowledge_is_documented_in_the_policy_format() -> None:
    text = (ROOT / "docs" / "policy-format.md").read_text(encoding="utf-8")
    assert "### acknowledge" in text and "(lint.md)" in text


# ---------------------------------------------------------------------- the model is exact


def _edges(networks: object, top: int) -> set[int]:
    out: set[int] = set()
    for net in networks or ():  # type: ignore[attr-defined]
        lo, hi = int(net.network_address), int(net.broadcast_address)
        out.update(a for a in (lo - 1, lo, hi, hi + 1) if 0 <= a <= top)
    return out


class _Points(NamedTuple):
    """Every cell's corners, per dimension: verdicts are constant between these points."""

    what: list[int]  # points of the what axis (protocol << 16 | port or ICMP type << 8 | code)
    remote: dict[int, list[int]]
    local: dict[int, list[int | None]]  # [None] when no rule restricts local addresses
    interfaces: list[str | None]
    profiles: list[str | None]


def _points(ruleset: ir.Ruleset) -> _Points:
    what = {0, ir.WHAT_SIZE - 1, ir.what_span(ir.TCP_NUMBER)[0], ir.what_span(ir.UDP_NUMBER)[0]}
    remote = {4: {0, 2**32 - 1}, 6: {0, 2**128 - 1}}
    local: dict[int, set[int]] = {4: set(), 6: set()}
    patterns: set[str] = set()
    profiles = False
    for rule in ruleset.rules:
        for lo, hi in rule.what():
            what.update(w for w in (lo - 1, lo, hi, hi + 1) if 0 <= w < ir.WHAT_SIZE)
        for family, top in ((4, 2**32 - 1), (6, 2**128 - 1)):
            remote[family] |= _edges(rule.remote(family), top)
            local[family] |= _edges(rule.local(family), top)
        patterns.update(rule.interfaces or ())
        profiles |= rule.profiles is not None
    names: set[str] = set()
    for pattern in patterns:
        names.update((pattern[:-1] + "q", pattern[:-1]) if pattern.endswith("*") else (pattern,))
    return _Points(
        sorted(what), {f: sorted(v) for f, v in remote.items()},
        {f: sorted(v) or [None] for f, v in local.items()},  # type: ignore[misc]
        sorted(names | {"zz9"}) if patterns else [None],
        ["domain", "private", "public"] if profiles else [None],
    )


def _question(point: int) -> tuple[str | int, int | None, tuple[int, int] | None, tuple[int, ...]]:
    """A what-point as explain's (protocol, port, icmp) and the families it exists in."""
    number, selector = ir.what_protocol(point), point & 0xFFFF
    if number in (ir.TCP_NUMBER, ir.UDP_NUMBER):
        return ("tcp" if number == ir.TCP_NUMBER else "udp"), selector, None, (4, 6)
    if number == ir.ICMP_NUMBER:
        return "icmp", None, (selector >> 8, selector & 0xFF), (4,)
    if number == ir.ICMPV6_NUMBER:
        return "icmpv6", None, (selector >> 8, selector & 0xFF), (6,)
    return number, None, None, (4, 6)


def _verdicts(path: str, points: _Points) -> dict[tuple[object, ...], object]:
    explainer = Explainer(load_policy(path), bundled())
    out = {}
    for direction in ("in", "out"):
        for point in points.what:
            protocol, port, icmp, families = _question(point)
            for family in families:
                make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
                for value in points.remote[family]:
                    for local in points.local[family]:
                        for interface in points.interfaces:
                            for profile in points.profiles:
                                verdict = explainer.verdict(
                                    direction, protocol, port, make(value), icmp=icmp, interface=interface,
                                    profile=profile, local=None if local is None else make(local))
                                assert verdict.decided
                                out[(direction, point, family, value, local, interface, profile)] = verdict
    return out


def _random_policy() -> object:
    from tests.differential.policygen import policy

    return policy()


@settings(max_examples=int(os.environ.get("FWGEN_LINT_EXAMPLES", "25")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(_random_policy())
def test_model_matches_the_reference_interpreter(data: dict[str, object]) -> None:
    """Shadowed (never decides), redundant (removal changes no action or logging) and the
    per-port facts agree with fwgen explain evaluated on every cell."""
    from tests.differential.policygen import to_yaml

    Path("p.yaml").write_text(to_yaml(data), encoding="utf-8")
    policy = load_policy("p.yaml")
    ruleset = compile_policy(policy, bundled())
    ctx = Context(policy, ruleset, bundled())
    points = _points(ruleset)
    base = _verdicts("p.yaml", points)
    rules = data["rules"]
    assert isinstance(rules, list)
    for rule in policy.rules:
        facts = ctx.facts[rule.index]
        decides = {k for k, v in base.items() if v.rule == rule.name}  # type: ignore[attr-defined]
        assert bool(decides) == facts.reached, rule.name
        for (protocol, _), port_facts in facts.ports.items():
            number = ir.TCP_NUMBER if protocol is Protocol.TCP else ir.UDP_NUMBER
            for lo, hi in port_facts.spans:
                for port in (lo, hi):
                    point = ir.what_span(number)[0] + port
                    assert point in points.what  # a cell's edge is some rule's
                    here = any(k[1] == point for k in decides)
                    assert here == port_facts.first, (rule.name, protocol, port)
        if not facts.reached:
            continue
        without = copy.deepcopy(data)
        without["rules"] = [r for i, r in enumerate(rules) if i != rule.index - 1]  # type: ignore[index]
        Path("q.yaml").write_text(to_yaml(without), encoding="utf-8")
        other = _verdicts("q.yaml", points)
        same = all(
            (base[k].action, base[k].logged) == (other[k].action, other[k].logged)  # type: ignore[attr-defined]
            for k in base
        )
        assert same == (not facts.changes), rule.name


# ---------------------------------------------------------------------- the new matches


def policy_file(body: str, name: str = "host.yaml") -> str:
    Path(name).write_text("version: 1\nname: host\n" + body, encoding="utf-8")
    return name


SSH = "  - name: ssh\n    action: allow\n    ports: [ssh]\n"


def test_shadowed_and_redundant_over_interfaces() -> None:
    path = policy_file("targets: [iptables, nftables]\nrules:\n" + SSH + (
        "  - name: vpn\n    action: allow\n    protocol: all\n    interface: wg*\n"
        "  - name: wg0\n    action: deny\n    protocol: all\n    interface: wg0\n"
        "  - name: eth0\n    action: deny\n    protocol: all\n    interface: eth0\n"
        "  - name: eth\n    action: deny\n    protocol: all\n    interface: eth*\n"), )
    assert with_id(path, "shadowed", LINUX) == [
        f"{at(path, '- name: wg0', 'name')}: warning: rule 'wg0' can never match: shadowed by 'ssh' (line 5), "
        "'vpn' (line 8) [shadowed]"]
    # eth0 before eth*: a narrower deny the wider one repeats (which repeats the default).
    assert with_id(path, "redundant", LINUX) == [
        f"{at(path, '- name: eth0', 'name')}: warning: rule 'eth0' is redundant: without it the same traffic gets "
        "the same verdict from 'eth' (line 20) [redundant]",
        f"{path}:20:5: warning: rule 'eth' is redundant: without it "
        "the same traffic gets the same verdict from the default inbound deny [redundant]"]


def test_icmp_types_and_protocol_numbers_shadow_exactly() -> None:
    path = policy_file("rules:\n" + SSH + (
        "  - name: ping\n    action: allow\n    protocol: icmp\n    icmp: [echo-request]\n"
        "  - name: ping8\n    action: deny\n    protocol: icmp\n    icmp: [8/0]\n"        # inside echo-request
        "  - name: timestamp\n    action: deny\n    protocol: icmp\n    icmp: [13, 8]\n"  # half new
        "  - name: esp\n    action: allow\n    protocol: esp\n"
        "  - name: esp50\n    action: deny\n    protocol: 50\n"                             # the same protocol
        "  - name: ah\n    action: deny\n    protocol: ah\n"))                              # another one
    shadowed = with_id(path, "shadowed")
    assert [f.split("rule '")[1].split("'")[0] for f in shadowed] == ["ping8", "esp50"]
    assert "shadowed by 'ping' (line 7)" in shadowed[0] and "shadowed by 'esp' (line 19)" in shadowed[1]
    # On Linux a deny repeating the default deny is redundant, here on 13 and on ah; 8 of
    # 'timestamp' is ping's. (Windows needs explicit denies: not reported there.)
    assert [f.split("rule '")[1].split("'")[0] for f in with_id(path, "redundant", LINUX)] == ["timestamp", "ah"]
    assert with_id(path, "redundant") == []


def test_local_addresses_and_profiles_shadow_exactly() -> None:
    path = policy_file("targets: [windows]\nrules:\n" + (
        "  - name: rdp\n    action: allow\n    ports: [ms-wbt-server]\n"
        "  - name: office\n    action: allow\n    ports: [microsoft-ds]\n    profiles: [domain, private]\n"
        "  - name: home\n    action: deny\n    ports: [microsoft-ds]\n    profiles: [private]\n"   # shadowed
        "  - name: public\n    action: deny\n    ports: [microsoft-ds]\n    profiles: [public]\n"  # reached
        "  - name: mgmt\n    action: allow\n    ports: [8443]\n    local: [10.9.0.2]\n"
        "  - name: mgmt-host\n    action: deny\n    ports: [8443]\n    local: [10.9.0.2]\n"  # shadowed
        "  - name: mgmt-net\n    action: deny\n    ports: [8443]\n    local: [10.9.0.0/24]\n"))  # reached
    assert [f.split("rule '")[1].split("'")[0] for f in with_id(path, "shadowed", ("windows",))] == [
        "home", "mgmt-host"]


def test_wide_open_and_unauthorized_ports_leave_interface_and_protocol_rules_alone() -> None:
    path = policy_file("targets: [iptables, nftables]\nrules:\n" + SSH + (
        "  - name: vpn\n    action: allow\n    protocol: all\n    interface: wg0\n"
        "  - name: wide\n    action: allow\n    range: registered\n"
        "  - name: everything\n    action: allow\n    protocol: all\n"))
    assert with_id(path, "wide-open", LINUX) == [
        f"{at(path, 'range: registered', 'registered')}: warning: rule 'wide' accepts 1024-49151/tcp+udp "
        "(48128 ports) from every address; name the ports this host serves, or restrict 'from' [wide-open]",
        f"{path}:{line_of(path, '- name: everything') + 2}:15: warning: rule 'everything' accepts every IP "
        "protocol and port from every address; name the protocols and ports this host serves, or restrict 'from' "
        "or 'interface' [wide-open]",
    ]
    unauthorized = [f.split("rule '")[1].split("'")[0] for f in with_id(path, "unauthorized-port", LINUX)]
    assert unauthorized == ["wide"]  # the range names ports; the protocol rules name none


def test_ipv4_only_any_leaves_icmp_alone() -> None:
    ping = "  - name: ping\n    action: allow\n    protocol: icmp\n    from: [0.0.0.0/0]\n"
    assert with_id(policy_file("rules:\n" + SSH + ping), "ipv4-only-any") == []
    assert len(with_id(policy_file("rules:\n" + SSH + ping.replace("icmp", "tcp"), "tcp.yaml"), "ipv4-only-any")) == 1


def test_icmp_state_names_each_entry_linux_decides_first() -> None:
    path = policy_file("rules:\n" + SSH + (
        "  - name: v4\n    action: allow\n    protocol: icmp\n    icmp: [echo-request, 3/4, timestamp-request, 9]\n"
        "  - name: v6\n    action: deny\n    protocol: icmpv6\n    icmp: [echo-request, 135, packet-too-big, 139]\n"
        "  - name: all-types\n    action: allow\n    protocol: icmp\n"))
    got = with_id(path, "icmp-state")
    assert [f.split(": warning: ")[1].split(", which")[0] for f in got] == [
        "rule 'v4' names ICMP type 3/4", "rule 'v4' names ICMP type 9 (router-advertisement)",
        "rule 'v6' names ICMPv6 type 135", "rule 'v6' names ICMPv6 type 2 (packet-too-big)",
    ]
    assert got[0].startswith(at(path, "3/4", "3/4"))
    assert "about a connection of the host (related)" in got[0]
    assert "dropped as invalid" in got[1]
    assert "with hop limit 255" in got[2]
    assert with_id(path, "icmp-state", ("windows",)) == []  # Windows applies the rule to them
