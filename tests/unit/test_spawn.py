"""Commands a node read starts at once and reads later (svctrace.collectors.spawn.Started): time bounds,
output followed as it is written, a held command released, and nothing left running."""

from __future__ import annotations

import time

import pytest

from svctrace.collectors import spawn
from svctrace.collectors.spawn import Started


def test_a_command_past_its_timeout_is_stopped_and_said() -> None:
    start = time.monotonic()
    started = Started(["sleep", "30"], None, timeout=0.3)
    run = started.result()
    assert run.stdout is None and run.error == "sleep did not finish in 0.3 s"
    assert time.monotonic() - start < 5
    assert started.proc is not None and started.proc.returncode is not None  # killed and reaped


def test_a_passed_deadline_runs_nothing() -> None:
    token = spawn._DEADLINE.set(time.monotonic() - 1)
    try:
        started = Started(["sleep", "30"], None)
    finally:
        spawn._DEADLINE.reset(token)
    assert started.proc is None
    assert started.result().error == "sleep not run: the --timeout for the collection had passed"


def test_output_is_handed_over_as_it_is_written() -> None:
    pieces: list[str] = []
    seen_early = []

    box: list[Started] = []  # the follower may hand the first piece over before Started() has returned

    def sink(piece: str) -> None:
        pieces.append(piece)
        seen_early.append(not box or (box[0].proc is not None and box[0].proc.poll() is None))

    started = Started(["sh", "-c", "printf 'first\\n'; sleep 0.5; printf 'caf\\303\\251\\n'"], None, sink=sink)
    box.append(started)
    run = started.result()
    assert run.stdout == "" and run.followed
    assert "".join(pieces) == "first\ncafé\n"
    assert seen_early[0]  # the first piece came while the command still ran


def test_a_failing_sink_costs_only_the_early_reading() -> None:
    def sink(piece: str) -> None:
        raise RuntimeError("broken")

    run = Started(["sh", "-c", "echo all of it"], None, sink=sink).result()
    assert run.stdout == "all of it\n" and not run.followed


def test_a_held_command_waits_for_its_release() -> None:
    started = Started(["sh", "-c", "read line; echo released"], None, hold=True, timeout=10)
    time.sleep(0.2)
    assert started.proc is not None and started.proc.poll() is None  # still waiting
    started.release()
    assert started.result().stdout == "released\n"


def test_a_held_command_has_its_whole_time_after_its_release() -> None:
    # the probe is held until the node's saves end, which may take longer than its own timeout
    started = Started(["sh", "-c", "read line; sleep 0.3; echo released"], None, hold=True, timeout=1.0)
    time.sleep(1.3)
    started.release()
    assert started.result().stdout == "released\n"
    started = Started(["sh", "-c", "read line; sleep 30"], None, hold=True, timeout=0.3)
    started.release()
    start = time.monotonic()
    assert started.result().error == "sh did not finish in 0.3 s"
    assert time.monotonic() - start < 5


def test_a_cancelled_command_is_gone_and_its_result_says_so() -> None:
    pieces: list[str] = []
    started = Started(["sh", "-c", "echo one; sleep 30"], None, sink=pieces.append)
    time.sleep(0.2)
    started.cancel()
    assert started.proc is not None and started.proc.returncode is not None
    assert started.result().error == "sh was stopped: the collection ended without it"


def test_its_end_wakes_the_waiter_and_leaves_no_descriptor_behind() -> None:
    import os

    before = set(os.listdir("/proc/self/fd"))
    started = Started(["sleep", "0.3"], None, timeout=60)
    assert started.pidfd is not None  # this kernel has pidfds: the end is waited for, not polled
    start = time.monotonic()
    started._ended_within(30)
    assert time.monotonic() - start < 15  # it returned when sleep ended, not when the 30 s had passed
    assert started.proc is not None and started.proc.poll() == 0
    assert started.result().stdout == ""
    assert started.pidfd is None and set(os.listdir("/proc/self/fd")) == before


def test_a_missing_command_is_said() -> None:
    assert Started(["no-such-command-svctrace"], None).result().error == "no-such-command-svctrace is not installed"


def test_addresses_come_from_netlink_when_ip_prints_no_json(monkeypatch: pytest.MonkeyPatch) -> None:
    # An iproute2 older than 4.13 has no -j: it says so and exits 255. The addresses are still read.
    from svctrace.collectors.node import gather
    from svctrace.model.snapshot import NodeFile
    from svctrace.parsers.node import parse_ip_addr_json

    monkeypatch.setattr("os.geteuid", lambda: 1000)  # no saves: only addresses, and the probe in-process
    started = spawn.start_node(proxy_mode_url="")
    assert started.addresses is not None
    started.addresses.cancel()
    started.addresses = Started(["sh", "-c", "echo 'Option \"-j\" is unknown, try \"ip -help\".'; exit 255"], None)
    node = gather(started, "n1")
    assert NodeFile.IP_ADDR not in node.where  # not `ip -j addr`'s
    assert any(a.address == "127.0.0.1" for a in parse_ip_addr_json(node.files[NodeFile.IP_ADDR], "ip-addr.json"))
    assert not [w for w in node.warnings if "cannot read the node's addresses" in w]
