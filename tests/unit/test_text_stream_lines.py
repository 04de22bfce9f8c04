"""The longest-line limit of a line-based file (svctrace.parsers.text_stream): measured a block at a time, it
says what splitting the text into lines says, and a line that spans pieces is measured whole."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svctrace.errors import InputError
from svctrace.parsers.text_stream import TextStream, longer_line


def _by_splitting(data: bytes, limit: int) -> bool:
    return max(map(len, data.split(b"\n"))) > limit


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from([b"\n", b"a", b"bb", b"\xc3\xa9"]), max_size=60), st.integers(1, 16))
def test_a_longer_line_is_found_as_splitting_finds_it(pieces: list[bytes], limit: int) -> None:
    data = b"".join(pieces)
    assert longer_line(data, limit) == _by_splitting(data, limit)


@pytest.mark.parametrize(("text", "refused"), [
    (b"abc\n" * 1000, False),
    (b"x" * 10 + b"\n" + b"y" * 64 + b"\n", False),  # exactly the limit
    (b"x" * 10 + b"\n" + b"y" * 65 + b"\n", True),
    (b"y" * 65, True),  # the last line, without its newline
    (b"\n" * 5000, False),
])
def test_a_file_with_a_line_over_the_limit_is_refused(text: bytes, refused: bool) -> None:
    # pieces of 7 bytes: a long line is spread over several of them
    source = io.BytesIO(text)
    stream = TextStream(lambda n: source.read(7), "f", max_line=64)
    if refused:
        with pytest.raises(InputError, match="a line longer than"):
            stream.read_all()
    else:
        assert stream.read_all() == text.decode()
