"""``fwgen report`` on recorded lines: every log format detected and parsed, pfirewall.log
mapped through explain's verdicts, bad input answered with one line, and the four
output forms (the kernel's own lines and counters: tests/kernel/test_report.py)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from fwgen import logsources
from fwgen.cli import main

ROOT = Path(__file__).resolve().parents[1]
EDGE = str(ROOT / "policies" / "edge.yaml")

V4 = ("fwgen dormant-watch IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=198.51.100.7 "
      "DST=192.0.2.1 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=54321 DF PROTO=TCP SPT=40000 DPT=1261 WINDOW=64240 "
      "RES=0x00 SYN URGP=0 ")
V6 = ("fwgen dormant-watch IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:86:dd "
      "SRC=2001:0db8:0007:0000:0000:0000:0000:0005 DST=2001:0db8:000a:0000:0000:0000:0000:0001 LEN=80 TC=0 "
      "HOPLIMIT=64 FLOWLBL=676443 PROTO=UDP SPT=61351 DPT=1274 LEN=40 ")
X11 = ("fwgen no-x11 IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=198.51.100.8 DST=192.0.2.1 "
       "LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=1 DF PROTO=TCP SPT=40001 DPT=6001 WINDOW=64240 RES=0x00 SYN URGP=0 ")


def run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["report", *args], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def doc(*args: str, stdin: bytes | None = None) -> dict:
    code, out, err = run(*args, "--format", "json", stdin=stdin)
    assert code == 0, err
    return json.loads(out)


def logged(document: dict) -> dict[str, int]:
    return {r["name"]: r["logged"] for r in document["rules"] if r["logged"]}


# ------------------------------------------------------------------ kernel log formats

FORMS = {
    "dmesg": f"[  727.999017] {V4}\n[  728.000001] {V6}\n[  729.5] {X11}\n[  730.000000] usb 1-1: new device\n",
    "dmesg -T": f"[Wed Dec  2 06:07:58 2026] {V4}\n[Wed Dec  2 06:08:01 2026] {V6}\n[Wed Dec  2 06:08:02 2026] {X11}\n",
    "dmesg -t": f"{V4}\n{V6}\n{X11}\nusb 1-1: new device\n",
    "dmesg iso": f"2026-12-02T06:07:58,123456+00:00 {V4}\n2026-12-02T06:08:01,000000+00:00 {V6}\n"
                 f"2026-12-02T06:08:02,000000+00:00 {X11}\n",
    "dmesg -x": f"kern  :warn  : [  727.999017] {V4}\nkern  :warn  : [  728.1] {V6}\nkern  :warn  : [  729.1] {X11}\n",
    "kern.log": f"2026-12-02T06:07:58.123456+00:00 web1 kernel: [  727.999017] {V4}\n"
                f"2026-12-02T06:08:01.000000+00:00 web1 kernel: {V6}\n"
                f"2026-12-02T06:08:02.000000+00:00 web1 kernel: [  729.000000] {X11}\n"
                "2026-12-02T06:08:03.000000+00:00 web1 kernel: usb 1-1: new device\n",
    "kern.log traditional": f"Dec  2 06:07:58 web1 kernel: [  727.999017] {V4}\nDec  2 06:08:01 web1 kernel: {V6}\n"
                            f"Dec  2 06:08:02 web1 kernel: {X11}\n",
    "journal": "\n".join(json.dumps({"__REALTIME_TIMESTAMP": str(1796191678000000 + i), "MESSAGE": m,
                                     "_TRANSPORT": "kernel", "PRIORITY": "4"}) for i, m in enumerate((V4, V6, X11)))
               + "\n",
}
FORMAT_OF = {"dmesg": "dmesg", "kern.log": "kern.log", "journal": "journal"}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_kernel_log_form_counts_the_same(form: str, tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text(FORMS[form], encoding="utf-8")
    found = doc(EDGE, str(path))
    assert found["inputs"][0]["format"] == FORMAT_OF[form.split()[0]]
    assert found["inputs"][0]["unparsed"] == 0
    assert logged(found) == {"dormant-watch": 2, "no-x11": 1}
    ports = {(p["protocol"], p["port"]): p for p in found["ports"]}
    assert ports[("tcp", 1261)]["services"] == ["mpshrsv"]
    assert ports[("tcp", 1261)]["sources"][0]["address"] == "198.51.100.7"
    assert ports[("udp", 1274)]["sources"][0]["address"] == "2001:db8:7::5"  # dmesg's full IPv6 form, read
    assert ports[("udp", 1274)]["networks"] == [{"network": "2001:db8:7::/48", "count": 1}]
    assert ports[("tcp", 6001)]["services"] == ["x11"]
    assert found["zero_hits"] == []


def test_journal_messages_as_byte_arrays_and_gzip_rotation(tmp_path: Path) -> None:
    entry = {"__REALTIME_TIMESTAMP": "1796191678000000", "MESSAGE": list(V4.encode()) + [0xff]}
    (tmp_path / "j").write_text(json.dumps(entry) + "\n", encoding="utf-8")
    assert logged(doc(EDGE, str(tmp_path / "j"))) == {"dormant-watch": 1}
    (tmp_path / "kern.log.2.gz").write_bytes(gzip.compress(FORMS["kern.log"].encode()))
    found = doc(EDGE, str(tmp_path / "kern.log.2.gz"), "-", stdin=FORMS["dmesg -t"].encode())
    assert [i["format"] for i in found["inputs"]] == ["kern.log", "dmesg"]
    assert [i["path"] for i in found["inputs"]] == [str(tmp_path / "kern.log.2.gz"), "-"]
    assert logged(found) == {"dormant-watch": 4, "no-x11": 2}


def test_traditional_syslog_years_come_from_the_file_time(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_text(FORMS["kern.log traditional"], encoding="utf-8")
    january = datetime(2027, 1, 3, tzinfo=UTC).timestamp()
    os.utime(path, (january, january))
    found = doc(EDGE, str(path))
    first = next(r for r in found["rules"] if r["name"] == "dormant-watch")["first_seen"]
    assert first.startswith("2026-12-0")  # December of the year before the file was written


def test_windows_and_unknown_names(tmp_path: Path) -> None:
    text = FORMS["kern.log"] + (
        "2026-12-02T06:09:00+00:00 web1 kernel: fwgen gone-rule IN=eth0 OUT= SRC=192.0.2.9 DST=192.0.2.1 "
        "PROTO=TCP SPT=1 DPT=1261\n"
        "2026-12-02T06:09:01+00:00 web1 kernel: fwgen dormant-watch but not a netfilter line\n"
        "not a syslog line at all\n")
    path = tmp_path / "kern.log"
    path.write_text(text, encoding="utf-8")
    found = doc(EDGE, str(path), "--since", "2026-12-02T06:08:00+00:00", "--until", "2026-12-02T06:08:01.5+00:00")
    assert logged(found) == {"dormant-watch": 1}
    row = found["inputs"][0]
    assert (row["unparsed"], row["first_unparsed_line"], row["outside_window"]) == (2, 6, 3)
    found = doc(EDGE, str(path))
    assert found["inputs"][0]["unknown_rules"] == {"gone-rule": 1}
    assert any("'gone-rule', which this policy does not have" in n for n in found["notes"])


def test_long_names_are_tagged_by_index(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nname: p\nrules:\n  - name: a\n    action: allow\n    ports: [22]\n"
                      "  - name: a-rather-long-monitor-rule-name\n    action: monitor\n    ports: [1261]\n",
                      encoding="utf-8")
    log = tmp_path / "log"
    log.write_text(V4.replace("fwgen dormant-watch ", "fwgen rule-2 ") + "\n"
                   + V4.replace("fwgen dormant-watch ", "fwgen a-rather-long-monitor-rule-name ") + "\n",
                   encoding="utf-8")
    found = doc(str(policy), str(log))
    rule = next(r for r in found["rules"] if r["name"] == "a-rather-long-monitor-rule-name")
    assert (rule["log_prefix"], rule["logged"]) == ("fwgen rule-2 ", 1)
    assert found["inputs"][0]["unknown_rules"] == {"a-rather-long-monitor-rule-name": 1}


# ------------------------------------------------------------------ pfirewall.log

# Microsoft's W3C extended log format ("Windows Firewall with Advanced Security: Interpreting
# the Windows Firewall log"), as Windows 10 and later write it (pid last).
FIELDS = ("date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn tcpack tcpwin icmptype "
          "icmpcode info path pid")
PFIREWALL = f"""#Version: 1.5
#Software: Microsoft Windows Firewall
#Time Format: Local
#Fields: {FIELDS}

2026-12-02 06:07:58 ALLOW TCP 198.51.100.7 192.0.2.1 50000 1261 0 - 0 0 0 - - - RECEIVE 4
2026-12-02 06:07:59 ALLOW UDP 2001:db8:7::5 2001:db8:a::1 50001 1274 0 - - - - - - - RECEIVE 4
2026-12-02 06:08:00 DROP TCP 198.51.100.8 192.0.2.1 50002 6001 52 S 1234 0 64240 - - - RECEIVE 0
2026-12-02 06:08:01 DROP UDP 198.51.100.8 192.0.2.1 50003 7777 40 - - - - - - - RECEIVE 0
2026-12-02 06:08:02 ALLOW TCP 203.0.113.5 192.0.2.1 50004 443 0 - 0 0 0 - - - RECEIVE 4
2026-12-02 06:08:03 ALLOW ICMP 198.51.100.7 192.0.2.1 - - 84 - - - - 8 0 - RECEIVE 0
2026-12-02 06:08:04 DROP TCP 198.51.100.7 192.0.2.1 50005 1261 52 S 1 0 64240 - - - RECEIVE 0
2026-12-02 06:08:05 ALLOW TCP 192.0.2.1 198.51.100.7 50006 80 0 - 0 0 0 - - - SEND 4
2026-12-02 06:08:06 INFO-EVENTS-LOST - - - - - - - - - - - - 7 - -
2026-12-02 06:08:07 ALLOW TCP 198.51.100.7 192.0.2.1 50007
2026-12-02 06:08:08 ALLOW TCP 198.51.100.999 192.0.2.1 50008 1261 0 - 0 0 0 - - - RECEIVE 4
2026-12-02 06:08:09 ALLOW TCP 198.51.100.7 2001:db8:a::1 50009 1261 0 - 0 0 0 - - - RECEIVE 4
"""


def test_pfirewall_lines_take_the_verdict_explain_gives(tmp_path: Path) -> None:
    path = tmp_path / "pfirewall.log"
    path.write_text(PFIREWALL.replace("\n", "\r\n"), encoding="utf-8")
    found = doc(EDGE, str(path))
    row = found["inputs"][0]
    assert row["format"] == "pfirewall"
    # 12 lines: 6 attributed, the DROP on monitored 1261 disagrees, an outbound allow by the
    # default (nobody watches it), the lost-events line is no connection, 3 malformed
    assert (row["matched"], row["disagreeing"], row["unparsed"], row["first_unparsed_line"]) == (6, 1, 3, 15)
    assert logged(found) == {"dormant-watch": 2, "no-x11": 1, "default-inbound": 1, "web": 1, "ping": 1}
    assert [(p["protocol"], p["port"]) for p in found["ports"]] == [("tcp", 1261), ("tcp", 6001), ("udp", 1274),
                                                                     ("udp", 7777)]
    assert any(n.startswith("pfirewall.log names no rule") for n in found["notes"])
    # the attribution is what `fwgen explain` answers for each line's connection
    for protocol, port, remote, rule in (("tcp", "1261", "198.51.100.7", "dormant-watch"),
                                         ("udp", "7777", "198.51.100.8", None), ("tcp", "443", "203.0.113.5", "web")):
        answer = subprocess.run([sys.executable, "-m", "fwgen", "explain", EDGE, "--direction", "in", "--protocol",
                                 protocol, "--port", port, "--remote", remote, "--json"], capture_output=True,
                                text=True, check=True)
        assert json.loads(answer.stdout)["verdicts"][0]["rule"] == rule


def test_pfirewall_without_pid_and_profile_dependent_rules(tmp_path: Path) -> None:
    policy = tmp_path / "w.yaml"
    policy.write_text("version: 1\nname: w\nrules:\n  - name: office\n    action: monitor\n    ports: [1261]\n"
                      "    profiles: [domain]\n", encoding="utf-8")
    lines = [line.rsplit(" ", 1)[0] if line[:1].isdigit() else line for line in PFIREWALL.splitlines()]
    lines[3] = lines[3].rsplit(" ", 1)[0]  # Windows 7's #Fields, without pid
    path = tmp_path / "pfirewall.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = doc(str(policy), str(path))
    assert found["inputs"][0]["undetermined"] == 2  # 1261: monitor on the domain profile, else the default
    assert any("depends on the profile or interface" in n for n in found["notes"])


# ------------------------------------------------------------------ counters

NFT_COUNTERS = {"nftables": [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
    {"counter": {"family": "inet", "name": "rule_dormant-watch", "table": "edge", "handle": 1, "packets": 41,
                 "bytes": 2460}},
    {"counter": {"family": "inet", "name": "rule_no-x11", "table": "edge", "handle": 2, "packets": 0, "bytes": 0}},
    {"counter": {"family": "inet", "name": "default_input", "table": "edge", "handle": 3, "packets": 7,
                 "bytes": 420}},
    {"counter": {"family": "inet", "name": "rule_no-x11", "table": "other", "handle": 2, "packets": 99,
                 "bytes": 0}},
]}


def test_counters_beside_the_lines(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps(NFT_COUNTERS), encoding="utf-8")
    (tmp_path / "log").write_text(FORMS["dmesg"], encoding="utf-8")
    found = doc(EDGE, str(tmp_path / "log"), "--counters", str(tmp_path / "c.json"))
    rules = {r["name"]: r for r in found["rules"]}
    assert (rules["dormant-watch"]["logged"], rules["dormant-watch"]["counted"]) == (2, 41)
    assert rules["dormant-watch"]["logged_is_lower_bound"]
    assert rules["no-x11"]["counted"] == 0 and rules["default-inbound"]["counted"] == 7
    assert rules["web"]["counted"] is None
    code, out, _ = run(EDGE, str(tmp_path / "log"), "--counters", str(tmp_path / "c.json"))
    assert code == 0
    assert "dormant-watch            monitor  in   logged at least 2     counter 41" in out


def test_iptables_save_counters(tmp_path: Path) -> None:
    saved = (ROOT / "tests/golden/edge/iptables/rules.v4").read_text(encoding="utf-8")
    lines = [f"[5:300] {line}" if line.startswith("-A fwgen-rule-3 -m comment") else
             f"[2:120] {line}" if "default: inbound deny" in line else
             f"[9:540] {line}" if line.startswith("-A") else line for line in saved.splitlines()]
    (tmp_path / "v4").write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = doc(EDGE, "--counters", str(tmp_path / "v4"), "--counters", str(tmp_path / "v4"))
    rules = {r["name"]: r["counted"] for r in found["rules"]}
    # the LOG line's 9 is not a count of the rule; the verdict line's is; two files add up
    assert (rules["dormant-watch"], rules["no-x11"], rules["default-inbound"], rules["web"]) == (10, 18, 4, None)
    assert found["zero_hits"] == []


def test_iptables_published_ports_counters(tmp_path: Path) -> None:
    """Forwarded connections DNATed to a container are decided in fwgen-published: a logged
    rule's own chain there (fwgen-published-N) and its default deny count too."""
    saved = (ROOT / "tests/golden/docker-host/iptables/rules.v4").read_text(encoding="utf-8")
    counts = {"-A fwgen-rule-4 -m comment": 3, "-A fwgen-published-4 -m comment": 4,
              '-A INPUT -m comment --comment "default: inbound deny"': 5,
              '-A fwgen-published -m comment --comment "default: inbound deny (published ports)"': 6}
    lines = [f"[{next((n for k, n in counts.items() if line.startswith(k)), 100)}:0] {line}"
             if line.startswith("-A") else line for line in saved.splitlines()]
    (tmp_path / "v4").write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = doc(str(ROOT / "policies" / "docker-host.yaml"), "--counters", str(tmp_path / "v4"))
    rules = {r["name"]: r["counted"] for r in found["rules"]}
    assert (rules["app-others"], rules["default-inbound"]) == (7, 11)



def test_iptables_published_ports_counters_chains_mode(tmp_path: Path) -> None:
    """In chains mode the judging chain is fwgen-NAME-pub (and -pub-N for a logged rule),
    in the mangle table: their counters count for their rules too."""
    policy = tmp_path / "docker-host.yaml"
    text = (ROOT / "policies" / "docker-host.yaml").read_text(encoding="utf-8")
    chains = text.replace("published_ports: enforce\n", "published_ports: enforce\niptables: {mode: chains}\n")
    policy.write_text(chains, encoding="utf-8")
    built = subprocess.run([sys.executable, "-m", "fwgen", "build", str(policy), "-o", str(tmp_path / "out"), "-t",
                            "iptables"], capture_output=True, text=True, cwd=ROOT)
    assert built.returncode == 0, built.stderr
    saved = (tmp_path / "out" / "docker-host" / "iptables" / "rules.v4").read_text(encoding="utf-8")
    judging = next(line.split()[-1] for line in saved.splitlines()
                   if line.startswith("-A FORWARD ") and "-pub" in line)
    lines = []
    for line in saved.splitlines():
        count = 0
        if line.startswith(f"-A {judging}-") and "-j LOG" not in line:
            count = 4  # a logged rule's own chain: its verdict line
        elif line.startswith(f"-A {judging} ") and "default: inbound deny (published ports)" in line:
            count = 6
        lines.append(f"[{count}:0] {line}" if line.startswith("-A") else line)
    (tmp_path / "v4").write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = doc(str(policy), "--counters", str(tmp_path / "v4"))
    rules = {r["name"]: r["counted"] for r in found["rules"]}
    assert (rules["app-others"], rules["default-inbound"]) == (4, 6)

@pytest.mark.parametrize(("content", "message"), [
    ("{\"nftables\": [", ":1:15: not valid JSON"),
    ("{\"other\": 1}", ":1:1: not nft -j output"),
    ("*filter\n-A INPUT -j ACCEPT\nCOMMIT\n", ":2:1: a rule line without counters: save with iptables-save -c"),
    ("hello\n", ":1:1: neither nft -j list counters nor iptables-save -c output"),
])
def test_bad_counters_are_one_located_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "c"
    path.write_text(content, encoding="utf-8")
    code, out, err = run(EDGE, "--counters", str(path))
    assert (code, out) == (1, "")
    assert err.startswith(f"{path}{message}") and err.count("\n") == 1


# ------------------------------------------------------------------ bad input


def test_unreadable_inputs_are_one_line_each_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (tmp_path / "odd").write_text("nothing a kernel would write\nat all\n", encoding="utf-8")
    code, out, err = run(EDGE, str(tmp_path / "missing"), str(tmp_path), str(tmp_path / "bad.gz"),
                         str(tmp_path / "odd"))
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0] == f"{tmp_path / 'missing'}: cannot read: No such file or directory"
    assert lines[1] == f"{tmp_path}: cannot read: Is a directory"
    assert lines[2].startswith(f"{tmp_path / 'bad.gz'}: cannot read: ")
    assert lines[3].startswith(f"{tmp_path / 'odd'}: no line is in a known format (journalctl -k -o json,")
    assert len(lines) == 4


def test_usage_and_policy_errors(tmp_path: Path) -> None:
    assert run(EDGE)[0] == 2
    assert run(EDGE, "-", "--counters", "-")[0] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - action: allw\n", encoding="utf-8")
    code, out, err = run(str(bad), "-", stdin=b"")
    assert (code, out) == (1, "") and err.startswith(f"{bad}:3:") and err.count("\n") == 1
    assert run(EDGE, "-", "--since", "soon", stdin=b"")[0] == 2


def test_empty_input_reads_as_nothing(tmp_path: Path) -> None:
    found = doc(EDGE, "-", stdin=b"")
    assert found["inputs"][0]["lines"] == 0 and logged(found) == {}


# ------------------------------------------------------------------ output forms


def test_prometheus_textfile_format(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nname: p\nrules:\n  - name: watch\n    action: monitor\n    ports: [1261, 6000]\n",
                      encoding="utf-8")
    log = tmp_path / 'we"ird\\name'
    log.write_text("[    1.000000] " + V4.replace("dormant-watch", "watch") + "\n" + "garbage\n", encoding="utf-8")
    code, out, _ = run(str(policy), str(log), "--format", "prometheus")
    assert code == 0
    assert out == run(str(policy), str(log), "--format", "prometheus")[1]  # deterministic
    lines = out.splitlines()
    assert lines[:2] == ["# HELP fwgen_report_logged_lines Kernel or pfirewall log lines of the rule in the window "
                         "(rate-limited: a lower bound).", "# TYPE fwgen_report_logged_lines gauge"]
    assert 'fwgen_report_logged_lines{policy="p",rule="watch",action="monitor"} 1' in lines
    assert 'fwgen_report_port_logged_lines{policy="p",protocol="tcp",port="1261",service="mpshrsv"} 1' in lines
    escaped = str(log).replace("\\", "\\\\").replace('"', '\\"')
    assert f'fwgen_report_unparsed_lines{{policy="p",input="{escaped}"}} 1' in lines
    declared: list[str] = []
    for line in lines:  # HELP, TYPE, then that metric's samples, each metric once
        if line.startswith("# TYPE "):
            declared.append(line.split()[2])
        elif not line.startswith("#"):
            assert line.split("{")[0] == declared[-1]
    assert len(declared) == len(set(declared)) >= 4


def test_text_and_markdown(tmp_path: Path) -> None:
    (tmp_path / "log").write_text(FORMS["kern.log"], encoding="utf-8")
    code, out, _ = run(EDGE, str(tmp_path / "log"))
    assert code == 0
    assert "  tcp/1261 mpshrsv: at least 1 line from 1 source (dormant-watch)" in out
    assert "    by network: 198.51.100.0/24 1" in out
    code, md, _ = run(EDGE, str(tmp_path / "log"), "--format", "markdown")
    assert "| dormant-watch | monitor | in | at least 2 | - | 2026-12-02T06:07:58Z | 2026-12-02T06:08:01Z |" in md
    assert "| tcp | 1261 | mpshrsv | at least 1 | 1 | dormant-watch |" in md


def test_parser_counts_lines() -> None:
    parsed = logsources.parse_log("\n\n" + FORMS["kern.log"] + "junk\n", datetime.now(UTC))
    assert (parsed.format, parsed.lines, parsed.unparsed, len(parsed.kernel)) == ("kern.log", 5, [7], 4)


def test_log_text_reaches_the_output_escaped(tmp_path: Path) -> None:
    hostile = V4.replace("fwgen dormant-watch ", "fwgen \x1b[2Jevil|name ")
    (tmp_path / "log").write_text(f"[    1.000000] {hostile}\n", encoding="utf-8")
    code, out, _ = run(EDGE, str(tmp_path / "log"))
    assert code == 0 and "\x1b" not in out and "'\\x1b[2Jevil|name'" in out
    code, md, _ = run(EDGE, str(tmp_path / "log"), "--format", "markdown")
    assert "\\x1b[2Jevil\\|name" in md


def test_the_policy_as_it_was_at_a_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    (tmp_path / "log").write_text(FORMS["dmesg"], encoding="utf-8")
    assert logged(doc("git:HEAD:policies/edge.yaml", str(tmp_path / "log"))) == {"dormant-watch": 2, "no-x11": 1}
    code, out, err = run("git:HEAD", str(tmp_path / "log"))
    assert (code, out, err) == (1, "", "git:HEAD: not a git policy reference: write git:REV:PATH\n")


def test_random_pfirewall_lines_agree_with_explain(tmp_path: Path) -> None:
    """Seeded random connections of both directions and families, logged with the action
    explain gives them: the report attributes each to explain's rule, and every rule and
    default of the policy is hit (the coverage minimum)."""
    import random

    from fwgen.explain import Explainer
    from fwgen.registry import bundled

    policy = tmp_path / "edge.yaml"  # the example, and an outbound watch (remote = dst-ip)
    policy.write_text(Path(EDGE).read_text(encoding="utf-8") + "  - name: out-watch\n    direction: out\n"
                      "    action: monitor\n    ports: [1261]\n    to: [198.51.100.0/24]\n", encoding="utf-8")
    explainer = Explainer.from_file(str(policy), bundled())
    rng = random.Random(14)
    remotes = {4: ["192.0.2.7", "198.51.100.9", "203.0.113.200"], 6: ["2001:db8:a::7", "2001:db8:ff::9"]}
    local = {4: "192.0.2.1", 6: "2001:db8:a::1"}
    lines, want = [], Counter()
    for n in range(400):
        family, direction = rng.choice((4, 6)), rng.choice(("in", "in", "out"))
        protocol = rng.choice(("tcp", "udp", "icmp" if family == 4 else "icmpv6"))
        port = rng.choice((22, 80, 443, 1261, 1274, 6000, 6063, 6064, 9999)) if protocol in ("tcp", "udp") else None
        icmp = (rng.choice((0, 3, 8, 128, 135)), 0) if port is None else None
        remote = rng.choice(remotes[family])
        verdict = explainer.verdict(direction, protocol, port, remote, local=local[family], icmp=icmp)
        src, dst = (remote, local[family]) if direction == "in" else (local[family], remote)
        ports = ("-", "-") if port is None else (40000 + n, port)
        kind = ("-", "-") if icmp is None else icmp
        lines.append(f"2026-12-02 06:{n // 60:02d}:{n % 60:02d} {'DROP' if verdict.action == 'deny' else 'ALLOW'} "
                     f"{protocol.upper()} {src} {dst} {ports[0]} {ports[1]} 0 - - - - {kind[0]} {kind[1]} - "
                     f"{'RECEIVE' if direction == 'in' else 'SEND'} 4")
        name = verdict.rule or ("default-inbound" if direction == "in" else None)
        if name:
            want[name] += 1
    path = tmp_path / "pfirewall.log"
    path.write_text(f"#Version: 1.5\n#Fields: {FIELDS}\n" + "\n".join(lines) + "\n", encoding="utf-8")
    found = doc(str(policy), str(path))
    assert logged(found) == dict(want)
    assert set(want) == {r["name"] for r in found["rules"]}  # every rule and the default deny hit
    assert found["inputs"][0]["unparsed"] == 0 and found["inputs"][0]["disagreeing"] == 0


def test_the_docs_story_is_what_the_capture_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/report.md pastes the report of a real capture (tests/report_capture/, made by
    `python -m tests.kernel.test_report DIR`); it stays what fwgen prints for it."""
    import re

    text = (ROOT / "docs" / "report.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```console\n\$ fwgen report (.*?)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 2
    monkeypatch.chdir(ROOT / "tests" / "report_capture")
    for command, output in blocks:
        args = command.replace("policies/edge.yaml", EDGE).split()
        code, out, _ = run(*args)
        assert code == 0 and out == output, command
    markdown = re.search(r"^````markdown\n(.*?)^````$", text, re.MULTILINE | re.DOTALL)
    assert markdown is not None
    assert run(EDGE, "kern.log", "--counters", "counters.json", "--format", "markdown")[1] == markdown.group(1)
