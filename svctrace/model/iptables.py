"""iptables mode's dataplane as parsed from ``iptables-save``: tables, chains and typed rules.

A rule keeps its text as written (to show it) and its meaning as typed values (svctrace.model.matches):
what it matches, where it jumps and what its target does. Rules written by CNIs, Docker or people are
kept whatever they hold; what svctrace cannot type is an ``UnknownMatch``.

A big table is not parsed at once. The parser indexes where each chain's rules sit in the dump's text
and a ``Table`` parses a chain the first time it is asked for (``Table.chain``), so answering for one
Service reads its chains and the dispatch chains, not the 400,000 rules of a 10,000-Service node.
Parsed chains are kept up to a bound and parsed again when needed after that.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import count
from typing import Any, Protocol, TypeVar

from svctrace.model.actions import Action
from svctrace.model.matches import DST, SRC, AddrMatch, Match, PortMatch, ProtoMatch, StatisticMatch
from svctrace.record import record

BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})

M = TypeVar("M")


@record
class Rule:
    """One ``-A CHAIN ...`` line."""

    table: str
    chain: str
    index: int  # 1-based position in its chain, as `iptables -L --line-numbers` counts
    line: int  # line number in the dump it came from (0 when built in code)
    text: str  # the rule as written in the dump, without counters
    matches: tuple[Match, ...] = ()  # in the order the tracer evaluates them (decisive ones first)
    target: str | None = None  # a chain, a verdict or a target extension; None: no -j
    goto: bool = False  # -g instead of -j
    action: Action | None = None  # what a target extension does, typed (DNAT, MARK, ...)
    comment: str | None = None  # -m comment --comment
    counters: tuple[int, int] | None = None  # [packets:bytes] when dumped with -c

    def first(self, kind: type[M]) -> M | None:
        """The first match of a type (``rule.first(RecentMatch)``)."""
        for m in self.matches:
            if isinstance(m, kind):
                return m
        return None

    def all(self, kind: type[M]) -> tuple[M, ...]:
        return tuple(m for m in self.matches if isinstance(m, kind))

    def _addr(self, field: str) -> AddrMatch | None:
        for m in self.matches:
            if isinstance(m, AddrMatch) and m.field == field:
                return m
        return None

    @property
    def source(self) -> AddrMatch | None:
        return self._addr(SRC)

    @property
    def destination(self) -> AddrMatch | None:
        return self._addr(DST)

    @property
    def protocol(self) -> ProtoMatch | None:
        return self.first(ProtoMatch)

    @property
    def dport(self) -> PortMatch | None:
        for m in self.matches:
            if isinstance(m, PortMatch) and m.field == "dport":
                return m
        return None

    @property
    def probability(self) -> float | None:
        """The probability of a ``-m statistic --mode random`` match (None when the rule has none)."""
        for m in self.matches:
            if isinstance(m, StatisticMatch) and not m.nth and not m.negated:
                return m.probability
        return None


@record
class Chain:
    name: str
    policy: str | None = None  # ACCEPT/DROP for built-in chains, None for user chains ("-")
    packets: int = 0
    bytes: int = 0
    rules: tuple[Rule, ...] = ()
    # False when no ``:CHAIN`` line declared it and only ``-A CHAIN`` lines did (hand-written dumps);
    # iptables-restore would refuse such a dump, so a renderer may want to say so.
    declared: bool = True

    @property
    def builtin(self) -> bool:
        return self.policy is not None


class ChainHead:
    """A chain as the index knows it before its rules are parsed."""

    __slots__ = ("name", "policy", "packets", "bytes", "declared", "rule_count", "spans")

    def __init__(self, name: str, policy: str | None, packets: int, bytes: int, declared: bool,  # noqa: A002
                 rule_count: int = 0, spans: list[tuple[int, int, int]] | None = None) -> None:
        self.name = name
        self.policy = policy  # ACCEPT/DROP for built-in chains, None for user chains
        self.packets = packets
        self.bytes = bytes
        self.declared = declared
        self.rule_count = rule_count
        # Where its rules sit: (start, end) offsets into the dump text and the line number of the first.
        self.spans: list[tuple[int, int, int]] = spans if spans is not None else []


Span = tuple[int, int, int]  # (start, end) offsets of a run of -A lines in the dump text, the first one's line
# An endpoint chain's usual line read from the text: (the rule as written, its address, its DNAT port; None:
# the hairpin mark). See Table.endpoint_lines (and NftTable.endpoint_lines: the rule as `nft list` prints it).
EndpointLine = tuple[str, str, int | None]
# A service chain's usual line read from the text: (the rule as written, its target, the probability as written,
# the pod network; None but for the masquerade mark). See Table.service_lines.
ServiceLine = tuple[str, str, str | None, str | None]


class ChainIndex(Mapping[str, ChainHead]):
    """A table's chains as the parser indexes them, kept in arrays rather than an object and a list per chain:
    a 10,000-Service nat table has 111,000 chains, and every forked ``audit`` worker holds the index whole.

    A chain is a number (``ids``, in declaration order); its rule count and its first run of rules are array
    items, and the rare rest sits in small dicts: more runs (a chain whose rules are not together),
    policies (built-in chains), counters, chains only ``-A`` lines declared. Read as a mapping it gives a
    ``ChainHead`` per chain, made when asked for."""

    __slots__ = ("ids", "counts", "starts", "ends", "lines", "more", "policies", "counters", "undeclared")

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.counts = array("q")  # rules
        self.starts = array("q")  # the first run's offsets (-1: no rule) and the line it starts on
        self.ends = array("q")
        self.lines = array("q")
        self.more: dict[int, list[Span]] = {}  # runs after the first
        self.policies: dict[int, str] = {}
        self.counters: dict[int, tuple[int, int]] = {}  # (packets, bytes) when not zero
        self.undeclared: set[int] = set()

    def add(self, name: str, declared: bool) -> int:
        """A new chain's number (a chain deleted and declared again gets a new one, at the end)."""
        i = len(self.counts)
        self.ids[name] = i
        self.counts.append(0)
        self.starts.append(-1)
        self.ends.append(-1)
        self.lines.append(0)
        if not declared:
            self.undeclared.add(i)
        return i

    def declare(self, name: str, policy: str | None, packets: int, nbytes: int) -> None:
        """A ``:CHAIN`` line (again: the last declaration's policy and counters count)."""
        i = self.ids.get(name)
        if i is None:
            i = self.add(name, True)
        else:
            self.undeclared.discard(i)
        self.set_policy(i, policy)
        if packets or nbytes:
            self.counters[i] = (packets, nbytes)
        else:
            self.counters.pop(i, None)

    def declare_all(self, found: Iterable[tuple[str, str, str, str]]) -> None:
        """Declaration lines as the parser's regular expression gives them: (name, policy or "-", packets, bytes)
        as text. New chains without a policy or counters (100,000 of them at 10k Services) are added together."""
        ids, fresh = self.ids, 0
        n = len(self.counts)
        for name, policy, packets, nbytes in found:
            if policy == "-" and packets == "0" and nbytes == "0" and name not in ids:
                ids[name] = n + fresh
                fresh += 1
                continue
            if fresh:
                self._grow(fresh)
                n, fresh = n + fresh, 0
            self.declare(name, None if policy == "-" else policy, int(packets), int(nbytes))
            n = len(self.counts)
        if fresh:
            self._grow(fresh)

    def declare_plain(self, names: list[str]) -> bool:
        """New chains declared without a policy or counters, added at once; False (and nothing added) when
        one of them is declared already or twice (then each must be declared on its own)."""
        ids = self.ids
        if not names or not ids.keys().isdisjoint(names) or len(set(names)) != len(names):
            return not names
        ids.update(zip(names, count(len(self.counts))))
        self._grow(len(names))
        return True

    def _grow(self, k: int) -> None:
        """Room for ``k`` chains just named in ``ids`` (no rules yet)."""
        zeros, none = array("q", bytes(8 * k)), array("q", [-1]) * k
        self.counts.extend(zeros)
        self.lines.extend(zeros)
        self.starts.extend(none)
        self.ends.extend(none)

    def set_policy(self, i: int, policy: str | None) -> None:
        if policy is None:
            self.policies.pop(i, None)
        else:
            self.policies[i] = policy

    def run(self, i: int, start: int, end: int, line: int, count: int) -> None:
        """``count`` rules of chain ``i`` at [start, end) of the text, the first on ``line``; a run that goes
        on from the chain's last one (the text came in pieces, cut inside it) extends it."""
        self.counts[i] += count
        if self.starts[i] < 0:
            self.starts[i], self.ends[i], self.lines[i] = start, end, line
            return
        more = self.more.get(i)
        if more is None:
            if self.ends[i] == start:
                self.ends[i] = end
            else:
                self.more[i] = [(start, end, line)]
        elif more[-1][1] == start:
            more[-1] = (more[-1][0], end, more[-1][2])
        else:
            more.append((start, end, line))

    def flush(self, i: int) -> None:
        """``-F``: the chain keeps its declaration, not its rules."""
        self.counts[i] = 0
        self.starts[i] = self.ends[i] = -1
        self.more.pop(i, None)

    def spans(self, i: int) -> list[Span]:
        """Where chain ``i``'s rules sit, in order."""
        if self.starts[i] < 0:
            return []
        first = (self.starts[i], self.ends[i], self.lines[i])
        more = self.more.get(i)
        return [first, *more] if more else [first]

    def rule_count(self, name: str) -> int:
        i = self.ids.get(name)
        return self.counts[i] if i is not None else 0

    def head(self, name: str, i: int) -> ChainHead:
        packets, nbytes = self.counters.get(i, (0, 0))
        return ChainHead(name, self.policies.get(i), packets, nbytes, i not in self.undeclared, self.counts[i],
                         self.spans(i))

    def __getitem__(self, name: str) -> ChainHead:
        return self.head(name, self.ids[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, name: object) -> bool:
        return name in self.ids

    def __delitem__(self, name: str) -> None:
        del self.ids[name]


ChainLoader = Callable[[str, ChainHead], tuple[Rule, ...]]  # (table name, head) -> the chain's rules


# A Table.memo key, set while every Service is asked about in turn (audit): whole-table indexes are then
# cheaper than one search of the text per Service. Up to SWEEP_FROM Services, searches are the cheaper.
SWEEP = "sweep"
SWEEP_FROM = 16


class Table:
    """One ``*table`` of a dump. Chains are parsed on first use (``chain``) and cached up to ``keep``."""

    __slots__ = ("name", "heads", "_load", "_parsed", "_keep", "memo")

    def __init__(self, name: str, heads: Mapping[str, ChainHead], load: ChainLoader | None = None, *,
                 parsed: Mapping[str, Chain] | None = None, keep: int = 50_000) -> None:
        self.name = name
        self.heads: Mapping[str, ChainHead] = heads
        self._load = load
        self._parsed: OrderedDict[str, Chain] = OrderedDict(parsed or {})
        self._keep = keep
        # Indexes that consumers build once per table (frontend lookups, comment owners): see ``memoized``.
        self.memo: dict[str, object] = {}

    @classmethod
    def of(cls, name: str, chains: Mapping[str, Chain]) -> Table:
        """A table from chains already built (tests, code that makes rules)."""
        heads = {c.name: ChainHead(c.name, c.policy, c.packets, c.bytes, c.declared, len(c.rules))
                 for c in chains.values()}
        return cls(name, heads, parsed=chains, keep=1 << 62)

    def chain(self, name: str) -> Chain | None:
        got = self._parsed.get(name)
        if got is not None:
            self._parsed.move_to_end(name)
            return got
        head = self.heads.get(name)
        if head is None:
            return None
        rules = self._load(self.name, head) if self._load is not None and head.rule_count else ()
        got = Chain(head.name, head.policy, head.packets, head.bytes, rules, head.declared)
        self._parsed[name] = got
        if len(self._parsed) > self._keep:
            self._parsed.popitem(last=False)
        return got

    def endpoint_lines(self, name: str) -> list[EndpointLine] | None:
        """An endpoint chain whose rules are kube-proxy's two usual lines (the hairpin mark, the DNAT), read from
        the dump's text without typing them (an audit reads 100,000 such chains). None when the chain is missing
        or typed already, or any of its rules is another (counters, escapes, other lines, rules built in code):
        ``chain`` then."""
        return self._lines(name, "endpoint_lines")

    def service_lines(self, name: str) -> list[ServiceLine] | None:
        """A service chain whose rules are kube-proxy's usual lines (the masquerade mark for clients outside the
        pod network, the probability ladder to its endpoint chains), read from the text without typing them, as
        ``endpoint_lines`` reads an endpoint chain; None as there."""
        return self._lines(name, "service_lines")

    def _lines(self, name: str, reader: str) -> list[Any] | None:
        if name in self._parsed:
            return None
        read = getattr(self._load, reader, None)  # the dump's loader (svctrace.parsers.iptables_save)
        if read is None:
            return None
        heads = self.heads
        if isinstance(heads, ChainIndex):  # no ChainHead made: where its rules sit is enough
            i = heads.ids.get(name)
            return read(heads.spans(i)) if i is not None else None
        head = heads.get(name)
        return read(head.spans) if head is not None else None

    def prime(self, chain: Chain) -> None:
        """A chain typed already (while the text was still being read), as ``chain`` would type it."""
        self._parsed[chain.name] = chain

    def keep_at_most(self, n: int) -> None:
        """Remember at most the ``n`` chains used last (a sweep of every Service reads each of its chains once)."""
        self._keep = n
        while len(self._parsed) > n:
            self._parsed.popitem(last=False)

    def has(self, name: str) -> bool:
        return name in self.heads

    def rule_count(self, name: str) -> int:
        if isinstance(self.heads, ChainIndex):
            return self.heads.rule_count(name)
        head = self.heads.get(name)
        return head.rule_count if head is not None else 0

    def most_rules(self) -> int:
        """The rule count of the table's longest chain (0: no rules), from the index: no chain head is made."""
        if isinstance(self.heads, ChainIndex):
            return max((self.heads.counts[i] for i in self.heads.ids.values()), default=0)
        return max((h.rule_count for h in self.heads.values()), default=0)

    @property
    def chains(self) -> Mapping[str, Chain]:
        """Every chain by name; iterating the values parses each chain (prefer ``chain(name)``)."""
        return _ChainView(self)

    def __eq__(self, other: object) -> bool:
        """Same name and the same chains, rule for rule (parses every chain of both)."""
        if not isinstance(other, Table):
            return NotImplemented
        return self.name == other.name and list(self.heads) == list(other.heads) and all(
            self.chain(n) == other.chain(n) for n in self.heads)

    __hash__ = None  # type: ignore[assignment]

    def memoized(self, key: str, build: Callable[[], M]) -> M:
        """A derived index of this table, built once (``build`` must depend on the table alone)."""
        got = self.memo.get(key)
        if got is None:
            got = self.memo[key] = build()
        return got  # type: ignore[return-value]


class _ChainView(Mapping[str, Chain]):
    __slots__ = ("_table",)

    def __init__(self, table: Table) -> None:
        self._table = table

    def __getitem__(self, name: str) -> Chain:
        got = self._table.chain(name)
        if got is None:
            raise KeyError(name)
        return got

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.heads)

    def __len__(self) -> int:
        return len(self._table.heads)

    def __contains__(self, name: object) -> bool:
        return name in self._table.heads


class TextIndex(Protocol):
    """What the parser can tell of a table from the dump's text without parsing every rule."""

    def targets(self, table: str) -> frozenset[str]:
        """Every name a -j/-g of ``table`` names."""

    def first_comments(self, table: str, prefixes: tuple[str, ...]) -> Mapping[str, str | None]:
        """The comment of the first rule of each chain whose name starts with one of ``prefixes``."""

    def first_comment(self, table: str, name: str) -> str | None:
        """The comment of the first commented rule of one chain."""

    def each_first_comment(self, table: str, prefixes: tuple[str, ...]) -> Iterator[tuple[str, str | None]]:
        """``first_comments``' items one at a time, not kept."""

    def first_comments_mentioning(self, table: str, needle: str,
                                  prefixes: tuple[str, ...]) -> Mapping[str, str | None]:
        """``first_comments`` of only the chains whose rules' text holds ``needle`` (found by searching the
        text for it, not by reading every chain)."""


class IptablesDump:
    """Everything one ``iptables-save`` (or ``ip6tables-save``) printed."""

    __slots__ = ("family", "tables", "source", "backend", "version", "_text_index", "partial")

    def __init__(self, family: int = 4, tables: Mapping[str, Table] | None = None, source: str = "",
                 backend: str | None = None, version: str | None = None,
                 text_index: TextIndex | None = None, partial: str | None = None) -> None:
        self.family = family  # 4 or 6
        self.tables: Mapping[str, Table] = tables or {}
        self.source = source  # the file or command it came from, for messages
        self.backend = backend  # "legacy" | "nf_tables" | None when the header does not say
        self.version = version  # iptables version from the header comment
        self._text_index = text_index
        # Why this is not the node's whole ruleset (a pasted fragment, a dump cut short), in words; None for
        # a whole dump. A chain a partial dump does not hold is "not in the dump", not absent from the node.
        self.partial = partial

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)

    def chain(self, table: str, name: str) -> Chain | None:
        t = self.tables.get(table)
        return t.chain(name) if t is not None else None

    def with_source(self, source: str) -> IptablesDump:
        """The same dump, said to come from ``source``."""
        return IptablesDump(self.family, self.tables, source, self.backend, self.version, self._text_index,
                            self.partial)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IptablesDump):
            return NotImplemented
        return (self.family, self.source, self.backend, self.version, dict(self.tables)) == (
            other.family, other.source, other.backend, other.version, dict(other.tables))

    __hash__ = None  # type: ignore[assignment]

    def targets(self, table: str) -> frozenset[str]:
        """Every name a rule of ``table`` jumps or goes to, without parsing every rule."""
        t = self.tables.get(table)
        if t is None:
            return frozenset()
        if self._text_index is not None:
            return self._text_index.targets(table)
        return t.memoized("targets", lambda: frozenset(
            r.target for c in t.chains.values() for r in c.rules if r.target))

    def first_comments(self, table: str, prefixes: tuple[str, ...]) -> Mapping[str, str | None]:
        """The comment of the first commented rule of each chain named with one of ``prefixes``."""
        t = self.tables.get(table)
        if t is None:
            return {}
        if self._text_index is not None:
            return self._text_index.first_comments(table, prefixes)

        def build() -> dict[str, str | None]:
            return {name: next((r.comment for r in t.chain(name).rules if r.comment), None)  # type: ignore[union-attr]
                    for name in t.heads if name.startswith(prefixes)}
        return t.memoized(f"comments{prefixes}", build)

    def first_comment(self, table: str, name: str) -> str | None:
        """The comment of the first commented rule of one chain (None: no such chain, or no comment)."""
        t = self.tables.get(table)
        if t is None or not t.has(name):
            return None
        if self._text_index is not None:
            return self._text_index.first_comment(table, name)
        chain = t.chain(name)
        return next((r.comment for r in chain.rules if r.comment), None) if chain is not None else None

    def each_first_comment(self, table: str, prefixes: tuple[str, ...]) -> Iterator[tuple[str, str | None]]:
        """``first_comments``' items one at a time: from a big dump's text, without keeping 100,000 comments
        (an index built from them keeps what it needs)."""
        t = self.tables.get(table)
        if t is None:
            return iter(())
        if self._text_index is None or f"comments{prefixes}" in t.memo:
            return iter(self.first_comments(table, prefixes).items())
        return self._text_index.each_first_comment(table, prefixes)

    def first_comments_mentioning(self, table: str, needle: str,
                                  prefixes: tuple[str, ...]) -> Mapping[str, str | None] | None:
        """``first_comments`` of the chains whose rules mention ``needle`` (and maybe a few more), in the
        table's order, found by searching the dump's text; None when the dump is read whole (no text to
        search: ``first_comments`` is as cheap) or ``first_comments`` already holds the answer."""
        t = self.tables.get(table)
        if t is None:
            return {}
        if self._text_index is None or f"comments{prefixes}" in t.memo:
            return None
        return self._text_index.first_comments_mentioning(table, needle, prefixes)

    @property
    def rule_count(self) -> int:
        return sum(sum(t.heads.counts) if isinstance(t.heads, ChainIndex)
                   else sum(h.rule_count for h in t.heads.values()) for t in self.tables.values())
