"""iptables mode: follow a Service's frontends through kube-proxy's nat and filter chains.

Chains are found by kube-proxy's own naming hash (svctrace.kubeproxy.naming), so the join works when
rules carry no comments (large-cluster mode) and chains that no Service owns any more are noticed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from svctrace.kubeproxy import naming
from svctrace.model import graph as g
from svctrace.model.graph import EndpointInfo, Frontend, Hop, RuleRef, StaleChain
from svctrace.model.iptables import Chain, IptablesDump, Rule, Table
from svctrace.model.k8s import Service, ServicePort
from svctrace.model.matches import SRC, AddrTypeMatch, DnatAction, RecentMatch, StatisticMatch
from svctrace.model.mode import ProxyMode
from svctrace.model.snapshot import NodeFile, Snapshot
from svctrace.resolver.common import api_endpoints, categorize, family_of, frontend_verdict
from svctrace.resolver.contract import PortResult, register

MASQ_CHAIN = "KUBE-MARK-MASQ"
SERVICE_CHAIN_PREFIXES = naming.IPT_SERVICE_PREFIXES + (naming.IPT_ENDPOINT_PREFIX,)
KIND_BY_PREFIX = {
    "KUBE-SVC-": "service",
    "KUBE-SVL-": "local",
    "KUBE-EXT-": "external",
    "KUBE-FW-": "firewall",
    "KUBE-SEP-": "endpoint",
}
MAX_DEPTH = 8


def _kind(chain: str) -> str:
    for prefix, kind in KIND_BY_PREFIX.items():
        if chain.startswith(prefix):
            return kind
    return "chain"


def _ref(rule: Rule) -> RuleRef:
    return RuleRef(table=rule.table, chain=rule.chain, index=rule.index, text=rule.text)


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%" if share * 100 >= 1 or share == 0 else f"{share * 100:.2g}%"


def _dst_is(rule: Rule, ip: str) -> bool:
    d = rule.destination
    return d is not None and not d.negated and len(d.prefixes) == 1 and d.prefixes[0].is_host \
        and d.prefixes[0].address == naming.normalize_ip(ip)


def _dport_is(rule: Rule, port: int) -> bool:
    d = rule.dport
    return d is not None and d.single == port


def _proto_is(rule: Rule, protocol: str) -> bool:
    p = rule.protocol
    return p is None or (not p.negated and p.protocol == protocol.lower())


def _source_text(rule: Rule) -> str | None:
    s = rule.source
    return ",".join(map(str, s.prefixes)) if s is not None else None


def describe_source(rule: Rule) -> str | None:
    """The source condition of a rule in words, or None when it matches any source."""
    parts = []
    s = rule.source
    if s is not None:
        cidr = _source_text(rule)
        parts.append(f"source not in {cidr}" if s.negated else f"source in {cidr}")
    for t in rule.all(AddrTypeMatch):
        if t.field != SRC:
            continue
        value = ",".join(sorted(t.types))
        what = "a local address of this node" if value == "LOCAL" else f"of type {value}"
        parts.append(f"source is not {what}" if t.negated else f"source is {what}")
    return ", ".join(parts) or None


def port_index(table: Table, chain: str) -> dict[int, list[Rule]]:
    """The rules of a chain that match one destination port, by that port: built once per table, so a
    frontend's rules are found without reading every rule of a 10,000-Service KUBE-SERVICES again."""
    def build() -> dict[int, list[Rule]]:
        out: dict[int, list[Rule]] = {}
        c = table.chain(chain)
        for rule in c.rules if c is not None else ():
            d = rule.dport
            port = d.single if d is not None else None
            if port is not None:
                out.setdefault(port, []).append(rule)
        return out
    return table.memoized(f"ports:{chain}", build)


@dataclass
class _Ctx:
    """What one walk needs; mutable only to record which chains the walk reached."""

    snapshot: Snapshot
    svc: Service
    sp: ServicePort
    dump: IptablesDump
    nat: Table | None
    filt: Table | None
    api: dict[tuple[str, int | None], EndpointInfo]
    reached: set[str] = field(default_factory=set)
    programmed: dict[tuple[str, int | None], EndpointInfo] = field(default_factory=dict)
    # the filter REJECT/DROP rule for the frontend being walked; KUBE-EXT falls through to it
    external_verdict: Rule | None = None
    stack: set[str] = field(default_factory=set)  # chains being walked, to stop jump loops

    def chain(self, name: str) -> Chain | None:
        return self.nat.chain(name) if self.nat is not None else None



def _endpoint_info(ctx: _Ctx, ip: str, port: int | None) -> EndpointInfo:
    known = ctx.api.get((ip, port))
    if known is not None:
        info = replace(known, in_dataplane=True)
    else:
        pod = ctx.snapshot.pod_by_ip(ip)
        node = pod.node_name if pod is not None else None
        this = ctx.snapshot.node.name
        info = EndpointInfo(
            ip=ip, port=port, protocol=ctx.sp.protocol, pod=pod.ref if pod is not None else None,
            node=node, local=(node == this) if (node and this) else None,
            ready=None, serving=None, terminating=None, in_api=False, in_dataplane=True,
        )
    ctx.programmed[(ip, port)] = info
    return info


def _sep_hop(ctx: _Ctx, chain_name: str, *, rules: tuple[RuleRef, ...], share: float | None,
             probability: str | None, affinity: str | None) -> Hop:
    ctx.reached.add(chain_name)
    chain = ctx.chain(chain_name)
    if chain is None:
        return Hop(kind="endpoint", name=chain_name, table="nat", rules=rules, share=share,
                   probability=probability, verdict="DROP",
                   explain=f"{chain_name} is jumped to but does not exist in the nat table; "
                           "iptables-restore would have refused this, so the dump is incomplete.",
                   notes=("chain missing from the dump",))
    masquerade = None
    endpoint: EndpointInfo | None = None
    own: list[RuleRef] = []
    notes: list[str] = []
    records_affinity = False
    explain: list[str] = []
    for rule in chain.rules:
        if rule.target == MASQ_CHAIN:
            src = rule.source
            if src is not None and not src.negated:
                masquerade = f"hairpin: when the pod {_source_text(rule)} reaches itself through the Service"
            else:
                masquerade = describe_source(rule) or "always"
            own.append(_ref(rule))
        elif rule.target == "DNAT":
            action = rule.action
            first = action.first if isinstance(action, DnatAction) else None
            if first is None or first.first_ip is None:
                if isinstance(action, DnatAction) and action.problem == "DNAT rule without --to-destination":
                    notes.append(f"DNAT rule without --to-destination (rule {rule.index})")
                    continue
                shown = repr(action.raw) if isinstance(action, DnatAction) and action.raw else "(no address)"
                notes.append(f"rule {rule.index}: cannot read the DNAT destination {shown}: {rule.text}")
                own.append(_ref(rule))
                continue
            ip, port = first.first_ip, first.first_port
            endpoint = _endpoint_info(ctx, ip, port)
            own.append(_ref(rule))
            if any(m.op == "set" for m in rule.all(RecentMatch)):
                records_affinity = True
            expected = naming.ipt_endpoint_chain(
                naming.service_port_name(ctx.svc.namespace, ctx.svc.name, ctx.sp.name),
                ctx.sp.protocol, ip, port or 0)
            if expected != chain_name:
                notes.append(f"chain name does not hash from {endpoint.address}: kube-proxy would call it "
                             f"{expected}")
            explain.append(f"DNAT rewrites the destination to {endpoint.address}; conntrack remembers "
                           "the translation, so replies are rewritten back.")
        else:
            own.append(_ref(rule))
            notes.append(f"rule {rule.index} is not one kube-proxy writes here: {rule.text}")
    if records_affinity:
        explain.append("-m recent --set records the client, so session affinity sends it here again.")
    if endpoint is None:
        return Hop(kind="endpoint", name=chain_name, table="nat", rules=rules + tuple(own), share=share,
                   probability=probability, affinity=affinity, masquerade=masquerade,
                   notes=tuple(notes) + ("no DNAT rule: traffic falls through unchanged",),
                   explain="This endpoint chain has no DNAT rule, so nothing is translated here.")
    return Hop(kind="endpoint", name=chain_name, table="nat", rules=rules + tuple(own), share=share,
               probability=probability, masquerade=masquerade, affinity=affinity, verdict="DNAT",
               endpoint=endpoint, explain=" ".join(explain), notes=tuple(notes))


def _service_chain_hop(ctx: _Ctx, chain_name: str, *, when: str | None, rules: tuple[RuleRef, ...],
                       depth: int) -> Hop:
    """A KUBE-SVC or KUBE-SVL chain: masquerade rule, affinity rules, then the probability ladder."""
    ctx.reached.add(chain_name)
    kind = _kind(chain_name)
    chain = ctx.chain(chain_name)
    if chain is None:
        return Hop(kind=kind, name=chain_name, table="nat", when=when, rules=rules, verdict="DROP",
                   notes=("chain missing from the dump",),
                   explain=f"{chain_name} is jumped to but does not exist in the nat table.")
    masquerade = None
    masq_explain = ""
    affinity_seconds: str | None = None
    affinity_targets: set[str] = set()
    own: list[RuleRef] = []
    children: list[Hop] = []
    notes: list[str] = []
    remaining = 1.0
    for rule in chain.rules:
        target = rule.target or ""
        if target == MASQ_CHAIN:
            masquerade = describe_source(rule) or "always"
            own.append(_ref(rule))
            src = rule.source
            if src is not None and src.negated:
                masq_explain = (f"Clients outside the pod network {_source_text(rule)} (the node itself, "
                                "host-network pods) are marked 0x4000 so KUBE-POSTROUTING masquerades them; "
                                "otherwise the pod's reply would not come back through this node's NAT.")
            else:
                masq_explain = ("Every connection is marked 0x4000 for masquerading (--masquerade-all, "
                                "or no pod CIDR is known to kube-proxy).")
            continue
        rcheck = next((m for m in rule.all(RecentMatch) if m.op == "rcheck"), None)
        if rcheck is not None and target.startswith(naming.IPT_ENDPOINT_PREFIX):
            affinity_seconds = str(rcheck.seconds) if rcheck.seconds is not None else "?"
            affinity_targets.add(target)
            own.append(_ref(rule))
            continue
        if target.startswith(naming.IPT_ENDPOINT_PREFIX):
            prob = rule.probability
            if remaining <= 0:
                notes.append(f"rule {rule.index} is never reached: an earlier rule takes every connection")
                share = 0.0
            elif prob is None:
                share = remaining
                remaining = 0.0
            else:
                share = remaining * prob
                remaining -= share
            stat = rule.first(StatisticMatch)
            children.append(_sep_hop(
                ctx, target, rules=(_ref(rule),), share=share,
                probability=stat.raw if stat is not None and not stat.nth else None,
                affinity=f"ClientIP, {affinity_seconds}s" if target in affinity_targets else None,
            ))
            continue
        if rule.target is None:
            own.append(_ref(rule))
            continue
        own.append(_ref(rule))
        notes.append(f"rule {rule.index} is not one kube-proxy writes here: {rule.text}")
    if remaining > 1e-9 and children:
        notes.append(f"{_pct(remaining)} of connections match no endpoint rule and fall through")
    affinity = None
    if affinity_seconds is not None:
        affinity = f"ClientIP, {affinity_seconds}s"
    sentences = []
    if kind == "local":
        sentences.append("KUBE-SVL holds only the endpoints on this node (traffic policy Local).")
    n = len(children)
    if n > 1:
        sentences.append(f"kube-proxy balances new connections over {n} endpoints with -m statistic: each rule "
                         "takes its probability of the connections that reach it (1/n, 1/(n-1), ... then the "
                         "rest), so each endpoint gets an equal share.")
    elif n == 1:
        sentences.append("A single endpoint takes every new connection.")
    if masq_explain:
        sentences.append(masq_explain)
    if any(c.masquerade and c.masquerade.startswith("hairpin") for c in children):
        sentences.append("Each endpoint chain also masquerades a pod that reaches itself through the Service "
                         "(hairpin), or its reply would bypass the NAT and be dropped.")
    if affinity is not None:
        sentences.append(f"sessionAffinity ClientIP: a client seen in the last {affinity_seconds}s "
                         "(-m recent --rcheck) goes straight back to its endpoint; only new clients are balanced.")
    verdict = None
    if not children:
        notes.append("no endpoint rules: nothing is translated here")
    return Hop(kind=kind, name=chain_name, table="nat", when=when, rules=rules + tuple(own),
               masquerade=masquerade, affinity=affinity, verdict=verdict, explain=" ".join(sentences),
               notes=tuple(notes), children=tuple(children))


def _external_hop(ctx: _Ctx, chain_name: str, *, when: str | None, rules: tuple[RuleRef, ...],
                  depth: int) -> Hop:
    """KUBE-EXT: masquerade, short-circuits for pods and the node, then the cluster or local chain."""
    ctx.reached.add(chain_name)
    chain = ctx.chain(chain_name)
    if chain is None:
        return Hop(kind="external", name=chain_name, table="nat", when=when, rules=rules, verdict="DROP",
                   notes=("chain missing from the dump",),
                   explain=f"{chain_name} is jumped to but does not exist in the nat table.")
    masquerade = None
    own: list[RuleRef] = []
    children: list[Hop] = []
    notes: list[str] = []
    unconditional_exit = False
    local_policy = ctx.svc.external_traffic_policy in ("Local", "OnlyLocal")
    for rule in chain.rules:
        target = rule.target or ""
        cond = describe_source(rule)
        if target == MASQ_CHAIN:
            masquerade = cond or "always"
            own.append(_ref(rule))
            continue
        if target.startswith(naming.IPT_SERVICE_PREFIXES):
            if cond is None:
                unconditional_exit = True
                cond = "external clients" if local_policy else None
            children.append(_walk(ctx, target, when=cond, rules=(_ref(rule),), depth=depth + 1))
            continue
        own.append(_ref(rule))
        if rule.target is not None:
            notes.append(f"rule {rule.index} is not one kube-proxy writes here: {rule.text}")
    if local_policy:
        explain = ("externalTrafficPolicy Local: clients from outside go only to endpoints on this node and "
                   "keep their source address (no SNAT); pods and the node itself are short-circuited to "
                   "every endpoint.")
    else:
        explain = ("externalTrafficPolicy Cluster: external connections are marked for masquerade, so the pod "
                   "sees this node as the source and replies come back through it; any endpoint in the "
                   "cluster may serve them.")
    if not unconditional_exit:
        drop = ctx.external_verdict
        if drop is not None:
            children.append(Hop(
                kind="verdict", name=drop.target or "DROP", table="filter",
                when="external clients" if local_policy else "otherwise",
                rules=(_ref(drop),), verdict=drop.target,
                explain=("No endpoint of this Service runs on this node, so external clients are dropped "
                         "(filter KUBE-EXTERNAL-SERVICES); the load balancer's health check on the "
                         "healthCheckNodePort fails and takes this node out of rotation."
                         if drop.target == "DROP" else
                         "The Service has no endpoints: filter KUBE-EXTERNAL-SERVICES rejects the connection."),
            ))
        else:
            notes.append("some sources fall through this chain without a verdict "
                         "(no KUBE-SVL jump and no filter rule): they are routed unchanged")
    return Hop(kind="external", name=chain_name, table="nat", when=when, rules=rules + tuple(own),
               masquerade=masquerade, explain=explain, notes=tuple(notes), children=tuple(children))


def _firewall_hop(ctx: _Ctx, chain_name: str, *, when: str | None, rules: tuple[RuleRef, ...],
                  depth: int, lb_ip: str) -> Hop:
    """KUBE-FW: loadBalancerSourceRanges; allowed sources go on, the rest are dropped in filter."""
    ctx.reached.add(chain_name)
    chain = ctx.chain(chain_name)
    if chain is None:
        return Hop(kind="firewall", name=chain_name, table="nat", when=when, rules=rules, verdict="DROP",
                   notes=("chain missing from the dump",),
                   explain=f"{chain_name} is jumped to but does not exist in the nat table.")
    own: list[RuleRef] = []
    children: list[Hop] = []
    allowed: list[str] = []
    for rule in chain.rules:
        target = rule.target or ""
        if target.startswith(naming.IPT_SERVICE_PREFIXES):
            cond = describe_source(rule)
            if rule.source is not None and not rule.source.negated:
                allowed.append(_source_text(rule) or "")
            children.append(_walk(ctx, target, when=cond, rules=(_ref(rule),), depth=depth + 1))
        else:
            own.append(_ref(rule))
    candidates = port_index(ctx.filt, "KUBE-PROXY-FIREWALL").get(ctx.sp.port, []) if ctx.filt is not None else []
    drop = next((r for r in candidates if r.target == "DROP" and _dst_is(r, lb_ip)), None)
    if drop is not None:
        children.append(Hop(
            kind="verdict", name="DROP", table="filter", when="any other source", rules=(_ref(drop),),
            verdict="DROP",
            explain="Sources outside loadBalancerSourceRanges fall through KUBE-FW without DNAT; "
                    "filter KUBE-PROXY-FIREWALL then drops them.",
        ))
    return Hop(kind="firewall", name=chain_name, table="nat", when=when, rules=rules + tuple(own),
               explain="loadBalancerSourceRanges: only " + (", ".join(allowed) or "no source")
                       + " may use this load balancer IP.",
               notes=() if drop is not None else ("no filter KUBE-PROXY-FIREWALL DROP for other sources",),
               children=tuple(children))


def _walk(ctx: _Ctx, chain_name: str, *, when: str | None, rules: tuple[RuleRef, ...], depth: int,
          lb_ip: str = "") -> Hop:
    if depth > MAX_DEPTH or chain_name in ctx.stack:
        return Hop(kind=_kind(chain_name), name=chain_name, table="nat", when=when, rules=rules,
                   notes=("jump loop or too deep; not followed",))
    ctx.stack.add(chain_name)
    try:
        kind = _kind(chain_name)
        if kind in ("service", "local"):
            return _service_chain_hop(ctx, chain_name, when=when, rules=rules, depth=depth)
        if kind == "external":
            return _external_hop(ctx, chain_name, when=when, rules=rules, depth=depth)
        if kind == "firewall":
            return _firewall_hop(ctx, chain_name, when=when, rules=rules, depth=depth, lb_ip=lb_ip)
        if kind == "endpoint":
            return _sep_hop(ctx, chain_name, rules=rules, share=None, probability=None, affinity=None)
        return Hop(kind="chain", name=chain_name, table="nat", when=when, rules=rules,
                   notes=("not a kube-proxy chain; not followed",))
    finally:
        ctx.stack.discard(chain_name)


def _filter_verdict_hop(rule: Rule, what: str, policy_note: str) -> Hop:
    target = rule.target or "REJECT"
    if target == "REJECT":
        explain = (f"The Service has no usable endpoints, so filter {rule.chain} rejects new connections to "
                   f"{what} (ICMP port unreachable, seen by clients as 'connection refused') rather than "
                   "letting them time out.")
    else:
        explain = f"filter {rule.chain} drops new connections to {what}: {policy_note}"
    return Hop(kind="verdict", name=target, table="filter", rules=(_ref(rule),), verdict=target, explain=explain)


def _filter_rule_for(ctx: _Ctx, chains: tuple[str, ...], ip: str | None, port: int,
                     local_dst: bool = False) -> Rule | None:
    if ctx.filt is None:
        return None
    for chain in chains:
        for rule in port_index(ctx.filt, chain).get(port, ()):
            if rule.target not in ("REJECT", "DROP") or not _proto_is(rule, ctx.sp.protocol):
                continue
            if ip is not None and _dst_is(rule, ip):
                return rule
            if local_dst and rule.destination is None and any(t.field != SRC for t in rule.all(AddrTypeMatch)):
                return rule
    return None


@dataclass(frozen=True, slots=True)
class _FrontendSpec:
    type: str
    ip: str
    port: int
    dispatch_chain: str  # nat chain holding the dispatch rule
    targets: tuple[str, ...]
    filter_chains: tuple[str, ...]
    local_dst: bool = False


def _frontend(ctx: _Ctx, spec: _FrontendSpec, explain: str) -> Frontend:
    sp = ctx.sp
    dispatch: list[Rule] = []
    older_masq: list[Rule] = []
    localhost: list[Rule] = []
    candidates = port_index(ctx.nat, spec.dispatch_chain).get(spec.port, []) if ctx.nat is not None else []
    for rule in candidates:
        if not _proto_is(rule, sp.protocol):
            continue
        if spec.type == "NodePort":
            dst = rule.destination
            if dst is not None and not dst.negated and str(dst.prefixes[0]).startswith(("127.", "::1")):
                if rule.target in spec.targets:
                    localhost.append(rule)
                continue
        elif not _dst_is(rule, spec.ip):
            continue
        if rule.target in spec.targets:
            dispatch.append(rule)
        elif rule.target == MASQ_CHAIN:
            older_masq.append(rule)
    notes: list[str] = []
    filt = _filter_rule_for(ctx, spec.filter_chains, None if spec.type == "NodePort" else spec.ip,
                            spec.port, local_dst=spec.local_dst)
    ctx.external_verdict = filt
    hops: list[Hop] = []
    if dispatch:
        rule = dispatch[0]
        hop = _walk(ctx, rule.target or "", when=None, rules=(_ref(rule),), depth=0, lb_ip=spec.ip)
        if older_masq:
            hop = replace(hop, masquerade=describe_source(older_masq[0]) or "always",
                          rules=(_ref(older_masq[0]),) + hop.rules)
        hops.append(hop)
        if len(dispatch) > 1:
            notes.append(f"{len(dispatch)} rules in {spec.dispatch_chain} match this frontend; "
                         "only the first is ever used")
    elif filt is not None:
        what = spec.ip if spec.type != "NodePort" else f"NodePort {spec.port}"
        if spec.type == "ClusterIP":
            reason = ("internalTrafficPolicy is Local and no endpoint runs on this node, so pods on this node "
                      "cannot reach the Service.")
        else:
            reason = "externalTrafficPolicy is Local and no endpoint runs on this node."
        hops.append(_filter_verdict_hop(filt, f"{what}:{spec.port}" if spec.type != "NodePort" else what,
                                        reason))
    if localhost:
        notes.append(f"also answers on 127.0.0.1:{spec.port} from this node (localhost NodePorts, needs "
                     "net.ipv4.conf.all.route_localnet=1)")
    verdict = frontend_verdict(tuple(hops)) if hops else g.NOT_PROGRAMMED
    if verdict == g.NOT_PROGRAMMED:
        notes.append(f"no rule in nat {spec.dispatch_chain} or filter {'/'.join(spec.filter_chains)} handles "
                     f"this frontend: kube-proxy has not programmed it on this node")
    return Frontend(type=spec.type, ip=spec.ip, port=spec.port, protocol=sp.protocol, port_name=sp.name,
                    verdict=verdict, explain=explain, hops=tuple(hops), notes=tuple(notes))


def nodeport_addresses(snapshot: Snapshot, dump: IptablesDump, family: int) -> tuple[tuple[str, ...], str]:
    """The addresses this node accepts NodePorts on, and how that was decided."""
    nat = dump.table("nat")

    def build() -> list[str]:
        services = nat.chain("KUBE-SERVICES") if nat is not None else None
        return [str(p) for rule in (services.rules if services is not None else ())
                if rule.target == "KUBE-NODEPORTS" and rule.destination is not None and not rule.destination.negated
                for p in rule.destination.prefixes]
    explicit = nat.memoized("nodeport-addresses", build) if nat is not None else []
    if explicit:
        return tuple(explicit), "the addresses kube-proxy's --nodeport-addresses selects"
    node = snapshot.node_named(snapshot.node.name)
    from_node = tuple(ip for ip in (node.ips if node is not None else ()) if family_of(ip) == family)
    if from_node:
        return from_node, "any local address of this node (shown: the Node's addresses)"
    local = tuple(a.address for a in snapshot.node.addresses or ()
                  if a.family == family and a.scope == "global" and a.ifname != "lo")
    if local:
        return local, "any local address of this node (shown: its global addresses)"
    return ("*",), "any local address of this node (its addresses were not collected)"


def resolve_port(snapshot: Snapshot, svc: Service, sp: ServicePort, family: int,
                 dump: IptablesDump) -> tuple[list[Frontend], tuple[EndpointInfo, ...], set[str]]:
    """Every frontend of one Service port in one IP family, and the endpoints seen."""
    api = {(e.ip, e.port): e for e in api_endpoints(snapshot, svc, sp, family)}
    ctx = _Ctx(snapshot=snapshot, svc=svc, sp=sp, dump=dump, nat=dump.table("nat"), filt=dump.table("filter"),
               api=api)
    spn = naming.service_port_name(svc.namespace, svc.name, sp.name)
    proto = sp.protocol
    svc_chain = naming.ipt_service_chain(spn, proto)
    svl_chain = naming.ipt_local_chain(spn, proto)
    ext_chain = naming.ipt_external_chain(spn, proto)
    fw_chain = naming.ipt_firewall_chain(spn, proto)
    frontends: list[Frontend] = []
    for ip in svc.virtual_ips:
        if family_of(ip) != family:
            continue
        frontends.append(_frontend(ctx, _FrontendSpec(
            "ClusterIP", ip, sp.port, "KUBE-SERVICES", (svc_chain, svl_chain), ("KUBE-SERVICES",)),
            f"Clients inside the cluster connect to {ip}:{sp.port}; nat KUBE-SERVICES matches it."))
    for ip in svc.external_ips:
        if family_of(ip) != family:
            continue
        frontends.append(_frontend(ctx, _FrontendSpec(
            "ExternalIP", ip, sp.port, "KUBE-SERVICES", (ext_chain, svc_chain),
            ("KUBE-EXTERNAL-SERVICES",)),
            f"externalIPs: traffic routed to this node for {ip}:{sp.port} is taken by kube-proxy "
            "(the address itself is not managed by Kubernetes)."))
    for ing in svc.load_balancer_ingress:
        if ing.ip is None or family_of(ing.ip) != family:
            continue
        if ing.ip_mode == "Proxy":
            continue
        frontends.append(_frontend(ctx, _FrontendSpec(
            "LoadBalancer", ing.ip, sp.port, "KUBE-SERVICES", (fw_chain, ext_chain, svc_chain),
            ("KUBE-EXTERNAL-SERVICES",)),
            f"The load balancer's address {ing.ip}:{sp.port}; packets the cloud LB delivers with this "
            "destination are caught on the node."))
    if sp.node_port:
        addresses, how = nodeport_addresses(snapshot, dump, family)
        for ip in addresses:
            frontends.append(_frontend(ctx, _FrontendSpec(
                "NodePort", ip, sp.node_port, "KUBE-NODEPORTS", (ext_chain, svc_chain),
                ("KUBE-EXTERNAL-SERVICES",), local_dst=True),
                f"NodePort {sp.node_port}: a packet to port {sp.node_port} on {how} leaves KUBE-SERVICES "
                "by its last rule for KUBE-NODEPORTS."))
    seen = dict(api)
    seen.update(ctx.programmed)
    return frontends, tuple(seen.values()), ctx.reached


def _owner(comment: str | None) -> str | None:
    """The Service a kube-proxy comment names ("ns/name" of "ns/name:port cluster IP")."""
    if not comment:
        return None
    return comment.split(" ", 1)[0].split(":", 1)[0]


def _owned(dump: IptablesDump) -> dict[str, list[tuple[str, str]]]:
    """Service chains by the Service their comment names: built once per dump, not once per Service."""
    nat = dump.table("nat")
    if nat is None:
        return {}

    def build() -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {}
        for name, comment in dump.first_comments("nat", SERVICE_CHAIN_PREFIXES).items():
            owner = _owner(comment)
            if owner is not None and comment is not None:
                out.setdefault(owner, []).append((name, comment))
        return out
    return nat.memoized("owners", build)


def stale_chains(svc: Service, dump: IptablesDump, reached: set[str]) -> tuple[StaleChain, ...]:
    """Chains whose comments name this Service but that its current ports do not reach."""
    nat = dump.table("nat")
    if nat is None:
        return ()
    return tuple(StaleChain(table="nat", chain=name, comment=comment, rule_count=nat.rule_count(name))
                 for name, comment in _owned(dump).get(svc.ref, ())
                 if name not in reached and _names_service(comment, svc))


def orphan_chains(dump: IptablesDump, current: set[str]) -> tuple[StaleChain, ...]:
    """Service chains whose hash matches no current Service port (``current``: their chain suffixes)."""
    nat = dump.table("nat")
    if nat is None:
        return ()
    comments = dump.first_comments("nat", SERVICE_CHAIN_PREFIXES)
    return tuple(StaleChain(table="nat", chain=name, comment=comment, rule_count=nat.rule_count(name))
                 for name, comment in comments.items()
                 if not name.startswith(naming.IPT_ENDPOINT_PREFIX) and name.rsplit("-", 1)[-1] not in current)


def _names_service(comment: str, svc: Service) -> bool:
    ref = svc.ref
    return comment == ref or comment.startswith((ref + ":", ref + " "))


def unreferenced_endpoint_chains(dump: IptablesDump) -> tuple[StaleChain, ...]:
    """KUBE-SEP chains no rule jumps to (left over from endpoints that went away)."""
    nat = dump.table("nat")
    if nat is None:
        return ()
    targets = dump.targets("nat")
    comments = dump.first_comments("nat", (naming.IPT_ENDPOINT_PREFIX,))
    return tuple(StaleChain("nat", name, comment, nat.rule_count(name)) for name, comment in comments.items()
                 if name not in targets)


def expected_endpoints(endpoints: tuple[EndpointInfo, ...]) -> tuple[EndpointInfo, ...]:
    """The endpoints kube-proxy should program for cluster traffic."""
    return categorize(tuple(e for e in endpoints if e.in_api)).cluster


class IptablesResolver:
    """iptables mode's side of the resolver contract (svctrace.resolver.contract)."""

    mode = ProxyMode.IPTABLES
    files: frozenset[str] = frozenset({NodeFile.IPTABLES, NodeFile.IP6TABLES})

    def gap(self, snapshot: Snapshot, family: int) -> str | None:
        if snapshot.dump(family) is None:
            return f"ip{'6' if family == 6 else ''}tables rules were not collected"
        return None

    def resolve_port(self, snapshot: Snapshot, svc: Service, sp: ServicePort, family: int) -> PortResult:
        dump = snapshot.dump(family)
        assert dump is not None
        return resolve_port(snapshot, svc, sp, family, dump)

    def stale_chains(self, snapshot: Snapshot, svc: Service, reached: set[str]) -> tuple[StaleChain, ...]:
        out: list[StaleChain] = []
        for dump in (snapshot.iptables, snapshot.ip6tables):
            if dump is not None:
                out += stale_chains(svc, dump, reached)
        return tuple(out)

    def orphans(self, snapshot: Snapshot) -> tuple[StaleChain, ...]:
        current = {naming.ipt_suffix(naming.service_port_name(s.namespace, s.name, p.name), p.protocol)
                   for s in snapshot.services for p in s.ports}
        out: list[StaleChain] = []
        for dump in (snapshot.iptables, snapshot.ip6tables):
            if dump is not None:
                out += orphan_chains(dump, current)
                out += unreferenced_endpoint_chains(dump)
        return tuple(out)

    def not_programmed(self, f: Frontend) -> str:
        proto = f.protocol.lower()
        if f.type == "NodePort":
            return f"no rule in nat KUBE-NODEPORTS matches -p {proto} --dport {f.port}"
        return f"no rule in nat KUBE-SERVICES (or filter KUBE-SERVICES/KUBE-EXTERNAL-SERVICES) matches " \
               f"-d {f.ip}/{32 if ':' not in f.ip else 128} -p {proto} --dport {f.port}"


register(IptablesResolver())
