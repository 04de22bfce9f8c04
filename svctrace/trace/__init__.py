"""Packet simulation: one new connection through a node's Service dataplane, per proxy mode.

``trace_packet`` is the one entry point the cli uses; each mode has a module here (iptables now;
nftables and IPVS later) registered in ``TRACERS`` with the same signature.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import replace

from svctrace.errors import SvctraceError
from svctrace.model.snapshot import Snapshot
from svctrace.model.trace import (
    KubeProxyTestView,
    Outcome,
    Packet,
    TraceOptions,
    TraceResult,
    TraceStep,
)
from svctrace.trace.iptables import kube_proxy_output, trace_iptables

__all__ = ["TRACERS", "KubeProxyTestView", "Outcome", "Packet", "TraceOptions", "TraceResult", "TraceStep",
           "kube_proxy_output", "node_local_ips", "trace_iptables", "trace_packet"]

Ipsets = Mapping[str, Collection[str]]
Tracer = Callable[[Snapshot, Packet, TraceOptions, "Ipsets | None"], TraceResult]


def node_local_ips(snapshot: Snapshot) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The node's own addresses (for ``addrtype LOCAL``) and warnings about how they were found."""
    if snapshot.node.addresses is not None:
        return snapshot.node.local_ips, ()
    node = snapshot.node_named(snapshot.node.name)
    if node is not None and node.ips:
        return node.ips, ("the node's interface addresses were not collected; only its API addresses "
                          f"({', '.join(node.ips)}) and loopback count as LOCAL",)
    return (), ("the node's addresses are not known; only loopback counts as LOCAL, so NodePort rules "
                "(addrtype LOCAL) will not match node addresses",)


def _trace_snapshot_iptables(snapshot: Snapshot, packet: Packet, options: TraceOptions,
                             ipsets: Ipsets | None) -> TraceResult:
    dump = snapshot.dump(packet.family)
    if dump is None:
        tool = "ip6tables-save" if packet.family == 6 else "iptables-save"
        raise SvctraceError(f"no IPv{packet.family} iptables rules in {snapshot.source or 'the snapshot'}",
                            f"capture the node's `{tool}` output, or trace an address of the other family")
    local, warnings = node_local_ips(snapshot)
    if options.route_localnet is None:
        sysctl = snapshot.node.sysctls.get("net.ipv4.conf.all.route_localnet")
        if sysctl in ("0", "1"):
            options = replace(options, route_localnet=sysctl == "1")
    result = trace_iptables(dump, packet, local_ips=local, options=options, ipsets=ipsets)
    if warnings:
        result = replace(result, warnings=(*warnings, *result.warnings))
    return result


TRACERS: dict[str, Tracer] = {
    "iptables": _trace_snapshot_iptables,
}


def _mode(snapshot: Snapshot, packet: Packet, options: TraceOptions) -> str:
    if options.mode:
        return options.mode
    if snapshot.node.proxy_mode:
        return snapshot.node.proxy_mode
    dump = snapshot.dump(packet.family)
    if dump is not None and dump.chain("nat", "KUBE-SERVICES") is not None:
        return "iptables"
    raise SvctraceError("cannot tell which proxy mode this node uses",
                        "pass the mode explicitly (iptables, ipvs or nftables)")


def trace_packet(snapshot: Snapshot, packet: Packet, options: TraceOptions | None = None, *,
                 ipsets: Ipsets | None = None) -> TraceResult:
    """Simulate one new connection through the node's dataplane in its proxy mode."""
    opts = options or TraceOptions()
    mode = _mode(snapshot, packet, opts)
    tracer = TRACERS.get(mode)
    if tracer is None:
        known = ", ".join(sorted(TRACERS))
        raise SvctraceError(f"tracing packets in {mode} mode is not supported yet",
                            f"svctrace traces {known} mode; `svctrace svc` still shows the {mode} rules")
    return tracer(snapshot, packet, opts, ipsets)
