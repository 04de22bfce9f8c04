"""Every node's answer side by side (pure): each node's result reduced as it arrives, identical nodes grouped.

``--all-nodes`` reads many nodes; holding each one's parsed rules would cost hundreds of MB, so a command
reduces every node's Snapshot to a small value here (a Service's frontends and endpoint shares on that node;
its audit counts; its verdict) and drops the Snapshot before the next node is read. The values then group:
nodes that program the same thing are one row ("18 nodes: identical"), the odd ones out are listed with
what differs from the majority.

An audit also skips work that cannot change from one node to the next. A Service whose answer depends only
on the rules (a ClusterIP Service with cluster-wide traffic policies) gets the same result on every node
whose rules are the same, so it is computed once per distinct rule set (:func:`dataplane_fingerprint`);
only Services whose answer depends on which node it is (NodePorts, load balancers, externalIPs,
``Local`` traffic policies) are checked again on each node.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from svctrace import parallel
from svctrace.diagnosis.audit import audit_service, dataplane_collected
from svctrace.diagnosis.diagnose import Diagnosis
from svctrace.diagnosis.findings import REACHABLE
from svctrace.model.graph import NOT_PROGRAMMED, UNKNOWN, Hop, PathGraph
from svctrace.model.k8s import Service
from svctrace.model.snapshot import NodeFile, Snapshot
from svctrace.parsers.snapshot import NodeInput
from svctrace.record import record
from svctrace.resolver import all_stale_chains
from svctrace.resolver.common import categorize
from svctrace.resolver.contract import for_mode
from svctrace.words import count

T = TypeVar("T")


@record
class NodeFailure:
    """A node that could not be read: one line and the next step."""

    node: str
    message: str
    hint: str | None = None


def _mode(snapshot: Snapshot) -> str | None:
    return snapshot.mode.value if snapshot.mode is not None else None


NO_RULES = ("no kube-proxy rules (iptables, IPVS or nftables): kube-proxy does not run there, or something else "
            "handles Services (Cilium's kube-proxy replacement, for one)")


# --- svc NAME --all-nodes ---------------------------------------------------------------------------------

@record
class FrontendOnNode:
    """One frontend as one node programs it: its verdict and each endpoint's share of new connections."""

    type: str
    ip: str  # a NodePort's is the node's own address: it is left out when nodes are compared
    port: int
    protocol: str
    verdict: str
    shares: tuple[tuple[str, float], ...]  # (endpoint ip:port, share), by address

    @property
    def label(self) -> str:
        host = "NodePort" if self.type == "NodePort" else (f"[{self.ip}]" if ":" in self.ip else self.ip)
        return f"{host}:{self.port}/{self.protocol}"

    @property
    def key(self) -> tuple[object, ...]:
        return (self.type, "" if self.type == "NodePort" else self.ip, self.port, self.protocol, self.verdict,
                tuple((a, round(s, 4)) for a, s in self.shares))


@record
class ServiceOnNode:
    """One Service as one node programs it, compared with the API."""

    node: str
    mode: str | None
    backend: str | None
    frontends: tuple[FrontendOnNode, ...]
    stale: tuple[str, ...] = ()  # endpoints this node sends to that the API does not list
    unprogrammed: tuple[str, ...] = ()  # endpoints kube-proxy should program that this node does not
    stale_chains: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # inputs not collected from this node
    warnings: tuple[str, ...] = ()

    @property
    def drift(self) -> bool:
        return bool(self.stale or self.unprogrammed or self.stale_chains
                    or any(f.verdict == NOT_PROGRAMMED for f in self.frontends))

    @property
    def key(self) -> tuple[object, ...]:
        """What "identical" means: the same mode, backend, frontends, shares and drift."""
        return (self.mode, self.backend, tuple(f.key for f in self.frontends), self.stale, self.unprogrammed,
                self.stale_chains)


def _shares(hops: Iterable[Hop], weight: float, into: dict[str, float]) -> None:
    for hop in hops:
        share = weight * (hop.share if hop.share is not None else 1.0)
        if hop.endpoint is not None and hop.kind in ("endpoint", "real-server"):
            into[hop.endpoint.address] = into.get(hop.endpoint.address, 0.0) + share
        _shares(hop.children, share, into)


def service_on_node(node: str, snapshot: Snapshot, graph: PathGraph) -> ServiceOnNode:
    """Reduce one node's path graph of a Service to what is compared across nodes."""
    fronts = []
    for fe in graph.frontends:
        shares: dict[str, float] = {}
        _shares(fe.hops, 1.0, shares)
        fronts.append(FrontendOnNode(fe.type, fe.ip, fe.port, fe.protocol, fe.verdict, tuple(sorted(shares.items()))))
    stale, unprogrammed = endpoint_drift(graph)
    return ServiceOnNode(node, _mode(snapshot), snapshot.node.iptables_backend, tuple(fronts), stale, unprogrammed,
                         tuple(sorted(c.chain for c in graph.stale_chains)), graph.missing, graph.warnings)


def endpoint_drift(graph: PathGraph) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Endpoints the node programs that the API does not list, and ones it should program but does not."""
    if not graph.frontends or all(f.verdict == UNKNOWN for f in graph.frontends):
        return (), ()
    stale = sorted({e.address for e in graph.endpoints if e.in_dataplane and not e.in_api})
    chosen = categorize(tuple(e for e in graph.endpoints if e.in_api)).cluster
    unprogrammed = sorted({e.address for e in chosen if not e.in_dataplane})
    return tuple(stale), tuple(unprogrammed)


@record
class Group:
    """Nodes whose answers are identical, and how they differ from the largest group."""

    nodes: tuple[str, ...]
    differences: tuple[str, ...] = ()  # empty for the largest group


def group_by(items: Sequence[T], key: Callable[[T], object], name: Callable[[T], str],
             describe: Callable[[T, T], list[str]]) -> tuple[Group, ...]:
    """Group items by ``key``: the largest group first, then the others with what differs from it."""
    buckets: dict[object, list[T]] = {}
    for item in items:
        buckets.setdefault(key(item), []).append(item)
    ordered = sorted(buckets.values(), key=lambda b: (-len(b), name(b[0])))
    if not ordered:
        return ()
    usual = ordered[0][0]
    out = [Group(tuple(name(i) for i in ordered[0]))]
    for bucket in ordered[1:]:
        out.append(Group(tuple(name(i) for i in bucket), tuple(describe(bucket[0], usual))))
    return tuple(out)


def _pct(share: float) -> str:
    return f"{share:.0%}"


def service_differences(odd: ServiceOnNode, usual: ServiceOnNode) -> list[str]:
    """What one node's view of a Service has that the majority's does not, in words."""
    out: list[str] = []
    if odd.mode != usual.mode:
        out.append(f"proxy mode {odd.mode or 'unknown'} (the others: {usual.mode or 'unknown'})")
    if odd.backend != usual.backend:
        out.append(f"iptables backend {odd.backend or 'unknown'} (the others: {usual.backend or 'unknown'})")
    for address in odd.stale:
        if address not in usual.stale:
            out.append(f"still programs {address}, which the API no longer lists (stale rules)")
    for address in odd.unprogrammed:
        if address not in usual.unprogrammed:
            out.append(f"does not program {address}, which the API lists")
    usual_fronts = {(f.type, "" if f.type == "NodePort" else f.ip, f.port, f.protocol): f for f in usual.frontends}
    for f in odd.frontends:
        other = usual_fronts.get((f.type, "" if f.type == "NodePort" else f.ip, f.port, f.protocol))
        if other is None:
            out.append(f"{f.label}: {f.verdict} (not on the others)")
        elif f.verdict != other.verdict:
            out.append(f"{f.label}: {f.verdict} (the others: {other.verdict})")
        elif f.key != other.key and odd.stale == usual.stale and odd.unprogrammed == usual.unprogrammed:
            mine = ", ".join(f"{a} {_pct(s)}" for a, s in f.shares) or "no endpoints"
            out.append(f"{f.label}: {mine} (the others: " +
                       (", ".join(f"{a} {_pct(s)}" for a, s in other.shares) or "no endpoints") + ")")
    for chain in odd.stale_chains:
        if chain not in usual.stale_chains:
            out.append(f"stale chain {chain}")
    return out or ["differs in details (see -o json)"]


@record
class ServiceAcrossNodes:
    """``svc NAME --all-nodes``: the Service on each node, grouped."""

    namespace: str
    name: str
    nodes: tuple[ServiceOnNode, ...]
    groups: tuple[Group, ...]
    failures: tuple[NodeFailure, ...] = ()


def service_across_nodes(namespace: str, name: str, views: Sequence[ServiceOnNode],
                         failures: Sequence[NodeFailure] = ()) -> ServiceAcrossNodes:
    ordered = tuple(sorted(views, key=lambda v: v.node))
    groups = group_by(ordered, lambda v: v.key, lambda v: v.node, service_differences)
    return ServiceAcrossNodes(namespace, name, ordered, groups, tuple(sorted(failures, key=lambda f: f.node)))


# --- audit --all-nodes ------------------------------------------------------------------------------------

@record
class ServiceDrift:
    """A Service whose rules on a node differ from the API, and how."""

    ref: str
    what: tuple[str, ...]


@record
class NodeAudit:
    """One node's audit, reduced: how many Services it programs, which drifted or are missing, stale chains."""

    node: str
    mode: str | None
    backend: str | None
    services: int
    programmed: int
    drifted: tuple[ServiceDrift, ...]
    not_programmed: tuple[str, ...]
    stale_chains: tuple[str, ...]
    without_endpoints: int
    dataplane: bool  # any kube-proxy rules were read
    warnings: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def out_of_step(self) -> bool:
        """kube-proxy on this node does not program what the API says."""
        return bool(self.drifted or self.not_programmed or self.stale_chains)


class _ServiceResult(NamedTuple):
    """One Service's audit on one node, reduced to what the all-nodes summary counts."""

    ref: str
    programmed: bool
    drift: ServiceDrift | None
    not_programmed: bool
    without_endpoints: bool


def depends_on_node(svc: Service) -> bool:
    """Whether a Service's answer can differ between nodes with the same rules: NodePorts and load balancers
    (the node's own addresses), externalIPs, ``Local`` traffic policies (the node's own endpoints)."""
    return (svc.type in ("NodePort", "LoadBalancer") or bool(svc.external_ips) or bool(svc.load_balancer_ingress)
            or svc.internal_traffic_policy == "Local" or svc.external_traffic_policy == "Local")


def _rules_only(save: str) -> str:
    """An iptables-save dump without what changes while the rules do not: its date comments and counters."""
    kept = []
    for line in save.split("\n"):
        first = line[:1]
        if first == "#":
            continue
        if first == ":":  # ":CHAIN POLICY [packets:bytes]"
            line = line.rsplit(" [", 1)[0]
        kept.append(line)
    return "\n".join(kept)


def dataplane_fingerprint(node: NodeInput) -> str:
    """A digest of everything in a node read that a Service's answer depends on, except the node's identity
    (its name and addresses) and its conntrack entries: equal for nodes whose kube-proxy programmed the same."""
    digest = hashlib.sha256()
    for name in (NodeFile.IPTABLES, NodeFile.IP6TABLES):
        text = node.files.get(name)
        if text is not None:
            text = _rules_only(text)
        digest.update(f"\0{name}\0{text}".encode())
    for name in (NodeFile.NFT, NodeFile.IPVSADM, NodeFile.IPSET):
        digest.update(f"\0{name}\0{node.files.get(name)}".encode())
    meta = node.files.get(NodeFile.META)
    try:
        doc = json.loads(meta) if meta is not None else None
    except ValueError:
        doc = meta
    if isinstance(doc, dict):
        doc.pop("nodeName", None)
    addresses = node.files.get(NodeFile.IP_ADDR) or ""
    digest.update(json.dumps([doc, sorted(str(m.what) for m in node.missing), repr(node.probe),
                              '"kube-ipvs0"' in addresses], sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _service_result(snapshot: Snapshot, svc: Service) -> _ServiceResult:
    sa = audit_service(snapshot, svc)
    graph = sa.diagnosis.graph
    has_rules = graph is not None and bool(graph.frontends) and not svc.is_headless and not svc.is_external_name
    collected = graph is not None and any(f.verdict != UNKNOWN for f in graph.frontends)
    not_programmed = has_rules and collected and not sa.programmed
    drift = None
    if sa.drifted and not not_programmed and graph is not None:
        stale, unprogrammed = endpoint_drift(graph)
        what = [f"programs {a}, which the API does not list" for a in stale]
        what += [f"does not program {a}, which the API lists" for a in unprogrammed]
        what += [f"{f.address} not programmed" for f in graph.frontends if f.verdict == NOT_PROGRAMMED]
        what += [f.title for f in sa.diagnosis.findings if f.code.startswith("dataplane-") and not what]
        drift = ServiceDrift(sa.ref, tuple(what) or ("the rules differ from the API",))
    return _ServiceResult(sa.ref, sa.programmed, drift, not_programmed, sa.without_endpoints)


def _service_results(snapshot: Snapshot, services: Sequence[Service]) -> dict[str, _ServiceResult]:
    """Each Service's reduced audit, the work split over forked processes when it is big (svctrace.parallel)."""
    results = parallel.fork_map(lambda share: [_service_result(snapshot, s) for s in share], services)
    return {r.ref: r for r in results}


@dataclass
class _RuleSet:
    """What every node with one fingerprint shares: the mode and the node-independent Services' results."""

    mode: str | None
    dataplane: bool
    shared: dict[str, _ServiceResult] = field(default_factory=dict)
    orphans: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


class AuditAcrossNodes:
    """Audit node after node, keeping only each node's reduced result (and one per distinct rule set)."""

    def __init__(self, services: Sequence[Service], namespace: str | None, api_warnings: Iterable[str] = ()) -> None:
        self.namespace = namespace
        self.api_warnings = frozenset(api_warnings)  # about the API objects: the same on every node
        self.services = tuple(sorted((s for s in services if namespace is None or s.namespace == namespace),
                                     key=lambda s: (s.namespace, s.name)))
        self.nodes: list[NodeAudit] = []
        self.failures: list[NodeFailure] = []
        self._rule_sets: dict[str, _RuleSet] = {}
        self.built = 0  # Snapshots built (parsed): fewer than nodes when rule sets repeat

    def add(self, node: str, read: NodeInput, build: Callable[[], Snapshot]) -> NodeAudit:
        """Audit one node from its read; ``build`` parses it into a Snapshot, only when that is needed."""
        fingerprint = dataplane_fingerprint(read)
        rules = self._rule_sets.get(fingerprint)
        own = [s for s in self.services if depends_on_node(s)]
        snapshot: Snapshot | None = None
        if rules is None or own:
            snapshot = build()
            self.built += 1
        if rules is None:
            assert snapshot is not None
            said = set(read.warnings) | self.api_warnings
            rules = _RuleSet(_mode(snapshot), dataplane_collected(snapshot),
                             warnings=tuple(w for w in snapshot.warnings if w not in said))
            rules.shared = _service_results(snapshot, [s for s in self.services if not depends_on_node(s)])
            rules.orphans = tuple(sorted(c.chain for c in all_stale_chains(snapshot)))
            self._rule_sets[fingerprint] = rules
        results = dict(rules.shared)
        if snapshot is not None:
            results.update(_service_results(snapshot, own))
        chosen = [results[s.ref] for s in self.services]
        backend = _backend(read)
        audit = NodeAudit(
            node=node, mode=rules.mode, backend=backend, services=len(chosen),
            programmed=sum(r.programmed for r in chosen),
            drifted=tuple(r.drift for r in chosen if r.drift is not None),
            not_programmed=tuple(r.ref for r in chosen if r.not_programmed),
            stale_chains=rules.orphans, without_endpoints=sum(r.without_endpoints for r in chosen),
            dataplane=rules.dataplane, warnings=(*read.warnings, *rules.warnings),
            missing=relevant_missing(read, rules.mode))
        self.nodes.append(audit)
        return audit

    def fail(self, failure: NodeFailure) -> None:
        self.failures.append(failure)

    def result(self) -> AuditResult:
        nodes = tuple(sorted(self.nodes, key=lambda n: n.node))
        return AuditResult(self.namespace, nodes, tuple(sorted(self.failures, key=lambda f: f.node)))


_DATAPLANE_FILES = frozenset({NodeFile.IPTABLES, NodeFile.IP6TABLES, NodeFile.IPVSADM, NodeFile.IPSET, NodeFile.NFT,
                              NodeFile.CONNTRACK})


def relevant_missing(read: NodeInput, mode: str | None) -> tuple[str, ...]:
    """What a node read lacks that its proxy mode would have used, in words (another mode's files are not news)."""
    resolver = for_mode(mode)
    return tuple(m.words for m in read.missing
                 if m.what not in _DATAPLANE_FILES or (resolver is not None and m.what in resolver.files))


def _backend(read: NodeInput) -> str | None:
    meta = read.files.get(NodeFile.META)
    try:
        doc = json.loads(meta) if meta else {}
    except ValueError:
        return None
    value = doc.get("iptablesBackend") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


@record
class AuditResult:
    """``audit --all-nodes``: every node's reduced audit, the failures, and the summary."""

    namespace: str | None
    nodes: tuple[NodeAudit, ...]
    failures: tuple[NodeFailure, ...] = ()

    @property
    def out_of_step(self) -> tuple[NodeAudit, ...]:
        return tuple(n for n in self.nodes if n.out_of_step)

    @property
    def without_rules(self) -> tuple[NodeAudit, ...]:
        return tuple(n for n in self.nodes if not n.dataplane)

    def odd(self, attribute: str) -> tuple[str | None, tuple[tuple[str, str | None], ...]]:
        """The usual value of ``mode`` or ``backend`` and the nodes that differ from it."""
        values = Counter(getattr(n, attribute) for n in self.nodes)
        if len(values) < 2:
            return (next(iter(values)) if values else None), ()
        usual = values.most_common(1)[0][0]
        return usual, tuple((n.node, getattr(n, attribute)) for n in self.nodes if getattr(n, attribute) != usual)

    @property
    def has_problems(self) -> bool:
        return bool(self.out_of_step or self.failures or self.without_rules)


# --- why-unreachable --all-nodes --------------------------------------------------------------------------

@record
class NodeVerdict:
    """One node's verdict for a target, and the finding behind it."""

    node: str
    verdict: str
    reason: str
    code: str | None  # the top finding's code
    mode: str | None
    backend: str | None

    @property
    def key(self) -> tuple[object, ...]:
        return (self.verdict, self.code, self.reason.replace(self.node, "NODE"))


def node_verdict(node: str, snapshot: Snapshot, diagnosis: Diagnosis) -> NodeVerdict:
    top = diagnosis.findings[0] if diagnosis.findings else None
    return NodeVerdict(node, diagnosis.verdict, diagnosis.reason, top.code if top is not None else None,
                       _mode(snapshot), snapshot.node.iptables_backend)


@record
class VerdictsAcrossNodes:
    """``why-unreachable TARGET --all-nodes``: the verdict on each node, grouped."""

    target: str
    nodes: tuple[NodeVerdict, ...]
    groups: tuple[Group, ...]
    failures: tuple[NodeFailure, ...] = ()

    @property
    def summary(self) -> str:
        """"reachable from pods on 2 nodes; unreachable from node-b: <why>"."""
        parts = []
        by_node = {n.node: n for n in self.nodes}
        for group in self.groups:
            first = by_node[group.nodes[0]]
            where = (count(len(group.nodes), "node") if len(group.nodes) > 2
                     else " and ".join(group.nodes))
            text = f"{first.verdict} from pods on {where}"
            if first.verdict != REACHABLE:
                text += f": {first.reason}"
            parts.append(text)
        return "; ".join(parts) if parts else "no node could be read"

    @property
    def all_reachable(self) -> bool:
        return not self.failures and all(n.verdict == REACHABLE for n in self.nodes)


def verdicts_across_nodes(target: str, verdicts: Sequence[NodeVerdict],
                          failures: Sequence[NodeFailure] = ()) -> VerdictsAcrossNodes:
    ordered = tuple(sorted(verdicts, key=lambda v: v.node))
    groups = group_by(ordered, lambda v: v.key, lambda v: v.node, lambda a, b: [])
    return VerdictsAcrossNodes(target, ordered, groups, tuple(sorted(failures, key=lambda f: f.node)))
