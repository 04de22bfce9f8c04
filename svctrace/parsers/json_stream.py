"""JSON values read from a stream one at a time: a List's items are handed out as they are read (pure).

``kubectl get pods -A -o json`` on a big cluster is hundreds of MB in one value. ``json.loads`` would hold
the whole text and every decoded pod at once; this reader holds one item, which the caller types and
drops. Only the skeleton around the items (the top-level object's members, the array's commas) is walked
here; each item, and every other value, is decoded by the C decoder (``json.JSONDecoder.raw_decode``), and
whitespace is skipped by a compiled pattern, or whole pieces of it by the TextStream, never a character
at a time in Python.

Bounds (svctrace.parsers.limits): one value at most ``max_value_chars`` characters, at most
``max_values`` values in all, nesting as deep as the decoder allows; past a bound the reader stops with
an InputError that names the file, the line and the bound.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from svctrace.errors import InputError
from svctrace.parsers.limits import mib
from svctrace.parsers.text_stream import CHUNK, TextStream
from svctrace.record import record

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# A decode error this close to the end of what has been read may only mean the value goes on.
_TAIL = 16


@record
class Streamed:
    """One value: a whole top-level value, or one element of a streamed array."""

    value: Any
    number: int  # which top-level value it is or belongs to (1-based)
    line: int  # where it starts
    # For an element of a top-level object's streamed member: that object's other members (as read so far;
    # all of them for an element held back by ``ready``). None for a top-level value or bare array element.
    container: dict[str, Any] | None = None
    index: int | None = None  # its position in the streamed array; None for a top-level value
    # True for the members of a top-level object whose array was streamed, given out after its elements
    rest: bool = False
    text: str | None = None  # a streamed element's JSON text as it came (``JsonStream(..., texts=True)``)


class Counter:
    """Values read so far, shared by the files of one snapshot so that the bound is the snapshot's."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0


class JsonStream:
    """Iterate over the values in a stream of JSON text (several top-level values are fine, as ``>>`` leaves).

    A top-level array's elements are handed out one by one, and so are the elements of a top-level
    object's ``stream_key`` member when ``should_stream(members read so far)`` agrees; an element for which
    ``ready(members so far, element)`` is false is held until its object ends (a List whose ``kind`` comes
    after its ``items``).
    """

    def __init__(self, stream: TextStream, source: str, *, max_value_chars: int, counter: Counter,
                 stream_key: str = "items",
                 should_stream: Callable[[dict[str, Any]], bool] = lambda members: True,
                 ready: Callable[[dict[str, Any], Any], bool] = lambda members, element: True,
                 texts: bool = False) -> None:
        self._stream = stream
        self._texts = texts  # keep each streamed element's text too
        self._source = source
        self._max = max_value_chars
        self._counter = counter
        self._key = stream_key
        self._should_stream = should_stream
        self._ready = ready
        self._buf = ""
        self._pos = 0
        self._eof = False
        # where the buffer starts: characters, lines and the column, for messages and bounds
        self._base = 0
        self._base_line = 1
        self._base_col = 1
        self._lc_pos = 0  # a cache: lines counted in _buf[:_lc_pos]
        self._lc_lines = 0

    # -- the buffer --

    def _drop(self, k: int) -> None:
        """Forget the first ``k`` characters of the buffer."""
        if not k:
            return
        nl = self._buf.count("\n", 0, k)
        self._advance(nl, k - (self._buf.rfind("\n", 0, k) + 1) if nl else -1, k)
        self._buf = self._buf[k:]
        self._pos -= k
        if self._lc_pos >= k:
            self._lc_pos -= k
            self._lc_lines -= nl
        else:
            self._lc_pos = self._lc_lines = 0

    def _advance(self, newlines: int, tail: int, chars: int) -> None:
        self._base += chars
        if newlines:
            self._base_line += newlines
            self._base_col = tail + 1
        else:
            self._base_col += chars

    def _skipped(self, data: bytes) -> None:
        nl = data.count(b"\n")
        self._advance(nl, len(data) - data.rfind(b"\n") - 1 if nl else -1, len(data))

    def _fill(self, at_least: int = 1) -> bool:
        """Read more text after the buffer; False at the end of the stream."""
        self._drop(self._pos)
        pieces: list[str] = []
        got = 0
        while got < at_least:  # a source may hand out less than asked (a socket, a test)
            piece = self._stream.read(max(at_least - got, CHUNK),
                                      skip_blank=None if self._buf or pieces else self._skipped)
            if not piece:
                self._eof = True
                break
            pieces.append(piece)
            got += len(piece)
        if not pieces:
            return False
        self._buf += "".join(pieces)
        return True

    def _peek(self) -> str:
        """The next character that is not whitespace ("" at the end)."""
        while True:
            self._pos = _WS.match(self._buf, self._pos).end()  # type: ignore[union-attr]  # `*` always matches
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if self._eof or not self._fill():
                return ""

    def _line(self, pos: int) -> int:
        if pos < self._lc_pos:
            self._lc_pos = self._lc_lines = 0
        self._lc_lines += self._buf.count("\n", self._lc_pos, pos)
        self._lc_pos = pos
        return self._base_line + self._lc_lines

    def _column(self, pos: int) -> int:
        nl = self._buf.rfind("\n", 0, pos)
        return pos - nl if nl >= 0 else self._base_col + pos

    def _fail(self, what: str, pos: int, hint: str | None = None) -> InputError:
        return InputError(f"{what} (column {self._column(pos)})",
                          hint or "check that the file is complete `kubectl get ... -o json` output",
                          path=self._source, line=self._line(pos))

    def _count(self) -> None:
        self._counter.count += 1
        if self._counter.count > self._counter.limit:
            raise self._fail(f"more than {self._counter.limit:,} JSON values; refused", self._pos,
                             "a snapshot holds far fewer objects; check that this is the right file "
                             "(see the limits in docs/snapshot.md)")

    def _value(self) -> Any:
        """The next value, decoded by the C decoder, reading on while it is incomplete."""
        self._peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                truncated = exc.pos >= len(self._buf) - _TAIL or exc.msg.startswith("Unterminated string")
                if truncated and not self._eof:
                    self._grow()
                    continue
                raise self._fail(f"not valid JSON: {exc.msg}", exc.pos) from None
            except ValueError as exc:  # a number of more than 4,300 digits
                raise self._fail(f"not read: {exc}", self._pos) from None
            except RecursionError:
                raise self._fail("not read: JSON nested deeper than svctrace reads", self._pos,
                                 "no Kubernetes object nests this deep; check that this is the right file") from None
            if end > len(self._buf) - _TAIL and not self._eof:
                self._grow()  # a number may go on in the next piece ("0" of "0.5")
                continue
            self._pos = end
            return value

    def _grow(self) -> None:
        pending = len(self._buf) - self._pos
        if pending > self._max:
            raise self._fail(f"a JSON value bigger than {mib(self._max)}; refused", self._pos,
                             "no Kubernetes object is that big; check that this is the right file "
                             "(see the limits in docs/snapshot.md)")
        self._fill(pending)  # at least double what is pending, so a long value is decoded O(log n) times

    def _expect(self, char: str, what: str) -> None:
        if self._peek() != char:
            raise self._fail(f"not valid JSON: {what}", self._pos)
        self._pos += 1

    # -- values --

    def __iter__(self) -> Iterator[Streamed]:
        number = 0
        while True:
            first = self._peek()
            if not first:
                return
            number += 1
            self._count()
            line = self._line(self._pos)
            if first == "{":
                yield from self._object(number, line)
            elif first == "[":
                empty = True
                for value, item_line, index, _ in self._elements():
                    empty = False
                    yield Streamed(value, number, item_line, None, index)
                if empty:
                    yield Streamed([], number, line)  # an empty top-level array is a value too
            else:
                yield Streamed(self._value(), number, line)

    def _elements(self) -> Iterator[tuple[Any, int, int, str | None]]:
        self._pos += 1  # "["
        if self._peek() == "]":
            self._pos += 1
            return
        index = 0
        while True:
            self._peek()
            self._count()
            line = self._line(self._pos)
            if self._texts:
                start = self._base + self._pos  # (the buffer may be refilled while the value is read)
                value = self._value()
                yield value, line, index, self._buf[start - self._base:self._pos]
            else:
                yield self._value(), line, index, None
            index += 1
            nxt = self._peek()
            self._pos += 1
            if nxt == "]":
                return
            if nxt != ",":
                raise self._fail("not valid JSON: Expecting ',' delimiter", self._pos - 1)

    def _object(self, number: int, line: int) -> Iterator[Streamed]:
        start = self._base + self._pos
        self._pos += 1  # "{"
        members: dict[str, Any] = {}
        held: list[Streamed] = []
        streamed_chars = 0
        streamed = False
        if self._peek() == "}":
            self._pos += 1
            yield Streamed(members, number, line)
            return
        while True:
            if self._peek() != '"':
                raise self._fail("not valid JSON: Expecting property name enclosed in double quotes", self._pos)
            key = self._value()
            self._expect(":", "Expecting ':' delimiter")
            self._count()
            if key == self._key and self._peek() == "[" and self._should_stream(members):
                streamed = True
                before = self._base + self._pos
                for value, item_line, index, text in self._elements():
                    item = Streamed(value, number, item_line, members, index, text=text)
                    if self._ready(members, value):
                        yield item
                    else:
                        held.append(item)
                streamed_chars += self._base + self._pos - before
            else:
                members[key] = self._value()
                if self._base + self._pos - start - streamed_chars > self._max:
                    raise self._fail(f"a JSON object bigger than {mib(self._max)}; refused", self._pos,
                                     "no Kubernetes object is that big; check that this is the right file")
            nxt = self._peek()
            self._pos += 1
            if nxt == "}":
                break
            if nxt != ",":
                raise self._fail("not valid JSON: Expecting ',' delimiter", self._pos - 1)
        yield from held
        yield Streamed(members, number, line, rest=streamed)


def deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and mappings more than ``limit`` deep (walked without recursion)."""
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        v, depth = todo.pop()
        if depth > limit:
            return True
        if isinstance(v, Mapping):
            todo.extend((child, depth + 1) for child in v.values())
        elif isinstance(v, list):
            todo.extend((child, depth + 1) for child in v)
    return False


def compact(stream: TextStream, source: str, *, stream_key: str, max_value_chars: int, counter: Counter) -> str:
    """The JSON text of ``stream`` written back without whitespace between values, read item by item.

    For JSON files that are read whole afterwards (nft.json): gigabytes of spaces or a pretty-printed
    ruleset become what they hold, and a malformed file is refused here with its line. A top-level object's
    ``stream_key`` member is written last (member order means nothing in JSON).
    """
    def dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    parts: list[str] = []
    items: list[str] = []
    array: tuple[int, list[str]] | None = None  # a top-level array being written: its number and elements
    for s in JsonStream(stream, source, max_value_chars=max_value_chars, counter=counter, stream_key=stream_key):
        if array is not None and (s.index is None or s.container is not None or s.number != array[0]):
            parts.append("[" + ",".join(array[1]) + "]")
            array = None
        if s.container is not None:
            items.append(dumps(s.value))
        elif s.rest:
            members = [f"{dumps(k)}:{dumps(v)}" for k, v in s.value.items()]
            parts.append("{" + ",".join([*members, f"{dumps(stream_key)}:[{','.join(items)}]"]) + "}")
            items = []
        elif s.index is not None:
            if array is None:
                array = (s.number, [])
            array[1].append(dumps(s.value))
        else:
            parts.append(dumps(s.value))
    if array is not None:
        parts.append("[" + ",".join(array[1]) + "]")
    return "\n".join(parts)
