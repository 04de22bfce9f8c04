"""Ground truth for the tracer: real packets in a network namespace go where `svctrace trace` says.

The overall fixture (kube-proxy's TestOverallIPTablesRules rules, as a real node prints them) is loaded
into a namespace standing in for the node 192.168.0.2, every endpoint gets a pod namespace with an echo
server, and for each case the tracer's outcomes are compared with what real connections do:
a DNAT outcome must be answered by exactly the predicted pods (all of them, for random splits), REJECT
must be refused, DROP must time out, and masquerade must show the node's address to the pod.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.model.snapshot import Snapshot
from svctrace.trace import Packet, trace_packet
from tests.integration.netns import NetnsNode, Probe, probe_tcp

pytestmark = pytest.mark.netns

OVERALL = Path(__file__).resolve().parents[1] / "fixtures" / "overall"
NODE_IP = "192.168.0.2"
CLIENT_IP = "192.168.0.10"
CLIENT_POD_IP = "10.0.9.9"  # inside the pod CIDR 10.0.0.0/8, so ClusterIP traffic from it is not masqueraded
PODS = {"10.180.0.1": "ep-1", "10.180.0.2": "ep-2", "10.180.0.3": "ep-3", "10.180.0.4": "ep-4", "10.180.0.5": "ep-5"}
TRIES = 24  # a 2-way split shows only one endpoint in 24 fresh connections with probability 2**-23


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return load_snapshot(OVERALL)


@pytest.fixture
def node(netns_factory: Callable[..., NetnsNode], snapshot: Snapshot) -> NetnsNode:
    node = netns_factory(backend="nft", node_ip=NODE_IP, gateway="192.168.0.1", client_ip=CLIENT_IP,
                         need=("nfacct",))
    node.load_rules((OVERALL / "node" / "iptables-save.txt").read_text())
    for ip, name in PODS.items():
        node.add_pod(name, ip, tcp_ports=(80,))
    node.add_pod("client-pod", CLIENT_POD_IP, tcp_ports=(80,))
    # The outside client reaches Service and load-balancer addresses through the node.
    node.client.iproute("route", "add", "default", "via", NODE_IP)
    return node


def predicted(snapshot: Snapshot, src: str, origin: str, dst: str, port: int) -> tuple[set[str], bool | None]:
    """What the tracer says: the set of outcomes ("DNAT:<pod>" / "REJECT" / "DROP") and whether it masquerades."""
    result = trace_packet(snapshot, Packet(src=src, dst=dst, dport=port, origin=origin))
    outcomes = [o for o in result.outcomes if o.probability > 0]
    assert outcomes and not any(o.uncertain for o in outcomes), result
    kinds = set()
    masq: set[bool] = set()
    for o in outcomes:
        if o.verdict == "DNAT":
            assert o.destination is not None
            kinds.add("DNAT:" + PODS[o.destination.rsplit(":", 1)[0]])
            masq.add(o.masquerade)
        else:
            kinds.add(o.verdict)
    assert len(masq) <= 1
    return kinds, (masq.pop() if masq else None)


def observed(probes: list[Probe]) -> tuple[set[str], set[str]]:
    """What real connections did: the same outcome words, and the source addresses the pods saw."""
    kinds = set()
    seen = set()
    for p in probes:
        if p.answer is not None:
            kinds.add("DNAT:" + p.answer)
            if p.seen_from:
                seen.add(p.seen_from)
        elif p.error == "refused":
            kinds.add("REJECT")
        elif p.error == "timeout":
            kinds.add("DROP")
        else:
            kinds.add(f"error:{p.error}")
    return kinds, seen


# ClusterIPs are reached from a pod, as in a cluster. (From the outside client the node would route the
# packet back out the interface it came in on, send an ICMP redirect first, and the per-host ICMP rate
# limit would then swallow REJECT's port-unreachable: the client sees a timeout, not a refusal.)
CASES = [
    # (what, from, dst, port)
    ("ClusterIP, one endpoint", "pod", "172.30.0.41", 80),
    ("ClusterIP, two endpoints split at random", "pod", "172.30.0.44", 80),
    ("ClusterIP without endpoints is rejected", "pod", "172.30.0.46", 80),
    ("ClusterIP with affinity and source ranges, from a pod", "pod", "172.30.0.45", 80),
    ("NodePort, eTP=Cluster, masqueraded", "client", NODE_IP, 3003),
    ("NodePort, eTP=Local without a local endpoint, external client dropped", "client", NODE_IP, 3001),
    ("externalIP, eTP=Local without a local endpoint, dropped", "client", "192.168.99.22", 80),
    ("LB IP outside loadBalancerSourceRanges is dropped", "client", "5.6.7.8", 80),
    ("externalIP, eTP=Cluster", "client", "192.168.99.33", 80),
    ("NodePort from the node itself short-circuits eTP=Local", "node", NODE_IP, 3001),
    ("ClusterIP from the node itself is masqueraded", "node", "172.30.0.44", 80),
]


@pytest.mark.parametrize(("what", "origin", "dst", "port"), CASES, ids=[c[0] for c in CASES])
def test_real_packets_go_where_the_tracer_says(node: NetnsNode, snapshot: Snapshot, what: str, origin: str,
                                               dst: str, port: int) -> None:
    src, ns, packet_origin = {
        "client": (CLIENT_IP, node.client, "external"),
        "pod": (CLIENT_POD_IP, node.pods["client-pod"], "pod"),
        "node": (NODE_IP, node, "node"),
    }[origin]
    want, masq = predicted(snapshot, src, packet_origin, dst, port)
    random_split = sum(k.startswith("DNAT:") for k in want) > 1
    verdict_only = not any(k.startswith("DNAT:") for k in want)
    probes = probe_tcp(ns, dst, port, count=TRIES if random_split else (1 if verdict_only else 3),
                       timeout=1.0 if verdict_only else 2.0)
    got, seen = observed(probes)
    assert got == want, f"{what}: tracer said {want}, real packets did {got} ({probes})"
    if masq is not None and packet_origin != "node":
        # masqueraded: the pod sees the node; not masqueraded: the pod sees the client itself
        assert seen == ({NODE_IP} if masq else {src}), f"{what}: pods saw {seen}, tracer masq={masq}"
