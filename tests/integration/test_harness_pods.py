"""Pods are writable on the fake kube-apiserver as on a real one (and nothing else is); watch, events, DaemonSets.

No kubelet here: a pod bound to a node nobody runs stays Pending, as on a cluster whose node is gone.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch

from tests.harness.apiserver import FakeApiServer, fixture_cluster
from tests.harness.clients import api_client, collector_pod, raw, status_of

NODE = "kubernetes-minion-905m"


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with fixture_cluster(watch_timeout=None) as srv:
        yield srv
    assert srv.live_threads() == []


@pytest.fixture
def core(server: FakeApiServer, tmp_path: Path) -> Iterator[Any]:
    api = api_client(server.write_kubeconfig(tmp_path / "kubeconfig", namespace="default"))
    yield client.CoreV1Api(api)
    api.close()


# --- create ---------------------------------------------------------------------------------------------

def test_create_fills_in_what_the_server_does(server: FakeApiServer, core: Any) -> None:
    created = raw(core.create_namespaced_pod, "default", collector_pod("svctrace-collector-", NODE, ["iptables-save"],
                                                                       generate=True, activeDeadlineSeconds=120))
    meta, spec = created["metadata"], created["spec"]
    assert re.fullmatch(r"svctrace-collector-[bcdfghjklmnpqrstvwxz2456789]{5}", meta["name"])
    assert (created["kind"], created["apiVersion"], meta["namespace"]) == ("Pod", "v1", "default")
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"]) and meta["resourceVersion"].isdigit()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert created["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert (spec["terminationGracePeriodSeconds"], spec["dnsPolicy"], spec["schedulerName"],
            spec["serviceAccountName"], spec["enableServiceLinks"]) == (30, "ClusterFirst", "default-scheduler",
                                                                       "default", True)
    # a toleration of everything already covers the not-ready/unreachable defaults
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert "volumes" not in spec  # automountServiceAccountToken: false
    c = spec["containers"][0]
    assert (c["imagePullPolicy"], c["terminationMessagePath"], c["terminationMessagePolicy"]) == (
        "IfNotPresent", "/dev/termination-log", "File")
    assert c["securityContext"]["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
    stored = raw(core.read_namespaced_pod, meta["name"], "default")
    assert stored == created
    [post] = server.writes()
    assert (post.method, post.path, post.k8s_verb) == ("POST", "/api/v1/namespaces/default/pods", "create")
    assert post.body["spec"]["containers"][0]["command"] == ["iptables-save"]  # what the client sent


def test_admission_adds_tolerations_and_the_token_volume(core: Any) -> None:
    pod = collector_pod("plain", NODE, ["true"], image="busybox")
    del pod["spec"]["tolerations"]
    del pod["spec"]["automountServiceAccountToken"]
    created = raw(core.create_namespaced_pod, "default", pod)
    spec = created["spec"]
    assert [(t["key"], t["tolerationSeconds"]) for t in spec["tolerations"]] == [
        ("node.kubernetes.io/not-ready", 300), ("node.kubernetes.io/unreachable", 300)]
    [volume] = spec["volumes"]
    assert volume["name"].startswith("kube-api-access-") and volume["projected"]["sources"][0] == {
        "serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": volume["name"], "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    assert spec["containers"][0]["imagePullPolicy"] == "Always"  # no tag: latest


def test_validation_errors_are_422_with_field_causes(core: Any) -> None:
    pod = collector_pod("Bad_Name", NODE, ["true"], activeDeadlineSeconds=0, restartPolicy="Sometimes")
    pod["spec"]["containers"][0]["image"] = ""
    pod["spec"]["tolerations"] = [{"operator": "Exists", "value": "x"}]
    with pytest.raises(client.ApiException) as caught:
        core.create_namespaced_pod("default", pod)
    body = status_of(caught.value)
    assert (caught.value.status, body["reason"]) == (422, "Invalid")
    assert body["message"].startswith('Pod "Bad_Name" is invalid: [metadata.name: Invalid value: "Bad_Name": a '
                                      "lowercase RFC 1123 subdomain must consist of")
    assert [(c["field"], c["reason"]) for c in body["details"]["causes"]] == [
        ("metadata.name", "FieldValueInvalid"),
        ("spec.containers[0].image", "FieldValueRequired"),
        ("spec.restartPolicy", "FieldValueNotSupported"),
        ("spec.activeDeadlineSeconds", "FieldValueInvalid"),
        ("spec.tolerations[0].operator", "FieldValueInvalid")]
    assert "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive" in \
        body["message"]


def test_json_of_the_wrong_type_is_a_400(server: FakeApiServer) -> None:
    """The client's models refuse such a body before sending it; a hand-made request reaches the server."""
    pod = collector_pod("x", NODE, ["true"])
    pod["spec"]["containers"] = "iptables-save"
    http = urllib3.PoolManager()
    try:
        resp = http.request("POST", f"{server.url}/api/v1/namespaces/default/pods", body=json.dumps(pod),
                            headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"})
    finally:
        http.clear()
    assert resp.status == 400
    assert json.loads(resp.data)["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal string into Go struct field '
        "PodSpec.spec.containers of type []v1.Container")


def test_already_exists_missing_namespace_and_dry_run(server: FakeApiServer, core: Any) -> None:
    core.create_namespaced_pod("default", collector_pod("one", NODE, ["true"]))
    with pytest.raises(client.ApiException) as again:
        core.create_namespaced_pod("default", collector_pod("one", NODE, ["true"]))
    with pytest.raises(client.ApiException) as nowhere:
        core.create_namespaced_pod("nowhere", collector_pod("one", NODE, ["true"]))
    dry = core.create_namespaced_pod("default", collector_pod("two", NODE, ["true"]), dry_run="All")
    assert status_of(again.value) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": 'pods "one" already exists', "reason": "AlreadyExists",
                                      "details": {"name": "one", "kind": "pods"}, "code": 409}
    assert (nowhere.value.status, status_of(nowhere.value)["message"]) == (404, 'namespaces "nowhere" not found')
    assert dry.metadata.name == "two" and server.get("Pod", "default", "two") is None


def test_every_other_write_is_refused(server: FakeApiServer, core: Any) -> None:
    attempts = {
        "patch pod": lambda: core.patch_namespaced_pod("my-nginx-3800858182-jr4a2", "default",
                                                       {"metadata": {"labels": {"a": "b"}}}),
        "replace pod": lambda: core.replace_namespaced_pod("my-nginx-3800858182-jr4a2", "default",
                                                           collector_pod("my-nginx-3800858182-jr4a2", NODE, [])),
        "delete service": lambda: core.delete_namespaced_service("my-nginx", "default"),
        "create configmap": lambda: core.create_namespaced_config_map("default", {"metadata": {"name": "x"}}),
        "delete node": lambda: core.delete_node(NODE),
    }
    for what, attempt in attempts.items():
        with pytest.raises(client.ApiException) as caught:
            attempt()
        assert (caught.value.status, status_of(caught.value)["reason"]) == (405, "MethodNotAllowed"), what
    assert [(r.method, r.path) for r in server.writes()] == [
        ("PATCH", "/api/v1/namespaces/default/pods/my-nginx-3800858182-jr4a2"),
        ("PUT", "/api/v1/namespaces/default/pods/my-nginx-3800858182-jr4a2"),
        ("DELETE", "/api/v1/namespaces/default/services/my-nginx"),
        ("POST", "/api/v1/namespaces/default/configmaps"),
        ("DELETE", "/api/v1/nodes/kubernetes-minion-905m")]


# --- delete ---------------------------------------------------------------------------------------------

def test_graceful_delete_marks_the_pod_and_returns_it(server: FakeApiServer, core: Any) -> None:
    core.create_namespaced_pod("default", collector_pod("bound", NODE, ["sleep", "60"]))
    gone = raw(core.delete_namespaced_pod, "bound", "default", grace_period_seconds=5,
               propagation_policy="Background")
    assert gone["kind"] == "Pod" and gone["metadata"]["deletionGracePeriodSeconds"] == 5
    assert gone["metadata"]["deletionTimestamp"]
    # no kubelet runs that node, so nothing finalizes it: it stays Terminating
    assert server.get("Pod", "default", "bound") is not None
    [delete] = [r for r in server.writes() if r.method == "DELETE"]
    assert delete.query == {"gracePeriodSeconds": "5", "propagationPolicy": "Background"}
    assert delete.k8s_verb == "delete"
    now = raw(core.delete_namespaced_pod, "bound", "default", body=client.V1DeleteOptions(grace_period_seconds=0))
    assert now["metadata"]["name"] == "bound" and server.get("Pod", "default", "bound") is None
    with pytest.raises(client.ApiException) as missing:
        core.delete_namespaced_pod("bound", "default")
    assert status_of(missing.value)["message"] == 'pods "bound" not found'


def test_an_unbound_pod_goes_at_once_and_preconditions_conflict(server: FakeApiServer, core: Any) -> None:
    pod = collector_pod("floating", NODE, ["true"])
    del pod["spec"]["nodeName"]
    uid = core.create_namespaced_pod("default", pod).metadata.uid
    with pytest.raises(client.ApiException) as conflict:
        core.delete_namespaced_pod("floating", "default",
                                   body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="other")))
    assert (conflict.value.status, status_of(conflict.value)["message"]) == (
        409, f'Operation cannot be fulfilled on pods "floating": Precondition failed: UID in precondition: other, '
             f"UID in object meta: {uid}")
    core.delete_namespaced_pod("floating", "default")
    assert server.get("Pod", "default", "floating") is None


def test_delete_collection_by_label(server: FakeApiServer, core: Any) -> None:
    for name in ("c1", "c2"):
        pod = collector_pod(name, NODE, ["true"])
        del pod["spec"]["nodeName"]
        core.create_namespaced_pod("default", pod)
    listed = raw(core.delete_collection_namespaced_pod, "default",
                 label_selector="app.kubernetes.io/name=svctrace-collector")
    assert listed["kind"] == "PodList" and [i["metadata"]["name"] for i in listed["items"]] == ["c1", "c2"]
    assert [p["metadata"]["name"] for p in server.objects("Pod", "default")] == [
        "my-nginx-3800858182-jr4a2", "my-nginx-3800858182-kna2y"]
    assert [r.k8s_verb for r in server.writes()] == ["create", "create", "deletecollection"]


# --- watch ----------------------------------------------------------------------------------------------

def test_watch_streams_changes_with_selectors(server: FakeApiServer, core: Any) -> None:
    events: list[tuple[str, str, str | None]] = []
    ready = threading.Event()

    def follow() -> None:
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_pod, "default", label_selector="app.kubernetes.io/name="
                           "svctrace-collector", timeout_seconds=5):
            events.append((ev["type"], ev["object"].metadata.name, ev["object"].metadata.deletion_timestamp and "T"))
            ready.set()
            if ev["type"] == "DELETED":
                w.stop()

    listed = core.list_namespaced_pod("default")
    thread = threading.Thread(target=follow)
    thread.start()
    core.create_namespaced_pod("default", collector_pod("w1", NODE, ["true"]))
    assert ready.wait(5)
    core.delete_namespaced_pod("w1", "default", grace_period_seconds=0)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert events == [("ADDED", "w1", None), ("DELETED", "w1", None)]
    # resuming from an old resourceVersion replays what happened since
    resp = core.list_namespaced_pod("default", watch=True, resource_version=listed.metadata.resource_version,
                                    timeout_seconds=1, _preload_content=False)
    try:
        replay = [json.loads(line) for line in resp.data.splitlines()]
    finally:
        resp.release_conn()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in replay] == [("ADDED", "w1"), ("DELETED", "w1")]


def test_watch_from_a_compacted_version_is_410(tmp_path: Path) -> None:
    with FakeApiServer([], history=2) as srv:
        api = api_client(srv.write_kubeconfig(tmp_path / "kubeconfig"))
        c = client.CoreV1Api(api)
        try:
            start = c.list_namespaced_pod("default").metadata.resource_version
            for name in ("a", "b", "c"):
                c.create_namespaced_pod("default", collector_pod(name, NODE, ["true"]))
            resp = c.list_namespaced_pod("default", watch=True, resource_version=start, timeout_seconds=1,
                                         _preload_content=False)
            try:
                [event] = [json.loads(line) for line in resp.data.splitlines()]
            finally:
                resp.release_conn()
        finally:
            api.close()
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")
    assert event["object"]["message"].startswith(f"too old resource version: {start} (")


# --- the other kinds the collector reads ---------------------------------------------------------------

def test_events_by_involved_object_and_daemonsets(tmp_path: Path) -> None:
    objs = [{"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"p.{i}", "namespace": "default"},
             "involvedObject": {"kind": "Pod", "name": name, "uid": f"u-{name}", "namespace": "default"},
             "reason": "Failed", "type": "Warning", "source": {"component": "kubelet"}}
            for i, name in enumerate(("p", "q", "p"))]
    objs.append({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "kube-proxy",
                                                                            "namespace": "kube-system"},
                 "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
                          "template": {"spec": {"containers": [{"name": "kube-proxy",
                                                                "image": "registry.k8s.io/kube-proxy:v1.30.2"}]}}}})
    with FakeApiServer(objs) as srv:
        api = api_client(srv.write_kubeconfig(tmp_path / "kubeconfig"))
        try:
            c = client.CoreV1Api(api)
            by_name = c.list_namespaced_event("default", field_selector="involvedObject.name=p")
            by_uid = c.list_namespaced_event("default", field_selector="involvedObject.uid=u-q,type=Warning")
            by_source = c.list_namespaced_event("default", field_selector="source=kubelet")
            ds = client.AppsV1Api(api).read_namespaced_daemon_set("kube-proxy", "kube-system")
            groups = [g.name for g in client.ApisApi(api).get_api_versions().groups]
        finally:
            api.close()
    assert [e.metadata.name for e in by_name.items] == ["p.0", "p.2"]
    assert [e.metadata.name for e in by_uid.items] == ["p.1"]
    assert len(by_source.items) == 3
    assert ds.spec.template.spec.containers[0].image == "registry.k8s.io/kube-proxy:v1.30.2"
    assert "apps" in groups
