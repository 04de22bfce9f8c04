"""What every proxy mode's resolver shares: joining endpoints to Pods, kube-proxy's endpoint choice, DNS."""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Iterator

from svctrace.errors import NotFoundError, PortNotFoundError
from svctrace.model import graph as g
from svctrace.model.graph import DnsInfo, DnsRecord, EndpointInfo, Hop
from svctrace.model.k8s import EndpointSlice, Service, ServicePort, corefile_zones
from svctrace.model.snapshot import Snapshot
from svctrace.record import record

DEFAULT_CLUSTER_DOMAIN = "cluster.local"


def family_of(ip: str) -> int:
    return 6 if ":" in ip else 4


def find_service(snapshot: Snapshot, namespace: str, name: str) -> Service:
    """The Service, or NotFoundError suggesting close names and the same name elsewhere."""
    svc = snapshot.service(namespace, name)
    if svc is not None:
        return svc
    if not snapshot.api_collected:
        raise NotFoundError(
            f"no API objects in {snapshot.source or 'the snapshot'}, so Service {namespace}/{name} is unknown",
            "add the output of `kubectl get svc,endpointslices,pods,nodes -A -o yaml` to the snapshot's api/ "
            "folder (docs/snapshot.md)",
        )
    same_ns = [s.name for s in snapshot.services if s.namespace == namespace]
    close = difflib.get_close_matches(name, same_ns, n=3, cutoff=0.6)
    elsewhere = sorted(s.namespace for s in snapshot.services if s.name == name)
    hints = []
    if close:
        hints.append("did you mean " + ", ".join(close) + "?")
    if elsewhere:
        hints.append(f"a Service {name} exists in namespace " + ", ".join(elsewhere)
                     + f" (use -n {elsewhere[0]})")
    if not hints:
        hints.append(f"list the Services with `kubectl get svc -n {namespace}`")
    if snapshot.warnings:  # a file not read may be the one that holds it
        more = len(snapshot.warnings) - 1
        hints.append(f"the snapshot warns: {snapshot.warnings[0]}" + (f" (and {more} more)" if more else ""))
    raise NotFoundError(f'service "{name}" not found in namespace "{namespace}"', "; ".join(hints))


def select_ports(svc: Service, port: str | None) -> tuple[ServicePort, ...]:
    """The Service's ports, or the one named or numbered by ``--port``."""
    if port is None:
        return svc.ports
    chosen = tuple(p for p in svc.ports if p.name == port or str(p.port) == port
                   or (p.node_port is not None and str(p.node_port) == port))
    if not chosen:
        have = ", ".join(f"{p.name + ':' if p.name else ''}{p.port}/{p.protocol}" for p in svc.ports) or "none"
        raise PortNotFoundError(f"service {svc.ref} has no port {port!r}", f"its ports are: {have}",
                                service=svc, port=port)
    return chosen


def _slice_port(slice_: EndpointSlice, sp: ServicePort) -> int | None:
    """The endpoint port of a slice for a Service port (slices name their ports after the Service's)."""
    for p in slice_.ports:
        if p.name == sp.name and p.protocol == sp.protocol:
            return p.port
    if len(slice_.ports) == 1 and len(_ports_seen(slice_)) == 1 and not sp.name:
        return slice_.ports[0].port
    return None


def _ports_seen(slice_: EndpointSlice) -> set[str]:
    return {p.name for p in slice_.ports}


def api_endpoints(snapshot: Snapshot, svc: Service, sp: ServicePort, family: int | None = None) \
        -> tuple[EndpointInfo, ...]:
    """Endpoints the API lists for one Service port, joined with their Pods and this node (remembered for the
    last Services asked about: the resolver, the checks and the audit each ask several times)."""
    key = ("api_endpoints", id(svc), svc.namespace, svc.name, sp, family)  # the snapshot holds svc: ids stay
    return snapshot.recent(key, lambda: _api_endpoints(snapshot, svc, sp, family))


def _api_endpoints(snapshot: Snapshot, svc: Service, sp: ServicePort, family: int | None) \
        -> tuple[EndpointInfo, ...]:
    this_node = snapshot.node.name
    out: dict[tuple[str, int | None], EndpointInfo] = {}
    for slice_ in snapshot.slices_for(svc):
        if slice_.address_type not in ("IPv4", "IPv6"):
            continue
        if family is not None and slice_.address_type != f"IPv{family}":
            continue
        port = _slice_port(slice_, sp)
        if port is None:
            continue
        for ep in slice_.endpoints:
            pod_ref = None
            target_kind = None
            if ep.target_ref is not None:
                target_kind = ep.target_ref.kind
                if ep.target_ref.kind == "Pod":
                    pod_ref = f"{ep.target_ref.namespace or svc.namespace}/{ep.target_ref.name}"
            for ip in ep.addresses:
                kind = target_kind
                if pod_ref is None and ep.target_ref is None:
                    pod = snapshot.pod_by_ip(ip)
                    pod_ref = pod.ref if pod is not None else None
                node = ep.node_name
                if pod_ref is None and ep.target_ref is None and node is None:
                    # The API server's own endpoints and other host-network backends: name their node.
                    host = next((n for n in snapshot.nodes if ip in n.ips), None)
                    if host is not None:
                        node, kind = host.name, "Node"
                if node is None and pod_ref is not None:
                    ns, _, pname = pod_ref.partition("/")
                    pod_obj = snapshot.pod(ns, pname)
                    node = pod_obj.node_name if pod_obj is not None else None
                key = (ip, port)
                if key in out:
                    continue
                out[key] = EndpointInfo(
                    ip=ip, port=port, protocol=sp.protocol, pod=pod_ref, node=node, zone=ep.zone,
                    ready=ep.conditions.ready, serving=ep.conditions.serving,
                    terminating=ep.conditions.terminating,
                    local=(node == this_node) if (this_node and node) else None,
                    in_api=True, in_dataplane=False, target_kind=kind,
                )
    return tuple(out.values())


@record
class EndpointChoice:
    """Which endpoints kube-proxy programs for a Service port (pkg/proxy/topology.go CategorizeEndpoints)."""

    cluster: tuple[EndpointInfo, ...]
    local: tuple[EndpointInfo, ...]
    has_any: bool  # "has endpoints" for REJECT: a usable endpoint on any node


def categorize(endpoints: tuple[EndpointInfo, ...]) -> EndpointChoice:
    """Ready endpoints, falling back to serving+terminating ones, as kube-proxy chooses them.

    As in kube-proxy's EndpointSlice cache, a missing ``ready`` means ready and a missing ``serving``
    means the same as ``ready``.
    """
    def ready(e: EndpointInfo) -> bool:
        return e.ready is not False

    def serving_terminating(e: EndpointInfo) -> bool:
        serving = e.serving if e.serving is not None else ready(e)
        return bool(e.terminating) and serving

    cluster = tuple(e for e in endpoints if ready(e))
    if not cluster:
        cluster = tuple(e for e in endpoints if serving_terminating(e))
    local = tuple(e for e in endpoints if ready(e) and e.local)
    if not local:
        local = tuple(e for e in endpoints if serving_terminating(e) and e.local)
    return EndpointChoice(cluster=cluster, local=local, has_any=bool(cluster))


def with_dataplane(ep: EndpointInfo) -> EndpointInfo:
    return ep.programmed()


def cluster_domain(snapshot: Snapshot) -> tuple[str, str]:
    """The cluster domain and where it came from (the kubernetes plugin's first zone in the Corefile)."""
    cm = snapshot.config_map("kube-system", "coredns")
    if cm is not None:
        found = corefile_zones(cm.data.get("Corefile", ""))
        if found is not None:
            zones = [z for z in found if not z.endswith(("in-addr.arpa", "ip6.arpa"))]
            if zones:
                return zones[0].rstrip("."), "the kubernetes plugin in the kube-system/coredns Corefile"
        return DEFAULT_CLUSTER_DOMAIN, "default (the kube-system/coredns Corefile has no kubernetes zone)"
    return DEFAULT_CLUSTER_DOMAIN, "default (no kube-system/coredns ConfigMap in the snapshot)"


def dns_info(snapshot: Snapshot, svc: Service) -> DnsInfo:
    """The DNS names the Service answers to and what cluster DNS returns for them."""
    domain, source = cluster_domain(snapshot)
    fqdn = f"{svc.name}.{svc.namespace}.svc.{domain}"
    names = (fqdn, f"{svc.name}.{svc.namespace}", svc.name)
    records: list[DnsRecord] = []
    notes: list[str] = []
    if svc.is_external_name:
        target = (svc.external_name or "").rstrip(".")
        records.append(DnsRecord(fqdn, "CNAME", (target,)))
        try:
            ipaddress.ip_address(target)
            notes.append("externalName is an IP address; DNS cannot CNAME to an IP and clients will fail")
        except ValueError:
            pass
        explain = (f"ExternalName: cluster DNS answers {fqdn} with a CNAME to {target}; no ClusterIP, "
                   "no kube-proxy rules, the client resolves and connects to that name itself.")
        aliased = _cluster_service_named(snapshot, target, domain)
        if aliased is not None:
            if aliased.virtual_ips:
                v4 = tuple(ip for ip in aliased.virtual_ips if family_of(ip) == 4)
                v6 = tuple(ip for ip in aliased.virtual_ips if family_of(ip) == 6)
                records += [DnsRecord(target, t, ips) for t, ips in (("A", v4), ("AAAA", v6)) if ips]
            explain += (f" {target} is Service {aliased.ref} of this cluster: see "
                        f"`svctrace svc {aliased.name} -n {aliased.namespace}` for where its traffic goes.")
        return DnsInfo(domain, source, names, tuple(records), explain, tuple(notes))
    if svc.is_headless:
        ips: list[str] = []
        for sp in svc.ports or (ServicePort(port=0),):
            for ep in api_endpoints(snapshot, svc, sp):
                usable = ep.ready is not False or svc.publish_not_ready_addresses
                if usable and ep.ip not in ips:
                    ips.append(ep.ip)
        if not svc.ports:
            for slice_ in snapshot.slices_for(svc):
                for e in slice_.endpoints:
                    if e.conditions.is_ready or svc.publish_not_ready_addresses:
                        ips.extend(a for a in e.addresses if a not in ips)
        v4 = tuple(ip for ip in ips if family_of(ip) == 4)
        v6 = tuple(ip for ip in ips if family_of(ip) == 6)
        if v4:
            records.append(DnsRecord(fqdn, "A", v4))
        if v6:
            records.append(DnsRecord(fqdn, "AAAA", v6))
        if not ips:
            notes.append("no ready endpoints: the name returns NXDOMAIN-like empty answers")
        explain = (f"Headless (clusterIP None): cluster DNS answers {fqdn} with the ready pods' own IPs; "
                   "clients connect to pods directly, no kube-proxy rules are involved.")
    else:
        v4 = tuple(ip for ip in svc.virtual_ips if family_of(ip) == 4)
        v6 = tuple(ip for ip in svc.virtual_ips if family_of(ip) == 6)
        if v4:
            records.append(DnsRecord(fqdn, "A", v4))
        if v6:
            records.append(DnsRecord(fqdn, "AAAA", v6))
        explain = (f"Cluster DNS answers {fqdn} with the ClusterIP"
                   f"{'s' if len(svc.virtual_ips) > 1 else ''}; kube-proxy's rules on each node "
                   "turn connections to it into connections to an endpoint.")
    for sp in svc.ports:
        if not sp.name:
            continue
        srv = f"_{sp.name}._{sp.protocol.lower()}.{fqdn}"
        if svc.is_headless:
            # One answer per ready endpoint, at the endpoint's own port and a per-pod name.
            eps = [e for e in api_endpoints(snapshot, svc, sp)
                   if e.ready is not False or svc.publish_not_ready_addresses]
            answers = tuple(f"0 {100 // max(len(eps), 1)} {e.port} {_pod_dns_label(snapshot, svc, e.ip)}.{fqdn}."
                            for e in eps)
            if answers:
                records.append(DnsRecord(srv, "SRV", answers))
        else:
            records.append(DnsRecord(srv, "SRV", (f"0 100 {sp.port} {fqdn}.",)))
    return DnsInfo(domain, source, names, tuple(records), explain, tuple(notes))


def _pod_dns_label(snapshot: Snapshot, svc: Service, ip: str) -> str:
    """The per-endpoint DNS label CoreDNS uses: the endpoint's hostname, else the IP with dashes."""
    for slice_ in snapshot.slices_for(svc):
        for ep in slice_.endpoints:
            if ip in ep.addresses and ep.hostname:
                return ep.hostname
    return ip.replace(".", "-").replace(":", "-")


def _cluster_service_named(snapshot: Snapshot, host: str, domain: str) -> Service | None:
    """The Service a cluster DNS name (``name.ns.svc.<domain>``) belongs to, if it is in the snapshot."""
    suffix = f".svc.{domain}"
    if not host.endswith(suffix):
        return None
    parts = host[: -len(suffix)].split(".")
    if len(parts) != 2:
        return None
    return snapshot.service(parts[1], parts[0])


def leaves(hop: Hop) -> Iterator[Hop]:
    """The hops at the ends of a path: endpoints and verdicts."""
    if not hop.children:
        yield hop
    for child in hop.children:
        yield from leaves(child)


def frontend_verdict(hops: tuple[Hop, ...]) -> str:
    """A frontend's outcome from where its paths end: forwarded, partial, rejected, dropped, untranslated (a
    chain that translates nothing), unknown (a chain the dump does not show) or not programmed."""
    ends = [leaf for hop in hops for leaf in leaves(hop)]
    dnat = any(leaf.verdict == "DNAT" for leaf in ends)
    blocked = any(leaf.verdict in ("DROP", "REJECT") for leaf in ends)
    unknown = any(leaf.verdict == "UNKNOWN" for leaf in ends)
    untranslated = any(leaf.verdict == "ACCEPT" or (leaf.verdict is None and leaf.kind != "chain") for leaf in ends)
    if dnat and (blocked or untranslated):
        return g.PARTIAL
    if dnat:
        return g.FORWARDED
    if blocked and untranslated:
        return g.PARTIAL
    if any(leaf.verdict == "REJECT" for leaf in ends):
        return g.REJECTED
    if blocked:
        return g.DROPPED
    if unknown:
        return g.UNKNOWN
    if untranslated:
        return g.UNTRANSLATED
    return g.NOT_PROGRAMMED


def node_addresses(snapshot: Snapshot, family: int) -> tuple[tuple[str, ...], str]:
    """This node's addresses of a family, for NodePorts kube-proxy opens on any local address: the Node's
    (from the API), else the node's global interface addresses, else "*"; and which ones were taken."""
    node = snapshot.node_named(snapshot.node.name)
    from_node = tuple(ip for ip in (node.ips if node is not None else ()) if family_of(ip) == family)
    if from_node:
        return from_node, "the Node's addresses"
    local = tuple(a.address for a in snapshot.node.addresses or ()
                  if a.family == family and a.scope == "global" and a.ifname != "lo")
    if local:
        return local, "its global addresses"
    return ("*",), "its addresses were not collected"


def any_local_address(snapshot: Snapshot, family: int) -> tuple[tuple[str, ...], str]:
    """Where NodePorts listen without --nodeport-addresses (any local address), and those words."""
    addresses, which = node_addresses(snapshot, family)
    if addresses == ("*",):
        return addresses, f"any local address of this node ({which})"
    return addresses, f"any local address of this node (shown: {which})"
