"""svctrace.parsers.iptables_save: every kube-proxy dump in the shared corpus, real iptables-save output
of other software, option ownership, and one test per malformed-input error."""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svctrace.errors import InputError
from svctrace.kubeproxy import naming
from svctrace.model.iptables import IptablesDump, Rule
from svctrace.parsers import iptables_save
from svctrace.parsers.iptables_options import RawRule, RuleBuilder, raw_rule
from svctrace.parsers.iptables_save import MODULE_OPTIONS, parse, parse_header, split_rule
from svctrace.parsers.iptables_values import parse_dnat_destination
from svctrace.parsers.iptables_words import Fail, Option
from svctrace.parsers.iptables_words import RawMatch as Match
from tests.shared_data import REPO, shared_dir

FIXTURES = REPO / "tests" / "fixtures" / "iptables"


class _Both:
    """A parsed rule seen two ways: its options as written and owned (the parser's stages 1 and 2, what
    these tests are about) and, for what only the dump knows (line counters, comments), the typed rule."""

    def __init__(self, rule: Rule) -> None:
        self.typed = rule
        self.raw: RawRule = raw_rule(rule.text)

    def __getattr__(self, name: str) -> object:
        if name in ("comment", "counters", "text", "index", "line", "chain", "table", "probability"):
            if name == "counters" and self.typed.counters is None:
                return self.raw.counters
            return getattr(self.typed, name)
        return getattr(self.raw, name)


def _both(rules: tuple[Rule, ...]) -> list[_Both]:
    return [_Both(r) for r in rules]


# ---------------------------------------------------------------------------------------------------
# The shared conformance corpus: every iptables dump, in every rendering it has.


def _conformance_files() -> list[Path]:
    root = REPO.parent / "shared" / "conformance"
    if os.environ.get("SVCTRACE_SHARED"):
        root = Path(os.environ["SVCTRACE_SHARED"]) / "conformance"
    return sorted(root.rglob("*.json")) if root.is_dir() else []


def _renderings(path: Path) -> dict[str, str]:
    """The dumps one corpus file holds: the test's literal, and what real iptables made of it."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "iptables_save" not in data:
        return {}
    out = {"literal": data["iptables_save"]}
    derived = data.get("derived", {})
    if "iptables_save_rendered" in derived:
        out["rendered"] = derived["iptables_save_rendered"]
    if "loadable_variant" in derived:  # the older TestTracePackets literal with its comments quoted
        out["loadable"] = derived["loadable_variant"]["iptables_save_input"]
    return out


_DUMPS = [(p, kind) for p in _conformance_files() for kind in _renderings(p)]
_PAIRS = [(p, kind) for p in _conformance_files() for kind in _renderings(p) if kind != "literal"]


def _id(param: object) -> str:
    return f"{param.parent.name}/{param.stem}" if isinstance(param, Path) else str(param)


def _corpus(path: Path | None, kind: str) -> str:
    shared_dir()  # skips (or fails in CI) when the corpus is absent
    assert path is not None
    return _renderings(path)[kind]


def test_the_corpus_has_what_these_tests_expect() -> None:
    shared_dir()
    assert len({p for p, _ in _DUMPS}) >= 34, "expected 4 iptables/ and 30 iptables-older/ files"
    assert len(_PAIRS) >= 33


@pytest.mark.parametrize(("path", "kind"), _DUMPS or [(None, "absent")], ids=_id)
def test_corpus_dump_parses_with_every_option_owned(path: Path | None, kind: str) -> None:
    text = _corpus(path, kind)
    dump = parse(text, source=str(path))
    assert dump.family == 4 and dump.rule_count > 0
    lines = text.splitlines()
    for table in dump.tables.values():
        for chain in table.chains.values():
            assert chain.declared, f"{chain.name} is used without a :{chain.name} line"
            assert [r.index for r in chain.rules] == list(range(1, len(chain.rules) + 1))
            for rule in chain.rules:
                assert lines[rule.line - 1].strip() == rule.text
                _assert_owned(rule)
                if rule.target is None:  # only kube-proxy's KUBE-FW "other traffic ... dropped" rule
                    assert rule.chain.startswith("KUBE-FW-") and "will be dropped" in (rule.comment or "")


def _assert_owned(typed: Rule) -> None:
    rule = raw_rule(typed.text)
    for m in rule.matches:
        known = MODULE_OPTIONS.get(m.module)
        assert known is not None, f"kube-proxy uses only modules we know; {m.module} in {rule.text}"
        for opt in m.options:
            assert opt.name in known, f"{opt.name} given to -m {m.module} in {rule.text}"
            assert all('"' not in v for v in opt.values), rule.text
    if rule.dport is not None:
        assert any(m.module in ("tcp", "udp", "sctp") and m.option("--dport") for m in rule.matches)


@pytest.mark.parametrize(("path", "kind"), _DUMPS or [(None, "absent")], ids=_id)
def test_corpus_endpoint_chains_agree_with_comments_and_hashes(path: Path | None, kind: str) -> None:
    """Each "S -> IP:port" jump lands in the KUBE-SEP chain that DNATs to IP:port and whose name is
    kube-proxy's hash of S, the protocol and IP:port: comments, ownership and DNAT all parsed exactly."""
    nat = parse(_corpus(path, kind)).table("nat")
    assert nat is not None
    checked: set[str] = set()
    for chain in nat.chains.values():
        for rule in chain.rules:
            if not chain.name.startswith(("KUBE-SVC-", "KUBE-SVL-")) or not (rule.target or "").startswith(
                    "KUBE-SEP-"):
                continue
            m = re.fullmatch(r"(\S+) -> (.+)", rule.comment or "")
            assert m is not None, rule.text
            assert rule.target is not None
            sep = nat.chain(rule.target)
            assert sep is not None
            dnat = [r for r in sep.rules if r.target == "DNAT"]
            assert len(dnat) == 1
            dest = raw_rule(dnat[0].text).target_option("--to-destination")
            assert dest is not None and dest.value == m.group(2)
            ip, port = parse_dnat_destination(dest.value)
            proto = dnat[0].protocol
            assert proto is not None and port is not None
            assert naming.ipt_endpoint_chain(m.group(1), proto.protocol, ip, port) == sep.name
            assert naming.ipt_service_chain(m.group(1), proto.protocol)[9:] == chain.name.split("-", 2)[2]
            checked.add(sep.name)
    assert checked == {c.name for c in nat.chains.values() if c.name.startswith("KUBE-SEP-")}


def _digest(dump: IptablesDump) -> dict[tuple[str, str], list[tuple[object, ...]]]:
    """What must survive iptables-restore + iptables-save: per chain, per rule, in order."""
    out: dict[tuple[str, str], list[tuple[object, ...]]] = {}
    for table in dump.tables.values():
        for chain in table.chains.values():
            if chain.name in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING") and not chain.rules:
                continue  # iptables-save adds the built-in chains the literal left out
            out[(table.name, chain.name)] = [_rule_digest(r) for r in chain.rules]
    return out


def _rule_digest(typed: Rule) -> tuple[object, ...]:
    rule = raw_rule(typed.text)
    basic = sorted((o.name, o.negated, naming.normalize_ip(o.value) if o.name in ("-s", "-d") else o.value)
                   for o in rule.basic)
    matches = sorted((m.module, tuple(sorted(_opt_digest(o) for o in m.options
                                             if (m.module, o.name) not in _ADDED_BY_SAVE)))
                     for m in rule.matches)
    dnat = rule.target_option("--to-destination") if rule.target == "DNAT" else None
    return (tuple(basic), tuple(matches), rule.target, rule.goto, dnat and dnat.value)


# iptables-save prints these defaults even when the rule did not say them
_ADDED_BY_SAVE = {("recent", "--mask"), ("recent", "--rsource")}


def _opt_digest(opt: Option) -> tuple[object, ...]:
    values: tuple[object, ...] = opt.values
    if opt.name == "--probability":  # 0.5000000000 is kept as a 32-bit fraction, printed 0.50000000000
        values = (round(float(opt.value), 9),)
    elif opt.name == "--comment":
        values = (" ".join(opt.value.split()),)
    return (opt.name, opt.negated, values)


@pytest.mark.parametrize(("path", "kind"), _PAIRS or [(None, "absent")], ids=_id)
def test_both_renderings_of_a_test_dump_say_the_same(path: Path | None, kind: str) -> None:
    """kube-proxy's argument order and iptables-save's give the same chains, rules, matches (with the
    same options), comments, probabilities and DNAT destinations."""
    literal = parse(_corpus(path, "literal"), source="literal")
    other = parse(_corpus(path, kind), source=kind)
    a, b = _digest(literal), _digest(other)
    assert a.keys() == b.keys()
    for key in a:
        assert len(a[key]) == len(b[key]), key
        for ra, rb in zip(a[key], b[key], strict=True):
            assert ra == rb, key
    probabilities = [r.probability for t in literal.tables.values() for c in t.chains.values() for r in c.rules]
    rendered = [r.probability for t in other.tables.values() for c in t.chains.values() for r in c.rules]
    assert Counter(p is None for p in probabilities) == Counter(p is None for p in rendered)


def test_trace_packet_literal_takes_unquoted_multi_word_comments_whole() -> None:
    """kube-proxy's hand-written TestTracePacket dump, which iptables-restore rejects."""
    text = (shared_dir() / "conformance" / "iptables" / "TestTracePacket.json").read_text()
    dump = parse(json.loads(text)["iptables_save"])
    filt = dump.table("filter")
    assert filt is not None
    inp = _both(filt.chains["INPUT"].rules)
    assert inp[0].comment == "kubernetes health check service ports" and inp[0].target == "KUBE-NODEPORTS"
    assert inp[1].comment == "kubernetes externally-visible service portals"
    assert [m.module for m in inp[1].matches] == ["conntrack", "comment"]
    assert inp[1].option("--ctstate") == Option("--ctstate", ("NEW",))
    nodeports = dump.chain("nat", "KUBE-NODEPORTS")
    assert nodeports is not None and nodeports.rules[0].comment == "ns2/svc2:p80"
    # built-in chains declared with policy '-' (accepted by iptables-restore) keep no policy
    assert filt.chains["INPUT"].policy is None


def test_probabilities_survive_both_spellings() -> None:
    text = (shared_dir() / "conformance" / "iptables" / "TestOverallIPTablesRules.json").read_text()
    data = json.loads(text)
    for dump_text in (data["iptables_save"], data["derived"]["iptables_save_rendered"]):
        chain = parse(dump_text).chain("nat", "KUBE-SVC-4SW47YFZTEDKD3PK")
        assert chain is not None
        assert [r.probability for r in chain.rules] == [None, pytest.approx(0.5, abs=1e-9), None]


# ---------------------------------------------------------------------------------------------------
# Our own fixtures: real iptables-save output of Docker, Calico, people; counters; IPv6; quoting.


def describe(dump: IptablesDump) -> str:
    """A line per chain and per rule, with every option's owner and exact values (for .expected files)."""

    def opt(o: Option) -> str:
        return ("!" if o.negated else "") + o.name + json.dumps(list(o.values))

    out = [f"family={dump.family} backend={dump.backend} version={dump.version} rules={dump.rule_count}"]
    for table in dump.tables.values():
        out.append(f"*{table.name}")
        for chain in table.chains.values():
            out.append(f":{chain.name} policy={chain.policy} counters={chain.packets}:{chain.bytes}"
                       f"{'' if chain.declared else ' IMPLICIT'}")
            for r in _both(chain.rules):
                parts = [f"  #{r.index} line {r.line}"]
                if r.counters is not None:
                    parts.append(f"[{r.counters[0]}:{r.counters[1]}]")
                parts += [opt(o) for o in r.basic]
                parts += [f"-m {m.module}({' '.join(opt(o) for o in m.options)})" for m in r.matches]
                if r.target is not None:
                    parts.append(f"{'-g' if r.goto else '-j'} {r.target}({' '.join(opt(o) for o in r.target_options)})")
                out.append(" ".join(parts))
    return "\n".join(out) + "\n"


_FIXTURES = sorted(FIXTURES.glob("*.txt"))


@pytest.mark.parametrize("path", _FIXTURES, ids=lambda p: p.stem)
def test_fixture_parses_as_expected(path: Path) -> None:
    got = describe(parse(path.read_text(), source=path.name))
    expected = path.with_suffix(".expected")
    if os.environ.get("SVCTRACE_REGEN_FIXTURES"):
        expected.write_text(got)
    assert got == expected.read_text()


def test_fixtures_are_all_there() -> None:
    assert {p.stem for p in _FIXTURES} == {"node-docker-calico", "counters", "ip6tables", "quoted-comments",
                                           "legacy"}


def _fixture(name: str) -> IptablesDump:
    return parse((FIXTURES / f"{name}.txt").read_text(), source=f"{name}.txt")


def _rule(dump: IptablesDump, table: str, chain: str, index: int) -> _Both:
    c = dump.chain(table, chain)
    assert c is not None, f"{table} {chain}"
    return _Both(c.rules[index - 1])


def test_node_with_docker_calico_and_people() -> None:
    dump = _fixture("node-docker-calico")
    assert (dump.family, dump.backend, dump.version) == (4, "nf_tables", "1.8.9")
    assert list(dump.tables) == ["mangle", "raw", "filter", "nat"]
    assert dump.chain("filter", "FORWARD").policy == "DROP"  # type: ignore[union-attr]
    assert dump.chain("filter", "DOCKER-USER").rules[0].target == "RETURN"  # type: ignore[union-attr]

    log = _rule(dump, "filter", "INPUT", 2)
    assert log.target == "LOG"
    assert log.target_options == (Option("--log-prefix", ("ssh-in: ",)), Option("--log-level", ("6",)))
    assert log.matches == (Match("tcp", (Option("--dport", ("22",)),)),
                           Match("limit", (Option("--limit", ("3/min",)),)))

    # two -m addrtype in one rule, each with its own options, the first negated
    cali = _rule(dump, "nat", "cali-POSTROUTING", 3)
    assert cali.out_interface == Option("-o", ("tunl0",))
    assert [m.module for m in cali.matches] == ["comment", "addrtype", "addrtype"]
    assert cali.matches[1].options == (Option("--src-type", ("LOCAL",), negated=True), Option("--limit-iface-out"))
    assert cali.matches[2].options == (Option("--src-type", ("LOCAL",)),)
    assert cali.target == "MASQUERADE" and cali.target_options == (Option("--random-fully"),)

    outgoing = _rule(dump, "nat", "cali-nat-outgoing", 1)
    sets = [m for m in outgoing.matches if m.module == "set"]
    assert [s.options for s in sets] == [(Option("--match-set", ("cali40masq-ipam-pools", "src")),),
                                         (Option("--match-set", ("cali40all-ipam-pools", "dst"), negated=True),)]

    ipip = _rule(dump, "filter", "cali-INPUT", 1)
    assert ipip.protocol == Option("-p", ("ipencap",))
    assert ipip.comment == "cali:PajejrV4aFdkZojI"  # the first of its two comments
    assert [m.option("--comment").value for m in ipip.matches if m.module == "comment"] == [  # type: ignore[union-attr]
        "cali:PajejrV4aFdkZojI", "Allow IPIP packets from Calico hosts"]

    rpf = _rule(dump, "raw", "cali-PREROUTING", 3)
    assert rpf.match("rpfilter") == Match("rpfilter", (Option("--validmark"), Option("--invert")))
    assert _rule(dump, "raw", "cali-PREROUTING", 2).in_interface == Option("-i", ("cali+",))

    docker = _rule(dump, "nat", "DOCKER", 2)
    assert docker.in_interface == Option("-i", ("docker0",), negated=True)
    assert parse_dnat_destination(docker.target_option("--to-destination").value) == ("172.17.0.2", 80)  # type: ignore[union-attr]

    svc = dump.chain("nat", "KUBE-SVC-ERIFXISQEP7F7OF4")
    assert svc is not None and [r.probability for r in svc.rules] == [None, 0.5, None]
    masq = _Both(svc.rules[0])
    assert masq.source == Option("-s", ("10.244.0.0/16",), negated=True)
    assert masq.destination == Option("-d", ("10.96.0.10/32",))
    assert masq.dport == Option("--dport", ("53",))


def test_counters_from_iptables_save_c() -> None:
    dump = _fixture("counters")
    inp = dump.chain("filter", "INPUT")
    assert inp is not None and (inp.packets, inp.bytes) == (123456, 98765432)
    assert [r.counters for r in inp.rules] == [(5000, 300000), (42, 2520)]
    assert inp.rules[0].text == "-A INPUT -i lo -j ACCEPT"  # the counters are not part of the rule
    assert _rule(dump, "nat", "OUTPUT", 1).counters == (2**64 - 1, 1)
    assert _rule(dump, "filter", "KUBE-FORWARD", 2).option("--mark") == Option("--mark", ("0x4000/0x4000",))


def test_ip6tables_dump() -> None:
    dump = _fixture("ip6tables")
    assert (dump.family, dump.backend) == (6, "nf_tables")
    sep = dump.chain("nat", "KUBE-SEP-VBF3M44FXEMK7CYW")
    assert sep is not None
    assert _Both(sep.rules[0]).source == Option("-s", ("fd00:10:244::5/128",))
    assert parse_dnat_destination(_Both(sep.rules[1]).target_option("--to-destination").value) == (  # type: ignore[union-attr]
        "fd00:10:244::5", 8080)
    last = _rule(dump, "nat", "KUBE-SERVICES", 2)
    assert last.destination == Option("-d", ("::1/128",), negated=True)
    assert _rule(dump, "filter", "INPUT", 1).option("--icmpv6-type", "icmp6") == Option("--icmpv6-type", ("128",))


def test_family_is_detected_from_addresses_without_a_header() -> None:
    v6 = "\n".join(line for line in (FIXTURES / "ip6tables.txt").read_text().splitlines()
                   if not line.startswith("#"))
    dump = parse(v6)
    assert (dump.family, dump.backend, dump.version) == (6, None, None)
    assert parse("*nat\n:X - [0:0]\n-A X -s 10.0.0.1/32 -j ACCEPT\nCOMMIT\n").family == 4
    assert parse("*nat\n:X - [0:0]\n-A X -s 10.0.0.1/32 -j ACCEPT\nCOMMIT\n", family=6).family == 6
    with pytest.raises(ValueError, match="family"):
        parse("", family=5)


def test_quoted_comments() -> None:
    dump = _fixture("quoted-comments")
    rules = _both(dump.chain("filter", "INPUT").rules)  # type: ignore[union-attr]
    assert [r.comment for r in rules[:7]] == ['a "quoted" word', "back\\slash", "-starts with a dash",
                                               "has -m tcp and -j DROP inside", "ns/svc:p80 -> 10.0.0.1:80",
                                               "!", "single"]
    assert all(r.target == "ACCEPT" for r in rules[:7])
    assert [m.module for m in rules[3].matches] == ["comment"]  # " -m tcp" inside the quotes is text
    assert rules[4].dport == Option("--dport", ("80",))
    assert rules[7].target_options == (Option("--log-prefix", ("telnet -j attempt: ",)),)
    no_target = dump.chain("filter", "OUTPUT").rules[0]  # type: ignore[union-attr]
    assert (no_target.target, no_target.comment) == (None, "rule without a target")


def test_legacy_header() -> None:
    dump = _fixture("legacy")
    assert (dump.backend, dump.version) == ("legacy", "1.8.9")


@pytest.mark.parametrize(("header", "expected"), [
    ("# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Nov 24 12:00:00 2026", ("nf_tables", "1.8.9", 4)),
    ("# Generated by iptables-save v1.8.9 (nf_tables) on Tue Nov 24 12:00:00 2026", ("nf_tables", "1.8.9", 4)),
    ("# Generated by iptables-save v1.8.7 on Mon Jan  1 00:00:00 2024", ("legacy", "1.8.7", 4)),
    ("# Generated by iptables-save v1.8.9 (legacy) on Tue Nov 24 12:00:00 2026", ("legacy", "1.8.9", 4)),
    ("# Generated by ip6tables-legacy-save v1.8.7 on Mon Jan  1 00:00:00 2024", ("legacy", "1.8.7", 6)),
    ("# Generated by ip6tables-nft-save v1.8.4 on Mon Jan  1 00:00:00 2024", ("nf_tables", "1.8.4", 6)),
    ("# Generated by iptables-save v1.4.21 on Mon Jan  1 00:00:00 2018", ("legacy", "1.4.21", 4)),
])
def test_header(header: str, expected: tuple[str, str, int]) -> None:
    h = parse_header(header)
    assert h is not None and (h.backend, h.version, h.family) == expected
    assert parse(header + "\n*nat\nCOMMIT\n").backend == expected[0]


def test_other_comments_are_not_headers() -> None:
    assert parse_header("# Completed on Tue Nov 24 12:00:00 2026") is None
    dump = parse("# hand-written\n*nat\n:X - [0:0]\nCOMMIT\n")
    assert (dump.backend, dump.version) == (None, None)


# ---------------------------------------------------------------------------------------------------
# Option ownership on tricky lines.


def _one(rule_text: str, table: str = "nat") -> _Both:
    dump = parse(f"*{table}\n{rule_text}\nCOMMIT\n")
    (tbl,) = dump.tables.values()
    (chain,) = tbl.chains.values()
    (rule,) = chain.rules
    return _Both(rule)


def test_kube_proxy_order_and_save_order_give_equal_matches() -> None:
    kp = _one('-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 '
              "--dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O")
    save = _one('-A KUBE-SERVICES -d 172.30.0.41/32 -p tcp -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp '
                "--dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O")
    comment = Match("comment", (Option("--comment", ("ns1/svc1:p80 cluster IP",)),))
    assert set(kp.matches) == set(save.matches) == {comment, Match("tcp", (Option("--dport", ("80",)),))}
    assert kp.basic == (Option("-p", ("tcp",)), Option("-d", ("172.30.0.41",)))
    assert save.basic == (Option("-d", ("172.30.0.41/32",)), Option("-p", ("tcp",)))
    assert kp.target == save.target == "KUBE-SVC-XPGD46QRK7WJZT7O"


def test_masquerade_rule_in_both_orders() -> None:
    kp = _one('-A KUBE-SVC-X -m comment --comment "ns/s:p cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 '
              "! -s 10.0.0.0/8 -j KUBE-MARK-MASQ")
    save = _one('-A KUBE-SVC-X ! -s 10.0.0.0/8 -d 172.30.0.41/32 -p tcp -m comment --comment "ns/s:p cluster IP" '
                "-m tcp --dport 80 -j KUBE-MARK-MASQ")
    assert set(kp.matches) == set(save.matches)
    assert kp.source == save.source == Option("-s", ("10.0.0.0/8",), negated=True)


@pytest.mark.parametrize(("text", "matches"), [
    # --dport belongs to tcp even with -d in between
    ("-A X -m tcp -d 1.2.3.4 --dport 80 -j A", [("tcp", [("--dport", ["80"], False)])]),
    # -p tcp without -m tcp: an implicit tcp match, as iptables loads one
    ("-A X -p tcp --dport 80 --sport 1024:65535 -j A", [("tcp", [("--dport", ["80"], False),
                                                                 ("--sport", ["1024:65535"], False)])]),
    ("-A X -p udp -m comment --comment c --dport 53 -j A", [("comment", [("--comment", ["c"], False)]),
                                                            ("udp", [("--dport", ["53"], False)])]),
    ("-A X -p ipv6-icmp --icmpv6-type 128 -j A", [("icmp6", [("--icmpv6-type", ["128"], False)])]),
    # multi-value options
    ("-A X -m set --match-set KUBE-CLUSTER-IP dst,dst -j A",
     [("set", [("--match-set", ["KUBE-CLUSTER-IP", "dst,dst"], False)])]),
    ("-A X -p tcp -m tcp --tcp-flags SYN,ACK SYN -j A", [("tcp", [("--tcp-flags", ["SYN,ACK", "SYN"], False)])]),
    # flags take no values
    ("-A X -m recent --set --name KUBE-SEP-A --mask 255.255.255.255 --rsource -j A",
     [("recent", [("--set", [], False), ("--name", ["KUBE-SEP-A"], False),
                  ("--mask", ["255.255.255.255"], False), ("--rsource", [], False)])]),
    ("-A X -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-A -j A",
     [("recent", [("--rcheck", [], False), ("--seconds", ["10800"], False), ("--reap", [], False),
                  ("--name", ["KUBE-SEP-A"], False)])]),
    ("-A X -p tcp --syn -j A", [("tcp", [("--syn", [], False)])]),
    # negation before an option, and the old spelling after it
    ("-A X -m conntrack ! --ctstate RELATED -j A", [("conntrack", [("--ctstate", ["RELATED"], True)])]),
    ("-A X -m mark ! --mark 0x4000/0x4000 -j RETURN", [("mark", [("--mark", ["0x4000/0x4000"], True)])]),
    ("-A X -p tcp --dport ! 80 -j A", [("tcp", [("--dport", ["80"], True)])]),
    # an unknown module takes what follows it, even past a known module that does not take it
    ("-A X -m foo --bar 1 2 -m comment --comment c --baz -j A",
     [("foo", [("--bar", ["1", "2"], False), ("--baz", [], False)]), ("comment", [("--comment", ["c"], False)])]),
    # two of one module
    ("-A X -m addrtype ! --src-type LOCAL -m addrtype --dst-type LOCAL -j A",
     [("addrtype", [("--src-type", ["LOCAL"], True)]), ("addrtype", [("--dst-type", ["LOCAL"], False)])]),
    # an unquoted multi-word comment runs to the next option, and '->' is not an option
    ("-A X -m comment --comment ns/svc:p -> 10.0.0.1:80 -j A",
     [("comment", [("--comment", ["ns/svc:p -> 10.0.0.1:80"], False)])]),
    # long option names
    ("-A X --match tcp --protocol tcp --dport 80 --jump A", [("tcp", [("--dport", ["80"], False)])]),
    # a module after the target still takes its options
    ("-A X -j A -m comment --comment late", [("comment", [("--comment", ["late"], False)])]),
])
def test_option_ownership(text: str, matches: list[tuple[str, list[tuple[str, list[str], bool]]]]) -> None:
    rule = _one(text)
    got = [(m.module, [(o.name, list(o.values), o.negated) for o in m.options]) for m in rule.matches]
    assert got == matches
    assert rule.text == text


def test_basic_options_are_normalised_to_short_names() -> None:
    rule = _one("-A X --protocol tcp --source 1.2.3.4 --destination 5.6.7.8 --in-interface eth0 "
                "--out-interface eth1 ! --fragment --jump ACCEPT", table="filter")
    assert rule.basic == (Option("-p", ("tcp",)), Option("-s", ("1.2.3.4",)), Option("-d", ("5.6.7.8",)),
                          Option("-i", ("eth0",)), Option("-o", ("eth1",)), Option("-f", negated=True))
    assert rule.target == "ACCEPT"


@pytest.mark.parametrize(("text", "target", "goto", "options"), [
    ("-A X -p tcp -j DNAT --to-destination [fd00::1]:80", "DNAT", False, [("--to-destination", ["[fd00::1]:80"])]),
    ("-A X -j MARK --or-mark 0x4000", "MARK", False, [("--or-mark", ["0x4000"])]),
    ("-A X -j MARK --set-xmark 0x4000/0x0", "MARK", False, [("--set-xmark", ["0x4000/0x0"])]),
    ("-A X -j MASQUERADE --to-ports 1000-2000 --random-fully", "MASQUERADE", False,
     [("--to-ports", ["1000-2000"]), ("--random-fully", [])]),
    ("-A X -j REJECT --reject-with icmp-port-unreachable", "REJECT", False,
     [("--reject-with", ["icmp-port-unreachable"])]),
    ('-A X -j LOG --log-prefix "dropped: " --log-level 4', "LOG", False,
     [("--log-prefix", ["dropped: "]), ("--log-level", ["4"])]),
    ("-A X -g KUBE-SVC-A", "KUBE-SVC-A", True, []),
    ("-A X -j CILIUM_PRE_nat", "CILIUM_PRE_nat", False, []),
])
def test_target_options(text: str, target: str, goto: bool, options: list[tuple[str, list[str]]]) -> None:
    rule = _one(text)
    assert (rule.target, rule.goto) == (target, goto)
    assert [(o.name, list(o.values)) for o in rule.target_options] == options


def test_basic_options_after_the_target_stay_basic() -> None:
    rule = _one("-A X -j REJECT --reject-with tcp-reset -p tcp", table="filter")
    assert rule.protocol == Option("-p", ("tcp",))
    assert rule.target_options == (Option("--reject-with", ("tcp-reset",)),)


def test_counters_inside_a_restore_rule() -> None:
    assert _one("-A X -c 10 20 -j ACCEPT", table="filter").counters == (10, 20)


def test_the_fast_path_and_the_exact_splitter_agree() -> None:
    """The parser reads iptables-save's layout a -m piece at a time and falls back to the exact
    splitter for anything else; on every rule of the corpus and the fixtures both must give the same."""
    texts = [p.read_text() for p in _FIXTURES] + [p.read_text() for p in FIXTURES.glob("inputs/*.rules")]
    texts += [t for p in _conformance_files() for t in _renderings(p).values()]
    builder = RuleBuilder()
    fast = 0
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("["):
                line = line[line.index("]") + 1:].strip()
            if not line.startswith("-A "):
                continue
            exact = builder.general(line)
            quick = builder.fast(line)
            if quick is not None:
                fast += 1
                assert quick == exact, line
    assert fast > 100


_GROUPS = [
    "-p tcp", "! -s 10.0.0.0/8", "-d 1.2.3.4/32", "-i cali+", "! -o docker0", "-f", "-c 1 2", "--dport 443",
    '-m comment --comment "ns/svc:p -> 10.0.0.1:80"', '-m comment --comment "x -m y"', '-m comment --comment "-j z"',
    '-m comment --comment "!"', "-m comment --comment plain", "-m comment --comment two words",
    '-m comment --comment ""', "-m tcp --dport 80", "-m tcp", "-m udp --sport 53", "-m foo --bar 1 2", "-m foo",
    "-m recent --set --name N --rsource", "-m recent --rcheck --seconds 10 --reap --name N",
    "-m statistic --mode random --probability 0.5", "-m mark ! --mark 0x1/0x1", "-m set ! --match-set S dst,dst",
    "-m addrtype --src-type LOCAL --limit-iface-out", "-m conntrack --ctstate NEW", "--dport ! 22",
    "-m multiport --dports 80,443",
]
_TARGETS = [
    "-j ACCEPT", "-j DNAT --to-destination 1.2.3.4:80", "-j DNAT --to-destination [fd00::1]:80",
    '-j LOG --log-prefix "a -j b"', '-j LOG --log-prefix "p: " --log-level 4', "-g KUBE-X", "",
    "-j MARK --set-xmark 0x1/0x1", "-j MASQUERADE --random-fully", "-j REJECT --reject-with tcp-reset -p tcp",
    "-j X -m comment --comment late",
]


def test_the_fast_path_and_the_exact_splitter_agree_on_generated_rules() -> None:
    """Rules made of well-formed pieces in any order, with a stray word now and then: whenever the fast
    path answers, it answers what the exact splitter does (and it never accepts what that refuses)."""
    rnd = random.Random(20261124)
    fast_builder, exact_builder = RuleBuilder(), RuleBuilder()
    answered = refused = 0
    for _ in range(4000):
        groups = rnd.sample(_GROUPS, rnd.randint(0, 5))
        target = rnd.choice(_TARGETS)
        if target:
            groups.insert(rnd.randint(0, len(groups)) if rnd.random() < 0.2 else len(groups), target)
        words = ("-A C " + " ".join(groups)).split(" ")
        if rnd.random() < 0.1:
            words.insert(rnd.randint(2, len(words)), rnd.choice(["!", "-m", "-j", "x", '"', "--dport"]))
        line = " ".join(w for w in words if w)
        try:
            exact = exact_builder.general(line)
        except Fail:
            exact = None
            refused += 1
        quick = fast_builder.fast(line)
        if quick is not None:
            answered += 1
            assert quick == exact, line
    assert answered > 1000 and refused > 100


def test_split_rule_is_the_lexical_stage() -> None:
    chain, options = split_rule('-A KUBE-FW-X -m comment --comment "a -j b" ! -s 10.0.0.0/8 -j DROP')
    assert chain == "KUBE-FW-X"
    assert options == [(False, "-m", ("comment",)), (False, "--comment", ("a -j b",)), (True, "-s", ("10.0.0.0/8",)),
                       (False, "-j", ("DROP",))]


# ---------------------------------------------------------------------------------------------------
# Tables, chains and restore-style commands.


def test_rule_index_line_and_text() -> None:
    text = "# c\n*filter\n:INPUT ACCEPT [0:0]\n\n-A INPUT -i lo -j ACCEPT\n  -A INPUT -j DROP  \nCOMMIT\n"
    rules = parse(text).chain("filter", "INPUT").rules  # type: ignore[union-attr]
    assert [(r.index, r.line, r.text, r.table, r.chain) for r in rules] == [
        (1, 5, "-A INPUT -i lo -j ACCEPT", "filter", "INPUT"), (2, 6, "-A INPUT -j DROP", "filter", "INPUT")]


def test_chain_used_without_declaration_is_kept_and_marked() -> None:
    dump = parse("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j KUBE-SVC-A\n-A KUBE-SVC-A -j ACCEPT\nCOMMIT\n")
    assert dump.chain("nat", "KUBE-SERVICES").declared  # type: ignore[union-attr]
    implicit = dump.chain("nat", "KUBE-SVC-A")
    assert implicit is not None and not implicit.declared and implicit.policy is None
    assert [r.target for r in implicit.rules] == ["ACCEPT"]


def test_restore_commands_new_delete_flush() -> None:
    dump = parse("*nat\n:KUBE-SEP-OLD - [0:0]\n:KUBE-SVC-A - [0:0]\n-N KUBE-NEW\n-A KUBE-NEW -j ACCEPT\n"
                 "-A KUBE-SVC-A -j DROP\n-F KUBE-SVC-A\n-A KUBE-SVC-A -j RETURN\n-X KUBE-SEP-OLD\n"
                 "-X KUBE-SEP-NEVER-DECLARED\nCOMMIT\n")
    nat = dump.table("nat")
    assert nat is not None and list(nat.chains) == ["KUBE-SVC-A", "KUBE-NEW"]
    assert [(r.index, r.target) for r in nat.chains["KUBE-SVC-A"].rules] == [(1, "RETURN")]
    assert nat.chains["KUBE-NEW"].declared and nat.chains["KUBE-NEW"].rules[0].target == "ACCEPT"


def test_empty_input_is_an_empty_dump() -> None:
    dump = parse("")
    assert (dump.tables, dump.rule_count, dump.family) == ({}, 0, 4)


def test_windows_line_endings_and_tabs() -> None:
    dump = parse("*filter\r\n:INPUT ACCEPT [0:0]\r\n-A INPUT\t-p tcp\t--dport 22 -j ACCEPT\r\nCOMMIT\r\n")
    rule = _Both(dump.chain("filter", "INPUT").rules[0])  # type: ignore[union-attr]
    assert rule.dport == Option("--dport", ("22",)) and rule.target == "ACCEPT"


# ---------------------------------------------------------------------------------------------------
# Every malformed-input error: file:line, what is wrong, and what to do.

RESAVE = iptables_save.HINT_RESAVE
EDIT = iptables_save.HINT_EDIT


@pytest.mark.parametrize(("text", "line", "message", "hint"), [
    ("*nat\n-A\nCOMMIT\n", 2, "-A without a chain name", RESAVE),
    ("*nat\n-A -j ACCEPT\nCOMMIT\n", 2, "-A without a chain name", RESAVE),
    ('*nat\n:X - [0:0]\n-A X -m comment --comment "open -j ACCEPT\nCOMMIT\n', 3, "unterminated quote", RESAVE),
    ('*nat\n:X - [0:0]\n-A X -m comment --comment "a \\" -j ACCEPT\nCOMMIT\n', 3, "unterminated quote", RESAVE),
    ("-A X -j ACCEPT\n", 1, "rule outside a table", RESAVE),
    ("*nat\n:X - [0:0]\n-A X -j ACCEPT\nCOMMIT\n*filter\n:Y - [0:0]\n", 5, "table filter has no COMMIT", RESAVE),
    ("*nat\n:X - [0:bytes]\nCOMMIT\n", 2, "bad counters '[0:bytes]' for chain X", RESAVE),
    ("*nat\n:X - 0:0\nCOMMIT\n", 2, "bad counters '0:0' for chain X", RESAVE),
    ("*nat\n:X\nCOMMIT\n", 2, "chain X has no policy", RESAVE),
    ("*nat\n:X - [0:0] extra\nCOMMIT\n", 2, "unexpected text after the counters of chain X", RESAVE),
    ("*nat\n:X - [0:0]\n-A X -j ACCEPT !\nCOMMIT\n", 3, "'!' must be followed by an option", EDIT),
    ("*nat\n:X - [0:0]\n-A X ! 10.0.0.1 -j ACCEPT\nCOMMIT\n", 3, "'!' must be followed by an option", EDIT),
    ("*nat\n:X - [0:0]\n-A X !\nCOMMIT\n", 3, "'!' must be followed by an option", EDIT),
    (":X - [0:0]\n", 1, "chain declaration outside a table", RESAVE),
    ("*nat\n*filter\nCOMMIT\n", 2, "table filter starts before table nat (line 1) has its COMMIT", RESAVE),
    ("*nat\nCOMMIT\n*nat\nCOMMIT\n", 3, "table nat appears twice",
     "give each iptables-save output its own file (IPv4 and IPv6 apart)"),
    ("COMMIT\n", 1, "COMMIT without a table", RESAVE),
    ("*\nCOMMIT\n", 1, "'*' without a table name", RESAVE),
    ("Chain INPUT (policy ACCEPT)\n", 1, "not an iptables-save line: 'Chain INPUT (policy ACCEPT)'",
     "give the output of iptables-save (or ip6tables-save), not of iptables -L"),
    ("*nat\n-I X 1 -j ACCEPT\nCOMMIT\n", 2, "unsupported command '-I' in a dump",
     "give the output of iptables-save, which writes every rule as -A"),
    ("-N X\n", 1, "command outside a table", RESAVE),
    ("*nat\n-N\nCOMMIT\n", 2, "-N takes one chain name", EDIT),
    ("*nat\n-F A B\nCOMMIT\n", 2, "-F takes at most one chain name", EDIT),
    ("*nat\n:X - [0:0]\n-A X -j ACCEPT\n-X X\nCOMMIT\n", 4, "-X X deletes a chain that has rules",
     "iptables-restore would refuse this too; fix the file or re-run iptables-save"),
    ("*nat\n:X - [0:0]\n-A X --dport 80 -j ACCEPT\nCOMMIT\n", 3, "option --dport belongs to no match module", EDIT),
    ("*nat\n:X - [0:0]\n-A X ! -p tcp --dport 80 -j ACCEPT\nCOMMIT\n", 3, "option --dport belongs to no match", EDIT),
    ("*nat\n:X - [0:0]\n-A X foo -j ACCEPT\nCOMMIT\n", 3, "expected an option (-x or --xyz), found 'foo'", EDIT),
    ("*nat\n:X - [0:0]\n-A X -j ACCEPT -j DROP\nCOMMIT\n", 3, "two targets in one rule (ACCEPT and DROP)", EDIT),
    ("*nat\n:X - [0:0]\n-A X -j ACCEPT -g Y\nCOMMIT\n", 3, "two targets in one rule (ACCEPT and Y)", EDIT),
    ("*nat\n:X - [0:0]\n-A X -m -j ACCEPT\nCOMMIT\n", 3, "-m takes one module name, found 0 words", EDIT),
    ("*nat\n:X - [0:0]\n-A X -j\nCOMMIT\n", 3, "-j takes one target name, found 0 words", EDIT),
    ("*nat\n:X - [0:0]\n-A X -j -j\nCOMMIT\n", 3, "-j takes one target name, found 0 words", EDIT),
    ("*nat\n:X - [0:0]\n-A X -g ! -p tcp\nCOMMIT\n", 3, "-g takes one target name, found 0 words", EDIT),
    ("*nat\n:X - [0:0]\n-A X -m !\nCOMMIT\n", 3, "'!' must be followed by an option", EDIT),
    ("*nat\n:X - [0:0]\n-A X ! -j ACCEPT\nCOMMIT\n", 3, "a target (ACCEPT) cannot be negated", EDIT),
    ("*nat\n:X - [0:0]\n-A X ! -m tcp -j ACCEPT\nCOMMIT\n", 3, "-m cannot be negated", EDIT),
    ("*nat\n:X - [0:0]\n-A X -p tcp udp -j ACCEPT\nCOMMIT\n", 3, "-p takes one value, found 2", EDIT),
    ("*nat\n:X - [0:0]\n-A X -s -j ACCEPT\nCOMMIT\n", 3, "-s takes one value, found 0", EDIT),
    ("*nat\n:X - [0:0]\n-A X -f 1 -j ACCEPT\nCOMMIT\n", 3, "-f takes no value, found '1'", EDIT),
    ("*nat\n:X - [0:0]\n-A X -c 1 -j ACCEPT\nCOMMIT\n", 3, "-c takes two numbers (packets bytes)", EDIT),
    ("*nat\n:X - [0:0]\n[1:x] -A X -j ACCEPT\nCOMMIT\n", 3, "bad counters '[1:x]' for the rule", RESAVE),
    ("*nat\n:X - [0:0]\n[1:2 -A X -j ACCEPT\nCOMMIT\n", 3, "expected '[packets:bytes] -A CHAIN ...'", RESAVE),
])
def test_malformed_input(text: str, line: int, message: str, hint: str) -> None:
    with pytest.raises(InputError) as err:
        parse(text, source="dump.txt")
    exc = err.value
    assert (exc.path, exc.line, exc.hint) == ("dump.txt", line, hint)
    assert str(exc).startswith(f"dump.txt:{line}: {message}"), str(exc)


_PIECES = st.sampled_from(["--comment ", '"', "\\", "\n", " ", "a", "ns/svc:p", "-j X", "\\\"", "b c"])


@given(st.lists(_PIECES, max_size=30).map("".join), st.integers(0, 40), st.integers(0, 400))
@settings(max_examples=2000, deadline=None)
def test_a_comment_is_read_quickly_as_the_full_pattern_reads_it(text: str, start: int, end: int) -> None:
    m = iptables_save._COMMENT.search(text, start, end)
    assert iptables_save._comment_in(text, start, end) == (None if m is None else m[1] if m[1] is not None else m[2])
