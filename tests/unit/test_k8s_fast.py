"""The fast path for plain Pods and EndpointSlices types the same objects as the checked path, or steps aside."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from svctrace.errors import InputError
from svctrace.model.k8s import Pod
from svctrace.parsers import k8s
from svctrace.parsers.k8s_documents import decode_documents, expand_all
from svctrace.parsers.k8s_fast import fast_endpoint_slice, fast_pod
from svctrace.parsers.k8s_object import TypedObject

ROOTS = (Path(__file__).parents[1] / "fixtures", Path(k8s.__file__).parents[1] / "demo")


def _corpus(kind: str) -> Iterator[dict[str, Any]]:
    for root in ROOTS:
        for path in sorted(root.rglob("*")):
            if "api" not in path.parts or path.suffix not in (".json", ".yaml", ".yml") or "fuzz" in path.parts:
                continue
            try:
                docs = decode_documents(path.read_text(), str(path), "json" if path.suffix == ".json" else "yaml")
                for raw in expand_all(docs, str(path)):
                    if raw.doc.get("kind") == kind:
                        yield dict(raw.doc)
            except InputError:
                continue  # hostile fixtures: the checked path's own tests read them


def _checked(doc: dict[str, Any]) -> tuple[str, object]:
    """What the checked path makes of ``doc``: ("ok", the object) or ("error", its message)."""
    o = TypedObject.of(doc, doc["kind"], "f.json", namespaced=True)
    try:
        return "ok", (k8s._pod(o) if doc["kind"] == "Pod" else k8s._endpoint_slice(o))
    except InputError as exc:
        return "error", exc.message


def _fast(doc: dict[str, Any]) -> object:
    o = TypedObject.of(doc, doc["kind"], "f.json", namespaced=True)
    return fast_pod(o) if doc["kind"] == "Pod" else fast_endpoint_slice(o)


PODS = list(_corpus("Pod"))
SLICES = list(_corpus("EndpointSlice"))


def test_the_corpus_has_objects_of_both_kinds() -> None:
    assert len(PODS) > 50 and len(SLICES) > 50


@pytest.mark.parametrize("kind", ["Pod", "EndpointSlice"])
def test_every_corpus_object_is_typed_the_same(kind: str) -> None:
    docs = PODS if kind == "Pod" else SLICES
    taken = 0
    for doc in docs:
        fast = _fast(doc)
        checked = _checked(doc)
        if fast is not None:
            taken += 1
            assert checked == ("ok", fast), doc["metadata"]["name"]
    # the plain shape is the common one: the fast path must not step aside for it (v1beta1's topology maps aside)
    plain = [d for d in docs if not any(isinstance(ep, dict) and (ep.get("topology") or ep.get("deprecatedTopology"))
                                        for ep in d.get("endpoints") or ())]
    assert taken >= 0.9 * len(plain)


# Alterations of a plain object: each must be typed the same, or left to the checked path (which may refuse it).
_ALTERED: list[tuple[str, Any]] = [
    ("metadata.labels", {"a": 1}), ("metadata.labels", {"a": {"b": "c"}}), ("metadata.labels", None),
    ("metadata.labels", []), ("metadata.ownerReferences", []), ("metadata.ownerReferences", [None]),
    ("metadata.ownerReferences", [{"kind": "ReplicaSet"}]), ("metadata.ownerReferences", "x"),
    ("metadata.ownerReferences", [{"kind": "A", "name": "a"}, {"kind": "B", "name": "b", "controller": True}]),
    ("metadata.ownerReferences", [{"kind": 1, "name": "a"}]), ("metadata.deletionTimestamp", "2025-01-01"),
    ("spec", None), ("spec", []), ("spec.nodeName", ""), ("spec.nodeName", 3), ("spec.hostNetwork", True),
    ("spec.hostNetwork", "yes"), ("spec.containers", None), ("spec.containers", {}), ("spec.containers", [None]),
    ("spec.containers", [{"name": "a", "ports": [{"containerPort": 80, "protocol": "tcp"}]}]),
    ("spec.containers", [{"name": "a", "ports": [{"containerPort": True}]}]),
    ("spec.containers", [{"name": "a", "ports": [{"containerPort": 0}]}]),
    ("spec.containers", [{"name": "a", "ports": [{"protocol": "UDP"}]}]),
    ("spec.containers", [{"name": "a", "ports": [{"containerPort": 53, "protocol": "UDP", "name": "dns"}]}]),
    ("spec.containers", [{"name": None, "ports": None}]), ("spec.containers", [{"name": "a", "ports": {}}]),
    ("spec.initContainers", [{"name": "s", "restartPolicy": "Always", "ports": [{"containerPort": 9}]}]),
    ("spec.initContainers", [{"name": "i", "ports": [{"containerPort": 9}]}]), ("spec.initContainers", [None]),
    ("spec.initContainers", "x"),
    ("status", None), ("status.phase", None), ("status.phase", 1), ("status.podIP", None), ("status.podIP", 5),
    ("status.podIPs", None), ("status.podIPs", []), ("status.podIPs", [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]),
    ("status.podIPs", [None]), ("status.podIPs", [{"ip": None}]), ("status.podIPs", {"ip": "x"}),
    ("status.conditions", None), ("status.conditions", [None, {"type": "Ready", "status": "True"}]),
    ("status.conditions", [{"type": "Ready", "status": "False"}]), ("status.conditions", [{"type": "Ready"}]),
    ("status.conditions", [{"type": "Ready", "status": True}]), ("status.conditions", "Ready"),
    ("status.containerStatuses", None), ("status.containerStatuses", [None]),
    ("status.containerStatuses", [{"name": "a", "ready": "yes"}]),
    ("status.containerStatuses", [{"name": "a", "restartCount": True}]),
    ("status.containerStatuses", [{"name": "a", "restartCount": 3, "state": {"waiting": {"reason": "X"}}}]),
    ("status.containerStatuses", [{"name": "a", "state": {"running": None, "terminated": {}}}]),
    ("status.containerStatuses", [{"name": "a", "state": {"waiting": "x"}}]),
    ("status.containerStatuses", [{"name": "a", "state": []}]),
    ("addressType", None), ("addressType", "FQDN"), ("addressType", 4), ("endpoints", None), ("endpoints", {}),
    ("endpoints", [None]), ("endpoints", [{"addresses": ["10.0.0.1", None]}]), ("endpoints", [{"addresses": "x"}]),
    ("endpoints", [{"addresses": ["10.0.0.1"], "conditions": {"ready": "true"}}]),
    ("endpoints", [{"addresses": ["10.0.0.1"], "conditions": None, "nodeName": ""}]),
    ("endpoints", [{"addresses": ["10.0.0.1"], "topology": {"kubernetes.io/hostname": "n1"}}]),
    ("endpoints", [{"addresses": ["10.0.0.1"], "deprecatedTopology": ""}]),
    ("endpoints", [{"addresses": ["10.0.0.1"], "zone": 3}]), ("endpoints", [{"addresses": [], "hostname": 3}]),
    ("endpoints", [{"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": 5}}]),
    ("endpoints", [{"addresses": ["10.0.0.1"], "targetRef": "pod"}]),
    ("endpoints", [{"addresses": ["10.0.0.1"], "targetRef": {"name": "p"}, "hostname": "h", "zone": "z"}]),
    ("ports", None), ("ports", [None]), ("ports", [{"port": 70000}]), ("ports", [{"port": None, "name": "x"}]),
    ("ports", [{"port": 80, "protocol": "SCTP", "appProtocol": "h2c"}]), ("ports", [{"port": 80, "appProtocol": 1}]),
    ("ports", [{"port": "80"}]), ("ports", "x"),
]


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    at = out
    for p in parents:
        if not isinstance(at.get(p), dict):
            at[p] = {}
        at = at[p]
    at[last] = value
    return out


@pytest.mark.parametrize(("path", "value"), _ALTERED, ids=[f"{p}={v!r}"[:60] for p, v in _ALTERED])
def test_an_altered_object_is_typed_the_same_or_left_to_the_checked_path(path: str, value: Any) -> None:
    for base in (*PODS[:3], *SLICES[:3]):
        if path.split(".")[0] in ("addressType", "endpoints", "ports") and base["kind"] == "Pod":
            continue
        if path.split(".")[0] in ("spec", "status") and base["kind"] == "EndpointSlice":
            continue
        doc = _set(base, path, value)
        fast = _fast(doc)
        if fast is not None:
            assert _checked(doc) == ("ok", fast)


def test_a_plain_pod_is_typed_by_the_fast_path() -> None:
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a"},
           "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}]},
           "spec": {"nodeName": "n1",
                    "containers": [{"name": "c", "ports": [{"containerPort": 8080, "name": "http"}]}]},
           "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}],
                      "containerStatuses": [{"name": "c", "ready": True, "restartCount": 2,
                                             "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    fast = _fast(doc)
    assert fast is not None
    assert _checked(doc) == ("ok", fast)
    assert fast == k8s.parse_objects([doc], "f.json").pods[0]


def _workload_pod(name: str, ip: str, app: str = "web", status: str = "True") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": app, "pod-template-hash": "5b56"},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": f"{app}-5b56", "controller": True}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": status}],
                       "containerStatuses": [{"name": "c", "ready": True, "restartCount": 0,
                                              "state": {"running": {}}}]}}


def test_a_workloads_pods_share_what_they_have_in_common() -> None:
    # A List gives a workload's pods one after another: what each has like the pod before is one object (100,000
    # pods in one namespace: 89 MB -> 56 MB), and a pod unlike it has its own values, read from its own document.
    a, b = _fast(_workload_pod("web-1", "10.0.0.1")), _fast(_workload_pod("web-2", "10.0.0.2", status="False"))
    other = _fast(_workload_pod("db-1", "10.0.1.1", app="db"))
    again = _fast(_workload_pod("web-3", "10.0.0.3"))
    assert isinstance(a, Pod) and isinstance(b, Pod) and isinstance(other, Pod) and isinstance(again, Pod)
    assert (a.name, b.name, b.pod_ips, b.ready) == ("web-1", "web-2", ("10.0.0.2",), False)
    assert a.labels is b.labels and a.owner is b.owner
    assert a.container_ports is b.container_ports and a.container_statuses is b.container_statuses
    assert other.labels == {"app": "db", "pod-template-hash": "5b56"} and other.owner == "ReplicaSet/db-5b56"
    assert again.labels == a.labels and again.labels is not other.labels and again.owner == "ReplicaSet/web-5b56"
    # a document changed after it was typed (its labels, in place) is not what the next pod is compared with
    first = _workload_pod("api-1", "10.0.2.1", app="api")
    typed = _fast(first)
    first["metadata"]["labels"].update({"app": "changed"})
    after = _fast(_workload_pod("changed-1", "10.0.2.2", app="changed"))
    assert isinstance(typed, Pod) and isinstance(after, Pod)
    assert typed.labels["app"] == "api" and after.labels["app"] == "changed"
    for doc, pod in ((_workload_pod("web-2", "10.0.0.2", status="False"), b),
                     (_workload_pod("db-1", "10.0.1.1", app="db"), other)):
        assert _checked(doc) == ("ok", pod)


# Values an altered pod's field may take: each type the fast path checks for, and what it must refuse.
_VALUES: list[Any] = [
    None, 0, 80, -1, 70000, True, False, "", "x", "True", "Ready", "Always", "TCP", "tcp", [], {}, [None], [{}],
    [{"ip": "10.0.0.9"}], [{"ip": 5}], {"running": {}}, {"waiting": {"reason": "X"}}, {"terminated": None},
    {"running": 1}, [{"type": "Ready", "status": "True"}, {"type": "Ready", "status": 1}],
    [{"kind": "A", "name": "b", "controller": True}], [{"controller": True}], [{"kind": 1}], {"a": "b"}, {"a": 1},
    [{"name": "c", "ports": [{"containerPort": 80}]}], [{"name": 3}], [{"ports": None}], [{"ports": [None]}],
    [{"name": "s", "restartPolicy": "Always", "ports": [{"containerPort": 9, "protocol": None, "name": None}]}],
]
_NOT_NAME = (("kind",), ("apiVersion",), ("metadata",), ("metadata", "name"), ("metadata", "namespace"))


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if at and at not in _NOT_NAME:
        yield at
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield from _paths(inner, (*at, key))


def test_a_pod_altered_anywhere_is_typed_the_same_or_left_to_the_checked_path() -> None:
    # Any member of a plain pod (nested ones too) replaced or removed, up to three at once: wherever the fast
    # path types the pod, the checked path types the same one.
    import random

    rng = random.Random(11)
    plain = [d for d in PODS if _fast(d) is not None][:20]
    assert plain
    typed = 0
    for _ in range(3000):
        doc = copy.deepcopy(rng.choice(plain))
        for _ in range(rng.randint(1, 3)):
            *parents, last = rng.choice([*_paths(doc), ("spec", "initContainers"), ("status", "podIPs"),
                                         ("metadata", "ownerReferences"), ("metadata", "deletionTimestamp")])
            at: Any = doc
            try:
                for key in parents:
                    at = at[key]
                if isinstance(at, dict) and rng.random() < 0.1:
                    at.pop(last, None)
                else:
                    at[last] = copy.deepcopy(rng.choice(_VALUES))
            except (KeyError, IndexError, TypeError):
                continue  # an earlier alteration replaced where this one was to go
        fast = _fast(doc)
        if fast is not None:
            typed += 1
            assert _checked(doc) == ("ok", fast), doc
    assert typed > 300  # (the alterations do not all send the pod to the checked path)
