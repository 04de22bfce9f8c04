"""The node read a live `svc NAME` or `trace` starts before typer is imported (svctrace.cli.early): which
arguments start which read, that every option of the two commands is known to the scan, and that the command
takes the read only when it asks for that very read."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main

from svctrace.cli import early
from svctrace.cli.app import make_app
from svctrace.collectors import live
from svctrace.collectors.live import SERVICE_TABLES, LiveOptions
from svctrace.parsers.commands import ALL_TABLES

TWO_MINUTES = 120.0  # the --timeout default


@pytest.mark.parametrize(("args", "planned"), [
    (["svc", "web"], (None, SERVICE_TABLES, TWO_MINUTES)),
    (["svc", "web", "-n", "shop", "-o", "json", "--explain"], (None, SERVICE_TABLES, TWO_MINUTES)),
    (["svc", "-nshop", "-ojson", "web", "--port", "80"], (None, SERVICE_TABLES, TWO_MINUTES)),
    (["svc", "--port", "80", "shop/web", "--netns", "node-1", "--timeout", "30s"], ("node-1", SERVICE_TABLES, 30.0)),
    (["svc", "--netns=node-1", "--timeout=0", "--", "web"], ("node-1", SERVICE_TABLES, None)),
    (["svc", "web", "--kubeconfig", "/k", "--context", "c", "--node", "n", "--request-timeout", "1s"],
     (None, SERVICE_TABLES, TWO_MINUTES)),
    (["trace", "--dst", "10.96.0.10:53", "--proto", "udp", "--from-node"], (None, ALL_TABLES, TWO_MINUTES)),
    (["trace", "--dst=10.96.0.10:53", "--src", "10.244.1.5", "--in-interface", "eth0", "--mode", "iptables",
      "--kube-proxy-test", "--netns", "n1"], ("n1", ALL_TABLES, TWO_MINUTES)),
])
def test_a_plain_live_read_of_this_node_is_planned(args: list[str], planned: tuple[Any, ...]) -> None:
    assert early.plan(args) == planned


@pytest.mark.parametrize("args", [
    [], ["--version"], ["audit", "-A"], ["capture", "-o", "x.tar.gz"], ["why-unreachable", "web"],
    ["svc"], ["svc", "web", "other"], ["svc", "web", "--from", "demo"], ["svc", "web", "--from=demo"],
    ["svc", "web", "--collect", "--node", "n1"], ["svc", "web", "--all-nodes"], ["svc", "web", "--nodes", "a=b"],
    ["svc", "web", "--help"], ["svc", "-h"], ["svc", "web", "--timeout", "soon"], ["svc", "web", "--timeout"],
    ["svc", "10.96.0.10"], ["svc", "10.96.0.10:80"], ["svc", "fd00::10"],  # an address reads every namespace
    ["svc", "web", "--some-new-option", "x"], ["svc", "web", "-x"], ["svc", "web", "--explain=yes"],
    ["trace", "--dst", "10.96.0.10:53", "--from-pod", "shop/client"], ["trace", "extra"],
])
def test_anything_else_starts_nothing(args: list[str]) -> None:
    assert early.plan(args) is None


@pytest.mark.parametrize("name", ["svc", "trace"])
def test_every_option_of_the_command_is_known_to_the_scan(name: str) -> None:
    group: Any = typer.main.get_command(make_app(name))  # (typer's own click)
    command = group.commands[name]
    known = early.ELSEWHERE | early.FLAGS | early.VALUED
    options = [p for p in command.params if p.param_type_name == "option"]
    assert len(options) > 8
    for param in options:
        for opt in (*param.opts, *param.secondary_opts):
            assert opt in known, f"{name} {opt}: add it to svctrace.cli.early"
            # a flag read as taking a value would take the Service's NAME for its own
            if opt in early.FLAGS:
                assert param.is_flag, opt
            if opt in early.VALUED:
                assert not param.is_flag, opt
    assert {"--help"} <= early.ELSEWHERE


class FakeRead:
    def __init__(self, key: Any) -> None:
        self.key = key
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[FakeRead]:
    started: list[FakeRead] = []

    def start(key: Any, now: float) -> FakeRead:
        started.append(FakeRead(key))
        return started[-1]

    monkeypatch.setattr(live, "_start", start)
    monkeypatch.setattr(live, "_EARLY", [])
    return started


def test_the_command_takes_the_early_read_when_it_asks_for_that_read(reads: list[FakeRead]) -> None:
    live.start_early("node-1", SERVICE_TABLES, 30.0)
    taken = live._start_node(LiveOptions(netns="node-1", total_timeout=30.0), SERVICE_TABLES, conntrack=False)
    assert taken is reads[0] and len(reads) == 1 and not reads[0].cancelled
    live.stop_early()  # taken: no longer early's to stop
    assert not reads[0].cancelled


@pytest.mark.parametrize("asked", [
    {"netns": "node-2"}, {"total_timeout": 31.0}, {"tables": ALL_TABLES}, {"conntrack": True},
    {"documents": True}, {"proxy_mode_url": "http://127.0.0.1:1/proxyMode"},
])
def test_any_other_read_stops_the_early_one_and_starts_its_own(reads: list[FakeRead], asked: dict[str, Any]) -> None:
    live.start_early("node-1", SERVICE_TABLES, 30.0)
    opts = LiveOptions(netns=asked.get("netns", "node-1"), total_timeout=asked.get("total_timeout", 30.0),
                       proxy_mode_url=asked.get("proxy_mode_url"))
    got = live._start_node(opts, asked.get("tables", SERVICE_TABLES), conntrack=asked.get("conntrack", False),
                           documents=asked.get("documents", False))
    assert len(reads) == 2 and got is reads[1] and reads[0].cancelled and not reads[1].cancelled
    # and the next read starts its own
    assert live._start_node(opts, SERVICE_TABLES, conntrack=False) is reads[2]


def test_a_read_no_command_took_is_stopped(reads: list[FakeRead]) -> None:
    live.start_early(None, ALL_TABLES, None)
    early.stop()
    assert reads[0].cancelled and not live._EARLY


def test_only_root_starts_one(monkeypatch: pytest.MonkeyPatch, reads: list[FakeRead]) -> None:
    monkeypatch.setattr(early.os, "geteuid", lambda: 1000)
    early.start(["svc", "web"])
    assert not reads
    monkeypatch.setattr(early.os, "geteuid", lambda: 0)
    monkeypatch.setenv("_SVCTRACE_COMPLETE", "complete_bash")
    early.start(["svc", "web"])
    assert not reads
    monkeypatch.delenv("_SVCTRACE_COMPLETE")
    early.start(["svc", "web"])
    assert [r.key.tables for r in reads] == [SERVICE_TABLES]
    live.stop_early()
    monkeypatch.delattr(early.os, "geteuid")  # Windows has none: nothing is started, and nothing fails
    early.start(["svc", "web"])
    assert len(reads) == 1


def test_an_early_read_that_cannot_start_leaves_it_to_the_command(monkeypatch: pytest.MonkeyPatch,
                                                                   reads: list[FakeRead]) -> None:
    # e.g. no room for the saves' output files: the command's own read meets it and says so, in one line
    def fail(key: Any, now: float) -> FakeRead:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(live, "_start", fail)
    monkeypatch.setattr(early.os, "geteuid", lambda: 0)
    early.start(["svc", "web"])
    assert not live._EARLY
