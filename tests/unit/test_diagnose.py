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
