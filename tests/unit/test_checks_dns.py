"""The DNS checks: an ExternalName's target, cluster DNS without endpoints, a DNS name of another domain."""

from __future__ import annotations

import pytest

from svctrace.diagnosis.findings import ERROR, WARNING
from tests.diagnoses import DNS_OBJECTS, NOT_READY, eps, pod, run, svc, top


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


def test_external_name_to_a_headless_service_without_ready_pods_resolves_to_nothing() -> None:
    d = run([{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": "default"},
              "spec": {"type": "ExternalName", "externalName": "db.prod.svc.cluster.local"}},
             svc("db", ns="prod", selector={"app": "db"}, clusterIP="None"),
             pod("db-0", "10.0.1.9", ns="prod", labels={"app": "db"}, ready=False),
             eps("db", [("10.0.1.9", "db-0", NOT_READY)], ns="prod")], "ext")
    top(d, "external-name-unresolvable", ERROR)
    assert d.findings[0].title == ("ExternalName Service default/ext points at db.prod.svc.cluster.local, which "
                                   "resolves to no address: headless Service prod/db has no ready pods")
