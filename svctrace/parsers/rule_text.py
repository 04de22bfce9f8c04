"""Where the free text sits in a line of rules: ``--comment`` values and quoted strings (pure).

What rewrites a rule's text without changing its meaning (svctrace.redact) finds the comments here, the
way iptables-restore and ipset read them: a double-quoted value with backslash escapes, or one word.
"""

from __future__ import annotations

_COMMENT = "--comment "


def _quoted_end(line: str, start: int) -> int:
    """The index after the closing quote of the string opening at ``start`` (the line's end if unclosed)."""
    i = start + 1
    n = len(line)
    while i < n:
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    return n


def comment_spans(line: str) -> list[tuple[int, int]]:
    """(start, end) of each ``--comment`` value in an iptables-save line, its quotes included."""
    spans: list[tuple[int, int]] = []
    pos = line.find(_COMMENT)
    while pos >= 0:
        start = pos + len(_COMMENT)
        if start < len(line) and line[start] == '"':
            end = _quoted_end(line, start)
        else:
            end = line.find(" ", start)
            end = len(line) if end < 0 else end
        if end > start:
            spans.append((start, end))
        pos = line.find(_COMMENT, end)
    return spans


def quoted_spans(line: str) -> list[tuple[int, int]]:
    """(start, end) of each double-quoted string in a line (ipset and ipvsadm comments), quotes included."""
    spans: list[tuple[int, int]] = []
    pos = line.find('"')
    while pos >= 0:
        end = _quoted_end(line, pos)
        spans.append((pos, end))
        pos = line.find('"', end)
    return spans


def unquote(value: str) -> tuple[str, bool]:
    """A comment value's text and whether it was quoted."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        i = 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                out.append(inner[i + 1])
                i += 2
                continue
            out.append(inner[i])
            i += 1
        return "".join(out), True
    return value, False


def quote(text: str, quoted: bool) -> str:
    """``text`` written back as a comment value: quoted (escaping quotes and backslashes) when it was, or must be."""
    if quoted or not text or any(c.isspace() or c == '"' for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text
