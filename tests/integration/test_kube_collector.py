"""The live API collector against the fake kube-apiserver, through the real client and real kubeconfigs."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml

from svctrace.collectors.kube import MAX_NODE_GETS, PAGE_SIZE, KubeCollector
from svctrace.collectors.kube_http import _transport_reason
from svctrace.errors import (
    ApiUnreachableError,
    AuthError,
    ForbiddenError,
    InputError,
    KubeconfigError,
    NotFoundError,
)
from tests.harness.apiserver import DEFAULT_USER, FakeApiServer, RecordedRequest, fixture_cluster

MY_NGINX_PLAN = [
    ("get", "/api/v1/namespaces/default/services/my-nginx"),
    ("list", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"),
    ("list", "/api/v1/namespaces/default/pods"),
    ("get", "/api/v1/nodes/kubernetes-minion-905m"),
    ("get", "/api/v1/nodes/kubernetes-minion-ljyd"),
    ("get", "/api/v1/namespaces/kube-system/configmaps/coredns"),
]


def collector(server: FakeApiServer, tmp_path: Path, *, namespace: str | None = "default",
              timeout: float = 5.0, **kubeconfig: Any) -> KubeCollector:
    """A collector reading only the kubeconfig the server wrote (the test's own environment is ignored)."""
    path = server.write_kubeconfig(tmp_path / "kubeconfig", namespace=namespace, **kubeconfig)
    return KubeCollector(kubeconfig=path, timeout=timeout, environ={}, home=tmp_path / "home")


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with fixture_cluster() as srv:
        yield srv


def scaled_cluster(pods: int, nodes: int) -> list[dict[str, Any]]:
    """Service shop/web with ``pods`` ready backends spread over ``nodes`` nodes, 100 endpoints per slice."""
    objs: list[dict[str, Any]] = [{
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.0.50.1", "clusterIPs": ["10.0.50.1"],
                 "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]},
    }]
    objs += [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{n:02d}"},
              "status": {"addresses": [{"type": "InternalIP", "address": f"10.240.1.{n + 1}"}]}}
             for n in range(nodes)]
    endpoints = []
    for i in range(pods):
        ip, node = f"10.244.{i // 250}.{i % 250 + 2}", f"node-{i % nodes:02d}"
        objs.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"web-{i:04d}", "namespace": "shop", "labels": {"app": "web"}},
                     "spec": {"nodeName": node, "containers": [{"name": "web", "image": "nginx"}]},
                     "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
        endpoints.append({"addresses": [ip], "conditions": {"ready": True}, "nodeName": node,
                          "targetRef": {"kind": "Pod", "namespace": "shop", "name": f"web-{i:04d}"}})
    for n, start in enumerate(range(0, pods, 100)):
        objs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                     "metadata": {"name": f"web-{n:05d}", "namespace": "shop",
                                  "labels": {"kubernetes.io/service-name": "web"}},
                     "addressType": "IPv4", "endpoints": endpoints[start:start + 100],
                     "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]})
    return objs


# --- the request plan -----------------------------------------------------------------------------------

def test_collect_service_makes_the_planned_gets_only(server: FakeApiServer, tmp_path: Path) -> None:
    with collector(server, tmp_path) as kube:
        got = kube.collect_service(None, "my-nginx")
    assert server.verbs() == MY_NGINX_PLAN
    assert {r.method for r in server.requests} == {"GET"}
    assert all(r.user_agent.startswith("svctrace/") for r in server.requests)
    slices, pods = server.requests[1].query, server.requests[2].query
    assert slices == {"labelSelector": "kubernetes.io/service-name=my-nginx", "limit": str(PAGE_SIZE)}
    assert pods == {"labelSelector": "run=my-nginx", "limit": str(PAGE_SIZE)}
    assert got.requests == len(MY_NGINX_PLAN)
    assert (got.warnings, got.missing) == ((), ())
    assert got.target.namespace == "default" and got.target.server == server.url


def test_collect_service_returns_model_and_raw_documents(server: FakeApiServer, tmp_path: Path) -> None:
    with collector(server, tmp_path) as kube:
        got = kube.collect_service("default", "my-nginx")
    objs = got.objects
    assert [s.ref for s in objs.services] == ["default/my-nginx"]
    assert [s.name for s in objs.endpoint_slices] == ["my-nginx-7vzhx"]
    assert sorted(p.name for p in objs.pods) == ["my-nginx-3800858182-jr4a2", "my-nginx-3800858182-kna2y"]
    assert sorted(n.name for n in objs.nodes) == ["kubernetes-minion-905m", "kubernetes-minion-ljyd"]
    assert [c.name for c in objs.config_maps] == ["coredns"]
    # list items arrive without kind/apiVersion; the collector stamps them as kubectl get -o json does
    assert {(d["apiVersion"], d["kind"]) for d in got.raw["endpointslices"]} == {
        ("discovery.k8s.io/v1", "EndpointSlice")}
    assert {(d["apiVersion"], d["kind"]) for d in got.raw["pods"]} == {("v1", "Pod")}
    docs = got.list_documents()
    assert docs["services"]["kind"] == "List"
    assert [i["metadata"]["name"] for i in docs["services"]["items"]] == ["my-nginx"]


@pytest.mark.parametrize("pods", [3, 300])
def test_request_count_does_not_grow_with_the_service(tmp_path: Path, pods: int) -> None:
    with FakeApiServer(scaled_cluster(pods, nodes=3)) as srv, \
            collector(srv, tmp_path, namespace="shop") as kube:
        got = kube.collect_service(None, "web")
        plan = srv.verbs()
    assert plan == [
        ("get", "/api/v1/namespaces/shop/services/web"),
        ("list", "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"),
        ("list", "/api/v1/namespaces/shop/pods"),
        ("get", "/api/v1/nodes/node-00"), ("get", "/api/v1/nodes/node-01"), ("get", "/api/v1/nodes/node-02"),
        ("get", "/api/v1/namespaces/kube-system/configmaps/coredns"),
    ]
    assert len(got.objects.pods) == pods
    assert sum(len(s.endpoints) for s in got.objects.endpoint_slices) == pods
    # kube-system/coredns is not in this cluster: noted, not an error
    assert got.missing == ("configmaps kube-system/coredns (not found)",)


def test_endpoints_on_many_nodes_are_read_with_one_list(tmp_path: Path) -> None:
    nodes = MAX_NODE_GETS + 12
    with FakeApiServer(scaled_cluster(300, nodes=nodes)) as srv, \
            collector(srv, tmp_path, namespace="shop") as kube:
        got = kube.collect_service(None, "web")
        plan = srv.verbs()
    assert [v for v, _ in plan] == ["get", "list", "list", "list", "get"]
    assert plan[3] == ("list", "/api/v1/nodes")
    assert len(got.objects.nodes) == nodes


def test_this_node_is_fetched_too(server: FakeApiServer, tmp_path: Path) -> None:
    with collector(server, tmp_path) as kube:
        got = kube.collect_service(None, "my-nginx", node_name="kubernetes-master")
    assert ("get", "/api/v1/nodes/kubernetes-master") in server.verbs()
    assert "kubernetes-master" in [n.name for n in got.objects.nodes]


def test_a_node_that_does_not_exist_is_a_warning(server: FakeApiServer, tmp_path: Path) -> None:
    with collector(server, tmp_path) as kube:
        got = kube.collect_service(None, "my-nginx", node_name="ghost")
    assert got.warnings == ('node "ghost" named by an endpoint or --node does not exist',)


def test_selectorless_service_skips_pods(server: FakeApiServer, tmp_path: Path) -> None:
    with collector(server, tmp_path) as kube:
        got = kube.collect_service(None, "kubernetes")
    assert server.verbs() == [
        ("get", "/api/v1/namespaces/default/services/kubernetes"),
        ("list", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"),
        ("get", "/api/v1/namespaces/kube-system/configmaps/coredns"),
    ]
    assert [s.name for s in got.objects.endpoint_slices] == ["kubernetes"]


def test_external_name_service_reads_no_endpoints(server: FakeApiServer, tmp_path: Path) -> None:
    server.add({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "db.example.com"}})
    with collector(server, tmp_path) as kube:
        kube.collect_service(None, "db")
    assert [v for v, _ in server.verbs()] == ["get", "get"]


def test_endpoints_fallback_where_slices_are_not_served(tmp_path: Path) -> None:
    with fixture_cluster(serve_endpointslices=False) as srv, collector(srv, tmp_path) as kube:
        got = kube.collect_service(None, "my-nginx")
        plan = srv.verbs()
    assert plan == [
        ("get", "/api/v1/namespaces/default/services/my-nginx"),
        ("list", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"),
        ("get", "/api/v1/namespaces/default/endpoints/my-nginx"),
        *MY_NGINX_PLAN[2:],
    ]
    assert got.objects.endpoint_slices == ()
    assert got.objects.legacy_endpoints
    assert {s.service_name for s in got.objects.legacy_endpoints} == {"my-nginx"}
    assert [d["kind"] for d in got.raw["endpoints"]] == ["Endpoints"]


# --- collect_all, paging, completion --------------------------------------------------------------------

def test_collect_all_lists_each_kind_once(server: FakeApiServer, tmp_path: Path) -> None:
    with collector(server, tmp_path) as kube:
        got = kube.collect_all(None)
    assert server.verbs() == [
        ("list", "/api/v1/services"),
        ("list", "/apis/discovery.k8s.io/v1/endpointslices"),
        ("list", "/api/v1/pods"),
        ("list", "/api/v1/nodes"),
        ("list", "/apis/networking.k8s.io/v1/networkpolicies"),
        ("get", "/api/v1/namespaces/kube-system/configmaps/coredns"),
        ("get", "/api/v1/namespaces/kube-system/configmaps/kube-proxy"),
    ]
    assert all(r.query.get("limit") == str(PAGE_SIZE) for r in server.requests if r.verb == "list")
    assert {k: len(v) for k, v in got.raw.items()} == {
        "services": 5, "endpointslices": 4, "pods": 3, "nodes": 3, "networkpolicies": 1, "configmaps": 2}
    assert [p.name for p in got.objects.network_policies] == ["same-namespace-only"]


def test_collect_all_without_documents_types_the_same_and_keeps_none(server: FakeApiServer, tmp_path: Path) -> None:
    # audit and why-unreachable: the objects typed as they come or once read, no documents kept for capture
    with collector(server, tmp_path) as kube:
        whole = kube.collect_all(None)
        typed = kube.collect_all(None, documents=False)
    assert typed.raw == {}
    assert typed.objects == whole.objects


def test_collect_all_in_one_namespace(server: FakeApiServer, tmp_path: Path) -> None:
    with collector(server, tmp_path) as kube:
        got = kube.collect_all("other")
    assert ("list", "/api/v1/namespaces/other/pods") in server.verbs()
    assert [s.ref for s in got.objects.services] == ["other/my-nginx"]


def test_collect_all_falls_back_to_endpoints(tmp_path: Path) -> None:
    with fixture_cluster(serve_endpointslices=False) as srv, collector(srv, tmp_path) as kube:
        got = kube.collect_all("default")
        plan = srv.verbs()
    assert plan[1:3] == [("list", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"),
                         ("list", "/api/v1/namespaces/default/endpoints")]
    assert len(got.raw["endpoints"]) == 2 and "endpointslices" not in got.raw
    assert any("discovery.k8s.io/v1" in w for w in got.warnings)


def test_collect_all_pages_large_lists(tmp_path: Path) -> None:
    with FakeApiServer(scaled_cluster(1200, nodes=3)) as srv, collector(srv, tmp_path) as kube:
        got = kube.collect_all("shop")
        pod_requests = [r for r in srv.requests if r.path == "/api/v1/namespaces/shop/pods"]
    assert len(got.raw["pods"]) == 1200
    assert len({d["metadata"]["name"] for d in got.raw["pods"]}) == 1200
    assert len(pod_requests) == 3
    assert "continue" not in pod_requests[0].query and all(r.query["continue"] for r in pod_requests[1:])


def expiring_once(pods: int) -> FakeApiServer:
    """A server of ``scaled_cluster(pods)`` whose continue tokens expire at the first page of pods after the first."""
    state = {"expired": False}
    srv = FakeApiServer(scaled_cluster(pods, nodes=3))

    def expire_mid_list(req: RecordedRequest) -> None:
        if req.path.endswith("/pods") and "continue" in req.query and not state["expired"]:
            state["expired"] = True
            srv.expire_continue_tokens()

    srv.on_request = expire_mid_list
    return srv


def test_an_expired_list_is_restarted_once(tmp_path: Path) -> None:
    srv = expiring_once(1200)
    with srv, collector(srv, tmp_path) as kube:
        got = kube.collect_all("shop")
        pod_requests = [r for r in srv.requests if r.path == "/api/v1/namespaces/shop/pods"]
    assert len(pod_requests) == 5  # page 1, page 2 (410), then pages 1-3 again
    assert sorted(d["metadata"]["name"] for d in got.raw["pods"]) == [f"web-{i:04d}" for i in range(1200)]


def test_completion_lists(server: FakeApiServer, tmp_path: Path) -> None:
    with collector(server, tmp_path) as kube:
        assert kube.list_namespaces() == ["default", "kube-system", "other"]
        assert kube.list_service_names() == ["kubernetes", "my-nginx", "my-nginx-nodeport"]
        assert kube.list_service_names("other") == ["my-nginx"]


# --- kubeconfig resolution ------------------------------------------------------------------------------

@pytest.fixture
def two_clusters() -> Iterator[tuple[FakeApiServer, FakeApiServer]]:
    with fixture_cluster() as a, fixture_cluster(token="token-b") as b:
        yield a, b


def test_kubeconfig_list_first_file_wins(two_clusters: tuple[FakeApiServer, FakeApiServer],
                                         tmp_path: Path) -> None:
    a, b = two_clusters
    first = a.write_kubeconfig(tmp_path / "a.yaml", context_name="alpha", namespace="default")
    second = b.write_kubeconfig(tmp_path / "b.yaml", context_name="beta", namespace="other")
    # a later file that redefines "alpha" must not override the first file's "alpha"
    shadow = b.write_kubeconfig(tmp_path / "shadow.yaml", context_name="alpha", current=False)
    env = {"KUBECONFIG": ":".join(map(str, [first, tmp_path / "missing.yaml", second, shadow]))}
    home = tmp_path / "home"

    with KubeCollector(environ=env, home=home) as kube:
        target = kube.target
        kube.collect_service(None, "my-nginx")
    # kubectl takes current-context from the first file that sets it (alpha), not the last (beta)
    assert (target.context, target.server, target.namespace) == ("alpha", a.url, "default")
    assert a.requests and not b.requests

    with KubeCollector(context="beta", environ=env, home=home) as kube:
        got = kube.collect_service(None, "my-nginx")
    assert (kube.target.server, kube.target.namespace) == (b.url, "other")
    assert [s.ref for s in got.objects.services] == ["other/my-nginx"]
    assert all(r.authorization == "Bearer token-b" for r in b.requests)
    assert kube.target.origin == f"KUBECONFIG={env['KUBECONFIG']}"


def test_namespace_argument_beats_the_context(two_clusters: tuple[FakeApiServer, FakeApiServer],
                                               tmp_path: Path) -> None:
    a, _ = two_clusters
    path = a.write_kubeconfig(tmp_path / "a.yaml", namespace="other")
    with KubeCollector(kubeconfig=path, namespace="kube-system", environ={}, home=tmp_path) as kube:
        assert kube.target.namespace == "kube-system"
    with KubeCollector(kubeconfig=path, environ={}, home=tmp_path) as kube:
        assert kube.target.namespace == "other"
    no_ns = a.write_kubeconfig(tmp_path / "plain.yaml")
    with KubeCollector(kubeconfig=no_ns, environ={}, home=tmp_path) as kube:
        assert kube.target.namespace == "default"


def test_explicit_kubeconfig_beats_env_and_home(two_clusters: tuple[FakeApiServer, FakeApiServer],
                                                tmp_path: Path) -> None:
    a, b = two_clusters
    home = tmp_path / "home"
    b.write_kubeconfig(home / ".kube" / "config")
    env_file = b.write_kubeconfig(tmp_path / "env.yaml")
    explicit = a.write_kubeconfig(tmp_path / "explicit.yaml")
    with KubeCollector(kubeconfig=explicit, environ={"KUBECONFIG": str(env_file)}, home=home) as kube:
        assert kube.target.server == a.url
    with KubeCollector(environ={"KUBECONFIG": str(explicit)}, home=home) as kube:
        assert kube.target.server == a.url  # KUBECONFIG set: ~/.kube/config is not read
    with KubeCollector(environ={}, home=home) as kube:
        assert kube.target.server == b.url
        assert kube.target.origin == f"kubeconfig {home / '.kube' / 'config'}"


def test_in_cluster_service_account(tmp_path: Path) -> None:
    with fixture_cluster(tls=True) as srv:
        assert srv.ca_file is not None
        sa = tmp_path / "serviceaccount"
        sa.mkdir()
        (sa / "token").write_text(srv.token)
        shutil.copy(srv.ca_file, sa / "ca.crt")
        (sa / "namespace").write_text("other")
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(srv.port)}
        with KubeCollector(environ=env, home=tmp_path / "home", serviceaccount_dir=sa) as kube:
            got = kube.collect_service(None, "my-nginx")
            target = kube.target
        auth = {r.authorization for r in srv.requests}
    assert (target.server, target.namespace, target.context) == (srv.url, "other", None)
    assert target.origin.startswith("in-cluster service account")
    assert [s.ref for s in got.objects.services] == ["other/my-nginx"]
    assert auth == {f"bearer {srv.token}"}


def test_pod_namespace_env_beats_the_namespace_file(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    for name, text in (("token", "t"), ("ca.crt", "not used before a request"), ("namespace", "other")):
        (sa / name).write_text(text)
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443", "POD_NAMESPACE": "shop"}
    with KubeCollector(environ=env, home=tmp_path, serviceaccount_dir=sa) as kube:
        assert (kube.target.server, kube.target.namespace) == ("https://10.0.0.1:443", "shop")


# --- errors: finding the cluster ------------------------------------------------------------------------

def test_no_kubeconfig_anywhere(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError) as caught:
        KubeCollector(environ={}, home=tmp_path, serviceaccount_dir=tmp_path / "sa").collect_service(
            None, "x")
    err = caught.value
    assert str(tmp_path / ".kube" / "config") in err.message and "\n" not in err.message
    assert err.hint is not None
    assert all(word in err.hint for word in ("--kubeconfig", "KUBECONFIG", "--from SNAPSHOT"))


def test_kubeconfig_env_naming_only_missing_files(tmp_path: Path) -> None:
    env = {"KUBECONFIG": f"{tmp_path}/x:{tmp_path}/y"}
    with pytest.raises(KubeconfigError, match="KUBECONFIG=.*names no existing file"):
        _ = KubeCollector(environ=env, home=tmp_path).target


def test_in_cluster_env_without_a_token_is_not_in_cluster(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeconfigError, match="no kubeconfig found"):
        _ = KubeCollector(environ=env, home=tmp_path, serviceaccount_dir=tmp_path / "sa").target


def test_explicit_kubeconfig_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="does not exist"):
        _ = KubeCollector(kubeconfig=tmp_path / "nope", environ={}, home=tmp_path).target


def test_unknown_context(server: FakeApiServer, tmp_path: Path) -> None:
    path = server.write_kubeconfig(tmp_path / "k", context_name="prod")
    with pytest.raises(KubeconfigError) as caught:
        _ = KubeCollector(kubeconfig=path, context="staging", environ={}, home=tmp_path).target
    assert caught.value.message == f'context "staging" not found in kubeconfig {path}'
    assert caught.value.hint == "pass --context with one of: prod"
    assert server.requests == []


def test_no_current_context(server: FakeApiServer, tmp_path: Path) -> None:
    path = server.write_kubeconfig(tmp_path / "k", context_name="prod", current=False)
    with pytest.raises(KubeconfigError, match="has no current-context") as caught:
        _ = KubeCollector(kubeconfig=path, environ={}, home=tmp_path).target
    assert caught.value.hint is not None and "--context NAME (one of: prod)" in caught.value.hint


def test_malformed_kubeconfig_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken"
    path.write_text("apiVersion: v1\nclusters:\n  - name: [unclosed\n")
    with pytest.raises(InputError) as caught:
        _ = KubeCollector(kubeconfig=path, environ={}, home=tmp_path).target
    assert caught.value.path == str(path) and caught.value.line is not None


def test_context_with_a_missing_cluster_entry(server: FakeApiServer, tmp_path: Path) -> None:
    path = server.write_kubeconfig(tmp_path / "k")
    doc = yaml.safe_load(path.read_text())
    doc["clusters"] = []
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(KubeconfigError, match='context "fake" in kubeconfig .* cannot be used'):
        _ = KubeCollector(kubeconfig=path, environ={}, home=tmp_path).target


# --- errors: talking to the cluster ---------------------------------------------------------------------

def test_nothing_listening(tmp_path: Path) -> None:
    srv = fixture_cluster()
    kube = collector(srv, tmp_path)
    url = srv.url
    srv.stop()  # the port is now closed: connections are refused
    with kube, pytest.raises(ApiUnreachableError) as caught:
        kube.collect_service(None, "my-nginx")
    assert caught.value.message == (f"cannot reach the API server at {url}: connection refused "
                                    '(get services "my-nginx" in namespace "default")')
    assert caught.value.hint is not None and "kubectl cluster-info" in caught.value.hint


def test_server_slower_than_the_timeout_fails_once_without_retries(tmp_path: Path) -> None:
    with fixture_cluster(delay=30.0) as srv:
        with collector(srv, tmp_path, timeout=0.3) as kube, pytest.raises(ApiUnreachableError) as caught:
            kube.collect_service(None, "my-nginx")
        assert len(srv.requests) == 1
    assert caught.value.message == (f"cannot reach the API server at {srv.url}: no complete answer within the "
                                    '--request-timeout 0.3s (get services "my-nginx" in namespace "default")')


def test_a_socket_timeout_says_what_the_deadline_says() -> None:
    # The socket's timeout and the request's deadline are the same length: whichever fires first, one sentence.
    pool = urllib3.HTTPConnectionPool("localhost")
    for exc in (TimeoutError("timed out"), urllib3.exceptions.ReadTimeoutError(pool, "/", "timed out"),
                urllib3.exceptions.MaxRetryError(pool, "/", urllib3.exceptions.ConnectTimeoutError())):
        assert _transport_reason(exc, 0.3, "--request-timeout 0.3s") == (
            "no complete answer within the --request-timeout 0.3s"), exc


def test_connection_closed_without_answer(tmp_path: Path) -> None:
    with fixture_cluster(close_without_answer=True) as srv:
        with collector(srv, tmp_path) as kube, \
                pytest.raises(ApiUnreachableError, match="closed before the answer was complete"):
            kube.collect_service(None, "my-nginx")
        assert len(srv.requests) == 1


def test_tls_with_the_wrong_ca(tmp_path: Path) -> None:
    with fixture_cluster(tls=True) as srv, fixture_cluster(tls=True) as impostor_ca:
        path = srv.write_kubeconfig(tmp_path / "k")
        doc = yaml.safe_load(path.read_text())
        other = yaml.safe_load(impostor_ca.write_kubeconfig(tmp_path / "other").read_text())
        doc["clusters"][0]["cluster"]["certificate-authority-data"] = \
            other["clusters"][0]["cluster"]["certificate-authority-data"]
        path.write_text(yaml.safe_dump(doc))
        expected = r"^TLS with the API server at https://127\.0\.0\.1:\d+ failed: .*certificate verify failed"
        with KubeCollector(kubeconfig=path, environ={}, home=tmp_path) as kube, \
                pytest.raises(ApiUnreachableError, match=expected):
            kube.collect_service(None, "my-nginx")


def test_insecure_skip_verify_does_not_leak_urllib3_warnings(tmp_path: Path) -> None:
    with fixture_cluster(tls=True) as srv, collector(srv, tmp_path, insecure=True) as kube, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = kube.collect_service(None, "my-nginx")
    assert [s.name for s in got.objects.services] == ["my-nginx"]
    assert [str(w.message) for w in caught] == []


def test_rejected_credentials(server: FakeApiServer, tmp_path: Path) -> None:
    with collector(server, tmp_path, token="expired") as kube, pytest.raises(AuthError) as caught:
        kube.collect_service(None, "my-nginx")
    assert caught.value.message == (f"the API server at {server.url} rejected the credentials "
                                    "(401 Unauthorized)")
    assert caught.value.hint is not None and "kubectl get --raw /version" in caught.value.hint
    assert len(server.requests) == 1


def test_forbidden_endpointslices_fall_back_to_endpoints_and_name_the_rule(tmp_path: Path) -> None:
    with fixture_cluster(forbid=[("list", "endpointslices", "default")]) as srv, collector(srv, tmp_path) as kube:
        got = kube.collect_service(None, "my-nginx")
        plan = srv.verbs()
    assert plan[1:3] == [("list", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"),
                         ("get", "/api/v1/namespaces/default/endpoints/my-nginx")]
    assert {s.service_name for s in got.objects.legacy_endpoints} == {"my-nginx"}
    assert got.warnings[0] == (
        'not allowed to list endpointslices (discovery.k8s.io) in namespace "default" (403 Forbidden): read the '
        "v1 Endpoints instead (what kube-proxy read before 1.19; dual-stack and topology details may be missing); "
        'to allow it, add a Role rule: apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], '
        'verbs: ["list"]')


def test_forbidden_endpointslices_and_endpoints_is_fatal_and_names_the_rule(tmp_path: Path) -> None:
    forbid = [("list", "endpointslices", "default"), ("get", "endpoints", "default")]
    with fixture_cluster(forbid=forbid) as srv, collector(srv, tmp_path) as kube, \
            pytest.raises(ForbiddenError) as caught:
        kube.collect_service(None, "my-nginx")
    err = caught.value
    assert err.message == (f'not allowed to get endpoints "my-nginx" in namespace "default" for {DEFAULT_USER} '
                           "(403 Forbidden); svctrace cannot answer without it")
    assert err.hint == 'ask for a Role rule: apiGroups: [""], resources: ["endpoints"], verbs: ["get"]'
    assert (err.verb, err.resource, err.group, err.namespace) == ("get", "endpoints", "", "default")


def test_forbidden_service_get_is_fatal(tmp_path: Path) -> None:
    with fixture_cluster(forbid=[("get", "services", None)]) as srv, \
            collector(srv, tmp_path) as kube, pytest.raises(ForbiddenError) as caught:
        kube.collect_service(None, "my-nginx")
    assert caught.value.hint == ('ask for a Role rule: apiGroups: [""], resources: ["services"], '
                                 'verbs: ["get"]')


def test_forbidden_optional_reads_give_a_partial_answer(tmp_path: Path) -> None:
    forbid = [("list", "pods", "default"), ("get", "nodes", None), ("get", "configmaps", "kube-system")]
    with fixture_cluster(forbid=forbid) as srv, collector(srv, tmp_path) as kube:
        got = kube.collect_service(None, "my-nginx")
        plan = srv.verbs()
    assert plan == MY_NGINX_PLAN  # refusals do not change what is asked
    assert [s.name for s in got.objects.endpoint_slices] == ["my-nginx-7vzhx"]
    assert (got.objects.pods, got.objects.nodes, got.objects.config_maps) == ((), (), ())
    assert got.missing == (
        'list pods in namespace "default" (forbidden)',
        'get nodes "kubernetes-minion-905m" (forbidden)',
        'get nodes "kubernetes-minion-ljyd" (forbidden)',
        'get configmaps "coredns" in namespace "kube-system" (forbidden)',
    )
    assert got.warnings[0] == (
        'not allowed to list pods in namespace "default" (403 Forbidden): pod details (readiness, restarts, '
        "container ports) are missing, so this answer is partial; to allow it, add a Role rule: "
        'apiGroups: [""], resources: ["pods"], verbs: ["list"]')
    assert 'a ClusterRole rule: apiGroups: [""], resources: ["nodes"], verbs: ["get"]' in got.warnings[1]
    assert 'resources: ["configmaps"], verbs: ["get"]' in got.warnings[3]


def test_service_not_found_suggests_close_names(server: FakeApiServer, tmp_path: Path) -> None:
    with collector(server, tmp_path) as kube, pytest.raises(NotFoundError) as caught:
        kube.collect_service(None, "my-ngnix")
    assert caught.value.message == 'Service "my-ngnix" not found in namespace "default"'
    assert caught.value.hint == 'did you mean "my-nginx"?'
    # the two extra LISTs happen only on this path
    assert server.verbs() == [
        ("get", "/api/v1/namespaces/default/services/my-ngnix"),
        ("list", "/api/v1/namespaces/default/services"),
        ("list", "/api/v1/services"),
    ]
    assert server.requests[2].query["fieldSelector"] == "metadata.name=my-ngnix"


def test_service_not_found_points_at_other_namespaces(server: FakeApiServer, tmp_path: Path) -> None:
    with collector(server, tmp_path) as kube, pytest.raises(NotFoundError) as caught:
        kube.collect_service("kube-system", "my-nginx")
    assert caught.value.hint == 'a Service "my-nginx" exists in namespace "default", "other" (use -n default)'


def test_not_found_suggestions_survive_a_refused_cluster_wide_list(tmp_path: Path) -> None:
    with fixture_cluster(forbid=[("list", "services", "")]) as srv, collector(srv, tmp_path) as kube:
        with pytest.raises(NotFoundError) as caught:
            kube.collect_service(None, "my-nginx-nodeprt")
        plan = srv.verbs()
    assert plan[-1] == ("list", "/api/v1/services")  # asked, refused, and not turned into the error
    assert caught.value.hint == 'did you mean "my-nginx-nodeport" or "my-nginx"?'


def test_service_not_found_with_nothing_close(server: FakeApiServer, tmp_path: Path) -> None:
    with collector(server, tmp_path) as kube, pytest.raises(NotFoundError) as caught:
        kube.collect_service(None, "zzz")
    assert caught.value.hint == "list the Services with: kubectl get services -n default"


def test_forbidden_completion_list(tmp_path: Path) -> None:
    with fixture_cluster(forbid=[("list", "namespaces", None)]) as srv, collector(srv, tmp_path) as kube, \
            pytest.raises(ForbiddenError, match="list namespaces"):
        kube.list_namespaces()
