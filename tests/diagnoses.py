"""API objects for the check tests, and running why-unreachable on them (shared by unit and live tests)."""

from __future__ import annotations

from typing import Any

import yaml

import svctrace.diagnosis.checks  # noqa: F401  (registers the catalog)
from svctrace.diagnosis.diagnose import Diagnosis, diagnose
from svctrace.diagnosis.registry import Client
from tests.snapshots import make_snapshot

NODE = "node-a"


def svc(name: str = "web", *, selector: dict[str, str] | None = None, ports: list[dict[str, Any]] | None = None,
        ns: str = "default", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"clusterIP": "10.96.0.50", "ports": ports or [{"port": 80, "targetPort": 8080}]}
    if selector is not None:
        body["selector"] = selector
    status = spec.pop("status", {})
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": body,
            "status": status}


def pod(name: str, ip: str, *, labels: dict[str, str] | None = None, ready: bool = True, node: str = "node-b",
        ports: list[dict[str, Any]] | None = None, ns: str = "default", phase: str = "Running",
        statuses: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns,
                                                            "labels": labels or {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "app", "ports": ports or []}]},
            "status": {"phase": phase, "podIP": ip, "conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": statuses or [{"name": "app", "ready": ready, "restartCount": 0,
                                                          "state": {"running": {}}}]}}


def eps(service: str, endpoints: list[tuple[str, str, dict[str, bool]]], *, port: int | None = 8080,
        ns: str = "default", node: str = "node-b", port_name: str = "") -> dict[str, Any]:
    """An EndpointSlice: (ip, pod name, conditions) per endpoint."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{service}-abcde", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": [ip], "conditions": cond, "nodeName": node,
                           "targetRef": {"kind": "Pod", "name": pname, "namespace": ns}}
                          for ip, pname, cond in endpoints],
            "ports": [] if port is None else [{"name": port_name, "port": port, "protocol": "TCP"}]}


READY = {"ready": True, "serving": True, "terminating": False}
NOT_READY = {"ready": False, "serving": False, "terminating": False}
TERMINATING = {"ready": False, "serving": True, "terminating": True}


def run(objects: list[dict[str, Any]], target: str = "web", client: Client | None = None) -> Diagnosis:
    snap = make_snapshot(yaml.safe_dump_all(objects), node=NODE)
    return diagnose(snap, target, namespace="default", client=client)


def top(diag: Diagnosis, code: str, severity: str) -> None:
    assert diag.findings, "no findings at all"
    first = diag.findings[0]
    assert (first.code, first.severity) == (code, severity), [(f.code, f.severity, f.title) for f in diag.findings]
    assert first.evidence and first.hint


def client_of(snap_objects: list[dict[str, Any]], name: str) -> Client:
    snap = make_snapshot(yaml.safe_dump_all(snap_objects), node=NODE)
    p = snap.pod("default", name)
    assert p is not None
    return Client(src=p.pod_ips[0], pod=p, origin="pod")


# A cluster whose DNS pod is not ready, and a healthy Service to ask about.
DNS_OBJECTS = [
    svc("kube-dns", ns="kube-system", selector={"k8s-app": "kube-dns"},
        ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]),
    pod("coredns-1", "10.0.0.3", ns="kube-system", labels={"k8s-app": "kube-dns"}, ready=False),
    eps("kube-dns", [("10.0.0.3", "coredns-1", NOT_READY)], ns="kube-system", port=53, port_name="dns"),
    svc(selector={"app": "web"}), pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)]),
]
