"""Command line. Exit status: 0 success, 1 policy or compile error, 2 usage error.

Heavy modules (yaml, jinja2, the targets) are imported inside the commands, so
`fwgen --help` and `fwgen ports` start fast.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from fwgen import __version__
from fwgen.errors import PolicyError
from fwgen.targets import NAMES

if TYPE_CHECKING:
    from fwgen.registry import Registry

F = TypeVar("F", bound=Callable[..., object])

TARGETS = NAMES  # the target table's names (fwgen.targets imports no target module)


def _fail(error: PolicyError) -> None:
    click.echo(str(error), err=True)
    sys.exit(1)


def _registry(path: str | None) -> Registry:
    from fwgen import registry

    return registry.load(path) if path else registry.bundled()


def registry_option(func: F) -> F:
    return click.option(
        "--registry",
        "registry_path",
        type=click.Path(dir_okay=False),
        help="IANA registry file (CSV or XML) to use instead of the bundled edition.",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fwgen")
def main() -> None:
    """Compile one host-firewall policy (YAML, IANA service names, allow/deny/monitor)
    into iptables, nftables and Windows Firewall (netsh) rule sets.

    \b
    Examples:
      fwgen build policies/edge.yaml            # writes out/iptables, out/nftables, out/windows
      fwgen build edge.yaml -t nftables --stdout
      fwgen ports 1274                          # what is registered on port 1274?
    """


@main.command()
@click.argument("policy", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "outdir", default="out", show_default=True, help="Output directory.")
@click.option(
    "-t", "--target", "targets", multiple=True, type=click.Choice(TARGETS),
    help="Build only this target (repeatable). Default: the policy's targets: key, else all three.",
)
@click.option("--strict", is_flag=True, help="Count warnings (what a target expresses only approximately) as errors.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the outputs instead of writing files.")
@click.option(
    "--check", "check", is_flag=True,
    help="Write nothing: exit 1 listing the files under the output directory that are stale or missing.",
)
@registry_option
def build(
    policy: str, outdir: str, targets: tuple[str, ...], strict: bool, to_stdout: bool, check: bool,
    registry_path: str | None,
) -> None:
    """Compile POLICY into rule sets.

    \b
    Writes, under the output directory:
      iptables/rules.v4, iptables/rules.v6   iptables-restore files (complete filter table)
      nftables/NAME.nft                      nft -f file replacing only table inet NAME
      windows/NAME.cmd                       netsh advfirewall script
    Every file is rendered in memory first; on any error nothing is written.

    With --check nothing is written: the files are rendered in memory and compared
    with those under the output directory. Exit 0 ("up to date: N files") when every
    one matches byte for byte, else exit 1 with one "stale: PATH" or "missing: PATH"
    line each. Other files in the directory are ignored.
    """
    from fwgen.build import build as run_build
    from fwgen.build import write_atomically

    if check and to_stdout:
        raise click.UsageError("--check and --stdout exclude each other")
    try:
        result = run_build(policy, _registry(registry_path), targets or None, lint_errors=True, parallel=True,
                           strict=strict)
    except PolicyError as error:
        _fail(error)
        return
    written: list[Path] = []
    if not (to_stdout or check):
        try:
            written = write_atomically(outdir, result.files)
        except PolicyError as error:  # an OS error: that line alone, not the warnings too
            _fail(error)
            return
    for warning in result.warnings:
        click.echo(str(warning), err=True)
    if to_stdout:
        many = len(result.files) > 1
        for relative, text in result.files.items():
            if many:
                click.echo(f"# ==> {relative} <==")
            click.echo(text, nl=False)
        return
    if check:
        _check_outputs(policy, outdir, targets, result.files)
        return
    for path in written:
        click.echo(f"wrote {path}")


def _outdated(outdir: str, files: dict[str, str]) -> list[tuple[str, Path]]:
    """("stale" | "missing", path) for each file that differs from what fwgen would write."""
    found: list[tuple[str, Path]] = []
    for relative, text in files.items():
        path = Path(outdir) / relative
        try:
            on_disk: bytes | None = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            found.append(("missing", path))
            continue
        except OSError:  # a directory in its place, unreadable: not what fwgen would write
            on_disk = None
        if on_disk != text.encode("utf-8"):  # write_atomically writes UTF-8, newlines untranslated
            found.append(("stale", path))
    return found


def _check_outputs(policy: str, outdir: str, targets: tuple[str, ...], files: dict[str, str]) -> None:
    """`fwgen build --check`: compare, print, exit 0 or 1; never writes."""
    import shlex

    outdated = _outdated(outdir, files)
    if not outdated:
        click.echo(f"up to date: {len(files)} files")
        return
    for state, path in outdated:
        click.echo(f"{state}: {path}")
    command = ["fwgen", "build", policy, "-o", outdir]
    for target in targets:
        command += ["-t", target]
    click.echo(
        f"{policy}: {len(outdated)} of {len(files)} output files out of date; rebuild with: {shlex.join(command)}",
        err=True,
    )
    sys.exit(1)


@main.command()
def schema() -> None:
    """Print the JSON Schema (draft 2020-12) of policy format version 1.

    The same bytes ship in the package as fwgen/data/policy.schema.json. Editors using
    yaml-language-server pick it up from a policy's first line:

    \b
      # yaml-language-server: $schema=../fwgen/data/policy.schema.json

    The schema checks a policy's shape (keys, types, values); fwgen build also checks
    service names, port ranges, addresses and unique rule names.
    """
    from importlib.resources import files

    data = files("fwgen.data").joinpath("policy.schema.json").read_bytes()
    # The bytes as shipped, through the binary layer under sys.stdout (click's own
    # get_binary_stream is deprecated from click 8.5).
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@main.command()
@click.argument("policy", type=click.Path(dir_okay=False))
@click.option(
    "-t", "--target", "targets", multiple=True, type=click.Choice(TARGETS),
    help="The targets the policy is built for (repeatable; some findings depend on them). Default: the "
    "policy's targets: key, else all three.",
)
@click.option("--strict", is_flag=True, help="Count warnings as errors (exit status 1).")
@registry_option
def lint(policy: str, targets: tuple[str, ...], strict: bool, registry_path: str | None) -> None:
    """Report likely mistakes in POLICY: shadowed, redundant and partly overridden
    rules, ports with reported unauthorized use, an SSH lockout, traffic the defaults
    break (DNS, NTP, DHCP) and more (see docs/lint.md).

    One line per finding, PATH:LINE:COL: warning|error: message [id], sorted by
    position. Exit status 1 when there is an error (with --strict: any finding) or the
    policy does not load; list a finding's id under the policy's acknowledge: key to
    accept it.
    """
    from fwgen.lint import exit_status, lint_file

    try:
        findings = lint_file(policy, _registry(registry_path), targets or None)
    except PolicyError as error:
        _fail(error)
        return
    for finding in findings:
        click.echo(str(finding))
    sys.exit(exit_status(findings, strict))


@main.command()
@click.argument("query")
@registry_option
def ports(query: str, registry_path: str | None) -> None:
    """Show IANA registry rows for a port (1274), a range (6000-6063) or a service name (x11)."""
    from fwgen.registry import format_records

    try:
        registry = _registry(registry_path)
    except PolicyError as error:
        _fail(error)
        return
    records = registry.query(query)
    if not records:
        click.echo(f"no registry entry matches '{query}' (IANA edition {registry.edition})", err=True)
        sys.exit(1)
    click.echo(format_records(records), nl=False)


@main.command()
@click.argument("policy", type=click.Path(dir_okay=False))
@click.option(
    "--direction", required=True, type=click.Choice(("in", "out")),
    help="in: opened towards this host; out: opened by this host.",
)
@click.option("--protocol", required=True, type=click.Choice(("tcp", "udp")))
@click.option(
    "--port", "port_text", required=True, metavar="N|NAME",
    help="A port number, or an IANA service name (each of its ports is explained).",
)
@click.option(
    "--remote", "remote_text", metavar="ADDR",
    help="The remote peer's IPv4 or IPv6 address. Default: answer for every address.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
@registry_option
def explain(
    policy: str, direction: str, protocol: str, port_text: str, remote_text: str | None,
    as_json: bool, registry_path: str | None,
) -> None:
    """Explain what POLICY does with a new connection.

    Prints the verdict (allow, deny or monitor), the rule that decides it (NAME,
    FILE:LINE) or the default that applies, drop or reject for a deny, and whether it
    is logged. Without --remote, the answer covers every address and names the
    networks where it differs. See docs/explain.md.

    \b
    Examples:
      fwgen explain edge.yaml --direction in --protocol tcp --port ssh
      fwgen explain edge.yaml --direction in --protocol tcp --port 22 --remote 192.0.2.7
      fwgen explain edge.yaml --direction in --protocol udp --port 1261 --json
    """
    import ipaddress
    import json

    from fwgen.explain import Explainer, answer_json, format_answer, service_ports

    remote = None
    if remote_text is not None:
        try:
            remote = ipaddress.ip_address(remote_text)
        except ValueError:
            raise click.BadParameter(
                f"'{remote_text}' is not an IPv4 or IPv6 address", param_hint="'--remote'"
            ) from None
        if isinstance(remote, ipaddress.IPv6Address) and remote.ipv4_mapped is not None:
            raise click.BadParameter(
                f"'{remote_text}' is IPv4-mapped IPv6: write the IPv4 address {remote.ipv4_mapped}",
                param_hint="'--remote'",
            )
    number = None
    if port_text.isascii() and port_text.isdigit():
        number = int(port_text)
        if number > 65535:
            raise click.BadParameter(f"port {number} is out of range 0-65535", param_hint="'--port'")
    elif not port_text or not any(c.isalpha() for c in port_text):
        raise click.BadParameter(f"'{port_text}' is not a port number or service name", param_hint="'--port'")
    try:
        registry = _registry(registry_path)
        explainer = Explainer.from_file(policy, registry)
        numbers = [number] if number is not None else service_ports(registry, port_text, protocol)
    except PolicyError as error:
        _fail(error)
        return
    if as_json:
        document = {
            "query": {
                "policy": policy, "direction": direction, "protocol": protocol,
                "port": number if number is not None else port_text,
                "remote": str(remote) if remote is not None else None,
            },
            "verdicts": [answer_json(explainer, direction, protocol, n, remote) for n in numbers],
        }
        click.echo(json.dumps(document, indent=2))
        return
    for n in numbers:
        click.echo(format_answer(explainer, direction, protocol, n, remote))


@main.command()
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option(
    "--format", "fmt", type=click.Choice(("text", "markdown", "json")), default="text",
    show_default=True, help="text lines, a markdown table for a PR comment, or JSON.",
)
@registry_option
def diff(old: str, new: str, fmt: str, registry_path: str | None) -> None:
    """Show which connections OLD and NEW policies decide differently.

    OLD and NEW are policy files, or git:REV:PATH for a committed version
    (git show REV:PATH in the current repository). Lists each set of (direction,
    protocol, ports, remote addresses) whose verdict, drop/reject or logging changed.
    Exit status as diff(1): 0 no semantic change, 1 changed, 2 trouble. See docs/diff.md.

    \b
    Examples:
      fwgen diff git:origin/main:policies/edge.yaml policies/edge.yaml
      fwgen diff old.yaml new.yaml --format markdown
    """
    from fwgen.diff import diff_specs
    from fwgen.diff_format import render

    try:
        registry = _registry(registry_path)
        result = diff_specs(old, new, registry)
    except PolicyError as error:
        click.echo(str(error), err=True)
        sys.exit(2)
    click.echo(render(result, registry, fmt), nl=False)
    sys.exit(1 if result.changes else 0)


def entry() -> None:
    """The console script (and ``python -m fwgen``): one short-lived command.

    Cyclic garbage collection is switched off for the process. fwgen builds tens of
    thousands of small objects that all live until it exits, so every collection pass
    is wasted work (a third of the time of a 6,000-rule build) and frees nothing
    (peak RSS is the same with it off). Callers that import ``main`` keep their GC.
    """
    gc.disable()
    main()
