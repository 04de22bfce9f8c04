"""The selection checks: the target names no Service; the selector matches no pod."""

from __future__ import annotations

from svctrace.diagnosis.findings import ERROR
from tests.diagnoses import READY, eps, pod, run, svc, top


def test_selector_typo_names_the_label_key_that_differs() -> None:
    d = run([svc(selector={"run": "my-nginx"}), pod("p1", "10.0.1.5", labels={"app": "my-nginx"})])
    top(d, "selector-matches-no-pods", ERROR)
    f = d.findings[0]
    assert "svc default/web spec.selector: run=my-nginx" in f.evidence
    assert "pod default/p1 labels: app=my-nginx" in f.evidence
    assert "the pods have app=my-nginx, the selector says run=my-nginx" in f.evidence
    assert d.verdict == "unreachable"


def test_service_not_found_comes_first() -> None:
    objs = [svc(selector={"app": "web"}), pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)])]
    top(run(objs, "wbe"), "service-not-found", ERROR)
