"""What the fuzz targets and the seed walk share: a hostile snapshot, every command run on it, what a crash is.

A crash is an exit status above 2 (svctrace's "internal error"), an exception out of the CLI, or a command that
does not finish within DEADLINE seconds. The same checks run in the normal test suite over the seeds in
tests/fixtures/fuzz/ (tests/unit/test_hostile_seeds.py); bench/fuzz_snapshot.py runs them coverage-guided
(atheris) or, without atheris, as a long hypothesis run.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from typer.testing import CliRunner

from svctrace.cli.app import app

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO / "tests" / "fixtures" / "fuzz"

DEMOS = {"iptables": REPO / "svctrace" / "demo" / "tutorial",
         "ipvs": REPO / "svctrace" / "demo" / "tutorial-ipvs",
         "nftables": REPO / "svctrace" / "demo" / "tutorial-nftables"}
FILES = ("api/objects.json", "api/objects.yaml", "node/iptables-save.txt", "node/ip6tables-save.txt",
         "node/nft.json", "node/ipvsadm.txt", "node/ipset.txt", "node/ip-addr.json", "node/meta.json",
         "node/conntrack.txt")
# What each command is asked on every input: names and addresses the demo has, so the inputs reach the
# resolver, the tracer and the checks rather than stopping at "not found".
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("svc", "my-nginx", "-o", "json"),
    ("svc", "kube-dns", "-n", "kube-system"),
    ("trace", "--dst", "10.99.198.177:80", "--src", "10.244.187.102"),
    ("trace", "--dst", "10.96.0.10:53", "--proto", "udp", "-o", "json"),
    ("why-unreachable", "my-nginx"),
    ("why-unreachable", "http://my-nginx.default.svc.cluster.local/"),
    ("audit", "-A", "-o", "json"),
)
DEADLINE = 20  # seconds a command may take on one small input before it counts as a hang


class Hang(Exception):
    pass


def make_snapshot(root: Path, mode: str, files: dict[str, bytes]) -> Path:
    """The demo in ``mode`` with ``files`` (relative paths) replaced or added."""
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(DEMOS["iptables"] / "api", root / "api")
    shutil.copytree(DEMOS[mode] / "node" if mode != "iptables" else DEMOS["iptables"] / "node", root / "node")
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def split_input(data: bytes) -> tuple[str, dict[str, bytes]]:
    """A fuzz input as (demo mode, {file: content}): byte 0 picks the mode, byte 1 the file, the rest is it."""
    if len(data) < 2:
        return "iptables", {}
    mode = ("iptables", "ipvs", "nftables")[data[0] % 3]
    return mode, {FILES[data[1] % len(FILES)]: data[2:]}


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_all(snapshot: Path, commands: tuple[tuple[str, ...], ...] = COMMANDS) -> list[tuple[tuple[str, ...], int, str]]:
    """Each command on the snapshot: (argv, exit status, output). Raises on a crash."""
    runner = CliRunner()
    out = []
    for argv in commands:
        full = (*argv, "--from", str(snapshot))
        with deadline(DEADLINE):
            result = runner.invoke(app, list(full), catch_exceptions=True)
        text = result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"svctrace {' '.join(full)} raised {result.exception!r}")
        if result.exit_code > 2 or "internal error" in text:
            raise AssertionError(f"svctrace {' '.join(full)} exited {result.exit_code}:\n{text[-2000:]}")
        out.append((argv, result.exit_code, text))
    return out


def seed_files(folder: Path) -> tuple[str, dict[str, bytes]]:
    """A seed folder of tests/fixtures/fuzz/ as (demo mode, {file: content})."""
    mode = (folder / "mode").read_text().strip()
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != "mode"}
    return mode, files


def check_input(data: bytes, workdir: Path | None = None) -> None:
    """One fuzz input end to end (the atheris target's body)."""
    mode, files = split_input(data)
    base = workdir or Path(tempfile.mkdtemp(prefix="svctrace-fuzz-"))
    try:
        run_all(make_snapshot(base / "snap", mode, files))
    finally:
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)


def hypothesis_run(seeds: list[bytes], one: Callable[[bytes], None], examples: int, keep: int) -> int:
    """Without atheris: ``examples`` inputs, each a seed with a few byte-level edits after its first ``keep``
    bytes (the header that picks the target); prints how many ran. Returns an exit status."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    count = 0
    started = time.monotonic()

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(seeds), st.data())
    def run(seed: bytes, data: st.DataObject) -> None:
        nonlocal count
        body = bytearray(seed)
        for _ in range(data.draw(st.integers(0, 8))):
            if len(body) <= keep:
                break
            at = data.draw(st.integers(keep, len(body) - 1))
            body[at:at + data.draw(st.integers(0, 40))] = data.draw(st.binary(max_size=40))
        one(bytes(body))
        count += 1

    run()
    print(f"{count} inputs, no crash, {time.monotonic() - started:.0f} s")
    return 0
