"""Checks of names: an ExternalName's target, the cluster DNS Service, and the cluster domain of a DNS name."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from svctrace.diagnosis.checks.common import (
    has_usable,
    labels_text,
    more,
    pod_state,
    pods_hint,
    selected_pods,
    source_name,
)
from svctrace.diagnosis.findings import ERROR, WARNING, Finding
from svctrace.diagnosis.registry import CheckContext, check
from svctrace.diagnosis.target import is_dns_label
from svctrace.model.k8s import Service
from svctrace.model.snapshot import Snapshot
from svctrace.resolver.common import cluster_domain, dns_info
from svctrace.words import count


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
    in_cluster = _cluster_name(name)
    if in_cluster is None:
        return
    parts, rest = in_cluster
    if rest and rest != domain:
        yield Finding("external-name-unresolvable", ERROR,
                      f"ExternalName Service {svc.ref} points at {name}, outside the cluster domain {domain}",
                      (field, f"cluster domain: {domain} ({source})"),
                      f"use {'.'.join(parts)}.svc.{domain}: {edit}")
        return
    if len(parts) != 2:
        return
    aliased = snap.service(parts[1], parts[0])
    if aliased is None:
        collected = {s.namespace for s in snap.services}
        if parts[1] not in collected and collected <= {svc.namespace}:
            return  # only this namespace was read: the other one cannot be judged
        there = sum(s.namespace == parts[1] for s in snap.services)
        yield Finding("external-name-unresolvable", ERROR,
                      f"ExternalName Service {svc.ref} points at {name}, but Service {parts[1]}/{parts[0]} "
                      "does not exist",
                      (field, f"no Service {parts[0]} in namespace {parts[1]} in {source_name(snap)}"
                       f" ({count(there, 'Service')} there)"),
                      f"create Service {parts[1]}/{parts[0]} or fix the name: {edit}")
        return
    addresses, cname = _answers(snap, aliased)
    if not addresses and not cname:
        yield Finding("external-name-unresolvable", ERROR,
                      f"ExternalName Service {svc.ref} points at {name}, which resolves to no address: headless "
                      f"Service {aliased.ref} has no ready pods",
                      (field, f"svc {aliased.ref} is headless (clusterIP: None): DNS answers with its ready pods' "
                              "addresses only, and it has none"),
                      f"make a pod of {aliased.ref} ready (`svctrace why-unreachable {aliased.ref}` says why none "
                      "is)")


def _cluster_name(name: str) -> tuple[list[str], str] | None:
    """For a cluster DNS name (``NAME.NS.svc[.DOMAIN]``): the labels before ``.svc`` and the domain after it."""
    if ".svc." not in f".{name}." and not name.endswith(".svc"):
        return None
    head, _, rest = name.partition(".svc")
    return head.split("."), rest.lstrip(".")


def _answers(snap: Snapshot, svc: Service) -> tuple[list[str], list[str]]:
    """What cluster DNS answers for a Service's name: its addresses (A/AAAA), and a CNAME target if any."""
    info = dns_info(snap, svc)
    own = [r for r in info.records if r.name == info.names[0]]
    return ([a for r in own if r.type in ("A", "AAAA") for a in r.answers],
            [a for r in own if r.type == "CNAME" for a in r.answers])


def external_name_passed(snap: Snapshot, svc: Service) -> tuple[str, tuple[str, ...]]:
    """For an ExternalName whose checks passed: what was checked, in one sentence, and what cannot be from here.

    An ExternalName has no endpoints and no rules: cluster DNS answers its name with a CNAME, and the client
    resolves that name and connects to it itself.
    """
    name = (svc.external_name or "").rstrip(".")
    domain, _ = cluster_domain(snap)
    said = f"every check passed: cluster DNS answers {svc.name}.{svc.namespace}.svc.{domain} with a CNAME to {name}"
    unchecked: list[str] = []
    if _dns_service(snap) is None:
        unchecked.append(f"cluster DNS: {source_name(snap)} holds no kube-system/kube-dns Service, so whether "
                         "cluster DNS answers at all is not known here")
    in_cluster = _cluster_name(name)
    if in_cluster is None:
        unchecked.append(f"{name}: svctrace sends no DNS queries and no packets, so whether it resolves outside the "
                         "cluster and accepts connections is not checked")
        return f"{said}, a name outside the cluster", tuple(unchecked)
    parts, _ = in_cluster
    aliased = snap.service(parts[1], parts[0]) if len(parts) == 2 else None
    if len(parts) != 2:
        unchecked.append(f"{name}: a name in the cluster domain that is not a Service's (NAME.NAMESPACE.svc."
                         f"{domain}), so what it resolves to is not known here")
        return f"{said}, a name in the cluster domain", tuple(unchecked)
    if aliased is None:
        unchecked.append(f"Service {parts[1]}/{parts[0]}: namespace {parts[1]} was not read, so whether it exists "
                         "is not known")
        return f"{said}, a Service name of this cluster", tuple(unchecked)
    addresses, cname = _answers(snap, aliased)
    resolves = (f"itself an ExternalName (a CNAME to {cname[0]})" if cname
                else f"resolves to {', '.join(more(addresses))}")
    unchecked.append(f"connections to {aliased.ref}: an ExternalName has no endpoints of its own; "
                     f"`svctrace why-unreachable {aliased.ref}` checks them")
    return f"{said}, Service {aliased.ref} of this cluster, which {resolves}", tuple(unchecked)


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
                  pods_hint(tuple(p for p in pods if not p.ready), source_name(snap)) if pods
                  else f"no pod in {source_name(snap)} matches {dns.ref}'s selector "
                       f"{labels_text(dict(dns.selector or {}))}: see why the DNS Deployment runs no pods (`kubectl -n "
                       "kube-system describe deploy coredns`)")


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

