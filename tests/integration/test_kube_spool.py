"""A big cluster's pods and EndpointSlices listed by forked children into files (svctrace.collectors.kube_spool),
against the fake kube-apiserver through the real client: the same objects, failures and requests as when this
process lists them itself, and nothing left behind."""

from __future__ import annotations

import gc
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from svctrace.collectors import kube as kube_module
from svctrace.collectors import kube_spool
from svctrace.collectors.kube import ApiCollection, KubeCollector, _stamped
from svctrace.collectors.kube_http import Ahead, NoAnswer, Op, StatusFailure
from svctrace.errors import CollectionError
from svctrace.parsers.json_stream import Streamed
from svctrace.parsers.k8s_lazy import index_spool
from tests.harness.apiserver import FakeApiServer, fixture_cluster
from tests.harness.faults import Fault
from tests.integration.test_kube_collector import collector, expiring_once, scaled_cluster
from tests.processes import all_reaped, record_forks


@pytest.fixture
def spooling(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Spool from the first Service, on two workers whatever the machine; the children forked."""
    monkeypatch.setattr(kube_spool, "SPOOL_AFTER_SERVICES", 1)
    monkeypatch.setenv("SVCTRACE_WORKERS", "2")
    forked = record_forks(monkeypatch)
    yield forked
    assert all_reaped(forked)


def _spool_files() -> int:
    """The spool files this process holds open: unlinked files in the temporary folder ("/tmp/#123 (deleted)")."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    where = os.path.realpath(tempfile.gettempdir())
    return sum(link.startswith(where) and link.endswith(" (deleted)") for link in links)


def _pods(got: ApiCollection) -> list[Any]:
    """Every pod, the lazy ones typed now, in their order."""
    return [*got.objects.pods, *(p for lazy in got.objects.lazy if lazy.kind == "Pod" for p in lazy.all())]


def _slices(got: ApiCollection) -> list[Any]:
    return [*got.objects.endpoint_slices,
            *(s for lazy in got.objects.lazy if lazy.kind == "EndpointSlice" for s in lazy.all())]


def _here(server: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, namespace: str | None,
          ) -> ApiCollection:
    """The same collection made in this process alone (one worker: nothing is forked, nothing spooled)."""
    with monkeypatch.context() as m:
        m.setenv("SVCTRACE_WORKERS", "1")
        with collector(server, tmp_path) as kube:
            return kube.collect_all(namespace, documents=False)


def test_small_spools_are_typed_at_once_like_the_lists_read_here(
        spooling: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _spool_files()  # (pytest's own capture files are unlinked temporary files too)
    with fixture_cluster() as srv:
        with collector(srv, tmp_path) as kube:
            got = kube.collect_all(None, documents=False)
        plan = sorted(srv.verbs())
        srv.clear_requests()
        here = _here(srv, tmp_path, monkeypatch, None)
        assert sorted(srv.verbs()) == plan  # the same requests, some made by the children
    assert len(spooling) == 2  # the EndpointSlices' and the Pods' lists
    assert got.objects == here.objects  # typed at once (the files are small), warnings and all
    assert got.requests == here.requests == len(plan)
    assert not got.objects.lazy
    assert _spool_files() == before  # the files are gone with their descriptors


def test_big_spools_are_typed_when_asked_and_paged_ahead(
        spooling: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_spool, "MIN_LAZY_BYTES", 0)
    monkeypatch.setattr(kube_module, "PAGE_SIZE", 50)
    before = _spool_files()
    with FakeApiServer(scaled_cluster(1200, nodes=3)) as srv:
        with collector(srv, tmp_path) as kube:
            got = kube.collect_all("shop", documents=False)
        pages = [r for r in srv.requests if r.path == "/api/v1/namespaces/shop/pods"]
        here = _here(srv, tmp_path, monkeypatch, "shop")
    assert len(pages) == 24 and len({r.query.get("continue") for r in pages}) == 24
    assert {lazy.kind for lazy in got.objects.lazy} == {"Pod", "EndpointSlice"}
    assert not got.objects.pods and not got.objects.endpoint_slices
    assert _pods(got) == list(here.objects.pods) and len(_pods(got)) == 1200
    assert _slices(got) == list(here.objects.endpoint_slices)
    assert got.requests == here.requests
    pods = next(lazy for lazy in got.objects.lazy if lazy.kind == "Pod")
    assert [p.name for p in pods.where("namespace", "shop")][:2] == ["web-0000", "web-0001"]
    assert _spool_files() == before + 2  # each file is held open by its items
    del got, pods
    gc.collect()
    assert _spool_files() == before


def test_a_spooled_list_that_expires_is_listed_again(
        spooling: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_spool, "MIN_LAZY_BYTES", 0)
    srv = expiring_once(1200)
    with srv, collector(srv, tmp_path) as kube:
        got = kube.collect_all("shop", documents=False)
        pod_requests = [r for r in srv.requests if r.path == "/api/v1/namespaces/shop/pods"]
    assert len(pod_requests) >= 5  # page 1, page 2 (410; page 3 may have been asked for ahead), pages 1-3 again
    assert sorted(p.name for p in _pods(got)) == [f"web-{i:04d}" for i in range(1200)]


@pytest.mark.parametrize(("path", "fault"), [
    ("/api/v1/pods", Fault.status(403)),
    ("/api/v1/pods", Fault.status(500)),
    ("/api/v1/pods", Fault.invalid_json()),
    ("/api/v1/pods", Fault.json([1, 2])),
    ("/apis/discovery.k8s.io/v1/endpointslices", Fault.status(500)),
    ("/apis/discovery.k8s.io/v1/endpointslices", Fault.status(404)),
    ("/apis/discovery.k8s.io/v1/endpointslices", Fault.set_field("endpoints", "x")),
])
def test_a_spooled_list_fails_as_it_would_here(spooling: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               path: str, fault: Fault) -> None:
    def outcome(srv: FakeApiServer, spool: bool) -> tuple[Any, ...]:
        with monkeypatch.context() as m:
            if not spool:
                m.setenv("SVCTRACE_WORKERS", "1")
            try:
                with collector(srv, tmp_path) as kube:
                    got = kube.collect_all(None, documents=False)
            except CollectionError as exc:
                return type(exc).__name__, exc.message, exc.hint
            return got.warnings, got.missing, got.objects

    with fixture_cluster() as srv:
        srv.inject(path, fault, verb="list")
        spooled, here = outcome(srv, spool=True), outcome(srv, spool=False)
    assert spooling
    assert spooled == here


def test_a_child_that_cannot_spool_leaves_the_list_to_this_process(
        spooling: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: kube_spool.ListSpool) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kube_spool.ListSpool, "_list", broken)
    with fixture_cluster() as srv:
        with collector(srv, tmp_path) as kube:
            got = kube.collect_all(None, documents=False)
        here = _here(srv, tmp_path, monkeypatch, None)
    assert len(spooling) == 2
    assert got.objects == here.objects


def test_no_spool_without_a_temporary_file(spooling: list[int], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def full(**_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kube_spool.tempfile, "TemporaryFile", full)
    with fixture_cluster() as srv, collector(srv, tmp_path) as kube:
        got = kube.collect_all(None, documents=False)
    assert not spooling  # listed here
    assert len(got.objects.pods) == 3


def test_the_spool_file_holds_each_item_as_its_document(tmp_path: Path) -> None:
    path = tmp_path / "spool.json"
    values: list[Any] = [
        {"metadata": {"name": "a", "namespace": "n\u00e9"}},  # not ASCII, as sent
        {"kind": "NotAPod", "metadata": {"name": "b", "namespace": "x"}},  # the stamp wins, as in _stamped
        {},
        "not an object",
        {"metadata": {"name": "c\nd", "namespace": "y"}, "spec": {"a": [1, 2.5, None, True]}},
    ]
    texts = ['{"metadata": {"name": "a", "namespace": "n\u00e9"}}',
             '{\n  "kind": "NotAPod",\r\n  "metadata": {"name": "b", "namespace": "x"}\n}',
             "{ }", '"not an object"', json.dumps(values[4], indent=2)]
    with path.open("w+b") as f:
        writer = kube_spool._Writer(f, "v1", "Pod")
        writer.add(Streamed({"metadata": {}}, 1, 1, text="{}"))
        writer.restart()  # as after a 410: what was written is gone
        for value, text in zip(values, texts, strict=True):
            assert json.loads(text) == value
            writer.add(Streamed(value, 1, 1, text=text))
        writer.close()
    index = index_spool(path, "Pod")
    assert [doc for _, doc in index.read()] == [_stamped("pods", v, cut=False) for v in values]
    assert index.items_where("namespace", "x") == [1, 2, 3]  # and those without a namespace, to be checked


def test_ahead_takes_pages_in_order_and_raises_a_failure_when_its_page_is_taken() -> None:
    tokens = [None, "t1", "t2", "t3"]
    lock = threading.Lock()
    state = {"now": 0, "most": 0}
    asked: list[str | None] = []

    def one(token: str | None, head: Any) -> tuple[dict[str, Any], list[Any]]:
        with lock:
            asked.append(token)
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        n = tokens.index(token)
        nxt = tokens[n + 1] if n + 1 < len(tokens) else None
        head({"metadata": {"continue": nxt}} if nxt else {"metadata": {}})
        time.sleep(0.05)  # reading the items, while the next page is asked for
        with lock:
            state["now"] -= 1
        if token == "t2":
            raise StatusFailure(Op("list", "pods"), 500, {"message": "etcd"})
        return {"metadata": {"continue": nxt}}, [n]

    ahead = Ahead(one)
    assert ahead.take(None) == ({"metadata": {"continue": "t1"}}, [0])
    assert ahead.take("t1") == ({"metadata": {"continue": "t2"}}, [1])
    with pytest.raises(StatusFailure, match="500"):
        ahead.take("t2")
    assert state["most"] <= 1 + Ahead.DEPTH
    assert asked[:3] == [None, "t1", "t2"]
    # a page asked for ahead and not taken (the list started again) is not handed out
    assert ahead.take(None) == ({"metadata": {"continue": "t1"}}, [0])


def test_failures_cross_from_the_child_as_they_are() -> None:
    import pickle

    op = Op("list", "pods", "", "shop")
    for failure in (StatusFailure(op, 403, {"reason": "Forbidden", "message": "no"}), NoAnswer(op, "no answer")):
        again = pickle.loads(pickle.dumps(failure))
        assert type(again) is type(failure) and str(again) == str(failure)
        assert again.__dict__ == failure.__dict__
        assert again.error("https://x").message == failure.error("https://x").message


def test_the_spool_is_used_only_where_it_can_be(monkeypatch: pytest.MonkeyPatch) -> None:
    assert kube_spool.ListSpool.possible()  # Linux, where the suite runs
    monkeypatch.setattr(kube_spool.sys, "platform", "darwin")
    assert not kube_spool.ListSpool.possible()
    assert kube_spool.ListSpool.start(KubeCollector(), Op("list", "pods"), ("v1", "Pod"), object, "namespaced",
                                      "everywhere") is None
