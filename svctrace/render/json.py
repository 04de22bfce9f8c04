"""The path graph as JSON-ready dicts: the stable schema documented in docs/json-schema.md."""

from __future__ import annotations

from typing import Any

from svctrace.model.graph import EndpointInfo, Frontend, Hop, PathGraph, RuleRef
from svctrace.model.k8s import Service

SCHEMA_VERSION = 1


def _rule(r: RuleRef) -> dict[str, Any]:
    return {"table": r.table, "chain": r.chain, "index": r.index, "rule": r.text}


def fields(obj: object, *names: str) -> dict[str, Any]:
    """``{"inApi": obj.in_api, ...}``: attributes under their camelCase JSON names, in the order given."""
    return {_camel(n): getattr(obj, n) for n in names}


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(w.capitalize() for w in rest)


def endpoint_to_dict(ep: EndpointInfo, *, api: bool = True) -> dict[str, Any]:
    """An endpoint; without ``api`` (a Service known from the rules alone) whether the API lists it is null."""
    return {**fields(ep, "ip", "port", "protocol", "pod", "node", "zone", "local"),
            "conditions": fields(ep, "ready", "serving", "terminating"),
            **fields(ep, "in_api", "in_dataplane"), **({} if api else {"inApi": None})}


def hop_to_dict(hop: Hop, *, api: bool = True) -> dict[str, Any]:
    return {**fields(hop, "kind", "name", "table", "when"),
            "share": None if hop.share is None else round(hop.share, 6),
            **fields(hop, "probability", "masquerade", "affinity", "verdict"),
            "endpoint": endpoint_to_dict(hop.endpoint, api=api) if hop.endpoint is not None else None,
            "rules": [_rule(r) for r in hop.rules],
            "explain": hop.explain,
            "notes": list(hop.notes),
            "hops": [hop_to_dict(c, api=api) for c in hop.children]}


def frontend_to_dict(fe: Frontend, *, api: bool = True) -> dict[str, Any]:
    return {**fields(fe, "type", "ip", "port", "protocol", "port_name", "verdict", "explain"),
            "notes": list(fe.notes),
            "hops": [hop_to_dict(h, api=api) for h in fe.hops]}


def service_to_dict(svc: Service) -> dict[str, Any]:
    return {
        **fields(svc, "namespace", "name", "type"),
        "headless": svc.is_headless,
        "clusterIPs": list(svc.virtual_ips),
        "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol,
                   "targetPort": p.effective_target_port, "nodePort": p.node_port} for p in svc.ports],
        "selector": dict(svc.selector) if svc.selector is not None else None,
        "externalIPs": list(svc.external_ips),
        "loadBalancerIPs": [i.ip or i.hostname for i in svc.load_balancer_ingress],
        "loadBalancerSourceRanges": list(svc.load_balancer_source_ranges),
        **fields(svc, "external_traffic_policy", "internal_traffic_policy", "session_affinity"),
        "sessionAffinityTimeoutSeconds": svc.affinity_seconds,
        "externalName": svc.external_name,
    }


def graph_to_dict(graph: PathGraph) -> dict[str, Any]:
    """The documented JSON shape of one Service's path graph."""
    return {
        "schemaVersion": SCHEMA_VERSION,
        "kind": "ServicePath",
        "service": service_to_dict(graph.service),
        **fields(graph, "mode", "node", "explain"),
        "dns": {
            **fields(graph.dns, "cluster_domain", "domain_source"),
            "names": list(graph.dns.names),
            "records": [{"name": r.name, "type": r.type, "answers": list(r.answers)} for r in graph.dns.records],
            "explain": graph.dns.explain,
            "notes": list(graph.dns.notes),
        },
        "frontends": [frontend_to_dict(f, api=graph.from_rules is None) for f in graph.frontends],
        "endpoints": [endpoint_to_dict(e, api=graph.from_rules is None) for e in graph.endpoints],
        "staleChains": [{"table": s.table, "chain": s.chain, "comment": s.comment, "rules": s.rule_count}
                        for s in graph.stale_chains],
        "warnings": list(graph.warnings),
        "missing": list(graph.missing),
        # only for a Service known from the node's rules alone
        **({"fromRules": {"identity": graph.from_rules.identity, "how": graph.from_rules.how,
                          "notes": list(graph.from_rules.notes)}} if graph.from_rules is not None else {}),
    }
