"""Every live command against every API fault: exit 0-2, a clear message, and an end within its deadline.

The fake kube-apiserver (tests/harness/apiserver.py) injects each fault on every path (the first, required
read fails: exit 2 naming the request), and on an optional read (a warning and a partial answer). The node
is not read here (the dataplane is someone else's test): the live node collector is replaced by an empty one.
A command that does not end is caught by a 60 s alarm, far above the 1.5 s --timeout every run is given; no
test here measures speed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import svctrace.collectors.live
from svctrace.cli.app import app
from svctrace.parsers.snapshot import NodeInput
from tests.fuzzing import deadline
from tests.harness.apiserver import FakeApiServer, fixture_cluster
from tests.harness.faults import Fault
from tests.harness.started_node import StartedNode

POD = "default/my-nginx-3800858182-jr4a2"
COMMANDS: dict[str, list[str]] = {
    "svc": ["svc", "my-nginx"],
    "trace": ["trace", "--dst", "10.0.162.149:80", "--from-pod", POD],
    "why-unreachable": ["why-unreachable", "my-nginx"],
    "audit": ["audit", "-A"],
    "capture": ["capture"],
}
FAULTS: dict[str, Fault] = {
    "403": Fault.status(403), "404": Fault.status(404), "500": Fault.status(500), "503": Fault.status(503),
    "429": Fault.status(429), "invalid-json": Fault.invalid_json(), "a-list": Fault.json([]),
    "null": Fault.json(None), "a-number": Fault.json(7), "spec-a-list": Fault.set_field("spec", []),
    "items-a-mapping": Fault.set_field("items", {"a": 1}, each_item=False),
    "metadata-a-string": Fault.set_field("metadata", "x"),
    "nested": Fault.nested(100_000), "huge": Fault.huge(4 << 20), "huge-string": Fault.huge(4 << 20, fill="string"),
    "drip": Fault.drip(50), "stall": Fault.stall(), "stall-before-headers": Fault.stall(headers=False),
    "reset": Fault.reset(), "close": Fault.close(), "slow": Fault.delay(30),
    "repeat-continue": Fault.repeat_continue(), "cycle-continue": Fault.cycle_continue(),
}
DEADLINE_FAULTS = {"drip", "stall", "stall-before-headers", "slow"}
# Faults whose answer is still a valid List (of nothing but whitespace, or one object): any status 0-2.
VALID_ANSWERS = {"huge", "huge-string", "repeat-continue", "cycle-continue"}
ERROR = re.compile(r"^svctrace: error: \S")



@pytest.fixture
def no_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live node collector replaced by one that reads nothing (only the API is under test)."""
    monkeypatch.setattr(svctrace.collectors.live, "_start_node", lambda *a, **k: StartedNode(NodeInput()))


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two objects a page, so that the fixture cluster's LISTs take several pages (continue tokens)."""
    monkeypatch.setattr("svctrace.collectors.kube.PAGE_SIZE", 2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[FakeApiServer]:
    with fixture_cluster() as srv:
        yield srv


@pytest.fixture
def server(cluster: FakeApiServer) -> Iterator[FakeApiServer]:
    """The module's server with no fault and no request recorded yet; faults are cleared after the test."""
    cluster.clear_faults()
    cluster.clear_requests()
    yield cluster
    cluster.clear_faults()


def run(server: FakeApiServer, tmp_path: Path, argv: list[str]) -> tuple[int, str]:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", namespace="default")
    extra = ["-o", str(tmp_path / f"capture-{len(list(tmp_path.iterdir()))}")] if argv[0] == "capture" else []
    with deadline(60):
        result = CliRunner().invoke(app, [*argv, *extra, "--kubeconfig", str(kubeconfig), "--node", "node-a",
                                          "--request-timeout", "0.3s", "--timeout", "1.5s"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def assert_clear(status: int, output: str) -> None:
    assert status in (0, 1, 2), (status, output[-3000:])
    assert "internal error" not in output and "Traceback" not in output, output
    if status == 2:
        errors = [line for line in output.splitlines() if line.startswith("svctrace: error:")]
        assert len(errors) == 1 and ERROR.match(errors[0]), output
        assert any(line.startswith("  next: ") for line in output.splitlines()), output


@pytest.mark.usefixtures("no_node", "small_pages")
@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_fault_on_every_request(server: FakeApiServer, tmp_path: Path, command: str, fault: str) -> None:
    server.inject("*", FAULTS[fault])
    status, output = run(server, tmp_path, COMMANDS[command])
    assert_clear(status, output)
    if fault in ("repeat-continue", "cycle-continue") and command in ("audit", "capture"):
        assert status == 2 and "sent a continue token again" in output and "stopped paging" in output, output
    elif fault in DEADLINE_FAULTS:
        assert status == 2 and ("--request-timeout 0.3s" in output or "--timeout 1.5s" in output), output
    elif fault not in VALID_ANSWERS:
        assert status == 2, output  # the first request is a required read


# Optional reads and where they are made: a failure there is a warning and a partial answer.
OPTIONAL = {
    "svc": ["/api/v1/namespaces/default/pods", "/api/v1/nodes/*", "/api/v1/namespaces/kube-system/configmaps/*"],
    "audit": ["/api/v1/pods", "/api/v1/nodes", "/apis/networking.k8s.io/v1/networkpolicies",
              "/api/v1/namespaces/kube-system/configmaps/*"],
}


@pytest.mark.usefixtures("no_node")
@pytest.mark.parametrize("fault", ["403", "404", "500", "invalid-json", "a-list", "spec-a-list", "stall", "reset",
                                   "metadata-a-string"])
@pytest.mark.parametrize(("command", "path"), [(c, p) for c, paths in OPTIONAL.items() for p in paths])
def test_a_fault_on_an_optional_read_is_a_partial_answer(server: FakeApiServer, tmp_path: Path, command: str,
                                                         path: str, fault: str) -> None:
    server.inject(path, FAULTS[fault])
    status, output = run(server, tmp_path, COMMANDS[command])
    assert_clear(status, output)
    assert status in (0, 1), output
    harmless = (fault == "404" and ("/nodes/" in path or "configmaps" in path)  # named objects that may be absent
                or fault == "spec-a-list" and "configmaps" in path)  # a ConfigMap's spec is never read
    if not harmless:
        assert "partial" in output or "not served" in output or "(not found)" in output, output


@pytest.mark.usefixtures("no_node")
@pytest.mark.parametrize("fault", ["403", "404"])
def test_endpointslices_refused_fall_back_to_endpoints(server: FakeApiServer, tmp_path: Path, fault: str) -> None:
    server.inject("/apis/discovery.k8s.io/v1/*", FAULTS[fault])
    status, output = run(server, tmp_path, ["svc", "my-nginx", "-o", "json"])
    assert status == 0, output
    assert "10.244.3.4" in output and "10.244.2.5" in output  # the endpoints, from v1 Endpoints
    if fault == "403":
        warnings = json.loads(output)["warnings"]
        assert any('resources: ["endpointslices"]' in w and "v1 Endpoints instead" in w for w in warnings), output


@pytest.mark.usefixtures("no_node")
@pytest.mark.parametrize("fault", ["500", "stall", "a-list"])
def test_a_required_read_that_fails_names_the_request(server: FakeApiServer, tmp_path: Path, fault: str) -> None:
    server.inject("/apis/discovery.k8s.io/v1/*", FAULTS[fault])
    status, output = run(server, tmp_path, ["svc", "my-nginx"])
    assert status == 2, output
    assert 'list endpointslices (discovery.k8s.io) in namespace "default"' in output, output


@pytest.mark.usefixtures("no_node")
def test_an_answer_over_the_size_bound_is_refused_as_it_is_read(server: FakeApiServer, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("svctrace.collectors.kube_http.MAX_RESPONSE_BYTES", 1 << 20)
    server.inject("/api/v1/namespaces/default/services/*", Fault.huge(8 << 20, chunked=True))
    status, output = run(server, tmp_path, ["svc", "my-nginx"])
    assert status == 2 and "the answer is bigger than 1 MiB; refused" in output, output


@pytest.mark.usefixtures("no_node", "small_pages")
def test_the_whole_collection_has_one_deadline(server: FakeApiServer, tmp_path: Path) -> None:
    # Each request answers within --request-timeout, but together they take longer than --timeout.
    server.inject("*", Fault.delay(0.2))
    status, output = run(server, tmp_path, ["audit", "-A"])
    assert status in (0, 1, 2), output
    assert "--timeout 1.5s for the whole collection" in output, output


def test_only_gets_are_sent_whatever_the_fault(server: FakeApiServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(svctrace.collectors.live, "_start_node", lambda *a, **k: StartedNode(NodeInput()))
    for fault in ("500", "reset", "invalid-json"):
        server.clear_faults()
        server.inject("*", FAULTS[fault])
        for argv in COMMANDS.values():
            run(server, tmp_path, argv)
    methods: set[Any] = {r.method for r in server.requests}
    assert methods == {"GET"}


@pytest.mark.usefixtures("no_node", "small_pages")
def test_a_list_of_more_pages_than_the_bound_stops_and_says_so(server: FakeApiServer, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("svctrace.collectors.kube.MAX_LIST_PAGES", 2)
    status, output = run(server, tmp_path, ["audit", "-A"])
    assert status == 2, output
    assert "list services in all namespaces: more than 2 pages of 2 objects; stopped paging" in output, output
