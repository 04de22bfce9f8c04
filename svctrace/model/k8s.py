"""Kubernetes objects, reduced to what the Service dataplane depends on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Literal

from svctrace.record import record

Protocol = Literal["TCP", "UDP", "SCTP"]


@record
class ObjectRef:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@record
class ServicePort:
    port: int
    protocol: Protocol = "TCP"
    name: str = ""
    target_port: int | str | None = None  # None: same as port
    node_port: int | None = None
    app_protocol: str | None = None
    # Set only on a Service read from a node's rules (no API object): the key its chains have there (iptables:
    # the hash suffix), which its name may not give (the rules do not name it, or their names do not hash).
    chains: str | None = None

    @property
    def effective_target_port(self) -> int | str:
        return self.port if self.target_port is None else self.target_port


@record
class LoadBalancerIngress:
    ip: str | None = None
    hostname: str | None = None
    ip_mode: str | None = None  # "VIP" (default) or "Proxy"


@record
class Service:
    namespace: str
    name: str
    type: str = "ClusterIP"  # ClusterIP | NodePort | LoadBalancer | ExternalName
    cluster_ips: tuple[str, ...] = ()  # ("None",) for headless, as the API writes it
    ip_families: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    selector: Mapping[str, str] | None = None  # None: selectorless
    external_ips: tuple[str, ...] = ()
    load_balancer_ingress: tuple[LoadBalancerIngress, ...] = ()
    load_balancer_source_ranges: tuple[str, ...] = ()
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    session_affinity: str = "None"
    session_affinity_timeout: int | None = None  # seconds; kube-proxy's default is 10800
    external_name: str | None = None
    health_check_node_port: int | None = None
    publish_not_ready_addresses: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    uid: str = ""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def is_headless(self) -> bool:
        return self.type != "ExternalName" and (not self.cluster_ips or self.cluster_ips[0] == "None")

    @property
    def is_external_name(self) -> bool:
        return self.type == "ExternalName"

    @property
    def virtual_ips(self) -> tuple[str, ...]:
        """The ClusterIPs kube-proxy programs (none for headless and ExternalName)."""
        if self.is_headless or self.is_external_name:
            return ()
        return tuple(ip for ip in self.cluster_ips if ip and ip != "None")

    @property
    def affinity_seconds(self) -> int | None:
        if self.session_affinity != "ClientIP":
            return None
        return self.session_affinity_timeout or 10800


@record
class EndpointConditions:
    ready: bool | None = None  # None: unknown, which consumers treat as ready
    serving: bool | None = None
    terminating: bool | None = None

    @property
    def is_ready(self) -> bool:
        return self.ready is not False

    @property
    def is_serving(self) -> bool:
        return self.serving if self.serving is not None else self.is_ready

    @property
    def is_terminating(self) -> bool:
        return bool(self.terminating)


@record
class Endpoint:
    addresses: tuple[str, ...]
    conditions: EndpointConditions = EndpointConditions()
    node_name: str | None = None
    zone: str | None = None
    hostname: str | None = None
    target_ref: ObjectRef | None = None


@record
class EndpointPort:
    port: int | None
    protocol: Protocol = "TCP"
    name: str = ""
    app_protocol: str | None = None


@record
class EndpointSlice:
    namespace: str
    name: str
    service_name: str | None
    address_type: str = "IPv4"  # IPv4 | IPv6 | FQDN
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()
    managed_by: str | None = None
    # "EndpointSlice", or "Endpoints" when svctrace derived this slice from a legacy Endpoints object
    origin: str = "EndpointSlice"


@record
class ContainerPort:
    container_port: int
    protocol: Protocol = "TCP"
    name: str = ""
    container: str = ""


@record
class ContainerStatus:
    name: str
    ready: bool = False
    restart_count: int = 0
    state: str = ""  # running | waiting | terminated
    reason: str = ""  # CrashLoopBackOff, ImagePullBackOff, ...


@record
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    node_name: str | None = None
    pod_ips: tuple[str, ...] = ()
    phase: str = ""
    ready: bool = False
    deleting: bool = False
    host_network: bool = False
    container_ports: tuple[ContainerPort, ...] = ()
    container_statuses: tuple[ContainerStatus, ...] = ()
    owner: str | None = None  # "ReplicaSet/my-nginx-5b56ccd65f"

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@record
class NodeAddress:
    type: str  # InternalIP | ExternalIP | Hostname
    address: str


@record
class Node:
    name: str
    addresses: tuple[NodeAddress, ...] = ()
    pod_cidrs: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    ready: bool | None = None

    @property
    def zone(self) -> str | None:
        return self.labels.get("topology.kubernetes.io/zone")

    @property
    def ips(self) -> tuple[str, ...]:
        return tuple(a.address for a in self.addresses if a.type in ("InternalIP", "ExternalIP"))


@record
class ConfigMap:
    namespace: str
    name: str
    data: Mapping[str, str] = field(default_factory=dict)


def corefile_zones(corefile: str) -> tuple[str, ...] | None:
    """The zones of the first ``kubernetes`` plugin block of a CoreDNS Corefile; None when it has none."""
    for line in corefile.splitlines():
        words = line.split("{", 1)[0].split()
        if len(words) >= 2 and words[0] == "kubernetes" and not line.lstrip().startswith("#"):
            return tuple(words[1:])
    return None


@record
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: Mapping[str, object] = field(default_factory=dict)
    policy_types: tuple[str, ...] = ()
    spec: Mapping[str, object] = field(default_factory=dict)  # kept whole for the diagnosis checks
