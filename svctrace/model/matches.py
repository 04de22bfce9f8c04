"""What a rule matches and what it does, as typed values shared by every proxy mode.

The parsers turn iptables options and nftables expressions into these once; the resolver, the tracer,
the checks and redaction read only these, never the rule's text. A match the parsers cannot type is an
``UnknownMatch`` that keeps its text: the tracer follows both outcomes of it and says why.

Addresses are kept as integers (svctrace.model.addresses); what a rule does besides matching is in
svctrace.model.actions.
"""

from __future__ import annotations

import dataclasses

from svctrace.model.addresses import Prefix
from svctrace.record import record

MARK_FULL_MASK = 0xFFFFFFFF
PortRange = tuple[int, int]

SRC = "src"
DST = "dst"


# ---------------------------------------------------------------------------------------------------
# Matches. Every one can be negated; ``text`` is how the match reads in the dump, for notes.


@record
class AddrMatch:
    """Source or destination in one of the prefixes (``-s``/``-d``, ``ip saddr``/``ip daddr``)."""

    field: str  # src | dst
    prefixes: tuple[Prefix, ...]
    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}-{self.field[0]} {','.join(map(str, self.prefixes))}"


@record
class ProtoMatch:
    """The layer-4 protocol (``-p tcp``, ``meta l4proto tcp``); "all" matches every protocol."""

    protocol: str  # tcp | udp | sctp | icmp | ipv6-icmp | udplite | all | a number not known by name
    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}-p {self.protocol}"


@record
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


@record
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


@record
class ProtocolOnly:
    """A protocol match module with nothing else (``-m tcp`` alone, ``--syn``): only the protocol counts."""

    protocol: str
    syn_only: bool = False  # --syn / --tcp-flags that the first packet of a connection satisfies
    negated: bool = False

    @property
    def text(self) -> str:
        return f"-m {self.protocol}" + (" --syn" if self.syn_only else "")


@record
class TcpFlagsMatch:
    """``--tcp-flags MASK COMP``: the first packet of a new connection carries SYN alone."""

    mask: frozenset[str]
    comp: frozenset[str]
    negated: bool = False

    @property
    def text(self) -> str:
        return (f"{'! ' if self.negated else ''}--tcp-flags {','.join(sorted(self.mask))} "
                f"{','.join(sorted(self.comp)) or 'NONE'}")


@record
class FragmentMatch:
    """``-f``: a non-first fragment (the first packet of a connection never is one)."""

    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}-f"


@record
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


@record
class CtStateMatch:
    """Connection tracking state (``--ctstate``/``--state``, ``ct state``), upper case."""

    states: frozenset[str]
    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}--ctstate {','.join(sorted(self.states))}"


@record
class CtAddrMatch:
    """An address of the conntrack tuple: ``--ctorigsrc``, ``--ctorigdst``, ``--ctreplsrc``, ``--ctrepldst``."""

    which: str  # origsrc | origdst | replsrc | repldst
    prefixes: tuple[Prefix, ...]
    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}--ct{self.which} {','.join(map(str, self.prefixes))}"


@record
class CtPortMatch:
    """A port of the conntrack tuple: ``--ctorigsrcport`` and friends."""

    which: str  # origsrc | origdst | replsrc | repldst
    ranges: tuple[PortRange, ...]
    negated: bool = False

    @property
    def text(self) -> str:
        spec = ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in self.ranges)
        return f"{'! ' if self.negated else ''}--ct{self.which}port {spec}"


@record
class CtProtoMatch:
    protocol: str
    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}--ctproto {self.protocol}"


@record
class CtDirMatch:
    direction: str  # ORIGINAL | REPLY
    negated: bool = False

    @property
    def text(self) -> str:
        return f"{'! ' if self.negated else ''}--ctdir {self.direction}"


@record
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


@record
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


@record
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


@record
class IpsetMatch:
    """``-m set --match-set NAME src,dst``: the packet's fields looked up in an ipset."""

    name: str
    flags: tuple[str, ...]  # src | dst per dimension
    negated: bool = False

    @property
    def text(self) -> str:
        return f"-m set {'! ' if self.negated else ''}--match-set {self.name} {','.join(self.flags)}"


@record
class PhysdevMatch:
    """``-m physdev``: bridge ports. ``option`` is is-in | is-out | is-bridged | in | out."""

    option: str
    iface: str | None = None
    negated: bool = False

    @property
    def text(self) -> str:
        value = f" {self.iface}" if self.iface else ""
        return f"-m physdev {'! ' if self.negated else ''}--physdev-{self.option}{value}"


@record
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


@record
class PktTypeMatch:
    kind: str  # unicast | broadcast | multicast
    negated: bool = False

    @property
    def text(self) -> str:
        return f"-m pkttype {'! ' if self.negated else ''}--pkt-type {self.kind}"


@record
class NfprotoMatch:
    """nftables ``meta nfproto ipv4``: the packet's IP family."""

    family: int
    negated: bool = False

    @property
    def text(self) -> str:
        return f"meta nfproto {'!= ' if self.negated else ''}ipv{self.family}"


@record
class UnknownMatch:
    """A match svctrace cannot evaluate from a snapshot (an unknown module or option): kept as written."""

    text: str
    why: str = "not modelled"


Match = (AddrMatch | ProtoMatch | IfaceMatch | PortMatch | ProtocolOnly | TcpFlagsMatch | FragmentMatch
         | MarkMatch | CtStateMatch | CtAddrMatch | CtPortMatch | CtProtoMatch | CtDirMatch | AddrTypeMatch
         | StatisticMatch | RecentMatch | IpsetMatch | PhysdevMatch | IpRangeMatch | PktTypeMatch
         | NfprotoMatch | UnknownMatch)
