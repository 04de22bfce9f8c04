"""kube-proxy's nftables ruleset carries real traffic exactly where the nftables resolver says it goes.

A ruleset in kube-proxy's nftables-mode format (base chains and maps as proxier.go writes them, per-Service
chains named by kube-proxy's hash) is loaded with `nft -f` into a throw-away node namespace, pods answer with
their names, and fresh connections from the client and the node must reach every pod the resolver predicts
and no other. The ruleset is then read back live with `nft -j list ruleset` and must resolve the same way.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from svctrace.kubeproxy import naming
from svctrace.model import graph as g
from svctrace.model.graph import Frontend
from svctrace.model.nft import NftRuleset
from svctrace.model.snapshot import HostAddress, NodeFacts, Snapshot
from svctrace.parsers.k8s import decode_documents, parse_objects
from svctrace.parsers.nft_json import parse_nft_json
from svctrace.parsers.nft_transaction import parse_nft_transaction
from svctrace.resolver import nftables
from tests.fixtures.demo_build.gen_demo_nftables import base_declarations, base_rules
from tests.graphs import leaves
from tests.integration.netns import NetnsNode, Probe, probe_tcp, require_netns

pytestmark = pytest.mark.netns

TRIES = 32  # a 2-endpoint Service shows only one pod in 32 fresh connections with probability 2**-31
NODE_IP = "192.168.1.63"


@dataclass(frozen=True)
class Svc:
    ns: str
    name: str
    cluster_ip: str
    port: int
    endpoints: tuple[tuple[str, str], ...]  # (pod name, IP)
    target_port: int = 8080
    node_port: int | None = None
    port_name: str = "http"


def kube_proxy_ruleset(family: int, services: list[Svc], *, pod_cidr: str, service_cidr: str,
                       nodeport_ips: tuple[str, ...]) -> str:
    """kube-proxy's nftables ruleset for ``services`` (proxier.go's layout), in an order `nft -f` loads."""
    t = "ip6 kube-proxy" if family == 6 else "ip kube-proxy"
    ipx = "ip6" if family == 6 else "ip"
    table, sets, maps, chains = base_declarations(family)
    decl = [*table, *sets, *maps, *chains]
    rules = base_rules(family, service_cidr)
    elements = [f"add element {t} nodeport-ips {{ {ip} }}" for ip in nodeport_ips]
    for s in services:
        spn = f"{s.ns}/{s.name}:{s.port_name}"
        svc_chain = naming.nft_service_chain(s.ns, s.name, "tcp", s.port_name)
        ext_chain = naming.nft_service_chain(s.ns, s.name, "tcp", s.port_name, "external")
        elements.append(f"add element {t} cluster-ips {{ {s.cluster_ip} }}")
        if not s.endpoints:
            elements.append(f'add element {t} no-endpoint-services {{ {s.cluster_ip} . tcp . {s.port} '
                            f'comment "{spn}" : goto reject-chain }}')
            if s.node_port:
                elements.append(f'add element {t} no-endpoint-nodeports {{ tcp . {s.node_port} comment "{spn}" : '
                                "goto reject-chain }")
            continue
        eps = [(ip, nftables.endpoint_chain_name(s.ns, s.name, "TCP", s.port_name, ip, s.target_port))
               for _, ip in s.endpoints]
        decl.append(f"add chain {t} {svc_chain}")
        decl += [f"add chain {t} {c}" for _, c in eps]
        rules.append(f"add rule {t} {svc_chain} {ipx} daddr {s.cluster_ip} {ipx} saddr != {pod_cidr} "
                     "jump mark-for-masquerade")
        vmap = " , ".join(f"{i} : goto {c}" for i, (_, c) in enumerate(eps))
        rules.append(f"add rule {t} {svc_chain} numgen random mod {len(eps)} vmap {{ {vmap} }}")
        for ip, c in eps:
            dest = f"[{ip}]" if family == 6 else ip
            rules.append(f"add rule {t} {c} {ipx} saddr {ip} jump mark-for-masquerade")
            rules.append(f"add rule {t} {c} meta l4proto tcp dnat to {dest}:{s.target_port}")
        elements.append(f"add element {t} service-ips {{ {s.cluster_ip} . tcp . {s.port} : goto {svc_chain} }}")
        if s.node_port:
            decl.append(f"add chain {t} {ext_chain}")
            rules += [f"add rule {t} {ext_chain} jump mark-for-masquerade",
                      f"add rule {t} {ext_chain} goto {svc_chain}"]
            elements.append(f"add element {t} service-nodeports {{ tcp . {s.node_port} : goto {ext_chain} }}")
    return "\n".join(decl + rules + elements) + "\n"


def api_yaml(services: list[Svc], family: int) -> str:
    """Services and EndpointSlices for ``services``, as kubectl would print them."""
    docs = []
    for s in services:
        np = f", nodePort: {s.node_port}" if s.node_port else ""
        docs.append(textwrap.dedent(f"""\
            apiVersion: v1
            kind: Service
            metadata: {{namespace: {s.ns}, name: {s.name}}}
            spec:
              type: {"NodePort" if s.node_port else "ClusterIP"}
              clusterIPs: ["{s.cluster_ip}"]
              ipFamilies: [IPv{family}]
              ports: [{{name: {s.port_name}, port: {s.port}, protocol: TCP, targetPort: {s.target_port}{np}}}]
            """))
        eps = "".join(f'  - {{addresses: ["{ip}"], conditions: {{ready: true}}, '
                      f"targetRef: {{kind: Pod, namespace: {s.ns}, name: {pod}}}}}\n" for pod, ip in s.endpoints)
        docs.append(textwrap.dedent(f"""\
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {{namespace: {s.ns}, name: {s.name}-x, labels: {{kubernetes.io/service-name: {s.name}}}}}
            addressType: IPv{family}
            ports: [{{name: {s.port_name}, port: {s.target_port}, protocol: TCP}}]
            endpoints:
            """) + (eps or "  []\n"))
    return "---\n".join(docs)


def snapshot_for(services: list[Svc], family: int, ruleset: NftRuleset, node_ip: str) -> Snapshot:
    api = parse_objects(decode_documents(api_yaml(services, family), "api.yaml", "yaml"), "api.yaml")
    return Snapshot(services=api.services, endpoint_slices=api.endpoint_slices, pods=api.pods, nft=ruleset,
                    node=NodeFacts(name="node", proxy_mode="nftables",
                                   addresses=(HostAddress("ens33", node_ip, 24, family),)), source="test")


def predicted(snapshot: Snapshot, ns: str, name: str, family: int) -> dict[tuple[str, int], Frontend]:
    """The resolver's frontends of a Service, by (address, port)."""
    svc = snapshot.service(ns, name)
    assert svc is not None and snapshot.nft is not None
    out: dict[tuple[str, int], Frontend] = {}
    for sp in svc.ports:
        for fe in nftables.resolve_port(snapshot, svc, sp, family, snapshot.nft)[0]:
            out[(fe.ip, fe.port)] = fe
    return out


def pods_of(fe: Frontend, services: list[Svc]) -> set[str]:
    """The pod names a frontend's DNAT leaves lead to."""
    by_ip = {ip: pod for s in services for pod, ip in s.endpoints}
    return {by_ip[leaf.endpoint.ip] for h in fe.hops for leaf in leaves(h) if leaf.endpoint is not None}


def answered(probes: list[Probe]) -> set[str]:
    assert all(p.answer for p in probes), f"unanswered: {[p.error for p in probes if not p.answer]}"
    return {p.answer for p in probes if p.answer}


def load_nft(node: NetnsNode, ruleset: str) -> NftRuleset:
    """Load a ruleset with `nft -f` and read it back live as `nft -j` JSON."""
    node.run("nft", "-f", "-", input=ruleset)
    return parse_nft_json(node.run("nft", "-j", "list", "ruleset").stdout, "live")


V4 = [
    Svc("default", "web", "10.96.0.10", 80, (("web-1", "10.244.1.5"), ("web-2", "10.244.1.6")), node_port=30080),
    Svc("default", "single", "10.96.0.20", 8443, (("one", "10.244.2.7"),), target_port=9443),
    Svc("default", "empty", "10.96.0.30", 80, ()),
]


@pytest.fixture(scope="module")
def v4_node() -> Iterator[tuple[NetnsNode, Snapshot]]:
    require_netns("nft", need=("nft",))
    text = kube_proxy_ruleset(4, V4, pod_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12", nodeport_ips=(NODE_IP,))
    with NetnsNode(node_ip=NODE_IP) as node:
        live = load_nft(node, text)
        for s in V4:
            for pod, ip in s.endpoints:
                node.add_pod(pod, ip, tcp_ports=(s.target_port,))
        # The client reaches ClusterIPs through the node, as with a static route for the Service range.
        node.client.iproute("route", "add", "10.96.0.0/12", "via", NODE_IP)
        yield node, snapshot_for(V4, 4, live, NODE_IP)
    assert not node.leftovers()


def test_live_json_reads_back_as_loaded(v4_node: tuple[NetnsNode, Snapshot]) -> None:
    _, snap = v4_node
    assert snap.nft is not None
    text = kube_proxy_ruleset(4, V4, pod_cidr="10.244.0.0/16", service_cidr="10.96.0.0/12", nodeport_ips=(NODE_IP,))
    loaded = parse_nft_transaction(text, "loaded.nft").kube_proxy(4)
    live = snap.nft.kube_proxy(4)
    assert loaded is not None and live is not None
    assert set(live.chains) == set(loaded.chains) and set(live.maps) == set(loaded.maps)
    for m in live.maps:
        assert sorted(e.text for e in live.maps[m].elements) == sorted(e.text for e in loaded.maps[m].elements), m
    for name, chain in live.chains.items():
        if name not in ("mark-for-masquerade", "masquerading", "cluster-ips-check"):
            assert [r.full_text for r in chain.rules] == [r.full_text for r in loaded.chains[name].rules], name
    assert all(r.stmts for c in live.chains.values() for r in c.rules)


def test_nodeport_from_the_client_reaches_every_predicted_pod(v4_node: tuple[NetnsNode, Snapshot]) -> None:
    node, snap = v4_node
    fe = predicted(snap, "default", "web", 4)[(NODE_IP, 30080)]
    assert fe.verdict == g.FORWARDED and pods_of(fe, V4) == {"web-1", "web-2"}
    probes = probe_tcp(node.client, NODE_IP, 30080, count=TRIES)
    assert answered(probes) == pods_of(fe, V4)
    # the external chain masquerades (eTP Cluster): the pods see the node, never the client
    assert fe.hops[0].masquerade == "always" and {p.seen_from for p in probes} == {NODE_IP}


@pytest.mark.parametrize("name", ["web", "single"])
def test_cluster_ip_from_the_node_and_the_client(v4_node: tuple[NetnsNode, Snapshot], name: str) -> None:
    node, snap = v4_node
    svc = next(s for s in V4 if s.name == name)
    fe = predicted(snap, "default", name, 4)[(svc.cluster_ip, svc.port)]
    assert fe.verdict == g.FORWARDED
    assert answered(probe_tcp(node, svc.cluster_ip, svc.port, count=TRIES)) == pods_of(fe, V4)
    probes = probe_tcp(node.client, svc.cluster_ip, svc.port, count=TRIES)
    assert answered(probes) == pods_of(fe, V4)
    assert fe.hops[0].masquerade == "source not in 10.244.0.0/16"  # the client is outside the pod network
    assert {p.seen_from for p in probes} == {NODE_IP}


def test_cluster_ip_from_a_pod_keeps_its_source(v4_node: tuple[NetnsNode, Snapshot]) -> None:
    node, snap = v4_node
    fe = predicted(snap, "default", "single", 4)[("10.96.0.20", 8443)]
    web1 = node.pods["web-1"]
    probes = probe_tcp(web1, "10.96.0.20", 8443, count=4)
    assert answered(probes) == pods_of(fe, V4) and {p.seen_from for p in probes} == {web1.ip}


def test_no_endpoints_is_refused_as_predicted(v4_node: tuple[NetnsNode, Snapshot]) -> None:
    node, snap = v4_node
    fe = predicted(snap, "default", "empty", 4)[("10.96.0.30", 80)]
    assert fe.verdict == g.REJECTED
    # From a pod (forward hook) and from the node (output hook). Not from the client: its packets would leave
    # by the interface they came in on, the kernel's ICMP redirect would use up the ICMP rate-limit token, and
    # the reject's "port unreachable" would be suppressed (a quirk of this one-link harness, not of kube-proxy).
    assert {p.error for p in probe_tcp(node.pods["web-1"], "10.96.0.30", 80, count=2)} == {"refused"}
    assert {p.error for p in probe_tcp(node, "10.96.0.30", 80, count=2)} == {"refused"}


# ------------------------------------------------------------------------------------------------
# IPv6: the `ip6 kube-proxy` table (the harness's pods are IPv4, so IPv6 is added to them here)

ECHO6 = r"""
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", port))
s.listen(64)
print("ready", flush=True)
while True:
    conn, peer = s.accept()
    with conn:
        conn.sendall(f"{name} {peer[0]}\n".encode())
"""

NODE6, CLIENT6 = "2001:db8:1::63", "2001:db8:1::10"
V6 = [Svc("default", "web6", "fd00:96::10", 80, (("web6-1", "fd00:244::5"), ("web6-2", "fd00:244::6")),
          node_port=30081)]


@pytest.fixture
def v6_node(netns_factory: Callable[..., NetnsNode]) -> Iterator[tuple[NetnsNode, Snapshot]]:
    node = netns_factory(need=("nft",), node_ip=NODE_IP)
    node.sysctl("net.ipv6.conf.all.forwarding", 1)
    node.iproute("-6", "addr", "add", f"{NODE6}/64", "dev", node.uplink, "nodad")
    node.iproute("-6", "route", "add", "default", "via", "2001:db8:1::1", "dev", node.uplink)
    node.client.iproute("-6", "addr", "add", f"{CLIENT6}/64", "dev", "eth0", "nodad")
    node.client.iproute("-6", "route", "add", "fd00:96::/108", "via", NODE6)
    procs: list[subprocess.Popen[str]] = []
    try:
        for i, (pod_name, ip6) in enumerate(V6[0].endpoints):
            pod = node.add_pod(pod_name, f"10.244.9.{i + 1}", tcp_ports=())
            pod.iproute("-6", "addr", "add", f"{ip6}/128", "dev", "eth0", "nodad")
            node.iproute("-6", "addr", "add", "fe80::1/64", "dev", pod.host_iface, "nodad")
            pod.iproute("-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
            node.iproute("-6", "route", "add", f"{ip6}/128", "dev", pod.host_iface)
            proc = subprocess.Popen(pod.exec_argv(sys.executable, "-c", ECHO6, pod_name, "8080"),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        live = load_nft(node, kube_proxy_ruleset(6, V6, pod_cidr="fd00:244::/64", service_cidr="fd00:96::/108",
                                                 nodeport_ips=(NODE6,)))
        yield node, snapshot_for(V6, 6, live, NODE6)
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate(timeout=5)


def test_ipv6_cluster_ip_and_nodeport(v6_node: tuple[NetnsNode, Snapshot]) -> None:
    node, snap = v6_node
    assert snap.nft is not None and snap.nft.kube_proxy(6) is not None and snap.nft.kube_proxy(4) is None
    fes = predicted(snap, "default", "web6", 6)
    cluster, nodeport = fes[("fd00:96::10", 80)], fes[(NODE6, 30081)]
    assert cluster.verdict == nodeport.verdict == g.FORWARDED
    assert pods_of(cluster, V6) == pods_of(nodeport, V6) == {"web6-1", "web6-2"}
    assert cluster.hops[0].table == "ip6 kube-proxy"
    assert all(c.notes == () for c in cluster.hops[0].children)  # endpoint chain names hash as kube-proxy's
    assert answered(probe_tcp(node.client, "fd00:96::10", 80, count=TRIES, timeout=2.0)) == pods_of(cluster, V6)
    probes = probe_tcp(node.client, NODE6, 30081, count=TRIES, timeout=2.0)
    assert answered(probes) == pods_of(nodeport, V6) and {p.seen_from for p in probes} == {NODE6}

