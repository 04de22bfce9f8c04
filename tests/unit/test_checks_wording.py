"""How the checks word what they find: counts agree with their nouns, and hints offer what svctrace has read
instead of sending the user to `kubectl get` for it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

import svctrace.diagnosis.checks as checks
from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.demo import demo_path
from svctrace.diagnosis.diagnose import Diagnosis, diagnose
from svctrace.diagnosis.registry import CATALOG
from svctrace.words import agree, count
from tests.diagnoses import NODE, NOT_READY, READY, TERMINATING, eps, pod, run, svc

CRASH = [{"name": "app", "ready": False, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]
POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "from-team", "namespace": "default"},
          "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}}
ONE_OF_EACH: list[tuple[str, list[dict[str, Any]], str]] = [
    ("crash-looping", [svc(selector={"app": "web"}), pod("p1", "10.0.1.5", ready=False, statuses=CRASH),
                       eps("web", [("10.0.1.5", "p1", NOT_READY)])], "web"),
    ("not-ready", [svc(selector={"app": "web"}), pod("p1", "10.0.1.5", ready=False),
                   eps("web", [("10.0.1.5", "p1", NOT_READY)])], "web"),
    ("terminating", [svc(selector={"app": "web"}), pod("p1", "10.0.1.5", ready=False),
                     eps("web", [("10.0.1.5", "p1", TERMINATING)])], "web"),
    ("headless", [svc(selector={"app": "web"}, clusterIP="None"), pod("p1", "10.0.1.5", ready=False),
                  eps("web", [("10.0.1.5", "p1", NOT_READY)])], "web"),
    ("selector", [svc(selector={"run": "web"}), pod("p1", "10.0.1.5", labels={"app": "x"})], "web"),
    ("named-port", [svc(selector={"app": "web"}, ports=[{"port": 80, "targetPort": "http"}]),
                    pod("p1", "10.0.1.5", ports=[{"containerPort": 8080, "name": "web"}]),
                    eps("web", [("10.0.1.5", "p1", READY)], port=None)], "web"),
    ("etp-local", [svc(selector={"app": "web"}, type="NodePort", externalTrafficPolicy="Local",
                       ports=[{"port": 80, "targetPort": 8080, "nodePort": 31000}]),
                   pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)])], "192.168.0.2:31000"),
    ("policy", [svc(selector={"app": "web"}), pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)]),
                pod("c", "10.0.2.9", labels={"app": "c"}, node=NODE), POLICY], "web"),
    ("external-name", [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": "default"},
                        "spec": {"type": "ExternalName", "externalName": "db.prod.svc.cluster.local"}},
                       svc("other", ns="prod")], "ext"),
    ("not-found", [svc(selector={"app": "web"})], "nosuch"),
    ("address", [svc(selector={"app": "web"})], "10.9.9.9:80"),
]
# "1 pods", "1 ready endpoints", "1 errors" ...: up to two words after the 1, then a word ending in s that is
# not a verb or pronoun ("1 pod is") nor a singular in ss ("1 address").
ONE_AND_A_PLURAL = re.compile(
    r"(?<![\w./:-])1 (?:(?!of\b)[A-Za-z-]+ ){0,2}(?!\w*ss\b|(?:is|was|has|does|this|its|as|us)\b)[A-Za-z]+s\b")


def _texts(d: Diagnosis) -> list[str]:
    return [d.reason, *d.skipped, *(x for f in d.findings for x in (f.title, *f.evidence, f.hint))]


@pytest.mark.parametrize(("objects", "target"), [c[1:] for c in ONE_OF_EACH], ids=[c[0] for c in ONE_OF_EACH])
def test_a_count_of_one_takes_the_singular(objects: list[dict[str, Any]], target: str) -> None:
    d = run(objects, target)
    assert d.findings
    wrong = [t for t in _texts(d) if ONE_AND_A_PLURAL.search(t)]
    assert wrong == []


def test_the_count_helper() -> None:
    assert [count(n, "error") for n in (0, 1, 2)] == ["0 errors", "1 error", "2 errors"]
    assert count(1, "policy", "policies") == "1 policy" and count(3, "policy", "policies") == "3 policies"
    assert agree(1, "is", "are") == "is" and agree(0, "is", "are") == "are"


def test_the_titles_say_one_pod_is_not_ready() -> None:
    titles = {c[0]: run(c[1], c[2]).findings[0].title for c in ONE_OF_EACH[:2]}
    assert titles["crash-looping"].endswith(": 1 of 1 selected pod is crash-looping")
    assert titles["not-ready"].endswith(": 1 of 1 selected pod is not ready")


# -- hints -----------------------------------------------------------------------------------------------


def _api_hints(d: Diagnosis) -> list[str]:
    return [f.hint for f in d.findings if CATALOG[f.code].subject in checks.API_SUBJECTS]


def test_no_api_check_sends_the_user_to_kubectl_get() -> None:
    """What `kubectl get` would show, svctrace has read: the hints name it instead (static, over every check)."""
    for subject in checks.API_SUBJECTS:
        source = Path(checks.__file__).with_name(f"{subject}.py").read_text()
        assert "kubectl get" not in source, subject


@pytest.mark.parametrize("source", ["demo", "tests/fixtures/overall"])
def test_no_hint_for_any_target_of_a_snapshot_says_kubectl_get(source: str) -> None:
    snap = load_snapshot(source)
    targets = ["nosuch", "default/nosuch", "nosuch-ns/web", "10.9.9.9:80", "192.168.0.2:30999"]
    for s in snap.services:
        targets += [s.ref, f"{s.ref}:9999", f"{s.name}.{s.namespace}.svc.other.example"]
    for target in targets:
        hints = _api_hints(diagnose(snap, target))
        assert not [h for h in hints if "kubectl get" in h], target


@pytest.mark.parametrize("objects", [c[1] for c in ONE_OF_EACH], ids=[c[0] for c in ONE_OF_EACH])
def test_no_hint_of_a_scenario_says_kubectl_get(objects: list[dict[str, Any]]) -> None:
    for target in ("web", "ext", "nosuch", "10.9.9.9:80", "192.168.0.2:31000"):
        assert not [h for h in _api_hints(run(objects, target)) if "kubectl get" in h]


def test_a_missing_service_offers_the_names_in_the_snapshot() -> None:
    snap = load_snapshot("demo")
    hint = diagnose(snap, "nosuch").findings[0].hint
    assert hint == ("ask for one of the Services of default: client-svc, kubernetes, my-nginx, my-nginx-nodeport, "
                    "mysql; or create nosuch")
    assert diagnose(snap, "my-ngin").findings[0].hint == "did you mean my-nginx?"
    assert diagnose(snap, "nosuch", namespace="empty").findings[0].hint == (
        "namespace empty has no Services in demo: the namespaces that have some are default, kube-system, nginx-ns "
        "(-n)")


def test_a_missing_address_offers_the_addresses_in_the_snapshot() -> None:
    snap = load_snapshot("demo")
    assert diagnose(snap, "10.104.251.190:81").findings[0].hint == (
        "ask for a port 10.104.251.190 serves: 10.104.251.190:80 (default/my-nginx-nodeport)")
    assert diagnose(snap, "10.9.9.9:3306").findings[0].hint == (
        "ask for an address that serves port 3306: 10.107.232.103:3306 (default/mysql)")
    overall = load_snapshot("tests/fixtures/overall")
    assert diagnose(overall, "192.168.0.2:30001").findings[0].hint.startswith(
        "ask for a port 192.168.0.2 serves: 192.168.0.2:3001 (NodePort of ns2/svc2)")


def test_a_selector_in_a_namespace_without_pods_says_so_instead_of_kubectl_get() -> None:
    d = run([svc(selector={"run": "web"})])
    assert d.findings[0].code == "selector-matches-no-pods"
    assert d.findings[0].hint.startswith("namespace default has no pods in test: deploy the workload")


def test_a_node_only_snapshot_answers_from_the_rules_and_says_what_it_did_not_check(tmp_path: Path) -> None:
    shutil.copytree(demo_path() / "node", tmp_path / "node")
    d = diagnose(load_snapshot(str(tmp_path)), "default/my-nginx")
    assert d.verdict == "reachable" and d.findings == ()
    assert d.graph is not None and d.graph.from_rules is not None
    assert "my-nginx" in (d.graph.from_rules.identity or "")
    assert any("Kubernetes objects" in s for s in d.skipped)
