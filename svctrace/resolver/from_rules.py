"""Services known from a node's rules alone: what a node-only snapshot (or a pasted dump) can answer about.

Each proxy mode lists the Service ports its rules show (``ModeResolver.services_in_rules``: addresses, ports,
the key of their chains, and a name where comments or chain names give one); this module, the same for every
mode, groups them into a ``Service`` the resolver can follow, by address (``svctrace svc 10.96.0.10``) or by
name. Such a Service has no selector, no endpoints in any API and no DNS answer: only what the rules say.
"""

from __future__ import annotations

from svctrace.model.graph import RulesIdentity
from svctrace.model.k8s import LoadBalancerIngress, Service, ServicePort
from svctrace.model.snapshot import Snapshot
from svctrace.resolver.contract import RuleService, for_mode


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _service(group: list[RuleService], fallback: str) -> tuple[Service, RulesIdentity]:
    named = next((r for r in group if r.name), None)
    ports: dict[tuple[int, str, str, str | None], ServicePort] = {}
    for r in group:
        port = r.port if r.port is not None else (r.node_port or 0)
        ports.setdefault((port, r.protocol, r.port_name, r.key), ServicePort(
            port=port, protocol=r.protocol, name=r.port_name, node_port=r.node_port,  # type: ignore[arg-type]
            chains=r.key))
    cluster = _unique([ip for r in group for ip in r.cluster_ips])
    lbs = _unique([ip for r in group for ip in r.load_balancer_ips])
    node_port = any(r.node_port for r in group)
    svc = Service(
        namespace=named.namespace if named else "", name=named.name if named else fallback,
        type="LoadBalancer" if lbs else "NodePort" if node_port else "ClusterIP",
        cluster_ips=cluster, ports=tuple(ports.values()), selector=None,
        external_ips=_unique([ip for r in group for ip in r.external_ips]),
        load_balancer_ingress=tuple(LoadBalancerIngress(ip=ip) for ip in lbs),
        external_traffic_policy="Local" if any(r.local_policy for r in group) else "Cluster")
    identities = _unique([r.identity for r in group if r.identity])
    notes = [n for r in group for n in r.notes]
    if len({(r.namespace, r.name) for r in group if r.name}) > 1:
        notes.append("the rules name more than one Service at this address: " + ", ".join(identities))
    missing_entry = [r for r in group if not r.entry]
    if missing_entry:
        notes.append("no dispatch rule (KUBE-SERVICES) for it is in the dump: its address comes from its own "
                     "chain's rules")
    how = "; ".join(_unique([r.how for r in group]))
    return svc, RulesIdentity(identity=identities[0] if identities else None, how=how, notes=tuple(notes))


def services_in_rules(snapshot: Snapshot) -> tuple[RuleService, ...]:
    resolver = for_mode(snapshot.mode)
    return resolver.services_in_rules(snapshot) if resolver is not None else ()


def service_at(snapshot: Snapshot, ip: str) -> tuple[Service, RulesIdentity] | None:
    """The Service whose ClusterIP, externalIP or load balancer IP is ``ip``, as the node's rules show it."""
    group = [r for r in services_in_rules(snapshot) if ip in r.addresses]
    if not group:
        return None
    named = next((r for r in group if r.name), None)
    if named is not None:  # its other frontends (a NodePort, other addresses) are the same Service's
        group += [r for r in services_in_rules(snapshot) if r not in group
                  and (r.namespace, r.name) == (named.namespace, named.name)]
    return _service(group, ip)


def service_named(snapshot: Snapshot, namespace: str, name: str) -> tuple[Service, RulesIdentity] | None:
    """The Service ``namespace/name`` as the node's rules show it (their comments or chain names)."""
    group = [r for r in services_in_rules(snapshot) if (r.namespace, r.name) == (namespace, name)]
    return _service(group, name) if group else None
