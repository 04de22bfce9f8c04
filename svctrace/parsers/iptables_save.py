"""``iptables-save`` / ``ip6tables-save`` text (and iptables-restore input) -> ``IptablesDump``.

Accepted: ``*table``, ``:CHAIN POLICY [pkts:bytes]``, ``-A CHAIN ...`` (optionally prefixed by
``[pkts:bytes]`` as ``iptables-save -c`` prints it), ``-N`` / ``-X`` / ``-F`` (restore inputs), ``COMMIT``,
``#`` comments and blank lines. Both kube-proxy's argument order (``-m comment --comment C -m tcp -p tcp
-d IP --dport P -j T``) and iptables-save's order (``-d IP/32 -p tcp -m comment --comment "C" -m tcp
--dport P -j T``) give the same rule. Modules and targets nobody here knows (Docker's, Calico's,
Cilium's, LOG, TRACE) are kept as written. Anything malformed raises ``InputError`` naming file:line.

Reading is in two steps. ``parse`` indexes the text in one pass (svctrace.parsers.iptables_index): tables,
chain declarations, and where each chain's ``-A`` lines sit (runs of lines of one chain are found by one
regular expression, so the 400,000 lines of a 10,000-Service node cost a few tenths of a second). A chain's
rules are parsed when a consumer first asks for the chain (svctrace.model.iptables.Table), in three stages:
svctrace.parsers.iptables_words cuts a line into options, svctrace.parsers.iptables_options gives each
its owner, svctrace.parsers.iptables_typing types it. ``eager=True`` (the default) parses every chain at
once, so every line is checked before anything is answered; big dumps are read with ``eager=False``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from typing import Any

from svctrace.errors import InputError
from svctrace.model.iptables import (
    Chain,
    ChainHead,
    ChainIndex,
    EndpointLine,
    IptablesDump,
    Rule,
    ServiceLine,
    Span,
    Table,
)
from svctrace.parsers.iptables_index import At, Indexer, TableDraft, read_counters
from svctrace.parsers.iptables_kube import endpoint_line, kube_rule, service_line
from svctrace.parsers.iptables_options import RuleBuilder
from svctrace.parsers.iptables_typing import Typer, comment_of
from svctrace.parsers.iptables_words import (
    BASIC_OPTIONS,
    HINT_EDIT,
    HINT_RESAVE,
    MODULE_OPTIONS,
    Fail,
    Header,
    parse_header,
    split_rule,
)

__all__ = ["BASIC_OPTIONS", "HINT_EDIT", "HINT_RESAVE", "MODULE_OPTIONS", "Header", "parse", "parse_header",
           "split_rule"]

_TARGET = re.compile(r" -[jg] (\S+)")
_COMMENT = re.compile(r'--comment (?:"((?:[^"\\\n]|\\.)*)"|([^\s"]+))')
# The same, quicker for the usual comment without an escape (what it ends at says whether _COMMENT must read it).
_PLAIN_COMMENT = re.compile(r'--comment (?:"([^"\\\n]*)(["\\])|([^\s"]+))')


def _comment_in(text: str, start: int, end: int) -> str | None:
    """The first ``--comment``'s text in text[start:end] as _COMMENT reads it (None: there is none). Wherever
    _COMMENT matches, _PLAIN_COMMENT does (with the same text, unless it stops at an escape), so _COMMENT is
    asked only from where _PLAIN_COMMENT stopped at one."""
    m = _PLAIN_COMMENT.search(text, start, end)
    if m is None:
        return None
    if m[2] != "\\":
        return m[1] if m[2] is not None else m[3]
    m = _COMMENT.search(text, m.start(), end)
    if m is None:
        return None
    return m[1] if m[1] is not None else m[2]
_IPV6_ADDRESS = re.compile(r" -[sd] [0-9A-Fa-f.]*:")
# Parsed pieces a dump keeps shared before starting afresh (bounds memory on the biggest tables).
_MAX_SHARED = 200_000

def _plain(text: str) -> bool:
    """Neither a backslash nor a tab: the rules' words need no unescaping (the loader's fast reading)."""
    return "\\" not in text and "\t" not in text


class _Loader:
    """Parses one chain's rules from its spans; shares parsed pieces across the dump (bounded)."""

    __slots__ = ("text", "source", "builder", "typer", "plain")

    def __init__(self, text: str, source: str, plain: bool | None = None) -> None:
        """``plain``: the text holds neither a backslash nor a tab (None: look)."""
        self.text = text
        self.source = source
        self.plain = plain if plain is not None else _plain(text)
        self.builder = RuleBuilder()
        self.builder.plain = self.plain
        self.typer = Typer()

    def __call__(self, table: str, head: ChainHead) -> tuple[Rule, ...]:
        if len(self.typer) > _MAX_SHARED:
            self.builder = RuleBuilder()
            self.builder.plain = "\\" not in self.text and "\t" not in self.text
            self.typer.clear()
        builder, typer, text = self.builder, self.typer, self.text
        rules: list[Rule] = []
        chain = head.name
        for start, end, first in head.spans:
            for i, raw in enumerate(text[start:end].split("\n")):
                line = raw.strip()
                if not line:
                    continue
                number = first + i
                counters: tuple[int, int] | None = None
                if line[0] == "[":
                    close = line.find("]")
                    counters = read_counters(line[:close + 1], "the rule")
                    line = line[close + 1:].lstrip()
                kube = kube_rule(line) if self.plain else None
                if kube is not None:
                    _name, matches, kube_target, action, comment = kube
                    rules.append(Rule(table, chain, len(rules) + 1, number, line, matches, kube_target, False,
                                      action, comment, counters))
                    continue
                try:
                    parts = builder.fast(line) or builder.general(line)
                except Fail as exc:
                    raise InputError(exc.message, exc.hint, path=self.source, line=number) from None
                _name, basic, raw_matches, target, goto, target_options, rule_counters = parts
                rules.append(Rule(table, chain, len(rules) + 1, number, line,
                                  typer.matches(basic, raw_matches), target, goto,
                                  typer.action(target, target_options), comment_of(raw_matches),
                                  counters or rule_counters))
        return tuple(rules)

    def endpoint_lines(self, spans: list[Span]) -> list[EndpointLine] | None:
        """The rules at ``spans`` (a chain's) read as an endpoint chain's two usual lines (iptables_kube.endpoint_line),
        untyped: (the line as ``__call__`` keeps it, address, port: None for the hairpin mark). None when the text
        is not plain, a rule has counters, or a line is any other: ``__call__`` types those."""
        return self._lines(spans, endpoint_line)

    def service_lines(self, spans: list[Span]) -> list[ServiceLine] | None:
        """The rules at ``spans`` read as a service chain's usual lines (iptables_kube.service_line), untyped: (the
        line, its target, its probability as written, the pod network of the masquerade mark); None as above."""
        return self._lines(spans, service_line)

    def _lines(self, spans: list[Span], read: Callable[[str], tuple[Any, ...] | None]) -> list[Any] | None:
        if not self.plain:
            return None
        text = self.text
        out: list[Any] = []
        for start, end, _first in spans:
            for raw in text[start:end].split("\n"):
                line = raw.strip()
                if line:
                    got = read(line)
                    if got is None:
                        return None
                    out.append((line, *got))
        return out


class _TextIndex:
    """Answers about a table read straight from the dump's text (svctrace.model.iptables.TextIndex)."""

    __slots__ = ("text", "drafts", "_targets", "_comments")

    def __init__(self, text: str, drafts: dict[str, TableDraft]) -> None:
        self.text = text
        self.drafts = drafts
        self._targets: dict[str, frozenset[str]] = {}
        self._comments: dict[tuple[str, tuple[str, ...]], dict[str, str | None]] = {}

    def targets(self, table: str) -> frozenset[str]:
        got = self._targets.get(table)
        if got is None:
            t = self.drafts.get(table)
            # one name at a time into the set: a list of every -j's name first was 30 MB at 10k Services
            got = frozenset(m.group(1) for m in _TARGET.finditer(self.text, t.start, t.end)) if t is not None \
                else frozenset()
            self._targets[table] = got
        return got

    def first_comments(self, table: str, prefixes: tuple[str, ...]) -> dict[str, str | None]:
        key = (table, prefixes)
        got = self._comments.get(key)
        if got is None:
            got = self._comments[key] = dict(self.each_first_comment(table, prefixes))
        return got

    def each_first_comment(self, table: str, prefixes: tuple[str, ...]) -> Iterator[tuple[str, str | None]]:
        got = self._comments.get((table, prefixes))
        if got is not None:
            yield from got.items()
            return
        t = self.drafts.get(table)
        chains = t.chains if t is not None else ChainIndex()
        # (the first run of a chain's rules straight from the index's arrays: 111,000 chains at 10k Services)
        text, starts, ends, more = self.text, chains.starts, chains.ends, chains.more
        for name, i in chains.ids.items():
            if not name.startswith(prefixes):
                continue
            start = starts[i]
            comment = _comment_in(text, start, ends[i]) if start >= 0 else None
            yield name, comment if comment is not None or i not in more else self._first_comment(chains, i)

    def first_comment(self, table: str, name: str) -> str | None:
        t = self.drafts.get(table)
        i = t.chains.ids.get(name) if t is not None else None
        return self._first_comment(t.chains, i) if t is not None and i is not None else None

    def _first_comment(self, chains: ChainIndex, i: int) -> str | None:
        for start, end, _line in chains.spans(i):
            got = _comment_in(self.text, start, end)
            if got is not None:
                return got
        return None

    def first_comments_mentioning(self, table: str, needle: str,
                                  prefixes: tuple[str, ...]) -> dict[str, str | None]:
        """The chains (named with ``prefixes``) whose ``-A`` lines hold ``needle``: each place the text holds
        it is traced back to its line's chain, so one Service's question costs a search of the text, not a
        look at each of 100,000 chains. In the table's order, with each chain's first comment."""
        t = self.drafts.get(table)
        if t is None or not needle:
            return {}
        text, hits = self.text, set()
        at = text.find(needle, t.start, t.end)
        while at >= 0:
            line = text.rfind("\n", t.start, at) + 1
            end = text.find("\n", at, t.end)
            end = t.end if end < 0 else end
            words = text[line:min(end, line + 512)].split(None, 3)  # "-A CHAIN ..." (counters first with -c)
            if words and words[0].startswith("["):
                words = words[1:]
            if len(words) >= 2 and words[0] == "-A" and words[1].startswith(prefixes):
                hits.add(words[1])
            at = text.find(needle, end, t.end)
        if not hits:
            return {}
        ids = t.chains.ids  # (its order is the chains' numbers: a chain declared again is numbered anew, last)
        found = sorted((ids[name], name) for name in hits if name in ids)
        return {name: self._first_comment(t.chains, i) for i, name in found}


def parse(text: str, source: str = "<input>", family: int | None = None, *, eager: bool = True,
          table: str | None = None, partial: str | None = None) -> IptablesDump:
    """Parse ``iptables-save`` output; ``family`` None detects IPv6 from the header or the addresses.

    ``eager`` parses every rule now (every line checked); otherwise chains are parsed on first use.
    ``table``: the table of rules that come before any ``*table`` line (``iptables -S`` output, a pasted
    fragment). ``partial``: why the text is not the node's whole ruleset (svctrace.parsers.pasted), kept
    on the dump so that chains it does not show are "not in the dump", not missing from the node.
    """
    if family not in (None, 4, 6):
        raise ValueError(f"family must be 4, 6 or None, not {family!r}")
    if "\n" not in text[-1:]:
        text += "\n"
    indexer = Indexer(table)
    try:
        indexer.feed(text)
        indexer.close()
    except At as exc:
        raise InputError(exc.fail.message, exc.fail.hint, path=source, line=exc.line) from None
    return _dump(text, indexer, source, family, eager=eager, partial=partial)


def _dump(text: str, indexer: Indexer, source: str, family: int | None, *, eager: bool,
          partial: str | None = None, only: tuple[str, ...] | None = None,
          early: _Early | None = None, plain: bool | None = None) -> IptablesDump:
    """The dump of an indexed text (``only``: of these tables alone; ``early``: EARLY_CHAIN's rules, typed
    while the text came, kept if the chain's rules are still where they were; ``plain``: see _Loader)."""
    loader = _Loader(text, source, plain)
    tables: dict[str, Table] = {}
    for name, draft in indexer.tables.items():
        if only is not None and name not in only:
            continue
        heads = draft.chains
        if eager:
            parsed = {c: Chain(h.name, h.policy, h.packets, h.bytes, loader(name, h) if h.rule_count else (),
                               h.declared) for c, h in heads.items()}
            tables[name] = Table(name, heads, loader, parsed=parsed, keep=1 << 62)
        else:
            tables[name] = Table(name, heads, loader)
            if early is not None and name == EARLY_CHAIN[0] and early[1] == loader.plain:
                i = heads.ids.get(EARLY_CHAIN[1])
                if i is not None and heads.spans(i) == early[0]:
                    h = heads.head(EARLY_CHAIN[1], i)
                    tables[name].prime(Chain(h.name, h.policy, h.packets, h.bytes, early[2], h.declared))
    header = indexer.header
    if family is None:
        family = 6 if (header is not None and header.family == 6) or _IPV6_ADDRESS.search(text) else 4
    return IptablesDump(family=family, tables=tables, source=source,
                        backend=header.backend if header else None,
                        version=header.version if header else None,
                        # A dump parsed whole answers from its rules; a big one from its text.
                        text_index=None if eager else _TextIndex(text, indexer.tables), partial=partial)


# The chain every Service's question reads first (svc, trace and the mode's detection type it whole): a
# followed save types it as soon as its rules are written, while the chains after it are still coming.
EARLY_CHAIN = ("nat", "KUBE-SERVICES")

_Early = tuple[list[Span], bool, tuple[Rule, ...]]  # (where its rules sat, the text was plain, the rules)


class Stream:
    """iptables-save output indexed while it is written: ``feed`` the pieces as they come (any size, cut
    anywhere), then ``close`` for the whole text, and ``dump`` for what ``parse(text, eager=False)`` gives,
    without a second pass. A save of 10,000 Services takes seconds; its 48 MB are indexed meanwhile, its
    ``:KUBE-`` declarations counted (``kube_chains``, what svctrace.parsers.detect counts), and nat's
    KUBE-SERVICES typed once its rules have all come (EARLY_CHAIN).

    A piece that does not index (a malformed line) stops the indexing, not the reading: ``dump`` is then
    None, and the caller parses the text, which says what is wrong where."""

    __slots__ = ("_pieces", "_starts", "_pending", "_indexer", "_failed", "_text", "kube_chains", "_plain", "_early",
                 "_early_tried")

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._starts: list[int] = []  # where each piece starts in the text
        self._pending = ""  # the start of a line whose end has not come yet
        self._indexer = Indexer()
        self._failed = False
        self._text: str | None = None
        self._plain = True  # no backslash or tab so far (the loader's question, answered as the text comes)
        self.kube_chains = 0  # ":KUBE-" lines, as detect.count_backend counts them in the whole text
        self._early: _Early | None = None
        self._early_tried = False

    def feed(self, piece: str) -> None:
        if not piece:
            return
        text = self._pending + piece if self._pending else piece
        cut = text.rfind("\n") + 1
        if cut == 0:
            self._pending = text
            return
        chunk, self._pending = (text, "") if cut == len(text) else (text[:cut], text[cut:])
        # Each chunk starts a line: its declarations are those after a newline in it, and maybe its first.
        self.kube_chains += chunk.count("\n:KUBE-") + chunk.startswith(":KUBE-")
        self._plain = self._plain and _plain(chunk)
        self._starts.append(self._starts[-1] + len(self._pieces[-1]) if self._pieces else 0)
        self._pieces.append(chunk)
        if not self._failed:
            try:
                self._indexer.feed(chunk)
            except At:
                self._failed = True
            else:
                if not self._early_tried:
                    self._type_early()

    def _type_early(self) -> None:
        """Type EARLY_CHAIN once text after its rules has come (``dump`` uses it if no rule of it came later)."""
        table, name = EARLY_CHAIN
        current = self._indexer.current  # (a table is among ``tables`` once its COMMIT has come)
        draft = current if current is not None and current.name == table else self._indexer.tables.get(table)
        i = draft.chains.ids.get(name) if draft is not None else None
        if draft is None or i is None or draft.chains.starts[i] < 0:
            return
        spans = draft.chains.spans(i)
        if spans[-1][1] >= self._indexer.base:  # its rules may go on in the next piece
            return
        self._early_tried = True
        first = bisect_right(self._starts, spans[0][0]) - 1
        last = bisect_right(self._starts, spans[-1][1] - 1) - 1
        at = self._starts[first]
        text = self._pieces[first] if first == last else "".join(self._pieces[first:last + 1])
        loader = _Loader(text, "")
        head = ChainHead(name, None, 0, 0, True, draft.chains.counts[i], [(a - at, b - at, n) for a, b, n in spans])
        try:
            self._early = (spans, loader.plain, loader(table, head))
        except InputError:  # a rule that does not read: said where it is when the chain is typed from the text
            self._early = None

    def close(self) -> str:
        """The whole text (ending with a newline when it has any text, as parse reads it)."""
        if self._text is None:
            if self._pending:
                self.feed("\n")
            text = "".join(self._pieces)
            self._pieces = []
            if not text:
                text = "\n"
                self._failed = True  # as parse would read it: let it
            if not self._failed:
                try:
                    self._indexer.close()
                except At:
                    self._failed = True
            self._text = text
        return self._text

    def dump(self, source: str, family: int, only: tuple[str, ...] | None = None) -> IptablesDump | None:
        """The dump ``parse(text, source, family, eager=False)`` gives, with only the tables ``only`` names;
        None when the text did not index (parse it to learn why)."""
        text = self.close()
        if self._failed:
            return None
        return _dump(text, self._indexer, source, family, eager=False, only=only, early=self._early,
                     plain=self._plain)
