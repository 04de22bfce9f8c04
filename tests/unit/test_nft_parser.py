"""The nftables parsers: real `nft -j` JSON and knftables transaction text give the same ruleset."""

from __future__ import annotations

import functools
import itertools
import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from svctrace.errors import InputError
from svctrace.model.actions import UnknownStatement, Verdict
from svctrace.model.matches import UnknownMatch
from svctrace.model.nft import ChainHeads, NftRuleset, NftTable
from svctrace.parsers.nft_json import NftJsonReader, parse_nft_json
from svctrace.parsers.nft_render import render_rule
from svctrace.parsers.nft_transaction import parse_nft_transaction
from tests.shared_data import shared_dir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nft"
# conformance file -> the `nft -j list table ip kube-proxy` fixture made from it (tests/fixtures/nft/README.md)
CASES = {"TestOverallNFTablesRules": "overall.json",
         "TestSyncProxyRulesRepeated__after_service_delete": "after-service-delete.json"}


def conformance(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((shared_dir() / "conformance" / "nftables" / f"{name}.json").read_text())
    return data


def listed_rules(rendered: str) -> dict[str, list[str]]:
    """{chain: rule lines} from `nft list table` text."""
    chains: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in rendered.splitlines():
        m = re.match(r"\tchain (\S+) \{$", line)
        if m:
            current = chains.setdefault(m.group(1), [])
        elif line == "\t}":
            current = None
        elif current is not None and line.strip() and not line.strip().startswith(("type ", "comment ")):
            current.append(line.strip())
    return chains


def kube_proxy(ruleset: NftRuleset) -> NftTable:
    table = ruleset.kube_proxy(4)
    assert table is not None
    return table


def elements(table: NftTable) -> dict[str, list[str]]:
    return {name: sorted(e.text for e in s.elements) for name, s in {**table.sets, **table.maps}.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_json_rules_print_exactly_as_nft_list_prints_them(name: str) -> None:
    table = kube_proxy(parse_nft_json((FIXTURES / CASES[name]).read_text(), CASES[name]))
    expected = listed_rules(conformance(name)["derived"]["nft_list_rendered"])
    assert set(table.chains) == set(expected)
    for chain, lines in expected.items():
        assert [r.full_text for r in table.chains[chain].rules] == lines, chain
        assert all(r.stmts and r.handle for r in table.chains[chain].rules)
        # every statement of kube-proxy's own rules is typed: none is left for the tracer to guess at
        assert not any(isinstance(s, (UnknownStatement, UnknownMatch)) for r in table.chains[chain].rules
                       for s in r.stmts), chain


@pytest.mark.parametrize("name", sorted(CASES))
def test_transaction_text_and_json_give_the_same_ruleset(name: str) -> None:
    data = conformance(name)
    text = kube_proxy(parse_nft_transaction(data["nft_ruleset"], f"{name}.json"))
    js = kube_proxy(parse_nft_json((FIXTURES / CASES[name]).read_text(), CASES[name]))
    assert text.ref == js.ref == "ip kube-proxy" and text.comment == "rules for kube-proxy"
    # nft 1.0.6's JSON leaves out table and chain comments (`nft list` shows them)
    assert js.comment is None and js.chains["reject-chain"].comment is None
    assert set(text.chains) == set(js.chains) and set(text.maps) == set(js.maps) and set(text.sets) == set(js.sets)
    assert elements(text) == elements(js)
    for chain in js.chains:
        a, b = text.chains[chain], js.chains[chain]
        assert (a.type, a.hook, a.priority, a.policy) == (b.type, b.hook, b.priority, b.policy)
        if chain not in ("mark-for-masquerade", "masquerading"):  # knftables writes `mark set mark or 0x4000`
            assert [r.full_text for r in a.rules] == [r.full_text for r in b.rules], chain
    for name_ in js.maps:
        assert (text.maps[name_].type, text.maps[name_].data_type) == (js.maps[name_].type, js.maps[name_].data_type)


def test_overall_ruleset_details() -> None:
    table = kube_proxy(parse_nft_json((FIXTURES / "overall.json").read_text(), "overall.json"))
    chain = table.chains["filter-prerouting-pre-dnat"]
    assert (chain.type, chain.hook, chain.priority, chain.policy, chain.is_base) == \
           ("filter", "prerouting", -110, "accept", True)
    assert not table.chains["services"].is_base
    ips = table.maps["service-ips"]
    assert ips.type == "ipv4_addr . inet_proto . inet_service" and ips.data_type == "verdict" and ips.is_map
    elem = ips.lookup("172.30.0.41 . tcp . 80")
    assert elem is not None and elem.value == "goto service-ULMVA6XW-ns1/svc1/tcp/p80"
    noep = table.maps["no-endpoint-services"].lookup("172.30.0.46 . tcp . 80")
    assert noep is not None and (noep.value, noep.comment) == ("goto reject-chain", "ns6/svc6:p80")
    assert noep.text == '172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain'
    aff = table.sets["affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"]
    assert aff.timeout == "10800s" and "timeout" in aff.flags
    assert [e.key for e in table.sets["nodeport-ips"].elements] == ["192.168.0.2"]
    rule = table.chains["external-42NFTM6N-ns2/svc2/tcp/p80"].rules[0]
    assert (rule.index, rule.comment) == (1, "short-circuit pod traffic")
    assert rule.text == "ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80"


def test_empty_stale_chains_are_kept() -> None:
    data = conformance("TestSyncProxyRulesRepeated__after_service_delete")
    table = kube_proxy(parse_nft_transaction(data["nft_ruleset"], "x"))
    assert table.chains["service-MHHHYRWA-ns2/svc2/tcp/p8080"].rules == ()
    assert table.chains["endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080"].rules == ()


def test_unknown_expressions_are_shown_not_fatal() -> None:
    doc = {"nftables": [
        {"table": {"family": "ip", "name": "kube-proxy", "handle": 1}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "c", "handle": 2}},
        {"rule": {"family": "ip", "table": "kube-proxy", "chain": "c", "handle": 3, "expr": [
            {"match": {"op": "==", "left": {"osf": {"key": "name"}}, "right": "Linux"}},
            {"limit": {"rate": 10, "per": "second"}}, {"counter": {"packets": 1, "bytes": 60}}, {"accept": None}]}},
        {"flowtable": {"family": "ip", "table": "kube-proxy", "name": "f"}},
    ]}
    table = kube_proxy(parse_nft_json(json.dumps(doc), "x.json"))
    (rule,) = table.chains["c"].rules
    assert rule.text == ('<osf {"key":"name"}> Linux <limit {"rate":10,"per":"second"}> '
                         "counter packets 1 bytes 60 accept")
    # The unknown expression is typed as such, with the verdict the rule still ends in.
    assert rule.stmts == (UnknownStatement('<osf {"key":"name"}> Linux <limit {"rate":10,"per":"second"}> '
                                           "counter packets 1 bytes 60 accept", Verdict("accept")),)


def test_render_ipv6_dnat_and_sets() -> None:
    expr = [{"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                       "right": {"set": [{"prefix": {"addr": "fd00::", "len": 8}}, "fd01::1"]}}},
            {"dnat": {"addr": "fd00::5", "port": 8080}}]
    assert render_rule(expr, "ip6") == "ip6 saddr != { fd00::/8, fd01::1 } dnat to [fd00::5]:8080"


@pytest.mark.parametrize("text,where,what", [
    ('{"nftables": [', "f.json:1", "not valid JSON"),
    ('{"rules": []}', "f.json", 'no top-level "nftables" list'),
    ('{"nftables": [42]}', "f.json", "nftables[0] is not an object"),
    ('{"nftables": [{"rule": {"family": "ip", "table": "t", "expr": []}}]}', "f.json", "rule has no 'chain'"),
])
def test_bad_json_names_file_and_position(text: str, where: str, what: str) -> None:
    with pytest.raises(InputError) as err:
        parse_nft_json(text, "f.json")
    assert err.value.message.startswith(where + ":") and what in err.value.message
    assert err.value.hint is not None and "nft -j list ruleset" in err.value.hint


@pytest.mark.parametrize("text,line,what", [
    ("add table ip t\nadd chain ip t c\nreplace rule ip t c drop\n", 3, "unsupported command 'replace'"),
    ("add table ip t\nadd element ip t nosuch { 1.2.3.4 }\n", 2, "no `add set` or `add map` declares"),
    ("\n# x\nadd rule ip\n", 3, "expected `add <object> <family> <table> ...`"),
])
def test_bad_transaction_text_names_the_line(text: str, line: int, what: str) -> None:
    with pytest.raises(InputError) as err:
        parse_nft_transaction(text, "rules.nft")
    assert err.value.line == line and err.value.message.startswith(f"rules.nft:{line}:")
    assert what in err.value.message and err.value.hint


def _eager(text: str) -> NftRuleset:
    """The same document decoded whole (a layout the item reader does not take: "nftables" not first)."""
    doc = json.loads(text)
    return parse_nft_json(json.dumps({"x": 1, **doc}), "eager.json")


@pytest.mark.parametrize("name", sorted(CASES))
def test_rules_read_in_place_equal_rules_decoded_whole(name: str) -> None:
    text = (FIXTURES / CASES[name]).read_text()
    lazy, eager = kube_proxy(parse_nft_json(text, "f.json")), kube_proxy(_eager(text))
    assert not isinstance(eager.chains, type(lazy.chains))  # really the two paths
    assert lazy == eager
    assert {n: c.rules for n, c in lazy.chains.items()} == {n: c.rules for n, c in eager.chains.items()}
    pretty = kube_proxy(parse_nft_json(json.dumps(json.loads(text), indent=2), "pretty.json"))
    assert pretty == eager


def test_several_documents_in_one_file_are_read_in_turn() -> None:
    text = (FIXTURES / CASES["TestOverallNFTablesRules"]).read_text()
    ip6 = text.replace('"family": "ip"', '"family": "ip6"')
    both = parse_nft_json(text.rstrip() + "\n" + ip6, "both.json")
    assert [t.ref for t in both.tables] == ["ip kube-proxy", "ip6 kube-proxy"]
    assert both.kube_proxy(6) is not None and len(both.kube_proxy(6).chains) == len(kube_proxy(both).chains)


def _outcome(read: Callable[[], NftRuleset]) -> object:
    """What a read gives: each table with its chains' rules (typed), or the error's words."""
    try:
        ruleset = read()
    except InputError as exc:
        return ("error", exc.message, exc.hint)
    return [(t, {n: c.rules for n, c in t.chains.items()}) for t in ruleset.tables]


def _in_pieces(text: str, sizes: Iterator[int]) -> NftRuleset:
    reader = NftJsonReader("f.json")
    at = 0
    while at < len(text):
        size = next(sizes)
        reader.feed(text[at:at + size])
        at += size
    return reader.close()


def _piece_cases() -> dict[str, str]:
    overall = (FIXTURES / CASES["TestOverallNFTablesRules"]).read_text()
    pretty = json.dumps(json.loads(overall), indent=2)
    ip6 = overall.replace('"family": "ip"', '"family": "ip6"')
    big_set = json.dumps({"nftables": [{"set": {"family": "ip", "table": "t", "name": "s", "type": "ipv4_addr",
                                                 "elem": [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
                                                          for i in range(5000)]}},
                                       {"rule": {"family": "ip", "table": "t", "chain": "c", "handle": 7,
                                                 "expr": [{"accept": None}]}}]})
    cases = {"overall": overall, "pretty": pretty, "two documents": overall.rstrip() + "\n" + ip6,
             "two documents, no newline": overall.strip() + ip6.strip(), "big set": big_set,
             "other layout": json.dumps({"x": 1, **json.loads(overall)}),
             "more members": overall.rstrip()[:-1] + ', "more": {"a": [1, 2]}}',
             "number item at the end": '{"nftables": [{"metainfo": {}}, 12345]}',
             "whitespace before": " \n" * 100 + overall}
    for name in sorted(ERA_NFT):
        cases[name] = ERA_NFT[name].read_text()
    # Broken: cut anywhere, a separator missing or doubled, text after the end, a line break before the fault
    for cut in (1, 10, 15, len(pretty) // 3, len(pretty) - 3, len(pretty) - 1):
        cases[f"cut at {cut}"] = pretty[:cut]
    cases["no comma"] = overall.replace("}}, {", "}} {", 1)
    cases["two commas"] = pretty.replace("},\n", "},,\n", 5)
    cases["comma before ]"] = '{"nftables": [{"metainfo": {}},\n ]}'
    cases["text after"] = overall.rstrip() + " x"
    cases["bad tail"] = overall.rstrip()[:-1] + ', "more": [}'
    at = [m.start() for m in re.finditer('"handle"', pretty)][20]  # far into the text, on a line of its own
    cases[f"bad item on line {pretty.count(chr(10), 0, at) + 1}"] = pretty[:at] + '"handle" 1,' + pretty[at + 8:]
    return cases


ERA_NFT = {p.parent.parent.name: p for p in (FIXTURES.parent / "eras").glob("*/node/nft.json")}
PIECE_CASES = _piece_cases()


@pytest.mark.parametrize("name", sorted(PIECE_CASES))
def test_a_document_read_in_pieces_reads_as_it_does_whole(name: str) -> None:
    """A live read hands the reader `nft -j`'s output as it is written, cut anywhere: the ruleset, or the
    error (its line and column in the whole text), is the same as the text read at once."""
    text = PIECE_CASES[name]
    whole = _outcome(lambda: parse_nft_json(text, "f.json"))
    rng = random.Random(name)
    for sizes in (itertools.repeat(1), itertools.repeat(7), itertools.repeat(1000),
                  iter(lambda: rng.randint(1, 5000), None)):
        assert _outcome(functools.partial(_in_pieces, text, sizes)) == whole
    assert whole != [] or name == "other layout"


def test_an_item_cut_by_many_pieces_is_decoded_a_few_times_not_once_per_piece(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 70 KB set written 7 characters at a time: decoding it again at each piece would be quadratic."""
    import svctrace.parsers.nft_json as nft_json

    calls: list[int] = []
    real = nft_json._DECODER

    class Counting:
        def raw_decode(self, text: str, pos: int) -> tuple[Any, int]:
            calls.append(pos)
            return real.raw_decode(text, pos)

    monkeypatch.setattr(nft_json, "_DECODER", Counting())
    text = PIECE_CASES["big set"]
    assert len(text) > 60_000
    assert _outcome(lambda: _in_pieces(text, itertools.repeat(7))) == _outcome(lambda: parse_nft_json(text, "f.json"))
    assert len(calls) < 60


def test_cases_read_in_pieces_are_real_reads_and_real_faults() -> None:
    """The cases above cover what they say: rules read in place, errors with their line, both layouts."""
    outcomes = {name: _outcome(functools.partial(parse_nft_json, text, "f.json")) for name, text in PIECE_CASES.items()}
    assert all(isinstance(outcomes[n], list) and outcomes[n] for n in ("overall", "two documents", "big set",
                                                                         "more members", *ERA_NFT))
    assert all(isinstance(o, tuple) and o[0] == "error" for n, o in outcomes.items() if n.startswith(
        ("cut", "no comma", "two commas", "comma before", "text after", "bad")))
    (bad,) = (n for n in outcomes if n.startswith("bad item on line"))
    error = outcomes[bad]
    assert isinstance(error, tuple) and int(bad.split()[-1]) > 100 and f"f.json:{bad.split()[-1]}:" in error[1]
    assert len(ERA_NFT) >= 2


@pytest.mark.parametrize("tail,what", [("x", "not the rest of the object"), (', "more": [}', "not the rest"),
                                       ("]", "not the rest of the object")])
def test_text_after_the_list_is_checked(tail: str, what: str) -> None:
    text = '{"nftables": [{"metainfo": {}}]}'
    with pytest.raises(InputError, match=what):
        parse_nft_json(text[:-1] + tail if tail.startswith(",") else text + tail, "f.json")


def test_rules_of_a_chain_that_do_not_come_together_keep_their_order() -> None:
    def rule(chain: str, handle: int, comment: str) -> dict[str, object]:
        return {"rule": {"family": "ip", "table": "t", "chain": chain, "handle": handle, "comment": comment,
                         "expr": [{"accept": None}]}}

    doc = {"nftables": [{"table": {"family": "ip", "name": "t"}},
                        {"chain": {"family": "ip", "table": "t", "name": "a"}},
                        {"chain": {"family": "ip", "table": "t", "name": "b"}},
                        rule("a", 1, "a1"), rule("a", 2, "a2"), rule("b", 3, "b1"), rule("a", 4, "a3"),
                        rule("c", 5, "c1")]}
    table = parse_nft_json(json.dumps(doc), "x").tables[0]
    assert [r.comment for r in table.chains["a"].rules] == ["a1", "a2", "a3"]
    assert [r.index for r in table.chains["a"].rules] == [1, 2, 3]
    assert [r.comment for r in table.chains["b"].rules] == ["b1"]
    assert [r.comment for r in table.chains["c"].rules] == ["c1"]  # a chain only its rules name
    assert (table.rule_count("a"), table.rule_count("b"), table.rule_count("c"), table.rule_count("z")) == (3, 1, 1, 0)


def test_rules_are_kept_without_what_their_chain_says_and_read_back_the_same() -> None:
    """A big table keeps each rule item's text without its family, table and chain members (nft's own
    spelling), or written again when spelled otherwise; either way its rules are the rules decoded whole."""
    def rule(chain: str, handle: int, comment: str | None, *, first: str = "family") -> dict[str, object]:
        inner: dict[str, object] = {"family": "ip", "table": "t", "chain": chain, "handle": handle,
                                    "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}},
                                                        "right": "tcp"}}, {"accept": None}]}
        if comment is not None:
            inner["comment"] = comment
        if first != "family":  # the same members in another order
            inner = {first: inner.pop(first), **inner}
        return {"rule": inner}

    chains = ['svc-ns/a"b/tcp', "café-ns/x", "plain"]
    doc = {"nftables": [{"table": {"family": "ip", "name": "t"}},
                        *({"chain": {"family": "ip", "table": "t", "name": c}} for c in chains),
                        rule(chains[0], 1, 'say "hi"'), rule(chains[0], 2, None), rule(chains[1], 3, "naïve"),
                        rule(chains[2], 4, None, first="handle"), rule(chains[2], 5, "x", first="chain")]}
    dense = json.dumps(doc, ensure_ascii=False)  # as `nft -j` writes it: one line, ", " and ": ", UTF-8
    lazy, eager = parse_nft_json(dense, "f.json").tables[0], _eager(dense).tables[0]
    assert not isinstance(eager.chains, type(lazy.chains))
    assert {n: c.rules for n, c in lazy.chains.items()} == {n: c.rules for n, c in eager.chains.items()}
    assert [r.comment for c in chains for r in lazy.chains[c].rules] == ['say "hi"', None, "naïve", None, "x"]
    builder = lazy.chains._load.__self__  # type: ignore[attr-defined]
    kept = b"".join(builder._rule_text(n) for n in range(len(builder.starts)))
    assert b'"chain"' not in kept[:kept.index(b'"handle":4')]  # nft's spelling: the chain's members dropped
    assert kept.count(b'"chain"') == 2  # spelled otherwise: the item written again whole


def test_chain_items_after_their_rules_and_again_keep_rules_order_and_the_last_description() -> None:
    """A plain chain's rules are kept where its name is (no second dict of names); a chain item that comes
    after its rules, or again, with or without a hook, changes the chain's description, not its rules."""
    def rule(chain: str, handle: int) -> dict[str, object]:
        return {"rule": {"family": "ip", "table": "t", "chain": chain, "handle": handle, "expr": [{"accept": None}]}}

    def chain(name: str, **more: object) -> dict[str, object]:
        return {"chain": {"family": "ip", "table": "t", "name": name, **more}}

    base = {"type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}
    doc = {"nftables": [{"table": {"family": "ip", "name": "t"}}, rule("a", 1), chain("b", **base), rule("b", 2),
                        rule("a", 3), chain("a", **base), chain("b"), rule("c", 4), chain("c"), rule("b", 5),
                        chain("d", **base), chain("d", comment="again")]}
    text = json.dumps(doc)
    lazy, eager = parse_nft_json(text, "f.json").tables[0], _eager(text).tables[0]
    assert not isinstance(eager.chains, type(lazy.chains))
    assert list(lazy.chains) == list(eager.chains) == ["a", "b", "c", "d"]
    assert {n: c for n, c in lazy.chains.items()} == {n: c for n, c in eager.chains.items()}
    assert [[r.handle for r in lazy.chains[n].rules] for n in "abcd"] == [[1, 3], [2, 5], [4], []]
    heads = lazy.heads()
    assert isinstance(heads, ChainHeads)
    assert [(c.name, c.hook, c.comment) for c in heads.described()] == [("a", "prerouting", None), ("d", None, "again")]
    assert [lazy.rule_count(n) for n in "abcdz"] == [2, 2, 1, 0, 0]


def test_rules_kept_in_compressed_blocks_read_back_in_any_order() -> None:
    """Rules are kept in compressed blocks (a few decompressed at a time): many chains over many blocks, read
    in an order unlike the document's, give the rules decoded whole."""
    chains = [f"endpoint-{i:05d}-ns{i % 7}/svc{i}/tcp/http__10.0.{i // 250}.{i % 250}/8080" for i in range(1500)]
    doc = {"nftables": [{"table": {"family": "ip", "name": "t"}},
                        *({"chain": {"family": "ip", "table": "t", "name": c}} for c in chains),
                        *({"rule": {"family": "ip", "table": "t", "chain": c, "handle": 2 * i + k,
                                    "comment": f"{c}#{k}",
                                    "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip",
                                                                                         "field": "saddr"}},
                                                        "right": f"10.1.{i // 250}.{i % 250}"}},
                                             {"jump": {"target": "mark-for-masquerade"}}]}}
                          for i, c in enumerate(chains) for k in range(2))]}
    text = json.dumps(doc)
    lazy, eager = parse_nft_json(text, "f.json").tables[0], _eager(text).tables[0]
    builder = lazy.chains._load.__self__  # type: ignore[attr-defined]
    assert len(builder.blocks) > 10
    assert sum(map(len, builder.blocks)) * 4 < builder.size  # compressed
    order = sorted(chains, key=lambda c: (hash(c) % 97, c))  # jumping between blocks
    assert [lazy.chains[c].rules for c in order] == [eager.chains[c].rules for c in order]
    assert [r.comment for r in lazy.chains[chains[-1]].rules] == [f"{chains[-1]}#0", f"{chains[-1]}#1"]
