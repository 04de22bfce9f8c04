"""The policy checks: NetworkPolicy ingress, and traffic policy Local without a local endpoint."""

from __future__ import annotations

import pytest

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.diagnosis.checks import policy
from svctrace.diagnosis.findings import ERROR, INFO, WARNING
from svctrace.diagnosis.registry import CATALOG
from svctrace.model.snapshot import Snapshot
from svctrace.parsers.k8s import parse_objects
from tests.diagnoses import NODE, READY, client_of, eps, pod, run, svc, top

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


def test_network_policy_denies_a_client_no_rule_admits() -> None:
    d = run(POLICY_OBJECTS, client=client_of(POLICY_OBJECTS, "client"))
    top(d, "network-policy-denies", ERROR)
    f = d.findings[0]
    assert "pod default/client" in f.title
    assert ("web-from-api admits pods app=api in default; ipBlock 10.0.0.0/8 except 10.0.2.0/24 on TCP/8080"
            in f.evidence)


def test_network_policy_admits_the_allowed_client_and_informs_without_one() -> None:
    assert run(POLICY_OBJECTS, client=client_of(POLICY_OBJECTS, "api")).findings == ()
    d = run(POLICY_OBJECTS)
    top(d, "network-policy-denies", INFO)
    assert d.verdict == "reachable"


def test_network_policy_with_an_unknown_namespace_selector_cannot_tell() -> None:
    objs = [*POLICY_OBJECTS[:5], {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "web-from-team", "namespace": "default"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}}]
    d = run(objs, client=client_of(objs, "client"))
    top(d, "network-policy-denies", WARNING)
    assert d.findings[0].title.startswith("cannot tell whether NetworkPolicy default/web-from-team admits")


def test_network_policy_deny_all_blocks_any_client() -> None:
    objs = [*POLICY_OBJECTS[:3], {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "default"}, "spec": {"podSelector": {}}}]
    d = run(objs)
    top(d, "network-policy-denies", ERROR)
    assert "deny-all admits nobody" in d.findings[0].evidence


LOCAL_POLICY = [pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)])]  # its only pod is on node-b


def test_external_traffic_policy_local_without_a_local_endpoint() -> None:
    service = svc(selector={"app": "web"}, type="NodePort", externalTrafficPolicy="Local",
                  ports=[{"port": 80, "targetPort": 8080, "nodePort": 31000}])
    d = run([service, *LOCAL_POLICY])
    top(d, "external-traffic-policy-local-no-local-endpoints", WARNING)
    assert "1 ready endpoint, on node-b; none on this node node-a" in d.findings[0].evidence
    d = run([service, *LOCAL_POLICY], "192.168.0.2:31000")  # this node's NodePort
    top(d, "external-traffic-policy-local-no-local-endpoints", ERROR)
    local = [pod("p1", "10.0.1.5", node=NODE), eps("web", [("10.0.1.5", "p1", READY)], node=NODE)]
    assert run([service, *local]).findings == ()


def test_internal_traffic_policy_local_blocks_pods_on_this_node() -> None:
    objs = [svc(selector={"app": "web"}, internalTrafficPolicy="Local"), *LOCAL_POLICY,
            pod("client", "10.0.2.9", labels={"app": "client"}, node=NODE)]
    top(run(objs), "internal-traffic-policy-local-no-local-endpoints", WARNING)
    d = run(objs, client=client_of(objs, "client"))
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


def _policy(name: str, namespace: str = "default", selector: dict[str, object] | None = None,
            types: list[str] | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"podSelector": selector if selector is not None else {}}
    if types is not None:
        spec["policyTypes"] = types
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_the_policies_isolating_a_pod_are_every_one_that_selects_it_in_order() -> None:
    policies = [
        _policy("all"),                                                          # {}: every pod of the namespace
        _policy("web", selector={"matchLabels": {"app": "web"}}),
        _policy("web-egress", selector={"matchLabels": {"app": "web"}}, types=["Egress"]),  # not Ingress
        _policy("web-both", selector={"matchLabels": {"app": "web"}}, types=["Egress", "Ingress"]),
        _policy("db", selector={"matchLabels": {"app": "db"}}),
        _policy("web-elsewhere", "other", selector={"matchLabels": {"app": "web"}}),
        _policy("tier", selector={"matchLabels": {"tier": "front", "app": "web"}}),  # both pairs needed
        _policy("tier-only", selector={"matchLabels": {"tier": "front", "app": "db"}}),
        _policy("expr", selector={"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "x"]}]}),
        _policy("not-in", selector={"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
        _policy("number", selector={"matchLabels": {"version": 2}}),            # never equal to a label's text
        _policy("first-web", selector={"matchLabels": {"app": "web"}}),
    ]
    parsed = parse_objects([pod("p1", "10.0.1.5", labels={"app": "web", "tier": "front", "version": "2"}),
                            pod("p2", "10.0.1.6", labels={"app": "db"}), *policies], "f.json")
    s = Snapshot(pods=parsed.pods, network_policies=parsed.network_policies)
    p1, p2 = s.pods
    assert [np.name for np in policy._isolating(s, p1)] == ["all", "web", "web-both", "tier", "expr", "first-web"]
    assert [np.name for np in policy._isolating(s, p2)] == ["all", "db", "not-in"]


def test_a_selector_of_other_types_is_matched_as_before_not_indexed() -> None:
    # matchLabels values that are not strings (a list, a number; YAML gives both) cannot select a pod; they are
    # candidates for every pod of the namespace and refused by the selector check, as before, without an error.
    policies = [_policy("list", selector={"matchLabels": {"app": ["web"]}}),
                _policy("number-key", selector={"matchLabels": {1: "web"}}),
                _policy("web", selector={"matchLabels": {"app": "web"}})]
    parsed = parse_objects([pod("p1", "10.0.1.5", labels={"app": "web"}), *policies], "f.json")
    s = Snapshot(pods=parsed.pods, network_policies=parsed.network_policies)
    assert len(s.network_policies) == 3
    assert [np.name for np in policy._isolating(s, s.pods[0])] == ["web"]


def test_a_pods_policies_cost_its_candidates_not_every_policy_of_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2,000 policies in other namespaces or for other apps: a pod is matched against those that could select it
    # (each of its endpoint pods was matched against every policy of the cluster: 10k Services x 10 endpoints
    # with a policy each took an audit from 9 s to 40 s).
    objects = [pod("p1", "10.0.1.5", labels={"app": "web"}),
               *(_policy(f"other-{i}", f"ns{i % 50}", {"matchLabels": {"app": "web"}}) for i in range(1000)),
               *(_policy(f"app-{i}", selector={"matchLabels": {"app": f"a{i}"}}) for i in range(1000)),
               _policy("mine", selector={"matchLabels": {"app": "web"}})]
    parsed = parse_objects(objects, "f.json")
    s = Snapshot(pods=parsed.pods, network_policies=parsed.network_policies)
    calls = 0
    real = policy._label_selector

    def counted(sel: dict[str, object], labels: dict[str, str]) -> bool:
        nonlocal calls
        calls += 1
        return real(sel, labels)

    monkeypatch.setattr(policy, "_label_selector", counted)
    assert [np.name for np in policy._isolating(s, s.pods[0])] == ["mine"]
    assert calls == 1
