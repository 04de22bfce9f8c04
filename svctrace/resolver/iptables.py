"""iptables mode: follow a Service's frontends through kube-proxy's nat and filter chains.

Chains are found by kube-proxy's own naming hash (svctrace.kubeproxy.naming), so the join works when
rules carry no comments (large-cluster mode) and chains that no Service owns any more are noticed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from svctrace.kubeproxy import naming
from svctrace.model import graph as g
from svctrace.model.graph import EndpointInfo, Frontend, Hop, RuleRef, StaleChain
from svctrace.model.iptables import IptablesDump, Rule, Table
from svctrace.model.k8s import Service, ServicePort
from svctrace.model.matches import SRC, AddrTypeMatch, DnatAction, RecentMatch, StatisticMatch, ip_value
from svctrace.model.mode import ProxyMode
from svctrace.model.snapshot import NodeFile, Snapshot
from svctrace.resolver.chains import ChainWalk, RuleFacts, Words
from svctrace.resolver.common import api_endpoints, categorize, family_of, frontend_verdict, node_addresses
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


def _kind(chain: str) -> str:
    for prefix, kind in KIND_BY_PREFIX.items():
        if chain.startswith(prefix):
            return kind
    return "chain"


def _ref(rule: Rule) -> RuleRef:
    return RuleRef(table=rule.table, chain=rule.chain, index=rule.index, text=rule.text)


def _host(rule: Rule) -> tuple[int, int] | None:
    """(version, address) of a rule's single-address destination (``-d IP/32``); None for any other."""
    d = rule.destination
    if d is None or d.negated or len(d.prefixes) != 1 or not d.prefixes[0].is_host:
        return None
    return d.prefixes[0].version, d.prefixes[0].net


def _dst_is(rule: Rule, ip: str) -> bool:
    host = _host(rule)
    return host is not None and host == ip_value(naming.normalize_ip(ip))


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


def frontend_index(table: Table, chain: str) -> dict[tuple[tuple[int, int], int], list[Rule]]:
    """The rules of a chain that match one destination address and port, by (address, port): what a
    ClusterIP, externalIP or load balancer frontend is looked up by (built once per table)."""
    def build() -> dict[tuple[tuple[int, int], int], list[Rule]]:
        out: dict[tuple[tuple[int, int], int], list[Rule]] = {}
        for port, rules in port_index(table, chain).items():
            for rule in rules:
                host = _host(rule)
                if host is not None:
                    out.setdefault((host, port), []).append(rule)
        return out
    return table.memoized(f"frontends:{chain}", build)


IPTABLES_WORDS = Words(
    dnat="DNAT",
    records="-m recent --set records the client, so session affinity sends it here again.",
    missing_note="chain missing from the dump",
    local="KUBE-SVL holds only the endpoints on this node (traffic policy Local).",
    balance="kube-proxy balances new connections over {n} endpoints with -m statistic: each rule takes its "
            "probability of the connections that reach it (1/n, 1/(n-1), ... then the rest), so each endpoint "
            "gets an equal share.",
    masq_marked="KUBE-POSTROUTING masquerades them",
    affinity="sessionAffinity ClientIP: a client seen in the last {seconds}s (-m recent --rcheck) goes straight "
             "back to its endpoint; only new clients are balanced.",
    fallthrough="(no KUBE-SVL jump and no filter rule)",
    not_followed="not a kube-proxy chain; not followed",
)


def rule_facts(rule: Rule) -> RuleFacts:
    """What a rule of kube-proxy's Service chains does, read from its typed matches and target."""
    target = rule.target
    src = rule.source
    dnat = dnat_note = None
    skip = False
    if target == "DNAT":
        action = rule.action
        first = action.first if isinstance(action, DnatAction) else None
        if first is None or first.first_ip is None:
            if isinstance(action, DnatAction) and action.problem == "DNAT rule without --to-destination":
                dnat_note, skip = f"DNAT rule without --to-destination (rule {rule.index})", True
            else:
                shown = repr(action.raw) if isinstance(action, DnatAction) and action.raw else "(no address)"
                dnat_note = f"rule {rule.index}: cannot read the DNAT destination {shown}: {rule.text}"
        else:
            dnat = (first.first_ip, first.first_port)
    rcheck = next((m for m in rule.all(RecentMatch) if m.op == "rcheck"), None)
    return RuleFacts(
        index=rule.index, text=rule.text, target=target, goto=rule.goto, masq=target == MASQ_CHAIN,
        source=describe_source(rule),
        hairpin=_source_text(rule) if src is not None and not src.negated else None,
        pod_network=_source_text(rule) if src is not None and src.negated else None,
        dnat=dnat, dnat_note=dnat_note, dnat_skip=skip,
        records_affinity=any(m.op == "set" for m in rule.all(RecentMatch)),
        affinity_seconds=(str(rcheck.seconds) if rcheck.seconds is not None else "?") if rcheck is not None else None,
        action_less=target is None,
    )


class _Walk(ChainWalk[Rule]):
    """One Service port's walk of its nat chains (the shared walk, reading iptables rules)."""

    def __init__(self, snapshot: Snapshot, svc: Service, sp: ServicePort, dump: IptablesDump,
                 api: dict[tuple[str, int | None], EndpointInfo]) -> None:
        super().__init__(snapshot, svc, sp, "nat", api, IPTABLES_WORDS)
        self.dump = dump
        self.nat = dump.table("nat")
        self.filt = dump.table("filter")
        # the filter REJECT/DROP rule for the frontend being walked; KUBE-EXT falls through to it
        self.filter_verdict: Rule | None = None
        self.lb_ip = ""  # the load balancer address whose KUBE-FW chain is being walked

    def rules(self, chain: str) -> Sequence[Rule] | None:
        c = self.nat.chain(chain) if self.nat is not None else None
        return c.rules if c is not None else None

    def ref(self, rule: Rule) -> RuleRef:
        return _ref(rule)

    def facts(self, rule: Rule) -> RuleFacts:
        return rule_facts(rule)

    def kind(self, chain: str) -> str:
        return _kind(chain)

    def missing_explain(self, kind: str, name: str) -> str:
        if kind == "endpoint":
            return (f"{name} is jumped to but does not exist in the nat table; iptables-restore would have refused "
                    "this, so the dump is incomplete.")
        return f"{name} is jumped to but does not exist in the nat table."

    def endpoint_name(self, ip: str, port: int) -> str:
        return naming.ipt_endpoint_chain(naming.service_port_name(self.svc.namespace, self.svc.name, self.sp.name),
                                         self.sp.protocol, ip, port)

    def pick(self, rule: Rule, facts: RuleFacts, remaining: float, notes: list[str]
             ) -> tuple[list[tuple[str, RuleRef, float, str | None]], float] | None:
        target = facts.target
        if target is None or not target.startswith(naming.IPT_ENDPOINT_PREFIX):
            return None
        prob = rule.probability
        if remaining <= 0:
            notes.append(f"rule {rule.index} is never reached: an earlier rule takes every connection")
            share = 0.0
        elif prob is None:
            share, remaining = remaining, 0.0
        else:
            share = remaining * prob
            remaining -= share
        stat = rule.first(StatisticMatch)
        return [(target, _ref(rule), share, stat.raw if stat is not None and not stat.nth else None)], remaining

    def external_verdict(self, local_policy: bool) -> Hop | None:
        drop = self.filter_verdict
        if drop is None:
            return None
        return Hop(
            kind="verdict", name=drop.target or "DROP", table="filter",
            when="external clients" if local_policy else "otherwise", rules=(_ref(drop),), verdict=drop.target,
            explain=("No endpoint of this Service runs on this node, so external clients are dropped "
                     "(filter KUBE-EXTERNAL-SERVICES); the load balancer's health check on the "
                     "healthCheckNodePort fails and takes this node out of rotation."
                     if drop.target == "DROP" else
                     "The Service has no endpoints: filter KUBE-EXTERNAL-SERVICES rejects the connection."))

    def firewall_hop(self, chain_name: str, *, when: str | None, rules: tuple[RuleRef, ...], depth: int) -> Hop:
        """KUBE-FW: loadBalancerSourceRanges; allowed sources go on, the rest are dropped in filter."""
        self.reached.add(chain_name)
        chain = self.rules(chain_name)
        if chain is None:
            return self.missing("firewall", chain_name, when, rules)
        own: list[RuleRef] = []
        children: list[Hop] = []
        allowed: list[str] = []
        for rule in chain:
            target = rule.target or ""
            if target.startswith(naming.IPT_SERVICE_PREFIXES):
                if rule.source is not None and not rule.source.negated:
                    allowed.append(_source_text(rule) or "")
                children.append(self.walk(target, when=describe_source(rule), rules=(_ref(rule),), depth=depth + 1))
            else:
                own.append(_ref(rule))
        candidates = port_index(self.filt, "KUBE-PROXY-FIREWALL").get(self.sp.port, []) if self.filt else []
        drop = next((r for r in candidates if r.target == "DROP" and _dst_is(r, self.lb_ip)), None)
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


def _filter_verdict_hop(rule: Rule, what: str, policy_note: str) -> Hop:
    target = rule.target or "REJECT"
    if target == "REJECT":
        explain = (f"The Service has no usable endpoints, so filter {rule.chain} rejects new connections to "
                   f"{what} (ICMP port unreachable, seen by clients as 'connection refused') rather than "
                   "letting them time out.")
    else:
        explain = f"filter {rule.chain} drops new connections to {what}: {policy_note}"
    return Hop(kind="verdict", name=target, table="filter", rules=(_ref(rule),), verdict=target, explain=explain)


def _filter_rule_for(ctx: _Walk, chains: tuple[str, ...], ip: str | None, port: int,
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


def _frontend(ctx: _Walk, spec: _FrontendSpec, explain: str) -> Frontend:
    sp = ctx.sp
    dispatch: list[Rule] = []
    older_masq: list[Rule] = []
    localhost: list[Rule] = []
    if ctx.nat is None:
        candidates: list[Rule] = []
    elif spec.type == "NodePort":
        candidates = port_index(ctx.nat, spec.dispatch_chain).get(spec.port, [])
    else:
        host = ip_value(naming.normalize_ip(spec.ip))
        candidates = frontend_index(ctx.nat, spec.dispatch_chain).get((host, spec.port), []) if host else []
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
    ctx.filter_verdict = filt
    ctx.lb_ip = spec.ip
    hops: list[Hop] = []
    if dispatch:
        rule = dispatch[0]
        hop = ctx.walk(rule.target or "", when=None, rules=(_ref(rule),), depth=0)
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
    addresses, which = node_addresses(snapshot, family)
    if addresses == ("*",):
        return addresses, f"any local address of this node ({which})"
    return addresses, f"any local address of this node (shown: {which})"


def resolve_port(snapshot: Snapshot, svc: Service, sp: ServicePort, family: int,
                 dump: IptablesDump) -> tuple[list[Frontend], tuple[EndpointInfo, ...], set[str]]:
    """Every frontend of one Service port in one IP family, and the endpoints seen."""
    api = {(e.ip, e.port): e for e in api_endpoints(snapshot, svc, sp, family)}
    ctx = _Walk(snapshot, svc, sp, dump, api)
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
