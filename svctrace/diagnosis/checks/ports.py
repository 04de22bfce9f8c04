"""Checks of what the Service exposes: its ports, the pod ports they target, and its load-balancer address."""

from __future__ import annotations

from collections.abc import Iterator

from svctrace.diagnosis.checks.common import (
    asks_for,
    port_label,
    ports_in_scope,
    service_and_pods,
)
from svctrace.diagnosis.findings import ERROR, WARNING, Finding
from svctrace.diagnosis.registry import CheckContext, check
from svctrace.resolver.common import api_endpoints


@check("port-not-defined")
def port_not_defined(ctx: CheckContext) -> Iterator[Finding]:
    """The port asked for is not one of the Service's ports."""
    svc, want = ctx.service, ctx.target.port
    if svc is None or want is None:
        return
    if any(asks_for(p, want) for p in svc.ports):
        return
    have = ", ".join(port_label(p) for p in svc.ports) or "none"
    yield Finding("port-not-defined", ERROR, f"Service {svc.ref} has no port {want}",
                  (f"svc {svc.ref} spec.ports: {have}",),
                  f"connect to one of its ports, or add port {want}: `kubectl edit svc {svc.name} -n {svc.namespace}`")



@check("target-port-not-exposed")
def target_port_not_exposed(ctx: CheckContext) -> Iterator[Finding]:
    """The targetPort is not a port the selected pods declare (a named one means no endpoint port at all)."""
    found = service_and_pods(ctx)
    if found is None or not found[1]:
        return
    (svc, pods), snap = found, ctx.snapshot
    for sp in ports_in_scope(ctx):
        tp = sp.effective_target_port
        if isinstance(tp, str) and not tp.isdigit():
            declaring = [p for p in pods if any(c.name == tp for c in p.container_ports)]
            if declaring:
                continue  # declared (a protocol mismatch is protocol-mismatch's to report)
            declared = sorted({f"{c.name or '(unnamed)'}:{c.container_port}/{c.protocol}"
                               for p in pods for c in p.container_ports})
            evidence = [f"svc {svc.ref} port {port_label(sp)} targetPort: {tp} (a name)",
                        (f"the selected pod declares no containerPort named {tp}; it declares: " if len(pods) == 1
                         else f"none of the {len(pods)} selected pods declares a containerPort named {tp}; they "
                              "declare: ") + (", ".join(declared) or "no ports"),
                        "the endpoint controller publishes no endpoint port for a name it cannot find, "
                        "so kube-proxy has no backend for this port"]
            yield Finding("target-port-not-exposed", ERROR,
                          f"Service {svc.ref} port {port_label(sp)} targets the port name {tp!r}, "
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
        evidence = [f"svc {svc.ref} port {port_label(sp)} targetPort: {number}",
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
    found = service_and_pods(ctx)
    if found is None:
        return
    svc, pods = found
    for sp in ports_in_scope(ctx):
        tp = sp.effective_target_port
        named = isinstance(tp, str) and not tp.isdigit()
        matching = [c for p in pods for c in p.container_ports
                    if (c.name == tp if named else c.container_port == int(tp))]
        if not matching or any(c.protocol == sp.protocol for c in matching):
            continue
        theirs = sorted({c.protocol for c in matching})
        evidence = [f"svc {svc.ref} spec.ports {port_label(sp)} protocol: {sp.protocol}",
                    f"the pods declare containerPort {matching[0].container_port}"
                    f"{' (' + str(tp) + ')' if named else ''} as {'/'.join(theirs)} "
                    f"(container {matching[0].container})"]
        if named:
            # FindPort matches a name only together with the protocol, so no endpoint port is published.
            evidence.append("a named targetPort matches only a containerPort of the same protocol, so the "
                            "endpoint controller publishes no endpoint port")
        yield Finding("protocol-mismatch", ERROR if named else WARNING,
                      f"Service {svc.ref} port {port_label(sp)} is {sp.protocol} but the pods declare "
                      f"{tp} as {'/'.join(theirs)}",
                      tuple(evidence),
                      f"set protocol: {theirs[0]} on the Service port (`kubectl edit svc {svc.name} -n "
                      f"{svc.namespace}`), or add a {sp.protocol} port to the container")



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

