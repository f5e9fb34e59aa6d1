"""``fwgen diff OLD NEW``: the semantic change between two policies (docs/diff.md).

Real policies from policies/ are copied into tmp_path and edited; the expected lines are
exact. A hypothesis test checks every change (and every absence of one) against the
reference interpreter, ``Explainer.verdict``, on random policy pairs.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwgen import registry
from fwgen.cli import main
from fwgen.diff import Change, Outcome, diff_policies, diff_specs, parse_text
from fwgen.diff_format import render
from fwgen.explain import Explainer, Verdict

POLICIES = Path(__file__).resolve().parents[1] / "policies"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["diff", *args])


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the current directory, holding copies of the example policies."""
    for policy in POLICIES.glob("*.yaml"):
        shutil.copy(policy, tmp_path / policy.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def edited(src: str, dst: str, old: str, new: str) -> str:
    text = Path(src).read_text(encoding="utf-8")
    assert old in text, old
    Path(dst).write_text(text.replace(old, new, 1), encoding="utf-8")
    return dst


def where(path: str, needle: str) -> tuple[int, int]:
    """1-based line and column of ``needle`` in the file."""
    text = Path(path).read_text(encoding="utf-8")
    at = text.index(needle)
    return text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1


def lines(result: Result) -> list[str]:
    return result.stdout.splitlines()


# ---------------------------------------------------------------------- no change


def test_identical_policy_is_no_change(work: Path) -> None:
    shutil.copy("edge.yaml", "copy.yaml")
    result = run("edge.yaml", "copy.yaml")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "no semantic change\n", "")


REFORMATTED_EDGE = """\
{version: 1, name: edge,
 description: "Edge web host - admin SSH, public HTTPS, dormant services watched",
 monitor: {rate: 10/minute, log_prefix: fwgen},
 defaults: {deny: drop, outbound: allow},
 rules: [
   {comment: SSH from the admin network only, from: [192.0.2.0/25, "192.0.2.128/25", "2001:db8:a::/48"],
    ports: SSH, protocol: tcp, action: allow, name: admin-ssh},
   {name: web, action: allow, ports: ["80", https/tcp], protocol: tcp},
   {name: dormant-watch, action: monitor, ports: [1261, t1distproc],
    comment: "Registered in the 1990s, unused here; let it through but log who knocks"},
   {name: no-x11, action: deny, log: true, ports: "6000-6063", direction: in, comment: Never expose X11},
   {name: ping, action: allow, protocol: ICMP, icmp: [8], comment: "Reachability checks; replies and errors
     already pass as related"},
   {icmp: [echo-request], protocol: 58, action: allow, name: ping6}]}
"""


def test_reformat_reorder_keys_flow_style_is_no_change(work: Path) -> None:
    # Flow instead of block style, keys reordered, YAML comments gone, a default written
    # out implicitly, names for numbers and numbers for names, a network split in two.
    Path("reformatted.yaml").write_text(REFORMATTED_EDGE, encoding="utf-8")
    result = run("edge.yaml", "reformatted.yaml")
    assert (result.exit_code, result.stdout) == (0, "no semantic change\n")


def test_reorder_of_non_overlapping_rules_is_no_change(work: Path) -> None:
    text = Path("edge.yaml").read_text(encoding="utf-8")
    head, _, body = text.partition("rules:")
    rules = ["  - name:" + chunk for chunk in body.split("  - name:")[1:]]
    Path("reversed.yaml").write_text(head + "rules:\n" + "".join(reversed(rules)), encoding="utf-8")
    result = run("edge.yaml", "reversed.yaml")
    assert (result.exit_code, result.stdout) == (0, "no semantic change\n")


def test_metadata_only_is_no_change_with_a_note(work: Path) -> None:
    edited("edge.yaml", "desc.yaml", "description: Edge web host", "description: Edge host")
    edited("desc.yaml", "desc2.yaml", "comment: Never expose X11", "comment: X11 stays closed")
    result = run("edge.yaml", "desc2.yaml")
    assert result.exit_code == 0
    assert lines(result) == ["no semantic change", "metadata changed: description, comments"]


# ---------------------------------------------------------------------- changes


def test_reorder_of_overlapping_rules(work: Path) -> None:
    # watch-dormant (monitor) moved below close-dormant (deny, log): the ports both
    # list become denied and logged.
    text = Path("dormant-ports.yaml").read_text(encoding="utf-8")
    a, b, c = (text.index(f"  - name: {n}") for n in ("watch-dormant", "close-dormant", "no-remote-x"))
    Path("swapped.yaml").write_text(text[:a] + text[b:c] + text[a:b] + text[c:], encoding="utf-8")
    result = run("dormant-ports.yaml", "swapped.yaml")
    assert result.exit_code == 1
    assert lines(result) == [
        "in tcp 1261,2013 (mpshrsv, raid-am) from any: monitor → deny +log",
        "in udp 1261,1274,2007 (mpshrsv, t1distproc, raid-am) from any: monitor → deny +log",
    ]


def test_port_added_to_monitor_rule(work: Path) -> None:
    edited("edge.yaml", "new.yaml", "ports: [mpshrsv, t1distproc]", "ports: [mpshrsv, t1distproc, 1262, 1275]")
    result = run("edge.yaml", "new.yaml")
    assert result.exit_code == 1
    assert lines(result) == ["in tcp,udp 1262,1275 (qnts-orb, ivcollector) from any: deny → monitor"]


def test_deny_turned_to_monitor(work: Path) -> None:
    edited("edge.yaml", "new.yaml", "    action: deny\n    log: true", "    action: monitor\n    log: true")
    result = run("edge.yaml", "new.yaml")
    assert lines(result) == ["in tcp,udp 6000-6063 (x11) from any: deny +log → monitor"]
    assert result.exit_code == 1


def test_monitor_turned_to_deny(work: Path) -> None:
    edited("edge.yaml", "new.yaml", "action: monitor", "action: deny")
    result = run("edge.yaml", "new.yaml")
    assert lines(result) == ["in tcp,udp 1261,1274 (mpshrsv, t1distproc) from any: monitor → deny"]


def test_widened_address_lists_only_new_addresses(work: Path) -> None:
    edited("edge.yaml", "new.yaml", "from: [192.0.2.0/24, ", "from: [192.0.2.0/23, 10.0.0.7, ")
    result = run("edge.yaml", "new.yaml")
    assert lines(result) == ["in tcp 22 (ssh) from 10.0.0.7/32, 192.0.3.0/24: deny → allow"]
    # and back: the same addresses, the other way round
    assert lines(run("new.yaml", "edge.yaml")) == ["in tcp 22 (ssh) from 10.0.0.7/32, 192.0.3.0/24: allow → deny"]


def test_address_restriction_removed_uses_except(work: Path) -> None:
    edited("edge.yaml", "new.yaml", '    from: [192.0.2.0/24, "2001:db8:a::/48"]\n', "")
    result = run("edge.yaml", "new.yaml")
    assert lines(result) == ["in tcp 22 (ssh) from any except 192.0.2.0/24, 2001:db8:a::/48: deny → allow"]


def test_defaults_changed(work: Path) -> None:
    edited("edge.yaml", "open.yaml", "inbound: deny", "inbound: allow")
    result = run("edge.yaml", "open.yaml")
    assert result.exit_code == 1
    assert lines(result) == [
        "in tcp 0-21,23-79,81-442,444-1260,1262-1273,1275-5999,6064-65535 (tcpmux, rje, echo, …) "
        "from any: deny → allow",
        "in tcp 22 (ssh) from any except 192.0.2.0/24, 2001:db8:a::/48: deny → allow",
        "in udp 0-1260,1262-1273,1275-5999,6064-65535 (tcpmux, rje, echo, …) from any: deny → allow",
        # The default decides every protocol, not only those rules name (1.0's chain
        # policy did too): ICMP, ESP, ... are opened by this edit as well.
        "in icmp every type but 8 (echo-request) from any IPv4: deny → allow",
        "in icmpv6 every type but 128 (echo-request) from any IPv6: deny → allow",
        "in every other protocol from any: deny → allow",
    ]


def test_drop_to_reject_and_logging(work: Path) -> None:
    edited("edge.yaml", "reject.yaml", "deny: drop", "deny: reject")
    assert lines(run("edge.yaml", "reject.yaml"))[2] == (
        "in tcp,udp 6000-6063 (x11) from any: deny (drop) +log → deny (reject) +log"
    )
    edited("edge.yaml", "logged.yaml", "    action: allow\n    protocol: tcp\n    ports: [http, https]",
           "    action: allow\n    log: true\n    protocol: tcp\n    ports: [http, https]")
    assert lines(run("edge.yaml", "logged.yaml")) == ["in tcp 80,443 (http, https) from any: allow → allow +log"]


def test_family_split(work: Path) -> None:
    # no-remote-x denies X11 from IPv6 only; making it IPv4-only changes both families.
    edited("dormant-ports.yaml", "new.yaml", 'from: ["::/0"]', "from: [0.0.0.0/0]")
    assert lines(run("dormant-ports.yaml", "new.yaml")) == [
        "in tcp,udp 6000-6063 (x11) from any IPv4: allow → deny",
        "in tcp,udp 6000-6063 (x11) from any IPv6: deny → allow",
    ]


# ---------------------------------------------------------------------- formats


def test_markdown(work: Path) -> None:
    edited("edge.yaml", "new.yaml", "    action: deny\n    log: true", "    action: monitor\n    log: true")
    result = run("edge.yaml", "new.yaml", "--format", "markdown")
    assert result.exit_code == 1
    assert result.stdout == (
        "### fwgen diff: `edge.yaml` → `new.yaml`\n"
        "\n"
        "| direction | protocol | ports (names) | remote | before | after |\n"
        "|---|---|---|---|---|---|\n"
        "| in | tcp, udp | 6000-6063 (x11) | any | deny +log | monitor |\n"
        "\n"
        "1 semantic change.\n"
    )
    shutil.copy("edge.yaml", "same.yaml")
    same = run("edge.yaml", "same.yaml", "--format", "markdown")
    assert same.exit_code == 0
    assert same.stdout == "### fwgen diff: `edge.yaml` → `same.yaml`\n\nNo semantic change.\n"


def test_json(work: Path) -> None:
    edited("edge.yaml", "new.yaml", "from: [192.0.2.0/24, ", "from: [192.0.2.0/23, ")
    edited("new.yaml", "new2.yaml", "deny: drop", "deny: reject")
    result = run("edge.yaml", "new2.yaml", "--format", "json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert list(doc) == ["old", "new", "changed", "count", "changes", "metadata_changed", "settings_changed"]
    assert (doc["old"], doc["new"], doc["changed"], doc["count"]) == ("edge.yaml", "new2.yaml", True, 8)
    assert doc["metadata_changed"] == []
    ssh = [c for c in doc["changes"] if c["ports"] == [[22, 22]]]
    assert ssh == [
        {
            "direction": "in", "protocols": ["tcp"], "ports": [[22, 22]], "icmp": [], "ports_text": "22 (ssh)",
            "remote": ssh[0]["remote"],  # checked below
            "remote_text": "any except 192.0.2.0/23, 2001:db8:a::/48",
            "local": None, "interfaces": None, "profiles": None,
            "before": {"verdict": "deny", "enforced": "drop", "logged": False},
            "after": {"verdict": "deny", "enforced": "reject", "logged": False},
        },
        {
            "direction": "in", "protocols": ["tcp"], "ports": [[22, 22]], "icmp": [], "ports_text": "22 (ssh)",
            "remote": ["192.0.3.0/24"], "remote_text": "192.0.3.0/24",
            "local": None, "interfaces": None, "profiles": None,
            "before": {"verdict": "deny", "enforced": "drop", "logged": False},
            "after": {"verdict": "allow", "enforced": "accept", "logged": False},
        },
    ]
    assert ssh[0]["remote"][:2] == ["0.0.0.0/1", "128.0.0.0/2"] and "::/3" in ssh[0]["remote"]
    # The CIDR list is exact: it and 192.0.2.0/23 + 2001:db8:a::/48 cover both spaces once.
    everything = [ipaddress.ip_network(n) for n in ssh[0]["remote"]] + [
        ipaddress.ip_network("192.0.2.0/23"), ipaddress.ip_network("2001:db8:a::/48")]
    assert sum(n.num_addresses for n in everything if n.version == 4) == 1 << 32
    assert sum(n.num_addresses for n in everything if n.version == 6) == 1 << 128
    assert list(ipaddress.collapse_addresses(n for n in everything if n.version == 4)) == [
        ipaddress.ip_network("0.0.0.0/0")]
    assert list(ipaddress.collapse_addresses(n for n in everything if n.version == 6)) == [
        ipaddress.ip_network("::/0")]


def test_json_no_change(work: Path) -> None:
    edited("edge.yaml", "desc.yaml", "description: Edge web host", "description: Edge host")
    result = run("edge.yaml", "desc.yaml", "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "old": "edge.yaml", "new": "desc.yaml", "changed": False, "count": 0, "changes": [],
        "metadata_changed": ["description"], "settings_changed": [],
    }


def test_published_ports_is_a_semantic_change(work: Path) -> None:
    """Turning published_ports on changes the fate of connections to published container
    ports, which the inbound rules alone do not show: exit 1, one line in each format."""
    edited("edge.yaml", "enforce.yaml", "version: 1\n", "version: 1\npublished_ports: enforce\n")
    line = ("published_ports: ignore → enforce (connections to ports published to local containers: judged by "
            "the inbound rules)")
    result = run("edge.yaml", "enforce.yaml")
    assert (result.exit_code, result.stdout) == (1, line + "\n")
    back = run("enforce.yaml", "edge.yaml", "--format", "json")
    assert back.exit_code == 1
    doc = json.loads(back.stdout)
    assert (doc["changed"], doc["count"], doc["settings_changed"]) == (True, 0, [
        "published_ports: enforce → ignore (connections to ports published to local containers: no longer "
        "judged by the inbound rules)"])
    markdown = run("edge.yaml", "enforce.yaml", "--format", "markdown")
    assert markdown.exit_code == 1 and f"- {line}\n" in markdown.stdout and "No semantic change" not in markdown.stdout
    same = run("enforce.yaml", "enforce.yaml")
    assert (same.exit_code, same.stdout) == (0, "no semantic change\n")


# ---------------------------------------------------------------------- trouble: exit 2


def test_bad_policy_is_one_located_line_exit_2(work: Path) -> None:
    edited("edge.yaml", "typo.yaml", "ports: [mpshrsv, t1distproc]", "ports: [mpshrv, t1distproc]")
    result = run("edge.yaml", "typo.yaml")
    assert result.exit_code == 2
    assert result.stdout == ""
    line, col = where("typo.yaml", "mpshrv")
    assert result.stderr == f"typo.yaml:{line}:{col}: unknown service 'mpshrv' (did you mean 'mpshrsv'?)\n"


def test_missing_file_is_one_line_exit_2(work: Path) -> None:
    result = run("edge.yaml", "nope.yaml")
    assert result.exit_code == 2
    assert result.stderr == "nope.yaml: cannot read policy: No such file or directory\n"


def test_usage_error_exits_2(work: Path) -> None:
    assert run("edge.yaml").exit_code == 2
    assert run("edge.yaml", "edge.yaml", "--format", "html").exit_code == 2


# ---------------------------------------------------------------------- git


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=fwgen test", "-c", "user.email=test@example.invalid",
         "-c", "commit.gpgsign=false", *args],
        cwd=repo, check=True, capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """v1: edge.yaml; v2: a port added to the monitor rule; v3: v2 reformatted."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git(tmp_path, "init", "-q")
    policy = tmp_path / "policy.yaml"
    v1 = (POLICIES / "edge.yaml").read_text(encoding="utf-8")
    policy.write_text(v1, encoding="utf-8")
    git(tmp_path, "add", "policy.yaml")
    git(tmp_path, "commit", "-q", "-m", "v1")
    v2 = v1.replace("ports: [mpshrsv, t1distproc]", "ports: [mpshrsv, t1distproc, 1262]")
    policy.write_text(v2, encoding="utf-8")
    git(tmp_path, "commit", "-q", "-a", "-m", "v2")
    v3 = v2.replace("ports: [mpshrsv, t1distproc, 1262]", "ports:\n      - mpshrsv\n      - 1262\n      - 1274")
    v3 = "\n".join(line for line in v3.splitlines() if not line.lstrip().startswith("#")) + "\n"
    policy.write_text(v3, encoding="utf-8")
    git(tmp_path, "commit", "-q", "-a", "-m", "v3 (reformatted)")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_git_revisions_changed(repo: Path) -> None:
    result = run("git:HEAD~2:policy.yaml", "git:HEAD~1:policy.yaml")
    assert (result.exit_code, result.stderr) == (1, "")
    assert lines(result) == ["in tcp,udp 1262 (qnts-orb) from any: deny → monitor"]


def test_git_reformat_is_no_change(repo: Path) -> None:
    result = run("git:HEAD~1:policy.yaml", "git:HEAD:policy.yaml")
    assert (result.exit_code, result.stdout) == (0, "no semantic change\n")


def test_git_against_working_file(repo: Path) -> None:
    Path("policy.yaml").write_text(
        Path("policy.yaml").read_text(encoding="utf-8").replace("inbound: deny", "inbound: allow"),
        encoding="utf-8",
    )
    result = run("git:HEAD:policy.yaml", "policy.yaml", "--format", "markdown")
    assert result.exit_code == 1
    assert result.stdout.startswith("### fwgen diff: `git:HEAD:policy.yaml` → `policy.yaml`\n")
    assert result.stdout.endswith("| in | every other protocol |  | any | deny | allow |\n\n6 semantic changes.\n")


def test_git_missing_revision_is_one_line_exit_2(repo: Path) -> None:
    result = run("git:HEAD~9:policy.yaml", "policy.yaml")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == "git:HEAD~9:policy.yaml: cannot read policy: invalid object name 'HEAD~9'\n"


def test_git_missing_path_is_one_line_exit_2(repo: Path) -> None:
    result = run("git:HEAD:nope.yaml", "policy.yaml")
    assert result.exit_code == 2
    assert result.stderr == (
        "git:HEAD:nope.yaml: cannot read policy: path 'nope.yaml' does not exist in 'HEAD'\n"
    )
    assert run("git:HEAD", "policy.yaml").stderr == (
        "git:HEAD: not a git policy reference: write git:REV:PATH\n"
    )


def test_git_bad_policy_is_located_in_git_name(repo: Path) -> None:
    policy = Path("policy.yaml")
    policy.write_text(policy.read_text(encoding="utf-8").replace("- mpshrsv", "- mpshrv"), encoding="utf-8")
    git(repo, "commit", "-q", "-a", "-m", "typo")
    result = run("git:HEAD~1:policy.yaml", "git:HEAD:policy.yaml")
    assert result.exit_code == 2
    line, col = where("policy.yaml", "mpshrv")
    assert result.stderr == (
        f"git:HEAD:policy.yaml:{line}:{col}: unknown service 'mpshrv' (did you mean 'mpshrsv'?)\n"
    )
    policy.write_text("version: 1\nrules: [\n", encoding="utf-8")
    git(repo, "commit", "-q", "-a", "-m", "broken")
    result = run("git:HEAD:policy.yaml", "git:HEAD~1:policy.yaml")
    assert result.exit_code == 2
    assert result.stderr == "git:HEAD:policy.yaml:3:1: YAML syntax error: did not find expected node content\n"


# ---------------------------------------------------------------------- performance


def big_policy(rules: int, seed: int) -> str:
    rng = random.Random(seed)
    out = ["version: 1", "name: big", "defaults:", "  inbound: deny", "  outbound: allow", "rules:"]
    for i in range(rules):
        out.append(f"  - name: r{i}")
        out.append(f"    action: {rng.choice(['allow', 'deny', 'monitor'])}")
        key = "from"
        if rng.random() < 0.3:
            out.append("    direction: out")
            key = "to"
        lo = rng.randrange(1, 60000)
        out.append(f'    ports: ["{lo}-{lo + rng.randrange(1, 50)}"]' if rng.random() < 0.2 else f"    ports: [{lo}]")
        if rng.random() < 0.3:
            out.append(f'    {key}: [10.{rng.randrange(256)}.0.0/16, "2001:db8:{rng.randrange(65536):x}::/48"]')
    return "\n".join(out) + "\n"


def test_two_thousand_rules_one_changed(tmp_path: Path) -> None:
    text = big_policy(2000, seed=7)
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(text, encoding="utf-8")
    # r1234 becomes an allow for ports 4000-4001 from anywhere
    start = text.index("  - name: r1234\n")
    end = text.index("  - name: r1235\n")
    new.write_text(text[:start] + '  - name: r1234\n    action: allow\n    ports: ["4000-4001/tcp"]\n'
                   + text[end:], encoding="utf-8")
    reg = registry.bundled()
    result = diff_specs(str(old), str(new), reg)
    # r1234 was "monitor 48960-48982 from 10.194.0.0/16, 2001:db8:4480::/48"; no other
    # inbound rule covers those ports or 4000-4001.
    assert render(result, reg).splitlines() == [
        "in tcp 4000-4001 (terabase, newoak) from any: deny → allow",
        "in tcp,udp 48960-48982 from 10.194.0.0/16, 2001:db8:4480::/48: monitor → deny",
    ]


# ---------------------------------------------------------------------- the reference


NETS = ["10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24", "192.0.2.128/25", "192.0.2.7", "0.0.0.0/0",
        "2001:db8::/32", "2001:db8:1::/48", "2001:db8::1", "::/0"]
PORTS = [*range(0, 16), 65535]


def _probe_addresses() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for text in NETS:
        net = ipaddress.ip_network(text)
        top = (1 << net.max_prefixlen) - 1
        for value in (int(net.network_address) - 1, int(net.network_address),
                      int(net.broadcast_address), int(net.broadcast_address) + 1):
            if 0 <= value <= top:
                found.add(ipaddress.ip_address(value) if net.version == 4 else ipaddress.IPv6Address(value))
    return sorted(found, key=lambda a: (a.version, int(a)))


ADDRESSES = _probe_addresses()

port_entry = st.tuples(st.integers(0, 13), st.integers(0, 3)).map(
    lambda t: f'"{t[0]}-{t[0] + t[1]}"' if t[1] else str(t[0])
)
rule_strategy = st.fixed_dictionaries({
    "action": st.sampled_from(["allow", "deny", "monitor"]),
    "log": st.booleans(),
    "direction": st.sampled_from(["in", "out"]),
    "protocol": st.sampled_from([None, "tcp", "udp", "any"]),
    "ports": st.one_of(st.none(), st.lists(port_entry, min_size=1, max_size=3)),
    "remote": st.one_of(st.none(), st.lists(st.sampled_from(NETS), min_size=1, max_size=3, unique=True)),
})
defaults_strategy = st.tuples(
    st.sampled_from(["allow", "deny"]), st.sampled_from(["allow", "deny"]), st.sampled_from(["drop", "reject"])
)


def render_policy(defaults: tuple[str, str, str], rules: list[dict[str, object]]) -> bytes:
    out = ["version: 1", "name: p",
           f"defaults: {{inbound: {defaults[0]}, outbound: {defaults[1]}, deny: {defaults[2]}}}", "rules:"]
    if not rules:
        out[-1] = "rules: []"
    for rule in rules:
        out.append(f"  - action: {rule['action']}")
        if rule["log"]:
            out.append("    log: true")
        out.append(f"    direction: {rule['direction']}")
        if rule["protocol"]:
            out.append(f"    protocol: {rule['protocol']}")
        if rule["ports"]:
            out.append(f"    ports: [{', '.join(rule['ports'])}]")  # type: ignore[arg-type]
        if rule["remote"]:
            key = "from" if rule["direction"] == "in" else "to"
            out.append(f"    {key}: [{', '.join(repr(n) for n in rule['remote'])}]")  # type: ignore[attr-defined]
    return ("\n".join(out) + "\n").encode()


def _outcome(verdict: Verdict) -> Outcome:
    return Outcome(verdict.action, verdict.enforced, verdict.logged)


def _covers(change: Change, direction: str, protocol: str, port: int,
            address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    spans = change.v4 if address.version == 4 else change.v6
    return (
        change.direction == direction and protocol in change.protocols
        and any(lo <= port <= hi for lo, hi in change.ports)
        and any(lo <= int(address) <= hi for lo, hi in spans)
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_agrees_with_explain(data: st.DataObject) -> None:
    """Random pairs (unrelated, or the second a shuffled copy of the first with one rule
    replaced or inserted): at every probe port and address, the diff lists a change
    exactly where the reference interpreter's outcomes differ, with those outcomes."""
    old_defaults = data.draw(defaults_strategy)
    old_rules = data.draw(st.lists(rule_strategy, max_size=5))
    new_defaults = old_defaults if data.draw(st.booleans()) else data.draw(defaults_strategy)
    if data.draw(st.booleans()):
        new_rules = data.draw(st.lists(rule_strategy, max_size=5))
    else:
        new_rules = data.draw(st.permutations(old_rules))
        at = data.draw(st.integers(0, len(new_rules)))
        edit = data.draw(st.sampled_from(["replace", "insert", "none"]))
        if edit == "replace" and at < len(new_rules):
            new_rules[at] = data.draw(rule_strategy)
        elif edit == "insert":
            new_rules.insert(at, data.draw(rule_strategy))
    reg = registry.bundled()
    old = parse_text(render_policy(old_defaults, old_rules), "p.yaml", "old.yaml")
    new = parse_text(render_policy(new_defaults, new_rules), "p.yaml", "new.yaml")
    result = diff_policies(old, new, reg)
    old_e, new_e = Explainer(old, reg), Explainer(new, reg)
    for direction in ("in", "out"):
        for protocol in ("tcp", "udp"):
            for port in PORTS:
                for address in ADDRESSES:
                    before = _outcome(old_e.verdict(direction, protocol, port, address))
                    after = _outcome(new_e.verdict(direction, protocol, port, address))
                    covering = [c for c in result.changes if _covers(c, direction, protocol, port, address)]
                    where = f"{direction} {protocol} {port} {address}"
                    if before == after:
                        assert covering == [], where
                    else:
                        assert len(covering) == 1, where
                        assert (covering[0].before, covering[0].after) == (before, after), where


def _spans(networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network], family: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted((int(n.network_address), int(n.broadcast_address)) for n in networks if n.version == family):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _intersect_spans(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(max(x[0], y[0]), min(x[1], y[1])) for x in a for y in b if max(x[0], y[0]) <= min(x[1], y[1])]


def _normal(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


@pytest.mark.parametrize("old_name", ["edge", "dormant-ports", "locked-down"])
@pytest.mark.parametrize("new_name", ["edge", "dormant-ports", "locked-down"])
def test_example_pairs_agree_with_explain_regions(old_name: str, new_name: str) -> None:
    """Every pair of example policies: at both ends of every elementary port interval,
    intersecting the two policies' ``Explainer.regions`` gives exactly the changes."""
    from fwgen.policy import load_policy
    from fwgen.resolve import resolve_ports

    reg = registry.bundled()
    old, new = (load_policy(str(POLICIES / f"{n}.yaml")) for n in (old_name, new_name))
    result = diff_policies(old, new, reg)
    if old_name == new_name:
        assert result.changes == ()
    old_e, new_e = Explainer(old, reg), Explainer(new, reg)
    for direction in ("in", "out"):
        for protocol in ("tcp", "udp"):
            cuts = {0}
            for policy in (old, new):
                for rule in policy.rules:
                    if rule.direction != direction:
                        continue
                    for proto, ranges in resolve_ports(rule, reg).items():
                        if proto.value == protocol:
                            for r in ranges:
                                cuts.update((r.lo, r.hi + 1))
            starts = sorted(c for c in cuts if c <= 65535)
            probes = set(starts) | {s - 1 for s in starts if s > 0} | {65535}
            for port in sorted(probes):
                expected: dict[tuple[Outcome, Outcome], dict[int, list[tuple[int, int]]]] = {}
                for nets_o, v_o in old_e.regions(direction, protocol, port):
                    for nets_n, v_n in new_e.regions(direction, protocol, port):
                        if _outcome(v_o) == _outcome(v_n):
                            continue
                        for family in (4, 6):
                            both = _intersect_spans(_spans(nets_o, family), _spans(nets_n, family))
                            if both:
                                slot = expected.setdefault((_outcome(v_o), _outcome(v_n)), {4: [], 6: []})
                                slot[family].extend(both)
                got: dict[tuple[Outcome, Outcome], dict[int, list[tuple[int, int]]]] = {}
                for c in result.changes:
                    if c.direction == direction and protocol in c.protocols and any(
                            lo <= port <= hi for lo, hi in c.ports):
                        slot = got.setdefault((c.before, c.after), {4: [], 6: []})
                        slot[4].extend(c.v4)
                        slot[6].extend(c.v6)
                norm = {k: {f: _normal(v[f]) for f in (4, 6)} for k, v in expected.items()}
                mine = {k: {f: _normal(v[f]) for f in (4, 6)} for k, v in got.items()}
                assert mine == norm, f"{direction} {protocol} {port}"


# ---------------------------------------------------------------------- the reference, every match


LOCALS = ["10.9.0.2", "10.9.0.0/24", "2001:db8:ffff::2", "2001:db8:ffff::/64"]
INTERFACES = ["wg0", "wg*", "eth0", "eth*"]
PROTOCOLS = [None, "tcp", "udp", "icmp", "icmpv6", "esp", "47", "all"]
ICMP = {"icmp": ["8", "0", "3/4", "3", "echo-request"], "icmpv6": ["128", "1", "1/4", "echo-reply"]}

wide_rule = st.fixed_dictionaries({
    "action": st.sampled_from(["allow", "deny", "monitor"]),
    "log": st.booleans(),
    "direction": st.sampled_from(["in", "out"]),
    "protocol": st.sampled_from(PROTOCOLS),
    "ports": st.one_of(st.none(), st.lists(port_entry, min_size=1, max_size=2)),
    "icmp": st.one_of(st.none(), st.integers(1, 2)),
    "remote": st.one_of(st.none(), st.lists(st.sampled_from(NETS), min_size=1, max_size=2, unique=True)),
    "local": st.one_of(st.none(), st.lists(st.sampled_from(LOCALS), min_size=1, max_size=2, unique=True)),
    "interface": st.one_of(st.none(), st.lists(st.sampled_from(INTERFACES), min_size=1, max_size=2, unique=True)),
    "profiles": st.one_of(st.none(), st.lists(st.sampled_from(["domain", "private", "public"]), min_size=1,
                                              max_size=2, unique=True)),
})


def render_wide(defaults: tuple[str, str, str], rules: list[dict[str, object]], seed: int) -> bytes:
    """Like render_policy, for every match; what a protocol cannot have is left out
    (ports on icmp, an IPv6 network on an icmp rule), so every policy loads."""
    rng = random.Random(seed)
    out = ["version: 1", "name: p",
           f"defaults: {{inbound: {defaults[0]}, outbound: {defaults[1]}, deny: {defaults[2]}}}", "rules:"]
    if not rules:
        out[-1] = "rules: []"
    for rule in rules:
        protocol = rule["protocol"]
        family = {"icmp": 4, "icmpv6": 6}.get(str(protocol))
        out.append(f"  - action: {rule['action']}")
        if rule["log"]:
            out.append("    log: true")
        out.append(f"    direction: {rule['direction']}")
        if protocol:
            out.append(f"    protocol: {protocol}")
        if rule["ports"] and protocol in (None, "tcp", "udp"):
            out.append(f"    ports: [{', '.join(rule['ports'])}]")  # type: ignore[arg-type]
        if rule["icmp"] and family:
            out.append(f"    icmp: [{', '.join(rng.sample(ICMP[str(protocol)], int(rule['icmp'])))}]")  # type: ignore[call-overload]
        for key, values in (("from" if rule["direction"] == "in" else "to", rule["remote"]), ("local", rule["local"])):
            chosen = [v for v in values or () if family is None or ipaddress.ip_network(v).version == family]
            if chosen:
                out.append(f"    {key}: [{', '.join(repr(v) for v in chosen)}]")
        if rule["interface"]:
            out.append(f"    interface: [{', '.join(repr(v) for v in rule['interface'])}]")  # type: ignore[attr-defined]
        if rule["profiles"]:
            out.append(f"    profiles: [{', '.join(rule['profiles'])}]")  # type: ignore[arg-type]
    return ("\n".join(out) + "\n").encode()


def _loads(text: bytes) -> bool:
    from fwgen.errors import PolicyError
    from fwgen.resolve import compile_policy

    try:
        compile_policy(parse_text(text, "p.yaml", "p.yaml"), registry.bundled())
    except PolicyError:
        return False  # remote and local of no common family: an error, rightly
    return True


# (protocol asked of explain, the label a change names it by when a rule names it, number)
WIDE_PROTOCOLS = [("tcp", "tcp", 6), ("udp", "udp", 17), ("icmp", "icmp", 1), ("icmpv6", "icmpv6", 58),
                  ("esp", "esp", 50), ("gre", "gre", 47), ("vrrp", "vrrp", 112)]
WIDE_PORTS = [0, 1, 7, 13, 65535]
WIDE_ICMP = {"icmp": [(8, 0), (0, 0), (3, 4), (3, 3), (11, 0)], "icmpv6": [(128, 0), (129, 0), (1, 4), (1, 0)]}
WIDE_REMOTES = {4: ["10.1.2.3", "192.0.2.7", "198.51.100.1"], 6: ["2001:db8::1", "2001:db8:1::5", "2001:db9::1"]}
WIDE_LOCALS = {4: ["10.9.0.2", "10.9.0.9", "203.0.113.1"], 6: ["2001:db8:ffff::2", "2001:db8:ffff::9", "2001:db9::2"]}
WIDE_INTERFACES = ["wg0", "wg1", "eth0", "eth1", "lo"]


def _selectors(protocol: str) -> list[tuple[int | None, tuple[int, int] | None, int]]:
    """(port, icmp, point on the change's selector axis) to ask about."""
    if protocol in ("tcp", "udp"):
        return [(port, None, port) for port in WIDE_PORTS]
    if protocol in WIDE_ICMP:
        return [(None, (t, c), t << 8 | c) for t, c in WIDE_ICMP[protocol]]
    return [(None, None, 0)]


def _wide_covers(change: Change, direction: str, label: str, point: int, remote: str, local: str,
                 interface: str, profile: str) -> bool:
    remote_address, local_address = ipaddress.ip_address(remote), ipaddress.ip_address(local)
    spans = change.v4 if remote_address.version == 4 else change.v6
    return (
        change.direction == direction and label in change.protocols
        and any(lo <= point <= hi for lo, hi in change.ports)
        and any(lo <= int(remote_address) <= hi for lo, hi in spans)
        and (change.local is None or (change.local[0] == local_address.version
                                      and any(lo <= int(local_address) <= hi for lo, hi in change.local[1])))
        and change.on_interface(interface)
        and (change.profiles is None or profile in change.profiles)
    )


@settings(max_examples=int(os.environ.get("FWGEN_DIFF_EXAMPLES", "20")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_match_agrees_with_explain(data: st.DataObject) -> None:
    """As test_agrees_with_explain, over every dimension: protocols (by keyword, number,
    all), ICMP types, local addresses, interfaces (names and prefixes) and profiles. At
    every probe, the diff lists a change exactly where explain's outcomes differ."""
    from fwgen.diff import _mentioned, _protocol_label  # the labels are presentation

    old_defaults = data.draw(defaults_strategy)
    old_rules = data.draw(st.lists(wide_rule, max_size=5))
    new_defaults = old_defaults if data.draw(st.booleans()) else data.draw(defaults_strategy)
    if data.draw(st.booleans()):
        new_rules = data.draw(st.lists(wide_rule, max_size=5))
    else:
        new_rules = data.draw(st.permutations(old_rules))
        at = data.draw(st.integers(0, len(new_rules)))
        if data.draw(st.booleans()) and at < len(new_rules):
            new_rules[at] = data.draw(wide_rule)
        else:
            new_rules.insert(at, data.draw(wide_rule))
    seed = data.draw(st.integers(0, 1 << 16))
    old_text, new_text = render_wide(old_defaults, old_rules, seed), render_wide(new_defaults, new_rules, seed)
    if not (_loads(old_text) and _loads(new_text)):
        return
    reg = registry.bundled()
    old = parse_text(old_text, "p.yaml", "old.yaml")
    new = parse_text(new_text, "p.yaml", "new.yaml")
    result = diff_policies(old, new, reg)
    from fwgen.resolve import compile_policy

    mentioned = _mentioned(compile_policy(old, reg).rules + compile_policy(new, reg).rules)
    for change in result.changes:  # no change claims traffic that cannot exist
        assert not ("icmp" in change.protocols and change.v6) and not ("icmpv6" in change.protocols and change.v4)
    old_e, new_e = Explainer(old, reg), Explainer(new, reg)
    for direction, (protocol, _, number) in itertools.product(("in", "out"), WIDE_PROTOCOLS):
        label = _protocol_label(number, mentioned)
        families = {"icmp": (4,), "icmpv6": (6,)}.get(protocol, (4, 6))
        for (port, icmp, point), family in itertools.product(_selectors(protocol), families):
            for remote, local, interface, profile in itertools.product(
                    WIDE_REMOTES[family], WIDE_LOCALS[family], WIDE_INTERFACES, ("domain", "public")):
                ask = {"local": local, "interface": interface, "profile": profile, "icmp": icmp}
                before = old_e.verdict(direction, protocol, port, remote, **ask)
                after = new_e.verdict(direction, protocol, port, remote, **ask)
                assert before.decided and after.decided
                covering = [c for c in result.changes
                            if _wide_covers(c, direction, label, point, remote, local, interface, profile)]
                where = f"{direction} {protocol} {port} {icmp} {remote} {local} {interface} {profile}"
                if _outcome(before) == _outcome(after):
                    assert covering == [], where
                else:
                    assert len(covering) == 1, where
                    assert (covering[0].before, covering[0].after) == (_outcome(before), _outcome(after)), where
