"""IPVS mode's dataplane: virtual servers with their real servers, and the ipsets kube-proxy keeps beside them.

Both ``ipvsadm -Sn`` / ``ipset save`` text and live netlink dumps become these types, so nothing downstream
can tell a snapshot from a live node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from typing import Any

from svctrace.model.addresses import ip_value, parse_prefix
from svctrace.record import record

# ipvsadm's forwarding methods, by the option it prints and by the kernel's IP_VS_CONN_F_* value.
FORWARD_MASQ = "masq"  # -m: NAT; the only method kube-proxy uses
FORWARD_ROUTE = "route"  # -g: direct routing ("gatewaying")
FORWARD_TUNNEL = "tunnel"  # -i: IP-in-IP
FORWARD_LOCAL = "local"  # the kernel's IP_VS_CONN_F_LOCALNODE; ipvsadm shows it as "Local"
FORWARD_BYPASS = "bypass"

# Schedulers whose connection split follows the weights alone (round robin over weight).
WEIGHT_SCHEDULERS = ("rr", "wrr")


@record
class VirtualServer:
    """An IPVS service: where clients connect (protocol, address, port) or a firewall mark."""

    protocol: str  # TCP | UDP | SCTP; "" for a firewall-mark service
    address: str  # "" for a firewall-mark service
    port: int
    scheduler: str = "wlc"
    persistent_timeout: int | None = None  # seconds; None: not persistent (no session affinity)
    flags: tuple[str, ...] = ()  # scheduler flags and other options as written (e.g. "-b sh-port", "-M 24")
    fwmark: int | None = None

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.protocol, self.address, self.port)

    @property
    def endpoint(self) -> str:
        if self.fwmark is not None and not self.address:
            return f"fwmark {self.fwmark}"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def label(self) -> str:
        """How svctrace names it: "TCP 10.96.0.1:443 rr"."""
        head = f"FWM {self.fwmark}" if self.fwmark is not None and not self.address else \
            f"{self.protocol} {self.endpoint}"
        return f"{head} {self.scheduler}"


@record
class RealServer:
    """A backend of a virtual server."""

    address: str
    port: int
    weight: int = 1
    forward: str = FORWARD_MASQ
    active_conns: int | None = None  # None: not known (ipvsadm -S does not print it)
    inactive_conns: int | None = None
    options: tuple[str, ...] = ()  # options the parser does not interpret, kept as written

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@record
class IpvsTable:
    services: tuple[tuple[VirtualServer, tuple[RealServer, ...]], ...] = ()
    source: str = ""
    _index: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def find(self, protocol: str, address: str, port: int) -> tuple[VirtualServer, tuple[RealServer, ...]] | None:
        """The virtual server for a protocol, address and port, with its real servers (indexed once)."""
        index = self._index.get("key")
        if index is None:
            index = self._index["key"] = {}
            for vs, reals in self.services:
                index.setdefault((vs.protocol, vs.address.lower(), vs.port), (vs, reals))
        return index.get((protocol.upper(), address.lower(), port))

    def on_port(self, protocol: str, port: int) -> tuple[VirtualServer, ...]:
        """Every virtual server of a protocol and port (a NodePort's, on each node address)."""
        index = self._index.get("port")
        if index is None:
            index = self._index["port"] = {}
            for vs, _ in self.services:
                index.setdefault((vs.protocol, vs.port), []).append(vs)
        return tuple(index.get((protocol.upper(), port), ()))


@record
class IpSet:
    """One ipset: its type, its create options and its members as ``ipset save`` writes them."""

    name: str
    type: str  # hash:ip,port | bitmap:port | ...
    members: tuple[str, ...] = ()  # "10.96.0.1,tcp:443", "30380"
    options: tuple[str, ...] = ()  # create options as written: ("family", "inet", "hashsize", "1024", ...)
    comments: tuple[tuple[str, str], ...] = ()  # (member, comment) for members that carry one
    member_options: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (member, other options as written)

    @property
    def family(self) -> int | None:
        """4 or 6 from the "family" option; None for types without one (bitmap:port)."""
        opts = list(self.options)
        if "family" in opts:
            i = opts.index("family")
            if i + 1 < len(opts):
                return 6 if opts[i + 1] == "inet6" else 4
        return None

    def has(self, member: str) -> bool:
        return member.lower() in self.lowered

    @property
    def lowered(self) -> frozenset[str]:
        """The members in lower case (built once: kube-proxy's sets hold one member per Service)."""
        return _lowered(self.members)


_LOWERED: dict[int, tuple[tuple[str, ...], frozenset[str]]] = {}
_NORMALIZED: dict[tuple[int, int], tuple[tuple[str, ...], frozenset[str]]] = {}


def _normalized(members: tuple[str, ...], normalize: Callable[[str], str]) -> frozenset[str]:
    key = (id(members), id(normalize))
    got = _NORMALIZED.get(key)
    if got is None or got[0] is not members:
        if len(_NORMALIZED) > 4096:
            _NORMALIZED.clear()
        got = _NORMALIZED[key] = (members, frozenset(normalize(m) for m in members))
    return got[1]


def _lowered(members: tuple[str, ...]) -> frozenset[str]:
    got = _LOWERED.get(id(members))
    if got is None or got[0] is not members:
        if len(_LOWERED) > 4096:
            _LOWERED.clear()
        got = _LOWERED[id(members)] = (members, frozenset(m.lower() for m in members))
    return got[1]


@record
class IpSets:
    sets: tuple[IpSet, ...] = ()
    source: str = ""

    def get(self, name: str) -> IpSet | None:
        for s in self.sets:
            if s.name == name:
                return s
        return None

    def members(self, name: str, normalize: Callable[[str], str]) -> frozenset[str]:
        """A set's members, each normalized by ``normalize`` (built once per set and function)."""
        s = self.get(name)
        if s is None:
            return frozenset()
        return _normalized(s.members, normalize)


# ---------------------------------------------------------------------------------------------------
# One ipset member, typed: what a rule's ``-m set --match-set NAME dst,dst`` compares with a packet.

_PORT_PROTOCOLS = frozenset({"tcp", "udp", "sctp", "udplite", "icmp", "icmpv6"})


@record
class PortSpan:
    """A port or a port range, for one protocol (None: a bitmap:port member, any protocol)."""

    protocol: str | None
    low: int
    high: int


@record
class AddrSpan:
    """An address, a network or an address range, as the inclusive span of integers it covers."""

    version: int
    low: int
    high: int


IpsetPart = PortSpan | AddrSpan


def ipset_entry(member: str) -> tuple[IpsetPart | None, ...]:
    """The parts of a member as ``ipset save`` writes them ("10.96.0.1,tcp:443", "10.0.0.0/8", "30000-30010");
    a part that is neither an address nor a port is None (it matches nothing)."""
    return tuple(_part(p.strip()) for p in member.split(","))


def _part(text: str) -> IpsetPart | None:
    proto, colon, rest = text.partition(":")
    if colon and proto.lower() in _PORT_PROTOCOLS:
        return _ports(rest, proto.lower())
    if not colon and (text.isdigit() or ("-" in text and text.replace("-", "").isdigit())):
        return _ports(text, None)
    if "-" in text and "/" not in text:
        first, _, last = text.partition("-")
        lo, hi = ip_value(first), ip_value(last)
        if lo is None or hi is None or lo[0] != hi[0]:
            return None
        return AddrSpan(lo[0], lo[1], hi[1])
    net = parse_prefix(text)
    if net is None:
        return None
    return AddrSpan(net.version, net.net, net.net | ((1 << (net.width - net.length)) - 1))


def _ports(text: str, protocol: str | None) -> PortSpan | None:
    first, dash, last = text.partition("-")
    if not first.isdigit() or (dash and not last.isdigit()):
        return None
    low = int(first)
    high = int(last) if dash else low
    return PortSpan(protocol, low, high) if low <= high <= 65535 else None
