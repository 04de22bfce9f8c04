"""The iptables-mode resolver against kube-proxy's own expected dumps and hand-made edge cases."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.errors import NotFoundError
from svctrace.model import graph as g
from svctrace.model.snapshot import Snapshot
from svctrace.resolver import all_stale_chains, resolve
from tests.graphs import endpoint_shares, frontend
from tests.shared_data import shared_dir
from tests.snapshots import make_snapshot

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def overall() -> Snapshot:
    """kube-proxy's TestOverallIPTablesRules dump (as iptables-save prints it) with matching API objects."""
    return load_snapshot(FIXTURES / "overall")


def test_cluster_ip_single_endpoint(overall: Snapshot) -> None:
    graph = resolve(overall, "ns1", "svc1")
    assert graph.mode == "iptables" and graph.node == "test-node"
    fe = frontend(graph.frontends, "ClusterIP")
    assert (fe.ip, fe.port, fe.protocol, fe.verdict) == ("172.30.0.41", 80, "TCP", g.FORWARDED)
    (svc_hop,) = fe.hops
    assert svc_hop.kind == "service" and svc_hop.name == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert svc_hop.masquerade == "source not in 10.0.0.0/8"
    assert svc_hop.rules[0].chain == "KUBE-SERVICES" and "172.30.0.41/32" in svc_hop.rules[0].text
    (sep,) = svc_hop.children
    assert sep.name == "KUBE-SEP-SXIVWICOYRO3J4NJ" and sep.verdict == "DNAT" and sep.share == 1.0
    assert sep.endpoint is not None and sep.endpoint.address == "10.180.0.1:80"
    assert sep.endpoint.in_api and sep.endpoint.in_dataplane and sep.endpoint.ready is True
    assert sep.masquerade is not None and sep.masquerade.startswith("hairpin")


def test_two_endpoints_share_evenly_and_external_ip_masquerades(overall: Snapshot) -> None:
    graph = resolve(overall, "ns4", "svc4")
    shares = endpoint_shares(frontend(graph.frontends, "ClusterIP").hops[0])
    assert shares == {"10.180.0.4:80": 0.5, "10.180.0.5:80": 0.5}
    ext = frontend(graph.frontends, "ExternalIP", "192.168.99.33")
    assert ext.verdict == g.FORWARDED
    (ext_hop,) = ext.hops
    assert ext_hop.kind == "external" and ext_hop.masquerade == "always"
    assert [c.name for c in ext_hop.children] == ["KUBE-SVC-4SW47YFZTEDKD3PK"]
    local = {e.address: e.local for e in graph.endpoints}
    assert local == {"10.180.0.4:80": False, "10.180.0.5:80": True}


def test_external_traffic_policy_local_without_local_endpoints(overall: Snapshot) -> None:
    graph = resolve(overall, "ns2", "svc2")
    assert frontend(graph.frontends, "ClusterIP").verdict == g.FORWARDED
    for type_, ip in (("ExternalIP", "192.168.99.22"), ("LoadBalancer", "1.2.3.4"), ("NodePort", "192.168.0.2")):
        fe = frontend(graph.frontends, type_, ip)
        assert fe.verdict == g.PARTIAL, type_
        (ext,) = fe.hops
        assert ext.name == "KUBE-EXT-GNZBNJ2PO5MGZ6GT"
        assert ext.masquerade == "source is a local address of this node"
        whens = [c.when for c in ext.children]
        assert whens == ["source in 10.0.0.0/8", "source is a local address of this node", "external clients"]
        drop = ext.children[-1]
        assert drop.verdict == "DROP" and drop.rules[0].chain == "KUBE-EXTERNAL-SERVICES"
        assert "has no local endpoints" in drop.rules[0].text
    nodeport = frontend(graph.frontends, "NodePort")
    assert nodeport.port == 3001
    assert any("127.0.0.1:3001" in n for n in nodeport.notes)


def test_source_ranges_and_affinity(overall: Snapshot) -> None:
    graph = resolve(overall, "ns5", "svc5")
    lb = frontend(graph.frontends, "LoadBalancer", "5.6.7.8")
    assert lb.verdict == g.PARTIAL
    (fw,) = lb.hops
    assert fw.kind == "firewall" and fw.name == "KUBE-FW-NUKIZ6OKUXPJNT4C"
    allowed, dropped = fw.children
    assert allowed.when == "source in 203.0.113.0/25" and allowed.name == "KUBE-EXT-NUKIZ6OKUXPJNT4C"
    assert dropped.verdict == "DROP" and dropped.rules[0].chain == "KUBE-PROXY-FIREWALL"
    svc_hop = frontend(graph.frontends, "ClusterIP").hops[0]
    assert svc_hop.affinity == "ClientIP, 10800s"
    (sep,) = svc_hop.children
    assert sep.affinity == "ClientIP, 10800s" and sep.share == 1.0
    # the NodePort bypasses the source ranges, as kube-proxy documents
    assert frontend(graph.frontends, "NodePort").verdict == g.FORWARDED


def test_no_endpoints_is_rejected_in_filter(overall: Snapshot) -> None:
    graph = resolve(overall, "ns6", "svc6")
    fe = frontend(graph.frontends, "ClusterIP")
    assert fe.verdict == g.REJECTED
    (verdict,) = fe.hops
    assert verdict.kind == "verdict" and verdict.verdict == "REJECT"
    assert verdict.rules[0].table == "filter" and "has no endpoints" in verdict.rules[0].text
    assert "no usable endpoints" in verdict.explain


def test_missing_only_names_inputs_this_mode_uses(overall: Snapshot) -> None:
    graph = resolve(overall, "ns1", "svc1")
    assert graph.missing == ()  # IPv4-only Service in iptables mode: ipvs/nft/ip6tables files are irrelevant


def test_chains_are_found_by_hash_without_comments(overall: Snapshot) -> None:
    text = (FIXTURES / "overall" / "node" / "iptables-save.txt").read_text()
    bare = re.sub(r' -m comment --comment ("[^"]*"|\S+)', "", text)
    assert "--comment" not in bare
    api = (FIXTURES / "overall" / "api" / "api.yaml").read_text()
    snap = make_snapshot(api, bare, node="test-node")
    for ns, name in (("ns1", "svc1"), ("ns4", "svc4"), ("ns5", "svc5")):
        with_comments = resolve(load_snapshot(FIXTURES / "overall"), ns, name)
        without = resolve(snap, ns, name)
        assert [(f.type, f.ip, f.verdict) for f in without.frontends] == \
               [(f.type, f.ip, f.verdict) for f in with_comments.frontends]
        assert [endpoint_shares(h) for f in without.frontends for h in f.hops] == \
               [endpoint_shares(h) for f in with_comments.frontends for h in f.hops]


def test_stale_chains_are_reported(overall: Snapshot) -> None:
    text = (FIXTURES / "overall" / "node" / "iptables-save.txt").read_text()
    stale = text.replace(":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]\n",
                         ":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]\n:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n")
    stale = stale.replace("-A KUBE-SVC-XPGD46QRK7WJZT7O ! -s",
                          '-A KUBE-SVC-AAAAAAAAAAAAAAAA -m comment --comment "ns1/svc1:old -> 10.180.0.9:80" '
                          "-j KUBE-SEP-SXIVWICOYRO3J4NJ\n-A KUBE-SVC-XPGD46QRK7WJZT7O ! -s", 1)
    api = (FIXTURES / "overall" / "api" / "api.yaml").read_text()
    snap = make_snapshot(api, stale, node="test-node")
    graph = resolve(snap, "ns1", "svc1")
    assert [s.chain for s in graph.stale_chains] == ["KUBE-SVC-AAAAAAAAAAAAAAAA"]
    assert [s.chain for s in all_stale_chains(snap)] == ["KUBE-SVC-AAAAAAAAAAAAAAAA"]
    assert all_stale_chains(load_snapshot(FIXTURES / "overall")) == ()


SVC_TEMPLATE = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {{namespace: ns1, name: svc1}}
  spec:
    type: {type}
    clusterIP: 172.30.1.1
    clusterIPs: [172.30.1.1]
    ports: [{{port: 80, protocol: TCP, targetPort: 80}}]
    selector: {{app: x}}
    internalTrafficPolicy: {itp}
    sessionAffinity: {affinity}
  status:
    loadBalancer:
      ingress: [{{ip: 1.2.3.4}}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    namespace: ns1
    name: svc1-x
    labels: {{kubernetes.io/service-name: svc1}}
  addressType: IPv4
  ports: [{{port: 80, protocol: TCP, name: ""}}]
  endpoints:
{endpoints}
"""


def _ep(ip: str, node: str, ready: bool, serving: bool, terminating: bool) -> str:
    return (f"  - addresses: [{ip}]\n    nodeName: {node}\n"
            f"    conditions: {{ready: {str(ready).lower()}, serving: {str(serving).lower()}, "
            f"terminating: {str(terminating).lower()}}}\n")


def _older(name: str) -> str:
    data = json.loads((shared_dir() / "conformance" / "iptables-older" / f"{name}.json").read_text())
    text: str = data["iptables_save"]
    return text


def test_internal_traffic_policy_local_uses_the_local_chain() -> None:
    api = SVC_TEMPLATE.format(type="ClusterIP", itp="Local", affinity="None", endpoints="".join([
        _ep("10.0.1.1", "test-hostname", True, True, False), _ep("10.0.1.2", "host1", True, True, False),
        _ep("10.0.1.3", "host2", True, True, False)]))
    dump = _older("TestInternalTrafficPolicyE2E__internalTrafficPolicy_is_local_and_there_are_local_endpoints")
    graph = resolve(make_snapshot(api, dump, node="test-hostname"), "ns1", "svc1")
    fe = frontend(graph.frontends, "ClusterIP")
    (svl,) = fe.hops
    assert svl.kind == "local" and svl.name == "KUBE-SVL-AQI2S6QIMU7PVVRP"
    assert endpoint_shares(svl) == {"10.0.1.1:80": 1.0}
    # the other nodes' endpoints are listed, but not programmed on this node for ClusterIP traffic
    assert {e.address for e in graph.endpoints if not e.in_dataplane} == {"10.0.1.2:80", "10.0.1.3:80"}


def test_only_terminating_endpoints_with_affinity() -> None:
    api = SVC_TEMPLATE.format(type="LoadBalancer", itp="Cluster", affinity="ClientIP", endpoints="".join([
        _ep("10.0.1.2", "test-hostname", False, True, True), _ep("10.0.1.3", "test-hostname", False, True, True),
        _ep("10.0.1.4", "another-host", False, False, True), _ep("10.0.1.5", "another-host", False, True, True)]))
    dump = _older("TestEndpointSliceWithTerminatingEndpointsTrafficPolicyCluster__"
                  "feature_gate_ProxyTerminatingEndpoints_enabled__only_terminating_endpoints_exist")
    graph = resolve(make_snapshot(api, dump, node="test-hostname"), "ns1", "svc1")
    svc_hop = frontend(graph.frontends, "ClusterIP").hops[0]
    assert endpoint_shares(svc_hop) == {"10.0.1.2:80": 0.3333, "10.0.1.3:80": 0.3333, "10.0.1.5:80": 0.3333}
    assert [c.probability for c in svc_hop.children] == ["0.3333333333", "0.5000000000", None]
    assert svc_hop.affinity == "ClientIP, 10800s"
    left_out = [e for e in graph.endpoints if not e.in_dataplane]
    assert [(e.address, e.serving, e.terminating) for e in left_out] == [("10.0.1.4:80", False, True)]
    assert frontend(graph.frontends, "LoadBalancer").verdict == g.FORWARDED


def test_four_endpoints_get_a_quarter_each() -> None:
    seps = {ip: f"KUBE-SEP-{chr(65 + i) * 16}" for i, ip in enumerate(["10.0.0.1", "10.0.0.2", "10.0.0.3",
                                                                     "10.0.0.4"])}
    probs = ["0.25000000000", "0.33333333349", "0.50000000000", None]
    lines = [f"-A KUBE-SVC-AQI2S6QIMU7PVVRP{' -m statistic --mode random --probability ' + p if p else ''} "
             f"-j {sep}" for (ip, sep), p in zip(seps.items(), probs, strict=True)]
    lines += [f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {ip}:80" for ip, sep in seps.items()]
    dump = ("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-AQI2S6QIMU7PVVRP - [0:0]\n"
            + "".join(f":{sep} - [0:0]\n" for sep in seps.values())
            + "-A KUBE-SERVICES -d 172.30.1.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-AQI2S6QIMU7PVVRP\n"
            + "\n".join(lines) + "\nCOMMIT\n")
    api = SVC_TEMPLATE.format(type="ClusterIP", itp="Cluster", affinity="None", endpoints="".join(
        _ep(ip, "n", True, True, False) for ip in seps))
    graph = resolve(make_snapshot(api, dump), "ns1", "svc1")
    shares = endpoint_shares(frontend(graph.frontends, "ClusterIP").hops[0])
    assert shares == {f"10.0.0.{i}:80": 0.25 for i in range(1, 5)}
    # the chain names here are made up, so each endpoint carries a note saying what kube-proxy would call it
    sep = frontend(graph.frontends, "ClusterIP").hops[0].children[0]
    assert any("kube-proxy would call it KUBE-SEP-" in n for n in sep.notes)


def test_rule_to_an_endpoint_the_api_does_not_list_is_stale() -> None:
    dump = ("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-AQI2S6QIMU7PVVRP - [0:0]\n:KUBE-SEP-A - [0:0]\n"
            "-A KUBE-SERVICES -d 172.30.1.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-AQI2S6QIMU7PVVRP\n"
            "-A KUBE-SVC-AQI2S6QIMU7PVVRP -j KUBE-SEP-A\n"
            "-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.9.9.9:80\nCOMMIT\n")
    api = SVC_TEMPLATE.format(type="ClusterIP", itp="Cluster", affinity="None",
                              endpoints=_ep("10.0.0.1", "n", True, True, False))
    graph = resolve(make_snapshot(api, dump), "ns1", "svc1")
    by_addr = {e.address: e for e in graph.endpoints}
    assert by_addr["10.9.9.9:80"].in_api is False and by_addr["10.9.9.9:80"].in_dataplane is True
    assert by_addr["10.0.0.1:80"].in_api is True and by_addr["10.0.0.1:80"].in_dataplane is False


def test_service_without_rules_is_not_programmed() -> None:
    api = SVC_TEMPLATE.format(type="ClusterIP", itp="Cluster", affinity="None",
                              endpoints=_ep("10.0.0.1", "n", True, True, False))
    graph = resolve(make_snapshot(api, "*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n"), "ns1", "svc1")
    fe = frontend(graph.frontends, "ClusterIP")
    assert fe.verdict == g.NOT_PROGRAMMED and fe.hops == ()
    assert any("has not programmed it" in n for n in fe.notes)


def test_without_a_dataplane_the_expected_endpoints_are_shown() -> None:
    api = SVC_TEMPLATE.format(type="ClusterIP", itp="Cluster", affinity="None", endpoints="".join([
        _ep("10.0.0.1", "n", True, True, False), _ep("10.0.0.2", "n", False, False, False)]))
    graph = resolve(make_snapshot(api, None, proxy_mode=None), "ns1", "svc1")
    assert graph.mode == "none"
    fe = frontend(graph.frontends, "ClusterIP")
    assert fe.verdict == g.UNKNOWN
    assert [(h.name, h.share, h.verdict) for h in fe.hops] == [("10.0.0.1:80", 1.0, None)]


def test_dual_stack_follows_each_family_in_its_own_dump() -> None:
    api = """
    apiVersion: v1
    kind: Service
    metadata: {namespace: ns1, name: web}
    spec:
      clusterIPs: [172.30.0.10, "fd00:10::10"]
      ipFamilies: [IPv4, IPv6]
      ports: [{name: http, port: 80, protocol: TCP}]
      selector: {app: web}
    ---
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {namespace: ns1, name: web-v4, labels: {kubernetes.io/service-name: web}}
    addressType: IPv4
    ports: [{name: http, port: 8080, protocol: TCP}]
    endpoints: [{addresses: [10.0.0.5], conditions: {ready: true}}]
    ---
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {namespace: ns1, name: web-v6, labels: {kubernetes.io/service-name: web}}
    addressType: IPv6
    ports: [{name: http, port: 8080, protocol: TCP}]
    endpoints: [{addresses: ["fd00::5"], conditions: {ready: true}}]
    """
    from svctrace.kubeproxy import naming

    spn = naming.service_port_name("ns1", "web", "http")
    svc4, sep4 = naming.ipt_service_chain(spn, "tcp"), naming.ipt_endpoint_chain(spn, "tcp", "10.0.0.5", 8080)
    sep6 = naming.ipt_endpoint_chain(spn, "tcp", "fd00::5", 8080)
    v4 = (f"*nat\n:KUBE-SERVICES - [0:0]\n:{svc4} - [0:0]\n:{sep4} - [0:0]\n"
          f"-A KUBE-SERVICES -d 172.30.0.10/32 -p tcp -m tcp --dport 80 -j {svc4}\n-A {svc4} -j {sep4}\n"
          f"-A {sep4} -p tcp -m tcp -j DNAT --to-destination 10.0.0.5:8080\nCOMMIT\n")
    v6 = (f"*nat\n:KUBE-SERVICES - [0:0]\n:{svc4} - [0:0]\n:{sep6} - [0:0]\n"
          f"-A KUBE-SERVICES -d fd00:10::10/128 -p tcp -m tcp --dport 80 -j {svc4}\n-A {svc4} -j {sep6}\n"
          f"-A {sep6} -p tcp -m tcp -j DNAT --to-destination [fd00::5]:8080\nCOMMIT\n")
    graph = resolve(make_snapshot(api, v4, ip6tables=v6), "ns1", "web")
    assert [(f.ip, f.verdict) for f in graph.frontends] == [("172.30.0.10", g.FORWARDED),
                                                            ("fd00:10::10", g.FORWARDED)]
    assert endpoint_shares(graph.frontends[1].hops[0]) == {"[fd00::5]:8080": 1.0}
    assert graph.frontends[1].hops[0].children[0].notes == ()  # the IPv6 SEP name hashes from [ip]:port
    assert [r.type for r in graph.dns.records] == ["A", "AAAA", "SRV"]


def test_not_found_suggests_close_names_and_other_namespaces(overall: Snapshot) -> None:
    with pytest.raises(NotFoundError) as err:
        resolve(overall, "ns1", "svc2")
    assert 'service "svc2" not found in namespace "ns1"' in err.value.message
    assert err.value.hint is not None and "svc1" in err.value.hint and "-n ns2" in err.value.hint


def test_unknown_port_lists_the_ports(overall: Snapshot) -> None:
    with pytest.raises(NotFoundError) as err:
        resolve(overall, "ns1", "svc1", port="8443")
    assert err.value.hint == "its ports are: p80:80/TCP"
    assert [f.port for f in resolve(overall, "ns3", "svc3", port="3003").frontends] == [80, 3003]


def test_a_malformed_dnat_destination_is_a_note_not_a_crash() -> None:
    dump = ("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-AQI2S6QIMU7PVVRP - [0:0]\n:KUBE-SEP-A - [0:0]\n"
            "-A KUBE-SERVICES -d 172.30.1.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-AQI2S6QIMU7PVVRP\n"
            "-A KUBE-SVC-AQI2S6QIMU7PVVRP -j KUBE-SEP-A\n"
            "-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination not-an-address\nCOMMIT\n")
    api = SVC_TEMPLATE.format(type="ClusterIP", itp="Cluster", affinity="None",
                              endpoints=_ep("10.0.0.1", "n", True, True, False))
    graph = resolve(make_snapshot(api, dump), "ns1", "svc1")
    (sep,) = frontend(graph.frontends, "ClusterIP").hops[0].children
    assert sep.endpoint is None and any("cannot read the DNAT destination 'not-an-address'" in n for n in sep.notes)
