"""An endpoint or service chain read from its text (Table.endpoint_lines and service_lines, ChainWalk's hops of their
lines) is the hop its typed rules make, value for value, and the walk they feed gives the same graph as the walk
over typed rules."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.errors import InputError
from svctrace.model.iptables import IptablesDump, Table
from svctrace.model.snapshot import Snapshot
from svctrace.parsers.iptables_save import parse
from svctrace.resolver import iptables as iptables_resolver
from svctrace.resolver import resolve
from tests.shared_data import REPO, shared_dir

sys.path.insert(0, str(REPO / "bench"))

ERAS = REPO / "tests" / "fixtures" / "eras"
DEMO = REPO / "svctrace" / "demo" / "tutorial"


def _texts() -> list[str]:
    texts = [p.read_text() for p in (REPO / "svctrace" / "demo").rglob("iptables-save.txt")]
    texts += [p.read_bytes().decode("utf-8", "replace")
              for p in (REPO / "tests" / "fixtures").rglob("*iptables-save.txt")]
    for path in sorted((shared_dir() / "conformance").rglob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("iptables_save"), str):
            texts.append(data["iptables_save"])
    from gen_iptables import generate  # bench's generator: kube-proxy's rules as iptables-save prints them

    texts.append(generate(40, 3))
    return texts


def _typed(walk: iptables_resolver._Walk) -> iptables_resolver._Walk:
    """A walk like ``walk`` that reads every chain by its typed rules (no text read)."""
    typed = iptables_resolver._Walk(walk.snapshot, walk.svc, walk.sp, walk.dump, {})
    typed.endpoint_lines = lambda chain: None  # type: ignore[method-assign]
    typed.service_lines = lambda chain: None  # type: ignore[method-assign]
    return typed


def _typed_hop(walk: iptables_resolver._Walk, name: str) -> object:
    """The hop the walk makes of chain ``name`` from its typed rules (its text not read)."""
    return _typed(walk).endpoint_hop(name, rules=(), share=0.5, probability="0.5")


def _nat_tables() -> Iterator[tuple[IptablesDump, Table]]:
    """Each corpus dump's nat table, read as a big dump is (chains typed when asked for)."""
    for text in _texts():
        try:
            dump = parse(text, "corpus", eager=False)
        except InputError:
            continue  # the hostile seeds: refused whole, nothing to compare
        nat = dump.table("nat")
        if nat is not None:
            yield dump, nat


def test_every_chain_read_from_its_text_is_the_hop_of_its_typed_rules() -> None:
    snapshot = load_snapshot(DEMO)
    svc = snapshot.services[0]
    taken = 0
    for dump, nat in _nat_tables():
        for name in list(nat.heads):
            if not nat.endpoint_lines(name):
                continue
            taken += 1
            walk = iptables_resolver._Walk(snapshot, svc, svc.ports[0], dump, {})
            fast = walk.endpoint_hop(name, rules=(), share=0.5, probability="0.5")
            assert walk.reached == {name}
            assert fast == _typed_hop(walk, name), name
            assert nat.endpoint_lines(name) is None  # typed now: its typed rules are read
    assert taken > 200  # kube-proxy's endpoint chains of every era that writes them so


def test_every_service_chain_read_from_its_text_is_the_hop_of_its_typed_rules() -> None:
    # its endpoints' hops included: the walk of the typed rules reads none of them from text either
    snapshot = load_snapshot(DEMO)
    svc = snapshot.services[0]
    taken = 0
    for dump, nat in _nat_tables():
        for name in list(nat.heads):
            if not name.startswith(("KUBE-SVC-", "KUBE-SVL-")) or not nat.service_lines(name):
                continue
            taken += 1
            walk = iptables_resolver._Walk(snapshot, svc, svc.ports[0], dump, {})
            fast = walk.service_hop(name, when="from pods", rules=())
            typed = _typed(walk)
            assert fast == typed.service_hop(name, when="from pods", rules=()), name
            assert walk.reached == typed.reached, name
    assert taken > 50  # kube-proxy's service chains of every era that writes them so


def _lazily(snapshot_dir: Path, text: str | None = None) -> Snapshot:
    snapshot = load_snapshot(snapshot_dir)
    text = text if text is not None else (snapshot_dir / "node" / "iptables-save.txt").read_text()
    return replace(snapshot, iptables=parse(text, "lazy", 4, eager=False))


def _graphs(snapshot_dir: Path, text: str | None = None) -> list[object]:
    snapshot = _lazily(snapshot_dir, text)
    return [resolve(snapshot, s.namespace, s.name) for s in snapshot.services]


@pytest.mark.parametrize("where", [DEMO, *(ERAS / v for v in ("v1.2", "v1.13", "v1.20", "v1.26", "v1.33"))],
                         ids=lambda p: p.name)
def test_the_walk_gives_the_same_graph_from_texts_and_from_typed_rules(
        where: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read: dict[str, list[str]] = {"endpoint_lines": [], "service_lines": []}

    def counted(what: str) -> Callable[[iptables_resolver._Walk, str], list[Any] | None]:
        real = getattr(iptables_resolver._Walk, what)

        def count(self: iptables_resolver._Walk, chain: str) -> list[Any] | None:
            lines: list[Any] | None = real(self, chain)
            if lines:
                read[what].append(chain)
            return lines
        return count

    for what in read:
        monkeypatch.setattr(iptables_resolver._Walk, what, counted(what))
    from_texts = _graphs(where)
    assert read["endpoint_lines"]  # the texts were read
    # v1.13 wrote no comment on a service chain's rules: those are typed (the rest, both kinds)
    assert read["service_lines"] or where.name == "v1.13"
    monkeypatch.setattr(Table, "endpoint_lines", lambda self, name: None)
    monkeypatch.setattr(Table, "service_lines", lambda self, name: None)
    assert from_texts == _graphs(where)


@pytest.mark.parametrize("change", [
    # counters on a rule: the typed path reads them
    lambda text: text.replace("-A KUBE-SEP-", "[3:180] -A KUBE-SEP-", 1),
    # an escape somewhere in the text: no line is read plainly
    lambda text: text.replace("COMMIT", '-A KUBE-X -m comment --comment "a \\"b\\"" -j RETURN\nCOMMIT', 1),
    # a third line kube-proxy does not write
    lambda text: _after_first_sep(text, "-m comment --comment \"x\" -j RETURN"),
    # session affinity: the "-m recent --set" DNAT is not one of the two common lines
    lambda text: _after_first_sep(text, "-p tcp -m comment --comment \"x\" -m recent --set --name KUBE-SEP-A "
                                  "--mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.0.0.9:80"),
    # a service chain's step to something other than an endpoint chain
    lambda text: _after_first(text, "-A KUBE-SVC-", '-m comment --comment "x" -j RETURN'),
    # a service chain's last step given a probability: every connection is not taken
    lambda text: _after_first(text, "-A KUBE-SVC-", '-m comment --comment "x" -m statistic --mode random '
                              "--probability 0.25000000000 -j KUBE-SEP-NOTTHERE"),
    # the masquerade mark for any source (--masquerade-all): not the usual line
    lambda text: _after_first(text, "-A KUBE-SVC-", '-d 10.96.0.9/32 -p tcp -m comment --comment "x" -m tcp '
                              "--dport 80 -j KUBE-MARK-MASQ"),
], ids=["counters", "escape", "other-line", "affinity", "service-return", "service-last-step", "masquerade-all"])
def test_what_is_not_read_from_text_gives_the_typed_walk(change: object, monkeypatch: pytest.MonkeyPatch) -> None:
    text = change((DEMO / "node" / "iptables-save.txt").read_text())  # type: ignore[operator]
    got = _graphs(DEMO, text)
    monkeypatch.setattr(Table, "endpoint_lines", lambda self, name: None)
    monkeypatch.setattr(Table, "service_lines", lambda self, name: None)
    assert got == _graphs(DEMO, text)


def _after_first(text: str, prefix: str, rest: str) -> str:
    """``text`` with a rule ``rest`` added to the chain of the first line starting with ``prefix``, before it."""
    at = text.index("\n" + prefix) + 1
    chain = text[at:].split()[1]
    return text[:at] + f"-A {chain} {rest}\n" + text[at:]


def _after_first_sep(text: str, rest: str) -> str:
    at = text.index("\n-A KUBE-SEP-") + 1
    chain = text[at:].split()[1]
    return text[:at] + f"-A {chain} {rest}\n" + text[at:]
