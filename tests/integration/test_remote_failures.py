"""--collect when things go wrong: each failure is one line and the next step, and no collector pod stays.

RBAC refusing the pod (or the exec), Pod Security refusing hostNetwork, an image that cannot be pulled, a
NotReady node, a pod Pending past the timeout (its node's kubelet silent), no kube-proxy to take the image
from, a read over the size limit, pods an interrupted run left, and Ctrl-C: a real svctrace process
interrupted in the middle of a run, with pods Pending and with reads in flight.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from svctrace.collectors import remote
from tests.harness.apiserver import Fault
from tests.harness.clients import collector_pod, wait_for
from tests.harness.kubelet import Script
from tests.integration.cluster import SimCluster, three_nodes
from tests.integration.remote import collector_pods, kubeconfig, svctrace

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith(("note:", "warning:"))]


def test_rbac_refusing_the_pod_names_verb_resource_and_prints_the_role(sim_cluster: SimCluster,
                                                                       tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    assert sim_cluster.server is not None
    sim_cluster.server.deny("create", "pods", namespace="default")
    for args in (["--node", "node-b"], ["--all-nodes"]):
        ran = svctrace(sim_cluster, kc, "svc", "shop/cart", "--collect", *args)
        assert ran.code == 2
        lines = _error_lines(ran.stderr)
        assert lines[0] == ('svctrace: error: not allowed to create pods in namespace "default" for '
                            "system:serviceaccount:svctrace:reader (403 Forbidden): --collect reads a node through a "
                            "short-lived collector pod")
        assert lines[1].startswith("  next: ask for this Role and a RoleBinding to it")
        role = "\n".join(lines[2:])
        assert "kind: Role" in role and 'resources: ["pods/exec"]' in role and '"create", "delete", "get"' in role
    assert collector_pods(sim_cluster) == []


def test_rbac_refusing_the_exec_and_pod_security_refusing_the_pod(sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    assert sim_cluster.server is not None
    sim_cluster.server.deny("get", "pods/exec", namespace="default")
    ran = svctrace(sim_cluster, kc, "svc", "shop/cart", "--collect", "--node", "node-a")
    assert ran.code == 2
    assert _error_lines(ran.stderr)[0].startswith('svctrace: error: not allowed to exec into pods in namespace '
                                                  '"default" (403 Forbidden)')
    assert collector_pods(sim_cluster) == []  # the pod was made, refused exec, and deleted
    sim_cluster.server.rbac.denies.clear()
    sim_cluster.server.inject("/api/v1/namespaces/default/pods", Fault.status(
        403, message='pods "svctrace-node-a-x" is forbidden: violates PodSecurity "baseline:latest": host namespaces '
                     "(hostNetwork=true), non-default capabilities (container \"collect\" must not include "
                     '"NET_ADMIN", "NET_RAW" in securityContext.capabilities.add)'), verb="create")
    ran = svctrace(sim_cluster, kc, "svc", "shop/cart", "--collect", "--node", "node-a")
    assert ran.code == 2
    assert _error_lines(ran.stderr) == [
        'svctrace: error: namespace "default" enforces Pod Security "baseline", which refuses a collector pod (it '
        "needs hostNetwork and NET_ADMIN to read the node's rules)",
        "  next: pass --collector-namespace with a namespace that allows it (kube-system does by default, or one "
        "labelled pod-security.kubernetes.io/enforce=privileged)"]


def test_an_image_that_cannot_be_pulled(sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    image = "ghcr.io/example/collector:missing"
    ran = svctrace(sim_cluster, kc, "svc", "shop/cart", "--collect", "--node", "node-b", "--image", image)
    assert ran.code == 2
    first = _error_lines(ran.stderr)[0]
    assert first.startswith(f"svctrace: error: the collector image {image} cannot be pulled on node node-b "
                            "(ErrImagePull")
    assert "not found" in first
    assert "pass --image with an image the nodes have or can pull" in ran.stderr
    assert collector_pods(sim_cluster) == []


def test_a_not_ready_node_fails_alone_and_the_others_are_still_read(sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    assert sim_cluster.server is not None
    sim_cluster.set_ready("node-c", False)
    one = svctrace(sim_cluster, kc, "svc", "shop/cart", "--collect", "--node", "node-c")
    assert one.code == 2
    assert _error_lines(one.stderr)[0] == (
        "svctrace: error: node node-c is NotReady (Ready=Unknown, NodeStatusUnknown: Kubelet stopped posting node "
        "status): its kubelet cannot start a collector pod")
    sim_cluster.server.clear_requests()
    every = svctrace(sim_cluster, kc, "audit", "-A", "--all-nodes", "--collect")
    assert every.code == 1  # partial: one line for the node that failed, the rest answered
    assert "1 node could not be read:\n  node-c: node node-c is NotReady" in every.stdout
    assert "kube-proxy out of step on node-b" in every.stdout
    created = [r.body["spec"]["nodeName"] for r in sim_cluster.server.requests if r.method == "POST"]
    assert sorted(created) == ["node-a", "node-b"]  # nothing is made where it cannot start
    assert collector_pods(sim_cluster) == []


def test_a_pod_pending_past_the_timeout_says_why_and_is_deleted(sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    assert sim_cluster.kubelet is not None
    sim_cluster.kubelet.set_ready("node-a", False)  # its kubelet is silent, the Node still says Ready
    try:
        ran = svctrace(sim_cluster, kc, "svc", "shop/cart", "--collect", "--node", "node-a", "--collect-timeout",
                       "1s")
        assert ran.code == 2
        lines = _error_lines(ran.stderr)
        assert lines[0].startswith("svctrace: error: the collector pod svctrace-node-a-")
        assert lines[0].endswith("on node node-a is still Pending after 1s: no kubelet has reported on it (the "
                                 "node's kubelet may be down)")
        assert lines[1].startswith("  next: check the node's kubelet (kubectl describe node node-a)")
        assert collector_pods(sim_cluster) == []  # deleted with grace 0: gone even with the kubelet down
    finally:
        sim_cluster.kubelet.set_ready("node-a", True)


def test_a_cluster_without_kube_proxy_needs_an_image(sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    assert sim_cluster.server is not None
    sim_cluster.server.inject("/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy", Fault.status(404))
    sim_cluster.server.inject("/api/v1/namespaces/kube-system/pods", Fault.json(
        {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}))
    ran = svctrace(sim_cluster, kc, "svc", "shop/cart", "--collect", "--node", "node-a")
    assert ran.code == 2
    assert _error_lines(ran.stderr)[0].startswith(
        "svctrace: error: cannot find kube-proxy's image: no kube-proxy DaemonSet or pod in kube-system. This cluster "
        "may not run kube-proxy (Cilium's kube-proxy replacement")
    assert "pass --image IMAGE" in ran.stderr and collector_pods(sim_cluster) == []


def test_a_read_over_the_limit_stops_and_the_leftovers_of_a_killed_run_are_reported(
        sim_cluster: SimCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    assert sim_cluster.server is not None
    # a pod an interrupted earlier run left (same labels, another run id)
    sim_cluster.server.add({**collector_pod("svctrace-node-a-0ld0ld", "node-a", ["sleep", "1"]),
                            "metadata": {"name": "svctrace-node-a-0ld0ld", "namespace": "default",
                                         "labels": {"app.kubernetes.io/name": "svctrace-collector",
                                                    "svctrace.io/run": "0ld0ld"}},
                            "status": {"phase": "Succeeded"}})
    monkeypatch.setattr(remote, "MAX_OUTPUT", 4096)
    ran = svctrace(sim_cluster, kc, "svc", "shop/cart", "--collect", "--node", "node-b")
    assert ran.code == 2
    assert _error_lines(ran.stderr)[0] == "svctrace: error: node node-b's read is over the 4 KiB limit; stopped"
    assert ("note: 1 collector pod(s) of an earlier svctrace run are still in namespace default: "
            "svctrace-node-a-0ld0ld (Succeeded)") in ran.stderr
    assert "kubectl delete pod -n default -l app.kubernetes.io/name=svctrace-collector,svctrace.io/run!=" in ran.stderr
    assert collector_pods(sim_cluster) == ["default/svctrace-node-a-0ld0ld"]  # only the old one: not ours to delete


def _interrupt(cluster: SimCluster, kc: Path, args: list[str], ready: Callable[[], bool]) -> tuple[int, str]:
    """Run svctrace as its own process, Ctrl-C it once ``ready()``, and return its exit status and stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "svctrace", *args, "--kubeconfig", str(kc)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: ready() or proc.poll() is not None, timeout=60, what="the run to be under way")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def test_ctrl_c_while_pods_are_pending_leaves_no_pod(sim_cluster: SimCluster, tmp_path: Path) -> None:
    kc = kubeconfig(sim_cluster, tmp_path)
    assert sim_cluster.kubelet is not None
    for node in ("node-a", "node-b", "node-c"):
        sim_cluster.kubelet.set_ready(node, False)  # every pod stays Pending: the run waits
    try:
        code, err = _interrupt(sim_cluster, kc, ["audit", "-A", "--all-nodes", "--collect", "--collect-timeout", "5m"],
                               lambda: len(collector_pods(sim_cluster)) == 3)
        assert code == 130, err
        assert collector_pods(sim_cluster) == []
    finally:
        for node in ("node-a", "node-b", "node-c"):
            sim_cluster.kubelet.set_ready(node, True)


def test_ctrl_c_while_reads_are_in_flight_leaves_no_pod(sim_cluster_factory: Callable[..., SimCluster],
                                                         tmp_path: Path) -> None:
    cluster = sim_cluster_factory(three_nodes(), families=(4,))
    assert cluster.kubelet is not None
    # the nodes' iptables-nft-save hangs: the reads are in flight (exec streams open) when Ctrl-C comes
    slow = cluster.kube_proxy_image.with_tools({"iptables-nft-save": Script("#!/bin/sh\nexec sleep 300\n")})
    cluster.kubelet.add_image(slow.renamed("registry.k8s.io/kube-proxy:slow"))
    kc = kubeconfig(cluster, tmp_path)
    assert cluster.server is not None

    def reading() -> bool:
        assert cluster.server is not None
        return sum(r.path.endswith("/exec") for r in cluster.server.requests) == 3

    code, err = _interrupt(cluster, kc, ["svc", "shop/cart", "--all-nodes", "--collect", "--image",
                                         "registry.k8s.io/kube-proxy:slow"], reading)
    assert code == 130, err
    assert collector_pods(cluster) == []
    wait_for(lambda: cluster.kubelet is not None and not cluster.kubelet.live_processes(), timeout=30,
             what="the pods' processes to end")
