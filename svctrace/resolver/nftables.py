"""nftables mode: follow a Service's frontends through kube-proxy's ``ip kube-proxy`` / ``ip6 kube-proxy`` table.

kube-proxy dispatches with verdict maps instead of a rule per Service: ``service-ips`` (address . proto . port),
``service-nodeports`` (proto . port), ``firewall-ips`` (loadBalancerSourceRanges, checked before DNAT) and, in
the filter hooks, ``no-endpoint-services`` / ``no-endpoint-nodeports`` (REJECT or DROP). The per-Service chains
mirror iptables mode's: ``service-`` (KUBE-SVC), ``local-`` (KUBE-SVL), ``external-`` (KUBE-EXT), ``firewall-``
(KUBE-FW), ``endpoint-`` (KUBE-SEP), so the PathGraph has the same shape and hop kinds. Rules are read from
their `nft list` text, which both the JSON and the transaction-text parser produce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from svctrace.kubeproxy import naming
from svctrace.model import graph as g
from svctrace.model.actions import DnatAction, ElementPart, Jump, MapLookup, Numgen, SetLookup, SetUpdate, Verdict
from svctrace.model.addresses import Prefix
from svctrace.model.graph import EndpointInfo, Frontend, Hop, RuleRef, StaleChain
from svctrace.model.iptables import EndpointLine
from svctrace.model.k8s import Service, ServicePort
from svctrace.model.matches import SRC, AddrMatch, AddrTypeMatch
from svctrace.model.mode import ProxyMode
from svctrace.model.nft import KUBE_PROXY_TABLE, NftElement, NftRule, NftRuleset, NftSet, NftTable
from svctrace.model.snapshot import NodeFile, Snapshot
from svctrace.resolver.chains import ChainWalk, RuleFacts, Words, pct
from svctrace.resolver.common import any_local_address, api_endpoints, family_of, frontend_verdict
from svctrace.resolver.contract import PortResult, RuleService, register

MASQ_CHAIN = "mark-for-masquerade"
def _kind(chain: str) -> str:
    return naming.chain_kind(chain, nft=True)


def _addr(value: str) -> str:
    return naming.normalize_ip(value)


def _saddr(rule: NftRule) -> AddrMatch | None:
    return next((s for s in rule.stmts if isinstance(s, AddrMatch) and s.field == SRC), None)


def _cidrs(m: AddrMatch) -> list[str]:
    return [str(p) for p in m.prefixes]


def describe_source(rule: NftRule) -> str | None:
    """The source condition of a rule in words, or None when it matches any source."""
    parts = []
    m = _saddr(rule)
    if m is not None:
        cidrs = ", ".join(_cidrs(m))
        parts.append(f"source not in {cidrs}" if m.negated else f"source in {cidrs}")
    for t in rule.stmts:
        if isinstance(t, AddrTypeMatch) and t.field == SRC and t.types == {"LOCAL"} and t.limit_iface is None:
            what = "a local address of this node"
            parts.append(f"source is not {what}" if t.negated else f"source is {what}")
    return ", ".join(parts) or None


def _target(rule: NftRule) -> tuple[str | None, str | None]:
    """(jump|goto, chain) of a rule that ends in one, else (None, None)."""
    last = rule.stmts[-1] if rule.stmts else None
    if isinstance(last, Jump):
        return ("goto" if last.goto else "jump"), last.chain
    return None, None


def _dnat(rule: NftRule) -> tuple[str, int | None] | None:
    for s in rule.stmts:
        if isinstance(s, DnatAction) and not s.redirect and s.first is not None and s.first.first_ip is not None:
            return _addr(s.first.first_ip), s.first.first_port
    return None


def _part_text(part: ElementPart) -> str:
    if isinstance(part, Prefix):
        return str(part)
    if isinstance(part, tuple) and len(part) == 2:
        return str(part[0]) if part[0] == part[1] else f"{part[0]}-{part[1]}"
    return str(part)


def _index(m: NftSet) -> dict[tuple[str, ...], NftElement]:
    """A set or map's elements by their key (address parts canonical), built once per set."""
    got = _INDEXES.get(id(m))
    if got is None or got[0] is not m:
        if len(_INDEXES) > 64:
            _INDEXES.clear()
        index: dict[tuple[str, ...], NftElement] = {}
        for elem in m.elements:
            index.setdefault(tuple(_part_text(p) for p in elem.parts), elem)
        got = _INDEXES[id(m)] = (m, index)
    return got[1]


_INDEXES: dict[int, tuple[NftSet, dict[tuple[str, ...], NftElement]]] = {}


def _verdict_text(v: Verdict | Jump | None) -> str:
    if isinstance(v, Jump):
        return f"{'goto' if v.goto else 'jump'} {v.chain}"
    return v.word if v is not None else ""


NFT_WORDS = Words(
    dnat="dnat",
    records="update @affinity-... records the client, so session affinity sends it here again.",
    missing_note="chain missing from the ruleset",
    local="The local- chain holds only the endpoints on this node (traffic policy Local).",
    balance="kube-proxy balances new connections over {n} endpoints with `numgen random mod {n}`: a random "
            "number picks one entry of the verdict map, so each endpoint gets an equal share.",
    masq_marked="the masquerading chain SNATs them",
    affinity="sessionAffinity ClientIP: a client in an endpoint's affinity set (kept {seconds}s) goes straight "
             "back to that endpoint; only new clients are balanced.",
    fallthrough="(no goto and no no-endpoint-services element)",
    not_followed="not a kube-proxy service chain; not followed",
)


class _Walk(ChainWalk[NftRule]):
    """One Service port's walk of kube-proxy's nftables chains (the shared walk, reading nft rules)."""

    def __init__(self, snapshot: Snapshot, svc: Service, sp: ServicePort, table: NftTable,
                 api: dict[tuple[str, int | None], EndpointInfo]) -> None:
        super().__init__(snapshot, svc, sp, table.ref, api, NFT_WORDS)
        self.nft = table
        # the no-endpoint-* element for the frontend being walked; the external chain falls through to it
        self.external_refs: tuple[RuleRef, ...] | None = None
        self.external_value: Verdict | Jump | None = None

    @property
    def ref_name(self) -> str:
        return self.nft.ref

    def rules(self, chain: str) -> Sequence[NftRule] | None:
        c = self.nft.chain(chain)
        return c.rules if c is not None else None

    def ref(self, rule: NftRule) -> RuleRef:
        return RuleRef(table=self.table, chain=rule.chain, index=rule.index, text=rule.full_text)

    def endpoint_lines(self, chain: str) -> list[EndpointLine] | None:
        lines = self.nft.endpoint_lines(chain)
        if not lines:
            return None
        self.reached.add(chain)
        return lines

    def facts(self, rule: NftRule) -> RuleFacts:
        verb, target = _target(rule)
        src = _saddr(rule)
        lookup = next((st for st in rule.stmts if isinstance(st, SetLookup) and st.keys[:1] in (
            ("ip saddr",), ("ip6 saddr",)) and st.set_name is not None), None)
        seconds = None
        if lookup is not None and lookup.set_name:
            aff_set = self.nft.sets.get(lookup.set_name)
            got = aff_set.timeout_seconds if aff_set is not None else None
            seconds = str(got) if got is not None else "?"
        return RuleFacts(
            index=rule.index, text=rule.full_text, target=target, goto=verb == "goto", masq=target == MASQ_CHAIN,
            source=describe_source(rule),
            hairpin=", ".join(_cidrs(src)) if src is not None and not src.negated else None,
            pod_network=", ".join(_cidrs(src)) if src is not None and src.negated else None,
            dnat=_dnat(rule), records_affinity=any(isinstance(st, SetUpdate) for st in rule.stmts),
            affinity_seconds=seconds)

    def kind(self, chain: str) -> str:
        return _kind(chain)

    def missing_explain(self, kind: str, name: str) -> str:
        return (f"{name} is jumped to but does not exist in {self.table}; nft would have refused this, so the "
                "ruleset is incomplete.")

    def endpoint_name(self, ip: str, port: int) -> str:
        return endpoint_chain_name(self.svc.namespace, self.svc.name, self.sp.protocol, self.sp.name, ip, port)

    def pick(self, rule: NftRule, facts: RuleFacts, remaining: float, notes: list[str]
             ) -> tuple[list[tuple[str, RuleRef, float, str | None]], float] | None:
        numgen = next((st for st in rule.stmts if isinstance(st, Numgen)), None)
        if numgen is not None:
            mod, offset = numgen.mod, numgen.offset
            entries = [(e.key[0][0], e.verdict.chain) for e in numgen.elements
                       if len(e.key) == 1 and isinstance(e.key[0], tuple) and len(e.key[0]) == 2
                       and e.key[0][0] == e.key[0][1] and isinstance(e.verdict, Jump)]
            hit = [(k, t) for k, t in entries if offset <= k < offset + mod]
            if remaining <= 0:
                notes.append(f"rule {rule.index} is never reached: an earlier rule takes every connection")
            each = remaining / mod if mod else 0.0
            picked: list[tuple[str, RuleRef, float, str | None]] = [  # (each endpoint's hop shows its element)
                (t, replace(self.ref(rule), text=rule.shown_text(f"goto {t}")), each, f"{k} of mod {mod}")
                for k, t in hit]
            if len(hit) < mod:
                notes.append(f"numgen mod {mod} has {len(hit)} entries: {pct(each * (mod - len(hit)))} of "
                             "connections match no entry and fall through")
            return picked, 0.0
        if facts.target is not None and _kind(facts.target) == "endpoint" and facts.goto:
            return [(facts.target, self.ref(rule), remaining, None)], 0.0
        return None

    def external_verdict(self, local_policy: bool) -> Hop | None:
        if self.external_refs is None or self.external_value is None:
            return None
        return _verdict_hop(self, self.external_value, self.external_refs,
                            when="external clients" if local_policy else "otherwise",
                            what="this address", reason="no endpoint of this Service runs on this node, so "
                            "external clients are dropped; the load balancer's health check on the "
                            "healthCheckNodePort fails and takes this node out of rotation.")

    def firewall_hop(self, chain: str, *, when: str | None, rules: tuple[RuleRef, ...], depth: int) -> Hop:
        # Firewall chains are reached from the firewall-ips map in the filter hook, not by a jump (_frontend).
        return Hop(kind="firewall", name=chain, table=self.table, when=when, rules=rules,
                   notes=(self.words.not_followed,))


def _map_rule(table: NftTable, chain: str, map_name: str) -> NftRule | None:
    """The rule in ``chain`` that looks packets up in ``@map_name``."""
    c = table.chain(chain)
    for rule in c.rules if c is not None else ():
        if any(isinstance(st, MapLookup) and st.map_name == map_name for st in rule.stmts):
            return rule
    return None


def _element_refs(ctx: _Walk, chain: str, m: NftSet, elem: NftElement) -> tuple[RuleRef, ...]:
    """The lookup rule and the map element it finds, as the rules a hop rests on."""
    rule = _map_rule(ctx.nft, chain, m.name)
    refs = [ctx.ref(rule)] if rule is not None else []
    refs.append(RuleRef(table=ctx.table, chain=rule.chain if rule is not None else chain,
                        index=rule.index if rule is not None else 0, text=f"element {m.name} {{ {elem.text} }}"))
    return tuple(refs)


def _find(m: NftSet | None, key: tuple[str, ...]) -> NftElement | None:
    """The element of a set/map whose key (address parts normalised) is ``key``."""
    if m is None:
        return None
    return _index(m).get(tuple(_addr(k) if ("." in k or ":" in k) else k for k in key))


def endpoint_chain_name(namespace: str, name: str, protocol: str, port_name: str, ip: str, port: int,
                        prefix: str = "endpoint") -> str:
    """kube-proxy's endpoint chain (or affinity set) name."""
    return naming.nft_endpoint_chain(namespace, name, protocol, port_name, ip, port, prefix)


def _verdict_hop(ctx: _Walk, value: Verdict | Jump | None, refs: tuple[RuleRef, ...], *, when: str | None,
                 what: str, reason: str) -> Hop:
    rejects = (isinstance(value, Jump) and value.chain.startswith("reject")) or (
        isinstance(value, Verdict) and value.word == "reject")
    verdict = "REJECT" if rejects else "DROP"
    if verdict == "REJECT":
        explain = (f"The Service has no usable endpoints, so the filter hook rejects new connections to {what} "
                   "(goto reject-chain: ICMP port unreachable, seen by clients as 'connection refused') rather "
                   "than letting them time out.")
    else:
        explain = f"The filter hook drops new connections to {what}: {reason}"
    return Hop(kind="verdict", name=verdict, table=ctx.table, when=when, rules=refs, verdict=verdict, explain=explain)


def _firewall_hop(ctx: _Walk, fw_refs: tuple[RuleRef, ...], fw_chain: str, inner: Hop | None) -> Hop:
    """firewall-: loadBalancerSourceRanges, checked in the filter prerouting hook before any DNAT."""
    chain = ctx.follow(fw_chain)
    if chain is None:
        return ctx.missing("firewall", fw_chain, None, fw_refs)
    allowed: list[str] = []
    own: list[RuleRef] = []
    drop: NftRule | None = None
    for rule in chain:
        m = _saddr(rule)
        last = rule.stmts[-1] if rule.stmts else None
        if m is not None and m.negated and isinstance(last, Verdict) and last.word == "drop":
            allowed += _cidrs(m)
            drop = rule
        else:
            own.append(ctx.ref(rule))
    children: list[Hop] = []
    if inner is not None:
        children.append(replace(inner, when="source in " + (", ".join(allowed) or "nothing")))
    notes: tuple[str, ...] = ()
    if drop is not None:
        children.append(Hop(kind="verdict", name="DROP", table=ctx.table, when="any other source",
                            rules=(ctx.ref(drop),), verdict="DROP",
                            explain="Sources outside loadBalancerSourceRanges are dropped in the filter prerouting "
                                    "hook (firewall-check), before kube-proxy's NAT ever sees them."))
    else:
        notes = ("no `saddr != { ... } drop` rule: every source is allowed",)
    return Hop(kind="firewall", name=fw_chain, table=ctx.table, rules=fw_refs + tuple(own),
               explain="loadBalancerSourceRanges: only " + (", ".join(allowed) or "no source")
                       + " may use this load balancer IP.",
               notes=notes, children=tuple(children))


def _frontend(ctx: _Walk, type_: str, ip: str, port: int, key: tuple[str, ...], explain: str) -> Frontend:
    """One frontend: the dispatch map entry (service-ips / service-nodeports), its firewall and filter verdicts."""
    t = ctx.nft
    nodeport = type_ == "NodePort"
    dispatch_map, dispatch_chain = ("service-nodeports", "services") if nodeport else ("service-ips", "services")
    noep_map, noep_chain = (("no-endpoint-nodeports", "nodeport-endpoints-check") if nodeport
                            else ("no-endpoint-services", "service-endpoints-check"))
    dmap, nmap = t.maps.get(dispatch_map), t.maps.get(noep_map)
    elem, noep = _find(dmap, key), _find(nmap, key)
    ctx.external_refs = ctx.external_value = None
    if noep is not None and nmap is not None:
        ctx.external_refs = _element_refs(ctx, noep_chain, nmap, noep)
        ctx.external_value = noep.verdict
    notes: list[str] = []
    hops: list[Hop] = []
    what = f"NodePort {port}" if nodeport else f"{ip}:{port}"
    if elem is not None and dmap is not None and elem.value:
        if isinstance(elem.verdict, Jump):
            hop = ctx.walk(elem.verdict.chain, when=None, rules=_element_refs(ctx, dispatch_chain, dmap, elem),
                           depth=0)
        else:
            hop = _verdict_hop(ctx, elem.verdict, _element_refs(ctx, dispatch_chain, dmap, elem), when=None,
                               what=what, reason=f"the {dispatch_map} entry says {elem.value}")
        fmap = t.maps.get("firewall-ips")
        fw = None if nodeport else _find(fmap, key)
        if fw is not None and fmap is not None and isinstance(fw.verdict, Jump):
            hop = _firewall_hop(ctx, _element_refs(ctx, "firewall-check", fmap, fw), fw.verdict.chain, hop)
        hops.append(hop)
        if hop.kind in ("service", "local") and noep is not None:
            notes.append(f"{noep_map} also lists this frontend ({noep.value}); connections are DNATed before the "
                         "filter hook sees them, so that entry never matches")
    elif noep is not None and ctx.external_refs is not None and noep.value:
        if type_ == "ClusterIP":
            reason = ("internalTrafficPolicy is Local and no endpoint runs on this node, so pods on this node cannot "
                      "reach the Service.")
        else:
            reason = "externalTrafficPolicy is Local and no endpoint runs on this node."
        hops.append(_verdict_hop(ctx, noep.verdict, ctx.external_refs, when=None, what=what, reason=reason))
    verdict = frontend_verdict(tuple(hops)) if hops else g.NOT_PROGRAMMED
    if verdict == g.NOT_PROGRAMMED:
        notes.append(f"no element in {ctx.table} maps {dispatch_map} or {noep_map} handles this frontend: "
                     "kube-proxy has not programmed it on this node")
    return Frontend(type=type_, ip=ip, port=port, protocol=ctx.sp.protocol, port_name=ctx.sp.name,
                    verdict=verdict, explain=explain, hops=tuple(hops), notes=tuple(notes))


def nodeport_addresses(snapshot: Snapshot, table: NftTable, family: int) -> tuple[tuple[str, ...], str]:
    """The addresses this node accepts NodePorts on, and how that was decided."""
    services = table.chain("services")
    np_rule = next((r for r in services.rules if any(isinstance(st, MapLookup) and st.map_name == "service-nodeports"
                                                      for st in r.stmts)), None) if services is not None else None
    if np_rule is not None and any(isinstance(st, SetLookup) and st.set_name == "nodeport-ips" for st in np_rule.stmts):
        ips = table.sets.get("nodeport-ips")
        return (tuple(_addr(e.key) for e in ips.elements) if ips is not None else ()), \
            "the nodeport-ips set (kube-proxy's --nodeport-addresses)"
    return any_local_address(snapshot, family)


def resolve_port(snapshot: Snapshot, svc: Service, sp: ServicePort, family: int,
                 ruleset: NftRuleset) -> tuple[list[Frontend], tuple[EndpointInfo, ...], set[str]]:
    """Every frontend of one Service port in one IP family, the endpoints seen, and the chains reached."""
    api = {(e.ip, e.port): e for e in api_endpoints(snapshot, svc, sp, family)}
    table = ruleset.kube_proxy(family)
    fam = "ip6" if family == 6 else "ip"
    if table is None:
        table = NftTable(fam, "kube-proxy")
    ctx = _Walk(snapshot, svc, sp, table, api)
    proto = sp.protocol.lower()
    frontends: list[Frontend] = []
    addressed = (
        ("ClusterIP", svc.virtual_ips, "Clients inside the cluster connect to {at}; the services chain looks it up "
                                       "in the service-ips verdict map."),
        ("ExternalIP", svc.external_ips, "externalIPs: traffic routed to this node for {at} is taken by kube-proxy "
                                         "(the address itself is not managed by Kubernetes)."),
    )
    for kind, ips, explain in addressed:
        frontends += [_frontend(ctx, kind, ip, sp.port, (ip, proto, str(sp.port)),
                                explain.format(at=f"{ip}:{sp.port}")) for ip in ips if family_of(ip) == family]
    for ing in svc.load_balancer_ingress:
        if ing.ip is None or family_of(ing.ip) != family or ing.ip_mode == "Proxy":
            continue
        frontends.append(_frontend(
            ctx, "LoadBalancer", ing.ip, sp.port, (ing.ip, proto, str(sp.port)),
            f"The load balancer's address {ing.ip}:{sp.port}; packets the cloud LB delivers with this destination "
            "are caught on the node."))
    if sp.node_port:
        addresses, how = nodeport_addresses(snapshot, table, family)
        for ip in addresses:
            frontends.append(_frontend(
                ctx, "NodePort", ip, sp.node_port, (proto, str(sp.node_port)),
                f"NodePort {sp.node_port}: a packet to port {sp.node_port} on {how} is looked up in the "
                "service-nodeports verdict map."))
    seen = dict(api)
    seen.update(ctx.programmed)
    return frontends, tuple(seen.values()), ctx.reached


_NAMED_AFTER: dict[int, tuple[NftTable, dict[str, list[str]]]] = {}


def _named_after(table: NftTable) -> dict[str, list[str]]:
    """NAME -> the table's chains whose name holds ``-NAMESPACE/NAME/`` for some NAMESPACE (built once per table,
    so an audit of every Service does not compare every Service with every chain; the caller picks the
    namespace's). Keyed by the Service's name alone, the index holds about one key per Service: keyed by
    (namespace, name) as each ``-`` of a chain's name reads, it held one more per chain (33 MB at 10k)."""
    got = _NAMED_AFTER.get(id(table))
    if got is not None and got[0] is table:
        return got[1]
    index: dict[str, list[str]] = {}
    for name in table.heads():
        at = name.find("-")
        while at >= 0:
            slash = name.find("/", at + 1)
            if slash < 0:
                break
            end = name.find("/", slash + 1)
            if end >= 0:
                keys = index.get(name[slash + 1:end])
                if keys is None:
                    index[name[slash + 1:end]] = [name]
                elif keys[-1] != name:
                    keys.append(name)
            at = name.find("-", at + 1)
    if len(_NAMED_AFTER) >= 8:
        _NAMED_AFTER.clear()
    _NAMED_AFTER[id(table)] = (table, index)
    return index


_ASKED_ALONE: dict[int, int] = {}  # id(table) -> Services asked about before the index is built
ASK_ALONE = 16


def _chains_named_after(table: NftTable, namespace: str, name: str) -> list[str]:
    """The table's chains named after one Service: for the first few Services asked about, by looking for
    ``-NAMESPACE/NAME/`` in each chain's name (no index: ~10 ms at 10k Services, and no memory); after that
    (audit asks about every one), from the index."""
    needle = f"-{namespace}/{name}/"  # neither a namespace nor a name holds "/"
    key = id(table)
    got = _NAMED_AFTER.get(key)
    if got is None or got[0] is not table:
        asked = _ASKED_ALONE.get(key, 0)
        if asked < ASK_ALONE:
            if len(_ASKED_ALONE) >= 8:
                _ASKED_ALONE.clear()
            _ASKED_ALONE[key] = asked + 1
            return [chain for chain in table.heads() if needle in chain]
    return [chain for chain in _named_after(table).get(name, ()) if needle in chain]


def stale_chains(svc: Service, ruleset: NftRuleset, reached: set[str]) -> tuple[StaleChain, ...]:
    """Chains named after this Service that its current ports do not reach (kube-proxy flushes, then deletes them)."""
    out: list[StaleChain] = []
    for table in ruleset.tables:
        if table.name != "kube-proxy":
            continue
        for name in _chains_named_after(table, svc.namespace, svc.name):
            if name not in reached and _kind(name) != "chain":
                out.append(StaleChain(table=table.ref, chain=name, comment=None, rule_count=table.rule_count(name)))
    return tuple(out)


@dataclass
class _RulePort:
    cluster_ips: list[str] = field(default_factory=list)
    other_ips: list[str] = field(default_factory=list)
    port: int | None = None
    node_port: int | None = None


def services_in_table(table: NftTable) -> tuple[RuleService, ...]:
    """The Service ports kube-proxy's table dispatches to: its chains are named after them (ns/name/proto/port)."""
    ports: dict[str, _RulePort] = {}
    cluster = {e.key for e in table.sets["cluster-ips"].elements} if "cluster-ips" in table.sets else None
    for map_name in ("service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports"):
        m = table.maps.get(map_name)
        for elem in m.elements if m is not None else ():
            words = elem.key.split(" . ")
            target = elem.verdict.chain if isinstance(elem.verdict, Jump) else None
            base = target.split("-", 2)[2] if target is not None and target.count("-") >= 2 else None
            if base is None or base.count("/") != 3:  # reject-chain and the like: named by the element's comment
                ns_name, _, pname = (elem.comment or "").partition(":")
                base = f"{ns_name}/{words[-2]}/{pname}" if ns_name.count("/") == 1 and len(words) > 1 else None
            if base is None:
                continue
            p = ports.setdefault(base, _RulePort())
            if map_name.endswith("nodeports"):
                p.node_port = int(words[-1]) if words[-1].isdigit() else None
            elif len(words) == 3 and words[2].isdigit():
                in_cluster = words[0] in cluster if cluster is not None else (target or "").startswith("service-")
                (p.cluster_ips if in_cluster else p.other_ips).append(_addr(words[0]))
                if in_cluster:
                    p.port = int(words[2])
    out = []
    for base, p in ports.items():
        ns, name, proto, pname = base.split("/")
        out.append(RuleService(
            namespace=ns, name=name, port_name=pname, protocol=proto.upper(), port=p.port, key=None,
            identity=f"{ns}/{name}" + (f":{pname}" if pname else ""), how="named by its chains' names",
            cluster_ips=tuple(p.cluster_ips), external_ips=tuple(p.other_ips), node_port=p.node_port))
    return tuple(out)


class NftablesResolver:
    """nftables mode's side of the resolver contract (svctrace.resolver.contract)."""

    mode = ProxyMode.NFTABLES
    files: frozenset[str] = frozenset({NodeFile.NFT})

    def gap(self, snapshot: Snapshot, family: int) -> str | None:
        if snapshot.nft is None or snapshot.nft.kube_proxy(family) is None:
            table = "ip6 kube-proxy" if family == 6 else "ip kube-proxy"
            return f"the nftables table {table} was not collected (node/nft.json)"
        return None

    def resolve_port(self, snapshot: Snapshot, svc: Service, sp: ServicePort, family: int) -> PortResult:
        assert snapshot.nft is not None
        return resolve_port(snapshot, svc, sp, family, snapshot.nft)

    def stale_chains(self, snapshot: Snapshot, svc: Service, reached: set[str]) -> tuple[StaleChain, ...]:
        return stale_chains(svc, snapshot.nft, reached) if snapshot.nft is not None else ()

    def orphans(self, snapshot: Snapshot) -> tuple[StaleChain, ...]:
        return ()

    def services_in_rules(self, snapshot: Snapshot) -> tuple[RuleService, ...]:
        return tuple(s for t in (snapshot.nft.tables if snapshot.nft is not None else ())
                     if t.name == KUBE_PROXY_TABLE for s in services_in_table(t))

    def not_programmed(self, frontend: Frontend) -> str:
        element = f"{frontend.ip} . {frontend.protocol.lower()} . {frontend.port}"
        return f"no element `{element}` in kube-proxy's nftables service-ips / service-nodeports maps"


register(NftablesResolver())
