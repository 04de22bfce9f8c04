"""Stage 3 of reading ``iptables-save`` text: type what a rule's options mean (svctrace.model.matches).

Each basic option, match module and target extension is typed once and the result shared by every
rule that writes it the same way (a 10,000-Service table repeats its pieces a hundred thousand times).
What cannot be typed (an unknown module, an option a module does not take, a value that does not
read) becomes an ``UnknownMatch`` with the reason, or an ``OtherAction``: never an error, since the
rule is still shown and the tracer still follows both of its outcomes.
"""

from __future__ import annotations

from svctrace.model.actions import (
    Action,
    DnatAction,
    MarkAction,
    NatRange,
    NotrackAction,
    OtherAction,
    RejectAction,
    SnatAction,
)
from svctrace.model.addresses import Prefix, ip_value, parse_prefix
from svctrace.model.matches import (
    DST,
    SRC,
    AddrMatch,
    AddrTypeMatch,
    CtAddrMatch,
    CtDirMatch,
    CtPortMatch,
    CtProtoMatch,
    CtStateMatch,
    FragmentMatch,
    IfaceMatch,
    IpRangeMatch,
    IpsetMatch,
    MarkMatch,
    Match,
    PhysdevMatch,
    PktTypeMatch,
    PortMatch,
    ProtocolOnly,
    ProtoMatch,
    RecentMatch,
    StatisticMatch,
    TcpFlagsMatch,
    UnknownMatch,
)
from svctrace.parsers.iptables_values import parse_mark, parse_nat_range, parse_ports
from svctrace.parsers.iptables_words import Option, RawMatch

PROTOCOL_NUMBERS = {"6": "tcp", "17": "udp", "132": "sctp", "1": "icmp", "58": "ipv6-icmp", "136": "udplite",
                    "0": "all"}
_PORT_MODULES = frozenset({"tcp", "udp", "sctp", "udplite", "dccp"})
_PORT_OPTIONS = {"--dport": "dport", "--destination-port": "dport", "--sport": "sport", "--source-port": "sport"}
_MULTIPORT_OPTIONS = {"--dports": "dport", "--destination-ports": "dport", "--sports": "sport",
                      "--source-ports": "sport", "--ports": "either"}
_CT_ADDRESSES = {"--ctorigsrc": "origsrc", "--ctorigdst": "origdst", "--ctreplsrc": "replsrc",
                 "--ctrepldst": "repldst"}
_CT_PORTS = {"--ctorigsrcport": "origsrc", "--ctorigdstport": "origdst", "--ctreplsrcport": "replsrc",
             "--ctrepldstport": "repldst"}
_SYN_MASK = frozenset({"SYN", "RST", "ACK", "FIN"})
_ALL_FLAGS = frozenset({"SYN", "ACK", "FIN", "RST", "URG", "PSH"})

# The rank of a match in evaluation order: decisive ones first, those that may split a branch last
# (in the order written), so a rule that cannot match never splits a branch.
_SPLITTING = (IfaceMatch, RecentMatch, IpsetMatch, PhysdevMatch, StatisticMatch, UnknownMatch, AddrTypeMatch,
              PortMatch)


def protocol_name(text: str) -> str:
    value = text.lower()
    return PROTOCOL_NUMBERS.get(value, value)


def prefixes(values: tuple[str, ...]) -> tuple[Prefix, ...] | None:
    """``10.0.0.0/8,10.1.0.1`` (possibly several words) as Prefixes; None if any part does not read."""
    out = []
    for part in values:
        for text in part.split(","):
            if not text:
                continue
            p = parse_prefix(text)
            if p is None:
                return None
            out.append(p)
    return tuple(out) if out else None


def type_basic(opt: Option) -> Match:
    """``-p``, ``-s``, ``-d``, ``-i``, ``-o``, ``-f`` (names already short)."""
    name = opt.name
    if name == "-p":
        return ProtoMatch(protocol_name(opt.value), opt.negated)
    if name in ("-s", "-d"):
        nets = prefixes(opt.values)
        if nets is None:
            return UnknownMatch(str(opt), f"address {opt.value!r} not understood")
        return AddrMatch(SRC if name == "-s" else DST, nets, opt.negated)
    if name in ("-i", "-o"):
        return IfaceMatch("in" if name == "-i" else "out", opt.value, opt.negated)
    if name == "-f":
        return FragmentMatch(opt.negated)
    return UnknownMatch(str(opt), f"option {name} not modelled")


def _ports(opt: Option, field: str, protocol: str | None, what: str) -> Match:
    try:
        ranges = tuple(r for v in opt.values for r in parse_ports(v))
    except ValueError:
        return UnknownMatch(str(opt), f"{what} {opt.value!r} not understood")
    return PortMatch(field, ranges, opt.negated, protocol)


def _tcp_flags(opt: Option) -> Match:
    if opt.name == "--syn":
        return TcpFlagsMatch(_SYN_MASK, frozenset({"SYN"}), opt.negated)
    if len(opt.values) < 2:
        return UnknownMatch(str(opt), "tcp flags not understood")
    mask = frozenset(f.upper() for f in opt.values[0].split(","))
    comp = frozenset(f.upper() for f in opt.values[1].split(",")) - {"NONE"}
    if "ALL" in mask:
        mask = _ALL_FLAGS
    return TcpFlagsMatch(mask, comp, opt.negated)


def _statistic(m: RawMatch) -> Match:
    mode_opt = m.option("--mode")
    mode = mode_opt.value if mode_opt is not None else "random"
    if mode == "random":
        opt = m.option("--probability")
        if opt is None:
            return StatisticMatch(1.0, raw="1")
        try:
            p = float(opt.value)
        except ValueError:
            return UnknownMatch(str(m), f"statistic probability {opt.value!r} not understood")
        return StatisticMatch(p, opt.negated, raw=opt.value)
    every = m.option("--every")
    try:
        n = int(every.value) if every is not None else 1
        if n <= 0:
            raise ValueError(n)
    except ValueError:
        return UnknownMatch(str(m), "statistic --mode nth not understood")
    return StatisticMatch(1.0 / n, every.negated if every is not None else False, nth=True,
                          raw=every.value if every is not None else "1")


def _recent(m: RawMatch) -> list[Match]:
    name_opt = m.option("--name")
    name = name_opt.value if name_opt is not None else "DEFAULT"
    secs = m.option("--seconds")
    hits = m.option("--hitcount")
    seconds = int(secs.value) if secs is not None and secs.value.isdigit() else None
    hitcount = int(hits.value) if hits is not None and hits.value.isdigit() else None
    side = DST if m.option("--rdest") is not None else SRC
    reap = m.option("--reap") is not None
    out: list[Match] = []
    for opt in m.options:
        op = opt.name[2:]
        if op in ("rcheck", "update", "remove", "set"):
            out.append(RecentMatch(name, op, seconds, reap, hitcount, side, opt.negated))
    return out


def _addrtype(m: RawMatch) -> list[Match]:
    limit = None
    for opt in m.options:
        if opt.name in ("--limit-iface-in", "--limit-iface-out"):
            limit = opt.name.rsplit("-", 1)[-1]
    out: list[Match] = []
    for opt in m.options:
        if opt.name in ("--src-type", "--dst-type"):
            types = frozenset(t.upper() for t in opt.value.split(",") if t)
            out.append(AddrTypeMatch(SRC if opt.name == "--src-type" else DST, types, opt.negated, limit))
        elif opt.name not in ("--limit-iface-in", "--limit-iface-out"):
            out.append(UnknownMatch(str(opt), f"addrtype option {opt.name} not modelled"))
    return out


def _mark(m: RawMatch) -> list[Match]:
    field = "ctmark" if m.module == "connmark" else "mark"
    out: list[Match] = []
    for opt in m.options:
        if opt.name != "--mark":
            out.append(UnknownMatch(str(opt), f"{m.module} option {opt.name} not modelled"))
            continue
        try:
            value, mask = parse_mark(opt.value)
        except ValueError:
            out.append(UnknownMatch(str(opt), f"mark {opt.value!r} not understood"))
            continue
        out.append(MarkMatch(field, value, mask, opt.negated))
    return out


def _conntrack(m: RawMatch) -> list[Match]:
    out: list[Match] = []
    for opt in m.options:
        name = opt.name
        if name in ("--ctstate", "--state"):
            out.append(CtStateMatch(frozenset(s.upper() for s in opt.value.split(",") if s), opt.negated))
        elif name == "--ctproto":
            out.append(CtProtoMatch(protocol_name(opt.value), opt.negated))
        elif name in _CT_ADDRESSES:
            nets = prefixes(opt.values)
            out.append(CtAddrMatch(_CT_ADDRESSES[name], nets, opt.negated) if nets is not None
                       else UnknownMatch(str(opt), "conntrack address not understood"))
        elif name in _CT_PORTS:
            typed = _ports(opt, "dport", None, "conntrack port")
            out.append(CtPortMatch(_CT_PORTS[name], typed.ranges, opt.negated) if isinstance(typed, PortMatch)
                       else typed)
        elif name == "--ctdir":
            out.append(CtDirMatch(opt.value.upper(), opt.negated))
        else:
            out.append(UnknownMatch(f"-m conntrack {opt}", f"conntrack {opt.name} not modelled"))
    return out


def _port_module(m: RawMatch) -> list[Match]:
    module = m.module
    protocol = module if module in _PORT_MODULES else None
    out: list[Match] = []
    for opt in m.options:
        if opt.name in _PORT_OPTIONS:
            out.append(_ports(opt, _PORT_OPTIONS[opt.name], protocol, "port"))
        elif opt.name in ("--tcp-flags", "--syn"):
            out.append(_tcp_flags(opt))
        else:
            out.append(UnknownMatch(str(opt), f"{module} option {opt.name} not modelled"))
    if protocol is not None and not any(isinstance(x, PortMatch) for x in out):
        out.append(ProtocolOnly(protocol))  # the module only ever matches its own protocol
    return out


def _multiport(m: RawMatch) -> list[Match]:
    out: list[Match] = []
    for opt in m.options:
        field = _MULTIPORT_OPTIONS.get(opt.name)
        out.append(_ports(opt, field, None, "multiport") if field is not None
                   else UnknownMatch(str(opt), f"multiport option {opt.name} not understood"))
    return out


def _ipset(m: RawMatch) -> list[Match]:
    out: list[Match] = []
    for opt in m.options:
        if opt.name in ("--match-set", "--set"):
            name = opt.values[0] if opt.values else ""
            flags = tuple(opt.values[1].split(",")) if len(opt.values) > 1 else (SRC,)
            out.append(IpsetMatch(name, flags, opt.negated))
    return out


def _iprange(m: RawMatch) -> list[Match]:
    out: list[Match] = []
    for opt in m.options:
        if opt.name not in ("--src-range", "--dst-range"):
            continue
        lo_text, _, hi_text = opt.value.partition("-")
        lo, hi = ip_value(lo_text), ip_value(hi_text or lo_text)
        if lo is None or hi is None or lo[0] != hi[0]:
            out.append(UnknownMatch(str(opt), f"range {opt.value!r} not understood"))
            continue
        out.append(IpRangeMatch(SRC if opt.name == "--src-range" else DST, lo[0], lo[1], hi[1], opt.negated,
                                opt.value))
    return out


def _physdev(m: RawMatch) -> list[Match]:
    out: list[Match] = []
    for opt in m.options:
        option = opt.name.removeprefix("--physdev-")
        if option in ("is-in", "is-out", "is-bridged"):
            out.append(PhysdevMatch(option, None, opt.negated))
        elif option in ("in", "out"):
            out.append(PhysdevMatch(option, opt.value or None, opt.negated))
        else:
            out.append(UnknownMatch(str(opt), f"physdev option {opt.name} not modelled"))
    return out


def type_match(m: RawMatch) -> list[Match]:
    """One ``-m`` module with its options as typed matches."""
    module = m.module.lower()
    if module in ("comment", "nfacct"):
        return []  # they only annotate and count; the comment is Rule.comment
    if module == "statistic":
        return [_statistic(m)]
    if module == "recent":
        return _recent(m)
    if module == "addrtype":
        return _addrtype(m)
    if module in ("mark", "connmark"):
        return _mark(m)
    if module in ("conntrack", "state"):
        return _conntrack(m)
    if module == "multiport":
        return _multiport(m)
    if module == "set":
        return _ipset(m)
    if module == "iprange":
        return _iprange(m)
    if module == "physdev":
        return _physdev(m)
    if module == "pkttype":
        return [PktTypeMatch(o.value.lower(), o.negated) for o in m.options if o.name == "--pkt-type"]
    if module in _PORT_MODULES or (m.options and all(o.name in _PORT_OPTIONS for o in m.options)):
        return _port_module(m)
    return [UnknownMatch(str(m), f"module {module} not modelled")]


def order(matches: list[Match]) -> tuple[Match, ...]:
    """Decisive matches first, then those that may split a branch, each group in written order."""
    later = [m for m in matches if isinstance(m, _SPLITTING)]
    if not later or len(later) == len(matches):
        return tuple(matches)
    return (*(m for m in matches if not isinstance(m, _SPLITTING)), *later)


def comment_of(matches: tuple[RawMatch, ...]) -> str | None:
    for m in matches:
        if m.module == "comment":
            opt = m.option("--comment")
            if opt is not None:
                return opt.value
    return None


# ---------------------------------------------------------------------------------------------------
# Targets


def _mark_action(field: str, opts: tuple[Option, ...]) -> Action | None:
    names = {o.name: o for o in opts}
    if field == "ctmark" and ("--save-mark" in names or "--restore-mark" in names):
        mask_opt = names.get("--mask") or names.get("--nfmask") or names.get("--ctmask")
        mask = 0xFFFFFFFF
        if mask_opt is not None:
            try:
                mask = parse_mark(mask_opt.value)[0]
            except ValueError:
                return None
        return MarkAction(field, "save" if "--save-mark" in names else "restore", 0, mask)
    for opt in opts:
        op = {"--set-xmark": "xset", "--set-mark": "set", "--or-mark": "or", "--and-mark": "and",
              "--xor-mark": "xor"}.get(opt.name)
        if op is None:
            continue
        try:
            value, mask = parse_mark(opt.value)
        except ValueError:
            return None
        return MarkAction(field, op, value, mask)
    return None


def type_action(target: str | None, opts: tuple[Option, ...]) -> Action | None:
    """What a target extension does; None for chains, verdicts and extensions without options."""
    if target is None:
        return None
    if target in ("DNAT", "REDIRECT"):
        flags = tuple(o.name[2:] for o in opts if o.name in ("--random", "--persistent"))
        if target == "REDIRECT":
            to = next((o for o in opts if o.name == "--to-ports"), None)
            if to is None:
                return DnatAction((), redirect=True, flags=flags)
            try:
                ports = parse_nat_range(":" + to.value)
            except ValueError as exc:
                return DnatAction((), redirect=True, flags=flags, problem=str(exc))
            return DnatAction((ports,), redirect=True, flags=flags)
        dests = [o for o in opts if o.name == "--to-destination"]
        if not dests:
            return DnatAction((), flags=flags, problem="DNAT rule without --to-destination")
        try:
            return DnatAction(tuple(parse_nat_range(o.value) for o in dests), flags=flags)
        except ValueError as exc:
            return DnatAction((), flags=flags, problem=str(exc), raw=" ".join(o.value for o in dests))
    if target in ("SNAT", "MASQUERADE"):
        flags = tuple(o.name[2:] for o in opts if o.name in ("--random", "--random-fully", "--persistent"))
        to = next((o for o in opts if o.name in ("--to-source", "--to-ports")), None)
        rng: NatRange | None = None
        if to is not None:
            try:
                rng = parse_nat_range(to.value if to.name == "--to-source" else ":" + to.value)
            except ValueError:
                rng = None
        return SnatAction(target == "MASQUERADE", rng, flags)
    if target in ("MARK", "CONNMARK"):
        return _mark_action("ctmark" if target == "CONNMARK" else "mark", opts) or \
            OtherAction(" ".join(map(str, opts)))
    if target == "REJECT":
        with_ = next((o.value for o in opts if o.name == "--reject-with"), None)
        return RejectAction(with_)
    if target == "NOTRACK" or (target == "CT" and any(o.name == "--notrack" for o in opts)):
        return NotrackAction()
    if opts:
        return OtherAction(" ".join(map(str, opts)))
    return None


class Typer:
    """Types rules, sharing the typed value of each distinct piece across a dump.

    The builder shares the objects of repeated pieces, so pieces are looked up by identity; each
    cache entry holds the objects it was made from, so an identity cannot be reused while cached.
    """

    __slots__ = ("_basic", "_matches", "_rules", "_actions")

    def __init__(self) -> None:
        self._basic: dict[int, tuple[Option, Match]] = {}
        self._matches: dict[int, tuple[RawMatch, tuple[Match, ...]]] = {}
        self._rules: dict[tuple[int, ...], tuple[object, tuple[Match, ...]]] = {}
        self._actions: dict[tuple[str, tuple[Option, ...]], Action | None] = {}

    def clear(self) -> None:
        self._basic.clear()
        self._matches.clear()
        self._rules.clear()
        self._actions.clear()

    def __len__(self) -> int:
        return len(self._basic) + len(self._matches) + len(self._rules) + len(self._actions)

    def matches(self, basic: tuple[Option, ...], raw: tuple[RawMatch, ...]) -> tuple[Match, ...]:
        kept = [m for m in raw if m.module != "comment"]
        key = (id(basic), *map(id, kept))
        got = self._rules.get(key)
        if got is not None:
            return got[1]
        out: list[Match] = []
        for opt in basic:
            b = self._basic.get(id(opt))
            if b is None:
                b = self._basic[id(opt)] = (opt, type_basic(opt))
            out.append(b[1])
        for m in kept:
            t = self._matches.get(id(m))
            if t is None:
                t = self._matches[id(m)] = (m, tuple(type_match(m)))
            out.extend(t[1])
        typed = order(out)
        self._rules[key] = ((basic, kept), typed)
        return typed

    def action(self, target: str | None, opts: tuple[Option, ...]) -> Action | None:
        if target is None or not opts and target not in ("DNAT", "REDIRECT", "SNAT", "MASQUERADE", "REJECT",
                                                          "NOTRACK"):
            return None
        key = (target, opts)
        if key in self._actions:
            return self._actions[key]
        got = self._actions[key] = type_action(target, opts)
        return got
