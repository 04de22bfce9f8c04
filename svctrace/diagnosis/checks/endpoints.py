"""Checks of the Service's endpoints: none written, none ready, only terminating ones, a headless one without pods."""

from __future__ import annotations

from collections.abc import Iterator

from svctrace.diagnosis.checks.common import (
    has_usable,
    labels_text,
    more,
    pod_of,
    pod_state,
    pods_hint,
    port_label,
    ports_in_scope,
    selected_pods,
    source_name,
)
from svctrace.diagnosis.findings import ERROR, WARNING, Finding
from svctrace.diagnosis.registry import CheckContext, check
from svctrace.model.graph import EndpointInfo
from svctrace.model.k8s import Service, ServicePort
from svctrace.resolver.common import api_endpoints, categorize, cluster_domain
from svctrace.words import agree, count


def _of(part: int, whole: int) -> str:
    """``1 of 3 selected pods is``: a part of the selected pods, with the verb that agrees with it."""
    return f"{part} of {count(whole, 'selected pod')} {agree(part, 'is', 'are')}"


def _balanced_ports(ctx: CheckContext) -> Iterator[tuple[Service, ServicePort, tuple[EndpointInfo, ...]]]:
    """The ports in scope of a Service kube-proxy balances (not ExternalName, not headless), with their endpoints."""
    svc = ctx.service
    if svc is None or svc.is_external_name or svc.is_headless:
        return
    for sp in ports_in_scope(ctx):
        yield svc, sp, api_endpoints(ctx.snapshot, svc, sp)


def _serving_terminating(e: EndpointInfo) -> bool:
    """Terminating but still serving: what kube-proxy falls back to when nothing is ready."""
    serving = e.serving if e.serving is not None else e.ready is not False
    return bool(e.terminating) and serving



@check("selectorless-without-endpoints")
def selectorless_without_endpoints(ctx: CheckContext) -> Iterator[Finding]:
    """A Service without a selector whose Endpoints/EndpointSlices were never created (or are empty)."""
    svc, snap = ctx.service, ctx.snapshot
    if svc is None or svc.selector or svc.is_external_name:
        return
    slices = snap.slices_for(svc)
    addresses = [a for s in slices for e in s.endpoints for a in e.addresses]
    if addresses and any(has_usable(snap, svc, sp) for sp in ports_in_scope(ctx)):
        return
    if addresses:
        return  # listed but not ready or at other ports: no-ready-endpoints says so
    port = ports_in_scope(ctx)[0] if svc.ports else ServicePort(port=80)
    evidence = [f"svc {svc.ref} has no spec.selector, so no controller writes its endpoints",
                f"{count(len(slices), 'EndpointSlice / Endpoints', 'EndpointSlices / Endpoints')} for {svc.ref} "
                f"in {source_name(snap)}"
                + (f" ({', '.join(s.name for s in slices)}), with no addresses" if slices else "")]
    yield Finding("selectorless-without-endpoints", ERROR,
                  f"Service {svc.ref} has no selector and no endpoints: nothing receives its traffic",
                  tuple(evidence),
                  f"create the Endpoints yourself: `kubectl apply -f -` with kind: Endpoints, name: {svc.name}, "
                  f"namespace: {svc.namespace}, subsets: [{{addresses: [{{ip: <backend IP>}}], ports: "
                  f"[{{port: {port.effective_target_port}}}]}}] (or add a selector)")


@check("no-ready-endpoints")
def no_ready_endpoints(ctx: CheckContext) -> Iterator[Finding]:
    """Pods are selected but none is ready: readiness failing, pending, or crash-looping."""
    snap = ctx.snapshot
    for svc, sp, eps in _balanced_ports(ctx):
        if categorize(eps).has_any:
            continue
        if any(e.terminating for e in eps) and not any(e.ready is not False for e in eps):
            serving = [e for e in eps if _serving_terminating(e)]
            if serving:
                continue  # only-terminating-endpoints
        pods = selected_pods(snap, svc)
        if svc.selector and not pods:
            return  # selector-matches-no-pods
        if not svc.selector and not eps:
            return  # selectorless-without-endpoints
        ready_pods = [p for p in pods if p.ready]
        tp = sp.effective_target_port
        if ready_pods and isinstance(tp, str) and not tp.isdigit():
            return  # ready pods without an endpoint port: target-port-not-exposed / protocol-mismatch
        evidence = [f"svc {svc.ref} port {port_label(sp)}: {count(len(eps), 'endpoint')} in the API, 0 ready"]
        not_ready = [p for p in pods if not p.ready] or [p for ref in dict.fromkeys(e.pod for e in eps)
                                                          if (p := pod_of(snap, ref)) is not None]
        evidence += more([f"pod {p.ref}: {pod_state(p)}" for p in not_ready])
        if not pods:
            evidence += more([f"endpoint {e.address}: {e.state}" for e in eps])
        for e in eps:
            if e.terminating and not _serving_terminating(e):
                evidence.append(f"endpoint {e.address} ({e.pod or 'no pod'}) is terminating and not serving")
        title = f"Service {svc.ref} has no ready endpoints"
        if pods:
            crashing = [p for p in pods if any(cs.reason == "CrashLoopBackOff" for cs in p.container_statuses)]
            pending = [p for p in pods if p.phase == "Pending"]
            if crashing:
                title += f": {_of(len(crashing), len(pods))} crash-looping"
            elif pending and len(pending) == len(pods):
                title += f": its {count(len(pods), 'pod')} {agree(len(pods), 'is', 'are')} Pending"
            else:
                title += f": {_of(len(not_ready), len(pods))} not ready"
        yield Finding("no-ready-endpoints", ERROR, title, tuple(evidence),
                      pods_hint(tuple(not_ready), source_name(snap)))
        return


@check("only-terminating-endpoints")
def only_terminating_endpoints(ctx: CheckContext) -> Iterator[Finding]:
    """Every usable endpoint is terminating: kube-proxy falls back to them until they are gone."""
    snap = ctx.snapshot
    for svc, sp, eps in _balanced_ports(ctx):
        if any(e.ready is not False for e in eps):
            continue
        term = [e for e in eps if _serving_terminating(e)]
        if not term:
            continue
        evidence = [f"svc {svc.ref} port {port_label(sp)}: {count(len(eps), 'endpoint')}, none ready, "
                    f"{len(term)} terminating and still serving"]
        evidence += more([f"endpoint {e.address} ({e.pod or 'no pod'}): {e.state}" for e in term])
        leaving = {e.pod for e in term}
        replacements = [p for p in selected_pods(snap, svc) if p.ref not in leaving and not p.deleting]
        evidence += more([f"pod {p.ref}: {pod_state(p)}" for p in replacements if not p.ready])
        rollout = f"`kubectl rollout status deploy/<name> -n {svc.namespace}`"
        hint = (f"see why {agree(len(replacements), 'its replacement is', 'the replacements are')} not ready "
                f"({', '.join(more([p.name for p in replacements]))}, above) and the rollout: {rollout}"
                if replacements else
                f"no pod in {source_name(snap)} replaces them: scale the workload up, or see its rollout: {rollout}")
        yield Finding("only-terminating-endpoints", WARNING,
                      f"Service {svc.ref} has only terminating endpoints: connections work until they exit",
                      tuple(evidence), hint)
        return


@check("headless-no-ready-pods")
def headless_no_ready_pods(ctx: CheckContext) -> Iterator[Finding]:
    """A headless Service with no ready pod: its DNS name returns no addresses."""
    svc, snap = ctx.service, ctx.snapshot
    if svc is None or not svc.is_headless:
        return
    ports = svc.ports or (ServicePort(port=0),)
    eps = [e for sp in ports for e in api_endpoints(snap, svc, sp)]
    if not svc.ports:
        eps = [EndpointInfo(ip=a, port=None, ready=e.conditions.ready) for s in snap.slices_for(svc)
               for e in s.endpoints for a in e.addresses]
    usable = [e for e in eps if e.ready is not False or svc.publish_not_ready_addresses]
    if usable:
        return
    pods = selected_pods(snap, svc)
    domain, _ = cluster_domain(snap)
    evidence = [f"svc {svc.ref} is headless (clusterIP: None): DNS answers with ready pod IPs only",
                f"{count(len(eps), 'endpoint')} in the API, 0 ready"
                + (f"; spec.selector {labels_text(dict(svc.selector))} matches {count(len(pods), 'pod')}"
                   if svc.selector else "")]
    evidence += more([f"pod {p.ref}: {pod_state(p)}" for p in pods if not p.ready])
    # Without pods: selector-matches-no-pods explains a selector; a selectorless one needs its Endpoints.
    hint = (pods_hint(tuple(p for p in pods if not p.ready), source_name(snap)) if pods
            else "no pod has the labels its selector asks for (selector-matches-no-pods says which differ)"
            if svc.selector else
            f"it has no selector: create its Endpoints (`kubectl apply -f -` with kind: Endpoints, name: {svc.name}, "
            f"namespace: {svc.namespace})")
    yield Finding("headless-no-ready-pods", ERROR,
                  f"headless Service {svc.ref} has no ready pods: {svc.name}.{svc.namespace}.svc.{domain} "
                  "resolves to no address",
                  tuple(evidence), hint)

