"""``--all-nodes --collect``: every node of the simulated cluster read through collector pods, compared.

Issue 12's cluster: node-b's kube-proxy is stuck on an old state (shop/cart still sends to 10.244.2.7, which
the API no longer lists), node-c runs the iptables legacy backend. An all-nodes audit must name node-b and
only node-b as out of step, and say node-c's backend; svc and why-unreachable must single out node-b; no
collector pod may stay behind, and the only writes are the collector pods' own creates and deletes.

IPVS: this kernel has no ip_vs module, so no node has an IPVS table. The simulated nodes carry what IPVS mode
leaves elsewhere (its ipsets, its iptables rules, kube-ipvs0 with the Service addresses) and the collector
pods find an ``ipvsadm`` there that prints the virtual servers kube-proxy would have programmed on that node
(tests/integration/cluster.py). So in IPVS mode these tests check the read, the per-node comparison and the
drift found in the virtual servers, not the kernel's own IPVS table (the /proc/net/ip_vs reader is unit-tested
on the kernel's format in tests/unit/test_remote_procfs.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.cluster import STALE_ENDPOINT, SimCluster, three_nodes
from tests.integration.remote import collector_pods, kubeconfig, non_gets, svctrace, without_source

pytestmark = pytest.mark.netns

STALE_IP = STALE_ENDPOINT[2]


def _audit_finds_node_b(cluster: SimCluster, kc: Path) -> None:
    ran = svctrace(cluster, kc, "audit", "-A", "--all-nodes", "--collect", "-o", "json")
    assert ran.code == 1, ran.stderr  # a node is out of step
    doc = ran.json()
    assert doc["kind"] == "AuditAcrossNodes"
    assert doc["summary"]["outOfStep"] == ["node-b"] and doc["summary"]["failed"] == []
    assert doc["summary"]["iptablesBackends"] == {"nf_tables": 2, "legacy": 1}
    nodes = {n["node"]: n for n in doc["nodes"]}
    assert nodes["node-c"]["iptablesBackend"] == "legacy"
    assert [d["service"] for d in nodes["node-b"]["drifted"]] == ["shop/cart"]
    assert any(STALE_IP in what for what in nodes["node-b"]["drifted"][0]["what"])
    assert all(not nodes[n]["drifted"] and not nodes[n]["outOfStep"] for n in ("node-a", "node-c"))
    text = svctrace(cluster, kc, "audit", "-A", "--all-nodes", "--collect").stdout
    assert "kube-proxy out of step on node-b:" in text
    assert "iptables backend: node-c uses legacy (the others: nf_tables)" in text


def test_iptables_mode_names_the_stale_node_and_the_other_backend(sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    assert sim_cluster.server is not None
    sim_cluster.server.clear_requests()
    _audit_finds_node_b(sim_cluster, kc)
    # read-only: the only non-GET requests are creating and deleting this run's own collector pods
    writes = non_gets(sim_cluster)
    created = sorted(re.sub(r"-[0-9a-f]{6}$", "", r.body["metadata"]["name"]) for r in sim_cluster.server.writes()
                     if r.method == "POST")
    assert created == sorted(["svctrace-node-a", "svctrace-node-b", "svctrace-node-c"] * 2)  # two audits
    names = [r.body["metadata"]["name"] for r in sim_cluster.server.writes() if r.method == "POST"]
    assert sorted(writes) == sorted([("POST", "/api/v1/namespaces/default/pods")] * 6
                                    + [("DELETE", f"/api/v1/namespaces/default/pods/{n}") for n in names])
    assert {r.method for r in sim_cluster.server.requests if r.path.endswith("/exec")} == {"GET"}
    assert collector_pods(sim_cluster) == []

    svc = svctrace(sim_cluster, kc, "svc", "shop/cart", "--all-nodes", "--collect", "-o", "json")
    assert svc.code == 0, svc.stderr
    doc = svc.json()
    assert doc["kind"] == "ServiceAcrossNodes"
    by_node = {n["node"]: n for n in doc["nodes"]}
    assert by_node["node-b"]["staleEndpoints"] == [f"{STALE_IP}:8080"] and by_node["node-b"]["drift"]
    assert [e["address"] for e in by_node["node-a"]["frontends"][0]["endpoints"]] == ["10.244.0.6:8080",
                                                                                     "10.244.1.6:8080"]
    assert [round(e["share"], 3) for e in by_node["node-b"]["frontends"][0]["endpoints"]] == [0.333] * 3
    odd = {tuple(g["nodes"]): g["differences"] for g in doc["groups"] if not g["majority"]}
    assert any(STALE_IP in line for line in odd[("node-b",)])
    assert odd[("node-c",)] == ["iptables backend legacy (the others: nf_tables)"]

    why = svctrace(sim_cluster, kc, "why-unreachable", "shop/cart", "--all-nodes", "--collect")
    assert why.code == 1
    assert why.stdout.startswith("shop/cart: reachable from pods on node-a and node-c; degraded from pods on node-b")
    assert collector_pods(sim_cluster) == []


@pytest.mark.parametrize("mode", ["nftables", "ipvs"])
def test_the_other_modes_name_the_stale_node_too(sim_cluster_factory: Callable[..., SimCluster], tmp_path: Path,
                                                 mode: str) -> None:
    cluster = sim_cluster_factory(three_nodes(), mode=mode, families=(4,))
    kc = kubeconfig(cluster, tmp_path)
    _audit_finds_node_b(cluster, kc)
    doc = svctrace(cluster, kc, "audit", "-A", "--all-nodes", "--collect", "-o", "json").json()
    assert doc["summary"]["modes"] == {mode: 3}
    if mode == "ipvs":
        node_b = next(n for n in doc["nodes"] if n["node"] == "node-b")
        assert any("IPVS is not available in this kernel" in w for w in node_b["warnings"])
    assert collector_pods(cluster) == []


def test_a_capture_of_every_node_replays_per_node_and_all_nodes(sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    out = tmp_path / "cluster.tar.gz"
    ran = svctrace(sim_cluster, kc, "capture", "--all-nodes", "--collect", "-o", str(out))
    assert ran.code == 0, ran.stderr
    assert f"wrote {out}: 3 nodes" in ran.stdout
    live = svctrace(sim_cluster, kc, "audit", "-A", "--all-nodes", "--collect", "-o", "json").json()
    replay = svctrace(sim_cluster, kc, "audit", "-A", "--all-nodes", "--from", str(out), "-o", "json").json()
    assert replay == live
    one = svctrace(sim_cluster, kc, "svc", "shop/cart", "--from", str(out), "--node", "node-b", "-o", "json").json()
    live_one = svctrace(sim_cluster, kc, "svc", "shop/cart", "--node", "node-b", "--collect", "-o", "json").json()
    assert without_source(one) == without_source(live_one) and one["node"] == "node-b"
    which = svctrace(sim_cluster, kc, "svc", "shop/cart", "--from", str(out))
    assert which.code == 2
    assert "holds 3 nodes (node-a, node-b, node-c): say which to answer for" in which.stderr
    picked = svctrace(sim_cluster, kc, "audit", "-A", "--from", str(out), "--nodes",
                      "kubernetes.io/hostname=node-c", "-o", "json").json()
    assert [n["node"] for n in picked["nodes"]] == ["node-c"]


def test_a_label_selector_picks_the_nodes(sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    ran = svctrace(sim_cluster, kc, "svc", "shop/cart", "--nodes", "kubernetes.io/hostname in (node-a,node-c)",
                   "--collect", "-o", "json")
    assert ran.code == 0, ran.stderr
    assert [n["node"] for n in ran.json()["nodes"]] == ["node-a", "node-c"]
    none = svctrace(sim_cluster, kc, "svc", "shop/cart", "--nodes", "role=gpu", "--collect")
    assert none.code == 2 and "no node matches --nodes 'role=gpu'" in none.stderr
    assert collector_pods(sim_cluster) == []
