"""``fwgen diff`` of two fleets (docs/diff.md, "Fleets"), on a git fixture holding a copy
of policies/fleet: per host the semantic diff, per changed file the hosts its change
alone changes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fwgen.cli import main
from fwgen.files import GitFiles, dir_prefix

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT / "policies" / "fleet"

# a change in base/rules.yaml: SSH from the admins too. The bastion's own earlier
# ssh-from-admins rule already lets them in, so only db and web change.
SSH = ("    from: [bastion]\n", "    from: [bastion, admins]\n")
ADMINS_SSH = "  in tcp 22 (ssh) from 192.0.2.0/28, 2001:db8:a::/48: deny → allow"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=fwgen test", "-c", "user.email=test@example.invalid",
         "-c", "commit.gpgsign=false", *args],
        cwd=repo, check=True, capture_output=True,
    )


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new), encoding="utf-8")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository whose HEAD holds policies/ (a copy of policies/fleet), as the
    current directory."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git(tmp_path, "init", "-q")
    shutil.copytree(FLEET, tmp_path / "policies")
    commit(tmp_path, "the fleet")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["diff", *args])


# ---------------------------------------------------------------------- a shared file


def test_a_base_change_changes_some_hosts(repo: Path) -> None:
    edit(repo / "policies/base/rules.yaml", *SSH)
    result = run("git:HEAD:policies", "policies")
    assert result.exit_code == 1, result.output
    assert result.stdout == "\n".join([
        "base/rules.yaml changes 2 of 3 hosts (db, web)",
        "",
        "db (db.yaml): changed by base/rules.yaml",
        ADMINS_SSH,
        "web (web.yaml): changed by base/rules.yaml",
        ADMINS_SSH,
        "unchanged: bastion",
    ]) + "\n"
    assert result.stderr == ""


def test_as_a_real_process(repo: Path) -> None:
    edit(repo / "policies/base/rules.yaml", *SSH)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "fwgen", "diff", "git:HEAD:policies", "policies"],
                          cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines()[0] == "base/rules.yaml changes 2 of 3 hosts (db, web)"
    assert proc.stdout == run("git:HEAD:policies", "policies").stdout
    proc = subprocess.run([sys.executable, "-m", "fwgen", "diff", "git:HEAD:policies", "policies", "--format", "json"],
                          cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["summary"][0]["hosts"] == ["db", "web"]


def test_markdown(repo: Path) -> None:
    edit(repo / "policies/base/rules.yaml", *SSH)
    result = run("git:HEAD:policies", "policies", "--format", "markdown")
    assert result.exit_code == 1
    table = [
        "| direction | protocol | ports (names) | remote | before | after |",
        "|---|---|---|---|---|---|",
        "| in | tcp | 22 (ssh) | 192.0.2.0/28, 2001:db8:a::/48 | deny | allow |",
        "",
        "1 semantic change.",
    ]
    assert result.stdout == "\n".join([
        "### fwgen diff: `git:HEAD:policies` → `policies`",
        "",
        "- `base/rules.yaml` changes 2 of 3 hosts (db, web)",
        "",
        "2 of 3 hosts changed: db, web.",
        "",
        "#### db: `git:HEAD:policies/db.yaml` → `policies/db.yaml`",
        "",
        "Changed by `base/rules.yaml`.",
        "",
        *table,
        "",
        "#### web: `git:HEAD:policies/web.yaml` → `policies/web.yaml`",
        "",
        "Changed by `base/rules.yaml`.",
        "",
        *table,
    ]) + "\n"


def test_json(repo: Path) -> None:
    edit(repo / "policies/base/rules.yaml", *SSH)
    result = run("git:HEAD:policies", "policies", "--format", "json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert list(document) == ["old", "new", "changed", "summary", "hosts", "added", "removed"]
    assert (document["old"], document["new"], document["changed"]) == ("git:HEAD:policies", "policies", True)
    assert document["summary"] == [
        {"file": "base/rules.yaml", "status": "changed", "changes": 2, "of": 3, "hosts": ["db", "web"]}]
    assert list(document["hosts"]) == ["bastion", "db", "web"]
    assert (document["added"], document["removed"]) == ([], [])
    db = document["hosts"]["db"]
    # the single-policy JSON, plus what changed the host
    single = json.loads(CliRunner().invoke(
        main, ["diff", "git:HEAD:policies/db.yaml", "policies/db.yaml", "--format", "json"]).stdout)
    assert {k: v for k, v in db.items() if k not in ("changed_by", "own_file_changed")} == single
    assert (db["count"], db["changed_by"], db["own_file_changed"]) == (1, ["base/rules.yaml"], False)
    assert db["changes"][0]["remote"] == ["192.0.2.0/28", "2001:db8:a::/48"]
    bastion = document["hosts"]["bastion"]
    assert (bastion["changed"], bastion["count"], bastion["changed_by"]) == (False, 0, [])


def test_no_change(repo: Path) -> None:
    result = run("git:HEAD:policies", "policies")
    assert (result.exit_code, result.stdout) == (0, "no semantic change (3 hosts)\n")
    assert run("git:HEAD:policies/", "git:HEAD:./policies").stdout == "no semantic change (3 hosts)\n"
    markdown = run("git:HEAD:policies", "policies", "--format", "markdown")
    assert markdown.exit_code == 0
    assert markdown.stdout == "### fwgen diff: `git:HEAD:policies` → `policies`\n\nNo semantic change in 3 hosts.\n"


def test_reformatting_a_shared_file_changes_no_host(repo: Path) -> None:
    rules = repo / "policies/base/rules.yaml"
    rules.write_text("".join(line for line in rules.read_text().splitlines(True) if not line.startswith("#")))
    result = run("git:HEAD:policies", "policies")
    assert result.exit_code == 0
    assert result.stdout == "base/rules.yaml changes 0 of 3 hosts\nunchanged: bastion, db, web\n"


def test_a_network_only_some_hosts_use(repo: Path) -> None:
    """db's address is used by the bastion (ssh-to-fleet) and web (no-db-from-web-out),
    not by db itself."""
    edit(repo / "policies/inventory/networks.yaml", "db: [203.0.113.20,", "db: [203.0.113.21,")
    result = run("git:HEAD:policies", "policies")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "inventory/networks.yaml changes 2 of 3 hosts (bastion, web)",
        "",
        "bastion (bastion.yaml): changed by inventory/networks.yaml",
        "  out tcp 22 (ssh) to 203.0.113.20/32: allow → deny",
        "  out tcp 22 (ssh) to 203.0.113.21/32: deny → allow",
        "web (web.yaml): changed by inventory/networks.yaml",
        "  out tcp,udp 5432 (postgresql) to 203.0.113.20/32: deny → allow",
        "  out tcp,udp 5432 (postgresql) to 203.0.113.21/32: allow → deny",
        "unchanged: db",
    ]


def test_a_file_outside_the_directory(repo: Path) -> None:
    """Shared files are named by their path relative to the fleet's directory."""
    (repo / "policies/inventory").rename(repo / "inventory")
    edit(repo / "policies/base/networks.yaml", "include: [../inventory/networks.yaml]",
         "include: [../../inventory/networks.yaml]")
    commit(repo, "the inventory moved out")
    edit(repo / "inventory/networks.yaml", "db: [203.0.113.20,", "db: [203.0.113.21,")
    result = run("git:HEAD:policies", "policies", "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["summary"] == [
        {"file": "../inventory/networks.yaml", "status": "changed", "changes": 2, "of": 3,
         "hosts": ["bastion", "web"]}]


def test_coupled_changes(repo: Path) -> None:
    """A network added in one file and used in another: the file using it cannot be read
    alone with the old tree, so it counts for every host that changed; the new network
    alone changes nothing."""
    edit(repo / "policies/base/networks.yaml", '  monitoring: [198.51.100.10, "2001:db8:6d::10"]\n',
         '  monitoring: [198.51.100.10, "2001:db8:6d::10"]\n  ops: [198.51.100.64/26]\n')
    edit(repo / "policies/base/rules.yaml", "from: [monitoring]", "from: [monitoring, ops]")
    result = run("git:HEAD:policies", "policies")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[:2] == [
        "base/networks.yaml changes 0 of 3 hosts",
        "base/rules.yaml changes 3 of 3 hosts (bastion, db, web)",
    ]


# ---------------------------------------------------------------------- a host's own file


def test_a_host_file_change_is_attributed_to_that_file_only(repo: Path) -> None:
    edit(repo / "policies/web.yaml", "ports: [http/tcp, https/tcp]", "ports: [http/tcp, https/tcp, 8443/tcp]")
    edit(repo / "policies/db.yaml", "description: Database servers", "description: The database servers")
    result = run("git:HEAD:policies", "policies")
    assert result.exit_code == 1
    assert result.stdout == "\n".join([
        "db.yaml changes 0 of 3 hosts",
        "web.yaml changes 1 of 3 hosts (web)",
        "",
        "db (db.yaml, own file changed)",
        "  no semantic change",
        "  metadata changed: description",
        "web (web.yaml, own file changed): changed by web.yaml",
        "  in tcp 8443 (pcsync-https) from any: deny → allow",
        "unchanged: bastion",
    ]) + "\n"
    document = json.loads(run("git:HEAD:policies", "policies", "--format", "json").stdout)
    assert [(s["file"], s["hosts"]) for s in document["summary"]] == [("db.yaml", []), ("web.yaml", ["web"])]
    assert (document["hosts"]["web"]["changed_by"], document["hosts"]["web"]["own_file_changed"]) == (
        ["web.yaml"], True)
    assert document["hosts"]["db"]["metadata_changed"] == ["description"]
    assert document["hosts"]["bastion"]["own_file_changed"] is False


def test_a_removed_include(repo: Path) -> None:
    """web spliced base/web-extra.yaml in; the change removes the file and the include."""
    (repo / "policies/base/web-extra.yaml").write_text(
        "version: 1\nrules:\n  - name: alt-http\n    action: allow\n    ports: [8080/tcp]\n", encoding="utf-8")
    edit(repo / "policies/web.yaml", "  - include: base/rules.yaml\n",
         "  - include: base/rules.yaml\n  - include: base/web-extra.yaml\n")
    commit(repo, "web-extra")
    (repo / "policies/base/web-extra.yaml").unlink()
    edit(repo / "policies/web.yaml", "  - include: base/web-extra.yaml\n", "")
    result = run("git:HEAD:policies", "policies")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[:5] == [
        "base/web-extra.yaml (removed) changes 1 of 3 hosts (web)",
        "web.yaml changes 1 of 3 hosts (web)",
        "",
        "web (web.yaml, own file changed): changed by base/web-extra.yaml, web.yaml",
        "  in tcp 8080 (http-alt) from any: allow → deny",
    ]


# ---------------------------------------------------------------------- hosts added and removed


def test_hosts_added_and_removed(repo: Path) -> None:
    text = (repo / "policies/db.yaml").read_text(encoding="utf-8")
    (repo / "policies/cache.yaml").write_text(text.replace("name: db\n", "name: cache\n"), encoding="utf-8")
    (repo / "policies/bastion.yaml").unlink()
    result = run("git:HEAD:policies", "policies")
    assert result.exit_code == 1
    assert result.stdout == "\n".join([
        "host added: cache (cache.yaml)",
        "host removed: bastion (bastion.yaml)",
        "unchanged: db, web",
    ]) + "\n"
    document = json.loads(run("git:HEAD:policies", "policies", "--format", "json").stdout)
    assert (document["added"], document["removed"], document["summary"]) == (["cache"], ["bastion"], [])
    assert list(document["hosts"]) == ["db", "web"]
    markdown = run("git:HEAD:policies", "policies", "--format", "markdown").stdout
    assert "- host added: `cache` (`cache.yaml`)\n- host removed: `bastion` (`bastion.yaml`)\n" in markdown


def test_the_summary_counts_the_new_fleet(repo: Path) -> None:
    edit(repo / "policies/base/rules.yaml", *SSH)
    (repo / "policies/bastion.yaml").unlink()
    assert run("git:HEAD:policies", "policies").stdout.splitlines()[:2] == [
        "base/rules.yaml changes 2 of 2 hosts (db, web)",
        "host removed: bastion (bastion.yaml)",
    ]


# ---------------------------------------------------------------------- trouble


def test_an_error_in_an_included_file_at_rev(repo: Path) -> None:
    rules = repo / "policies/base/rules.yaml"
    edit(rules, "ports: [dormant]", "ports: [dormnt]")
    commit(repo, "a typo")
    git(repo, "checkout", "-q", "HEAD~1", "--", "policies")
    line = next(n for n, text in enumerate(rules.read_text().splitlines(), 1) if "ports: [dormant]" in text)
    result = run("git:HEAD:policies", "policies")
    assert result.exit_code == 2
    assert result.stdout == ""
    error = f"git:HEAD:policies/base/rules.yaml:{line}:13: unknown service 'dormnt'"
    lines = result.stderr.splitlines()
    assert [entry.split(" (did you mean")[0] for entry in lines] == [error] * 3
    assert [entry.rsplit(" (included from ", 1)[1] for entry in lines] == [
        "git:HEAD:policies/bastion.yaml:14:14)", "git:HEAD:policies/db.yaml:12:14)",
        "git:HEAD:policies/web.yaml:10:14)"]
    # the other way round: the new side's errors, just as located
    assert run("policies", "git:HEAD:policies").stderr == result.stderr


def test_an_error_two_includes_deep(repo: Path) -> None:
    edit(repo / "policies/inventory/networks.yaml", "db: [203.0.113.20,", "db: [203.0.113.300,")
    result = run("git:HEAD:policies", "policies")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    message = "policies/inventory/networks.yaml:7:8: '203.0.113.300' is not an IP address or CIDR network"
    assert all(entry.startswith(message + " (included from policies/base/networks.yaml:3:11, from ") for entry in lines)
    assert lines[1].endswith(" (included from policies/base/networks.yaml:3:11, from policies/db.yaml:7:11)")


def test_a_directory_against_a_file(repo: Path) -> None:
    result = run("git:HEAD:policies", "policies/db.yaml")
    assert result.exit_code == 2
    assert result.stderr == (
        "git:HEAD:policies is a directory but policies/db.yaml is not: diff two policies or two directories\n")
    assert run("policies", "git:HEAD:nope").stderr == (
        "git:HEAD:nope: cannot read policy: path 'nope' does not exist in 'HEAD'\n")


def test_duplicate_names(repo: Path) -> None:
    shutil.copy(repo / "policies/db.yaml", repo / "policies/db2.yaml")
    result = run("git:HEAD:policies", "policies")
    assert result.exit_code == 2
    assert result.stderr == ("policies/db2.yaml: policy name 'db' is also the name of policies/db.yaml: the hosts "
                             "of a fleet pair up by name, so their names must differ\n")


# ---------------------------------------------------------------------- directories


def test_two_local_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(FLEET, tmp_path / "old")
    shutil.copytree(FLEET, tmp_path / "new")
    edit(tmp_path / "new/base/rules.yaml", *SSH)
    monkeypatch.chdir(tmp_path)
    result = run("old", "new")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[:3] == [
        "base/rules.yaml changes 2 of 3 hosts (db, web)", "", "db (db.yaml): changed by base/rules.yaml"]
    assert run("old", "old/").stdout == "no semantic change (3 hosts)\n"
    # files are still files
    single = run("old/db.yaml", "new/db.yaml")
    assert (single.exit_code, single.stdout) == (1, ADMINS_SSH.strip() + "\n")


def test_from_a_subdirectory(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git:REV:./DIR is relative to the current directory, as git show reads it."""
    edit(repo / "policies/base/rules.yaml", *SSH)
    monkeypatch.chdir(repo / "policies")
    result = run("git:HEAD:./", ".")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == "base/rules.yaml changes 2 of 3 hosts (db, web)"
    assert run("git:HEAD:policies", ".").stdout == result.stdout


def test_git_listing(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "policies/link.yaml").symlink_to("web.yaml")
    (repo / "policies/notes.txt").write_text("not a policy\n")
    commit(repo, "a link")
    files = GitFiles("HEAD")
    assert files.list_yaml("policies") == ["policies/bastion.yaml", "policies/db.yaml", "policies/web.yaml"]
    assert files.list_yaml("policies/base/") == ["policies/base/networks.yaml", "policies/base/rules.yaml"]
    assert files.is_tree("policies") and not files.is_tree("policies/db.yaml") and not files.is_tree("nope")
    monkeypatch.chdir(repo / "policies")
    assert files.list_yaml("./") == ["./bastion.yaml", "./db.yaml", "./web.yaml"]
    assert files.list_yaml("policies") == ["policies/bastion.yaml", "policies/db.yaml", "policies/web.yaml"]
    files.prefetch(["./db.yaml", "nope.yaml", "./base", "policies/web.yaml"])
    assert files.read_bytes("./db.yaml") == (repo / "policies/db.yaml").read_bytes()
    assert files.read_bytes("policies/web.yaml") == (repo / "policies/web.yaml").read_bytes()
    assert [dir_prefix(d) for d in (".", "./", "policies", "policies/", "./policies/", "a/../b")] == [
        "./", "./", "policies/", "policies/", "./policies/", "b/"]


# ---------------------------------------------------------------------- the doc


def doc_examples() -> list[tuple[str, str]]:
    """(command, output) of each console block of docs/diff.md's "Fleets" section."""
    text = (ROOT / "docs/diff.md").read_text(encoding="utf-8")
    section = text.split("\n## Fleets\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for block in re.findall(r"^```console\n(.*?)^```$", section, re.MULTILINE | re.DOTALL):
        command, _, output = block.partition("\n")
        found.append((command.removeprefix("$ fwgen diff "), output))
    return found


def test_the_doc_examples_are_real(repo: Path) -> None:
    examples = doc_examples()
    assert len(examples) == 5
    edit(repo / "policies/base/rules.yaml", *SSH)
    edit(repo / "policies/web.yaml", "ports: [http/tcp, https/tcp]", "ports: [http/tcp, https/tcp, 8443/tcp]")
    (command, output), (command_md, output_md) = examples[0], examples[2]
    assert run(*shlex.split(command)).stdout == output
    assert run(*shlex.split(command_md)).stdout == output_md
    command_json, output_json = examples[3]
    query = json.loads(output_json)
    document = json.loads(run(*shlex.split(command_json.split(" | ")[0])).stdout)
    assert query["summary"] == document["summary"]
    assert query["db"] == {k: document["hosts"]["db"][k] for k in ("count", "changed_by", "own_file_changed")}
    git(repo, "checkout", "-q", "--", "policies")

    (repo / "policies/cache.yaml").write_text(
        (repo / "policies/db.yaml").read_text(encoding="utf-8").replace("name: db\n", "name: cache\n"))
    (repo / "policies/bastion.yaml").unlink()
    command, output = examples[1]
    assert run(*shlex.split(command)).stdout == output
    (repo / "policies/cache.yaml").unlink()
    git(repo, "checkout", "-q", "--", "policies")

    edit(repo / "policies/base/rules.yaml", "ports: [dormant]", "ports: [dormnt]")
    command, output = examples[4]
    result = run(*shlex.split(command))
    assert (result.exit_code, result.stderr) == (2, output)
