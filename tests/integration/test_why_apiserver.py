"""why-unreachable live against the fake apiserver: the API-only checks find the same causes through the
real kubernetes client and a kubeconfig as they do from a snapshot (the node part is not asserted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from svctrace.cli.app import app
from svctrace.diagnosis.checks import API_SUBJECTS
from svctrace.diagnosis.registry import CATALOG
from tests.diagnoses import DNS_OBJECTS, NOT_READY, READY, eps, pod, svc
from tests.harness.apiserver import FakeApiServer

API_CODES = {c.code for c in CATALOG.values() if c.subject in API_SUBJECTS}
CRASH = [{"name": "app", "ready": False, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]
EXT = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": "default"},
       "spec": {"type": "ExternalName", "externalName": "10.1.2.3"}}

CASES: list[tuple[str, list[dict[str, Any]], str, str]] = [
    ("selector-matches-no-pods", [svc(selector={"run": "web"}), pod("p1", "10.0.1.5")], "web", "error"),
    ("no-ready-endpoints", [svc(selector={"app": "web"}), pod("p1", "10.0.1.5", ready=False, statuses=CRASH),
                            eps("web", [("10.0.1.5", "p1", NOT_READY)])], "web", "error"),
    ("only-terminating-endpoints", [svc(selector={"app": "web"}), pod("p1", "10.0.1.5", ready=False),
                                    eps("web", [("10.0.1.5", "p1", {"ready": False, "serving": True,
                                                                    "terminating": True})])], "web", "warning"),
    ("selectorless-without-endpoints", [svc("mysql", ports=[{"port": 3306}])], "mysql", "error"),
    ("target-port-not-exposed", [svc(selector={"app": "web"}, ports=[{"port": 80, "targetPort": "http"}]),
                                 pod("p1", "10.0.1.5", ports=[{"containerPort": 8080, "name": "web"}]),
                                 eps("web", [("10.0.1.5", "p1", READY)], port=None)], "web", "error"),
    ("protocol-mismatch", [svc(selector={"app": "web"}, ports=[{"port": 53, "protocol": "UDP"}]),
                           pod("p1", "10.0.1.5", ports=[{"containerPort": 53, "protocol": "TCP"}]),
                           eps("web", [("10.0.1.5", "p1", READY)], port=53)], "web", "warning"),
    ("external-name-unresolvable", [EXT], "ext", "error"),
    ("headless-no-ready-pods", [svc(selector={"app": "web"}, clusterIP="None"), pod("p1", "10.0.1.5", ready=False),
                                eps("web", [("10.0.1.5", "p1", NOT_READY)])], "web", "error"),
    ("load-balancer-pending", [svc(selector={"app": "web"}, type="LoadBalancer",
                                   ports=[{"port": 80, "targetPort": 8080, "nodePort": 31000}]),
                               pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)])], "web", "warning"),
    ("network-policy-denies", [svc(selector={"app": "web"}), pod("p1", "10.0.1.5"),
                               eps("web", [("10.0.1.5", "p1", READY)]),
                               {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                "metadata": {"name": "deny-all", "namespace": "default"},
                                "spec": {"podSelector": {}}}], "web", "error"),
]


@pytest.mark.parametrize(("code", "objects", "target", "severity"), CASES, ids=[c[0] for c in CASES])
def test_live_why_unreachable_finds_the_api_cause(code: str, objects: list[dict[str, Any]], target: str,
                                                  severity: str, tmp_path: Path) -> None:
    with FakeApiServer(objects) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", namespace="default")
        result = CliRunner().invoke(app, ["why-unreachable", target, "--kubeconfig", str(kubeconfig),
                                          "--node", "node-a", "-o", "json"])
        assert {r.method for r in server.requests} == {"GET"}  # never writes to the cluster
    assert result.exit_code == 1, result.output
    doc = json.loads(result.output)
    # The node's own findings depend on the machine the test runs on: judge the API checks only.
    api_findings = [f for f in doc["findings"] if f["code"] in API_CODES]
    assert (api_findings[0]["code"], api_findings[0]["severity"]) == (code, severity), api_findings


def test_live_audit_reports_cluster_dns_without_endpoints(tmp_path: Path) -> None:
    with FakeApiServer(DNS_OBJECTS) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", namespace="default")
        # -A: kube-system is read too, so the DNS Service is known.
        result = CliRunner().invoke(app, ["audit", "-A", "--kubeconfig", str(kubeconfig), "--node", "node-a",
                                          "-o", "json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.output)
    web = next(s for s in doc["services"] if s["service"] == "default/web")
    assert "cluster-dns-no-endpoints" in [f["code"] for f in web["findings"]]
    dns = next(s for s in doc["services"] if s["service"] == "kube-system/kube-dns")
    assert [f["code"] for f in dns["findings"] if f["code"] in API_CODES][0] == "no-ready-endpoints"
