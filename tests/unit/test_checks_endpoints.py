"""The endpoint checks: none written, none ready, only terminating ones, a headless Service without ready pods."""

from __future__ import annotations

from svctrace.diagnosis.findings import ERROR, WARNING
from tests.diagnoses import NOT_READY, TERMINATING, eps, pod, run, svc, top


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


def test_headless_service_without_ready_pods() -> None:
    d = run([svc(selector={"app": "web"}, clusterIP="None"), pod("p1", "10.0.1.5", ready=False),
             eps("web", [("10.0.1.5", "p1", NOT_READY)])])
    top(d, "headless-no-ready-pods", ERROR)
    assert "web.default.svc.cluster.local resolves to no address" in d.findings[0].title
    assert not any(f.code == "no-ready-endpoints" for f in d.findings)
