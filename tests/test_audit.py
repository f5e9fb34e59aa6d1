"""``fwgen audit`` without a kernel: the ``netstat -ano`` and ``ss -Htulpn`` parsers on
lines in each tool's documented format, malformed ones included; the findings held to
``fwgen explain`` address by address on random policies; the output formats and the
command's errors. The real listeners are in tests/kernel/test_audit.py."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from fwgen import audit
from fwgen.cli import main
from fwgen.errors import PolicyError
from fwgen.explain import Explainer
from fwgen.listeners import Process, decode, parse
from fwgen.registry import bundled
from tests.differential.policygen import PEER_V4, PEER_V6, policy, to_yaml

# `netstat -ano` as Microsoft documents it (Proto, Local Address, Foreign Address, State,
# PID; UDP rows have no state), with Windows' CRLF line ends.
NETSTAT = "\r\n".join([
    "",
    "Active Connections",
    "",
    "  Proto  Local Address          Foreign Address        State           PID",
    "  TCP    0.0.0.0:135            0.0.0.0:0              LISTENING       1000",
    "  TCP    0.0.0.0:445            0.0.0.0:0              LISTENING       4",
    "  TCP    192.168.1.10:139       0.0.0.0:0              LISTENING       4",
    "  TCP    192.168.1.10:50123     52.1.2.3:443           ESTABLISHED     5678",
    "  TCP    192.168.1.10:50124     52.1.2.3:443           TIME_WAIT       0",
    "  TCP    [::]:135               [::]:0                 LISTENING       1000",
    "  TCP    [::1]:50000            [::]:0                 LISTENING       2222",
    "  UDP    0.0.0.0:500            *:*                                    3300",
    "  UDP    [::]:500               *:*                                    3300",
    "  UDP    [fe80::1c2d:3e4f:5a6b:7c8d%12]:546  *:*                       1500",
    "  UDP    127.0.0.1:1900         *:*                                    4400",
    "",
])


def test_netstat_ano() -> None:
    parsed = parse(NETSTAT, "netstat.txt")
    assert parsed.format == "netstat -ano"
    assert parsed.skipped == 2
    rows = [(x.protocol, x.endpoint, x.families, x.loopback, x.processes, x.location.line) for x in parsed.listeners]
    assert rows == [
        ("tcp", "0.0.0.0:135", (4,), False, (Process("", 1000),), 5),
        ("tcp", "0.0.0.0:445", (4,), False, (Process("", 4),), 6),
        ("tcp", "192.168.1.10:139", (4,), False, (Process("", 4),), 7),
        ("tcp", "[::]:135", (6,), False, (Process("", 1000),), 10),
        ("tcp", "[::1]:50000", (6,), True, (Process("", 2222),), 11),
        ("udp", "0.0.0.0:500", (4,), False, (Process("", 3300),), 12),
        ("udp", "[::]:500", (6,), False, (Process("", 3300),), 13),
        ("udp", "[fe80::1c2d:3e4f:5a6b:7c8d]:546", (6,), False, (Process("", 1500),), 14),
        ("udp", "127.0.0.1:1900", (4,), True, (Process("", 4400),), 15),
    ]
    assert parsed.listeners[7].interface is None  # %12 is a zone index, not an interface name


def test_netstat_saved_by_powershell_is_utf16() -> None:
    data = b"\xff\xfe" + NETSTAT.encode("utf-16-le")
    assert parse(decode(data, "n.txt"), "n.txt") == parse(NETSTAT, "n.txt")


@pytest.mark.parametrize(("line", "message"), [
    ("  TCP    0.0.0.0:135            0.0.0.0:0              LISTENING",
     "5:3: not a netstat -ano line (Proto, Local Address, Foreign Address, State, PID): "
     "'TCP 0.0.0.0:135 0.0.0.0:0 LISTENING'"),
    ("  TCP    0.0.0.0:99999          0.0.0.0:0              LISTENING       4",
     "5:3: local address '0.0.0.0:99999' is not ADDRESS:PORT"),
    ("  TCP    0.0.0.0                0.0.0.0:0              LISTENING       4",
     "5:3: local address '0.0.0.0' is not ADDRESS:PORT"),
    ("  UDP    host.example:53        *:*                                    9",
     "5:3: 'host.example' is not an IP address"),
    ("  UDP    0.0.0.0:53             *:*                                    x9",
     "5:3: not a netstat -ano line (Proto, Local Address, Foreign Address, State, PID): 'UDP 0.0.0.0:53 *:* x9'"),
    ("  Udp    0.0.0.0:53             *:*                                    9",
     "5:3: not a netstat -ano line (Proto, Local Address, Foreign Address, State, PID): 'Udp 0.0.0.0:53 *:* 9'"),
    ("garbage \x1b[31m", "5:1: not a netstat -ano line (Proto, Local Address, Foreign Address, State, PID): "
     "'garbage ?[31m'"),
])
def test_netstat_malformed_lines_are_located(line: str, message: str) -> None:
    text = "\r\n".join(NETSTAT.split("\r\n")[:4] + [line])
    with pytest.raises(PolicyError) as info:
        parse(text, "netstat.txt")
    assert str(info.value) == f"netstat.txt:{message}"


SS = """\
udp UNCONN 0      0      0.0.0.0%lo:68   0.0.0.0:* users:(("dhclient",pid=640,fd=11))
udp UNCONN 0      0         0.0.0.0:1261 0.0.0.0:* users:(("dormant",pid=28967,fd=8))
udp UNCONN 0      0               *:5000       *:*
tcp LISTEN 0      128             *:80         *:* users:(("apache2",pid=1,fd=4),("apache2",pid=2,fd=4))
tcp LISTEN 0      128          [::]:22      [::]:* users:(("sshd",pid=900,fd=4))
tcp LISTEN 0      128 [fe80::1%eth0]:8443   [::]:* users:(("a|b`c",pid=7,fd=4))
tcp ESTAB  0      0      10.0.0.2:22   10.0.0.9:50000 users:(("sshd",pid=901,fd=4))
"""


def test_ss_htulpn() -> None:
    parsed = parse(SS, "ss.txt")
    assert parsed.format == "ss -Htulpn" and parsed.skipped == 1
    rows = [(x.protocol, x.address, x.interface, x.port, x.families, x.loopback, x.processes)
            for x in parsed.listeners]
    assert rows == [
        ("udp", "0.0.0.0", "lo", 68, (4,), True, (Process("dhclient", 640),)),
        ("udp", "0.0.0.0", None, 1261, (4,), False, (Process("dormant", 28967),)),
        ("udp", "*", None, 5000, (4, 6), False, ()),
        ("tcp", "*", None, 80, (4, 6), False, (Process("apache2", 1), Process("apache2", 2))),
        ("tcp", "::", None, 22, (6,), False, (Process("sshd", 900),)),
        ("tcp", "fe80::1", "eth0", 8443, (6,), False, (Process("a|b`c", 7),)),
    ]
    assert [x.endpoint for x in parsed.listeners] == [
        "0.0.0.0%lo:68", "0.0.0.0:1261", "*:5000", "*:80", "[::]:22", "[fe80::1%eth0]:8443"]
    assert parse("Netid State Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n" + SS, "s") == (
        parse("\n" + SS, "s"))  # ss without -H: the header is skipped
    assert parse("", "empty") == parse("\n \n", "empty")
    assert parse("", "empty").listeners == ()


@pytest.mark.parametrize(("text", "message"), [
    ("tcp LISTEN 0 128 0.0.0.0:22\n", "1:1: not an ss -Htulpn line (NETID STATE RECV-Q SEND-Q LOCAL PEER [PROCESS]): "
     "'tcp LISTEN 0 128 0.0.0.0:22'"),
    ("tcp LISTEN 0 128 0.0.0.0:ssh 0.0.0.0:*\n", "1:1: local address '0.0.0.0:ssh' is not ADDRESS:PORT"),
    ("tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(sshd)\n",
     "1:1: cannot read the process column 'users:(sshd)' (users:((\"NAME\",pid=N,...)))"),
    ("tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\nraw UNCONN 0 0 *:ipv6-icmp *:*\n",
     "2:1: not an ss -Htulpn line (NETID STATE RECV-Q SEND-Q LOCAL PEER [PROCESS]): 'raw UNCONN 0 0 *:ipv6-icmp *:*'"),
    ("State  Recv-Q Send-Q\n", "1:1: not ss -Htulpn or netstat -ano output: 'State Recv-Q Send-Q'"),
])
def test_ss_malformed_lines_are_located(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse(text, "ss.txt")
    assert str(info.value) == f"ss.txt:{message}"


def test_binary_input_is_one_located_line() -> None:
    with pytest.raises(PolicyError) as info:
        decode(b"tcp LISTEN\n\x00\xff\xfe junk", "x.bin")
    assert str(info.value) == "x.bin:2:2: not text (UTF-8 or UTF-16): not ss or netstat output"


# --- the findings held to explain, address by address -------------------------------------

LISTENERS = parse(SS.replace("0.0.0.0%lo:68", "0.0.0.0:68") + "tcp LISTEN 0 9 198.51.100.7:1270 0.0.0.0:*\n"
                  "udp UNCONN 0 0 [2001:db8:ffff::2]:1280 [::]:*\n", "ss.txt")


def _exposed(finding: audit.Finding, address: str) -> bool:
    """Whether the finding lets ``address`` in: in an outcome that is not a deny."""
    ip = ipaddress.ip_address(address)
    for outcome in finding.outcomes:
        nets = [ipaddress.ip_network(n) for n in outcome.networks]
        if outcome.everyone or any(ip in n for n in nets if n.version == ip.version):
            return outcome.verdict.action != "deny"
    return False


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=policy(None, mix=True))
def test_findings_agree_with_explain(data: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    data.pop("targets", None)
    for rule in data["rules"]:  # a listener question gives no interface or profile
        rule.pop("interface", None)
        rule.pop("profiles", None)
    path = tmp_path_factory.mktemp("audit") / "p.yaml"
    path.write_text(to_yaml(data), encoding="utf-8")
    explainer = Explainer.from_file(str(path), bundled())
    for finding in audit.audit(explainer, LISTENERS):
        listener = finding.listener
        if listener.loopback:
            assert finding.status == "loopback" and finding.outcomes == ()
            continue
        let_in = False
        for address in PEER_V4 + PEER_V6:
            if ipaddress.ip_address(address).version not in listener.families:
                continue
            v = explainer.verdict("in", listener.protocol, listener.port, address, local=listener.local)
            answers = [v, *(c.verdict for c in v.depends)]
            assert _exposed(finding, address) == (v.action != "deny"), (listener, address, v)
            let_in |= any(a.action != "deny" for a in answers)
            watched = any(a.action == "monitor" or a.logged for a in answers if a.rule is not None)
            if watched:
                assert finding.watched, (listener, address, v)
        if let_in:
            assert finding.status == "exposed", (listener, finding)


# --- the command ----------------------------------------------------------------------------

POLICY = """\
version: 1
name: audited
rules:
  - name: ssh
    action: allow
    ports: [ssh]
  - name: dormant-watch
    action: monitor
    select: [undocumented, unauthorized-use]
    range: registered
"""


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = tmp_path / "audited.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def test_formats(policy_path: Path, tmp_path: Path) -> None:
    listeners = tmp_path / "ss.txt"
    listeners.write_text(SS, encoding="utf-8")
    text = CliRunner().invoke(main, ["audit", str(policy_path), str(listeners)])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0] == (f"{policy_path}: 6 listeners (ss -Htulpn output in {listeners}): 4 exposed, 1 denied, "
                        "1 loopback only, 3 on watched ports; 4 need a look")
    assert lines[3] == (f"watched exposed: udp 0.0.0.0:1261 (mpshrsv), dormant (pid 28967): monitor, logged from "
                        f"everyone (rule dormant-watch, {policy_path}:7) (select undocumented: mpshrsv)")
    assert lines[4] == "  a watched port has a listener: verify what process is bound to it"
    assert "watched exposed: udp *:5000 (commplex-main), (no process shown): monitor, logged" in text.output
    assert ("denied: tcp *:80 (http, www, www-http), apache2 (pid 1, 2): deny by drop from everyone "
            "(default inbound deny)") in lines
    md = CliRunner().invoke(main, ["audit", str(policy_path), str(listeners), "--format", "markdown"])
    assert "| watched exposed | tcp [fe80::1%eth0]:8443 (pcsync-https) | a\\|b'c (pid 7) |" in md.output
    js = json.loads(CliRunner().invoke(main, ["audit", str(policy_path), str(listeners), "--format", "json"]).output)
    assert js["summary"] == {"listeners": 6, "exposed": 4, "denied": 1, "loopback": 1, "watched": 3,
                             "need_a_look": 4}
    assert [f["port"] for f in js["listeners"]] == [8443, 1261, 5000, 80, 22, 68]
    assert js["listeners"][1]["outcomes"][0]["select"] == [{"selector": "undocumented", "names": ["mpshrsv"]}]
    strict = CliRunner().invoke(main, ["audit", str(policy_path), str(listeners), "--strict"])
    assert strict.exit_code == 1 and strict.output == text.output
    stdin = CliRunner().invoke(main, ["audit", str(policy_path), "-", "--strict"],
                               input="tcp LISTEN 0 1 [::]:22 [::]:*\n")
    assert stdin.exit_code == 0
    assert stdin.output.splitlines()[0] == (f"{policy_path}: 1 listeners (ss -Htulpn output in <stdin>): 1 exposed, "
                                            "0 denied, 0 loopback only, 0 on watched ports; 0 need a look")


@pytest.mark.parametrize(("content", "expected"), [
    (None, "fwgen: cannot read {dir}/missing.txt: No such file or directory"),
    (b"hello world\n", "{dir}/l.txt:1:1: not ss -Htulpn or netstat -ano output: 'hello world'"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff", "{dir}/l.txt:1:1: not text (UTF-8 or UTF-16): not ss or netstat output"),
    (b"  TCP    0.0.0.0:135  0.0.0.0:0  LISTENING\r\n",
     "{dir}/l.txt:1:3: not a netstat -ano line (Proto, Local Address, Foreign Address, State, PID): "
     "'TCP 0.0.0.0:135 0.0.0.0:0 LISTENING'"),
])
def test_bad_listeners_input_is_one_line(policy_path: Path, tmp_path: Path, content: bytes | None,
                                         expected: str) -> None:
    name = "missing.txt" if content is None else "l.txt"
    if content is not None:
        (tmp_path / name).write_bytes(content)
    result = CliRunner().invoke(main, ["audit", str(policy_path), str(tmp_path / name)])
    assert result.exit_code == 1
    assert result.output == expected.format(dir=tmp_path) + "\n"


def test_bad_policy_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nrules:\n  - action: monitor\n    select: [dormant]\n", encoding="utf-8")
    (tmp_path / "l.txt").write_text(SS, encoding="utf-8")
    result = CliRunner().invoke(main, ["audit", str(path), str(tmp_path / "l.txt")])
    assert result.exit_code == 1
    assert result.output == (
        f"{path}:4:14: unknown selector 'dormant' (the selectors are undocumented, unauthorized-use)\n")



def _blocks(text: str) -> list[str]:
    import re

    return re.findall(r"^```[a-z]*\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_doc_examples_are_real_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/audit.md: its policy, its ss and netstat files and the outputs shown for them
    are what fwgen audit prints (the ss run was in a namespace: the same findings from
    the same lines, here read from a file)."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "audit.md").read_text(encoding="utf-8")
    blocks = _blocks(doc)
    policy_text = next(b for b in blocks if b.startswith("version: 1"))
    ss_text = next(b for b in blocks if b.startswith("udp UNCONN"))
    shown = next(b for b in blocks if b.startswith("edge.yaml: 5 listeners (ss -Htulpn, run by fwgen)"))
    netstat_text = next(b for b in blocks if b.startswith("\nActive Connections"))
    netstat_shown = next(b for b in blocks if b.startswith("$ fwgen audit edge.yaml netstat.txt\n"))
    monkeypatch.chdir(tmp_path)
    Path("edge.yaml").write_text(policy_text, encoding="utf-8")
    Path("ss.txt").write_text(ss_text, encoding="utf-8")
    Path("netstat.txt").write_bytes(netstat_text.replace("\n", "\r\n").encode())
    result = CliRunner().invoke(main, ["audit", "edge.yaml", "ss.txt"])
    assert result.output == shown.replace("(ss -Htulpn, run by fwgen)", "(ss -Htulpn output in ss.txt)")
    md = CliRunner().invoke(main, ["audit", "edge.yaml", "ss.txt", "--format", "markdown"]).output
    assert md.replace("(ss -Htulpn output in ss.txt)", "(ss -Htulpn, run by fwgen)") in doc
    result = CliRunner().invoke(main, ["audit", "edge.yaml", "netstat.txt"])
    assert "$ fwgen audit edge.yaml netstat.txt\n" + result.output == netstat_shown
