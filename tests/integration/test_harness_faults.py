"""The fake kube-apiserver's fault injection, as the real ``kubernetes`` client receives each fault.

Issue 14's campaign needs a server that fails the way real ones do: these pin what each fault puts on
the wire and what the client makes of it, so the product's fault handling is tested against faults a
cluster (or a proxy in front of one) really produces.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client

from tests.harness.apiserver import DEFAULT_USER, FakeApiServer, Fault, Rbac, RbacRule, fixture_cluster
from tests.harness.clients import api_client, collector_pod, raw, status_of


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with fixture_cluster() as srv:
        yield srv
    assert srv.live_threads() == []


@pytest.fixture
def api(server: FakeApiServer, tmp_path: Path) -> Iterator[Any]:
    api_client_ = api_client(server.write_kubeconfig(tmp_path / "kubeconfig", namespace="default"))
    yield api_client_
    api_client_.close()


def core(api: Any) -> Any:
    return client.CoreV1Api(api)


# --- Status failures, worded as kube-apiserver words them ------------------------------------------------

def test_forbidden_names_the_verb_resource_group_and_scope(server: FakeApiServer, api: Any) -> None:
    server.inject("/apis/discovery.k8s.io/v1/*endpointslices*", Fault.status(403))
    disc = client.DiscoveryV1Api(api)
    with pytest.raises(client.ApiException) as in_ns:
        disc.list_namespaced_endpoint_slice("default")
    with pytest.raises(client.ApiException) as everywhere:
        disc.list_endpoint_slice_for_all_namespaces()
    assert in_ns.value.status == 403
    assert status_of(in_ns.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'endpointslices.discovery.k8s.io is forbidden: User "{DEFAULT_USER}" cannot list resource '
                   '"endpointslices" in API group "discovery.k8s.io" in the namespace "default"',
        "reason": "Forbidden", "details": {"group": "discovery.k8s.io", "kind": "endpointslices"}, "code": 403}
    assert status_of(everywhere.value)["message"].endswith(
        'cannot list resource "endpointslices" in API group "discovery.k8s.io" at the cluster scope')
    # other paths are untouched
    assert core(api).read_namespaced_service("my-nginx", "default").metadata.name == "my-nginx"


@pytest.mark.parametrize(("code", "reason", "message"), [
    (401, "Unauthorized", "Unauthorized"),
    (404, "NotFound", 'services "my-nginx" not found'),
    (409, "Conflict", 'Operation cannot be fulfilled on services "my-nginx": the object has been modified; please '
                      "apply your changes to the latest version and try again"),
    (500, "InternalError", "Internal error occurred: etcdserver: request timed out"),
    (503, "ServiceUnavailable", "service unavailable"),
    (429, "TooManyRequests", "Too many requests, please try again later."),
])
def test_status_faults_carry_the_real_reason_and_message(server: FakeApiServer, api: Any, code: int, reason: str,
                                                         message: str) -> None:
    server.inject("/api/v1/namespaces/default/services/my-nginx", Fault.status(code))
    with pytest.raises(client.ApiException) as caught:
        core(api).read_namespaced_service("my-nginx", "default")
    body = status_of(caught.value)
    assert (caught.value.status, body["code"], body["reason"], body["message"]) == (code, code, reason, message)
    if code in (429, 503):
        assert caught.value.headers["Retry-After"] == "1"


def test_conflict_on_create_is_already_exists(server: FakeApiServer, api: Any) -> None:
    server.inject("/api/v1/namespaces/default/pods", Fault.status(409), verb="create")
    with pytest.raises(client.ApiException) as caught:
        core(api).create_namespaced_pod("default", collector_pod("collector-1", "kubernetes-minion-905m", ["true"]))
    assert status_of(caught.value)["message"] == 'pods "collector-1" already exists'
    assert status_of(caught.value)["reason"] == "AlreadyExists"
    assert server.get("Pod", "default", "collector-1") is None  # the fault answered; nothing was created


def test_message_can_be_given(server: FakeApiServer, api: Any) -> None:
    server.inject("*", Fault.status(500, message="Internal error occurred: the etcd cluster is on fire"))
    with pytest.raises(client.ApiException) as caught:
        core(api).list_namespaced_service("default")
    assert status_of(caught.value)["message"] == "Internal error occurred: the etcd cluster is on fire"


def test_times_verb_and_regex_narrow_the_fault(server: FakeApiServer, api: Any) -> None:
    first_two = server.inject(re.compile(r"/pods$"), Fault.status(500), verb="list", times=2)
    c = core(api)
    outcomes = []
    for _ in range(3):
        try:
            c.list_namespaced_pod("default")
            outcomes.append("ok")
        except client.ApiException as exc:
            outcomes.append(exc.status)
    assert outcomes == [500, 500, "ok"]
    assert first_two.hits == 2
    assert c.read_namespaced_pod("my-nginx-3800858182-jr4a2", "default").metadata.name  # a GET: not a list
    server.inject("/api/v1/namespaces/default/pods*", Fault.status(503), verb="GET")
    with pytest.raises(client.ApiException):
        c.read_namespaced_pod("my-nginx-3800858182-jr4a2", "default")
    server.clear_faults()
    assert len(c.list_namespaced_pod("default").items) == 2


def test_every_faulted_request_is_still_recorded(server: FakeApiServer, api: Any) -> None:
    server.inject("*", Fault.status(503))
    with pytest.raises(client.ApiException):
        core(api).list_namespaced_pod("default", label_selector="run=my-nginx")
    assert [(r.method, r.path, r.query) for r in server.requests] == [
        ("GET", "/api/v1/namespaces/default/pods", {"labelSelector": "run=my-nginx"})]


# --- bodies of the wrong shape -------------------------------------------------------------------------

def test_invalid_json(server: FakeApiServer, api: Any) -> None:
    server.inject("*", Fault.invalid_json())
    # JSONDecodeError from the client 36 on; before, the body is handed to the model, which refuses it
    with pytest.raises(ValueError):
        core(api).list_namespaced_service("default")


def test_a_list_a_null_and_any_json_value(server: FakeApiServer, api: Any) -> None:
    server.inject("*", Fault.json([]), times=1)
    # pydantic's ValidationError (client 36 on) and the older models' "Invalid value" are both ValueErrors
    with pytest.raises(ValueError, match="V1ServiceList|Invalid value for `items`"):
        core(api).list_namespaced_service("default")
    server.inject("*", Fault.json(None), times=1)
    assert core(api).list_namespaced_service("default") is None  # the client hands back None, silently


def test_an_object_whose_spec_is_a_list(server: FakeApiServer, api: Any) -> None:
    server.inject("/api/v1/namespaces/default/services", Fault.set_field("spec", []))
    doc = raw(core(api).list_namespaced_service, "default")
    assert [i["spec"] for i in doc["items"]] == [[], [], []]
    assert doc["kind"] == "ServiceList"
    if int(client.__version__.split(".")[0]) >= 36:  # the older models take a list for a spec without a word
        with pytest.raises(ValueError, match="V1ServiceSpec"):
            core(api).list_namespaced_service("default")


def test_items_that_are_not_a_list(server: FakeApiServer, api: Any) -> None:
    server.inject("*", Fault.set_field("items", {"a": 1}, each_item=False))
    assert raw(core(api).list_namespaced_service, "default")["items"] == {"a": 1}


def test_any_rewrite_with_mutate(server: FakeApiServer, api: Any) -> None:
    server.inject("/api/v1/namespaces/default/services/my-nginx", Fault.mutate(lambda d: {**d, "spec": "x"}))
    assert raw(core(api).read_namespaced_service, "my-nginx", "default")["spec"] == "x"


def test_deeply_nested_json(server: FakeApiServer, api: Any) -> None:
    server.inject("*", Fault.nested(50_000))
    resp = core(api).list_namespaced_service("default", _preload_content=False)
    try:
        body = resp.data
    finally:
        resp.release_conn()
    assert b'"items": [' + b"[" * 50_000 + b"]" * 50_000 + b", {" in body
    with pytest.raises(RecursionError):
        json.loads(body)


def test_absurdly_large_bodies(server: FakeApiServer, api: Any) -> None:
    size = 24 * 1024 * 1024
    server.inject("*", Fault.huge(size))
    resp = core(api).list_namespaced_service("default", _preload_content=False)
    try:
        assert resp.headers["Content-Length"] == str(size)
        body = resp.data
    finally:
        resp.release_conn()
    assert len(body) == size and json.loads(body)["items"] == []  # valid JSON: 24 MiB of whitespace
    server.clear_faults()
    server.inject("*", Fault.huge(4 * 1024 * 1024, fill="string", chunked=True))
    resp = core(api).list_namespaced_service("default", _preload_content=False)
    try:
        assert "Content-Length" not in resp.headers and resp.headers["Transfer-Encoding"] == "chunked"
        names = [i["metadata"]["name"] for i in json.loads(resp.data)["items"]]
    finally:
        resp.release_conn()
    assert len(names) == 1 and len(names[0]) > 4_000_000 and set(names[0]) == {"x"}


# --- bad delivery ---------------------------------------------------------------------------------------

def test_slow_drip_beats_a_per_read_timeout(server: FakeApiServer, api: Any) -> None:
    """Each read gets a byte well within 0.2 s, so a per-read timeout never fires: the whole takes longer."""
    expected = raw(core(api).list_namespaced_service, "default")
    size = len(json.dumps(expected))
    server.inject("*", Fault.drip(4000))
    started = time.monotonic()
    got = core(api).list_namespaced_service("default", _request_timeout=0.2)
    elapsed = time.monotonic() - started
    assert [s.metadata.name for s in got.items] == [i["metadata"]["name"] for i in expected["items"]]
    # a lower bound set by the rate (a tenth of a second's worth is sent every tenth of a second), not a speed test
    assert elapsed >= (size - 400) / 4000 > 0.2


def test_stall_after_headers_and_before_them(server: FakeApiServer, api: Any) -> None:
    server.inject("*", Fault.stall(), times=1)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        # a (connect, read) pair: the client before 36 ignores a float and would wait forever
        core(api).list_namespaced_service("default", _request_timeout=(0.3, 0.3))
    server.inject("*", Fault.stall(headers=False), times=1)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        # a (connect, read) pair: the client before 36 ignores a float and would wait forever
        core(api).list_namespaced_service("default", _request_timeout=(0.3, 0.3))


def test_a_stall_does_not_block_stopping_the_server(tmp_path: Path) -> None:
    srv = fixture_cluster().start()
    api_ = api_client(srv.write_kubeconfig(tmp_path / "kubeconfig"))
    srv.inject("*", Fault.stall())
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.CoreV1Api(api_).list_namespaced_service("default", _request_timeout=60)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        for _ in range(100):
            if srv.requests:
                break
            time.sleep(0.02)
        srv.stop()  # must return although a handler is stalled, and end that handler
        caller.join(timeout=10)
    finally:
        api_.close()
    assert not caller.is_alive() and srv.live_threads() == []
    assert len(errors) == 1 and isinstance(errors[0], urllib3.exceptions.ProtocolError)


def test_connection_reset_mid_body(server: FakeApiServer, api: Any) -> None:
    server.inject("*", Fault.reset(after=100))
    with pytest.raises(urllib3.exceptions.ProtocolError, match="Connection reset by peer"):
        core(api).list_namespaced_service("default")


def test_close_without_an_answer(server: FakeApiServer, api: Any) -> None:
    server.inject("*", Fault.close())
    with pytest.raises(urllib3.exceptions.ProtocolError, match="Remote end closed connection"):
        core(api).list_namespaced_service("default")


# --- paging that never ends ---------------------------------------------------------------------------

def test_repeated_continue_token(server: FakeApiServer, api: Any) -> None:
    server.inject("/api/v1/namespaces/default/services", Fault.repeat_continue())
    c = core(api)
    first = c.list_namespaced_service("default", limit=1)
    token = first.metadata._continue
    pages = [c.list_namespaced_service("default", limit=1, _continue=token) for _ in range(5)]
    assert token and {p.metadata._continue for p in pages} == {token}
    assert {p.items[0].metadata.name for p in pages} == {"my-nginx"}  # the same page, forever


def test_cycling_continue_tokens(server: FakeApiServer, api: Any) -> None:
    server.inject("/api/v1/namespaces/default/services", Fault.cycle_continue())
    c = core(api)
    token, tokens, names = None, [], []
    for _ in range(7):
        page = c.list_namespaced_service("default", limit=1, **({"_continue": token} if token else {}))
        token = page.metadata._continue
        tokens.append(token)
        names.append(page.items[0].metadata.name)
    assert all(tokens) and len(set(tokens)) == 2  # never ends, two tokens taking turns
    assert names == ["kubernetes", "my-nginx", "my-nginx-nodeport", "my-nginx", "my-nginx-nodeport", "my-nginx",
                     "my-nginx-nodeport"]


# --- RBAC ---------------------------------------------------------------------------------------------

def test_rbac_denies_creating_pods_with_the_real_message(server: FakeApiServer, api: Any) -> None:
    server.deny("create", "pods", namespace="default")
    with pytest.raises(client.ApiException) as caught:
        core(api).create_namespaced_pod("default", collector_pod("c-", "kubernetes-minion-905m", ["true"],
                                                                 generate=True))
    assert caught.value.status == 403
    assert status_of(caught.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'pods is forbidden: User "{DEFAULT_USER}" cannot create resource "pods" in API group "" in '
                   'the namespace "default"',
        "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403}
    assert [(r.method, r.k8s_verb) for r in server.writes()] == [("POST", "create")]
    assert server.objects("Pod", "default") == server.objects("Pod", "default")  # nothing new
    assert all(not p["metadata"]["name"].startswith("c-") for p in server.objects("Pod"))


def test_rbac_allow_list_and_subresources(tmp_path: Path) -> None:
    rbac = Rbac.only(RbacRule(("get", "list", "watch"), ("*",)),
                     RbacRule(("create", "delete", "get"), ("pods",), "tools"))
    with fixture_cluster(rbac=rbac) as srv:
        api_ = api_client(srv.write_kubeconfig(tmp_path / "kubeconfig"))
        c = client.CoreV1Api(api_)
        try:
            assert c.list_namespaced_service("default").items
            with pytest.raises(client.ApiException) as in_default:
                c.create_namespaced_pod("default", collector_pod("a", "n1", ["true"]))
            with pytest.raises(client.ApiException) as log:
                srv.rbac.deny("get", "pods/log")
                c.read_namespaced_pod_log("my-nginx-3800858182-jr4a2", "default")
            with pytest.raises(client.ApiException) as delete:
                c.delete_namespaced_pod("my-nginx-3800858182-jr4a2", "default")
        finally:
            api_.close()
    assert status_of(in_default.value)["message"].endswith(
        'cannot create resource "pods" in API group "" in the namespace "default"')
    assert status_of(log.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'pods "my-nginx-3800858182-jr4a2" is forbidden: User "{DEFAULT_USER}" cannot get resource '
                   '"pods/log" in API group "" in the namespace "default"',
        "reason": "Forbidden", "details": {"name": "my-nginx-3800858182-jr4a2", "kind": "pods"}, "code": 403}
    assert 'cannot delete resource "pods"' in status_of(delete.value)["message"]


def test_exec_is_authorized_as_get_over_websockets(server: FakeApiServer, api: Any) -> None:
    """v1.30 authorizes a WebSocket exec (a GET) as ``get pods/exec``; newer servers also check ``create``."""
    from kubernetes.stream import stream

    server.deny("get", "pods/exec")
    with pytest.raises(client.ApiException) as caught:
        stream(core(api).connect_get_namespaced_pod_exec, "my-nginx-3800858182-jr4a2", "default",
               command=["true"], stdout=True, stderr=True, stdin=False, tty=False)
    # the handshake fails: the client reports status 0 and the server's answer in the reason
    assert caught.value.status == 0 and "Handshake status 403 Forbidden" in str(caught.value.reason)
    assert 'cannot get resource \\"pods/exec\\"' in str(caught.value.reason) or \
        'cannot get resource "pods/exec"' in str(caught.value.reason)
    server.rbac = Rbac()
    server.exec_needs_create = True
    server.deny("create", "pods/exec")
    with pytest.raises(client.ApiException) as newer:
        stream(core(api).connect_get_namespaced_pod_exec, "my-nginx-3800858182-jr4a2", "default",
               command=["true"], stdout=True, stderr=True, stdin=False, tty=False)
    assert "cannot create resource" in str(newer.value.reason)
