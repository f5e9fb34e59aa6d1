"""Named groups (networks:, services:) and includes: what they mean (exactly what the
same policy written out in full means), where errors point (the included file's own
path:line:col and the includes that reached it), and what outputs say about them."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fwgen.build import build
from fwgen.cli import main
from fwgen.diff import diff_specs
from fwgen.explain import Explainer
from fwgen.lint import lint_file
from fwgen.registry import bundled

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT / "policies" / "fleet"


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], policy: str = "host.yaml") -> str:
    """The one line `fwgen build` prints for a bad policy (checking exit 1, no output)."""
    write(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["build", policy, "-o", "out"])
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and not (tmp_path / "out").exists()
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.rstrip("\n")


HEAD = "version: 1\n"
OPEN = "version: 1\ndefaults: {inbound: allow}\n"  # no SSH lockout to lint about
# (files, the exact line the user sees)
ERRORS = [
    ({"host.yaml": HEAD + "rules:\n  - include: base/rules.yaml\n",
      "base/rules.yaml": HEAD + "rules:\n  - action: monitor\n    ports: [mpshrv]\n"},
     "base/rules.yaml:4:13: unknown service 'mpshrv' (did you mean 'mpshrsv'?) (included from host.yaml:3:14)"),
    ({"host.yaml": HEAD + "include: [a.yaml]\n", "a.yaml": HEAD + "include: [b/c.yaml]\n",
      "b/c.yaml": HEAD + "networks:\n  x: [10.0.0.0/33]\n"},
     "b/c.yaml:3:7: '10.0.0.0/33' is not an IP address or CIDR network "
     "(included from a.yaml:2:11, from host.yaml:2:11)"),
    ({"host.yaml": HEAD + "include: [a.yaml]\n", "a.yaml": HEAD + "include: [host.yaml]\n"},
     "a.yaml:2:11: include cycle: host.yaml -> a.yaml -> host.yaml (included from host.yaml:2:11)"),
    ({"host.yaml": HEAD + "include: [host.yaml]\n"},
     "host.yaml:2:11: include cycle: host.yaml -> host.yaml"),
    ({"host.yaml": HEAD + "include: [f.yaml]\n", "f.yaml": HEAD + "defaults: {inbound: deny}\n"},
     "f.yaml:2:1: 'defaults' belongs to the host policy, not to an included file (which holds version, include, "
     "networks, services, rules) (included from host.yaml:2:11)"),
    ({"host.yaml": HEAD + "include: [f.yaml]\n", "f.yaml": "networks: {a: [10.0.0.0/8]}\n"},
     "f.yaml:1:1: missing 'version' (this fwgen reads 'version: 1') (included from host.yaml:2:11)"),
    ({"host.yaml": HEAD + "include: [f.yaml]\n", "f.yaml": ""},
     "f.yaml:1:1: included file is empty: it needs at least 'version: 1' (included from host.yaml:2:11)"),
    ({"host.yaml": HEAD + "rules:\n  - include: nope.yaml\n"},
     "host.yaml:3:14: cannot read included file nope.yaml: No such file or directory"),
    ({"host.yaml": HEAD + "rules:\n  - include: /etc/fw.yaml\n"},
     "host.yaml:3:14: include path '/etc/fw.yaml' is not valid: write a relative path to a .yaml file, of letters, "
     "digits, '_', '.', '-' and '/'"),
    ({"host.yaml": HEAD + "include: ['a\" -j ACCEPT.yaml']\n"},
     "host.yaml:2:11: include path 'a\" -j ACCEPT.yaml' is not valid: write a relative path to a .yaml file, of "
     "letters, digits, '_', '.', '-' and '/'"),
    ({"host.yaml": HEAD + "include: [r.yaml]\n", "r.yaml": HEAD + "rules:\n  - action: allow\n"},
     "host.yaml:2:11: r.yaml has rules, but a top-level include takes only networks and services; splice its rules "
     "where they belong in rules: (- include: r.yaml)"),
    ({"host.yaml": HEAD + "rules:\n  - include: r.yaml\n  - include: r.yaml\n",
      "r.yaml": HEAD + "rules:\n  - action: allow\n"},
     "host.yaml:4:14: the rules of r.yaml are already spliced at host.yaml:3:14: a file's rules appear once"),
    ({"host.yaml": HEAD + "rules:\n  - include: r.yaml\n    action: allow\n",
      "r.yaml": HEAD + "rules:\n  - action: allow\n"},
     "host.yaml:4:5: unknown key 'action' in an include entry in rules (expected one of: include)"),
    ({"host.yaml": HEAD + "rules:\n  - name: a\n    action: allow\n  - include: r.yaml\n",
      "r.yaml": HEAD + "rules:\n  - name: a\n    action: deny\n"},
     "r.yaml:3:11: duplicate rule name 'a' (first at host.yaml:3:5) (included from host.yaml:5:14)"),
    ({"host.yaml": HEAD + "include: [n.yaml]\nnetworks:\n  admins: [10.0.0.0/8]\n",
      "n.yaml": HEAD + "networks:\n  admins: [10.1.0.0/16]\n"},
     "n.yaml:3:3: network 'admins' is defined twice (first at host.yaml:4:3) (included from host.yaml:2:11)"),
    ({"host.yaml": HEAD + "networks:\n  a: [b]\n  b: [c]\n  c: [a]\nrules:\n  - action: allow\n    from: [a]\n"},
     "host.yaml:5:7: network 'a' refers to itself: a -> b -> c -> a"),
    ({"host.yaml": HEAD + "services:\n  web: [http, web]\n"},
     "host.yaml:3:15: service 'web' refers to itself: web -> web"),
    ({"host.yaml": HEAD + "networks:\n  admins: [10.0.0.0/8]\nrules:\n  - action: allow\n    from: [admin]\n"},
     "host.yaml:6:12: unknown network 'admin' (did you mean 'admins'?)"),
    ({"host.yaml": HEAD + "networks:\n  admins: [10.0.0.0/8]\nrules:\n  - action: allow\n    local: [web]\n"},
     "host.yaml:6:13: unknown network 'web' (not an address, nor a name in networks:)"),
    ({"host.yaml": HEAD + "services:\n  ssh: [2222]\n"},
     "host.yaml:3:3: service group 'ssh' has the name of an IANA service: a rule's ports: [ssh] would no longer mean "
     "the registered port; choose another name"),
    ({"host.yaml": HEAD + "services:\n  dormant: [mpshrsv]\nrules:\n  - action: monitor\n    ports: [dormnt]\n"},
     "host.yaml:6:13: unknown service 'dormnt' (did you mean 'dormant'?)"),
    ({"host.yaml": HEAD + "services:\n  mine: [mpshrv]\n"},  # checked though no rule uses it
     "host.yaml:3:10: unknown service 'mpshrv' (did you mean 'mpshrsv'?)"),
    ({"host.yaml": HEAD + "networks:\n  1bad: [10.0.0.0/8]\n"},
     "host.yaml:3:3: network name text '1bad' is not valid: it must match [A-Za-z_][A-Za-z0-9_.-]{0,62}"),
    ({"host.yaml": HEAD + "networks: [a]\n"},
     "host.yaml:2:11: networks must be a mapping of names to lists, got a list"),
    ({"host.yaml": HEAD + "networks:\n  empty: []\n"},
     "host.yaml:3:10: network 'empty' is an empty list; omit the key instead"),
    ({"host.yaml": HEAD + "include: [f.yaml]\nrules:\n  - action: allow\n    protocol: icmp\n    from: [v6]\n",
      "f.yaml": HEAD + "networks:\n  v6: ['2001:db8::/32']\n"},
     "host.yaml:6:11: protocol icmp is IPv4 only, but from lists IPv6 addresses (2001:db8::/32); write them in a "
     "rule of their own"),
]


@pytest.mark.parametrize(("files", "expected"), ERRORS, ids=[e[1].split(": ", 1)[1][:40] for e in ERRORS])
def test_errors_name_their_file_and_the_includes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 files: dict[str, str], expected: str) -> None:
    assert fails(tmp_path, monkeypatch, files) == expected


def test_nesting_deeper_than_8_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"host.yaml": OPEN + "include: [d1.yaml]\n"}
    for depth in range(1, 10):
        files[f"d{depth}.yaml"] = HEAD + f"include: [d{depth + 1}.yaml]\n"
    files["d10.yaml"] = HEAD
    line = fails(tmp_path, monkeypatch, files)
    assert line.startswith("d8.yaml:2:11: includes nest more than 8 deep (included from d7.yaml:2:11, from"), line
    files["d8.yaml"] = HEAD  # 8 deep is fine
    write(tmp_path, files)
    assert CliRunner().invoke(main, ["build", "host.yaml", "--stdout"]).exit_code == 0


INLINE = """\
version: 1
name: inline
defaults: {inbound: deny, outbound: allow}
rules:
  - name: ssh
    action: allow
    ports: [ssh]
    from: [192.0.2.0/28, "2001:db8:a::/48", 198.51.100.10]
  - name: base-watch
    action: monitor
    ports: [mpshrsv, t1distproc, "6000-6010"]
  - name: web
    action: allow
    ports: [http, https]
    local: [203.0.113.10]
"""
GROUPED = {
    "grouped.yaml": """\
version: 1
name: inline
defaults: {inbound: deny, outbound: allow}
include: [defs/networks.yaml]
services:
  web: [http, https]
rules:
  - name: ssh
    action: allow
    ports: [ssh]
    from: [admins]
  - include: defs/rules.yaml
  - name: web
    action: allow
    ports: [web]
    local: [front]
""",
    "defs/networks.yaml": """\
version: 1
networks:
  admins: [staff, monitoring]
  staff: [192.0.2.0/28, "2001:db8:a::/48"]
  monitoring: [198.51.100.10]
  front: [203.0.113.10]
""",
    "defs/rules.yaml": """\
version: 1
services:
  dormant: [mpshrsv, t1distproc]
  watched: [dormant, "6000-6010"]
rules:
  - name: base-watch
    action: monitor
    ports: [watched]
""",
}


def test_groups_and_includes_mean_what_the_policy_written_out_means(tmp_path: Path) -> None:
    write(tmp_path, {"inline.yaml": INLINE, **GROUPED})
    registry = bundled()
    inline = build(str(tmp_path / "inline.yaml"), registry)
    grouped = build(str(tmp_path / "grouped.yaml"), registry)
    assert [r._replace(location=None, file="") for r in inline.ruleset.rules] == \
        [r._replace(location=None, file="") for r in grouped.ruleset.rules]
    result = diff_specs(str(tmp_path / "inline.yaml"), str(tmp_path / "grouped.yaml"), registry)
    assert result.changes == ()


def test_outputs_name_every_file_and_the_rules_file(tmp_path: Path) -> None:
    write(tmp_path, GROUPED)
    result = build(str(tmp_path / "grouped.yaml"), bundled())
    digest = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in GROUPED}
    for name, text in result.files.items():
        header = [line for line in text.splitlines()[:8] if "sha256:" in line]
        assert [re.sub(r"^(# |rem )", "", line) for line in header[:4]] == [
            f"policy: grouped.yaml sha256:{digest['grouped.yaml']}",
            f"include: defs/networks.yaml sha256:{digest['defs/networks.yaml']}",
            f"include: defs/rules.yaml sha256:{digest['defs/rules.yaml']}",
            re.sub(r"^(# |rem )", "", header[3]),
        ], name
        assert re.sub(r"^(# |rem )", "", header[3]).startswith("registry: IANA"), name
    assert 'base-watch (defs/rules.yaml:6) monitor' in result.files["iptables/rules.v4"]
    assert 'ssh (grouped.yaml:8) allow' in result.files["iptables/rules.v4"]
    assert "base-watch (defs/rules.yaml:6) monitor" in result.files["nftables/inline.nft"]
    assert "base-watch (defs/rules.yaml:6) monitor" in result.files["windows/inline.cmd"]


def test_a_policy_without_includes_has_the_same_header(tmp_path: Path) -> None:
    write(tmp_path, {"inline.yaml": INLINE})
    text = build(str(tmp_path / "inline.yaml"), bundled()).files["iptables/rules.v4"]
    assert "include:" not in text


def test_explain_and_lint_name_the_rules_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, GROUPED)
    monkeypatch.chdir(tmp_path)
    explainer = Explainer.from_file("grouped.yaml", bundled())
    query = ["explain", "grouped.yaml", "--direction", "in", "--protocol", "tcp", "--port", "1261"]
    result = CliRunner().invoke(main, [*query, "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    found = answer["verdicts"][0]
    assert (found["rule"], found["file"], found["line"]) == ("base-watch", "defs/rules.yaml", 6)
    text = CliRunner().invoke(main, query).stdout
    assert "rule base-watch, defs/rules.yaml:6" in text
    assert explainer.file_of["ssh"] == "grouped.yaml"
    write(tmp_path, {"defs/rules.yaml": GROUPED["defs/rules.yaml"] + "  - name: again\n    action: allow\n"
                     "    ports: [mpshrsv]\n"})
    findings = [str(f) for f in lint_file("grouped.yaml", bundled())]
    assert "defs/rules.yaml:9:5: warning: rule 'again' can never match: shadowed by 'base-watch' (defs/rules.yaml " \
        "line 6) [shadowed]" in findings, findings
    files = [f.split(":")[0] for f in findings]
    assert files == sorted(files, key=lambda path: path != "grouped.yaml")  # the policy's own findings first


def test_the_example_fleet_builds(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", str(FLEET), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("wrote 9 files for 3 policies under ")
    built = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert built == [f"{role}/{kind}" for role in ("bastion", "db", "web")
                     for kind in ("iptables/rules.v4", "iptables/rules.v6", f"nftables/{role}.nft")]
