"""Snapshot folders and tarballs as an attacker makes them: nothing blocks, nothing unbounded is read."""

from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.errors import InputError
from svctrace.model.snapshot import Snapshot
from svctrace.parsers import limits

DEMO = Path(__file__).resolve().parents[2] / "svctrace" / "demo" / "tutorial"


def demo_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEMO, tmp_path / "snap"))


def tarball(path: Path, members: list[tuple[str, bytes | tarfile.TarInfo]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members:
            if isinstance(data, tarfile.TarInfo):
                tf.addfile(data)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def demo_members() -> list[tuple[str, bytes | tarfile.TarInfo]]:
    return [(f"snap/{p.relative_to(DEMO).as_posix()}", p.read_bytes()) for p in sorted(DEMO.rglob("*")) if p.is_file()]


# ---------------------------------------------------------------------------------------------- special files


def test_a_fifo_where_a_node_file_belongs_is_refused_not_waited_on(tmp_path: Path) -> None:
    snap = demo_copy(tmp_path)
    (snap / "node" / "iptables-save.txt").unlink()
    os.mkfifo(snap / "node" / "iptables-save.txt")
    with pytest.raises(InputError, match=r"node/iptables-save.txt is a FIFO \(named pipe\), not a regular file"):
        load_snapshot(snap)


def test_a_fifo_anywhere_in_the_folder_is_refused(tmp_path: Path) -> None:
    snap = demo_copy(tmp_path)
    os.mkfifo(snap / "api" / "notes")
    with pytest.raises(InputError, match="api/notes is a FIFO"):
        load_snapshot(snap)


def test_a_socket_in_the_folder_is_refused(tmp_path: Path) -> None:
    snap = demo_copy(tmp_path)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(snap / "node" / "ip-addr.json.sock"))
        with pytest.raises(InputError, match="is a socket, not a regular file"):
            load_snapshot(snap)
    finally:
        sock.close()


def test_symlinks_to_devices_outside_are_not_followed(tmp_path: Path) -> None:
    snap = demo_copy(tmp_path)
    (snap / "node" / "meta.json").unlink()
    os.symlink("/dev/zero", snap / "node" / "meta.json")  # out of the snapshot: not followed at all
    assert "node name and proxy mode (node/meta.json)" in load_snapshot(snap).missing_words
    inside = snap / "dev-zero"
    os.symlink("/dev/zero", inside)
    os.symlink(inside, snap / "node" / "ip-addr.json.link")
    # a link inside the snapshot to a link that leaves it is not followed either
    load_snapshot(snap)


@pytest.mark.parametrize("loop", ["self", "pair"])
def test_a_symlink_loop_is_refused(tmp_path: Path, loop: str) -> None:
    snap = demo_copy(tmp_path)
    if loop == "self":
        os.symlink("me.json", snap / "api" / "me.json")
    else:
        os.symlink("b.json", snap / "api" / "a.json")
        os.symlink("a.json", snap / "api" / "b.json")
    with pytest.raises(InputError, match=r"api/(me|a)\.json is a symlink loop; refused"):
        load_snapshot(snap)


def test_passing_a_fifo_or_a_loop_itself(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "snap.tar.gz")
    with pytest.raises(InputError, match="a FIFO"):
        load_snapshot(tmp_path / "snap.tar.gz")
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(InputError, match="symlink loop"):
        load_snapshot(tmp_path / "loop")


# ---------------------------------------------------------------------------------------------- sizes


def test_a_file_is_refused_by_its_size_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = demo_copy(tmp_path)
    monkeypatch.setitem(limits.MAX_NODE_FILE_BYTES, "meta.json", 10)
    monkeypatch.setattr("svctrace.collectors.snapshot_dir.MAX_NODE_FILE_BYTES", limits.MAX_NODE_FILE_BYTES)
    with pytest.raises(InputError) as caught:
        load_snapshot(snap)
    assert caught.value.path == str(snap / "node" / "meta.json")
    assert "more than the 10 bytes svctrace reads for node/meta.json; refused" in caught.value.message


def test_a_tarball_member_claiming_gigabytes_is_refused_at_its_header(tmp_path: Path) -> None:
    info = tarfile.TarInfo("snap/node/iptables-save.txt")
    info.size = 3 << 30  # the header says 3 GiB; the data is not even there
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        tf.addfile(tarfile.TarInfo("snap/api"))
    data = raw.getvalue()
    path = tmp_path / "snap.tar"
    path.write_bytes(info.tobuf(format=tarfile.PAX_FORMAT) + data)
    with pytest.raises(InputError, match=r"unpacks to more than 1 GiB; refused|more than the 256 MiB"):
        load_snapshot(path)


def test_too_many_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("svctrace.collectors.snapshot_dir.MAX_SNAPSHOT_FILES", 5)
    path = tarball(tmp_path / "s.tgz", [(f"snap/api/{i}.json", b"{}") for i in range(6)])
    with pytest.raises(InputError, match="more than 5 members; refused"):
        load_snapshot(path)
    folder = demo_copy(tmp_path)
    for i in range(6):
        (folder / f"note-{i}").write_text("x")
    with pytest.raises(InputError, match="more than 5 files; refused"):
        load_snapshot(folder)


def load_measured(path: Path) -> tuple[Snapshot, int]:
    """The snapshot and the peak of memory Python allocated while loading it."""
    tracemalloc.start()
    try:
        return load_snapshot(path), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_members_that_are_not_snapshot_files_are_skipped_without_being_kept(tmp_path: Path) -> None:
    blob = b"\0" * (48 << 20)
    path = tarball(tmp_path / "s.tgz", [("snap/notes/big.bin", blob), *demo_members()])
    del blob
    snap, peak = load_measured(path)
    assert snap.services and "notes/big.bin: not a file svctrace reads; ignored (see docs/snapshot.md)" in snap.warnings
    assert peak < 24 << 20  # the 48 MiB member was unpacked and dropped, never held


def test_an_api_file_of_whitespace_is_read_in_constant_memory(tmp_path: Path) -> None:
    members = demo_members()
    members.append(("snap/api/blank.json", b"[" + b" " * (64 << 20) + b"]"))
    snap, peak = load_measured(tarball(tmp_path / "s.tgz", members))
    assert snap.services
    assert peak < 24 << 20


# ---------------------------------------------------------------------------------------------- any bytes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["api/x.json", "api/x.yaml", "node/iptables-save.txt", "node/ip6tables-save.txt",
                             "node/nft.json", "node/ipvsadm.txt", "node/ipset.txt", "node/ip-addr.json",
                             "node/meta.json", "node/conntrack.txt"]),
       data=st.binary(max_size=300))
def test_any_bytes_in_any_snapshot_file_load_or_are_one_input_error(tmp_path: Path, name: str, data: bytes) -> None:
    folder = tmp_path / f"s{abs(hash((name, data)))}"
    (folder / name).parent.mkdir(parents=True)
    (folder / name).write_bytes(data)
    try:
        load_snapshot(folder)
    except InputError as exc:
        assert exc.message


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_any_bytes_as_a_tarball_are_refused_in_one_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "x.tgz"
    path.write_bytes(b"\x1f\x8b" + data)
    with pytest.raises(InputError):
        load_snapshot(path)
