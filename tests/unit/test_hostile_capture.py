"""Captures keep only what svctrace reads, and --redact leaves no name: canaries planted everywhere, then grepped.

Every free-text field of every kind svctrace reads gets a canary. In fields svctrace never reads (env
values, args, commands, volumes, annotations, last-applied configurations, managedFields, messages,
images...) the canary must be gone from a plain capture already; in the fields it does read (names,
labels, port names, hostnames, zones...) it must be gone from a redacted one. The capture runs through the
real CLI against the in-process fake API server; the node files are a small dump that names the canaries.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import svctrace.collectors.live
from svctrace.cli.app import app
from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.kubeproxy import naming
from svctrace.parsers.k8s import parse_objects
from svctrace.parsers.k8s_fields import READ_FIELDS, read_fields
from svctrace.parsers.snapshot import NodeInput
from tests.harness.apiserver import FakeApiServer
from tests.harness.started_node import StartedNode

NS, SVC, POD, NODE, PORT = "canary-ns-1", "canary-svc-2", "canary-pod-3", "canary-node-4", "canary-port-5"
UNREAD = "unread-secret-canary"  # planted where svctrace never looks: gone from every capture
READ = "canary"  # every name above has it: gone from a redacted capture


def secret(field: str) -> str:
    return f"{UNREAD}-{field}"


def meta(name: str, ns: str | None = NS, **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "name": name, "uid": "0b5e5f9a-canary-uid", "resourceVersion": "1",
        "labels": {"app": "canary-app", "canary-team/owner": "canary-owner"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps({"password": secret("la")}),
                        "note": secret("annotation")},
        "managedFields": [{"manager": secret("manager"), "fieldsV1": {"f:data": {secret("mf"): {}}}}],
        **extra}
    if ns is not None:
        m["namespace"] = ns
    return m


def container(name: str) -> dict[str, Any]:
    return {"name": name, "image": secret("image"), "command": [secret("command")], "args": [secret("args")],
            "env": [{"name": "PASSWORD", "value": secret("env")}, {"name": "X", "valueFrom": {"secretKeyRef": {
                "name": secret("secretref"), "key": "k"}}}],
            "envFrom": [{"secretRef": {"name": secret("envfrom")}}], "workingDir": secret("workdir"),
            "volumeMounts": [{"name": "v", "mountPath": secret("mount")}],
            "livenessProbe": {"exec": {"command": [secret("probe")]}},
            "ports": [{"name": PORT, "containerPort": 8080, "protocol": "TCP"}]}


OBJECTS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Service", "metadata": meta(SVC),
     "spec": {"type": "LoadBalancer", "clusterIP": "10.96.7.7", "clusterIPs": ["10.96.7.7"],
              "selector": {"app": "canary-app"},
              "ports": [{"name": PORT, "port": 80, "targetPort": PORT, "nodePort": 30007, "protocol": "TCP",
                         "appProtocol": "canary.example.com/proto"}],
              "loadBalancerClass": secret("lbclass")},
     "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7", "hostname": "canary-lb.example.com"}]},
                "conditions": [{"type": "X", "status": "True", "message": secret("svc-condition")}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": meta("canary-external"),
     "spec": {"type": "ExternalName", "externalName": "canary-db.canary-corp.example.com", "ports": [{"port": 5432}]}},
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
     "metadata": {**meta("canary-slice-6"), "labels": {"kubernetes.io/service-name": SVC}},
     "addressType": "IPv4",
     "endpoints": [{"addresses": ["10.244.7.7"], "conditions": {"ready": True}, "nodeName": NODE,
                    "zone": "canary-zone", "hostname": "canary-host",
                    "targetRef": {"kind": "Pod", "namespace": NS, "name": POD, "uid": "canary-uid"},
                    "hints": {"forZones": [{"name": secret("hint")}]}}],
     "ports": [{"name": PORT, "port": 8080, "protocol": "TCP", "appProtocol": "canary.example.com/proto"}]},
    {"apiVersion": "v1", "kind": "Pod", "metadata": meta(POD, ownerReferences=[
        {"kind": "ReplicaSet", "name": "canary-rs", "uid": "canary-owner-uid", "controller": True}]),
     "spec": {"nodeName": NODE, "serviceAccountName": secret("sa"), "hostname": "canary-host",
              "containers": [container("canary-ctr")],
              "initContainers": [{**container("canary-sidecar"), "restartPolicy": "Always"}],
              "volumes": [{"name": "v", "configMap": {"name": secret("volume-cm")}},
                          {"name": "h", "hostPath": {"path": secret("hostpath")}}],
              "imagePullSecrets": [{"name": secret("pullsecret")}],
              "hostAliases": [{"ip": "1.2.3.4", "hostnames": [secret("hostalias")]}]},
     "status": {"phase": "Running", "podIP": "10.244.7.7", "podIPs": [{"ip": "10.244.7.7"}],
                "message": secret("pod-message"), "hostIP": "192.168.7.7",
                "conditions": [{"type": "Ready", "status": "True", "message": secret("pod-condition")}],
                "containerStatuses": [{"name": "canary-ctr", "ready": True, "restartCount": 0,
                                       "image": secret("status-image"), "imageID": secret("imageid"),
                                       "containerID": secret("containerid"),
                                       "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
                                       "lastState": {"terminated": {"reason": "Error",
                                                                    "message": secret("last-message")}}}]}},
    {"apiVersion": "v1", "kind": "Node", "metadata": meta(NODE, ns=None) | {"labels": {
        "kubernetes.io/hostname": NODE, "topology.kubernetes.io/zone": "canary-zone", "canary-rack": "canary-r1"}},
     "spec": {"podCIDR": "10.244.7.0/24", "providerID": secret("provider")},
     "status": {"addresses": [{"type": "InternalIP", "address": "192.168.7.7"},
                              {"type": "Hostname", "address": "canary-node-4.canary-corp.example.com"}],
                "conditions": [{"type": "Ready", "status": "True", "message": secret("node-condition")}],
                "nodeInfo": {"machineID": secret("machine")}, "images": [{"names": [secret("node-image")]}]}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta("canary-policy"),
     "spec": {"podSelector": {"matchLabels": {"app": "canary-app"}},
              "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                  {"key": "canary-team/owner", "operator": "In", "values": ["canary-owner"]}]}},
                  {"ipBlock": {"cidr": "198.51.100.0/24"}}], "ports": [{"port": PORT}]}]}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("coredns", ns="kube-system"),
     "data": {"Corefile": ".:53 {\n    kubernetes canary-cluster.local in-addr.arpa {\n    }\n"
                          "    hosts {\n        1.2.3.4 canary-internal.example.com\n    }\n"
                          "    forward . 8.8.8.8 { tls_servername canary-dns.example.com }\n}\n",
              "extra": secret("cm-data")}},
]


def node_files() -> NodeInput:
    """A small dump whose chains and comments name the canary Service, as kube-proxy would write them."""
    spn = naming.service_port_name(NS, SVC, PORT)
    svc_chain = naming.ipt_service_chain(spn, "tcp")
    sep = naming.ipt_endpoint_chain(spn, "tcp", "10.244.7.7", 8080)
    dump = "\n".join([
        "*nat", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]",
        f":{svc_chain} - [0:0]", f":{sep} - [0:0]", "-A PREROUTING -j KUBE-SERVICES", "-A OUTPUT -j KUBE-SERVICES",
        f'-A KUBE-SERVICES -d 10.96.7.7/32 -p tcp -m comment --comment "{spn} cluster IP" -m tcp --dport 80 '
        f"-j {svc_chain}",
        f'-A {svc_chain} -m comment --comment "{spn} -> 10.244.7.7:8080" -j {sep}',
        f'-A {sep} -p tcp -m comment --comment "{spn}" -m tcp -j DNAT --to-destination 10.244.7.7:8080',
        "COMMIT", ""])
    return NodeInput(files={"iptables-save.txt": dump, "meta.json": json.dumps({"nodeName": NODE})})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    monkeypatch.setattr(svctrace.collectors.live, "_start_node", lambda *a, **k: StartedNode(node_files()))
    with FakeApiServer(OBJECTS) as srv:
        yield srv


def capture(server: FakeApiServer, tmp_path: Path, *extra: str) -> tuple[Path, str]:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", namespace=NS, context_name="canary-context")
    out = tmp_path / ("redacted" if extra else "plain")
    result = CliRunner().invoke(app, ["capture", "-o", str(out), "--kubeconfig", str(kubeconfig), "--node", NODE,
                                      *extra])
    assert result.exit_code == 0, result.output
    return out, "\n".join(p.read_text() for p in sorted(out.rglob("*")) if p.is_file())


def test_a_plain_capture_keeps_nothing_svctrace_does_not_read(server: FakeApiServer, tmp_path: Path) -> None:
    out, text = capture(server, tmp_path)
    assert UNREAD not in text, [line for line in text.splitlines() if UNREAD in line][:5]
    assert SVC in text and PORT in text  # what svctrace reads stays, as it came
    # ... and the capture answers like the live cluster
    snap = load_snapshot(out)
    assert [s.name for s in snap.services if s.namespace == NS] == ["canary-external", SVC]


def test_a_redacted_capture_keeps_no_name_and_answers_the_same(server: FakeApiServer, tmp_path: Path) -> None:
    out, text = capture(server, tmp_path, "--redact")
    leaks = sorted({line.strip() for line in text.splitlines() if READ in line})
    assert leaks == []
    snap = load_snapshot(out)
    (svc,) = [s for s in snap.services if s.type == "LoadBalancer"]
    ((port,),) = {tuple(svc.ports)}
    assert port.port == 80 and port.name == port.target_port and port.name != PORT  # a named port still matches
    (pod,) = snap.pods
    assert [c.name for c in pod.container_ports] == [port.name, port.name]
    assert snap.iptables is not None
    chain = naming.ipt_service_chain(naming.service_port_name(svc.namespace, svc.name, port.name), "tcp")
    assert snap.iptables.chain("nat", chain) is not None  # the chain was renamed after the redacted names


_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2, 70000), st.sampled_from(
    ["TCP", "UDP", "x", "10.0.0.1", "Ready", "True", "kube-system", "coredns", "Always", "running", "a.b/c"]))
_ANY = st.recursive(_LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
    ["name", "namespace", "labels", "ports", "port", "protocol", "containers", "containerPort", "state", "waiting",
     "reason", "addresses", "conditions", "type", "status", "ip", "podIPs", "nodeName", "selector", "spec",
     "metadata", "endpoints", "subsets", "data", "Corefile", "env", "annotations", "targetRef", "kind"]),
    inner, max_size=4), max_leaves=25)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(set(READ_FIELDS) - {"Namespace"})), _ANY, _ANY, _ANY)
def test_cutting_an_object_to_the_read_fields_never_changes_what_is_parsed(kind: str, metadata: Any, spec: Any,
                                                                          rest: Any) -> None:
    api = {"EndpointSlice": "discovery.k8s.io/v1", "NetworkPolicy": "networking.k8s.io/v1"}.get(kind, "v1")
    doc = {"apiVersion": api, "kind": kind, "metadata": metadata, "spec": spec, "status": rest, "endpoints": rest,
           "subsets": rest, "ports": rest, "data": rest}
    try:
        whole = parse_objects([doc], "t")
    except Exception as exc:  # noqa: BLE001 - the cut must fail the same way
        with pytest.raises(type(exc)):
            parse_objects([read_fields(doc)], "t")
        return
    assert parse_objects([read_fields(doc)], "t") == whole
