"""Where each item of a big ``kind: List`` JSON file starts, found without decoding it (pure: reads a file).

``svctrace svc NAME`` on a snapshot of 100,000 pods needs the pods of one namespace. Decoding the whole
250 MB ``pods.json`` costs more than the kernel's own read of the rules, and holding it costs more memory
than svctrace may use. Pretty-printed JSON (what ``svctrace capture``, ``kubectl -o json``, ``jq`` and Go's
``MarshalIndent`` write) puts each item of a List on its own lines, one indentation deeper than the
array, and separates two items with ``},`` and ``{`` at exactly that indentation: since a JSON string
cannot hold a raw newline, that separator can only be structure. One pass of compiled patterns over
the bytes (a piece at a time) finds every separator and every key the caller asks for ("namespace",
the service-name label), and the caller decodes only the items whose key it wants.

Nothing is taken on trust: the text before the first item and after the last must decode as the rest
of one List object, an item is decoded from exactly its span and must be an object that fills it, and
an item with none or several of a key is "unsure" (handed to every query). Anything else (a minified
file, several documents, other indentation) is not indexed: ``ListIndex.open`` says why and the caller
reads the file as a stream, which is always right, only slower.
"""

from __future__ import annotations

import heapq
import json
import os
import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

PIECE = 8 << 20  # bytes scanned at a time
LATER_PIECE = 2 << 20  # for keys scanned later, when the answer's data is in memory already (less at once)
_HEAD = 1 << 20  # the List's opening members must fit in this (they are a few hundred bytes)
_OPEN = re.compile(rb'\A\xef?\xbb?\xbf?[ \t\r\n]*\{(?P<members>.*?)"items"[ \t\r\n]*:[ \t\r\n]*\['
                   rb'(?P<gap>[ \t\r\n]*)(?P<first>[{\]])', re.S)
_LAST = 32 << 20  # the last item and the array's end must fit in this (an object is at most 16 MiB)
_DECODER = json.JSONDecoder()


class NotIndexed(Exception):
    """The file is not laid out so that items can be found without decoding it; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_VALUE = rb'(?P<v>[^"\\\r\n]{0,256})(?P<end>["\\])'
# More bytes than a key_pattern's match spans before its value: the quoted key (at most 64 bytes), up to 64
# blanks, ":", up to 64 blanks, '"'.
_KEY_SPAN = 256
# A key's lookups answered by a scan for that one value before the whole key is indexed: an index costs
# memory for every item and pays off only for many questions.
TARGETED = 2


def key_pattern(key: str, *more: str) -> bytes:
    """A pattern for ``"key": "value"`` (or any of ``more`` keys) capturing the value (plain values only: an
    escape makes it unsure)."""
    if any(len(k.encode()) > 64 for k in (key, *more)):
        raise ValueError("a key of at most 64 bytes")  # (_KEY_SPAN)
    names = b"|".join(re.escape(k.encode()) for k in (key, *more))
    return rb'"(?:' + names + rb')"[ \t\r\n]{0,64}:[ \t\r\n]{0,64}"' + _VALUE


def _one_value(pattern: bytes, value: str) -> bytes:
    """``pattern`` (of key_pattern) matching only ``value`` or an unsure (escaped) value: the hits that matter to
    one question (``_hits`` reads them as that value or None), without the rest."""
    if not pattern.endswith(_VALUE):
        raise ValueError("not a key_pattern")
    return pattern[:-len(_VALUE)] + rb'(?P<v>' + re.escape(value.encode()) + rb'|[^"\\\r\n]{0,256}(?=\\))' \
        rb'(?P<end>["\\])'


@dataclass
class ListIndex:
    """The items of one List file: where each starts, and per asked key its value (None: unsure)."""

    path: Path
    size: int
    starts: array[int]  # byte offset of each item's "{"
    ends: array[int]  # byte offset just past each item's "}"
    keys: dict[str, list[str | None]] = field(default_factory=dict)
    # per key that an item may hold several times (a pod's addresses): all its values (None: unsure)
    many: dict[str, list[tuple[str, ...] | None]] = field(default_factory=dict)
    # per key: value -> item numbers; built on first use
    _by: dict[str, dict[str | None, list[int]]] = field(default_factory=dict, repr=False)
    # keys scanned later that an item may hold several times: their values, hashed (items_where answers)
    _maps: dict[str, _ValueMap] = field(default_factory=dict, repr=False)
    # keys scanned for when first asked about (``open(..., later=True)``): name -> (pattern, many)
    _later: dict[str, tuple[bytes, bool]] = field(default_factory=dict, repr=False)
    _asked: dict[str, int] = field(default_factory=dict, repr=False)  # lookups of a key not indexed yet

    def __len__(self) -> int:
        return len(self.starts)

    @classmethod
    def open(cls, path: Path, keys: Mapping[str, bytes], many: Mapping[str, bytes] | None = None,
             top: Iterable[str] = (), *, later: bool = False) -> ListIndex:
        """Scan ``path``; ``keys`` maps a name to ``key_pattern(...)`` for a key an item holds once, ``many``
        for one it may hold several times; ``top`` names keys read only as the item's own members (its
        "kind", not an ownerReference's), found on lines at exactly the items' member indentation.
        With ``later``, ``keys`` and ``many`` are scanned for only when first asked about (a question that
        never comes costs nothing). Raises NotIndexed."""
        many = many or {}
        with path.open("rb") as f:
            index = _Scanner(f, path, {} if later else keys, {} if later else many, tuple(top)).run()
        if later:
            index._later = {**{k: (p, False) for k, p in keys.items()}, **{k: (p, True) for k, p in many.items()}}
        return index

    def _ensure(self, key: str) -> None:
        later = self._later.pop(key, None)
        if later is None or not self.starts:
            if later is not None:
                (self.many if later[1] else self.keys)[key] = []
            return
        pattern, many = later
        by: _ValueMap | None = _ValueMap(self.starts) if many and len(self.starts) <= _ITEM_MASK else None
        # a pod's addresses (300,000 of them at 10k Services) are mapped as they come, not kept
        found = self._scan(re.compile(pattern), by.add if by is not None else None)
        n = len(self.starts)
        if by is not None:
            self._maps[key] = by.finish()
        elif many:
            self.many[key] = _assign_many(found, self.starts, n)
        else:
            self.keys[key] = _assign(found, self.starts, n)

    def _scan(self, pattern: re.Pattern[bytes],
              each: Callable[[list[tuple[int, str | None]]], None] | None = None,
              needles: tuple[bytes, ...] = (), near: bytes | None = None) -> list[tuple[int, str | None]]:
        """(offset, value) of every match in the items; with ``each``, handed over a window at a time instead.
        With ``needles`` (strings every match holds one of), a window without any is not searched. With ``near``
        (``pattern`` is ``_one_value``'s for this value), a window without an escape is searched only just before
        each place the value is: its matches hold the value itself (a key pattern searched over a whole window
        is slow, and a node's address is in every one of its pods)."""
        found: list[tuple[int, str | None]] = []
        with self.path.open("rb") as f:
            for buf, pos, lo, limit in _windows(f, self.starts[0], 4096, end=self.ends[-1], size=LATER_PIECE):
                # a match starting before ``limit`` may end anywhere in the buffer: look for the needles in all of it
                if needles and all(buf.find(n, lo) < 0 for n in needles):
                    continue
                if near is not None and buf.find(b"\\", lo) < 0:
                    _hits_before(pattern, near, buf, pos, lo, limit, found)
                else:
                    _hits(pattern, buf, pos, lo, limit, found)
                if each is not None:
                    each(found)
                    found.clear()
        return found

    def items_where(self, key: str, value: str) -> list[int]:
        """Item numbers whose ``key`` is (or, for a ``many`` key, includes) ``value``, and those unsure of
        it, in file order (a few questions about a key not indexed yet: those holding ``value`` or unsure of
        it anywhere, which the caller checks as it checks every candidate)."""
        later = self._later.get(key)
        if later is not None and self.starts and self._asked.get(key, 0) < TARGETED:
            self._asked[key] = self._asked.get(key, 0) + 1
            # a plain scan for the value (or an escape) skips the windows without it: most of a 250 MB file
            found = self._scan(re.compile(_one_value(later[0], value)), needles=(value.encode(), b"\\"),
                               near=value.encode())
            return sorted({i for at, _ in found if (i := bisect_right(self.starts, at) - 1) >= 0})
        self._ensure(key)
        hashed = self._maps.get(key)
        if hashed is not None:
            return hashed.items(value)
        by = self._values(key)
        hits = by.get(value, [])
        unsure = by.get(None, [])
        return sorted(hits + unsure) if unsure else hits

    def prepare(self, key: str) -> None:
        """Scan for ``key`` and index its values now (before forking: the children share the index)."""
        self._ensure(key)
        if key not in self._maps:
            self._values(key)

    def _values(self, key: str) -> dict[str | None, list[int]]:
        self._ensure(key)
        by = self._by.get(key)
        if by is None:
            by = {}
            if key in self.many:
                for i, vs in enumerate(self.many[key]):
                    for v in (None,) if vs is None else set(vs):
                        by.setdefault(v, []).append(i)
            else:
                for i, v in enumerate(self.keys[key]):
                    by.setdefault(v, []).append(i)
            self._by[key] = by
        return by

    def values(self, key: str) -> set[str | None]:
        self._ensure(key)
        return set(self.keys[key])

    def read(self, numbers: list[int] | range | None = None) -> Iterator[tuple[int, Any]]:
        """(number, decoded item) for the given items (all when None), checking each fills its span. Items that
        lie close together (a namespace's pods, a Service's slices) are read with one call, and decoded from one
        text when it is ASCII (the byte offsets are then its characters')."""
        wanted = range(len(self.starts)) if numbers is None else numbers
        starts, ends = self.starts, self.ends
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            now = os.fstat(fd).st_size
            if now != self.size:
                raise NotIndexed(f"it is {now:,} bytes now, {self.size:,} when it was indexed")
            k, count = 0, len(wanted)
            while k < count:
                # a run of items, in the order asked, each starting after the last ended and not far from it
                first = last = k
                base = starts[wanted[k]]
                while last + 1 < count and 0 <= starts[wanted[last + 1]] - ends[wanted[last]] <= _GAP \
                        and ends[wanted[last + 1]] - base <= _RUN:
                    last += 1
                span = ends[wanted[last]] - base
                data = os.pread(fd, span, base)
                if len(data) != span:
                    raise NotIndexed(f"it ends at byte {base + len(data):,}, before an item it held")
                text = data.decode("ascii") if last > first and data.isascii() else None
                for j in range(first, last + 1):
                    i = wanted[j]
                    at, to = starts[i] - base, ends[i] - base
                    if text is not None:
                        yield i, _decode_at(text, at, to, self.path, starts[i])
                    else:
                        yield i, _decode_item(data[at:to], self.path, starts[i])
                k = last + 1
        finally:
            os.close(fd)


_GAP = 64 << 10  # bytes between two items read with one call (what lies between is read and not decoded)
_RUN = 4 << 20  # bytes read with one call at most


def _decode_at(text: str, at: int, to: int, path: Path, offset: int) -> Any:
    """The item at text[at:to] (ASCII text: characters are bytes), decoded in place; anything wrong with it is
    said as _decode_item says it."""
    try:
        value, end = _DECODER.raw_decode(text, at)
    except (ValueError, RecursionError):
        end = -1
    if end != to or not isinstance(value, dict):
        return _decode_item(text[at:to].encode("ascii"), path, offset)
    return value


def _decode_item(data: bytes, path: Path, offset: int) -> Any:
    try:
        text = data.decode("utf-8")
        value, end = _DECODER.raw_decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise NotIndexed(f"the item at byte {offset:,} does not decode on its own ({exc})") from None
    if end != len(text) or not isinstance(value, dict):
        raise NotIndexed(f"the item at byte {offset:,} is not one JSON object")
    return value


class _Scanner:
    def __init__(self, f: BinaryIO, path: Path, keys: Mapping[str, bytes], many: Mapping[str, bytes],
                 top: tuple[str, ...] = ()) -> None:
        self.f = f
        self.path = path
        self.keys = {name: re.compile(p) for name, p in {**keys, **many}.items()}
        self.many = set(many)
        self.top = top

    def run(self) -> ListIndex:
        f = self.f
        head = f.read(_HEAD)
        m = _OPEN.match(head)
        if m is None:
            raise NotIndexed("it does not start as a JSON object with an items array")
        self.size = size = f.seek(0, 2)
        first_at = m.start("first")
        gap = m.group("gap")
        index = ListIndex(self.path, size, array("q"), array("q"),
                          {k: [] for k in (*self.keys, *self.top) if k not in self.many}, {k: [] for k in self.many})
        if m.group("first") == b"]":
            self._check_skeleton(head[:first_at], first_at + 1)
            return index
        newline = gap.rfind(b"\n")
        if newline < 0:
            raise NotIndexed("its items are not each on their own lines (minified JSON)")
        indent = gap[newline + 1:]
        if indent.strip(b" \t"):
            raise NotIndexed("its items are indented with something other than spaces or tabs")
        crlf = gap[newline - 1:newline] == b"\r"
        nl = rb"\r\n" if crlf else rb"\n"
        ind = re.escape(indent)
        # The first item's first member line gives the members' indentation: a line indented exactly so
        # inside an item is one of the item's own members (a nested object's are deeper).
        member = re.match(rb"\{[ \t]{0,64}" + nl + rb"([ \t]{1,256})\"", head[first_at:first_at + 4096])
        if member is not None and len(member.group(1)) > len(indent) and member.group(1).startswith(indent):
            for name in self.top:
                self.keys[name] = re.compile(nl + re.escape(member.group(1)) + key_pattern(name))
        else:  # no member on its own line: every item is unsure of these keys
            for name in self.top:
                self.keys[name] = re.compile(rb"(?!x)x")
        # An item ends with "}" and the next starts on a line of its own with "{" at exactly the items'
        # indentation (a nested object inside an item is indented deeper); the array ends with "]" on a
        # line indented less than its items.
        sep = re.compile(rb"\}[ \t]{0,64},[ \t]{0,64}" + nl + ind + rb"\{")
        close = re.compile(rb"\}[ \t]{0,64}" + nl + rb"(?P<cind>[ \t]{0,256})\]")
        starts, ends = index.starts, index.ends
        starts.append(first_at)
        hits: dict[str, list[tuple[int, str | None]]] = {k: [] for k in self.keys}
        for buf, pos, lo, limit in _windows(f, first_at + 1, 4096 + 2 * len(indent)):
            for s in sep.finditer(buf, lo):
                if s.start() >= limit:
                    break
                ends.append(pos + s.start() + 1)
                starts.append(pos + s.end() - 1)
            for name, pattern in self.keys.items():
                _hits(pattern, buf, pos, lo, limit, hits[name])
        # The array's end: the first "}" then "]" at the items' indentation after the last item starts.
        at = starts[-1]
        f.seek(at)
        last = f.read(_LAST)
        c = next((c for c in close.finditer(last)
                  if len(c.group("cind")) < len(indent) and indent.startswith(c.group("cind"))), None)
        if c is None:
            raise NotIndexed("the end of its items array is not where its indentation says")
        ends.append(at + c.start() + 1)
        self._check_skeleton(head[:first_at], at + c.end())
        for name, found in hits.items():
            if name in self.many:
                index.many[name] = _assign_many(found, starts, len(starts))
            else:
                index.keys[name] = _assign(found, starts, len(starts))
        return index

    def _check_skeleton(self, before: bytes, after_at: int) -> None:
        """The text around the items must be the rest of one List object (nothing else in the file)."""
        f = self.f
        f.seek(after_at)
        tail = f.read(_HEAD + 1)
        if len(tail) > _HEAD:
            raise NotIndexed("more than a List follows its items")
        try:
            doc = json.loads((before + b"]" + tail).decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise NotIndexed("the text around its items is not the rest of one JSON object") from None
        if not isinstance(doc, dict) or doc.get("items") != []:
            raise NotIndexed("its items array is not the object's own items")


def _windows(f: BinaryIO, start: int, overlap: int, end: int | None = None,
             size: int = PIECE) -> Iterator[tuple[bytes, int, int, int]]:
    """The file from ``start`` (to ``end``, or its end) a piece at a time, as (buffer, the buffer's file offset,
    from, to): a match that starts in [from, to) of a buffer is taken there. Every pattern's matches are far
    shorter than ``overlap``, so one that starts before ``to`` lies whole in the buffer, and none is seen twice."""
    f.seek(start)
    pos = scanned = start  # the file offset of buf[0]; where the next matches may start
    buf = b""
    while True:
        want = size if end is None else min(size, end - pos - len(buf))
        piece = f.read(want) if want > 0 else b""
        if end is not None and want > 0 and not piece:
            raise NotIndexed("it is shorter than when it was indexed")
        buf = buf + piece if buf else piece
        done = not piece if end is None else pos + len(buf) >= end
        limit = len(buf) if done else len(buf) - overlap
        lo = scanned - pos
        if limit > lo:
            yield buf, pos, lo, limit
            scanned = pos + limit
        if done:
            return
        buf = buf[scanned - pos:]
        pos = scanned


def _hits(pattern: re.Pattern[bytes], buf: bytes, pos: int, lo: int, limit: int,
          found: list[tuple[int, str | None]]) -> None:
    """(file offset, value) of each match of a key pattern starting in [lo, limit); None for an escaped value."""
    for k in pattern.finditer(buf, lo):
        if k.start() >= limit:
            break
        found.append((pos + k.start(), k.group("v").decode("utf-8", "replace") if k.group("end") == b'"' else None))


def _hits_before(pattern: re.Pattern[bytes], value: bytes, buf: bytes, pos: int, lo: int, limit: int,
                 found: list[tuple[int, str | None]]) -> None:
    """``_hits`` of a ``_one_value`` pattern in a buffer without an escape: each match ends with ``value`` and its
    closing quote, and starts at most ``_KEY_SPAN`` bytes before it, so only those bytes are searched."""
    at = buf.find(value, lo)
    while at >= 0:
        for k in pattern.finditer(buf, max(lo, at - _KEY_SPAN), at + len(value) + 1):
            if k.start("v") == at and k.start() < limit:
                found.append((pos + k.start(), value.decode("utf-8", "replace")))
        at = buf.find(value, at + 1)


def _assign(found: list[tuple[int, str | None]], starts: array[int], n: int) -> list[str | None]:
    """Each item's one value of a key; None when it has none, several, or one that is escaped."""
    out: list[str | None] = [None] * n
    seen = [0] * n
    for at, value in found:
        i = bisect_right(starts, at) - 1
        if i < 0:
            continue  # in the List's own members, before the items
        seen[i] += 1
        out[i] = value
    for i, count in enumerate(seen):
        if count != 1:
            out[i] = None
    return out


class _ValueMap:
    """value -> the items holding it, for a key an item may hold several times (a pod's addresses: 300,000 of
    them at 10k Services), built from hits in file order without keeping them or their strings: each (value,
    item) is one 64-bit number, a 40-bit hash of the value above the item's number, in one sorted array
    (2.4 MB, where a dict of the strings took ~50). A hash shared by two values only adds a candidate, which
    the caller checks like any other; items with an escaped value are unsure of every value."""

    __slots__ = ("starts", "keys", "runs", "unsure", "_last")

    def __init__(self, starts: array[int]) -> None:
        self.starts = starts
        self.keys: array[int] = array("Q")
        self.runs: list[array[int]] = []  # each window's pairs, sorted (merged at the end: no list of them all)
        self.unsure: set[int] = set()
        self._last = -1

    @staticmethod
    def _hash(value: str) -> int:
        return hash(value) & _HASH_MASK

    def add(self, found: list[tuple[int, str | None]]) -> None:
        starts, last = self.starts, self._last
        keys: list[int] = []
        for at, value in found:
            i = bisect_right(starts, at) - 1
            if i < 0:
                continue  # in the List's own members, before the items
            if value is None:
                self.unsure.add(i)
                continue
            key = self._hash(value) << _ITEM_BITS | i
            if key != last:  # an item's values come together (hits are in file order): each pair once
                keys.append(key)
                last = key
        self._last = last
        if keys:
            self.runs.append(array("Q", sorted(keys)))

    def finish(self) -> _ValueMap:
        self.keys = array("Q", heapq.merge(*self.runs))
        self.runs = []
        return self

    def items(self, value: str) -> list[int]:
        """The items that may hold ``value`` (and those unsure), in file order."""
        h = self._hash(value) << _ITEM_BITS
        keys = self.keys
        lo, hi = bisect_left(keys, h), bisect_left(keys, h + (1 << _ITEM_BITS))
        found = {keys[j] & _ITEM_MASK for j in range(lo, hi)} - self.unsure
        return sorted(found | self.unsure)


_ITEM_BITS = 24  # items of one List file at most 16,777,216 (beyond: not indexed)
_ITEM_MASK = (1 << _ITEM_BITS) - 1
_HASH_MASK = (1 << (64 - _ITEM_BITS)) - 1


def _assign_many(found: list[tuple[int, str | None]], starts: array[int], n: int) -> list[tuple[str, ...] | None]:
    """Each item's values of a key it may hold several times; None when one of them is escaped."""
    out: list[list[str] | None] = [[] for _ in range(n)]
    for at, value in found:
        i = bisect_right(starts, at) - 1
        if i < 0:
            continue
        got = out[i]
        if got is None:
            continue
        if value is None:
            out[i] = None
        else:
            got.append(value)
    return [tuple(v) if v is not None else None for v in out]
