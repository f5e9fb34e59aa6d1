"""``fwgen lint``: what a careful reviewer would say about a policy that compiles.

A finding is one line, ``PATH:LINE:COL: warning|error: message [id]``; the checks and
their ids live in ``fwgen.lint_checks`` (docs/lint.md is generated from their
docstrings: ``python -m fwgen.lint > docs/lint.md``). A policy's ``acknowledge:`` list
silences findings by id. ``fwgen build`` refuses a policy with an error-level finding
(``check_errors``).

The rule analysis is exact: the first-match engine's facts (``fwgen.lint_context``).
"""

from __future__ import annotations

from collections.abc import Sequence

from fwgen import ir
from fwgen.errors import PolicyError
from fwgen.lint_checks import CHECKS
from fwgen.lint_context import SEVERITIES, TARGETS, Check, Context, Finding
from fwgen.policy import Policy, load_policy
from fwgen.registry import Registry
from fwgen.resolve import compile_policy

# ---------------------------------------------------------------------- running


def checks() -> list[Check]:
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
    # the policy's own findings first, then each included file's, each by position
    return sorted((f for f in found if f.id not in acknowledged),
                  key=lambda f: (f.location.path != policy.path, f.sort_key()))


def lint_file(path: str, registry: Registry, targets: tuple[str, ...] | None = None) -> list[Finding]:
    """Load, compile and lint, for ``targets`` (default: the policy's ``targets:``, else
    all); ``PolicyError`` when the policy does not load."""
    policy = load_policy(path)
    if targets is None:
        targets = tuple(t.value for t in policy.targets) if policy.targets is not None else TARGETS
    return lint(policy, registry, targets=targets)


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
