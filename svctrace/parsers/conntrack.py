"""``conntrack -L`` text (a snapshot's node/conntrack.txt) into ConntrackEntry values (pure)."""

from __future__ import annotations

from svctrace.errors import InputError
from svctrace.model.conntrack import ConntrackEntry

_FAMILIES = {"ipv4": 4, "ipv6": 6}
_KEYS = ("src", "dst", "sport", "dport")


def parse_conntrack(text: str, source: str) -> tuple[ConntrackEntry, ...]:
    """Every flow `conntrack -L` (or `-o extended`) printed; the tool's summary line is skipped."""
    out: list[ConntrackEntry] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0] == "conntrack" or line.lstrip().startswith("#"):
            continue
        try:
            out.append(_entry(words))
        except (ValueError, IndexError):
            raise InputError(f"not a `conntrack -L` line: {line.strip()[:80]!r}",
                             "the file should hold what `conntrack -L` prints; fill it again on the node",
                             path=source, line=lineno) from None
    return tuple(out)


def _entry(words: list[str]) -> ConntrackEntry:
    family = 4
    if words[0] in _FAMILIES:  # `-o extended` starts with the layer-3 protocol and its number
        family = _FAMILIES[words[0]]
        words = words[2:]
    protocol = words[0].lower()
    if not words[1].isdigit():  # the protocol number: a line without one is not conntrack's
        raise ValueError("no protocol number")
    rest = words[2:]
    timeout: int | None = None
    if rest and rest[0].isdigit() and len(rest[0]) <= 20:
        timeout = int(rest[0])
        rest = rest[1:]
    state = rest[0] if rest and "=" not in rest[0] and not rest[0].startswith("[") else None
    if state is not None:
        rest = rest[1:]
    tuples: list[dict[str, str]] = [{}, {}]
    flags: list[str] = []
    extra: dict[str, str] = {}
    side = 0
    for word in rest:
        if word.startswith("[") and word.endswith("]"):
            flags.append(word[1:-1])
            continue
        key, eq, value = word.partition("=")
        if not eq:
            continue
        if key in _KEYS:
            if key in tuples[side]:
                side += 1  # the second src= starts the reply tuple
            tuples[side][key] = value
        else:
            extra[key] = value
    orig, reply = tuples[0], tuples[1] if side else {}
    for t in (orig, reply):
        # Both tuples name both ends; a line cut short (or edited) may have lost one.
        if not t.get("src") or not t.get("dst"):
            raise ValueError("no original and reply tuples with src= and dst=")
    if ":" in orig["src"]:
        family = 6
    return ConntrackEntry(
        protocol=protocol, src=orig["src"], dst=orig["dst"], sport=_port(orig.get("sport")),
        dport=_port(orig.get("dport")), reply_src=reply["src"], reply_dst=reply["dst"],
        reply_sport=_port(reply.get("sport")), reply_dport=_port(reply.get("dport")), family=family,
        timeout=timeout, state=state, flags=tuple(flags),
        mark=int(extra["mark"]) if extra.get("mark", "").isdigit() else None,
        zone=int(extra["zone"]) if extra.get("zone", "").isdigit() else None)


def _port(value: str | None) -> int | None:
    if value is None:
        return None
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {value} out of range")
    return port
