"""Hostile snapshot tarballs under 10 MB compressed: each must be refused or answered within 5 s and 300 MB.

    python bench/bench_hostile_tarballs.py               # every case, a table
    python bench/bench_hostile_tarballs.py --keep DIR    # keep the tarballs (they are small) in DIR

Each case is the demo snapshot plus one hostile file, written as a .tar.gz (compression level 9, at most
10 MB), then ``svctrace svc my-nginx --from CASE`` runs in a child process; its wall time and peak RSS
(getrusage of that child) are printed against the target of issue 14. Exit status 1 when a case misses it.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "svctrace" / "demo" / "tutorial"
MAX_COMPRESSED = 10 << 20
TARGET_SECONDS = 5.0
TARGET_MB = 300
MiB = 1 << 20


class Stream(io.RawIOBase):
    """A member's content made piece by piece (hundreds of MB never sit in this process's memory)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buf = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        while n < 0 or len(self._buf) < n:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buf += piece
        out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
        return out


def repeat(piece: bytes, size: int, head: bytes = b"", tail: bytes = b"") -> tuple[int, Callable[[], Iterator[bytes]]]:
    """``head``, ``piece`` repeated (whole pieces only) to about ``size`` bytes in all, ``tail``."""
    body = (size - len(head) - len(tail)) // len(piece) * len(piece)
    block = piece * max(1, MiB // len(piece))

    def gen() -> Iterator[bytes]:
        yield head
        left = body
        while left > 0:
            yield block[:left]
            left -= len(block)
        yield tail

    return len(head) + body + len(tail), gen


def chained_chains() -> tuple[int, Callable[[], Iterator[bytes]]]:
    """KUBE-SERVICES and four more chains of 199,000 rules each, each ending in a jump to the next."""
    def gen() -> Iterator[bytes]:
        yield b"*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n" + b"".join(b":C%d - [0:0]\n" % i
                                                                                     for i in range(4))
        yield b"-A PREROUTING -j KUBE-SERVICES\n"
        for i, chain in enumerate([b"KUBE-SERVICES", b"C0", b"C1", b"C2"]):
            yield b"-A %s -p tcp -j RETURN\n" % chain * 199_000 + b"-A %s -j C%d\n" % (chain, i)
        yield b"-A C3 -p tcp -j RETURN\n" * 199_000 + b"COMMIT\n"

    return sum(len(piece) for piece in gen()), gen


# name -> (member path inside the snapshot, (size, content generator))
CASES: dict[str, tuple[str, tuple[int, Callable[[], Iterator[bytes]]]]] = {
    "api: 1000 MiB of spaces": ("api/blank.json", repeat(b" ", 1000 * MiB, b"[", b"]")),
    "api: spaces between two items": ("api/gaps.json", repeat(b" ", 900 * MiB, b'[{"kind": "Pod"},',
                                                              b'{"kind": "Pod"}]')),
    "api: newlines and tabs": ("api/blank.json", repeat(b"\n\t \r", 900 * MiB, b"[", b"]")),
    "api: one 900 MiB string": ("api/long.json", repeat(b"x", 900 * MiB, b'[{"kind": "Service", "x": "', b'"}]')),
    "api: 100M empty objects": ("api/many.json", repeat(b"{},", 300 * MiB, b"[", b"{}]")),
    "api: 10M nulls": ("api/nulls.json", repeat(b"null,", 60 * MiB, b"[", b"null]")),
    "api: deep nesting": ("api/deep.json", repeat(b"[", 20 * MiB)),
    "api: 200 MiB of kind-less objects": ("api/kinds.json", repeat(b'{"kind": "Foo", "metadata": {"name": "a"}},',
                                                                200 * MiB, b"[", b"{}]")),
    "api: YAML, 60 MiB of one list": ("api/list.yaml", repeat(b"- a\n", 60 * MiB, b"x:\n")),
    "node: 1 GiB skipped member": ("notes/zeros.bin", repeat(b"\0", 1000 * MiB)),
    "node: iptables-save of blank lines": ("node/iptables-save.txt", repeat(b"\n", 250 * MiB)),
    "node: iptables-save, 2M short rules": ("node/iptables-save.txt", repeat(
        b"-A KUBE-SERVICES -j ACCEPT\n", 60 * MiB, b"*nat\n:KUBE-SERVICES - [0:0]\n", b"COMMIT\n")),
    "node: iptables-save, 1M rules (the line bound)": ("node/iptables-save.txt", repeat(
        b"-A KUBE-SERVICES -j ACCEPT\n", 999_990 * 27, b"*nat\n:KUBE-SERVICES - [0:0]\n", b"COMMIT\n")),
    "node: iptables-save, 5 chains of 199,000 rules": ("node/iptables-save.txt", chained_chains()),
    "node: iptables-save, 64 KiB lines": ("node/iptables-save.txt", repeat(
        b"-A KUBE-SERVICES" + b" " * 65_000 + b"-j ACCEPT\n", 120 * MiB, b"*nat\n:KUBE-SERVICES - [0:0]\n",
        b"COMMIT\n")),
    "api: 400k minimal Pods (the value bound)": ("api/pods.json", repeat(
        b'{"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "n"}},', 400_000 * 83, b"[",
        b'{"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "q", "namespace": "n"}}]')),
    "node: nft.json of spaces": ("node/nft.json", repeat(b" ", 250 * MiB, b'{"nftables": [', b"]}")),
    "node: conntrack lines": ("node/conntrack.txt", repeat(
        b"udp 17 29 src=10.244.1.5 dst=10.96.0.10 sport=40000 dport=53 src=10.244.2.7 dst=10.244.1.5 sport=53 "
        b"dport=40000 mark=0 use=1\n", 250 * MiB)),
    "node: meta.json of spaces": ("node/meta.json", repeat(b" ", 200 * MiB, b"{", b"}")),
    "tar: 10,000 empty members": ("", (0, lambda: iter(()))),
}


def write_case(path: Path, member: str, size: int, gen: Callable[[], Iterator[bytes]]) -> None:
    with tarfile.open(path, "w:gz", compresslevel=9) as tf:
        for p in sorted(DEMO.rglob("*")):
            if p.is_file():
                tf.add(p, arcname=f"snap/{p.relative_to(DEMO).as_posix()}")
        if not member:
            for i in range(10_000):
                tf.addfile(tarfile.TarInfo(f"snap/notes/{i}.txt"), io.BytesIO(b""))
            return
        info = tarfile.TarInfo(f"snap/{member}")
        info.size = size
        tf.addfile(info, Stream(gen()))  # type: ignore[arg-type]


def run(path: Path) -> tuple[int, float, float, str]:
    """(exit status, seconds, peak RSS in MB, the error line or first line) of `svctrace svc my-nginx --from path`."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "svctrace", "svc", "my-nginx", "--from", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, wait_status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(wait_status)
    lines = out.decode(errors="replace").strip().splitlines()
    last = next((ln for ln in lines if ln.startswith("svctrace: error:")), lines[0] if lines else "")
    return proc.returncode, seconds, usage.ru_maxrss / 1024, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="write the tarballs here and keep them")
    parser.add_argument("--only", help="run only the cases whose name contains this")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="svctrace-hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    failed = 0
    print(f"{'case':40} {'tar.gz':>8} {'unpacks':>9} {'exit':>4} {'s':>6} {'MB':>6}  result")
    try:
        for name, (member, (size, gen)) in CASES.items():
            if args.only and args.only not in name:
                continue
            path = work / (name.replace(" ", "-").replace(":", "").replace(",", "") + ".tar.gz")
            write_case(path, member, size, gen)
            compressed = path.stat().st_size
            if compressed > MAX_COMPRESSED:
                print(f"{name:40} {compressed / MiB:7.1f}M  (over 10 MB compressed: not a case)")
                continue
            status, seconds, rss, last = run(path)
            ok = status in (0, 1, 2) and seconds <= TARGET_SECONDS and rss <= TARGET_MB
            failed += not ok
            verdict = "ok" if ok else "MISSED"
            print(f"{name:40} {compressed / MiB:7.2f}M {size / MiB:8.0f}M {status:>4} {seconds:6.2f} {rss:6.0f}  "
                  f"{verdict}: {last[:90]}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"target: refused or answered within {TARGET_SECONDS:g} s and {TARGET_MB} MB; "
          f"{failed} case(s) missed it")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
