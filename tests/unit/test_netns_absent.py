"""A --netns that names no namespace is said, and nothing creates it (svctrace is read-only: pyroute2's pushns
and setns create a missing namespace unless told not to)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from svctrace.cli.app import app
from svctrace.collectors import ipvs
from svctrace.sources import NETNS_RUN_DIR

ABSENT = "svctrace-test-absent-ns"


@pytest.fixture(autouse=True)
def _absent() -> None:
    assert not (Path(NETNS_RUN_DIR) / ABSENT).exists(), "a namespace of that name exists here"


@pytest.mark.parametrize("args", [["trace", "--dst", "10.0.0.1:80"], ["svc", "web", "--kubeconfig", "/nonexistent"],
                                  ["audit", "--kubeconfig", "/nonexistent"]])
def test_a_missing_namespace_is_said_before_anything_is_read(args: list[str]) -> None:
    got = CliRunner().invoke(app, [*args, "--netns", ABSENT])
    assert got.exit_code == 2
    assert got.output.startswith(f"svctrace: error: there is no network namespace '{ABSENT}'\n")
    assert not (Path(NETNS_RUN_DIR) / ABSENT).exists()


def test_the_netlink_reads_enter_a_namespace_without_creating_it() -> None:
    before = os.readlink("/proc/self/ns/net")
    with pytest.raises(OSError), ipvs._in_netns(ABSENT):
        pass
    assert not (Path(NETNS_RUN_DIR) / ABSENT).exists()
    assert os.readlink("/proc/self/ns/net") == before  # and the process is back where it was

