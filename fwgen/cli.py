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
