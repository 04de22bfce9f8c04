"""The fake kube-apiserver itself, driven through the real ``kubernetes`` client and a real kubeconfig.

If the harness drifts from the real server's protocol, the collector tests prove nothing, so these
pin the parts svctrace relies on: GET/LIST shapes, selectors, paging, discovery and Status bodies.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config

from tests.harness.apiserver import (
    DEFAULT_USER,
    FakeApiServer,
    fixture_cluster,
    load_manifests,
    parse_label_selector,
)


def make_client(server: FakeApiServer, tmp_path: Path, **kubeconfig: Any) -> Any:
    """An ApiClient built from a kubeconfig the server wrote, with urllib3's retries off."""
    path = server.write_kubeconfig(tmp_path / "kubeconfig", **kubeconfig)
    cfg = client.Configuration()
    config.load_kube_config(str(path), client_configuration=cfg, persist_config=False)
    cfg.retries = False
    return client.ApiClient(cfg)


def raw(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The JSON document the server sent, not the client's model of it."""
    resp = fn(*args, _preload_content=False, **kwargs)
    try:
        doc: dict[str, Any] = json.loads(resp.data)
        return doc
    finally:
        resp.release_conn()


def status_of(exc: client.ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with fixture_cluster() as srv:
        yield srv


@pytest.fixture
def api(server: FakeApiServer, tmp_path: Path) -> Iterator[Any]:
    api_client = make_client(server, tmp_path, namespace="default")
    yield api_client
    api_client.close()


def pods_with_labels(labels: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "sel", "labels": lab},
             "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}} for name, lab in labels.items()]


# --- GET and LIST ---------------------------------------------------------------------------------------

def test_get_returns_the_object_with_server_filled_metadata(api: Any) -> None:
    svc = raw(client.CoreV1Api(api).read_namespaced_service, "my-nginx", "default")
    assert svc["kind"] == "Service" and svc["apiVersion"] == "v1"
    assert svc["spec"]["clusterIP"] == "10.0.162.149"
    meta = svc["metadata"]
    assert meta["resourceVersion"].isdigit() and meta["uid"] and meta["creationTimestamp"]


def test_get_through_the_client_model(api: Any) -> None:
    node = client.CoreV1Api(api).read_node("kubernetes-minion-905m")
    assert [a.address for a in node.status.addresses if a.type == "InternalIP"] == ["10.240.0.5"]


def test_get_missing_object_is_a_not_found_status(api: Any) -> None:
    with pytest.raises(client.ApiException) as caught:
        client.CoreV1Api(api).read_namespaced_service("nope", "default")
    assert caught.value.status == 404
    assert status_of(caught.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'services "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "kind": "services"}, "code": 404,
    }


def test_not_found_in_a_named_group_qualifies_the_resource(api: Any) -> None:
    with pytest.raises(client.ApiException) as caught:
        client.NetworkingV1Api(api).read_namespaced_network_policy("nope", "other")
    body = status_of(caught.value)
    assert body["message"] == 'networkpolicies.networking.k8s.io "nope" not found'
    assert body["details"] == {"name": "nope", "group": "networking.k8s.io", "kind": "networkpolicies"}


def test_list_namespaced_and_across_namespaces(api: Any) -> None:
    core = client.CoreV1Api(api)
    in_default = raw(core.list_namespaced_service, "default")
    everywhere = raw(core.list_service_for_all_namespaces)
    assert in_default["kind"] == "ServiceList" and in_default["apiVersion"] == "v1"
    assert in_default["metadata"]["resourceVersion"].isdigit()
    assert [i["metadata"]["name"] for i in in_default["items"]] == [
        "kubernetes", "my-nginx", "my-nginx-nodeport"]
    assert sorted((i["metadata"]["namespace"], i["metadata"]["name"]) for i in everywhere["items"]) == [
        ("default", "kubernetes"), ("default", "my-nginx"), ("default", "my-nginx-nodeport"),
        ("kube-system", "kube-dns"), ("other", "my-nginx")]
    # the real server leaves kind/apiVersion off list items; a client must take them from the List
    assert all("kind" not in i and "apiVersion" not in i for i in everywhere["items"])


def test_list_in_an_unknown_namespace_is_empty_not_an_error(api: Any) -> None:
    assert raw(client.CoreV1Api(api).list_namespaced_pod, "nowhere")["items"] == []


def test_endpointslices_are_listed_by_service_name_label(api: Any) -> None:
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=my-nginx")
    assert [s.metadata.name for s in slices.items] == ["my-nginx-7vzhx"]
    assert sorted(e.addresses[0] for e in slices.items[0].endpoints) == ["10.244.2.5", "10.244.3.4"]


def test_namespaces_are_served_including_implied_ones(api: Any) -> None:
    names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
    assert names == ["default", "kube-system", "other"]


def test_from_manifests_flattens_lists() -> None:
    objs = load_manifests([Path(__file__).parent.parent / "fixtures" / "api" / "nodes.json"])
    assert [o["metadata"]["name"] for o in objs] == [
        "kubernetes-master", "kubernetes-minion-ljyd", "kubernetes-minion-905m"]


def test_watch_streams_added_events(api: Any) -> None:
    resp = client.CoreV1Api(api).list_namespaced_pod("default", watch=True, _preload_content=False)
    try:
        events = [json.loads(line) for line in resp.data.splitlines()]
    finally:
        resp.release_conn()
    assert {e["type"] for e in events} == {"ADDED"}
    assert sorted(e["object"]["metadata"]["name"] for e in events) == [
        "my-nginx-3800858182-jr4a2", "my-nginx-3800858182-kna2y"]


# --- selectors ------------------------------------------------------------------------------------------

SELECTOR_PODS = {
    "a": {"app": "web", "tier": "front", "rank": "3"},
    "b": {"app": "web", "tier": "back", "rank": "7"},
    "c": {"app": "db"},
    "d": {},
}


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", ["a", "b"]),
    ("app==web", ["a", "b"]),
    ("app!=web", ["c", "d"]),  # an absent key satisfies !=
    ("app in (web, db)", ["a", "b", "c"]),
    ("tier notin (front)", ["b", "c", "d"]),
    ("tier", ["a", "b"]),
    ("!tier", ["c", "d"]),
    ("app=web,tier=back", ["b"]),
    ("app=web,!tier", []),
    ("rank>5", ["b"]),
    ("rank<5", ["a"]),
    ("", ["a", "b", "c", "d"]),
])
def test_label_selectors(tmp_path: Path, selector: str, expected: list[str]) -> None:
    with FakeApiServer(pods_with_labels(SELECTOR_PODS)) as srv:
        api_client = make_client(srv, tmp_path)
        try:
            got = raw(client.CoreV1Api(api_client).list_namespaced_pod, "sel", label_selector=selector)
        finally:
            api_client.close()
    assert [i["metadata"]["name"] for i in got["items"]] == expected


@pytest.mark.parametrize("bad", ["app in web", "app=web,", "=web", "app=a b", "Bad Key"])
def test_unparsable_label_selector_is_a_bad_request(api: Any, bad: str) -> None:
    with pytest.raises(client.ApiException) as caught:
        client.CoreV1Api(api).list_namespaced_pod("default", label_selector=bad)
    body = status_of(caught.value)
    assert (caught.value.status, body["reason"], body["code"]) == (400, "BadRequest", 400)
    assert body["message"].startswith("unable to parse requirement: ")


def test_parse_label_selector_keeps_prefixed_keys() -> None:
    (req,) = parse_label_selector("kubernetes.io/service-name=my-nginx")
    assert (req.key, req.op, req.values) == ("kubernetes.io/service-name", "=", ("my-nginx",))


@pytest.mark.parametrize(("selector", "expected"), [
    ("metadata.name=my-nginx", [("default", "my-nginx"), ("other", "my-nginx")]),
    ("metadata.name==my-nginx,metadata.namespace=other", [("other", "my-nginx")]),
    ("metadata.namespace!=default", [("kube-system", "kube-dns"), ("other", "my-nginx")]),
    ("spec.type=NodePort", [("default", "my-nginx-nodeport")]),
])
def test_field_selectors_on_services(api: Any, selector: str, expected: list[tuple[str, str]]) -> None:
    got = raw(client.CoreV1Api(api).list_service_for_all_namespaces, field_selector=selector)
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in got["items"]] == expected


@pytest.mark.parametrize(("selector", "expected"), [
    ("spec.nodeName=kubernetes-minion-ljyd", ["my-nginx-3800858182-kna2y", "other-nginx-6d4cf56db6-x2x8p"]),
    ("status.phase=Running,metadata.namespace=default",
     ["my-nginx-3800858182-jr4a2", "my-nginx-3800858182-kna2y"]),
    ("status.phase!=Running", []),
])
def test_field_selectors_on_pods(api: Any, selector: str, expected: list[str]) -> None:
    got = raw(client.CoreV1Api(api).list_pod_for_all_namespaces, field_selector=selector)
    assert [i["metadata"]["name"] for i in got["items"]] == expected


def test_unsupported_field_is_refused_as_the_real_server_does(api: Any) -> None:
    with pytest.raises(client.ApiException) as caught:
        client.CoreV1Api(api).list_namespaced_service("default", field_selector="spec.nodeName=x")
    assert caught.value.status == 400
    assert status_of(caught.value)["message"] == "field label not supported: spec.nodeName"


# --- paging ---------------------------------------------------------------------------------------------

@pytest.fixture
def seven_pods() -> list[dict[str, Any]]:
    return pods_with_labels({f"p{i}": {"app": "web" if i % 2 else "db"} for i in range(7)})


def test_limit_and_continue_page_through_a_consistent_list(tmp_path: Path, seven_pods: list[Any]) -> None:
    with FakeApiServer(seven_pods) as srv:
        api_client = make_client(srv, tmp_path)
        core = client.CoreV1Api(api_client)
        try:
            whole = raw(core.list_namespaced_pod, "sel")
            pages, token = [], None
            while True:
                kwargs = {"_continue": token} if token else {}
                page = raw(core.list_namespaced_pod, "sel", limit=3, **kwargs)
                pages.append(page)
                token = page["metadata"].get("continue")
                if not token:
                    break
        finally:
            api_client.close()
        queries = [r.query for r in srv.requests[1:]]
    assert [len(p["items"]) for p in pages] == [3, 3, 1]
    assert [p["metadata"].get("remainingItemCount") for p in pages] == [4, 1, None]
    assert {p["metadata"]["resourceVersion"] for p in pages} == {whole["metadata"]["resourceVersion"]}
    assert [i["metadata"]["name"] for p in pages for i in p["items"]] == \
        [i["metadata"]["name"] for i in whole["items"]]
    assert "continue" not in queries[0] and queries[1]["continue"] and queries[1]["limit"] == "3"


def test_remaining_item_count_is_omitted_with_selectors(tmp_path: Path, seven_pods: list[Any]) -> None:
    with FakeApiServer(seven_pods) as srv:
        api_client = make_client(srv, tmp_path)
        try:
            page = raw(client.CoreV1Api(api_client).list_namespaced_pod, "sel", limit=1,
                       label_selector="app=web")
        finally:
            api_client.close()
    assert page["metadata"]["continue"] and "remainingItemCount" not in page["metadata"]


def test_expired_continue_token_is_410_with_a_fresh_token(tmp_path: Path, seven_pods: list[Any]) -> None:
    with FakeApiServer(seven_pods) as srv:
        api_client = make_client(srv, tmp_path)
        core = client.CoreV1Api(api_client)
        try:
            first = raw(core.list_namespaced_pod, "sel", limit=3)
            srv.expire_continue_tokens()
            with pytest.raises(client.ApiException) as caught:
                core.list_namespaced_pod("sel", limit=3, _continue=first["metadata"]["continue"])
            body = status_of(caught.value)
            # the token offered with the 410 continues (inconsistently) from where the old one stopped
            rest = raw(core.list_namespaced_pod, "sel", _continue=body["metadata"]["continue"])
        finally:
            api_client.close()
    assert (caught.value.status, body["reason"], body["code"]) == (410, "Expired", 410)
    assert body["message"].startswith("The provided continue parameter is too old")
    assert [i["metadata"]["name"] for i in rest["items"]] == ["p3", "p4", "p5", "p6"]


def test_garbage_continue_token_is_a_bad_request(api: Any) -> None:
    with pytest.raises(client.ApiException) as caught:
        client.CoreV1Api(api).list_namespaced_pod("default", _continue="not-a-token")
    assert caught.value.status == 400
    assert status_of(caught.value)["message"].startswith("invalid continue token")


# --- discovery ------------------------------------------------------------------------------------------

def test_discovery_documents(api: Any) -> None:
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    core = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"services", "endpoints", "pods", "nodes", "configmaps", "namespaces"} <= set(core)
    assert core["services"].namespaced and not core["nodes"].namespaced and core["pods"].kind == "Pod"
    groups = {g.name: g.preferred_version.group_version
              for g in client.ApisApi(api).get_api_versions().groups}
    assert groups == {"discovery.k8s.io": "discovery.k8s.io/v1", "networking.k8s.io": "networking.k8s.io/v1"}
    disc = client.DiscoveryV1Api(api).get_api_resources()
    assert disc.group_version == "discovery.k8s.io/v1"
    assert [r.name for r in disc.resources] == ["endpointslices"]
    assert client.VersionApi(api).get_code().git_version == "v1.30.2"


def test_switching_endpointslices_off_removes_the_group(tmp_path: Path) -> None:
    with fixture_cluster(serve_endpointslices=False) as srv:
        api_client = make_client(srv, tmp_path)
        try:
            groups = [g.name for g in client.ApisApi(api_client).get_api_versions().groups]
            with pytest.raises(client.ApiException) as caught:
                client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice("default")
            legacy = client.CoreV1Api(api_client).read_namespaced_endpoints("my-nginx", "default")
        finally:
            api_client.close()
    assert groups == ["networking.k8s.io"]
    assert caught.value.status == 404
    assert status_of(caught.value)["message"] == "the server could not find the requested resource"
    assert sorted(a.ip for a in legacy.subsets[0].addresses) == ["10.244.2.5", "10.244.3.4"]


# --- authentication, authorization, writes -------------------------------------------------------------

@pytest.mark.parametrize("token", ["wrong-token", ""])
def test_bad_or_missing_token_is_401(server: FakeApiServer, tmp_path: Path, token: str) -> None:
    api_client = make_client(server, tmp_path, token=token)
    try:
        with pytest.raises(client.ApiException) as caught:
            client.VersionApi(api_client).get_code()
    finally:
        api_client.close()
    assert caught.value.status == 401
    assert status_of(caught.value) == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                       "status": "Failure", "message": "Unauthorized",
                                       "reason": "Unauthorized", "code": 401}


def test_forbidden_list_has_the_real_message(tmp_path: Path) -> None:
    with fixture_cluster(forbid=[("list", "pods", "default")]) as srv:
        api_client = make_client(srv, tmp_path)
        core = client.CoreV1Api(api_client)
        try:
            with pytest.raises(client.ApiException) as caught:
                core.list_namespaced_pod("default")
            other = core.list_namespaced_pod("other")  # another namespace is still allowed
            one = core.read_namespaced_pod("my-nginx-3800858182-jr4a2", "default")  # and so is get
        finally:
            api_client.close()
    body = status_of(caught.value)
    assert caught.value.status == 403
    assert body["message"] == (f'pods is forbidden: User "{DEFAULT_USER}" cannot list resource "pods" '
                               'in API group "" in the namespace "default"')
    assert (body["reason"], body["details"]) == ("Forbidden", {"kind": "pods"})
    assert len(other.items) == 1 and one.metadata.name == "my-nginx-3800858182-jr4a2"


def test_forbidden_get_at_cluster_scope_and_in_a_group(tmp_path: Path) -> None:
    forbid = [("get", "nodes", None), ("list", "endpointslices", None)]
    with fixture_cluster(forbid=forbid, user="system:serviceaccount:x:y") as srv:
        api_client = make_client(srv, tmp_path)
        try:
            with pytest.raises(client.ApiException) as node_err:
                client.CoreV1Api(api_client).read_node("kubernetes-master")
            with pytest.raises(client.ApiException) as slice_err:
                client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice("default")
        finally:
            api_client.close()
    assert status_of(node_err.value)["message"] == (
        'nodes "kubernetes-master" is forbidden: User "system:serviceaccount:x:y" cannot get resource '
        '"nodes" in API group "" at the cluster scope')
    assert status_of(slice_err.value)["message"] == (
        'endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:x:y" cannot list '
        'resource "endpointslices" in API group "discovery.k8s.io" in the namespace "default"')


def test_cluster_scope_deny_blocks_lists_across_namespaces_only(tmp_path: Path) -> None:
    with fixture_cluster(forbid=[("list", "services", "")]) as srv:
        api_client = make_client(srv, tmp_path)
        core = client.CoreV1Api(api_client)
        try:
            with pytest.raises(client.ApiException) as caught:
                core.list_service_for_all_namespaces()
            in_ns = core.list_namespaced_service("default")
        finally:
            api_client.close()
    assert caught.value.status == 403 and "at the cluster scope" in status_of(caught.value)["message"]
    assert len(in_ns.items) == 3


def test_writes_are_refused_and_recorded(server: FakeApiServer, api: Any) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    with pytest.raises(client.ApiException) as caught:
        client.CoreV1Api(api).create_namespaced_config_map("default", cm)
    assert caught.value.status == 405
    assert status_of(caught.value)["reason"] == "MethodNotAllowed"
    assert [(r.method, r.path, r.verb) for r in server.requests] == [
        ("POST", "/api/v1/namespaces/default/configmaps", "post")]
    left = client.CoreV1Api(api).list_namespaced_config_map("default").items
    assert "x" not in [c.metadata.name for c in left]


def test_requests_are_recorded_with_query_and_user_agent(server: FakeApiServer, api: Any) -> None:
    api.user_agent = "svctrace-test/1"
    client.CoreV1Api(api).list_namespaced_pod("default", label_selector="run=my-nginx", limit=5)
    client.CoreV1Api(api).read_namespaced_service("my-nginx", "default")
    (lst, get) = server.requests
    assert (lst.method, lst.path, lst.verb) == ("GET", "/api/v1/namespaces/default/pods", "list")
    assert lst.query == {"labelSelector": "run=my-nginx", "limit": "5"}
    assert (get.verb, get.path, get.user_agent) == ("get", "/api/v1/namespaces/default/services/my-nginx",
                                                    "svctrace-test/1")
    assert get.authorization == f"Bearer {server.token}"


# --- failure knobs and TLS ------------------------------------------------------------------------------

def test_delay_makes_a_client_timeout(tmp_path: Path) -> None:
    with fixture_cluster(delay=5.0) as srv:
        api_client = make_client(srv, tmp_path)
        try:
            with pytest.raises(urllib3.exceptions.ReadTimeoutError):
                # (connect, read): the client before 36 ignores a float timeout.
                client.VersionApi(api_client).get_code(_request_timeout=(0.2, 0.2))
        finally:
            api_client.close()
        assert len(srv.requests) == 1


def test_close_without_answer_drops_the_connection(tmp_path: Path) -> None:
    with fixture_cluster(close_without_answer=True) as srv:
        api_client = make_client(srv, tmp_path)
        try:
            with pytest.raises(urllib3.exceptions.ProtocolError):
                client.VersionApi(api_client).get_code(_request_timeout=2)
        finally:
            api_client.close()


def test_tls_with_the_kubeconfig_ca(tmp_path: Path) -> None:
    with fixture_cluster(tls=True) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        api_client = make_client(srv, tmp_path)
        try:
            svc = client.CoreV1Api(api_client).read_namespaced_service("my-nginx", "default")
        finally:
            api_client.close()
    assert svc.spec.cluster_ip == "10.0.162.149"


def test_tls_without_the_ca_is_refused_by_the_client(tmp_path: Path) -> None:
    with fixture_cluster(tls=True) as srv:
        cfg = client.Configuration(host=srv.url)
        cfg.retries = False
        api_client = client.ApiClient(cfg)
        try:
            with pytest.raises(client.ApiException) as caught:
                client.VersionApi(api_client).get_code(_request_timeout=2)
        finally:
            api_client.close()
    assert caught.value.status == 0 and "CERTIFICATE_VERIFY_FAILED" in str(caught.value.reason)


def test_server_listens_on_loopback_only() -> None:
    with fixture_cluster() as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=2):
            pass
        assert srv.url == f"http://127.0.0.1:{srv.port}"
