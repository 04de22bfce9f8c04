"""The first step of reading ``iptables-save`` text: where each table, chain declaration and run of ``-A`` lines
sits (svctrace.parsers.iptables_save has the second: typing a chain's rules when asked for).

``Indexer`` reads the text in pieces as they come (a live save is followed while it is written) or whole. The
runs of one chain's lines are found by one regular expression; their places, chains and line counts are read
by C loops over the matches, and the chains of iptables-save's own shape (declared in the order their rules
come) are set a slice of ``ChainIndex``'s arrays at a time. Anything else is read line by line, and a line that
does not read raises ``At`` (its line number and what is wrong).
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, field
from itertools import accumulate, compress, islice, pairwise, repeat
from operator import add, ne
from typing import cast

from svctrace.model.iptables import ChainIndex
from svctrace.parsers.iptables_words import HINT_RESAVE, Fail, Header, parse_header, short

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


@dataclass(slots=True)
class TableDraft:
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
        packets, nbytes = read_counters(parts[2], f"chain {name}")
    return name, (None if parts[1] == "-" else parts[1]), packets, nbytes


def read_counters(text: str, what: str) -> tuple[int, int]:
    m = _COUNTERS.match(text)
    if m is None:
        raise Fail(f"bad counters {short(text)} for {what} (expected [packets:bytes])", HINT_RESAVE)
    return int(m.group(1)), int(m.group(2))


class Indexer:
    """One pass over the text: tables, chains and where each chain's rules are. The text may come in pieces
    (``feed``, each ending at a line's end, then ``close``): offsets are kept from the start of them all."""

    __slots__ = ("text", "base", "number", "tables", "header", "current", "implicit")

    def __init__(self, implicit: str | None = None) -> None:
        self.text = ""  # the piece being read
        self.base = 0  # where it starts in the whole text
        self.number = 1  # the line number at its start
        self.tables: dict[str, TableDraft] = {}
        self.header: Header | None = None
        self.current: TableDraft | None = None
        # The table of text without "*table" lines (`iptables -S`, a pasted fragment): opened at the first
        # line that needs a table and closed at the end.
        self.implicit = implicit

    def _table(self) -> TableDraft | None:
        if self.current is None and self.implicit is not None and self.implicit not in self.tables:
            self.current = TableDraft(self.implicit, 1, 0, implicit=True)
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
            read_counters(line[:close + 1], "the rule")
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
        self.current = TableDraft(name, number, self.base + start)

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
        at_rule = text.startswith("-A ")
        first = 0 if at_rule else text.find("\n-A ") + 1
        found = list(_BLOCK.finditer(text, first)) if at_rule or first else []
        starts = list(map(_START, found))
        ends = list(map(_END, found))
        names = list(map(_GROUP, found, repeat(1)))
        counts = list(map(text.count, repeat("\n"), starts, ends))
        del found
        # Runs that follow each other without a line between them are indexed together.
        cuts = [0, *compress(range(1, len(starts)), map(ne, islice(starts, 1, None), ends)), len(starts)] \
            if starts else []
        pos, number = 0, self.number
        for a, b in pairwise(cuts):
            if starts[a] != pos:
                number = self._others(pos, starts[a], number)
            if self.current is None:  # no table open: rules() opens the implicit one, or says what is wrong
                for j in range(a, b):
                    try:
                        self.rules(names[j], starts[j], ends[j], number, counts[j])
                    except Fail as exc:
                        raise At(number, exc) from None
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
            raise At(self.current.line, Fail(f"table {self.current.name} has no COMMIT line (is the dump cut "
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
                    raise At(number, exc) from None
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
        plain_from = plain_tail(text, start, run_end, lines)  # those after it are added together
        found = _DECLARATION.findall(text, start, plain_from)
        plain = plain_names(text, plain_from, run_end)
        if len(found) + len(plain) != lines:
            return None
        assert self.current is not None
        chains = self.current.chains
        chains.declare_all(found)
        if not chains.declare_plain(plain):
            chains.declare_all((name, "-", "0", "0") for name in plain)
        return run_end, lines


def plain_names(text: str, start: int, end: int) -> list[str]:
    """The chains of text[start:end], whole lines that each end with `` - [0:0]`` (plain_tail): split apart
    where no line has a space in its name, else read by the regular expression."""
    tail = text[start:end]
    lines = tail.count("\n")
    if lines and tail.count(" ") == 2 * lines:
        names = tail[1:-len(_PLAIN_END)].split(_PLAIN_END + ":")
        if len(names) == lines and "" not in names:
            return names
    return _PLAIN_DECLARATION.findall(text, start, end)


def plain_tail(text: str, start: int, end: int, lines: int) -> int:
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


class At(Exception):
    def __init__(self, line: int, fail: Fail) -> None:
        super().__init__(fail.message)
        self.line = line
        self.fail = fail
