"""Read a YAML document as a node tree that remembers where every value was written.

fwgen never lets PyYAML construct Python values: YAML 1.1 turns ``20:21`` into 1221,
``010`` into 8 and ``no`` into False, and a policy must never mean something other
than what its author typed. Validation works on the composed nodes instead, reading
each scalar's source text and its position.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import yaml

from fwgen.errors import Location, PolicyError, shorten

# libyaml's C parser when present: same nodes and marks, several times faster.
_SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_SCALAR_NODE, _SEQUENCE_NODE = yaml.ScalarNode, yaml.SequenceNode
_STRING_TAG: str = yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG
_SEQUENCE_TAG: str = yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG
_MAPPING_TAG: str = yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG


class _Loader(_SafeLoader):  # type: ignore[misc]
    """The safe loader, remembering the tag of each distinct scalar it resolved.

    Resolving runs a Python call and a few regexes per scalar, a quarter of the time of
    reading a policy of thousands of rules. With no path resolvers (the safe loader has
    none) a plain scalar's tag depends only on its text, any other scalar is a string,
    and policies repeat the same keys and values on every rule.
    """

    if getattr(_SafeLoader, "yaml_path_resolvers", None):  # pragma: no cover - the safe loader has none
        raise RuntimeError("fwgen's YAML loader assumes no path resolvers")

    # plain scalar -> its tag, shared by every file a process reads (a fleet's policies
    # repeat each other's keys and values); bounded, as a long-lived embedder may read much
    _plain: dict[str, str] = {}
    _PLAIN_MAX = 100_000

    # The composer calls these two around every node; only path resolvers use them, and
    # there are none. Builtins that take the same arguments and do nothing replace the
    # Python no-ops: a Python call per node each, 4% of reading bench fleet100 (780M -> 749M
    # instructions).
    descend_resolver = staticmethod(operator.is_)  # (current_node, current_index): ignored
    ascend_resolver = staticmethod(tuple)  # (): ignored

    def resolve(self, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
        # (module constants, not yaml.X and self.DEFAULT_X: called for every node)
        if kind is not _SCALAR_NODE:  # an untagged list or mapping (no path resolvers)
            return _SEQUENCE_TAG if kind is _SEQUENCE_NODE else _MAPPING_TAG
        if not implicit[0]:  # not plain (quoted or block): always a string
            return _STRING_TAG
        tag = self._plain.get(value)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(self._plain) < self._PLAIN_MAX:
                self._plain[value] = tag
        return tag


class Source(NamedTuple):
    path: str  # as the user gave it: error messages echo it
    text: str

    def at(self, node: yaml.Node) -> Location:
        mark = node.start_mark
        return Location(self.path, mark.line + 1, mark.column + 1)


class Document(NamedTuple):
    """A composed policy file: its nodes, and the source their marks point into."""

    source: Source
    root: yaml.Node

    def at(self, node: yaml.Node) -> Location:
        return self.source.at(node)


def compose(source: Source) -> yaml.Node | None:
    """Parse one YAML document into nodes, turning every problem into a located error."""
    if "\t" in source.text:
        for lineno, text in enumerate(source.text.splitlines(), start=1):
            col = text.find("\t")
            if col >= 0:
                raise PolicyError(
                    Location(source.path, lineno, col + 1),
                    "tab character: YAML indents with spaces; replace the tab",
                )
    try:
        nodes = list(yaml.compose_all(source.text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise PolicyError(Location(source.path, line, col), f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(Location(source.path, 1, 1), f"YAML error: {exc}") from None
    if len(nodes) > 1:
        raise PolicyError(source.at(nodes[1]), "a policy file holds one YAML document, not several")
    return nodes[0] if nodes else None


STR_TAG = "tag:yaml.org,2002:str"
INT_TAG = "tag:yaml.org,2002:int"
BOOL_TAG = "tag:yaml.org,2002:bool"
NULL_TAG = "tag:yaml.org,2002:null"


def describe(node: yaml.Node) -> str:
    """How a node reads to a user, for 'expected X, got Y' messages."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == NULL_TAG:
        return "nothing (null)"
    kind = {INT_TAG: "a number", BOOL_TAG: "a boolean"}.get(node.tag, "text")
    return f"{kind} '{shorten(str(node.value))}'"
