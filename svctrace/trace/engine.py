"""The tracer's engine, shared by every proxy mode: branches, and what a typed match says of a branch.

A *branch* is the packet plus everything the rules did to it (mark, DNAT, SNAT, session-affinity
assumptions) and the share of new connections that take it. A random match (``-m statistic``, ``numgen``)
splits a branch into shares. A match the snapshot cannot decide (an unknown module, ``physdev`` without
bridge knowledge, an ipset whose members were not collected) splits it into "if it matches" and "if it
does not": both keep the share they had, each records the assumption it rests on, and outcomes that
rest on an assumption say so and have no known probability (svctrace.model.trace). Branches that reach
the same state are merged, and so are the two sides of an assumption when it changed nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, TypeVar

from svctrace.model import matches as mt
from svctrace.model.actions import Element, SetLookup
from svctrace.model.addresses import Prefix, ip_value
from svctrace.model.ipvs import AddrSpan, IpsetPart, PortSpan, ipset_entry
from svctrace.model.trace import Packet, TraceOptions, TraceStep
from svctrace.record import record

LOOPBACK = (Prefix(4, 0x7F000000, 8), Prefix(6, 1, 128))
_ADDRTYPE_UNDECIDABLE = frozenset({"UNSPEC", "ANYCAST", "BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW", "NAT",
                                   "XRESOLVE"})

Assumption = tuple[str, bool]  # (what could not be decided, whether this branch assumes it matched)


@record
class Branch:
    src: str
    dst: str
    sport: int
    dport: int
    in_iface: str | None = None
    out_iface: str | None = None
    mark: int = 0
    ctmark: int = 0
    dnat: bool = False
    snat: str | None = None  # how the source is rewritten: "MASQUERADE" or "SNAT to X"
    untracked: bool = False
    pinned: str | None = None  # the affinity list/set this client is assumed to be in
    not_pinned: frozenset[str] = frozenset()
    assumed: tuple[Assumption, ...] = ()  # what this branch rests on that the snapshot cannot tell
    loose: bool = False  # a step was not modelled (a guard cut it, a target is unknown)
    prob: float = 1.0  # the share of new connections, given ``assumed``
    path: tuple[TraceStep, ...] = ()
    notes: tuple[str, ...] = ()
    via: str | None = None  # DNATed by a chain the (partial) dump does not show: the address is not known
    # (address, is it the node's) assumed by an undecided addrtype match, so routing agrees with it
    local_assumed: tuple[tuple[str, bool], ...] = ()

    @property
    def uncertain(self) -> bool:
        return bool(self.assumed) or self.loose

    def state(self) -> tuple[object, ...]:
        """Everything later rules can see (what merging compares), but the assumptions."""
        return (self.src, self.dst, self.sport, self.dport, self.in_iface, self.out_iface, self.mark, self.ctmark,
                self.dnat, self.snat, self.untracked, self.pinned, self.not_pinned, self.loose, self.via,
                self.local_assumed)

    def step(self, step: TraceStep) -> Branch:
        return replace(self, path=(*self.path, step))

    def note(self, text: str) -> Branch:
        return self if text in self.notes else replace(self, notes=(*self.notes, text))

    def assume(self, what: str, matched: bool) -> Branch:
        if (what, matched) in self.assumed:
            return self
        return replace(self, assumed=(*self.assumed, (what, matched)))


@record
class Alt:
    """One way a random or undecidable match can go."""

    matched: bool
    factor: float = 1.0  # multiplies the branch's share
    note: str | None = None
    assume: Assumption | None = None
    pin: str | None = None  # assume the client is in this affinity list
    unpin: str | None = None  # assume it is not
    action: str | None = None  # a path step for the rule, in words
    local: tuple[str, bool] | None = None  # the branch assumes this address is (or is not) the node's


def undecided(what: str, local: str | None = None, negated: bool = False) -> list[Alt]:
    """Both ways, each resting on its assumption; ``local``: the address whose being the node's is undecided."""
    return [Alt(matched=False, assume=(what, False), action=f"uncertain: {what}; if it does not match",
                local=(local, negated) if local is not None else None),
            Alt(matched=True, assume=(what, True), action=f"uncertain: {what}; if it matches",
                local=(local, not negated) if local is not None else None)]


# ---------------------------------------------------------------------------------------------------
# The node as the matches see it


@dataclass
class NodeView:
    """What matches may consult besides the branch: the node, the packet and the options."""

    packet: Packet
    options: TraceOptions
    local_ips: Iterable[str] = ()
    ipsets: Mapping[str, Collection[str]] | None = None  # None: members not collected
    bridge_ports: Mapping[str, str] | None = None  # interface -> its bridge; None: not collected
    named_set: Callable[[str], tuple[tuple[Element, ...], bool] | None] = field(default=lambda name: None)
    warnings: list[str] = field(default_factory=list)
    local: set[tuple[int, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        for text in self.local_ips:
            v = ip_value(text.split("/", 1)[0])
            if v is not None:
                self.local.add(v)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def branch_local(self, br: Branch) -> bool:
        """Whether the branch's destination is the node's, as far as the branch assumed it."""
        for address, local in br.local_assumed:
            if address == br.dst:
                return local
        return self.is_local(br.dst)

    def is_local(self, text: str) -> bool:
        v = ip_value(text)
        if v is None:
            return False
        return v in self.local or any(p.contains(*v) for p in LOOPBACK)

    def addrtype(self, text: str) -> str:
        v = ip_value(text)
        if v is None:
            return "UNSPEC"
        if self.is_local(text):
            return "LOCAL"
        ip = ipaddress.ip_address(text)
        if ip.is_multicast:
            return "MULTICAST"
        if text == "255.255.255.255":
            return "BROADCAST"
        return "UNICAST"


# ---------------------------------------------------------------------------------------------------
# Matches


def _port_of(br: Branch, field_: str) -> int:
    return br.dport if field_ == "dport" else br.sport


def _ipset_member(entry: tuple[IpsetPart | None, ...], values: list[tuple[str, object]]) -> bool:
    if len(entry) < len(values):
        return False
    for part, (kind, value) in zip(entry, values, strict=False):
        if kind == "ip":
            v = ip_value(str(value))
            if v is None or not isinstance(part, AddrSpan) or part.version != v[0] or not part.low <= v[1] <= part.high:
                return False
        else:
            port, proto = value if isinstance(value, tuple) else (value, "")
            if not isinstance(part, PortSpan) or (part.protocol is not None and part.protocol != proto):
                return False
            if not part.low <= int(str(port)) <= part.high:
                return False
    return True


@lru_cache(maxsize=1 << 14)
def _entry(member: str) -> tuple[IpsetPart | None, ...]:
    return ipset_entry(str(member))


class Matcher:
    """Decides typed matches for branches: True, False, or the ways the match can go."""

    def __init__(self, node: NodeView) -> None:
        self.node = node
        self.packet = node.packet
        self._check: dict[type, Callable[[Any, Branch], bool | list[Alt]]] = {
            mt.AddrMatch: self._addr, mt.ProtoMatch: self._proto, mt.IfaceMatch: self._iface, mt.PortMatch: self._port,
            mt.ProtocolOnly: self._protocol_only, mt.TcpFlagsMatch: self._tcp_flags, mt.FragmentMatch: self._fragment,
            mt.MarkMatch: self._mark, mt.CtStateMatch: self._ctstate, mt.CtAddrMatch: self._ctaddr,
            mt.CtPortMatch: self._ctport, mt.CtProtoMatch: self._ctproto, mt.CtDirMatch: self._ctdir,
            mt.AddrTypeMatch: self._addrtype, mt.StatisticMatch: self._statistic, mt.RecentMatch: self._recent,
            mt.IpsetMatch: self._ipset, mt.PhysdevMatch: self._physdev, mt.IpRangeMatch: self._iprange,
            mt.PktTypeMatch: self._pkttype, mt.UnknownMatch: self._unknown, mt.NfprotoMatch: self._nfproto,
            SetLookup: self._set_lookup,
        }

    def check(self, m: mt.Match | SetLookup, br: Branch) -> bool | list[Alt]:
        return self._check[type(m)](m, br)

    # Each takes the match (typed by the table above) and the branch.

    def _addr(self, m: mt.AddrMatch, br: Branch) -> bool:
        v = ip_value(br.dst if m.field == mt.DST else br.src)
        if v is None:
            return False
        return any(p.contains(*v) for p in m.prefixes) != m.negated

    def _proto(self, m: mt.ProtoMatch, br: Branch) -> bool:
        return (m.protocol in ("all", "") or m.protocol == self.packet.protocol) != m.negated

    def _iface(self, m: mt.IfaceMatch, br: Branch) -> bool | list[Alt]:
        iface = br.in_iface if m.field == "in" else br.out_iface
        if iface is None:
            return undecided(f"{m.text} (the packet's interface is not known)")
        return m.hits(iface) != m.negated

    def _port(self, m: mt.PortMatch, br: Branch) -> bool:
        if m.protocol is not None and m.protocol != self.packet.protocol:
            return False  # -m tcp only ever matches TCP
        hit = m.hits(br.dport) or m.hits(br.sport) if m.field == "either" else m.hits(_port_of(br, m.field))
        return hit != m.negated

    def _protocol_only(self, m: mt.ProtocolOnly, br: Branch) -> bool:
        return (m.protocol == self.packet.protocol) != m.negated

    def _tcp_flags(self, m: mt.TcpFlagsMatch, br: Branch) -> bool:
        # The first packet of a new TCP connection carries SYN and nothing else the mask would see.
        return (frozenset({"SYN"}) & m.mask == m.comp) != m.negated

    def _fragment(self, m: mt.FragmentMatch, br: Branch) -> bool:
        return m.negated  # the first packet is never a non-first fragment

    def _mark(self, m: mt.MarkMatch, br: Branch) -> bool:
        value = br.ctmark if m.field == "ctmark" else br.mark
        return ((value & m.mask) == m.value) != m.negated

    def _ctstate(self, m: mt.CtStateMatch, br: Branch) -> bool:
        states = {"UNTRACKED"} if br.untracked else {"NEW"}
        if br.dnat and not br.untracked:
            states.add("DNAT")
        if br.snat and not br.untracked:
            states.add("SNAT")
        return bool(states & m.states) != m.negated

    def _ctaddr(self, m: mt.CtAddrMatch, br: Branch) -> bool | list[Alt]:
        # Original tuple = the packet as it arrived; the reply comes from the (DNATed) destination.
        text = {"origsrc": self.packet.src, "origdst": self.packet.dst, "replsrc": br.dst}.get(m.which)
        if text is None:
            return undecided(f"{m.text} (not modelled)")
        v = ip_value(text)
        return (v is not None and any(p.contains(*v) for p in m.prefixes)) != m.negated

    def _ctport(self, m: mt.CtPortMatch, br: Branch) -> bool | list[Alt]:
        port = {"origsrc": self.packet.sport, "origdst": self.packet.dport, "replsrc": br.dport}.get(m.which)
        if port is None:
            return undecided(f"{m.text} (not modelled)")
        return any(lo <= port <= hi for lo, hi in m.ranges) != m.negated

    def _ctproto(self, m: mt.CtProtoMatch, br: Branch) -> bool:
        return (m.protocol == self.packet.protocol) != m.negated

    def _ctdir(self, m: mt.CtDirMatch, br: Branch) -> bool:
        return (m.direction == "ORIGINAL") != m.negated

    def _addrtype(self, m: mt.AddrTypeMatch, br: Branch) -> bool | list[Alt]:
        if m.limit_iface:
            return undecided(f"{m.text} (per-interface route types are not modelled)")
        address = br.dst if m.field == mt.DST else br.src
        actual = self.node.addrtype(address)
        if actual == "UNICAST" and "LOCAL" in m.types and not self.node.options.node_addresses_known:
            assumed = next((local for a, local in br.local_assumed if a == address), None)
            if assumed is None:
                return undecided(f"-m addrtype --{m.field}-type LOCAL (whether {address} is this node's address "
                                 "is not known: the snapshot holds none of its addresses)", address, m.negated)
            actual = "LOCAL" if assumed else "UNICAST"
        if actual not in m.types and m.types & _ADDRTYPE_UNDECIDABLE:
            return undecided(f"{m.text} (route types besides LOCAL/UNICAST are not modelled)")
        return (actual in m.types) != m.negated

    def _statistic(self, m: mt.StatisticMatch, br: Branch) -> bool | list[Alt]:
        p = 1.0 - m.probability if m.negated else m.probability
        p = min(max(p, 0.0), 1.0)
        if p >= 1.0:
            return True
        if p <= 0.0:
            return False
        return [Alt(matched=True, factor=p, action=f"branch: probability {p:.10g} taken"),
                Alt(matched=False, factor=1.0 - p)]

    def _recent(self, m: mt.RecentMatch, br: Branch) -> bool | list[Alt]:
        if m.op == "set":
            return not m.negated  # records the client; always matches
        return self.pin(m.name, br, m.negated)

    def pin(self, name: str, br: Branch, negated: bool) -> bool | list[Alt]:
        """Is the client in the affinity list ``name``? Known once assumed; otherwise both, the pinned
        side at share 0 (only clients seen before take it: new connections are not pinned)."""
        if br.pinned is not None:
            return (br.pinned == name) != negated
        if name in br.not_pinned:
            return negated
        pinned = Alt(matched=not negated, factor=0.0, pin=name,
                     note=f"only for a client already pinned to {name} (session affinity)",
                     action=f"branch: client already pinned to {name}")
        fresh = Alt(matched=negated, factor=1.0, unpin=name)
        return [fresh, pinned]

    def _ipset(self, m: mt.IpsetMatch, br: Branch) -> bool | list[Alt]:
        sets = self.node.ipsets
        if sets is None or m.name not in sets:
            if sets is not None:
                self.node.warn(f"ipset {m.name} is used by a rule but its members were not given")
            return undecided(f"{m.text} (ipset members not known)")
        values: list[tuple[str, object]] = []
        for i, flag in enumerate(m.flags):
            ip_attr, port_attr = ("src", "sport") if flag == "src" else ("dst", "dport")
            if i == 1:
                values.append(("port", (getattr(br, port_attr), self.packet.protocol)))
            else:
                values.append(("ip", getattr(br, ip_attr)))
        members = sets[m.name]
        entries = [_entry(str(x)) for x in members]
        if entries and all(len(e) == 1 and isinstance(e[0], PortSpan) for e in entries):
            # bitmap:port sets hold ports only: the flag then names the port's direction.
            port_attr = "sport" if m.flags[0] == "src" else "dport"
            values = [("port", (getattr(br, port_attr), self.packet.protocol))]
        hit = any(_ipset_member(e, values) for e in entries)
        return hit != m.negated

    def _physdev(self, m: mt.PhysdevMatch, br: Branch) -> bool | list[Alt]:
        """Bridge ports: decided where the snapshot tells, else both ways."""
        port = self._bridge_port(br.in_iface)
        if m.option == "is-in":
            if port is None:
                return undecided(f"{m.text} (whether the packet entered through a bridge port is not known)")
            return port != m.negated
        if m.option == "in" and m.iface:
            if port is False:
                return m.negated  # not bridged: no physdev-in device at all
            if port is True and br.in_iface is not None:
                return mt.IfaceMatch("in", m.iface).hits(br.in_iface) != m.negated
            return undecided(f"{m.text} (the bridge port the packet entered through is not known)")
        if m.option == "is-bridged" and port is False:
            # A routed packet that did not enter through a bridge is not bridged; where it leaves is
            # decided after routing, which the tracer does not model per interface.
            return m.negated
        return undecided(f"{m.text} (bridge ports are not modelled after routing)")

    def _bridge_port(self, iface: str | None) -> bool | None:
        """Did the packet enter through a bridge port? None when the snapshot cannot tell."""
        origin = self.packet.origin
        if origin == "node":
            return False  # locally generated packets have no physdev
        bridges = self.node.bridge_ports
        if bridges is not None and not bridges and (iface is not None or origin != "pod"):
            # The node has no bridge ports at all; but a pod's packet with no interface given may come in
            # through one the snapshot does not list (its interfaces may show only the node's uplinks).
            return False
        if iface is not None and bridges is not None:
            return iface in bridges
        if origin == "external" and bridges is None and iface is None:
            # A routed packet from a remote source arrives on the node's uplink, not a bridge port.
            return False
        return None

    def _iprange(self, m: mt.IpRangeMatch, br: Branch) -> bool:
        v = ip_value(br.dst if m.field == mt.DST else br.src)
        if v is None or v[0] != m.version:
            return False
        return (m.first <= v[1] <= m.last) != m.negated

    def _pkttype(self, m: mt.PktTypeMatch, br: Branch) -> bool:
        t = self.node.addrtype(br.dst)
        kind = "multicast" if t == "MULTICAST" else "broadcast" if t == "BROADCAST" else "unicast"
        return (kind == m.kind) != m.negated

    def _unknown(self, m: mt.UnknownMatch, br: Branch) -> list[Alt]:
        return undecided(f"{m.text} ({m.why})")

    def _nfproto(self, m: mt.NfprotoMatch, br: Branch) -> bool:
        return (m.family == self.packet.family) != m.negated

    # -- nftables sets ----------------------------------------------------------------------------

    def key_parts(self, keys: tuple[str, ...], br: Branch) -> list[tuple[str, object]] | None:
        """The branch's value for each selector of a key; None when one cannot be known."""
        out: list[tuple[str, object]] = []
        for sel in keys:
            part = self._component(sel, br)
            if part is None:
                return None
            out.append(part)
        return out

    def _component(self, selector: str, br: Branch) -> tuple[str, object] | None:
        pkt = self.packet
        if selector in ("ip saddr", "ip6 saddr"):
            return ("addr", br.src) if (selector == "ip saddr") == (pkt.family == 4) else None
        if selector in ("ip daddr", "ip6 daddr"):
            return ("addr", br.dst) if (selector == "ip daddr") == (pkt.family == 4) else None
        if selector in ("meta l4proto", "ip protocol", "ip6 nexthdr"):
            return ("word", pkt.protocol)
        if selector in ("th dport", "th sport"):
            return ("port", br.dport if selector.endswith("dport") else br.sport)
        first = selector.split()[0]
        if first in ("tcp", "udp", "sctp"):
            if first != pkt.protocol:
                return ("never", None)
            return ("port", br.dport if selector.endswith("dport") else br.sport)
        if selector == "meta mark":
            return ("port", br.mark)
        return None

    def element_hit(self, parts: list[tuple[str, object]], element: Element) -> bool:
        if len(element.key) != len(parts):
            return False
        for (kind, value), want in zip(parts, element.key, strict=True):
            if kind == "never":
                return False
            if kind == "addr":
                v = ip_value(str(value))
                if v is None:
                    return False
                if isinstance(want, Prefix):
                    if not want.contains(*v):
                        return False
                elif isinstance(want, tuple) and len(want) == 3:
                    if not (want[0] == v[0] and want[1] <= v[1] <= want[2]):
                        return False
                else:
                    return False
            elif kind == "port":
                if not (isinstance(want, tuple) and len(want) == 2 and want[0] <= int(str(value)) <= want[1]):
                    return False
            elif want != value:
                return False
        return True

    def _set_lookup(self, m: SetLookup, br: Branch) -> bool | list[Alt]:
        if m.set_name is not None:
            found = self.node.named_set(m.set_name)
            if found is None:
                self.node.warn(f"a rule uses set @{m.set_name}, which is not in the table")
                return undecided(f"{m.text} (set not in the table)")
            elements, dynamic = found
            if dynamic:
                return self.pin(m.set_name, br, m.negated)
        else:
            elements = m.elements
        parts = self.key_parts(m.keys, br)
        if parts is None:
            return undecided(f"{m.text} (expression not modelled)")
        hit = any(self.element_hit(parts, e) for e in elements)
        return hit != m.negated


def merge_branches(branches: list[Branch], cap: int, where: str, warn: Callable[[str], None]) -> tuple[list[Branch],
                                                                                                     float]:
    """Branches in the same state merged, at most ``cap`` kept; and the share dropped.

    Same state and same assumptions: the shares add up. Same state, and assumptions that differ only in
    one assumption taken both ways with the same share: the assumption changed nothing, so it goes.
    """
    if len(branches) < 2:
        return branches, 0.0
    by_key: dict[tuple[object, ...], Branch] = {}
    for br in branches:
        k = (br.state(), br.assumed)
        old = by_key.get(k)
        if old is None:
            by_key[k] = br
        else:
            keep = br if br.prob > old.prob else old
            by_key[k] = replace(keep, prob=old.prob + br.prob)
    merged = list(by_key.values())
    if any(b.assumed for b in merged):
        merged = _merge_assumptions(merged)
    if len(merged) <= cap:
        return merged, 0.0
    merged.sort(key=lambda b: -b.prob)
    dropped = merged[cap:]
    share = sum(b.prob for b in dropped)
    warn(f"too many branches at {where}: {len(dropped)} least likely ones (share {share:.3g}) were not traced "
         "further")
    return merged[:cap], share


T = TypeVar("T")


def drop_irrelevant(items: list[T], *, state: Callable[[T], Hashable], assumed: Callable[[T], tuple[Assumption, ...]],
                    prob: Callable[[T], float], rebuild: Callable[[T, T, tuple[Assumption, ...]], T]) -> list[T]:
    """Drop assumptions whose two sides reached the same ``state`` with the same share: the match they rest
    on changed nothing. ``rebuild(shown, other, rest)`` makes the merged item from the side whose match did
    not hold (its path is shown) and the rest of the assumptions."""
    out = list(items)
    changed = True
    while changed:
        changed = False
        index: dict[tuple[object, ...], int] = {}
        for i, item in enumerate(out):
            assumptions = assumed(item)
            for j, (what, matched) in enumerate(assumptions):
                rest = assumptions[:j] + assumptions[j + 1:]
                key = (state(item), rest, what, round(prob(item), 12))
                other = index.get((*key, not matched))
                if other is not None:
                    shown, twin = (item, out[other]) if not matched else (out[other], item)
                    out[other] = rebuild(shown, twin, rest)
                    del out[i]
                    changed = True
                    break
                index.setdefault((*key, matched), i)
            if changed:
                break
    return out


def _merge_assumptions(branches: list[Branch]) -> list[Branch]:
    def rebuild(shown: Branch, twin: Branch, rest: tuple[Assumption, ...]) -> Branch:
        dropped = {w for w, _ in shown.assumed} - {w for w, _ in rest}
        marks = {f"if it matches: {w}" for w in dropped} | {f"if it does not match: {w}" for w in dropped}
        return replace(shown, assumed=rest, notes=tuple(n for n in shown.notes if n not in marks))

    return drop_irrelevant(branches, state=Branch.state, assumed=lambda b: b.assumed, prob=lambda b: b.prob,
                           rebuild=rebuild)
