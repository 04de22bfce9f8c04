"""Checks of the node area: kernel settings and leftovers that break Service traffic whatever the rules say."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from svctrace.diagnosis.checks.dataplane import MAX_LISTED, frontends
from svctrace.diagnosis.findings import ERROR, INFO, WARNING, Finding
from svctrace.diagnosis.registry import CheckContext, check
from svctrace.model.iptables import IptablesDump
from svctrace.model.snapshot import Snapshot

IP_FORWARD = "net.ipv4.ip_forward"
BRIDGE_NF = "net.bridge.bridge-nf-call-iptables"
ROUTE_LOCALNET = "net.ipv4.conf.all.route_localnet"
# Interfaces CNIs bridge pods onto (bridge plugin, kubenet, kube-router, Docker, flannel's cni0).
BRIDGE_NAMES = ("cni0", "cbr0", "kube-bridge", "docker0", "weave")
BRIDGE_PREFIXES = ("br-", "cni-br")
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-FW-")


def _sysctls_collected(snap: Snapshot) -> bool:
    """Whether the node's sysctls were read at all (so an absent one means its module is not loaded)."""
    return IP_FORWARD in snap.node.sysctls


@check("iptables-backend-split")
def iptables_backend_split(ctx: CheckContext) -> Iterator[Finding]:
    """KUBE-* chains in both iptables-legacy and iptables-nft: two rule sets, both run by the kernel."""
    node = ctx.snapshot.node
    if node.iptables_backend != "both":
        return
    read = {d.backend for d in (ctx.snapshot.iptables, ctx.snapshot.ip6tables) if d is not None and d.backend}
    evidence = [f"node {node.name or '(this node)'} iptablesBackend: both"
                + (f" ({node.iptables_backend_reason})" if node.iptables_backend_reason else "")]
    if read:
        evidence.append(f"svctrace read the {', '.join(sorted(read))} rules; the other backend's rules are not in "
                        "this answer, yet the kernel applies them too")
    yield Finding(
        "iptables-backend-split", ERROR,
        "kube's iptables rules are split between iptables-legacy and iptables-nft on this node",
        tuple(evidence),
        "compare `iptables-legacy-save | grep KUBE-` with `iptables-nft-save | grep KUBE-`; run every component "
        "(kubelet, kube-proxy, CNI) with the node's backend, then remove the stale chains of the other one "
        "(e.g. `kube-proxy --cleanup` with the wrong backend's image)",
        hops=())


def _service_chains(dump: IptablesDump | None) -> list[str]:
    nat = dump.table("nat") if dump is not None else None
    chains = [c for c in (nat.chains if nat is not None else {}) if c.startswith(SERVICE_CHAIN_PREFIXES)]
    # KUBE-SVC- first: a Service's own chain is the clearest sign of iptables mode.
    return sorted(chains, key=lambda c: (not c.startswith("KUBE-SVC-"), c))


@check("proxy-mode-leftovers")
def proxy_mode_leftovers(ctx: CheckContext) -> Iterator[Finding]:
    """Rules of a proxy mode kube-proxy no longer runs (e.g. KUBE-SVC chains while it runs nftables mode)."""
    snap = ctx.snapshot
    mode = snap.node.proxy_mode
    if mode is None:
        return
    left: list[str] = []
    if mode in ("ipvs", "nftables"):
        for dump in (snap.iptables, snap.ip6tables):
            chains = _service_chains(dump)
            if chains and dump is not None:
                left.append(f"{dump.source or 'iptables-save'}: {len(chains)} iptables-mode chains in nat, e.g. "
                            + ", ".join(chains[:MAX_LISTED // 2]))
    if mode in ("iptables", "nftables") and snap.ipvs is not None and snap.ipvs.services:
        vs = [v for v, _ in snap.ipvs.services]
        left.append(f"{len(vs)} IPVS virtual servers, e.g. "
                    + ", ".join(f"{v.protocol} {v.address}:{v.port}" for v in vs[:MAX_LISTED // 2]))
    if mode in ("iptables", "ipvs") and snap.nft is not None:
        tables = [f"{t.family} {t.name}" for t in snap.nft.tables if t.name == "kube-proxy"]
        if tables:
            left.append("nftables table(s) " + ", ".join(f"`{t}`" for t in tables))
    if not left:
        return
    yield Finding(
        "proxy-mode-leftovers", WARNING,
        f"kube-proxy runs in {mode} mode, but rules of another mode are still on this node",
        tuple([f"proxy mode: {mode}", *left]),
        "the kernel still applies the old rules (they can send Service traffic to gone pods); remove them with "
        "`kube-proxy --cleanup` (run once per old mode, e.g. `kube-proxy --cleanup --proxy-mode=iptables`)")


def _remote_endpoints(ctx: CheckContext) -> list[str]:
    if ctx.graph is None:
        return []
    local = set(ctx.snapshot.node.local_ips)
    return [e.address for e in ctx.graph.endpoints if e.in_api and e.ip not in local]


@check("ip-forward-disabled")
def ip_forward_disabled(ctx: CheckContext) -> Iterator[Finding]:
    """net.ipv4.ip_forward=0: Service traffic this node must forward to a pod is dropped by the kernel."""
    value = ctx.snapshot.node.sysctls.get(IP_FORWARD)
    if value != "0" or ctx.client.origin == "node":
        return  # the node's own connections are sent, not forwarded
    eps = _remote_endpoints(ctx)
    yield Finding(
        "ip-forward-disabled", ERROR,
        "IPv4 forwarding is off on this node: Service traffic to pods is dropped before it leaves",
        (f"sysctl {IP_FORWARD} = 0",
         "endpoints reached only by forwarding: " + (", ".join(eps[:MAX_LISTED]) or "none listed")),
        f"`sysctl -w {IP_FORWARD}=1` and make it permanent (`echo {IP_FORWARD}=1 > /etc/sysctl.d/99-kubernetes.conf`)",
        hops=tuple(eps))


def _bridges(snap: Snapshot) -> list[str]:
    """Bridge interfaces that hold pod-network addresses (where bridged pod traffic would bypass iptables)."""
    cidrs = []
    node = snap.node_named(snap.node.name)
    for c in node.pod_cidrs if node is not None else ():
        try:
            cidrs.append(ipaddress.ip_network(c, strict=False))
        except ValueError:
            continue
    out = []
    for a in snap.node.addresses or ():
        if not (a.ifname in BRIDGE_NAMES or a.ifname.startswith(BRIDGE_PREFIXES)):
            continue
        if cidrs and not any(ipaddress.ip_address(a.address) in n for n in cidrs if n.version == a.family):
            continue
        out.append(f"{a.ifname} {a.address}/{a.prefixlen}")
    return sorted(set(out))


@check("bridge-nf-call-iptables-disabled")
def bridge_nf_call_disabled(ctx: CheckContext) -> Iterator[Finding]:
    """Bridged pod traffic skips iptables (bridge-nf-call-iptables=0, or br_netfilter not loaded)."""
    snap = ctx.snapshot
    value = snap.node.sysctls.get(BRIDGE_NF)
    if value != "0" and not (value is None and _sysctls_collected(snap)):
        return
    # The node's every address is read (IPVS mode: each ClusterIP's on kube-ipvs0): once, not once per Service.
    bridges = snap.recent(("bridges", snap.node.name), lambda: _bridges(snap))
    if value == "0":
        evidence = [f"sysctl {BRIDGE_NF} = 0"]
        fix = f"`sysctl -w {BRIDGE_NF}=1` (and in /etc/sysctl.d/)"
    elif value is None and _sysctls_collected(snap) and bridges:
        evidence = [f"sysctl {BRIDGE_NF} is absent while {IP_FORWARD} was read: the br_netfilter module is not "
                    "loaded"]
        fix = f"`modprobe br_netfilter && sysctl -w {BRIDGE_NF}=1` (and list br_netfilter in /etc/modules-load.d/)"
    else:
        return
    if not bridges:
        # Routed CNIs (Calico, Cilium) never bridge pod traffic, so the setting does not matter there.
        yield Finding("bridge-nf-call-iptables-disabled", INFO,
                      "bridge-nf-call-iptables is off, which matters only if pods sit on a Linux bridge (none seen)",
                      tuple(evidence), fix)
        return
    same_node = ctx.client.origin == "pod"
    yield Finding(
        "bridge-nf-call-iptables-disabled", ERROR if same_node else WARNING,
        "pods on this node's bridge reach Services without passing kube-proxy's rules (bridge-nf-call-iptables off)",
        tuple(evidence + [f"pod bridge: {b}" for b in bridges]
              + ["a pod's packet to a ClusterIP whose endpoint is on the same bridge is switched, not routed: "
                 "its reply skips un-DNAT and the client drops it"]),
        fix)


@check("route-localnet-disabled")
def route_localnet_disabled(ctx: CheckContext) -> Iterator[Finding]:
    """net.ipv4.conf.all.route_localnet=0 while localhost NodePort rules exist: 127.0.0.1:NodePort fails."""
    svc, snap = ctx.service, ctx.snapshot
    if svc is None or snap.node.sysctls.get(ROUTE_LOCALNET) != "0":
        return
    node_ports = {p.node_port for p in svc.ports if p.node_port}
    if not node_ports:
        return
    rules = []
    dump = snap.iptables
    chain = dump.chain("nat", "KUBE-NODEPORTS") if dump is not None else None
    for rule in chain.rules if chain is not None else ():
        dst = rule.destination
        if dst is not None and str(dst.prefixes[0]).startswith("127.") and rule.dport is not None \
                and rule.dport.single in node_ports:
            rules.append(f"nat KUBE-NODEPORTS #{rule.index}: {rule.text}")
    if not rules:
        return
    host = ctx.target.target.host or ""
    asked = host.startswith("127.")
    yield Finding(
        "route-localnet-disabled", ERROR if asked else INFO,
        f"127.0.0.1:{'/'.join(map(str, sorted(node_ports)))} (localhost NodePort of {svc.ref}) fails on this node: "
        "route_localnet is 0",
        (f"sysctl {ROUTE_LOCALNET} = 0", *rules[:MAX_LISTED],
         "the kernel will not route a 127.0.0.1 source to the pod after DNAT"),
        f"connect to the node's own address instead, or `sysctl -w {ROUTE_LOCALNET}=1` (kube-proxy sets it when "
        "localhost NodePorts are on; something reset it)",
        hops=tuple(f"{f.ip}:{f.port}" for f in frontends(ctx) if f.type == "NodePort"))
