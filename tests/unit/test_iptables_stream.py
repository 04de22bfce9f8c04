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
from svctrace.model.iptables import ChainHead, IptablesDump, Rule
from svctrace.parsers import iptables_save
from svctrace.parsers.detect import count_backend

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
    assert stream.kube_chains == count_backend(text, full=False).kube_chains
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


def _kube_services_text(extra: str = "") -> str:
    sep = "".join(f":KUBE-SEP-{i} - [0:0]\n" for i in range(50))
    svc = "".join(f":KUBE-SVC-{i} - [0:0]\n" for i in range(50))
    rules = "".join(f'-A KUBE-SERVICES -d 10.96.0.{i}/32 -p tcp -m comment --comment "ns/s{i}:p cluster IP" '
                    f"-m tcp --dport 80 -j KUBE-SVC-{i}\n" for i in range(50))
    seps = "".join(f"-A KUBE-SEP-{i} -p tcp -m tcp -j DNAT --to-destination 10.244.0.{i}:80\n" for i in range(50))
    svcs = "".join(f"-A KUBE-SVC-{i} -j KUBE-SEP-{i}\n" for i in range(50))
    return (f"*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n{sep}{svc}{seps}{rules}{svcs}{extra}"
            "COMMIT\n")


@pytest.mark.parametrize("extra,typed_early", [
    ("", True),
    ("-A KUBE-SERVICES -j KUBE-NODEPORTS\n", False),  # its rules again after others: typed from the text
    ('-A KUBE-SVC-1 -m comment --comment "a \\" quote" -j ACCEPT\n', False),  # not plain: typed otherwise
])
def test_kube_services_is_typed_while_the_rest_comes_and_reads_as_parsed(monkeypatch: pytest.MonkeyPatch,
                                                                          extra: str, typed_early: bool) -> None:
    """A live save types nat's KUBE-SERVICES once its rules have come (the chains after it are still being
    written): the same rules the text gives, or, where the rest of the text changes them, none kept."""
    text = _kube_services_text(extra)
    parsed = iptables_save.parse(text, "t", 4, eager=False).chain("nat", "KUBE-SERVICES")
    assert parsed is not None and len(parsed.rules) == 50 + ("NODEPORTS" in extra)
    loads: list[str] = []
    real = iptables_save._Loader.__call__

    def counting(self: iptables_save._Loader, table: str, head: ChainHead) -> tuple[Rule, ...]:
        loads.append(head.name)
        return real(self, table, head)

    monkeypatch.setattr(iptables_save._Loader, "__call__", counting)
    for size in (1, 50, 4096):
        got = _streamed(text, list(range(size, len(text), size))).dump("t", 4)
        assert got is not None
        loads.clear()
        chain = got.chain("nat", "KUBE-SERVICES")
        assert chain is not None and repr(chain) == repr(parsed)
        assert loads == ([] if typed_early else ["KUBE-SERVICES"])


@pytest.mark.parametrize("odd", ['\\"', "\t"], ids=["backslash", "tab"])
def test_a_backslash_or_tab_late_in_the_text_is_read_as_parse_reads_it(odd: str) -> None:
    # The stream learns whether the text is plain (no backslash, no tab) as it comes; the loader's choice of
    # reader follows it, so an escape in the last piece is read as a whole-text parse reads it.
    text = ("*nat\n:A - [0:0]\n:B - [0:0]\n" + "-A A -m comment --comment \"a b\" -j B\n" * 50
            + f'-A B -m comment --comment "x{odd}y" -j RETURN\nCOMMIT\n')
    want = iptables_save.parse(text, "t", 4, eager=False)
    stream = _streamed(text, [len(text) // 2, len(text) - 30])
    got = stream.dump("t", 4)
    assert got is not None
    assert got.tables["nat"]._load.plain is want.tables["nat"]._load.plain is False  # type: ignore[attr-defined]
    assert [repr(got.tables["nat"].chain(c)) for c in "AB"] == [repr(want.tables["nat"].chain(c)) for c in "AB"]
    assert got.tables["nat"].chain("B").rules[0].comment == want.tables["nat"].chain("B").rules[0].comment
