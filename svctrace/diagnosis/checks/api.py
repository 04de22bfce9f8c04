"""Checks that need only the API objects: the Service, its ports, selector, endpoints, pods, DNS, policies."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterator, Mapping

from svctrace.diagnosis.findings import ERROR, INFO, WARNING, Finding
from svctrace.diagnosis.registry import CheckContext, Client, check
from svctrace.model.graph import DROPPED, PARTIAL, EndpointInfo, Hop
from svctrace.model.k8s import NetworkPolicy, Pod, Service, ServicePort
from svctrace.model.snapshot import Snapshot
from svctrace.resolver.common import api_endpoints, categorize, cluster_domain


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


# -- helpers shared by the checks below ---------------------------------------------------------------------

_MAX_LISTED = 5  # pods or objects named in evidence before "... and N more"


def _ports_in_scope(ctx: CheckContext) -> tuple[ServicePort, ...]:
    """The Service ports the target asked about (all of them when it named none or a port it lacks)."""
    svc, want = ctx.service, ctx.target.port
    if svc is None:
        return ()
    if want is None:
        return svc.ports
    chosen = tuple(p for p in svc.ports if want in (p.name, str(p.port))
                   or (p.node_port is not None and str(p.node_port) == want))
    return chosen or svc.ports


def _port_label(sp: ServicePort) -> str:
    return f"{sp.name + ':' if sp.name else ''}{sp.port}/{sp.protocol}"


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(no labels)"


def _selected_pods(snap: Snapshot, svc: Service) -> tuple[Pod, ...]:
    """Pods the endpoint controller considers: the selector matches and the pod has not finished."""
    if not svc.selector:
        return ()
    return tuple(p for p in snap.pods if p.namespace == svc.namespace and p.phase not in ("Succeeded", "Failed")
                 and all(p.labels.get(k) == v for k, v in svc.selector.items()))


def _endpoints(snap: Snapshot, svc: Service, ports: tuple[ServicePort, ...]) -> tuple[EndpointInfo, ...]:
    return tuple(e for sp in ports for e in api_endpoints(snap, svc, sp))


def _has_usable(snap: Snapshot, svc: Service, sp: ServicePort) -> bool:
    return categorize(api_endpoints(snap, svc, sp)).has_any


def _more(items: list[str]) -> list[str]:
    if len(items) <= _MAX_LISTED:
        return items
    return [*items[:_MAX_LISTED], f"... and {len(items) - _MAX_LISTED} more"]


def _pod_state(pod: Pod) -> str:
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
            what += f", restarted {cs.restart_count} times"
        parts.append(what)
    head = f"phase {pod.phase or 'unknown'}, Ready=False"
    return head + (": " + "; ".join(parts) if parts else "")


def _pods_hint(pods: tuple[Pod, ...]) -> str:
    crashing = [p for p in pods if any(cs.reason == "CrashLoopBackOff" or cs.restart_count > 2
                                       for cs in p.container_statuses)]
    if crashing:
        p = crashing[0]
        return f"read why it crashes: `kubectl logs {p.name} -n {p.namespace} --previous`"
    if pods:
        p = pods[0]
        return f"see the pod's events and probe failures: `kubectl describe pod {p.name} -n {p.namespace}`"
    return "list the pods: `kubectl get pods -o wide`"


def _serving_terminating(e: EndpointInfo) -> bool:
    """Terminating but still serving: what kube-proxy falls back to when nothing is ready."""
    serving = e.serving if e.serving is not None else e.ready is not False
    return bool(e.terminating) and serving


def _pod_of(snap: Snapshot, ref: str | None) -> Pod | None:
    if not ref:
        return None
    ns, _, name = ref.partition("/")
    return snap.pod(ns, name)


# -- selectors, endpoints and pods --------------------------------------------------------------------------


@check("selector-matches-no-pods")
def selector_matches_no_pods(ctx: CheckContext) -> Iterator[Finding]:
    """The Service's selector matches no pod in its namespace (a label typo, or the pods are elsewhere)."""
    svc, snap = ctx.service, ctx.snapshot
    if svc is None or not svc.selector or svc.is_external_name or _selected_pods(snap, svc):
        return
    if any(_has_usable(snap, svc, sp) for sp in svc.ports):
        return  # endpoints exist anyway (written by hand, or the snapshot lacks pods): nothing to say here
    sel = dict(svc.selector)
    ns_pods = [p for p in snap.pods if p.namespace == svc.namespace]
    evidence = [f"svc {svc.ref} spec.selector: {_labels(sel)}",
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
        shown = _labels({k: v for k, v in p.labels.items() if k != "pod-template-hash"})
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
                  f"Service {svc.ref} selects no pods: no pod in {svc.namespace} has {_labels(sel)}",
                  tuple(evidence), hint)


@check("target-port-not-exposed")
def target_port_not_exposed(ctx: CheckContext) -> Iterator[Finding]:
    """The targetPort is not a port the selected pods declare (a named one means no endpoint port at all)."""
    svc, snap = ctx.service, ctx.snapshot
    if svc is None or svc.is_external_name:
        return
    pods = _selected_pods(snap, svc)
    if not pods:
        return
    for sp in _ports_in_scope(ctx):
        tp = sp.effective_target_port
        if isinstance(tp, str) and not tp.isdigit():
            declaring = [p for p in pods if any(c.name == tp for c in p.container_ports)]
            if declaring:
                continue  # declared (a protocol mismatch is protocol-mismatch's to report)
            declared = sorted({f"{c.name or '(unnamed)'}:{c.container_port}/{c.protocol}"
                               for p in pods for c in p.container_ports})
            evidence = [f"svc {svc.ref} port {_port_label(sp)} targetPort: {tp} (a name)",
                        f"none of the {len(pods)} selected pods declares a containerPort named {tp}; they "
                        f"declare: {', '.join(declared) or 'no ports'}",
                        "the endpoint controller publishes no endpoint port for a name it cannot find, "
                        "so kube-proxy has no backend for this port"]
            yield Finding("target-port-not-exposed", ERROR,
                          f"Service {svc.ref} port {_port_label(sp)} targets the port name {tp!r}, "
                          "which no selected pod declares",
                          tuple(evidence),
                          f"name the container port {tp} in the pod template (containers[].ports[].name), or "
                          f"set targetPort to the number: `kubectl edit svc {svc.name} -n {svc.namespace}`")
            continue
        number = int(tp)
        declared_any = [c for p in pods for c in p.container_ports]
        if not declared_any or any(c.container_port == number for c in declared_any):
            continue  # declaring ports is optional: without declarations there is nothing to compare
        eps = api_endpoints(snap, svc, sp)
        other = sorted({e.port for e in eps if e.port is not None and e.port != number})
        declared = sorted({f"{c.container_port}/{c.protocol}" for c in declared_any})
        evidence = [f"svc {svc.ref} port {_port_label(sp)} targetPort: {number}",
                    f"the selected pods declare containerPort {', '.join(declared)}, not {number}"]
        if other:
            evidence.append(f"yet the API lists its endpoints at port {', '.join(map(str, other))}")
        severity = ERROR if other else WARNING
        yield Finding("target-port-not-exposed", severity,
                      f"Service {svc.ref} sends port {sp.port} to pod port {number}, which the pods do not declare "
                      f"(they declare {', '.join(declared)})",
                      tuple(evidence),
                      f"if the app listens on {declared[0].split('/')[0]}, set targetPort to it: "
                      f"`kubectl patch svc {svc.name} -n {svc.namespace} --type json -p "
                      f"'[{{\"op\":\"replace\",\"path\":\"/spec/ports/{svc.ports.index(sp)}/targetPort\","
                      f"\"value\":{declared[0].split('/')[0]}}}]'`")


@check("protocol-mismatch")
def protocol_mismatch(ctx: CheckContext) -> Iterator[Finding]:
    """The Service port's protocol differs from the protocol the pods declare for the target port."""
    svc, snap = ctx.service, ctx.snapshot
    if svc is None or svc.is_external_name:
        return
    pods = _selected_pods(snap, svc)
    for sp in _ports_in_scope(ctx):
        tp = sp.effective_target_port
        named = isinstance(tp, str) and not tp.isdigit()
        matching = [c for p in pods for c in p.container_ports
                    if (c.name == tp if named else c.container_port == int(tp))]
        if not matching or any(c.protocol == sp.protocol for c in matching):
            continue
        theirs = sorted({c.protocol for c in matching})
        evidence = [f"svc {svc.ref} spec.ports {_port_label(sp)} protocol: {sp.protocol}",
                    f"the pods declare containerPort {matching[0].container_port}"
                    f"{' (' + str(tp) + ')' if named else ''} as {'/'.join(theirs)} "
                    f"(container {matching[0].container})"]
        if named:
            # FindPort matches a name only together with the protocol, so no endpoint port is published.
            evidence.append("a named targetPort matches only a containerPort of the same protocol, so the "
                            "endpoint controller publishes no endpoint port")
        yield Finding("protocol-mismatch", ERROR if named else WARNING,
                      f"Service {svc.ref} port {_port_label(sp)} is {sp.protocol} but the pods declare "
                      f"{tp} as {'/'.join(theirs)}",
                      tuple(evidence),
                      f"set protocol: {theirs[0]} on the Service port (`kubectl edit svc {svc.name} -n "
                      f"{svc.namespace}`), or add a {sp.protocol} port to the container")


@check("selectorless-without-endpoints")
def selectorless_without_endpoints(ctx: CheckContext) -> Iterator[Finding]:
    """A Service without a selector whose Endpoints/EndpointSlices were never created (or are empty)."""
    svc, snap = ctx.service, ctx.snapshot
    if svc is None or svc.selector or svc.is_external_name:
        return
    slices = snap.slices_for(svc)
    addresses = [a for s in slices for e in s.endpoints for a in e.addresses]
    if addresses and any(_has_usable(snap, svc, sp) for sp in _ports_in_scope(ctx)):
        return
    if addresses:
        return  # listed but not ready or at other ports: no-ready-endpoints says so
    port = _ports_in_scope(ctx)[0] if svc.ports else ServicePort(port=80)
    evidence = [f"svc {svc.ref} has no spec.selector, so no controller writes its endpoints",
                f"{len(slices)} EndpointSlices / Endpoints for {svc.ref} in the snapshot"
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
    svc, snap = ctx.service, ctx.snapshot
    if svc is None or svc.is_external_name or svc.is_headless:
        return
    for sp in _ports_in_scope(ctx):
        eps = api_endpoints(snap, svc, sp)
        if categorize(eps).has_any:
            continue
        if any(e.terminating for e in eps) and not any(e.ready is not False for e in eps):
            serving = [e for e in eps if _serving_terminating(e)]
            if serving:
                continue  # only-terminating-endpoints
        pods = _selected_pods(snap, svc)
        if svc.selector and not pods:
            return  # selector-matches-no-pods
        if not svc.selector and not eps:
            return  # selectorless-without-endpoints
        ready_pods = [p for p in pods if p.ready]
        tp = sp.effective_target_port
        if ready_pods and isinstance(tp, str) and not tp.isdigit():
            return  # ready pods without an endpoint port: target-port-not-exposed / protocol-mismatch
        evidence = [f"svc {svc.ref} port {_port_label(sp)}: {len(eps)} endpoints in the API, 0 ready"]
        not_ready = [p for p in pods if not p.ready] or [p for ref in {e.pod for e in eps}
                                                          if (p := _pod_of(snap, ref)) is not None]
        evidence += _more([f"pod {p.ref}: {_pod_state(p)}" for p in not_ready])
        if not pods:
            evidence += _more([f"endpoint {e.address}: {e.state}" for e in eps])
        for e in eps:
            if e.terminating and not _serving_terminating(e):
                evidence.append(f"endpoint {e.address} ({e.pod or 'no pod'}) is terminating and not serving")
        title = f"Service {svc.ref} has no ready endpoints"
        if pods:
            crashing = [p for p in pods if any(cs.reason == "CrashLoopBackOff" for cs in p.container_statuses)]
            pending = [p for p in pods if p.phase == "Pending"]
            if crashing:
                title += f": {len(crashing)} of {len(pods)} selected pods are crash-looping"
            elif pending and len(pending) == len(pods):
                title += f": its {len(pods)} pods are Pending"
            else:
                title += f": {len(not_ready)} of {len(pods)} selected pods are not ready"
        yield Finding("no-ready-endpoints", ERROR, title, tuple(evidence), _pods_hint(tuple(not_ready)))
        return


@check("only-terminating-endpoints")
def only_terminating_endpoints(ctx: CheckContext) -> Iterator[Finding]:
    """Every usable endpoint is terminating: kube-proxy falls back to them until they are gone."""
    svc, snap = ctx.service, ctx.snapshot
    if svc is None or svc.is_external_name or svc.is_headless:
        return
    for sp in _ports_in_scope(ctx):
        eps = api_endpoints(snap, svc, sp)
        if any(e.ready is not False for e in eps):
            continue
        term = [e for e in eps if _serving_terminating(e)]
        if not term:
            continue
        evidence = [f"svc {svc.ref} port {_port_label(sp)}: {len(eps)} endpoints, none ready, "
                    f"{len(term)} terminating and still serving"]
        evidence += _more([f"endpoint {e.address} ({e.pod or 'no pod'}): {e.state}" for e in term])
        yield Finding("only-terminating-endpoints", WARNING,
                      f"Service {svc.ref} has only terminating endpoints: connections work until they exit",
                      tuple(evidence),
                      f"check why no replacement is ready: `kubectl get pods -n {svc.namespace} -o wide` and the "
                      "rollout (`kubectl rollout status deploy/<name>`)")
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
    pods = _selected_pods(snap, svc)
    domain, _ = cluster_domain(snap)
    evidence = [f"svc {svc.ref} is headless (clusterIP: None): DNS answers with ready pod IPs only",
                f"{len(eps)} endpoints in the API, 0 ready"
                + (f"; spec.selector {_labels(dict(svc.selector))} matches {len(pods)} pods" if svc.selector else "")]
    evidence += _more([f"pod {p.ref}: {_pod_state(p)}" for p in pods if not p.ready])
    yield Finding("headless-no-ready-pods", ERROR,
                  f"headless Service {svc.ref} has no ready pods: {svc.name}.{svc.namespace}.svc.{domain} "
                  "resolves to no address",
                  tuple(evidence), _pods_hint(tuple(p for p in pods if not p.ready))
                  if pods else f"check the selector: `kubectl get pods -n {svc.namespace} --show-labels`")


# -- ExternalName, load balancers, DNS -----------------------------------------------------------------------


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


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
    if not name or len(name) > 253 or not all(_DNS1123_LABEL.match(x) and len(x) <= 63 for x in labels):
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


@check("load-balancer-pending")
def load_balancer_pending(ctx: CheckContext) -> Iterator[Finding]:
    """type LoadBalancer without status.loadBalancer.ingress: no external address was assigned."""
    svc = ctx.service
    if svc is None or svc.type != "LoadBalancer" or svc.load_balancer_ingress:
        return
    severity = ERROR if ctx.target.frontend == "LoadBalancer" else WARNING
    node_ports = ", ".join(str(p.node_port) for p in svc.ports if p.node_port is not None)
    evidence = [f"svc {svc.ref} spec.type: LoadBalancer, status.loadBalancer: {{}} (no ingress)",
                f"the ClusterIP {', '.join(svc.virtual_ips) or '(none)'}"
                + (f" and NodePorts {node_ports}" if node_ports else "") + " still work"]
    yield Finding("load-balancer-pending", severity,
                  f"Service {svc.ref} has no load-balancer address yet (EXTERNAL-IP <pending>)",
                  tuple(evidence),
                  f"see why the cloud controller or MetalLB has not assigned one: `kubectl describe svc {svc.name} "
                  f"-n {svc.namespace}` (events)")


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
    if any(_has_usable(snap, dns, sp) for sp in dns.ports):
        return
    by_name = ctx.target.target.kind in ("dns", "url")
    pods = _selected_pods(snap, dns)
    evidence = [f"svc {dns.ref} ({', '.join(dns.virtual_ips) or 'no ClusterIP'}): 0 ready endpoints"]
    evidence += _more([f"pod {p.ref}: {_pod_state(p)}" for p in pods if not p.ready])
    yield Finding("cluster-dns-no-endpoints", ERROR if by_name else WARNING,
                  f"cluster DNS ({dns.ref}) has no ready endpoints: "
                  + (f"{ctx.target.target.host} will not resolve" if by_name
                     else f"names like {svc.name}.{svc.namespace} will not resolve"),
                  tuple(evidence),
                  _pods_hint(tuple(p for p in pods if not p.ready)) if pods
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


# -- traffic policies ---------------------------------------------------------------------------------------


def _drop_hops(ctx: CheckContext, frontend_types: tuple[str, ...]) -> tuple[str, ...]:
    """Names of the DROP/REJECT hops the graph shows under partial or dropped frontends of these types."""
    names: list[str] = []

    def walk(hop: Hop) -> None:
        if hop.kind == "verdict" and hop.name not in names:
            names.append(hop.name)
        for child in hop.children:
            walk(child)

    for fe in ctx.graph.frontends if ctx.graph is not None else ():
        if fe.type in frontend_types and fe.verdict in (PARTIAL, DROPPED):
            for hop in fe.hops:
                walk(hop)
    return tuple(names)


def _nowhere_local(ctx: CheckContext) -> tuple[list[EndpointInfo], str] | None:
    """The ready endpoints (all on other nodes) when none runs on this node; None when some does or unknown."""
    svc, snap = ctx.service, ctx.snapshot
    node = snap.node.name
    if svc is None or node is None or svc.is_headless or svc.is_external_name:
        return None
    eps = _endpoints(snap, svc, _ports_in_scope(ctx))
    choice = categorize(eps)
    if not choice.has_any or choice.local or any(e.local is None for e in choice.cluster):
        return None
    return list(choice.cluster), node


@check("external-traffic-policy-local-no-local-endpoints")
def etp_local_no_local_endpoints(ctx: CheckContext) -> Iterator[Finding]:
    """externalTrafficPolicy Local and no ready endpoint on this node: external clients arriving here are dropped."""
    svc = ctx.service
    if svc is None or svc.external_traffic_policy != "Local":
        return
    if svc.type not in ("NodePort", "LoadBalancer") and not svc.external_ips:
        return
    found = _nowhere_local(ctx)
    if found is None:
        return
    eps, node = found
    nodes = sorted({e.node or "?" for e in eps})
    evidence = [f"svc {svc.ref} spec.externalTrafficPolicy: Local",
                f"{len(eps)} ready endpoints, on {', '.join(nodes)}; none on this node {node}"]
    hops = _drop_hops(ctx, ("NodePort", "LoadBalancer", "ExternalIP"))
    if hops:
        evidence.append(f"this node's rules drop external clients of the NodePort/LoadBalancer/externalIP "
                        f"frontends ({', '.join(hops)})")
    aimed_here = ctx.target.frontend in ("NodePort", "ExternalIP") or ctx.client.origin == "external"
    if aimed_here:
        severity = ERROR
    elif svc.type == "LoadBalancer" and svc.health_check_node_port is not None:
        # By design: the LB's health check on this node fails, so the LB sends nothing here.
        severity = INFO
        evidence.append(f"the load balancer's health check (healthCheckNodePort {svc.health_check_node_port}) "
                        "fails on this node, so the load balancer should send it no traffic")
    else:
        severity = WARNING
    yield Finding("external-traffic-policy-local-no-local-endpoints", severity,
                  f"Service {svc.ref} has externalTrafficPolicy Local and no ready endpoint on {node}: "
                  "external clients arriving at this node are dropped",
                  tuple(evidence),
                  f"send external clients to a node that runs an endpoint ({', '.join(nodes)}), or set "
                  f"externalTrafficPolicy: Cluster: `kubectl patch svc {svc.name} -n {svc.namespace} "
                  "-p '{\"spec\":{\"externalTrafficPolicy\":\"Cluster\"}}'`",
                  hops)


@check("internal-traffic-policy-local-no-local-endpoints")
def itp_local_no_local_endpoints(ctx: CheckContext) -> Iterator[Finding]:
    """internalTrafficPolicy Local and no ready endpoint on this node: pods here cannot reach the ClusterIP."""
    svc = ctx.service
    if svc is None or svc.internal_traffic_policy != "Local":
        return
    found = _nowhere_local(ctx)
    if found is None:
        return
    eps, node = found
    nodes = sorted({e.node or "?" for e in eps})
    client = ctx.client
    here = client.origin == "node" or (client.pod is not None and client.pod.node_name == node)
    evidence = [f"svc {svc.ref} spec.internalTrafficPolicy: Local",
                f"{len(eps)} ready endpoints, on {', '.join(nodes)}; none on this node {node}"]
    if client.pod is not None:
        evidence.append(f"client pod {client.pod.ref} runs on {client.pod.node_name or 'an unknown node'}")
    hops = _drop_hops(ctx, ("ClusterIP",))
    if hops:
        evidence.append(f"this node's rules drop connections to the ClusterIP ({', '.join(hops)})")
    yield Finding("internal-traffic-policy-local-no-local-endpoints", ERROR if here else WARNING,
                  f"Service {svc.ref} has internalTrafficPolicy Local and no ready endpoint on {node}: "
                  "pods on this node cannot reach it",
                  tuple(evidence),
                  f"run an endpoint on {node} (e.g. a DaemonSet), or set internalTrafficPolicy: Cluster: "
                  f"`kubectl patch svc {svc.name} -n {svc.namespace} -p "
                  "'{\"spec\":{\"internalTrafficPolicy\":\"Cluster\"}}'`",
                  hops)


# -- NetworkPolicy ------------------------------------------------------------------------------------------

_NS_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server since 1.21


def _as_map(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _label_selector(sel: Mapping[str, object], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector against labels: matchLabels and matchExpressions, ANDed; {} selects all."""
    for k, v in _as_map(sel.get("matchLabels")).items():
        if labels.get(k) != v:
            return False
    for raw in _as_list(sel.get("matchExpressions")):
        expr = _as_map(raw)
        key, op = str(expr.get("key", "")), expr.get("operator")
        values = [str(v) for v in _as_list(expr.get("values"))]
        present = key in labels
        ok = {"In": present and labels.get(key) in values, "NotIn": not present or labels.get(key) not in values,
              "Exists": present, "DoesNotExist": not present}.get(str(op), False)
        if not ok:
            return False
    return True


def _namespace_selector(sel: Mapping[str, object], namespace: str) -> bool | None:
    """Whether a namespaceSelector selects a namespace; None when it needs labels a snapshot lacks."""
    keys = set(_as_map(sel.get("matchLabels")))
    keys |= {str(_as_map(e).get("key", "")) for e in _as_list(sel.get("matchExpressions"))}
    if keys - {_NS_NAME_LABEL}:
        return None
    return _label_selector(sel, {_NS_NAME_LABEL: namespace})


def _in_block(block: Mapping[str, object], ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
        if addr not in ipaddress.ip_network(str(block.get("cidr", "")), strict=False):
            return False
        return not any(addr in ipaddress.ip_network(str(x), strict=False) for x in _as_list(block.get("except")))
    except ValueError:
        return False


def _peer_admits(peer: Mapping[str, object], policy: NetworkPolicy, client: Client) -> bool | None:
    """True / False / None (cannot tell) for one ``from`` entry and this client."""
    if "ipBlock" in peer:
        return _in_block(_as_map(peer["ipBlock"]), client.src) if client.src else None
    if client.pod is None:
        # Pod and namespace selectors select pods only; the node or an outside address is not one.
        return False if client.origin in ("node", "external") or client.src else None
    pod = client.pod
    if "namespaceSelector" in peer:
        ns_ok = _namespace_selector(_as_map(peer["namespaceSelector"]), pod.namespace)
    else:
        ns_ok = pod.namespace == policy.namespace
    pod_ok = _label_selector(_as_map(peer["podSelector"]), pod.labels) if "podSelector" in peer else True
    if ns_ok is False or not pod_ok:
        return False
    return ns_ok


def _ports_admit(ports: list[object], protocol: str, number: int | None, pod: Pod) -> bool:
    if not ports:
        return True
    for raw in ports:
        p = _as_map(raw)
        if str(p.get("protocol") or "TCP") != protocol:
            continue
        want, end = p.get("port"), p.get("endPort")
        if want is None:
            return True
        if isinstance(want, int) and number is not None and want <= number <= (end if isinstance(end, int) else want):
            return True
        if isinstance(want, str) and any(c.name == want and c.container_port == number and c.protocol == protocol
                                         for c in pod.container_ports):
            return True
    return False


def _any3(values: list[bool | None]) -> bool | None:
    if any(v is True for v in values):
        return True
    if any(v is None for v in values):
        return None
    return False


def _describe_peer(peer: Mapping[str, object], policy: NetworkPolicy) -> str:
    if "ipBlock" in peer:
        block = _as_map(peer["ipBlock"])
        exc = [str(x) for x in _as_list(block.get("except"))]
        return f"ipBlock {block.get('cidr')}" + (f" except {', '.join(exc)}" if exc else "")
    pods = _as_map(peer.get("podSelector"))
    pod_text = "all pods" if not pods else f"pods {_describe_selector(pods)}"
    if "namespaceSelector" in peer:
        ns = _as_map(peer["namespaceSelector"])
        return f"{pod_text} in {'every namespace' if not ns else 'namespaces ' + _describe_selector(ns)}"
    return f"{pod_text} in {policy.namespace}"


def _describe_selector(sel: Mapping[str, object]) -> str:
    parts = [f"{k}={v}" for k, v in _as_map(sel.get("matchLabels")).items()]
    for raw in _as_list(sel.get("matchExpressions")):
        e = _as_map(raw)
        parts.append(f"{e.get('key')} {e.get('operator')} {','.join(str(v) for v in _as_list(e.get('values')))}")
    return ",".join(parts) or "{}"


def _describe_rule(rule: Mapping[str, object], policy: NetworkPolicy) -> str:
    peers = [_as_map(p) for p in _as_list(rule.get("from"))]
    who = "; ".join(_describe_peer(p, policy) for p in peers) if peers else "everyone"
    ports = [_as_map(p) for p in _as_list(rule.get("ports"))]
    where = ", ".join(f"{p.get('protocol') or 'TCP'}/{p.get('port', 'any')}"
                      + (f"-{p['endPort']}" if "endPort" in p else "") for p in ports) if ports else "any port"
    return f"{who} on {where}"


def _isolating(snap: Snapshot, pod: Pod) -> list[NetworkPolicy]:
    """The policies that select this pod for Ingress (policyTypes empty means Ingress)."""
    return [np for np in snap.network_policies
            if np.namespace == pod.namespace and ("Ingress" in np.policy_types or not np.policy_types)
            and _label_selector(np.pod_selector, pod.labels)]


def _client_text(client: Client) -> str:
    if client.pod is not None:
        return f"pod {client.pod.ref} ({_labels(dict(client.pod.labels))}{', ' + client.src if client.src else ''})"
    return f"{client.origin or 'client'} {client.src}" if client.src else (client.origin or "the client")


@check("network-policy-denies")
def network_policy_denies(ctx: CheckContext) -> Iterator[Finding]:
    """A NetworkPolicy isolates the endpoint pods for Ingress and no rule admits this client (or anyone)."""
    svc, snap, client = ctx.service, ctx.snapshot, ctx.client
    if svc is None or svc.is_external_name or not snap.network_policies:
        return
    # (pod, endpoint port, protocol) for the usable endpoints that are pods
    targets: list[tuple[Pod, int | None, str]] = []
    for sp in _ports_in_scope(ctx) or (ServicePort(port=0),):
        for e in categorize(api_endpoints(snap, svc, sp)).cluster:
            pod = _pod_of(snap, e.pod)
            if pod is not None and not pod.host_network and all(t[0] != pod for t in targets):
                targets.append((pod, e.port, sp.protocol))
    if not targets and svc.is_headless:
        targets = [(p, None, "TCP") for p in _selected_pods(snap, svc) if p.ready]
    known_client = client.src is not None or client.pod is not None or client.origin is not None
    results: list[tuple[Pod, list[NetworkPolicy], bool | None, int | None, str]] = []
    for pod, number, proto in targets:
        policies = _isolating(snap, pod)
        if not policies:
            results.append((pod, [], True, number, proto))
            continue
        verdicts: list[bool | None] = []
        for np in policies:
            for raw in _as_list(np.spec.get("ingress")):
                rule = _as_map(raw)
                if not _ports_admit(_as_list(rule.get("ports")), proto, number, pod):
                    continue
                peers = [_as_map(p) for p in _as_list(rule.get("from"))]
                if not known_client:
                    verdicts.append(True if not peers else None)
                else:
                    verdicts.append(True if not peers else _any3([_peer_admits(p, np, client) for p in peers]))
        results.append((pod, policies, _any3(verdicts) if verdicts else False, number, proto))
    isolated = [r for r in results if r[1]]
    if not isolated:
        return
    pol_names = sorted({f"{np.namespace}/{np.name}" for r in isolated for np in r[1]})
    first = isolated[0][0]
    evidence = [f"NetworkPolicy {', '.join(pol_names)} selects {len(isolated)} of {len(results)} ready endpoint "
                f"pods of {svc.ref} for Ingress (e.g. pod {first.ref}: {_labels(dict(first.labels))})"]
    admitted = []
    for np in {np.name: np for r in isolated for np in r[1]}.values():
        rules = [_as_map(r) for r in _as_list(np.spec.get("ingress"))]
        admitted += [f"{np.name} admits {_describe_rule(r, np)}" for r in rules] or [f"{np.name} admits nobody"]
    evidence += _more(admitted)
    denied = [r for r in results if r[2] is False]
    unknown = [r for r in results if r[2] is None]
    port_text = f"{isolated[0][4]}/{isolated[0][3]}" if isolated[0][3] is not None else "its ports"
    hint = (f"add an ingress rule that admits the client on {port_text}: "
            f"`kubectl edit networkpolicy {isolated[0][1][0].name} -n {svc.namespace}`")
    if denied and len(denied) == len(results):
        who = _client_text(client) if known_client else "any client"
        yield Finding("network-policy-denies", ERROR,
                      f"NetworkPolicy {', '.join(pol_names)} blocks {who} from Service {svc.ref}'s pods "
                      f"on {port_text}",
                      (*evidence, f"no ingress rule admits {who} on {port_text}"), hint)
    elif denied:
        who = _client_text(client) if known_client else "any client"
        yield Finding("network-policy-denies", WARNING,
                      f"NetworkPolicy blocks {who} from {len(denied)} of {len(results)} endpoints of {svc.ref}: "
                      "some connections fail",
                      (*evidence, *_more([f"denied at pod {r[0].ref}" for r in denied])), hint)
    elif unknown and known_client:
        yield Finding("network-policy-denies", WARNING,
                      f"cannot tell whether NetworkPolicy {', '.join(pol_names)} admits {_client_text(client)} "
                      f"to Service {svc.ref}",
                      (*evidence, "namespace labels are not in a snapshot, so a namespaceSelector other than {} "
                                  "(or kubernetes.io/metadata.name) cannot be evaluated"),
                      "check the client namespace's labels: `kubectl get ns --show-labels`")
    elif not known_client:
        yield Finding("network-policy-denies", INFO,
                      f"NetworkPolicy {', '.join(pol_names)} restricts who reaches Service {svc.ref}'s pods",
                      tuple(evidence),
                      "ask for a specific client with --from-pod NS/POD or --src IP")
