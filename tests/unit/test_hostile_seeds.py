"""Every command on every hostile seed: exit status 2 at most, a one-line error, within a deadline.

The seeds are tests/fixtures/fuzz/*/ (made by make_seeds.py there, and the crashes fuzzing found); the
inputs git cannot hold — FIFOs, symlink loops, a tarball that unpacks to hundreds of MB — are made here.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from tests.fuzzing import COMMANDS, DEMOS, SEEDS, make_snapshot, run_all, seed_files

SEED_DIRS = sorted(p for p in SEEDS.iterdir() if p.is_dir())


def errors(results: list[tuple[tuple[str, ...], int, str]]) -> list[str]:
    return [text for _, status, text in results if status == 2]


@pytest.mark.parametrize("seed", SEED_DIRS, ids=[p.name for p in SEED_DIRS])
def test_every_command_on_a_seed_ends_with_at_most_2(seed: Path, tmp_path: Path) -> None:
    mode, files = seed_files(seed)
    results = run_all(make_snapshot(tmp_path / "snap", mode, files))
    for text in errors(results):
        lines = [line for line in text.splitlines() if line.startswith("svctrace: error:")]
        assert len(lines) == 1 and "Traceback" not in text, text


def test_the_seeds_cover_what_issue_14_reported() -> None:
    names = {p.name for p in SEED_DIRS}
    assert {"numgen-mod-2^40", "deep-api-json", "deep-meta-json", "conntrack-reply-without-dst",
            "nft-elements-of-odd-types", "api-answer-a-list", "service-spec-a-list"} <= names
    assert len(COMMANDS) >= 7


def test_a_deep_api_file_names_the_file_and_the_line(tmp_path: Path) -> None:
    mode, files = seed_files(SEEDS / "deep-api-json")
    results = run_all(make_snapshot(tmp_path / "snap", mode, files), COMMANDS[:1])
    assert "svctrace: error: " in results[0][2] and "api/objects.json:1: not read: JSON nested deeper" in results[0][2]


def test_fifos_loops_and_sockets_are_refused_by_every_command(tmp_path: Path) -> None:
    snap = make_snapshot(tmp_path / "fifo", "iptables", {})
    (snap / "node" / "iptables-save.txt").unlink()
    os.mkfifo(snap / "node" / "iptables-save.txt")
    for _, status, text in run_all(snap):
        assert status == 2 and "is a FIFO (named pipe), not a regular file; refused" in text
    loop = make_snapshot(tmp_path / "loop", "iptables", {})
    os.symlink("b.json", loop / "api" / "a.json")
    os.symlink("a.json", loop / "api" / "b.json")
    for _, status, text in run_all(loop):
        assert status == 2 and "symlink loop; refused" in text


class _Spaces:
    """``[``, ``size`` spaces, ``]``, read lazily (tarfile copies a member from a file object)."""

    def __init__(self, size: int) -> None:
        self.left = size + 2
        self.size = size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n < 0 else min(n, self.left)
        first = self.left == self.size + 2
        self.left -= n
        out = b" " * n
        if first:
            out = b"[" + out[1:]
        if self.left == 0:
            out = out[:-1] + b"]"
        return out


def test_a_small_tarball_of_hundreds_of_mb_of_spaces(tmp_path: Path) -> None:
    path = tmp_path / "spaces.tar.gz"
    size = 200 << 20
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        for p in sorted((DEMOS["iptables"]).rglob("*")):
            if p.is_file():
                tf.add(p, arcname=f"snap/{p.relative_to(DEMOS['iptables']).as_posix()}")
        info = tarfile.TarInfo("snap/api/blank.json")
        info.size = size + 2
        tf.addfile(info, _Spaces(size))  # type: ignore[arg-type]
    assert path.stat().st_size < 2 << 20
    ((_, status, text),) = run_all(path, COMMANDS[:1])
    assert status == 0, text
