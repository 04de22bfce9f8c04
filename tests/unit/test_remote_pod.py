"""The collector pod as svctrace asks for it, and the words around it (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from svctrace.collectors.collector_pod import (
    COLLECTOR,
    NAME_LABEL,
    RUN_LABEL,
    SCRIPT_ENV,
    collector_pod,
    handshake_status,
    node_ready,
    pod_name,
    role_yaml,
)

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_pod_reads_and_can_do_nothing_else() -> None:
    pod = collector_pod("node-7", "abc123", "registry.k8s.io/kube-proxy:v1.30.2", privileged=False, deadline=360,
                        read_script="echo hi")
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "svctrace-node-7-abc123"
    assert meta["labels"] == {NAME_LABEL: COLLECTOR, RUN_LABEL: "abc123"}
    assert spec["nodeName"] == "node-7" and spec["hostNetwork"] is True and spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["tolerations"] == [{"operator": "Exists"}] and spec["activeDeadlineSeconds"] == 360
    [container] = spec["containers"]
    assert container["command"] == ["sleep", "360"]  # it only waits: the read is exec'd, and it ends by itself
    assert container["env"] == [{"name": SCRIPT_ENV, "value": "echo hi"}]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True, "runAsUser": 0, "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}}
    privileged = collector_pod("n", "abc123", "i", privileged=True, deadline=60, read_script="")
    assert privileged["spec"]["containers"][0]["securityContext"] == {
        "readOnlyRootFilesystem": True, "runAsUser": 0, "privileged": True}


@pytest.mark.parametrize(("node", "name"), [
    ("ip-10-0-1-17.eu-west-1.compute.internal.example.com",
     "svctrace-ip-10-0-1-17.eu-west-1.compute.internal-abc123"),
    ("a" * 39 + "-b", "svctrace-" + "a" * 39 + "-abc123"),
])
def test_pod_names_stay_short_and_valid(node: str, name: str) -> None:
    assert pod_name(node, "abc123") == name


def test_the_role_in_the_readme_is_the_one_errors_print() -> None:
    assert role_yaml("default") in README
    assert 'resources: ["pods/exec"]' in role_yaml("x") and "namespace: x" in role_yaml("x")


def test_a_refused_exec_handshake_reads_as_a_status() -> None:
    reason = ('Handshake status 403 Forbidden -+-+- {"content-type": "application/json"} -+-+- '
              '{"kind":"Status","code":403,"message":"pods \\"p\\" is forbidden"}')
    assert handshake_status(reason) == (403, {"kind": "Status", "code": 403, "message": 'pods "p" is forbidden'})
    assert handshake_status("Connection refused") == (0, {})


def test_a_node_is_ready_only_with_ready_true() -> None:
    assert node_ready({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}) == (True, "")
    assert node_ready({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                                              "message": "PLEG is not healthy."}]}}) == (
        False, "Ready=False, KubeletNotReady: PLEG is not healthy")
    assert node_ready({}) == (False, "no Ready condition")
