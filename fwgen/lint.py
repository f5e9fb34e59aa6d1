"""``fwgen lint``: what a careful reviewer would say about a policy that compiles.

A finding is one line, ``PATH:LINE:COL: warning|error: message [id]``; the checks and
their ids live in ``fwgen.lint_checks`` (docs/lint.md is generated from their
docstrings: ``python -m fwgen.lint > docs/lint.md``). A policy's ``acknowledge:`` list
silences findings by id. ``fwgen build`` refuses a policy with an error-level finding
(``check_errors``).

The rule analysis is exact. For each direction and protocol the port axis is cut at
every rule's range boundaries, and each address family's axis at every rule's network
boundaries (integer intervals); on each resulting cell the same set of rules applies,
so first-match evaluated once per distinct (port set, address set) pair tells, for every
rule, where it decides, who decides the traffic it covers but does not get, and who
would decide its traffic without it.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import yaml

from fwgen import ir
from fwgen.errors import Location, PolicyError
from fwgen.intervals import merge_spans
from fwgen.ir import Action, Direction, Protocol
from fwgen.policy import Policy, PolicyRule, load_policy
from fwgen.registry import Registry
from fwgen.resolve import compile_policy
from fwgen.yamlsource import Source

Decider = int | None  # the deciding rule's index in the policy; None = the default
TARGETS = ("iptables", "nftables", "windows")
LINUX_TARGETS = ("iptables", "nftables")
Span = tuple[int, int]  # an inclusive integer interval: ports or addresses
_SIZE = {4: 1 << 32, 6: 1 << 128}
SEVERITIES = ("error", "warning")


class Finding(NamedTuple):
    id: str
    severity: str  # error | warning
    location: Location
    message: str

    def __str__(self) -> str:
        text = f"{self.location}: {self.severity}: {self.message} [{self.id}]"
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

    def sort_key(self) -> tuple[int, int, str, str]:
        return (self.location.line, self.location.col, self.id, self.message)


class Check(NamedTuple):
    """One kind of finding: ``run`` yields (location, message) pairs."""

    id: str
    severity: str
    run: Callable[[Context], Iterable[tuple[Location, str]]]
    doc: str
    after: bool = False  # runs once the others' findings are known (ctx.raised)


# ---------------------------------------------------------------------- locations


class Locator:
    """Where keys were written, for findings about things ``Policy`` keeps no location
    for (defaults, monitor.rate, from/to, log, acknowledge items): read from the nodes
    the policy was loaded from; without them every answer is the policy's first line."""

    def __init__(self, policy: Policy) -> None:
        self.root = Location(policy.path, 1, 1)
        self._top: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        self._rules: list[dict[str, yaml.Node]] = []
        self._source: Source | None = None
        document = policy.document
        if document is None or not isinstance(document.root, yaml.MappingNode):
            return
        self._source = document.source
        self.root = document.at(document.root)
        self._top = {k.value: (k, v) for k, v in document.root.value}
        rules = self._top.get("rules", (None, None))[1]
        if isinstance(rules, yaml.SequenceNode):
            self._rules = [
                {k.value: v for k, v in node.value} if isinstance(node, yaml.MappingNode) else {}
                for node in rules.value
            ]

    def _at(self, node: yaml.Node | None, fallback: Location) -> Location:
        return self._source.at(node) if self._source is not None and node is not None else fallback

    def top(self, *keys: str) -> Location:
        """``top("defaults", "inbound")``: that value's location; when it is not written,
        the nearest written parent key (``defaults:``), else the policy's start."""
        node: yaml.Node | None = None
        here = self._top
        for key in keys:
            if key not in here:
                break
            key_node, value = here[key]
            node = value if key == keys[-1] else key_node
            here = {k.value: (k, v) for k, v in value.value} if isinstance(value, yaml.MappingNode) else {}
        return self._at(node, self.root)

    def rule(self, rule: PolicyRule, key: str) -> Location:
        """The value of ``key`` in ``rule``, else the rule's own location."""
        keys = self._rules[rule.index - 1] if rule.index <= len(self._rules) else {}
        return self._at(keys.get(key), rule.location)

    def acknowledgements(self) -> list[tuple[str, Location]]:
        node = self._top.get("acknowledge", (None, None))[1]
        if not isinstance(node, yaml.SequenceNode):
            return []
        return [(str(item.value), self._at(item, self.root)) for item in node.value
                if isinstance(item, yaml.ScalarNode)]


# ---------------------------------------------------------------------- the exact model


@dataclass
class PortFacts:
    """One rule on one set of ports (of one protocol) that every rule covers alike."""

    spans: list[Span]
    first: bool = False  # the rule decides somewhere on these ports
    deciders: set[int] = field(default_factory=set)  # earlier rules deciding its traffic here


@dataclass
class RuleFacts:
    reached: bool = False  # decides some connection
    deciders: set[int] = field(default_factory=set)  # earlier rules deciding traffic it covers
    changes: bool = False  # removing it changes some verdict (action or logging)
    takers: set[Decider] = field(default_factory=set)  # who decides its traffic without it
    ports: dict[tuple[Protocol, int], PortFacts] = field(default_factory=dict)  # by (protocol, port group)


def _segments(spans_per_bit: Sequence[Sequence[Span] | None], size: int) -> tuple[list[int], list[int]]:
    """Cut [0, size) at every span boundary: the segment starts, and per segment the
    mask of the bits whose spans cover it (None = the whole axis)."""
    cuts = {0}
    for spans in spans_per_bit:
        for lo, hi in spans or ():
            cuts.add(lo)
            if hi + 1 < size:
                cuts.add(hi + 1)
    starts = sorted(cuts)
    masks = [0] * len(starts)
    for bit, spans in enumerate(spans_per_bit):
        for lo, hi in ((0, size - 1),) if spans is None else spans:
            for i in range(bisect.bisect_left(starts, lo), bisect.bisect_right(starts, hi)):
                masks[i] |= 1 << bit
    return starts, masks


def _groups(starts: list[int], masks: list[int], size: int) -> dict[int, list[Span]]:
    out: dict[int, list[Span]] = {}
    for i, mask in enumerate(masks):
        end = starts[i + 1] - 1 if i + 1 < len(starts) else size - 1
        spans = out.setdefault(mask, [])
        if spans and spans[-1][1] + 1 == starts[i]:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((starts[i], end))
    return out


def network_spans(networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[Span]:
    return [(int(n.network_address), int(n.broadcast_address)) for n in networks]


class Table:
    """The rules of one direction and protocol, cut into cells (see the module doc)."""

    def __init__(self, rules: Sequence[ir.Rule], protocol: Protocol) -> None:
        self.rules = [r for r in rules if r.port_ranges(protocol)]
        ports = [[(p.lo, p.hi) for p in r.port_ranges(protocol)] for r in self.rules]
        self.port_starts, self.port_masks = _segments(ports, ir.PORT_MAX + 1)
        self.addresses: dict[int, tuple[list[int], list[int]]] = {}
        for family in (4, 6):
            remote = [r.remote(family) for r in self.rules]
            spans = [None if nets is None else network_spans(nets) for nets in remote]
            self.addresses[family] = _segments(spans, _SIZE[family])

    def port_groups(self) -> dict[int, list[Span]]:
        return _groups(self.port_starts, self.port_masks, ir.PORT_MAX + 1)

    def address_masks(self, family: int) -> set[int]:
        return set(self.addresses[family][1])

    def first(self, mask: int) -> ir.Rule | None:
        return self.rules[(mask & -mask).bit_length() - 1] if mask else None

    def regions(self, port: int) -> list[tuple[int, Span, Decider]]:
        """Who decides ``port`` for every remote address: (family, address span, decider)."""
        pmask = self.port_masks[bisect.bisect_right(self.port_starts, port) - 1]
        out: list[tuple[int, Span, Decider]] = []
        for family in (4, 6):
            starts, masks = self.addresses[family]
            for i, amask in enumerate(masks):
                rule = self.first(pmask & amask)
                decider = rule.index if rule else None
                end = starts[i + 1] - 1 if i + 1 < len(starts) else _SIZE[family] - 1
                if out and out[-1][0] == family and out[-1][2] == decider:
                    out[-1] = (family, (out[-1][1][0], end), decider)
                else:
                    out.append((family, (starts[i], end), decider))
        return out


class Context:
    """Everything a check reads: the policy, its IR, the registry, the model, locations."""

    def __init__(
        self, policy: Policy, ruleset: ir.Ruleset, registry: Registry, targets: tuple[str, ...] = TARGETS
    ) -> None:
        self.policy = policy
        self.ruleset = ruleset
        self.registry = registry
        self.targets = targets  # the outputs the policy is built for: some findings depend on them
        self.rule = {r.index: r for r in ruleset.rules}
        self.source_rule = {r.index: r for r in policy.rules}
        self.raised: set[str] = set()  # ids found by the other checks (for ``after`` checks)
        self._tables: dict[tuple[Direction, Protocol], Table] = {}

    @functools.cached_property
    def where(self) -> Locator:
        return Locator(self.policy)

    def table(self, direction: Direction, protocol: Protocol) -> Table:
        """Made once per context (a per-instance memo: a ``functools.cache`` on the method
        would keep every context, its policy and the policy's YAML nodes alive)."""
        table = self._tables.get((direction, protocol))
        if table is None:
            table = self._tables[(direction, protocol)] = Table(self.ruleset.rules_for(direction), protocol)
        return table

    # -- verdicts

    def default(self, direction: Direction) -> Action:
        return self.ruleset.defaults.for_direction(direction)

    def action(self, direction: Direction, decider: Decider) -> Action:
        return self.default(direction) if decider is None else self.rule[decider].action

    def verdict(self, direction: Direction, decider: Decider) -> tuple[Action, bool]:
        if decider is None:
            return self.default(direction), False
        return self.rule[decider].action, self.rule[decider].logged

    def accepts(self, direction: Direction, decider: Decider) -> bool:
        return self.action(direction, decider) is not Action.DENY

    # -- presentation

    def name_line(self, decider: Decider, direction: Direction = Direction.IN, action: bool = False) -> str:
        """``'web' (line 20)``, ``'web' (line 20, allow)`` or ``the default inbound deny``."""
        if decider is None:
            which = "inbound" if direction is Direction.IN else "outbound"
            return f"the default {which} {self.default(direction).value}"
        rule = self.rule[decider]
        extra = f", {rule.action.value}" if action else ""
        return f"'{rule.name}' (line {rule.location.line}{extra})"

    def default_location(self, direction: Direction) -> Location:
        return self.where.top("defaults", "inbound" if direction is Direction.IN else "outbound")

    # -- the full analysis

    @functools.cached_property
    def facts(self) -> dict[int, RuleFacts]:
        facts = {r.index: RuleFacts() for r in self.ruleset.rules}
        for direction in Direction:
            for protocol in ir.PROTOCOLS:
                table = self.table(direction, protocol)
                amasks = table.address_masks(4) | table.address_masks(6)
                for pmask, spans in table.port_groups().items():
                    cells = {pmask & amask for amask in amasks}
                    cells.discard(0)
                    self._port_group(facts, table, direction, protocol, pmask, spans, cells)
        return facts

    def _port_group(
        self, facts: dict[int, RuleFacts], table: Table, direction: Direction, protocol: Protocol,
        pmask: int, spans: list[Span], cells: set[int],
    ) -> None:
        """Every distinct cell (set of covering rules) on one group of ports: the first
        rule decides; each other covering rule has it as a decider; without the first
        rule, the next one (or the default) would decide."""
        rules = table.rules
        covered_by_first: dict[int, int] = {}  # first rule's bit -> the other rules its cells cover
        for mask in cells:
            low = mask & -mask
            bit = low.bit_length() - 1
            rest = mask ^ low
            covered_by_first[bit] = covered_by_first.get(bit, 0) | rest
            first = rules[bit]
            after = rules[(rest & -rest).bit_length() - 1] if rest else None
            own = facts[first.index]
            own.reached = True
            own.takers.add(after.index if after else None)
            if not own.changes and self.verdict(direction, after.index if after else None) != (
                first.action, first.logged
            ):
                own.changes = True
        firsts = 0
        for bit in covered_by_first:
            firsts |= 1 << bit
        remaining = pmask
        while remaining:
            low = remaining & -remaining
            remaining ^= low
            bit = low.bit_length() - 1
            rule_facts = facts[rules[bit].index]
            deciders = {rules[f].index for f, others in covered_by_first.items() if others & low}
            rule_facts.ports[(protocol, pmask)] = PortFacts(spans, bool(firsts & low), deciders)
            rule_facts.deciders |= deciders


# ---------------------------------------------------------------------- formatting


def format_ports(per_protocol: dict[Protocol, list[Span]], limit: int = 6) -> str:
    """``1261/tcp+udp, 1274/udp, 8000-8100/tcp`` (sorted by port; at most ``limit`` items)."""
    protocols: dict[Span, list[str]] = {}
    for protocol in ir.PROTOCOLS:
        for span in merge_spans(per_protocol.get(protocol, [])):
            protocols.setdefault(span, []).append(protocol.value)
    items = [
        f"{lo if lo == hi else f'{lo}-{hi}'}/{'+'.join(names)}" for (lo, hi), names in sorted(protocols.items())
    ]
    if len(items) > limit:
        items = items[:limit] + [f"and {len(items) - limit} more"]
    return ", ".join(items)




def count_ports(spans: Iterable[Span]) -> int:
    return sum(hi - lo + 1 for lo, hi in merge_spans(spans))


# ---------------------------------------------------------------------- running


def checks() -> list[Check]:
    from fwgen.lint_checks import CHECKS

    return CHECKS


def finding_ids() -> tuple[str, ...]:
    """Every finding id, as ``acknowledge:`` accepts them."""
    return tuple(check.id for check in checks())


def lint(
    policy: Policy, registry: Registry, ruleset: ir.Ruleset | None = None,
    severities: tuple[str, ...] = SEVERITIES, targets: tuple[str, ...] = TARGETS,
) -> list[Finding]:
    """The findings ``acknowledge:`` does not silence, sorted by position, for a policy
    built for ``targets``."""
    ctx = Context(policy, ruleset or compile_policy(policy, registry), registry, targets)
    acknowledged = set(policy.acknowledge)
    found: list[Finding] = []
    selected = [c for c in checks() if c.severity in severities]
    if not any(c.after for c in selected):  # nothing asks what the acknowledged checks found,
        selected = [c for c in selected if c.id not in acknowledged]  # so they need not run
    for check in sorted(selected, key=lambda c: c.after):
        if check.after:
            ctx.raised = {f.id for f in found}
        for location, message in check.run(ctx):
            found.append(Finding(check.id, check.severity, location, message))
    return sorted((f for f in found if f.id not in acknowledged), key=Finding.sort_key)


def lint_file(path: str, registry: Registry, targets: tuple[str, ...] = TARGETS) -> list[Finding]:
    """Load, compile and lint; ``PolicyError`` when the policy does not load."""
    return lint(load_policy(path), registry, targets=targets)


def check_errors(
    policy: Policy, ruleset: ir.Ruleset, registry: Registry, targets: tuple[str, ...] = TARGETS
) -> None:
    """For ``fwgen build``: the first unacknowledged error-level finding, as a located
    ``PolicyError``."""
    errors = lint(policy, registry, ruleset, severities=("error",), targets=targets)
    if errors:
        first = errors[0]
        raise PolicyError(first.location, f"{first.message} [{first.id}]")


def exit_status(findings: Sequence[Finding], strict: bool) -> int:
    if any(f.severity == "error" for f in findings) or (strict and findings):
        return 1
    return 0


# ---------------------------------------------------------------------- docs/lint.md


DOC_HEADER = """\
# fwgen lint

<!-- Generated from the docstrings in fwgen/lint_checks.py:
     python -m fwgen.lint > docs/lint.md -->

```
fwgen lint POLICY [-t iptables|nftables|windows]... [--strict] [--registry FILE]
```

Reports what a careful reviewer would flag in a policy that compiles: one line per
finding, `PATH:LINE:COL: warning|error: message [id]`, sorted by position, on stdout.
A policy that does not load gets its one located error line on stderr instead.

| exit status | meaning |
|---|---|
| 0 | no error-level finding (warnings may have been printed) |
| 1 | an error-level finding (with `--strict`: any finding), or a policy that does not load |
| 2 | a usage error |

`fwgen build` runs the error-level checks too, and refuses the policy (one located
line, exit status 1, nothing written) while one is not acknowledged.

To accept a finding after review, list its id under the policy's top-level
`acknowledge:` key (see [policy-format.md](policy-format.md#acknowledge)); it then
silences every finding with that id in that policy:

```yaml
acknowledge: [ssh-lockout, dhcpv4-client]
```

Some findings depend on the targets the policy is built for (`-t`, as for `fwgen build`;
default all three): the lockout check is about SSH when iptables or nftables is built,
and about RDP and WinRM when Windows alone is; a deny that only repeats a deny default
is not redundant where Windows is built, since there an explicit block beats other
software's allow rules, which the default does not.

Rule analysis is exact: per direction and protocol, over every port and every IPv4 and
IPv6 remote address, with the same first-match semantics as `fwgen explain`. A verdict
is the action and whether it is logged; which rule's counter or log prefix it carries
is not part of it.

## Findings
"""


def docs_markdown() -> str:
    parts = [DOC_HEADER]
    parts.append("\n| id | severity | summary |\n|---|---|---|\n")
    for check in checks():
        summary = check.doc.split("\n\n", 1)[0].replace("\n", " ")
        parts.append(f"| [`{check.id}`](#{check.id}) | {check.severity} | {summary} |\n")
    for check in checks():
        parts.append(f"\n### {check.id}\n\n*{check.severity}*\n\n{_doc_body(check.doc)}\n")
    return "".join(parts)


def _doc_body(doc: str) -> str:
    """Docstring paragraphs, with the ``Example::`` policy and its ``Finding::`` line
    (wrapped in the docstring, one line here) as fenced code."""
    out: list[str] = []
    blocks = doc.split("\n\n")
    for i, block in enumerate(blocks):
        if block in ("Example::", "Finding::"):
            out.append("For example:" if block == "Example::" else "reports:")
        elif block.startswith("Targets:: "):
            out.append(f"built with `{' '.join(f'-t {name}' for name in block.split()[1:])}`")
        elif block.startswith("    ") and i and blocks[i - 1] == "Finding::":
            out.append(f"```console\n{_unwrap(block)}\n```")
        elif block.startswith("    "):
            out.append(f"```yaml\n{_dedent(block)}\n```")
        else:
            out.append(block)
    return "\n\n".join(out)


def _dedent(block: str) -> str:
    return "\n".join(line[4:] for line in block.splitlines())


def _unwrap(block: str) -> str:
    return " ".join(line.strip() for line in block.splitlines())


def doc_examples(check: Check) -> tuple[str, str, tuple[str, ...]]:
    """The (policy text, finding line, targets) of a check's docstring example; the
    targets are all three unless a ``Targets:: NAME ...`` paragraph names them."""
    blocks = check.doc.split("\n\n")
    policy = blocks[blocks.index("Example::") + 1]
    finding = blocks[blocks.index("Finding::") + 1]
    named = [block.split()[1:] for block in blocks if block.startswith("Targets:: ")]
    return _dedent(policy) + "\n", _unwrap(finding), tuple(named[0]) if named else TARGETS


if __name__ == "__main__":
    print(docs_markdown(), end="")
