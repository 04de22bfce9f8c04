"""The simulated cluster: pods created through the real client run in their node's namespace, for real.

Issue 12's remote collection is written against this harness, so these pin that it behaves like a
kube-apiserver + kubelet where a collector would notice: the node a pod runs on, its log and exec
transports, deletion, deadlines, image pulls, NotReady nodes, image tool sets, log rotation, the
three proxy modes, and a 10k-Service node read back intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.stream import stream

from tests.harness.clients import api_client, collector_pod, status_of, wait_for
from tests.harness.kubelet import Image, MiB, kube_proxy_image, shell_image
from tests.integration.cluster import STALE_ENDPOINT, NodeSpec, SimCluster, kube_proxy_order, three_nodes
from tests.integration.netns import nfacct_counters

pytestmark = pytest.mark.netns

COLLECTOR = Image("ghcr.io/svctrace/collector:test", {
    name: name for name in ("sh", "cat", "ip", "iptables-nft-save", "iptables-legacy-save", "nft", "ipset",
                            "ipvsadm", "sha256sum", "wc", "grep", "head", "tail", "sleep", "touch", "seq", "echo")
} | {"iptables-save": kube_proxy_image().tools["iptables-save"]})
IMAGES = [kube_proxy_image(), COLLECTOR, shell_image(), kube_proxy_image().without("nft").renamed("kp:no-nft"),
          kube_proxy_image().without("sh").renamed("kp:no-sh")]
STALE_IP = STALE_ENDPOINT[2]


@pytest.fixture
def cluster(sim_cluster_factory: Callable[..., SimCluster]) -> SimCluster:
    # IPv4 only: these tests read IPv4 tables, and the cluster opens twice as fast
    return sim_cluster_factory(three_nodes(), mode="iptables", images=IMAGES, families=(4,))


@pytest.fixture
def core(cluster: SimCluster, tmp_path: Path) -> Iterator[Any]:
    api = api_client(cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace="default"))
    yield client.CoreV1Api(api)
    api.close()


def run_pod(core: Any, name: str, node: str, command: list[str], *, image: str = COLLECTOR.name,
            phases: tuple[str, ...] = ("Succeeded", "Failed"), **spec: Any) -> Any:
    core.create_namespaced_pod("default", collector_pod(name, node, command, image=image, **spec))
    return wait_for(lambda: (p if (p := core.read_namespaced_pod(name, "default")).status.phase in phases else None),
                    what=f"pod {name} in {phases}")


def without_comments(text: str) -> str:
    """iptables-save output without its '# Generated/Completed on <date>' lines (the date moves)."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


def exec_(core: Any, pod: str, command: list[str], *, stdin: str | None = None, timeout: float = 60.0
          ) -> tuple[str, str, int | None, Any]:
    """Run a command through pods/exec: (stdout, stderr, exit code, the error channel's Status or None).

    The client leaves its socket open after the server closes the stream (websocket-client marks it
    closed on the server's close frame, so ``resp.close()`` does nothing): a ResourceWarning when it is
    collected, an error under this suite's warning filter. Shut down here, as a careful caller must.
    """
    resp = stream(core.connect_get_namespaced_pod_exec, pod, "default", command=command, stderr=True,
                  stdin=stdin is not None, stdout=True, tty=False, _preload_content=False)
    try:
        if stdin is not None:
            resp.write_stdin(stdin)
            if hasattr(resp, "close_channel"):  # v5 (client 36+): the end of stdin; v4 has no way to say it
                resp.close_channel(0)
        out: list[str] = []
        err: list[str] = []
        end = time.monotonic() + timeout
        while resp.is_open() and time.monotonic() < end:
            resp.update(timeout=1)
            out.append(resp.read_stdout(timeout=0))
            err.append(resp.read_stderr(timeout=0))
        out.append(resp.read_stdout(timeout=0))
        err.append(resp.read_stderr(timeout=0))
        raw_status = resp.read_channel(3)
        status = json.loads(raw_status) if raw_status else None
        code = None
        if status is not None:
            code = 0 if status.get("status") == "Success" else (
                int(status["details"]["causes"][0]["message"]) if status.get("reason") == "NonZeroExitCode" else None)
        return "".join(out), "".join(err), code, status
    finally:
        resp.close()
        if resp.sock is not None:
            resp.sock.shutdown()


# --- the cluster as the API shows it, and as the nodes are --------------------------------------------

def test_api_shows_nodes_kube_proxy_and_the_current_endpoints(cluster: SimCluster, core: Any) -> None:
    nodes = core.list_node().items
    assert [(n.metadata.name, [a.address for a in n.status.addresses if a.type == "InternalIP"],
             [c.status for c in n.status.conditions if c.type == "Ready"]) for n in nodes] == [
        ("node-a", ["192.168.1.101"], ["True"]), ("node-b", ["192.168.1.102"], ["True"]),
        ("node-c", ["192.168.1.103"], ["True"])]
    api = core.api_client
    ds = client.AppsV1Api(api).read_namespaced_daemon_set("kube-proxy", "kube-system")
    assert ds.spec.template.spec.containers[0].image == "registry.k8s.io/kube-proxy:v1.30.2"
    assert "mode: iptables" in core.read_namespaced_config_map("kube-proxy", "kube-system").data["config.conf"]
    [cart] = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        "shop", label_selector="kubernetes.io/service-name=cart").items
    assert sorted(e.addresses[0] for e in cart.endpoints) == ["10.244.0.6", "10.244.1.6"]


def test_each_node_is_programmed_from_its_own_api_state(cluster: SimCluster) -> None:
    a, b, c = (cluster.node(n) for n in ("node-a", "node-b", "node-c"))
    assert "KUBE-SVC-" in a.run("iptables-nft-save").stdout and STALE_IP not in a.run("iptables-nft-save").stdout
    assert f"{STALE_IP}:8080" in b.run("iptables-nft-save").stdout  # stuck kube-proxy: the removed endpoint
    assert "KUBE-SVC-" in c.run("iptables-legacy-save").stdout  # the other backend
    assert "KUBE-SERVICES" not in c.run("iptables-nft-save").stdout
    assert cluster.drifted_nodes() == ["node-b"]


# --- a pod runs where it is pinned --------------------------------------------------------------------

def test_a_pod_runs_in_its_nodes_namespace(cluster: SimCluster, core: Any) -> None:
    script = "ip -j addr show dev ens33; iptables-save -t nat"
    seen = {}
    for node in ("node-a", "node-b", "node-c"):
        pod = run_pod(core, f"collect-{node}", node, ["sh", "-c", script])
        first, _, rules = core.read_namespaced_pod_log(pod.metadata.name, "default").partition("\n")
        seen[node] = ([a["local"] for a in json.loads(first)[0]["addr_info"] if a["family"] == "inet"], rules)
        assert (pod.status.phase, pod.status.host_ip, pod.status.pod_ip) == ("Succeeded", cluster.node(node).ip,
                                                                             cluster.node(node).ip)
        [cs] = pod.status.container_statuses
        assert (cs.state.terminated.exit_code, cs.state.terminated.reason) == (0, "Completed")
        assert cs.image_id.startswith("ghcr.io/svctrace/collector@sha256:")
    assert {n: s[0] for n, s in seen.items()} == {"node-a": ["192.168.1.101"], "node-b": ["192.168.1.102"],
                                                  "node-c": ["192.168.1.103"]}
    assert [n for n, s in seen.items() if STALE_IP in s[1]] == ["node-b"]
    # the unsuffixed iptables-save picked each node's backend, as kube-proxy's image does
    assert without_comments(seen["node-c"][1]) == without_comments(
        cluster.node("node-c").run("iptables-legacy-save", "-t", "nat").stdout)
    assert cluster.server is not None
    assert [(r.method, r.path) for r in cluster.server.writes()] == [
        ("POST", "/api/v1/namespaces/default/pods")] * 3


def test_status_conditions_and_events_of_a_finished_pod(cluster: SimCluster, core: Any) -> None:
    pod = run_pod(core, "events", "node-a", ["sh", "-c", "echo out; echo err >&2; exit 4"])
    assert pod.status.phase == "Failed"
    [cs] = pod.status.container_statuses
    assert (cs.state.terminated.exit_code, cs.state.terminated.reason, cs.ready) == (4, "Error", False)
    assert cs.container_id.startswith("containerd://")
    assert [(c.type, c.status) for c in pod.status.conditions] == [
        ("PodReadyToStartContainers", "False"), ("Initialized", "True"), ("Ready", "False"),
        ("ContainersReady", "False"), ("PodScheduled", "True")]
    assert core.read_namespaced_pod_log("events", "default") == "out\nerr\n"
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.uid={pod.metadata.uid}").items
    assert [(e.type, e.reason, e.message, e.source.component, e.source.host) for e in events] == [
        ("Normal", "Pulled", f'Container image "{COLLECTOR.name}" already present on machine', "kubelet", "node-a"),
        ("Normal", "Created", "Created container collect", "kubelet", "node-a"),
        ("Normal", "Started", "Started container collect", "kubelet", "node-a")]
    assert {e.involved_object.field_path for e in events} == {"spec.containers{collect}"}


# --- transports ---------------------------------------------------------------------------------------

def test_log_options(cluster: SimCluster, core: Any) -> None:
    run_pod(core, "lines", "node-a", ["sh", "-c", "seq 1 5; printf no-newline"])
    read = core.read_namespaced_pod_log
    assert read("lines", "default") == "1\n2\n3\n4\n5\nno-newline\n"  # the runtime ends the last line
    assert read("lines", "default", tail_lines=2) == "5\nno-newline\n"
    assert read("lines", "default", limit_bytes=5) == "1\n2\n3"
    stamped = read("lines", "default", timestamps=True, tail_lines=1)
    assert stamped.endswith("Z no-newline\n") and len(stamped.split(" ")[0]) == len("2024-05-14T09:12:00.000000000Z")
    assert read("lines", "default", follow=True) == read("lines", "default")  # finished: follow just reads
    with pytest.raises(client.ApiException) as previous:
        read("lines", "default", previous=True)
    assert status_of(previous.value)["message"] == 'previous terminated container "collect" in pod "lines" not found'


def test_exec_runs_in_the_node_and_reports_the_exit(cluster: SimCluster, core: Any) -> None:
    run_pod(core, "shell", "node-b", ["sleep", "300"], phases=("Running",))
    saved, _, code, _ = exec_(core, "shell", ["iptables-save"])
    assert code == 0
    assert without_comments(saved) == without_comments(cluster.node("node-b").run("iptables-nft-save").stdout)
    out, err, code, status = exec_(core, "shell", ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (out, err, code) == ("out\n", "err\n", 3)
    assert status == {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                      "message": "command terminated with non-zero exit code: error executing command "
                                 "[sh -c echo out; echo err >&2; exit 3], exit code 3",
                      "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}
    # one line, so the command ends without the end of stdin (which only v5, client 36+, can send)
    assert exec_(core, "shell", ["head", "-n", "1"], stdin="hello from stdin\n")[:3] == ("hello from stdin\n", "", 0)
    _, _, code, status = exec_(core, "shell", ["conntrack", "-L"])
    assert code is None and (status["reason"], status["code"]) == ("InternalError", 500)
    assert cluster.server is not None
    cluster.server.exec_protocols = ("v4.channel.k8s.io",)  # a server before v5: same Status, no stdin close
    resp = stream(core.connect_get_namespaced_pod_exec, "shell", "default", command=["sh", "-c", "exit 5"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    try:
        resp.run_forever(timeout=10)
        # (client 35 speaks only v4 and does not record the subprotocol)
        assert (getattr(resp, "subprotocol", "v4.channel.k8s.io"), resp.returncode) == ("v4.channel.k8s.io", 5)
    finally:
        resp.sock.shutdown()
    assert 'exec: "conntrack": executable file not found in $PATH: unknown' in status["message"]


def test_exec_is_refused_where_a_real_cluster_refuses_it(cluster: SimCluster, core: Any) -> None:
    run_pod(core, "done", "node-a", ["sh", "-c", "true"])
    with pytest.raises(client.ApiException) as finished:
        exec_(core, "done", ["true"])
    assert "cannot exec into a container in a completed pod; current phase is Succeeded" in str(finished.value.reason)


# --- lifecycle ----------------------------------------------------------------------------------------

def test_deletion_kills_the_process_and_removes_the_pod(cluster: SimCluster, core: Any) -> None:
    assert cluster.kubelet is not None
    run_pod(core, "long", "node-a", ["sleep", "300"], phases=("Running",))
    [pid] = cluster.kubelet.live_processes()
    deleted = core.delete_namespaced_pod("long", "default")
    assert deleted.metadata.deletion_timestamp is not None and deleted.metadata.deletion_grace_period_seconds == 30

    def gone() -> bool:
        try:
            core.read_namespaced_pod("long", "default")
            return False
        except client.ApiException as exc:
            return exc.status == 404

    wait_for(gone, what="the pod object to go")  # sleep dies on SIGTERM: no need to wait out the 30 s
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the process to end")
    run_pod(core, "forced", "node-c", ["sleep", "300"], phases=("Running",))
    core.delete_namespaced_pod("forced", "default", grace_period_seconds=0)
    assert gone.__code__ and not any(p.metadata.name == "forced" for p in core.list_namespaced_pod("default").items)
    wait_for(lambda: cluster.kubelet is not None and not cluster.kubelet.live_processes(), what="processes to end")


def test_active_deadline(cluster: SimCluster, core: Any) -> None:
    pod = run_pod(core, "late", "node-a", ["sleep", "300"], activeDeadlineSeconds=1)
    assert (pod.status.phase, pod.status.reason, pod.status.message) == (
        "Failed", "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
    [cs] = pod.status.container_statuses
    assert (cs.state.terminated.exit_code, cs.state.terminated.reason) == (143, "Error")  # SIGTERM
    reasons = [e.reason for e in core.list_namespaced_event("default", field_selector="involvedObject.name=late").items]
    assert "DeadlineExceeded" in reasons and "Killing" in reasons


def test_an_image_that_cannot_be_pulled_leaves_the_pod_pending(cluster: SimCluster, core: Any) -> None:
    image = "ghcr.io/svctrace/collector:missing"
    core.create_namespaced_pod("default", collector_pod("nopull", "node-b", ["true"], image=image))

    def waiting(reason: str) -> Any:
        pod = core.read_namespaced_pod("nopull", "default")
        statuses = pod.status.container_statuses or []
        return pod if statuses and statuses[0].state.waiting and statuses[0].state.waiting.reason == reason else None

    pod = wait_for(lambda: waiting("ImagePullBackOff"), what="ImagePullBackOff")
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.message == f'Back-off pulling image "{image}"'
    events = core.list_namespaced_event("default", field_selector="involvedObject.name=nopull").items
    failed = [e.message for e in events if e.type == "Warning" and e.reason == "Failed"]
    assert f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull and unpack image ' \
           f'"{image}": failed to resolve reference "{image}": {image}: not found' in failed
    assert "Error: ErrImagePull" in failed and "Error: ImagePullBackOff" in failed
    with pytest.raises(client.ApiException) as log:
        core.read_namespaced_pod_log("nopull", "default")
    assert (log.value.status, status_of(log.value)["message"]) == (
        400, 'container "collect" in pod "nopull" is waiting to start: trying and failing to pull image')
    core.delete_namespaced_pod("nopull", "default")
    wait_for(lambda: not core.list_namespaced_pod("default", field_selector="metadata.name=nopull").items,
             what="the pod to go")


def test_a_pod_on_a_not_ready_node_never_starts(cluster: SimCluster, core: Any) -> None:
    cluster.set_ready("node-c", False)
    node = core.read_node("node-c")
    assert [(c.status, c.reason) for c in node.status.conditions if c.type == "Ready"] == [
        ("Unknown", "NodeStatusUnknown")]
    assert {t.key for t in node.spec.taints} == {"node.kubernetes.io/unreachable"}
    core.create_namespaced_pod("default", collector_pod("stuck", "node-c", ["true"]))
    assert cluster.kubelet is not None
    with pytest.raises(client.ApiException) as log:
        core.read_namespaced_pod_log("stuck", "default")
    assert (log.value.status, status_of(log.value)["message"]) == (
        500, 'Get "https://192.168.1.103:10250/containerLogs/default/stuck/collect": dial tcp 192.168.1.103:10250: '
             "connect: connection refused")
    time.sleep(0.5)  # the kubelet would have reported by now; a down one never does
    pod = core.read_namespaced_pod("stuck", "default")
    assert (pod.status.phase, pod.status.container_statuses, pod.status.conditions) == ("Pending", None, None)
    core.delete_namespaced_pod("stuck", "default")
    assert core.read_namespaced_pod("stuck", "default").metadata.deletion_timestamp is not None  # Terminating
    cluster.set_ready("node-c", True)
    wait_for(lambda: not core.list_namespaced_pod("default", field_selector="metadata.name=stuck").items,
             what="the kubelet back to finish the delete")


def test_images_carry_only_their_tools(cluster: SimCluster, core: Any) -> None:
    no_nft = run_pod(core, "no-nft", "node-a", ["nft", "list", "ruleset"], image="kp:no-nft")
    [cs] = no_nft.status.container_statuses
    assert (no_nft.status.phase, cs.state.terminated.exit_code, cs.state.terminated.reason) == (
        "Failed", 128, "StartError")
    assert cs.state.terminated.message.endswith(
        'unable to start container process: exec: "nft": executable file not found in $PATH: unknown')
    via_shell = run_pod(core, "via-shell", "node-a", ["sh", "-c", "nft list ruleset"], image="kp:no-nft")
    assert via_shell.status.container_statuses[0].state.terminated.exit_code == 127
    assert "nft: not found" in core.read_namespaced_pod_log("via-shell", "default")
    no_sh = run_pod(core, "no-sh", "node-a", ["sh", "-c", "true"], image="kp:no-sh")
    assert no_sh.status.container_statuses[0].state.terminated.reason == "StartError"
    kp = run_pod(core, "kp-tools", "node-a", ["sh", "-c", "ipset version; conntrack -L; ip addr"],
                 image=kube_proxy_image().name)
    log = core.read_namespaced_pod_log("kp-tools", "default")
    assert "ipset v" in log and "conntrack: not found" in log and "ip: not found" in log
    assert kp.status.phase == "Failed"


def test_log_rotation_loses_the_head_unless_following(sim_cluster_factory: Callable[..., SimCluster],
                                                      tmp_path: Path) -> None:
    # checking after every write rotates far faster than the kubelet's 10 s: keep enough rotated files for
    # the follower to catch up (a follower more than max_files-2 files behind loses the ones deleted)
    cluster = sim_cluster_factory([NodeSpec("node-a")], images=IMAGES,
                                  kubelet_options={"log_max_size": 64 * 1024, "log_monitor_interval": 0,
                                                   "log_max_files": 100})
    api = api_client(cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace="default"))
    core = client.CoreV1Api(api)
    try:
        script = "while [ ! -e start ]; do sleep 0.05; done; seq 1 20000"
        run_pod(core, "chatty", "node-a", ["sh", "-c", script], phases=("Running",))
        followed: list[str] = []

        def follow() -> None:
            resp = core.read_namespaced_pod_log("chatty", "default", follow=True, _preload_content=False)
            try:
                followed.append(resp.data.decode())
            finally:
                resp.release_conn()

        reader = threading.Thread(target=follow)
        reader.start()
        # (client 35 sends follow=True, 36+ follow=true)
        wait_for(lambda: any(r.query.get("follow") in ("true", "True") for r in cluster.server.requests)  # type: ignore[union-attr]
                 if cluster.server else None, what="the follower")
        time.sleep(0.2)  # the follower is reading the (empty) file before the output starts
        assert exec_(core, "chatty", ["touch", "start"])[2] == 0
        reader.join(timeout=60)
        wait_for(lambda: core.read_namespaced_pod("chatty", "default").status.phase == "Succeeded", what="the end")
        after = core.read_namespaced_pod_log("chatty", "default")
    finally:
        api.close()
    assert cluster.kubelet is not None
    log = cluster.kubelet.container_log("default", "chatty", "collect")
    assert log is not None and log.rotations >= 5
    numbers = [int(n) for n in followed[0].split()]
    gaps = [(a, b) for a, b in zip([0, *numbers[:-1]], numbers, strict=True) if b != a + 1]
    assert gaps == [] and numbers[-1] == 20000  # the follower went on into each new file
    tail = [int(n) for n in after.split()]
    assert tail == list(range(tail[0], 20001)) and tail[0] > 15_000  # a read afterwards: since the last rotation


# --- the other proxy modes, and the other drift knobs ---------------------------------------------------

def test_nftables_mode_and_a_node_without_kube_proxy(sim_cluster_factory: Callable[..., SimCluster],
                                                     tmp_path: Path) -> None:
    cluster = sim_cluster_factory([NodeSpec("node-a"), NodeSpec("node-b", stale=True),
                                   NodeSpec("node-c", kube_proxy=False)], mode="nftables", images=IMAGES)
    api = api_client(cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace="default"))
    core = client.CoreV1Api(api)
    try:
        logs = {}
        for node in ("node-a", "node-b", "node-c"):
            run_pod(core, f"nft-{node}", node, ["nft", "list", "table", "ip", "kube-proxy"],
                    image=kube_proxy_image().name)
            logs[node] = core.read_namespaced_pod_log(f"nft-{node}", "default")
        pods = client.CoreV1Api(api).list_namespaced_pod("kube-system", label_selector="k8s-app=kube-proxy").items
    finally:
        api.close()
    assert "10.96.100.20 . tcp . 8080" in logs["node-a"] and STALE_IP not in logs["node-a"]
    assert f"dnat to {STALE_IP}:8080" in logs["node-b"]
    assert "No such file or directory" in logs["node-c"] and "table kube-proxy" not in logs["node-c"]
    assert sorted(p.spec.node_name for p in pods) == ["node-a", "node-b"]


def test_ipvs_mode_what_this_kernel_can_hold(sim_cluster_factory: Callable[..., SimCluster], tmp_path: Path) -> None:
    cluster = sim_cluster_factory([NodeSpec("node-a"), NodeSpec("node-b", stale=True)], mode="ipvs", images=IMAGES)
    api = api_client(cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace="default"))
    core = client.CoreV1Api(api)
    try:
        script = ("ipset list KUBE-CLUSTER-IP; iptables-save -t nat | grep -c match-set; "
                  "cat /proc/net/ip_vs; ipvsadm -Sn; ipvsadm -L")
        for node in ("node-a", "node-b"):
            run_pod(core, f"ipvs-{node}", node, ["sh", "-c", script])
        a, b = (core.read_namespaced_pod_log(f"ipvs-{n}", "default") for n in ("node-a", "node-b"))
    finally:
        api.close()
    assert "10.96.100.20,tcp:8080" in a  # the ipsets are real
    assert "/proc/net/ip_vs: No such file or directory" in a  # no IPVS in this kernel
    assert "-A -t 10.96.100.20:8080 -s rr" in a and f"-r {STALE_IP}:8080" not in a
    assert f"-a -t 10.96.100.20:8080 -r {STALE_IP}:8080 -m -w 1" in b  # the stand-in ipvsadm, per node
    assert "Can't initialize ipvs: Protocol not available" in b
    kube_ipvs0 = cluster.node("node-a").run("ip", "-j", "addr", "show", "dev", "kube-ipvs0").stdout
    assert {a["local"] for a in json.loads(kube_ipvs0)[0]["addr_info"]} >= {"10.96.0.1", "10.96.100.20"}


# --- scale ----------------------------------------------------------------------------------------------

def test_a_10k_service_node_read_back_through_logs_and_exec(sim_cluster_factory: Callable[..., SimCluster],
                                                            tmp_path: Path) -> None:
    """~430k nat lines: exec carries them intact; logs under the 10 MiB cap keep only what followed the last
    rotation (with the kubelet checking after every write; the real 10 s check makes it a matter of timing)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from gen_iptables import generate  # type: ignore[import-not-found]

    cluster = sim_cluster_factory([NodeSpec("node-a", kube_proxy=False)], images=IMAGES,
                                  kubelet_options={"log_max_size": 10 * MiB, "log_monitor_interval": 0})
    node = cluster.node("node-a")
    rules = kube_proxy_order(generate(10_000, 10))
    for counter in nfacct_counters(rules):
        node.netns.ensure_nfacct(counter)
    # a whole-table restore (--noflush on a table this size takes minutes: it checks what exists first)
    node.run("iptables-nft-restore", input=rules, timeout=600)
    truth = without_comments(node.run("iptables-nft-save", "-t", "nat").stdout)
    api = api_client(cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace="default"))
    core = client.CoreV1Api(api)
    try:
        run_pod(core, "big", "node-a", ["iptables-nft-save", "-t", "nat"])
        resp = core.read_namespaced_pod_log("big", "default", _preload_content=False)
        try:
            via_logs = resp.data.decode()
        finally:
            resp.release_conn()
        run_pod(core, "big-exec", "node-a", ["sleep", "600"], phases=("Running",))
        via_exec, _, code, _ = exec_(core, "big-exec", ["iptables-nft-save", "-t", "nat"], timeout=300)
        assert code == 0
    finally:
        api.close()
    assert truth.count("\n") > 420_000
    digest = hashlib.sha256(truth.encode()).hexdigest()
    assert hashlib.sha256(without_comments(via_exec).encode()).hexdigest() == digest
    assert cluster.kubelet is not None
    log = cluster.kubelet.container_log("default", "big", "collect")
    assert log is not None and log.rotations >= 4
    # what logs still hold: the lines written since the last rotation (rotation happens between lines)
    assert truth.endswith(without_comments(via_logs)) and 0 < len(via_logs) < 10 * MiB < len(truth)
    print(f"\n10k Services x 10: {truth.count(chr(10))} lines, {len(truth)} bytes; exec: intact (sha256 "
          f"{digest[:12]}); logs: {len(via_logs)} bytes, {via_logs.count(chr(10))} lines after {log.rotations} "
          "rotations")


def test_scaled_api_state_for_the_benchmark() -> None:
    from tests.fixtures.demo_build.gen_kube_proxy_rules import service_ports
    from tests.integration.cluster import scaled_objects

    objs = scaled_objects([f"node-{i:02d}" for i in range(20)], 1000, 10)
    ports = [p for p in service_ports(objs) if p.namespace == "shop"]
    assert len(ports) == 1000 and {len(p.endpoints) for p in ports} == {10}
    assert len({p.cluster_ip for p in ports}) == 1000
    nodes = {e["nodeName"] for o in objs if o["kind"] == "EndpointSlice" and o["metadata"]["namespace"] == "shop"
             for e in o["endpoints"]}
    assert len(nodes) == 20
