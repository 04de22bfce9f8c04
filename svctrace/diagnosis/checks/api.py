"""Checks that need only the API objects: the Service, its ports, selector, endpoints, pods, DNS, policies."""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from svctrace.diagnosis.findings import ERROR, Finding
from svctrace.diagnosis.registry import CheckContext, check


@check("service-not-found", needs_service=False)
def service_not_found(ctx: CheckContext) -> Iterator[Finding]:
    """The target names no Service (suggest close names and other namespaces)."""
    t = ctx.target
    if t.service is not None:
        return
    snap = ctx.snapshot
    if t.target.kind == "address":
        yield Finding("service-not-found", ERROR, f"no Service has the address {t.target.text}",
                      (f"{len(snap.services)} Services in {snap.source or 'the snapshot'}; none has "
                       f"{t.target.text} as ClusterIP, externalIP, load-balancer IP or node IP:NodePort",),
                      "check the address with `kubectl get svc -A -o wide`")
        return
    same_ns = sorted(s.name for s in snap.services if s.namespace == t.namespace)
    close = difflib.get_close_matches(t.name, same_ns, n=3, cutoff=0.6)
    elsewhere = sorted(s.namespace for s in snap.services if s.name == t.name)
    evidence = [f"namespace {t.namespace} has {len(same_ns)} Services"
                + (f": {', '.join(same_ns[:10])}{' ...' if len(same_ns) > 10 else ''}" if same_ns else "")]
    if elsewhere:
        evidence.append(f"a Service named {t.name} exists in namespace {', '.join(elsewhere)}")
    if close:
        hint = f"did you mean {', '.join(close)}? `kubectl get svc -n {t.namespace}`"
    elif elsewhere:
        hint = f"use -n {elsewhere[0]} (`kubectl get svc {t.name} -n {elsewhere[0]}`)"
    else:
        hint = f"create the Service, or list what exists: `kubectl get svc -n {t.namespace}`"
    yield Finding("service-not-found", ERROR, f'Service "{t.name}" does not exist in namespace "{t.namespace}"',
                  tuple(evidence), hint)


@check("port-not-defined")
def port_not_defined(ctx: CheckContext) -> Iterator[Finding]:
    """The port asked for is not one of the Service's ports."""
    svc, want = ctx.service, ctx.target.port
    if svc is None or want is None:
        return
    if any(want in (p.name, str(p.port)) or (p.node_port is not None and str(p.node_port) == want)
           for p in svc.ports):
        return
    have = ", ".join(f"{p.name + ':' if p.name else ''}{p.port}/{p.protocol}" for p in svc.ports) or "none"
    yield Finding("port-not-defined", ERROR, f"Service {svc.ref} has no port {want}",
                  (f"svc {svc.ref} spec.ports: {have}",),
                  f"connect to one of its ports, or add port {want}: `kubectl edit svc {svc.name} -n {svc.namespace}`")
