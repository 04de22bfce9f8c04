"""Checks of what is selected: the Service the target names, and the pods its selector matches."""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from svctrace.diagnosis.checks.common import (
    NO_API_HINT,
    has_usable,
    labels_text,
    more,
    selected_pods,
    source_name,
)
from svctrace.diagnosis.findings import ERROR, Finding
from svctrace.diagnosis.registry import CheckContext, check
from svctrace.diagnosis.target import host_port, node_addresses
from svctrace.model.k8s import Pod
from svctrace.model.snapshot import Snapshot
from svctrace.words import agree, count


@check("service-not-found", needs_service=False)
def service_not_found(ctx: CheckContext) -> Iterator[Finding]:
    """The target names no Service (offer close names, other namespaces, the addresses that exist)."""
    t = ctx.target
    if t.service is not None:
        return
    snap = ctx.snapshot
    where = source_name(snap)
    if not snap.api_collected:
        asked = t.target.text if t.target.kind == "address" else f"Service {t.namespace}/{t.name}"
        yield Finding("service-not-found", ERROR, f"{asked} is unknown: the Kubernetes objects were not collected",
                      (f"{where} holds no Services, EndpointSlices or Pods, only this node's files",), NO_API_HINT)
        return
    if t.target.kind == "address":
        yield Finding("service-not-found", ERROR, f"no Service has the address {t.target.text}",
                      (f"{count(len(snap.services), 'Service')} in {where}; none has "
                       f"{t.target.text} as ClusterIP, externalIP, load-balancer IP or node IP:NodePort",),
                      _addresses_hint(snap, t.target.host or "", t.target.port, where))
        return
    same_ns = sorted(s.name for s in snap.services if s.namespace == t.namespace)
    close = difflib.get_close_matches(t.name, same_ns, n=3, cutoff=0.6)
    elsewhere = sorted(s.namespace for s in snap.services if s.name == t.name)
    evidence = [f"namespace {t.namespace} has {count(len(same_ns), 'Service')}"
                + (f": {', '.join(same_ns[:10])}{' ...' if len(same_ns) > 10 else ''}" if same_ns else "")]
    if elsewhere:
        evidence.append(f"a Service named {t.name} exists in namespace {', '.join(elsewhere)}")
    if close:
        hint = f"did you mean {', '.join(close)}?"
    elif elsewhere:
        hint = f"use -n {elsewhere[0]}"
    elif same_ns:
        hint = f"ask for one of the Services of {t.namespace}: {', '.join(more(same_ns))}; or create {t.name}"
    else:
        others = sorted({s.namespace for s in snap.services})
        hint = (f"namespace {t.namespace} has no Services in {where}: "
                + (f"the namespaces that have some are {', '.join(more(others))} (-n)" if others
                   else "it holds no Services at all"))
    yield Finding("service-not-found", ERROR, f'Service "{t.name}" does not exist in namespace "{t.namespace}"',
                  tuple(evidence), hint)


def _addresses_hint(snap: Snapshot, ip: str, port: str | None, where: str) -> str:
    """The Service addresses of the snapshot closest to the one asked for: same address, else same port, else any."""
    on_node = ip in node_addresses(snap)
    same_ip: list[str] = []
    same_port: list[str] = []
    every: list[str] = []
    for svc in snap.services:
        addresses = (*svc.virtual_ips, *svc.external_ips, *(i.ip for i in svc.load_balancer_ingress if i.ip))
        for sp in svc.ports:
            shown = [f"{host_port(a, sp.port)} ({svc.ref})" for a in addresses]
            every += shown
            if ip in addresses:
                same_ip.append(f"{host_port(ip, sp.port)} ({svc.ref})")
            elif on_node and sp.node_port is not None:
                same_ip.append(f"{host_port(ip, sp.node_port)} (NodePort of {svc.ref})")
            if port is not None and str(sp.port) == port:
                same_port += shown
    for what, found in ((f"a port {ip} serves", same_ip), (f"an address that serves port {port}", same_port),
                        (f"one of the Service addresses in {where}", every)):
        if found:
            return f"ask for {what}: {', '.join(more(found))}"
    return f"{where} holds no Service addresses"


@check("selector-matches-no-pods")
def selector_matches_no_pods(ctx: CheckContext) -> Iterator[Finding]:
    """The Service's selector matches no pod in its namespace (a label typo, or the pods are elsewhere)."""
    svc, snap = ctx.service, ctx.snapshot
    if svc is None or not svc.selector or svc.is_external_name or selected_pods(snap, svc):
        return
    if any(has_usable(snap, svc, sp) for sp in svc.ports):
        return  # endpoints exist anyway (written by hand, or the snapshot lacks pods): nothing to say here
    sel = dict(svc.selector)
    ns_pods = list(snap.pods_in(svc.namespace))
    evidence = [f"svc {svc.ref} spec.selector: {labels_text(sel)}",
                f"0 of {count(len(ns_pods), 'pod')} in namespace {svc.namespace} "
                f"{agree(len(ns_pods), 'has', 'have')} all of these labels"]

    def closeness(p: Pod) -> int:
        same_pair = sum(p.labels.get(k) == v for k, v in sel.items())
        same_value = sum(v in p.labels.values() for v in sel.values())
        same_key = sum(k in p.labels for k in sel)
        return 4 * same_pair + 2 * same_value + same_key

    near = sorted((p for p in ns_pods if closeness(p) > 0), key=lambda p: (-closeness(p), p.name))
    seen: set[str] = set()
    differs: list[str] = []
    mismatch: str | None = None  # the first label both sides name, differently
    for p in near or ns_pods:  # the pods nearest the selector; without any, show what the namespace has
        shown = labels_text({k: v for k, v in p.labels.items() if k != "pod-template-hash"})
        if shown in seen:
            continue
        seen.add(shown)
        evidence.append(f"pod {p.ref} labels: {shown}")
        for k, v in sel.items():
            if p.labels.get(k) == v or not near:
                continue
            other_keys = sorted(pk for pk, pv in p.labels.items() if pv == v)
            if other_keys:
                differs.append(f"the pods have {other_keys[0]}={v}, the selector says {k}={v}")
            elif k in p.labels:
                differs.append(f"the pods have {k}={p.labels[k]}, the selector says {k}={v}")
            else:
                differs.append(f"the pods have no label {k}")
                continue
            mismatch = mismatch or differs[-1]
        if len(seen) >= 3:
            break
    elsewhere = sorted({p.namespace for p in snap.pods_matching(sel) if p.namespace != svc.namespace})
    if elsewhere:
        evidence.append(f"pods with these labels exist in namespace {', '.join(elsewhere)} "
                        "(a selector only matches pods in the Service's own namespace)")
    if differs:
        evidence.append(differs[0])
    edit = f"`kubectl edit svc {svc.name} -n {svc.namespace}`"
    if differs and mismatch == differs[0]:
        hint = f"fix the selector or the pod labels ({mismatch}): {edit}"
    elif elsewhere:
        hint = (f"create the Service in namespace {elsewhere[0]}, where its pods are, or run the pods in "
                f"{svc.namespace}")
    elif ns_pods:
        hint = f"make the selector match the labels of the pods above, or label the pods: {edit}"
    else:
        hint = (f"namespace {svc.namespace} has no pods in {source_name(snap)}: deploy the workload "
                f"this Service is for, or fix its selector: {edit}")
    yield Finding("selector-matches-no-pods", ERROR,
                  f"Service {svc.ref} selects no pods: no pod in {svc.namespace} has {labels_text(sel)}",
                  tuple(evidence), hint)

