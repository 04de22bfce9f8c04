"""Resolvers: Snapshot + query -> PathGraph, one module per proxy mode (pure).

Each mode implements resolver.contract.ModeResolver; this module does the mode-neutral rest once:
which ports and families, frontends whose dataplane was not collected, endpoints, DNS, explanations.
"""

from __future__ import annotations

from svctrace.model import graph as g
from svctrace.model.graph import EndpointInfo, Frontend, Hop, PathGraph, StaleChain
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
    """Follow every frontend of a Service through this node's dataplane."""
    svc = find_service(snapshot, namespace, name)
    ports = select_ports(svc, port)
    mode = snapshot.mode
    resolver = for_mode(mode)
    warnings = list(snapshot.warnings)
    missing = _relevant_missing(snapshot.missing, resolver, _families(svc, snapshot))
    dns = dns_info(snapshot, svc)
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
        if port is None:  # a filtered answer does not reach the other ports' chains: they are not stale
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
    return PathGraph(
        service=svc, mode=mode.value if mode is not None else "none", node=snapshot.node.name, dns=dns,
        frontends=tuple(frontends), endpoints=tuple(endpoints.values()), stale_chains=tuple(stale),
        explain=_describe(svc, n_api), warnings=tuple(dict.fromkeys(warnings)), missing=missing,
    )


def all_stale_chains(snapshot: Snapshot) -> tuple[StaleChain, ...]:
    """Service chains on this node that no Service in the snapshot owns any more."""
    resolver = for_mode(snapshot.mode)
    return resolver.orphans(snapshot) if resolver is not None else ()
