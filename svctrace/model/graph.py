"""The path graph: how traffic for one Service travels through this node's dataplane.

The same shape serves every proxy mode; only hop kinds and names change. ``render.json`` turns it
into the documented JSON schema (docs/json-schema.md).
"""

from __future__ import annotations

from svctrace.model.k8s import Service
from svctrace.record import record

# Hop kinds. iptables: dispatch (a rule in KUBE-SERVICES/KUBE-NODEPORTS), firewall (KUBE-FW),
# external (KUBE-EXT), service (KUBE-SVC), local (KUBE-SVL), endpoint (KUBE-SEP), verdict (a filter-table
# REJECT/DROP). IPVS: virtual-server, real-server. nftables: the same names as iptables' chains.
HOP_KINDS = ("dispatch", "firewall", "external", "service", "local", "endpoint", "verdict",
             "virtual-server", "real-server")

# A frontend's outcome for new connections.
FORWARDED = "forwarded"  # DNAT to one or more endpoints
REJECTED = "rejected"  # ICMP port unreachable / TCP reset: no endpoints
DROPPED = "dropped"  # silently dropped: no local endpoints, or a source range firewall
PARTIAL = "partial"  # some clients are forwarded, others dropped (eTP=Local without local endpoints)
NOT_PROGRAMMED = "not-programmed"  # no rule on this node handles it
UNTRANSLATED = "untranslated"  # rules take it but none translates it (v1.1's empty KUBE-SVC): it times out
UNKNOWN = "unknown"  # the dataplane was not collected, or the dump does not show the rules that decide it
FRONTEND_VERDICTS = (FORWARDED, REJECTED, DROPPED, PARTIAL, UNTRANSLATED, NOT_PROGRAMMED, UNKNOWN)


@record
class RuleRef:
    """A dataplane rule a hop rests on, as it was printed in the dump."""

    table: str
    chain: str
    index: int  # 1-based position in the chain
    text: str


@record
class EndpointInfo:
    """One backend, joined from the EndpointSlice, the Pod and the dataplane."""

    ip: str
    port: int | None
    protocol: str = "TCP"
    pod: str | None = None  # ns/name from targetRef or a Pod with this IP
    node: str | None = None
    zone: str | None = None
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None
    local: bool | None = None  # on this node; None when this node is unknown
    in_api: bool = True  # listed in an EndpointSlice / Endpoints
    in_dataplane: bool = False  # a rule on this node sends traffic to it
    target_kind: str | None = None  # targetRef kind when not a Pod (e.g. none for manual endpoints)

    @property
    def address(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}" if self.port is not None else host

    def programmed(self) -> EndpointInfo:
        """The same endpoint, found in the dataplane (built directly: ``dataclasses.replace`` costs ten
        times as much, and a 10,000-Service audit does this for every endpoint)."""
        return EndpointInfo(self.ip, self.port, self.protocol, self.pod, self.node, self.zone, self.ready,
                            self.serving, self.terminating, self.local, self.in_api, True, self.target_kind)

    @property
    def state(self) -> str:
        if self.terminating:
            return "terminating" + ("" if self.serving else ", not serving")
        if self.ready is False:
            return "not ready"
        return "ready"


@record
class Hop:
    """One step of a path: a chain (or IPVS object) and the rules that send traffic on from it."""

    kind: str
    name: str  # chain name, IPVS service, or endpoint address
    table: str | None = None
    when: str | None = None  # the condition under which the parent sends traffic here, in words
    rules: tuple[RuleRef, ...] = ()  # the rules that led here from the parent / that this hop applies
    share: float | None = None  # effective share of the parent's new connections, 0..1
    probability: str | None = None  # the conditional probability as written in the rule, if any
    masquerade: str | None = None  # when SNAT applies, in words; None: it does not at this hop
    affinity: str | None = None  # session affinity in words
    verdict: str | None = None  # DNAT | REJECT | DROP | ACCEPT (untranslated) | RETURN | UNKNOWN (not in the dump)
    endpoint: EndpointInfo | None = None
    explain: str = ""  # one plain sentence: what the rule does and why
    notes: tuple[str, ...] = ()  # warnings about this hop
    children: tuple[Hop, ...] = ()


@record
class Frontend:
    """An address and port a client can send to: ClusterIP, NodePort, externalIP or LoadBalancer IP."""

    type: str  # ClusterIP | NodePort | ExternalIP | LoadBalancer
    ip: str  # for NodePort: the node address (or "*" for every local address)
    port: int
    protocol: str
    port_name: str
    verdict: str
    explain: str = ""
    hops: tuple[Hop, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}/{self.protocol}"


@record
class DnsRecord:
    name: str
    type: str  # A | AAAA | CNAME | SRV
    answers: tuple[str, ...]


@record
class DnsInfo:
    cluster_domain: str
    domain_source: str  # where the domain came from, in words
    names: tuple[str, ...]  # names that resolve to the Service (short and qualified)
    records: tuple[DnsRecord, ...]
    explain: str = ""
    notes: tuple[str, ...] = ()


@record
class StaleChain:
    """A chain that no current Service port owns (kube-proxy removes these on its next full sync)."""

    table: str
    chain: str
    comment: str | None
    rule_count: int


@record
class RulesIdentity:
    """How a Service known only from a node's rules (no API objects) was named."""

    identity: str | None  # what the rules call it ("default/nginx:"); None when nothing in them names it
    how: str  # how it was found, in words ("its rules' comments, which its chains' hash confirms")
    chains: tuple[str, ...] = ()  # the chains (or virtual servers) it was read from
    notes: tuple[str, ...] = ()


@record
class PathGraph:
    service: Service
    mode: str  # iptables | ipvs | nftables | none (no dataplane collected)
    node: str | None
    dns: DnsInfo
    frontends: tuple[Frontend, ...]
    endpoints: tuple[EndpointInfo, ...]
    stale_chains: tuple[StaleChain, ...] = ()
    explain: str = ""  # what kind of Service this is, in one sentence
    warnings: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # inputs that were not available, so parts of the answer are unknown
    from_rules: RulesIdentity | None = None  # set when the Service is known from this node's rules alone
