"""Where a policy's keys were written, for messages about things the loaded ``Policy``
keeps no location for (defaults, monitor.rate, from/to, log, acknowledge items)."""

from __future__ import annotations

import yaml

from fwgen.errors import Location
from fwgen.policy import Policy, PolicyRule
from fwgen.yamlsource import Source


class Locator:
    """Where keys were written, for findings about things ``Policy`` keeps no location
    for (defaults, monitor.rate, from/to, log, acknowledge items): read from the nodes
    the policy was loaded from; without them every answer is the policy's first line."""

    def __init__(self, policy: Policy) -> None:
        self.root = Location(policy.path, 1, 1)
        self._top: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        # each rule's file and node (an included rule's are its file's): keys read when asked for
        self._rule_nodes = policy.rule_nodes
        self._source: Source | None = None
        document = policy.document
        if document is None or not isinstance(document.root, yaml.MappingNode):
            return
        self._source = document.source
        self.root = document.at(document.root)
        self._top = {k.value: (k, v) for k, v in document.root.value}

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
        if not 0 < rule.index <= len(self._rule_nodes):
            return rule.location
        source, node = self._rule_nodes[rule.index - 1]
        keys = {k.value: v for k, v in node.value} if isinstance(node, yaml.MappingNode) else {}
        return source.at(keys[key]) if key in keys else rule.location

    def acknowledgements(self) -> list[tuple[str, Location]]:
        node = self._top.get("acknowledge", (None, None))[1]
        if not isinstance(node, yaml.SequenceNode):
            return []
        return [(str(item.value), self._at(item, self.root)) for item in node.value
                if isinstance(item, yaml.ScalarNode)]
