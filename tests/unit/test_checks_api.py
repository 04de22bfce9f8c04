"""The API-side checks of why-unreachable: each code is the top finding of a scenario built for it,
and the healthy demo raises no error or warning for any of its Services."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

import svctrace.diagnosis.checks  # noqa: F401  (registers the catalog)
from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.diagnosis.diagnose import Diagnosis, diagnose
from svctrace.diagnosis.findings import ERROR, INFO, WARNING
from svctrace.diagnosis.registry import CATALOG, Client
from tests.snapshots import make_snapshot

NODE = "node-a"


def svc(name: str = "web", *, selector: dict[str, str] | None = None, ports: list[dict[str, Any]] | None = None,
        ns: str = "default", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"clusterIP": "10.96.0.50", "ports": ports or [{"port": 80, "targetPort": 8080}]}
    if selector is not None:
        body["selector"] = selector
    status = spec.pop("status", {})
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": body,
            "status": status}


def pod(name: str, ip: str, *, labels: dict[str, str] | None = None, ready: bool = True, node: str = "node-b",
        ports: list[dict[str, Any]] | None = None, ns: str = "default", phase: str = "Running",
        statuses: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns,
                                                            "labels": labels or {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "app", "ports": ports or []}]},
            "status": {"phase": phase, "podIP": ip, "conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": statuses or [{"name": "app", "ready": ready, "restartCount": 0,
                                                          "state": {"running": {}}}]}}


def eps(service: str, endpoints: list[tuple[str, str, dict[str, bool]]], *, port: int | None = 8080,
        ns: str = "default", node: str = "node-b", port_name: str = "") -> dict[str, Any]:
    """An EndpointSlice: (ip, pod name, conditions) per endpoint."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{service}-abcde", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": [ip], "conditions": cond, "nodeName": node,
                           "targetRef": {"kind": "Pod", "name": pname, "namespace": ns}}
                          for ip, pname, cond in endpoints],
            "ports": [] if port is None else [{"name": port_name, "port": port, "protocol": "TCP"}]}


READY = {"ready": True, "serving": True, "terminating": False}
NOT_READY = {"ready": False, "serving": False, "terminating": False}
TERMINATING = {"ready": False, "serving": True, "terminating": True}


def run(objects: list[dict[str, Any]], target: str = "web", client: Client | None = None) -> Diagnosis:
    snap = make_snapshot(yaml.safe_dump_all(objects), node=NODE)
    return diagnose(snap, target, namespace="default", client=client)


def top(diag: Diagnosis, code: str, severity: str) -> None:
    assert diag.findings, "no findings at all"
    first = diag.findings[0]
    assert (first.code, first.severity) == (code, severity), [(f.code, f.severity, f.title) for f in diag.findings]
    assert first.evidence and first.hint


def test_selector_typo_names_the_label_key_that_differs() -> None:
    d = run([svc(selector={"run": "my-nginx"}), pod("p1", "10.0.1.5", labels={"app": "my-nginx"})])
    top(d, "selector-matches-no-pods", ERROR)
    f = d.findings[0]
    assert "svc default/web spec.selector: run=my-nginx" in f.evidence
    assert "pod default/p1 labels: app=my-nginx" in f.evidence
    assert "the pods have app=my-nginx, the selector says run=my-nginx" in f.evidence
    assert d.verdict == "unreachable"


def test_no_ready_endpoints_names_the_crash_looping_pod_and_its_restarts() -> None:
    crash = [{"name": "app", "ready": False, "restartCount": 7,
              "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]
    d = run([svc(selector={"app": "web"}), pod("p1", "10.0.1.5", ready=False, statuses=crash),
             eps("web", [("10.0.1.5", "p1", NOT_READY)])])
    top(d, "no-ready-endpoints", ERROR)
    f = d.findings[0]
    assert "crash-looping" in f.title
    assert any("pod default/p1" in e and "CrashLoopBackOff" in e and "restarted 7 times" in e for e in f.evidence)
    assert f.hint == "read why it crashes: `kubectl logs p1 -n default --previous`"


def test_no_ready_endpoints_explains_a_failing_readiness_probe_and_pending_pods() -> None:
    d = run([svc(selector={"app": "web"}), pod("p1", "10.0.1.5", ready=False),
             eps("web", [("10.0.1.5", "p1", NOT_READY)])])
    top(d, "no-ready-endpoints", ERROR)
    assert any("readiness probe fails" in e for e in d.findings[0].evidence)
    pending = pod("p2", "", ready=False, phase="Pending", statuses=[{"name": "app"}])
    pending["spec"].pop("nodeName")
    d = run([svc(selector={"app": "web"}), pending])
    top(d, "no-ready-endpoints", ERROR)
    assert "Pending" in d.findings[0].title
    assert "pod default/p2: Pending, not scheduled to any node" in d.findings[0].evidence


def test_only_terminating_endpoints_is_a_warning() -> None:
    d = run([svc(selector={"app": "web"}), pod("p1", "10.0.1.5", ready=False),
             eps("web", [("10.0.1.5", "p1", TERMINATING)])])
    top(d, "only-terminating-endpoints", WARNING)
    assert d.verdict == "degraded"


def test_selectorless_service_without_endpoints() -> None:
    d = run([svc("mysql", ports=[{"port": 3306}])], "mysql")
    top(d, "selectorless-without-endpoints", ERROR)
    assert "kind: Endpoints, name: mysql" in d.findings[0].hint


def test_named_target_port_no_pod_declares_is_an_error() -> None:
    d = run([svc(selector={"app": "web"}, ports=[{"port": 80, "targetPort": "http"}]),
             pod("p1", "10.0.1.5", ports=[{"containerPort": 8080, "name": "web"}]),
             eps("web", [("10.0.1.5", "p1", READY)], port=None)])
    top(d, "target-port-not-exposed", ERROR)
    assert "(unnamed)" not in " ".join(d.findings[0].evidence)
    assert any("web:8080/TCP" in e for e in d.findings[0].evidence)


def test_numeric_target_port_mismatch_is_a_warning_and_silent_without_declarations() -> None:
    objs = [svc(selector={"app": "web"}, ports=[{"port": 80, "targetPort": 8080}]),
            pod("p1", "10.0.1.5", ports=[{"containerPort": 80}]), eps("web", [("10.0.1.5", "p1", READY)])]
    d = run(objs)
    top(d, "target-port-not-exposed", WARNING)
    assert "set targetPort to it" in d.findings[0].hint and '"value":80' in d.findings[0].hint
    objs[1] = pod("p1", "10.0.1.5")  # declaring ports is optional: nothing to compare against
    assert run(objs).findings == ()


def test_protocol_mismatch_named_port_is_an_error() -> None:
    d = run([svc(selector={"app": "web"}, ports=[{"port": 53, "targetPort": "dns", "protocol": "TCP"}]),
             pod("p1", "10.0.1.5", ports=[{"containerPort": 53, "name": "dns", "protocol": "UDP"}]),
             eps("web", [("10.0.1.5", "p1", READY)], port=None)])
    top(d, "protocol-mismatch", ERROR)
    assert not any(f.code == "target-port-not-exposed" for f in d.findings)


def test_protocol_mismatch_numeric_port_is_a_warning() -> None:
    d = run([svc(selector={"app": "web"}, ports=[{"port": 53, "targetPort": 53, "protocol": "UDP"}]),
             pod("p1", "10.0.1.5", ports=[{"containerPort": 53, "protocol": "TCP"}]),
             eps("web", [("10.0.1.5", "p1", READY)], port=53)])
    top(d, "protocol-mismatch", WARNING)


@pytest.mark.parametrize(("external_name", "words"), [
    ("10.1.2.3", "points at the IP address 10.1.2.3"),
    ("db_host.example.com", "invalid DNS name"),
    ("db.prod.svc.cluster.local", "Service prod/db does not exist"),
    ("db.default.svc.corp.example", "outside the cluster domain cluster.local"),
])
def test_external_name_unresolvable(external_name: str, words: str) -> None:
    other = svc("other", selector={"app": "x"}, ns="prod")
    d = run([{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": "default"},
              "spec": {"type": "ExternalName", "externalName": external_name}}, other], "ext")
    top(d, "external-name-unresolvable", ERROR)
    assert words in d.findings[0].title


def test_external_name_to_an_existing_service_is_silent() -> None:
    d = run([{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": "default"},
              "spec": {"type": "ExternalName", "externalName": "db.prod.svc.cluster.local"}},
             svc("db", ns="prod")], "ext")
    assert not [f for f in d.findings if f.code == "external-name-unresolvable"]


def test_headless_service_without_ready_pods() -> None:
    d = run([svc(selector={"app": "web"}, clusterIP="None"), pod("p1", "10.0.1.5", ready=False),
             eps("web", [("10.0.1.5", "p1", NOT_READY)])])
    top(d, "headless-no-ready-pods", ERROR)
    assert "web.default.svc.cluster.local resolves to no address" in d.findings[0].title
    assert not any(f.code == "no-ready-endpoints" for f in d.findings)


def test_load_balancer_pending_is_a_warning() -> None:
    d = run([svc(selector={"app": "web"}, type="LoadBalancer",
                 ports=[{"port": 80, "targetPort": 8080, "nodePort": 31000}]),
             pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)])])
    top(d, "load-balancer-pending", WARNING)
    assert "and NodePorts 31000 still work" in d.findings[0].evidence[1]


POLICY_OBJECTS = [
    svc(selector={"app": "web"}), pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)]),
    pod("client", "10.0.2.9", labels={"app": "client"}, node=NODE),
    pod("api", "10.0.2.10", labels={"app": "api"}, node=NODE),
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "web-from-api", "namespace": "default"},
     "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
              "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}},
                                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.2.0/24"]}}],
                           "ports": [{"port": 8080}]}]}},
]


def _client(snap_objects: list[dict[str, Any]], name: str) -> Client:
    snap = make_snapshot(yaml.safe_dump_all(snap_objects), node=NODE)
    p = snap.pod("default", name)
    assert p is not None
    return Client(src=p.pod_ips[0], pod=p, origin="pod")


def test_network_policy_denies_a_client_no_rule_admits() -> None:
    d = run(POLICY_OBJECTS, client=_client(POLICY_OBJECTS, "client"))
    top(d, "network-policy-denies", ERROR)
    f = d.findings[0]
    assert "pod default/client" in f.title
    assert ("web-from-api admits pods app=api in default; ipBlock 10.0.0.0/8 except 10.0.2.0/24 on TCP/8080"
            in f.evidence)


def test_network_policy_admits_the_allowed_client_and_informs_without_one() -> None:
    assert run(POLICY_OBJECTS, client=_client(POLICY_OBJECTS, "api")).findings == ()
    d = run(POLICY_OBJECTS)
    top(d, "network-policy-denies", INFO)
    assert d.verdict == "reachable"


def test_network_policy_with_an_unknown_namespace_selector_cannot_tell() -> None:
    objs = [*POLICY_OBJECTS[:5], {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "web-from-team", "namespace": "default"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}}]
    d = run(objs, client=_client(objs, "client"))
    top(d, "network-policy-denies", WARNING)
    assert d.findings[0].title.startswith("cannot tell whether NetworkPolicy default/web-from-team admits")


def test_network_policy_deny_all_blocks_any_client() -> None:
    objs = [*POLICY_OBJECTS[:3], {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "default"}, "spec": {"podSelector": {}}}]
    d = run(objs)
    top(d, "network-policy-denies", ERROR)
    assert "deny-all admits nobody" in d.findings[0].evidence


DNS_OBJECTS = [
    svc("kube-dns", ns="kube-system", selector={"k8s-app": "kube-dns"},
        ports=[{"name": "dns", "port": 53, "protocol": "UDP"}]),
    pod("coredns-1", "10.0.0.3", ns="kube-system", labels={"k8s-app": "kube-dns"}, ready=False),
    eps("kube-dns", [("10.0.0.3", "coredns-1", NOT_READY)], ns="kube-system", port=53, port_name="dns"),
    svc(selector={"app": "web"}), pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)]),
]


def test_cluster_dns_without_endpoints_is_an_error_for_dns_names_and_a_warning_otherwise() -> None:
    top(run(DNS_OBJECTS, "web.default.svc.cluster.local"), "cluster-dns-no-endpoints", ERROR)
    d = run(DNS_OBJECTS, "web")
    top(d, "cluster-dns-no-endpoints", WARNING)
    assert "pod kube-system/coredns-1" in d.findings[0].evidence[1]


def test_cluster_domain_mismatch_with_the_corefile() -> None:
    corefile = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"},
                "data": {"Corefile": ".:53 {\n    kubernetes corp.internal in-addr.arpa ip6.arpa {\n    }\n}\n"}}
    d = run([*DNS_OBJECTS[3:], corefile], "http://web.default.svc.cluster.local:80/")
    top(d, "cluster-domain-mismatch", ERROR)
    assert d.findings[0].hint == "use web.default.svc.corp.internal (or just web.default)"
    assert run([*DNS_OBJECTS[3:], corefile], "web.default.svc.corp.internal").findings == ()


LOCAL_POLICY = [pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)])]  # its only pod is on node-b


def test_external_traffic_policy_local_without_a_local_endpoint() -> None:
    service = svc(selector={"app": "web"}, type="NodePort", externalTrafficPolicy="Local",
                  ports=[{"port": 80, "targetPort": 8080, "nodePort": 31000}])
    d = run([service, *LOCAL_POLICY])
    top(d, "external-traffic-policy-local-no-local-endpoints", WARNING)
    assert "1 ready endpoints, on node-b; none on this node node-a" in d.findings[0].evidence
    d = run([service, *LOCAL_POLICY], "192.168.0.2:31000")  # this node's NodePort
    top(d, "external-traffic-policy-local-no-local-endpoints", ERROR)
    local = [pod("p1", "10.0.1.5", node=NODE), eps("web", [("10.0.1.5", "p1", READY)], node=NODE)]
    assert run([service, *local]).findings == ()


def test_internal_traffic_policy_local_blocks_pods_on_this_node() -> None:
    objs = [svc(selector={"app": "web"}, internalTrafficPolicy="Local"), *LOCAL_POLICY,
            pod("client", "10.0.2.9", labels={"app": "client"}, node=NODE)]
    top(run(objs), "internal-traffic-policy-local-no-local-endpoints", WARNING)
    d = run(objs, client=_client(objs, "client"))
    top(d, "internal-traffic-policy-local-no-local-endpoints", ERROR)


def test_traffic_policy_findings_mark_the_dataplane_drop() -> None:
    """With the rules, the finding names the DROP hop the tree marks."""
    from svctrace.diagnosis.registry import CheckContext
    from svctrace.diagnosis.target import parse_target, resolve_target
    from svctrace.resolver import resolve

    snap = load_snapshot("tests/fixtures/overall")
    target = resolve_target(snap, parse_target("ns2/svc2", None), "default")
    ctx = CheckContext(snapshot=snap, target=target, graph=resolve(snap, "ns2", "svc2", None))
    found = list(CATALOG["external-traffic-policy-local-no-local-endpoints"].fn(ctx))
    assert [f.hops for f in found] == [("DROP",)]


def test_service_not_found_and_port_not_defined_come_first() -> None:
    objs = [svc(selector={"app": "web"}), pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)])]
    top(run(objs, "wbe"), "service-not-found", ERROR)
    top(run(objs, "web:8443"), "port-not-defined", ERROR)


def test_every_api_code_is_the_top_finding_of_some_test_here() -> None:
    import inspect
    import re
    import sys

    source = inspect.getsource(sys.modules[__name__])
    tested = set(re.findall(r'top\([^\n]*?"([a-z-]+)", (?:ERROR|WARNING|INFO)\)', source))
    api_codes = {c.code for c in CATALOG.values() if c.fn.__module__.endswith("checks.api")}
    assert len(api_codes) == 16
    assert api_codes - tested == set()


@pytest.mark.parametrize("ref", [s.ref for s in load_snapshot("demo").services])
def test_the_healthy_demo_raises_no_error_or_warning(ref: str) -> None:
    d = diagnose(load_snapshot("demo"), ref)
    assert [f for f in d.findings if f.severity in (ERROR, WARNING)] == []
    assert d.verdict == "reachable"
