"""Checks of names: an ExternalName's target, the cluster DNS Service, and the cluster domain of a DNS name."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from svctrace.diagnosis.checks.common import (
    has_usable,
    more,
    pod_state,
    pods_hint,
    selected_pods,
)
from svctrace.diagnosis.findings import ERROR, WARNING, Finding
from svctrace.diagnosis.registry import CheckContext, check
from svctrace.diagnosis.target import is_dns_label
from svctrace.model.k8s import Service
from svctrace.model.snapshot import Snapshot
from svctrace.resolver.common import cluster_domain


@check("external-name-unresolvable")
def external_name_unresolvable(ctx: CheckContext) -> Iterator[Finding]:
    """An ExternalName that is an IP, not a DNS name, or a cluster Service that does not exist."""
    svc, snap = ctx.service, ctx.snapshot
    if svc is None or not svc.is_external_name:
        return
    name = (svc.external_name or "").rstrip(".")
    field = f"svc {svc.ref} spec.externalName: {svc.external_name or '(empty)'}"
    edit = f"`kubectl edit svc {svc.name} -n {svc.namespace}`"
    is_ip = True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        is_ip = False
    if is_ip:
        yield Finding("external-name-unresolvable", ERROR,
                      f"ExternalName Service {svc.ref} points at the IP address {name}: DNS cannot CNAME to an IP",
                      (field, "cluster DNS answers with a CNAME to the name \"" + name + "\", which no resolver "
                       "turns into that address"),
                      f"use a selectorless ClusterIP Service with an Endpoints object for {name} instead, or a DNS "
                      f"name: {edit}")
        return
    labels = name.split(".")
    if not name or len(name) > 253 or not all(is_dns_label(x) and len(x) <= 63 for x in labels):
        yield Finding("external-name-unresolvable", ERROR,
                      f"ExternalName Service {svc.ref} has the invalid DNS name {svc.external_name or '(empty)'!r}",
                      (field, "a DNS name is dot-separated labels of a-z, 0-9 and '-', each at most 63 characters"),
                      f"set spec.externalName to a valid host name: {edit}")
        return
    domain, source = cluster_domain(snap)
    if ".svc." in f".{name}." or name.endswith(".svc"):
        head, _, rest = name.partition(".svc")
        rest = rest.lstrip(".")
        parts = head.split(".")
        if rest and rest != domain:
            yield Finding("external-name-unresolvable", ERROR,
                          f"ExternalName Service {svc.ref} points at {name}, outside the cluster domain {domain}",
                          (field, f"cluster domain: {domain} ({source})"),
                          f"use {'.'.join(parts)}.svc.{domain}: {edit}")
            return
        if len(parts) == 2 and snap.service(parts[1], parts[0]) is None:
            collected = {s.namespace for s in snap.services}
            if parts[1] not in collected and collected <= {svc.namespace}:
                return  # only this namespace was read: the other one cannot be judged
            yield Finding("external-name-unresolvable", ERROR,
                          f"ExternalName Service {svc.ref} points at {name}, but Service {parts[1]}/{parts[0]} "
                          "does not exist",
                          (field, f"no Service {parts[0]} in namespace {parts[1]} in {snap.source or 'the snapshot'}"
                           f" ({sum(s.namespace == parts[1] for s in snap.services)} Services there)"),
                          f"create Service {parts[1]}/{parts[0]} or fix the name: {edit}")



def _dns_service(snap: Snapshot) -> Service | None:
    found = snap.service("kube-system", "kube-dns")
    if found is not None:
        return found
    return next((s for s in snap.services if s.namespace == "kube-system"
                 and s.labels.get("k8s-app") == "kube-dns"), None)


@check("cluster-dns-no-endpoints")
def cluster_dns_no_endpoints(ctx: CheckContext) -> Iterator[Finding]:
    """kube-system/kube-dns has no ready endpoints: cluster DNS names do not resolve."""
    svc, snap = ctx.service, ctx.snapshot
    dns = _dns_service(snap)
    if dns is None or svc is None or dns.ref == svc.ref:
        return  # the DNS Service itself: no-ready-endpoints speaks for it
    if any(has_usable(snap, dns, sp) for sp in dns.ports):
        return
    by_name = ctx.target.target.kind in ("dns", "url")
    pods = selected_pods(snap, dns)
    evidence = [f"svc {dns.ref} ({', '.join(dns.virtual_ips) or 'no ClusterIP'}): 0 ready endpoints"]
    evidence += more([f"pod {p.ref}: {pod_state(p)}" for p in pods if not p.ready])
    yield Finding("cluster-dns-no-endpoints", ERROR if by_name else WARNING,
                  f"cluster DNS ({dns.ref}) has no ready endpoints: "
                  + (f"{ctx.target.target.host} will not resolve" if by_name
                     else f"names like {svc.name}.{svc.namespace} will not resolve"),
                  tuple(evidence),
                  pods_hint(tuple(p for p in pods if not p.ready)) if pods
                  else "`kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide`")


@check("cluster-domain-mismatch")
def cluster_domain_mismatch(ctx: CheckContext) -> Iterator[Finding]:
    """The target's DNS name uses a domain other than the cluster's (the Corefile's kubernetes zone)."""
    t = ctx.target.target
    if t.kind not in ("dns", "url") or not t.host:
        return
    labels = t.host.split(".")
    if len(labels) < 4 or labels[2] != "svc":
        return  # name.ns and name.ns.svc are completed by the pod's search path
    used = ".".join(labels[3:])
    domain, source = cluster_domain(ctx.snapshot)
    if used == domain:
        return
    from_corefile = "Corefile" in source and "default" not in source
    yield Finding("cluster-domain-mismatch", ERROR if from_corefile else WARNING,
                  f"{t.host} uses the domain {used}, but the cluster domain is {domain}",
                  (f"target {t.host}: domain {used}", f"cluster domain: {domain} ({source})"),
                  f"use {'.'.join(labels[:3])}.{domain} (or just {labels[0]}.{labels[1]})")

