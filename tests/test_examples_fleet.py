"""The Ansible example (docs/examples/ansible/) and the example fleet (policies/fleet/)
agree: the template, rendered as Ansible renders it from inventory.yml, is the
committed inventory/networks.yaml byte for byte; the playbook uses only real
ansible.builtin modules and task keywords; and the one `fwgen build` it runs gives every
host of the inventory its own build with the files the fwgen role (roles/fwgen) ships
to it. (tests/kernel/test_ansible_role.py runs the role itself with ansible-playbook.)

Here `groups` and `hostvars` are built from the YAML inventory the way Ansible's yaml
inventory plugin builds them, and the template is rendered with plain Jinja2 set up as
the template module sets it up."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from click.testing import CliRunner

from fwgen.cli import main

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE = ROOT / "docs" / "examples" / "ansible"
FLEET = ROOT / "policies" / "fleet"
NETWORKS = FLEET / "inventory" / "networks.yaml"
INVENTORY_SHA256 = hashlib.sha256(NETWORKS.read_bytes()).hexdigest()

# ansible.builtin modules the example may use, and the task keywords it may set
MODULES = {
    "ansible.builtin.apt", "ansible.builtin.assert", "ansible.builtin.async_status", "ansible.builtin.command",
    "ansible.builtin.copy", "ansible.builtin.debug", "ansible.builtin.fail", "ansible.builtin.file",
    "ansible.builtin.lineinfile", "ansible.builtin.set_fact", "ansible.builtin.stat", "ansible.builtin.template",
    "ansible.builtin.tempfile", "ansible.builtin.wait_for",
}
TASK_KEYWORDS = {
    "name", "when", "block", "always", "delegate_to", "run_once", "become", "changed_when", "failed_when",
    "check_mode", "notify", "tags", "register", "loop", "listen", "async", "poll", "until", "retries", "delay",
    "ignore_errors",
}
PLAY_KEYWORDS = {"name", "hosts", "become", "gather_facts", "vars", "pre_tasks", "roles"}
ROLE = ROOT / "roles" / "fwgen"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


class Inventory:
    """``groups`` and ``hostvars`` as Ansible's yaml inventory plugin gives them: a group
    holds its own hosts and its children's, in inventory order; a host's variables are
    all's, then its groups' from the outermost in (by depth, then name), then its own."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.hosts: dict[str, dict[str, Any]] = {}  # host -> its own variables
        self.members: dict[str, list[str]] = {"all": [], "ungrouped": []}
        self.group_vars: dict[str, dict[str, Any]] = {"all": {}}
        self.depth: dict[str, int] = {"all": 0}
        self.parents: dict[str, set[str]] = {}
        for name, spec in data.items():
            self._group(name, spec or {}, None, 1 if name != "all" else 0)
        for host in self.hosts:
            if not any(host in hosts for group, hosts in self.members.items() if group not in ("all", "ungrouped")):
                self.members["ungrouped"].append(host)

    def _group(self, name: str, spec: dict[str, Any], parent: str | None, depth: int) -> None:
        assert set(spec) <= {"hosts", "vars", "children"}, (name, spec)
        self.members.setdefault(name, [])
        self.group_vars.setdefault(name, {}).update(spec.get("vars") or {})
        self.depth[name] = max(self.depth.get(name, 0), depth)
        if parent is not None:
            self.parents.setdefault(name, set()).add(parent)
        for host, variables in (spec.get("hosts") or {}).items():
            self.hosts.setdefault(host, {}).update(variables or {})
            self._add(name, host)
        for child, child_spec in (spec.get("children") or {}).items():
            self._group(child, child_spec or {}, name, depth + 1)

    def _add(self, group: str, host: str) -> None:
        for name in (group, *self.parents.get(group, ()), "all"):
            if host not in self.members[name]:
                self.members[name].append(host)
            if name != group and name != "all":
                self._add(name, host)

    @property
    def groups(self) -> dict[str, list[str]]:
        return {name: list(hosts) for name, hosts in self.members.items()}

    def group_names(self, host: str) -> list[str]:
        return sorted(g for g, hosts in self.members.items() if host in hosts and g not in ("all", "ungrouped"))

    @property
    def hostvars(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        for host, own in self.hosts.items():
            variables: dict[str, Any] = dict(self.group_vars["all"])
            for group in sorted(self.group_names(host), key=lambda g: (self.depth[g], g)):
                variables.update(self.group_vars[group])
            variables.update(own)
            variables.update(inventory_hostname=host, group_names=self.group_names(host))
            result[host] = variables
        return result


INVENTORY = Inventory(load(ANSIBLE / "inventory.yml"))
PLAYBOOK = load(ANSIBLE / "playbook.yml")
(PLAY,) = PLAYBOOK


def ansible_environment(searchpath: Path) -> jinja2.Environment:
    """The template module's Jinja2 settings: trim_blocks on, lstrip_blocks off, the
    template's trailing newline kept, undefined variables an error."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(searchpath)), trim_blocks=True, lstrip_blocks=False,
        keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False,
    )


def expand(text: str, **variables: Any) -> str:
    """A playbook string with its ``{{ ... }}`` filled in (simple expressions only)."""
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(text).render(**variables)


def tasks(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every task, those inside blocks too (and the blocks themselves)."""
    found: list[dict[str, Any]] = []
    for item in items:
        found.append(item)
        found.extend(tasks(item.get("block", []) + item.get("always", [])))
    return found


ROLE_TASKS = tasks(load(ROLE / "tasks" / "main.yml") + load(ROLE / "handlers" / "main.yml"))
ALL_TASKS = tasks(PLAY.get("pre_tasks", [])) + ROLE_TASKS
(ROLE_ENTRY,) = PLAY["roles"]
DEFAULTS = load(ROLE / "defaults" / "main.yml")


def module(task: dict[str, Any]) -> str:
    (name,) = [key for key in task if key not in TASK_KEYWORDS]
    return name


def template_task() -> dict[str, Any]:
    (task,) = [t for t in ALL_TASKS if "ansible.builtin.template" in t]
    return task


def build_task() -> dict[str, Any]:
    (task,) = [t for t in ROLE_TASKS if t.get("ansible.builtin.command", {}).get("argv", ["", ""])[1] == "build"]
    return task


def role_vars(host: str, build_dir: Path) -> dict[str, Any]:
    """What the role sees on ``host``: the inventory's variables, the play's and the
    role entry's (filled in), and the build's paths."""
    variables = {**INVENTORY.hostvars[host], "playbook_dir": str(ANSIBLE)}
    variables["fwgen_fleet"] = expand(PLAY["vars"]["fwgen_fleet"], **variables)
    for key, value in ROLE_ENTRY["vars"].items():
        variables[key] = expand(value, **variables)
    variables.update(fwgen_build_dir=str(build_dir), fwgen_controller_executable="fwgen")
    variables["fwgen_built"] = f"{build_dir}/{host}/{variables['fwgen_name']}"
    return variables


def render_networks(inventory: Inventory) -> str:
    src = template_task()["ansible.builtin.template"]["src"]
    env = ansible_environment(ANSIBLE)
    return env.get_template(src).render(
        groups=inventory.groups, hostvars=inventory.hostvars, fwgen_roles=PLAY["vars"]["fwgen_roles"],
        playbook_dir=str(ANSIBLE), inventory_hostname="localhost",
    )


# (a) the template and the committed networks file


def test_the_template_renders_the_committed_networks_file() -> None:
    assert render_networks(INVENTORY) == NETWORKS.read_text(encoding="utf-8")


def test_the_template_task_writes_the_fleet_s_networks_file() -> None:
    task = template_task()
    assert task["delegate_to"] == "localhost" and task["run_once"] is True and task["become"] is False
    assert (ANSIBLE / task["ansible.builtin.template"]["src"]).is_file()
    dest = expand(task["ansible.builtin.template"]["dest"], fwgen_fleet=expand(PLAY["vars"]["fwgen_fleet"],
                                                                                  playbook_dir=str(ANSIBLE)))
    assert Path(dest).resolve() == NETWORKS


def test_the_template_follows_the_inventory() -> None:
    """A host added, one without IPv6: the file changes with the inventory and stays a
    networks file fwgen reads."""
    data = load(ANSIBLE / "inventory.yml")
    web = data["fleet"]["children"]["web"]["hosts"]
    web["web3.example.net"] = {"ansible_host": "203.0.113.12"}
    text = render_networks(Inventory(data))
    networks = yaml.safe_load(text)["networks"]
    assert networks["web"] == ["203.0.113.10", "203.0.113.11", "203.0.113.12", "2001:db8:113::10",
                               "2001:db8:113::11"]
    assert networks["db"] == ["203.0.113.20", "2001:db8:113::20"]


# (b) inventory and playbook


def test_inventory_has_the_fleet_s_roles() -> None:
    roles = PLAY["vars"]["fwgen_roles"]
    groups = INVENTORY.groups
    assert PLAY["hosts"] in groups and set(groups[PLAY["hosts"]]) == set(INVENTORY.hosts)
    policies = {path.stem: load(path) for path in FLEET.glob("*.yaml")}
    assert sorted(roles) == sorted(policies) == sorted(load(NETWORKS)["networks"])
    for role in roles:
        assert groups[role], role
        assert policies[role]["name"] == role
        for host in groups[role]:
            variables = INVENTORY.hostvars[host]
            assert variables["fwgen_name"] == role, host
            assert ipaddress.ip_address(variables["ansible_host"]).version == 4, host
            assert ipaddress.ip_address(variables["ipv6_address"]).version == 6, host
            assert variables.get("fwgen_backend", "nftables") in ("nftables", "iptables"), host
    assert {INVENTORY.hostvars[h].get("fwgen_backend", "nftables") for h in INVENTORY.hosts} == {"nftables",
                                                                                                 "iptables"}


def test_playbook_uses_real_modules_and_keywords() -> None:
    assert set(PLAY) <= PLAY_KEYWORDS
    assert ROLE_ENTRY["role"] == "fwgen" and (ROLE / "tasks" / "main.yml").is_file()
    assert "roles_path = ../../../roles" in (ANSIBLE / "ansible.cfg").read_text()
    for task in ALL_TASKS:
        assert set(task) - {"block", "always"} <= TASK_KEYWORDS | MODULES, task.get("name")
        if "block" not in task:
            assert module(task) in MODULES, task.get("name")
        assert task.get("name"), task


def test_one_build_per_host_on_the_controller() -> None:
    build = build_task()
    assert build["delegate_to"] == "localhost" and build["become"] is False and build["check_mode"] is False
    argv = build["ansible.builtin.command"]["argv"]
    assert argv[:3] == ["{{ fwgen_controller_executable }}", "build", "{{ fwgen_policy }}"]
    assert "--check" not in argv and "--flat" not in argv
    order = [t.get("name") for t in ALL_TASKS]
    assert order.index(template_task()["name"]) < order.index(build["name"])  # the build reads what it wrote


def test_every_path_is_a_variable() -> None:
    for key in ("fwgen_etc_dir", "fwgen_state_dir", "fwgen_executable", "fwgen_controller_executable",
                "fwgen_build_dir", "fwgen_nftables_conf", "fwgen_iptables_boot_dir"):
        assert key in DEFAULTS, key
    text = (ROLE / "tasks" / "main.yml").read_text() + (ROLE / "handlers" / "main.yml").read_text()
    assert "/etc/" not in text and "/var/" not in text  # no path but the defaults'


# (c) the build gives every host its outputs


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The role's build command, run for every host as the role runs it."""
    out = tmp_path_factory.mktemp("out")
    build = build_task()
    for host in INVENTORY.hosts:
        variables = role_vars(host, out)
        argv = [expand(a, **variables) for a in build["ansible.builtin.command"]["argv"]]
        assert Path(argv[2]).resolve() == FLEET / f"{variables['fwgen_name']}.yaml"
        result = CliRunner().invoke(main, argv[1:])
        assert result.exit_code == 0, result.output
    return out


def test_every_host_gets_its_policy_s_outputs(built: Path) -> None:
    assert sorted(p.name for p in built.iterdir()) == sorted(INVENTORY.hosts)
    for host in INVENTORY.hosts:
        name = INVENTORY.hostvars[host]["fwgen_name"]
        assert [p.name for p in (built / host).iterdir()] == [name], host
        assert name in PLAY["vars"]["fwgen_roles"]


@pytest.mark.parametrize("host", sorted(INVENTORY.hosts))
def test_the_files_shipped_to_each_host_exist(built: Path, host: str) -> None:
    """The role's copy task ships, for the host's target, files the build wrote."""
    variables = role_vars(host, built)
    target, name = variables["fwgen_target"], variables["fwgen_name"]
    assert target == INVENTORY.hostvars[host].get("fwgen_backend", "nftables")
    (ship,) = [t for t in ROLE_TASKS if "notify" in t]
    assert ship["ansible.builtin.copy"]["src"] == "{{ fwgen_built }}/{{ fwgen_target }}/{{ item }}"
    files = [f"{name}.nft"] if target == "nftables" else ["rules.v4", "rules.v6"]
    for item in files:
        path = Path(expand(ship["ansible.builtin.copy"]["src"], item=item, **variables))
        assert path.is_file(), path
        header = path.read_text(encoding="utf-8").split("\n# registry:")[0]
        assert f"\n# policy: {name}.yaml sha256:" in header, path  # the host's own policy
        assert f"\n# include: inventory/networks.yaml sha256:{INVENTORY_SHA256}" in header, path
