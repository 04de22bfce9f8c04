"""IPVS mode: follow a Service's frontends to IPVS virtual servers and their real servers.

kube-proxy in IPVS mode makes one virtual server per frontend (ClusterIP, each externalIP and load
balancer IP, and the NodePort on every node address) with one real server per endpoint, weight 1. It
still writes a few iptables rules, which match ipsets instead of addresses: they decide masquerading
and, in filter KUBE-IPVS-FILTER, reject connections to a Service address on a port no Service uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from svctrace.model import graph as g
from svctrace.model.graph import EndpointInfo, Frontend, Hop, RuleRef, StaleChain
from svctrace.model.iptables import IptablesDump, Rule
from svctrace.model.ipvs import WEIGHT_SCHEDULERS, IpSets, IpvsTable, RealServer, VirtualServer
from svctrace.model.k8s import Service, ServicePort
from svctrace.model.matches import IpsetMatch
from svctrace.model.mode import ProxyMode
from svctrace.model.snapshot import NodeFile, Snapshot
from svctrace.parsers.ipvs import normalize_member
from svctrace.record import record
from svctrace.resolver.common import api_endpoints, categorize, family_of, node_addresses
from svctrace.resolver.contract import PortResult, RuleService, register
from svctrace.resolver.rule_words import describe_source

MASQ_CHAIN = "KUBE-MARK-MASQ"
_PROTO_OPT = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}
_FORWARD_OPT = {"masq": "-m", "route": "-g", "tunnel": "-i"}
_SCHEDULERS = {
    "rr": "round robin", "wrr": "weighted round robin", "lc": "least connection",
    "wlc": "weighted least connection", "sh": "source hashing", "dh": "destination hashing",
    "mh": "maglev hashing", "sed": "shortest expected delay", "nq": "never queue",
    "lblc": "locality-based least connection", "lblcr": "locality-based least connection with replication",
    "fo": "weighted failover", "ovf": "weighted overflow", "twos": "weighted random twos choice",
}


def set_name(base: str, family: int) -> str:
    """kube-proxy's ipset name for a family: IPv6 sets are "KUBE-6-..." (the IPv4 names kept for upgrades)."""
    return base.replace("KUBE-", "KUBE-6-", 1) if family == 6 else base


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%" if share * 100 >= 1 or share == 0 else f"{share * 100:.2g}%"


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _vs_ref(vs: VirtualServer) -> RuleRef:
    text = f"-A {_PROTO_OPT.get(vs.protocol, '-f')} {vs.endpoint} -s {vs.scheduler}"
    if vs.persistent_timeout is not None:
        text += f" -p {vs.persistent_timeout}"
    text += "".join(f" {f}" for f in vs.flags)
    return RuleRef(table="ipvs", chain=vs.label, index=0, text=text)


def _rs_ref(vs: VirtualServer, rs: RealServer, index: int) -> RuleRef:
    text = (f"-a {_PROTO_OPT.get(vs.protocol, '-f')} {vs.endpoint} -r {rs.endpoint} "
            f"{_FORWARD_OPT.get(rs.forward, '-' + rs.forward)} -w {rs.weight}")
    return RuleRef(table="ipvs", chain=vs.label, index=index, text=text)


def _ref(rule: Rule) -> RuleRef:
    return RuleRef(table=rule.table, chain=rule.chain, index=rule.index, text=rule.text)


def _set_rules(dump: IptablesDump | None, table: str, chain: str, name: str) -> list[Rule]:
    """Rules of a chain that match ipset ``name`` (``-m set --match-set NAME ...``)."""
    t = dump.table(table) if dump is not None else None
    c = t.chain(chain) if t is not None else None
    out = []
    for rule in c.rules if c is not None else ():
        m = rule.first(IpsetMatch)
        if m is not None and m.name == name and not m.negated:
            out.append(rule)
    return out


def _chain_rules(dump: IptablesDump | None, table: str, chain: str) -> tuple[Rule, ...]:
    t = dump.table(table) if dump is not None else None
    c = t.chain(chain) if t is not None else None
    return c.rules if c is not None else ()


@record
class _Spec:
    type: str
    ip: str
    port: int
    sets: tuple[str, ...]  # ipset names whose membership this frontend needs, first is the main one
    member: str  # the ipset member ("10.96.0.1,tcp:443" or "30380")
    local_policy: bool  # only local endpoints are real servers


@dataclass
class _Ctx:
    snapshot: Snapshot
    svc: Service
    sp: ServicePort
    family: int
    ipvs: IpvsTable
    ipsets: IpSets | None
    dump: IptablesDump | None
    api: dict[tuple[str, int | None], EndpointInfo]
    reached: set[str]
    programmed: dict[tuple[str, int | None], EndpointInfo]


def _endpoint_info(ctx: _Ctx, rs: RealServer) -> EndpointInfo:
    known = ctx.api.get((rs.address, rs.port))
    if known is not None:
        info = known.programmed()
    else:
        pod = ctx.snapshot.pod_by_ip(rs.address)
        node = pod.node_name if pod is not None else None
        if pod is None:
            host = next((n for n in ctx.snapshot.nodes if rs.address in n.ips), None)
            node = host.name if host is not None else None
        this = ctx.snapshot.node.name
        info = EndpointInfo(ip=rs.address, port=rs.port, protocol=ctx.sp.protocol,
                            pod=pod.ref if pod is not None else None, node=node,
                            local=(node == this) if (node and this) else None,
                            ready=None, serving=None, terminating=None, in_api=False, in_dataplane=True)
    ctx.programmed[(rs.address, rs.port)] = info
    return info


def _membership(ctx: _Ctx, spec: _Spec) -> tuple[list[str], bool]:
    """Notes about the frontend's ipset entries, and whether the main one is missing."""
    if ctx.ipsets is None:
        return [], False
    notes: list[str] = []
    missing_main = False
    want = normalize_member(spec.member)
    for i, name in enumerate(spec.sets):
        s = ctx.ipsets.get(name)
        if s is None:
            notes.append(f"ipset {name} does not exist, so the iptables rules matching it never match")
            missing_main = missing_main or i == 0
        elif want not in ctx.ipsets.members(name, normalize_member):
            notes.append(f"ipset {name} lacks {spec.member}: kube-proxy adds it for this frontend, so its "
                         "iptables rules (masquerade, accept) do not apply to it")
            missing_main = missing_main or i == 0
    return notes, missing_main


def _masquerade(ctx: _Ctx, spec: _Spec) -> tuple[str | None, tuple[RuleRef, ...], str]:
    """When SNAT applies to this frontend, the rules that say so, and a sentence."""
    fam = ctx.family
    if spec.type == "ClusterIP":
        for rule in _set_rules(ctx.dump, "nat", "KUBE-SERVICES", set_name("KUBE-CLUSTER-IP", fam)):
            if rule.target == MASQ_CHAIN:
                cond = describe_source(rule) or "always"
                m = rule.first(IpsetMatch)
                if m is not None and m.flags == ("src", "dst"):
                    cond = "source is a ClusterIP and port (no pod CIDR is known to kube-proxy)"
                why = (f"Clients outside the pod network ({cond}) are marked 0x4000 so KUBE-POSTROUTING "
                       "masquerades them; otherwise the reply would not come back through this node's IPVS."
                       if cond != "always" else "Every connection is marked 0x4000 for masquerading "
                       "(--masquerade-all).")
                return cond, (_ref(rule),), why
        return None, (), ""
    if spec.type == "NodePort":
        proto = ctx.sp.protocol.upper()
        if proto == "SCTP":
            local_set, all_set = "KUBE-NODE-PORT-LOCAL-SCTP-HASH", "KUBE-NODE-PORT-SCTP-HASH"
        else:
            local_set, all_set = f"KUBE-NODE-PORT-LOCAL-{proto}", f"KUBE-NODE-PORT-{proto}"
        if spec.local_policy:
            rules = _set_rules(ctx.dump, "nat", "KUBE-NODE-PORT", set_name(local_set, fam))
            if rules:
                return None, (_ref(rules[0]),), ("externalTrafficPolicy Local: KUBE-NODE-PORT returns before "
                                                 "the masquerade rule, so clients keep their source address.")
        for rule in _set_rules(ctx.dump, "nat", "KUBE-NODE-PORT", set_name(all_set, fam)):
            if rule.target == MASQ_CHAIN:
                return "always", (_ref(rule),), ("NodePort connections are marked for masquerade, so the pod "
                                                  "sees this node as the source and replies come back through it.")
        return None, (), ""
    if spec.type == "ExternalIP":
        for rule in _set_rules(ctx.dump, "nat", "KUBE-SERVICES", spec.sets[0]):
            if rule.target == MASQ_CHAIN:
                return "always", (_ref(rule),), "Connections to the external IP are marked for masquerade."
        return None, (), ""
    # LoadBalancer: KUBE-SERVICES sends the set to KUBE-LOAD-BALANCER, which ends with KUBE-MARK-MASQ.
    jumps = [r for r in _set_rules(ctx.dump, "nat", "KUBE-SERVICES", set_name("KUBE-LOAD-BALANCER", fam))
             if r.target == "KUBE-LOAD-BALANCER"]
    if not jumps:
        return None, (), ""
    refs = [_ref(jumps[0])]
    if spec.local_policy:
        local = _set_rules(ctx.dump, "nat", "KUBE-LOAD-BALANCER", set_name("KUBE-LOAD-BALANCER-LOCAL", fam))
        if local:
            return None, tuple(refs + [_ref(local[0])]), ("externalTrafficPolicy Local: KUBE-LOAD-BALANCER "
                                                          "returns early, so clients keep their source address.")
    last = [r for r in _chain_rules(ctx.dump, "nat", "KUBE-LOAD-BALANCER") if r.target == MASQ_CHAIN]
    if last:
        refs.append(_ref(last[-1]))
        return "always", tuple(refs), "Connections to the load balancer IP are marked for masquerade."
    return None, tuple(refs), ""


def _filter_reject(ctx: _Ctx, spec: _Spec) -> Rule | None:
    """KUBE-IPVS-FILTER's REJECT, when it applies: the address is on kube-ipvs0 but ip,port is in no set."""
    if ctx.ipsets is None or spec.type == "NodePort":
        return None
    ips = ctx.ipsets.get(set_name("KUBE-IPVS-IPS", ctx.family))
    if ips is None or normalize_member(spec.ip) not in ctx.ipsets.members(ips.name, normalize_member):
        return None
    for rule in _set_rules(ctx.dump, "filter", "KUBE-IPVS-FILTER", set_name("KUBE-IPVS-IPS", ctx.family)):
        if rule.target == "REJECT":
            return rule
    return None


def _real_server_hops(ctx: _Ctx, vs: VirtualServer, reals: tuple[RealServer, ...]) -> list[Hop]:
    total = sum(rs.weight for rs in reals if rs.weight > 0)
    weighted = vs.scheduler in WEIGHT_SCHEDULERS
    loop = ctx.ipsets.get(set_name("KUBE-LOOP-BACK", ctx.family)) if ctx.ipsets is not None else None
    loop_members = ctx.ipsets.members(loop.name, normalize_member) if ctx.ipsets is not None and loop is not None \
        else frozenset()
    proto = ctx.sp.protocol.lower()
    hops = []
    for index, rs in enumerate(reals, 1):
        info = _endpoint_info(ctx, rs)
        share = rs.weight / total if total and rs.weight > 0 else 0.0
        notes: list[str] = []
        if rs.weight == 0:
            explain = (f"Weight 0: {rs.endpoint} is draining. IPVS sends it no new connections; kube-proxy "
                       "removes it once its existing connections end (graceful termination).")
            notes.append("draining (weight 0): no new connections")
        elif weighted:
            explain = (f"{_SCHEDULERS.get(vs.scheduler, vs.scheduler)} gives it {_pct(share)} of new "
                       f"connections (weight {rs.weight} of {total}); IPVS rewrites the destination to "
                       f"{rs.endpoint} and conntrack rewrites replies back.")
        else:
            explain = (f"About {_pct(share)} of new connections by weight ({rs.weight} of {total}); the "
                       f"{vs.scheduler} scheduler ({_SCHEDULERS.get(vs.scheduler, 'unknown to svctrace')}) "
                       "decides each connection, so the real split depends on the scheduler.")
            notes.append(f"share is weight-based; the {vs.scheduler} scheduler decides the real split")
        if rs.forward != "masq":
            notes.append(f"forwarding method {rs.forward}: kube-proxy only uses masq (NAT)")
        if not info.in_api:
            notes.append("no EndpointSlice lists this real server: stale, or added by hand")
        masquerade = None
        member = f"{rs.address},{proto}:{rs.port},{rs.address}"
        if normalize_member(member) in loop_members:
            masquerade = f"hairpin: when the pod {rs.address} reaches itself through the Service"
        hops.append(Hop(kind="real-server", name=rs.endpoint, table="ipvs", rules=(_rs_ref(vs, rs, index),),
                        share=share, masquerade=masquerade, verdict="DNAT" if rs.weight > 0 else None,
                        endpoint=info, explain=explain, notes=tuple(notes)))
    return hops


def _frontend(ctx: _Ctx, spec: _Spec, explain: str) -> Frontend:
    sp = ctx.sp
    found = ctx.ipvs.find(sp.protocol, spec.ip, spec.port)
    notes, missing_main = _membership(ctx, spec)
    reject = _filter_reject(ctx, spec) if missing_main else None
    if found is None:
        notes.append(f"no IPVS virtual server {sp.protocol} {_host(spec.ip)}:{spec.port}: kube-proxy has not "
                     "programmed this frontend on this node")
        return Frontend(spec.type, spec.ip, spec.port, sp.protocol, sp.name, g.NOT_PROGRAMMED, explain,
                        notes=tuple(notes))
    vs, reals = found
    ctx.reached.add(vs.label)
    masquerade, masq_refs, masq_why = _masquerade(ctx, spec)
    children = _real_server_hops(ctx, vs, reals)
    endpoints = tuple(ctx.api.values())
    choice = categorize(endpoints)
    expected = choice.local if spec.local_policy else choice.cluster
    have = {(rs.address, rs.port) for rs in reals}
    for e in expected:
        if (e.ip, e.port) not in have:
            notes.append(f"endpoint {e.address} is ready in the API but IPVS has no real server for it: "
                         "kube-proxy has not caught up (or failed to sync)")
    live = [rs for rs in reals if rs.weight > 0]
    affinity = f"ClientIP, {vs.persistent_timeout}s" if vs.persistent_timeout is not None else None
    sentences = [f"IPVS virtual server {vs.protocol} {vs.endpoint}, scheduler {vs.scheduler} "
                 f"({_SCHEDULERS.get(vs.scheduler, 'unknown to svctrace')})."]
    if len(live) > 1 and vs.scheduler in WEIGHT_SCHEDULERS:
        sentences.append(f"New connections go to {len(live)} real servers in turn, in proportion to their weights.")
    elif len(live) == 1:
        sentences.append("A single real server takes every new connection.")
    if affinity is not None:
        sentences.append(f"Persistent ({vs.persistent_timeout}s, from sessionAffinity ClientIP): a client keeps "
                         "its real server while it has connections or until the timeout; only new clients are "
                         "scheduled.")
    if masq_why:
        sentences.append(masq_why)
    if spec.local_policy:
        sentences.append("Traffic policy Local: only endpoints on this node are real servers.")
    hop_notes: list[str] = []
    if not live:
        hop_notes.append("no real server with weight > 0: new connections fail")
        sentences.append("The virtual server has no usable real server: IPVS finds no destination and the "
                         "client's connection fails (ICMP port unreachable, seen as 'connection refused').")
    hop = Hop(kind="virtual-server", name=vs.label, table="ipvs", rules=(_vs_ref(vs),) + masq_refs,
              masquerade=masquerade, affinity=affinity, verdict=None if live else "REJECT",
              explain=" ".join(sentences), notes=tuple(hop_notes), children=tuple(children))
    hops: list[Hop] = [hop]
    verdict = g.FORWARDED if live else g.REJECTED
    if reject is not None:
        hops = [Hop(kind="verdict", name="REJECT", table="filter", rules=(_ref(reject),), verdict="REJECT",
                    explain=(f"{spec.ip} is a Service address on kube-ipvs0 but {spec.member} is missing from "
                             f"{spec.sets[0]}, so filter KUBE-IPVS-FILTER rejects new connections before IPVS "
                             "sees them."))]
        verdict = g.REJECTED
    return Frontend(spec.type, spec.ip, spec.port, sp.protocol, sp.name, verdict, explain, hops=tuple(hops),
                    notes=tuple(notes))


def nodeport_addresses(snapshot: Snapshot, ipvs: IpvsTable, svc: Service, sp: ServicePort,
                       family: int) -> tuple[tuple[str, ...], str]:
    """The addresses with a NodePort virtual server, or (none programmed) the node's own addresses."""
    others = set(svc.virtual_ips) | set(svc.external_ips) | {i.ip for i in svc.load_balancer_ingress if i.ip}
    programmed = tuple(vs.address for vs in ipvs.on_port(sp.protocol, sp.node_port or 0)
                       if vs.family == family and vs.address not in others)
    if programmed:
        return programmed, "each node address kube-proxy made a virtual server for"
    addresses, which = node_addresses(snapshot, family)
    if which == "the Node's addresses":
        return addresses, "the Node's addresses (no virtual server exists for any of them)"
    local = tuple(a for a in addresses if a != "*")
    return local, "this node's global addresses (no virtual server exists for any of them)"


def resolve_port(snapshot: Snapshot, svc: Service, sp: ServicePort, family: int, ipvs: IpvsTable,
                 ipsets: IpSets | None, dump: IptablesDump | None) \
        -> tuple[list[Frontend], tuple[EndpointInfo, ...], set[str]]:
    """Every frontend of one Service port in one IP family, the endpoints seen, and the virtual servers reached."""
    api = {(e.ip, e.port): e for e in api_endpoints(snapshot, svc, sp, family)}
    ctx = _Ctx(snapshot, svc, sp, family, ipvs, ipsets, dump, api, set(), {})
    proto = sp.protocol.lower()
    ext_local = svc.external_traffic_policy in ("Local", "OnlyLocal")
    int_local = svc.internal_traffic_policy == "Local"
    frontends: list[Frontend] = []
    for ip in svc.virtual_ips:
        if family_of(ip) == family:
            frontends.append(_frontend(ctx, _Spec(
                "ClusterIP", ip, sp.port, (set_name("KUBE-CLUSTER-IP", family),), f"{ip},{proto}:{sp.port}",
                int_local), f"Clients inside the cluster connect to {_host(ip)}:{sp.port}; the address sits on "
                            "kube-ipvs0 and IPVS takes the connection."))
    for ip in svc.external_ips:
        if family_of(ip) == family:
            sets = ("KUBE-EXTERNAL-IP",) + (("KUBE-EXTERNAL-IP-LOCAL",) if ext_local else ())
            frontends.append(_frontend(ctx, _Spec(
                "ExternalIP", ip, sp.port, tuple(set_name(n, family) for n in sets), f"{ip},{proto}:{sp.port}",
                ext_local),
                f"externalIPs: traffic routed to this node for {_host(ip)}:{sp.port} is taken by IPVS."))
    for ing in svc.load_balancer_ingress:
        if ing.ip is None or family_of(ing.ip) != family or ing.ip_mode == "Proxy":
            continue
        lb_sets = [set_name("KUBE-LOAD-BALANCER", family)]
        if ext_local:
            lb_sets.append(set_name("KUBE-LOAD-BALANCER-LOCAL", family))
        if svc.load_balancer_source_ranges:
            lb_sets.append(set_name("KUBE-LOAD-BALANCER-FW", family))
        frontends.append(_frontend(ctx, _Spec(
            "LoadBalancer", ing.ip, sp.port, tuple(lb_sets), f"{ing.ip},{proto}:{sp.port}", ext_local),
            f"The load balancer's address {_host(ing.ip)}:{sp.port}; IPVS takes what the cloud LB delivers."))
    if sp.node_port:
        addresses, how = nodeport_addresses(snapshot, ipvs, svc, sp, family)
        for ip in addresses:
            if sp.protocol.upper() == "SCTP":
                names = ("KUBE-NODE-PORT-SCTP-HASH", "KUBE-NODE-PORT-LOCAL-SCTP-HASH")
                member = f"{ip},sctp:{sp.node_port}"
            else:
                names = (f"KUBE-NODE-PORT-{sp.protocol.upper()}", f"KUBE-NODE-PORT-LOCAL-{sp.protocol.upper()}")
                member = str(sp.node_port)
            sets = names if ext_local else names[:1]
            frontends.append(_frontend(ctx, _Spec(
                "NodePort", ip, sp.node_port, tuple(set_name(n, family) for n in sets), member, ext_local),
                f"NodePort {sp.node_port} on {_host(ip)} ({how})."))
    seen = dict(api)
    seen.update(ctx.programmed)
    return frontends, tuple(seen.values()), ctx.reached


# kube-proxy's ipsets that say what kind of frontend a virtual server is, and the NodePort range's default.
_FRONTEND_SETS = (("KUBE-CLUSTER-IP", "ClusterIP"), ("KUBE-EXTERNAL-IP", "ExternalIP"),
                  ("KUBE-LOAD-BALANCER", "LoadBalancer"))
_NODEPORT_RANGE = range(30000, 32768)


def services_in_table(ipvs: IpvsTable, ipsets: IpSets | None) -> tuple[RuleService, ...]:
    """Each virtual server as a Service port (IPVS names no Service): its kind from kube-proxy's ipsets when
    they were collected, else from the port (the default NodePort range)."""
    out = []
    for vs, _reals in ipvs.services:
        if vs.fwmark is not None and not vs.address:
            continue
        member = normalize_member(f"{vs.address},{vs.protocol.lower()}:{vs.port}")
        kind = None
        how = "an IPVS virtual server: IPVS names no Service"
        if ipsets is not None:
            kind = next((k for base, k in _FRONTEND_SETS
                         if member in ipsets.members(set_name(base, vs.family), normalize_member)), None)
        if kind is None:
            kind = "NodePort" if vs.port in _NODEPORT_RANGE else "ClusterIP"
            how += "; its kind guessed from its port" if ipsets is None else ""
        ips = (vs.address,)
        out.append(RuleService(
            namespace="", name="", port_name="", protocol=vs.protocol, port=None if kind == "NodePort" else vs.port,
            key=None, identity=None, how=how, cluster_ips=ips if kind == "ClusterIP" else (),
            external_ips=ips if kind == "ExternalIP" else (), load_balancer_ips=ips if kind == "LoadBalancer" else (),
            node_port=vs.port if kind == "NodePort" else None))
    return tuple(out)


class IpvsResolver:
    """IPVS mode's side of the resolver contract (svctrace.resolver.contract)."""

    mode = ProxyMode.IPVS
    files: frozenset[str] = frozenset({NodeFile.IPVSADM, NodeFile.IPSET, NodeFile.IPTABLES, NodeFile.IP6TABLES})

    def gap(self, snapshot: Snapshot, family: int) -> str | None:
        if snapshot.ipvs is None:
            return "the IPVS table was not collected (node/ipvsadm.txt, or IPVS is not in this kernel)"
        return None

    def resolve_port(self, snapshot: Snapshot, svc: Service, sp: ServicePort, family: int) -> PortResult:
        assert snapshot.ipvs is not None
        return resolve_port(snapshot, svc, sp, family, snapshot.ipvs, snapshot.ipsets, snapshot.dump(family))

    def stale_chains(self, snapshot: Snapshot, svc: Service, reached: set[str]) -> tuple[StaleChain, ...]:
        return ()  # a virtual server names no Service: what no Service owns is found by the checks

    def orphans(self, snapshot: Snapshot) -> tuple[StaleChain, ...]:
        return ()

    def services_in_rules(self, snapshot: Snapshot) -> tuple[RuleService, ...]:
        return services_in_table(snapshot.ipvs, snapshot.ipsets) if snapshot.ipvs is not None else ()

    def not_programmed(self, frontend: Frontend) -> str:
        return f"no IPVS virtual server {frontend.protocol} {frontend.address.rsplit('/', 1)[0]} (ipvsadm -Ln)"


register(IpvsResolver())
