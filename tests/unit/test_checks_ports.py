"""The port checks: a port the Service lacks, a targetPort the pods do not declare, a protocol mismatch, a
pending load balancer."""

from __future__ import annotations

from svctrace.diagnosis.findings import ERROR, WARNING
from tests.diagnoses import READY, eps, pod, run, svc, top


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


def test_load_balancer_pending_is_a_warning() -> None:
    d = run([svc(selector={"app": "web"}, type="LoadBalancer",
                 ports=[{"port": 80, "targetPort": 8080, "nodePort": 31000}]),
             pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)])])
    top(d, "load-balancer-pending", WARNING)
    assert "and NodePorts 31000 still work" in d.findings[0].evidence[1]


def test_port_not_defined_comes_first() -> None:
    objs = [svc(selector={"app": "web"}), pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)])]
    top(run(objs, "web:8443"), "port-not-defined", ERROR)
