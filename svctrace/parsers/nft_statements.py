"""An nftables rule's text (as `nft list` prints it) -> typed statements (svctrace.model.matches).

Both inputs of svctrace.parsers.nft_json (``nft -j`` JSON, rendered to text first, and knftables
transaction text) come through here, so a rule means the same whichever way it was captured. What this
module cannot type becomes an ``UnknownStatement`` (with the verdict the rule ends in, when it has one),
so the tracer follows it both ways instead of failing.
"""

from __future__ import annotations

from svctrace.model.actions import (
    DnatAction,
    Element,
    ElementPart,
    Jump,
    MapLookup,
    MarkAction,
    NotrackAction,
    Numgen,
    SetLookup,
    SetUpdate,
    SnatAction,
    Statement,
    UnknownStatement,
    Verdict,
)
from svctrace.model.addresses import ip_value, parse_prefix
from svctrace.model.matches import (
    DST,
    SRC,
    AddrMatch,
    AddrTypeMatch,
    CtStateMatch,
    IfaceMatch,
    MarkMatch,
    NfprotoMatch,
    PortMatch,
    ProtoMatch,
    UnknownMatch,
)
from svctrace.parsers.iptables_values import parse_nat_range

_PROTO_NUMBERS = {"6": "tcp", "17": "udp", "132": "sctp", "1": "icmp", "58": "ipv6-icmp"}
_BINOPS = {"and": "&", "&": "&", "or": "|", "|": "|", "xor": "^", "^": "^"}
_RELOPS = ("==", "!=", "<", ">", "<=", ">=")
_BARE_META = ("mark", "l4proto", "iifname", "oifname", "iif", "oif", "nfproto", "skuid", "skgid", "pkttype")
# Words that begin a statement: a match value can never be one of these.
_STATEMENT_WORDS = frozenset({"accept", "drop", "return", "continue", "jump", "goto", "reject", "masquerade",
                              "snat", "dnat", "counter", "update", "add", "log", "notrack", "vmap", "set",
                              "redirect", "queue", "limit", "quota", "meta", "ip", "ip6", "th", "ct", "fib",
                              "numgen"})
_VERDICT_WORDS = ("accept", "drop", "return", "continue")
MAX_NUMGEN_MOD = 1 << 32  # numgen's value is a u32


class _ParseError(ValueError):
    pass


def tokens(text: str) -> list[str]:
    """Whitespace-separated tokens; ``{ ... }`` and ``"..."`` stay one token each."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "{":
            depth, j = 0, i
            while j < n:
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            out.append(text[i:j + 1])
            i = j + 1
            continue
        if ch == '"':
            j = text.find('"', i + 1)
            j = n - 1 if j < 0 else j
            out.append(text[i:j + 1])
            i = j + 1
            continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        out.append(text[i:j])
        i = j
    return out


def _selector(toks: list[str], i: int) -> tuple[str, int]:
    """One key selector starting at toks[i]: (normalised name, next index)."""
    t = toks[i]
    nxt = toks[i + 1] if i + 1 < len(toks) else ""
    if t in ("ip", "ip6") and nxt in ("saddr", "daddr", "protocol", "nexthdr"):
        return f"{t} {nxt}", i + 2
    if t == "meta" and nxt:
        return f"meta {nxt}", i + 2
    if t in _BARE_META:
        return f"meta {t}", i + 1
    if t in ("th", "tcp", "udp", "sctp") and nxt in ("dport", "sport"):
        return f"{t} {nxt}", i + 2
    if t == "ct" and nxt in ("state", "status", "mark", "direction"):
        return f"ct {nxt}", i + 2
    if t == "fib":
        j = i + 1
        parts = []
        while j < len(toks) and toks[j] not in ("type", "oif", "oifname"):
            parts.append(toks[j])
            j += 1
        if j >= len(toks):
            raise _ParseError("fib without a result")
        return f"fib {' '.join(parts)} {toks[j]}", j + 1
    raise _ParseError(f"unknown expression {t!r}")


def _key(toks: list[str], i: int) -> tuple[tuple[str, ...], int]:
    sel, i = _selector(toks, i)
    key = [sel]
    while i < len(toks) and toks[i] == ".":
        sel, i = _selector(toks, i + 1)
        key.append(sel)
    return tuple(key), i


def _int(text: str) -> int:
    return int(text, 0)


def _items(value: str) -> list[tuple[str, str | None]]:
    """``{ a, b : goto c }`` as [(key, verdict text or None)]."""
    inner = value.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1]
    out: list[tuple[str, str | None]] = []
    for part in inner.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition(" : ")
        out.append((" ".join(key.split()), " ".join(val.split()) if sep else None))
    return out


def element_part(text: str) -> ElementPart:
    """One component of a set element: an address, prefix or address range; a number or number range; a word."""
    text = text.strip().strip('"')
    p = parse_prefix(text)
    if p is not None:
        return p
    lo, sep, hi = text.partition("-")
    if sep:
        a, b = ip_value(lo.strip()), ip_value(hi.strip())
        if a is not None and b is not None and a[0] == b[0]:
            return (a[0], a[1], b[1])
        try:
            return (_int(lo.strip()), _int(hi.strip()))
        except ValueError:
            return text
    try:
        n = _int(text)
    except ValueError:
        return _PROTO_NUMBERS.get(text, text)
    return (n, n)


def verdict_of(text: str | None) -> Verdict | Jump | None:
    """``goto service-...`` / ``drop`` / ``reject with ...`` as a verdict; None for data values."""
    if not text:
        return None
    word, _, target = text.partition(" ")
    if word in ("jump", "goto") and target:
        return Jump(target.strip(), word == "goto")
    if word in (*_VERDICT_WORDS, "reject", "queue"):
        return Verdict(word)
    return None


def element(key: str, value: str | None = None) -> Element:
    parts = tuple(element_part(p) for p in key.split(" . "))
    return Element(parts, key, verdict_of(value))


def _set_value(keys: tuple[str, ...], value: str, negated: bool) -> Match_ | SetLookup:
    if value.startswith("@"):
        return SetLookup(keys, value[1:], (), negated)
    items = [k for k, _ in _items(value)] if value.startswith("{") else [value]
    elements = tuple(element(k) for k in items)
    return SetLookup(keys, None, elements, negated)


Match_ = AddrMatch | ProtoMatch | PortMatch | MarkMatch | CtStateMatch | AddrTypeMatch | IfaceMatch | NfprotoMatch \
    | UnknownMatch


def _match(key: tuple[str, ...], binop: tuple[str, int] | None, op: str, value: str, text: str) -> Statement:
    """One relational expression as a typed match."""
    negated = op == "!="
    if len(key) != 1:
        if binop is None and op in ("==", "!="):
            return _set_value(key, value, negated)
        return UnknownMatch(text, "expression not modelled")
    sel = key[0]
    if binop is not None:
        if sel in ("meta mark", "ct mark") and binop[0] == "&" and op in ("==", "!="):
            return MarkMatch("ctmark" if sel == "ct mark" else "mark", _int(value), binop[1], negated)
        return UnknownMatch(text, "operation not modelled")
    if op not in ("==", "!="):
        if sel.endswith(("dport", "sport")) and value.isdigit():
            n = int(value)
            lo, hi = {"<": (0, n - 1), "<=": (0, n), ">": (n + 1, 65535), ">=": (n, 65535)}[op]
            return PortMatch(sel.split()[1], ((lo, hi),), False, _port_protocol(sel))
        return UnknownMatch(text, "comparison not modelled")
    if value.startswith("@"):
        return SetLookup(key, value[1:], (), negated)
    items = [k for k, _ in _items(value)] if value.startswith("{") else [value]
    if sel in ("ip saddr", "ip daddr", "ip6 saddr", "ip6 daddr"):
        prefixes = [parse_prefix(v) for v in items]
        if all(p is not None for p in prefixes):
            return AddrMatch(SRC if sel.endswith("saddr") else DST, tuple(p for p in prefixes if p is not None),
                             negated)
        return _set_value(key, value, negated)
    if sel in ("meta l4proto", "ip protocol", "ip6 nexthdr") and len(items) == 1:
        return ProtoMatch(_PROTO_NUMBERS.get(items[0], items[0]), negated)
    if sel.endswith(("dport", "sport")):
        ranges = []
        for v in items:
            part = element_part(v)
            if not (isinstance(part, tuple) and len(part) == 2):
                return UnknownMatch(text, "port not understood")
            ranges.append(part)
        return PortMatch(sel.split()[1], tuple(ranges), negated, _port_protocol(sel))
    if sel in ("meta mark", "ct mark") and len(items) == 1:
        return MarkMatch("ctmark" if sel == "ct mark" else "mark", _int(items[0]), 0xFFFFFFFF, negated)
    if sel == "ct state":
        states = frozenset(s.strip().upper() for v in items for s in v.split(","))
        return CtStateMatch(states, negated)
    if sel == "meta nfproto" and len(items) == 1 and items[0] in ("ipv4", "ipv6"):
        return NfprotoMatch(4 if items[0] == "ipv4" else 6, negated)
    if sel.startswith("fib ") and sel.endswith(" type"):
        which = sel.split()[1:-1]
        field = SRC if which[0] == "saddr" else DST
        limit = "in" if "iif" in which else "out" if "oif" in which else None
        if which[0] not in ("saddr", "daddr"):
            return UnknownMatch(text, "expression not modelled")
        return AddrTypeMatch(field, frozenset(v.upper() for v in items), negated, limit, written=text)
    if sel in ("meta iifname", "meta oifname") and len(items) == 1:
        name = items[0].strip('"')
        name = name[:-1] + "+" if name.endswith("*") else name
        return IfaceMatch("in" if sel == "meta iifname" else "out", name, negated, written=text)
    return UnknownMatch(text, "expression not modelled")


def _port_protocol(sel: str) -> str | None:
    first = sel.split()[0]
    return first if first in ("tcp", "udp", "sctp") else None


def _nat(word: str, target: str, flags: tuple[str, ...]) -> Statement:
    if word == "masquerade":
        return SnatAction(True, None, flags)
    try:
        rng = parse_nat_range(target) if target else None
    except ValueError as exc:
        if word == "snat":
            return SnatAction(False, None, flags)
        return DnatAction((), redirect=word == "redirect", flags=flags, problem=str(exc))
    if word == "snat":
        return SnatAction(False, rng, flags)
    if word == "redirect":
        return DnatAction((rng,) if rng is not None else (), redirect=True, flags=flags)
    if rng is None:
        return DnatAction((), flags=flags, problem="dnat without a destination")
    return DnatAction((rng,), flags=flags)


def _map_elements(value: str) -> tuple[str | None, tuple[Element, ...]]:
    if value.startswith("@"):
        return value[1:], ()
    return None, tuple(element(k, v) for k, v in _items(value))


def parse_statements(text: str) -> tuple[Statement, ...]:
    """The statements of one rule (``nft list`` text, comment removed)."""
    toks = tokens(text)
    out: list[Statement] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        start = i
        try:
            if t in _VERDICT_WORDS:
                out.append(Verdict(t))
                i += 1
            elif t in ("jump", "goto") and i + 1 < len(toks):
                out.append(Jump(toks[i + 1], t == "goto"))
                i += 2
            elif t == "reject":
                # `reject with icmp type ...` / `with tcp reset`: the kind does not change the verdict.
                out.append(Verdict("reject", " ".join(toks[i + 2:]) or None))
                i = len(toks)
            elif t in ("dnat", "snat", "redirect", "masquerade"):
                j = i + 1
                if j < len(toks) and toks[j] in ("ip", "ip6"):
                    j += 1
                target = ""
                if j < len(toks) and toks[j] == "to":
                    target = toks[j + 1] if j + 1 < len(toks) else ""
                    j += 2
                flags: list[str] = []
                while j < len(toks) and toks[j] in ("random", "fully-random", "persistent"):
                    flags.append(toks[j])
                    j += 1
                out.append(_nat(t, target, tuple(flags)))
                i = j
            elif t == "counter":
                j = i + 1
                while j + 1 < len(toks) and toks[j] in ("packets", "bytes"):
                    j += 2
                i = j  # counts only
            elif t == "log":
                i += 1
                while i + 1 < len(toks) and toks[i] in ("prefix", "level", "flags", "group"):
                    i += 2
            elif t in ("update", "add") and i + 2 < len(toks) and toks[i + 1].startswith("@"):
                keys = tuple(k.strip() for k in toks[i + 2].strip("{} ").split(" . ") if k.strip())
                out.append(SetUpdate(toks[i + 1][1:], keys))
                i += 3
            elif t == "notrack":
                out.append(NotrackAction())
                i += 1
            elif t == "numgen" and i + 5 < len(toks) and toks[i + 1] == "random" and toks[i + 2] == "mod":
                mod = _int(toks[i + 3])
                j = i + 4
                offset = 0
                if toks[j] == "offset":
                    offset = _int(toks[j + 1])
                    j += 2
                if toks[j] != "vmap" or not 0 < mod <= MAX_NUMGEN_MOD or offset < 0:
                    raise _ParseError("numgen not understood")
                name, elements = _map_elements(toks[j + 1])
                out.append(Numgen(mod, offset, name, elements))
                i = j + 2
            else:
                key, i = _key(toks, i)
                binop = None
                if i + 1 < len(toks) and toks[i] in _BINOPS:
                    binop = (_BINOPS[toks[i]], _int(toks[i + 1]))
                    i += 2
                if i < len(toks) and toks[i] == "vmap":
                    if binop is not None:
                        raise _ParseError("vmap on an operation")
                    name, elements = _map_elements(toks[i + 1])
                    out.append(MapLookup(key, name, elements))
                    i += 2
                    continue
                if i < len(toks) and toks[i] == "set":
                    out.append(_mangle(key, toks, i + 1, " ".join(toks[start:])))
                    i = _mangle_end(toks, i + 1)
                    continue
                op = "=="
                if i < len(toks) and toks[i] in _RELOPS:
                    op = toks[i]
                    i += 1
                if i >= len(toks) or toks[i] in _STATEMENT_WORDS:
                    raise _ParseError(f"no value after {' '.join(key)}")
                out.append(_match(key, binop, op, toks[i], " ".join(toks[start:i + 1])))
                i += 1
        except (_ParseError, ValueError, IndexError, KeyError):
            out.append(UnknownStatement(_rest(text, toks, start), _tail(toks[start + 1:])))
            break
    return tuple(out)


def _mangle_end(toks: list[str], j: int) -> int:
    if j < len(toks) and toks[j] in ("mark", "meta"):
        _, j = _selector(toks, j)
    if j + 1 < len(toks) and toks[j] in _BINOPS:
        return j + 2
    return j + 1


def _mangle(key: tuple[str, ...], toks: list[str], j: int, text: str) -> Statement:
    """``meta mark set meta mark | 0x4000`` / ``mark set 0x1``: a mark change; others are not modelled."""
    if key != ("meta mark",):
        return UnknownStatement(text, _tail(toks[j:]))
    if j < len(toks) and toks[j] in ("mark", "meta"):
        _, j = _selector(toks, j)
        if j + 1 < len(toks) and toks[j] in _BINOPS:
            op = {"&": "and", "|": "or", "^": "xor"}[_BINOPS[toks[j]]]
            return MarkAction("mark", op, _int(toks[j + 1]))
        return UnknownStatement(text, _tail(toks[j:]))
    return MarkAction("mark", "set", _int(toks[j]), 0xFFFFFFFF)


def _rest(text: str, toks: list[str], start: int) -> str:
    """The rule's text from token ``start`` on, as written."""
    pos = 0
    for tok in toks[:start]:
        pos = text.find(tok, pos) + len(tok)
    at = text.find(toks[start], pos) if start < len(toks) else len(text)
    return text[at:].strip()


def _tail(toks: list[str]) -> Verdict | Jump | None:
    """The verdict a rule's text ends in, if it ends in one."""
    if not toks:
        return None
    if len(toks) >= 2 and toks[-2] in ("jump", "goto"):
        return Jump(toks[-1], toks[-2] == "goto")
    if toks[-1] in ("accept", "drop", "reject", "return"):
        return Verdict(toks[-1])
    return None
