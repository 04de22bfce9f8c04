"""Checks of what is selected: the Service the target names, and the pods its selector matches."""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from svctrace.diagnosis.checks.common import (
    has_usable,
    labels_text,
    selected_pods,
)
from svctrace.diagnosis.findings import ERROR, Finding
from svctrace.diagnosis.registry import CheckContext, check
from svctrace.model.k8s import Pod


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



@check("selector-matches-no-pods")
def selector_matches_no_pods(ctx: CheckContext) -> Iterator[Finding]:
    """The Service's selector matches no pod in its namespace (a label typo, or the pods are elsewhere)."""
    svc, snap = ctx.service, ctx.snapshot
    if svc is None or not svc.selector or svc.is_external_name or selected_pods(snap, svc):
        return
    if any(has_usable(snap, svc, sp) for sp in svc.ports):
        return  # endpoints exist anyway (written by hand, or the snapshot lacks pods): nothing to say here
    sel = dict(svc.selector)
    ns_pods = [p for p in snap.pods if p.namespace == svc.namespace]
    evidence = [f"svc {svc.ref} spec.selector: {labels_text(sel)}",
                f"0 of {len(ns_pods)} pods in namespace {svc.namespace} have all of these labels"]

    def closeness(p: Pod) -> int:
        same_pair = sum(p.labels.get(k) == v for k, v in sel.items())
        same_value = sum(v in p.labels.values() for v in sel.values())
        same_key = sum(k in p.labels for k in sel)
        return 4 * same_pair + 2 * same_value + same_key

    near = sorted((p for p in ns_pods if closeness(p) > 0), key=lambda p: (-closeness(p), p.name))
    seen: set[str] = set()
    differs: list[str] = []
    for p in near:
        shown = labels_text({k: v for k, v in p.labels.items() if k != "pod-template-hash"})
        if shown in seen:
            continue
        seen.add(shown)
        evidence.append(f"pod {p.ref} labels: {shown}")
        for k, v in sel.items():
            if p.labels.get(k) == v:
                continue
            other_keys = sorted(pk for pk, pv in p.labels.items() if pv == v)
            if other_keys:
                differs.append(f"the pods have {other_keys[0]}={v}, the selector says {k}={v}")
            elif k in p.labels:
                differs.append(f"the pods have {k}={p.labels[k]}, the selector says {k}={v}")
            else:
                differs.append(f"the pods have no label {k}")
        if len(seen) >= 3:
            break
    elsewhere = sorted({p.namespace for p in snap.pods if p.namespace != svc.namespace
                        and all(p.labels.get(k) == v for k, v in sel.items())})
    if elsewhere:
        evidence.append(f"pods with these labels exist in namespace {', '.join(elsewhere)} "
                        "(a selector only matches pods in the Service's own namespace)")
    if differs:
        evidence.append(differs[0])
    if differs and "selector says" in differs[0]:
        hint = (f"fix the selector or the pod labels ({differs[0]}): "
                f"`kubectl edit svc {svc.name} -n {svc.namespace}`")
    else:
        hint = (f"compare `kubectl get pods -n {svc.namespace} --show-labels` with the selector, then "
                f"`kubectl edit svc {svc.name} -n {svc.namespace}`")
    yield Finding("selector-matches-no-pods", ERROR,
                  f"Service {svc.ref} selects no pods: no pod in {svc.namespace} has {labels_text(sel)}",
                  tuple(evidence), hint)

