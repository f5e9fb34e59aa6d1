"""Read a YAML document as a node tree that remembers where every value was written.

fwgen never lets PyYAML construct Python values: YAML 1.1 turns ``20:21`` into 1221,
``010`` into 8 and ``no`` into False, and a policy must never mean something other
than what its author typed. Validation works on the composed nodes instead, reading
each scalar's source text and its position.
"""

from __future__ import annotations

from typing import NamedTuple

import yaml

from fwgen.errors import Location, PolicyError, shorten

try:  # libyaml's C parser when present: same nodes and marks, several times faster
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader


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
