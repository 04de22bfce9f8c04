"""What the user asked about: a Service, a DNS name, IP:PORT, or a URL, resolved against a Snapshot."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from svctrace.errors import UsageError
from svctrace.record import record

if TYPE_CHECKING:  # parse_target needs none of the model: `svc` asks it before the node's saves start
    from svctrace.model.k8s import Service
    from svctrace.model.snapshot import Snapshot

_LABEL_INNER = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def is_dns_label(text: str) -> bool:
    """An RFC 1123 label without its length limit: a-z, 0-9 and '-', starting and ending alphanumeric."""
    return bool(text) and set(text) <= _LABEL_INNER and text[0] != "-" and text[-1] != "-"


@record
class Target:
    """The parsed target, before it is matched to a Service."""

    text: str
    kind: str  # service | dns | address | url
    namespace: str | None = None
    name: str | None = None
    host: str | None = None  # DNS name or IP
    port: str | None = None  # name or number as given (None: every port)


@record
class ResolvedTarget:
    """The target matched to a Service port (or not found: service is None)."""

    target: Target
    namespace: str
    name: str
    service: Service | None
    port: str | None  # the Service port name or number to check; None: all
    frontend: str | None = None  # "ClusterIP" / "NodePort" / ... when the target named an address
    how: str = ""  # how the target was matched, in words


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_target(text: str, namespace: str | None) -> Target:
    """``name``, ``ns/name``, ``name:port``, ``name.ns[.svc.domain]``, ``IP:PORT``, ``[v6]:PORT`` or a URL."""
    raw = text.strip()
    if not raw:
        raise UsageError("no target given", "svctrace why-unreachable NAME | NS/NAME | IP:PORT | URL")
    if "://" in raw:
        try:
            parts = urlsplit(raw)
            url_port = parts.port  # urllib checks the port only when asked: `:-1`, `:99999`, `:http`
        except ValueError as exc:
            raise UsageError(f"{raw!r} is not a URL svctrace understands ({exc})",
                             "e.g. http://web.shop:8080/health or [fd00::10]:80") from None
        if not parts.hostname:
            raise UsageError(f"{raw!r} is not a URL svctrace understands", "e.g. http://web.shop:8080/health")
        default = {"http": "80", "https": "443"}.get(parts.scheme)
        port = str(url_port) if url_port else default
        inner = parse_target(parts.hostname if port is None else host_port(parts.hostname, port), namespace)
        return Target(raw, "url", inner.namespace, inner.name, inner.host, inner.port)
    host, port = raw, None
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        port = rest.lstrip(":") or None
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    elif raw.count(":") > 1 and not _is_ip(raw):
        raise UsageError(f"{raw!r}: write an IPv6 address with a port as [ADDRESS]:PORT", "e.g. [fd00::10]:80")
    if _is_ip(host):
        return Target(raw, "address", host=host, port=port)
    if "/" in host:
        ns, _, name = host.partition("/")
        return Target(raw, "service", ns, name, port=port)
    if "." in host:
        labels = host.rstrip(".").split(".")
        if len(labels) >= 2 and all(is_dns_label(x) for x in labels):
            return Target(raw, "dns", labels[1], labels[0], host=host.rstrip("."), port=port)
        raise UsageError(f"{host!r} is not a Service name, a cluster DNS name or an IP address",
                         "give NAME, NS/NAME, NAME.NS.svc.cluster.local, IP:PORT or a URL")
    return Target(raw, "service", namespace, host, port=port)


def host_port(host: str, port: str | int) -> str:
    """``10.0.0.1:80``, ``[fd00::1]:80``: an address and port as a target is written."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_target(snapshot: Snapshot, target: Target, default_namespace: str) -> ResolvedTarget:
    """Match the target to a Service of the snapshot; an address matches ClusterIPs, externalIPs, LB IPs, NodePorts."""
    if target.kind in ("service", "dns", "url") and target.name is not None:
        ns = target.namespace or default_namespace
        how = "by name"
        if target.kind in ("dns", "url") and target.host:
            from svctrace.resolver.common import cluster_domain

            domain, _ = cluster_domain(snapshot)
            how = f"from the DNS name {target.host} (cluster domain {domain})"
        return ResolvedTarget(target, ns, target.name, snapshot.service(ns, target.name), target.port, how=how)
    if target.kind in ("address", "url") and target.host is not None:
        return _by_address(snapshot, target)
    raise UsageError(f"cannot tell what {target.text!r} names", "give NAME, NS/NAME, IP:PORT or a URL")


def node_addresses(snapshot: Snapshot) -> set[str]:
    """Addresses a NodePort answers on: this node's own, and every Node's in the API."""
    return {*snapshot.node.local_ips, *(ip for n in snapshot.nodes for ip in n.ips)}


def _by_address(snapshot: Snapshot, target: Target) -> ResolvedTarget:
    ip = str(ipaddress.ip_address(target.host or ""))
    port = int(target.port) if target.port and target.port.isdigit() else None
    node_ips = node_addresses(snapshot)
    for svc in snapshot.services:
        for sp in svc.ports:
            matches: list[tuple[str, bool]] = [
                ("ClusterIP", ip in svc.virtual_ips and port in (None, sp.port)),
                ("ExternalIP", ip in svc.external_ips and port in (None, sp.port)),
                ("LoadBalancer", any(i.ip == ip for i in svc.load_balancer_ingress) and port in (None, sp.port)),
                ("NodePort", sp.node_port is not None and port == sp.node_port and ip in node_ips),
            ]
            for frontend, hit in matches:
                if hit:
                    return ResolvedTarget(target, svc.namespace, svc.name, svc, sp.name or str(sp.port),
                                          frontend=frontend, how=f"{target.text} is the {frontend} of {svc.ref}")
    where = snapshot.source or "the snapshot"
    how = (f"no Service in {where} has the address {target.text}" if snapshot.api_collected
           else f"{where} holds no Kubernetes objects, so no Service is known by its address")
    return ResolvedTarget(target, "", target.text, None, target.port, how=how)
