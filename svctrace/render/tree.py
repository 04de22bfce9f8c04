"""The path graph as a rich Tree: one branch per frontend, one plain sentence per hop with --explain."""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from svctrace.model import graph as g
from svctrace.model.graph import EndpointInfo, Frontend, Hop, PathGraph

VERDICT_WORDS = {
    g.FORWARDED: ("", "verdict.ok"),
    g.REJECTED: ("REJECT: no endpoints", "verdict.reject"),
    g.DROPPED: ("DROP", "verdict.drop"),
    g.PARTIAL: ("some clients dropped", "verdict.partial"),
    g.UNTRANSLATED: ("untranslated: no rule translates it", "verdict.drop"),
    g.NOT_PROGRAMMED: ("not programmed on this node", "verdict.reject"),
    g.UNKNOWN: ("dataplane unknown", "verdict.unknown"),
}


def _pct(share: float) -> str:
    pct = share * 100
    if pct == 0 or pct >= 1:
        return f"{pct:.0f}%"
    return f"{pct:.2g}%"


def _short_pod(pod: str | None, namespace: str) -> str | None:
    if pod is None:
        return None
    ns, _, name = pod.partition("/")
    return name if ns == namespace else pod


def _endpoint_state(ep: EndpointInfo) -> tuple[str, str]:
    if not ep.in_api:
        return "not in any EndpointSlice (stale rule)", "ep.notready"
    if ep.terminating:
        return ("terminating" if ep.serving is not False else "terminating, not serving"), "ep.terminating"
    if ep.ready is False:
        return "not ready", "ep.notready"
    return "ready", "ep.ready"


def _endpoint_text(ep: EndpointInfo, namespace: str, *, api: bool = True) -> Text:
    text = Text()
    if not api:  # known from the rules alone: which pod, and whether the API lists it, is not known
        text.append("pod and state unknown (no Kubernetes objects)", "ep.pod")
        return text
    pod = _short_pod(ep.pod, namespace)
    if pod:
        text.append(f"pod {pod}", "ep.pod")
    elif ep.target_kind == "Node":
        text.append("host network", "ep.pod")
    elif ep.target_kind:
        text.append(ep.target_kind.lower(), "ep.pod")
    else:
        text.append("no pod (a manual endpoint)", "ep.pod")
    if ep.node:
        text.append("  ")
        text.append(ep.node + ("  (this node)" if ep.local else ""), "ep.node")
    state, style = _endpoint_state(ep)
    text.append("  ")
    text.append(state, style)
    return text


def _masq(words: str | None) -> str | None:
    if words is None:
        return None
    if words == "always":
        return "masquerade"
    if words.startswith("hairpin"):
        return None  # every endpoint chain has the hairpin rule; it is explained, not flagged
    return f"masquerade if {words}"


def _hop_text(hop: Hop, graph: PathGraph, family_ip: str, *, merged_into: Frontend | None) -> Text:
    text = Text()
    if merged_into is not None:
        text.append(merged_into.address, "hop.address")
        text.append("  ")
        text.append(merged_into.type, "hop.type")
        text.append(" -> ")
    elif hop.when:
        text.append(f"{hop.when}: ", "hop.when")
    if hop.kind in ("endpoint", "real-server"):
        if hop.share is not None:
            text.append(f"{_pct(hop.share):>4}  ", "hop.share")
        if hop.endpoint is not None:
            if hop.name != hop.endpoint.address:
                text.append(hop.name, "hop.chain")
                text.append(" -> ")
            text.append(hop.endpoint.address, "hop.address")
            text.append("  ")
            text.append_text(_endpoint_text(hop.endpoint, graph.service.namespace, api=graph.from_rules is None))
        else:
            text.append(hop.name, "hop.chain")
    elif hop.kind == "verdict":
        style = "verdict.reject" if hop.verdict == "REJECT" else "verdict.drop"
        text.append(f"{hop.verdict}", style)
        if hop.rules:
            text.append(f" (filter {hop.rules[0].chain})", "rule")
        if hop.verdict == "REJECT":
            text.append(": no endpoints", style)
    elif hop.kind in ("service", "local") and merged_into is None:
        text.append(f"{family_ip}  ", "hop.address")
        text.append("ClusterIP" if hop.kind == "service" else "ClusterIP, local endpoints", "hop.type")
        text.append(" -> ")
        text.append(hop.name, "hop.chain")
    else:
        text.append(hop.name, "hop.chain")
    extras = []
    masq = _masq(hop.masquerade)
    if masq:
        extras.append((masq, "hop.masq"))
    if hop.affinity and hop.kind not in ("endpoint", "real-server"):
        extras.append((f"affinity {hop.affinity}", "hop.affinity"))
    elif hop.affinity:
        extras.append(("affinity", "hop.affinity"))
    for words, style in extras:
        text.append("  (")
        text.append(words, style)
        text.append(")")
    return text


def _add_hop(parent: Tree, hop: Hop, graph: PathGraph, family_ip: str, explain: set[str] | None,
             merged_into: Frontend | None = None, marks: Mapping[str, str] | None = None) -> None:
    """Add a hop; ``explain`` holds the hops already explained (a chain reached twice is explained once)."""
    label = _hop_text(hop, graph, family_ip, merged_into=merged_into)
    _mark(label, marks, hop.name, merged_into.address if merged_into is not None else None)
    if merged_into is not None and merged_into.verdict not in (g.FORWARDED,) and hop.kind != "verdict":
        words, style = VERDICT_WORDS[merged_into.verdict]
        if words:
            label.append("  ")
            label.append(words, style)
    lines: list[RenderableType] = [label]
    if explain is not None:
        sentences = []
        if merged_into is not None and merged_into.explain:
            sentences.append(merged_into.explain)
        if hop.explain and hop.name not in explain:
            sentences.append(hop.explain)
            explain.add(hop.name)
        if sentences:
            lines.append(Text(" ".join(sentences), "hop.explain"))
    for note in hop.notes + (merged_into.notes if merged_into is not None else ()):
        lines.append(Text(f"! {note}", "note"))
    node = parent.add(Group(*lines) if len(lines) > 1 else label)
    for child in hop.children:
        _add_hop(node, child, graph, family_ip, explain, marks=marks)


def _cluster_ip_for(graph: PathGraph, frontend: Frontend) -> str:
    fam6 = ":" in frontend.ip
    for ip in graph.service.virtual_ips:
        if (":" in ip) == fam6:
            port = next((p.port for p in graph.service.ports if p.name == frontend.port_name
                         and p.protocol == frontend.protocol), frontend.port)
            host = f"[{ip}]" if fam6 else ip
            return f"{host}:{port}/{frontend.protocol}"
    return "ClusterIP"


def _mark(label: Text, marks: Mapping[str, str] | None, *names: str | None) -> None:
    """Flag a hop a finding points at: ``  ✗ code``."""
    if not marks:
        return
    for name in names:
        if name is not None and name in marks:
            label.append(f"  ✗ {marks[name]}", "verdict.reject")
            return


def _frontend_branch(tree: Tree, fe: Frontend, graph: PathGraph, explain: set[str] | None,
                     marks: Mapping[str, str] | None = None) -> None:
    family_ip = _cluster_ip_for(graph, fe)
    if len(fe.hops) == 1:
        _add_hop(tree, fe.hops[0], graph, family_ip, explain, merged_into=fe, marks=marks)
        return
    label = Text()
    label.append(fe.address, "hop.address")
    label.append("  ")
    label.append(fe.type, "hop.type")
    words, style = VERDICT_WORDS[fe.verdict]
    if words:
        label.append("  ")
        label.append(words, style)
    lines: list[RenderableType] = [label]
    if explain is not None and fe.explain:
        lines.append(Text(fe.explain, "hop.explain"))
    lines += [Text(f"! {n}", "note") for n in fe.notes]
    _mark(label, marks, fe.address)
    node = tree.add(Group(*lines) if len(lines) > 1 else label)
    for hop in fe.hops:
        _add_hop(node, hop, graph, family_ip, explain, marks=marks)


def _title(graph: PathGraph) -> Text:
    svc = graph.service
    text = Text()
    if graph.from_rules is not None:
        who = graph.from_rules.identity or "not named by the rules"
        text.append(f"Service {who}  (from this node's rules; no Kubernetes objects)", "svc.title")
    else:
        text.append(f"Service {svc.ref}", "svc.title")
    text.append("  ")
    text.append(svc.type + ("  headless" if svc.is_headless else ""), "svc.kind")
    text.append("  ")
    text.append(graph.mode if graph.mode != "none" else "no dataplane", "svc.mode")
    if graph.node:
        text.append("  ")
        text.append(f"node {graph.node}", "svc.node")
    return text


def _dns_branch(tree: Tree, graph: PathGraph, explain: bool) -> None:
    dns = graph.dns
    label = Text()
    label.append("DNS  ", "dns")
    label.append(dns.names[0], "hop.address")
    lines: list[RenderableType] = [label]
    if explain and dns.explain:
        lines.append(Text(dns.explain + f" (cluster domain from {dns.domain_source})", "hop.explain"))
    lines += [Text(f"! {n}", "note") for n in dns.notes]
    node = tree.add(Group(*lines) if len(lines) > 1 else label)
    for rec in dns.records:
        rec_text = Text()
        rec_text.append(f"{rec.type:<5} ", "dns")
        if rec.name != dns.names[0]:
            rec_text.append(rec.name + " -> ")
        rec_text.append(", ".join(rec.answers) if rec.answers else "(no answer)")
        node.add(rec_text)


def _unprogrammed_branch(tree: Tree, graph: PathGraph) -> None:
    left_out = [e for e in graph.endpoints if e.in_api and not e.in_dataplane]
    if not left_out or graph.mode not in ("iptables", "ipvs", "nftables"):
        return
    node = tree.add(Text("Endpoints in the API without a rule on this node", "note"))
    for ep in left_out:
        text = Text()
        text.append(ep.address, "hop.address")
        text.append("  ")
        text.append_text(_endpoint_text(ep, graph.service.namespace))
        if ep.ready is False or ep.terminating:
            text.append("  (kube-proxy leaves out endpoints that are not ready)", "rule")
        else:
            text.append("  (ready, yet not programmed: kube-proxy on this node is behind the API)", "note")
        node.add(text)


def render_graph(graph: PathGraph, *, explain: bool = False, marks: Mapping[str, str] | None = None) \
        -> RenderableType:
    """The whole answer for one Service: the tree, then warnings and what was not available.

    ``marks`` flags broken hops: hop name (chain, address, or a frontend's ``ip:port/PROTO``) -> finding code.
    """
    tree = Tree(Group(_title(graph), Text(graph.explain, "hop.explain")) if explain else _title(graph))
    _dns_branch(tree, graph, explain)
    explained: set[str] | None = set() if explain else None
    for fe in graph.frontends:
        _frontend_branch(tree, fe, graph, explained, marks)
    if not graph.frontends and not (graph.service.is_external_name or graph.service.is_headless):
        tree.add(Text("no ports: nothing to route", "note"))
    _unprogrammed_branch(tree, graph)
    if graph.stale_chains:
        stale = tree.add(Text("Stale chains that name this Service but no current port reaches", "note"))
        for sc in graph.stale_chains:
            stale.add(Text(f"{sc.table} {sc.chain}  ({sc.rule_count} rules)  {sc.comment or ''}".rstrip(), "rule"))
    parts: list[RenderableType] = [tree]
    parts += [Text(f"warning: {w}", "note") for w in graph.warnings]
    parts += [Text(f"not available: {m}", "note") for m in graph.missing]
    return Group(*parts)
