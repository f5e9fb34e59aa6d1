"""The YAML people copy from the docs parses, and the fwgen commands in it are real:
every ```yaml block of docs/review-workflow.md and every file of the Ansible example."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from fwgen.cli import main

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_DOC = ROOT / "docs" / "review-workflow.md"
ANSIBLE = ROOT / "docs" / "examples" / "ansible"
FENCE = re.compile(r"^```yaml\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def yaml_blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text(encoding="utf-8"))


BLOCKS = yaml_blocks(WORKFLOW_DOC)
ANSIBLE_FILES = sorted(p for p in ANSIBLE.rglob("*") if p.suffix in (".yml", ".yaml"))


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def fwgen_commands(text: str) -> Iterator[list[str]]:
    """`fwgen SUBCOMMAND ...` invocations in shell text, cut at redirections and operators."""
    for line in text.splitlines():
        for match in re.finditer(r"(?:^|[\s;(])fwgen (\S+[^|;>&)]*)", line):
            yield shlex.split(match.group(1))


def test_the_doc_has_the_expected_blocks() -> None:
    assert len(BLOCKS) >= 5
    assert ANSIBLE_FILES, "docs/examples/ansible has no playbook"
    assert (ANSIBLE / "README.md").is_file()


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_workflow_doc_yaml_blocks_parse(index: int) -> None:
    assert yaml.safe_load(BLOCKS[index]) is not None


@pytest.mark.parametrize("path", ANSIBLE_FILES, ids=[p.name for p in ANSIBLE_FILES])
def test_ansible_files_parse(path: Path) -> None:
    assert yaml.safe_load(path.read_text(encoding="utf-8")) is not None


def _by_marker(marker: str) -> Any:
    found = [yaml.safe_load(b) for b in BLOCKS if marker in b]
    assert len(found) == 1, marker
    return found[0]


def test_github_actions_snippet() -> None:
    workflow = _by_marker("runs-on:")
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as true
    assert workflow["permissions"]["pull-requests"] == "write"
    (job,) = workflow["jobs"].values()
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "fwgen lint policies" in runs
    assert "fwgen build --check policies -o out" in runs
    assert 'fwgen diff --format markdown "git:origin/$BASE:policies" policies' in runs
    assert "gh pr comment" in runs and "--body-file diff.md" in runs
    comment = next(s for s in job["steps"] if "gh pr comment" in s.get("run", ""))
    assert comment["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert comment["if"] == "steps.diff.outputs.changed == 'true'"
    checkout = next(s for s in job["steps"] if "actions/checkout" in s.get("uses", ""))
    assert checkout


def test_gitlab_snippet() -> None:
    pipeline = _by_marker("CI_PIPELINE_SOURCE")
    check, diff = pipeline["fwgen-check"], pipeline["fwgen-diff"]
    assert check["script"] == ["fwgen lint policies", "fwgen build --check policies -o out"]
    script = "\n".join(diff["script"])
    assert 'fwgen diff --format markdown "git:origin/$BASE:policies" policies' in script
    assert "/merge_requests/$CI_MERGE_REQUEST_IID/notes" in script
    assert "PRIVATE-TOKEN: $FWGEN_NOTE_TOKEN" in script
    for job in (check, diff):
        assert job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]


def test_pre_commit_snippets_use_real_hook_ids() -> None:
    ids = {hook["id"] for hook in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    configs = [yaml.safe_load(b) for b in BLOCKS if "repos:" in b]
    assert configs
    for config in configs:
        for repo in config["repos"]:
            for hook in repo["hooks"]:
                assert hook["id"] in ids


def _check_command(argv: list[str]) -> None:
    name, args = argv[0], argv[1:]
    command = main.commands.get(name)
    if command is None:
        pytest.skip(f"fwgen {name} is not in this checkout yet")
    try:
        command.make_context(name, list(args), resilient_parsing=False)
    except click.exceptions.Exit:
        pass


def test_fwgen_commands_in_snippets_parse() -> None:
    """Each `fwgen ...` in the doc's YAML and the playbook uses options fwgen has."""
    found: list[list[str]] = []
    for block in BLOCKS:
        for text in strings(yaml.safe_load(block)):
            found.extend(fwgen_commands(text))
    assert ["build", "--check", "policies", "-o", "out"] in found
    assert ["lint", "policies"] in found
    assert any(argv[:3] == ["diff", "--format", "markdown"] for argv in found)
    for argv in found:
        _check_command(argv)


def test_playbook_and_role() -> None:
    """The example play runs the fwgen role; every fwgen command the role runs parses,
    the host checks each file with its own tools before it is in place, and the handlers
    apply with rollback, then confirm."""
    (play,) = yaml.safe_load((ANSIBLE / "playbook.yml").read_text())
    assert [entry["role"] for entry in play["roles"]] == ["fwgen"]
    role = ROOT / "roles" / "fwgen"
    tasks = yaml.safe_load((role / "tasks" / "main.yml").read_text())
    handlers = yaml.safe_load((role / "handlers" / "main.yml").read_text())
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())

    def flat(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            yield item
            yield from flat(item.get("block", []) + item.get("always", []))

    commands = [t["ansible.builtin.command"]["argv"] for t in flat(tasks + handlers)
                if isinstance(t.get("ansible.builtin.command", {}).get("argv"), list)]
    fwgen = [argv[1:] for argv in commands if "fwgen" in argv[0]]
    assert [argv[0] for argv in fwgen] == ["build", "diff", "apply", "apply"]
    for argv in fwgen:
        filled = {"{{ fwgen_timeout }}": "30", "{{ fwgen_target }}": "nftables"}
        _check_command([arg if "{{" not in arg else filled.get(arg, "x") for arg in argv])
    assert ["apply", "{{ fwgen_out }}", "-t", "{{ fwgen_target }}", "--timeout", "{{ fwgen_timeout }}",
            "--state-dir", "{{ fwgen_state_dir }}"] in fwgen
    assert ["apply", "--confirm", "--state-dir", "{{ fwgen_state_dir }}"] in fwgen
    (ship,) = [t for t in flat(tasks) if "notify" in t]
    assert "validate" in ship["ansible.builtin.copy"]
    (names,) = [t["ansible.builtin.set_fact"] for t in tasks if "ansible.builtin.set_fact" in t]
    assert names["fwgen_checks"] == {"nft": "{{ fwgen_nft }} -c -f %s",
                                     "rules.v4": "{{ fwgen_iptables_restore }} --test %s",
                                     "rules.v6": "{{ fwgen_ip6tables_restore }} --test %s"}
    assert (defaults["fwgen_nft"], defaults["fwgen_iptables_restore"]) == ("nft", "iptables-restore")
    assert {h["listen"] for h in handlers} == {ship["notify"]}
    readme = (ANSIBLE / "README.md").read_text()
    assert "does and does not prove" in readme and "--test" in readme


FORMAT_DOC = ROOT / "docs" / "policy-format.md"
WHOLE_POLICIES = [block for block in yaml_blocks(FORMAT_DOC) if block.startswith("version: 1\n") and "rules:" in block]


def test_policy_format_has_whole_example_policies() -> None:
    assert WHOLE_POLICIES  # the key overview, with every key at once, is not one


@pytest.mark.parametrize("text", WHOLE_POLICIES, ids=lambda t: yaml.safe_load(t).get("name", "?"))
def test_policy_format_examples_build(text: str, tmp_path: Path) -> None:
    """The reference's example policies load, pass their lint errors and build for their
    targets."""
    from fwgen.build import build
    from fwgen.registry import bundled

    data = yaml.safe_load(text)
    path = tmp_path / f"{data.get('name', 'example')}.yaml"
    path.write_text(text, encoding="utf-8")
    result = build(str(path), bundled(), lint_errors=True)
    assert result.files
