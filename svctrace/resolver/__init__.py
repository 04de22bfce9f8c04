"""Resolvers: Snapshot + query -> PathGraph, one module per proxy mode (pure).

Each mode implements resolver.contract.ModeResolver; this module does the mode-neutral rest once:
which ports and families, frontends whose dataplane was not collected, endpoints, DNS, explanations.
"""

from __future__ import annotations

import ipaddress

from svctrace.errors import NotFoundError
from svctrace.model import graph as g
from svctrace.model.graph import DnsInfo, EndpointInfo, Frontend, Hop, PathGraph, RulesIdentity, StaleChain
from svctrace.model.k8s import Service, ServicePort
from svctrace.model.snapshot import Missing, NodeFile, Snapshot
from svctrace.resolver.common import (
    api_endpoints,
    categorize,
    dns_info,
    family_of,
    find_service,
    select_ports,
)
from svctrace.resolver.contract import ModeResolver, for_mode

_DATAPLANE_FILES = frozenset({NodeFile.IPTABLES, NodeFile.IP6TABLES, NodeFile.IPVSADM, NodeFile.IPSET,
                              NodeFile.NFT})
_FAMILY_FILES = {NodeFile.IPTABLES: 4, NodeFile.IP6TABLES: 6}


def _relevant_missing(missing: tuple[Missing, ...], mode: ModeResolver | None,
                      families: tuple[int, ...]) -> tuple[str, ...]:
    """What was not collected that this answer would have used, in the user's words."""
    out = []
    for m in missing:
        if mode is not None and m.what in _DATAPLANE_FILES and m.what not in mode.files:
            continue
        family = _FAMILY_FILES.get(m.what)  # type: ignore[call-overload]
        if family is not None and family not in families:
            continue
        out.append(m.words)
    return tuple(out)


def _families(svc: Service, snapshot: Snapshot) -> tuple[int, ...]:
    fams = {family_of(ip) for ip in svc.virtual_ips}
    if not fams:
        fams = {6 if f == "IPv6" else 4 for f in svc.ip_families} or {4}
    return tuple(sorted(fams))


def _describe(svc: Service, n_endpoints: int) -> str:
    if svc.is_external_name:
        return (f"ExternalName Service: only a DNS alias for {svc.external_name}; kube-proxy writes no rules "
                "for it and traffic goes wherever that name resolves.")
    if svc.is_headless:
        return ("Headless Service (clusterIP None): no virtual IP and no kube-proxy rules; DNS hands out the "
                "pods' own addresses.")
    selector = ("selects pods by " + ",".join(f"{k}={v}" for k, v in sorted(svc.selector.items()))
                if svc.selector else
                "has no selector: its endpoints are maintained by hand (Endpoints/EndpointSlice objects)")
    kinds = {"ClusterIP": "reachable inside the cluster at its ClusterIP",
             "NodePort": "reachable at its ClusterIP and on every node's NodePort",
             "LoadBalancer": "reachable at its ClusterIP, NodePorts and the load balancer's address"}
    return (f"{svc.type} Service, {kinds.get(svc.type, 'of type ' + svc.type)}; it {selector}; "
            f"{n_endpoints} endpoint{'s' if n_endpoints != 1 else ''} listed in the API.")


def _expected_hops(endpoints: tuple[EndpointInfo, ...], why: str) -> tuple[Hop, ...]:
    """Endpoint hops for a frontend whose dataplane is unknown: what kube-proxy should program."""
    chosen = categorize(endpoints).cluster
    n = len(chosen)
    return tuple(Hop(kind="endpoint", name=e.address, share=1 / n, endpoint=e,
                     explain=f"kube-proxy should send {1 / n:.0%} of new connections here; {why}")
                 for e in chosen)


def _unknown_frontends(svc: Service, sp: ServicePort, endpoints: tuple[EndpointInfo, ...],
                       why: str, *, note: bool = True) -> list[Frontend]:
    """The frontends of a port whose dataplane is unknown, with the endpoints kube-proxy should program;
    ``why`` noted on each frontend (``note``), or said once by the caller when it holds for them all."""
    hops = _expected_hops(endpoints, why)
    notes = (why,) if note else ()
    addressed = [("ClusterIP", ip) for ip in svc.virtual_ips] + [("ExternalIP", ip) for ip in svc.external_ips]
    addressed += [("LoadBalancer", i.ip) for i in svc.load_balancer_ingress if i.ip]
    out = [Frontend(kind, ip, sp.port, sp.protocol, sp.name, g.UNKNOWN, hops=hops, notes=notes)
           for kind, ip in addressed]
    if sp.node_port:
        out.append(Frontend("NodePort", "*", sp.node_port, sp.protocol, sp.name, g.UNKNOWN, hops=hops,
                            notes=notes))
    return out


def resolve(snapshot: Snapshot, namespace: str, name: str, port: str | None = None) -> PathGraph:
    """Follow every frontend of a Service through this node's dataplane (a node-only snapshot: the Service as
    the node's rules name it)."""
    if not snapshot.api_collected:
        from svctrace.resolver.from_rules import service_named

        found = service_named(snapshot, namespace, name)
        if found is not None:
            return resolve_service(snapshot, found[0], port, from_rules=found[1])
    return resolve_service(snapshot, find_service(snapshot, namespace, name), port)


def service_with_address(snapshot: Snapshot, ip: str) -> Service | None:
    """The API's Service whose ClusterIP, externalIP or load balancer IP is ``ip``."""
    for svc in snapshot.services:
        if ip in svc.virtual_ips or ip in svc.external_ips or any(i.ip == ip for i in svc.load_balancer_ingress):
            return svc
    return None


def resolve_address(snapshot: Snapshot, ip: str, port: str | None = None) -> PathGraph:
    """The Service at an address (ClusterIP, externalIP, load balancer IP): from the API, else from the node's
    rules alone (their comments and chain hashes name it where they can)."""
    text = str(ipaddress.ip_address(ip))
    svc = service_with_address(snapshot, text)
    if svc is not None:
        return resolve_service(snapshot, svc, port)
    from svctrace.resolver.from_rules import service_at

    found = service_at(snapshot, text)
    if found is not None:
        return resolve_service(snapshot, found[0], port, from_rules=found[1])
    where = snapshot.source or "the snapshot"
    if snapshot.api_collected:
        raise NotFoundError(f"no Service in {where} has the address {text}, and no rule of this node translates it",
                            "give the Service's ClusterIP, externalIP or load balancer IP, or its name")
    raise NotFoundError(f"no rule in {where} names the address {text} (and it holds no Kubernetes objects)",
                        "check the address; a pasted dump may be cut before the rules that name it")


def _rules_dns(svc: Service) -> DnsInfo:
    name = f"{svc.name}.{svc.namespace}.svc" if svc.namespace else "not known (the rules do not name the Service)"
    return DnsInfo("unknown", "not collected", (name,), (),
                   "DNS is not in a node's rules: the Kubernetes objects were not collected.", ())


def resolve_service(snapshot: Snapshot, svc: Service, port: str | None = None, *,
                    from_rules: RulesIdentity | None = None) -> PathGraph:
    """Follow every frontend of one Service through this node's dataplane."""
    ports = select_ports(svc, port)
    mode = snapshot.mode
    resolver = for_mode(mode)
    warnings = list(snapshot.warnings)
    missing = _relevant_missing(snapshot.missing, resolver, _families(svc, snapshot))
    dns = dns_info(snapshot, svc) if from_rules is None else _rules_dns(svc)
    frontends: list[Frontend] = []
    endpoints: dict[tuple[str, int | None, str], EndpointInfo] = {}
    stale: list[StaleChain] = []
    if snapshot.node.name is None:
        warnings.append("this node's name is unknown, so local endpoints cannot be told apart "
                        "(pass --node NAME, or set nodeName in the snapshot's node/meta.json)")

    def keep(eps: tuple[EndpointInfo, ...]) -> None:
        for e in eps:
            endpoints[(e.ip, e.port, e.protocol)] = e

    for sp in ports:
        keep(api_endpoints(snapshot, svc, sp))
    if svc.is_external_name or svc.is_headless:
        pass
    elif resolver is not None:
        reached: set[str] = set()
        for family in _families(svc, snapshot):
            gap = resolver.gap(snapshot, family)
            for sp in ports:
                if gap is not None:
                    frontends += _unknown_frontends(
                        svc, sp, tuple(e for e in api_endpoints(snapshot, svc, sp) if family_of(e.ip) == family), gap)
                    continue
                fronts, eps, seen = resolver.resolve_port(snapshot, svc, sp, family)
                frontends += fronts
                keep(eps)
                reached |= seen
        if port is None and from_rules is None:  # a filtered answer does not reach the other ports' chains
            stale += resolver.stale_chains(snapshot, svc, reached)
    else:
        why = "the node's dataplane was not collected"
        if any(x is not None for x in (snapshot.iptables, snapshot.ip6tables, snapshot.ipvs, snapshot.nft)):
            why = "kube-proxy's mode on this node could not be decided from its dataplane"
            if snapshot.node.proxy_mode_how:
                why += f" ({snapshot.node.proxy_mode_how})"
        if ports and not (svc.is_external_name or svc.is_headless):
            warnings.append(f"{why}: the paths shown are what the API asks kube-proxy to program, not what "
                            "this node does")
        for sp in ports:
            frontends += _unknown_frontends(svc, sp, api_endpoints(snapshot, svc, sp), why, note=False)
    n_api = len({(e.ip, e.port) for e in endpoints.values() if e.in_api})
    explain = _describe(svc, n_api)
    if from_rules is not None:
        explain = (f"Known from this node's rules alone (no Kubernetes objects): {from_rules.how}. Its "
                   "selector, pods and DNS names are not in the rules.")
        warnings += from_rules.notes
    return PathGraph(
        service=svc, mode=mode.value if mode is not None else "none", node=snapshot.node.name, dns=dns,
        frontends=tuple(frontends), endpoints=tuple(endpoints.values()), stale_chains=tuple(stale),
        explain=explain, warnings=tuple(dict.fromkeys(warnings)), missing=missing, from_rules=from_rules,
    )


def all_stale_chains(snapshot: Snapshot) -> tuple[StaleChain, ...]:
    """Service chains on this node that no Service in the snapshot owns any more."""
    resolver = for_mode(snapshot.mode)
    return resolver.orphans(snapshot) if resolver is not None else ()
