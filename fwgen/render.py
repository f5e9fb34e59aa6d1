"""Jinja2 rendering: one strict environment over the bundled templates.

Templates render; Python decides. Each target hands its template a plain view model
of already-safe strings, so templates hold no lookups and no policy logic.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import re
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import jinja2

import fwgen
from fwgen import targets
from fwgen.ir import Ruleset


def template_dir() -> Path:
    """Installed wheels carry templates as ``fwgen/templates``; a source checkout keeps
    them at the top of the repository."""
    here = Path(fwgen.__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "nftables").is_dir():
            return candidate
    raise RuntimeError(f"fwgen templates not found next to {here}")


TEMPLATES = targets.TEMPLATES
COMPILED_PACKAGE = "fwgen.compiled_templates"


def compiled_module_name(template: str) -> str:
    """``iptables/rules.j2`` -> ``iptables_rules``."""
    return template.rsplit(".", 1)[0].replace("/", "_").replace(".", "_")


class _Loader(jinja2.FileSystemLoader):
    """The bundled templates. Compiling them (lexing, parsing, generating Python) costs
    a quarter of a small build (one 30-rule host: 973M instructions, 743M with the
    compiled modules), so each one is also shipped compiled, as the module
    ``fwgen/compiled_templates/NAME.py`` that ``python -m fwgen.render`` writes; it is
    used only when it was compiled from exactly this source by this Jinja version
    (else the template is compiled as usual). A test keeps the modules up to date."""

    def load(
        self, environment: jinja2.Environment, name: str, globals: MutableMapping[str, Any] | None = None
    ) -> jinja2.Template:
        source, _, _ = self.get_source(environment, name)
        try:
            module = importlib.import_module(f"{COMPILED_PACKAGE}.{compiled_module_name(name)}")
        except ImportError:
            module = None
        if (
            module is not None
            and getattr(module, "SOURCE_SHA256", None) == hashlib.sha256(source.encode("utf-8")).hexdigest()
            and getattr(module, "JINJA_VERSION", None) == jinja2.__version__
        ):
            return environment.template_class.from_module_dict(environment, module.__dict__, globals or {})
        return super().load(environment, name, globals)


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=_Loader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: object) -> str:
    return environment().get_template(template).render(**context)


Shape = Callable[..., str]


class Shapes:
    """The line kinds a template declares, as fast functions that fill their fields.

    Each ``{% macro NAME(field, ...) %}...{% endmacro %}`` of a target's template is the
    syntax of one kind of output line or piece of one (``-A CHAIN ... -j TARGET``,
    ``ip saddr @SET``): the template owns every character of it, Python only decides
    which lines exist and what goes in each field. A macro call costs microseconds, too
    much for the tens of thousands of lines of a large policy, so each macro is called
    once, with a marker standing for each field, and its text split at the markers into
    the literal parts between fields: a line is then one ``str.join``. That requires a
    shape to print each field as given (no filter or test on it), which ``shapes``
    checks when it loads the template.
    """

    def __init__(self, template: str) -> None:
        module = environment().get_template(template).module
        for name in dir(module):
            macro = getattr(module, name)
            if isinstance(macro, jinja2.runtime.Macro):
                setattr(self, name, _compile_shape(template, name, macro))  # a plain attribute: looked up fast

    def __getattr__(self, name: str) -> Shape:  # only when the template has no such macro
        raise AttributeError(f"no line shape {name!r}")


def _compile_shape(template: str, name: str, macro: jinja2.runtime.Macro) -> Shape:
    markers = [f"\x00field{i}\x00" for i in range(len(macro.arguments))]
    text = str(macro(*markers))
    pieces = re.split("\x00field([0-9]+)\x00", text)
    literals, order = pieces[0::2], [int(i) for i in pieces[1::2]]
    if set(order) != set(range(len(markers))) or any("\x00" in literal for literal in literals):
        raise RuntimeError(f"{template}: macro {name} must print each of its fields, unchanged")
    # One concatenation, compiled once: as fast as the line written out in Python. The
    # code holds only repr()s of the template's literal text and field positions.
    fields = [f"field{i}" for i in range(len(markers))]
    terms = [repr(literals[0])] + [term for i, literal in zip(order, literals[1:], strict=True)
                                   for term in (fields[i], repr(literal)) if term != "''"]
    shape: Shape = eval(f"lambda {', '.join(fields)}: {' + '.join(terms) or repr('')}", {})  # noqa: S307
    return shape


@functools.cache
def shapes(template: str) -> Shapes:
    """The line shapes of ``template`` (see ``Shapes``), made once per process."""
    return Shapes(template)


def preload() -> None:
    """Load every template now (before a fork, so the child has nothing to import)."""
    for template in TEMPLATES:
        environment().get_template(template)


def compiled_module(template: str) -> str:
    """The text of ``fwgen/compiled_templates/NAME.py`` for one template."""
    env = environment()
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, template)
    code = env.compile(source, template, template, raw=True, defer_init=True)
    return (
        f"# Generated by `python -m fwgen.render` from templates/{template}: do not edit.\n"
        "# It is used only while these match (else the template is compiled at run time).\n"
        f'SOURCE_SHA256 = "{hashlib.sha256(source.encode("utf-8")).hexdigest()}"\n'
        f'JINJA_VERSION = "{jinja2.__version__}"\n'
        f"{code}\n"
    )


def write_compiled_modules() -> list[Path]:
    directory = Path(__file__).parent / "compiled_templates"
    written = []
    for template in TEMPLATES:
        path = directory / f"{compiled_module_name(template)}.py"
        path.write_text(compiled_module(template), encoding="utf-8")
        written.append(path)
    return written


def header_lines(ruleset: Ruleset, target: str) -> list[str]:
    """Provenance lines every output starts with (the caller adds the comment marker).

    Only basenames and hashes: output must not depend on where fwgen ran.
    """
    src = ruleset.source
    return [
        f"Generated by fwgen {fwgen.__version__} for target {target}. Do not edit: edit the policy and rebuild.",
        f"policy: {src.filename} sha256:{src.sha256}",
        *(f"include: {path} sha256:{sha256}" for path, sha256 in src.includes),
        f"registry: IANA service-names-port-numbers edition {src.registry_edition} sha256:{src.registry_sha256}",
    ]


if __name__ == "__main__":
    for written in write_compiled_modules():
        print(f"wrote {written}")
