"""Big api/ files read through their index answer exactly as the same files read as a stream."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from svctrace.collectors import snapshot_dir
from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.demo import demo_path
from svctrace.diagnosis.audit import audit
from svctrace.diagnosis.diagnose import diagnose
from svctrace.errors import InputError
from svctrace.model.snapshot import Snapshot
from svctrace.model.trace import Packet
from svctrace.parsers import k8s_lazy, list_index
from svctrace.render.json import graph_to_dict
from svctrace.resolver import resolve
from svctrace.trace import trace_packet
from tests.processes import all_reaped, record_forks


def _answers(snap: Snapshot) -> list[object]:
    out: list[object] = []
    for svc in sorted(snap.services, key=lambda s: (s.namespace, s.name)):
        out.append(graph_to_dict(resolve(snap, svc.namespace, svc.name)))
        d = diagnose(snap, f"{svc.namespace}/{svc.name}")
        out.append((d.verdict, [(f.code, f.title) for f in d.findings]))
        for ip in svc.cluster_ips:
            for port in svc.ports:
                if ip != "None" and ":" not in ip:
                    t = trace_packet(snap, Packet("10.244.1.9", ip, port.port, port.protocol.lower()))
                    out.append(repr(t.outcomes))
    a = audit(snap, workers=1)
    out.append([(s.ref, s.diagnosis.verdict, [f.code for f in s.diagnosis.findings]) for s in a.services])
    # Each endpoint's pod by its address (trace names them so), and an address no pod has.
    addresses = sorted({a for s in snap.all_endpoint_slices() for e in s.endpoints for a in e.addresses})
    out.append([(ip, getattr(snap.pod_by_ip(ip), "ref", None)) for ip in [*addresses, "10.255.255.254"]])
    return out


def _one_list(folder: Path) -> None:
    """Every api/ object of the demo in one pretty-printed List (Services, Pods, Nodes, ConfigMaps mixed)."""
    items: list[object] = []
    for path in sorted((folder / "api").iterdir()):
        text = path.read_text()
        docs = [json.loads(text)] if path.suffix == ".json" else list(yaml.safe_load_all(text))
        for doc in docs:
            items += doc["items"] if doc.get("kind", "").endswith("List") else [doc]
        path.unlink()
    (folder / "api" / "all.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items},
                                                        indent=2))


def _services_as_yaml(folder: Path) -> None:
    """The demo's Services, EndpointSlices and Endpoints as a YAML List (the rest stays JSON)."""
    path = folder / "api" / "services.json"
    (folder / "api" / "services.yaml").write_text(yaml.safe_dump(json.loads(path.read_text())))
    path.unlink()


@pytest.mark.parametrize("layout", ["as shipped", "services as YAML", "one mixed List",
                                    "every address sharing one hash"])
def test_indexed_reads_answer_as_streamed_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 layout: str) -> None:
    folder = tmp_path / "snap"
    shutil.copytree(demo_path(), folder)
    if layout == "one mixed List":
        _one_list(folder)
    if layout == "services as YAML":
        _services_as_yaml(folder)
    if layout == "every address sharing one hash":  # the address index only narrows: a collision costs time
        monkeypatch.setattr(list_index._ValueMap, "_hash", staticmethod(lambda value: 1))
    streamed = load_snapshot(str(folder))
    assert not streamed.lazy_api
    monkeypatch.setattr(snapshot_dir, "MIN_LAZY_BYTES", 0)
    indexed = load_snapshot(str(folder))
    # A YAML file (here the one with the EndpointSlices) is read as a stream beside the indexed JSON ones
    lazy_kinds = {"Pod"} if layout == "services as YAML" else {"Pod", "EndpointSlice"}
    assert {lazy.kind for lazy in indexed.lazy_api} == lazy_kinds and not indexed.pods
    assert _answers(indexed) == _answers(streamed)
    assert indexed.all_pods() == streamed.pods
    assert indexed.all_endpoint_slices() == streamed.endpoint_slices


def test_typed_items_beyond_the_bound_are_forgotten_and_typed_again_alike(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "snap"
    shutil.copytree(demo_path(), folder)
    _one_list(folder)
    streamed = load_snapshot(str(folder))
    monkeypatch.setattr(snapshot_dir, "MIN_LAZY_BYTES", 0)
    monkeypatch.setattr(k8s_lazy, "KEEP_TYPED", 2)
    indexed = load_snapshot(str(folder))
    indexed.prepare_sweep()
    assert _answers(indexed) == _answers(streamed)
    pods = next(lazy for lazy in indexed.lazy_api if lazy.kind == "Pod")
    assert len(pods._typed) < len(pods)


def test_a_file_changed_after_it_was_indexed_is_an_input_error(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "snap"
    shutil.copytree(demo_path(), folder)
    monkeypatch.setattr(snapshot_dir, "MIN_LAZY_BYTES", 0)
    snap = load_snapshot(str(folder))
    pods = folder / "api" / "pods.json"
    pods.write_text(pods.read_text()[: pods.stat().st_size // 2])
    with pytest.raises(InputError, match="changed while svctrace read it"):
        snap.pods_in("default")


def test_a_big_file_is_indexed_by_another_process_with_its_first_question_ready(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from svctrace import parallel

    folder = tmp_path / "snap"
    shutil.copytree(demo_path(), folder)
    streamed = load_snapshot(str(folder))
    monkeypatch.setenv("SVCTRACE_WORKERS", "2")  # as on two cores, whatever this machine has
    here: list[Path] = []  # files indexed in this process (a child's calls are in the child's memory)
    real = k8s_lazy.index_list

    def index_list(path: Path, *, asked: bool = True) -> object:
        here.append(path)
        return real(path, asked=asked)

    monkeypatch.setattr(snapshot_dir, "index_list", index_list)
    monkeypatch.setattr(snapshot_dir, "MIN_LAZY_BYTES", 0)
    results: list[object] = []
    real_result = parallel.Background.result

    def result(self: parallel.Background[object]) -> object:
        got = real_result(self)
        results.append(got)
        return got

    monkeypatch.setattr(parallel.Background, "result", result)
    forked = record_forks(monkeypatch)
    indexed = load_snapshot(str(folder))
    assert len(results) >= 2  # the Pods' and the EndpointSlices' files, at least, came from a child
    # every index in use was made by a child (a file that is no List was tried here too, then read as a stream)
    assert {lazy.index.path for lazy in indexed.lazy_api}.isdisjoint(here)
    asked = {lazy.kind: lazy.index._later for lazy in indexed.lazy_api}
    assert "namespace" not in asked["Pod"] and "service" not in asked["EndpointSlice"]  # scanned there
    assert forked and all_reaped(forked)
    assert _answers(indexed) == _answers(streamed)


def test_a_refused_snapshot_leaves_no_indexing_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "snap"
    shutil.copytree(demo_path(), folder)
    (folder / "api" / "zz-broken.json").write_text('{"kind": "List", "items": [')
    monkeypatch.setenv("SVCTRACE_WORKERS", "2")
    monkeypatch.setattr(snapshot_dir, "MIN_LAZY_BYTES", 0)
    forked = record_forks(monkeypatch)
    with pytest.raises(InputError):
        load_snapshot(str(folder))
    assert forked and all_reaped(forked)


def test_a_file_that_has_no_index_is_looked_at_once_then_read_as_a_stream(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "snap"
    shutil.copytree(demo_path(), folder)
    pods = folder / "api" / "pods.json"
    pods.write_text(json.dumps(json.loads(pods.read_text())))  # minified: items cannot be found without decoding
    streamed = load_snapshot(str(folder))
    monkeypatch.setenv("SVCTRACE_WORKERS", "2")
    monkeypatch.setattr(snapshot_dir, "MIN_LAZY_BYTES", 0)
    here: list[Path] = []
    real = k8s_lazy.index_list

    def index_list(path: Path, *, asked: bool = True) -> object:
        here.append(path)
        return real(path, asked=asked)

    monkeypatch.setattr(snapshot_dir, "index_list", index_list)
    forked = record_forks(monkeypatch)
    indexed = load_snapshot(str(folder))
    assert forked and all_reaped(forked)
    assert pods not in here  # why it has no index came back from the child as an answer, not redone here
    assert "Pod" not in {lazy.kind for lazy in indexed.lazy_api} and indexed.pods == streamed.pods
    assert _answers(indexed) == _answers(streamed)
