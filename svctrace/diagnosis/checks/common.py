"""Helpers the API checks share: the ports in scope, the pods a Service selects, how a pod is doing."""

from __future__ import annotations

from collections.abc import Mapping

from svctrace.diagnosis.registry import CheckContext
from svctrace.model.k8s import Pod, Service, ServicePort
from svctrace.model.snapshot import Snapshot
from svctrace.resolver.common import api_endpoints, categorize
from svctrace.words import count

# What a user can do about a snapshot without the Kubernetes objects (docs/snapshot.md has the commands).
NO_API_HINT = "add the Kubernetes objects to the snapshot as api/ files (docs/snapshot.md shows how)"
MAX_NAMED = 5  # pods or objects named in evidence before "... and N more"


def source_name(snap: Snapshot) -> str:
    """Where the objects were read, for sentences: a folder, a tarball, "demo", "live: <server>"."""
    return snap.source or "the snapshot"


def ports_in_scope(ctx: CheckContext) -> tuple[ServicePort, ...]:
    """The Service ports the target asked about (all of them when it named none or a port it lacks)."""
    svc, want = ctx.service, ctx.target.port
    if svc is None:
        return ()
    if want is None:
        return svc.ports
    return tuple(p for p in svc.ports if asks_for(p, want)) or svc.ports


def asks_for(sp: ServicePort, want: str) -> bool:
    """Whether a port the user wrote (a name, a port number or a NodePort number) is this Service port."""
    return want in (sp.name, str(sp.port)) or (sp.node_port is not None and str(sp.node_port) == want)


def port_label(sp: ServicePort) -> str:
    return f"{sp.name + ':' if sp.name else ''}{sp.port}/{sp.protocol}"


def labels_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(no labels)"


def selected_pods(snap: Snapshot, svc: Service) -> tuple[Pod, ...]:
    """Pods the endpoint controller considers: the selector matches and the pod has not finished."""
    if not svc.selector:
        return ()
    return tuple(p for p in snap.pods_matching(svc.selector, svc.namespace) if p.phase not in ("Succeeded", "Failed"))


def has_usable(snap: Snapshot, svc: Service, sp: ServicePort) -> bool:
    return categorize(api_endpoints(snap, svc, sp)).has_any


def more(items: list[str]) -> list[str]:
    if len(items) <= MAX_NAMED:
        return items
    return [*items[:MAX_NAMED], f"... and {len(items) - MAX_NAMED} more"]


def pod_state(pod: Pod) -> str:
    """Why a pod is not ready, in the words of its status (phase, containers' states, restarts)."""
    if pod.deleting:
        return "being deleted (deletionTimestamp set)"
    if pod.phase == "Pending" and not pod.node_name:
        return "Pending, not scheduled to any node"
    if pod.phase == "Pending" and not pod.container_statuses:
        return f"Pending on {pod.node_name}, containers not started"
    parts = []
    for cs in pod.container_statuses:
        if cs.ready:
            continue
        what = f"container {cs.name} {cs.state or 'unknown state'}"
        if cs.reason:
            what += f" ({cs.reason})"
        if cs.state == "running":
            what += ", running but not ready: its readiness probe fails"
        if cs.restart_count:
            what += f", restarted {count(cs.restart_count, 'time')}"
        parts.append(what)
    head = f"phase {pod.phase or 'unknown'}, Ready=False"
    return head + (": " + "; ".join(parts) if parts else "")


def pods_hint(pods: tuple[Pod, ...], where: str) -> str:
    """What to read next about pods that are not ready: a crash's logs, else the pod's events."""
    crashing = [p for p in pods if any(cs.reason == "CrashLoopBackOff" or cs.restart_count > 2
                                       for cs in p.container_statuses)]
    if crashing:
        p = crashing[0]
        return f"read why it crashes: `kubectl logs {p.name} -n {p.namespace} --previous`"
    if pods:
        p = pods[0]
        return f"see the pod's events and probe failures: `kubectl describe pod {p.name} -n {p.namespace}`"
    return (f"the pods behind these endpoints are not in {where}: read their status and events where the cluster "
            "is reachable (`kubectl describe pod`)")


def pod_of(snap: Snapshot, ref: str | None) -> Pod | None:
    if not ref:
        return None
    ns, _, name = ref.partition("/")
    return snap.pod(ns, name)

