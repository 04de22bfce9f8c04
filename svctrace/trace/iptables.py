"""Simulate one new connection through an iptables dump, the way the kernel walks it.

The tracer keeps a set of *branches*: a branch is the packet plus everything the rules did to it
(mark, DNAT, SNAT, session-affinity assumptions) and the share of new connections that take it. A
``statistic`` match splits a branch in two (p and 1-p); a match that cannot be decided splits it with
the whole share on the not-matching side (module docstring of svctrace.model.trace). Branches that
reach the same state are merged, so kube-proxy's long chains stay linear.

Hook order (netfilter, for the first packet of a connection):

* from a pod or from outside: raw, mangle, nat PREROUTING; routing; local destination -> mangle,
  filter, security, nat INPUT; otherwise mangle, filter, security FORWARD, then mangle, nat POSTROUTING.
* from the node itself: raw, mangle, nat, filter, security OUTPUT; mangle, nat POSTROUTING; if the
  (rewritten) destination is local the packet loops back through lo: raw, mangle PREROUTING, mangle,
  filter, security INPUT. The nat table is not consulted again on the loop: conntrack already holds
  both NAT bindings.

``kube_proxy_test_semantics`` swaps all of this for a port of kube-proxy's unit-test tracer
(kube-proxy-formats.md §4), kept separate below because it is a different algorithm, not a variant.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace

from svctrace.model.dataplane import BUILTIN_CHAINS, Chain, IptablesDump, Match, Option, Rule
from svctrace.model.trace import (
    KubeProxyTestView,
    Outcome,
    Packet,
    TraceOptions,
    TraceResult,
    TraceStep,
    format_address,
)
from svctrace.trace.common import LOOPBACK_NETS, finish, martian, merge_branches

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

KUBE_MARK_MASQ = "KUBE-MARK-MASQ"

# Targets that end the walk of the current table for this packet.
_VERDICT_TARGETS = frozenset({"ACCEPT", "DROP", "REJECT"})
_NAT_TARGETS = frozenset({"DNAT", "SNAT", "MASQUERADE", "REDIRECT"})
# Targets that end the table's walk but whose effect the tracer does not model.
_UNMODELLED_TERMINAL = frozenset({"QUEUE", "NFQUEUE", "SYNPROXY", "TPROXY", "NETMAP", "CLUSTERIP", "TARPIT",
                                  "DNPT", "SNPT"})
# Targets that change nothing the tracer looks at and let the packet continue.
_PASSIVE_TARGETS = frozenset({"LOG", "NFLOG", "ULOG", "TRACE", "CLASSIFY", "DSCP", "TOS", "TTL", "HL",
                              "TCPMSS", "CHECKSUM", "AUDIT", "SET", "SECMARK", "CONNSECMARK", "IDLETIMER",
                              "LED", "RATEEST", "TEE", "HMARK", "ECN", "TCPOPTSTRIP", "IPV4OPTSSTRIP"})

_PROTO_NUMBERS = {"6": "tcp", "17": "udp", "132": "sctp", "1": "icmp", "58": "ipv6-icmp", "136": "udplite"}
_PORT_OPTIONS = frozenset({"--dport", "--destination-port", "--sport", "--source-port"})
_ADDRTYPE_UNDECIDABLE = frozenset({"UNSPEC", "ANYCAST", "BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW",
                                   "NAT", "XRESOLVE"})
_IPSET_PORT = re.compile(r"^(?:(tcp|udp|sctp|udplite|icmp|icmpv6):)?(\d+)(?:-(\d+))?$")


# --------------------------------------------------------------------------------------------------
# The state of one branch


@dataclass(frozen=True, slots=True)
class _Branch:
    src: str
    dst: str
    sport: int
    dport: int
    in_iface: str | None
    out_iface: str | None = None
    mark: int = 0
    ctmark: int = 0
    dnat: bool = False
    snat: str | None = None  # how the source is rewritten: "MASQUERADE" or "SNAT to X"
    untracked: bool = False
    pinned: str | None = None  # the recent list this client is assumed to be in (session affinity)
    not_pinned: frozenset[str] = frozenset()
    uncertain: bool = False
    prob: float = 1.0
    path: tuple[TraceStep, ...] = ()
    notes: tuple[str, ...] = ()

    def key(self) -> tuple[object, ...]:
        return (self.src, self.dst, self.sport, self.dport, self.in_iface, self.out_iface, self.mark,
                self.ctmark, self.dnat, self.snat, self.untracked, self.pinned, self.not_pinned,
                self.uncertain)

    def step(self, step: TraceStep) -> _Branch:
        return replace(self, path=(*self.path, step))

    def note(self, text: str) -> _Branch:
        if text in self.notes:
            return self
        return replace(self, notes=(*self.notes, text))


@dataclass(frozen=True, slots=True)
class _Alt:
    """One way an undecidable or random match can go."""

    matched: bool
    factor: float  # multiplies the branch's share
    note: str | None = None
    uncertain: bool = False
    pin: str | None = None  # assume the client is in this recent list
    unpin: str | None = None  # assume it is not
    action: str | None = None  # a path step for the rule, in words ("branch: probability 0.5 taken")


# A check returns True/False, or the ways it can go.
_Check = Callable[["_Context", _Branch], "bool | list[_Alt]"]


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A rule's checks in the order they run: cheap decisive ones first, splitting ones last."""

    checks: tuple[_Check, ...]


class _Context:
    """What checks may consult besides the branch: the node and the options."""

    def __init__(self, local_ips: Iterable[str], ipsets: Mapping[str, Collection[str]] | None,
                 packet: Packet, options: TraceOptions) -> None:
        self.local: set[IPAddress] = set()
        for text in local_ips:
            ip = _parse_ip(text.split("/", 1)[0])
            if ip is not None:
                self.local.add(ip)
        self.ipsets = ipsets
        self.packet = packet
        self.options = options
        self.warnings: list[str] = []
        self._ip_cache: dict[str, IPAddress | None] = {}
        self._int_cache: dict[str, tuple[int, int]] = {}

    def ip_int(self, text: str) -> tuple[int, int] | None:
        """(version, address as int), cached: the hot path of address matches."""
        got = self._int_cache.get(text)
        if got is None:
            ip = self.ip(text)
            if ip is None:
                return None
            got = self._int_cache[text] = (ip.version, int(ip))
        return got

    def ip(self, text: str) -> IPAddress | None:
        if text not in self._ip_cache:
            self._ip_cache[text] = _parse_ip(text)
        return self._ip_cache[text]

    def is_local(self, text: str) -> bool:
        ip = self.ip(text)
        if ip is None:
            return False
        return ip in self.local or any(ip.version == n.version and ip in n for n in LOOPBACK_NETS)

    def addrtype(self, text: str) -> str:
        ip = self.ip(text)
        if ip is None:
            return "UNSPEC"
        if self.is_local(text):
            return "LOCAL"
        if ip.is_multicast:
            return "MULTICAST"
        if ip.version == 4 and text == "255.255.255.255":
            return "BROADCAST"
        return "UNICAST"

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _parse_net(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# Compiling rules into checks


def _neg(value: bool, negated: bool) -> bool:
    return value != negated


@functools.lru_cache(maxsize=65536)
def _prefix(text: str) -> tuple[int, int, int] | None:
    """(version, network as int, netmask as int) for an address or CIDR; None if it is neither.

    ``-s``/``-d`` are checked against every rule of KUBE-SERVICES, so IPv4 is parsed by hand:
    ``ipaddress.ip_network`` costs ~20us a call, which made a 5000-Service dump take a third of a second.
    """
    host, _, bits = text.partition("/")
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and (p == "0" or p[0] != "0") for p in parts):
        octets = [int(p) for p in parts]
        if max(octets) > 255:
            return None
        value = (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]
        version, width = 4, 32
    else:
        ip = _parse_ip(host)
        if ip is None:
            return None
        value, version, width = int(ip), ip.version, ip.max_prefixlen
    if bits:
        if not bits.isdigit() or int(bits) > width:
            return None  # dotted netmasks (-s 10.0.0.0/255.0.0.0) are printed as prefixes by iptables-save
        length = int(bits)
    else:
        length = width
    mask = ((1 << width) - 1) ^ ((1 << (width - length)) - 1)
    return version, value & mask, mask


def _address_check(opt: Option, attr: str) -> _Check | None:
    """The check for -s/-d; None when an address is not understood (the rule is then undecidable)."""
    texts = [v for part in opt.values for v in part.split(",") if v]
    negated = opt.negated
    nets: list[tuple[int, int, int]] = []
    for text in texts:
        net = _prefix(text)
        if net is None:
            return None
        nets.append(net)

    def check(ctx: _Context, br: _Branch) -> bool:
        ip = ctx.ip_int(getattr(br, attr))
        if ip is None:
            return False
        version, value = ip
        inside = any(v == version and value & mask == net for v, net, mask in nets)
        return _neg(inside, negated)

    return check


def _iface_check(opt: Option, attr: str, flag: str) -> _Check:
    pattern = opt.value
    negated = opt.negated

    def check(ctx: _Context, br: _Branch) -> bool | list[_Alt]:
        iface = getattr(br, attr)
        if iface is None:
            neg = "! " if negated else ""
            return _undecided(f"{flag} {neg}{pattern}: the packet's interface is not known")
        hit = iface.startswith(pattern[:-1]) if pattern.endswith("+") else iface == pattern
        return _neg(hit, negated)

    return check


def _protocol_check(opt: Option, protocol: str) -> _Check:
    value = opt.value.lower()
    value = _PROTO_NUMBERS.get(value, value)
    hit = value in ("all", "0", "") or value == protocol
    result = _neg(hit, opt.negated)
    return lambda ctx, br: result


def _undecided(note: str) -> list[_Alt]:
    """Follow both ways: the rule not matching carries the share (the module docstring's convention)."""
    return [_Alt(matched=False, factor=1.0, note=f"assumed not to match: {note}", uncertain=True,
                 action=f"uncertain: {note}; assumed not to match"),
            _Alt(matched=True, factor=0.0, note=f"only if it matches: {note}", uncertain=True,
                 action=f"uncertain: {note}; assumed to match")]


def _port_in(port: int, spec: str) -> bool:
    spec = spec.strip()
    if ":" in spec:
        lo_text, hi_text = spec.split(":", 1)
        lo = int(lo_text) if lo_text else 0
        hi = int(hi_text) if hi_text else 65535
        return lo <= port <= hi
    return port == int(spec)


def _port_check(opt: Option, attr: str) -> _Check:
    specs = [s for v in opt.values for s in v.split(",") if s]
    negated = opt.negated

    def check(ctx: _Context, br: _Branch) -> bool | list[_Alt]:
        try:
            hit = any(_port_in(getattr(br, attr), s) for s in specs)
        except ValueError:
            return _undecided(f"port {opt.value!r} not understood")
        return _neg(hit, negated)

    return check


def _multiport_check(opt: Option) -> _Check:
    specs = [s for v in opt.values for s in v.split(",") if s]
    negated = opt.negated
    which = opt.name

    def check(ctx: _Context, br: _Branch) -> bool | list[_Alt]:
        try:
            if which in ("--dports", "--destination-ports"):
                hit = any(_port_in(br.dport, s) for s in specs)
            elif which in ("--sports", "--source-ports"):
                hit = any(_port_in(br.sport, s) for s in specs)
            else:  # --ports: either port
                hit = any(_port_in(br.dport, s) or _port_in(br.sport, s) for s in specs)
        except ValueError:
            return _undecided(f"multiport {opt.value!r} not understood")
        return _neg(hit, negated)

    return check


def _const(value: bool) -> _Check:
    return lambda ctx, br: value


def _undecided_check(note: str) -> _Check:
    alts = _undecided(note)
    return lambda ctx, br: alts


def _parse_mark(text: str) -> tuple[int, int] | None:
    try:
        if "/" in text:
            value, mask = text.split("/", 1)
            return int(value, 0), int(mask, 0)
        return int(text, 0), 0xFFFFFFFF
    except ValueError:
        return None


def _mark_check(opt: Option, attr: str) -> _Check:
    parsed = _parse_mark(opt.value)
    negated = opt.negated
    if parsed is None:
        return _undecided_check(f"mark {opt.value!r} not understood")
    value, mask = parsed
    return lambda ctx, br: _neg((getattr(br, attr) & mask) == value, negated)


def _addrtype_check(match: Match) -> list[_Check]:
    checks: list[_Check] = []
    for opt in match.options:
        if opt.name in ("--src-type", "--dst-type"):
            types = {t.upper() for t in opt.value.split(",") if t}
            attr = "src" if opt.name == "--src-type" else "dst"

            def check(ctx: _Context, br: _Branch, types: set[str] = types, attr: str = attr,
                      opt: Option = opt) -> bool | list[_Alt]:
                actual = ctx.addrtype(getattr(br, attr))
                if actual not in types and types & _ADDRTYPE_UNDECIDABLE:
                    return _undecided(f"addrtype {opt} (route types besides LOCAL/UNICAST are not modelled)")
                return _neg(actual in types, opt.negated)

            checks.append(check)
        elif opt.name in ("--limit-iface-in", "--limit-iface-out"):
            checks.append(_undecided_check(f"addrtype {opt.name} (per-interface types are not modelled)"))
        else:
            checks.append(_undecided_check(f"addrtype option {opt.name} not modelled"))
    return checks


def _conntrack_check(opt: Option) -> _Check | None:
    name = opt.name
    negated = opt.negated
    if name in ("--ctstate", "--state"):
        wanted = {s.upper() for s in opt.value.split(",") if s}

        def check_state(ctx: _Context, br: _Branch) -> bool:
            states = {"UNTRACKED"} if br.untracked else {"NEW"}
            if br.dnat and not br.untracked:
                states.add("DNAT")
            if br.snat and not br.untracked:
                states.add("SNAT")
            return _neg(bool(states & wanted), negated)

        return check_state
    if name == "--ctproto":
        proto = _PROTO_NUMBERS.get(opt.value.lower(), opt.value.lower())
        return lambda ctx, br: _neg(proto == ctx.packet.protocol, negated)
    if name in ("--ctorigsrc", "--ctorigdst", "--ctreplsrc"):
        nets = [_parse_net(v) for v in opt.value.split(",")]

        def check_addr(ctx: _Context, br: _Branch) -> bool:
            # Original tuple = the packet as it arrived; the reply comes from the (DNATed) destination.
            text = {"--ctorigsrc": ctx.packet.src, "--ctorigdst": ctx.packet.dst, "--ctreplsrc": br.dst}[name]
            ip = ctx.ip(text)
            hit = ip is not None and any(n is not None and n.version == ip.version and ip in n for n in nets)
            return _neg(hit, negated)

        return check_addr
    if name in ("--ctorigsrcport", "--ctorigdstport", "--ctreplsrcport"):
        spec = opt.value

        def check_port(ctx: _Context, br: _Branch) -> bool | list[_Alt]:
            port = {"--ctorigsrcport": ctx.packet.sport, "--ctorigdstport": ctx.packet.dport,
                    "--ctreplsrcport": br.dport}[name]
            try:
                return _neg(_port_in(port, spec), negated)
            except ValueError:
                return _undecided(f"conntrack {opt} not understood")

        return check_port
    if name == "--ctdir":
        return _const(_neg(opt.value.upper() == "ORIGINAL", negated))
    return None


def _ipset_member_matches(member: str, values: list[tuple[str, object]], ctx: _Context) -> bool:
    parts = [p.strip() for p in member.split(",")]
    if len(parts) < len(values):
        return False
    for part, (kind, value) in zip(parts, values, strict=False):
        if kind == "ip":
            ip = ctx.ip(str(value))
            if "-" in part and "/" not in part:
                first, _, last = part.partition("-")
                lo_ip, hi_ip = _parse_ip(first), _parse_ip(last)
                if ip is None or lo_ip is None or hi_ip is None:
                    return False
                if not lo_ip.version == hi_ip.version == ip.version:
                    return False
                if not int(lo_ip) <= int(ip) <= int(hi_ip):
                    return False
                continue
            net = _parse_net(part)
            if ip is None or net is None or net.version != ip.version or ip not in net:
                return False
        else:
            port, proto = value if isinstance(value, tuple) else (value, "")
            m = _IPSET_PORT.match(part)
            if m is None:
                return False
            if m.group(1) and m.group(1) != proto:
                return False
            lo = int(m.group(2))
            hi = int(m.group(3)) if m.group(3) else lo
            if not lo <= int(str(port)) <= hi:
                return False
    return True


def _set_check(opt: Option) -> _Check:
    name = opt.values[0] if opt.values else ""
    flags = opt.values[1].split(",") if len(opt.values) > 1 else ["src"]
    negated = opt.negated

    def check(ctx: _Context, br: _Branch) -> bool | list[_Alt]:
        if ctx.ipsets is None or name not in ctx.ipsets:
            if ctx.ipsets is not None:
                ctx.warn(f"ipset {name} is used by a rule but its members were not given")
            return _undecided(f"set {'! ' if negated else ''}--match-set {name} {','.join(flags)} "
                              "(ipset members not known)")
        # The first flag is an address; later ones are port (hash:ip,port) or address (hash:ip,port,ip).
        values: list[tuple[str, object]] = []
        for i, flag in enumerate(flags):
            ip_attr, port_attr = ("src", "sport") if flag == "src" else ("dst", "dport")
            if i == 1:
                values.append(("port", (getattr(br, port_attr), ctx.packet.protocol)))
            else:
                values.append(("ip", getattr(br, ip_attr)))
        members = ctx.ipsets[name]
        if members and all(_IPSET_PORT.match(str(m).strip()) for m in members):
            # bitmap:port sets hold ports only: the flag then names the port's direction.
            port_attr = "sport" if flags[0] == "src" else "dport"
            values = [("port", (getattr(br, port_attr), ctx.packet.protocol))]
        hit = any(_ipset_member_matches(str(m), values, ctx) for m in members)
        return _neg(hit, negated)

    return check


def _recent_checks(match: Match) -> list[_Check]:
    name_opt = match.option("--name")
    name = name_opt.value if name_opt is not None else "DEFAULT"
    checks: list[_Check] = []
    for opt in match.options:
        if opt.name in ("--rcheck", "--update", "--remove"):
            negated = opt.negated

            def check(ctx: _Context, br: _Branch, negated: bool = negated) -> bool | list[_Alt]:
                if br.pinned is not None:
                    return _neg(br.pinned == name, negated)
                if name in br.not_pinned:
                    return _neg(False, negated)
                pinned = _Alt(matched=not negated, factor=0.0, pin=name,
                              note=f"only for a client already pinned to {name} (session affinity)",
                              action=f"branch: client already pinned to {name}")
                fresh = _Alt(matched=negated, factor=1.0, unpin=name)
                return [fresh, pinned]

            checks.append(check)
    # --set records the client and always matches; --seconds/--reap/--hitcount only refine --rcheck.
    return checks


def _statistic_check(match: Match) -> _Check:
    mode_opt = match.option("--mode")
    mode = mode_opt.value if mode_opt is not None else "random"
    if mode == "random":
        opt = match.option("--probability")
        try:
            p = float(opt.value) if opt is not None else 1.0
        except ValueError:
            return _undecided_check(f"statistic probability {opt.value if opt else ''!r} not understood")
        negated = opt.negated if opt is not None else False
    else:
        every = match.option("--every")
        try:
            p = 1.0 / int(every.value) if every is not None else 1.0
        except (ValueError, ZeroDivisionError):
            return _undecided_check("statistic --mode nth not understood")
        negated = every.negated if every is not None else False
    if negated:
        p = 1.0 - p
    p = min(max(p, 0.0), 1.0)
    if p >= 1.0:
        return _const(True)
    if p <= 0.0:
        return _const(False)
    taken = _Alt(matched=True, factor=p, action=f"branch: probability {p:.10g} taken")
    not_taken = _Alt(matched=False, factor=1.0 - p)
    alts = [taken, not_taken]
    return lambda ctx, br: alts


def _tcp_flags_check(opt: Option) -> _Check:
    # The first packet of a new TCP connection carries SYN and nothing else the mask would see.
    if opt.name == "--syn":
        return lambda ctx, br: _neg(ctx.packet.protocol == "tcp", opt.negated)
    if len(opt.values) < 2:
        return _undecided_check(f"tcp {opt} not understood")
    mask = {f.upper() for f in opt.values[0].split(",")}
    comp = {f.upper() for f in opt.values[1].split(",")}
    if "ALL" in mask:
        mask = {"SYN", "ACK", "FIN", "RST", "URG", "PSH"}
    comp.discard("NONE")
    flags = {"SYN"}
    result = (flags & mask) == comp
    return lambda ctx, br: _neg(result, opt.negated)


def _iprange_check(opt: Option) -> _Check:
    lo_text, _, hi_text = opt.value.partition("-")
    lo, hi = _parse_ip(lo_text), _parse_ip(hi_text or lo_text)
    attr = "src" if opt.name == "--src-range" else "dst"
    negated = opt.negated

    def check(ctx: _Context, br: _Branch) -> bool:
        ip = ctx.ip(getattr(br, attr))
        if ip is None or lo is None or hi is None or ip.version != lo.version:
            return False
        return _neg(int(lo) <= int(ip) <= int(hi), negated)

    return check


def _match_checks(match: Match, protocol: str) -> tuple[list[_Check], list[_Check]]:
    """(certain, branching) checks for one ``-m`` module."""
    module = match.module.lower()
    certain: list[_Check] = []
    branching: list[_Check] = []
    if module in ("comment", "nfacct"):
        return certain, branching  # annotate and count only
    if module == "statistic":
        return certain, [_statistic_check(match)]
    if module == "recent":
        return certain, list(_recent_checks(match))
    if module == "addrtype":
        return certain, _addrtype_check(match)
    if module in ("mark", "connmark"):
        for opt in match.options:
            if opt.name == "--mark":
                certain.append(_mark_check(opt, "mark" if module == "mark" else "ctmark"))
            else:
                branching.append(_undecided_check(f"{module} option {opt.name} not modelled"))
        return certain, branching
    if module in ("conntrack", "state"):
        for opt in match.options:
            check = _conntrack_check(opt)
            if check is not None:
                certain.append(check)
            else:
                branching.append(_undecided_check(f"conntrack {opt} not modelled"))
        return certain, branching
    if module == "multiport":
        for opt in match.options:
            if opt.name in ("--dports", "--destination-ports", "--sports", "--source-ports", "--ports"):
                branching.append(_multiport_check(opt))
            else:
                branching.append(_undecided_check(f"multiport option {opt.name} not understood"))
        return certain, branching
    if module == "set":
        for opt in match.options:
            if opt.name in ("--match-set", "--set"):
                branching.append(_set_check(opt))
        return certain, branching
    if module == "iprange":
        for opt in match.options:
            if opt.name in ("--src-range", "--dst-range"):
                certain.append(_iprange_check(opt))
        return certain, branching
    if module == "pkttype":
        for opt in match.options:
            if opt.name == "--pkt-type":
                want = opt.value.lower()
                neg = opt.negated

                def pkt(ctx: _Context, br: _Branch, want: str = want, neg: bool = neg) -> bool:
                    t = ctx.addrtype(br.dst)
                    kind = "multicast" if t == "MULTICAST" else "broadcast" if t == "BROADCAST" else "unicast"
                    return _neg(kind == want, neg)

                certain.append(pkt)
        return certain, branching
    port_module = module in ("tcp", "udp", "sctp", "udplite", "dccp") or (
        match.options and all(o.name in _PORT_OPTIONS for o in match.options))
    if port_module:
        for opt in match.options:
            if opt.name in ("--dport", "--destination-port"):
                branching.append(_port_check(opt, "dport"))
            elif opt.name in ("--sport", "--source-port"):
                branching.append(_port_check(opt, "sport"))
            elif opt.name in ("--tcp-flags", "--syn"):
                certain.append(_tcp_flags_check(opt))
            else:
                branching.append(_undecided_check(f"{module} option {opt.name} not modelled"))
        # The module only ever matches its own protocol (iptables also demands -p for it).
        if module in ("tcp", "udp", "sctp", "udplite", "dccp"):
            certain.append(_const(module == protocol))
        return certain, branching
    return certain, [_undecided_check(f"module {module} not modelled")]


def _compile_addresses(rule: Rule, protocol: str) -> _Compiled:
    """The -s/-d/-p checks alone: most rules of a big KUBE-SERVICES fail here, so compile these first."""
    checks: list[_Check] = []
    for opt in rule.basic:
        if opt.name in ("-s", "--source", "--src", "-d", "--destination", "--dst"):
            check = _address_check(opt, "src" if opt.name in ("-s", "--source", "--src") else "dst")
            if check is not None:
                checks.append(check)
        elif opt.name in ("-p", "--protocol"):
            checks.append(_protocol_check(opt, protocol))
    return _Compiled(tuple(checks))


def _compile_rest(rule: Rule, protocol: str) -> _Compiled:
    """Every other check of the rule: the certain ones, then those that may split a branch."""
    certain: list[_Check] = []
    branching: list[_Check] = []
    for opt in rule.basic:
        if opt.name in ("-s", "--source", "--src", "-d", "--destination", "--dst"):
            if _address_check(opt, "src") is None:
                branching.append(_undecided_check(f"address {opt} not understood"))
            continue
        if opt.name in ("-p", "--protocol"):
            continue
        if opt.name in ("-i", "--in-interface"):
            branching.append(_iface_check(opt, "in_iface", "-i"))
        elif opt.name in ("-o", "--out-interface"):
            branching.append(_iface_check(opt, "out_iface", "-o"))
        elif opt.name in ("-f", "--fragment"):
            certain.append(_const(opt.negated))  # the first packet is never a non-first fragment
        else:
            branching.append(_undecided_check(f"option {opt.name} not modelled"))
    for match in rule.matches:
        c, b = _match_checks(match, protocol)
        certain.extend(c)
        branching.extend(b)
    # Port checks sit in `branching` only so they run after the cheap checks; they never split.
    return _Compiled((*certain, *branching))


# --------------------------------------------------------------------------------------------------
# Targets


def _apply_mark(current: int, opts: tuple[Option, ...], prefix: str = "") -> tuple[int, str] | None:
    """The mark after a MARK/CONNMARK value option, and the change in words."""
    for opt in opts:
        name = opt.name
        if name in ("--set-xmark", "--set-mark"):
            parsed = _parse_mark(opt.value)
            if parsed is None:
                return None
            value, mask = parsed
            new = (current & ~mask) ^ value if name == "--set-xmark" else (current & ~mask) | value
            return new & 0xFFFFFFFF, f"{prefix}mark set to {new & 0xFFFFFFFF:#x}"
        parsed = _parse_mark(opt.value) if opt.values else None
        if parsed is None:
            continue
        bits = parsed[0]
        if name == "--or-mark":
            return (current | bits) & 0xFFFFFFFF, f"{prefix}mark |= {bits:#x}"
        if name == "--and-mark":
            return current & bits, f"{prefix}mark &= {bits:#x}"
        if name == "--xor-mark":
            return (current ^ bits) & 0xFFFFFFFF, f"{prefix}mark ^= {bits:#x}"
    return None


def _split_dnat(value: str, dport: int) -> tuple[str, int, bool] | None:
    """(ip, port, exact) from ``--to-destination ip[-ip2][:port[-port2]]``; exact False for ranges."""
    host, port_text = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, port_text = value[1:end], value[end + 1:].lstrip(":")
    elif value.count(":") == 1:
        host, port_text = value.split(":", 1)
    exact = True
    if "-" in host:
        host = host.split("-", 1)[0]
        exact = False
    port = dport
    if port_text:
        if "-" in port_text:
            port_text = port_text.split("-", 1)[0]
            exact = False
        try:
            port = int(port_text)
        except ValueError:
            return None
    if _parse_ip(host) is None:
        return None
    return host, port, exact


# --------------------------------------------------------------------------------------------------
# The kernel walk


_Flow = str  # "return" (back to the caller) or a verdict: ACCEPT (end of this table), DROP, REJECT


@dataclass
class _Walker:
    dump: IptablesDump
    ctx: _Context
    options: TraceOptions
    compiled: dict[int, _Compiled] = field(default_factory=dict)
    rest: dict[int, _Compiled] = field(default_factory=dict)
    lost: float = 0.0

    def evaluate(self, rule: Rule, br: _Branch) -> tuple[list[_Branch], list[_Branch]]:
        """(branches where the rule matches, branches where it does not)."""
        key = id(rule)  # the dump outlives this walk, so ids are stable keys
        first = self.compiled.get(key)
        if first is None:
            first = self.compiled[key] = _compile_addresses(rule, self.ctx.packet.protocol)
        pending = [br]
        failed: list[_Branch] = []
        for check in first.checks:
            if check(self.ctx, br) is not True:  # address and protocol checks never split
                return [], [br]
        rest = self.rest.get(key)
        if rest is None:
            rest = self.rest[key] = _compile_rest(rule, self.ctx.packet.protocol)
        # Cheap, decisive checks first, so a rule that cannot match never splits a branch.
        for check in rest.checks:
            nxt: list[_Branch] = []
            for cur in pending:
                res = check(self.ctx, cur)
                if res is True:
                    nxt.append(cur)
                    continue
                if res is False:
                    failed.append(cur)
                    continue
                for alt in res:
                    b = replace(cur, prob=cur.prob * alt.factor, uncertain=cur.uncertain or alt.uncertain)
                    if alt.pin is not None:
                        b = replace(b, pinned=alt.pin)
                    if alt.unpin is not None:
                        b = replace(b, not_pinned=b.not_pinned | {alt.unpin})
                    if alt.note:
                        b = b.note(alt.note)
                    if alt.action:
                        b = b.step(TraceStep(rule.table, rule.chain, rule.index, rule.text, alt.action))
                    if alt.matched:
                        nxt.append(b)
                    else:
                        failed.append(b)
            pending = nxt
            if not pending:
                break
        return pending, failed

    def merge(self, branches: list[_Branch], where: str) -> list[_Branch]:
        merged, lost = merge_branches(branches, self.options.max_states, where, self.ctx.warn)
        self.lost += lost
        return merged

    def run_chain(self, table: str, name: str, branches: list[_Branch], depth: int,
                  stack: tuple[str, ...]) -> list[tuple[_Branch, _Flow]]:
        chain = self.dump.chain(table, name)
        done: list[tuple[_Branch, _Flow]] = []
        if chain is None:
            return [(b, "return") for b in branches]
        active = branches
        for rule in chain.rules:
            if not active:
                break
            nxt: list[_Branch] = []
            for br in active:
                matched, failed = self.evaluate(rule, br)
                nxt.extend(failed)
                for m in matched:
                    self.apply_target(table, chain, rule, m, depth, stack, nxt, done)
            active = self.merge(nxt, f"{table} {name} rule {rule.index}")
        done.extend((b, "return") for b in active)
        return done

    def enter(self, table: str, target: str, br: _Branch, depth: int,
              stack: tuple[str, ...]) -> list[tuple[_Branch, _Flow]] | None:
        """Walk a jumped-to chain, or None when the loop/depth guard refuses."""
        if target in stack:
            self.ctx.warn(f"{table} chain {target} jumps back into itself ({' -> '.join((*stack, target))}); "
                          "iptables would refuse such rules")
            return None
        if depth >= self.options.max_depth:
            self.ctx.warn(f"jumps nested deeper than {self.options.max_depth} chains at {table} {target}")
            return None
        return self.run_chain(table, target, [br], depth + 1, (*stack, target))

    def apply_target(self, table: str, chain: Chain, rule: Rule, br: _Branch, depth: int,
                     stack: tuple[str, ...], cont: list[_Branch], done: list[tuple[_Branch, _Flow]]) -> None:
        target = rule.target

        def step(action: str) -> _Branch:
            return br.step(TraceStep(table, chain.name, rule.index, rule.text, action))

        if target is None:
            cont.append(step("matched"))
            return
        if self.dump.chain(table, target) is not None and target not in BUILTIN_CHAINS:
            kind = "goto" if rule.goto else "jump"
            results = self.enter(table, target, step(kind), depth, stack)
            if results is None:
                cont.append(replace(step(f"{kind} not followed (loop guard)"), uncertain=True))
                return
            for b, flow in results:
                if flow == "return" and not rule.goto:
                    cont.append(b)
                else:
                    # After a goto, falling off the target returns to *our* caller.
                    done.append((b, flow))
            return
        if target == "RETURN":
            done.append((step("RETURN"), "return"))
            return
        if target in _VERDICT_TARGETS:
            done.append((step(target), target))
            return
        if target == "DNAT":
            self.dnat(table, chain, rule, br, done)
            return
        if target in ("SNAT", "MASQUERADE"):
            to = rule.target_option("--to-source")
            how = "MASQUERADE" if target == "MASQUERADE" else f"SNAT to {to.value if to else '?'}"
            b = step(how)
            done.append((replace(b, snat=how), "ACCEPT"))
            return
        if target == "REDIRECT":
            self.redirect(table, chain, rule, br, done)
            return
        if target == "MARK":
            changed = _apply_mark(br.mark, rule.target_options)
            if changed is None:
                cont.append(replace(step("uncertain: MARK options not understood"), uncertain=True))
                return
            new, words = changed
            cont.append(replace(step(words), mark=new))
            return
        if target == "CONNMARK":
            cont.append(self.connmark(step, br, rule))
            return
        if target == "NOTRACK" or (target == "CT" and rule.target_option("--notrack") is not None):
            cont.append(replace(step("conntrack disabled (NOTRACK)"), untracked=True))
            return
        if target == "CT":
            cont.append(step("CT (connection template; no effect on the verdict)"))
            return
        if target == KUBE_MARK_MASQ:
            # kube-proxy's own chain is missing from the dump: do what it would have done.
            mark = self.options.masquerade_mark
            b = step(f"mark {mark:#x} (chain {KUBE_MARK_MASQ} not in the dump; assumed)")
            b = b.note(f"{table} {KUBE_MARK_MASQ} is not in the dump; assumed it sets mark {mark:#x}")
            cont.append(replace(b, mark=br.mark | mark))
            return
        if target in _PASSIVE_TARGETS:
            cont.append(step(f"{target} (no effect on the verdict)"))
            return
        if target in _UNMODELLED_TERMINAL:
            b = replace(step(f"uncertain: target {target} not modelled"), uncertain=True)
            b = b.note(f"target {target} not modelled; assumed it lets the packet through")
            done.append((b, "ACCEPT"))
            return
        if target in BUILTIN_CHAINS:
            self.ctx.warn(f"{table} {chain.name} rule {rule.index} jumps to built-in chain {target}")
        else:
            self.ctx.warn(f"{table} {chain.name} rule {rule.index} jumps to {target}, which is neither a "
                          "chain in this table nor a target svctrace knows; treated as a no-op")
        cont.append(replace(step(f"uncertain: target {target} not modelled"), uncertain=True))

    def connmark(self, step: Callable[[str], _Branch], br: _Branch, rule: Rule) -> _Branch:
        opts = rule.target_options
        names = {o.name for o in opts}
        mask_opt = rule.target_option("--mask")
        parsed_mask = _parse_mark(mask_opt.value) if mask_opt is not None else None
        mask = parsed_mask[0] if parsed_mask is not None else 0xFFFFFFFF
        if "--save-mark" in names:
            return replace(step("CONNMARK save"), ctmark=(br.ctmark & ~mask) | (br.mark & mask))
        if "--restore-mark" in names:
            return replace(step("CONNMARK restore"), mark=(br.mark & ~mask) | (br.ctmark & mask))
        changed = _apply_mark(br.ctmark, opts, prefix="conn")
        if changed is None:
            return replace(step("uncertain: CONNMARK options not understood"), uncertain=True)
        return replace(step(changed[1]), ctmark=changed[0])

    def dnat(self, table: str, chain: Chain, rule: Rule, br: _Branch,
             done: list[tuple[_Branch, _Flow]]) -> None:
        tos = [o for o in rule.target_options if o.name == "--to-destination"]
        parsed = _split_dnat(tos[0].value, br.dport) if tos else None
        if parsed is None:
            b = replace(br.step(TraceStep(table, chain.name, rule.index, rule.text,
                                          "uncertain: DNAT destination not understood")), uncertain=True)
            done.append((b, "ACCEPT"))
            return
        ip, port, exact = parsed
        action = f"DNAT to {format_address(ip, port)}"
        b = br.step(TraceStep(table, chain.name, rule.index, rule.text, action))
        if not exact or len(tos) > 1:
            b = b.note(f"DNAT picks one address/port out of {', '.join(o.value for o in tos)}; "
                       "the first is shown")
        done.append((replace(b, dst=ip, dport=port, dnat=True), "ACCEPT"))

    def redirect(self, table: str, chain: Chain, rule: Rule, br: _Branch,
                 done: list[tuple[_Branch, _Flow]]) -> None:
        to = rule.target_option("--to-ports")
        port = br.dport
        if to is not None:
            with contextlib.suppress(ValueError):
                port = int(to.value.split("-", 1)[0])
        # REDIRECT sends to the incoming interface's primary address (loopback for local traffic).
        if self.ctx.packet.origin == "node" or not self.ctx.local:
            ip = "::1" if self.ctx.packet.family == 6 else "127.0.0.1"
        else:
            fam = [str(a) for a in sorted(self.ctx.local, key=str) if a.version == self.ctx.packet.family]
            ip = fam[0] if fam else ("::1" if self.ctx.packet.family == 6 else "127.0.0.1")
        b = br.step(TraceStep(table, chain.name, rule.index, rule.text,
                              f"REDIRECT to {format_address(ip, port)}"))
        b = b.note("REDIRECT rewrites to an address of the receiving interface; the node address shown "
                   "may differ")
        done.append((replace(b, dst=ip, dport=port, dnat=True), "ACCEPT"))

    def hook(self, table: str, chain_name: str, branches: list[_Branch]) -> tuple[list[_Branch],
                                                                                   list[tuple[_Branch, str]]]:
        """Walk one built-in chain: (branches that go on, branches that ended with DROP/REJECT)."""
        if not branches:
            return [], []
        if self.dump.table(table) is None:
            return branches, []
        if table == "nat":
            # The nat table only sees tracked packets.
            tracked = [b for b in branches if not b.untracked]
            skipped = [b for b in branches if b.untracked]
        else:
            tracked, skipped = branches, []
        chain = self.dump.chain(table, chain_name)
        policy = (chain.policy if chain is not None else None) or "ACCEPT"
        results = self.run_chain(table, chain_name, tracked, 0, (chain_name,)) if chain is not None else [
            (b, "return") for b in tracked]
        go_on: list[_Branch] = list(skipped)
        ended: list[tuple[_Branch, str]] = []
        for b, flow in results:
            if flow == "return":
                if chain is not None and (chain.rules or policy != "ACCEPT"):
                    shown = policy if chain.policy else f"{policy} (no policy in the dump; kernel default)"
                    b = b.step(TraceStep(table, chain_name, None, f":{chain_name} {chain.policy or '-'}",
                                         f"policy {shown}"))
                flow = policy
            if flow in ("DROP", "REJECT"):
                ended.append((b, flow))
            else:
                go_on.append(b)
        return self.merge(go_on, f"{table} {chain_name}"), ended

    def route_step(self, br: _Branch, local: bool, via: str) -> _Branch:
        where = "a local address" if local else "not a local address"
        action = "route: deliver locally (INPUT)" if local else "route: forward (FORWARD)"
        return br.step(TraceStep("routing", via, None, f"{br.dst} is {where}", action))


def _reachability_warnings(dump: IptablesDump, ctx: _Context) -> None:
    nat = dump.table("nat")
    if nat is None or nat.chain("KUBE-SERVICES") is None:
        return
    entry = ("PREROUTING",) if ctx.packet.origin != "node" else ("OUTPUT",)
    for name in entry:
        chain = nat.chain(name)
        if chain is None or not any(r.target == "KUBE-SERVICES" for r in chain.rules):
            ctx.warn(f"nat {name} has no jump to KUBE-SERVICES in this dump, so no Service rule is reached "
                     "(kube-proxy adds those jumps outside its restore data; was the dump complete?)")


# A hook at LOCAL_IN, after filter INPUT, for a mode that takes packets over there (IPVS): given a branch
# delivered locally, None leaves it delivered; otherwise the branches it becomes, each with "out" (sent on
# through LOCAL_OUT and POSTROUTING, as IPVS does after rewriting the destination), "local" (rewritten but
# still delivered on this node) or a verdict (DROP/REJECT) that ends it.
LocalIn = Callable[["_Branch"], "list[tuple[_Branch, str]] | None"]
# The branch type, for such hooks (they rewrite ``dst``/``dport`` and the share with dataclasses.replace).
Branch = _Branch


def _trace_kernel(dump: IptablesDump, packet: Packet, ctx: _Context, options: TraceOptions,
                  local_in: LocalIn | None = None) -> TraceResult:
    walker = _Walker(dump, ctx, options)
    _reachability_warnings(dump, ctx)
    start = _Branch(src=packet.src, dst=packet.dst, sport=packet.sport, dport=packet.dport,
                    in_iface=packet.in_interface, out_iface=None)
    ended: list[tuple[_Branch, str]] = []

    def run(seq: Iterable[tuple[str, str]], branches: list[_Branch]) -> list[_Branch]:
        for table, chain in seq:
            branches, stopped = walker.hook(table, chain, branches)
            ended.extend(stopped)
        return branches

    def not_martian(branches: list[_Branch], via: str) -> list[_Branch]:
        kept = []
        for b in branches:
            reason = martian(b, packet.origin, ctx.is_local)
            if reason is None:
                kept.append(b)
            elif packet.family == 6 or options.route_localnet is False:
                why = "IPv6 never routes ::1 off the node" if packet.family == 6 else "route_localnet=0"
                ended.append((b.step(TraceStep("routing", via, None, reason, f"DROP (martian; {why})")),
                              "DROP"))
            else:
                if options.route_localnet is None:
                    ctx.warn("assumed net.ipv4.conf.all.route_localnet=1 (kube-proxy sets it for localhost "
                             "NodePorts); with 0 the kernel drops this packet as a martian")
                kept.append(b.note(f"{reason}: needs route_localnet=1"))
        return kept

    def hand_over(branches: list[_Branch]) -> list[_Branch]:
        """Give locally delivered branches to ``local_in``; walk what it sends on through POSTROUTING."""
        if local_in is None:
            return branches
        kept: list[_Branch] = []
        sent: list[_Branch] = []
        for b in branches:
            got = local_in(b)
            if got is None:
                kept.append(b)
                continue
            for nb, flow in got:
                if flow == "out":
                    sent.append(replace(nb, out_iface=options.out_interface))
                elif flow == "local":
                    kept.append(nb)
                else:
                    ended.append((nb, flow))
        # The nat table is not consulted in OUTPUT again (conntrack holds the destination binding); the
        # source binding is made in POSTROUTING, where kube-proxy masquerades.
        sent = run((("filter", "OUTPUT"), ("security", "OUTPUT"), ("mangle", "POSTROUTING"),
                    ("nat", "POSTROUTING")), sent)
        return kept + sent

    if packet.origin == "node":
        out = run((("raw", "OUTPUT"), ("mangle", "OUTPUT"), ("nat", "OUTPUT")), [start])
        # Routing (again, after DNAT) picks the way out; a local destination leaves through lo.
        out = not_martian(out, "OUTPUT")
        routed = [replace(b, out_iface="lo" if ctx.is_local(b.dst) else options.out_interface) for b in out]
        out = run((("filter", "OUTPUT"), ("security", "OUTPUT"), ("mangle", "POSTROUTING"),
                   ("nat", "POSTROUTING")), routed)
        local = [replace(walker.route_step(b, True, "OUTPUT"), in_iface="lo", out_iface=None)
                 for b in out if ctx.is_local(b.dst)]
        away = [b for b in out if not ctx.is_local(b.dst)]
        local = run((("raw", "PREROUTING"), ("mangle", "PREROUTING"), ("mangle", "INPUT"),
                     ("filter", "INPUT"), ("security", "INPUT")), local)
        final = away + hand_over(local)
    else:
        pre = run((("raw", "PREROUTING"), ("mangle", "PREROUTING"), ("nat", "PREROUTING")), [start])
        pre = not_martian(pre, "PREROUTING")
        to_local = [walker.route_step(b, True, "PREROUTING") for b in pre if ctx.is_local(b.dst)]
        forward = [replace(walker.route_step(b, False, "PREROUTING"), out_iface=options.out_interface)
                   for b in pre if not ctx.is_local(b.dst)]
        to_local = run((("mangle", "INPUT"), ("filter", "INPUT"), ("security", "INPUT"), ("nat", "INPUT")),
                       to_local)
        forward = run((("mangle", "FORWARD"), ("filter", "FORWARD"), ("security", "FORWARD"),
                       ("mangle", "POSTROUTING"), ("nat", "POSTROUTING")), forward)
        final = forward + hand_over(to_local)
    outcomes = finish(final, ended, packet.origin, ctx.is_local)
    if walker.lost > 0:
        ctx.warn(f"outcome shares sum to {1 - walker.lost:.3g}: some branches were cut (max_states)")
    return TraceResult(packet=packet, mode="iptables", outcomes=outcomes, warnings=tuple(ctx.warnings))


# --------------------------------------------------------------------------------------------------
# kube-proxy's unit-test tracer (pkg/proxy/iptables/proxier_test.go tracePacket), ported


_KP_FILTER_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL")


@dataclass
class _KubeProxyTracer:
    dump: IptablesDump
    local: frozenset[str]
    protocol: str
    src: str
    dst: str
    dport: str
    outputs: list[str] = field(default_factory=list)
    found: list[tuple[str, float, tuple[TraceStep, ...], bool]] = field(default_factory=list)
    masq: bool = False
    share: float = 1.0
    depth: int = 0

    @staticmethod
    def _address(opt: Option, value: str) -> bool:
        ip = _parse_ip(value)
        text = opt.value
        if ip is None:
            return False
        if "/" in text:
            net = _parse_net(text)
            hit = net is not None and net.version == ip.version and ip in net
        else:
            other = _parse_ip(text)
            hit = other is not None and other == ip
        return _neg(hit, opt.negated)

    def _addrtype(self, opt: Option | None, value: str) -> bool:
        if opt is None:
            return True
        actual = "LOCAL" if value in self.local else "not-matched"
        return _neg(opt.value == actual, opt.negated)

    def matches(self, rule: Rule) -> bool:
        if rule.source is not None and not self._address(rule.source, self.src):
            return False
        if not self._addrtype(rule.option("--src-type"), self.src):
            return False
        proto = rule.protocol
        if proto is not None and not _neg(proto.value == self.protocol, proto.negated):
            return False
        if rule.destination is not None and not self._address(rule.destination, self.dst):
            return False
        if not self._addrtype(rule.option("--dst-type"), self.dst):
            return False
        dport = rule.dport
        if dport is not None and not _neg(dport.value == self.dport, dport.negated):
            return False
        # Rules that look at history (affinity, mark, conntrack state) never match a first packet.
        return not (rule.option("--rcheck") or rule.option("--mark") or rule.option("--ctstate"))

    def run(self, table: str, name: str, path: tuple[TraceStep, ...]) -> bool:
        """Walk a chain; True when it hit a terminal target (kube-proxy's ``runChain``)."""
        chain = self.dump.chain(table, name)
        if chain is None or self.depth > 64:
            return False
        self.depth += 1
        try:
            for rule in chain.rules:
                target = rule.target
                if target is None or not self.matches(rule):
                    continue
                here = TraceStep(table, name, rule.index, rule.text, target)
                if target == KUBE_MARK_MASQ:
                    self.masq = True
                    path = (*path, replace(here, action="mark for masquerade"))
                    continue
                if target in _VERDICT_TARGETS or target == "DNAT":
                    value = target
                    if target == "DNAT":
                        to = rule.target_option("--to-destination")
                        value = to.value if to is not None else ""
                        here = replace(here, action=f"DNAT to {value}")
                    self.outputs.append(value)
                    self.found.append((value, self.share, (*path, here), self.masq))
                    return True
                p = rule.probability
                kind = "goto" if rule.goto else "jump"
                before = self.share
                if p is not None:
                    self.share = before * p
                terminated = self.run(table, target, (*path, replace(here, action=kind)))
                if terminated and p is None:
                    return True
                # A probabilistic jump that ended: the rest of the chain sees the other 1-p.
                self.share = before * (1 - p) if terminated and p is not None else before
            return False
        finally:
            self.depth -= 1


def _dest_ip(output: str) -> str:
    if output.startswith("["):
        return output[1:output.find("]")]
    return output.split(":", 1)[0]


def _trace_kube_proxy_test(dump: IptablesDump, packet: Packet, local_ips: Iterable[str]) -> TraceResult:
    local = frozenset({"127.0.0.1", "::1", *local_ips})
    tracer = _KubeProxyTracer(dump, local, packet.protocol, packet.src, packet.dst, str(packet.dport))
    tracer.run("nat", "PREROUTING", ())
    nat_found = list(tracer.found)
    if tracer.outputs:
        tracer.dst = _dest_ip(tracer.outputs[0])
    rest = 1.0 - sum(share for _, share, _, _ in nat_found)
    tracer.found = []
    for name in _KP_FILTER_CHAINS:
        tracer.share = max(rest, 0.0)
        tracer.run("filter", name, ())
        if any(share > 0 for _, share, _, _ in tracer.found):
            rest = 0.0
    filter_found = tracer.found
    outcomes: list[Outcome] = []
    for value, share, path, masq in nat_found:
        outcomes.append(Outcome(verdict="DNAT", destination=value, probability=share, masquerade=masq,
                                path=path))
    first_filter = True
    for value, share, path, masq in filter_found:
        outcomes.append(Outcome(verdict=value, destination=None, probability=share if first_filter else 0.0,
                                masquerade=masq, path=path))
        first_filter = False
    if not filter_found and rest > 1e-12:
        outcomes.append(Outcome(verdict="ACCEPT", destination=None, probability=rest, masquerade=tracer.masq,
                                notes=("no rule matched",)))
    view = KubeProxyTestView(outputs=tuple(tracer.outputs), masq=tracer.masq)
    return TraceResult(packet=packet, mode="iptables", outcomes=tuple(outcomes), semantics="kube-proxy-test",
                       kube_proxy_test=view)


# --------------------------------------------------------------------------------------------------
# Public API


def trace_iptables(dump: IptablesDump, packet: Packet, *, local_ips: Iterable[str] = (),
                   options: TraceOptions | None = None,
                   ipsets: Mapping[str, Collection[str]] | None = None,
                   local_in: LocalIn | None = None) -> TraceResult:
    """Trace one new connection through an iptables dump; ``local_ips`` are the node's addresses."""
    opts = options or TraceOptions()
    local = tuple(local_ips)
    if opts.kube_proxy_test_semantics:
        return _trace_kube_proxy_test(dump, packet, local)
    ctx = _Context(local, ipsets, packet, opts)
    return _trace_kernel(dump, packet, ctx, opts, local_in)


def kube_proxy_output(result: TraceResult) -> tuple[str, bool]:
    """kube-proxy's test-tracer answer for a result traced with kube-proxy test semantics: (output, masq)."""
    if result.kube_proxy_test is None:
        raise ValueError("the result was not traced with kube_proxy_test_semantics=True")
    return result.kube_proxy_test.output, result.kube_proxy_test.masq
