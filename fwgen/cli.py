"""Command line. Exit status: 0 success, 1 policy or compile error, 2 usage error.

Heavy modules (yaml, jinja2, the targets) are imported inside the commands, so
`fwgen --help` and `fwgen ports` start fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

from fwgen import __version__
from fwgen.errors import PolicyError

if TYPE_CHECKING:
    from fwgen.registry import Registry

F = TypeVar("F", bound=Callable[..., object])

TARGETS = ("iptables", "nftables", "windows")


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
    help="Build only this target (repeatable). Default: all three.",
)
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the outputs instead of writing files.")
@registry_option
def build(policy: str, outdir: str, targets: tuple[str, ...], to_stdout: bool, registry_path: str | None) -> None:
    """Compile POLICY into rule sets.

    \b
    Writes, under the output directory:
      iptables/rules.v4, iptables/rules.v6   iptables-restore files (complete filter table)
      nftables/NAME.nft                      nft -f file replacing only table inet NAME
      windows/NAME.cmd                       netsh advfirewall script
    Every file is rendered in memory first; on any error nothing is written.
    """
    from fwgen.build import build as run_build
    from fwgen.build import write_atomically

    try:
        result = run_build(policy, _registry(registry_path), targets or TARGETS)
    except PolicyError as error:
        _fail(error)
        return
    for warning in result.warnings:
        click.echo(f"{policy}: warning: {warning}", err=True)
    if to_stdout:
        many = len(result.files) > 1
        for relative, text in result.files.items():
            if many:
                click.echo(f"# ==> {relative} <==")
            click.echo(text, nl=False)
        return
    for path in write_atomically(outdir, result.files):
        click.echo(f"wrote {path}")


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
