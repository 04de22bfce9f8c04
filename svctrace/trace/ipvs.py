"""Simulate one new connection on a node whose kube-proxy runs in IPVS mode.

IPVS mode is two dataplanes in series, and so is this tracer:

1. the iptables rules IPVS mode writes (masquerade marks, KUBE-IPVS-FILTER, source ranges...) are walked by
   the iptables engine, with the node's ipsets deciding ``-m set --match-set``;
2. a connection that is delivered locally (ClusterIPs, externalIPs and LB IPs sit on the dummy interface
   kube-ipvs0, NodePorts on the node's own addresses) meets IPVS at LOCAL_IN, after filter INPUT. If a
   virtual server has its (protocol, address, port), IPVS picks a real server, rewrites the destination
   and sends the packet on through LOCAL_OUT and POSTROUTING, where nat KUBE-POSTROUTING masquerades
   marked connections and hairpins (``KUBE-LOOP-BACK``).

Shares: rr and wrr split new connections by weight. Other schedulers are given the same weight-based
share with a note, because their real split depends on load or on hashing the client. Weight-0 real
servers (terminating endpoints being drained) get no new connections. A persistent virtual server is
session affinity: noted, not branched (IPVS keeps the template, not the tracer).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace

from svctrace.model.iptables import IptablesDump
from svctrace.model.ipvs import FORWARD_MASQ, WEIGHT_SCHEDULERS, IpSets, IpvsTable, RealServer, VirtualServer
from svctrace.model.trace import Packet, TraceOptions, TraceResult, TraceStep
from svctrace.trace.engine import Branch
from svctrace.trace.iptables import trace_iptables

IPVS_TABLE = "ipvs"  # TraceStep.table for the IPVS lookup


def ipset_members(ipsets: IpSets | None) -> dict[str, tuple[str, ...]] | None:
    """The ipsets as the iptables engine takes them: name -> members."""
    if ipsets is None:
        return None
    return {s.name: s.members for s in ipsets.sets}


def virtual_addresses(ipvs: IpvsTable) -> tuple[str, ...]:
    """Every address an IPVS virtual server listens on (kube-proxy binds all but node IPs to kube-ipvs0)."""
    seen: dict[str, None] = {}
    for vs, _ in ipvs.services:
        if vs.address:
            seen.setdefault(vs.address, None)
    return tuple(seen)


def _vs_text(vs: VirtualServer) -> str:
    flag = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}.get(vs.protocol, "-f")
    text = f"-A {flag} {vs.endpoint} -s {vs.scheduler}"
    if vs.persistent_timeout is not None:
        text += f" -p {vs.persistent_timeout}"
    return text + "".join(f" {f}" for f in vs.flags)


def _rs_text(vs: VirtualServer, rs: RealServer) -> str:
    flag = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}.get(vs.protocol, "-f")
    fwd = {"masq": "-m", "route": "-g", "tunnel": "-i"}.get(rs.forward, f"-{rs.forward}")
    return f"-a {flag} {vs.endpoint} -r {rs.endpoint} {fwd} -w {rs.weight}"


def _same_ip(a: str, b: str) -> bool:
    return a == b or a.lower() == b.lower()


class _IpvsHook:
    """The LOCAL_IN hook handed to the iptables engine: the virtual-server lookup and the scheduler."""

    def __init__(self, ipvs: IpvsTable, packet: Packet, local_ips: Collection[str]) -> None:
        self.ipvs = ipvs
        self.packet = packet
        self.local = {ip.split("/", 1)[0] for ip in local_ips}

    def find(self, dst: str, dport: int) -> tuple[VirtualServer, tuple[RealServer, ...]] | None:
        proto = self.packet.protocol.upper()
        for vs, reals in self.ipvs.services:
            if vs.protocol == proto and vs.port == dport and _same_ip(vs.address, dst):
                return vs, reals
        return None

    def __call__(self, br: Branch) -> list[tuple[Branch, str]] | None:
        if br.dnat:
            return None  # an iptables DNAT already chose the destination; IPVS has nothing to look up
        found = self.find(br.dst, br.dport)
        if found is None:
            return None
        vs, reals = found
        head = TraceStep(IPVS_TABLE, vs.label, None, _vs_text(vs), "virtual server lookup")
        b = br.step(head)
        notes: list[str] = []
        if vs.persistent_timeout is not None:
            notes.append(f"persistent {vs.persistent_timeout}s (session affinity): a client IPVS has already "
                         "sent somewhere goes to the same real server again")
        live = [rs for rs in reals if rs.weight > 0]
        total = sum(rs.weight for rs in live)
        if not reals or total == 0:
            why = "has no real servers" if not reals else "has only weight-0 (draining) real servers"
            # IPVS finds the service but cannot schedule: ip_vs_schedule fails and the packet is dropped
            # with an ICMP port-unreachable (TCP clients see "connection refused").
            end = b.step(TraceStep(IPVS_TABLE, vs.label, None, _vs_text(vs),
                                   f"REJECT: the virtual server {why}"))
            end = end.note(f"virtual server {vs.label} {why}: IPVS cannot schedule the connection and "
                           "answers ICMP port unreachable, so the connection fails")
            for n in notes:
                end = end.note(n)
            return [(end, "REJECT")]
        if vs.scheduler not in WEIGHT_SCHEDULERS:
            notes.append(f"scheduler {vs.scheduler}: shares shown by weight; the real split depends on the "
                         "scheduler (load, or a hash of the client)")
        out: list[tuple[Branch, str]] = []
        for index, rs in enumerate(reals, start=1):
            share = rs.weight / total if total else 0.0
            step = TraceStep(IPVS_TABLE, vs.label, index, _rs_text(vs, rs),
                             f"real server {rs.endpoint}, share {rs.weight}/{total}" if rs.weight
                             else f"real server {rs.endpoint}, weight 0: no new connections")
            nb = replace(b.step(step), dst=rs.address, dport=rs.port, dnat=True, prob=b.prob * share)
            for n in notes:
                nb = nb.note(n)
            if rs.weight == 0:
                nb = nb.note(f"real server {rs.endpoint} has weight 0 (draining, usually a terminating "
                             "endpoint): only connections it already has")
            if rs.forward != FORWARD_MASQ:
                nb = replace(nb, loose=True).note(f"forwarding method {rs.forward} is not what kube-proxy "
                                                      "uses; the path after IPVS is not modelled")
            if rs.address in self.local:
                # A local real server (a hostNetwork endpoint): IPVS hands the packet on locally; it does not
                # go through POSTROUTING.
                nb = nb.note(f"real server {rs.endpoint} is on this node: delivered locally after the rewrite")
                out.append((nb, "local"))
            else:
                out.append((nb, "out"))
        return out


def trace_ipvs(ipvs: IpvsTable, dump: IptablesDump | None, packet: Packet, *, local_ips: Iterable[str] = (),
               options: TraceOptions | None = None,
               ipsets: Mapping[str, Collection[str]] | None = None) -> TraceResult:
    """Trace one new connection through IPVS mode: kube-proxy's iptables rules, then the IPVS lookup."""
    opts = options or TraceOptions()
    local = tuple(local_ips)
    hook = _IpvsHook(ipvs, packet, local)
    warnings: list[str] = []
    if dump is None:
        dump = IptablesDump()
        warnings.append("no iptables rules were given: masquerading and kube-proxy's filter rules are not traced")
    if ipsets is None:
        warnings.append("the node's ipsets were not given, so rules matching them are uncertain")

    result = trace_iptables(dump, packet, local_ips=local, options=opts, ipsets=ipsets, local_in=hook)
    return replace(result, mode="ipvs", warnings=(*warnings, *result.warnings))
