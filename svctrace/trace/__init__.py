"""Packet simulation: one new connection through a node's Service dataplane, per proxy mode.

``trace_packet`` is the one entry point; each mode implements ``ModeTracer`` (a module here:
iptables, ipvs, nftables) over the shared engine (svctrace.trace.engine, svctrace.trace.walk), and is
registered in ``TRACERS`` under its ProxyMode. tests/unit/test_mode_contract.py checks every mode has one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Protocol, runtime_checkable

from svctrace.errors import SvctraceError
from svctrace.model.mode import ProxyMode
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

__all__ = ["TRACERS", "KubeProxyTestView", "ModeTracer", "Outcome", "Packet", "TraceOptions", "TraceResult",
           "TraceStep", "kube_proxy_output", "node_local_ips", "trace_iptables", "trace_ipvs", "trace_nftables",
           "trace_packet"]

IPVS_INTERFACE = "kube-ipvs0"

Ipsets = Mapping[str, Collection[str]]


@runtime_checkable
class ModeTracer(Protocol):
    """One proxy mode, as the tracer walks it."""

    mode: ProxyMode

    def gap(self, snapshot: Snapshot, family: int) -> SvctraceError | None:
        """Why this snapshot cannot be traced in this mode for ``family``; None when it can."""

    def trace(self, snapshot: Snapshot, packet: Packet, options: TraceOptions, local: tuple[str, ...],
              ipsets: Ipsets | None) -> TraceResult:
        """One new connection through the mode's dataplane; ``local`` are the node's addresses."""


def node_local_ips(snapshot: Snapshot) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The node's own addresses (for ``addrtype LOCAL``) and warnings about how they were found.

    In IPVS mode the Service addresses on kube-ipvs0 are local too; when the snapshot's interface list has
    no kube-ipvs0, the IPVS virtual server addresses stand in for it, with a warning.
    """
    ips, warnings = _host_ips(snapshot)
    if snapshot.mode is not ProxyMode.IPVS or snapshot.ipvs is None:
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
    return (), ("the node's addresses are not known: whether a destination is one of them (addrtype LOCAL, "
                "NodePorts) is followed both ways",)


def _no_rules(snapshot: Snapshot, what: str, capture: str) -> SvctraceError:
    return SvctraceError(f"no {what} in {snapshot.source or 'the snapshot'}", capture)


class _Iptables:
    mode = ProxyMode.IPTABLES

    def gap(self, snapshot: Snapshot, family: int) -> SvctraceError | None:
        if snapshot.dump(family) is None:
            tool = "ip6tables-save" if family == 6 else "iptables-save"
            return _no_rules(snapshot, f"IPv{family} iptables rules",
                             f"capture the node's `{tool}` output, or trace an address of the other family")
        return None

    def trace(self, snapshot: Snapshot, packet: Packet, options: TraceOptions, local: tuple[str, ...],
              ipsets: Ipsets | None) -> TraceResult:
        dump = snapshot.dump(packet.family)
        assert dump is not None
        return trace_iptables(dump, packet, local_ips=local, options=options, ipsets=ipsets,
                              bridge_ports=snapshot.node.bridge_ports)


class _Nftables:
    mode = ProxyMode.NFTABLES

    def gap(self, snapshot: Snapshot, family: int) -> SvctraceError | None:
        if snapshot.nft is None:
            return _no_rules(snapshot, "nftables ruleset",
                             "capture the node's `nft -j list table ip kube-proxy` output (node/nft.json)")
        return None

    def trace(self, snapshot: Snapshot, packet: Packet, options: TraceOptions, local: tuple[str, ...],
              ipsets: Ipsets | None) -> TraceResult:
        assert snapshot.nft is not None
        return trace_nftables(snapshot.nft, packet, local_ips=local, options=options,
                              bridge_ports=snapshot.node.bridge_ports)


class _Ipvs:
    mode = ProxyMode.IPVS

    def gap(self, snapshot: Snapshot, family: int) -> SvctraceError | None:
        if snapshot.ipvs is None:
            return _no_rules(snapshot, "IPVS virtual servers", "capture the node's `ipvsadm -Sn` output "
                                                               "(node/ipvsadm.txt)")
        return None

    def trace(self, snapshot: Snapshot, packet: Packet, options: TraceOptions, local: tuple[str, ...],
              ipsets: Ipsets | None) -> TraceResult:
        assert snapshot.ipvs is not None
        sets = ipsets if ipsets is not None else ipset_members(snapshot.ipsets)
        return trace_ipvs(snapshot.ipvs, snapshot.dump(packet.family), packet, local_ips=local, options=options,
                          ipsets=sets)


TRACERS: dict[ProxyMode, ModeTracer] = {t.mode: t for t in (_Iptables(), _Nftables(), _Ipvs())}


def _route_localnet(snapshot: Snapshot, options: TraceOptions) -> TraceOptions:
    if options.route_localnet is None:
        sysctl = snapshot.node.sysctls.get("net.ipv4.conf.all.route_localnet")
        if sysctl in ("0", "1"):
            return replace(options, route_localnet=sysctl == "1")
    return options


def _mode(snapshot: Snapshot, options: TraceOptions) -> ProxyMode:
    forced = ProxyMode.parse(options.mode)
    if options.mode and forced is None:
        raise SvctraceError(f"unknown proxy mode {options.mode!r}", "use iptables, ipvs or nftables")
    mode = forced or snapshot.mode
    if mode is None:
        how = f" ({snapshot.node.proxy_mode_how})" if snapshot.node.proxy_mode_how else ""
        raise SvctraceError(f"cannot tell which proxy mode this node uses{how}",
                            "pass it with --mode iptables, --mode ipvs or --mode nftables")
    return mode


def trace_packet(snapshot: Snapshot, packet: Packet, options: TraceOptions | None = None, *,
                 ipsets: Ipsets | None = None) -> TraceResult:
    """Simulate one new connection through the node's dataplane in its proxy mode."""
    opts = options or TraceOptions()
    tracer = TRACERS[_mode(snapshot, opts)]
    gap = tracer.gap(snapshot, packet.family)
    if gap is not None:
        raise gap
    local, warnings = node_local_ips(snapshot)
    opts = _route_localnet(snapshot, opts)
    if not local and opts.node_addresses_known:
        opts = replace(opts, node_addresses_known=False)
    result = tracer.trace(snapshot, packet, opts, local, ipsets)
    if warnings:
        result = replace(result, warnings=(*warnings, *result.warnings))
    return result
