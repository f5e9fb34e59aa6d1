"""The one table of output targets: what each can express, and what renders it.

The CLI's ``-t`` choices, ``build``, the template list and the tests all read
``TARGETS``. A target states here what it cannot express and what it can only express
approximately; ``fwgen.build`` checks every policy against that centrally, turning a
feature a target lacks into a located error and a degradation into a located warning
(an error with ``--strict``). A target's module is imported only to render, so that the
table costs nothing to commands that build nothing.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from fwgen.ir import Ruleset


class TargetOutput(NamedTuple):
    files: dict[str, str]  # path relative to the output directory -> text
    warnings: tuple[str, ...] | list[str] = ()


class Feature(enum.Enum):
    """What a rule (or the policy) asks of a target beyond ports, addresses and protocols."""

    INTERFACE = "interface"  # a named interface (rule key interface:)
    PROFILES = "profiles"  # a Windows profile (rule key profiles:)
    REJECT = "reject"  # defaults.deny: reject
    MONITOR = "monitor"  # action: monitor (counted, logged, rate-limited)
    LOG = "log"  # log: true on an allow or deny rule
    PUBLISHED_PORTS = "published_ports"  # published_ports: enforce (DNATed forwarded connections)
    PUBLISHED_REJECT = "published_ports with reject"  # enforce, defaults.deny: reject and an inbound deny


class Target(NamedTuple):
    name: str
    module: str  # lowers and renders: its render(ruleset) -> TargetOutput
    template: str  # under templates/: the file's layout
    lines: str  # under templates/: the syntax of each kind of line (fwgen.render.Shapes)
    lacks: Mapping[Feature, str]  # cannot express: why (a located error)
    degrades: Mapping[Feature, str]  # expresses approximately: how (a located warning)

    @property
    def supports(self) -> frozenset[Feature]:
        """The features it expresses, exactly or approximately."""
        return frozenset(Feature) - set(self.lacks)

    def render(self, ruleset: Ruleset) -> TargetOutput:
        output: TargetOutput = importlib.import_module(self.module).render(ruleset)
        return output


_LINUX_LACKS = {Feature.PROFILES: "profiles are Windows Firewall's; Linux has none"}

TARGETS: tuple[Target, ...] = (
    Target(
        "iptables", "fwgen.targets.iptables", "iptables/rules.j2", "iptables/lines.j2", _LINUX_LACKS,
        {
            Feature.PUBLISHED_REJECT: "published connections are judged in the mangle table (before every filter "
            "rule, Docker's and kube-proxy's included), where REJECT does not exist: a published connection the "
            "policy denies is dropped, not rejected (connections to the host itself are still rejected)",
        },
    ),
    Target("nftables", "fwgen.targets.nftables", "nftables/table.nft.j2", "nftables/lines.j2", _LINUX_LACKS, {}),
    Target(
        "windows", "fwgen.targets.windows", "windows/script.cmd.j2", "windows/lines.j2",
        {Feature.INTERFACE: "netsh has interface types only (interfacetype=lan|wireless|ras), not names"},
        {
            Feature.REJECT: "reject is not supported by Windows Firewall; deny rules and deny defaults drop "
            "silently",
            Feature.MONITOR: "monitor rules become allow rules; Windows Firewall has no per-rule logging, rate "
            "limit or counters, so logging of allowed connections is enabled for all profiles",
            Feature.LOG: "log: true becomes logging of all allowed (or dropped) connections for all profiles "
            "(no per-rule logging)",
            Feature.PUBLISHED_PORTS: "published_ports: enforce has no effect; Windows Firewall sees no "
            "DNATed forwarded connections to judge (container port mappings there are WinNAT's and the "
            "Host Network Service's)",
        },
    ),
)
BY_NAME: dict[str, Target] = {target.name: target for target in TARGETS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
TEMPLATES: tuple[str, ...] = tuple(name for target in TARGETS for name in (target.template, target.lines))
