"""pre-commit hooks (see .pre-commit-hooks.yaml): one fwgen command per policy file.

pre-commit runs ``ENTRY ARGS... FILE...`` with every changed file that matches the
hook, but each fwgen command takes ONE policy. So

    python -m fwgen.hooks check -o out policies/a.yaml policies/b.yaml

runs ``fwgen build --check -o out -- policies/a.yaml``, then the same for b, and exits
with the worst status (0 all passed, 1 a check or lint failed, 2 a usage error).

    python -m fwgen.hooks check [-o DIR] [-t TARGET]... [--registry FILE] [FLAG...] POLICY...
    python -m fwgen.hooks lint [--registry FILE] [FLAG...] POLICY...

``-o DIR`` (default ``out``) may contain ``{stem}``, the policy file's name without its
extension: ``-o out/{stem}`` gives each policy its own output directory (the iptables
files are named ``rules.v4``/``rules.v6`` whatever the policy). Any other argument that
starts with ``-`` is passed to fwgen unchanged, so give such options' values with ``=``
(``--option=value``); everything else is a policy file.
"""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = (
    "usage: python -m fwgen.hooks check [-o DIR] [-t TARGET]... [--registry FILE] [FLAG...] POLICY...\n"
    "       python -m fwgen.hooks lint [--registry FILE] [FLAG...] POLICY..."
)

# hook -> (fwgen command words, options that take a separate value: spelling -> canonical)
HOOKS: dict[str, tuple[list[str], dict[str, str]]] = {
    "check": (
        ["build", "--check"],
        {"-o": "-o", "--output": "-o", "-t": "-t", "--target": "-t", "--registry": "--registry"},
    ),
    "lint": (["lint"], {"--registry": "--registry"}),
}


class UsageError(Exception):
    pass


def plan(argv: list[str]) -> list[list[str]]:
    """The fwgen command lines (without the program name) to run, one per policy."""
    if not argv or argv[0] not in HOOKS:
        raise UsageError(f"unknown hook {argv[0]!r}" if argv else "which hook? check or lint")
    command, value_options = HOOKS[argv[0]]
    rest = argv[1:]
    outdir = "out"
    options: list[str] = []  # canonical value options and pass-through flags, in order
    policies: list[str] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        i += 1
        if arg == "--":
            policies.extend(rest[i:])
            break
        name, eq, attached = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if not eq and len(arg) > 2 and arg[:2] in value_options and not arg.startswith("--"):
            name, eq, attached = arg[:2], "=", arg[2:]  # -oDIR, -tnftables
        if name in value_options:
            if eq:
                value = attached
            elif i < len(rest):
                value, i = rest[i], i + 1
            else:
                raise UsageError(f"option {name} needs a value")
            if value_options[name] == "-o":
                outdir = value
            else:
                options += [value_options[name], value]
        elif arg.startswith("-") and arg != "-":
            options.append(arg)
        else:
            policies.append(arg)
    lines = []
    for policy in policies:
        line = list(command)
        if "-o" in value_options.values():
            line += ["-o", outdir.replace("{stem}", Path(policy).stem)]
        lines.append([*line, *options, "--", policy])
    return lines


def run_fwgen(args: list[str]) -> int:
    """Run one fwgen command in this process; its exit status."""
    from fwgen.cli import main as fwgen_main

    try:
        fwgen_main.main(args=args, prog_name="fwgen", standalone_mode=True)
    except SystemExit as exit_:
        code = exit_.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        lines = plan(list(sys.argv[1:] if argv is None else argv))
    except UsageError as error:
        print(f"fwgen.hooks: {error}\n{USAGE}", file=sys.stderr)
        return 2
    worst = 0
    for args in lines:
        worst = max(worst, run_fwgen(args))
        sys.stdout.flush()
        sys.stderr.flush()
    return worst


if __name__ == "__main__":
    sys.exit(main())
