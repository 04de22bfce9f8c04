"""Checks of policies: NetworkPolicy ingress rules, and external/internal traffic policy Local on this node."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping

from svctrace.diagnosis.checks.common import (
    labels_text,
    more,
    pod_of,
    ports_in_scope,
    selected_pods,
)
from svctrace.diagnosis.findings import ERROR, INFO, WARNING, Finding
from svctrace.diagnosis.registry import CheckContext, Client, check
from svctrace.model.graph import DROPPED, PARTIAL, EndpointInfo, Hop
from svctrace.model.k8s import NetworkPolicy, Pod, Service, ServicePort
from svctrace.model.snapshot import Snapshot
from svctrace.record import record
from svctrace.resolver.common import api_endpoints, categorize
from svctrace.words import count


def _drop_hops(ctx: CheckContext, frontend_types: tuple[str, ...]) -> tuple[str, ...]:
    """Names of the DROP/REJECT hops the graph shows under partial or dropped frontends of these types."""
    names: list[str] = []

    def walk(hop: Hop) -> None:
        if hop.kind == "verdict" and hop.name not in names:
            names.append(hop.name)
        for child in hop.children:
            walk(child)

    for fe in ctx.graph.frontends if ctx.graph is not None else ():
        if fe.type in frontend_types and fe.verdict in (PARTIAL, DROPPED):
            for hop in fe.hops:
                walk(hop)
    return tuple(names)


@record
class _Elsewhere:
    """A Service's ready endpoints when none of them runs on this node."""

    endpoints: tuple[EndpointInfo, ...]
    node: str  # this node

    @property
    def nodes(self) -> list[str]:
        return sorted({e.node or "?" for e in self.endpoints})

    def evidence(self, svc: Service, policy: str) -> list[str]:
        """The policy field, and where the endpoints run instead."""
        return [f"svc {svc.ref} spec.{policy}: Local",
                f"{count(len(self.endpoints), 'ready endpoint')}, on {', '.join(self.nodes)}; none on this node "
                f"{self.node}"]


def _nowhere_local(ctx: CheckContext) -> _Elsewhere | None:
    """The ready endpoints (all on other nodes) when none runs on this node; None when some does or unknown."""
    svc, snap = ctx.service, ctx.snapshot
    node = snap.node.name
    if svc is None or node is None or svc.is_headless or svc.is_external_name:
        return None
    eps = tuple(e for sp in ports_in_scope(ctx) for e in api_endpoints(snap, svc, sp))
    choice = categorize(eps)
    if not choice.has_any or choice.local or any(e.local is None for e in choice.cluster):
        return None
    return _Elsewhere(tuple(choice.cluster), node)


@check("external-traffic-policy-local-no-local-endpoints")
def etp_local_no_local_endpoints(ctx: CheckContext) -> Iterator[Finding]:
    """externalTrafficPolicy Local and no ready endpoint on this node: external clients arriving here are dropped."""
    svc = ctx.service
    if svc is None or svc.external_traffic_policy != "Local":
        return
    if svc.type not in ("NodePort", "LoadBalancer") and not svc.external_ips:
        return
    found = _nowhere_local(ctx)
    if found is None:
        return
    node, nodes = found.node, found.nodes
    evidence = found.evidence(svc, "externalTrafficPolicy")
    hops = _drop_hops(ctx, ("NodePort", "LoadBalancer", "ExternalIP"))
    if hops:
        evidence.append(f"this node's rules drop external clients of the NodePort/LoadBalancer/externalIP "
                        f"frontends ({', '.join(hops)})")
    aimed_here = ctx.target.frontend in ("NodePort", "ExternalIP") or ctx.client.origin == "external"
    if aimed_here:
        severity = ERROR
    elif svc.type == "LoadBalancer" and svc.health_check_node_port is not None:
        # By design: the LB's health check on this node fails, so the LB sends nothing here.
        severity = INFO
        evidence.append(f"the load balancer's health check (healthCheckNodePort {svc.health_check_node_port}) "
                        "fails on this node, so the load balancer should send it no traffic")
    else:
        severity = WARNING
    yield Finding("external-traffic-policy-local-no-local-endpoints", severity,
                  f"Service {svc.ref} has externalTrafficPolicy Local and no ready endpoint on {node}: "
                  "external clients arriving at this node are dropped",
                  tuple(evidence),
                  f"send external clients to a node that runs an endpoint ({', '.join(nodes)}), or set "
                  f"externalTrafficPolicy: Cluster: `kubectl patch svc {svc.name} -n {svc.namespace} "
                  "-p '{\"spec\":{\"externalTrafficPolicy\":\"Cluster\"}}'`",
                  hops)


@check("internal-traffic-policy-local-no-local-endpoints")
def itp_local_no_local_endpoints(ctx: CheckContext) -> Iterator[Finding]:
    """internalTrafficPolicy Local and no ready endpoint on this node: pods here cannot reach the ClusterIP."""
    svc = ctx.service
    if svc is None or svc.internal_traffic_policy != "Local":
        return
    found = _nowhere_local(ctx)
    if found is None:
        return
    node = found.node
    client = ctx.client
    here = client.origin == "node" or (client.pod is not None and client.pod.node_name == node)
    evidence = found.evidence(svc, "internalTrafficPolicy")
    if client.pod is not None:
        evidence.append(f"client pod {client.pod.ref} runs on {client.pod.node_name or 'an unknown node'}")
    hops = _drop_hops(ctx, ("ClusterIP",))
    if hops:
        evidence.append(f"this node's rules drop connections to the ClusterIP ({', '.join(hops)})")
    yield Finding("internal-traffic-policy-local-no-local-endpoints", ERROR if here else WARNING,
                  f"Service {svc.ref} has internalTrafficPolicy Local and no ready endpoint on {node}: "
                  "pods on this node cannot reach it",
                  tuple(evidence),
                  f"run an endpoint on {node} (e.g. a DaemonSet), or set internalTrafficPolicy: Cluster: "
                  f"`kubectl patch svc {svc.name} -n {svc.namespace} -p "
                  "'{\"spec\":{\"internalTrafficPolicy\":\"Cluster\"}}'`",
                  hops)


# -- NetworkPolicy ------------------------------------------------------------------------------------------

_NS_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server since 1.21


def _as_map(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _label_selector(sel: Mapping[str, object], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector against labels: matchLabels and matchExpressions, ANDed; {} selects all."""
    for k, v in _as_map(sel.get("matchLabels")).items():
        if labels.get(k) != v:
            return False
    for raw in _as_list(sel.get("matchExpressions")):
        expr = _as_map(raw)
        key, op = str(expr.get("key", "")), expr.get("operator")
        values = [str(v) for v in _as_list(expr.get("values"))]
        present = key in labels
        ok = {"In": present and labels.get(key) in values, "NotIn": not present or labels.get(key) not in values,
              "Exists": present, "DoesNotExist": not present}.get(str(op), False)
        if not ok:
            return False
    return True


def _namespace_selector(sel: Mapping[str, object], namespace: str) -> bool | None:
    """Whether a namespaceSelector selects a namespace; None when it needs labels a snapshot lacks."""
    keys = set(_as_map(sel.get("matchLabels")))
    keys |= {str(_as_map(e).get("key", "")) for e in _as_list(sel.get("matchExpressions"))}
    if keys - {_NS_NAME_LABEL}:
        return None
    return _label_selector(sel, {_NS_NAME_LABEL: namespace})


def _in_block(block: Mapping[str, object], ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
        if addr not in ipaddress.ip_network(str(block.get("cidr", "")), strict=False):
            return False
        return not any(addr in ipaddress.ip_network(str(x), strict=False) for x in _as_list(block.get("except")))
    except ValueError:
        return False


def _peer_admits(peer: Mapping[str, object], policy: NetworkPolicy, client: Client) -> bool | None:
    """True / False / None (cannot tell) for one ``from`` entry and this client."""
    if "ipBlock" in peer:
        return _in_block(_as_map(peer["ipBlock"]), client.src) if client.src else None
    if client.pod is None:
        # Pod and namespace selectors select pods only; the node or an outside address is not one.
        return False if client.origin in ("node", "external") or client.src else None
    pod = client.pod
    if "namespaceSelector" in peer:
        ns_ok = _namespace_selector(_as_map(peer["namespaceSelector"]), pod.namespace)
    else:
        ns_ok = pod.namespace == policy.namespace
    pod_ok = _label_selector(_as_map(peer["podSelector"]), pod.labels) if "podSelector" in peer else True
    if ns_ok is False or not pod_ok:
        return False
    return ns_ok


def _ports_admit(ports: list[object], protocol: str, number: int | None, pod: Pod) -> bool:
    if not ports:
        return True
    for raw in ports:
        p = _as_map(raw)
        if str(p.get("protocol") or "TCP") != protocol:
            continue
        want, end = p.get("port"), p.get("endPort")
        if want is None:
            return True
        if isinstance(want, int) and number is not None and want <= number <= (end if isinstance(end, int) else want):
            return True
        if isinstance(want, str) and any(c.name == want and c.container_port == number and c.protocol == protocol
                                         for c in pod.container_ports):
            return True
    return False


def _any3(values: list[bool | None]) -> bool | None:
    if any(v is True for v in values):
        return True
    if any(v is None for v in values):
        return None
    return False


def _describe_peer(peer: Mapping[str, object], policy: NetworkPolicy) -> str:
    if "ipBlock" in peer:
        block = _as_map(peer["ipBlock"])
        exc = [str(x) for x in _as_list(block.get("except"))]
        return f"ipBlock {block.get('cidr')}" + (f" except {', '.join(exc)}" if exc else "")
    pods = _as_map(peer.get("podSelector"))
    pod_text = "all pods" if not pods else f"pods {_describe_selector(pods)}"
    if "namespaceSelector" in peer:
        ns = _as_map(peer["namespaceSelector"])
        return f"{pod_text} in {'every namespace' if not ns else 'namespaces ' + _describe_selector(ns)}"
    return f"{pod_text} in {policy.namespace}"


def _describe_selector(sel: Mapping[str, object]) -> str:
    parts = [f"{k}={v}" for k, v in _as_map(sel.get("matchLabels")).items()]
    for raw in _as_list(sel.get("matchExpressions")):
        e = _as_map(raw)
        parts.append(f"{e.get('key')} {e.get('operator')} {','.join(str(v) for v in _as_list(e.get('values')))}")
    return ",".join(parts) or "{}"


def _describe_rule(rule: Mapping[str, object], policy: NetworkPolicy) -> str:
    peers = [_as_map(p) for p in _as_list(rule.get("from"))]
    who = "; ".join(_describe_peer(p, policy) for p in peers) if peers else "everyone"
    ports = [_as_map(p) for p in _as_list(rule.get("ports"))]
    where = ", ".join(f"{p.get('protocol') or 'TCP'}/{p.get('port', 'any')}"
                      + (f"-{p['endPort']}" if "endPort" in p else "") for p in ports) if ports else "any port"
    return f"{who} on {where}"


_Bucket = tuple[str, str | None, object]  # (namespace, a matchLabels key, its value); (namespace, None, None): any pod


def _ingress_policies(snap: Snapshot) -> dict[_Bucket, list[tuple[int, NetworkPolicy]]]:
    """The Ingress policies (policyTypes empty means Ingress) with their place in the snapshot, by namespace and one
    matchLabels pair of their podSelector: a pod without that pair is not theirs. Those without matchLabels may
    select any pod of their namespace."""
    out: dict[_Bucket, list[tuple[int, NetworkPolicy]]] = {}
    for i, np in enumerate(snap.network_policies):
        if "Ingress" in np.policy_types or not np.policy_types:
            pair = next(iter(_as_map(np.pod_selector.get("matchLabels")).items()), None)
            plain = pair is not None and isinstance(pair[0], str) and isinstance(pair[1], str)  # (else: any pod)
            bucket: _Bucket = (np.namespace, *pair) if plain else (np.namespace, None, None)  # type: ignore[misc]
            out.setdefault(bucket, []).append((i, np))
    return out


def _isolating(snap: Snapshot, pod: Pod) -> list[NetworkPolicy]:
    """The policies that select this pod for Ingress, in the snapshot's order: only those of its namespace that
    could, so that each endpoint pod costs its candidates, not every policy of the cluster."""
    index = snap.memoized("ingress-policies", lambda: _ingress_policies(snap))
    candidates = list(index.get((pod.namespace, None, None), ()))
    for pair in pod.labels.items():
        candidates += index.get((pod.namespace, *pair), ())
    return [np for _, np in sorted(candidates, key=lambda c: c[0]) if _label_selector(np.pod_selector, pod.labels)]


def _client_text(client: Client) -> str:
    if client.pod is not None:
        return f"pod {client.pod.ref} ({labels_text(dict(client.pod.labels))}{', ' + client.src if client.src else ''})"
    return f"{client.origin or 'client'} {client.src}" if client.src else (client.origin or "the client")


def _namespace_labels_hint(client: Client, policies: list[NetworkPolicy]) -> str:
    """Which namespace's labels to compare with which namespaceSelectors (svctrace reads no Namespace objects)."""
    selectors: list[str] = []
    for np in policies:
        for raw in _as_list(np.spec.get("ingress")):
            for peer in (_as_map(p) for p in _as_list(_as_map(raw).get("from"))):
                sel = _as_map(peer.get("namespaceSelector"))
                shown = f"{_describe_selector(sel)} ({np.name})"
                if "namespaceSelector" in peer and _namespace_selector(sel, "") is None and shown not in selectors:
                    selectors.append(shown)
    ns = f"namespace {client.pod.namespace}" if client.pod is not None else "the client's namespace"
    return (f"compare the labels of {ns} with the namespaceSelector {'; '.join(more(selectors))}: svctrace reads "
            "no Namespace objects")


@check("network-policy-denies")
def network_policy_denies(ctx: CheckContext) -> Iterator[Finding]:
    """A NetworkPolicy isolates the endpoint pods for Ingress and no rule admits this client (or anyone)."""
    svc, snap, client = ctx.service, ctx.snapshot, ctx.client
    if svc is None or svc.is_external_name or not snap.network_policies:
        return
    # (pod, endpoint port, protocol) for the usable endpoints that are pods
    targets: list[tuple[Pod, int | None, str]] = []
    seen: set[tuple[str, str]] = set()  # each pod once (its first port)
    for sp in ports_in_scope(ctx) or (ServicePort(port=0),):
        for e in categorize(api_endpoints(snap, svc, sp)).cluster:
            pod = pod_of(snap, e.pod)
            if pod is not None and not pod.host_network and (pod.namespace, pod.name) not in seen:
                seen.add((pod.namespace, pod.name))
                targets.append((pod, e.port, sp.protocol))
    if not targets and svc.is_headless:
        targets = [(p, None, "TCP") for p in selected_pods(snap, svc) if p.ready]
    known_client = client.src is not None or client.pod is not None or client.origin is not None
    results: list[tuple[Pod, list[NetworkPolicy], bool | None, int | None, str]] = []
    for pod, number, proto in targets:
        policies = _isolating(snap, pod)
        if not policies:
            results.append((pod, [], True, number, proto))
            continue
        verdicts: list[bool | None] = []
        for np in policies:
            for raw in _as_list(np.spec.get("ingress")):
                rule = _as_map(raw)
                if not _ports_admit(_as_list(rule.get("ports")), proto, number, pod):
                    continue
                peers = [_as_map(p) for p in _as_list(rule.get("from"))]
                if not known_client:
                    verdicts.append(True if not peers else None)
                else:
                    verdicts.append(True if not peers else _any3([_peer_admits(p, np, client) for p in peers]))
        results.append((pod, policies, _any3(verdicts) if verdicts else False, number, proto))
    isolated = [r for r in results if r[1]]
    if not isolated:
        return
    pol_names = sorted({f"{np.namespace}/{np.name}" for r in isolated for np in r[1]})
    first = isolated[0][0]
    evidence = [f"NetworkPolicy {', '.join(pol_names)} selects {len(isolated)} of "
                f"{count(len(results), 'ready endpoint pod')} of {svc.ref} for Ingress "
                f"(e.g. pod {first.ref}: {labels_text(dict(first.labels))})"]
    admitted = []
    for np in {np.name: np for r in isolated for np in r[1]}.values():
        rules = [_as_map(r) for r in _as_list(np.spec.get("ingress"))]
        admitted += [f"{np.name} admits {_describe_rule(r, np)}" for r in rules] or [f"{np.name} admits nobody"]
    evidence += more(admitted)
    denied = [r for r in results if r[2] is False]
    unknown = [r for r in results if r[2] is None]
    port_text = f"{isolated[0][4]}/{isolated[0][3]}" if isolated[0][3] is not None else "its ports"
    hint = (f"add an ingress rule that admits the client on {port_text}: "
            f"`kubectl edit networkpolicy {isolated[0][1][0].name} -n {svc.namespace}`")
    if denied and len(denied) == len(results):
        who = _client_text(client) if known_client else "any client"
        yield Finding("network-policy-denies", ERROR,
                      f"NetworkPolicy {', '.join(pol_names)} blocks {who} from Service {svc.ref}'s pods "
                      f"on {port_text}",
                      (*evidence, f"no ingress rule admits {who} on {port_text}"), hint)
    elif denied:
        who = _client_text(client) if known_client else "any client"
        yield Finding("network-policy-denies", WARNING,
                      f"NetworkPolicy blocks {who} from {len(denied)} of {count(len(results), 'endpoint')} of "
                      f"{svc.ref}: "
                      "some connections fail",
                      (*evidence, *more([f"denied at pod {r[0].ref}" for r in denied])), hint)
    elif unknown and known_client:
        yield Finding("network-policy-denies", WARNING,
                      f"cannot tell whether NetworkPolicy {', '.join(pol_names)} admits {_client_text(client)} "
                      f"to Service {svc.ref}",
                      (*evidence, "namespace labels are not in a snapshot, so a namespaceSelector other than {} "
                                  "(or kubernetes.io/metadata.name) cannot be evaluated"),
                      _namespace_labels_hint(client, [np for r in isolated for np in r[1]]))
    elif not known_client:
        yield Finding("network-policy-denies", INFO,
                      f"NetworkPolicy {', '.join(pol_names)} restricts who reaches Service {svc.ref}'s pods",
                      tuple(evidence),
                      "ask for a specific client with --from-pod NS/POD or --src IP")
