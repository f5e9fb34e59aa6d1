"""``fwgen audit``: what listens on the host against what the policy lets in.

Each listener (``fwgen.listeners``) is judged by ``fwgen explain``'s interpreter (never
the compiler): the inbound verdicts for its protocol and port, for every remote address
of the families it listens on, to the address it is bound to (any address: the verdicts
for every local address, with the conditions explain reports) and the interface it is
bound to. A listener is

- ``loopback``: bound to a loopback address or to ``lo``: not reachable from the network;
- ``exposed``: some remote address may open a connection to it (to whom: the networks,
  or everyone);
- ``denied``: the policy lets no one in: a dead service or a forgotten rule;

and, besides, ``watched`` when a monitor rule, a ``log: true`` rule or a ``select`` rule
decides its port for some address: a dormant port with a process behind it, so verify
what process is bound to it. Denied and watched listeners need a look (``--strict``).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from fwgen.explain import Explainer, Verdict, describe, describe_condition
from fwgen.listeners import Listener, Parsed

STATUSES = ("exposed", "denied", "loopback")


class Outcome(NamedTuple):
    """What the remote addresses ``networks`` get (``everyone``: all of the listener's families')."""

    networks: tuple[str, ...]
    everyone: bool
    verdict: Verdict


class Finding(NamedTuple):
    listener: Listener
    status: str  # one of STATUSES
    watched: tuple[str, ...]  # why the port is watched: "monitor rule dormant-watch (select undocumented: mpshrsv)"
    outcomes: tuple[Outcome, ...]  # () for a loopback listener
    services: tuple[str, ...]  # the registry's names for the port

    @property
    def needs_look(self) -> bool:
        return self.status == "denied" or bool(self.watched)


def _watch_reason(explainer: Explainer, verdict: Verdict, what: tuple[str, int]) -> str | None:
    if verdict.rule is None:
        return None
    kind = "monitor" if verdict.action == "monitor" else ("select" if explainer.is_select(verdict) else None)
    if kind is None and verdict.logged:
        kind = "logged"
    if kind is None:
        return None
    return f"{kind} rule {verdict.rule}{explainer.because(verdict, what)}"


def judge(explainer: Explainer, listener: Listener) -> Finding:
    """One listener's finding, from explain's answers."""
    services = tuple(explainer.registry.names_at(listener.protocol, listener.port))
    if listener.loopback:
        return Finding(listener, "loopback", (), (), services)
    what = (listener.protocol, listener.port)
    regions = explainer.regions("in", listener.protocol, listener.port, local=listener.local,
                                interface=listener.interface)
    outcomes: list[Outcome] = []
    for networks, verdict in regions:
        mine = tuple(str(n) for n in networks if n.version in listener.families)
        if mine:
            outcomes.append(Outcome(mine, False, verdict))
    if len(outcomes) == 1:
        outcomes = [outcomes[0]._replace(everyone=True)]
    verdicts = [v for o in outcomes for v in (o.verdict, *(c.verdict for c in o.verdict.depends))]
    status = "exposed" if any(v.action != "deny" for v in verdicts) else "denied"
    reasons = dict.fromkeys(r for v in verdicts if (r := _watch_reason(explainer, v, what)) is not None)
    return Finding(listener, status, tuple(reasons), tuple(outcomes), services)


def audit(explainer: Explainer, parsed: Parsed) -> list[Finding]:
    """Every listener's finding: those on watched ports first, then denied, exposed and
    loopback ones; within each by protocol, port and address."""
    findings = [judge(explainer, listener) for listener in parsed.listeners]
    rank = {"denied": 1, "exposed": 2, "loopback": 3}
    return sorted(findings, key=lambda f: (0 if f.watched else rank[f.status], f.listener.protocol, f.listener.port,
                                           f.listener.endpoint))


# ---------------------------------------------------------------------- presentation


def _safe(text: str) -> str:
    """Process names come from the host: printable, one line."""
    return "".join(c if c.isprintable() else "?" for c in text)


def processes_text(listener: Listener) -> str:
    """``sshd (pid 900)``, ``pid 1012`` (netstat), ``(no process shown)``."""
    by_name: dict[str, list[str]] = {}
    for process in listener.processes:
        by_name.setdefault(_safe(process.name), []).append(str(process.pid))
    parts = [f"{name} (pid {', '.join(pids)})" if name else f"pid {', '.join(pids)}" for name, pids in by_name.items()]
    return "; ".join(parts) or "(no process shown)"


def _source(explainer: Explainer, verdict: Verdict, what: tuple[str, int]) -> str:
    return f"({explainer.source(verdict, 'in')}){explainer.because(verdict, what)}"


def verdict_text(explainer: Explainer, finding: Finding) -> str:
    """``allow from 192.0.2.0/24 (rule web, edge.yaml:9); deny by drop otherwise (default inbound deny)``."""
    if finding.status == "loopback":
        return "bound to loopback only: not reachable from the network"
    what = (finding.listener.protocol, finding.listener.port)
    parts = []
    for i, outcome in enumerate(finding.outcomes):
        last = i == len(finding.outcomes) - 1 and len(finding.outcomes) > 1
        scope = f"from {', '.join(outcome.networks)}"
        if outcome.everyone or last:
            scope = "from everyone" if outcome.everyone else "otherwise"
        verdict = outcome.verdict
        text = f"{describe(verdict)} {scope} {_source(explainer, verdict, what)}"
        if verdict.depends:
            conditions = [f"{describe(c.verdict)} when {describe_condition(c)} {_source(explainer, c.verdict, what)}"
                          for c in verdict.depends]
            text = f"{', else '.join(conditions)}, else {text}"
        parts.append(text)
    return "; ".join(parts)


def note(finding: Finding) -> str:
    """What to do about a finding that needs a look; '' for the others."""
    parts = []
    if finding.watched:
        parts.append("a watched port has a listener: verify what process is bound to it")
    if finding.status == "denied":
        parts.append("the policy lets no one in: a dead service or a forgotten rule")
    return "; ".join(parts)


def _label(finding: Finding) -> str:
    listener = finding.listener
    names = f" ({', '.join(finding.services)})" if finding.services else ""
    return f"{listener.protocol} {listener.endpoint}{names}"


def _headline(explainer: Explainer, parsed: Parsed, source: str, findings: list[Finding]) -> str:
    counts = {s: sum(f.status == s for f in findings) for s in STATUSES}
    watched = sum(bool(f.watched) for f in findings)
    look = sum(f.needs_look for f in findings)
    return (f"{explainer.path}: {len(findings)} listeners ({source}): {counts['exposed']} exposed, "
            f"{counts['denied']} denied, {counts['loopback']} loopback only, {watched} on watched ports; "
            f"{look} need a look")


def format_text(explainer: Explainer, parsed: Parsed, source: str, findings: list[Finding]) -> str:
    lines = [_headline(explainer, parsed, source, findings)]
    for f in findings:
        status = ("watched " + f.status) if f.watched else f.status
        lines.append(f"{status}: {_label(f)}, {processes_text(f.listener)}: {verdict_text(explainer, f)}")
        if note(f):
            lines.append(f"  {note(f)}")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "'").replace("*", "\\*")


def format_markdown(explainer: Explainer, parsed: Parsed, source: str, findings: list[Finding]) -> str:
    lines = [f"**{_cell(_headline(explainer, parsed, source, findings))}**", "",
             "| status | listener | process | verdict | note |", "|---|---|---|---|---|"]
    for f in findings:
        status = ("watched " + f.status) if f.watched else f.status
        lines.append("| " + " | ".join(_cell(c) for c in (
            status, _label(f), processes_text(f.listener), verdict_text(explainer, f), note(f))) + " |")
    return "\n".join(lines) + "\n"


def _verdict_json(explainer: Explainer, verdict: Verdict, what: tuple[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "verdict": verdict.action, "rule": verdict.rule, "line": verdict.line, "logged": verdict.logged,
        "enforced": verdict.enforced,
    }
    if explainer.is_select(verdict):
        out["select"] = [{"selector": s, "names": [n or None for n in names]}
                         for s, names in explainer.selected(verdict, what)]
    return out


def format_json(explainer: Explainer, parsed: Parsed, source: str, findings: list[Finding]) -> str:
    listeners = []
    for f in findings:
        listener = f.listener
        what = (listener.protocol, listener.port)
        exposed_to: list[str] = []
        for o in f.outcomes:
            if any(v.action != "deny" for v in (o.verdict, *(c.verdict for c in o.verdict.depends))):
                exposed_to.extend(["everyone"] if o.everyone else o.networks)
        listeners.append({
            "protocol": listener.protocol,
            "address": listener.address,
            "families": list(listener.families),
            "port": listener.port,
            "interface": listener.interface,
            "services": list(f.services),
            "processes": [{"name": p.name or None, "pid": p.pid} for p in listener.processes],
            "status": f.status,
            "watched": list(f.watched),
            "needs_look": f.needs_look,
            "exposed_to": exposed_to,
            "outcomes": [
                {"networks": ["everyone"] if o.everyone else list(o.networks),
                 **_verdict_json(explainer, o.verdict, what),
                 "depends": [{"requires": {r.dimension: list(r.values) for r in c.requires},
                              **_verdict_json(explainer, c.verdict, what)} for c in o.verdict.depends]}
                for o in f.outcomes
            ],
            "note": note(f) or None,
            "line": listener.location.line,
        })
    doc = {
        "policy": explainer.path,
        "source": source,
        "format": parsed.format,
        "skipped": parsed.skipped,
        "summary": {
            "listeners": len(findings),
            **{s: sum(f.status == s for f in findings) for s in STATUSES},
            "watched": sum(bool(f.watched) for f in findings),
            "need_a_look": sum(f.needs_look for f in findings),
        },
        "listeners": listeners,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


FORMATS = {"text": format_text, "markdown": format_markdown, "json": format_json}

