"""The capture writer: snapshots that load back unchanged, private file modes, no Secrets, no clobbering."""

from __future__ import annotations

import json
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from svctrace.collectors.capture import tarball_bytes, write_snapshot
from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.errors import InputError
from svctrace.parsers.k8s import decode_documents

DEMO = Path(__file__).resolve().parents[2] / "svctrace" / "demo" / "tutorial"
META = {"nodeName": "xianchaomaster1", "proxyMode": "iptables", "capturedAt": "2025-05-13T09:31:07Z",
        "svctraceVersion": "0.1.0"}


@pytest.fixture(params=[0o022, 0o000, 0o077])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _parts() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The demo snapshot as write_snapshot's inputs (what a live collector would hand over)."""
    api: dict[str, dict[str, Any]] = {}
    for f in sorted((DEMO / "api").iterdir()):
        docs = decode_documents(f.read_text(), str(f), "json" if f.suffix == ".json" else "yaml")
        api[f.stem] = {"apiVersion": "v1", "kind": "List", "items": [dict(d) for d in docs]}
    node = {f.name: f.read_text() for f in sorted((DEMO / "node").iterdir()) if f.name != "meta.json"}
    return api, node


def _comparable(path: Path) -> Any:
    snap = load_snapshot(path)
    # A dump records the file it came from; everything else must be equal.
    dumps = tuple(None if d is None else d.with_source("") for d in (snap.iptables, snap.ip6tables))
    return (snap.services, snap.endpoint_slices, snap.legacy_endpoints, snap.pods, snap.nodes, snap.config_maps,
            dumps, snap.node, snap.missing, snap.warnings)


@pytest.mark.parametrize("name", ["snap", "snap.tar.gz", "snap.tgz"])
def test_written_snapshot_loads_back_equal(name: str, tmp_path: Path) -> None:
    api, node = _parts()
    out = write_snapshot(tmp_path / name, api_documents=api, node_files=node,
                         meta=json.loads((DEMO / "node" / "meta.json").read_text()))
    assert out == tmp_path / name
    assert _comparable(out) == _comparable(DEMO)


def test_folder_modes_are_private_whatever_the_umask(umask: int, tmp_path: Path) -> None:
    api, node = _parts()
    out = write_snapshot(tmp_path / "snap", api_documents=api, node_files=node, meta=META)
    paths = [out, *out.rglob("*")]
    assert {p.relative_to(out).as_posix() for p in paths if p.is_file()} >= {
        "api/services.json", "node/iptables-save.txt", "node/ip-addr.json", "node/meta.json"}
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))


def test_tarball_layout_modes_owners_and_mtimes(umask: int, tmp_path: Path) -> None:
    api, node = _parts()
    out = write_snapshot(tmp_path / "snap-node-1.tar.gz", api_documents=api, node_files=node, meta=META)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with tarfile.open(out) as tf:
        members = tf.getmembers()
    assert {m.name.split("/", 1)[0] for m in members} == {"snap-node-1"}
    assert "snap-node-1/node/meta.json" in {m.name for m in members}
    for m in members:
        assert m.mode == (0o700 if m.isdir() else 0o600), m.name
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
        assert m.mtime == 1747128667  # capturedAt
        assert m.isdir() or m.isfile()


def test_tarball_is_deterministic() -> None:
    files = {"api/a.json": b"{}\n", "node/meta.json": b"{}\n"}
    assert tarball_bytes("snap", files, 1000) == tarball_bytes("snap", dict(reversed(files.items())), 1000)


def test_existing_non_empty_folder_is_refused_but_an_empty_one_is_used(tmp_path: Path) -> None:
    api, node = _parts()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(InputError) as err:
        write_snapshot(busy, api_documents=api, node_files=node, meta=META)
    assert "not empty" in err.value.message and err.value.hint
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    write_snapshot(empty, api_documents=api, node_files=node, meta=META)
    assert stat.S_IMODE(empty.stat().st_mode) == 0o700
    assert (empty / "node" / "meta.json").is_file()


def test_existing_tarball_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "snap.tar.gz"
    target.write_bytes(b"keep")
    with pytest.raises(InputError):
        write_snapshot(target, api_documents={}, node_files={}, meta=META)
    assert target.read_bytes() == b"keep"


def test_secrets_are_never_written(tmp_path: Path) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"},
              "data": {"password": "aHVudGVyMg=="}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"clusterIP": "10.96.0.5", "ports": [{"port": 80}]}}
    out = write_snapshot(tmp_path / "snap", meta=META, node_files={}, api_documents={
        "objects": {"apiVersion": "v1", "kind": "List", "items": [secret, svc]},
        "secret": secret,
        "secrets": {"apiVersion": "v1", "kind": "SecretList", "items": [{"metadata": {"name": "x"}, "data": {}}]},
    })
    text = "\n".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert "aHVudGVyMg==" not in text and "Secret" not in text
    assert not (out / "api" / "secret.json").exists()
    snap = load_snapshot(out)
    assert [s.name for s in snap.services] == ["web"]
    assert not [w for w in snap.warnings if "Secret" in w]


def test_unknown_node_file_names_are_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_snapshot(tmp_path / "snap", api_documents={}, node_files={"../evil.txt": "x"}, meta=META)
    with pytest.raises(ValueError):
        write_snapshot(tmp_path / "snap2", api_documents={"../x": {}}, node_files={}, meta=META)
