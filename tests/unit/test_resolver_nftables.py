"""The nftables-mode resolver against kube-proxy's own expected ruleset, and against iptables mode."""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.kubeproxy import naming
from svctrace.model import graph as g
from svctrace.model.graph import Frontend
from svctrace.model.k8s import Service
from svctrace.model.nft import NftChain, NftRuleset, NftTable
from svctrace.model.snapshot import NodeFacts, Snapshot
from svctrace.parsers.nft_json import parse_nft_json
from svctrace.parsers.nft_transaction import parse_nft_transaction
from svctrace.resolver import nftables, resolve
from tests.graphs import endpoint_shares, frontend, leaves
from tests.shared_data import REPO, shared_dir
from tests.snapshots import make_snapshot

sys.path.insert(0, str(REPO / "bench"))

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TABLE = "ip kube-proxy"


def conformance(name: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((shared_dir() / "conformance" / "nftables" / f"{name}.json").read_text())
    return data


def nft_snapshot(ruleset: NftRuleset) -> Snapshot:
    """The overall fixture's API objects (the same six Services) on a node running kube-proxy in nftables mode."""
    snap = load_snapshot(FIXTURES / "overall")
    return replace(snap, iptables=None, ip6tables=None, nft=ruleset,
                   node=NodeFacts(name=snap.node.name, proxy_mode="nftables", addresses=snap.node.addresses))


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    return nft_snapshot(parse_nft_json((FIXTURES / "nft" / "overall.json").read_text(), "nft/overall.json"))


def frontends(snapshot: Snapshot, ns: str, name: str, family: int = 4) -> list[Frontend]:
    svc = snapshot.service(ns, name)
    assert svc is not None and snapshot.nft is not None
    out: list[Frontend] = []
    for sp in svc.ports:
        out += nftables.resolve_port(snapshot, svc, sp, family, snapshot.nft)[0]
    return out


def summary(fes: list[Frontend] | tuple[Frontend, ...]) -> list[tuple[object, ...]]:
    """What must not depend on the proxy mode: frontends, verdicts, endpoint shares, and each path's outcome."""
    return [(f.type, f.ip, f.port, f.protocol, f.verdict, [endpoint_shares(h) for h in f.hops],
             [(leaf.verdict, leaf.when, leaf.affinity) for h in f.hops for leaf in leaves(h)]) for f in fes]


@pytest.mark.parametrize("source", ["nft -j JSON", "knftables transaction text"])
@pytest.mark.parametrize("ns,name", [(f"ns{i}", f"svc{i}") for i in range(1, 7)])
def test_same_answer_as_iptables_mode(source: str, ns: str, name: str) -> None:
    if source == "nft -j JSON":
        ruleset = parse_nft_json((FIXTURES / "nft" / "overall.json").read_text(), "overall.json")
    else:
        ruleset = parse_nft_transaction(conformance("TestOverallNFTablesRules")["nft_ruleset"], "conformance")
    iptables_graph = resolve(load_snapshot(FIXTURES / "overall"), ns, name)
    assert iptables_graph.mode == "iptables"
    nft = frontends(nft_snapshot(ruleset), ns, name)
    assert summary(nft) == summary(iptables_graph.frontends)
    assert [f.verdict for f in nft] != [] and len(nft) == len(iptables_graph.frontends)


def test_cluster_ip_single_endpoint(snap: Snapshot) -> None:
    fe = frontend(frontends(snap, "ns1", "svc1"), "ClusterIP")
    assert (fe.ip, fe.port, fe.protocol, fe.verdict) == ("172.30.0.41", 80, "TCP", g.FORWARDED)
    (svc_hop,) = fe.hops
    assert (svc_hop.kind, svc_hop.name, svc_hop.table) == ("service", "service-ULMVA6XW-ns1/svc1/tcp/p80", TABLE)
    assert svc_hop.masquerade == "source not in 10.0.0.0/8"
    dispatch, element = svc_hop.rules[:2]
    assert (dispatch.chain, dispatch.text) == ("services", "ip daddr . meta l4proto . th dport vmap @service-ips")
    assert element.text == "element service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }"
    (ep,) = svc_hop.children
    assert (ep.kind, ep.name, ep.verdict, ep.share) == \
           ("endpoint", "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80", "DNAT", 1.0)
    assert ep.endpoint is not None and ep.endpoint.address == "10.180.0.1:80"
    assert ep.endpoint.in_api and ep.endpoint.in_dataplane and ep.endpoint.ready is True
    assert ep.masquerade is not None and ep.masquerade.startswith("hairpin")
    assert ep.rules[-1].text == "meta l4proto tcp dnat to 10.180.0.1:80" and ep.notes == ()


def test_numgen_splits_evenly(snap: Snapshot) -> None:
    fes = frontends(snap, "ns4", "svc4")
    svc_hop = frontend(fes, "ClusterIP").hops[0]
    assert endpoint_shares(svc_hop) == {"10.180.0.4:80": 0.5, "10.180.0.5:80": 0.5}
    assert [c.probability for c in svc_hop.children] == ["0 of mod 2", "1 of mod 2"]
    assert "numgen random mod 2" in svc_hop.explain
    ext = frontend(fes, "ExternalIP", "192.168.99.33")
    (ext_hop,) = ext.hops
    assert (ext_hop.kind, ext_hop.masquerade, ext.verdict) == ("external", "always", g.FORWARDED)


def test_external_policy_local_without_local_endpoints_drops_in_filter(snap: Snapshot) -> None:
    fes = frontends(snap, "ns2", "svc2")
    for type_, ip in (("ExternalIP", "192.168.99.22"), ("LoadBalancer", "1.2.3.4")):
        fe = frontend(fes, type_, ip)
        assert fe.verdict == g.PARTIAL
        (ext,) = fe.hops
        assert ext.name == "external-42NFTM6N-ns2/svc2/tcp/p80"
        assert [c.when for c in ext.children] == ["source in 10.0.0.0/8", "source is a local address of this node",
                                                  "external clients"]
        drop = ext.children[-1]
        assert (drop.kind, drop.verdict) == ("verdict", "DROP")
        assert drop.rules[0].chain == "service-endpoints-check"
        assert drop.rules[1].text == f'element no-endpoint-services {{ {ip} . tcp . 80 comment "ns2/svc2:p80" : drop }}'
    nodeport = frontend(fes, "NodePort")
    assert (nodeport.ip, nodeport.port, nodeport.verdict) == ("192.168.0.2", 3001, g.PARTIAL)
    assert nodeport.hops[0].children[-1].rules[0].chain == "nodeport-endpoints-check"


def test_source_ranges_and_affinity(snap: Snapshot) -> None:
    fes = frontends(snap, "ns5", "svc5")
    lb = frontend(fes, "LoadBalancer", "5.6.7.8")
    assert lb.verdict == g.PARTIAL
    (fw,) = lb.hops
    assert (fw.kind, fw.name) == ("firewall", "firewall-HVFWP5L3-ns5/svc5/tcp/p80")
    assert fw.rules[1].text == "element firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }"
    allowed, dropped = fw.children
    assert (allowed.when, allowed.name) == ("source in 203.0.113.0/25", "external-HVFWP5L3-ns5/svc5/tcp/p80")
    assert dropped.verdict == "DROP" and dropped.rules[0].text == "ip saddr != 203.0.113.0/25 drop"
    svc_hop = frontend(fes, "ClusterIP").hops[0]
    assert svc_hop.affinity == "ClientIP, 10800s"
    (ep,) = svc_hop.children
    assert ep.affinity == "ClientIP, 10800s" and ep.share == 1.0
    assert any(r.text.startswith("update @affinity-GTK6MW7G") for r in ep.rules)
    assert frontend(fes, "NodePort").verdict == g.FORWARDED  # NodePorts bypass source ranges


def test_no_endpoints_is_rejected(snap: Snapshot) -> None:
    fe = frontend(frontends(snap, "ns6", "svc6"), "ClusterIP")
    assert fe.verdict == g.REJECTED
    (verdict,) = fe.hops
    assert (verdict.kind, verdict.verdict, verdict.name) == ("verdict", "REJECT", "REJECT")
    assert verdict.rules[1].text == \
        'element no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }'


def test_chain_names_recompute_from_the_service() -> None:
    ruleset = parse_nft_transaction(conformance("TestOverallNFTablesRules")["nft_ruleset"], "x")
    table = ruleset.kube_proxy(4)
    assert table is not None
    ours = [c for c in table.chains if "/" in c]
    assert len(ours) == 16
    (affinity,) = [s for s in table.sets if s.startswith("affinity-")]
    assert affinity == naming.nft_endpoint_chain("ns5", "svc5", "tcp", "p80", "10.180.0.3", 80, "affinity")
    for chain in ours:
        prefix, _, rest = chain.partition("-")
        base = rest.split("-", 1)[1]
        svc_part, _, ep = base.partition("__")
        ns, name, proto, port = svc_part.split("/")
        if ep:
            ip, _, p = ep.partition("/")
            assert naming.nft_endpoint_chain(ns, name, proto, port, ip, int(p), prefix) == chain
        else:
            assert naming.nft_service_chain(ns, name, proto, port, prefix) == chain


def test_stale_chains_after_a_service_delete() -> None:
    ruleset = parse_nft_transaction(conformance("TestSyncProxyRulesRepeated__after_service_delete")["nft_ruleset"],
                                    "x")
    api = """
    apiVersion: v1
    kind: Service
    metadata: {namespace: ns2, name: svc2}
    spec: {clusterIP: 172.30.0.42, clusterIPs: [172.30.0.42], ports: [{name: p8080, port: 8080, protocol: TCP}]}
    """
    snapshot = replace(make_snapshot(api, None, proxy_mode="nftables"), nft=ruleset)
    svc = snapshot.service("ns2", "svc2")
    assert svc is not None
    fes, _, reached = nftables.resolve_port(snapshot, svc, svc.ports[0], 4, ruleset)
    assert [f.verdict for f in fes] == [g.NOT_PROGRAMMED]
    assert sorted(s.chain for s in nftables.stale_chains(svc, ruleset, reached)) == [
        "endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080", "service-MHHHYRWA-ns2/svc2/tcp/p8080"]

    # Asked about Service by Service, chain names are searched; past the first few, one index answers: alike.
    others = [replace(svc, name=n) for n in ("svc", "svc22", "vc2")] + [replace(svc, namespace="ns")]
    first = [nftables.stale_chains(s, ruleset, set()) for s in (svc, *others)]
    for _ in range(nftables.ASK_ALONE):
        nftables.stale_chains(svc, ruleset, set())
    assert [nftables.stale_chains(s, ruleset, set()) for s in (svc, *others)] == first
    assert len(first[0]) == 2 and first[1:] == [(), (), (), ()]



def test_chains_named_after_a_service_by_search_and_by_index_with_dashes_in_names() -> None:
    """The index is keyed by the Service's name alone: a namespace or a name with ``-`` in it, and one
    Service's name that is another's namespace, give what searching every chain's name gives."""
    names = ["service-AAAAAAAA-kube-system/kube-dns/udp/dns",
             "endpoint-BBBBBBBB-kube-system/kube-dns/udp/dns__10.0.0.1/53", "service-CCCCCCCC-system/kube-dns/tcp/dns",
             "service-DDDDDDDD-kube-dns/udp/tcp/p53",
             "service-EEEEEEEE-ns/my-web/tcp/http", "endpoint-FFFFFFFF-ns/my-web/tcp/http__10.0.0.2/80",
             "services", "service-GGGGGGGG-ns/web/tcp/http", "filter-prerouting"]
    ruleset = NftRuleset((NftTable("ip", "kube-proxy", {n: NftChain(n) for n in names}),))
    services = [Service(namespace=ns, name=n) for ns, n in (
        ("kube-system", "kube-dns"), ("system", "kube-dns"), ("kube-dns", "udp"), ("dns", "udp"), ("ns", "my-web"),
        ("ns", "web"), ("web", "tcp"), ("my", "web"), ("ns", "nothing"))]
    searched = [nftables.stale_chains(s, ruleset, set()) for s in services]
    for _ in range(nftables.ASK_ALONE):
        nftables.stale_chains(services[-1], ruleset, set())
    assert [nftables.stale_chains(s, ruleset, set()) for s in services] == searched
    assert [[c.chain for c in found] for found in searched] == [  # "-system/kube-dns/" is in "kube-system/..." too
        names[:2], names[:3], names[3:4], [names[0], names[1], names[3]], names[4:6], names[7:8], names[4:6], [], []]


V6_API = """
apiVersion: v1
kind: Service
metadata: {namespace: ns1, name: web}
spec:
  type: NodePort
  clusterIPs: ["fd00:10::10"]
  ipFamilies: [IPv6]
  ports: [{name: http, port: 80, protocol: TCP, nodePort: 30080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: ns1, name: web-v6, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: ["fd00:244::5"], conditions: {ready: true}}
- {addresses: ["fd00:244::6"], conditions: {ready: true}}
"""


def v6_ruleset(node_ip: str = "2001:db8::1") -> str:
    """A kube-proxy ``ip6 kube-proxy`` ruleset for V6_API, in knftables order (load order for `nft -f`)."""
    svc = naming.nft_service_chain("ns1", "web", "tcp", "http")
    ext = naming.nft_service_chain("ns1", "web", "tcp", "http", "external")
    eps = [(ip, nftables.endpoint_chain_name("ns1", "web", "TCP", "http", ip, 8080))
           for ip in ("fd00:244::5", "fd00:244::6")]
    t = "ip6 kube-proxy"
    lines = [
        f'add table {t} {{ comment "rules for kube-proxy" ; }}',
        f"add set {t} nodeport-ips {{ type ipv6_addr ; }}",
        f"add map {t} service-ips {{ type ipv6_addr . inet_proto . inet_service : verdict ; }}",
        f"add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; }}",
        f"add chain {t} mark-for-masquerade",
        f"add chain {t} masquerading",
        f"add chain {t} services",
        f"add chain {t} nat-prerouting {{ type nat hook prerouting priority -100 ; }}",
        f"add chain {t} nat-output {{ type nat hook output priority -100 ; }}",
        f"add chain {t} nat-postrouting {{ type nat hook postrouting priority 100 ; }}",
        f"add chain {t} {svc}", f"add chain {t} {ext}",
        *[f"add chain {t} {c}" for _, c in eps],
        f"add rule {t} mark-for-masquerade mark set mark or 0x4000",
        f"add rule {t} masquerading mark and 0x4000 == 0 return",
        f"add rule {t} masquerading mark set mark xor 0x4000",
        f"add rule {t} masquerading masquerade fully-random",
        f"add rule {t} nat-prerouting jump services",
        f"add rule {t} nat-output jump services",
        f"add rule {t} nat-postrouting jump masquerading",
        f"add rule {t} services ip6 daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services ip6 daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        f"add rule {t} {svc} ip6 daddr fd00:10::10 ip6 saddr != fd00:244::/64 jump mark-for-masquerade",
        f"add rule {t} {svc} numgen random mod 2 vmap {{ 0 : goto {eps[0][1]} , 1 : goto {eps[1][1]} }}",
        f"add rule {t} {ext} jump mark-for-masquerade",
        f"add rule {t} {ext} goto {svc}",
        *[r for ip, c in eps for r in (f"add rule {t} {c} ip6 saddr {ip} jump mark-for-masquerade",
                                       f"add rule {t} {c} meta l4proto tcp dnat to [{ip}]:8080")],
        f"add element {t} nodeport-ips {{ {node_ip} }}",
        f"add element {t} service-ips {{ fd00:10::10 . tcp . 80 : goto {svc} }}",
        f"add element {t} service-nodeports {{ tcp . 30080 : goto {ext} }}",
    ]
    return "\n".join(lines) + "\n"


def test_ipv6_table_and_endpoint_chain_names() -> None:
    ruleset = parse_nft_transaction(v6_ruleset(), "v6.nft")
    snapshot = replace(make_snapshot(textwrap.dedent(V6_API), None, proxy_mode="nftables",
                                     node_ips=("2001:db8::1",)), nft=ruleset)
    svc = snapshot.service("ns1", "web")
    assert svc is not None
    fes, eps, _ = nftables.resolve_port(snapshot, svc, svc.ports[0], 6, ruleset)
    cluster, nodeport = fes
    assert (cluster.ip, cluster.verdict, nodeport.ip, nodeport.port) == \
           ("fd00:10::10", g.FORWARDED, "2001:db8::1", 30080)
    svc_hop = cluster.hops[0]
    assert svc_hop.table == "ip6 kube-proxy" and svc_hop.masquerade == "source not in fd00:244::/64"
    assert endpoint_shares(svc_hop) == {"[fd00:244::5]:8080": 0.5, "[fd00:244::6]:8080": 0.5}
    names = [c.name for c in svc_hop.children]
    assert names[0].endswith("__fd00.244..5/8080")  # colons become dots, as kube-proxy writes them
    assert all(c.notes == () for c in svc_hop.children)  # the names hash as kube-proxy's would
    assert endpoint_shares(nodeport.hops[0]) == {"[fd00:244::5]:8080": 0.5, "[fd00:244::6]:8080": 0.5}
    assert {e.address for e in eps if e.in_api and e.in_dataplane} == {"[fd00:244::5]:8080", "[fd00:244::6]:8080"}


def test_missing_table_means_not_programmed(snap: Snapshot) -> None:
    svc = snap.service("ns1", "svc1")
    assert svc is not None
    fes, eps, reached = nftables.resolve_port(snap, svc, svc.ports[0], 4, NftRuleset())
    assert [f.verdict for f in fes] == [g.NOT_PROGRAMMED] and reached == set()
    assert [e.in_dataplane for e in eps] == [False]


LOCAL_API = """
apiVersion: v1
kind: Service
metadata: {namespace: ns1, name: svc1}
spec:
  type: NodePort
  clusterIPs: [172.30.1.1]
  ports: [{name: p80, port: 80, protocol: TCP, nodePort: 30001}]
  externalTrafficPolicy: Local
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: ns1, name: svc1-x, labels: {kubernetes.io/service-name: svc1}}
addressType: IPv4
ports: [{name: p80, port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.0.1.1], nodeName: node-a, conditions: {ready: true}}
- {addresses: [10.0.1.2], nodeName: host2, conditions: {ready: true}}
"""


def test_external_policy_local_goes_to_the_local_chain() -> None:
    t = "ip kube-proxy"
    svc, local, ext = (naming.nft_service_chain("ns1", "svc1", "tcp", "p80", p) for p in ("service", "local",
                                                                                          "external"))
    ep1, ep2 = (nftables.endpoint_chain_name("ns1", "svc1", "TCP", "p80", ip, 80) for ip in ("10.0.1.1", "10.0.1.2"))
    text = "\n".join([
        f"add table {t}", f"add set {t} nodeport-ips {{ type ipv4_addr ; }}",
        f"add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}",
        f"add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; }}",
        f"add chain {t} services",
        f"add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
        f"add rule {t} {svc} numgen random mod 2 vmap {{ 0 : goto {ep1} , 1 : goto {ep2} }}",
        f"add rule {t} {local} numgen random mod 1 vmap {{ 0 : goto {ep1} }}",
        f'add rule {t} {ext} ip saddr 10.0.0.0/8 goto {svc} comment "short-circuit pod traffic"',
        f'add rule {t} {ext} fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"',
        f'add rule {t} {ext} fib saddr type local goto {svc} comment "short-circuit local traffic"',
        f"add rule {t} {ext} goto {local}",
        f"add rule {t} {ep1} meta l4proto tcp dnat to 10.0.1.1:80",
        f"add rule {t} {ep2} meta l4proto tcp dnat to 10.0.1.2:80",
        f"add element {t} nodeport-ips {{ 192.168.0.2 }}",
        f"add element {t} service-ips {{ 172.30.1.1 . tcp . 80 : goto {svc} }}",
        f"add element {t} service-nodeports {{ tcp . 30001 : goto {ext} }}",
    ])
    ruleset = parse_nft_transaction(text, "local.nft")
    snapshot = replace(make_snapshot(textwrap.dedent(LOCAL_API), None, proxy_mode="nftables"), nft=ruleset)
    svc_obj = snapshot.service("ns1", "svc1")
    assert svc_obj is not None
    cluster, nodeport = nftables.resolve_port(snapshot, svc_obj, svc_obj.ports[0], 4, ruleset)[0]
    assert endpoint_shares(cluster.hops[0]) == {"10.0.1.1:80": 0.5, "10.0.1.2:80": 0.5}
    assert (nodeport.ip, nodeport.verdict) == ("192.168.0.2", g.FORWARDED)
    (ext_hop,) = nodeport.hops
    assert [c.when for c in ext_hop.children] == ["source in 10.0.0.0/8", "source is a local address of this node",
                                                  "external clients"]
    local_hop = ext_hop.children[-1]
    assert (local_hop.kind, local_hop.name) == ("local", local)
    assert endpoint_shares(local_hop) == {"10.0.1.1:80": 1.0}
    assert ext_hop.masquerade == "source is a local address of this node"


def test_each_endpoint_hop_of_a_big_service_shows_its_own_element_of_the_numgen_map() -> None:
    # A Service of 5,000 endpoints: each endpoint hop showed the whole 351 KB numgen rule, and `svc -o json`
    # wrote 1.7 GB (3.6 GB of memory). Each endpoint's hop shows the element that leads to it, and how many more
    # the map has (the output grows with the endpoints, not their square). Rendered by the bench's generator with
    # kube-proxy's nftables renderer, 40 endpoints.
    import gen_cluster  # (bench/, on sys.path as for the other tests that use the bench's generators)

    cluster = gen_cluster.build_cluster(1, 40)
    docs = "\n---\n".join(json.dumps(doc) for doc in gen_cluster.api_documents(cluster).values())
    ruleset = parse_nft_transaction(gen_cluster.nft_text(cluster), "kube-proxy.nft")
    snapshot = replace(make_snapshot(docs, None, proxy_mode="nftables", node_ips=(cluster.this_node.ip,)),
                       nft=ruleset)
    target = gen_cluster.target_info(cluster)["service"]
    svc = snapshot.service(target["namespace"], target["name"])
    assert svc is not None
    svc_hop = nftables.resolve_port(snapshot, svc, svc.ports[0], 4, ruleset)[0][0].hops[0]
    numgen = ruleset.kube_proxy(4).chain(svc_hop.name).rules[-1]  # type: ignore[union-attr]
    assert numgen.full_text.startswith("numgen random mod 40 vmap {") and numgen.full_text.count(" : goto ") == 40
    assert len(svc_hop.children) == 40
    for k, hop in enumerate(svc_hop.children):
        assert hop.rules[0].text == f"numgen random mod 40 vmap {{ {k} : goto {hop.name}, ... 39 more }}", hop.rules
        assert (hop.rules[0].chain, hop.rules[0].index) == (svc_hop.name, numgen.index)
