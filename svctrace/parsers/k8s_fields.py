"""The fields of each Kubernetes kind that svctrace reads, and objects cut down to them (pure).

A capture keeps only these (docs/snapshot.md): a pod's env values, args, command and volumes, annotations
(last-applied configurations among them), managedFields, status messages and everything else svctrace
never reads are gone before anything is written. svctrace.parsers.k8s reads nothing outside this table
(tests/unit/test_hostile_capture.py parses objects before and after the cut and compares the models), so
a capture read back with ``--from`` gives the live answer.

A field of an unexpected type is kept as it is, so that the parser refuses it the same way live and replayed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# A spec: True keeps a value whole; a dict keeps those keys of a mapping (each by its own spec); a one-element
# list keeps a list whose items follow that spec.
Spec = bool | dict[str, "Spec"] | list["Spec"]

_META: dict[str, Spec] = {"name": True, "namespace": True, "labels": True}
_PORT: dict[str, Spec] = {"port": True, "protocol": True, "name": True, "appProtocol": True}
_CONDITIONS: list[Spec] = [{"type": True, "status": True}]
_REF: dict[str, Spec] = {"kind": True, "namespace": True, "name": True}
_ADDRESS: dict[str, Spec] = {"ip": True, "nodeName": True, "hostname": True, "targetRef": _REF}
_CONTAINER: dict[str, Spec] = {
    "name": True, "restartPolicy": True,
    "ports": [{"containerPort": True, "protocol": True, "name": True}],
}
_STATE: dict[str, Spec] = {"reason": True}

READ_FIELDS: dict[str, dict[str, Spec]] = {
    "Service": {
        "metadata": {**_META, "uid": True},
        "spec": {
            "type": True, "clusterIP": True, "clusterIPs": True, "ipFamilies": True,
            "ports": [{**_PORT, "targetPort": True, "nodePort": True}],
            "selector": True, "externalIPs": True, "loadBalancerSourceRanges": True,
            "externalTrafficPolicy": True, "internalTrafficPolicy": True, "sessionAffinity": True,
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": True}}, "externalName": True,
            "healthCheckNodePort": True, "publishNotReadyAddresses": True,
        },
        "status": {"loadBalancer": {"ingress": [{"ip": True, "hostname": True, "ipMode": True}]}},
    },
    "EndpointSlice": {
        "metadata": _META,
        "addressType": True,
        "endpoints": [{
            "addresses": True, "conditions": {"ready": True, "serving": True, "terminating": True},
            "nodeName": True, "zone": True, "hostname": True, "targetRef": _REF,
            "topology": True, "deprecatedTopology": True,
        }],
        "ports": [_PORT],
    },
    "Endpoints": {
        "metadata": _META,
        "subsets": [{"addresses": [_ADDRESS], "notReadyAddresses": [_ADDRESS], "ports": [_PORT]}],
    },
    "Pod": {
        "metadata": {**_META, "deletionTimestamp": True,
                     "ownerReferences": [{"kind": True, "name": True, "controller": True}]},
        "spec": {"nodeName": True, "hostNetwork": True, "containers": [_CONTAINER], "initContainers": [_CONTAINER]},
        "status": {
            "phase": True, "podIP": True, "podIPs": [{"ip": True}], "conditions": _CONDITIONS,
            "containerStatuses": [{"name": True, "ready": True, "restartCount": True,
                                   "state": {"running": _STATE, "waiting": _STATE, "terminated": _STATE}}],
        },
    },
    "Node": {
        "metadata": {"name": True, "labels": True},
        "spec": {"podCIDR": True, "podCIDRs": True},
        "status": {"addresses": [{"type": True, "address": True}], "conditions": _CONDITIONS},
    },
    # Only kube-system/coredns and kube-system/kube-proxy are kept by the parser; of their data only the
    # Corefile (the cluster domain).
    "ConfigMap": {"metadata": {"name": True, "namespace": True}, "data": {"Corefile": True}},
    # A NetworkPolicy's spec is read whole: selectors, peers, ports and CIDRs are all it holds.
    "NetworkPolicy": {"metadata": _META, "spec": True},
    # Read for shell completion only.
    "Namespace": {"metadata": {"name": True}},
}


def cut(value: Any, spec: Spec) -> Any:
    """``value`` with only what ``spec`` keeps; a value of another type than the spec expects is kept as it is."""
    if spec is True:
        return value
    if isinstance(spec, dict):
        if not isinstance(value, Mapping):
            return value
        return {k: cut(value[k], s) for k, s in spec.items() if k in value}
    if isinstance(spec, list):
        if not isinstance(value, list):
            return value
        return [cut(v, spec[0]) for v in value]
    return None


def read_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object of a kind svctrace reads, with only the fields it reads (apiVersion and kind kept)."""
    spec = READ_FIELDS.get(str(obj.get("kind")))
    if spec is None:
        return {k: obj[k] for k in ("apiVersion", "kind") if k in obj}
    out: dict[str, Any] = {k: obj[k] for k in ("apiVersion", "kind") if k in obj}
    out.update(cut(obj, spec))
    return out
