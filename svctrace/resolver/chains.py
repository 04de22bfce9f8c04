"""The Service chains every rule-based mode writes, followed once: endpoint, service/local and external.

kube-proxy's iptables and nftables modes write the same chains under other names (KUBE-SEP and
``endpoint-``, KUBE-SVC/SVL and ``service-``/``local-``, KUBE-EXT and ``external-``) with the same
roles: mark for masquerade, remember and check session affinity, pick an endpoint, DNAT. ``ChainWalk``
turns those chains into hops and explains them; a mode says only how to read one of its rules
(``RuleFacts``), in its own words (``Words``), and how it picks endpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from svctrace.model.graph import EndpointInfo, Hop, RuleRef
from svctrace.model.iptables import EndpointLine, ServiceLine
from svctrace.model.k8s import Service, ServicePort
from svctrace.model.snapshot import Snapshot
from svctrace.record import record

R = TypeVar("R")
MAX_DEPTH = 8


def _hairpin(source: str) -> str:
    return f"hairpin: when the pod {source} reaches itself through the Service"


def ladder(remaining: float, probability: float | None, index: int, notes: list[str]) -> tuple[float, float]:
    """(share, what is left) of the connections that reach step ``index`` of a probability ladder, ``remaining``
    of them (None: the step without a probability takes them all)."""
    if remaining <= 0:
        notes.append(f"rule {index} is never reached: an earlier rule takes every connection")
        return 0.0, remaining
    if probability is None:
        return remaining, 0.0
    share = remaining * probability
    return share, remaining - share


def pct(share: float) -> str:
    return f"{share * 100:.0f}%" if share * 100 >= 1 or share == 0 else f"{share * 100:.2g}%"


@record
class RuleFacts:
    """What a rule of a Service chain does, as the resolver needs it."""

    index: int
    text: str  # the rule as written, for notes
    target: str | None = None  # the chain it jumps or goes to
    goto: bool = False
    masq: bool = False  # marks the connection for masquerade
    drop_mark: bool = False  # marks the packet for a drop elsewhere (iptables KUBE-MARK-DROP, before v1.25)
    source: str | None = None  # its source condition in words (None: any source)
    hairpin: str | None = None  # the source a masquerade rule names (a pod reaching itself)
    pod_network: str | None = None  # the source a masquerade rule excludes (the pod network)
    dnat: tuple[str, int | None] | None = None  # where it DNATs to
    dnat_note: str | None = None  # why its DNAT could not be read
    dnat_skip: bool = False  # a DNAT rule without a destination: only noted
    records_affinity: bool = False  # remembers the client (session affinity)
    affinity_seconds: str | None = None  # checks a client's affinity and jumps to its endpoint
    action_less: bool = False  # only matches (no target)


@record
class Words:
    """How a mode names its chains and mechanisms in explanations."""

    dnat: str  # "DNAT" | "dnat"
    records: str  # the sentence for remembering the client
    missing_note: str
    local: str  # the sentence for a local (traffic policy Local) chain
    balance: str  # "... over {n} endpoints ...": how endpoints are picked
    masq_marked: str  # who masquerades the marked connections
    affinity: str  # "... {seconds}s ...": the session affinity sentence
    fallthrough: str  # why some sources fall through an external chain
    not_followed: str


@dataclass
class ChainWalk(Generic[R]):
    """One frontend's walk of Service chains; the mode subclass reads its own rules."""

    snapshot: Snapshot
    svc: Service
    sp: ServicePort
    table: str  # Hop.table for these chains
    api: dict[tuple[str, int | None], EndpointInfo]
    words: Words
    reached: set[str] = field(default_factory=set)
    programmed: dict[tuple[str, int | None], EndpointInfo] = field(default_factory=dict)
    stack: set[str] = field(default_factory=set)  # chains being walked, to stop jump loops

    # -- what a mode provides -------------------------------------------------------------------------

    def rules(self, chain: str) -> Sequence[R] | None:
        raise NotImplementedError

    def ref(self, rule: R) -> RuleRef:
        raise NotImplementedError

    def facts(self, rule: R) -> RuleFacts:
        raise NotImplementedError

    def kind(self, chain: str) -> str:
        """service | local | external | firewall | endpoint | chain."""
        raise NotImplementedError

    def missing_explain(self, kind: str, name: str) -> str:
        raise NotImplementedError

    def endpoint_name(self, ip: str, port: int) -> str | None:
        """The name kube-proxy gives the endpoint chain of ip:port; None when it cannot be told."""
        raise NotImplementedError

    def not_in_dump(self) -> str | None:
        """Why a chain the rules name may simply not be in this (partial) dump; None for a whole dump."""
        return None

    def local_chain(self, chain: str) -> bool:
        """The chain is an external chain of traffic policy Local whatever the Service says (iptables KUBE-XLB)."""
        return False

    def drop_hop(self, rule: R, when: str | None) -> Hop:
        """What a rule that marks the packet for dropping leads to."""
        return Hop(kind="verdict", name="DROP", table=self.table, when=when, rules=(self.ref(rule),), verdict="DROP")

    def pick(self, rule: R, facts: RuleFacts, remaining: float, notes: list[str]
             ) -> tuple[list[tuple[str, RuleRef, float, str | None]], float] | None:
        """The endpoints a rule sends connections to: (chain, the rule, share, probability as written) each,
        and what is left for later rules; None when the rule picks no endpoint."""
        raise NotImplementedError

    def external_verdict(self, local_policy: bool) -> Hop | None:
        """The filter verdict an external chain falls through to, if any."""
        raise NotImplementedError

    def firewall_hop(self, chain: str, *, when: str | None, rules: tuple[RuleRef, ...], depth: int) -> Hop:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------------

    def endpoint_info(self, ip: str, port: int | None) -> EndpointInfo:
        known = self.api.get((ip, port))
        if known is not None:
            info = known.programmed()
        else:
            pod = self.snapshot.pod_by_ip(ip)
            node = pod.node_name if pod is not None else None
            this = self.snapshot.node.name
            info = EndpointInfo(
                ip=ip, port=port, protocol=self.sp.protocol, pod=pod.ref if pod is not None else None,
                node=node, local=(node == this) if (node and this) else None,
                ready=None, serving=None, terminating=None, in_api=False, in_dataplane=True,
            )
        self.programmed[(ip, port)] = info
        return info

    def follow(self, name: str) -> Sequence[R] | None:
        """The rules of a chain this walk reaches (remembered, for stale chains); None when it is missing."""
        self.reached.add(name)
        return self.rules(name)

    def endpoint_rules(self, name: str) -> Sequence[tuple[RuleFacts, RuleRef]] | None:
        """Each rule of an endpoint chain this walk reaches, as (facts, reference); None when it is missing."""
        chain = self.follow(name)
        return None if chain is None else [(self.facts(rule), self.ref(rule)) for rule in chain]

    def endpoint_lines(self, name: str) -> Sequence[EndpointLine] | None:
        """An endpoint chain of kube-proxy's two usual rules (the hairpin mark, the DNAT) read from its text, not
        typed, as (its text, address, port; None for the mark), reached now; None: read it by its rules. The
        mode's: an audit of 10,000 Services walks 100,000 such chains."""
        return None

    def service_lines(self, name: str) -> Sequence[ServiceLine] | None:
        """A service or local chain of kube-proxy's usual rules (the masquerade mark for clients outside the pod
        network, the probability ladder to its endpoint chains) read from its text, not typed, as (its text,
        target, probability as written, pod network), reached now; None: read it by its rules. The mode's."""
        return None

    def missing(self, kind: str, name: str, when: str | None, rules: tuple[RuleRef, ...],
                share: float | None = None, probability: str | None = None) -> Hop:
        partial = self.not_in_dump()
        if partial is not None:
            # A fragment or a cut dump: the chain is on the node, only not in the text.
            if kind == "endpoint":
                return Hop(kind=kind, name=name, table=self.table, when=when, rules=rules, share=share,
                           probability=probability, verdict="DNAT",
                           notes=(f"{name} is not in the dump ({partial}): it translates to an endpoint whose "
                                  "address the dump does not show",),
                           explain=f"{name} rewrites the destination to one endpoint; its rule is not in the dump.")
            return Hop(kind=kind, name=name, table=self.table, when=when, rules=rules, share=share,
                       probability=probability, verdict="UNKNOWN",
                       notes=(f"{name} is not in the dump ({partial}): what it does is not known",),
                       explain=f"{name} is not in the dump, so where it sends traffic is not known.")
        return Hop(kind=kind, name=name, table=self.table, when=when, rules=rules, share=share,
                   probability=probability, verdict="DROP", notes=(self.words.missing_note,),
                   explain=self.missing_explain(kind, name))

    def walk(self, chain: str, *, when: str | None, rules: tuple[RuleRef, ...], depth: int) -> Hop:
        kind = self.kind(chain)
        if depth > MAX_DEPTH or chain in self.stack:
            return Hop(kind=kind, name=chain, table=self.table, when=when, rules=rules,
                       notes=("jump loop or too deep; not followed",))
        self.stack.add(chain)
        try:
            if kind in ("service", "local"):
                return self.service_hop(chain, when=when, rules=rules)
            if kind == "external":
                return self.external_hop(chain, when=when, rules=rules, depth=depth)
            if kind == "firewall":
                return self.firewall_hop(chain, when=when, rules=rules, depth=depth)
            if kind == "endpoint":
                return self.endpoint_hop(chain, rules=rules, share=None, probability=None)
            return Hop(kind="chain", name=chain, table=self.table, when=when, rules=rules,
                       notes=(self.words.not_followed,))
        finally:
            self.stack.discard(chain)

    def endpoint_hop(self, chain_name: str, *, rules: tuple[RuleRef, ...], share: float | None,
                     probability: str | None) -> Hop:
        """An endpoint chain: the hairpin masquerade rule and the DNAT."""
        lines = self.endpoint_lines(chain_name)
        if lines is not None:
            return self._endpoint_hop_of_lines(chain_name, lines, rules, share, probability)
        chain = self.endpoint_rules(chain_name)
        if chain is None:
            return self.missing("endpoint", chain_name, None, rules, share, probability)
        masquerade = None
        endpoint: EndpointInfo | None = None
        own: list[RuleRef] = []
        notes: list[str] = []
        explain: list[str] = []
        records_affinity = False
        for f, ref in chain:
            if f.masq:
                masquerade = _hairpin(f.hairpin) if f.hairpin is not None else f.source or "always"
            elif f.dnat_skip:
                notes.append(f.dnat_note or "")
                continue
            elif f.dnat_note is not None:
                notes.append(f.dnat_note)
            elif f.dnat is not None:
                endpoint = self._dnat(chain_name, *f.dnat, notes, explain)
                records_affinity = records_affinity or f.records_affinity
            elif f.records_affinity:
                records_affinity = True
            else:
                notes.append(f"rule {f.index} is not one kube-proxy writes here: {f.text}")
            own.append(ref)
        if records_affinity:
            explain.append(self.words.records)
        return self._endpoint(chain_name, rules + tuple(own), share, probability, masquerade, endpoint, notes, explain)

    def _endpoint_hop_of_lines(self, chain_name: str, lines: Sequence[EndpointLine], rules: tuple[RuleRef, ...],
                               share: float | None, probability: str | None) -> Hop:
        """``endpoint_hop`` of a chain read from its lines: what the loop over their rules' facts gives."""
        masquerade = None
        endpoint: EndpointInfo | None = None
        notes: list[str] = []
        explain: list[str] = []
        own: list[RuleRef] = []
        for index, (text, ip, port) in enumerate(lines, 1):
            if port is None:
                masquerade = _hairpin(ip)
            else:
                endpoint = self._dnat(chain_name, ip, port, notes, explain)
            own.append(RuleRef(table=self.table, chain=chain_name, index=index, text=text))
        return self._endpoint(chain_name, rules + tuple(own), share, probability, masquerade, endpoint, notes,
                              explain)

    def _dnat(self, chain_name: str, ip: str, port: int | None, notes: list[str], explain: list[str]) -> EndpointInfo:
        """The endpoint an endpoint chain's DNAT rule translates to; what it says of it goes to notes, explain."""
        endpoint = self.endpoint_info(ip, port)
        expected = self.endpoint_name(ip, port or 0)
        if expected is not None and expected != chain_name:
            notes.append(f"chain name does not hash from {endpoint.address}: kube-proxy would call it {expected}")
        explain.append(f"{self.words.dnat} rewrites the destination to {endpoint.address}; conntrack remembers "
                       "the translation, so replies are rewritten back.")
        return endpoint

    def _endpoint(self, chain_name: str, rules: tuple[RuleRef, ...], share: float | None, probability: str | None,
                  masquerade: str | None, endpoint: EndpointInfo | None, notes: list[str], explain: list[str]) -> Hop:
        words = self.words
        if endpoint is None:
            return Hop(kind="endpoint", name=chain_name, table=self.table, rules=rules, share=share,
                       probability=probability, masquerade=masquerade,
                       notes=(*notes, f"no {words.dnat} rule: traffic falls through unchanged"),
                       explain=f"This endpoint chain has no {words.dnat} rule, so nothing is translated here.")
        return Hop(kind="endpoint", name=chain_name, table=self.table, rules=rules, share=share,
                   probability=probability, masquerade=masquerade, verdict="DNAT", endpoint=endpoint,
                   explain=" ".join(explain), notes=tuple(notes))

    def picked(self, rule: R, facts: RuleFacts, remaining: float, notes: list[str]) -> tuple[list[Hop], float] | None:
        """The endpoint hops a rule sends connections to, and what is left; None when it picks no endpoint."""
        picked = self.pick(rule, facts, remaining, notes)
        if picked is None:
            return None
        targets, left = picked
        return [self.endpoint_hop(t, rules=(ref,), share=share, probability=prob)
                for t, ref, share, prob in targets], left

    def service_hop(self, chain_name: str, *, when: str | None, rules: tuple[RuleRef, ...]) -> Hop:
        """A service or local chain: the masquerade rule, the affinity checks, then how endpoints are picked."""
        kind = self.kind(chain_name)
        lines = self.service_lines(chain_name)
        if lines is not None:
            return self._service_hop_of_lines(kind, chain_name, lines, when, rules)
        chain = self.follow(chain_name)
        if chain is None:
            return self.missing(kind, chain_name, when, rules)
        masquerade = None
        masq_explain = ""
        affinity_seconds: str | None = None
        affinity_targets: set[str] = set()
        own: list[RuleRef] = []
        children: list[Hop] = []
        notes: list[str] = []
        remaining = 1.0
        for rule in chain:
            f = self.facts(rule)
            if f.masq:
                masquerade = f.source or "always"
                own.append(self.ref(rule))
                masq_explain = self._masq_explain(f.pod_network)
                continue
            if f.affinity_seconds is not None and f.target is not None and self.kind(f.target) == "endpoint":
                affinity_seconds = f.affinity_seconds
                affinity_targets.add(f.target)
                own.append(self.ref(rule))
                continue
            picked = self.picked(rule, f, remaining, notes)
            if picked is not None:
                hops, remaining = picked
                children += hops
                continue
            own.append(self.ref(rule))
            if not f.action_less:
                notes.append(f"rule {f.index} is not one kube-proxy writes here: {f.text}")
        return self._service(kind, chain_name, when, rules + tuple(own), masquerade, masq_explain, children, notes,
                             remaining, affinity_seconds, affinity_targets)

    def _service_hop_of_lines(self, kind: str, chain_name: str, lines: Sequence[ServiceLine], when: str | None,
                              rules: tuple[RuleRef, ...]) -> Hop:
        """``service_hop`` of a chain read from its lines: what the loop over their typed rules gives."""
        masquerade = None
        masq_explain = ""
        own: list[RuleRef] = []
        children: list[Hop] = []
        notes: list[str] = []
        remaining = 1.0
        for index, (text, target, probability, network) in enumerate(lines, 1):
            ref = RuleRef(table=self.table, chain=chain_name, index=index, text=text)
            if network is not None:
                masquerade = f"source not in {network}"
                own.append(ref)
                masq_explain = self._masq_explain(network)
                continue
            share, remaining = ladder(remaining, float(probability) if probability is not None else None, index,
                                      notes)
            children.append(self.endpoint_hop(target, rules=(ref,), share=share, probability=probability))
        return self._service(kind, chain_name, when, rules + tuple(own), masquerade, masq_explain, children, notes,
                             remaining, None, set())

    def _masq_explain(self, pod_network: str | None) -> str:
        if pod_network is not None:
            return (f"Clients outside the pod network {pod_network} (the node itself, host-network pods) are "
                    f"marked 0x4000 so {self.words.masq_marked}; otherwise the pod's reply would not come back "
                    "through this node's NAT.")
        return ("Every connection is marked 0x4000 for masquerading (--masquerade-all, or no pod CIDR is known to "
                "kube-proxy).")

    def _service(self, kind: str, chain_name: str, when: str | None, rules: tuple[RuleRef, ...],
                 masquerade: str | None, masq_explain: str, children: list[Hop], notes: list[str], remaining: float,
                 affinity_seconds: str | None, affinity_targets: set[str]) -> Hop:
        """The hop of a service or local chain whose rules were read: its endpoints, what is left over, in words."""
        words = self.words
        if remaining > 1e-9 and children:
            notes.append(f"{pct(remaining)} of connections match no endpoint rule and fall through")
        affinity = f"ClientIP, {affinity_seconds}s" if affinity_seconds is not None else None
        if affinity is not None:
            children = [replace(c, affinity=affinity) if c.name in affinity_targets else c for c in children]
        sentences = []
        if kind == "local":
            sentences.append(words.local)
        n = len(children)
        if n > 1:
            sentences.append(words.balance.format(n=n))
        elif n == 1:
            sentences.append("A single endpoint takes every new connection.")
        if masq_explain:
            sentences.append(masq_explain)
        if any(c.masquerade and c.masquerade.startswith("hairpin") for c in children):
            sentences.append("Each endpoint chain also masquerades a pod that reaches itself through the Service "
                             "(hairpin), or its reply would bypass the NAT and be dropped.")
        if affinity is not None:
            sentences.append(words.affinity.format(seconds=affinity_seconds))
        if not children:
            notes.append("no endpoint rules: nothing is translated here")
        return Hop(kind=kind, name=chain_name, table=self.table, when=when, rules=rules,
                   masquerade=masquerade, affinity=affinity, explain=" ".join(sentences), notes=tuple(notes),
                   children=tuple(children))

    def external_hop(self, chain_name: str, *, when: str | None, rules: tuple[RuleRef, ...], depth: int) -> Hop:
        """An external chain: masquerade, short-circuits for pods and the node, then the cluster or local chain
        (or, in iptables' KUBE-XLB of v1.4-v1.23, the local endpoints themselves, or a mark for dropping)."""
        chain = self.follow(chain_name)
        if chain is None:
            return self.missing("external", chain_name, when, rules)
        masquerade = None
        own: list[RuleRef] = []
        children: list[Hop] = []
        local_endpoints: list[Hop] = []
        notes: list[str] = []
        unconditional_exit = False
        remaining = 1.0
        local_policy = self.svc.external_traffic_policy in ("Local", "OnlyLocal") or self.local_chain(chain_name)
        for rule in chain:
            f = self.facts(rule)
            cond = f.source
            if unconditional_exit:
                own.append(self.ref(rule))
                continue
            if f.masq:
                masquerade = cond or "always"
                own.append(self.ref(rule))
                continue
            if f.target is not None and self.kind(f.target) in ("service", "local"):
                if cond is None:
                    unconditional_exit = True
                    cond = "external clients" if local_policy else None
                children.append(self.walk(f.target, when=cond, rules=(self.ref(rule),), depth=depth + 1))
                continue
            if f.drop_mark:
                unconditional_exit = unconditional_exit or cond is None
                children.append(self.drop_hop(rule, cond or ("external clients" if local_policy else "otherwise")))
                continue
            picked = self.picked(rule, f, remaining, notes)
            if picked is not None:
                hops, remaining = picked
                local_endpoints += hops
                unconditional_exit = remaining <= 1e-9
                continue
            own.append(self.ref(rule))
            if not f.action_less:
                notes.append(f"rule {f.index} is not one kube-proxy writes here: {f.text}")
        if local_endpoints:
            children.append(Hop(kind="local", name=chain_name, table=self.table,
                                when="external clients" if local_policy else None, children=tuple(local_endpoints),
                                explain=self.words.local))
        if local_policy:
            explain = ("externalTrafficPolicy Local: clients from outside go only to endpoints on this node and "
                       "keep their source address (no SNAT); pods and the node itself are short-circuited to "
                       "every endpoint.")
        else:
            explain = ("externalTrafficPolicy Cluster: external connections are marked for masquerade, so the pod "
                       "sees this node as the source and replies come back through it; any endpoint in the "
                       "cluster may serve them.")
        if not unconditional_exit:
            verdict = self.external_verdict(local_policy)
            if verdict is not None:
                children.append(verdict)
            else:
                notes.append(f"some sources fall through this chain without a verdict {self.words.fallthrough}: "
                             "they are routed unchanged")
        return Hop(kind="external", name=chain_name, table=self.table, when=when, rules=rules + tuple(own),
                   masquerade=masquerade, explain=explain, notes=tuple(notes), children=tuple(children))
