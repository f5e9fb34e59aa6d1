"""Command line. Exit status: 0 success, 1 policy or compile error, 2 usage error.

Heavy modules (yaml, jinja2, the targets) are imported inside the commands, so
`fwgen --help` and `fwgen ports` start fast.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from fwgen import __version__
from fwgen.errors import PolicyError
from fwgen.targets import NAMES

if TYPE_CHECKING:
    from datetime import datetime

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
      fwgen build policies/edge.yaml            # writes out/edge/iptables, .../nftables, .../windows
      fwgen build policies/fleet -o out         # every policy of a fleet, under out/NAME/
      fwgen build edge.yaml -t nftables --stdout
      fwgen ports 1274                          # what is registered on port 1274?
    """


@main.command()
@click.argument("policies", metavar="POLICY...", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "outdir", default="out", show_default=True, help="Output directory.")
@click.option(
    "-t", "--target", "targets", multiple=True, type=click.Choice(TARGETS),
    help="Build only this target (repeatable). Default: each policy's targets: key, else all three.",
)
@click.option("--strict", is_flag=True, help="Count warnings (what a target expresses only approximately) as errors.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the outputs instead of writing files.")
@click.option(
    "--check", "check", is_flag=True,
    help="Write nothing: exit 1 listing the files under the output directory that are stale or missing.",
)
@click.option("--flat", is_flag=True,
              help="fwgen 1.x's layout: ONE policy's outputs directly under the output directory, without NAME/.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes (default: one per core).")
@registry_option
def build(
    policies: tuple[str, ...], outdir: str, targets: tuple[str, ...], strict: bool, to_stdout: bool, check: bool,
    flat: bool, jobs: int | None, registry_path: str | None,
) -> None:
    """Compile each POLICY (a file, or a directory of *.yaml policies) into rule sets.

    \b
    Writes, for each policy, under OUT/NAME/ (NAME: the policy's name):
      iptables/rules.v4, iptables/rules.v6   iptables-restore files (complete filter table)
      nftables/NAME.nft                      nft -f file replacing only table inet NAME
      windows/NAME.cmd                       netsh advfirewall script
    A directory means the *.yaml files directly in it, less those another policy of the
    build includes. Policies build in parallel; every output is rendered in memory
    first, and on any error in any policy (all are reported) nothing is written.
    --flat writes one policy's outputs directly under OUT (fwgen 1.x's layout).

    With --check nothing is written: the files are rendered in memory and compared
    with those under the output directory. Exit 0 ("up to date: N files") when every
    one matches byte for byte, else exit 1 with one "stale: PATH" or "missing: PATH"
    line each. Other files in the directory are ignored.
    """
    import time

    from fwgen.build import write_atomically
    from fwgen.fleet import build_fleet

    if check and to_stdout:
        raise click.UsageError("--check and --stdout exclude each other")
    started = time.monotonic()
    try:
        registry = _registry(registry_path)
        if flat and (len(policies) != 1 or Path(policies[0]).is_dir()):
            raise click.UsageError("--flat builds exactly one policy file")
        stage = None if (to_stdout or check or flat) else outdir  # workers stage what they build
        with _progress(policies) as advance:
            result = build_fleet(policies, registry, targets or None, strict=strict, jobs=jobs, progress=advance,
                                 stage=stage)
    except PolicyError as error:
        _fail(error)
        return
    if result.errors:
        for line in result.errors:
            click.echo(line, err=True)
        if len(result.errors) > 1:
            click.echo(f"fwgen: {len(result.errors)} policies have errors; nothing written", err=True)
        sys.exit(1)
    files = result.hosts[0].files if flat else result.files
    written: list[Path] = []
    try:
        if result.staging is not None:
            try:
                written = result.staging.commit()
            except BaseException:
                result.staging.discard()
                raise
        elif not (to_stdout or check):
            written = write_atomically(outdir, files)
    except PolicyError as error:  # an OS error: that line alone, not the warnings too
        _fail(error)
        return
    shown: set[str] = set()  # a warning about a shared file, once for all the policies including it
    for host in result.hosts:
        for warning in host.warnings:
            if str(warning) not in shown:
                shown.add(str(warning))
                click.echo(str(warning), err=True)
    if to_stdout:
        many = len(files) > 1
        for relative, text in files.items():
            if many:
                click.echo(f"# ==> {relative} <==")
            click.echo(text, nl=False)
        return
    if check:
        _check_outputs(policies, outdir, targets, files, flat)
        return
    if len(result.hosts) == 1:
        for path in written:
            click.echo(f"wrote {path}")
    else:
        click.echo(f"wrote {len(written)} files for {len(result.hosts)} policies under {outdir} "
                   f"in {time.monotonic() - started:.1f} s")


class _progress:
    """A progress bar on a terminal for builds of many policies; nothing otherwise."""

    def __init__(self, policies: tuple[str, ...]) -> None:
        self.bar: object | None = None
        self.policies = policies

    def __enter__(self) -> Callable[[int], None] | None:
        if not sys.stderr.isatty() or (len(self.policies) == 1 and not Path(self.policies[0]).is_dir()):
            return None
        from fwgen.fleet import policy_paths

        count = len(policy_paths(self.policies)[0])
        if count < 20:
            return None
        bar = click.progressbar(length=count, label="building", file=sys.stderr)
        self.bar = bar.__enter__()
        return bar.update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)  # type: ignore[attr-defined]


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


def _check_outputs(policies: tuple[str, ...], outdir: str, targets: tuple[str, ...], files: dict[str, str],
                   flat: bool) -> None:
    """`fwgen build --check`: compare, print, exit 0 or 1; never writes."""
    import shlex

    outdated = _outdated(outdir, files)
    if not outdated:
        click.echo(f"up to date: {len(files)} files")
        return
    for state, path in outdated:
        click.echo(f"{state}: {path}")
    command = ["fwgen", "build", *policies, "-o", outdir]
    for target in targets:
        command += ["-t", target]
    if flat:
        command.append("--flat")
    click.echo(
        f"{' '.join(policies)}: {len(outdated)} of {len(files)} output files out of date; "
        f"rebuild with: {shlex.join(command)}",
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
@click.argument("policies", metavar="POLICY...", nargs=-1, required=True, type=click.Path())
@click.option(
    "-t", "--target", "targets", multiple=True, type=click.Choice(TARGETS),
    help="The targets the policy is built for (repeatable; some findings depend on them). Default: the "
    "policy's targets: key, else all three.",
)
@click.option("--strict", is_flag=True, help="Count warnings as errors (exit status 1).")
@registry_option
def lint(policies: tuple[str, ...], targets: tuple[str, ...], strict: bool, registry_path: str | None) -> None:
    """Report likely mistakes in each POLICY (a file, or a directory of *.yaml policies
    less those another includes): shadowed, redundant and partly overridden rules,
    ports with reported unauthorized use, an SSH lockout, traffic the defaults break
    (DNS, NTP, DHCP) and more (see docs/lint.md).

    One line per finding, PATH:LINE:COL: warning|error: message [id], sorted by
    position, policy by policy. Exit status 1 when there is an error (with --strict: any
    finding) or a policy does not load; list a finding's id under the policy's
    acknowledge: key to accept it.
    """
    from fwgen.files import Files
    from fwgen.fleet import load_hosts, policy_paths
    from fwgen.lint import exit_status
    from fwgen.lint import lint as run_lint

    try:
        registry = _registry(registry_path)
        paths, listed = policy_paths(policies)
    except PolicyError as error:
        _fail(error)
        return
    status = 0
    # a shared file of a fleet is linted as part of each policy including it
    for _, policy in load_hosts(paths, listed, Files()):
        try:
            if isinstance(policy, PolicyError):
                raise policy
            chosen = targets or (tuple(t.value for t in policy.targets) if policy.targets is not None else TARGETS)
            findings = run_lint(policy, registry, targets=chosen)
        except PolicyError as error:
            click.echo(str(error), err=True)
            status = 1
            continue
        for finding in findings:
            click.echo(str(finding))
        status = max(status, exit_status(findings, strict))
    sys.exit(status)


@main.command()
@click.argument("query", required=False)
@click.option(
    "--select", "select_text", metavar="SEL[,SEL]",
    help="Instead of QUERY: the pairs registry selectors choose, as a rule's select: does "
    "(undocumented, unauthorized-use; several: their union).",
)
@click.option(
    "--range", "range_text", metavar="RANGE",
    help="With --select: only ports in RANGE (system, well-known, registered, dynamic, or N-M).",
)
@click.option(
    "--protocol", "protocol_text", type=click.Choice(("tcp", "udp", "any")), default="any", show_default=True,
    help="With --select: only this protocol's pairs.",
)
@registry_option
def ports(
    query: str | None, select_text: str | None, range_text: str | None, protocol_text: str, registry_path: str | None
) -> None:
    """Show IANA registry rows for a port (1274), a range (6000-6063) or a service name (x11),
    or with --select the rows of exactly the (protocol, port) pairs a select rule matches."""
    from fwgen.registry import format_records

    if query is not None and select_text is not None:
        raise click.UsageError("give a QUERY or --select SEL[,SEL], not both")
    if query is None and select_text is None:
        raise click.UsageError("missing QUERY (a port, a range or a service name) or --select SEL[,SEL]")
    if select_text is None and (range_text is not None or protocol_text != "any"):
        raise click.UsageError("--range and --protocol narrow a --select")
    selectors = _selectors(select_text) if select_text is not None else ()
    bounds = _range(range_text)
    try:
        registry = _registry(registry_path)
    except PolicyError as error:
        _fail(error)
        return
    if query is not None:
        records = registry.query(query)
        if not records:
            from fwgen.registry_select import SELECTORS

            hint = f"; for the pairs the selector means: fwgen ports --select {query}" if query in SELECTORS else ""
            click.echo(f"no registry entry matches '{query}' (IANA edition {registry.edition}){hint}", err=True)
            sys.exit(1)
        click.echo(format_records(records), nl=False)
        return
    from fwgen import registry_select

    chosen = ("tcp", "udp") if protocol_text == "any" else (protocol_text,)
    lo, hi = bounds
    selected = registry_select.select(registry, selectors)
    counts = {p: sum(lo <= port <= hi for port in selected[p]) for p in chosen}
    scope = ""
    if range_text:
        scope = f" in {range_text}" + (f" ({lo}-{hi})" if "-" not in range_text else "")
    what = f"{'/'.join(chosen)} pairs {' or '.join(selectors)}{scope}"
    if not sum(counts.values()):
        click.echo(f"no {what} (IANA edition {registry.edition})", err=True)
        sys.exit(1)
    click.echo(format_records(registry_select.records(registry, selectors, chosen, lo, hi)), nl=False)
    per = ", ".join(f"{count} {p}" for p, count in counts.items())
    click.echo(f"{sum(counts.values())} {what}: {per} (IANA edition {registry.edition})")


def _selectors(text: str) -> tuple[str, ...]:
    """``--select undocumented,unauthorized-use`` -> the selectors, each known, once."""
    import difflib

    from fwgen.registry_select import SELECTORS

    out: list[str] = []
    for word in (w.strip() for w in text.split(",")):
        if word not in SELECTORS:
            hint = difflib.get_close_matches(word, tuple(SELECTORS), n=1, cutoff=0.6)
            raise click.BadParameter(
                f"unknown selector '{word}'" + (f" (did you mean '{hint[0]}'?)" if hint
                                                else f" (the selectors are {', '.join(SELECTORS)})"),
                param_hint="--select")
        if word not in out:
            out.append(word)
    return tuple(out)


def _range(text: str | None) -> tuple[int, int]:
    """``--range registered`` or ``--range 1024-2048`` -> (first, last); every port without it."""
    from fwgen.policy import NUMERIC_RANGE, RANGES, range_bounds

    if text is None:
        return 0, 65535
    m = NUMERIC_RANGE.fullmatch(text)
    if text not in RANGES and not (m and int(m.group(1)) <= int(m.group(2) or m.group(1)) <= 65535):
        raise click.BadParameter(
            f"'{text}' is not {' | '.join(RANGES)} nor N-M with 0 <= N <= M <= 65535", param_hint="--range")
    return range_bounds(text)


@main.command()
@click.argument("policy", type=click.Path(dir_okay=False))
@click.argument("listeners_path", metavar="[LISTENERS]", required=False, type=click.Path(dir_okay=False))
@click.option("--format", "output_format", type=click.Choice(("text", "markdown", "json")), default="text",
              show_default=True)
@click.option("--strict", is_flag=True, help="Exit 1 when a listener needs a look (denied, or on a watched port).")
@registry_option
def audit(policy: str, listeners_path: str | None, output_format: str, strict: bool, registry_path: str | None) -> None:
    """What listens on this host against the policy: exposed (to whom), denied, loopback
    only, and listeners on monitored or selected dormant ports, with process and pid.

    LISTENERS: a file of `ss -Htulpn` or Windows `netstat -ano` output (detected from
    its content; - for standard input). Without it, fwgen runs `ss -Htulpn`. See
    docs/audit.md.
    """
    from fwgen import audit as audit_module
    from fwgen import listeners
    from fwgen.explain import Explainer

    try:
        registry = _registry(registry_path)
        explainer = Explainer.from_file(policy, registry)
        if listeners_path is None:
            text, source, where = _run_ss(), "ss -Htulpn, run by fwgen", "ss -Htulpn"
        else:
            data = _read_listeners(listeners_path)
            where = "<stdin>" if listeners_path == "-" else listeners_path
            text = listeners.decode(data, where)
            source = where
        parsed = listeners.parse(text, where)
        if listeners_path is not None:
            source = f"{parsed.format} output in {where}"
        findings = audit_module.audit(explainer, parsed)
    except PolicyError as error:
        _fail(error)
        return
    click.echo(audit_module.FORMATS[output_format](explainer, parsed, source, findings), nl=False)
    sys.exit(1 if strict and any(f.needs_look for f in findings) else 0)


def _read_listeners(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise PolicyError(None, f"fwgen: cannot read {path}: {error.strerror or error}") from None


def _run_ss() -> str:
    import subprocess

    try:
        done = subprocess.run(["ss", "-Htulpn"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        raise PolicyError(None, f"fwgen: cannot run ss -Htulpn: {getattr(error, 'strerror', None) or error}") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise PolicyError(None, f"fwgen: ss -Htulpn failed (exit {done.returncode})" + (f": {why[0]}" if why else ""))
    from fwgen.listeners import decode

    return decode(done.stdout, "ss -Htulpn")


@main.command()
@click.argument("query")
def protocols(query: str) -> None:
    """Show IANA Protocol Numbers rows for a number (50), a range (50-51) or a keyword (esp, gre)."""
    from fwgen import protocols as protocol_registry

    registry = protocol_registry.bundled()
    rows = registry.query(query)
    if not rows:
        click.echo(f"no protocol registry entry matches '{query}' ({registry.edition})", err=True)
        sys.exit(1)
    click.echo(protocol_registry.format_protocols(rows), nl=False)


@main.command()
@click.argument("policy", type=click.Path(dir_okay=False))
@click.option(
    "--direction", required=True, type=click.Choice(("in", "out")),
    help="in: opened towards this host; out: opened by this host.",
)
@click.option(
    "--protocol", "protocol_text", required=True, metavar="tcp|udp|icmp|icmpv6|KEYWORD|NUMBER",
    help="tcp, udp, icmp (IPv4), icmpv6, or any other IP protocol by IANA keyword (esp, gre) or number 0-255.",
)
@click.option(
    "--port", "port_text", metavar="N|NAME",
    help="A port number, or an IANA service name (each of its ports is explained). Required for tcp and udp; "
    "other protocols have none.",
)
@click.option(
    "--icmp-type", "icmp_text", metavar="NAME|N|N/CODE",
    help="icmp and icmpv6 only: the message type (echo-request, 8, 3/4). Default: any type.",
)
@click.option(
    "--remote", "remote_text", metavar="ADDR",
    help="The remote peer's IPv4 or IPv6 address. Default: answer for every address.",
)
@click.option(
    "--local", "local_text", metavar="ADDR",
    help="This host's own address: the destination of an inbound connection, the source of an outbound one.",
)
@click.option(
    "--interface", "interface", metavar="NAME",
    help="The interface the connection arrives on (in) or leaves by (out).",
)
@click.option("--profile", type=click.Choice(("domain", "private", "public")), help="The Windows profile.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
@registry_option
def explain(
    policy: str, direction: str, protocol_text: str, port_text: str | None, icmp_text: str | None,
    remote_text: str | None, local_text: str | None, interface: str | None, profile: str | None,
    as_json: bool, registry_path: str | None,
) -> None:
    """Explain what POLICY does with a new connection.

    Prints the verdict (allow, deny or monitor), the rule that decides it (NAME,
    FILE:LINE) or the default that applies, drop or reject for a deny, and whether it
    is logged. Without --remote, the answer covers every address and names the
    networks where it differs. When a rule restricts --local, --interface, --profile
    or --icmp-type and the question leaves it out, the answer says "depends on" and
    what each value decides. See docs/explain.md.

    \b
    Examples:
      fwgen explain edge.yaml --direction in --protocol tcp --port ssh
      fwgen explain edge.yaml --direction in --protocol tcp --port 22 --remote 192.0.2.7
      fwgen explain edge.yaml --direction in --protocol udp --port 1261 --json
      fwgen explain edge.yaml --direction in --protocol icmp --icmp-type echo-request
      fwgen explain edge.yaml --direction out --protocol esp --remote 198.51.100.1
    """
    import ipaddress
    import json

    from fwgen.explain import (
        ICMP_FAMILY,
        PROTOCOL_WORDS,
        TCP,
        UDP,
        Explainer,
        answer_json,
        format_answer,
        parse_icmp_type,
        parse_protocol,
        protocol_label,
        service_ports,
    )
    from fwgen.policy import INTERFACE

    def address(text: str, option: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        try:
            found = ipaddress.ip_address(text)
        except ValueError:
            raise click.BadParameter(f"'{text}' is not an IPv4 or IPv6 address", param_hint=option) from None
        if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
            raise click.BadParameter(
                f"'{text}' is IPv4-mapped IPv6: write the IPv4 address {found.ipv4_mapped}", param_hint=option
            )
        return found

    try:
        number = parse_protocol(protocol_text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--protocol'") from None
    with_ports = number in (TCP, UDP)
    protocol = PROTOCOL_WORDS.get(number, str(number))  # tcp, udp, icmp, icmpv6, or the number
    remote = address(remote_text, "'--remote'") if remote_text is not None else None
    local = address(local_text, "'--local'") if local_text is not None else None
    family = ICMP_FAMILY.get(number)
    for value, option in ((remote, "'--remote'"), (local, "'--local'")):
        if value is not None and family is not None and value.version != family:
            other = "icmpv6" if family == 4 else "icmp"
            raise click.BadParameter(
                f"{value} is IPv{value.version}, but {protocol_label(number)} is IPv{family} only "
                f"(ask about --protocol {other})",
                param_hint=option,
            )
    if remote is not None and local is not None and remote.version != local.version:
        raise click.BadParameter(f"{local} and --remote {remote} are of different address families",
                                 param_hint="'--local'")
    if interface is not None and (interface.endswith("*") or not INTERFACE.fullmatch(interface)):
        raise click.BadParameter(
            f"'{interface}' is not an interface name: at most 15 letters, digits, '_', '.' or '-' "
            "(not starting with '.' or '-'); ask about one interface, not a pattern",
            param_hint="'--interface'",
        )
    icmp = None
    if icmp_text is not None:
        if family is None:
            raise click.BadParameter(
                f"applies to icmp and icmpv6 only, not to {protocol_label(number)}", param_hint="'--icmp-type'"
            )
        try:
            icmp = parse_icmp_type(icmp_text, number)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="'--icmp-type'") from None
    port: int | None = None
    if not with_ports:
        if port_text is not None:
            raise click.BadParameter(
                f"ports apply to tcp and udp only; {protocol_label(number)} has none", param_hint="'--port'"
            )
    elif port_text is None:
        raise click.UsageError(f"Missing option '--port' (required for {protocol}).")
    elif port_text.isascii() and port_text.isdigit():
        port = int(port_text)
        if port > 65535:
            raise click.BadParameter(f"port {port} is out of range 0-65535", param_hint="'--port'")
    elif not port_text or not any(c.isalpha() for c in port_text):
        raise click.BadParameter(f"'{port_text}' is not a port number or service name", param_hint="'--port'")
    try:
        registry = _registry(registry_path)
        explainer = Explainer.from_file(policy, registry)
        if not with_ports:
            numbers: list[int | None] = [None]
        elif port is not None:
            numbers = [port]
        else:
            assert port_text is not None
            numbers = list(service_ports(registry, port_text, protocol))
    except PolicyError as error:
        _fail(error)
        return
    if as_json:
        document = {
            "query": {
                "policy": policy, "direction": direction, "protocol": protocol,
                "port": port if port is not None else port_text,
                "remote": str(remote) if remote is not None else None,
                "protocol_number": number,
                "icmp_type": icmp_text,
                "local": str(local) if local is not None else None,
                "interface": interface,
                "profile": profile,
            },
            "verdicts": [
                answer_json(explainer, direction, number, n, remote, local=local, interface=interface,
                            profile=profile, icmp=icmp)
                for n in numbers
            ],
        }
        click.echo(json.dumps(document, indent=2))
        return
    for n in numbers:
        click.echo(format_answer(explainer, direction, number, n, remote, local=local, interface=interface,
                                 profile=profile, icmp=icmp))


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

    OLD and NEW may also be two fleets: directories, or git:REV:DIR for a directory at
    REV. Hosts pair up by policy name; each gets its diff, and each changed file (shared
    ones included) the hosts its change alone changes: "base/rules.yaml changes 2 of 3
    hosts (db, web)". Exit status 1 when a host changed, was added or removed.

    \b
    Examples:
      fwgen diff git:origin/main:policies/edge.yaml policies/edge.yaml
      fwgen diff old.yaml new.yaml --format markdown
      fwgen diff git:origin/main:policies/fleet policies/fleet --format markdown
    """
    from fwgen import fleet_diff
    from fwgen.diff import diff_specs
    from fwgen.diff_format import render

    try:
        registry = _registry(registry_path)
        if fleet_diff.is_fleet(old) or fleet_diff.is_fleet(new):
            out, errors, status = fleet_diff.run(old, new, registry, fmt)
            for line in errors:
                click.echo(line, err=True)
            click.echo(out, nl=False)
            sys.exit(status)
        result = diff_specs(old, new, registry)
    except PolicyError as error:
        click.echo(str(error), err=True)
        sys.exit(2)
    click.echo(render(result, registry, fmt), nl=False)
    sys.exit(1 if result.changed else 0)


def _report_time(value: str | None, option: str) -> datetime | None:
    """--since/--until: ISO 8601 (no zone: local time) or a duration back from now (30m, 24h, 7d)."""
    import re
    from datetime import datetime, timedelta

    from fwgen.logsources import parse_iso

    if value is None:
        return None
    m = re.fullmatch(r"(\d+)([smhd])", value.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(m.group(1))})
    try:
        return parse_iso(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"'{value}' is not a time: write 2026-12-02T06:00, 2026-12-02T06:00:00+00:00 or 24h, 7d",
            param_hint=option) from None


@main.command()
@click.argument("policy", type=click.Path(dir_okay=False))
@click.argument("logs", metavar="[LOG]...", nargs=-1)
@click.option("--counters", "counters", multiple=True, metavar="FILE",
              help="Saved `nft -j list counters` or `iptables-save -c` output (repeatable: rules.v4 and .v6).")
@click.option("--journal", is_flag=True, help="Read the kernel log with `journalctl -k -o json` itself.")
@click.option("--since", help="Only log lines from this time: ISO 8601 (no zone: local time), or 30m, 24h, 7d ago.")
@click.option("--until", help="Only log lines up to this time (same forms as --since).")
@click.option("--format", "fmt", type=click.Choice(("text", "markdown", "json", "prometheus")), default="text",
              show_default=True)
@registry_option
def report(policy: str, logs: tuple[str, ...], counters: tuple[str, ...], journal: bool, since: str | None,
           until: str | None, fmt: str, registry_path: str | None) -> None:
    """Who knocked on which monitored or denied port of POLICY, from what the host recorded.

    \b
    LOG: files in any of these formats, detected from their content (gzipped too; - is
    standard input): journalctl -k -o json, syslog kern.log, dmesg (also -T, -t and
    --time-format iso), Windows pfirewall.log. Kernel log lines are matched to rules by
    the log prefix fwgen writes; pfirewall.log lines, which name no rule, by the verdict
    fwgen explain gives their connection. Prints per rule (logged lines, the exact
    counter where read), per (protocol, port) with its registry names, per source
    address and /24 or /48, first and last seen, and the rules with zero hits. Exit 1
    when an input cannot be read. See docs/report.md.

    \b
    Examples:
      fwgen report edge.yaml /var/log/kern.log /var/log/kern.log.2.gz --since 7d
      nft -j list counters > c.json; fwgen report edge.yaml --journal --counters c.json
      dmesg | fwgen report edge.yaml - --format json
    """
    from fwgen.report import make_report
    from fwgen.report_format import RENDER

    if (list(logs) + list(counters)).count("-") > 1:
        raise click.UsageError("standard input (-) can be read once")
    if not logs and not counters and not journal:
        raise click.UsageError("give a LOG, --counters FILE or --journal")
    start, end = _report_time(since, "'--since'"), _report_time(until, "'--until'")
    stdin = sys.stdin.buffer.read() if "-" in logs or "-" in counters else None
    try:
        found, errors = make_report(policy, _registry(registry_path), logs, counters, journal, start, end, stdin)
    except PolicyError as error:
        _fail(error)
        return
    for line in errors:
        click.echo(line, err=True)
    if found is None:
        sys.exit(1)
    click.echo(RENDER[fmt](found), nl=False)


def _linux_target(func: F) -> F:
    return click.option("-t", "--target", "target", type=click.Choice(("nftables", "iptables")),
                        help="The output to load (default: the only one OUT holds).")(func)


def _state_dir_option(func: F) -> F:
    return click.option("--state-dir", default="/var/lib/fwgen", show_default=True,
                        help="Where the previous rules are saved and the confirmation is awaited.")(func)


@main.command(name="apply")
@click.argument("out", metavar="OUT", required=False, type=click.Path())
@_linux_target
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait for a confirmation before rolling back (0: keep without asking).")
@click.option("--confirm", "confirming", is_flag=True,
              help="Confirm the fwgen apply waiting in --state-dir (from another session).")
@_state_dir_option
def apply_command(out: str | None, target: str | None, timeout: float, confirming: bool, state_dir: str) -> None:
    """Load one host's build directory OUT (out/NAME) with automatic rollback.

    \b
    Checks the files (nft -c, iptables-restore --test), saves the current state under
    --state-dir, loads the files (counters of fwgen's rules carried over) and rolls back
    unless confirmed within --timeout seconds: on a terminal by answering y, otherwise by
    `fwgen apply --confirm` from another session. Exit 0: confirmed and kept; 1: refused
    or rolled back (one line says which).
    """
    from fwgen import apply as applying

    if confirming == (out is not None):
        raise click.UsageError("give OUT to apply, or --confirm (without OUT) to confirm a waiting apply")
    if confirming and target:
        raise click.UsageError("--confirm takes no -t")
    try:
        line = applying.confirm(state_dir) if confirming else applying.apply(Path(out or ""), target, timeout,
                                                                               state_dir)
    except applying.ApplyError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    click.echo(line, err=True)


@main.command()
@click.argument("out", metavar="OUT", required=False, type=click.Path())
@_linux_target
@click.option("--name", help="The policy name, instead of OUT (needs -t).")
def remove(out: str | None, target: str | None, name: str | None) -> None:
    """Take fwgen's rules of one policy off this host.

    \b
    nftables: deletes table inet NAME only. iptables chains mode: deletes fwgen's chains of
    NAME and the jumps to them, in both families. iptables table mode: changes nothing and
    says how to restore the distribution default (docs/rollout.md).
    """
    from fwgen import apply as applying

    if (out is None) == (name is None):
        raise click.UsageError("give OUT or --name NAME")
    if name is not None and target is None:
        raise click.UsageError("--name needs -t nftables or -t iptables")
    try:
        line = applying.remove(Path(out) if out else None, name, target)
    except applying.ApplyError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    click.echo(line, err=True)


def entry() -> None:
    """The console script (and ``python -m fwgen``): one short-lived command.

    Cyclic garbage collection is switched off for the process. fwgen builds tens of
    thousands of small objects that all live until it exits, so every collection pass
    is wasted work (a third of the time of a 6,000-rule build) and frees nothing
    (peak RSS is the same with it off). Callers that import ``main`` keep their GC.

    When the command is done, the process ends with ``os._exit`` once standard output
    and error are flushed: the interpreter's own shutdown would collect and free every
    object the build made, one by one (30 ms of a 0.3 s build of 2,000 rules, 45 ms of
    the registry policy's 0.6 s), and fwgen registers nothing that has to run at exit
    (no atexit handlers, temporary directories or threads outlive a command; the files
    it writes are synced and closed before it returns). An exception click does not
    turn into an exit status, or a flush that fails (a closed pipe), takes the
    interpreter's usual way out instead, with its usual message and status.
    """
    gc.disable()
    try:
        main()
    except SystemExit as done:
        status = done.code
        if status is not None and not isinstance(status, int):
            raise  # a message to print: the interpreter's way
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            raise done from None
        os._exit(status or 0)
