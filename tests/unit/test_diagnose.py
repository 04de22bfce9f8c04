"""diagnose(): how it matches the target, decides by error types, and words its verdict."""

from __future__ import annotations

import pytest

import svctrace.diagnosis.diagnose as diagnose_module
from svctrace.diagnosis.findings import ERROR
from svctrace.errors import NotFoundError, PortNotFoundError
from svctrace.model.graph import PathGraph
from svctrace.model.snapshot import Snapshot
from svctrace.resolver import resolve
from svctrace.resolver.common import select_ports
from tests.diagnoses import READY, eps, pod, run, svc, top

WEB = [svc(selector={"app": "web"}), pod("p1", "10.0.1.5"), eps("web", [("10.0.1.5", "p1", READY)])]


def test_a_port_the_service_lacks_raises_the_typed_error_with_the_service_and_the_port() -> None:
    d = run(WEB)
    assert d.target.service is not None
    with pytest.raises(PortNotFoundError) as caught:
        select_ports(d.target.service, "8443")
    assert caught.value.service is d.target.service and caught.value.port == "8443"
    assert isinstance(caught.value, NotFoundError)  # callers that catch NotFoundError still do


def test_diagnose_decides_by_the_error_type_not_its_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port error worded differently is still the port-not-defined case; another NotFoundError is not."""

    def reworded(snapshot: Snapshot, namespace: str, name: str, port: str | None) -> PathGraph:
        if port is not None:
            svc_ = snapshot.service(namespace, name)
            assert svc_ is not None
            raise PortNotFoundError("port 8443 is not among the ports of default/web", service=svc_, port=port)
        return resolve(snapshot, namespace, name, None)

    monkeypatch.setattr(diagnose_module, "resolve", reworded)
    d = run(WEB, "web:8443")
    top(d, "port-not-defined", ERROR)
    assert d.graph is not None and [f.port for f in d.graph.frontends] == [80]

    def other(snapshot: Snapshot, namespace: str, name: str, port: str | None) -> PathGraph:
        raise NotFoundError("the Service has no port we could read")  # the words the old test looked for

    monkeypatch.setattr(diagnose_module, "resolve", other)
    with pytest.raises(NotFoundError, match="no port we could read"):
        run(WEB, "web:8443")


def _external(name: str, target: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": target}}


def test_an_external_name_to_a_cluster_service_says_what_was_checked_not_ready_endpoints() -> None:
    d = run([_external("ext", "web.default.svc.cluster.local"), *WEB], "ext")
    assert d.verdict == "reachable"
    assert "endpoint" not in d.reason  # an ExternalName has none: DNS answers with a CNAME
    assert d.reason == ("every check passed: cluster DNS answers ext.default.svc.cluster.local with a CNAME to "
                        "web.default.svc.cluster.local, Service default/web of this cluster, which resolves to "
                        "10.96.0.50")
    assert any(s.startswith("connections to default/web: an ExternalName has no endpoints of its own")
               for s in d.skipped)


def test_an_external_name_outside_the_cluster_says_what_cannot_be_checked_from_here() -> None:
    d = run([_external("ext", "db.example.com")], "ext")
    assert d.verdict == "reachable"
    assert d.reason.endswith("with a CNAME to db.example.com, a name outside the cluster")
    assert ("db.example.com: svctrace sends no DNS queries and no packets, so whether it resolves outside the "
            "cluster and accepts connections is not checked") in d.skipped
    assert any(s.startswith("cluster DNS: test holds no kube-system/kube-dns Service") for s in d.skipped)


def test_an_external_name_to_a_namespace_that_was_not_read_says_so() -> None:
    d = run([_external("ext", "db.prod.svc.cluster.local")], "ext")
    assert d.verdict == "reachable" and d.reason.endswith(", a Service name of this cluster")
    assert ("Service prod/db: namespace prod was not read, so whether it exists is not known") in d.skipped


def test_without_the_nodes_rules_the_verdict_claims_only_what_the_api_shows() -> None:
    d = run(WEB)
    assert d.verdict == "reachable"
    assert d.reason == ("every check that could run passed: the Service has a ready endpoint in the API; this "
                        "node's rules were not collected, so whether they forward to it is not checked")
