"""The first-match partition against a brute-force first match, port by port."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fwgen.errors import Location
from fwgen.ir import Action, Direction, PortRange, Protocol, Rule, merge_ranges
from fwgen.lowering import Run, Single, first_match_partition, join_touching, segments

T, U = Protocol.TCP, Protocol.UDP


def _rule(index: int, ranges: dict[Protocol, list[tuple[int, int]]], action: Action = Action.ALLOW,
          restricted: bool = False) -> Rule:
    ports = tuple((p, merge_ranges([PortRange(lo, hi) for lo, hi in r])) for p, r in ranges.items() if r)
    return Rule(index=index, name=f"r{index}", location=Location("p.yaml", index, 1), action=action,
                log=False, direction=Direction.IN, ports=ports,
                remote_v4=() if restricted else None, remote_v6=None if not restricted else ())


port_range = st.integers(0, 120).flatmap(lambda lo: st.tuples(st.just(lo), st.integers(lo, min(lo + 30, 127))))
rules_strategy = st.lists(
    st.tuples(st.lists(port_range, max_size=4), st.lists(port_range, max_size=4), st.sampled_from(list(Action))),
    min_size=1, max_size=12,
)


@settings(max_examples=300)
@given(rules_strategy)
def test_partition_equals_brute_force_first_match(spec: list) -> None:
    rules = tuple(_rule(i + 1, {T: tcp, U: udp}, action) for i, (tcp, udp, action) in enumerate(spec))
    for proto in (T, U):
        partition = first_match_partition(rules, proto)
        owner = {port: rule for pr, rule in partition for port in range(pr.lo, pr.hi + 1)}
        for port in range(0, 130):
            expected = next((r for r in rules if any(port in pr for pr in r.port_ranges(proto))), None)
            assert owner.get(port) is expected, (proto, port)
        neighbours = list(zip(partition, partition[1:], strict=False))
        assert all(a.hi < b.lo for (a, _), (b, _) in neighbours)
        assert all(not (a.hi + 1 == b.lo and ra is rb) for (a, ra), (b, rb) in neighbours)
        joined = join_touching(partition, lambda r: r.action)
        covered = {port for lo, hi, _ in joined for port in range(lo, hi + 1)}
        assert covered == set(owner)
        for lo, hi, action in joined:
            assert all(owner[p].action == action for p in range(lo, hi + 1))
        pairs = list(zip(joined, joined[1:], strict=False))
        assert all(a_hi < b_lo for (_, a_hi, _), (b_lo, _, _) in pairs)
        assert all(not (a_hi + 1 == b_lo and ka == kb) for (_, a_hi, ka), (b_lo, _, kb) in pairs)


def test_segments_keep_address_rules_in_place() -> None:
    a, b = _rule(1, {T: [(1, 2)]}), _rule(2, {T: [(3, 4)]})
    c = _rule(3, {T: [(1, 9)]}, restricted=True)
    d = _rule(4, {T: [(5, 6)]})
    assert list(segments((a, b, c, d))) == [Run((a, b)), Single(c), Run((d,))]


def test_full_range_and_edges() -> None:
    rules = (_rule(1, {T: [(0, 65535)]}), _rule(2, {T: [(65535, 65535)]}))
    partition = first_match_partition(rules, T)
    assert [(pr, r.name) for pr, r in partition] == [(PortRange(0, 65535), "r1")]  # touching intervals of r1 joined
    assert join_touching(partition, lambda r: r.name) == [(0, 65535, "r1")]
    assert first_match_partition(rules, U) == []
