"""Bytes read piece by piece as UTF-8 text, with the errors a snapshot's files get (pure: the caller reads).

A file or an API answer is never decoded whole: ``TextStream.read`` hands out text a piece at a time and
can skip pieces that are nothing but JSON whitespace without decoding them (a compressed tarball can
unpack to gigabytes of spaces; those cost a byte count, not a Python loop).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

from svctrace.errors import InputError
from svctrace.parsers.limits import mib

CHUNK = 1 << 20
_JSON_WS = b" \t\r\n"

_HINT_LIMITS = "check that this is the right file (see the limits in docs/snapshot.md)"
_HINT_UTF16 = ("PowerShell's `>` writes UTF-16; save it with `| Out-File -Encoding utf8` or make it on the node "
               "with a POSIX shell")
_HINT_UTF8 = ("svctrace reads the text kubectl, iptables-save and ip print; copy the file again without "
              "converting it")


def longer_line(data: bytes, limit: int) -> bool:
    """Whether a line of ``data`` (a piece between newlines, or its ends) is longer than ``limit`` bytes.

    Such a line holds a whole block of ``limit // 2 + 1`` bytes, counted from the start, so a piece of text
    costs one search for a newline per block (splitting a 48 MB dump into lines to measure them was a third of
    reading it); only a block without a newline is measured, as its whole line. Linear, where a pattern of
    ``limit`` characters is not."""
    block = limit // 2 + 1
    at = 0
    while at < len(data):
        if data.find(b"\n", at, at + block) >= 0:
            at += block
            continue
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at + block)
        end = len(data) if end < 0 else end
        if end - start > limit:
            return True
        at = end + 1
    return False


class TextStream:
    """UTF-8 text (a leading BOM dropped) from ``read(n) -> bytes``; refuses UTF-16 and more than ``limit`` bytes,
    and, for line-based files, more than ``max_lines`` lines or a line longer than ``max_line`` bytes."""

    def __init__(self, read: Callable[[int], bytes], where: str, *, limit: int | None = None,
                 what: str = "the file", max_lines: int | None = None, max_line: int | None = None) -> None:
        self._read = read
        self.where = where
        self._limit = limit
        self._what = what
        self._max_lines = max_lines
        self._max_line = max_line
        self._run = 0  # bytes since the last newline
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._first = True
        self._eof = False
        self.bytes_read = 0
        self._lines = 0  # newlines in the bytes before the current piece, for error messages

    def _raw(self, n: int) -> bytes:
        data = self._read(n)
        if self._first and data:
            self._first = False
            if data.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise InputError("the file is UTF-16, not UTF-8", _HINT_UTF16, path=self.where)
        self.bytes_read += len(data)
        if self._limit is not None and self.bytes_read > self._limit:
            raise InputError(f"{self._what} is bigger than {mib(self._limit)}; refused", _HINT_LIMITS,
                             path=self.where)
        if self._max_lines is not None and self._lines + data.count(b"\n") > self._max_lines:
            raise InputError(f"{self._what} has more than {self._max_lines:,} lines; refused", _HINT_LIMITS,
                             path=self.where)
        if self._max_line is not None:
            first = data.find(b"\n")
            head = len(data) if first < 0 else first
            if self._run + head > self._max_line or longer_line(data, self._max_line):
                raise InputError(f"{self._what} has a line longer than {mib(self._max_line or 0)}; refused",
                                 _HINT_LIMITS, path=self.where)
            self._run = self._run + len(data) if first < 0 else len(data) - data.rfind(b"\n") - 1
        return data

    def _decode(self, data: bytes, final: bool) -> str:
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            line = self._lines + data[: exc.start].count(b"\n") + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            raise InputError(f"not UTF-8 text (column {column})", _HINT_UTF8, path=self.where, line=line) from None
        self._lines += data.count(b"\n")
        return text

    def read(self, n: int = CHUNK, *, skip_blank: Callable[[bytes], None] | None = None) -> str:
        """Up to about ``n`` characters ("" at the end). With ``skip_blank``, pieces of JSON whitespace only are
        passed to it undecoded and not returned (the caller keeps its line count)."""
        while not self._eof:
            data = self._raw(n)
            if not data:
                self._eof = True
                return self._decode(b"", True)
            if skip_blank is not None and not data.translate(None, _JSON_WS) and not self._decoder.getstate()[0]:
                self._lines += data.count(b"\n")
                skip_blank(data)
                continue
            text = self._decode(data, False)
            if text:
                return text
        return ""

    def read_all(self) -> str:
        """The rest of the text at once (for files read whole, within their limit)."""
        parts: list[str] = []
        while True:
            piece = self.read(CHUNK)
            if not piece:
                return "".join(parts)
            parts.append(piece)

