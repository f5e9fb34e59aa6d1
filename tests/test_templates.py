"""The templates are shipped compiled (fwgen/compiled_templates, written by
``python -m fwgen.render``); the compiled modules must be current and must render
exactly what compiling the template sources renders."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import jinja2
import pytest

from fwgen import render
from fwgen.build import build
from fwgen.registry import bundled

POLICIES = sorted(Path(__file__).resolve().parent.parent.joinpath("policies").glob("*.yaml"))


def _module(template: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"{render.COMPILED_PACKAGE}.{render.compiled_module_name(template)}")


@pytest.mark.parametrize("template", render.TEMPLATES)
def test_compiled_module_is_current(template: str) -> None:
    """Compiled from the template as it is now; when the installed Jinja is the one that
    compiled it, exactly what ``python -m fwgen.render`` writes. (A newer Jinja makes
    fwgen ignore the module until it is regenerated: the next test checks that.)"""
    module = _module(template)
    path = Path(module.__file__ or "")
    source = (render.template_dir() / template).read_bytes()
    stale = f"stale: run python -m fwgen.render ({path.name})"
    assert module.SOURCE_SHA256 == hashlib.sha256(source).hexdigest(), stale
    if module.JINJA_VERSION == jinja2.__version__:
        assert path.read_text(encoding="utf-8") == render.compiled_module(template), stale


@pytest.mark.parametrize("template", render.TEMPLATES)
def test_the_compiled_module_is_what_renders(template: str) -> None:
    """The compiled module renders when it matches this Jinja; otherwise the source."""
    loaded = Path(render.environment().get_template(template).filename or "")
    if _module(template).JINJA_VERSION == jinja2.__version__:
        assert loaded.parent.name == "compiled_templates"
    else:
        assert loaded.suffix == ".j2"


def test_a_changed_template_is_compiled_from_its_source(tmp_path: Path) -> None:
    """The compiled module is only a shortcut: it is ignored unless the source matches."""
    (tmp_path / "windows").mkdir()
    (tmp_path / "windows" / "script.cmd.j2").write_text("changed {{ x }}\n", encoding="utf-8")
    env = jinja2.Environment(loader=render._Loader(str(tmp_path)), undefined=jinja2.StrictUndefined)
    assert env.get_template("windows/script.cmd.j2").render(x=1) == "changed 1"


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_compiled_and_source_templates_render_the_same(policy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = build(str(policy), bundled()).files
    fresh = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(render.template_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    monkeypatch.setattr(render, "environment", lambda: fresh)
    assert build(str(policy), bundled()).files == compiled
    assert Path(fresh.get_template(render.TEMPLATES[0]).filename or "").suffix == ".j2"
