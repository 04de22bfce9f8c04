"""Parse ``nft -j list ruleset`` (or ``list table``) JSON into svctrace.model.nft (knftables transaction text:
svctrace.parsers.nft_transaction).

The JSON schema is libnftables-json(5). Each rule is typed from its expressions written the way ``nft list`` prints
them (svctrace.parsers.nft_render), so a rule reads the same whether it came from JSON or from ``add rule`` text.
"""

from __future__ import annotations

import json
import re
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from svctrace.errors import InputError
from svctrace.model.iptables import EndpointLine
from svctrace.model.nft import ChainHeads, LazyChains, NftChain, NftElement, NftRule, NftRuleset, NftSet, NftTable
from svctrace.parsers.nft_kube import endpoint_rule
from svctrace.parsers.nft_render import elem_comment, elem_key, new_element, render_rule, verdict_or_value
from svctrace.parsers.nft_statements import parse_statements

JSON_HINT = "capture it again with `nft -j list ruleset > nft.json` (nftables >= 0.9.3)"

# ------------------------------------------------------------------------------------------------
# nft -j list ruleset


_BLOCK = 16384  # bytes of rules' text compressed together (decompressed again in ~50 us)
_RUN_BITS = 20  # a chain's rules in one run: at most 1,048,575 of them
_RUN_MASK = (1 << _RUN_BITS) - 1


def _rule_numbers(run: int) -> range:
    first = run >> _RUN_BITS
    return range(first, first + (run & _RUN_MASK))


@dataclass
class TableBuilder:
    family: str
    name: str
    comment: str | None = None
    # None (or, read in place, its rules' numbers): a chain that is only its name
    chains: dict[str, NftChain | int | list[int] | None] = field(default_factory=dict)
    rules: dict[str, list[NftRule]] = field(default_factory=dict)
    sets: dict[str, NftSet] = field(default_factory=dict)
    maps: dict[str, NftSet] = field(default_factory=dict)
    # JSON read in place: each rule object is kept as its text, without the members its chain says already
    # (family, table, chain), one after another (UTF-8), in blocks of about _BLOCK bytes compressed as each
    # fills (``blocks``; ``block`` is the one filling): at 10k Services 4 MB, where that text is 47 MB and the
    # whole document, not kept, 91 MB. ``starts``: where each one starts in that text, in the order read (the
    # next one's start is its end); ``block_starts``: where each block does (a Service's chains are written
    # together: its rules are in a block or two). Per chain which of them are its rules, typed when the chain is
    # used: ``first << 20 | count`` while they come one after another (as `nft -j` lists them), else their
    # numbers (200,000 rules in 110,000 chains at 10k Services: one int per chain instead of a list of offsets,
    # ~11 MB less). A chain that is only a name keeps that in ``chains`` in place of None (no second dict of
    # 110,000 names: ~14 MB less); ``at`` holds those of the few chains with more than a name.
    blocks: list[bytes] = field(default_factory=list)
    block: bytearray = field(default_factory=bytearray)
    block_starts: array[int] = field(default_factory=lambda: array("q", [0]))
    size: int = 0  # of the text kept
    _opened: dict[int, bytes] = field(default_factory=dict)  # blocks read last, decompressed
    starts: array[int] = field(default_factory=lambda: array("q"))
    at: dict[str, int | list[int]] = field(default_factory=dict)
    lazy: bool = False  # rules were read in place (add_rule_at)
    _prefix: tuple[str, str] = ("", "")  # (a chain, how each of its rule items starts as `nft -j` writes it)

    def add_rule(self, chain: str, handle: int | None, text: str, comment: str | None, *,
                 prepend: bool = False) -> None:
        rules = self.rules.setdefault(chain, [])
        if chain not in self.chains:
            self.chains[chain] = None
        rule = NftRule(chain=chain, handle=handle, index=0, text=text, comment=comment,
                       stmts=parse_statements(text))
        if prepend:
            rules.insert(0, rule)
        else:
            rules.append(rule)

    def add_chain(self, name: str, head: NftChain | None) -> None:
        """A chain item (None: a chain that is only its name); again: the last one counts, its rules stay."""
        got = self.chains.get(name)
        if head is None and isinstance(got, NftChain):
            self.chains[name] = self.at.pop(name, None)
        elif head is None:
            self.chains[name] = got  # (inserted, or its rules kept where they are)
        else:
            if got is not None and not isinstance(got, NftChain):
                self.at[name] = got
            self.chains[name] = head

    def add_rule_at(self, chain: str, text: str, start: int, end: int, rule: Mapping[str, Any]) -> None:
        """The rule item at text[start:end] (``{"rule": rule}``), kept to be typed when its chain is first used."""
        self.lazy = True
        if chain != self._prefix[0]:
            self._prefix = (chain, f'{{"rule": {{"family": {_json_text(self.family)}, "table": '
                                   f'{_json_text(self.name)}, "chain": {_json_text(chain)}, ')
        prefix = self._prefix[1]
        n = len(self.starts)
        self.starts.append(self.size)
        block = self.block
        before = len(block)
        if text.startswith(prefix, start) and text.startswith("}}", end - 2):
            # {"rule": {"family": F, "table": T, "chain": C, MEMBERS}} -> {MEMBERS}
            block += b"{"
            block += text[start + len(prefix):end - 1].encode()
        else:  # spelled otherwise: written again, the same values
            block += json.dumps(rule, separators=(",", ":")).encode()
        self.size += len(block) - before
        if len(block) >= _BLOCK:
            self._seal()
        head = self.chains.get(chain)
        where: dict[str, Any] = self.at if isinstance(head, NftChain) else self.chains
        got = where.get(chain)
        if got is None:
            where[chain] = n << _RUN_BITS | 1
        elif isinstance(got, int) and (got >> _RUN_BITS) + (got & _RUN_MASK) == n and got & _RUN_MASK < _RUN_MASK:
            where[chain] = got + 1
        else:
            if isinstance(got, int):
                got = where[chain] = list(_rule_numbers(got))
            got.append(n)

    def _seal(self) -> None:
        """The filling block compressed and kept; the next one starts."""
        if self.block:
            self.blocks.append(zlib.compress(self.block, 1))
            self.block_starts.append(self.size)
            self.block = bytearray()

    def _rule_text(self, n: int) -> bytes:
        """Rule number ``n`` as kept (its block decompressed, and kept a while: the next rules are likely there)."""
        start = self.starts[n]
        end = self.starts[n + 1] if n + 1 < len(self.starts) else self.size
        k = bisect_right(self.block_starts, start, 0, len(self.blocks)) - 1
        data = self._opened.get(k)
        if data is None:
            if len(self._opened) >= 4:
                del self._opened[next(iter(self._opened))]
            data = self._opened[k] = zlib.decompress(self.blocks[k])
        base = self.block_starts[k]
        return data[start - base:end - base]

    def _run(self, chain: str) -> int | list[int] | None:
        got = self.chains.get(chain)
        return self.at.get(chain) if isinstance(got, NftChain) else got

    def _numbers(self, chain: str) -> Iterable[int]:
        got = self._run(chain)
        return () if got is None else _rule_numbers(got) if isinstance(got, int) else got

    def _count(self, chain: str) -> int:
        got = self._run(chain)
        return 0 if got is None else got & _RUN_MASK if isinstance(got, int) else len(got)

    def _load(self, chain: str) -> tuple[NftRule, ...]:
        out: list[NftRule] = []
        for i, n in enumerate(self._numbers(chain), start=1):
            obj = json.loads(self._rule_text(n))  # read and checked once already
            text = render_rule(obj.get("expr") or [], self.family)
            out.append(NftRule(chain, obj.get("handle"), i, text, obj.get("comment"), parse_statements(text)))
        return tuple(out)

    def _endpoint_lines(self, chain: str) -> list[EndpointLine] | None:
        """A chain's rules when each is one of kube-proxy's endpoint shapes (svctrace.parsers.nft_kube), read
        from the text kept; None when any is not."""
        out = []
        for n in self._numbers(chain):
            got = endpoint_rule(self._rule_text(n))
            if got is None:
                return None
            out.append(got)
        return out

    def build(self) -> NftTable:
        chains: dict[str, NftChain] = {}
        if self.lazy:  # (the builder's own dict: a copy of 110,000 names was 5 MB more)
            self._seal()
            lazy = LazyChains(ChainHeads(self.chains), self._load, count=self._count, lines=self._endpoint_lines)
            return NftTable(self.family, self.name, lazy, dict(self.sets), dict(self.maps), self.comment)
        for name, head in self.chains.items():
            chain = head if isinstance(head, NftChain) else NftChain(name)
            rules = tuple(NftRule(r.chain, r.handle, i, r.text, r.comment, r.stmts)
                          for i, r in enumerate(self.rules.get(name, ()), start=1))
            chains[name] = NftChain(name, rules, chain.type, chain.hook, chain.priority, chain.policy, chain.comment)
        return NftTable(self.family, self.name, chains, dict(self.sets), dict(self.maps), self.comment)


def _type_text(t: Any) -> str:
    return " . ".join(str(x) for x in t) if isinstance(t, list) else str(t)


def _timeout_text(t: Any) -> str | None:
    return None if t is None else f"{t}s" if isinstance(t, int) else str(t)


_DURATION = re.compile(r"(\d+)([dhms]?)")


def timeout_seconds(timeout: str | None) -> int | None:
    """A set timeout as seconds (``10800s``, ``3h``, ``1h30m`` -> 10800); None when there is none or it
    does not read."""
    if not timeout:
        return None
    parts = _DURATION.findall(timeout)
    if not parts or "".join(n + u for n, u in parts) != timeout.replace(" ", ""):
        return None
    return sum(int(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}[u] for n, u in parts)


def _json_set(obj: Mapping[str, Any], is_map: bool) -> NftSet:
    elements: list[NftElement] = []
    for item in obj.get("elem") or ():
        if is_map and isinstance(item, list) and len(item) == 2:
            elements.append(new_element(elem_key(item[0]), verdict_or_value(item[1]), elem_comment(item[0])))
        else:
            elements.append(new_element(elem_key(item), None, elem_comment(item)))
    flags = obj.get("flags") or ()
    return NftSet(
        name=str(obj["name"]), type=_type_text(obj.get("type", "")), is_map=is_map,
        data_type=_type_text(obj["map"]) if is_map and "map" in obj else None,
        flags=tuple([flags] if isinstance(flags, str) else flags), timeout=_timeout_text(obj.get("timeout")),
        comment=obj.get("comment"), elements=tuple(elements),
        timeout_seconds=timeout_seconds(_timeout_text(obj.get("timeout"))),
    )


_ITEMS_START = re.compile(r'\s*\{\s*"nftables"\s*:\s*\[')  # (match() anchors it where asked)
_CLOSE = re.compile(r"\s*\}")
_BETWEEN = re.compile(r"\s*(,?)\s*")
_DECODER = json.JSONDecoder()
_json_text = json.encoder.encode_basestring  # a str as JSON writes it (non-ASCII as is, as `nft -j` writes it)


_HEAD = 64  # characters: a document's start shorter than this may still be cut by a piece's end
# Where the reader is: before the first document; between items (or after "["); at an item (its separator
# read); after a list's "]"; in text after the list that is not the object's end; at the end.
_START, _BETWEEN_ITEMS, _ITEM, _AFTER_LIST, _TAIL, _DONE = range(6)


class NftJsonReader:
    """``nft -j`` text read piece by piece (``feed``, then ``close`` for the ruleset): what a live read hands
    over as the command writes it, so that a 91 MB document (10,000 Services) is never held whole, nor as
    bytes and text at once. ``parse_nft_json`` is one ``feed`` of the whole text.

    ``nft -j`` writes one object whose first member is the "nftables" list: its items are decoded one at a
    time, in place (never a list of 300,000 objects at once), each rule kept as its text to be typed when
    its chain is used. Several such objects one after another (``nft -j list table ip kube-proxy; nft -j
    list table ip6 kube-proxy`` into one file) are read in turn. Any other layout is kept and decoded whole
    at the end. An item cut by a piece's end is decoded again once twice as much text has come, so a huge
    item costs a few decodes, not one per piece; bad JSON is reported (line and column of the whole text)
    once the text has ended."""

    __slots__ = ("source", "_tables", "_buf", "_pos", "_base", "_lines", "_line_start", "_state", "_first",
                 "_n", "_wait", "_whole")

    def __init__(self, source: str) -> None:
        self.source = source
        self._tables: dict[tuple[str, str], TableBuilder] = {}
        self._buf = ""  # the text not read yet (from _pos)
        self._pos = 0
        self._base = 0  # where _buf starts in the whole text
        self._lines = 0  # newlines before _buf
        self._line_start = 0  # where the line _buf starts in starts, in the whole text
        self._state = _START
        self._first = True  # no item read yet in this document
        self._n = 0  # items read
        self._wait = 0  # characters to have from _pos before decoding a cut item again
        self._whole: list[str] | None = None  # not nft -j's layout: the text, decoded whole by close

    def feed(self, piece: str) -> None:
        """The next piece of the text."""
        if self._whole is not None:
            self._whole.append(piece)
            return
        if self._pos:
            self._drop_read()
        self._buf = self._buf + piece if self._buf else piece
        if len(self._buf) >= self._wait:
            self._read(final=False)

    def close(self) -> NftRuleset:
        """The ruleset, once the text has ended (an InputError if it does not read)."""
        if self._whole is None and self._state != _DONE:
            self._read(final=True)
        if self._whole is not None:
            text, self._whole = "".join(self._whole), None
            for n, item in enumerate(_whole(text, self.source)):
                self._item(n, item, "", None, 0)
        self._buf = ""
        return NftRuleset(tuple(tb.build() for tb in self._tables.values()), self.source)

    def _drop_read(self) -> None:
        buf, pos = self._buf, self._pos
        newlines = buf.count("\n", 0, pos)
        if newlines:
            self._lines += newlines
            self._line_start = self._base + buf.rfind("\n", 0, pos) + 1
        self._base += pos
        self._buf, self._pos = buf[pos:], 0

    def _error(self, pos: int, what: str) -> InputError:
        buf = self._buf
        newline = buf.rfind("\n", 0, pos)
        column = pos - newline if newline >= 0 else self._base + pos - self._line_start + 1
        return InputError(f"not valid JSON: {what} (column {column})", JSON_HINT, path=self.source,
                          line=self._lines + buf.count("\n", 0, pos) + 1)

    def _read(self, *, final: bool) -> None:  # noqa: C901, PLR0912 - one state machine, read in one place
        buf, pos, state, first, n = self._buf, self._pos, self._state, self._first, self._n
        end_of_text = len(buf)
        try:
            while True:
                if state == _BETWEEN_ITEMS:
                    sep = _BETWEEN.match(buf, pos)
                    assert sep is not None  # `*` always matches
                    at = sep.end()
                    if at == end_of_text and not final:
                        break  # (the separator is read again with what comes next)
                    comma = sep.group(1)
                    if at < end_of_text and buf[at] == "]" and not (first and comma):
                        if comma:
                            raise self._error(at, "a comma before ]")
                        pos, state = at + 1, _AFTER_LIST
                        continue
                    if not first and not comma:
                        raise self._error(at, "expected ',' or ']' between items")
                    pos, state = at, _ITEM
                elif state == _ITEM:
                    try:
                        item, end = _DECODER.raw_decode(buf, pos)
                    except json.JSONDecodeError as exc:
                        if final:
                            raise self._error(exc.pos, exc.msg) from None
                        self._wait = 2 * (end_of_text - pos)  # cut by the piece's end (or bad: said at the end)
                        break
                    except RecursionError:
                        raise self._error(pos, "nested deeper than svctrace reads") from None
                    if end == end_of_text and not final and type(item) is not dict:
                        break  # a number may go on in the next piece
                    self._item(n, item, buf, pos, end)
                    pos, n, first, state = end, n + 1, False, _BETWEEN_ITEMS
                    self._wait = 0
                elif state == _AFTER_LIST:  # just after a list's "]"
                    close = _CLOSE.match(buf, pos)
                    if close is None:
                        if not final and not buf[pos:].strip():
                            break
                        state = _TAIL
                        continue
                    nxt = _ITEMS_START.match(buf, close.end())
                    if nxt is not None:  # another document
                        pos, first, state = nxt.end(), True, _BETWEEN_ITEMS
                        continue
                    if not buf[close.end():].strip():
                        if final:
                            state = _DONE
                        break  # (another document may follow)
                    if not final and end_of_text - close.end() < _HEAD:
                        break
                    state = _TAIL
                elif state == _TAIL:  # more members after the list: the rest of the object, nothing after it
                    if not final:
                        break
                    try:
                        json.loads('{"nftables": []' + buf[pos:])
                    except ValueError:
                        raise self._error(pos, "the text after the nftables list is not the rest of the "
                                          "object") from None
                    state = _DONE
                    break
                elif state == _START:
                    m = _ITEMS_START.match(buf, pos)
                    if m is not None:
                        pos, state = m.end(), _BETWEEN_ITEMS
                        continue
                    if not final and end_of_text - pos < _HEAD:
                        break
                    self._whole = [buf]  # not nft -j's layout: decoded whole at the end
                    buf, pos = "", 0
                    break
                else:
                    break
        finally:
            self._buf, self._pos, self._state, self._first, self._n = buf, pos, state, first, n

    def _item(self, n: int, item: Any, text: str, start: int | None, end: int) -> None:
        """Item ``n`` (decoded; at text[start:end] when read in place)."""
        source = self.source
        # (type() first: what json decodes an object to, without the ABC's isinstance for each of them)
        if not (type(item) is dict or isinstance(item, Mapping)) or len(item) != 1:
            raise InputError(f"nftables[{n}] is not an object with one key", JSON_HINT, path=source)
        (kind, obj), = item.items()
        if kind == "metainfo":
            return
        if not (type(obj) is dict or isinstance(obj, Mapping)):
            raise InputError(f"nftables[{n}]: {kind} is not an object", JSON_HINT, path=source)
        try:
            if kind == "rule":
                tb = self._table(obj, n)
                expr = obj.get("expr") or []
                if not isinstance(expr, list):
                    raise InputError(f"nftables[{n}]: rule expr is not a list", JSON_HINT, path=source)
                if start is not None:
                    tb.add_rule_at(str(obj["chain"]), text, start, end, obj)
                else:
                    tb.add_rule(str(obj["chain"]), obj.get("handle"), render_rule(expr, tb.family),
                                obj.get("comment"))
            elif kind == "chain":
                tb = self._table(obj, n)
                prio = obj.get("prio")
                head = NftChain(name=str(obj["name"]), type=obj.get("type"), hook=obj.get("hook"),
                                priority=prio if isinstance(prio, int) else None, policy=obj.get("policy"),
                                comment=obj.get("comment"))
                tb.add_chain(head.name, head if head != NftChain(head.name) else None)
            elif kind == "table":
                tb = self._table(obj, n, "name")
                tb.comment = obj.get("comment", tb.comment)
            elif kind in ("set", "map"):
                tb = self._table(obj, n)
                s = _json_set(obj, kind == "map")
                (tb.maps if kind == "map" else tb.sets)[s.name] = s
            # flowtables, counters, quotas, ct helpers...: not kube-proxy's; ignored.
        except KeyError as exc:
            raise InputError(f"nftables[{n}]: {kind} has no {exc.args[0]!r}", JSON_HINT, path=source) from None
        except (TypeError, AttributeError, ValueError, RecursionError):
            # A value of a type `nft -j` never writes there (a list for a name, a number for a set element...).
            raise InputError(f"nftables[{n}]: a {kind} with values of unexpected types", JSON_HINT,
                             path=source) from None

    def _table(self, obj: Mapping[str, Any], n: int, name_key: str = "table") -> TableBuilder:
        fam, name = obj.get("family"), obj.get(name_key, obj.get("name"))
        if not isinstance(fam, str) or not isinstance(name, str):
            raise InputError(f"nftables[{n}] has no family or table name", JSON_HINT, path=self.source)
        got = self._tables.get((fam, name))
        if got is None:
            got = self._tables[fam, name] = TableBuilder(fam, name)
        return got


def _whole(text: str, source: str) -> list[Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} (column {exc.colno})", JSON_HINT,
                         path=source, line=exc.lineno) from None
    except (ValueError, RecursionError) as exc:  # a number of 5,000 digits; nesting past the decoder's depth
        raise InputError(f"not read: {exc if isinstance(exc, ValueError) else 'JSON nested too deep'}", JSON_HINT,
                         path=source) from None
    items = doc.get("nftables") if isinstance(doc, Mapping) else None
    if not isinstance(items, list):
        raise InputError('not `nft -j` output: no top-level "nftables" list', JSON_HINT, path=source)
    return items


def parse_nft_json(text: str, source: str) -> NftRuleset:
    """The ruleset in ``nft -j list ruleset`` (or ``list table``) output. (Per item as little as possible: a
    10,000-Service table has 330,000 of them.)"""
    reader = NftJsonReader(source)
    reader.feed(text)
    return reader.close()
