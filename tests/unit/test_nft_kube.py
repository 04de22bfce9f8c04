"""An nftables endpoint chain read from its kept JSON text (svctrace.parsers.nft_kube, NftTable.endpoint_lines) is the
hop its typed rules make, value for value, and the walk it feeds gives the same graph as the walk over typed rules;
any other shape is typed as before."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.errors import InputError
from svctrace.model.nft import LazyChains, NftTable
from svctrace.model.snapshot import Snapshot
from svctrace.parsers.nft_json import parse_nft_json
from svctrace.parsers.nft_kube import endpoint_rule
from svctrace.resolver import resolve
from svctrace.resolver.nftables import _Walk
from tests.shared_data import REPO

ERAS = REPO / "tests" / "fixtures" / "eras"
DEMO = "demo:nftables"  # the tutorial's API objects with svctrace/demo/tutorial-nftables/node
WHERE = [DEMO, str(ERAS / "v1.29-nft"), str(ERAS / "v1.33-nft")]


def _documents() -> list[Path]:
    return sorted({*(REPO / "svctrace" / "demo").rglob("nft.json"), *(REPO / "tests" / "fixtures").rglob("nft.json")})


def _ip6_document() -> str:
    """kube-proxy's ``ip6 kube-proxy`` endpoint chains, as `nft -j` writes them (the fixtures are all IPv4)."""
    items: list[object] = [{"table": {"family": "ip6", "name": "kube-proxy", "handle": 2}}]
    for n, (addr, port, proto) in enumerate([("fd00:10:244::5", 8080, "tcp"), ("2001:db8::1", 53, "udp")]):
        chain = f"endpoint-ABCDEFG{n}-demo/web/{proto}/p__{addr}/{port}"
        items.append({"chain": {"family": "ip6", "table": "kube-proxy", "name": chain, "handle": 10 + n}})
        head = {"family": "ip6", "table": "kube-proxy", "chain": chain}
        items.append({"rule": {**head, "handle": 20 + 2 * n, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": addr}},
            {"jump": {"target": "mark-for-masquerade"}}]}})
        items.append({"rule": {**head, "handle": 21 + 2 * n, "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": proto}},
            {"dnat": {"addr": addr, "port": port}}]}})
    return json.dumps({"nftables": items})


def _typed_hop(walk: _Walk, name: str, share: float | None = 0.5) -> object:
    """The hop the walk makes of chain ``name`` from its typed rules (its kept text not read)."""
    typed = _Walk(walk.snapshot, walk.svc, walk.sp, walk.nft, {})
    typed.endpoint_lines = lambda chain: None  # type: ignore[method-assign]
    return typed.endpoint_hop(name, rules=(), share=share, probability=None if share is None else "0.5")


def test_every_endpoint_chain_read_from_its_text_is_the_hop_of_its_typed_rules() -> None:
    snapshot = load_snapshot(DEMO)
    svc = snapshot.services[0]
    taken = 0
    documents = [(str(p), p.read_text()) for p in _documents()] + [("ip6", _ip6_document())]
    for path, text in documents:
        try:
            ruleset = parse_nft_json(text, path)
        except InputError:
            continue  # the hostile seeds: refused whole, nothing to compare
        for table in ruleset.tables:
            assert isinstance(table.chains, LazyChains)  # `nft -j`'s layout: kept as text, typed when used
            walk = _Walk(snapshot, svc, svc.ports[0], table, {})
            for name in list(table.heads()):
                if table.endpoint_lines(name) is None:
                    continue
                taken += 1
                fast = walk.endpoint_hop(name, rules=(), share=0.5, probability="0.5")
                assert name in walk.reached
                assert fast == _typed_hop(walk, name), name
                chain = table.chain(name)
                assert chain is not None
                assert [text for text, _, _ in table.endpoint_lines(name) or ()] == [r.text for r in chain.rules]
    assert taken >= 42  # kube-proxy's endpoint chains of the demo (13), both nftables eras and the IPv6 table


def _nft_json(where: str) -> str:
    folder = REPO / "svctrace" / "demo" / "tutorial-nftables" if where == DEMO else Path(where)
    # as `nft -j` writes it (one line, ", " and ": "): each rule is kept as its own text (the fixtures are indented,
    # so their rules are kept as json.dumps writes them: the other spelling endpoint_rule reads)
    return json.dumps(json.loads((folder / "node" / "nft.json").read_text()))


def _with(where: str, change: Callable[[str], str] | None = None) -> Snapshot:
    snapshot = load_snapshot(where)
    text = _nft_json(where)
    return replace(snapshot, nft=parse_nft_json(change(text) if change else text, "changed"))


def _graphs(snapshot: Snapshot) -> list[object]:
    return [resolve(snapshot, s.namespace, s.name) for s in snapshot.services]


def _typed_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NftTable, "endpoint_lines", lambda self, name: None)


@pytest.mark.parametrize("where", WHERE, ids=lambda w: Path(w).name)
def test_the_walk_gives_the_same_graph_from_texts_and_from_typed_rules(
        where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    real = NftTable.endpoint_lines

    def counted(self: NftTable, name: str) -> object:
        got = real(self, name)
        if got:
            read.append(name)
        return got

    monkeypatch.setattr(NftTable, "endpoint_lines", counted)
    from_texts = _graphs(_with(where))
    assert read  # the texts were read
    _typed_only(monkeypatch)
    assert from_texts == _graphs(_with(where))


def _first_endpoint_rule(text: str, edit: Callable[[dict[str, object]], None]) -> str:
    """The document with its first endpoint chain's first rule changed by ``edit`` (its JSON written compact)."""
    doc = json.loads(text)
    for item in doc["nftables"]:
        rule = item.get("rule")
        if rule is not None and str(rule["chain"]).startswith("endpoint-"):
            edit(rule)
            break
    return json.dumps(doc)


def _third_rule(text: str) -> str:
    doc = json.loads(text)
    items = doc["nftables"]
    at = next(i for i, item in enumerate(items) if str(item.get("rule", {}).get("chain", "")).startswith("endpoint-"))
    extra = json.loads(json.dumps(items[at]))
    extra["rule"]["expr"] = [{"counter": {"packets": 0, "bytes": 0}}]
    items.insert(at + 1, extra)
    return json.dumps(doc)


@pytest.mark.parametrize("change", [
    lambda t: _first_endpoint_rule(t, lambda r: r.update(comment="hairpin")),  # a member kube-proxy does not write
    lambda t: _first_endpoint_rule(t, lambda r: r.update(expr=list(reversed(r["expr"])))),  # type: ignore[call-overload]
    lambda t: _first_endpoint_rule(t, lambda r: r.update(expr=[{"counter": None}, *r["expr"]])),  # type: ignore[misc]
    lambda t: _third_rule(t),
    lambda t: t.replace('"port": 6443}', '"port": 0}', 1),
    lambda t: t.replace('"field": "saddr"}}, "right": "10.', '"field": "saddr"}}, "right": "010.', 1),
    lambda t: t.replace('"dnat": {"addr": "', '"dnat": {"family": "ip", "addr": "', 1),
    lambda t: t.replace('"right": "tcp"}}, {"dnat"', '"right": "t\\u0063p"}}, {"dnat"', 1),
    lambda t: t.replace('"dnat": {"addr": "', '"dnat": {"port": 1, "addr": "', 1),  # duplicate member: last wins
], ids=["comment", "order", "counter", "third-rule", "port-0", "leading-zero", "family", "escape", "duplicate"])
def test_what_is_not_read_from_text_gives_the_typed_walk(change: Callable[[str], str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    text = _nft_json(DEMO)
    assert change(text) != text  # the change applies
    got = _graphs(_with(DEMO, change))
    _typed_only(monkeypatch)
    assert got == _graphs(_with(DEMO, change))


@pytest.mark.parametrize(("kept", "expected"), [
    (b'{"handle": 7, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, '
     b'"right": "10.1.2.3"}}, {"jump": {"target": "mark-for-masquerade"}}]}',
     ("ip saddr 10.1.2.3 jump mark-for-masquerade", "10.1.2.3", None)),
    (b'{"handle":8,"expr":[{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"udp"}},'
     b'{"dnat":{"addr":"fd00::a","port":53}}]}',
     ("meta l4proto udp dnat to [fd00::a]:53", "fd00::a", 53)),
    (b'{"handle":8,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip6","field":"saddr"}},'
     b'"right":"fd00::a"}},{"jump":{"target":"mark-for-masquerade"}}]}',
     ("ip6 saddr fd00::a jump mark-for-masquerade", "fd00::a", None)),
    # not as nft spells it: typed as before
    (b'{"handle":8,"expr":[{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"udp"}},'
     b'{"dnat":{"addr":"fd00:0::a","port":53}}]}', None),
    (b'{"handle":8,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},'
     b'"right":"fd00::a"}},{"jump":{"target":"mark-for-masquerade"}}]}', None),
    (b'{"handle":8,"expr":[{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},'
     b'{"dnat":{"addr":"10.1.2.3","port":65536}}]}', None),
    (b'{"handle":8,"expr":[{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},'
     b'{"dnat":{"addr":"10.1.2.256","port":80}}]}', None),
    # hex digits alone are no address (a name nft would look up): not an IPv4 address, whatever the family says
    (b'{"handle":8,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},'
     b'"right":"abcd"}},{"jump":{"target":"mark-for-masquerade"}}]}', None),
    (b'{"handle":8,"expr":[{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},'
     b'{"dnat":{"addr":"beef","port":80}}]}', None),
])
def test_a_rule_is_read_only_when_it_is_exactly_one_of_the_two_shapes(
        kept: bytes, expected: tuple[str, str, int | None] | None) -> None:
    assert endpoint_rule(kept) == expected


def test_a_long_run_of_blanks_is_refused_at_once() -> None:
    # one run of blanks is matched one way: a rule of a million blanks costs one pass, not one per split
    head = b'{"handle":1,"expr":[{"match":{'
    assert endpoint_rule(head + b" " * 1_000_000 + b"x") is None
    assert endpoint_rule(head + b" \t" * 500_000 + b'"op":"=="') is None


_ADDRESSES = st.sampled_from([
    "10.1.2.3", "10.01.2.3", "10.1.2.256", "0.0.0.0", "255.255.255.255", "abcd", "beef:", "fd00::1", "fd00:0::1",
    "FD00::1", "::ffff:10.1.2.3", "2001:db8::", "::", "1.2.3", "10.1.2.3 ", "10.1.2.3/32", ""])
_MEMBERS = st.sampled_from(["handle", "comment", "family", "index"])


@st.composite
def _endpoint_rules(draw: st.DrawFn) -> dict[str, object]:
    """A rule near one of kube-proxy's two endpoint shapes: the shape itself (half the time, any address and
    port), or with any of its parts changed."""
    plain = draw(st.booleans())

    def pick(usual: object, *others: object) -> object:
        return usual if plain else draw(st.sampled_from([usual, *others]))

    addr, fam = draw(_ADDRESSES), pick("ip", "ip6", "inet")
    if draw(st.booleans()):
        expr: list[object] = [
            {"match": {"op": pick("==", "!="),
                       "left": {"payload": {"protocol": fam, "field": pick("saddr", "daddr")}}, "right": addr}},
            {pick("jump", "goto"): {"target": pick("mark-for-masquerade", "mark-for-drop")}}]
    else:
        port = draw(st.sampled_from([80, 0, 1, 65535, 65536, 99999, -1, 8080.0, "80", None]))
        dnat: dict[str, object] = {"addr": addr, "port": port} if port is not None else {"addr": addr}
        expr = [{"match": {"op": "==", "left": {"meta": {"key": pick("l4proto", "protocol")}},
                           "right": draw(st.sampled_from(["tcp", "udp", "sctp", "icmp", "TCP"]))}},
                {pick("dnat", "snat"): dnat}]
    if not plain and draw(st.booleans()):
        expr = draw(st.permutations(expr))
    rule: dict[str, object] = {"handle": draw(st.integers(0, 1 << 40)), "expr": expr}
    for member in draw(st.lists(_MEMBERS, max_size=0 if plain else 2)):
        rule[member] = draw(st.sampled_from([1, "x", "ip"]))
    return rule


@settings(max_examples=int(os.environ.get("SVCTRACE_FUZZ_EXAMPLES", "80")) * 3, deadline=None)
@given(rules=st.lists(_endpoint_rules(), min_size=1, max_size=3), family=st.sampled_from(["ip", "ip6"]),
       indent=st.sampled_from([None, 1]))
def test_whatever_the_fast_path_reads_it_reads_as_the_typed_rules_say(
        rules: list[dict[str, object]], family: str, indent: int | None) -> None:
    # A chain of rules near kube-proxy's endpoint shapes, in nft -j's layout or indented (kept as json.dumps
    # writes it): when the fast path reads the chain, what it says is what the typed rules say.
    chain = "endpoint-ABCDEFGH-demo/web/tcp/p__10.1.2.3/80"
    head = {"family": family, "table": "kube-proxy", "chain": chain}
    items: list[object] = [{"table": {"family": family, "name": "kube-proxy", "handle": 1}},
                           {"chain": {**head, "name": chain, "handle": 2}}]
    items += [{"rule": {**head, **rule}} for rule in rules]
    try:
        ruleset = parse_nft_json(json.dumps({"nftables": items}, indent=indent), "fuzz")
    except InputError:
        return  # refused whole: nothing is read
    table = ruleset.tables[0]
    lines = table.endpoint_lines(chain)
    if not lines:
        return
    snapshot = load_snapshot(DEMO)
    svc = snapshot.services[0]
    walk = _Walk(snapshot, svc, svc.ports[0], table, {})
    assert walk.endpoint_hop(chain, rules=(), share=None, probability=None) == _typed_hop(walk, chain, share=None)
