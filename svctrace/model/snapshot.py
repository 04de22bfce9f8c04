"""A Snapshot: everything svctrace knows about one node and the API at one moment.

A live run and a replayed snapshot folder both produce one of these; nothing downstream can tell
them apart.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any, TypeVar

from svctrace.model.iptables import SWEEP, SWEEP_FROM, IptablesDump
from svctrace.model.k8s import (
    ConfigMap,
    EndpointSlice,
    NetworkPolicy,
    Node,
    Pod,
    Service,
)
from svctrace.model.mode import ProxyMode
from svctrace.record import record

if TYPE_CHECKING:  # only annotations: a Snapshot of one mode does not import the others' types
    from svctrace.model.conntrack import ConntrackEntry
    from svctrace.model.ipvs import IpSets, IpvsTable
    from svctrace.model.nft import NftRuleset

T = TypeVar("T")

RECENT = 1024  # answers Snapshot.recent keeps: a few Services' each, and the pods of the namespaces they are in
# ... and the items they hold in all (a tuple's, a dict's): a Service of 5,000 endpoints has answers of 5,000 each,
# and 1,024 of them held a 20-Service cluster's every pod and endpoint at once. The 8 used last are always kept.
RECENT_ITEMS = 200_000
RECENT_KEPT = 8


class NodeFile(str, enum.Enum):
    """A file of a snapshot's node/ folder: what one read of the node gives (docs/snapshot.md)."""

    IPTABLES = "iptables-save.txt"
    IP6TABLES = "ip6tables-save.txt"
    IPVSADM = "ipvsadm.txt"
    IPSET = "ipset.txt"
    NFT = "nft.json"
    IP_ADDR = "ip-addr.json"
    META = "meta.json"
    CONNTRACK = "conntrack.txt"

    def __str__(self) -> str:
        return self.value


API = "api"  # Missing.what for the Kubernetes objects

# What each input is, in the user's words (how answers name what was not collected).
WHAT: dict[str, str] = {
    NodeFile.IPTABLES: "iptables rules (node/iptables-save.txt)",
    NodeFile.IP6TABLES: "IPv6 iptables rules (node/ip6tables-save.txt)",
    NodeFile.IPVSADM: "IPVS services (node/ipvsadm.txt)",
    NodeFile.IPSET: "ipsets (node/ipset.txt)",
    NodeFile.NFT: "nftables ruleset (node/nft.json)",
    NodeFile.IP_ADDR: "the node's own addresses (node/ip-addr.json)",
    NodeFile.META: "node name and proxy mode (node/meta.json)",
    NodeFile.CONNTRACK: "UDP conntrack entries (node/conntrack.txt)",
    API: "Kubernetes objects (api/)",
}


@record
class Missing:
    """An input that was not collected, and why (``what`` is a NodeFile value or API, or free words for
    an API read that failed)."""

    what: str
    why: str = ""

    @property
    def words(self) -> str:
        base = WHAT.get(self.what, self.what)
        return f"{base}: {self.why}" if self.why else base


@record
class HostAddress:
    """One address configured on the node (``ip -j addr``)."""

    ifname: str
    address: str
    prefixlen: int
    family: int  # 4 or 6
    scope: str = "global"


@record
class NodeFacts:
    name: str | None = None
    proxy_mode: ProxyMode | None = None  # None: unknown (decided once, when the Snapshot is built)
    proxy_mode_how: str = ""  # how the mode was decided, in words
    addresses: tuple[HostAddress, ...] | None = None  # None: not collected
    sysctls: Mapping[str, str] = field(default_factory=dict)
    # legacy | nf_tables | both (KUBE-* chains in both: split brain) | None (unknown or no KUBE-* chains)
    iptables_backend: str | None = None
    iptables_backend_reason: str = ""  # how the backend was decided, in words

    # interface -> the bridge it is a port of ("master" in `ip -j addr`); None: not collected
    bridge_ports: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.proxy_mode, str) and not isinstance(self.proxy_mode, ProxyMode):
            object.__setattr__(self, "proxy_mode", ProxyMode.parse(self.proxy_mode))

    @property
    def local_ips(self) -> tuple[str, ...]:
        return tuple(a.address for a in self.addresses or ())


@record
class Snapshot:
    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    legacy_endpoints: tuple[EndpointSlice, ...] = ()  # v1 Endpoints, converted to slices
    pods: tuple[Pod, ...] = ()
    nodes: tuple[Node, ...] = ()
    config_maps: tuple[ConfigMap, ...] = ()
    network_policies: tuple[NetworkPolicy, ...] = ()
    iptables: IptablesDump | None = None
    ip6tables: IptablesDump | None = None
    node: NodeFacts = NodeFacts()
    source: str = ""  # "demo", a folder, a tarball, "live"
    api_collected: bool = True  # False: no API objects were available at all
    missing: tuple[Missing, ...] = ()  # inputs that were not collected, and why
    warnings: tuple[str, ...] = ()
    ipvs: IpvsTable | None = None  # IPVS virtual servers (ipvsadm -Sn or netlink); None: not collected
    ipsets: IpSets | None = None  # ipset save or netlink; None: not collected
    nft: NftRuleset | None = None  # nftables ruleset (nft -j list ruleset); None: not collected
    conntrack: tuple[ConntrackEntry, ...] | None = None  # UDP conntrack entries; None: not collected
    # Pods and EndpointSlices of big api/ files, typed when a question needs them (svctrace.parsers.k8s_lazy:
    # ``.kind``, ``.where(key, value)`` and ``.all()``); the accessors below answer from both.
    lazy_api: tuple[Any, ...] = ()

    _index: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def mode(self) -> ProxyMode | None:
        """kube-proxy's mode on this node, as decided when the Snapshot was built; None: unknown."""
        return self.node.proxy_mode

    def _by(self, key: str, build: Any) -> Any:
        got = self._index.get(key)
        if got is None:
            got = self._index[key] = build()
        return got

    def memoized(self, key: str, build: Callable[[], T]) -> T:
        """``build()``, made once for this Snapshot and kept: an index a consumer builds over the whole of it."""
        return self._by(f"memo:{key}", build)  # type: ignore[no-any-return]

    def recent(self, key: Hashable, build: Callable[[], T]) -> T:
        """``build()``, remembered under ``key`` for a while (the answers used last): for answers several
        consumers of one Service ask for, without holding one per Service of a big cluster. What a namespace's
        Services share (its pods) stays while they are asked about; a sweep's earlier namespaces are let go."""
        memo: OrderedDict[Hashable, tuple[Any, int]] = self._index.setdefault("recent", OrderedDict())
        if key in memo:
            memo.move_to_end(key)
            return memo[key][0]  # type: ignore[no-any-return]
        got = build()
        weight = len(got) if isinstance(got, (tuple, list, dict, set, frozenset)) else 1
        memo[key] = (got, weight)
        total = self._index.get("recent_items", 0) + weight
        while len(memo) > RECENT_KEPT and (len(memo) > RECENT or total > RECENT_ITEMS):
            total -= memo.popitem(last=False)[1][1]
        self._index["recent_items"] = total
        return got

    def _group(self, items: tuple[Any, ...], key: Any) -> dict[Any, list[Any]]:
        out: dict[Any, list[Any]] = {}
        for item in items:
            out.setdefault(key(item), []).append(item)
        return out

    def service(self, namespace: str, name: str) -> Service | None:
        index = self._by("services", lambda: {(s.namespace, s.name): s for s in reversed(self.services)})
        return index.get((namespace, name))  # type: ignore[no-any-return]

    def _lazy(self, kind: str) -> list[Any]:
        return [lazy for lazy in self.lazy_api if lazy.kind == kind]

    def _all(self, kind: str, eager: tuple[T, ...]) -> tuple[T, ...]:
        if not self.lazy_api:
            return eager
        got: tuple[T, ...] = self._by(f"all_{kind}", lambda: _first_of_each(
            (*eager, *(item for lazy in self._lazy(kind) for item in lazy.all()))))
        return got

    def all_pods(self) -> tuple[Pod, ...]:
        """Every pod (a big file's typed now, once)."""
        return self._all("Pod", self.pods)

    def all_endpoint_slices(self) -> tuple[EndpointSlice, ...]:
        return self._all("EndpointSlice", self.endpoint_slices)

    def prepare_sweep(self, keep_chains: int = 2048, services: int | None = None) -> None:
        """Ready for questions about every Service in turn (``audit``), each asked once: big files are indexed by
        what a Service's questions ask (its namespace's pods, its slices) without typing them, once, before the
        sweep forks (every worker shares the index and types only its own Services'); and each table keeps only
        the ``keep_chains`` chains used last typed, not every chain the sweep reads. ``services``: how many
        Services it asks about (None: every one); past SWEEP_FROM, whole-table indexes answer from the first."""
        for lazy in self.lazy_api:
            lazy.prepare(lazy.asked_by)
        self._keep_typed(keep_chains)
        if services is None or services > SWEEP_FROM:
            for dump in (self.iptables, self.ip6tables):  # each Service is asked about: indexes beat searches
                for table in dump.tables.values() if dump is not None else ():
                    table.memo[SWEEP] = True

    def end_sweep(self, keep_chains: int = 2048) -> None:
        """A sweep's share is done: what it kept for the Services coming next (typed chains, a namespace's pods)
        is let go, so that what comes after (the other workers' answers) fills that memory, not more."""
        self._index.pop("recent", None)
        self._index.pop("recent_items", None)
        self._keep_typed(0)
        self._keep_typed(keep_chains)

    def _keep_typed(self, keep_chains: int) -> None:
        """Each table keeps at most the ``keep_chains`` chains used last typed."""
        tables: list[Any] = [t for d in (self.iptables, self.ip6tables) if d is not None for t in d.tables.values()]
        tables += [t.chains for t in self.nft.tables] if self.nft is not None else []
        for table in tables:
            keep = getattr(table, "keep_at_most", None)  # an nftables table read whole has nothing to forget
            if keep is not None:
                keep(keep_chains)

    def expect_pod_ip_lookups(self, count: int) -> None:
        """``count`` pods will be asked for by address (a trace names each endpoint's pod): past the first
        couple, one index of every pod's addresses costs less than a scan of the big files per address."""
        if count > 2:
            for lazy in self._lazy("Pod"):
                lazy.prepare("ip")

    def slices_for(self, svc: Service) -> tuple[EndpointSlice, ...]:
        """EndpointSlices of a Service; v1 Endpoints only when no slice exists (older clusters)."""
        key = (svc.namespace, svc.name)
        if self.lazy_api and "all_EndpointSlice" not in self._index:
            eager = self._by("slices", lambda: self._group(self.endpoint_slices,
                                                           lambda s: (s.namespace, s.service_name))).get(key, ())
            found = list(_first_of_each((*eager, *(
                s for lazy in self._lazy("EndpointSlice") for s in lazy.where("service", svc.name)
                if (s.namespace, s.service_name) == key))))
        else:  # every slice typed: one index of them all
            found = self._by("all_slices_by", lambda: self._group(self.all_endpoint_slices(),
                                                                  lambda s: (s.namespace, s.service_name))).get(key)
        if found:
            return tuple(found)
        legacy = self._by("legacy", lambda: self._group(self.legacy_endpoints,
                                                        lambda s: (s.namespace, s.service_name))).get(key)
        return tuple(legacy or ())

    def pod(self, namespace: str, name: str) -> Pod | None:
        if self.lazy_api:
            by_name = self.recent(("pods_named", namespace),
                                  lambda: {p.name: p for p in reversed(self.pods_in(namespace))})
            return by_name.get(name)
        index = self._by("pods", lambda: {(p.namespace, p.name): p for p in reversed(self.pods)})
        return index.get((namespace, name))  # type: ignore[no-any-return]

    def pod_by_ip(self, ip: str) -> Pod | None:
        def build() -> dict[str, Pod]:
            out: dict[str, Pod] = {}
            for pod in self.pods if self.lazy_api else self.all_pods():
                if not pod.host_network:
                    for pip in pod.pod_ips:
                        out.setdefault(pip, pod)
            return out
        found = self._by("pod_ips", build).get(ip)
        if found is not None or not self.lazy_api:
            return found  # type: ignore[no-any-return]
        return self.recent(("pod_by_ip", ip), lambda: next(  # asked again per Service port and family
            (p for lazy in self._lazy("Pod") for p in lazy.where("ip", ip) if not p.host_network and ip in p.pod_ips),
            None))

    def pods_matching(self, selector: Mapping[str, str], namespace: str | None = None) -> tuple[Pod, ...]:
        """Pods with every label of ``selector`` (in ``namespace``, or any): found through a label index, so a
        Service's pods cost the size of its smallest label group, not a scan of every pod."""
        if not selector:
            return self.pods_in(namespace) if namespace is not None else self.all_pods()
        def build(pods: Iterable[Pod]) -> dict[tuple[str, str], list[Pod]]:
            out: dict[tuple[str, str], list[Pod]] = {}
            for pod in pods:
                for pair in pod.labels.items():
                    out.setdefault(pair, []).append(pod)
            return out
        if self.lazy_api and namespace is not None and "all_Pod" not in self._index:
            # one namespace's label index, from its pods alone
            index = self.recent(("labels", namespace), lambda: build(self.pods_in(namespace)))
        else:
            index = self._by("labels", lambda: build(self.all_pods()))
        smallest = min((index.get(pair, []) for pair in selector.items()), key=len)
        return tuple(p for p in smallest if (namespace is None or p.namespace == namespace)
                     and all(p.labels.get(k) == v for k, v in selector.items()))

    def pods_in(self, namespace: str) -> tuple[Pod, ...]:
        if self.lazy_api and "all_Pod" not in self._index:
            def read() -> tuple[Pod, ...]:
                eager = [p for p in self.pods if p.namespace == namespace]
                return _first_of_each((*eager, *(p for lazy in self._lazy("Pod") for p in lazy.where(
                    "namespace", namespace) if p.namespace == namespace)))
            return self.recent(("pods_in", namespace), read)
        return tuple(self._by("pods_ns", lambda: self._group(self.all_pods(), lambda p: p.namespace)).get(
            namespace, ()))

    def node_named(self, name: str | None) -> Node | None:
        if name is None:
            return None
        return self._by("nodes", lambda: {n.name: n for n in reversed(self.nodes)}).get(name)  # type: ignore[no-any-return]

    def config_map(self, namespace: str, name: str) -> ConfigMap | None:
        index = self._by("cms", lambda: {(c.namespace, c.name): c for c in reversed(self.config_maps)})
        return index.get((namespace, name))  # type: ignore[no-any-return]

    def dump(self, family: int) -> IptablesDump | None:
        return self.iptables if family == 4 else self.ip6tables

    @property
    def missing_words(self) -> tuple[str, ...]:
        return tuple(m.words for m in self.missing)

    def has_missing(self, what: str) -> bool:
        return any(m.what == what for m in self.missing)


def _first_of_each(items: Iterable[T]) -> tuple[T, ...]:
    """Each object once (by namespace and name), the first read: as merge_objects keeps them."""
    seen: set[tuple[str, str]] = set()
    out = []
    for item in items:
        key = (getattr(item, "namespace", ""), getattr(item, "name", ""))
        if key not in seen:
            seen.add(key)
            out.append(item)
    return tuple(out)
