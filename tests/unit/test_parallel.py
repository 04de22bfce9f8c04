"""fork_map: the same answer as one process, in order, pieces taken by whichever process is free, and what a failed
worker took is redone here."""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Sequence

import pytest

from svctrace import parallel
from svctrace.collectors.snapshot_dir import load_demo
from svctrace.diagnosis import audit as audit_module
from svctrace.diagnosis.audit import audit
from tests.processes import all_reaped, record_forks


def _square_with_pid(share: Sequence[int]) -> list[tuple[int, int]]:
    return [(x * x, os.getpid()) for x in share]


def test_results_come_back_in_order_from_several_processes() -> None:
    def slowly(piece: Sequence[int]) -> list[tuple[int, int]]:
        time.sleep(0.05)  # each piece long enough that every process is free to take some
        return _square_with_pid(piece)

    got = parallel.fork_map(slowly, list(range(1001)), 3)
    assert [v for v, _ in got] == [x * x for x in range(1001)]
    assert len({pid for _, pid in got}) == 3  # really three processes
    assert got[0][1] == os.getpid()  # the first piece is this process's


def test_the_items_an_answer_holds_come_back_as_this_process_s_own() -> None:
    # (an audit's answers hold the Services asked about: sent as their place in the items, not pickled whole)
    items = [[i] for i in range(60)]

    def pair(piece: Sequence[list[int]]) -> list[tuple[list[int], list[int], int]]:
        time.sleep(0.05)
        return [(x, [x[0]], os.getpid()) for x in piece]

    got = parallel.fork_map(pair, items, 3)
    assert len({pid for _, _, pid in got}) == 3
    assert all(item is items[i] for i, (item, _, _) in enumerate(got))  # the very objects, from every process
    assert all(copy == [i] and copy is not items[i] for i, (_, copy, _) in enumerate(got))  # the rest: by value


def test_an_answer_naming_an_item_that_is_not_there_is_not_read() -> None:
    shared = [["a"], ["b"]]
    data = bytearray(parallel._dumps(("ok", [shared[1], ["c"]]), shared))
    kind, value = parallel._loads(data, shared)
    assert kind == "ok" and value[0] is shared[1] and value[1] == ["c"]
    with pytest.raises(pickle.UnpicklingError):
        parallel._loads(data, shared[:1])


def test_a_slower_process_takes_fewer_pieces() -> None:
    # The pieces go to whichever process is free: here this one is slowed (a busy core, costlier items), so the
    # worker does most of them, where a fixed half each would have kept it waiting.
    parent = os.getpid()

    def uneven(piece: Sequence[int]) -> list[tuple[int, int]]:
        time.sleep(0.2 if os.getpid() == parent else 0.01)
        return [(x, os.getpid()) for x in piece]

    got = parallel.fork_map(uneven, list(range(160)), 2)
    assert [x for x, _ in got] == list(range(160))
    here = sum(1 for _, pid in got if pid == parent)
    assert here < 160 // 4  # two pieces of ten, or three: not half of them


def test_then_runs_here_once_this_process_has_no_piece_left() -> None:
    parent = os.getpid()
    seen: list[tuple[int, int]] = []

    def work(piece: Sequence[int]) -> list[int]:
        if os.getpid() == parent:
            seen.append((0, len(piece)))
        return list(piece)

    for n in (1, 2):
        seen.clear()
        assert parallel.fork_map(work, list(range(40)), n, then=lambda: seen.append((1, os.getpid()))) == \
            list(range(40))
        assert seen[-1] == (1, parent)
        assert [kind for kind, _ in seen].count(1) == 1


def test_a_failing_worker_is_redone_here() -> None:
    parent = os.getpid()

    def flaky(share: Sequence[int]) -> list[int]:
        if os.getpid() != parent and 7 in share:
            raise RuntimeError("boom")
        return [x + 1 for x in share]

    assert parallel.fork_map(flaky, list(range(10)), 2) == list(range(1, 11))


def test_a_killed_worker_is_redone_here() -> None:
    parent = os.getpid()

    def dies(share: Sequence[int]) -> list[int]:
        if os.getpid() != parent:
            os._exit(9)
        return list(share)

    assert parallel.fork_map(dies, list(range(6)), 3) == list(range(6))


def test_an_error_in_this_process_stops_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = os.getpid()
    forked = record_forks(monkeypatch)

    def fails_here(share: Sequence[int]) -> list[int]:
        if os.getpid() == parent:
            raise ValueError("here")
        return list(share)

    with pytest.raises(ValueError, match="here"):
        parallel.fork_map(fails_here, list(range(6)), 2)
    assert forked and all_reaped(forked)  # every worker was reaped


@pytest.mark.parametrize(("env", "items", "want"), [("1", 100_000, 1), ("3", 100_000, 3), ("4", 600, 1),
                                                     ("", 10, 1)])
def test_workers_follows_the_environment_and_the_size(monkeypatch: pytest.MonkeyPatch, env: str, items: int,
                                                      want: int) -> None:
    monkeypatch.setenv("SVCTRACE_WORKERS", env)
    assert parallel.workers(items) == want


def test_split_keeps_neighbours_together() -> None:
    assert [list(s) for s in parallel.split(list(range(7)), 3)] == [[0, 1, 2], [3, 4], [5, 6]]


def _namespaces(sizes: list[int]) -> list[tuple[str, int]]:
    return [(f"ns{k}", i) for k, size in enumerate(sizes) for i in range(size)]


@pytest.mark.parametrize("sizes, n, want", [
    ([5, 5, 5, 5], 4, [5, 5, 5, 5]),  # the cuts fall where the namespaces change: unmoved
    ([4, 6, 4, 6], 4, [4, 6, 4, 6]),  # a cut one item into a namespace moves back to its start
    ([6, 4, 6, 4], 4, [6, 4, 6, 4]),  # ... or on to its end, the nearer
    ([3, 3, 3, 3, 3, 3, 3], 3, [6, 9, 6]),  # cuts at 7 and 14: to 6 and 15 (the earlier of two as near)
    ([20], 4, [5, 5, 5, 5]),  # one namespace longer than a share: cut inside
    ([4, 12, 4], 4, [4, 6, 6, 4]),  # a change within half a share is taken; none near the middle cut: it stays
    ([3, 3], 3, [3, 3]),  # two cuts that move to one change: fewer shares, none empty
])
def test_split_by_key_cuts_where_the_key_changes(sizes: list[int], n: int, want: list[int]) -> None:
    items = _namespaces(sizes)
    shares = parallel.split(items, n, key=lambda item: item[0])
    assert [len(s) for s in shares] == want
    assert [x for s in shares for x in s] == items  # every item once, in order


def test_an_audit_cuts_its_pieces_where_the_namespace_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    # the Services on either side of a cut inside a namespace would both need its pods: two processes would
    # type them (at 10k Services x 10 pods, 112 namespaces' pods typed for 101 namespaces)
    keys: list[object] = []
    real = parallel.fork_map

    def fork_map(work: object, items: Sequence[object], n: int, *, then: object, key: object) -> list[object]:
        keys.extend(key(s) == s.namespace for s in items)  # type: ignore[attr-defined, operator]
        return real(work, items, n, then=then, key=key)  # type: ignore[arg-type]

    monkeypatch.setattr(audit_module.parallel, "fork_map", fork_map)
    snapshot = load_demo("iptables")
    assert audit(snapshot, workers=2) == audit(snapshot, workers=1)
    assert keys and all(keys)


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_an_audit_split_over_processes_is_the_audit_of_one(mode: str) -> None:
    snapshot = load_demo(mode)
    one = audit(snapshot, workers=1)
    assert audit(snapshot, workers=3) == one
    assert len(one.services) >= 3


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_an_audit_that_keeps_one_typed_chain_is_the_audit_that_keeps_them_all(
        mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    every = audit(load_demo(mode), workers=1)
    monkeypatch.setattr(audit_module, "KEEP_CHAINS", 1)
    assert audit(load_demo(mode), workers=1) == every


def test_a_background_job_is_done_by_another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    forked = record_forks(monkeypatch)
    job = parallel.Background(lambda: os.getpid())
    assert job.result() in forked
    assert job.result() == job.result()  # asked again: the same answer, not done again here
    assert len(forked) == 1 and all_reaped(forked)


def test_a_background_job_that_fails_there_is_done_here_with_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    forked = record_forks(monkeypatch)
    parent = os.getpid()

    def flaky() -> int:
        if os.getpid() != parent:
            os._exit(3)  # killed, say
        return 42

    assert parallel.Background(flaky).result() == 42

    def broken() -> int:
        raise ValueError("no such file")

    with pytest.raises(ValueError, match="no such file"):  # the error this process would have met
        parallel.Background(broken).result()
    assert len(forked) == 2 and all_reaped(forked)


def test_one_core_does_the_job_here_as_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVCTRACE_WORKERS", "1")
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("forked"))
    job = parallel.Background(lambda: ("there", os.getpid()), here=lambda: ("here", os.getpid()))
    assert job.result() == ("here", os.getpid())


def test_a_cancelled_background_job_leaves_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    forked = record_forks(monkeypatch)
    job = parallel.Background(lambda: __import__("time").sleep(60))
    job.cancel()
    assert len(forked) == 1 and all_reaped(forked)
    job.cancel()  # again: nothing left to stop


def test_an_audit_split_over_processes_finds_the_same_unowned_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from svctrace.demo import demo_path
    from svctrace.parsers.iptables_save import parse

    text = (demo_path() / "node" / "iptables-save.txt").read_text()
    head, nat = text.split("*nat\n", 1)
    stale = ':KUBE-SEP-AAAAAAAAAAAAAAAA - [0:0]\n-A KUBE-SEP-AAAAAAAAAAAAAAAA -s 10.244.9.9/32 -m comment ' \
            '--comment "default/gone:" -j KUBE-MARK-MASQ\n'
    snapshot = replace(load_demo("iptables"), iptables=parse(head + "*nat\n" + stale + nat, "x", 4))
    searched: list[int] = []
    real = audit_module.parallel.Background

    def background(job: object, here: object = None) -> object:
        searched.append(1)
        return real(job, here)  # type: ignore[arg-type]

    monkeypatch.setattr(audit_module.parallel, "Background", background)
    forked = record_forks(monkeypatch)
    one = audit(snapshot, workers=1)
    assert not searched and [c.chain for c in one.stale_chains] == ["KUBE-SEP-AAAAAAAAAAAAAAAA"]
    assert audit(snapshot, workers=3) == one
    assert searched  # by another process, while the workers swept
    assert len(forked) == 3 and all_reaped(forked)  # two workers and the search


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(parallel._malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_memory_freed_in_the_middle_of_the_heap_goes_back_to_the_system() -> None:
    # 64 KiB blocks come from glibc's heap (below its mmap threshold). Freed with every 16th kept, the gaps stay
    # resident, for the heap's top is in use: what a big read leaves in this process, and in each child forked.
    block = 64 * 1024
    parallel.release_free_memory()  # (free pages held from earlier would be reused without raising the count)
    before = _resident_bytes()
    blocks = [b"\x01" * block for _ in range(1600)]  # 100 MiB, written
    kept = blocks[15::16]
    del blocks
    held = _resident_bytes()
    assert held - before > 60 * 2**20
    parallel.release_free_memory()
    assert held - _resident_bytes() > 50 * 2**20
    assert len(kept) == 100


def test_free_memory_is_given_back_before_each_fork_and_before_the_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = os.getpid()
    events: list[str] = []

    def release() -> None:
        if os.getpid() == parent:
            events.append("release")

    monkeypatch.setattr(parallel, "release_free_memory", release)
    monkeypatch.setattr(parallel, "_answer", lambda child, real=parallel._answer: (events.append("answer"),
                                                                                    real(child))[1])
    forked = record_forks(monkeypatch)
    assert parallel.fork_map(list, list(range(40)), 3, then=lambda: events.append("then")) == list(range(40))
    assert len(forked) == 2 and all_reaped(forked)
    assert events == ["release", "release", "then", "release", "answer", "answer"]
    events.clear()
    monkeypatch.setenv("SVCTRACE_WORKERS", "2")  # (so that it forks whatever the cores)
    assert parallel.Background(lambda: 7).result() == 7
    assert events[0] == "release"


def test_without_malloc_trim_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel.sys, "platform", "darwin")
    assert parallel._malloc_trim() is None
    monkeypatch.setattr(parallel, "_TRIM", [None])
    parallel.release_free_memory()  # nothing to call, nothing fails
