"""A live `svc NAME` or `trace` starts its node read before typer is imported, the command takes that read, and a
read no command takes is stopped before the process ends (svctrace.cli.early), through the real entry point."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from svctrace.cli.app import app
from svctrace.demo import demo_path
from tests.harness.apiserver import FakeApiServer
from tests.integration.netns import NetnsNode
from tests.processes import main_probe

pytestmark = pytest.mark.netns

DEMO = demo_path()
REPO = Path(__file__).resolve().parents[2]

# The node read's starts, as main() makes them: their tables, and whether typer was imported by then.
PROBE = main_probe("""
import svctrace.collectors.live as live
starts = []
original = live._start
def start(key, now):
    starts.append([list(key.tables), "typer" in sys.modules])
    return original(key, now)
live._start = start
""", '"\\nSTARTS " + json.dumps(starts) + "\\n"')


@pytest.fixture
def node(netns_factory: Callable[..., NetnsNode]) -> NetnsNode:
    node = netns_factory(backend="nft", node_ip="192.168.1.63")
    node.load_rules((DEMO / "node" / "iptables-save.txt").read_text())
    return node


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Any:
    with FakeApiServer.from_manifests(sorted((DEMO / "api").iterdir())) as server:
        yield server.write_kubeconfig(tmp_path / "kubeconfig", namespace="default")


def _probe(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], Any]:
    run = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=120, check=False)
    starts = json.loads(run.stderr.rpartition("\nSTARTS ")[2])
    return run, starts


def test_svc_starts_its_read_before_typer_and_the_command_takes_it(node: NetnsNode, kubeconfig: Path) -> None:
    args = ["svc", "my-nginx", "-n", "default", "--netns", node.name, "--kubeconfig", str(kubeconfig), "-o", "json"]
    run, starts = _probe(args)
    assert run.returncode == 0, run.stderr
    assert starts == [[["nat", "filter"], False]]  # one read, started before typer, taken by the command
    direct = CliRunner().invoke(app, args)
    assert direct.exit_code == 0, direct.output
    assert json.loads(run.stdout) == json.loads(direct.output)


def test_trace_starts_its_read_before_typer_and_the_command_takes_it(node: NetnsNode) -> None:
    args = ["trace", "--dst", "10.99.198.177:80", "--netns", node.name, "--node", "xianchaomaster1", "-o", "json"]
    run, starts = _probe(args)
    assert run.returncode == 0, run.stderr
    assert starts == [[["*"], False]]
    assert json.loads(run.stdout)["outcomes"]


def test_a_read_the_command_does_not_take_is_stopped_with_everything_it_started(
        node: NetnsNode, kubeconfig: Path, tmp_path: Path) -> None:
    # The saves never end here: each logs its pid and sleeps. The command refuses its -o, so it never asks for
    # the read; whatever the read started must be gone when the process has ended.
    shims, log = tmp_path / "bin", tmp_path / "started"
    shims.mkdir()
    for tool in ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"):
        shim = shims / tool
        shim.write_text(f'#!/bin/sh\necho "$$ {tool}" >> {log}\nexec sleep 60\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    assert shutil.which("sleep")
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"}
    args = ["svc", "my-nginx", "--netns", node.name, "--kubeconfig", str(kubeconfig), "-o", "bogus"]
    started = time.monotonic()
    run, starts = _probe(args, env)
    assert run.returncode == 2 and "bogus" in run.stderr, run.stderr
    assert time.monotonic() - started < 30  # not waited for
    assert starts == [[["nat", "filter"], False]]
    pids = [int(line.split()[0]) for line in log.read_text().splitlines()]
    assert pids, "the early read started no save"
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
    assert not alive, f"left running: {alive}"
