"""An audit for people (a summary table, then the findings grouped by Service) and for scripts."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from svctrace.diagnosis.audit import Audit
from svctrace.diagnosis.checks.common import NO_API_HINT
from svctrace.render.findings import SCHEMA_VERSION, VERDICT_STYLE, _finding, finding_to_dict
from svctrace.words import count


def render_audit(result: Audit) -> RenderableType:
    """The summary table, findings by code, then each Service with findings and its ranked findings."""
    scope = f"namespace {result.namespace}" if result.namespace else "all namespaces"
    head = Text()
    head.append(f"svctrace audit: {scope}", "svc.title")
    head.append(f"  ({result.source or 'snapshot'})", "hop.explain")
    # A grid, not a boxed table: no edge rows or cell padding, so no line of the output is only spaces.
    summary = Table.grid(padding=(0, 2))
    summary.add_column("what")
    summary.add_column("count", justify="right")
    parts: list[RenderableType] = [head, Text(""), summary]
    if not result.api_collected:
        summary.add_row("Kubernetes objects", "not collected")
        summary.add_row("Services", "unknown")
    else:
        summary.add_row("Services", str(len(result.services)))
    if result.api_collected or result.services:
        programmed = str(result.programmed) if result.dataplane_collected else "unknown (no dataplane collected)"
        summary.add_row("programmed on this node", programmed)
        summary.add_row("drifted (rules differ from the API)", str(result.drifted))
        summary.add_row("without ready endpoints", str(result.without_endpoints))
        sev = result.by_severity
        summary.add_row("findings", f"{count(sev['error'], 'error')}, {count(sev['warning'], 'warning')}, "
                                    f"{sev['info']} info")
    if result.in_rules:
        summary.add_row("Service ports the node's rules show", str(len(result.in_rules)))
    if result.stale_chains:
        summary.add_row("stale chains (no Service owns them)", str(len(result.stale_chains)))
    if result.not_checked:
        parts += [Text(""), *[Text(f"not checked: {s}", "note") for s in result.not_checked]]
    if result.in_rules:
        parts += [Text(""), Text("What the node's rules show (svctrace svc ADDRESS follows each one):", "note")]
        parts += [Text(f"  {who}  {', '.join(where) or 'no frontend in the dump'}"
                       f"{'  (chains ' + key + ')' if key else ''}  ({how})", "rule")
                  for who, how, where, key in result.in_rules]
    parts += [Text(f"warning: {w}", "note") for w in result.warnings]
    if result.checked_nothing:
        parts.append(Text(f"next: {NO_API_HINT}", "hop.explain"))
        return Group(*parts)
    if result.by_code:
        codes = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        codes.add_column("finding")
        codes.add_column("Services", justify="right")
        for code, n in result.by_code.items():
            codes.add_row(code, str(n))
        parts += [Text(""), codes]
    for s in result.services:
        if not s.diagnosis.findings:
            continue
        line = Text()
        line.append(f"{s.ref}: ", "svc.title")
        line.append(s.diagnosis.verdict.upper(), VERDICT_STYLE.get(s.diagnosis.verdict, "verdict.partial"))
        parts += [Text(""), line, *[_finding(f) for f in s.diagnosis.findings]]
    if not result.has_problems:
        parts += [Text(""), Text("no errors or warnings", "verdict.ok")]
    return Group(*parts)


def audit_to_dict(result: Audit) -> dict[str, Any]:
    """``{"summary": {...}, "services": [{"service", "verdict", "reason", "findings"}]}`` (docs/diagnosis.md)."""
    known = result.api_collected or bool(result.services)
    return {
        "schemaVersion": SCHEMA_VERSION,
        "kind": "Audit",
        "source": result.source,
        "namespace": result.namespace,
        "summary": {
            # null: not known, because the Kubernetes objects (or the node's rules) were not collected
            "services": len(result.services) if known else None,
            "programmed": result.programmed if known and result.dataplane_collected else None,
            "drifted": result.drifted if known else None,
            "withoutEndpoints": result.without_endpoints if known else None,
            "findingsBySeverity": result.by_severity,
            "findingsByCode": result.by_code,
            "apiCollected": result.api_collected,
            "proxyMode": result.proxy_mode,
            "notChecked": list(result.not_checked),
        },
        "warnings": list(result.warnings),
        "staleChains": [{"table": s.table, "chain": s.chain, "comment": s.comment, "rules": s.rule_count}
                        for s in result.stale_chains],
        "servicesInRules": [{"identity": who, "how": how, "frontends": list(where), "chains": key}
                            for who, how, where, key in result.in_rules],
        "services": [
            {"service": s.ref, "verdict": s.diagnosis.verdict, "reason": s.diagnosis.reason,
             "programmed": s.programmed, "drifted": s.drifted, "withoutEndpoints": s.without_endpoints,
             "findings": [finding_to_dict(f) for f in s.diagnosis.findings]}
            for s in result.services
        ],
    }
