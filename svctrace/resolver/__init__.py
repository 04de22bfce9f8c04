"""Resolvers: Snapshot + query -> PathGraph, one module per proxy mode (pure)."""

from __future__ import annotations

from collections.abc import Callable

from svctrace.kubeproxy import naming
from svctrace.model import graph as g
from svctrace.model.graph import EndpointInfo, Frontend, Hop, PathGraph, StaleChain
from svctrace.model.k8s import Service, ServicePort
from svctrace.model.snapshot import Snapshot
from svctrace.resolver import iptables, ipvs, nftables
from svctrace.resolver.common import (
    api_endpoints,
    categorize,
    dns_info,
    family_of,
    find_service,
    select_ports,
)

SUPPORTED_MODES = ("iptables", "ipvs", "nftables")

# node/ files that matter to each proxy mode; a missing file another mode reads is not worth a line.
_MODE_FILES = {
    "iptables": ("iptables-save.txt", "ip6tables-save.txt"),
    "ipvs": ("ipvsadm.txt", "ipset.txt", "iptables-save.txt", "ip6tables-save.txt"),
    "nftables": ("nft.json",),
}
_DATAPLANE_FILES = ("iptables-save.txt", "ip6tables-save.txt", "ipvsadm.txt", "ipset.txt", "nft.json")


def _relevant_missing(missing: tuple[str, ...], mode: str, families: tuple[int, ...]) -> tuple[str, ...]:
    """What was not collected that this answer would have used."""
    wanted = _MODE_FILES.get(mode)
    out = []
    for what in missing:
        if wanted is not None and any(f in what for f in _DATAPLANE_FILES) and not any(f in what for f in wanted):
            continue
        if 6 not in families and "ip6tables-save.txt" in what:
            continue
        if 4 not in families and "/iptables-save.txt" in what:
            continue
        out.append(what)
    return tuple(out)


def detect_mode(snapshot: Snapshot) -> str:
    """The proxy mode: as recorded in the snapshot, else read from the dataplane; "none" if unknown."""
    if snapshot.node.proxy_mode:
        return snapshot.node.proxy_mode
    if snapshot.nft is not None and any(snapshot.nft.kube_proxy(f) is not None for f in (4, 6)):
        return "nftables"
    if snapshot.ipvs is not None and snapshot.ipvs.services:
        return "ipvs"
    for dump in (snapshot.iptables, snapshot.ip6tables):
        if dump is None:
            continue
        nat = dump.table("nat")
        services = nat.chain("KUBE-SERVICES") if nat is not None else None
        if services is None:
            continue
        if any(r.option("--match-set", "set") is not None for r in services.rules):
            return "ipvs"
        if any((r.target or "").startswith(("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-"))
               for r in services.rules):
            return "iptables"
    return "none"


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
                     explain=f"kube-proxy should send {1 / n:.0%} of new connections here; {why}",
                     notes=(why,)) for e in chosen)


def _unknown_frontends(svc: Service, sp: ServicePort, endpoints: tuple[EndpointInfo, ...],
                       why: str) -> list[Frontend]:
    hops = _expected_hops(endpoints, why)
    out = [Frontend("ClusterIP", ip, sp.port, sp.protocol, sp.name, g.UNKNOWN, hops=hops, notes=(why,))
           for ip in svc.virtual_ips]
    out += [Frontend("ExternalIP", ip, sp.port, sp.protocol, sp.name, g.UNKNOWN, hops=hops, notes=(why,))
            for ip in svc.external_ips]
    out += [Frontend("LoadBalancer", i.ip, sp.port, sp.protocol, sp.name, g.UNKNOWN, hops=hops, notes=(why,))
            for i in svc.load_balancer_ingress if i.ip]
    if sp.node_port:
        out.append(Frontend("NodePort", "*", sp.node_port, sp.protocol, sp.name, g.UNKNOWN, hops=hops,
                            notes=(why,)))
    return out


class _NotCollected(Exception):
    """The part of the dataplane a mode needs for this family was not collected."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


PortResult = tuple[list[Frontend], tuple[EndpointInfo, ...], set[str]]


def _iptables_port(snapshot: Snapshot, svc: Service, sp: ServicePort, family: int) -> PortResult:
    dump = snapshot.dump(family)
    if dump is None:
        raise _NotCollected(f"ip{'6' if family == 6 else ''}tables rules were not collected")
    return iptables.resolve_port(snapshot, svc, sp, family, dump)


def _ipvs_port(snapshot: Snapshot, svc: Service, sp: ServicePort, family: int) -> PortResult:
    if snapshot.ipvs is None:
        raise _NotCollected("the IPVS table was not collected (node/ipvsadm.txt, or IPVS is not in this kernel)")
    return ipvs.resolve_port(snapshot, svc, sp, family, snapshot.ipvs, snapshot.ipsets, snapshot.dump(family))


def _nftables_port(snapshot: Snapshot, svc: Service, sp: ServicePort, family: int) -> PortResult:
    if snapshot.nft is None or snapshot.nft.kube_proxy(family) is None:
        table = "ip6 kube-proxy" if family == 6 else "ip kube-proxy"
        raise _NotCollected(f"the nftables table {table} was not collected (node/nft.json)")
    return nftables.resolve_port(snapshot, svc, sp, family, snapshot.nft)


# One entry per proxy mode: a new mode is a new module and a line here.
PORT_RESOLVERS: dict[str, Callable[[Snapshot, Service, ServicePort, int], PortResult]] = {
    "iptables": _iptables_port,
    "ipvs": _ipvs_port,
    "nftables": _nftables_port,
}


def resolve(snapshot: Snapshot, namespace: str, name: str, port: str | None = None) -> PathGraph:
    """Follow every frontend of a Service through this node's dataplane."""
    svc = find_service(snapshot, namespace, name)
    ports = select_ports(svc, port)
    mode = detect_mode(snapshot)
    warnings = list(snapshot.warnings)
    missing = _relevant_missing(snapshot.missing, mode, _families(svc, snapshot))
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
    port_resolver = PORT_RESOLVERS.get(mode)
    if svc.is_external_name or svc.is_headless:
        pass
    elif port_resolver is not None:
        reached: dict[int, set[str]] = {}
        for family in _families(svc, snapshot):
            for sp in ports:
                try:
                    fronts, eps, seen = port_resolver(snapshot, svc, sp, family)
                except _NotCollected as gap:
                    frontends += _unknown_frontends(
                        svc, sp, tuple(e for e in api_endpoints(snapshot, svc, sp) if family_of(e.ip) == family),
                        gap.why)
                    continue
                frontends += fronts
                keep(eps)
                reached.setdefault(family, set()).update(seen)
        if mode == "iptables":
            for family, seen_chains in reached.items():
                dump = snapshot.dump(family)
                if dump is not None:
                    stale += iptables.stale_chains(svc, dump, seen_chains)
        elif mode == "nftables" and snapshot.nft is not None:
            stale += nftables.stale_chains(svc, snapshot.nft, set().union(*reached.values()))
    else:
        if mode == "none":
            why = "the node's dataplane was not collected"
        else:
            why = f"this node runs kube-proxy in {mode} mode, which this version of svctrace does not read"
            warnings.append(why)
        for sp in ports:
            frontends += _unknown_frontends(svc, sp, api_endpoints(snapshot, svc, sp), why)
    n_api = len({(e.ip, e.port) for e in endpoints.values() if e.in_api})
    return PathGraph(
        service=svc, mode=mode, node=snapshot.node.name, dns=dns, frontends=tuple(frontends),
        endpoints=tuple(endpoints.values()), stale_chains=tuple(stale), explain=_describe(svc, n_api),
        warnings=tuple(dict.fromkeys(warnings)), missing=missing,
    )


def all_stale_chains(snapshot: Snapshot) -> tuple[StaleChain, ...]:
    """Service chains on this node that no Service in the snapshot owns any more."""
    current = {naming.ipt_suffix(naming.service_port_name(s.namespace, s.name, p.name), p.protocol)
               for s in snapshot.services for p in s.ports}
    out: list[StaleChain] = []
    for dump in (snapshot.iptables, snapshot.ip6tables):
        if dump is not None:
            out += iptables.stale_chains(None, dump, set(), current)
            out += iptables.unreferenced_endpoint_chains(dump)
    return tuple(out)
