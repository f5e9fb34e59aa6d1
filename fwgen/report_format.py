"""The four forms of ``fwgen report``: text, markdown, JSON and the Prometheus
node_exporter textfile-collector format. Every list is sorted, so the output is
deterministic; nothing read from an input reaches an output unescaped."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

from fwgen.logsources import FORMAT_NAMES
from fwgen.report import Address, InputRow, PortRow, Report, RuleRow, Seen

FORMATS = ("text", "markdown", "json", "prometheus")


def when(stamp: datetime | None, uptime: float | None = None) -> str | None:
    """A time as UTC ISO 8601, or ``boot+SECONDSs`` when only the time since boot is known."""
    if stamp is not None:
        return stamp.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return f"boot+{uptime:.6f}s" if uptime is not None else None


def _first_last(seen: Seen) -> tuple[str | None, str | None]:
    return when(seen.first, seen.first_uptime), when(seen.last, seen.last_uptime)


def _network(address: Address) -> str:
    return str(ipaddress.ip_network(f"{address}/{24 if address.version == 4 else 48}", strict=False))


def _order(address: Address) -> tuple[int, int]:
    return address.version, int(address)


def networks(sources: dict[Address, Seen]) -> list[tuple[str, int]]:
    """Counts per /24 (IPv4) and /48 (IPv6), in address order."""
    totals: dict[str, tuple[tuple[int, int], int]] = {}
    for address in sorted(sources, key=_order):
        net = _network(address)
        key, count = totals.get(net, (_order(address), 0))
        totals[net] = (key, count + sources[address].count)
    return [(net, count) for net, (_, count) in sorted(totals.items(), key=lambda item: item[1][0])]


def _ports(report: Report) -> list[PortRow]:
    return [report.ports[key] for key in sorted(report.ports, key=lambda k: (k[0], -1 if k[1] is None else k[1]))]


def baseline(report: Report) -> str:
    """What "zero hits" is counted from."""
    parts = []
    if report.kernel_read or report.windows_read:
        start = report.since or report.earliest()
        parts.append(f"logs since {when(start)}" if start else "the logs read")
    if report.counters_read:
        parts.append("counters since the rule set was loaded")
    return "; ".join(parts) or "nothing read"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def port_lower_bound(report: Report, port: PortRow) -> bool:
    """A port's line count is a lower bound when a rule deciding it was rate-limited."""
    return any(report.lower_bound(report.rules[name]) for name in port.rules)


def notes(report: Report) -> list[str]:
    found = []
    if report.kernel_read:
        found.append(
            f"log lines are rate-limited ({report.rate}, burst {report.burst}, per rule; iptables: per rule and "
            "family): a logged count is a lower bound unless the exact counter beside it is equal")
    if report.windows_read:
        found.append("pfirewall.log names no rule: each line is attributed to the verdict fwgen explain gives its "
                     "connection under this policy (direction, protocol, port, remote and local address)")
    if report.counters_read and (report.since or report.until):
        found.append("counters carry no time: they count since the rule set was loaded, whatever the window")
    for row in report.inputs:
        if row.untimed:
            found.append(f"{row.path}: {row.untimed} lines have no wall-clock time (dmesg without -T) and were "
                         "left out of the window; read the journal or kern.log for a window")
        for name, count in sorted(row.unknown.items()):
            found.append(f"{row.path}: {count} lines carry the prefix '{report.prefix}' and the rule name '{name}', "
                         "which this policy does not have (another policy or an older version of this one); "
                         "not counted")
        if row.undetermined:
            found.append(f"{row.path}: {row.undetermined} lines' verdict depends on the profile or interface, "
                         "which pfirewall.log does not record; not counted")
        if row.disagree:
            found.append(f"{row.path}: {row.disagree} lines' logged action is not this policy's verdict "
                         "(a log of another rule set?); not counted")
    return found


def _input_text(row: InputRow) -> str:
    if row.format in ("nft", "iptables"):
        return f"{row.path} ({FORMAT_NAMES[row.format]}): {row.lines} counters, {row.matched} of this policy"
    kind = FORMAT_NAMES.get(row.format, row.format)
    text = f"{row.path} ({kind}): {row.lines} lines, {row.matched} of this policy, {row.unparsed} unparsed"
    if row.first_unparsed is not None:
        text += f" (first: line {row.first_unparsed})"
    if row.outside:
        text += f", {row.outside} outside the window"
    return text


def _logged(report: Report, row: RuleRow) -> str:
    if row.tag is None and not report.windows_read:
        return "-"
    return ("at least " if report.lower_bound(row) and row.logged.count else "") + str(row.logged.count)


def text(report: Report) -> str:
    lines = [f"fwgen report: policy {report.policy} (log prefix '{report.prefix}')"]
    window = f"{when(report.since) or 'the start'} .. {when(report.until) or 'the end'}"
    lines.append(f"window: {window}" if report.since or report.until else "window: every line read")
    lines += ["", "inputs:"] + [f"  {_input_text(row)}" for row in report.inputs]
    lines += ["", "rules (logged lines, exact counter where read):"]
    for row in report.rules.values():
        counter = "-" if row.counted is None else str(row.counted)
        first, last = _first_last(row.logged)
        span = f"  first {first}  last {last}" if first else ""
        lines.append(f"  {row.name:<24} {row.action:<8} {row.direction:<4} logged {_logged(report, row):<14} "
                     f"counter {counter}{span}".rstrip())
    lines += ["", "ports (monitored or denied):"]
    if not report.ports:
        lines.append("  none knocked on")
    for port in _ports(report):
        first, last = _first_last(port.logged)
        label = f"{port.protocol}/{port.port}" if port.port is not None else port.protocol
        services = ", ".join(port.services) or "unregistered" if port.port is not None else ""
        bound = "at least " if port_lower_bound(report, port) else ""
        lines.append(f"  {label} {services}".rstrip() + f": {bound}{_plural(port.logged.count, 'line')} from "
                     f"{_plural(len(port.sources), 'source')} ({', '.join(sorted(port.rules))}), "
                     f"first {first}, last {last}")
        for address in sorted(port.sources, key=_order):
            seen = port.sources[address]
            a, b = _first_last(seen)
            lines.append(f"    {str(address):<40} {seen.count:>6}  first {a}  last {b}")
        lines.append("    by network: " + ", ".join(f"{net} {count}" for net, count in networks(port.sources)))
    lines += ["", "sources:"]
    lines += [f"  {str(address):<40} {seen.count:>6}" for address, seen in
              sorted(report.sources.items(), key=lambda item: _order(item[0]))] or ["  none"]
    lines += ["", "networks (/24, /48):"]
    lines += [f"  {net:<40} {count:>6}" for net, count in networks(report.sources)] or ["  none"]
    zero = report.zero_hits()
    lines += ["", f"zero hits ({baseline(report)}): " + (", ".join(r.name for r in zero) or "none")]
    found = notes(report)
    if found:
        lines += ["", "notes:"] + [f"  - {note}" for note in found]
    return "\n".join(lines) + "\n"


def _md(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown(report: Report) -> str:
    out = [f"# fwgen report: policy {_md(report.policy)}", ""]
    if report.since or report.until:
        out += [f"Window: {when(report.since) or 'the start'} .. {when(report.until) or 'the end'}", ""]
    out += ["## Inputs", ""] + [f"- {_md(_input_text(row))}" for row in report.inputs]
    out += ["", "## Rules", "", "| rule | action | direction | logged lines | counter | first seen | last seen |",
            "|---|---|---|---|---|---|---|"]
    for row in report.rules.values():
        first, last = _first_last(row.logged)
        out.append(f"| {_md(row.name)} | {row.action} | {row.direction} | {_logged(report, row)} | "
                   f"{'-' if row.counted is None else row.counted} | {first or '-'} | {last or '-'} |")
    out += ["", "## Ports (monitored or denied)", "", "| protocol | port | services | logged lines | sources | rules |",
            "|---|---|---|---|---|---|"]
    for port in _ports(report):
        bound = "at least " if port_lower_bound(report, port) else ""
        out.append(f"| {port.protocol} | {'-' if port.port is None else port.port} | "
                   f"{_md(', '.join(port.services) or '-')} | {bound}{port.logged.count} | {len(port.sources)} | "
                   f"{_md(', '.join(sorted(port.rules)))} |")
    out += ["", "## Sources", "", "| address | lines | /24 or /48 |", "|---|---|---|"]
    for address, seen in sorted(report.sources.items(), key=lambda item: _order(item[0])):
        out.append(f"| {address} | {seen.count} | {_network(address)} |")
    zero = report.zero_hits()
    out += ["", f"Zero hits ({_md(baseline(report))}): " + (", ".join(_md(r.name) for r in zero) or "none")]
    found = notes(report)
    if found:
        out += ["", "## Notes", ""] + [f"- {_md(note)}" for note in found]
    return "\n".join(out) + "\n"


def _seen_json(seen: Seen) -> dict[str, Any]:
    first, last = _first_last(seen)
    return {"first_seen": first, "last_seen": last}


def document(report: Report) -> dict[str, Any]:
    return {
        "policy": report.policy,
        "log_prefix": report.prefix,
        "log_rate": report.rate,
        "log_burst": report.burst,
        "window": {"since": when(report.since), "until": when(report.until)},
        "baseline": baseline(report),
        "inputs": [{"path": r.path, "format": r.format, "lines": r.lines, "matched": r.matched,
                    "unparsed": r.unparsed, "first_unparsed_line": r.first_unparsed, "outside_window": r.outside,
                    "without_time": r.untimed, "unknown_rules": dict(sorted(r.unknown.items())),
                    "undetermined": r.undetermined, "disagreeing": r.disagree} for r in report.inputs],
        "rules": [{"name": r.name, "action": r.action, "direction": r.direction, "log_prefix": r.tag,
                   "logged": r.logged.count, "counted": r.counted,
                   "logged_is_lower_bound": report.lower_bound(r), **_seen_json(r.logged)}
                  for r in report.rules.values()],
        "ports": [{"protocol": p.protocol, "port": p.port, "services": p.services, "rules": sorted(p.rules),
                   "logged": p.logged.count, "logged_is_lower_bound": port_lower_bound(report, p),
                   **_seen_json(p.logged),
                   "sources": [{"address": str(a), "count": p.sources[a].count, **_seen_json(p.sources[a])}
                               for a in sorted(p.sources, key=_order)],
                   "networks": [{"network": n, "count": c} for n, c in networks(p.sources)]}
                  for p in _ports(report)],
        "sources": [{"address": str(a), "count": s.count, **_seen_json(s)}
                    for a, s in sorted(report.sources.items(), key=lambda item: _order(item[0]))],
        "networks": [{"network": n, "count": c} for n, c in networks(report.sources)],
        "zero_hits": [r.name for r in report.zero_hits()],
        "notes": notes(report),
    }


def as_json(report: Report) -> str:
    return json.dumps(document(report), indent=2) + "\n"


def _label(value: object) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _port_labels(policy: str, port: PortRow) -> str:
    return _labels(policy=policy, protocol=port.protocol, port="" if port.port is None else port.port,
                   service=",".join(port.services))


def prometheus(report: Report) -> str:
    """node_exporter's textfile-collector format: HELP and TYPE before each metric's
    samples, label values escaped. Per rule and per port, not per source address (a
    scan would make a series per address: read those from the JSON)."""
    metrics: list[tuple[str, str, str, list[str]]] = []
    policy = report.policy
    rules = list(report.rules.values())
    metrics.append(("fwgen_report_logged_lines", "gauge",
                    "Kernel or pfirewall log lines of the rule in the window (rate-limited: a lower bound).",
                    [f"{_labels(policy=policy, rule=r.name, action=r.action)} {r.logged.count}" for r in rules
                     if (report.kernel_read and r.tag is not None) or report.windows_read]))
    metrics.append(("fwgen_report_counted_packets", "gauge",
                    "The rule's exact packet counter, as saved (nft named counter, iptables rule counter).",
                    [f"{_labels(policy=policy, rule=r.name, action=r.action)} {r.counted}"
                     for r in rules if r.counted is not None]))
    metrics.append(("fwgen_report_last_seen_timestamp_seconds", "gauge",
                    "Time of the rule's last log line in the window, seconds since the epoch.",
                    [f"{_labels(policy=policy, rule=r.name, action=r.action)} {r.logged.last.timestamp():.0f}"
                     for r in rules if r.logged.last is not None]))
    ports = _ports(report)
    metrics.append(("fwgen_report_port_logged_lines", "gauge",
                    "Log lines per monitored or denied (protocol, port) in the window.",
                    [f"{_port_labels(policy, p)} {p.logged.count}" for p in ports]))
    metrics.append(("fwgen_report_port_sources", "gauge",
                    "Distinct source addresses per monitored or denied (protocol, port) in the window.",
                    [f"{_port_labels(policy, p)} {len(p.sources)}" for p in ports]))
    metrics.append(("fwgen_report_unparsed_lines", "gauge", "Lines of an input in no known shape.",
                    [f"{_labels(policy=policy, input=r.path)} {r.unparsed}" for r in report.inputs
                     if r.format not in ("nft", "iptables")]))
    out = []
    for name, kind, help_text, samples in metrics:
        if not samples:
            continue
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"] + [name + s for s in sorted(samples)]
    return "\n".join(out) + "\n"


RENDER = {"text": text, "markdown": markdown, "json": as_json, "prometheus": prometheus}
