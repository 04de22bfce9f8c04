"""An audit for people (a summary table, then the findings grouped by Service) and for scripts."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from svctrace.diagnosis.audit import Audit
from svctrace.render.findings import SCHEMA_VERSION, VERDICT_STYLE, _finding, finding_to_dict


def render_audit(result: Audit) -> RenderableType:
    """The summary table, findings by code, then each Service with findings and its ranked findings."""
    scope = f"namespace {result.namespace}" if result.namespace else "all namespaces"
    head = Text()
    head.append(f"svctrace audit: {scope}", "svc.title")
    head.append(f"  ({result.source or 'snapshot'})", "hop.explain")
    summary = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
    summary.add_column("what")
    summary.add_column("count", justify="right")
    summary.add_row("Services", str(len(result.services)))
    programmed = str(result.programmed) if result.dataplane_collected else "unknown (no dataplane collected)"
    summary.add_row("programmed on this node", programmed)
    summary.add_row("drifted (rules differ from the API)", str(result.drifted))
    summary.add_row("without ready endpoints", str(result.without_endpoints))
    sev = result.by_severity
    summary.add_row("findings", f"{sev['error']} errors, {sev['warning']} warnings, {sev['info']} info")
    parts: list[RenderableType] = [head, summary]
    if result.by_code:
        codes = Table(box=box.SIMPLE, pad_edge=False)
        codes.add_column("finding")
        codes.add_column("Services", justify="right")
        for code, n in result.by_code.items():
            codes.add_row(code, str(n))
        parts.append(codes)
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
    return {
        "schemaVersion": SCHEMA_VERSION,
        "kind": "Audit",
        "source": result.source,
        "namespace": result.namespace,
        "summary": {
            "services": len(result.services),
            "programmed": result.programmed if result.dataplane_collected else None,
            "drifted": result.drifted,
            "withoutEndpoints": result.without_endpoints,
            "findingsBySeverity": result.by_severity,
            "findingsByCode": result.by_code,
        },
        "services": [
            {"service": s.ref, "verdict": s.diagnosis.verdict, "reason": s.diagnosis.reason,
             "programmed": s.programmed, "drifted": s.drifted, "withoutEndpoints": s.without_endpoints,
             "findings": [finding_to_dict(f) for f in s.diagnosis.findings]}
            for s in result.services
        ],
    }
