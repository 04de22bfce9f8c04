"""iptables-save output indexed while it is written (iptables_save.Stream) gives what parse gives.

A live read indexes the save's output as the command writes it, in whatever pieces the reads return.
For every dump the tests hold, cut at random places (inside lines, inside multibyte characters' text,
one byte at a time at the start), the stream's dump must be the lazily parsed dump: the same tables,
chains, spans and line numbers, and the same rules when read.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from svctrace.errors import InputError
from svctrace.model.iptables import IptablesDump
from svctrace.parsers import iptables_save

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _texts() -> list[Path]:
    out = []
    for path in sorted(FIXTURES.rglob("*tables-save*.txt")):
        try:
            path.read_text()
        except UnicodeDecodeError:
            continue
        out.append(path)
    return out


TEXTS = _texts()


def _index(dump: IptablesDump) -> dict[str, list[tuple[object, ...]]]:
    return {name: [(h.name, h.policy, h.packets, h.bytes, h.declared, h.rule_count, tuple(h.spans))
                   for h in t.heads.values()] for name, t in dump.tables.items()}


def _streamed(text: str, cuts: list[int]) -> iptables_save.Stream:
    stream = iptables_save.Stream()
    at = 0
    for cut in sorted(cuts):
        stream.feed(text[at:cut])
        at = cut
    stream.feed(text[at:])
    return stream


def _cuts(text: str, rng: random.Random) -> list[int]:
    n = len(text)
    return sorted({*range(min(n, 40)), *(rng.randrange(n + 1) for _ in range(min(200, n // 7 + 1)))})


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_a_stream_cut_anywhere_gives_the_parsed_dump(path: Path) -> None:
    text = path.read_text()
    try:
        want = iptables_save.parse(text, "t", 4, eager=False)
    except InputError:
        stream = _streamed(text, _cuts(text, random.Random(1)))
        assert stream.dump("t", 4) is None  # what does not parse does not index either: parse says why
        return
    stream = _streamed(text, _cuts(text, random.Random(len(text))))
    got = stream.dump("t", 4)
    assert got is not None
    assert stream.close() == (text if text.endswith("\n") else text + "\n")
    assert _index(got) == _index(want)
    assert (got.backend, got.version, got.family) == (want.backend, want.version, want.family)
    for name, table in want.tables.items():  # every chain read, rule for rule (by repr: a NaN is not == itself)
        assert [repr(got.tables[name].chain(c)) for c in table.heads] == [repr(table.chain(c)) for c in table.heads]


def test_only_keeps_the_tables_asked_for() -> None:
    text = (FIXTURES / "overall" / "node" / "iptables-save.txt").read_text()
    stream = _streamed(text, [len(text) // 3])
    full = stream.dump("t", 4)
    assert full is not None and len(full.tables) >= 2
    first = next(iter(full.tables))
    only = stream.dump("t", 4, only=(first,))
    assert only is not None and list(only.tables) == [first]
    assert only.tables[first] == full.tables[first]


def test_a_broken_line_stops_the_index_not_the_text() -> None:
    text = "*nat\n:KUBE-SERVICES - [0:0]\n-A\nCOMMIT\n"
    stream = _streamed(text, [5, 9, 30])
    assert stream.dump("t", 4) is None
    assert stream.close() == text
    with pytest.raises(InputError, match="-A without a chain name"):
        iptables_save.parse(stream.close(), "t", 4, eager=False)


def test_a_text_without_a_last_newline_or_commit() -> None:
    stream = _streamed("*nat\n:A - [0:0]\n-A A -j ACCEPT\nCOMMIT", [7])
    got = stream.dump("t", 4)
    assert got is not None and got.tables["nat"].rule_count("A") == 1
    cut_short = _streamed("*nat\n:A - [0:0]\n-A A -j ACCEPT\n", [3])
    assert cut_short.dump("t", 4) is None
