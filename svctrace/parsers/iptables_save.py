"""``iptables-save`` / ``ip6tables-save`` text (and iptables-restore input) -> ``IptablesDump``.

Accepted: ``*table``, ``:CHAIN POLICY [pkts:bytes]``, ``-A CHAIN ...`` (optionally prefixed by
``[pkts:bytes]`` as ``iptables-save -c`` prints it), ``-N`` / ``-X`` / ``-F`` (restore inputs), ``COMMIT``,
``#`` comments and blank lines. Both kube-proxy's argument order (``-m comment --comment C -m tcp -p tcp
-d IP --dport P -j T``) and iptables-save's order (``-d IP/32 -p tcp -m comment --comment "C" -m tcp
--dport P -j T``) give the same rule. Modules and targets nobody here knows (Docker's, Calico's,
Cilium's, LOG, TRACE) are kept as written. Anything malformed raises ``InputError`` naming file:line.

Reading is in two steps. ``parse`` indexes the text in one pass: tables, chain declarations, and where
each chain's ``-A`` lines sit (runs of lines of one chain are found by one regular expression, so the
400,000 lines of a 10,000-Service node cost a tenth of a second). A chain's rules are parsed when a
consumer first asks for the chain (svctrace.model.iptables.Table), in three stages:
svctrace.parsers.iptables_words cuts a line into options, svctrace.parsers.iptables_options gives each
its owner, svctrace.parsers.iptables_typing types it. ``eager=True`` (the default) parses every chain at
once, so every line is checked before anything is answered; big dumps are read with ``eager=False``.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate, compress, islice, pairwise, repeat
from operator import add, ne
from typing import cast

from svctrace.errors import InputError
from svctrace.model.iptables import Chain, ChainHead, ChainIndex, IptablesDump, Rule, Span, Table
from svctrace.parsers.iptables_kube import kube_rule
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
    short,
    split_rule,
)

__all__ = ["BASIC_OPTIONS", "HINT_EDIT", "HINT_RESAVE", "MODULE_OPTIONS", "Header", "parse", "parse_header",
           "split_rule"]

# A run of consecutive "-A CHAIN ..." lines of one chain (iptables-save groups rules by chain).
_BLOCK = re.compile(r"^-A (\S+) [^\n]*\n(?:-A \1 [^\n]*\n)*", re.MULTILINE)
_START, _END, _GROUP = re.Match.start, re.Match.end, re.Match.group
_COUNTERS = re.compile(r"\[(\d+):(\d+)\]\Z")
# A run of chain declaration lines, and each one as iptables-save writes it (":NAME POLICY [packets:bytes]").
_DECLARATIONS_END = re.compile(r"\n(?!:)")  # the end of a run of declaration lines
_DECLARATION = re.compile(r"^:(\S+) (\S+) \[(\d+):(\d+)\]$", re.MULTILINE)
# A user chain's declaration without counters (all but a handful of a kube-proxy table's), and any other.
_PLAIN_DECLARATION = re.compile(r"^:(\S+) - \[0:0\]$", re.MULTILINE)
_PLAIN_END = " - [0:0]\n"
_TARGET = re.compile(r" -[jg] (\S+)")
_COMMENT = re.compile(r'--comment (?:"((?:[^"\\\n]|\\.)*)"|([^\s"]+))')
_IPV6_ADDRESS = re.compile(r" -[sd] [0-9A-Fa-f.]*:")
# Parsed pieces a dump keeps shared before starting afresh (bounds memory on the biggest tables).
_MAX_SHARED = 200_000

@dataclass(slots=True)
class _TableDraft:
    name: str
    line: int
    start: int  # offset of the "*table" line
    end: int = -1  # offset of its COMMIT line
    chains: ChainIndex = field(default_factory=ChainIndex)
    implicit: bool = False  # opened without a "*table" line (the parser's ``table``): closed without COMMIT


def _chain_declaration(text: str) -> tuple[str, str | None, int, int]:
    """``:NAME POLICY [pkts:bytes]`` -> (name, policy or None for '-', packets, bytes)."""
    parts = text[1:].split()
    if not parts:
        raise Fail("chain declaration without a name", HINT_RESAVE)
    name = parts[0]
    if len(parts) < 2:
        raise Fail(f"chain {name} has no policy (expected ':{name} ACCEPT|DROP|- [packets:bytes]')", HINT_RESAVE)
    if len(parts) > 3:
        raise Fail(f"unexpected text after the counters of chain {name}: {short(' '.join(parts[3:]))}",
                   HINT_RESAVE)
    packets = nbytes = 0
    if len(parts) == 3 and parts[2] != "[0:0]":
        packets, nbytes = _counters(parts[2], f"chain {name}")
    return name, (None if parts[1] == "-" else parts[1]), packets, nbytes


def _counters(text: str, what: str) -> tuple[int, int]:
    m = _COUNTERS.match(text)
    if m is None:
        raise Fail(f"bad counters {short(text)} for {what} (expected [packets:bytes])", HINT_RESAVE)
    return int(m.group(1)), int(m.group(2))


class _Indexer:
    """One pass over the text: tables, chains and where each chain's rules are. The text may come in pieces
    (``feed``, each ending at a line's end, then ``close``): offsets are kept from the start of them all."""

    __slots__ = ("text", "base", "number", "tables", "header", "current", "implicit")

    def __init__(self, implicit: str | None = None) -> None:
        self.text = ""  # the piece being read
        self.base = 0  # where it starts in the whole text
        self.number = 1  # the line number at its start
        self.tables: dict[str, _TableDraft] = {}
        self.header: Header | None = None
        self.current: _TableDraft | None = None
        # The table of text without "*table" lines (`iptables -S`, a pasted fragment): opened at the first
        # line that needs a table and closed at the end.
        self.implicit = implicit

    def _table(self) -> _TableDraft | None:
        if self.current is None and self.implicit is not None and self.implicit not in self.tables:
            self.current = _TableDraft(self.implicit, 1, 0, implicit=True)
        return self.current

    def rules(self, chain_name: str, start: int, end: int, line: int, count: int) -> None:
        """``count`` rule lines of one chain at text[start:end], the first on line ``line``."""
        table = self.current or self._table()
        if table is None:
            raise Fail("rule outside a table (no '*table' line before it)", HINT_RESAVE)
        chains = table.chains
        i = chains.ids.get(chain_name)
        if i is None:  # iptables-restore would refuse this; keep the chain and record that it was implicit
            i = chains.add(chain_name, declared=False)
        chains.run(i, self.base + start, self.base + end, line, count)

    def line(self, line: str, number: int, start: int, end: int) -> None:
        """Dispatch one stripped, non-blank line that is not in a run of rules."""
        first = line[0]
        if first == "-":
            if line.startswith("-A ") or line == "-A":
                self.rules(self._chain_of(line), start, end, number, 1)
            else:
                self.command(line)
        elif first == ":":
            self.chain(line)
        elif first == "[":
            close = line.find("]")
            rest = line[close + 1:].lstrip() if close >= 0 else ""
            if not rest.startswith("-A"):
                raise Fail(f"expected '[packets:bytes] -A CHAIN ...', found {short(line)}", HINT_RESAVE)
            _counters(line[:close + 1], "the rule")
            self.rules(self._chain_of(rest), start, end, number, 1)
        elif first == "#":
            if self.header is None:
                self.header = parse_header(line)
        elif first == "*":
            self.table(line, number, start)
        elif line == "COMMIT":
            self.commit(start)
        else:
            raise Fail(f"not an iptables-save line: {short(line)}",
                       "give the output of iptables-save (or ip6tables-save), not of iptables -L")

    @staticmethod
    def _chain_of(line: str) -> str:
        words = line.split(None, 2)
        if len(words) < 2 or words[1].startswith(("-", "!", '"')):
            raise Fail("-A without a chain name", HINT_RESAVE)
        return words[1]

    def chain(self, line: str) -> None:
        table = self.current or self._table()
        if table is None:
            raise Fail("chain declaration outside a table (no '*table' line before it)", HINT_RESAVE)
        parts = line[1:].split()
        if len(parts) == 3 and parts[2] == "[0:0]":  # the commonest: no counters to read
            name, policy, packets, nbytes = parts[0], (None if parts[1] == "-" else parts[1]), 0, 0
        else:
            name, policy, packets, nbytes = _chain_declaration(line)
        table.chains.declare(name, policy, packets, nbytes)

    def table(self, line: str, number: int, start: int) -> None:
        name = line[1:].strip()
        if not name:
            raise Fail("'*' without a table name", HINT_RESAVE)
        if self.current is not None and self.current.implicit:
            self.commit(start)
        if self.current is not None:
            raise Fail(f"table {name} starts before table {self.current.name} (line {self.current.line}) "
                       "has its COMMIT", HINT_RESAVE)
        if name in self.tables:
            raise Fail(f"table {name} appears twice",
                       "give each iptables-save output its own file (IPv4 and IPv6 apart)")
        self.current = _TableDraft(name, number, self.base + start)

    def commit(self, start: int) -> None:
        if self.current is None:
            raise Fail("COMMIT without a table", HINT_RESAVE)
        self.current.end = self.base + start
        self.tables[self.current.name] = self.current
        self.current = None

    def command(self, line: str) -> None:
        """``-N CHAIN`` declares, ``-X CHAIN`` deletes an empty chain, ``-F [CHAIN]`` flushes (restore inputs);
        ``-P CHAIN POLICY`` sets a built-in chain's policy (``iptables -S``)."""
        table = self.current or self._table()
        if table is None:
            raise Fail(f"command outside a table: {short(line)}", HINT_RESAVE)
        words = line.split()
        cmd, args = words[0], words[1:]
        chains = table.chains
        if cmd in ("-P", "--policy"):
            if len(args) != 2:
                raise Fail(f"{cmd} takes a chain and a policy")
            i = chains.ids.get(args[0])
            chains.set_policy(chains.add(args[0], declared=True) if i is None else i, args[1])
            return
        if cmd in ("-N", "--new-chain", "-X", "--delete-chain"):
            if len(args) != 1:
                raise Fail(f"{cmd} takes one chain name")
            name = args[0]
            i = chains.ids.get(name)
            if cmd in ("-N", "--new-chain"):
                if i is None:
                    chains.add(name, declared=True)
            elif i is not None:
                if chains.counts[i]:
                    raise Fail(f"-X {name} deletes a chain that has rules in this dump",
                               "iptables-restore would refuse this too; fix the file or re-run iptables-save")
                del chains[name]
            return
        if cmd in ("-F", "--flush"):
            if len(args) > 1:
                raise Fail(f"{cmd} takes at most one chain name")
            for name, i in chains.ids.items():
                if not args or name == args[0]:
                    chains.flush(i)
            return
        raise Fail(f"unsupported command {short(cmd)} in a dump (only -A, -N, -X and -F are read)",
                   "give the output of iptables-save, which writes every rule as -A")

    def feed(self, text: str) -> None:
        """Index the next piece of the text (it ends with a line's end, or is the last piece)."""
        self.text = text
        if "\r" in text or "\t" in text:  # odd spacing: line by line, stripped like the rest
            self.number = self._others(0, len(text), self.number)
            self.base += len(text)
            return
        # kube-proxy's shape: a run of rules per chain, 100,000 of them at 10k Services. The runs' places,
        # chains and line counts are read by C loops (map over the matches); Python then loops once per run.
        # The first rule line: the regular expression need not look at each declaration line before it.
        first = 0 if text.startswith("-A ") else text.find("\n-A ") + 1
        found = list(_BLOCK.finditer(text, first)) if first or text.startswith("-A ") else []
        starts = list(map(_START, found))
        ends = list(map(_END, found))
        names = list(map(_GROUP, found, repeat(1)))
        counts = list(map(text.count, repeat("\n"), starts, ends))
        del found
        # Runs that follow each other without a line between them are indexed together.
        cuts = [0, *compress(range(1, len(starts)), map(ne, islice(starts, 1, None), ends)), len(starts)]
        if not starts:
            cuts = []
        pos, number = 0, self.number
        for a, b in pairwise(cuts):
            if starts[a] != pos:
                number = self._others(pos, starts[a], number)
            if self.current is None:  # no table open: rules() opens the implicit one, or says what is wrong
                for j in range(a, b):
                    try:
                        self.rules(names[j], starts[j], ends[j], number, counts[j])
                    except Fail as exc:
                        raise _At(number, exc) from None
                    number += counts[j]
            else:
                number = self._runs(self.current.chains, names[a:b], starts[a:b], ends[a:b], counts[a:b], number)
            pos = ends[b - 1]
        self.number = self._others(pos, len(text), number)
        self.base += len(text)

    def _runs(self, chains: ChainIndex, names: list[str], starts: list[int], ends: list[int], counts: list[int],
              number: int) -> int:
        """Runs of rules that follow each other; returns the line number after them. Chains declared in the
        order their rules come, none with rules yet (iptables-save's shape), are set a slice of the arrays
        at a time; the rest one by one."""
        known = list(map(chains.ids.get, names))
        if not known or None in known:
            return self._each_run(chains, names, starts, ends, counts, number)
        ids = cast("list[int]", known)
        cuts = [0, *compress(range(1, len(ids)), map(ne, islice(ids, 1, None), map(add, ids, repeat(1)))), len(ids)]
        first, last, lines, rules = chains.starts, chains.ends, chains.lines, chains.counts
        base = self.base
        for a, b in pairwise(cuts):
            if first[ids[a]] >= 0:  # a chain the last piece ended inside
                number = self._each_run(chains, names[a:a + 1], starts[a:a + 1], ends[a:a + 1], counts[a:a + 1],
                                        number)
                a += 1
            i, n = ids[a] if a < b else 0, b - a
            if n < 8 or first[i:i + n].count(-1) != n:
                number = self._each_run(chains, names[a:b], starts[a:b], ends[a:b], counts[a:b], number)
                continue
            numbers = list(accumulate(counts[a:b], initial=number))
            first[i:i + n] = array("q", map(add, starts[a:b], repeat(base)))
            last[i:i + n] = array("q", map(add, ends[a:b], repeat(base)))
            lines[i:i + n] = array("q", numbers[:-1])
            rules[i:i + n] = array("q", map(add, rules[i:i + n], counts[a:b]))
            number = numbers[-1]
        return number

    def _each_run(self, chains: ChainIndex, names: list[str], starts: list[int], ends: list[int],
                  counts: list[int], number: int) -> int:
        base = self.base
        get, first, last, lines, rules = chains.ids.get, chains.starts, chains.ends, chains.lines, chains.counts
        for name, start, end, count in zip(names, starts, ends, counts, strict=True):
            i = get(name)
            if i is None:  # iptables-restore would refuse an undeclared chain; keep it, and that it was implicit
                i = chains.add(name, declared=False)
            if first[i] < 0:
                rules[i] += count
                first[i], last[i], lines[i] = base + start, base + end, number
            else:
                chains.run(i, base + start, base + end, number, count)
            number += count
        return number

    def close(self) -> None:
        """The end of the text: an implicit table ends here; a table without COMMIT is an error."""
        self.text = ""
        if self.current is not None and self.current.implicit:
            self.commit(0)
        if self.current is not None:
            raise _At(self.current.line, Fail(f"table {self.current.name} has no COMMIT line (is the dump cut "
                                              "short?)", HINT_RESAVE))

    def _others(self, start: int, end: int, number: int) -> int:
        """Lines between runs of rules, one at a time; returns the line number after them. A run of chain
        declarations in iptables-save's own spelling (100,000 of them at 10k Services) is read at once."""
        text = self.text
        pos = start
        while pos < end:
            if text.startswith(":", pos) and self.current is not None:
                got = self._declarations(pos, end)
                if got is not None:
                    pos, lines = got
                    number += lines
                    continue
            stop = text.find("\n", pos, end)
            stop = end if stop < 0 else stop + 1
            line = text[pos:stop].strip()
            if line:
                try:
                    if line[0] == ":" and self.current is not None:
                        self.chain(line)
                    else:
                        self.line(line, number, pos, stop)
                except Fail as exc:
                    raise _At(number, exc) from None
            number += 1
            pos = stop
        return number

    def _declarations(self, start: int, end: int) -> tuple[int, int] | None:
        """The run of ``:NAME POLICY [packets:bytes]`` lines at ``start``, all read at once: (where it ends,
        its line count); None when one of them is spelled otherwise (then each is read on its own)."""
        text = self.text
        run = _DECLARATIONS_END.search(text, start, end)  # the first line after ``start`` without a colon
        if run is None:
            return None
        run_end = run.end()
        lines = text.count("\n", start, run_end)
        plain_from = _plain_tail(text, start, run_end, lines)  # those after it are added together
        found = _DECLARATION.findall(text, start, plain_from)
        plain = _plain_names(text, plain_from, run_end)
        if len(found) + len(plain) != lines:
            return None
        assert self.current is not None
        chains = self.current.chains
        chains.declare_all(found)
        if not chains.declare_plain(plain):
            chains.declare_all((name, "-", "0", "0") for name in plain)
        return run_end, lines


def _plain_names(text: str, start: int, end: int) -> list[str]:
    """The chains of text[start:end], whole lines that each end with `` - [0:0]`` (_plain_tail): split apart
    where no line has a space in its name, else read by the regular expression."""
    tail = text[start:end]
    lines = tail.count("\n")
    if lines and tail.count(" ") == 2 * lines:
        names = tail[1:-len(_PLAIN_END)].split(_PLAIN_END + ":")
        if len(names) == lines and "" not in names:
            return names
    return _PLAIN_DECLARATION.findall(text, start, end)


def _plain_tail(text: str, start: int, end: int, lines: int) -> int:
    """Where the declaration lines in text[start:end] (``lines`` of them, whole lines) that all end with
    `` - [0:0]`` begin: the user chains a table declares after its few built-in ones. By bisection on counts,
    so 100,000 lines are not looked at one by one."""
    if text.count(_PLAIN_END, start, end) == lines:
        return start
    lo, hi = start, end  # text[hi:end] is all plain, text[lo:end] is not
    while True:
        mid = text.find("\n", (lo + hi) // 2, hi - 1) + 1
        if not lo < mid < hi:
            mid = text.find("\n", lo, hi - 1) + 1
            if not lo < mid < hi:
                return hi
        if text.count(_PLAIN_END, mid, hi) == text.count("\n", mid, hi):
            hi = mid
        else:
            lo = mid


class _At(Exception):
    def __init__(self, line: int, fail: Fail) -> None:
        super().__init__(fail.message)
        self.line = line
        self.fail = fail


class _Loader:
    """Parses one chain's rules from its spans; shares parsed pieces across the dump (bounded)."""

    __slots__ = ("text", "source", "builder", "typer", "plain")

    def __init__(self, text: str, source: str, plain: bool | None = None) -> None:
        """``plain``: the text holds neither a backslash nor a tab (None: look)."""
        self.text = text
        self.source = source
        self.plain = plain if plain is not None else "\\" not in text and "\t" not in text
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
                    counters = _counters(line[:close + 1], "the rule")
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


class _TextIndex:
    """Answers about a table read straight from the dump's text (svctrace.model.iptables.TextIndex)."""

    __slots__ = ("text", "drafts", "_targets", "_comments")

    def __init__(self, text: str, drafts: dict[str, _TableDraft]) -> None:
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
        for name, i in chains.ids.items():
            if name.startswith(prefixes):
                yield name, self._first_comment(chains, i)

    def first_comment(self, table: str, name: str) -> str | None:
        t = self.drafts.get(table)
        i = t.chains.ids.get(name) if t is not None else None
        return self._first_comment(t.chains, i) if t is not None and i is not None else None

    def _first_comment(self, chains: ChainIndex, i: int) -> str | None:
        for start, end, _line in chains.spans(i):
            m = _COMMENT.search(self.text, start, end)
            if m is not None:
                return m.group(1) if m.group(1) is not None else m.group(2)
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
    indexer = _Indexer(table)
    try:
        indexer.feed(text)
        indexer.close()
    except _At as exc:
        raise InputError(exc.fail.message, exc.fail.hint, path=source, line=exc.line) from None
    return _dump(text, indexer, source, family, eager=eager, partial=partial)


def _dump(text: str, indexer: _Indexer, source: str, family: int | None, *, eager: bool,
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
        self._indexer = _Indexer()
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
        if self._plain and ("\\" in chunk or "\t" in chunk):
            self._plain = False
        self._starts.append(self._starts[-1] + len(self._pieces[-1]) if self._pieces else 0)
        self._pieces.append(chunk)
        if not self._failed:
            try:
                self._indexer.feed(chunk)
            except _At:
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
                except _At:
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
