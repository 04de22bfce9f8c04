"""Kubernetes objects as the API prints them (JSON or YAML, camelCase) -> the model in svctrace.model.k8s.

Two steps, kept apart: svctrace.parsers.k8s_documents turns a file's text into raw objects (streamed), this
module types them. Both are pure. A missing optional field is fine; a field we need with the wrong type
raises an InputError that names the file, the object (kind namespace/name) and the field.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import field, replace
from typing import Any, TypeVar, cast

from svctrace.errors import InputError
from svctrace.model.k8s import (
    ConfigMap,
    ContainerPort,
    ContainerStatus,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    LoadBalancerIngress,
    NetworkPolicy,
    Node,
    NodeAddress,
    ObjectRef,
    Pod,
    Service,
    ServicePort,
)
from svctrace.parsers.json_stream import deeper_than
from svctrace.parsers.k8s_documents import (
    HINT_EXPORT,
    RawObject,
    decode_documents,
    expand_all,
)
from svctrace.parsers.k8s_fast import MANAGED_BY_LABEL, SERVICE_NAME_LABEL, fast_endpoint_slice, fast_pod
from svctrace.parsers.k8s_fields import READ_FIELDS
from svctrace.parsers.k8s_object import TypedObject as _Obj
from svctrace.parsers.limits import MAX_DEPTH
from svctrace.record import record

__all__ = ["ApiObjects", "decode_documents", "merge_objects", "parse_objects", "parse_raw"]

# Only these ConfigMaps are kept: the cluster DNS and kube-proxy configuration. Others are read and
# dropped so that a `kubectl get cm -A` dump neither fails nor fills memory with unrelated data.
KEPT_CONFIG_MAPS = frozenset({("kube-system", "coredns"), ("kube-system", "kube-proxy")})
_READ_DATA = frozenset(cast(Mapping[str, Any], READ_FIELDS["ConfigMap"]["data"]))

# Old API spellings kube-proxy still accepts (v1.Service docs: "OnlyLocal"/"Global" were the beta names).
_EXTERNAL_POLICY_ALIASES = {"OnlyLocal": "Local", "Global": "Cluster"}

# (API group, kind) pairs svctrace reads. "" is the core group ("v1"). Matching the group keeps
# look-alike custom kinds (Knative's serving.knative.dev Service, say) out of the Service list.
_CORE = ""
_KNOWN = {
    (_CORE, "Service"),
    (_CORE, "Endpoints"),
    (_CORE, "Pod"),
    (_CORE, "Node"),
    (_CORE, "ConfigMap"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("extensions", "NetworkPolicy"),  # clusters before 1.9 served it here
}

_T = TypeVar("_T")

_HINT_EXPORT = HINT_EXPORT


@record
class ApiObjects:
    """The Kubernetes objects read from one or more files."""

    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    legacy_endpoints: tuple[EndpointSlice, ...] = ()  # v1 Endpoints, one slice per subset and family
    pods: tuple[Pod, ...] = ()
    nodes: tuple[Node, ...] = ()
    config_maps: tuple[ConfigMap, ...] = ()
    network_policies: tuple[NetworkPolicy, ...] = ()
    ignored_kinds: Mapping[str, int] = field(default_factory=dict)  # kind -> how many were skipped
    secrets_skipped: int = 0
    objects_seen: int = 0  # every object found, read or not (Lists expanded)
    warnings: tuple[str, ...] = ()
    # Pods and EndpointSlices of big files, typed when asked for (svctrace.parsers.k8s_lazy)
    lazy: tuple[Any, ...] = ()

    def with_lazy(self, lazy: tuple[Any, ...], count: int) -> ApiObjects:
        return replace(self, lazy=self.lazy + lazy, objects_seen=self.objects_seen + count)

    @property
    def ignored(self) -> int:
        """How many objects were of kinds svctrace does not read."""
        return sum(self.ignored_kinds.values())


# ---------------------------------------------------------------------------------------------
# documents -> model


def parse_objects(docs: Iterable[Mapping[str, Any]], source: str) -> ApiObjects:
    """Type the Kubernetes objects in ``docs`` (Lists expanded); ``source`` names the file in messages."""
    return parse_raw(expand_all(docs, source), source)


def parse_raw(objects: Iterable[RawObject], source: str) -> ApiObjects:
    """Type raw objects as svctrace.parsers.k8s_documents reads them, one at a time."""
    acc = Accumulator(source)
    for obj in objects:
        acc.add(obj.doc, source, obj.line)
    return acc.result()


def merge_objects(parts: Iterable[ApiObjects]) -> ApiObjects:
    """Several files' objects as one, in order; an object found twice is kept once (the first), warned of."""
    parts = list(parts)
    warnings = [w for p in parts for w in p.warnings]
    ignored: dict[str, int] = {}
    for p in parts:
        for kind, n in p.ignored_kinds.items():
            ignored[kind] = ignored.get(kind, 0) + n

    def unique(kind: str, items: Iterable[_T]) -> tuple[_T, ...]:
        # The same object in two files (a namespace dump next to an all-namespaces dump) must not
        # count twice: doubled endpoints would be a wrong answer.
        seen: dict[tuple[str, str], int] = {}
        kept = []
        for item in items:
            key = (getattr(item, "namespace", ""), getattr(item, "name", ""))
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == 1:
                kept.append(item)
        for (ns, name), n in seen.items():
            if n > 1:
                ref = f"{ns}/{name}" if ns else name
                warnings.append(f"{kind} {ref} appears {n} times in api/; the first one read is used")
        return tuple(kept)

    return ApiObjects(
        services=unique("Service", (s for p in parts for s in p.services)),
        endpoint_slices=unique("EndpointSlice", (s for p in parts for s in p.endpoint_slices)),
        legacy_endpoints=unique("Endpoints", (s for p in parts for s in p.legacy_endpoints)),
        pods=unique("Pod", (s for p in parts for s in p.pods)),
        lazy=tuple(x for p in parts for x in p.lazy),
        nodes=unique("Node", (s for p in parts for s in p.nodes)),
        config_maps=unique("ConfigMap", (s for p in parts for s in p.config_maps)),
        network_policies=unique("NetworkPolicy", (s for p in parts for s in p.network_policies)),
        ignored_kinds=dict(sorted(ignored.items())),
        secrets_skipped=sum(p.secrets_skipped for p in parts),
        objects_seen=sum(p.objects_seen for p in parts),
        warnings=tuple(warnings),
    )


class Accumulator:
    def __init__(self, source: str) -> None:
        self.source = source
        self.services: list[Service] = []
        self.slices: list[EndpointSlice] = []
        self.legacy: list[EndpointSlice] = []
        self.pods: list[Pod] = []
        self.nodes: list[Node] = []
        self.config_maps: list[ConfigMap] = []
        self.policies: list[NetworkPolicy] = []
        self.ignored: dict[str, int] = {}
        self.secrets = 0
        self.kindless = 0
        self.seen = 0
        self.warnings: list[str] = []

    def add(self, doc: Mapping[str, Any], source: str, line: int | None = None) -> None:
        self.seen += 1
        kind = doc.get("kind")
        if kind == "Secret":
            # Never look further into a Secret: nothing of it is kept, not even its name.
            self.secrets += 1
            return
        if not isinstance(kind, str) or not kind:
            self.kindless += 1
            return
        group = _group(doc.get("apiVersion"))
        if (group, kind) not in _KNOWN:
            label = kind if group in (_CORE, None) else f"{kind}.{group}"
            self.ignored[label] = self.ignored.get(label, 0) + 1
            return
        obj = _Obj.of(doc, kind, source, namespaced=kind != "Node", line=line)
        if kind == "Service":
            self.services.append(_service(obj))
        elif kind == "EndpointSlice":
            self.slices.append(fast_endpoint_slice(obj) or _endpoint_slice(obj))
        elif kind == "Endpoints":
            self.legacy.extend(_legacy_endpoints(obj))
        elif kind == "Pod":
            self.pods.append(fast_pod(obj) or _pod(obj))
        elif kind == "Node":
            self.nodes.append(_node(obj))
        elif kind == "ConfigMap":
            if (obj.namespace, obj.name) in KEPT_CONFIG_MAPS:
                data = {k: v for k, v in obj.as_str_map(doc.get("data"), "data").items() if k in _READ_DATA}
                self.config_maps.append(ConfigMap(obj.namespace, obj.name, data))
        else:
            self.policies.append(_network_policy(obj))

    def result(self) -> ApiObjects:
        if self.kindless:
            many = f"{self.kindless} objects" if self.kindless > 1 else "an object"
            self.warnings.append(f"{self.source}: {many} without a kind {'were' if self.kindless > 1 else 'was'} "
                                 "skipped")
        secrets_note: tuple[str, ...] = ()
        if self.secrets:
            secrets_note = (f"{self.source}: skipped {self.secrets} Secret(s) without reading them; svctrace "
                            "never needs Secrets, so leave them out of snapshots you share",)
        return ApiObjects(tuple(self.services), tuple(self.slices), tuple(self.legacy), tuple(self.pods),
                          tuple(self.nodes), tuple(self.config_maps), tuple(self.policies),
                          dict(sorted(self.ignored.items())), self.secrets, self.seen,
                          tuple(self.warnings) + secrets_note)


def _group(api_version: object) -> str | None:
    if not isinstance(api_version, str) or not api_version:
        return None  # hand-written objects may leave apiVersion out; trust the kind then
    return api_version.rsplit("/", 1)[0] if "/" in api_version else _CORE


# ---------------------------------------------------------------------------------------------
# one function per kind


def _service(o: _Obj) -> Service:
    spec = o.spec
    meta = o.meta
    svc_type = o.as_str(spec.get("type"), "spec.type", "ClusterIP")
    cluster_ips = o.as_str_list(spec.get("clusterIPs"), "spec.clusterIPs")
    if not cluster_ips:
        single = o.as_str(spec.get("clusterIP"), "spec.clusterIP")
        cluster_ips = (single,) if single else ()
    ports = tuple(_service_port(o, p, f"spec.ports[{i}]")
                  for i, p in enumerate(o.as_list(spec.get("ports"), "spec.ports")))
    selector = o.as_str_map(spec.get("selector"), "spec.selector") or None
    lb_status = o.as_map(o.status.get("loadBalancer"), "status.loadBalancer")
    ingress = tuple(_lb_ingress(o, v, f"status.loadBalancer.ingress[{i}]")
                    for i, v in enumerate(o.as_list(lb_status.get("ingress"), "status.loadBalancer.ingress")))
    source_ranges = o.as_str_list(spec.get("loadBalancerSourceRanges"), "spec.loadBalancerSourceRanges")
    etp = o.as_str(spec.get("externalTrafficPolicy"), "spec.externalTrafficPolicy", "Cluster") or "Cluster"
    itp = o.as_str(spec.get("internalTrafficPolicy"), "spec.internalTrafficPolicy", "Cluster") or "Cluster"
    affinity_cfg = o.as_map(spec.get("sessionAffinityConfig"), "spec.sessionAffinityConfig")
    client_ip = o.as_map(affinity_cfg.get("clientIP"), "spec.sessionAffinityConfig.clientIP")
    return Service(
        namespace=o.namespace,
        name=o.name,
        type=svc_type,
        cluster_ips=cluster_ips,
        ip_families=o.as_str_list(spec.get("ipFamilies"), "spec.ipFamilies"),
        ports=ports,
        selector=selector,
        external_ips=o.as_str_list(spec.get("externalIPs"), "spec.externalIPs"),
        load_balancer_ingress=ingress,
        # The API's validation lets whitespace around a range through; kube-proxy trims it.
        load_balancer_source_ranges=tuple(r.strip() for r in source_ranges),
        external_traffic_policy=_EXTERNAL_POLICY_ALIASES.get(etp, etp),
        internal_traffic_policy=itp,
        session_affinity=o.as_str(spec.get("sessionAffinity"), "spec.sessionAffinity", "None") or "None",
        session_affinity_timeout=o.as_int(client_ip.get("timeoutSeconds"),
                                       "spec.sessionAffinityConfig.clientIP.timeoutSeconds"),
        external_name=o.as_opt_str(spec.get("externalName"), "spec.externalName"),
        health_check_node_port=o.as_port(spec.get("healthCheckNodePort"), "spec.healthCheckNodePort"),
        publish_not_ready_addresses=bool(o.as_bool(spec.get("publishNotReadyAddresses"),
                                                "spec.publishNotReadyAddresses")),
        labels=o.as_str_map(meta.get("labels"), "metadata.labels"),
        uid=o.as_str(meta.get("uid"), "metadata.uid"),
    )


def _service_port(o: _Obj, raw: object, path: str) -> ServicePort:
    p = o.as_map(raw, path)
    target = p.get("targetPort")
    # A named port stays a name; it is resolved per Pod later.
    target_port = target if target is None or isinstance(target, str) else o.as_port(target, f"{path}.targetPort")
    port = o.as_port(p.get("port"), f"{path}.port", required=True)
    assert port is not None  # required=True raised otherwise
    return ServicePort(
        port=port,
        protocol=o.as_protocol(p.get("protocol"), f"{path}.protocol"),
        name=o.as_str(p.get("name"), f"{path}.name"),
        target_port=target_port,
        node_port=o.as_port(p.get("nodePort"), f"{path}.nodePort"),
        app_protocol=o.as_opt_str(p.get("appProtocol"), f"{path}.appProtocol"),
    )


def _lb_ingress(o: _Obj, raw: object, path: str) -> LoadBalancerIngress:
    v = o.as_map(raw, path)
    return LoadBalancerIngress(ip=o.as_opt_str(v.get("ip"), f"{path}.ip") or None,
                               hostname=o.as_opt_str(v.get("hostname"), f"{path}.hostname") or None,
                               ip_mode=o.as_opt_str(v.get("ipMode"), f"{path}.ipMode") or None)


def _object_ref(o: _Obj, raw: object, path: str) -> ObjectRef | None:
    if raw is None:
        return None
    r = o.as_map(raw, path)
    return ObjectRef(kind=o.as_word(r.get("kind"), f"{path}.kind"),
                     namespace=o.as_word(r.get("namespace"), f"{path}.namespace"),
                     name=o.as_str(r.get("name"), f"{path}.name"))


def _endpoint_slice(o: _Obj) -> EndpointSlice:
    labels = o.as_str_map(o.meta.get("labels"), "metadata.labels")
    endpoints = []
    for i, raw in enumerate(o.as_list(o.doc.get("endpoints"), "endpoints")):
        path = f"endpoints[{i}]"
        ep = o.as_map(raw, path)
        cond = o.as_map(ep.get("conditions"), f"{path}.conditions")
        # v1beta1 (and v1's deprecatedTopology) put node and zone in a topology map.
        topology = o.as_str_map(ep.get("topology") or ep.get("deprecatedTopology"), f"{path}.topology")
        endpoints.append(Endpoint(
            addresses=o.as_str_list(ep.get("addresses"), f"{path}.addresses"),
            conditions=EndpointConditions(
                ready=o.as_bool(cond.get("ready"), f"{path}.conditions.ready"),
                serving=o.as_bool(cond.get("serving"), f"{path}.conditions.serving"),
                terminating=o.as_bool(cond.get("terminating"), f"{path}.conditions.terminating")),
            node_name=(o.as_opt_word(ep.get("nodeName"), f"{path}.nodeName")
                       or topology.get("kubernetes.io/hostname")),
            zone=o.as_opt_word(ep.get("zone"), f"{path}.zone") or topology.get("topology.kubernetes.io/zone"),
            hostname=o.as_opt_str(ep.get("hostname"), f"{path}.hostname"),
            target_ref=_object_ref(o, ep.get("targetRef"), f"{path}.targetRef"),
        ))
    ports = tuple(_endpoint_port(o, raw, f"ports[{i}]")
                  for i, raw in enumerate(o.as_list(o.doc.get("ports"), "ports")))
    return EndpointSlice(
        namespace=o.namespace,
        name=o.name,
        service_name=labels.get(SERVICE_NAME_LABEL),
        address_type=o.as_str(o.doc.get("addressType"), "addressType", "IPv4"),
        endpoints=tuple(endpoints),
        ports=ports,
        managed_by=labels.get(MANAGED_BY_LABEL),
    )


def _endpoint_port(o: _Obj, raw: object, path: str) -> EndpointPort:
    p = o.as_map(raw, path)
    return EndpointPort(port=o.as_port(p.get("port"), f"{path}.port"),
                        protocol=o.as_protocol(p.get("protocol"), f"{path}.protocol"),
                        name=o.as_str(p.get("name"), f"{path}.name"),
                        app_protocol=o.as_opt_str(p.get("appProtocol"), f"{path}.appProtocol"))


def _legacy_endpoints(o: _Obj) -> list[EndpointSlice]:
    """A v1 Endpoints as EndpointSlices: one per subset and address family, as the mirroring controller."""
    slices: list[EndpointSlice] = []
    for i, raw in enumerate(o.as_list(o.doc.get("subsets"), "subsets")):
        path = f"subsets[{i}]"
        subset = o.as_map(raw, path)
        ports = tuple(_endpoint_port(o, p, f"{path}.ports[{j}]")
                      for j, p in enumerate(o.as_list(subset.get("ports"), f"{path}.ports")))
        by_family: dict[str, list[Endpoint]] = {"IPv4": [], "IPv6": []}
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for j, a in enumerate(o.as_list(subset.get(key), f"{path}.{key}")):
                apath = f"{path}.{key}[{j}]"
                addr = o.as_map(a, apath)
                ip = o.as_str(addr.get("ip"), f"{apath}.ip")
                try:
                    family = "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
                except ValueError:
                    o.fail(f"{apath}.ip", "an IP address", ip)
                by_family[family].append(Endpoint(
                    addresses=(ip,),
                    conditions=EndpointConditions(ready=ready),
                    node_name=o.as_opt_word(addr.get("nodeName"), f"{apath}.nodeName"),
                    hostname=o.as_opt_str(addr.get("hostname"), f"{apath}.hostname"),
                    target_ref=_object_ref(o, addr.get("targetRef"), f"{apath}.targetRef"),
                ))
        for family, endpoints in by_family.items():
            if endpoints:
                slices.append(EndpointSlice(
                    namespace=o.namespace, name=f"{o.name}-subset{i}-{family.lower()}", service_name=o.name,
                    address_type=family, endpoints=tuple(endpoints), ports=ports, origin="Endpoints"))
    return slices


def _condition(o: _Obj, conditions: object, path: str, wanted: str) -> str | None:
    for i, raw in enumerate(o.as_list(conditions, path)):
        c = o.as_map(raw, f"{path}[{i}]")
        if c.get("type") == wanted:
            return o.as_str(c.get("status"), f"{path}[{i}].status")
    return None


def _pod(o: _Obj) -> Pod:
    meta, spec, status = o.meta, o.spec, o.status
    ips = tuple(o.as_str(o.as_map(v, f"status.podIPs[{i}]").get("ip"), f"status.podIPs[{i}].ip")
                for i, v in enumerate(o.as_list(status.get("podIPs"), "status.podIPs")))
    if not ips:
        single = o.as_str(status.get("podIP"), "status.podIP")
        ips = (single,) if single else ()
    ports: list[ContainerPort] = []
    # Sidecars (init containers that keep running) serve named ports too, as FindPort knows since 1.29.
    containers = [(f"spec.containers[{i}]", c)
                  for i, c in enumerate(o.as_list(spec.get("containers"), "spec.containers"))]
    for i, c in enumerate(o.as_list(spec.get("initContainers"), "spec.initContainers")):
        if isinstance(c, Mapping) and c.get("restartPolicy") == "Always":
            containers.append((f"spec.initContainers[{i}]", c))
    for path, raw in containers:
        c = o.as_map(raw, path)
        cname = o.as_word(c.get("name"), f"{path}.name")
        for j, p in enumerate(o.as_list(c.get("ports"), f"{path}.ports")):
            ppath = f"{path}.ports[{j}]"
            pm = o.as_map(p, ppath)
            number = o.as_port(pm.get("containerPort"), f"{ppath}.containerPort", required=True)
            assert number is not None
            ports.append(ContainerPort(number, o.as_protocol(pm.get("protocol"), f"{ppath}.protocol"),
                                       o.as_word(pm.get("name"), f"{ppath}.name"), cname))
    statuses = []
    for i, raw in enumerate(o.as_list(status.get("containerStatuses"), "status.containerStatuses")):
        path = f"status.containerStatuses[{i}]"
        cs = o.as_map(raw, path)
        state_map = o.as_map(cs.get("state"), f"{path}.state")
        state = next((s for s in ("running", "waiting", "terminated") if state_map.get(s) is not None), "")
        reason = ""
        if state:
            reason = o.as_word(o.as_map(state_map.get(state), f"{path}.state.{state}").get("reason"),
                           f"{path}.state.{state}.reason")
        statuses.append(ContainerStatus(
            name=o.as_word(cs.get("name"), f"{path}.name"),
            ready=bool(o.as_bool(cs.get("ready"), f"{path}.ready")),
            restart_count=o.as_int(cs.get("restartCount"), f"{path}.restartCount") or 0,
            state=state, reason=reason))
    return Pod(
        namespace=o.namespace,
        name=o.name,
        labels=o.as_str_map(meta.get("labels"), "metadata.labels"),
        node_name=o.as_opt_word(spec.get("nodeName"), "spec.nodeName") or None,
        pod_ips=ips,
        phase=o.as_word(status.get("phase"), "status.phase"),
        ready=_condition(o, status.get("conditions"), "status.conditions", "Ready") == "True",
        deleting=meta.get("deletionTimestamp") is not None,
        host_network=bool(o.as_bool(spec.get("hostNetwork"), "spec.hostNetwork")),
        container_ports=tuple(ports),
        container_statuses=tuple(statuses),
        owner=_owner(o, meta.get("ownerReferences")),
    )


def _owner(o: _Obj, raw: object) -> str | None:
    refs = [o.as_map(r, f"metadata.ownerReferences[{i}]")
            for i, r in enumerate(o.as_list(raw, "metadata.ownerReferences"))]
    if not refs:
        return None
    # The controller is the owner that matters ("managed by ReplicaSet/x"); it is normally the first.
    chosen = next((r for r in refs if r.get("controller") is True), refs[0])
    kind = o.as_str(chosen.get("kind"), "metadata.ownerReferences.kind")
    name = o.as_str(chosen.get("name"), "metadata.ownerReferences.name")
    return f"{kind}/{name}"


def _node(o: _Obj) -> Node:
    spec, status = o.spec, o.status
    addresses = []
    for i, raw in enumerate(o.as_list(status.get("addresses"), "status.addresses")):
        a = o.as_map(raw, f"status.addresses[{i}]")
        addresses.append(NodeAddress(o.as_str(a.get("type"), f"status.addresses[{i}].type"),
                                     o.as_str(a.get("address"), f"status.addresses[{i}].address")))
    cidrs = o.as_str_list(spec.get("podCIDRs"), "spec.podCIDRs")
    if not cidrs:
        single = o.as_str(spec.get("podCIDR"), "spec.podCIDR")
        cidrs = (single,) if single else ()
    ready = _condition(o, status.get("conditions"), "status.conditions", "Ready")
    return Node(name=o.name, addresses=tuple(addresses), pod_cidrs=cidrs,
                labels=o.as_str_map(o.meta.get("labels"), "metadata.labels"),
                ready=True if ready == "True" else False if ready == "False" else None)


def _network_policy(o: _Obj) -> NetworkPolicy:
    spec = o.spec
    if deeper_than(spec, MAX_DEPTH):  # kept whole, so it must not hold anything later walks cannot
        raise InputError(f"{o.kind} {o.ref}: spec nests more than {MAX_DEPTH} deep; refused", _HINT_EXPORT,
                         path=o.source, line=o.line)
    return NetworkPolicy(namespace=o.namespace, name=o.name,
                         pod_selector=dict(o.as_map(spec.get("podSelector"), "spec.podSelector")),
                         policy_types=o.as_str_list(spec.get("policyTypes"), "spec.policyTypes"),
                         spec=dict(spec))
