"""What an audit's sweep keeps between Services, and lets go when its share is done (Snapshot.end_sweep).

The process that starts ``audit`` works through a share of the Services, then receives the other
workers' answers: its typed chains and recent answers are let go first, so the answers fill that memory.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from svctrace.parsers.iptables_save import parse
from tests.snapshots import make_snapshot

DUMP = "*nat\n" + "".join(f":KUBE-SEP-{i:016d} - [0:0]\n" for i in range(6)) + "".join(
    f"-A KUBE-SEP-{i:016d} -s 10.0.0.{i}/32 -j KUBE-MARK-MASQ\n" for i in range(6)) + "COMMIT\n"


def test_a_sweep_keeps_typed_chains_and_recent_answers_until_its_share_is_done() -> None:
    snapshot = replace(make_snapshot(), iptables=parse(DUMP, "t", 4, eager=False))
    nat = snapshot.iptables.table("nat")  # type: ignore[union-attr]
    assert nat is not None
    names = [f"KUBE-SEP-{i:016d}" for i in range(6)]
    snapshot.prepare_sweep(3)
    first = nat.chain(names[5])
    assert first is not None and nat.chain(names[5]) is first  # typed once, kept
    built: list[int] = []

    def build() -> int:
        built.append(1)
        return len(built)

    assert snapshot.recent("k", build) == 1
    assert snapshot.recent("k", build) == 1

    snapshot.end_sweep(3)
    again = nat.chain(names[5])
    assert again == first and again is not first  # typed again: the sweep's copy was let go
    assert snapshot.recent("k", build) == 2  # built again
    a0 = nat.chain(names[0])
    for name in names[1:4]:  # the bound is back: 3 kept, so the first of these 4 is typed again
        nat.chain(name)
    assert nat.chain(names[0]) is not a0 and nat.chain(names[3]) is nat.chain(names[3])


def test_a_sweep_of_many_services_marks_the_tables_and_one_of_a_few_does_not() -> None:
    # Past SWEEP_FROM Services, whole-table indexes (the chains' owners) answer from the first Service; an
    # audit of a small namespace of a big node keeps searching the text for its few Services instead.
    from svctrace.model.iptables import SWEEP, SWEEP_FROM

    for services, marked in ((None, True), (SWEEP_FROM + 1, True), (SWEEP_FROM, False), (3, False)):
        snapshot = replace(make_snapshot(), iptables=parse(DUMP, "t", 4, eager=False))
        snapshot.prepare_sweep(3, services=services)
        nat = snapshot.iptables.table("nat")  # type: ignore[union-attr]
        assert nat is not None
        assert bool(nat.memo.get(SWEEP)) is marked, services


def test_recent_answers_are_bounded_by_the_items_they_hold_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Service of 5,000 endpoints has answers of 5,000 items: 1,024 answers held a 20-Service cluster whole
    # (an audit of it peaked at 310 MB). Past RECENT_ITEMS the least recently used go, but never the 8 used last.
    from svctrace.model import snapshot as model

    monkeypatch.setattr(model, "RECENT_ITEMS", 1000)
    snapshot = make_snapshot()
    built: list[str] = []

    def answer(key: str, size: int) -> tuple[int, ...]:
        def build() -> tuple[int, ...]:
            built.append(key)
            return tuple(range(size))
        return snapshot.recent(key, build)

    for i in range(4):
        answer(f"big{i}", 300)  # 1,200 items, but only 4 answers: all kept
    answer("big1", 300)  # (used again: now the most recent)
    for i in range(8):
        answer(f"small{i}", 1)  # the 9th answer: big0, the least recently used, goes
    assert built == ["big0", "big1", "big2", "big3", *(f"small{i}" for i in range(8))]
    answer("big1", 300)
    answer("big0", 300)  # built again; and big2, the least recently used, goes to make room
    answer("big3", 300)
    answer("big2", 300)
    assert built[-2:] == ["big0", "big2"]
    huge = [answer(f"huge{i}", 5000) for i in range(9)]  # each over the bound alone: the 8 used last stay
    assert all(len(h) == 5000 for h in huge) and built.count("huge8") == 1
    answer("huge1", 5000)
    answer("huge0", 5000)
    assert built.count("huge1") == 1 and built.count("huge0") == 2
