"""Kubernetes objects (kubectl's JSON/YAML) -> the model: fields, Lists, old API shapes, and every error path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from svctrace.errors import InputError
from svctrace.model.k8s import (
    ContainerPort,
    ContainerStatus,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    LoadBalancerIngress,
    ObjectRef,
    ServicePort,
)
from svctrace.parsers.k8s import ApiObjects, decode_documents, merge_objects, parse_objects

SNAPSHOTS = Path(__file__).parent.parent / "fixtures" / "snapshots"
MIXED = SNAPSHOTS / "mixed" / "api" / "objects.yaml"


def parse_file(path: Path) -> ApiObjects:
    docs = decode_documents(path.read_text(), str(path), "json" if path.suffix == ".json" else "yaml")
    return parse_objects(docs, str(path))


def parse_yaml(text: str, source: str = "api/test.yaml") -> ApiObjects:
    return parse_objects(decode_documents(text, source, "yaml"), source)


def one(kind: str, body: dict[str, Any], name: str = "x", namespace: str = "ns") -> dict[str, Any]:
    api = {"EndpointSlice": "discovery.k8s.io/v1", "NetworkPolicy": "networking.k8s.io/v1"}.get(kind, "v1")
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace}, **body}


@pytest.fixture(scope="module")
def mixed() -> ApiObjects:
    return parse_file(MIXED)


# ---------------------------------------------------------------------------------------------- Services


def test_dual_stack_service_keeps_both_cluster_ips_and_named_target_port(mixed: ApiObjects) -> None:
    web = next(s for s in mixed.services if s.name == "web")
    assert web.cluster_ips == ("10.96.120.17", "fd00:10:96::7a1")
    assert web.ip_families == ("IPv4", "IPv6")
    assert web.ports == (ServicePort(port=80, protocol="TCP", name="http", target_port="http",
                                     app_protocol="http"),)
    assert web.selector == {"app.kubernetes.io/name": "web"}
    assert web.uid == "2d6bd1c4-4a8e-4f3b-a0c5-8a1f5b7e9c01"
    assert web.labels == {"app.kubernetes.io/name": "web"}


def test_headless_service(mixed: ApiObjects) -> None:
    svc = next(s for s in mixed.services if s.name == "web-headless")
    assert svc.cluster_ips == ("None",)
    assert svc.is_headless and svc.virtual_ips == ()
    assert svc.publish_not_ready_addresses is True
    assert svc.ports[0].target_port == 8080


def test_local_load_balancer_with_source_ranges_and_client_ip_affinity(mixed: ApiObjects) -> None:
    svc = next(s for s in mixed.services if s.name == "checkout")
    assert svc.type == "LoadBalancer"
    assert svc.external_traffic_policy == "Local"
    assert svc.health_check_node_port == 31987
    # The API lets a padded range through validation; kube-proxy trims it, so do we.
    assert svc.load_balancer_source_ranges == ("203.0.113.0/25", "198.51.100.0/24")
    assert svc.session_affinity == "ClientIP" and svc.session_affinity_timeout == 600
    assert svc.affinity_seconds == 600
    assert svc.load_balancer_ingress == (LoadBalancerIngress(ip="192.0.2.50", ip_mode="Proxy"),
                                         LoadBalancerIngress(hostname="checkout-1234.elb.example.com"))
    assert svc.ports[1] == ServicePort(port=9090, protocol="UDP", name="metrics", target_port="metrics",
                                       node_port=31090)


def test_selectorless_service_has_no_selector_and_its_endpoints_become_slices(mixed: ApiObjects) -> None:
    svc = next(s for s in mixed.services if s.name == "legacy-db")
    assert svc.selector is None
    slices = [s for s in mixed.legacy_endpoints if s.service_name == "legacy-db"]
    # one slice per subset and address family, like the EndpointSlice mirroring controller
    assert [(s.address_type, s.origin) for s in slices] == [("IPv4", "Endpoints"), ("IPv6", "Endpoints")]
    v4 = slices[0]
    assert [(e.addresses, e.conditions.ready, e.hostname) for e in v4.endpoints] == [
        (("192.168.50.10",), True, None),
        (("192.168.50.11",), True, "db-replica"),
        (("192.168.50.12",), False, None),  # notReadyAddresses
    ]
    assert v4.ports == (EndpointPort(port=5432, protocol="TCP", name="pg"),)
    assert slices[1].endpoints[0].addresses == ("2001:db8:50::10",)
    assert {s.namespace for s in slices} == {"shop"}
    assert len({s.name for s in slices}) == 2


def test_empty_selector_map_means_selectorless() -> None:
    objs = parse_objects([one("Service", {"spec": {"selector": {}, "ports": [{"port": 80}]}})], "t")
    assert objs.services[0].selector is None


def test_cluster_ip_used_when_cluster_ips_absent_and_defaults_filled() -> None:
    spec = {"clusterIP": "10.0.0.9", "ports": [{"port": 53, "protocol": "UDP"}]}
    objs = parse_objects([one("Service", {"spec": spec})], "t")
    svc = objs.services[0]
    assert svc.cluster_ips == ("10.0.0.9",)
    assert (svc.type, svc.external_traffic_policy, svc.internal_traffic_policy, svc.session_affinity) == (
        "ClusterIP", "Cluster", "Cluster", "None")
    assert svc.ports == (ServicePort(port=53, protocol="UDP"),)


@pytest.mark.parametrize(("written", "meant"), [("OnlyLocal", "Local"), ("Global", "Cluster"), ("Local", "Local")])
def test_old_external_traffic_policy_names(written: str, meant: str) -> None:
    objs = parse_objects([one("Service", {"spec": {"type": "NodePort", "externalTrafficPolicy": written}})], "t")
    assert objs.services[0].external_traffic_policy == meant


def test_external_name_service() -> None:
    objs = parse_objects([one("Service", {"spec": {"type": "ExternalName", "externalName": "db.example.com"}})], "t")
    assert objs.services[0].external_name == "db.example.com"
    assert objs.services[0].is_external_name


def test_missing_namespace_means_default() -> None:
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hand-written"}, "spec": {}}
    assert parse_objects([doc], "t").services[0].namespace == "default"


def test_unquoted_yaml_label_values_are_read_as_the_text_the_api_would_hold() -> None:
    objs = parse_yaml("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: n, labels: {canary: true, v: 2}}\n")
    assert objs.pods[0].labels == {"canary": "true", "v": "2"}


# ---------------------------------------------------------------------------------------------- slices


def test_endpoint_slice_v1(mixed: ApiObjects) -> None:
    v4 = next(s for s in mixed.endpoint_slices if s.name == "web-8xk2p")
    assert (v4.namespace, v4.service_name, v4.address_type, v4.managed_by, v4.origin) == (
        "shop", "web", "IPv4", "endpointslice-controller.k8s.io", "EndpointSlice")
    assert v4.endpoints[0] == Endpoint(
        addresses=("10.244.1.12",), conditions=EndpointConditions(ready=True, serving=True, terminating=False),
        node_name="worker-1", zone="eu-west-1a", target_ref=ObjectRef("Pod", "shop", "web-6c8f9d7b5-k2x9p"))
    terminating = v4.endpoints[1].conditions
    assert (terminating.is_ready, terminating.is_serving, terminating.is_terminating) == (False, True, True)
    assert v4.ports == (EndpointPort(port=8080, protocol="TCP", name="http", app_protocol="http"),)
    v6 = next(s for s in mixed.endpoint_slices if s.name == "web-v6r4t")
    assert v6.address_type == "IPv6" and v6.endpoints[0].addresses == ("fd00:10:244:1::c",)


def test_v1beta1_slice_from_a_typed_list_takes_node_and_zone_from_topology() -> None:
    objs = parse_file(SNAPSHOTS / "old-cluster" / "api" / "endpointslices-raw.json")
    (sl,) = objs.endpoint_slices
    assert (sl.namespace, sl.name, sl.service_name) == ("prod", "api-4hq7n", "api")
    assert [(e.node_name, e.zone, e.conditions.ready) for e in sl.endpoints] == [
        ("gke-pool-1-abc", "us-central1-a", True), ("gke-pool-1-def", "us-central1-b", False)]
    assert sl.ports == (EndpointPort(port=9000, name="grpc"),)


def test_slice_without_service_label_and_with_null_fields() -> None:
    doc = one("EndpointSlice", {"addressType": "IPv4", "endpoints": None,
                                "ports": [{"port": None, "name": None, "protocol": "UDP"}]})
    (sl,) = parse_objects([doc], "t").endpoint_slices
    assert sl.service_name is None and sl.endpoints == ()
    assert sl.ports == (EndpointPort(port=None, protocol="UDP", name=""),)


# ---------------------------------------------------------------------------------------------- pods, nodes


def test_pod_fields(mixed: ApiObjects) -> None:
    pod = next(p for p in mixed.pods if p.name == "web-6c8f9d7b5-k2x9p")
    assert pod.pod_ips == ("10.244.1.12", "fd00:10:244:1::c")
    assert (pod.node_name, pod.phase, pod.ready, pod.deleting, pod.host_network) == (
        "worker-1", "Running", True, False, False)
    # the sidecar (restartPolicy: Always) serves named ports; a plain init container does not
    assert pod.container_ports == (ContainerPort(8080, "TCP", "http", "web"),
                                   ContainerPort(15090, "TCP", "envoy-prom", "proxy"))
    assert pod.owner == "ReplicaSet/web-6c8f9d7b5"
    assert pod.container_statuses == (ContainerStatus("web", ready=True, restart_count=0, state="running"),)


def test_crashing_pod_being_deleted(mixed: ApiObjects) -> None:
    pod = next(p for p in mixed.pods if p.name == "web-6c8f9d7b5-q7m4z")
    assert pod.deleting and not pod.ready
    assert pod.container_statuses == (ContainerStatus("web", ready=False, restart_count=5, state="waiting",
                                                      reason="CrashLoopBackOff"),)


def test_pod_ip_fallback_host_network_and_controller_owner() -> None:
    doc = one("Pod", {"spec": {"hostNetwork": True, "nodeName": "n1"},
                      "status": {"podIP": "192.168.0.5", "phase": "Pending"}})
    doc["metadata"]["ownerReferences"] = [{"kind": "Node", "name": "n1"},
                                          {"kind": "DaemonSet", "name": "agent", "controller": True}]
    pod = parse_objects([doc], "t").pods[0]
    assert pod.pod_ips == ("192.168.0.5",) and pod.host_network
    assert pod.owner == "DaemonSet/agent"
    assert pod.container_statuses == () and pod.ready is False


def test_nodes(mixed: ApiObjects) -> None:
    w1, w2 = mixed.nodes
    assert w1.name == "worker-1"
    assert w1.ips == ("172.18.0.3", "fc00:f853:ccd:e793::3")
    assert w1.pod_cidrs == ("10.244.1.0/24", "fd00:10:244:1::/64")
    assert w1.zone == "eu-west-1a" and w1.ready is True
    assert w2.ready is None  # status Unknown: the node stopped reporting


def test_node_pod_cidr_fallback_and_not_ready() -> None:
    doc = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
           "spec": {"podCIDR": "10.1.0.0/24"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    node = parse_objects([doc], "t").nodes[0]
    assert node.pod_cidrs == ("10.1.0.0/24",) and node.ready is False


# ---------------------------------------------------------------------------------------------- config maps, policies


def test_coredns_config_map_kept_others_read_and_dropped() -> None:
    coredns = parse_file(SNAPSHOTS / "mixed" / "api" / "coredns.yaml")
    assert [(c.namespace, c.name) for c in coredns.config_maps] == [("kube-system", "coredns")]
    assert "kubernetes cluster.local" in coredns.config_maps[0].data["Corefile"]
    other = parse_objects([one("ConfigMap", {"data": {"big": "x" * 100, "nested": None}}, name="app-config")], "t")
    assert other.config_maps == () and other.ignored_kinds == {}
    assert other.objects_seen == 1


def test_network_policy(mixed: ApiObjects) -> None:
    (np,) = mixed.network_policies
    assert (np.namespace, np.name, np.policy_types) == ("shop", "checkout-ingress", ("Ingress",))
    assert np.pod_selector == {"matchLabels": {"app.kubernetes.io/name": "checkout"}}
    assert np.spec["ingress"][0]["ports"] == [{"port": 8443, "protocol": "TCP"}]  # type: ignore[index]


# ---------------------------------------------------------------------------------------------- Lists, kinds, formats


def test_mixed_list_counts(mixed: ApiObjects) -> None:
    assert (len(mixed.services), len(mixed.endpoint_slices), len(mixed.legacy_endpoints), len(mixed.pods),
            len(mixed.nodes), len(mixed.network_policies)) == (4, 3, 3, 2, 2, 1)
    assert mixed.objects_seen == 14 and mixed.ignored == 0 and mixed.warnings == ()


def test_json_and_yaml_of_the_same_objects_give_the_same_model() -> None:
    docs = list(yaml.safe_load_all(MIXED.read_text()))
    as_json = json.dumps(docs[0], indent=4)
    from_json = parse_objects(decode_documents(as_json, "objects.json", "json"), "objects.json")
    from_yaml = parse_objects(decode_documents(MIXED.read_text(), "objects.json", "yaml"), "objects.json")
    assert from_json == from_yaml
    assert len(from_json.services) == 4


def test_multi_document_yaml_and_concatenated_json() -> None:
    svc = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: n}\n"
    text = f"---\n{svc}---\n{svc.replace('name: a', 'name: b')}---\n"
    assert [s.name for s in parse_yaml(text).services] == ["a", "b"]
    first, second = json.dumps(one("Service", {}, name="c")), json.dumps(one("Service", {}, name="d"), indent=2)
    docs = decode_documents(f"{first}\n{second}\n", "appended.json", "json")
    assert [s.name for s in parse_objects(docs, "t").services] == ["c", "d"]


def test_other_kinds_are_counted_and_look_alike_custom_kinds_ignored() -> None:
    docs = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "e", "namespace": "n"}},
        # Knative's Service is not a core Service and must not become one
        {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "k", "namespace": "n"},
         "spec": {"ports": "not even a list"}},
        one("Service", {}, name="real"),
    ]
    objs = parse_objects(docs, "t")
    assert [s.name for s in objs.services] == ["real"]
    assert objs.ignored_kinds == {"Deployment.apps": 2, "Service.serving.knative.dev": 1}
    assert objs.ignored == 3 and objs.objects_seen == 4


def test_object_without_kind_is_skipped_with_a_warning() -> None:
    objs = parse_objects([{"metadata": {"name": "x"}}], "api/odd.yaml")
    assert objs.objects_seen == 1 and objs.services == ()
    assert objs.warnings == ("api/odd.yaml: an object without a kind was skipped",)


def test_secret_in_a_list_is_skipped_and_its_data_not_retained() -> None:
    marker = "c3VwZXItc2VjcmV0LXBhc3N3b3Jk"
    text = f"""apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Secret
  metadata: {{name: db-credentials-{marker[:6]}, namespace: shop}}
  data: {{password: {marker}}}
  stringData: {{token: {marker}}}
- apiVersion: v1
  kind: Service
  metadata: {{name: web, namespace: shop}}
"""
    objs = parse_yaml(text)
    assert [s.name for s in objs.services] == ["web"]
    assert objs.secrets_skipped == 1
    assert "Secret" not in objs.ignored_kinds
    assert marker not in repr(objs) and marker[:6] not in repr(objs)
    assert any("skipped 1 Secret" in w for w in objs.warnings)


def test_secret_list_items_are_skipped_too() -> None:
    doc = {"apiVersion": "v1", "kind": "SecretList",
           "items": [{"metadata": {"name": "s", "namespace": "n"}, "data": {"k": "dG9wc2VjcmV0"}}]}
    objs = parse_objects([doc], "t")
    assert objs.secrets_skipped == 1 and "dG9wc2VjcmV0" not in repr(objs)


def test_merge_keeps_the_first_copy_of_an_object_found_twice() -> None:
    a = parse_objects([one("Service", {"spec": {"clusterIP": "10.0.0.1"}}, name="web")], "a.yaml")
    b = parse_objects([one("Service", {"spec": {"clusterIP": "10.0.0.2"}}, name="web"),
                       one("Service", {}, name="other")], "b.yaml")
    merged = merge_objects([a, b])
    assert [(s.name, s.cluster_ips) for s in merged.services] == [("web", ("10.0.0.1",)), ("other", ())]
    assert merged.objects_seen == 3
    assert merged.warnings == ("Service ns/web appears 2 times in api/; the first one read is used",)


# ---------------------------------------------------------------------------------------------- errors


def test_bad_json_names_file_and_line() -> None:
    text = '{\n  "apiVersion": "v1",\n  "kind": "Service"\n  "metadata": {}\n}\n'
    with pytest.raises(InputError) as err:
        decode_documents(text, "snap/api/svc.json", "json")
    assert err.value.path == "snap/api/svc.json" and err.value.line == 4
    assert str(err.value).startswith("snap/api/svc.json:4: not valid JSON: Expecting ',' delimiter")
    assert err.value.hint


def test_bad_yaml_names_file_and_line() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {a: b\nspec: {}\n"
    with pytest.raises(InputError) as err:
        decode_documents(text, "snap/api/svc.yaml", "yaml")
    assert err.value.path == "snap/api/svc.yaml" and err.value.line == 6
    assert "not valid YAML" in str(err.value)
    assert "\n" not in str(err.value)


def test_non_object_document_is_an_error() -> None:
    with pytest.raises(InputError, match=r"api/x.yaml: document 1 is a string, not a Kubernetes object"):
        decode_documents("No resources found in default namespace.\n", "api/x.yaml", "yaml")


@pytest.mark.parametrize(("spec", "field", "got"), [
    ({"ports": {"port": 80}}, "spec.ports", "a mapping"),
    ({"ports": [{"port": "http"}]}, r"spec.ports\[0\].port", "the string 'http'"),
    ({"ports": [{"port": 80}, {"port": True}]}, r"spec.ports\[1\].port", "a boolean"),
    ({"ports": [{"port": 80, "targetPort": 70000}]}, r"spec.ports\[0\].targetPort", "the integer 70000"),
    ({"ports": [{"port": 80, "protocol": "ICMP"}]}, r"spec.ports\[0\].protocol", "the string 'ICMP'"),
    ({"clusterIPs": "10.0.0.1"}, "spec.clusterIPs", "the string '10.0.0.1'"),
    ({"selector": ["app"]}, "spec.selector", "a list"),
    ({"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": "3h"}}},
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "the string '3h'"),
])
def test_wrong_field_type_names_file_object_and_field(spec: dict[str, Any], field: str, got: str) -> None:
    with pytest.raises(InputError, match=rf"^api/svc.yaml: Service shop/web: {field} must be .*, not {got}$") as err:
        parse_objects([one("Service", {"spec": spec}, name="web", namespace="shop")], "api/svc.yaml")
    assert err.value.hint and "kubectl get" in err.value.hint


def test_missing_port_is_named() -> None:
    with pytest.raises(InputError, match=r"Service ns/x: spec.ports\[0\].port is missing"):
        parse_objects([one("Service", {"spec": {"ports": [{"name": "http"}]}})], "t")


def test_wrong_types_in_other_kinds() -> None:
    with pytest.raises(InputError, match=r"EndpointSlice ns/x: endpoints\[0\].conditions.ready must be true or false"):
        parse_objects([one("EndpointSlice", {"endpoints": [{"addresses": ["10.0.0.1"],
                                                            "conditions": {"ready": "yes"}}]})], "t")
    with pytest.raises(InputError, match=r"Endpoints ns/x: subsets\[0\].addresses\[0\].ip must be an IP address"):
        parse_objects([one("Endpoints", {"subsets": [{"addresses": [{"ip": "db.local"}]}]})], "t")
    with pytest.raises(InputError, match=r"Pod ns/x: spec.containers\[0\].ports\[0\].containerPort must be"):
        parse_objects([one("Pod", {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": "80"}]}]}})],
                      "t")
    with pytest.raises(InputError, match=r"Node n: status.addresses must be a list"):
        parse_objects([{"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n"},
                        "status": {"addresses": "10.0.0.1"}}], "t")


def test_object_without_name_is_an_error() -> None:
    with pytest.raises(InputError, match=r"^t: a Service without metadata.name"):
        parse_objects([{"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "n"}}], "t")


def test_list_items_not_a_list_is_an_error() -> None:
    with pytest.raises(InputError, match=r"^t: List: items must be a list"):
        parse_objects([{"apiVersion": "v1", "kind": "List", "items": {"a": 1}}], "t")
