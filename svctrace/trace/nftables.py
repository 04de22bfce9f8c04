"""Simulate one new connection through kube-proxy's nftables table, the way the kernel walks it.

Rules are read from their ``nft list`` text (``NftRule.text``), which both the ``nft -j`` parser and the
knftables transaction-text parser produce, so a snapshot and kube-proxy's own test data trace alike.
The walk follows the same conventions as the iptables engine (svctrace.model.trace): branches with
shares, ``numgen random mod N`` splitting into N equal shares, session affinity (a dynamic set such as
``@affinity-...``) followed both ways with the "already pinned" branch at share 0, and anything the
tracer does not understand followed both ways and flagged uncertain.

Hook order (base chains of the ``ip``/``ip6 kube-proxy`` table, by hook and then priority):

* from a pod or from outside: prerouting (``filter-prerouting-pre-dnat`` -110, ``nat-prerouting`` -100);
  routing; local destination -> input (``filter-input`` 0); otherwise forward (``filter-forward`` 0) and
  postrouting (``nat-postrouting`` 100, masquerading).
* from the node: output (``filter-output-pre-dnat`` -110, ``nat-output`` -100, ``filter-output`` 0),
  postrouting; a local destination then loops through lo: prerouting and input filter chains again, but
  no nat chain (conntrack already holds the NAT bindings).

Only kube-proxy's table is walked; other tables with base chains on the same hooks are named in a warning.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from svctrace.model.nft import NftChain, NftRule, NftRuleset, NftSet, NftTable
from svctrace.model.trace import Packet, TraceOptions, TraceResult, TraceStep, format_address
from svctrace.trace.common import LOOPBACK_NETS, finish, martian, merge_branches

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PROTO_NUMBERS = {"6": "tcp", "17": "udp", "132": "sctp", "1": "icmp", "58": "ipv6-icmp"}
_BINOPS = {"and": "&", "&": "&", "or": "|", "|": "|", "xor": "^", "^": "^"}
_RELOPS = ("==", "!=", "<", ">", "<=", ">=")
_BARE_META = ("mark", "l4proto", "iifname", "oifname", "iif", "oif", "nfproto", "skuid", "skgid", "pkttype")
# Words that begin a statement: a match value can never be one of these.
_STATEMENT_WORDS = frozenset({"accept", "drop", "return", "continue", "jump", "goto", "reject", "masquerade",
                              "snat", "dnat", "counter", "update", "add", "log", "notrack", "vmap", "set",
                              "redirect", "queue", "limit", "quota", "meta", "ip", "ip6", "th", "ct", "fib",
                              "numgen"})
_INFINITE_DEPTH_NOTE = "jump not followed (loop guard)"


# --------------------------------------------------------------------------------------------------
# Parsing a rule's text into statements


def _tokens(text: str) -> list[str]:
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


@dataclass(frozen=True, slots=True)
class _Stmt:
    """One statement: ``kind`` is match | vmap | verdict | mangle | nat | update | passive | unknown."""

    kind: str
    key: tuple[str, ...] = ()  # selectors, e.g. ("ip daddr", "meta l4proto", "th dport")
    binop: tuple[str, int] | None = None  # ("&", 0x4000) in `mark and 0x4000 == 0`
    op: str = "=="
    value: str = ""  # "@set", "{ ... }", a literal, the verdict's target, the nat target
    word: str = ""  # the verdict or nat kind: accept, drop, reject, jump, goto, return, dnat, masquerade
    text: str = ""


class _ParseError(ValueError):
    pass


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
    if t == "numgen" and nxt == "random" and i + 3 < len(toks) and toks[i + 2] == "mod":
        name = f"numgen random mod {toks[i + 3]}"
        j = i + 4
        if j + 1 < len(toks) and toks[j] == "offset":
            name += f" offset {toks[j + 1]}"
            j += 2
        return name, j
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


def parse_statements(text: str) -> tuple[_Stmt, ...]:
    """The statements of one rule (``nft list`` text, comment removed); ``unknown`` for what is not read."""
    toks = _tokens(text)
    out: list[_Stmt] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        start = i
        try:
            if t in ("accept", "drop", "return", "continue"):
                out.append(_Stmt("verdict", word=t, text=t))
                i += 1
            elif t in ("jump", "goto") and i + 1 < len(toks):
                out.append(_Stmt("verdict", word=t, value=toks[i + 1], text=f"{t} {toks[i + 1]}"))
                i += 2
            elif t == "reject":
                # `reject with icmp type ...` / `with tcp reset`: the kind does not change the verdict.
                out.append(_Stmt("verdict", word="reject", text=" ".join(toks[i:])))
                i = len(toks)
            elif t in ("dnat", "snat", "redirect"):
                j = i + 1
                if j < len(toks) and toks[j] in ("ip", "ip6"):
                    j += 1
                target = ""
                if j < len(toks) and toks[j] == "to":
                    target = toks[j + 1] if j + 1 < len(toks) else ""
                    j += 2
                while j < len(toks) and toks[j] in ("random", "fully-random", "persistent"):
                    j += 1
                out.append(_Stmt("nat", word=t, value=target, text=" ".join(toks[i:j])))
                i = j
            elif t == "masquerade":
                j = i + 1
                while j < len(toks) and (toks[j] in ("random", "fully-random", "persistent")
                                         or toks[j].startswith("to")):
                    j += 1
                out.append(_Stmt("nat", word="masquerade", text=" ".join(toks[i:j])))
                i = j
            elif t == "counter":
                j = i + 1
                while j + 1 < len(toks) and toks[j] in ("packets", "bytes"):
                    j += 2
                out.append(_Stmt("passive", word="counter", text=" ".join(toks[i:j])))
                i = j
            elif t in ("update", "add") and i + 2 < len(toks) and toks[i + 1].startswith("@"):
                out.append(_Stmt("update", word=t, value=toks[i + 1][1:], key=(toks[i + 2],),
                                 text=" ".join(toks[i:i + 3])))
                i += 3
            elif t == "notrack":
                out.append(_Stmt("unknown", word="notrack", text=t))
                i += 1
            else:
                key, i = _key(toks, i)
                binop = None
                if i + 1 < len(toks) and toks[i] in _BINOPS:
                    binop = (_BINOPS[toks[i]], _int(toks[i + 1]))
                    i += 2
                if i < len(toks) and toks[i] == "vmap":
                    out.append(_Stmt("vmap", key=key, binop=binop, value=toks[i + 1],
                                     text=" ".join(toks[start:i + 2])))
                    i += 2
                    continue
                if i < len(toks) and toks[i] == "set":
                    # `mark set mark or 0x4000` / `meta mark set meta mark | 0x00004000` / `mark set 0x1`
                    j = i + 1
                    if j < len(toks) and toks[j] in ("mark", "meta"):
                        _, j = _selector(toks, j)
                    op, val = "=", 0
                    if j + 1 < len(toks) and toks[j] in _BINOPS:
                        op, val = _BINOPS[toks[j]], _int(toks[j + 1])
                        j += 2
                    elif j < len(toks):
                        val = _int(toks[j])
                        j += 1
                    out.append(_Stmt("mangle", key=key, binop=(op, val), text=" ".join(toks[start:j])))
                    i = j
                    continue
                op = "=="
                if i < len(toks) and toks[i] in _RELOPS:
                    op = toks[i]
                    i += 1
                if i >= len(toks) or toks[i] in _STATEMENT_WORDS:
                    raise _ParseError(f"no value after {' '.join(key)}")
                out.append(_Stmt("match", key=key, binop=binop, op=op, value=toks[i],
                                 text=" ".join(toks[start:i + 1])))
                i += 1
        except (_ParseError, ValueError, IndexError):
            out.append(_Stmt("unknown", text=" ".join(toks[start:])))
            break
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# Branch state


@dataclass(frozen=True, slots=True)
class _Branch:
    src: str
    dst: str
    sport: int
    dport: int
    mark: int = 0
    dnat: bool = False
    snat: str | None = None
    pinned: str | None = None  # the affinity set this client is assumed to be in
    not_pinned: frozenset[str] = frozenset()
    uncertain: bool = False
    prob: float = 1.0
    path: tuple[TraceStep, ...] = ()
    notes: tuple[str, ...] = ()

    def key(self) -> tuple[object, ...]:
        return (self.src, self.dst, self.sport, self.dport, self.mark, self.dnat, self.snat, self.pinned,
                self.not_pinned, self.uncertain)

    def step(self, step: TraceStep) -> _Branch:
        return replace(self, path=(*self.path, step))

    def note(self, text: str) -> _Branch:
        return self if text in self.notes else replace(self, notes=(*self.notes, text))


_Flow = str  # "return" | "accept" | "drop" | "reject"


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _addr_in(ip: IPAddress, spec: str) -> bool | None:
    """Is ``ip`` the address, in the prefix or in the range ``spec``? None if spec is not an address."""
    spec = spec.strip()
    try:
        if "/" in spec:
            net = ipaddress.ip_network(spec, strict=False)
            return net.version == ip.version and ip in net
        if "-" in spec:
            lo_text, hi_text = spec.split("-", 1)
            lo, hi = ipaddress.ip_address(lo_text.strip()), ipaddress.ip_address(hi_text.strip())
            return lo.version == hi.version == ip.version and int(lo) <= int(ip) <= int(hi)
        other = ipaddress.ip_address(spec)
    except ValueError:
        return None
    return other == ip


def _port_in(port: int, spec: str) -> bool | None:
    spec = spec.strip()
    try:
        if "-" in spec:
            lo, hi = spec.split("-", 1)
            return int(lo) <= port <= int(hi)
        return int(spec, 0) == port
    except ValueError:
        return None


def _set_items(value: str) -> list[tuple[str, str | None]]:
    """``{ a, b : goto c }`` as [(key, verdict or None)]."""
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


class _Context:
    def __init__(self, table: NftTable, packet: Packet, local_ips: Iterable[str], options: TraceOptions) -> None:
        self.table = table
        self.packet = packet
        self.options = options
        self.local: set[IPAddress] = set()
        for text in local_ips:
            ip = _ip(text.split("/", 1)[0])
            if ip is not None:
                self.local.add(ip)
        self.warnings: list[str] = []
        self.parsed: dict[int, tuple[_Stmt, ...]] = {}

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def is_local(self, text: str) -> bool:
        ip = _ip(text)
        if ip is None:
            return False
        return ip in self.local or any(ip.version == n.version and ip in n for n in LOOPBACK_NETS)

    def statements(self, rule: NftRule) -> tuple[_Stmt, ...]:
        got = self.parsed.get(id(rule))
        if got is None:
            got = self.parsed[id(rule)] = parse_statements(rule.text)
        return got

    def named_set(self, name: str) -> NftSet | None:
        return self.table.sets.get(name) or self.table.maps.get(name)


def _component(ctx: _Context, br: _Branch, selector: str) -> tuple[str, object] | None:
    """A key selector's value for this branch: (kind, value); None when it cannot be known."""
    pkt = ctx.packet
    if selector in ("ip saddr", "ip6 saddr"):
        return ("addr", br.src) if (selector == "ip saddr") == (pkt.family == 4) else None
    if selector in ("ip daddr", "ip6 daddr"):
        return ("addr", br.dst) if (selector == "ip daddr") == (pkt.family == 4) else None
    if selector in ("meta l4proto", "ip protocol", "ip6 nexthdr"):
        return ("proto", pkt.protocol)
    if selector in ("th dport", "th sport"):
        return ("port", br.dport if selector.endswith("dport") else br.sport)
    if selector.split()[0] in ("tcp", "udp", "sctp"):
        proto = selector.split()[0]
        if proto != pkt.protocol:
            return ("never", None)
        return ("port", br.dport if selector.endswith("dport") else br.sport)
    if selector == "meta mark":
        return ("int", br.mark)
    if selector == "ct state":
        return ("flags", "new")
    if selector == "meta nfproto":
        return ("word", "ipv6" if pkt.family == 6 else "ipv4")
    if selector.startswith("fib ") and selector.endswith(" type"):
        which = selector.split()[1]
        if which not in ("saddr", "daddr"):
            return None  # `fib saddr . iif type` and the like depend on interfaces
        addr = br.src if which == "saddr" else br.dst
        ip = _ip(addr)
        kind = "local" if ctx.is_local(addr) else (
            "multicast" if ip is not None and ip.is_multicast else "unicast")
        return ("word", kind)
    return None


def _match_component(kind: str, value: object, spec: str) -> bool | None:
    spec = spec.strip()
    if kind == "never":
        return False
    if kind == "addr":
        ip = _ip(str(value))
        return None if ip is None else _addr_in(ip, spec)
    if kind == "port":
        return _port_in(int(str(value)), spec)
    if kind == "proto":
        return _PROTO_NUMBERS.get(spec, spec) == value
    if kind == "int":
        try:
            return _int(spec) == value
        except ValueError:
            return None
    if kind == "flags":
        return str(value) in {s.strip() for s in spec.split(",")}
    if kind == "word":
        return spec == value
    return None


def _key_matches(parts: list[tuple[str, object]], elem_key: str) -> bool | None:
    pieces = [p.strip() for p in elem_key.split(" . ")]
    if len(pieces) != len(parts):
        return False
    undecided = False
    for (kind, value), piece in zip(parts, pieces, strict=True):
        hit = _match_component(kind, value, piece)
        if hit is False:
            return False
        if hit is None:
            undecided = True
    return None if undecided else True


# --------------------------------------------------------------------------------------------------
# The walk


@dataclass
class _Walker:
    ctx: _Context
    lost: float = 0.0
    states: int = field(default=0)

    @property
    def ref(self) -> str:
        return self.ctx.table.ref

    def step(self, br: _Branch, chain: NftChain, rule: NftRule | None, action: str) -> _Branch:
        if rule is None:
            return br.step(TraceStep(self.ref, chain.name, None, f"policy {chain.policy or 'accept'}", action))
        return br.step(TraceStep(self.ref, chain.name, rule.index, rule.full_text, action))

    def uncertain(self, br: _Branch, chain: NftChain, rule: NftRule, what: str) -> list[tuple[_Branch, bool]]:
        """Both ways, the not-matching one carrying the share (docs/tracer.md)."""
        no = self.step(replace(br, uncertain=True), chain, rule, f"uncertain: {what}; assumed not to match")
        yes = self.step(replace(br, uncertain=True, prob=0.0), chain, rule, f"uncertain: {what}; assumed to match")
        return [(no.note(f"assumed not to match: {what}"), False), (yes.note(f"only if it matches: {what}"), True)]

    def match(self, stmt: _Stmt, br: _Branch, chain: NftChain, rule: NftRule) -> list[tuple[_Branch, bool]]:
        """The ways a match goes: (branch, matched)."""
        parts: list[tuple[str, object]] = []
        for sel in stmt.key:
            comp = _component(self.ctx, br, sel)
            if comp is None:
                return self.uncertain(br, chain, rule, f"{stmt.text} (expression not modelled)")
            parts.append(comp)
        if stmt.binop is not None:
            if len(parts) != 1 or parts[0][0] != "int":
                return self.uncertain(br, chain, rule, f"{stmt.text} (operation not modelled)")
            op, operand = stmt.binop
            v = int(str(parts[0][1]))
            v = v & operand if op == "&" else v | operand if op == "|" else v ^ operand
            parts = [("int", v)]
        negate = stmt.op == "!="
        if stmt.op not in ("==", "!="):
            if len(parts) == 1 and parts[0][0] in ("int", "port"):
                try:
                    v, w = int(str(parts[0][1])), _int(stmt.value)
                except ValueError:
                    return self.uncertain(br, chain, rule, f"{stmt.text} (value not understood)")
                return [(br, {"<": v < w, ">": v > w, "<=": v <= w, ">=": v >= w}[stmt.op])]
            return self.uncertain(br, chain, rule, f"{stmt.text} (comparison not modelled)")
        value = stmt.value
        if value.startswith("@"):
            s = self.ctx.named_set(value[1:])
            if s is None:
                self.ctx.warn(f"{self.ref} rule {chain.name} {rule.index} uses set {value}, which is not in the table")
                return self.uncertain(br, chain, rule, f"{stmt.text} (set not in the table)")
            if "dynamic" in s.flags or "timeout" in s.flags:
                return self.dynamic(s, stmt, br, chain, rule, negate)
            items = [e.key for e in s.elements]
        elif value.startswith("{"):
            items = [k for k, _ in _set_items(value)]
        else:
            items = [value]
        results = [_key_matches(parts, item) for item in items]
        if any(r is True for r in results):
            hit: bool | None = True
        elif any(r is None for r in results):
            hit = None
        else:
            hit = False
        if hit is None:
            return self.uncertain(br, chain, rule, f"{stmt.text} (value not understood)")
        return [(br, hit != negate)]

    def dynamic(self, s: NftSet, stmt: _Stmt, br: _Branch, chain: NftChain, rule: NftRule,
                negate: bool) -> list[tuple[_Branch, bool]]:
        """A set the rules fill at run time (session affinity): which clients are in it is not known."""
        name = s.name
        if br.pinned is not None:
            return [(br, (br.pinned == name) != negate)]
        if name in br.not_pinned:
            return [(br, negate)]
        fresh = replace(br, not_pinned=br.not_pinned | {name})
        pinned = replace(br, pinned=name, prob=0.0)
        pinned = self.step(pinned, chain, rule, f"branch: client already pinned to {name}")
        pinned = pinned.note(f"only for a client already pinned to {name} (session affinity)")
        return [(fresh, negate), (pinned, not negate)]

    def run_rule(self, chain: NftChain, rule: NftRule, br: _Branch, depth: int,
                 stack: tuple[str, ...]) -> tuple[list[_Branch], list[tuple[_Branch, _Flow]]]:
        """(branches that go on to the next rule, branches that ended with a flow)."""
        cont: list[_Branch] = []
        done: list[tuple[_Branch, _Flow]] = []
        stmts = self.ctx.statements(rule)
        pending: list[tuple[_Branch, int]] = [(br, 0)]
        while pending:
            cur, i = pending.pop()
            if i >= len(stmts):
                cont.append(cur)
                continue
            stmt = stmts[i]
            if stmt.kind == "match":
                for b, hit in self.match(stmt, cur, chain, rule):
                    if hit:
                        pending.append((b, i + 1))
                    else:
                        cont.append(b)
            elif stmt.kind == "passive":
                pending.append((cur, i + 1))
            elif stmt.kind == "update":
                b = self.step(cur, chain, rule, f"record the client in @{stmt.value} (session affinity)")
                pending.append((b, i + 1))
            elif stmt.kind == "mangle":
                if stmt.key != ("meta mark",) or stmt.binop is None:
                    b = self.step(replace(cur, uncertain=True), chain, rule,
                                  f"uncertain: {stmt.text} not modelled; ignored")
                    pending.append((b.note(f"{stmt.text} not modelled"), i + 1))
                    continue
                op, v = stmt.binop
                new = {"=": v, "|": cur.mark | v, "&": cur.mark & v, "^": cur.mark ^ v}[op] & 0xFFFFFFFF
                b = self.step(replace(cur, mark=new), chain, rule, f"mark set to {new:#x}")
                pending.append((b, i + 1))
            elif stmt.kind == "nat":
                done.extend(self.nat(stmt, cur, chain, rule))
            elif stmt.kind == "verdict":
                c, d = self.verdict(stmt.word, stmt.value, cur, chain, rule, depth, stack)
                cont.extend(c)
                done.extend(d)
            elif stmt.kind == "vmap":
                c, d = self.vmap(stmt, cur, chain, rule, depth, stack)
                cont.extend(c)
                done.extend(d)
            else:
                what = f"{stmt.text} (not modelled)"
                for b, hit in self.uncertain(cur, chain, rule, what):
                    if hit:
                        # Whatever it does, the rule may end in a verdict the tracer can still see.
                        tail = re.search(r"\b(accept|drop|reject|return|(?:jump|goto) \S+)\s*$", rule.text)
                        if tail:
                            word, _, target = tail.group(1).partition(" ")
                            c, d = self.verdict(word, target, b, chain, rule, depth, stack)
                            cont.extend(c)
                            done.extend(d)
                        else:
                            cont.append(b)
                    else:
                        cont.append(b)
        return cont, done

    def nat(self, stmt: _Stmt, br: _Branch, chain: NftChain, rule: NftRule) -> list[tuple[_Branch, _Flow]]:
        if chain.type is not None and chain.type != "nat":
            self.ctx.warn(f"{stmt.word} in {chain.name}, which is not a nat chain")
        if stmt.word == "masquerade" or stmt.word == "snat":
            how = "MASQUERADE" if stmt.word == "masquerade" else f"SNAT to {stmt.value}"
            b = self.step(br, chain, rule, stmt.text)
            return [(replace(b, snat=how), "accept")]
        target = stmt.value
        host, port_text = target, ""
        if target.startswith("["):
            host, _, rest = target[1:].partition("]")
            port_text = rest.lstrip(":")
        elif target.count(":") == 1:
            host, port_text = target.split(":")
        ip = _ip(host.split("-", 1)[0])
        port = br.dport
        try:
            if port_text:
                port = int(port_text.split("-", 1)[0])
        except ValueError:
            ip = None
        if stmt.word == "redirect":
            ip = _ip("::1" if self.ctx.packet.family == 6 else "127.0.0.1")
        if ip is None:
            b = self.step(replace(br, uncertain=True), chain, rule, f"uncertain: {stmt.text} not understood")
            return [(b.note(f"{stmt.text}: destination not understood"), "accept")]
        b = self.step(br, chain, rule, f"DNAT to {format_address(str(ip), port)}")
        if "-" in host or "-" in port_text:
            b = b.note(f"{stmt.text} picks one address/port of a range; the first is shown")
        return [(replace(b, dst=str(ip), dport=port, dnat=True), "accept")]

    def verdict(self, word: str, target: str, br: _Branch, chain: NftChain, rule: NftRule, depth: int,
                stack: tuple[str, ...]) -> tuple[list[_Branch], list[tuple[_Branch, _Flow]]]:
        if word in ("jump", "goto"):
            b = self.step(br, chain, rule, word)
            sub = self.ctx.table.chain(target)
            if sub is None:
                self.ctx.warn(f"{self.ref} {chain.name} rule {rule.index} jumps to {target}, which is not in the "
                              "table (nft would have refused it); treated as a no-op")
                return [replace(b, uncertain=True)], []
            if target in stack or depth >= self.ctx.options.max_depth:
                self.ctx.warn(f"{self.ref} {chain.name}: {word} {target} not followed (loop or nesting guard)")
                return [replace(self.step(br, chain, rule, _INFINITE_DEPTH_NOTE), uncertain=True)], []
            results = self.run_chain(sub, [b], depth + 1, (*stack, target))
            cont = [x for x, flow in results if flow == "return" and word == "jump"]
            # After a goto, falling off (or returning from) the target returns to *our* caller.
            done = [(x, flow) for x, flow in results if not (flow == "return" and word == "jump")]
            return cont, done
        if word == "continue":
            return [self.step(br, chain, rule, "continue")], []
        flow = {"accept": "accept", "drop": "drop", "reject": "reject", "return": "return"}.get(word)
        if flow is None:
            return [replace(self.step(br, chain, rule, f"uncertain: verdict {word} not modelled"), uncertain=True)], []
        return [], [(self.step(br, chain, rule, word.upper() if word != "return" else "return"), flow)]

    def vmap(self, stmt: _Stmt, br: _Branch, chain: NftChain, rule: NftRule, depth: int,
             stack: tuple[str, ...]) -> tuple[list[_Branch], list[tuple[_Branch, _Flow]]]:
        value = stmt.value
        if value.startswith("@"):
            m = self.ctx.named_set(value[1:])
            if m is None:
                self.ctx.warn(f"{self.ref} {chain.name} rule {rule.index} looks up {value}, which is not in the table")
                items: list[tuple[str, str | None]] = []
            else:
                items = [(e.key, e.value) for e in m.elements]
        else:
            items = _set_items(value)
        cont: list[_Branch] = []
        done: list[tuple[_Branch, _Flow]] = []
        if len(stmt.key) == 1 and stmt.key[0].startswith("numgen random mod "):
            words = stmt.key[0].split()
            try:
                mod = int(words[3])
                offset = int(words[5]) if len(words) > 5 else 0
            except (ValueError, IndexError):
                mod = 0
            if mod <= 0:
                for b, _ in self.uncertain(br, chain, rule, f"{stmt.key[0]} not understood")[:1]:
                    cont.append(b)
                return cont, done
            for n in range(offset, offset + mod):
                share = replace(br, prob=br.prob / mod)
                found = next((v for k, v in items if _port_in(n, k)), None)
                if found is None:
                    # numgen gave a value no element has: the lookup misses and the rule does not match.
                    cont.append(self.step(share, chain, rule, f"numgen {n} (probability 1/{mod}): no element"))
                    continue
                b = self.step(share, chain, rule, f"branch: numgen {n}, probability 1/{mod} taken")
                c, d = self.map_verdict(found, b, chain, rule, depth, stack)
                cont.extend(c)
                done.extend(d)
            return cont, done
        parts: list[tuple[str, object]] = []
        for sel in stmt.key:
            comp = _component(self.ctx, br, sel)
            if comp is None:
                for b, hit in self.uncertain(br, chain, rule, f"{stmt.text} (key not modelled)"):
                    if not hit:
                        cont.append(b)
                return cont, done
            parts.append(comp)
        element = next(((k, v) for k, v in items if _key_matches(parts, k)), None)
        if element is None:
            return [br], []
        b = self.step(br, chain, rule, f"element {element[0]} : {element[1]}")
        return self.map_verdict(element[1] or "", b, chain, rule, depth, stack)

    def map_verdict(self, value: str, br: _Branch, chain: NftChain, rule: NftRule, depth: int,
                    stack: tuple[str, ...]) -> tuple[list[_Branch], list[tuple[_Branch, _Flow]]]:
        word, _, target = value.partition(" ")
        if word in ("jump", "goto"):
            sub = self.ctx.table.chain(target)
            if sub is None:
                self.ctx.warn(f"{self.ref} map element leads to {target}, which is not in the table")
                return [replace(br, uncertain=True)], []
            if target in stack or depth >= self.ctx.options.max_depth:
                return [replace(br, uncertain=True)], []
            results = self.run_chain(sub, [br], depth + 1, (*stack, target))
            cont = [x for x, flow in results if flow == "return" and word == "jump"]
            done = [(x, flow) for x, flow in results if not (flow == "return" and word == "jump")]
            return cont, done
        flow = {"accept": "accept", "drop": "drop", "reject": "reject", "return": "return"}.get(word)
        if flow is None:
            if word == "continue":
                return [br], []
            return [replace(br, uncertain=True).note(f"map verdict {value!r} not modelled")], []
        return [], [(br.step(TraceStep(self.ref, chain.name, rule.index, rule.full_text, word.upper())), flow)]

    def merge(self, branches: list[_Branch], where: str) -> list[_Branch]:
        merged, lost = merge_branches(branches, self.ctx.options.max_states, where, self.ctx.warn)
        self.lost += lost
        return merged

    def run_chain(self, chain: NftChain, branches: list[_Branch], depth: int,
                  stack: tuple[str, ...]) -> list[tuple[_Branch, _Flow]]:
        done: list[tuple[_Branch, _Flow]] = []
        active = branches
        for rule in chain.rules:
            if not active:
                break
            nxt: list[_Branch] = []
            for b in active:
                c, d = self.run_rule(chain, rule, b, depth, stack)
                nxt.extend(c)
                done.extend(d)
            active = self.merge(nxt, f"{chain.name} rule {rule.index}")
        done.extend((b, "return") for b in active)
        return done

    def hook(self, chains: list[NftChain], branches: list[_Branch]) -> tuple[list[_Branch], list[tuple[_Branch, str]]]:
        """Walk base chains of one hook in priority order: (branches going on, branches ended DROP/REJECT)."""
        ended: list[tuple[_Branch, str]] = []
        for chain in chains:
            if not branches:
                break
            if chain.type == "nat":
                # A connection is NATed once per direction: after a DNAT in an earlier nat chain of this
                # hook, the later ones are not consulted.
                skip = [b for b in branches if b.dnat and chain.hook in ("prerouting", "output")]
                branches = [b for b in branches if b not in skip]
            else:
                skip = []
            results = self.run_chain(chain, branches, 0, (chain.name,))
            go_on: list[_Branch] = list(skip)
            for b, flow in results:
                if flow == "return":
                    policy = chain.policy or "accept"
                    if chain.rules or policy != "accept":
                        b = self.step(b, chain, None, f"policy {policy}")
                    flow = "drop" if policy == "drop" else "accept"
                if flow == "accept":
                    go_on.append(b)
                else:
                    ended.append((b, flow.upper()))
            branches = self.merge(go_on, chain.name)
        return branches, ended


def base_chains(table: NftTable, hook: str) -> list[NftChain]:
    """The table's base chains on a hook, in the order the kernel runs them (priority, then name)."""
    found = [c for c in table.chains.values() if c.hook == hook]
    return sorted(found, key=lambda c: (c.priority if c.priority is not None else 0, c.name))


def _route_step(ref: str, br: _Branch, local: bool, via: str) -> _Branch:
    where = "a local address" if local else "not a local address"
    action = "route: deliver locally (input)" if local else "route: forward (forward)"
    return br.step(TraceStep("routing", via, None, f"{br.dst} is {where}", action))


def _other_tables(ruleset: NftRuleset, table: NftTable, packet: Packet) -> list[str]:
    fams = ("ip", "inet") if packet.family == 4 else ("ip6", "inet")
    out = []
    for t in ruleset.tables:
        if t is table or t.family not in fams:
            continue
        if any(c.is_base for c in t.chains.values()):
            out.append(t.ref)
    return out


def trace_nftables(ruleset: NftRuleset, packet: Packet, *, local_ips: Iterable[str] = (),
                   options: TraceOptions | None = None) -> TraceResult:
    """Trace one new connection through kube-proxy's nftables table; ``local_ips`` are the node's addresses."""
    opts = options or TraceOptions()
    table = ruleset.kube_proxy(packet.family)
    if table is None:
        from svctrace.errors import SvctraceError

        fam = "ip6" if packet.family == 6 else "ip"
        raise SvctraceError(f"no `{fam} kube-proxy` table in the nftables ruleset {ruleset.source}".rstrip(),
                            "capture `nft -j list ruleset` on a node running kube-proxy in nftables mode, "
                            "or trace an address of the other family")
    ctx = _Context(table, packet, local_ips, opts)
    walker = _Walker(ctx)
    others = _other_tables(ruleset, table, packet)
    if others:
        ctx.warn(f"only {table.ref} is traced; {', '.join(others)} also hook{'s' if len(others) == 1 else ''} "
                 "into netfilter and may change the answer")
    entry = "output" if packet.origin == "node" else "prerouting"
    if not any(c.type == "nat" for c in base_chains(table, entry)):
        ctx.warn(f"{table.ref} has no nat base chain on the {entry} hook, so no Service rule is reached")
    start = _Branch(src=packet.src, dst=packet.dst, sport=packet.sport, dport=packet.dport)
    ended: list[tuple[_Branch, str]] = []

    def run(hook: str, branches: list[_Branch], *, nat: bool = True) -> list[_Branch]:
        chains = [c for c in base_chains(table, hook) if nat or c.type != "nat"]
        go_on, stopped = walker.hook(chains, branches)
        ended.extend(stopped)
        return go_on

    def not_martian(branches: list[_Branch], via: str) -> list[_Branch]:
        kept = []
        for b in branches:
            reason = martian(b, ctx.packet.origin, ctx.is_local)
            if reason is None:
                kept.append(b)
            elif packet.family == 6 or opts.route_localnet is False:
                why = "IPv6 never routes ::1 off the node" if packet.family == 6 else "route_localnet=0"
                ended.append((b.step(TraceStep("routing", via, None, reason, f"DROP (martian; {why})")), "DROP"))
            else:
                if opts.route_localnet is None:
                    ctx.warn("assumed net.ipv4.conf.all.route_localnet=1; with 0 the kernel drops this packet "
                             "as a martian")
                kept.append(b.note(f"{reason}: needs route_localnet=1"))
        return kept

    if packet.origin == "node":
        out = run("output", [start])
        out = not_martian(out, "output")
        out = run("postrouting", out)
        local = [_route_step(table.ref, b, True, "output") for b in out if ctx.is_local(b.dst)]
        away = [b for b in out if not ctx.is_local(b.dst)]
        # Back in through lo: the filter chains see it again; nat does not (conntrack has the bindings).
        local = run("prerouting", local, nat=False)
        local = run("input", local, nat=False)
        final = away + local
    else:
        pre = run("prerouting", [start])
        pre = not_martian(pre, "prerouting")
        to_local = [_route_step(table.ref, b, True, "prerouting") for b in pre if ctx.is_local(b.dst)]
        forward = [_route_step(table.ref, b, False, "prerouting") for b in pre if not ctx.is_local(b.dst)]
        to_local = run("input", to_local)
        forward = run("forward", forward)
        forward = run("postrouting", forward)
        final = forward + to_local
    outcomes = finish(final, ended, ctx.packet.origin, ctx.is_local)
    if walker.lost > 0:
        ctx.warn(f"outcome shares sum to {1 - walker.lost:.3g}: some branches were cut (max_states)")
    return TraceResult(packet=packet, mode="nftables", outcomes=outcomes, warnings=tuple(ctx.warnings))
