"""The streaming JSON reader: the same values as json.loads whatever the piece size, bounded on hostile input."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svctrace.errors import InputError
from svctrace.parsers.json_stream import Counter, JsonStream
from svctrace.parsers.k8s_documents import read_json_objects
from svctrace.parsers.text_stream import TextStream

_scalars = st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=False,
                                                                               allow_infinity=False) | st.text()
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                                                  max_size=4),
                       max_leaves=20)


def stream(data: bytes, piece: int = 7, limit: int | None = None) -> TextStream:
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        chunk = data[pos:pos + min(n, piece)]
        pos += len(chunk)
        return chunk

    return TextStream(read, "t.json", limit=limit)


def values(data: bytes, piece: int = 7, *, max_value: int = 1 << 20, limit: int = 1_000_000) -> list[Any]:
    reader = JsonStream(stream(data, piece), "t.json", max_value_chars=max_value, counter=Counter(limit))
    out: list[Any] = []
    for s in reader:
        if s.container is not None:
            out.append(("item", s.value))
        elif not s.rest:
            out.append(s.value)
    return out


@settings(max_examples=150, deadline=None)
@given(_values, st.integers(1, 64), st.sampled_from(["", " ", "\n  ", "\t\r\n"]))
def test_any_value_reads_as_json_loads_reads_it_whatever_the_piece_size(value: Any, piece: int, ws: str) -> None:
    text = json.dumps(value, indent=None if ws == "" else 1)
    got = values((ws + text + ws).encode(), piece)
    if isinstance(value, list):  # a top-level array is handed out element by element (an empty one whole)
        assert got == (value or [[]])
    elif isinstance(value, dict) and isinstance(value.get("items"), list):
        items = [("item", v) for v in value["items"]]
        assert got[:len(items)] == items or sorted(map(repr, got)) == sorted(map(repr, items))
    else:
        assert got == [value]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 32))
def test_any_bytes_give_values_or_an_input_error(data: bytes, piece: int) -> None:
    try:
        values(data, piece)
    except InputError as exc:
        assert exc.path == "t.json"


def test_a_list_is_handed_out_item_by_item_with_its_kind_known_after() -> None:
    text = '{"apiVersion": "v1", "items": [{"metadata": {"name": "a"}}, {"kind": "Pod"}], "kind": "ServiceList"}'
    got = list(JsonStream(stream(text.encode()), "t", max_value_chars=1000, counter=Counter(100),
                          ready=lambda members, element: "kind" in element or "kind" in members))
    # the item without a kind waits for the List's kind; the one with a kind goes at once
    assert [(s.value, s.container is not None) for s in got[:2]] == [({"kind": "Pod"}, True),
                                                                       ({"metadata": {"name": "a"}}, True)]
    assert got[1].container is not None and got[1].container["kind"] == "ServiceList"
    assert got[2].rest and got[2].value == {"apiVersion": "v1", "kind": "ServiceList"}


def test_lines_are_counted_across_pieces_and_skipped_whitespace() -> None:
    data = b"\n" * 3 + b" " * 5000 + b"\n\n" + b'[1, 2,\n x]'
    with pytest.raises(InputError) as caught:
        values(data, piece=100)
    assert caught.value.line == 7  # three blank lines, the spaces' line, one more, then `[1, 2,`
    assert "Expecting value" in caught.value.message and "column 2" in caught.value.message


@pytest.mark.parametrize(("data", "words"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper than svctrace reads"),
    (b'{"a": "' + b"x" * 5000 + b'"}', "bigger than"),
    (b"[" + b"1, " * 200 + b"1]", "more than 100 JSON values"),
    (b"9" * 5000, "4300 digits"),
    (b'{"a": 1 "b": 2}', "Expecting ',' delimiter"),
    (b'{"a": 1,}', "Expecting property name"),
    (b'{"a" 1}', "Expecting ':' delimiter"),
    (b'[1, 2', "Expecting"),
])
def test_hostile_json_is_one_input_error(data: bytes, words: str) -> None:
    with pytest.raises(InputError, match=words):
        values(data, piece=4096, max_value=4096, limit=100)


def test_gigabytes_of_whitespace_cost_a_byte_count_not_memory() -> None:
    blank = b" " * (1 << 20)
    pieces = iter([b'{"kind": "List", "items": [', *([blank] * 64), b'{"kind": "Pod"}', *([blank] * 64), b"]}"])

    def read(n: int) -> bytes:
        return next(pieces, b"")

    tracemalloc.start()
    try:
        got = list(read_json_objects(TextStream(read, "big.json"), "big.json"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [o.doc["kind"] for o in got] == ["Pod"]
    assert peak < 8 << 20  # 128 MiB of spaces went by; what stayed is a piece or two


def test_a_file_over_its_limit_is_refused_as_it_is_read() -> None:
    with pytest.raises(InputError, match=r"the file is bigger than 100 bytes; refused"):
        stream(b" " * 500, piece=64, limit=100).read_all()


def test_utf16_and_bad_utf8_say_so_with_the_line() -> None:
    with pytest.raises(InputError, match="UTF-16"):
        stream("[]".encode("utf-16")).read_all()
    with pytest.raises(InputError) as caught:
        stream(b'[\n"\xff"]').read_all()
    assert caught.value.line == 2 and "not UTF-8" in caught.value.message


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=300),
                                                                st.lists(st.booleans(), max_size=5)), max_size=6),
                max_size=8),
       st.integers(1, 64), st.sampled_from([None, 1]))
def test_each_streamed_item_comes_with_its_text_as_it_was_written(items: list[dict[str, Any]], piece: int,
                                                                  indent: int | None) -> None:
    # the spool of a forked lister writes these texts as they came (svctrace.collectors.kube_spool): a piece of
    # the buffer read again, or refilled, while an item was decoded must not change its text
    data = json.dumps({"kind": "PodList", "metadata": {"continue": "x"}, "items": items}, indent=indent).encode()
    reader = JsonStream(stream(data, piece), "t.json", max_value_chars=1 << 20, counter=Counter(10_000), texts=True)
    streamed = [v for v in reader if v.container is not None]
    assert [v.value for v in streamed] == items
    assert [json.loads(v.text or "") for v in streamed] == items
    assert all(v.text is not None and v.text.startswith("{") and v.text.endswith("}") for v in streamed)
