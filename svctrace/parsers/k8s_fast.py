"""A fast path for the Pods and EndpointSlices a big cluster holds a hundred thousand of.

``audit -A`` of a 10,000-Service snapshot types every pod (100,000) and every EndpointSlice once; the
checked path (svctrace.parsers.k8s: each field through ``TypedObject.as_*`` with the path it would name in
an error) cost a third of the sweep. Nearly every object is of one plain shape: here each field's type is
checked inline and the object typed directly. Anything else (a field of another type, a value the checked
path would reject or convert, YAML's non-dict mappings, deprecated topology) returns None, and the checked
path types it, or says what is wrong. The result is the same object, value for value
(tests/unit/test_k8s_fast.py compares both on every object of the corpus and on altered copies).

The many identical small values (a container's port, its status, an endpoint's conditions) are shared: the
model is frozen, so one object serves every pod that has it. So are the values a pod has in common with the
pod typed before it (its labels, owner, ports and statuses): a List gives a workload's pods one after another
(by name), and 100,000 pods in one namespace took 89 MB to hold, 36 MB less with these shared.
"""

from __future__ import annotations

from sys import intern
from typing import Any

from svctrace.model.k8s import (
    ContainerPort,
    ContainerStatus,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    ObjectRef,
    Pod,
)
from svctrace.parsers.k8s_object import TypedObject

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
_PROTOCOLS: dict[object, str] = {"TCP": "TCP", "UDP": "UDP", "SCTP": "SCTP", None: "TCP"}
_SHARED_MAX = 1 << 12  # shared small values kept (a few per workload)
_shared: dict[tuple[Any, ...], Any] = {}


# The last pod's labels (typed: its own dict, which no caller changes, unlike a document), owner and ports/statuses
# tuples: each replaced whole, so that a reader never pairs one pod's key with another's value.
_last_labels: dict[str, str] = {}
_last_owner: tuple[object, object, str] = (None, None, "")
_last_ports: tuple[ContainerPort, ...] = ()
_last_statuses: tuple[ContainerStatus, ...] = ()


def _share(key: tuple[Any, ...], make: Any) -> Any:
    got = _shared.get(key)
    if got is None:
        got = make(*key[1:])
        if len(_shared) < _SHARED_MAX:
            _shared[key] = got
    return got


def _str_map(value: object) -> dict[str, str] | None:
    """Labels whose keys and values are all strings (interned, as the checked path keeps them); else None."""
    if value is None:
        return {}
    if type(value) is not dict:
        return None
    out: dict[str, str] = {}
    for k, v in value.items():
        if type(v) is not str or type(k) is not str:
            return None
        out[intern(k)] = intern(v)
    return out


def _part(value: object) -> dict[str, Any] | None:
    """A nested mapping (absent: empty), or None when it is anything else."""
    if type(value) is dict:
        return value
    return {} if value is None else None


def _port(value: object) -> int | None:
    """A port number, or -1 when the value is not one (None stays None)."""
    if value is None:
        return None
    if type(value) is not int or not 0 < value < 65536:
        return -1
    return value


def _text(value: object, default: str = "") -> str | None:
    """A string (absent: ``default``), or None when it is anything else."""
    if type(value) is str:
        return value
    return default if value is None else None


def _protocol(value: object) -> str | None:
    """TCP, UDP or SCTP (absent: TCP), or None for anything else."""
    return _PROTOCOLS.get(value) if value is None or type(value) is str else None


def _flag(value: object) -> bool | None | int:
    """A bool or None, or -1 when it is anything else."""
    return value if value is None or type(value) is bool else -1


def fast_pod(o: TypedObject) -> Pod | None:
    """The Pod the checked path would type, or None when ``o`` is not of the plain shape. Written out, without
    helper calls or generators: an audit of 10,000 Services types 100,000 pods (16 us each before, 11 us now)."""
    global _last_labels, _last_owner, _last_ports, _last_statuses  # noqa: PLW0603 - the last pod's values, shared
    doc = o.doc
    meta, spec, status = doc.get("metadata"), doc.get("spec"), doc.get("status")
    if type(meta) is not dict:
        if meta is not None:
            return None
        meta = {}
    if type(spec) is not dict:
        if spec is not None:
            return None
        spec = {}
    if type(status) is not dict:
        if status is not None:
            return None
        status = {}
    raw_ips = status.get("podIPs")
    ips: tuple[str, ...] = ()
    if raw_ips is not None:
        if type(raw_ips) is not list:
            return None
        listed = []
        for v in raw_ips:
            ip = v.get("ip") if type(v) is dict else None
            if type(ip) is not str:
                return None
            listed.append(ip)
        ips = tuple(listed)
    if not ips:
        single = status.get("podIP")
        if single is None:
            single = ""
        elif type(single) is not str:
            return None
        ips = (single,) if single else ()
    containers = spec.get("containers")
    inits = spec.get("initContainers")
    if (containers is not None and type(containers) is not list) or (inits is not None and type(inits) is not list):
        return None
    chosen = containers or ()
    if inits:
        chosen = list(chosen)
        for c in inits:
            if type(c) is not dict:
                return None  # a sidecar is read as a Mapping: the checked path says what else is
            if c.get("restartPolicy") == "Always":
                chosen.append(c)
    ports: list[ContainerPort] = []
    for c in chosen:
        if type(c) is not dict:
            return None
        cname = c.get("name")
        raw_ports = c.get("ports")
        if cname is None:
            cname = ""
        elif type(cname) is not str:
            return None
        if raw_ports is None:
            continue
        if type(raw_ports) is not list:
            return None
        cname = intern(cname)
        for p in raw_ports:
            if type(p) is not dict:
                return None
            number, proto, name = p.get("containerPort"), p.get("protocol"), p.get("name")
            if type(number) is not int or not 0 < number < 65536:
                return None
            proto = _PROTOCOLS.get(proto) if proto is None or type(proto) is str else None
            if name is None:
                name = ""
            elif type(name) is not str:
                return None
            if proto is None:
                return None
            ports.append(_share(("cp", number, proto, intern(name), cname), ContainerPort))
    statuses: list[ContainerStatus] = []
    raw_statuses = status.get("containerStatuses")
    if raw_statuses is not None:
        if type(raw_statuses) is not list:
            return None
        for cs in raw_statuses:
            if type(cs) is not dict:
                return None
            state_map = cs.get("state")
            if type(state_map) is not dict:
                if state_map is not None:
                    return None
                state_map = {}
            reason: Any = ""
            detail = state_map.get("running")
            if detail is not None:
                state = "running"
            else:
                detail = state_map.get("waiting")
                if detail is not None:
                    state = "waiting"
                else:
                    detail = state_map.get("terminated")
                    state = "terminated" if detail is not None else ""
            if state:
                if type(detail) is not dict:
                    return None
                reason = detail.get("reason")
                if reason is None:
                    reason = ""
                elif type(reason) is not str:
                    return None
            name = cs.get("name")
            if name is None:
                name = ""
            elif type(name) is not str:
                return None
            ready = cs.get("ready")
            restarts = cs.get("restartCount")
            if (ready is not None and type(ready) is not bool) or (restarts is not None and type(restarts) is not int):
                return None
            statuses.append(_share(("cs", intern(name), bool(ready), restarts or 0, state, intern(reason)),
                                   ContainerStatus))
    raw_labels = meta.get("labels")
    last_labels = _last_labels
    if type(raw_labels) is dict and raw_labels and raw_labels == last_labels:  # (only strings equal these strings)
        labels: dict[str, str] | None = last_labels
    else:
        labels = _str_map(raw_labels)
        if labels:
            _last_labels = labels
    node, phase = _text(spec.get("nodeName")), _text(status.get("phase"))
    host_network = spec.get("hostNetwork")
    if labels is None or node is None or phase is None or (host_network is not None and type(host_network) is not bool):
        return None
    ready_status: str | None = ""
    conditions = status.get("conditions")
    if conditions is not None:
        ready = _first(conditions, "type", "Ready")
        if ready is _NOT_PLAIN:
            return None
        ready_status = _text(ready.get("status")) if ready is not None else ""
        if ready_status is None:
            return None
    owner = ""
    refs = meta.get("ownerReferences")
    if refs is not None:
        controller = _first(refs, "controller", True)
        if controller is _NOT_PLAIN:
            return None
        if refs:
            controller = refs[0] if controller is None else controller
            kind, oname = _text(controller.get("kind")), _text(controller.get("name"))
            if kind is None or oname is None:
                return None
            last_owner = _last_owner
            if kind == last_owner[0] and oname == last_owner[1]:
                owner = last_owner[2]
            else:
                owner = f"{kind}/{oname}"
                _last_owner = (kind, oname, owner)
    port_tuple, status_tuple = tuple(ports), tuple(statuses)
    if port_tuple == _last_ports:  # (equal when the very same shared objects, in order)
        port_tuple = _last_ports
    else:
        _last_ports = port_tuple
    if status_tuple == _last_statuses:
        status_tuple = _last_statuses
    else:
        _last_statuses = status_tuple
    return Pod(
        namespace=o.namespace,
        name=o.name,
        labels=labels,
        node_name=intern(node) or None,
        pod_ips=ips,
        phase=intern(phase),
        ready=ready_status == "True",
        deleting=meta.get("deletionTimestamp") is not None,
        host_network=bool(host_network),
        container_ports=port_tuple,
        container_statuses=status_tuple,
        owner=owner or None,
    )


_NOT_PLAIN: Any = object()


def _first(items: object, key: str, value: object) -> Any:
    """The first of a list of objects whose ``key`` is ``value`` (None: none is); _NOT_PLAIN when ``items`` is not
    a list of objects."""
    if type(items) is not list:
        return _NOT_PLAIN
    found = None
    for item in items:
        if type(item) is not dict:
            return _NOT_PLAIN
        if found is None:
            got = item.get(key)
            if got is value if type(value) is bool else got == value:  # (True is not 1 here)
                found = item
    return found


def fast_endpoint_slice(o: TypedObject) -> EndpointSlice | None:
    """The EndpointSlice the checked path would type, or None when ``o`` is not of the plain shape."""
    doc = o.doc
    meta = _part(doc.get("metadata"))
    labels = _str_map(meta.get("labels")) if meta is not None else None
    raw_endpoints, raw_ports = doc.get("endpoints"), doc.get("ports")
    address_type = _text(doc.get("addressType"), "IPv4")
    if labels is None or address_type is None or (raw_endpoints is not None and type(raw_endpoints) is not list) \
            or (raw_ports is not None and type(raw_ports) is not list):
        return None
    endpoints: list[Endpoint] = []
    for ep in raw_endpoints or ():
        if type(ep) is not dict or ep.get("topology") is not None or ep.get("deprecatedTopology") is not None:
            return None  # topology maps are read by the checked path
        cond = _part(ep.get("conditions"))
        addresses = ep.get("addresses")
        if cond is None or (addresses is not None and type(addresses) is not list):
            return None
        for a in addresses or ():
            if type(a) is not str:
                return None
        flags = (_flag(cond.get("ready")), _flag(cond.get("serving")), _flag(cond.get("terminating")))
        node, zone = ep.get("nodeName"), ep.get("zone")
        hostname = ep.get("hostname")
        ref = _ref(ep.get("targetRef"))
        if -1 in flags or ref == -1 or (node is not None and type(node) is not str) \
                or (zone is not None and type(zone) is not str) \
                or (hostname is not None and type(hostname) is not str):
            return None
        endpoints.append(Endpoint(
            addresses=tuple(addresses or ()),
            conditions=_share(("ec", *flags), EndpointConditions),
            node_name=intern(node) or None if node is not None else None,
            zone=intern(zone) or None if zone is not None else None,
            hostname=hostname,
            target_ref=ref if isinstance(ref, ObjectRef) else None,
        ))
    ports: list[EndpointPort] = []
    for p in raw_ports or ():
        if type(p) is not dict:
            return None
        number = _port(p.get("port"))
        proto = _protocol(p.get("protocol"))
        name = _text(p.get("name"))
        app = p.get("appProtocol")
        if number == -1 or proto is None or name is None or (app is not None and type(app) is not str):
            return None
        ports.append(_share(("ep", number, proto, name, app), EndpointPort))
    return EndpointSlice(
        namespace=o.namespace,
        name=o.name,
        service_name=labels.get(SERVICE_NAME_LABEL),
        address_type=address_type,
        endpoints=tuple(endpoints),
        ports=tuple(ports),
        managed_by=labels.get(MANAGED_BY_LABEL),
    )


def _ref(raw: object) -> ObjectRef | None | int:
    """An endpoint's targetRef (None when absent), or -1 when it is not of the plain shape."""
    if raw is None:
        return None
    if type(raw) is not dict:
        return -1
    kind, namespace, name = _text(raw.get("kind")), _text(raw.get("namespace")), _text(raw.get("name"))
    if kind is None or namespace is None or name is None:
        return -1
    return ObjectRef(intern(kind), intern(namespace), name)
