"""End to end: the demo cluster served by the fake apiserver, its node as a network namespace.

`svctrace svc NAME` live, `kubectl-svctrace svc NAME` (as kubectl runs the plugin) and `svctrace capture`
followed by `--from` the capture give one answer, and real packets go to exactly the endpoints it names.
Only GET requests reach the API server; the node's rules are unchanged afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from svctrace.cli.app import app
from svctrace.demo import demo_path
from tests.harness.apiserver import FakeApiServer
from tests.integration.netns import NetnsNode, probe_tcp

pytestmark = pytest.mark.netns

DEMO = demo_path()
NODE_IP = "192.168.1.63"
PODS = {  # the pods the demo's rules DNAT to, with the names the demo's API gives them
    "10.244.187.102": "my-nginx-5b56ccd65f-7xzr4",
    "10.244.209.149": "my-nginx-5b56ccd65f-95n7p",
    "10.244.121.23": "my-nginx-nodeport-649c945f85-l2hj6",
    "10.244.102.90": "my-nginx-nodeport-649c945f85-zr47r",
}


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    with FakeApiServer.from_manifests(sorted((DEMO / "api").iterdir())) as server:
        yield server


@pytest.fixture
def kubeconfig(apiserver: FakeApiServer, tmp_path: Path) -> Path:
    return apiserver.write_kubeconfig(tmp_path / "kubeconfig", namespace="default")


@pytest.fixture
def node(netns_factory: Callable[..., NetnsNode]) -> NetnsNode:
    node = netns_factory(backend="nft", node_ip=NODE_IP, need=("nfacct",))
    node.load_rules((DEMO / "node" / "iptables-save.txt").read_text())
    for ip, name in PODS.items():
        node.add_pod(name, ip, tcp_ports=(80,))
    return node


def _svc_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["svc", *args, "-o", "json"])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The answer without where it came from (warnings name the source)."""
    return {k: v for k, v in doc.items() if k not in ("warnings", "missing")}


def _rules(saved: str) -> list[str]:
    """The rules without timestamps and counters (IPv6 neighbour discovery on the veths moves those)."""
    return [re.sub(r" \[\d+:\d+\]$", "", line) for line in saved.splitlines() if not line.startswith("#")]


def _endpoints(doc: dict[str, Any], frontend_type: str) -> set[str]:
    fe = next(f for f in doc["frontends"] if f["type"] == frontend_type)

    def walk(hop: dict[str, Any]) -> Iterator[str]:
        if hop["endpoint"] is not None and hop["verdict"] == "DNAT":
            yield hop["endpoint"]["ip"]
        for child in hop["hops"]:
            yield from walk(child)

    return {ip for hop in fe["hops"] for ip in walk(hop)}


def test_live_capture_and_replay_agree_and_match_real_packets(
        node: NetnsNode, apiserver: FakeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    before = node.save_rules()
    # This node hosts none of the Service's endpoints, so its Node object is not read: name it.
    live = _svc_json("my-nginx-nodeport", "--kubeconfig", str(kubeconfig), "--netns", node.name,
                     "--node", "xianchaomaster1")
    assert live["node"] == "xianchaomaster1"
    assert live["mode"] == "iptables"
    assert {f["type"]: f["verdict"] for f in live["frontends"]} == {"ClusterIP": "forwarded",
                                                                     "NodePort": "forwarded"}

    # capture lists every Node, so it finds this one by the address configured in the namespace
    capture = CliRunner().invoke(app, ["capture", "-o", str(tmp_path / "cap.tar.gz"),
                                       "--kubeconfig", str(kubeconfig), "--netns", node.name])
    assert capture.exit_code == 0, capture.output
    assert f"wrote {tmp_path / 'cap.tar.gz'}" in capture.output
    replay = _svc_json("my-nginx-nodeport", "--from", str(tmp_path / "cap.tar.gz"))
    assert _comparable(replay) == _comparable(live)
    assert not [w for w in replay["warnings"] if "unknown key" in w]  # capture's meta.json reads back cleanly
    # svctrace only read: the node's rules are as they were (before any packet moved a counter).
    assert _rules(node.save_rules()) == _rules(before)

    # Real connections to the NodePort from outside reach exactly the endpoints the answer names.
    predicted = _endpoints(live, "NodePort")
    assert predicted == {"10.244.121.23", "10.244.102.90"}
    answers = {p.answer for p in probe_tcp(node.client, NODE_IP, 30380, count=24)}
    assert answers == {PODS[ip] for ip in predicted}

    # ... and the API saw GETs alone.
    assert {r.method for r in apiserver.requests} == {"GET"}


def _trace_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["trace", *args, "-o", "json"])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


@pytest.mark.parametrize("dst", ["10.99.198.177:80", f"{NODE_IP}:30380"])
def test_live_trace_sees_what_a_capture_of_the_node_sees(
        node: NetnsNode, kubeconfig: Path, tmp_path: Path, dst: str) -> None:
    # The live trace reads the node through the same assembly as --from: the iptables backend, the
    # addresses and the rules it was told; the two answers agree to the last step.
    live = _trace_json("--dst", dst, "--kubeconfig", str(kubeconfig), "--netns", node.name,
                       "--node", "xianchaomaster1")
    capture = CliRunner().invoke(app, ["capture", "-o", str(tmp_path / "cap.tar.gz"),
                                       "--kubeconfig", str(kubeconfig), "--netns", node.name])
    assert capture.exit_code == 0, capture.output
    replay = _trace_json("--dst", dst, "--from", str(tmp_path / "cap.tar.gz"), "--node", "xianchaomaster1")
    assert _comparable(live) == _comparable(replay)
    assert live["outcomes"], live


def test_kubectl_plugin_entry_point_gives_the_same_answer(node: NetnsNode, kubeconfig: Path) -> None:
    plugin = shutil.which("kubectl-svctrace") or str(Path(sys.executable).parent / "kubectl-svctrace")
    if not Path(plugin).exists():
        pytest.fail("the kubectl-svctrace console script is not installed: pip install -e .")
    # kubectl runs a plugin as a plain executable with the remaining arguments and the same environment.
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    run = subprocess.run([plugin, "svc", "my-nginx", "-n", "default", "--netns", node.name, "-o", "json"],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    via_kubectl = json.loads(run.stdout)
    direct = _svc_json("my-nginx", "-n", "default", "--kubeconfig", str(kubeconfig), "--netns", node.name)
    assert _comparable(via_kubectl) == _comparable(direct)
    assert _endpoints(direct, "ClusterIP") == {"10.244.187.102", "10.244.209.149"}


def test_namespace_defaults_to_the_contexts(node: NetnsNode, apiserver: FakeApiServer, tmp_path: Path) -> None:
    cfg = apiserver.write_kubeconfig(tmp_path / "kc", namespace="nginx-ns")
    doc = _svc_json("nginx-svc", "--kubeconfig", str(cfg), "--netns", node.name)
    assert doc["service"]["namespace"] == "nginx-ns"


def test_unreachable_api_is_one_line(node: NetnsNode, tmp_path: Path) -> None:
    with FakeApiServer([]) as server:
        cfg = server.write_kubeconfig(tmp_path / "kc")
    # the server is gone now: nothing listens on its port
    result = CliRunner().invoke(app, ["svc", "x", "--kubeconfig", str(cfg), "--netns", node.name,
                                      "--request-timeout", "1"])
    assert result.exit_code == 2
    first = result.output.splitlines()[0]
    assert first.startswith("svctrace: error: ") and server.url in first
