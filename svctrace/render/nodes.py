"""Every node's answer side by side, for people (a table, identical nodes grouped) and scripts (docs/json-schema.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Group as Stack
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from svctrace.allnodes import (
    NO_RULES,
    AuditResult,
    FrontendOnNode,
    Group,
    NodeAudit,
    NodeFailure,
    ServiceAcrossNodes,
    ServiceOnNode,
    VerdictsAcrossNodes,
)
from svctrace.diagnosis.findings import REACHABLE
from svctrace.model.graph import FORWARDED, NOT_PROGRAMMED, REJECTED
from svctrace.render.findings import SCHEMA_VERSION, VERDICT_STYLE
from svctrace.words import count

NAMES_SHOWN = 4  # a group of more nodes is shown as "18 nodes: a, b, c, d, ..."
_FRONTEND_STYLE = {FORWARDED: "verdict.ok", REJECTED: "verdict.reject", NOT_PROGRAMMED: "verdict.reject"}


def _nodes_cell(group: Group, total: int) -> Text:
    names = list(group.nodes)
    if len(names) == 1:
        return Text(names[0], "svc.node")
    shown = ", ".join(names[:NAMES_SHOWN]) + (", ..." if len(names) > NAMES_SHOWN else "")
    text = Text(f"{len(names)} nodes", "svc.node")
    if not group.differences and len(names) > 1:
        text.append(": identical" if len(names) < total else ": all identical")
    text.append(f"\n{shown}", "hop.explain")
    return text


def _head(title: str, nodes: int, source: str) -> Text:
    head = Text()
    head.append(title, "svc.title")
    head.append(f"  {count(nodes, 'node')} read")
    if source:
        head.append(f"  ({source})", "hop.explain")
    return head


def _no_rules(nodes: Sequence[str]) -> list[RenderableType]:
    return [Text(f"{', '.join(nodes)}: {NO_RULES}", "note")] if nodes else []


def _table(*headers: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in headers:
        table.add_column(header)
    return table


def _document(kind: str, fields: dict[str, Any], failures: Sequence[NodeFailure]) -> dict[str, Any]:
    """A JSON document of this module: its kind, its fields, and the nodes that could not be read."""
    return {"schemaVersion": SCHEMA_VERSION, "kind": kind, **fields,
            "failures": [{"node": f.node, "error": f.message, "hint": f.hint} for f in failures]}


def _failures(failures: Sequence[NodeFailure]) -> list[RenderableType]:
    if not failures:
        return []
    out: list[RenderableType] = [Text(""), Text(f"{count(len(failures), 'node')} could not be read:",
                                                "verdict.reject")]
    for f in failures:
        out.append(Text(f"  {f.node}: {f.message}"))
    for hint in dict.fromkeys(f.hint for f in failures if f.hint):
        out.append(Text(f"  next: {hint}", "hop.explain"))
    return out


def _shared_and_own(per_node: dict[str, tuple[str, ...]]) -> tuple[list[str], list[tuple[str, str]]]:
    """Lines every node has (said once) and the ones only some have (said with the node)."""
    if not per_node:
        return [], []
    sets = [set(v) for v in per_node.values()]
    shared = set.intersection(*sets)
    first = next(iter(per_node.values()))
    own = [(node, line) for node, lines in per_node.items() for line in lines if line not in shared]
    return [line for line in first if line in shared], own


def _notes(per_node_warnings: dict[str, tuple[str, ...]], per_node_missing: dict[str, tuple[str, ...]]
           ) -> list[RenderableType]:
    out: list[RenderableType] = []
    shared, own = _shared_and_own(per_node_warnings)
    out += [Text(f"warning: {w}", "note") for w in shared]
    out += [Text(f"warning: {node}: {w}", "note") for node, w in own]
    shared, own = _shared_and_own(per_node_missing)
    out += [Text(f"not available: {m}", "note") for m in shared]
    out += [Text(f"not available: {node}: {m}", "note") for node, m in own]
    return [Text(""), *out] if out else []


# --- svc --------------------------------------------------------------------------------------------------

def _frontend_line(f: FrontendOnNode) -> Text:
    line = Text()
    line.append(f.label, "hop.address")
    line.append(" ")
    line.append(f.verdict, _FRONTEND_STYLE.get(f.verdict, "verdict.partial"))
    if f.shares:
        line.append(": " + ", ".join(f"{address} {share:.0%}" for address, share in f.shares))
    return line


def _drift_cell(view: ServiceOnNode) -> Text:
    parts = [f"stale {a}" for a in view.stale] + [f"missing {a}" for a in view.unprogrammed]
    parts += [f"stale chain {c}" for c in view.stale_chains]
    parts += [f"{f.label} not programmed" for f in view.frontends if f.verdict == NOT_PROGRAMMED]
    return Text("\n".join(parts), "verdict.reject") if parts else Text("none", "verdict.ok")


def render_service_across_nodes(result: ServiceAcrossNodes, source: str = "") -> RenderableType:
    """One row per group of identical nodes: mode, backend, frontends and shares, drift; then the odd ones out."""
    parts: list[RenderableType] = [_head(f"Service {result.namespace}/{result.name}", len(result.nodes), source)]
    by_node = {v.node: v for v in result.nodes}
    if result.groups:
        table = _table("NODES", "MODE", "BACKEND", "FRONTENDS AND ENDPOINT SHARES", "DRIFT FROM THE API")
        for group in result.groups:
            view = by_node[group.nodes[0]]
            fronts = Text("\n").join(_frontend_line(f) for f in view.frontends) if view.frontends else Text("none")
            table.add_row(_nodes_cell(group, len(result.nodes)), Text(view.mode or "none", "svc.mode"),
                          view.backend or "-", fronts, _drift_cell(view))
        parts.append(table)
        odd = [g for g in result.groups[1:] if g.differences]
        if odd:
            usual = ", ".join(result.groups[0].nodes[:NAMES_SHOWN]) + (
                ", ..." if len(result.groups[0].nodes) > NAMES_SHOWN else "")
            parts.append(Text(f"the odd ones out (the others: {usual}):", "svc.title"))
            for group in odd:
                for line in group.differences:
                    parts.append(Text(f"  {', '.join(group.nodes)}: {line}"))
        elif len(result.groups) == 1 and len(result.nodes) > 1:
            parts.append(Text(f"all {len(result.nodes)} nodes program this Service identically", "verdict.ok"))
    parts += _no_rules([v.node for v in result.nodes if v.mode is None])
    parts += _notes({v.node: v.warnings for v in result.nodes}, {v.node: v.missing for v in result.nodes})
    parts += _failures(result.failures)
    return Stack(*parts)


def _groups_json(groups: Sequence[Group]) -> list[dict[str, Any]]:
    return [{"nodes": list(g.nodes), "majority": i == 0, "differences": list(g.differences)}
            for i, g in enumerate(groups)]


def service_across_nodes_to_dict(result: ServiceAcrossNodes) -> dict[str, Any]:
    """``{"kind": "ServiceAcrossNodes", "nodes": [...], "groups": [...], "failures": [...]}`` (docs/json-schema.md)."""
    group_of = {node: i for i, g in enumerate(result.groups) for node in g.nodes}
    return _document("ServiceAcrossNodes", {
        "service": {"namespace": result.namespace, "name": result.name},
        "nodes": [{
            "node": v.node, "mode": v.mode, "iptablesBackend": v.backend, "group": group_of.get(v.node),
            "frontends": [{"type": f.type, "ip": f.ip, "port": f.port, "protocol": f.protocol, "verdict": f.verdict,
                           "endpoints": [{"address": a, "share": round(s, 6)} for a, s in f.shares]}
                          for f in v.frontends],
            "staleEndpoints": list(v.stale), "unprogrammedEndpoints": list(v.unprogrammed),
            "staleChains": list(v.stale_chains), "drift": v.drift, "warnings": list(v.warnings),
            "missing": list(v.missing),
        } for v in result.nodes],
        "groups": _groups_json(result.groups),
    }, result.failures)


# --- audit ------------------------------------------------------------------------------------------------

def _audit_row(n: NodeAudit) -> list[RenderableType]:
    programmed = f"{n.programmed}/{n.services}" if n.dataplane else "no rules"
    style = "verdict.reject" if n.out_of_step else "verdict.ok"
    return [Text(n.node, "svc.node"), Text(n.mode or "none", "svc.mode"), n.backend or "-", programmed,
            Text(str(len(n.drifted)), style if n.drifted else ""),
            Text(str(len(n.not_programmed)), style if n.not_programmed else ""),
            Text(str(len(n.stale_chains)), style if n.stale_chains else ""), str(n.without_endpoints)]


def render_audit_across_nodes(result: AuditResult, source: str = "") -> RenderableType:
    """A row per node, then the nodes whose kube-proxy is out of step and what differs there."""
    scope = f"namespace {result.namespace}" if result.namespace else "all namespaces"
    parts: list[RenderableType] = [_head(f"svctrace audit --all-nodes: {scope}", len(result.nodes), source)]
    if result.nodes:
        table = _table("NODE", "MODE", "BACKEND", "PROGRAMMED", "DRIFTED", "NOT PROGRAMMED", "STALE CHAINS",
                       "NO ENDPOINTS")
        for n in result.nodes:
            table.add_row(*_audit_row(n))
        parts.append(table)
    out = result.out_of_step
    if out:
        line = Text()
        line.append("kube-proxy out of step on ", "verdict.reject")
        line.append(", ".join(n.node for n in out), "verdict.reject")
        line.append(": its rules there differ from the API (a stuck or restarting kube-proxy, or one that lost "
                    "its watch)")
        parts += [Text(""), line]
        for n in out:
            for d in n.drifted:
                parts.append(Text(f"  {n.node}  {d.ref}: " + "; ".join(d.what)))
            for ref in n.not_programmed:
                parts.append(Text(f"  {n.node}  {ref}: not programmed (no rule for any of its frontends)"))
            if n.stale_chains:
                shown = ", ".join(n.stale_chains[:3]) + (", ..." if len(n.stale_chains) > 3 else "")
                parts.append(Text(f"  {n.node}  {count(len(n.stale_chains), 'stale chain')} no Service owns: {shown}"))
        parts.append(Text("  next: look at kube-proxy on those nodes (kubectl -n kube-system logs POD); restarting "
                          "it makes it write every rule again", "hop.explain"))
    elif result.nodes:
        parts += [Text(""), Text(f"every node's rules match the API ({count(len(result.nodes), 'node')})",
                                 "verdict.ok")]
    for attribute, words in (("mode", "proxy mode"), ("backend", "iptables backend")):
        usual, odd = result.odd(attribute)
        for node, value in odd:
            parts.append(Text(f"{words}: {node} uses {value or 'none'} (the others: {usual or 'none'})", "note"))
    parts += _no_rules([n.node for n in result.without_rules])
    parts += _notes({n.node: n.warnings for n in result.nodes}, {n.node: n.missing for n in result.nodes})
    parts += _failures(result.failures)
    return Stack(*parts)


def audit_across_nodes_to_dict(result: AuditResult) -> dict[str, Any]:
    """``{"kind": "AuditAcrossNodes", "summary": {...}, "nodes": [...], "failures": [...]}`` (docs/json-schema.md)."""
    return _document("AuditAcrossNodes", {
        "namespace": result.namespace,
        "summary": {
            "nodes": len(result.nodes),
            "outOfStep": [n.node for n in result.out_of_step],
            "withoutKubeProxyRules": [n.node for n in result.without_rules],
            "failed": [f.node for f in result.failures],
            "modes": _counts(n.mode for n in result.nodes),
            "iptablesBackends": _counts(n.backend for n in result.nodes),
        },
        "nodes": [{
            "node": n.node, "mode": n.mode, "iptablesBackend": n.backend, "services": n.services,
            "programmed": n.programmed if n.dataplane else None,
            "drifted": [{"service": d.ref, "what": list(d.what)} for d in n.drifted],
            "notProgrammed": list(n.not_programmed), "staleChains": list(n.stale_chains),
            "withoutEndpoints": n.without_endpoints, "outOfStep": n.out_of_step,
            "warnings": list(n.warnings), "missing": list(n.missing),
        } for n in result.nodes],
    }, result.failures)


def _counts(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        key = value if value is not None else "none"
        out[key] = out.get(key, 0) + 1
    return out


# --- why-unreachable --------------------------------------------------------------------------------------

def render_verdicts_across_nodes(result: VerdictsAcrossNodes) -> RenderableType:
    """The summary sentence, then each node's verdict and the finding behind it."""
    head = Text()
    head.append(f"{result.target}: ", "svc.title")
    head.append(result.summary, "verdict.ok" if result.all_reachable else "verdict.partial")
    parts: list[RenderableType] = [head]
    if result.nodes:
        table = _table("NODE", "VERDICT", "MODE", "BACKEND", "WHY")
        for n in result.nodes:
            table.add_row(Text(n.node, "svc.node"), Text(n.verdict.upper(), VERDICT_STYLE.get(n.verdict,
                                                                                                 "verdict.partial")),
                          Text(n.mode or "none", "svc.mode"), n.backend or "-",
                          "" if n.verdict == REACHABLE else (f"{n.code}: {n.reason}" if n.code else n.reason))
        parts.append(table)
    parts += _failures(result.failures)
    return Stack(*parts)


def verdicts_across_nodes_to_dict(result: VerdictsAcrossNodes) -> dict[str, Any]:
    """``{"kind": "VerdictsAcrossNodes", "summary", "nodes": [...], "groups", "failures"}`` (docs/json-schema.md)."""
    return _document("VerdictsAcrossNodes", {
        "target": result.target,
        "summary": result.summary,
        "nodes": [{"node": n.node, "verdict": n.verdict, "reason": n.reason, "finding": n.code, "mode": n.mode,
                   "iptablesBackend": n.backend} for n in result.nodes],
        "groups": _groups_json(result.groups),
    }, result.failures)
