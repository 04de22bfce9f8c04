"""The kube-proxy fast path types a rule exactly as the general stages do, on every line it takes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from svctrace.model.matches import SRC, AddrMatch, StatisticMatch
from svctrace.parsers.iptables_kube import kube_rule, service_line
from svctrace.parsers.iptables_options import RuleBuilder
from svctrace.parsers.iptables_typing import Typer, comment_of
from tests.shared_data import REPO, shared_dir

sys.path.insert(0, str(REPO / "bench"))


def _general(line: str) -> tuple[object, ...]:
    _chain, basic, raw, target, goto, target_options, _counters = RuleBuilder().general(line)
    typer = Typer()
    assert not goto
    return typer.matches(basic, raw), target, typer.action(target, target_options), comment_of(raw)


def _lines() -> list[str]:
    texts = [p.read_text() for p in (REPO / "svctrace" / "demo").rglob("iptables-save.txt")]
    # (the hostile seeds include files in other encodings: their lines that are not UTF-8 are skipped)
    texts += [p.read_bytes().decode("utf-8", "replace")
              for p in (REPO / "tests" / "fixtures").rglob("*iptables-save.txt")]
    root = shared_dir() / "conformance"
    for path in sorted(root.rglob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("iptables_save"), str):
            texts.append(data["iptables_save"])
            texts += [v for k, v in data.get("derived", {}).items() if k == "iptables_save_rendered"]
    from gen_iptables import generate  # bench's generator: kube-proxy's rules as iptables-save prints them

    texts.append(generate(40, 3))
    return sorted({line.strip() for text in texts for line in text.splitlines() if line.startswith("-A ")})


def _taken(read: Callable[[str], Any]) -> Iterator[tuple[str, Any]]:
    """(line, what ``read`` made of it) of each corpus line it takes (not None)."""
    for line in _lines():
        got = read(line)
        if got is not None:
            yield line, got


def test_the_fast_path_agrees_with_the_general_stages() -> None:
    taken = 0
    for line, fast in _taken(kube_rule):
        taken += 1
        chain, matches, target, action, comment = fast
        assert chain == line.split()[1]
        assert (matches, target, action, comment) == _general(line), line
    assert taken > 300  # every shape is met, many times


@pytest.mark.parametrize("line", [
    '-A X -m comment --comment "a" -j MASQUERADE',  # a bare target that types an action
    '-A X -s 010.0.0.1/32 -m comment --comment "a" -j KUBE-MARK-MASQ',  # not an address iptables prints
    '-A X -m comment --comment "a \\"b\\"" -j Y',  # escapes: the general path unquotes
    '-A X -p tcp -m comment --comment "a" -m tcp -j DNAT --to-destination 10.0.0.1:70000',
    '-A X -m comment --comment "a" -m statistic --mode random --probability 0.5 -j Y --extra',
])
def test_what_the_fast_path_leaves_to_the_general_stages(line: str) -> None:
    assert kube_rule(line) is None


def test_a_service_chain_line_read_untyped_says_what_its_typed_rule_says() -> None:
    # service_line's (target, probability as written, pod network) of every line it takes is what the general
    # stages' typed rule holds: its target, its statistic match's text, its negated source as printed.
    taken = 0
    for line, read in _taken(service_line):
        taken += 1
        typed, target, action, _comment = _general(line)
        matches: tuple[Any, ...] = typed  # type: ignore[assignment]
        assert action is None
        assert read[0] == target, line
        stats = [m for m in matches if isinstance(m, StatisticMatch)]
        assert read[1] == (stats[0].raw if stats else None), line
        sources = [m for m in matches if isinstance(m, AddrMatch) and m.field == SRC]
        if read[2] is None:
            assert target.startswith("KUBE-SEP-") and not sources, line
            assert [type(m) for m in matches] == [StatisticMatch] * len(stats), line
        else:
            assert target == "KUBE-MARK-MASQ" and len(sources) == 1 and sources[0].negated, line
            assert read[2] == ",".join(map(str, sources[0].prefixes)), line
    assert taken > 100  # both shapes, in every era that writes them


@pytest.mark.parametrize("line", [
    '-A X -m comment --comment "a" -j KUBE-SVC-ABC',  # a step to another service chain
    '-A X -m comment --comment "a" -m statistic --mode random --probability 0.5.1 -j KUBE-SEP-A',  # no number
    '-A X ! -s 10.0.0.0/8 -d 10.96.0.1/32 -p tcp -m comment --comment "a" -m tcp --dport 80 -j KUBE-SEP-A',
    '-A X ! -s 10.0.0.0/8 -d 10.96.0.1/32 -p tcp -m comment --comment "a" -m tcp --dport 70000 -j KUBE-MARK-MASQ',
    '-A X -s 10.0.0.0/8 -d 10.96.0.1/32 -p tcp -m comment --comment "a" -m tcp --dport 80 -j KUBE-MARK-MASQ',
    '-A X -m comment --comment "a" -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A --mask '
    '255.255.255.255 --rsource -j KUBE-SEP-A',  # session affinity: typed
    '-A X -m statistic --mode random --probability 0.5 -j KUBE-SEP-A',  # no comment: not kube-proxy's spelling
])
def test_what_service_line_leaves_to_the_typed_walk(line: str) -> None:
    assert service_line(line) is None
