"""``--node X --collect``: one node read from "a laptop" (this process, not in the node's namespace) through a
collector pod, compared with the same command run on the node itself (``--netns``, as ``sudo svctrace`` on X).

The simulated cluster is issue 12's: node-a healthy, node-b stale (shop/cart still sends to 10.244.2.7),
node-c on the iptables legacy backend. Its nodes are network namespaces loaded by the real iptables/nft tools,
its pods run kube-proxy's image with the tools the real one has (no ip, no conntrack, no ipvsadm).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.cluster import STALE_ENDPOINT, NodeSpec, SimCluster, three_nodes
from tests.integration.remote import collector_pods, kubeconfig, non_gets, svctrace, without_source

pytestmark = pytest.mark.netns

STALE_IP = STALE_ENDPOINT[2]


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_a_node_read_through_the_api_answers_as_the_node_itself(
        sim_cluster_factory: Callable[..., SimCluster], tmp_path: Path, mode: str) -> None:
    cluster = sim_cluster_factory(three_nodes(), mode=mode)
    kc = kubeconfig(cluster, tmp_path)
    for node in ("node-a", "node-b", "node-c"):
        for service in ("shop/cart", "shop/web"):
            netns = cluster.node(node).netns.name
            remote = svctrace(cluster, kc, "svc", service, "--node", node, "--collect")
            local = svctrace(cluster, kc, "svc", service, "--node", node, "--netns", netns)
            assert remote.code == local.code == 0, remote.stderr
            # --netns is how this test runs "on the node"; a read on a real node names no namespace
            assert remote.stdout == local.stdout.replace(f" in network namespace {netns}", ""), (node, service)
            if (node, service) != ("node-b", "shop/cart"):
                continue
            remote_doc = svctrace(cluster, kc, "svc", service, "--node", node, "--collect", "-o", "json").json()
            local_doc = svctrace(cluster, kc, "svc", service, "--node", node, "--netns", netns, "-o", "json").json()
            local_doc["warnings"] = [w.replace(f" in network namespace {netns}", "") for w in local_doc["warnings"]]
            assert remote_doc == local_doc
    stale = svctrace(cluster, kc, "svc", "shop/cart", "--node", "node-b", "--collect").stdout
    assert STALE_IP in stale and "stale rule" in stale
    assert STALE_IP not in svctrace(cluster, kc, "svc", "shop/cart", "--node", "node-a", "--collect").stdout
    assert collector_pods(cluster) == []


def test_the_collector_pod_is_what_the_issue_asks_and_only_its_own_pods_are_written(
        sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    assert sim_cluster.server is not None
    sim_cluster.server.clear_requests()
    ran = svctrace(sim_cluster, kc, "audit", "--node", "node-c", "--collect", "-n", "shop")
    assert ran.code == 0, ran.stderr
    posts = [r for r in sim_cluster.server.requests if r.method == "POST"]
    [create] = posts
    pod = create.body
    name = pod["metadata"]["name"]
    assert name.startswith("svctrace-node-c-")
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "svctrace-collector"
    assert pod["metadata"]["labels"]["svctrace.io/run"]
    spec = pod["spec"]
    assert (spec["nodeName"], spec["hostNetwork"], spec["restartPolicy"], spec["automountServiceAccountToken"],
            spec["tolerations"]) == ("node-c", True, "Never", False, [{"operator": "Exists"}])
    assert 0 < spec["activeDeadlineSeconds"] <= 3600
    [container] = spec["containers"]
    assert container["image"] == sim_cluster.kube_proxy_image.name  # the DaemonSet's: already on every node
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and "privileged" not in security
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    # The read-only proof: its own pod created and deleted, the rest GETs (the exec is a GET upgrade).
    assert non_gets(sim_cluster) == [("POST", "/api/v1/namespaces/default/pods"),
                                     ("DELETE", f"/api/v1/namespaces/default/pods/{name}")]
    execs = [r for r in sim_cluster.server.requests if r.path.endswith("/exec")]
    assert [(r.method, r.path) for r in execs] == [("GET", f"/api/v1/namespaces/default/pods/{name}/exec")]
    assert collector_pods(sim_cluster) == []


def test_privileged_image_and_namespace_flags(sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    assert sim_cluster.server is not None and sim_cluster.kubelet is not None
    image = sim_cluster.kube_proxy_image.renamed("ghcr.io/svctrace/node-collector:test")
    sim_cluster.kubelet.add_image(image)
    sim_cluster.server.update("Node", "", "node-b", lambda doc: doc["spec"].update(unschedulable=True))  # cordoned
    ran = svctrace(sim_cluster, kc, "svc", "shop/cart", "--node", "node-b", "--collect", "--privileged",
                   "--image", image.name, "--collector-namespace", "kube-system")
    assert ran.code == 0, ran.stderr
    assert "note: node node-b is cordoned; its collector pod runs there anyway" in ran.stderr
    [create] = [r for r in sim_cluster.server.requests if r.method == "POST"]
    assert create.path == "/api/v1/namespaces/kube-system/pods"
    container = create.body["spec"]["containers"][0]
    assert container["image"] == image.name and container["securityContext"]["privileged"] is True
    assert STALE_IP in ran.stdout
    refused = svctrace(sim_cluster, kc, "svc", "shop/cart", "--image", image.name)
    assert refused.code == 2 and "add --collect" in refused.stderr


def test_a_client_pods_node_is_read_by_default(sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    # web-5d4f8c7b9-d3e4f runs on node-b, the stale node: that is where its packets to cart are translated
    ran = svctrace(sim_cluster, kc, "why-unreachable", "shop/cart", "--from-pod", "shop/web-5d4f8c7b9-d3e4f",
                   "--collect")
    assert ran.code == 1, ran.stderr
    assert "note: read node node-b's rules: pod shop/web-5d4f8c7b9-d3e4f runs there" in ran.stderr
    assert "DEGRADED" in ran.stdout and "dataplane-stale-endpoints" in ran.stdout
    healthy = svctrace(sim_cluster, kc, "why-unreachable", "shop/cart", "--from-pod", "shop/web-5d4f8c7b9-a1b2c",
                       "--collect")
    assert healthy.code == 0 and "read node node-a's rules" in healthy.stderr
    trace = svctrace(sim_cluster, kc, "trace", "--dst", "10.96.100.20:8080", "--from-pod",
                     "shop/web-5d4f8c7b9-d3e4f", "--collect", "-o", "json").json()
    assert STALE_IP in {o["destination"].rsplit(":", 1)[0] for o in trace["outcomes"]}
    assert collector_pods(sim_cluster) == []


def test_capture_of_a_collected_node_replays_the_same_answer(sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    out = tmp_path / "node-b.tar.gz"
    ran = svctrace(sim_cluster, kc, "capture", "--node", "node-b", "--collect", "-o", str(out))
    assert ran.code == 0, ran.stderr
    live = svctrace(sim_cluster, kc, "svc", "shop/cart", "--node", "node-b", "--collect", "-o", "json").json()
    replay = svctrace(sim_cluster, kc, "svc", "shop/cart", "--from", str(out), "-o", "json").json()
    assert without_source(replay) == without_source(live)


def test_a_node_without_kube_proxy_is_said_to_have_no_rules(sim_cluster_factory: Callable[..., SimCluster],
                                                             tmp_path: Path) -> None:
    cluster = sim_cluster_factory([NodeSpec("node-a"), NodeSpec("node-b", kube_proxy=False)], families=(4,))
    kc = kubeconfig(cluster, tmp_path)
    ran = svctrace(cluster, kc, "svc", "shop/cart", "--all-nodes", "--collect")
    assert ran.code == 0, ran.stderr
    assert "node-b: no kube-proxy rules (iptables, IPVS or nftables)" in ran.stdout
    doc = svctrace(cluster, kc, "svc", "shop/cart", "--all-nodes", "--collect", "-o", "json").json()
    assert {n["node"]: n["mode"] for n in doc["nodes"]} == {"node-a": "iptables", "node-b": None}
