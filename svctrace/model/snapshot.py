"""A Snapshot: everything svctrace knows about one node and the API at one moment.

A live run and a replayed snapshot folder both produce one of these; nothing downstream can tell
them apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from svctrace.model.conntrack import ConntrackEntry
from svctrace.model.dataplane import IptablesDump
from svctrace.model.ipvs import IpSets, IpvsTable
from svctrace.model.k8s import (
    ConfigMap,
    EndpointSlice,
    NetworkPolicy,
    Node,
    Pod,
    Service,
)
from svctrace.model.nft import NftRuleset


@dataclass(frozen=True, slots=True)
class HostAddress:
    """One address configured on the node (``ip -j addr``)."""

    ifname: str
    address: str
    prefixlen: int
    family: int  # 4 or 6
    scope: str = "global"


@dataclass(frozen=True, slots=True)
class NodeFacts:
    name: str | None = None
    proxy_mode: str | None = None  # iptables | ipvs | nftables | None (unknown)
    addresses: tuple[HostAddress, ...] | None = None  # None: not collected
    sysctls: Mapping[str, str] = field(default_factory=dict)
    # legacy | nf_tables | both (KUBE-* chains in both: split brain) | None (unknown or no KUBE-* chains)
    iptables_backend: str | None = None
    iptables_backend_reason: str = ""  # how the backend was decided, in words

    @property
    def local_ips(self) -> tuple[str, ...]:
        return tuple(a.address for a in self.addresses or ())


@dataclass(frozen=True, slots=True)
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
    missing: tuple[str, ...] = ()  # inputs that were not collected, in the user's words
    warnings: tuple[str, ...] = ()
    ipvs: IpvsTable | None = None  # IPVS virtual servers (ipvsadm -Sn or netlink); None: not collected
    ipsets: IpSets | None = None  # ipset save or netlink; None: not collected
    nft: NftRuleset | None = None  # nftables ruleset (nft -j list ruleset); None: not collected
    conntrack: tuple[ConntrackEntry, ...] | None = None  # UDP conntrack entries; None: not collected

    def service(self, namespace: str, name: str) -> Service | None:
        for svc in self.services:
            if svc.namespace == namespace and svc.name == name:
                return svc
        return None

    def slices_for(self, svc: Service) -> tuple[EndpointSlice, ...]:
        """EndpointSlices of a Service; v1 Endpoints only when no slice exists (older clusters)."""
        found = tuple(s for s in self.endpoint_slices
                      if s.namespace == svc.namespace and s.service_name == svc.name)
        if found:
            return found
        return tuple(s for s in self.legacy_endpoints
                     if s.namespace == svc.namespace and s.service_name == svc.name)

    def pod(self, namespace: str, name: str) -> Pod | None:
        for pod in self.pods:
            if pod.namespace == namespace and pod.name == name:
                return pod
        return None

    def pod_by_ip(self, ip: str) -> Pod | None:
        for pod in self.pods:
            if ip in pod.pod_ips and not pod.host_network:
                return pod
        return None

    def node_named(self, name: str | None) -> Node | None:
        if name is None:
            return None
        for node in self.nodes:
            if node.name == name:
                return node
        return None

    def config_map(self, namespace: str, name: str) -> ConfigMap | None:
        for cm in self.config_maps:
            if cm.namespace == namespace and cm.name == name:
                return cm
        return None

    def dump(self, family: int) -> IptablesDump | None:
        return self.iptables if family == 4 else self.ip6tables
