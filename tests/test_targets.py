"""The target table (fwgen/targets/__init__.py) is the one list of outputs.

The CLI's choices, ``build``, the template list and the compiled templates all come
from it; what a target lacks is a located error naming the rule, the feature and the
target; what it degrades is a located warning that ``--strict`` makes an error; a
policy's ``targets:`` chooses what ``build`` writes, and ``-t`` can only narrow it.
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fwgen import build as building
from fwgen import registry, render
from fwgen.cli import main
from fwgen.errors import PolicyError
from fwgen.targets import BY_NAME, NAMES, TARGETS, TEMPLATES, Feature

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def build_cli(*args: str) -> click.testing.Result:
    return CliRunner().invoke(main, ["build", *args])


# ---------------------------------------------------------------------- the one table


def test_the_table_is_what_everything_reads() -> None:
    assert NAMES == ("iptables", "nftables", "windows")
    assert building.TARGET_NAMES == NAMES
    assert render.TEMPLATES == TEMPLATES
    for command in ("build", "lint"):
        option = next(p for p in main.commands[command].params if p.name == "targets")
        assert tuple(option.type.choices) == NAMES, command  # type: ignore[attr-defined]
    for target in TARGETS:
        assert (ROOT / "templates" / target.template).is_file()
        assert (ROOT / "templates" / target.lines).is_file()
        assert target.template.split("/")[0] == target.lines.split("/")[0] == target.name
        assert not set(target.lacks) & set(target.degrades), target.name
        assert target.supports == frozenset(Feature) - set(target.lacks)


def test_each_target_renders_its_own_directory(tmp_path: Path) -> None:
    policy = write(tmp_path, "version: 1\nname: p\nrules:\n  - action: allow\n    ports: [ssh]\n")
    for name in NAMES:
        result = building.build(policy, registry.bundled(), (name,))
        assert result.targets == (name,)
        assert result.files and all(path.startswith(f"{name}/") for path in result.files), name


def test_an_unknown_target_is_an_error(tmp_path: Path) -> None:
    policy = write(tmp_path, "version: 1\nname: p\n")
    with pytest.raises(PolicyError, match=r"unknown target 'pf' \(the targets are: iptables, nftables, windows\)"):
        building.build(policy, registry.bundled(), ("pf",))
    result = build_cli(policy, "-t", "pf", "-o", str(tmp_path / "out"))
    assert result.exit_code == 2  # a usage error, from the same table's choices
    assert "'pf' is not one of 'iptables', 'nftables', 'windows'" in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- lacks: errors


LACKED = sorted({feature for target in TARGETS for feature in target.lacks}, key=lambda f: f.value)
RULE_LINES = {Feature.INTERFACE: "    interface: wg0\n", Feature.PROFILES: "    profiles: [domain]\n"}


def test_lacked_features_are_rule_keys() -> None:
    assert set(LACKED) == set(RULE_LINES)  # a new lacked feature needs a case below


@pytest.mark.parametrize("feature", LACKED, ids=[f.value for f in LACKED])
def test_a_lacked_feature_is_a_located_error_for_each_target(tmp_path: Path, feature: Feature) -> None:
    """For every (target, feature) the table says it lacks, a policy using the feature
    is refused at the key, naming the rule, the feature and the target."""
    for target in (t for t in TARGETS if feature in t.lacks):
        text = f"version: 1\nname: p\nrules:\n  - name: r\n    action: allow\n    ports: [ssh]\n{RULE_LINES[feature]}"
        policy = write(tmp_path, text)
        out = tmp_path / "out"
        result = build_cli(policy, "-t", target.name, "-o", str(out))
        assert result.exit_code == 1, (target.name, result.output)
        others = ", ".join(t.name for t in TARGETS if feature not in t.lacks)
        assert result.stderr == (
            f"{policy}:7:{RULE_LINES[feature].index(':') + 3}: rule 'r' uses {feature.value}, which {target.name} "
            f"cannot express ({target.lacks[feature]}); say which targets this policy is for: targets: [{others}]\n"
        )
        assert not out.exists()


def test_targets_key_lets_a_linux_policy_use_interfaces(tmp_path: Path) -> None:
    text = "version: 1\nname: p\ntargets: [iptables, nftables]\nrules:\n  - action: allow\n    interface: wg0\n"
    out = tmp_path / "out"
    result = build_cli(write(tmp_path, text), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "p/iptables/rules.v4", "p/iptables/rules.v6", "p/nftables/p.nft"]


# ---------------------------------------------------------------------- degrades: warnings


def test_degradations_are_located_warnings_and_strict_makes_them_errors(tmp_path: Path) -> None:
    text = (
        "version: 1\nname: p\ndefaults:\n  inbound: allow\n  deny: reject\nrules:\n"
        "  - name: watch\n    action: monitor\n    ports: [1261]\n"
        "  - name: logged\n    action: deny\n    log: true\n    ports: [6000]\n"
        "  - name: admin\n    action: allow\n    ports: [ssh]\n"
    )
    policy = write(tmp_path, text)
    windows = BY_NAME["windows"]
    out = tmp_path / "out"
    result = build_cli(policy, "-t", "windows", "-o", str(out))
    assert result.exit_code == 0, result.output
    warnings = result.stderr.splitlines()
    assert warnings[:3] == [
        f"{policy}:5:9: warning: windows: {windows.degrades[Feature.REJECT]}",
        f"{policy}:8:13: warning: windows: {windows.degrades[Feature.MONITOR]} (rule 'watch')",
        f"{policy}:12:10: warning: windows: {windows.degrades[Feature.LOG]} (rule 'logged')",
    ]
    assert (out / "p" / "windows" / "p.cmd").is_file()
    # Linux expresses all three exactly: no warning of them.
    linux = build_cli(policy, "-t", "iptables", "-t", "nftables", "-o", str(tmp_path / "linux"))
    assert linux.exit_code == 0 and linux.stderr == ""

    strict_out = tmp_path / "strict"
    strict = build_cli(policy, "-t", "windows", "--strict", "-o", str(strict_out))
    assert strict.exit_code == 1
    assert strict.stderr == (
        f"{policy}:5:9: windows: {windows.degrades[Feature.REJECT]} (a warning; --strict makes it an error)\n"
    )
    assert not strict_out.exists()
    assert build_cli(policy, "-t", "nftables", "--strict", "-o", str(strict_out)).exit_code == 0


def test_one_warning_per_feature_counts_the_rules(tmp_path: Path) -> None:
    rules = "".join(f"  - name: w{i}\n    action: monitor\n    ports: [{1000 + i}]\n" for i in range(3))
    policy = write(tmp_path, f"version: 1\nname: p\ndefaults:\n  inbound: allow\nrules:\n{rules}")
    result = building.build(policy, registry.bundled(), ("windows",))
    monitor = [w for w in result.warnings if "monitor rules" in w.message]
    assert len(monitor) == 1
    assert monitor[0].message.endswith("(rule 'w0' and 2 more)")
    assert monitor[0].location is not None and monitor[0].location.line == 7


def test_each_feature_counts_its_own_rules_at_its_first(tmp_path: Path) -> None:
    """Features asked for by interleaved rules: one warning each, at its own first rule,
    counting only its rules (a rule that monitors is not counted as logging)."""
    kinds = ["log", "monitor", "log", "monitorlog", "log"]
    rules = "".join(
        f"  - name: r{i}\n    action: {'monitor' if kind.startswith('monitor') else 'allow'}\n    ports: [{1000 + i}]\n"
        + ("    log: true\n" if kind.endswith("log") else "")
        for i, kind in enumerate(kinds))
    policy = write(tmp_path, f"version: 1\nname: p\ndefaults:\n  inbound: allow\nrules:\n{rules}")
    result = building.build(policy, registry.bundled(), ("windows",))
    assert [w.message.rsplit(" (", 1)[1] for w in result.warnings] == ["rule 'r0' and 2 more)", "rule 'r1' and 1 more)"]
    assert [w.location.line for w in result.warnings if w.location] == [9, 11]


# ---------------------------------------------------------------------- targets: and -t


def test_policy_targets_choose_the_outputs_and_t_only_narrows(tmp_path: Path) -> None:
    text = "version: 1\nname: p\ntargets: [nftables, iptables]\nrules: []\n"
    policy = write(tmp_path, text)
    reg = registry.bundled()
    assert building.build(policy, reg).targets == ("iptables", "nftables")  # the table's order
    assert building.build(policy, reg, ("nftables",)).targets == ("nftables",)
    out = tmp_path / "out"
    result = build_cli(policy, "-t", "windows", "-o", str(out))
    assert result.exit_code == 1
    assert result.stderr == f"{policy}:3:11: this policy is for nftables, iptables (targets:), not windows\n"
    assert not out.exists()


def test_without_targets_a_policy_is_for_all_three(tmp_path: Path) -> None:
    policy = write(tmp_path, "version: 1\nname: p\nrules: []\n")
    assert building.build(policy, registry.bundled()).targets == NAMES


def test_lint_reads_the_policy_targets(tmp_path: Path) -> None:
    """lint's target-specific findings follow the policy's targets (docs/lint.md): the
    same deny-everything policy locks out SSH on Linux and RDP/WinRM on Windows."""
    body = "name: p\ndefaults:\n  inbound: deny\nrules:\n  - action: allow\n    ports: [http]\n"

    def findings(targets: str) -> str:
        path = write(tmp_path, f"version: 1\ntargets: [{targets}]\n{body}", f"{targets[:3]}.yaml")
        return CliRunner().invoke(main, ["lint", path]).stdout

    linux, windows = findings("iptables, nftables"), findings("windows")
    assert "[ssh-lockout]" in linux and "[rdp-lockout]" not in linux, linux
    assert "[rdp-lockout]" in windows and "[ssh-lockout]" not in windows, windows


# ---------------------------------------------------------------------- published_ports


def _without_policy_hash(files: dict[str, str]) -> dict[str, str]:
    return {name: "\n".join(line for line in text.splitlines() if "sha256:" not in line)
            for name, text in files.items()}


def test_published_ports_ignore_is_the_output_without_the_key(tmp_path: Path) -> None:
    """1.x policies keep their output: ``ignore`` changes no byte but the policy's hash;
    ``enforce`` adds to the Linux outputs only, and Windows says so at the key."""
    edge = (ROOT / "policies" / "edge.yaml").read_text(encoding="utf-8")
    reg = registry.bundled()
    plain = building.build(write(tmp_path, edge, "edge.yaml"), reg).files
    ignored = building.build(write(tmp_path, edge + "published_ports: ignore\n", "edge.yaml"), reg).files
    enforced = building.build(write(tmp_path, edge + "published_ports: enforce\n", "edge.yaml"), reg)
    assert _without_policy_hash(ignored) == _without_policy_hash(plain)
    changed = _without_policy_hash(enforced.files)
    assert [name for name in plain if changed[name] != _without_policy_hash(plain)[name]] == [
        "iptables/rules.v4", "iptables/rules.v6", "nftables/edge.nft"]  # Windows: the same script
    mangle = enforced.files["iptables/rules.v4"].split("*mangle\n")[1].split("COMMIT\n")[0]
    assert mangle.endswith('-A FORWARD -m conntrack --ctstate NEW -m conntrack --ctstate DNAT -m comment --comment '
                           '"published_ports: new connections DNATed to a local container" -j fwgen-published\n')
    assert "DOCKER-USER" not in enforced.files["iptables/rules.v4"]
    assert "type filter hook forward priority filter; policy accept;" in enforced.files["nftables/edge.nft"]
    line = len(edge.splitlines()) + 1
    warning = [str(w) for w in enforced.warnings if "published_ports: enforce" in str(w)]
    assert warning == [f"{tmp_path}/edge.yaml:{line}:18: warning: windows: "
                       f"{BY_NAME['windows'].degrades[Feature.PUBLISHED_PORTS]}"]


def test_published_reject_is_a_drop_on_iptables_and_says_so(tmp_path: Path) -> None:
    """REJECT exists only in the filter table and the published connections are judged in
    mangle: with defaults.deny reject and an inbound deny, iptables warns at the key
    (--strict: an error) in either mode; nftables rejects them and says nothing; without
    an inbound deny there is nothing to degrade."""
    head = "version: 1\nname: p\npublished_ports: enforce\ntargets: [iptables, nftables]\n"
    message = BY_NAME["iptables"].degrades[Feature.PUBLISHED_REJECT]
    for mode in ("", "iptables: {mode: chains}\n"):
        denying = write(tmp_path, head + mode + "defaults: {inbound: allow, deny: reject}\n"
                        "rules:\n  - name: no-8080\n    action: deny\n    ports: [8080]\n")
        result = build_cli(denying, "-o", str(tmp_path / "out"))
        assert result.exit_code == 0, result.output
        assert result.stderr == f"{denying}:3:18: warning: iptables: {message}\n"
        assert "-j REJECT" not in result_file(tmp_path / "out" / "p" / "iptables" / "rules.v4", "*mangle")
        strict = build_cli(denying, "--strict", "-o", str(tmp_path / "strict"))
        assert (strict.exit_code, strict.stderr) == (
            1, f"{denying}:3:18: iptables: {message} (a warning; --strict makes it an error)\n")
        assert build_cli(denying, "-t", "nftables", "--strict", "-o", str(tmp_path / "n")).exit_code == 0
        dropping = write(tmp_path, head + mode + "defaults: {inbound: allow, deny: drop}\n"
                         "rules:\n  - name: no-8080\n    action: deny\n    ports: [8080]\n")
        assert build_cli(dropping, "--strict", "-o", str(tmp_path / "d")).exit_code == 0
        allowing = write(tmp_path, head + mode + "defaults: {inbound: allow, outbound: deny, deny: reject}\n")
        assert build_cli(allowing, "--strict", "-o", str(tmp_path / "a")).exit_code == 0


def result_file(path: Path, table: str) -> str:
    """One table's section of an iptables-restore file."""
    return path.read_text(encoding="utf-8").split(table + "\n")[1].split("COMMIT\n")[0]
