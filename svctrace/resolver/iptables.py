"""iptables mode: follow a Service's frontends through kube-proxy's nat and filter chains.

Chains are found by kube-proxy's own naming hash (svctrace.kubeproxy.naming), so the join works when
rules carry no comments (large-cluster mode) and chains that no Service owns any more are noticed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from svctrace.kubeproxy import naming
from svctrace.model import graph as g
from svctrace.model.addresses import ip_value
from svctrace.model.graph import EndpointInfo, Frontend, Hop, RuleRef, StaleChain
from svctrace.model.iptables import EndpointLine, IptablesDump, Rule, ServiceLine, Table
from svctrace.model.k8s import Service, ServicePort
from svctrace.model.matches import (
    DST,
    SRC,
    AddrMatch,
    AddrTypeMatch,
    MarkMatch,
    PortMatch,
    ProtoMatch,
    StatisticMatch,
)
from svctrace.model.mode import ProxyMode
from svctrace.model.snapshot import NodeFile, Snapshot
from svctrace.record import record
from svctrace.resolver.chains import ChainWalk, RuleFacts, ladder
from svctrace.resolver.common import any_local_address, api_endpoints, categorize, family_of, frontend_verdict
from svctrace.resolver.contract import PortResult, RuleService, register
from svctrace.resolver.iptables_identity import services_in_rules
from svctrace.resolver.iptables_names import (
    current_suffixes,
    orphan_chains,
    port_chains,
    stale_chains,
    unreferenced_endpoint_chains,
)
from svctrace.resolver.iptables_rules import (
    DROP_CHAIN,
    DROP_MARK,
    IPTABLES_WORDS,
    dst_is,
    frontend_index,
    is_masq,
    port_index,
    proto_is,
    rule_facts,
    rule_ref,
    source_text,
)
from svctrace.resolver.rule_words import describe_source


class _Walk(ChainWalk[Rule]):
    """One Service port's walk of its nat chains (the shared walk, reading iptables rules)."""

    def __init__(self, snapshot: Snapshot, svc: Service, sp: ServicePort, dump: IptablesDump,
                 api: dict[tuple[str, int | None], EndpointInfo]) -> None:
        super().__init__(snapshot, svc, sp, "nat", api, IPTABLES_WORDS)
        self.dump = dump
        self.nat = dump.table("nat")
        self.filt = dump.table("filter")
        self.chains = port_chains(dump, svc, sp)
        # the filter REJECT/DROP rule for the frontend being walked; KUBE-EXT falls through to it
        self.filter_verdict: Rule | None = None
        self.lb_ip = ""  # the load balancer address whose KUBE-FW chain is being walked

    def rules(self, chain: str) -> Sequence[Rule] | None:
        c = self.nat.chain(chain) if self.nat is not None else None
        return c.rules if c is not None else None

    def endpoint_lines(self, chain: str) -> list[EndpointLine] | None:
        lines = self.nat.endpoint_lines(chain) if self.nat is not None else None
        if not lines:
            return None
        self.reached.add(chain)
        return lines

    def service_lines(self, chain: str) -> list[ServiceLine] | None:
        lines = self.nat.service_lines(chain) if self.nat is not None else None
        if not lines:
            return None
        self.reached.add(chain)
        return lines

    def not_in_dump(self) -> str | None:
        return self.dump.partial

    def local_chain(self, chain: str) -> bool:
        return chain.startswith("KUBE-XLB-")

    def drop_hop(self, rule: Rule, when: str | None) -> Hop:
        """KUBE-MARK-DROP: kubelet's filter KUBE-FIREWALL drops what it marks (certain only when the dump shows it)."""
        shown = self._kubelet_drop()
        ref = rule_ref(rule)
        if shown is not None:
            return Hop(kind="verdict", name="DROP", table="filter", when=when, rules=(ref, rule_ref(shown)),
                       verdict="DROP", explain="KUBE-MARK-DROP marks the packet 0x8000 and kubelet's filter "
                       "KUBE-FIREWALL drops what carries that mark.")
        return Hop(kind="verdict", name="DROP", table="filter", when=when, rules=(ref,), verdict="DROP",
                   notes=("dropped if KUBE-MARK-DROP and filter KUBE-FIREWALL are kubelet's usual chains (mark "
                          "0x8000, then DROP); they are not in the dump",),
                   explain="KUBE-MARK-DROP marks the packet 0x8000 for kubelet's filter KUBE-FIREWALL to drop.")

    def _kubelet_drop(self) -> Rule | None:
        chain = self.filt.chain("KUBE-FIREWALL") if self.filt is not None else None
        for rule in chain.rules if chain is not None else ():
            mark = rule.first(MarkMatch)
            if rule.target == "DROP" and mark is not None and not mark.negated and mark.value & DROP_MARK:
                return rule
        return None

    def ref(self, rule: Rule) -> RuleRef:
        return rule_ref(rule)

    def facts(self, rule: Rule) -> RuleFacts:
        return rule_facts(rule)

    def kind(self, chain: str) -> str:
        return naming.chain_kind(chain)

    def missing_explain(self, kind: str, name: str) -> str:
        if kind == "endpoint":
            return (f"{name} is jumped to but does not exist in the nat table; iptables-restore would have refused "
                    "this, so the dump is incomplete.")
        return f"{name} is jumped to but does not exist in the nat table."

    def endpoint_name(self, ip: str, port: int) -> str | None:
        if self.sp.chains is not None:
            return None  # a Service read from its rules: its name may not be the one the chains hash from
        return naming.ipt_endpoint_chain(self.chains.spn, self.sp.protocol, ip, port)

    def pick(self, rule: Rule, facts: RuleFacts, remaining: float, notes: list[str]
             ) -> tuple[list[tuple[str, RuleRef, float, str | None]], float] | None:
        target = facts.target
        if target is None or not target.startswith(naming.IPT_ENDPOINT_PREFIX):
            return None
        share, remaining = ladder(remaining, rule.probability, rule.index, notes)
        stat = rule.first(StatisticMatch)
        return [(target, rule_ref(rule), share, stat.raw if stat is not None and not stat.nth else None)], remaining

    def external_verdict(self, local_policy: bool) -> Hop | None:
        drop = self.filter_verdict
        if drop is None:
            return None
        return Hop(
            kind="verdict", name=drop.target or "DROP", table="filter",
            when="external clients" if local_policy else "otherwise", rules=(rule_ref(drop),), verdict=drop.target,
            explain=("No endpoint of this Service runs on this node, so external clients are dropped "
                     "(filter KUBE-EXTERNAL-SERVICES); the load balancer's health check on the "
                     "healthCheckNodePort fails and takes this node out of rotation."
                     if drop.target == "DROP" else
                     "The Service has no endpoints: filter KUBE-EXTERNAL-SERVICES rejects the connection."))

    def firewall_hop(self, chain_name: str, *, when: str | None, rules: tuple[RuleRef, ...], depth: int) -> Hop:
        """KUBE-FW: loadBalancerSourceRanges (v1.25+: only then); allowed sources go on, the rest are dropped:
        by KUBE-MARK-DROP at its end before v1.25, by filter KUBE-PROXY-FIREWALL after."""
        chain = self.follow(chain_name)
        if chain is None:
            return self.missing("firewall", chain_name, when, rules)
        own: list[RuleRef] = []
        children: list[Hop] = []
        allowed: list[str] = []
        masquerade = None
        passed = False  # an earlier rule sends every source on: nothing after it is reached
        for rule in chain:
            target = rule.target or ""
            if passed:
                own.append(rule_ref(rule))
            elif target.startswith(naming.IPT_SERVICE_PREFIXES):
                cond = describe_source(rule)
                if rule.source is not None and not rule.source.negated:
                    allowed.append(source_text(rule) or "")
                passed = cond is None
                children.append(self.walk(target, when=cond, rules=(rule_ref(rule),), depth=depth + 1))
            elif is_masq(rule):
                masquerade = describe_source(rule) or "always"
                own.append(rule_ref(rule))
            elif target == DROP_CHAIN:
                children.append(self.drop_hop(rule, "any other source"))
                passed = True
            else:
                own.append(rule_ref(rule))
        drop = None
        if not passed:
            candidates = port_index(self.filt, "KUBE-PROXY-FIREWALL").get(self.sp.port, []) if self.filt else []
            drop = next((r for r in candidates if r.target == "DROP" and dst_is(r, self.lb_ip)), None)
        if drop is not None:
            children.append(Hop(
                kind="verdict", name="DROP", table="filter", when="any other source", rules=(rule_ref(drop),),
                verdict="DROP",
                explain="Sources outside loadBalancerSourceRanges fall through KUBE-FW without DNAT; "
                        "filter KUBE-PROXY-FIREWALL then drops them.",
            ))
        if allowed:
            explain = "loadBalancerSourceRanges: only " + ", ".join(allowed) + " may use this load balancer IP."
        elif passed and not any(c.verdict == "DROP" for c in children):
            explain = "The load balancer IP's firewall chain: no loadBalancerSourceRanges, so every source goes on."
        else:
            explain = "loadBalancerSourceRanges: only no source may use this load balancer IP."
        notes = () if passed or drop is not None else ("no filter KUBE-PROXY-FIREWALL DROP for other sources",)
        return Hop(kind="firewall", name=chain_name, table="nat", when=when, rules=rules + tuple(own),
                   masquerade=masquerade, explain=explain, notes=notes, children=tuple(children))


def _filter_verdict_hop(rule: Rule, what: str, policy_note: str) -> Hop:
    target = rule.target or "REJECT"
    if target == "REJECT":
        explain = (f"The Service has no usable endpoints, so filter {rule.chain} rejects new connections to "
                   f"{what} (ICMP port unreachable, seen by clients as 'connection refused') rather than "
                   "letting them time out.")
    else:
        explain = f"filter {rule.chain} drops new connections to {what}: {policy_note}"
    return Hop(kind="verdict", name=target, table="filter", rules=(rule_ref(rule),), verdict=target, explain=explain)


def _filter_rule_for(ctx: _Walk, chains: tuple[str, ...], ip: str | None, port: int,
                     local_dst: bool = False) -> Rule | None:
    if ctx.filt is None:
        return None
    for chain in chains:
        for rule in port_index(ctx.filt, chain).get(port, ()):
            if rule.target not in ("REJECT", "DROP") or not proto_is(rule, ctx.sp.protocol):
                continue
            if ip is not None and dst_is(rule, ip):
                return rule
            if local_dst and rule.destination is None and any(t.field != SRC for t in rule.all(AddrTypeMatch)):
                return rule
    return None


# The built-in filter chains each kind of client passes, and those clients in words.
_PATHS = {"ClusterIP": ("FORWARD", "OUTPUT"), "ExternalIP": ("FORWARD", "OUTPUT"),
          "LoadBalancer": ("FORWARD", "OUTPUT"), "NodePort": ("INPUT", "OUTPUT")}
_CLIENTS = {"FORWARD": "pods and clients routed through this node", "OUTPUT": "this node's own connections",
            "INPUT": "clients of this node's own addresses"}


def filter_reach(filt: Table, chain: str) -> frozenset[str] | None:
    """The built-in filter chains that jump to ``chain`` (kube-proxy's jumps changed over the eras); None when the
    dump shows no built-in chain at all (a fragment, restore input), so nothing can be said."""
    def build() -> frozenset[str] | None:
        shown = [c for c in ("INPUT", "FORWARD", "OUTPUT") if filt.has(c)]
        if not any(filt.rule_count(c) for c in shown):
            return None
        return frozenset(c for c in shown
                         if any(r.target == chain for r in filt.chain(c).rules))  # type: ignore[union-attr]
    return filt.memoized(f"reach:{chain}", build)


def _filter_hops(ctx: _Walk, spec: _FrontendSpec, rule: Rule) -> list[Hop]:
    """The filter verdict for a frontend without a nat rule, for the clients whose path reaches it; the others
    leave untranslated (before v1.14 pods' connections to a Service without endpoints were not REJECTed)."""
    what = f"{spec.ip}:{spec.port}" if spec.type != "NodePort" else f"NodePort {spec.port}"
    if spec.type == "ClusterIP":
        reason = ("internalTrafficPolicy is Local and no endpoint runs on this node, so pods on this node "
                  "cannot reach the Service.")
    else:
        reason = "externalTrafficPolicy is Local and no endpoint runs on this node."
    hop = _filter_verdict_hop(rule, what, reason)
    reach = filter_reach(ctx.filt, rule.chain) if ctx.filt is not None else None
    paths = _PATHS.get(spec.type, ())
    if reach is None or all(p in reach for p in paths):
        return [hop]
    missed = [p for p in paths if p not in reach]
    return [replace(hop, when=" and ".join(_CLIENTS[p] for p in paths if p in reach) or "no client"),
            Hop(kind="verdict", name="untranslated", table="filter", when=" and ".join(_CLIENTS[p] for p in missed),
                verdict="ACCEPT",
                explain=f"filter {rule.chain} is not reached from {'/'.join(missed)} on this node, so these "
                        "connections are neither translated nor refused: they leave by routing towards the "
                        "Service address and time out.")]


@record
class _FrontendSpec:
    type: str
    ip: str
    port: int
    dispatch_chain: str  # nat chain holding the dispatch rule
    targets: tuple[str, ...]
    filter_chains: tuple[str, ...]
    local_dst: bool = False


_SAME_FRONTEND = (AddrMatch, PortMatch, ProtoMatch)


def _conditions(rule: Rule) -> frozenset[object]:
    """What a dispatch rule matches beyond its frontend's address, port and protocol."""
    return frozenset(m for m in rule.matches if not (isinstance(m, _SAME_FRONTEND) and getattr(m, "field", DST) in
                                                     (DST, "dport") and not m.negated))


def _dispatch_hops(ctx: _Walk, spec: _FrontendSpec, dispatch: list[Rule], notes: list[str]) -> list[Hop]:
    """The hops of a frontend's dispatch rules: a later rule is reached only by what the earlier ones do not
    match (pre-v1.24 externalIPs have two complementary rules, physdev/addrtype, and both are used)."""
    used = [dispatch[0]]
    for rule in dispatch[1:]:
        if not any(_conditions(u) <= _conditions(rule) for u in used):
            used.append(rule)
    if len(dispatch) > len(used):
        notes.append(f"{len(dispatch)} rules in {spec.dispatch_chain} match this frontend; "
                     f"only the first {'is' if len(used) == 1 else f'{len(used)} are'} ever used")
    hops = []
    for rule in used:
        when = None
        if len(used) > 1:
            when = ", ".join(getattr(m, "text", str(m)) for m in rule.matches if m in _conditions(rule)) or None
        hops.append(ctx.walk(rule.target or "", when=when, rules=(rule_ref(rule),), depth=0))
    return hops


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
        if not proto_is(rule, sp.protocol):
            continue
        if spec.type == "NodePort":
            dst = rule.destination
            if dst is not None and not dst.negated and str(dst.prefixes[0]).startswith(("127.", "::1")):
                if rule.target in spec.targets:
                    localhost.append(rule)
                continue
        elif not dst_is(rule, spec.ip):
            continue
        if rule.target in spec.targets:
            dispatch.append(rule)
        elif is_masq(rule):
            older_masq.append(rule)
    notes: list[str] = []
    filt = _filter_rule_for(ctx, spec.filter_chains, None if spec.type == "NodePort" else spec.ip,
                            spec.port, local_dst=spec.local_dst)
    ctx.filter_verdict = filt
    ctx.lb_ip = spec.ip
    hops: list[Hop] = []
    if dispatch:
        hops = _dispatch_hops(ctx, spec, dispatch, notes)
        if older_masq:
            hops = [replace(hop, masquerade=describe_source(older_masq[0]) or "always",
                            rules=(rule_ref(older_masq[0]),) + hop.rules) for hop in hops]
        if filt is not None and frontend_verdict(tuple(hops)) == g.UNTRANSLATED:
            # v1.2-v1.13: a Service without endpoints keeps its (empty) nat chain; the filter REJECT refuses
            # what reaches it after that (the node's own connections before v1.14)
            hops += [h for h in _filter_hops(ctx, spec, filt) if h.verdict != "ACCEPT"]
    elif filt is not None:
        hops = _filter_hops(ctx, spec, filt)
    elif ctx.dump.partial is not None and spec.type == "ClusterIP" and ctx.nat is not None \
            and ctx.nat.has(spec.targets[0]):
        # A fragment without the dispatch rule: the Service chain is there, and names the ClusterIP itself
        hops = [ctx.walk(spec.targets[0], when=None, rules=(), depth=0)]
        notes.append(f"the rule in nat {spec.dispatch_chain} that leads to {spec.targets[0]} is not in the dump "
                     f"({ctx.dump.partial}); the chain itself is followed")
    if localhost:
        notes.append(f"also answers on 127.0.0.1:{spec.port} from this node (localhost NodePorts, needs "
                     "net.ipv4.conf.all.route_localnet=1)")
    verdict = frontend_verdict(tuple(hops)) if hops else g.NOT_PROGRAMMED
    if verdict == g.NOT_PROGRAMMED:
        where = f"nat {spec.dispatch_chain} or filter {'/'.join(spec.filter_chains)}"
        if ctx.dump.partial is not None:
            verdict = g.UNKNOWN
            notes.append(f"no rule in {where} handles this frontend in the dump, which is partial "
                         f"({ctx.dump.partial}): whether kube-proxy programmed it is not known")
        else:
            notes.append(f"no rule in {where} handles this frontend: kube-proxy has not programmed it on this node")
    elif verdict == g.UNTRANSLATED and dispatch:
        notes.append("the chain this frontend jumps to has no rule that translates it: the packet leaves by "
                     "routing towards the Service address and times out (kube-proxy v1.1 left a Service without "
                     "endpoints so)")
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
    return any_local_address(snapshot, family)


def resolve_port(snapshot: Snapshot, svc: Service, sp: ServicePort, family: int,
                 dump: IptablesDump) -> tuple[list[Frontend], tuple[EndpointInfo, ...], set[str]]:
    """Every frontend of one Service port in one IP family, and the endpoints seen."""
    api = {(e.ip, e.port): e for e in api_endpoints(snapshot, svc, sp, family)}
    ctx = _Walk(snapshot, svc, sp, dump, api)
    suffix = ctx.chains.suffix
    svc_chain, svl_chain, ext_chain, fw_chain, xlb_chain = (
        prefix + suffix for prefix in ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-"))
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
            "ExternalIP", ip, sp.port, "KUBE-SERVICES", (ext_chain, svc_chain, xlb_chain),
            ("KUBE-EXTERNAL-SERVICES", "KUBE-SERVICES")),
            f"externalIPs: traffic routed to this node for {ip}:{sp.port} is taken by kube-proxy "
            "(the address itself is not managed by Kubernetes)."))
    for ing in svc.load_balancer_ingress:
        if ing.ip is None or family_of(ing.ip) != family:
            continue
        if ing.ip_mode == "Proxy":
            continue
        frontends.append(_frontend(ctx, _FrontendSpec(
            "LoadBalancer", ing.ip, sp.port, "KUBE-SERVICES", (fw_chain, ext_chain, svc_chain, xlb_chain),
            ("KUBE-EXTERNAL-SERVICES", "KUBE-SERVICES")),
            f"The load balancer's address {ing.ip}:{sp.port}; packets the cloud LB delivers with this "
            "destination are caught on the node."))
    if sp.node_port:
        addresses, how = nodeport_addresses(snapshot, dump, family)
        for ip in addresses:
            frontends.append(_frontend(ctx, _FrontendSpec(
                "NodePort", ip, sp.node_port, "KUBE-NODEPORTS", (ext_chain, svc_chain, xlb_chain),
                ("KUBE-EXTERNAL-SERVICES", "KUBE-SERVICES"), local_dst=True),
                f"NodePort {sp.node_port}: a packet to port {sp.node_port} on {how} leaves KUBE-SERVICES "
                "by its last rule for KUBE-NODEPORTS."))
    if ctx.chains.note is not None and frontends:
        frontends[0] = replace(frontends[0], notes=(*frontends[0].notes, ctx.chains.note))
    seen = dict(api)
    seen.update(ctx.programmed)
    return frontends, tuple(seen.values()), ctx.reached


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
        if not snapshot.api_collected:
            return ()  # which Services exist is not known: no chain can be called left over
        current = current_suffixes(snapshot.services)
        out: list[StaleChain] = []
        for dump in (snapshot.iptables, snapshot.ip6tables):
            if dump is not None:
                out += orphan_chains(dump, snapshot.services, current)
                out += unreferenced_endpoint_chains(dump)
        return tuple(out)

    def services_in_rules(self, snapshot: Snapshot) -> tuple[RuleService, ...]:
        return tuple(s for dump in (snapshot.iptables, snapshot.ip6tables) if dump is not None
                     for s in services_in_rules(dump))

    def not_programmed(self, frontend: Frontend) -> str:
        proto = frontend.protocol.lower()
        if frontend.type == "NodePort":
            return f"no rule in nat KUBE-NODEPORTS matches -p {proto} --dport {frontend.port}"
        return f"no rule in nat KUBE-SERVICES (or filter KUBE-SERVICES/KUBE-EXTERNAL-SERVICES) matches " \
               f"-d {frontend.ip}/{32 if ':' not in frontend.ip else 128} -p {proto} --dport {frontend.port}"


register(IptablesResolver())
