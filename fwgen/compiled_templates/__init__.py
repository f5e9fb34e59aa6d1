"""The bundled Jinja templates, compiled ahead of time: one module per template, written
by ``python -m fwgen.render`` (run it after changing a template; a test checks they are
current). ``fwgen.render`` uses a module only when it was compiled from the exact
template source by the installed Jinja version, so a stale one costs time, never
correctness."""
