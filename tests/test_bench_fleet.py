"""bench/policies.py's fleet generator: the fwgen policies build, the Aerleon files are
well-formed and mean the same ports and addresses (bench/README.md, case fleetN)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from fwgen.build import build
from fwgen.registry import bundled

ROOT = Path(__file__).resolve().parents[1]


def _load_bench_policies() -> ModuleType:
    # bench/ is not a package, and the repository's policies/ directory would shadow a
    # plain 'import policies'
    spec = importlib.util.spec_from_file_location("fwgen_bench_policies", ROOT / "bench" / "policies.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load_bench_policies()


@pytest.fixture(scope="module")
def fleet() -> Any:
    return bench.generate_fleet(4, seed=7, structure_seed=3)


def test_case_names() -> None:
    assert bench.fleet_hosts("fleet") == bench.FLEET_DEFAULT_HOSTS == 100
    assert bench.fleet_hosts("fleet1000") == 1000
    assert bench.fleet_hosts("fleet0") is None
    assert bench.fleet_hosts("large") is None
    assert bench.is_case("registry") and bench.is_case("fleet25") and not bench.is_case("fleetx")


def test_fwgen_policies_build(fleet: Any, tmp_path: Path) -> None:
    fleet.write(str(tmp_path))
    policies = sorted((tmp_path / bench.Fleet.FWGEN_DIR).glob("*.yaml"))
    assert [p.stem for p in policies] == [h.name for h in fleet.hosts]
    for path, host in zip(policies, fleet.hosts, strict=True):
        assert len(host.rules) == bench.FLEET_RULES
        # as fwgen build does: error-level lint findings refuse the policy
        result = build(str(path), bundled(), lint_errors=True)
        assert len(result.files) == 5, path.name
        rules = yaml.safe_load(path.read_text())["rules"]
        assert {r.get("direction", "in") for r in rules} == {"in", "out"}
        assert {r["action"] for r in rules} == {"allow", "deny", "monitor"}
        assert any("from" in r for r in rules) and any("to" in r for r in rules)


def _aerleon_ports(term: dict[str, Any], services: dict[str, Any]) -> dict[str, set[tuple[int, int]]]:
    """What Aerleon makes of a term's ports: each service's ports of each of the term's
    protocols, all of them applied to every protocol of the term."""
    spans = set()
    for token in term["destination-port"]:
        for entry in services[token]:
            if entry["protocol"] in term["protocol"]:
                lo, _, hi = str(entry["port"]).partition("-")
                spans.add((int(lo), int(hi or lo)))
    return {p: set(spans) for p in term["protocol"]}


def test_aerleon_files_mean_the_same(fleet: Any) -> None:
    services = yaml.safe_load(fleet.files[f"{bench.Fleet.AERLEON_DEFS}/services.yaml"])["services"]
    networks = yaml.safe_load(fleet.files[f"{bench.Fleet.AERLEON_DEFS}/networks.yaml"])["networks"]
    for host in fleet.hosts:
        doc = yaml.safe_load(fleet.files[f"{bench.Fleet.AERLEON_BASE}/pol/{host.name}.yaml"])
        filters = doc["filters"]
        assert len(filters) == 4
        targets = [sorted(f["header"]["targets"]) for f in filters]
        assert targets == [["nftables", "speedway", "windows_advfirewall"], ["speedway"]] * 2
        for f in filters:
            names = [t["name"] for t in f["terms"]]
            assert len(names) == len(set(names))
        for direction, terms in (("in", filters[0]["terms"]), ("out", filters[2]["terms"])):
            rules = [r for r in host.rules if r.direction == direction]
            assert terms == filters[1 if direction == "in" else 3]["terms"]
            by_rule: dict[str, list[dict[str, Any]]] = {}
            for t in terms:
                by_rule.setdefault(t["name"].removesuffix("-tcp").removesuffix("-udp"), []).append(t)
            assert list(by_rule) == [r.name for r in rules]  # same order
            for rule in rules:
                want = {p: {(lo, hi) for e in rule.entries for q, lo, hi in e.pairs if q == p}
                        for p in rule.protocols}
                got: dict[str, set[tuple[int, int]]] = {}
                for t in by_rule[rule.name]:
                    for p, spans in _aerleon_ports(t, services).items():
                        assert p not in got
                        got[p] = spans
                    key = "source-address" if direction == "in" else "destination-address"
                    assert t.get(key, []) == rule.networks
                    assert all(n in networks for n in t.get(key, []))
                    assert t["action"] == ("deny" if rule.action == "deny" else "accept")
                    assert t.get("logging", False) == (rule.action == "monitor")
                assert got == {p: s for p, s in want.items() if s}, (host.name, rule.name)


def test_runs_change_text_not_decisions() -> None:
    a = bench.generate_fleet(3, seed=1, structure_seed=3)
    b = bench.generate_fleet(3, seed=2, structure_seed=3)
    assert a.files.keys() == b.files.keys()
    assert all(a.files[k] != b.files[k] for k in a.files if "/pol/" in k or k.startswith("fwgen/"))

    def decisions(f: Any) -> list[tuple[Any, ...]]:
        return [(r.name, r.direction, r.action, r.protocol, sorted(e.text for e in r.entries),
                 sorted(r.networks)) for h in f.hosts for r in h.rules]

    assert decisions(a) == decisions(b)
