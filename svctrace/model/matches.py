"""What a rule matches and what it does, as typed values shared by every proxy mode.

The parsers turn iptables options and nftables expressions into these once; the resolver, the tracer,
the checks and redaction read only these, never the rule's text. A match the parsers cannot type is an
``UnknownMatch`` that keeps its text: the tracer follows both outcomes of it and says why.

Addresses are kept as integers (``Prefix``): a 10,000-Service table holds hundreds of thousands of
them, and comparing integers is what the tracer does with them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

MARK_FULL_MASK = 0xFFFFFFFF
PortRange = tuple[int, int]

SRC = "src"
DST = "dst"


# ---------------------------------------------------------------------------------------------------
# Addresses


@dataclass(frozen=True, slots=True)
class Prefix:
    """An address or a network: the IP version, the network as an integer and its length in bits."""

    version: int  # 4 or 6
    net: int
    length: int

    @property
    def width(self) -> int:
        return 32 if self.version == 4 else 128

    @property
    def mask(self) -> int:
        width = self.width
        return ((1 << width) - 1) ^ ((1 << (width - self.length)) - 1)

    @property
    def is_host(self) -> bool:
        return self.length == self.width

    def contains(self, version: int, value: int) -> bool:
        return version == self.version and value & self.mask == self.net

    @property
    def address(self) -> str:
        """The network address alone ("10.0.0.0", "fd00::1")."""
        return _address_text(self.version, self.net)

    def __str__(self) -> str:
        """Canonical text: a host without its /32 or /128, a network as address/length."""
        return _prefix_text(self)


@lru_cache(maxsize=1 << 16)
def _address_text(version: int, net: int) -> str:
    if version == 4:
        return f"{net >> 24}.{(net >> 16) & 255}.{(net >> 8) & 255}.{net & 255}"
    return str(ipaddress.IPv6Address(net))


@lru_cache(maxsize=1 << 16)
def _prefix_text(p: Prefix) -> str:
    text = _address_text(p.version, p.net)
    return text if p.is_host else f"{text}/{p.length}"


_OCTET = r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def ipv4_value(text: str) -> int | None:
    """A dotted IPv4 address as an int (no leading zeros, as iptables and Go print them); else None.

    Read with one regular expression: the stdlib costs twice as much, and a 10,000-Service table holds
    hundreds of thousands of addresses.
    """
    m = _IPV4.fullmatch(text)
    if m is None:
        return None
    a, b, c, d = m.groups()
    return (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)


@lru_cache(maxsize=1 << 16)
def parse_prefix(text: str) -> Prefix | None:
    """``10.0.0.1``, ``10.0.0.0/8``, ``fd00::/64`` -> Prefix (host bits cleared); None if it is neither."""
    host, sep, bits = text.partition("/")
    value = ipv4_value(host)
    if value is not None:
        version, width = 4, 32
    else:
        if host.count(".") == 3 and ":" not in host:
            return None  # zero-padded or out of range: not an address iptables prints
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        value, version, width = int(ip), ip.version, ip.max_prefixlen
    if sep:
        if bits.isdigit() and int(bits) <= width:
            length = int(bits)
        else:
            got = _netmask_length(bits, version)
            if got is None:
                return None
            length = got
    else:
        length = width
    mask = ((1 << width) - 1) ^ ((1 << (width - length)) - 1)
    return Prefix(version, value & mask, length)


def _netmask_length(text: str, version: int) -> int | None:
    """A dotted netmask (``255.0.0.0``) as a prefix length; None unless it is a contiguous mask."""
    if version != 4:
        return None
    try:
        mask = int(ipaddress.IPv4Address(text))
    except ValueError:
        return None
    length = bin(mask).count("1")
    return length if mask == (0xFFFFFFFF ^ ((1 << (32 - length)) - 1)) else None


@lru_cache(maxsize=1 << 16)
def ip_value(text: str) -> tuple[int, int] | None:
    """(version, address as int) of a single address; None when ``text`` is not one."""
    p = parse_prefix(text)
    if p is None or "/" in text:
        return None
    return p.version, p.net


def canonical_ip(text: str) -> str:
    """An address or network in canonical form (the text back when it is neither)."""
    if _IPV4.fullmatch(text):
        return text
    p = parse_prefix(text)
    return str(p) if p is not None else text


# ---------------------------------------------------------------------------------------------------
# Matches. Every one can be negated; ``text`` is how the match reads in the dump, for notes.


@dataclass(frozen=True, slots=True)
class AddrMatch:
    """Source or destination in one of the prefixes (``-s``/``-d``, ``ip saddr``/``ip daddr``)."""

    field: str  # src | dst
    prefixes: tuple[Prefix, ...]
    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}-{self.field[0]} {','.join(map(str, self.prefixes))}"


@dataclass(frozen=True, slots=True)
class ProtoMatch:
    """The layer-4 protocol (``-p tcp``, ``meta l4proto tcp``); "all" matches every protocol."""

    protocol: str  # tcp | udp | sctp | icmp | ipv6-icmp | udplite | all | a number not known by name
    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}-p {self.protocol}"


@dataclass(frozen=True, slots=True)
class IfaceMatch:
    """Input or output interface (``-i``/``-o``, ``iifname``/``oifname``); ``eth+`` is a wildcard."""

    field: str  # in | out
    name: str
    negated: bool = False
    written: str = dataclasses.field(default="", compare=False)  # as nftables wrote it (``iifname "eth0"``), for notes

    @property
    def wildcard(self) -> bool:
        return self.name.endswith("+")

    def hits(self, iface: str) -> bool:
        return iface.startswith(self.name[:-1]) if self.wildcard else iface == self.name

    @property
    def text(self) -> str:
        return self.written or f"{'! ' if self.negated else ''}-{self.field[0]} {self.name}"


@dataclass(frozen=True, slots=True)
class PortMatch:
    """Source or destination port in one of the ranges; ``protocol`` is the protocol the match implies
    (``-m tcp --dport``) or None (``multiport``, nftables ``th dport``)."""

    field: str  # sport | dport | either (multiport --ports)
    ranges: tuple[PortRange, ...]
    negated: bool = False
    protocol: str | None = None

    @property
    def single(self) -> int | None:
        """The port when the match is one port, not negated (how kube-proxy writes ``--dport``)."""
        if not self.negated and len(self.ranges) == 1 and self.ranges[0][0] == self.ranges[0][1]:
            return self.ranges[0][0]
        return None

    def hits(self, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ranges)

    @property
    def text(self) -> str:
        spec = ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in self.ranges)
        return f"{'! ' if self.negated else ''}--{self.field} {spec}"


@dataclass(frozen=True, slots=True)
class ProtocolOnly:
    """A protocol match module with nothing else (``-m tcp`` alone, ``--syn``): only the protocol counts."""

    protocol: str
    syn_only: bool = False  # --syn / --tcp-flags that the first packet of a connection satisfies
    negated: bool = False

    @property
    def text(self) -> str:
        return f"-m {self.protocol}" + (" --syn" if self.syn_only else "")


@dataclass(frozen=True, slots=True)
class TcpFlagsMatch:
    """``--tcp-flags MASK COMP``: the first packet of a new connection carries SYN alone."""

    mask: frozenset[str]
    comp: frozenset[str]
    negated: bool = False

    @property
    def text(self) -> str:
        return (f"{'! ' if self.negated else ''}--tcp-flags {','.join(sorted(self.mask))} "
                f"{','.join(sorted(self.comp)) or 'NONE'}")


@dataclass(frozen=True, slots=True)
class FragmentMatch:
    """``-f``: a non-first fragment (the first packet of a connection never is one)."""

    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}-f"


@dataclass(frozen=True, slots=True)
class MarkMatch:
    """``mark & mask == value`` on the packet mark or the connection mark."""

    field: str  # mark | ctmark
    value: int
    mask: int = MARK_FULL_MASK
    negated: bool = False

    @property
    def text(self) -> str:
        module = "connmark" if self.field == "ctmark" else "mark"
        return f"-m {module} {'! ' if self.negated else ''}--mark {self.value:#x}/{self.mask:#x}"


@dataclass(frozen=True, slots=True)
class CtStateMatch:
    """Connection tracking state (``--ctstate``/``--state``, ``ct state``), upper case."""

    states: frozenset[str]
    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}--ctstate {','.join(sorted(self.states))}"


@dataclass(frozen=True, slots=True)
class CtAddrMatch:
    """An address of the conntrack tuple: ``--ctorigsrc``, ``--ctorigdst``, ``--ctreplsrc``, ``--ctrepldst``."""

    which: str  # origsrc | origdst | replsrc | repldst
    prefixes: tuple[Prefix, ...]
    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}--ct{self.which} {','.join(map(str, self.prefixes))}"


@dataclass(frozen=True, slots=True)
class CtPortMatch:
    """A port of the conntrack tuple: ``--ctorigsrcport`` and friends."""

    which: str  # origsrc | origdst | replsrc | repldst
    ranges: tuple[PortRange, ...]
    negated: bool = False

    @property
    def text(self) -> str:
        spec = ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in self.ranges)
        return f"{'! ' if self.negated else ''}--ct{self.which}port {spec}"


@dataclass(frozen=True, slots=True)
class CtProtoMatch:
    protocol: str
    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}--ctproto {self.protocol}"


@dataclass(frozen=True, slots=True)
class CtDirMatch:
    direction: str  # ORIGINAL | REPLY
    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}--ctdir {self.direction}"


@dataclass(frozen=True, slots=True)
class AddrTypeMatch:
    """The route type of the source or destination (``-m addrtype``, ``fib daddr type``): LOCAL, UNICAST..."""

    field: str  # src | dst
    types: frozenset[str]
    negated: bool = False
    limit_iface: str | None = None  # in | out: --limit-iface-in/out (types then depend on the interface)
    written: str = dataclasses.field(default="", compare=False)  # as nftables wrote it (``fib saddr . iif type local``)

    @property
    def text(self) -> str:
        if self.written:
            return self.written
        flag = "--src-type" if self.field == SRC else "--dst-type"
        limit = f" --limit-iface-{self.limit_iface}" if self.limit_iface else ""
        return f"-m addrtype {'! ' if self.negated else ''}{flag} {','.join(sorted(self.types))}{limit}"


@dataclass(frozen=True, slots=True)
class StatisticMatch:
    """``-m statistic``: a random split with ``probability`` (or every n-th packet)."""

    probability: float  # the share of new connections that match (nth mode: 1/every)
    negated: bool = False
    nth: bool = False
    raw: str = ""  # the probability as written, for display

    @property
    def text(self) -> str:
        if self.nth:
            return f"-m statistic --mode nth {'! ' if self.negated else ''}--every {round(1 / self.probability)}"
        return f"-m statistic --mode random {'! ' if self.negated else ''}--probability {self.raw}"


@dataclass(frozen=True, slots=True)
class RecentMatch:
    """``-m recent``: session affinity lists. ``op`` is rcheck | update | remove | set."""

    name: str
    op: str
    seconds: int | None = None
    reap: bool = False
    hitcount: int | None = None
    side: str = SRC  # rsource (default) | rdest
    negated: bool = False

    @property
    def text(self) -> str:
        secs = f" --seconds {self.seconds}" if self.seconds is not None else ""
        return f"-m recent {'! ' if self.negated else ''}--{self.op} --name {self.name}{secs}"


@dataclass(frozen=True, slots=True)
class IpsetMatch:
    """``-m set --match-set NAME src,dst``: the packet's fields looked up in an ipset."""

    name: str
    flags: tuple[str, ...]  # src | dst per dimension
    negated: bool = False

    @property
    def text(self) -> str:
        return f"-m set {'! ' if self.negated else ''}--match-set {self.name} {','.join(self.flags)}"


@dataclass(frozen=True, slots=True)
class PhysdevMatch:
    """``-m physdev``: bridge ports. ``option`` is is-in | is-out | is-bridged | in | out."""

    option: str
    iface: str | None = None
    negated: bool = False

    @property
    def text(self) -> str:
        value = f" {self.iface}" if self.iface else ""
        return f"-m physdev {'! ' if self.negated else ''}--physdev-{self.option}{value}"


@dataclass(frozen=True, slots=True)
class IpRangeMatch:
    field: str  # src | dst
    version: int
    first: int
    last: int
    negated: bool = False
    raw: str = ""

    @property
    def text(self) -> str:
        return f"-m iprange {'! ' if self.negated else ''}--{self.field}-range {self.raw}"


@dataclass(frozen=True, slots=True)
class PktTypeMatch:
    kind: str  # unicast | broadcast | multicast
    negated: bool = False

    @property
    def text(self) -> str:
        return f"-m pkttype {'! ' if self.negated else ''}--pkt-type {self.kind}"


@dataclass(frozen=True, slots=True)
class NfprotoMatch:
    """nftables ``meta nfproto ipv4``: the packet's IP family."""

    family: int
    negated: bool = False

    @property
    def text(self) -> str:
        return f"meta nfproto {'!= ' if self.negated else ''}ipv{self.family}"


@dataclass(frozen=True, slots=True)
class UnknownMatch:
    """A match svctrace cannot evaluate from a snapshot (an unknown module or option): kept as written."""

    text: str
    why: str = "not modelled"


Match = (AddrMatch | ProtoMatch | IfaceMatch | PortMatch | ProtocolOnly | TcpFlagsMatch | FragmentMatch
         | MarkMatch | CtStateMatch | CtAddrMatch | CtPortMatch | CtProtoMatch | CtDirMatch | AddrTypeMatch
         | StatisticMatch | RecentMatch | IpsetMatch | PhysdevMatch | IpRangeMatch | PktTypeMatch
         | NfprotoMatch | UnknownMatch)


# ---------------------------------------------------------------------------------------------------
# What a rule does besides jumping: typed target options.


@dataclass(frozen=True, slots=True)
class NatRange:
    """``--to-destination`` / ``--to-source`` / ``dnat to``: ``10.0.0.1-10.0.0.3:80-90``."""

    first_ip: str | None  # None for a ports-only range (``:80``)
    last_ip: str | None
    first_port: int | None  # None when no port is given: the packet's port is kept
    last_port: int | None

    @property
    def is_single(self) -> bool:
        """One address and at most one port: the shape kube-proxy writes."""
        return self.first_ip == self.last_ip and self.first_port == self.last_port

    def __str__(self) -> str:
        host = ""
        if self.first_ip is not None:
            host = self.first_ip if self.first_ip == self.last_ip else f"{self.first_ip}-{self.last_ip}"
        port = ""
        if self.first_port is not None:
            port = str(self.first_port) if self.first_port == self.last_port else f"{self.first_port}-{self.last_port}"
        if port:
            shown = f"[{host}]" if ":" in host else host
            return f"{shown}:{port}"
        return host


@dataclass(frozen=True, slots=True)
class DnatAction:
    """DNAT (and REDIRECT, whose address is the receiving interface's: ``redirect`` True)."""

    ranges: tuple[NatRange, ...]  # () when the destination could not be read: see ``problem``
    redirect: bool = False
    flags: tuple[str, ...] = ()  # random, persistent
    problem: str | None = None  # why the destination is not known
    raw: str = ""  # the destination as written, when it could not be read

    @property
    def first(self) -> NatRange | None:
        return self.ranges[0] if self.ranges else None


@dataclass(frozen=True, slots=True)
class SnatAction:
    """SNAT to an address, or MASQUERADE (``to`` None: the outgoing interface's address)."""

    masquerade: bool
    to: NatRange | None = None
    flags: tuple[str, ...] = ()  # random, random-fully, persistent


@dataclass(frozen=True, slots=True)
class MarkAction:
    """MARK / CONNMARK / nft ``meta mark set``: ``op`` set | xset | or | and | xor | save | restore."""

    field: str  # mark | ctmark
    op: str
    value: int = 0
    mask: int = MARK_FULL_MASK

    def apply(self, mark: int, ctmark: int) -> tuple[int, int]:
        """(mark, ctmark) after the action."""
        if self.op == "save":
            return mark, (ctmark & ~self.mask) | (mark & self.mask)
        if self.op == "restore":
            return (mark & ~self.mask) | (ctmark & self.mask), ctmark
        current = ctmark if self.field == "ctmark" else mark
        if self.op == "xset":
            new = (current & ~self.mask) ^ self.value
        elif self.op == "set":
            new = (current & ~self.mask) | self.value
        elif self.op == "or":
            new = current | self.value
        elif self.op == "and":
            new = current & self.value
        else:
            new = current ^ self.value
        new &= MARK_FULL_MASK
        return (mark, new) if self.field == "ctmark" else (new, ctmark)

    @property
    def words(self) -> str:
        prefix = "conn" if self.field == "ctmark" else ""
        if self.op in ("save", "restore"):
            return f"CONNMARK {self.op}"
        if self.op in ("set", "xset"):
            return f"{prefix}mark set to {self.value:#x}" if self.mask == MARK_FULL_MASK else \
                f"{prefix}mark set to {self.value:#x}/{self.mask:#x}"
        sym = {"or": "|=", "and": "&=", "xor": "^="}[self.op]
        return f"{prefix}mark {sym} {self.value:#x}"


@dataclass(frozen=True, slots=True)
class RejectAction:
    with_: str | None = None


@dataclass(frozen=True, slots=True)
class NotrackAction:
    """NOTRACK / ``-j CT --notrack`` / nft ``notrack``: the connection is not tracked (so not NATed)."""


@dataclass(frozen=True, slots=True)
class OtherAction:
    """A target extension's options svctrace does not interpret (LOG, CT --zone, ...), as written."""

    text: str


Action = DnatAction | SnatAction | MarkAction | RejectAction | NotrackAction | OtherAction


# ---------------------------------------------------------------------------------------------------
# What a rule does to the walk: verdicts, jumps and (nftables) map lookups. An iptables rule is its
# matches followed by one of these or an Action; an nftables rule is any sequence of matches, actions
# and these, evaluated left to right.


@dataclass(frozen=True, slots=True)
class Verdict:
    """accept | drop | reject | return | continue | queue (iptables ACCEPT, DROP, REJECT, RETURN in lower case)."""

    word: str
    reject_with: str | None = None


@dataclass(frozen=True, slots=True)
class Jump:
    """Jump to a chain (or go to it: falling off the end then returns to the caller's caller)."""

    chain: str
    goto: bool = False


# An element of an nftables set or map key, per component of a concatenation: an address prefix, an
# address range (version, first, last), a number range (ports, marks) or a word (protocol, fib type).
ElementPart = Prefix | tuple[int, int, int] | tuple[int, int] | str


@dataclass(frozen=True, slots=True)
class Element:
    """One set element, or one map element with the verdict it maps to."""

    key: tuple[ElementPart, ...]
    text: str  # as `nft list` prints the key
    verdict: Verdict | Jump | None = None  # maps only


@dataclass(frozen=True, slots=True)
class SetLookup:
    """nftables ``KEY @set`` / ``KEY { ... }``: is the packet's key in the set? (``!=``: not in it)."""

    keys: tuple[str, ...]  # selectors: "ip daddr", "meta l4proto", "th dport", "ip saddr", ...
    set_name: str | None  # a named set (its elements are in the table), or None: ``elements`` below
    elements: tuple[Element, ...] = ()
    negated: bool = False

    @property
    def text(self) -> str:
        what = f"@{self.set_name}" if self.set_name else "{ " + ", ".join(e.text for e in self.elements) + " }"
        return f"{' . '.join(self.keys)} {'!= ' if self.negated else ''}{what}"


@dataclass(frozen=True, slots=True)
class MapLookup:
    """nftables ``KEY vmap @map`` / ``KEY vmap { k : verdict, ... }``: the verdict of the matching element."""

    keys: tuple[str, ...]
    map_name: str | None
    elements: tuple[Element, ...] = ()

    @property
    def text(self) -> str:
        what = f"@{self.map_name}" if self.map_name else \
            "{ " + ", ".join(f"{e.text} : {_verdict_text(e.verdict)}" for e in self.elements) + " }"
        return f"{' . '.join(self.keys)} vmap {what}"


@dataclass(frozen=True, slots=True)
class Numgen:
    """nftables ``numgen random mod N [offset K] vmap { ... }``: a random number picks the element."""

    mod: int
    offset: int
    map_name: str | None
    elements: tuple[Element, ...] = ()

    @property
    def text(self) -> str:
        off = f" offset {self.offset}" if self.offset else ""
        return f"numgen random mod {self.mod}{off} vmap ..."


@dataclass(frozen=True, slots=True)
class SetUpdate:
    """nftables ``update @set { KEY }`` / ``add @set ...``: records the client (session affinity)."""

    set_name: str
    keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UnknownStatement:
    """An nftables statement svctrace cannot evaluate; ``tail`` is the verdict the rule ends in, if any."""

    text: str
    tail: Verdict | Jump | None = None


def _verdict_text(v: Verdict | Jump | None) -> str:
    if v is None:
        return "?"
    if isinstance(v, Jump):
        return f"{'goto' if v.goto else 'jump'} {v.chain}"
    return v.word


Statement = Match | Action | Verdict | Jump | SetLookup | MapLookup | Numgen | SetUpdate | UnknownStatement
