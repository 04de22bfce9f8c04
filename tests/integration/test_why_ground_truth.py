"""Ground truth for why-unreachable's dataplane and node checks: break a node for real, show real traffic fails,
capture the node the way `svctrace capture` does, and check the diagnosis names that cause first.

The node is kube-proxy's TestOverallIPTablesRules ruleset (tests/fixtures/overall) in a network namespace,
with pods for its endpoints (see test_trace_ground_truth.py for the layout and why ClusterIPs are probed
from a pod namespace).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from svctrace.collectors.kube import ApiCollection, KubeTarget
from svctrace.collectors.live import LiveCollection, assemble
from svctrace.collectors.node import collect_node
from svctrace.diagnosis.diagnose import Diagnosis, diagnose
from svctrace.diagnosis.findings import ERROR, WARNING
from svctrace.diagnosis.registry import Client
from svctrace.kubeproxy import naming
from svctrace.model.snapshot import Snapshot
from svctrace.parsers.k8s import decode_documents, merge_objects, parse_objects
from tests.integration.netns import NetnsNode, probe_tcp

pytestmark = pytest.mark.netns

OVERALL = Path(__file__).resolve().parents[1] / "fixtures" / "overall"
RULES = (OVERALL / "node" / "iptables-save.txt").read_text()
NODE_IP = "192.168.0.2"
CLIENT_IP = "192.168.0.10"
CLIENT_POD_IP = "10.0.9.9"
PODS = {"10.180.0.1": "ep-1", "10.180.0.2": "ep-2", "10.180.0.3": "ep-3", "10.180.0.4": "ep-4", "10.180.0.5": "ep-5"}
NODES_LAST = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports"

# The UDP Service added for the conntrack case: ns7/svc7 (ClusterIP 172.30.0.47, port dns 53/UDP).
UDP_VIP, OLD_EP, NEW_EP = "172.30.0.47", "10.180.0.7", "10.180.0.8"
SPN7 = naming.service_port_name("ns7", "svc7", "dns")
SVC7 = naming.ipt_service_chain(SPN7, "UDP")


def pods_yaml(pods: dict[str, str]) -> str:
    """Running, ready Pods for the endpoint addresses (the API half of the node's state)."""
    items = "".join(f"""
- apiVersion: v1
  kind: Pod
  metadata: {{namespace: default, name: {name}}}
  spec: {{nodeName: test-node, containers: [{{name: echo, ports: [{{containerPort: 80}}]}}]}}
  status:
    phase: Running
    podIP: {ip}
    podIPs: [{{ip: {ip}}}]
    conditions: [{{type: Ready, status: "True"}}]
    containerStatuses: [{{name: echo, ready: true, restartCount: 0, state: {{running: {{}}}}}}]
""" for ip, name in pods.items())
    return "apiVersion: v1\nkind: List\nitems:" + items


SVC7_YAML = f"""
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {{namespace: ns7, name: svc7}}
  spec:
    type: ClusterIP
    clusterIP: {UDP_VIP}
    clusterIPs: [{UDP_VIP}]
    ports: [{{name: dns, port: 53, protocol: UDP, targetPort: 53}}]
    selector: {{app: svc7}}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    namespace: ns7
    name: svc7-abcde
    labels: {{kubernetes.io/service-name: svc7}}
  addressType: IPv4
  ports: [{{name: dns, port: 53, protocol: UDP}}]
  endpoints:
  - addresses: [{NEW_EP}]
    conditions: {{ready: true, serving: true, terminating: false}}
    nodeName: test-node
"""


def capture(node: NetnsNode, extra_api: str = "", pods: dict[str, str] | None = None) -> Snapshot:
    """The node's state as `svctrace capture` reads it (collect_node in the namespace) plus the API objects."""
    parts = [parse_objects(decode_documents((OVERALL / "api" / "api.yaml").read_text(), "api.yaml", "yaml"),
                           "api.yaml"),
             parse_objects(decode_documents(pods_yaml(pods if pods is not None else PODS), "pods", "yaml"), "pods")]
    if extra_api:
        parts.append(parse_objects(decode_documents(extra_api, "extra", "yaml"), "extra"))
    api = ApiCollection(objects=merge_objects(parts), raw={},
                        target=KubeTarget(server="netns", namespace="default", context=None, origin="test"))
    nc = collect_node(netns=node.name, node_name="test-node", proxy_mode_url="")
    snap = assemble(api, nc, explicit="test-node", source=f"netns {node.name}")
    # what capture writes carries the facts the checks need
    meta = LiveCollection(snap, api, nc).meta()
    assert "iptablesBackend" in meta
    return snap


def top(diag: Diagnosis) -> str:
    assert diag.findings, diag
    return diag.findings[0].code


@pytest.fixture
def make_node(netns_factory: Callable[..., NetnsNode]) -> Callable[..., NetnsNode]:
    def make(rules: str = RULES, pods: dict[str, str] | None = None, udp: tuple[int, ...] = ()) -> NetnsNode:
        node = netns_factory(backend="nft", node_ip=NODE_IP, gateway="192.168.0.1", client_ip=CLIENT_IP,
                             need=("nfacct", "conntrack"))
        node.load_rules(rules)
        for ip, name in (pods if pods is not None else PODS).items():
            node.add_pod(name, ip, tcp_ports=(80,), udp_ports=udp)
        node.add_pod("client-pod", CLIENT_POD_IP, tcp_ports=(80,))
        node.client.iproute("route", "add", "default", "via", NODE_IP)
        return node
    return make


def test_healthy_node_traffic_flows_and_nothing_is_flagged(make_node: Callable[..., NetnsNode]) -> None:
    node = make_node()
    assert probe_tcp(node.pods["client-pod"], "172.30.0.41", 80)[0].answer == "ep-1"
    assert probe_tcp(node.client, NODE_IP, 3003)[0].answer == "ep-3"
    assert probe_tcp(node, "127.0.0.1", 3003)[0].answer == "ep-3"
    snap = capture(node)
    assert snap.node.sysctls["net.ipv4.ip_forward"] == "1" and snap.node.iptables_backend == "nf_tables"
    for target, client in (("ns1/svc1", Client(src=CLIENT_POD_IP, origin="pod")),
                           (f"{NODE_IP}:3003", Client(src=CLIENT_IP, origin="external")),
                           ("127.0.0.1:3003", Client(src="127.0.0.1", origin="node"))):
        bad = [f for f in diagnose(snap, target, client=client).findings if f.severity in (ERROR, WARNING)]
        assert bad == [], (target, bad)


def test_ip_forward_off_kills_nodeport_traffic(make_node: Callable[..., NetnsNode]) -> None:
    node = make_node()
    assert probe_tcp(node.client, NODE_IP, 3003)[0].answer == "ep-3"
    node.sysctl("net.ipv4.ip_forward", 0)
    assert probe_tcp(node.client, NODE_IP, 3003)[0].error == "timeout"
    snap = capture(node)
    diag = diagnose(snap, f"{NODE_IP}:3003", client=Client(src=CLIENT_IP, origin="external"))
    assert top(diag) == "ip-forward-disabled" and diag.verdict == "unreachable"


def test_route_localnet_off_breaks_localhost_nodeport(make_node: Callable[..., NetnsNode]) -> None:
    node = make_node()
    assert probe_tcp(node, "127.0.0.1", 3003)[0].answer == "ep-3"
    links = node.run("ls", "/proc/sys/net/ipv4/conf").stdout.split()
    for dev in links:  # the kernel ORs "all" with the device's own setting
        node.sysctl(f"net.ipv4.conf.{dev}.route_localnet", 0)
    assert probe_tcp(node, "127.0.0.1", 3003)[0].answer is None
    assert probe_tcp(node, NODE_IP, 3003)[0].answer == "ep-3"  # the node's own address still works
    diag = diagnose(capture(node), "127.0.0.1:3003", client=Client(src="127.0.0.1", origin="node"))
    assert top(diag) == "route-localnet-disabled" and diag.findings[0].severity == ERROR


def test_client_outside_source_ranges_times_out(make_node: Callable[..., NetnsNode]) -> None:
    node = make_node()
    assert probe_tcp(node.client, "5.6.7.8", 80)[0].error == "timeout"
    diag = diagnose(capture(node), "5.6.7.8:80", client=Client(src=CLIENT_IP, origin="external"))
    assert top(diag) == "source-range-blocks-client"
    assert "trace 192.168.0.10 -> 5.6.7.8:80/TCP: DROP" in diag.findings[0].evidence


def test_flushed_service_does_not_reach_a_pod(make_node: Callable[..., NetnsNode]) -> None:
    rules = "".join(line for line in RULES.splitlines(keepends=True)
                    if not line.startswith("-A KUBE-SERVICES -d 172.30.0.41/32"))
    node = make_node(rules)
    assert probe_tcp(node.pods["client-pod"], "172.30.0.41", 80)[0].answer is None
    assert probe_tcp(node.pods["client-pod"], "172.30.0.43", 80)[0].answer == "ep-3"  # others still work
    diag = diagnose(capture(node), "ns1/svc1", client=Client(src=CLIENT_POD_IP, origin="pod"))
    assert top(diag) == "dataplane-missing-service"


def test_rules_to_a_gone_pod_time_out(make_node: Callable[..., NetnsNode]) -> None:
    node = make_node(RULES.replace("10.180.0.1", "10.180.0.9"))  # the rules still send to gone pod B
    assert [p.error for p in probe_tcp(node.pods["client-pod"], "172.30.0.41", 80, count=3)] == ["timeout"] * 3
    diag = diagnose(capture(node), "ns1/svc1", client=Client(src=CLIENT_POD_IP, origin="pod"))
    assert top(diag) == "dataplane-stale-endpoints" and diag.findings[0].severity == ERROR
    assert {"10.180.0.9:80", "10.180.0.1:80"} == set(diag.findings[0].hops)


def test_backend_split_rejects_behind_the_rules_back(make_node: Callable[..., NetnsNode]) -> None:
    node = make_node()
    assert "ep-1" in {p.answer for p in probe_tcp(node.pods["client-pod"], "172.30.0.41", 80, count=3)}
    # kube-proxy once ran on iptables-legacy and left its old rules for svc1 there (DNAT to a pod long gone);
    # the kernel runs both backends' nat hooks, and the legacy table, registered last, now wins the DNAT
    node.run("iptables-legacy-restore", input="""*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SEP-OLDOLDOLDOLDOLDO - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 172.30.0.41/32 -p tcp -m tcp --dport 80 -j KUBE-SEP-OLDOLDOLDOLDOLDO
-A KUBE-SEP-OLDOLDOLDOLDOLDO -p tcp -m comment --comment "ns1/svc1:p80" -m tcp -j DNAT --to-destination 10.180.0.9:80
COMMIT
""")
    got = {p.answer or p.error for p in probe_tcp(node.pods["client-pod"], "172.30.0.41", 80, count=3)}
    assert "ep-1" not in got, got
    snap = capture(node)
    assert snap.node.iptables_backend == "both"
    diag = diagnose(snap, "ns1/svc1", client=Client(src=CLIENT_POD_IP, origin="pod"))
    assert top(diag) == "iptables-backend-split"


UDP_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[3])))
s.settimeout(1.0)
s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recv(256).decode().split()[0])
except socket.timeout:
    print("timeout")
"""


def udp_from(node: NetnsNode, sport: int) -> str:
    """One datagram from the client pod from a FIXED source port (a long-lived UDP client), and who answered."""
    pod = node.pods["client-pod"]
    return pod.run(sys.executable, "-c", UDP_CLIENT, UDP_VIP, "53", str(sport)).stdout.strip()


def test_stale_udp_conntrack_keeps_sending_to_the_dead_pod(make_node: Callable[..., NetnsNode]) -> None:
    old_sep = naming.ipt_endpoint_chain(SPN7, "UDP", OLD_EP, 53)
    new_sep = naming.ipt_endpoint_chain(SPN7, "UDP", NEW_EP, 53)
    udp_rules = (f":{SVC7} - [0:0]\n:{old_sep} - [0:0]\n"
                 f"-A KUBE-SERVICES -d {UDP_VIP}/32 -p udp -m comment --comment \"ns7/svc7:dns cluster IP\" "
                 f"-m udp --dport 53 -j {SVC7}\n"
                 f"-A {SVC7} -m comment --comment \"ns7/svc7:dns -> {OLD_EP}:53\" -j {old_sep}\n"
                 f"-A {old_sep} -p udp -m comment --comment \"ns7/svc7:dns\" -m udp -j DNAT --to-destination "
                 f"{OLD_EP}:53\n")
    rules = RULES.replace(NODES_LAST, udp_rules + NODES_LAST, 1)
    pods = {**PODS, OLD_EP: "old-dns", NEW_EP: "new-dns"}
    node = make_node(rules, pods, udp=(53,))
    assert udp_from(node, 40053) == "old-dns"
    # kube-proxy moves the Service to the new pod; the old pod is deleted; nobody clears conntrack
    node.iptables("-t", "nat", "-N", new_sep)
    node.iptables("-t", "nat", "-A", new_sep, "-p", "udp", "-j", "DNAT", "--to-destination", f"{NEW_EP}:53")
    node.iptables("-t", "nat", "-R", SVC7, "1", "-j", new_sep)
    node.iproute("link", "del", node.pods["old-dns"].host_iface)
    assert udp_from(node, 40053) == "timeout"  # the same flow: pinned to the dead pod
    assert udp_from(node, 40054) == "new-dns"  # a new flow follows the new rules
    api_pods = {ip: n for ip, n in pods.items() if ip != OLD_EP}
    snap = capture(node, SVC7_YAML, api_pods)
    assert snap.conntrack is not None and any(e.reply_src == OLD_EP for e in snap.conntrack)
    diag = diagnose(snap, "ns7/svc7", client=Client(src=CLIENT_POD_IP, origin="pod"))
    assert top(diag) == "stale-udp-conntrack" and diag.findings[0].severity == ERROR
    assert f"conntrack -D -p udp --orig-dst {UDP_VIP} --reply-src {OLD_EP}" in diag.findings[0].hint
