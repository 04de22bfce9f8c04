"""The kube-proxy fast path types a rule exactly as the general stages do, on every line it takes."""

from __future__ import annotations

import json
import sys

import pytest

from svctrace.parsers.iptables_kube import kube_rule
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


def test_the_fast_path_agrees_with_the_general_stages() -> None:
    taken = 0
    for line in _lines():
        fast = kube_rule(line)
        if fast is None:
            continue
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
