"""A diagnosis for people (verdict, ranked findings, the path with broken hops marked) and for scripts."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from svctrace.diagnosis.diagnose import Diagnosis
from svctrace.diagnosis.findings import ERROR, REACHABLE, UNREACHABLE, WARNING, Finding
from svctrace.render.json import graph_to_dict
from svctrace.render.tree import render_graph

SCHEMA_VERSION = 1
SEVERITY_STYLE = {ERROR: "verdict.reject", WARNING: "verdict.partial"}
VERDICT_STYLE = {REACHABLE: "verdict.ok", UNREACHABLE: "verdict.reject"}


def _finding(f: Finding) -> RenderableType:
    head = Text()
    head.append(f"{f.severity.upper():<8}", SEVERITY_STYLE.get(f.severity, "note"))
    head.append(f"{f.code}  ", "hop.chain")
    head.append(f.title)
    lines: list[RenderableType] = [head]
    lines += [Text(f"          {e}", "rule") for e in f.evidence]
    lines.append(Text(f"          next: {f.hint}", "hop.explain"))
    return Group(*lines)


def render_diagnosis(diag: Diagnosis, *, explain: bool = False) -> RenderableType:
    """Verdict line, findings by severity, then the path tree with the broken hops marked."""
    who = diag.target.target.text
    line = Text()
    line.append(f"{who}: ", "svc.title")
    line.append(diag.verdict.upper(), VERDICT_STYLE.get(diag.verdict, "verdict.partial"))
    line.append(f" - {diag.reason}")
    parts: list[RenderableType] = [line]
    if diag.target.how and diag.target.target.kind != "service":
        parts.append(Text(f"({diag.target.how})", "hop.explain"))
    if diag.findings:
        parts.append(Text(""))
        parts += [_finding(f) for f in diag.findings]
    if diag.skipped:
        parts.append(Text(""))
        parts += [Text(f"not checked: {s}", "note") for s in diag.skipped]
    if diag.graph is not None:
        marks = {hop: f.code for f in reversed(diag.findings) for hop in f.hops}
        parts += [Text(""), render_graph(diag.graph, explain=explain, marks=marks)]
    return Group(*parts)


def finding_to_dict(f: Finding) -> dict[str, Any]:
    return {"code": f.code, "severity": f.severity, "title": f.title, "evidence": list(f.evidence), "hint": f.hint,
            "hops": list(f.hops)}


def diagnosis_to_dict(diag: Diagnosis) -> dict[str, Any]:
    """``{"target", "verdict", "reason", "findings": [...], "graph": ServicePath | null}`` (docs/diagnosis.md)."""
    t = diag.target
    return {
        "schemaVersion": SCHEMA_VERSION,
        "kind": "Diagnosis",
        "target": {"text": t.target.text, "kind": t.target.kind, "namespace": t.namespace or None,
                   "service": t.name if t.service is not None else None, "port": t.port, "frontend": t.frontend,
                   "matched": t.how},
        "client": {"src": diag.client.src, "origin": diag.client.origin,
                   "pod": diag.client.pod.ref if diag.client.pod is not None else None},
        "verdict": diag.verdict,
        "reason": diag.reason,
        "findings": [finding_to_dict(f) for f in diag.findings],
        "notChecked": list(diag.skipped),
        "graph": graph_to_dict(diag.graph) if diag.graph is not None else None,
    }
