"""Packet simulation: one new connection through a node's Service dataplane, per proxy mode.

``trace_packet`` is the one entry point the cli uses; each mode has a module here (iptables now;
nftables, IPVS) registered in ``TRACERS`` with the same signature.
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
from svctrace.trace.ipvs import ipset_members, trace_ipvs, virtual_addresses
from svctrace.trace.nftables import trace_nftables

__all__ = ["TRACERS", "KubeProxyTestView", "Outcome", "Packet", "TraceOptions", "TraceResult", "TraceStep",
           "kube_proxy_output", "node_local_ips", "trace_iptables", "trace_ipvs", "trace_nftables", "trace_packet"]

IPVS_INTERFACE = "kube-ipvs0"

Ipsets = Mapping[str, Collection[str]]
Tracer = Callable[[Snapshot, Packet, TraceOptions, "Ipsets | None"], TraceResult]


def _is_ipvs(snapshot: Snapshot) -> bool:
    if snapshot.node.proxy_mode:
        return snapshot.node.proxy_mode == "ipvs"
    return snapshot.ipvs is not None and bool(snapshot.ipvs.services)


def node_local_ips(snapshot: Snapshot) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The node's own addresses (for ``addrtype LOCAL``) and warnings about how they were found.

    In IPVS mode the Service addresses on kube-ipvs0 are local too; when the snapshot's interface list has
    no kube-ipvs0, the IPVS virtual server addresses stand in for it, with a warning.
    """
    ips, warnings = _host_ips(snapshot)
    if not _is_ipvs(snapshot) or snapshot.ipvs is None:
        return ips, warnings
    addresses = snapshot.node.addresses or ()
    if any(a.ifname == IPVS_INTERFACE for a in addresses):
        return ips, warnings
    extra = tuple(ip for ip in virtual_addresses(snapshot.ipvs) if ip not in ips)
    if not extra:
        return ips, warnings
    return (*ips, *extra), (*warnings, f"{IPVS_INTERFACE} is not among the node's collected interfaces; the IPVS "
                                       "virtual server addresses are taken as local, as kube-proxy binds them there")


def _host_ips(snapshot: Snapshot) -> tuple[tuple[str, ...], tuple[str, ...]]:
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


def _route_localnet(snapshot: Snapshot, options: TraceOptions) -> TraceOptions:
    if options.route_localnet is None:
        sysctl = snapshot.node.sysctls.get("net.ipv4.conf.all.route_localnet")
        if sysctl in ("0", "1"):
            return replace(options, route_localnet=sysctl == "1")
    return options


def _trace_snapshot_nftables(snapshot: Snapshot, packet: Packet, options: TraceOptions,
                             ipsets: Ipsets | None) -> TraceResult:
    if snapshot.nft is None:
        raise SvctraceError(f"no nftables ruleset in {snapshot.source or 'the snapshot'}",
                            "capture the node's `nft -j list ruleset` output (node/nft.json)")
    local, warnings = node_local_ips(snapshot)
    result = trace_nftables(snapshot.nft, packet, local_ips=local, options=_route_localnet(snapshot, options))
    if warnings:
        result = replace(result, warnings=(*warnings, *result.warnings))
    return result


def _trace_snapshot_ipvs(snapshot: Snapshot, packet: Packet, options: TraceOptions,
                         ipsets: Ipsets | None) -> TraceResult:
    if snapshot.ipvs is None:
        raise SvctraceError(f"no IPVS virtual servers in {snapshot.source or 'the snapshot'}",
                            "capture the node's `ipvsadm -Sn` output (node/ipvsadm.txt)")
    local, warnings = node_local_ips(snapshot)
    sets = ipsets if ipsets is not None else ipset_members(snapshot.ipsets)
    result = trace_ipvs(snapshot.ipvs, snapshot.dump(packet.family), packet, local_ips=local,
                        options=_route_localnet(snapshot, options), ipsets=sets)
    if warnings:
        result = replace(result, warnings=(*warnings, *result.warnings))
    return result


TRACERS: dict[str, Tracer] = {
    "iptables": _trace_snapshot_iptables,
    "nftables": _trace_snapshot_nftables,
    "ipvs": _trace_snapshot_ipvs,
}


def _mode(snapshot: Snapshot, packet: Packet, options: TraceOptions) -> str:
    if options.mode:
        return options.mode
    if snapshot.node.proxy_mode:
        return snapshot.node.proxy_mode
    if snapshot.nft is not None and snapshot.nft.kube_proxy(packet.family) is not None:
        return "nftables"
    if snapshot.ipvs is not None and snapshot.ipvs.services:
        return "ipvs"
    dump = snapshot.dump(packet.family)
    if dump is not None and dump.chain("nat", "KUBE-SERVICES") is not None:
        return "iptables"
    raise SvctraceError("cannot tell which proxy mode this node uses",
                        "pass it with --mode iptables, --mode ipvs or --mode nftables")


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
