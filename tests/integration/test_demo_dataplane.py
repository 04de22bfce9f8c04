"""The demo's node rules are real: iptables-restore takes them on both backends and they carry traffic.

The demo's iptables-save.txt is loaded into a network namespace standing in for xianchaomaster1,
every pod the rules DNAT to gets a namespace with an echo server, and real connections must reach
exactly the pods the API objects say back each Service.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from svctrace.demo import demo_path
from tests.fixtures.demo_build.demo_api import api_objects
from tests.integration.netns import NetnsNode, Probe, probe_tcp, probe_udp, require_netns

DEMO = demo_path()
NODE_IP = "192.168.1.63"
TRIES = 32  # a 2-endpoint Service shows only one pod in 32 fresh connections with probability 2**-31

pytestmark = pytest.mark.netns

OBJECTS = api_objects(DEMO)
PODS_BY_IP = {o["status"]["podIP"]: o for o in OBJECTS if o["kind"] == "Pod" and not o["spec"].get("hostNetwork")}


def backing_pods(namespace: str, service: str) -> set[str]:
    """Pod names behind a Service according to its EndpointSlices."""
    return {
        ep["targetRef"]["name"]
        for o in OBJECTS
        if o["kind"] == "EndpointSlice" and o["metadata"]["namespace"] == namespace
        and o["metadata"]["labels"].get("kubernetes.io/service-name") == service
        for ep in o["endpoints"]
    }


def dnat_targets(rules: str) -> dict[str, dict[str, set[int]]]:
    """{pod IP: {"tcp"/"udp": ports}} for every DNAT in the dump that lands on a pod of the demo."""
    out: dict[str, dict[str, set[int]]] = {}
    for proto, ip, port in re.findall(r"-p (\w+) .*-j DNAT --to-destination ([\d.]+):(\d+)", rules):
        if ip in PODS_BY_IP:
            out.setdefault(ip, {}).setdefault(proto, set()).add(int(port))
    return out


def normalised(saved: str) -> dict[str, list[str]]:
    """iptables-save text per table, without comment lines, counters and spacing differences."""
    tables: dict[str, list[str]] = {}
    lines: list[str] = []
    for raw in saved.splitlines():
        line = " ".join(raw.split())
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            lines = tables.setdefault(line[1:], [])
        else:
            lines.append(re.sub(r" \[\d+:\d+\]$", "", line))
    return tables


@pytest.mark.parametrize("backend", ["nft", "legacy"])
@pytest.mark.parametrize("filename,family", [("iptables-save.txt", 4), ("ip6tables-save.txt", 6)])
def test_dump_loads_and_saves_back_unchanged(netns_factory: Callable[..., NetnsNode], backend: str,
                                             filename: str, family: int) -> None:
    text = (DEMO / "node" / filename).read_text()
    node = netns_factory(backend=backend, need=("nfacct",))
    node.load_rules(text, family=family)
    saved = node.save_rules(family=family)
    assert normalised(saved) == normalised(text)
    assert set(normalised(text)) == {"mangle", "filter", "nat"}


@pytest.fixture(scope="module", params=["nft", "legacy"])
def demo_node(request: pytest.FixtureRequest) -> Iterator[NetnsNode]:
    """xianchaomaster1 with the demo's rules loaded and every pod they DNAT to, plus the client busybox pod."""
    require_netns(request.param, need=("nfacct",))
    rules = (DEMO / "node" / "iptables-save.txt").read_text()
    with NetnsNode(backend=request.param, node_ip=NODE_IP) as node:
        node.load_rules(rules)
        for ip, ports in sorted(dnat_targets(rules).items()):
            node.add_pod(PODS_BY_IP[ip]["metadata"]["name"], ip, tcp_ports=sorted(ports.get("tcp", ())),
                         udp_ports=sorted(ports.get("udp", ())))
        client = next(p for p in OBJECTS if p["kind"] == "Pod" and p["metadata"]["name"].startswith("client-"))
        node.add_pod(client["metadata"]["name"], client["status"]["podIP"], tcp_ports=())
        yield node
    assert not node.leftovers()


def answered(probes: list[Probe]) -> set[str]:
    assert all(p.answer for p in probes), f"unanswered: {[p.error for p in probes if not p.answer]}"
    return {p.answer for p in probes if p.answer}


def test_every_pod_behind_a_service_in_the_rules_is_set_up(demo_node: NetnsNode) -> None:
    assert set(demo_node.pods) >= backing_pods("default", "my-nginx") | backing_pods("default", "my-nginx-nodeport")
    assert backing_pods("default", "my-nginx") == {"my-nginx-5b56ccd65f-7xzr4", "my-nginx-5b56ccd65f-95n7p"}


def test_nodeport_from_an_external_client_reaches_both_pods_masqueraded(demo_node: NetnsNode) -> None:
    probes = probe_tcp(demo_node.client, NODE_IP, 30380, count=TRIES)
    assert answered(probes) == backing_pods("default", "my-nginx-nodeport")
    # externalTrafficPolicy: Cluster, so the pods see the node, never the client.
    assert {p.seen_from for p in probes} == {NODE_IP}


@pytest.mark.parametrize("service,cluster_ip", [("my-nginx", "10.99.198.177"),
                                                ("my-nginx-nodeport", "10.104.251.190")])
def test_cluster_ip_from_the_node_reaches_exactly_the_services_pods(demo_node: NetnsNode, service: str,
                                                                     cluster_ip: str) -> None:
    assert answered(probe_tcp(demo_node, cluster_ip, 80, count=TRIES)) == backing_pods("default", service)


def test_cluster_ip_from_a_pod_keeps_the_pod_source(demo_node: NetnsNode) -> None:
    client = demo_node.pods["client-76b6556d97-xk7mg"]
    probes = probe_tcp(client, "10.99.198.177", 80, count=TRIES)
    assert answered(probes) == backing_pods("default", "my-nginx")
    # The source is inside --cluster-cidr, so KUBE-SVC does not mark it for masquerade.
    assert {p.seen_from for p in probes} == {client.ip}


def test_localhost_nodeport_is_counted_by_nfacct(demo_node: NetnsNode) -> None:
    def accepted() -> int:
        out = demo_node.run("nfacct", "get", "localhost_nps_accepted_pkts").stdout
        return int(re.search(r"pkts = (\d+)", out).group(1))  # type: ignore[union-attr]

    before = accepted()
    assert answered(probe_tcp(demo_node, "127.0.0.1", 30380, count=8)) <= backing_pods("default",
                                                                                         "my-nginx-nodeport")
    assert accepted() >= before + 8


def test_kube_dns_udp_and_a_single_endpoint_service(demo_node: NetnsNode) -> None:
    assert answered(probe_udp(demo_node, "10.96.0.10", 53, count=TRIES)) == backing_pods("kube-system", "kube-dns")
    assert answered(probe_tcp(demo_node, "10.103.136.27", 80, count=4)) == {"nginx-7cf7d6dbc8-lzm6j"}


def test_a_port_no_service_uses_is_not_forwarded(demo_node: NetnsNode) -> None:
    assert {p.error for p in probe_tcp(demo_node.client, NODE_IP, 30381, count=2)} == {"refused"}

