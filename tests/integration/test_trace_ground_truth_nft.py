"""Ground truth for the nftables tracer: real packets through kube-proxy's nftables ruleset go where it says.

kube-proxy's TestOverallNFTablesRules ruleset (six Services) is loaded with `nft -f` into a namespace standing
in for the node 192.168.0.2, read back live with `nft -j list ruleset`, every endpoint gets a pod with an echo
server, and each case compares the tracer's outcomes on the live JSON with real connections: DNAT to exactly
the predicted pods, REJECT refused, DROP timed out, masquerade seen by the pod as the node's address.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from svctrace.model.snapshot import HostAddress, NodeFacts, Snapshot
from svctrace.parsers.nft_json import parse_nft_json
from svctrace.trace import Packet, trace_packet
from tests.integration.netns import NetnsNode, probe_tcp
from tests.integration.test_trace_ground_truth import observed
from tests.shared_data import shared_dir

pytestmark = pytest.mark.netns

NODE_IP = "192.168.0.2"
CLIENT_IP = "192.168.0.10"
CLIENT_POD_IP = "10.0.9.9"
PODS = {"10.180.0.1": "ep-1", "10.180.0.2": "ep-2", "10.180.0.3": "ep-3", "10.180.0.4": "ep-4", "10.180.0.5": "ep-5"}
TRIES = 24
_ORDER = ("add table", "add set", "add map", "add chain", "add rule", "add element")


def loadable(ruleset: str) -> str:
    """The test's transaction text in an order `nft -f` accepts (declarations before use)."""
    lines = [ln for ln in ruleset.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return "\n".join(sorted(lines, key=lambda ln: next(i for i, p in enumerate(_ORDER) if ln.startswith(p)))) + "\n"


@pytest.fixture
def node_and_snapshot(netns_factory: Callable[..., NetnsNode]) -> tuple[NetnsNode, Snapshot]:
    data = json.loads((shared_dir() / "conformance" / "nftables" / "TestOverallNFTablesRules.json").read_text())
    node = netns_factory(node_ip=NODE_IP, gateway="192.168.0.1", client_ip=CLIENT_IP, need=("nft",))
    node.run("nft", "-f", "-", input=loadable(data["nft_ruleset"]))
    live = parse_nft_json(node.run("nft", "-j", "list", "ruleset").stdout, "live")
    for ip, name in PODS.items():
        node.add_pod(name, ip, tcp_ports=(80,))
    node.add_pod("client-pod", CLIENT_POD_IP, tcp_ports=(80,))
    node.client.iproute("route", "add", "default", "via", NODE_IP)
    snap = Snapshot(nft=live, node=NodeFacts(name="test-node", proxy_mode="nftables",
                                             addresses=(HostAddress("ens33", NODE_IP, 24, 4),)), source="live")
    return node, snap


CASES = [
    ("ClusterIP, one endpoint", "pod", "172.30.0.41", 80),
    ("ClusterIP, two endpoints split at random", "pod", "172.30.0.44", 80),
    ("ClusterIP without endpoints is rejected", "pod", "172.30.0.46", 80),
    ("ClusterIP on a wrong port is rejected (cluster-ips-check)", "pod", "172.30.0.41", 81),
    ("unallocated ClusterIP is dropped", "pod", "172.30.0.99", 80),
    ("ClusterIP with affinity", "pod", "172.30.0.45", 80),
    ("NodePort, eTP=Cluster, masqueraded", "client", NODE_IP, 3003),
    ("NodePort, eTP=Local without a local endpoint, dropped", "client", NODE_IP, 3001),
    ("LB IP outside loadBalancerSourceRanges is dropped", "client", "5.6.7.8", 80),
    ("externalIP, eTP=Cluster, masqueraded", "client", "192.168.99.33", 80),
    ("ClusterIP from the node itself", "node", "172.30.0.44", 80),
]


def test_the_ruleset_loads_and_reads_back(node_and_snapshot: tuple[NetnsNode, Snapshot]) -> None:
    _, snap = node_and_snapshot
    assert snap.nft is not None and snap.nft.kube_proxy(4) is not None
    assert all(r.stmts for c in snap.nft.kube_proxy(4).chains.values() for r in c.rules)  # type: ignore[union-attr]


@pytest.mark.parametrize(("what", "origin", "dst", "port"), CASES, ids=[c[0] for c in CASES])
def test_real_packets_go_where_the_nftables_tracer_says(node_and_snapshot: tuple[NetnsNode, Snapshot], what: str,
                                                        origin: str, dst: str, port: int) -> None:
    node, snap = node_and_snapshot
    src, ns, packet_origin = {
        "client": (CLIENT_IP, node.client, "external"),
        "pod": (CLIENT_POD_IP, node.pods["client-pod"], "pod"),
        "node": (NODE_IP, node, "node"),
    }[origin]
    result = trace_packet(snap, Packet(src, dst, port, origin=packet_origin))
    assert result.mode == "nftables"
    outcomes = [o for o in result.outcomes if o.probability > 0]
    assert outcomes and not any(o.uncertain for o in outcomes), result
    want = {("DNAT:" + PODS[o.destination.rsplit(":", 1)[0]]) if o.destination else o.verdict for o in outcomes}
    masq = {o.masquerade for o in outcomes if o.verdict == "DNAT"}
    random_split = sum(k.startswith("DNAT:") for k in want) > 1
    verdict_only = not any(k.startswith("DNAT:") for k in want)
    probes = probe_tcp(ns, dst, port, count=TRIES if random_split else (1 if verdict_only else 3),
                       timeout=1.0 if verdict_only else 2.0)
    got, seen = observed(probes)
    assert got == want, f"{what}: tracer said {want}, real packets did {got} ({probes})"
    if len(masq) == 1 and packet_origin != "node":
        assert seen == ({NODE_IP} if masq.pop() else {src}), f"{what}: pods saw {seen}"
