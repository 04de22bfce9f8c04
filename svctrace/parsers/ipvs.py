"""``ipvsadm -Sn`` and ``ipset save`` text -> the IPVS model (pure).

Lines are first split into words and options (``_split_*``), then typed (``_virtual_server``,
``_real_server``), as in the other parsers. Options this parser does not interpret are kept as written,
so a newer ipvsadm or ipset does not make a snapshot unreadable.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shlex
from dataclasses import dataclass, field

from svctrace.errors import InputError
from svctrace.model.ipvs import (
    FORWARD_MASQ,
    FORWARD_ROUTE,
    FORWARD_TUNNEL,
    IpSet,
    IpSets,
    IpvsTable,
    RealServer,
    VirtualServer,
)

_SAVE_HINT = "make the file on the node with `ipvsadm -Sn > node/ipvsadm.txt` (docs/snapshot.md)"
_IPSET_HINT = "make the file on the node with `ipset save > node/ipset.txt` (docs/snapshot.md)"

# The options naming a virtual server, long and short, and the protocol each one means.
_SERVICE_OPTS = {
    "-t": "TCP", "--tcp-service": "TCP",
    "-u": "UDP", "--udp-service": "UDP",
    "--sctp-service": "SCTP",
    "-f": "", "--fwmark-service": "",
}
_FORWARD_OPTS = {
    "-m": FORWARD_MASQ, "--masquerading": FORWARD_MASQ,
    "-g": FORWARD_ROUTE, "--gatewaying": FORWARD_ROUTE,
    "-i": FORWARD_TUNNEL, "--ipip": FORWARD_TUNNEL,
}
# Options that take a value; anything else starting with "-" is a flag.
_VALUED = {"-s", "--scheduler", "-p", "--persistent", "-M", "--netmask", "-b", "--sched-flags", "--pe",
           "-r", "--real-server", "-w", "--weight", "-x", "--u-threshold", "-y", "--l-threshold",
           "--tun-type", "--tun-port", "--tun-nocsum", "--tun-csum", "--tun-remcsum"}


# An IPv4 address already as ipaddress writes it (ASCII digits, no leading zeros, each octet at most 255): the
# common case of a 10,000-Service table's 240,000 addresses, kept as it is without building an address object.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
# The line each of kube-proxy's real servers is saved as (ipvsadm -Sn), typed at once; any other goes the general way.
_V4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_PORT = r"[1-9][0-9]{0,4}"
_REAL_SERVER_LINE = re.compile(rf"-a -([tu]) ({_V4}):({_PORT}) -r ({_V4}):({_PORT}) -m -w ([0-9]{{1,9}})")
# A line shlex would split only at spaces and tabs: printable ASCII without quotes or backslashes.
_PLAIN_LINE = re.compile(r"[\t\x20\x21\x23-\x26\x28-\x5b\x5d-\x7e]*")


def ip_text(text: str) -> str:
    """An address as ``str(ipaddress.ip_address(text))`` writes it; raises ValueError as it does."""
    if _CANONICAL_V4.fullmatch(text):
        return text
    return str(ipaddress.ip_address(text))


def split_words(line: str) -> list[str]:
    """``shlex.split(line)``: a plain line (most of ``ipset save``'s) split at its blanks, without shlex."""
    return line.split() if _PLAIN_LINE.fullmatch(line) else shlex.split(line)


def _bad(message: str, source: str, line: int, hint: str = _SAVE_HINT) -> InputError:
    return InputError(message, hint, path=source, line=line)


def split_address(text: str, source: str, line: int) -> tuple[str, int]:
    """``10.96.0.1:443`` or ``[fd00::1]:443`` -> (normalised address, port)."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise _bad(f"{text!r} is not ADDRESS:PORT", source, line)
    try:
        addr = ip_text(host)
    except ValueError:
        raise _bad(f"{host!r} is not a numeric IP address", source, line,
                   "ipvsadm printed names; save with `ipvsadm -Sn` (numeric) instead of `ipvsadm -S`") from None
    if not port.isdigit() or int(port) > 65535:
        raise _bad(f"{port!r} is not a port number", source, line,
                   "ipvsadm printed a service name; save with `ipvsadm -Sn` (numeric)")
    return addr, int(port)


@dataclass
class _Line:
    command: str  # -A | -a
    service: tuple[str, str]  # (service option, value)
    options: list[tuple[str, str | None]] = field(default_factory=list)


def _split_ipvsadm_line(words: list[str], source: str, line: int) -> _Line:
    command = words[0]
    service: tuple[str, str] | None = None
    options: list[tuple[str, str | None]] = []
    i = 1
    while i < len(words):
        word = words[i]
        if not word.startswith("-"):
            raise _bad(f"unexpected word {word!r}", source, line)
        if word in _SERVICE_OPTS:
            if i + 1 >= len(words):
                raise _bad(f"{word} needs an address", source, line)
            service = (word, words[i + 1])
            i += 2
            continue
        value: str | None = None
        if word in _VALUED:
            # -p's timeout is optional for ipvsadm's input; -S always writes it.
            if i + 1 < len(words) and not (word in ("-p", "--persistent") and words[i + 1].startswith("-")):
                value = words[i + 1]
                i += 1
            elif word not in ("-p", "--persistent"):
                raise _bad(f"{word} needs a value", source, line)
        options.append((word, value))
        i += 1
    if service is None:
        raise _bad("no virtual server (-t, -u, --sctp-service or -f)", source, line)
    return _Line(command, service, options)


def _int(value: str | None, what: str, source: str, line: int) -> int:
    if value is None or not value.isdigit():
        raise _bad(f"{what} {value!r} is not a number", source, line)
    return int(value)


def _service_key(spec: tuple[str, str], six: bool, source: str, line: int) -> tuple[str, str, int, int | None]:
    opt, value = spec
    proto = _SERVICE_OPTS[opt]
    if proto == "":
        mark = _int(value, "firewall mark", source, line)
        return "", "::" if six else "", 0, mark
    addr, port = split_address(value, source, line)
    return proto, addr, port, None


def _virtual_server(parsed: _Line, source: str, line: int) -> VirtualServer:
    six = any(opt in ("-6", "--ipv6") for opt, _ in parsed.options)
    proto, addr, port, mark = _service_key(parsed.service, six, source, line)
    scheduler = "wlc"  # ipvsadm's default when -s is absent
    timeout: int | None = None
    flags: list[str] = []
    for opt, value in parsed.options:
        if opt in ("-s", "--scheduler"):
            scheduler = value or scheduler
        elif opt in ("-p", "--persistent"):
            timeout = _int(value, "persistence timeout", source, line) if value is not None else 300
        elif opt in ("-6", "--ipv6"):
            continue
        else:
            flags.append(f"{opt} {value}" if value is not None else opt)
    return VirtualServer(protocol=proto, address=addr if mark is None else "", port=port, scheduler=scheduler,
                         persistent_timeout=timeout, flags=tuple(flags), fwmark=mark)


def _real_server(parsed: _Line, source: str, line: int) -> RealServer:
    addr: str | None = None
    port = 0
    weight = 1
    forward = FORWARD_ROUTE  # ipvsadm's default method is direct routing
    extra: list[str] = []
    for opt, value in parsed.options:
        if opt in ("-r", "--real-server"):
            if value is None:
                raise _bad("-r needs an address", source, line)
            if value.startswith("[") or value.count(":") == 1:
                addr, port = split_address(value, source, line)
            else:
                # A real server without a port takes the virtual server's port (ipvsadm's rule).
                try:
                    addr = ip_text(value)
                except ValueError:
                    raise _bad(f"{value!r} is not a numeric IP address", source, line) from None
        elif opt in ("-w", "--weight"):
            weight = _int(value, "weight", source, line)
        elif opt in _FORWARD_OPTS:
            forward = _FORWARD_OPTS[opt]
        else:
            extra.append(f"{opt} {value}" if value is not None else opt)
    if addr is None:
        raise _bad("-a without -r (the real server)", source, line)
    return RealServer(address=addr, port=port, weight=weight, forward=forward, options=tuple(extra))


def parse_ipvsadm_save(text: str, source: str) -> IpvsTable:
    """``ipvsadm -Sn`` output -> IpvsTable; real servers keep the order ipvsadm printed them in."""
    order: list[tuple[str, str, int, int | None]] = []
    servers: dict[tuple[str, str, int, int | None], VirtualServer] = {}
    reals: dict[tuple[str, str, int, int | None], list[RealServer]] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        plain = _REAL_SERVER_LINE.fullmatch(stripped)
        if plain is not None and int(plain[3]) < 65536 and int(plain[5]) < 65536:
            found = reals.get(("TCP" if plain[1] == "t" else "UDP", plain[2], int(plain[3]), None))
            if found is not None:  # (else the general way says what is wrong)
                found.append(RealServer(plain[4], int(plain[5]), int(plain[6]), FORWARD_MASQ))
                continue
        words = stripped.split()
        if words[0] in ("-A", "--add-service"):
            parsed = _split_ipvsadm_line(words, source, lineno)
            vs = _virtual_server(parsed, source, lineno)
            key = (vs.protocol, vs.address, vs.port, vs.fwmark)
            if key in servers:
                raise _bad(f"virtual server {vs.label} is defined twice", source, lineno)
            servers[key] = vs
            reals[key] = []
            order.append(key)
        elif words[0] in ("-a", "--add-server"):
            parsed = _split_ipvsadm_line(words, source, lineno)
            six = any(opt in ("-6", "--ipv6") for opt, _ in parsed.options)
            key = _service_key(parsed.service, six, source, lineno)
            if key[3] is not None:
                key = ("", "", 0, key[3])
            if key not in servers:
                raise _bad(f"real server for {parsed.service[1]}, which no earlier -A line defines", source, lineno)
            rs = _real_server(parsed, source, lineno)
            if rs.port == 0:
                rs = RealServer(rs.address, servers[key].port, rs.weight, rs.forward, options=rs.options)
            reals[key].append(rs)
        else:
            raise _bad(f"expected -A or -a, found {words[0]!r}", source, lineno,
                       "this does not look like `ipvsadm -Sn` output (`ipvsadm -Ln` is a different format); "
                       + _SAVE_HINT)
    return IpvsTable(services=tuple((servers[k], tuple(reals[k])) for k in order), source=source)


# ---------------------------------------------------------------------------------------------
# ipset save


def normalize_member(member: str) -> str:
    """A member in one spelling: lower case, IPv6 addresses compressed ("FD00:0::1,TCP:443" -> "fd00::1,tcp:443")."""
    parts = []
    for part in member.lower().split(","):
        head, sep, tail = part.partition("/")
        proto, colon, rest = head.partition(":")
        if not colon or proto in ("tcp", "udp", "sctp", "icmp", "icmpv6", "tcp6", "udp6"):
            # without a colon it is IPv4 or no address: ipaddress would give it back as written, or refuse it
            parts.append(part)
            continue
        with contextlib.suppress(ValueError):
            head = str(ipaddress.ip_address(head))
        parts.append(head + sep + tail)
    return ",".join(parts)


def parse_ipset_save(text: str, source: str) -> IpSets:
    """``ipset save`` output -> IpSets (sets in the order created, members in the order added)."""
    order: list[str] = []
    types: dict[str, str] = {}
    options: dict[str, tuple[str, ...]] = {}
    members: dict[str, list[str]] = {}
    comments: dict[str, list[tuple[str, str]]] = {}
    extras: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            words = split_words(stripped)
        except ValueError as exc:
            raise _bad(f"cannot split the line: {exc}", source, lineno, _IPSET_HINT) from None
        command = words[0]
        if command in ("create", "-N") and len(words) >= 3:
            name = words[1]
            if name in types:
                raise _bad(f"set {name} is created twice", source, lineno, _IPSET_HINT)
            types[name] = words[2]
            options[name] = tuple(w for w in words[3:] if w != "-exist")
            members[name] = []
            comments[name] = []
            extras[name] = []
            order.append(name)
        elif command in ("add", "-A") and len(words) >= 3:
            name = words[1]
            if name not in types:
                raise _bad(f"member of set {name}, which no earlier create line defines", source, lineno,
                           _IPSET_HINT)
            member = words[2]
            members[name].append(member)
            rest = words[3:]
            if "comment" in rest:
                i = rest.index("comment")
                if i + 1 >= len(rest):
                    raise _bad("comment without text", source, lineno, _IPSET_HINT)
                comments[name].append((member, rest[i + 1]))
                rest = rest[:i] + rest[i + 2:]
            if rest:
                extras[name].append((member, tuple(rest)))
        elif command in ("create", "add", "-N", "-A"):
            raise _bad(f"{command} needs a set name and a {'type' if command in ('create', '-N') else 'member'}",
                       source, lineno, _IPSET_HINT)
        else:
            raise _bad(f"expected create or add, found {command!r}", source, lineno,
                       "this does not look like `ipset save` output (`ipset list` is a different format); "
                       + _IPSET_HINT)
    return IpSets(
        sets=tuple(IpSet(name=n, type=types[n], members=tuple(members[n]), options=options[n],
                         comments=tuple(comments[n]), member_options=tuple(extras[n])) for n in order),
        source=source,
    )


# ---------------------------------------------------------------------------------------------
# back to text: what a capture writes for IPVS and ipsets read over netlink

# ipvsadm's protocol options, and the option each forwarding method is written with (ipvsadm's
# fwd_switch: the kernel's LOCALNODE and bypass are printed as direct routing, "-g").
_PROTO_WRITE = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}
_FORWARD_WRITE = {FORWARD_MASQ: "-m", FORWARD_TUNNEL: "-i"}


def _vs_spec(vs: VirtualServer) -> str:
    if vs.fwmark is not None and not vs.address:
        return f"-f {vs.fwmark}"
    return f"{_PROTO_WRITE.get(vs.protocol, '-t')} {vs.endpoint}"


def format_ipvsadm_save(table: IpvsTable) -> str:
    """An IpvsTable as ``ipvsadm -Sn`` prints it (parse_ipvsadm_save reads it back to the same table)."""
    lines: list[str] = []
    for vs, reals in table.services:
        spec = _vs_spec(vs)
        words = [f"-A {spec}", f"-s {vs.scheduler}"]
        if vs.persistent_timeout is not None:
            words.append(f"-p {vs.persistent_timeout}")
        words += list(vs.flags)
        lines.append(" ".join(words))
        for rs in reals:
            rwords = [f"-a {spec}", f"-r {rs.endpoint}", _FORWARD_WRITE.get(rs.forward, "-g"), f"-w {rs.weight}"]
            lines.append(" ".join(rwords + list(rs.options)))
    return "".join(line + "\n" for line in lines)


def _quoted(text: str) -> str:
    """Double quotes as ``ipset save`` writes a comment, escaped so a shell-style split reads it back."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_ipset_save(sets: IpSets) -> str:
    """IpSets as ``ipset save`` prints them (parse_ipset_save reads them back to the same sets)."""
    lines: list[str] = []
    for s in sets.sets:
        lines.append(" ".join(["create", s.name, s.type, *s.options]))
        comments = list(s.comments)
        extras = list(s.member_options)
        for member in s.members:
            words = ["add", s.name, member]
            # A member's comment and other options are paired by member, first unused pair first.
            comment = next((c for c in comments if c[0] == member), None)
            if comment is not None:
                comments.remove(comment)
                words += ["comment", _quoted(comment[1])]
            extra = next((e for e in extras if e[0] == member), None)
            if extra is not None:
                extras.remove(extra)
                words += list(extra[1])
            lines.append(" ".join(words))
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------------------------------------
# ipvsadm -Ln (what users paste): a listing, with --stats or --rate counters instead of weights

_LIST_HINT = "paste `ipvsadm -Ln` (numeric) or `ipvsadm -Sn` output"
_LIST_PROTOCOLS = {"TCP": "TCP", "UDP": "UDP", "SCTP": "SCTP"}


def parse_ipvsadm_list(text: str, source: str, *, cut: int | None = None) -> tuple[IpvsTable, tuple[str, ...]]:
    """``ipvsadm -Ln`` (``--stats``, ``--rate``) -> IpvsTable, and what the listing could not tell.

    ``cut``: the number of a last line the text may stop in; it is read when its address and weight are whole.
    """
    services: list[tuple[VirtualServer, list[RealServer]]] = []
    warnings: list[str] = []
    counters = False  # --stats / --rate: no scheduler, forwarding method or weight is printed
    for lineno, raw in enumerate(text.splitlines(), 1):
        words = raw.split()
        header = words[1:2] == ["RemoteAddress:Port"]
        if not words or words[0] in ("IP", "Prot", "Virtual") or (words[0] == "->" and header):
            if words[:1] == ["Prot"] and any(w in words for w in ("Conns", "CPS")):
                counters = True
            continue
        if words[0] == "->":
            if not services:
                raise _bad("a real server before any virtual server", source, lineno, _LIST_HINT)
            address, port = split_address(words[1] if len(words) > 1 else "", source, lineno)
            weight, forward = 1, FORWARD_MASQ
            if not counters:
                if len(words) < 4 or lineno == cut and len(words) < 6:
                    if lineno != cut or len(words) < 4:
                        warnings.append(f"line {lineno} is cut short before the real server's weight; not read")
                        continue
                    warnings.append(f"line {lineno} stops after the real server's weight; read up to there")
                forward = {"masq": FORWARD_MASQ, "route": FORWARD_ROUTE, "local": FORWARD_ROUTE,
                           "tunnel": FORWARD_TUNNEL}.get(words[2].lower(), FORWARD_MASQ)
                weight = _int(words[3], "weight", source, lineno)
            services[-1][1].append(RealServer(address, port, weight, forward))
            continue
        proto = _LIST_PROTOCOLS.get(words[0])
        if words[0] == "FWM" and len(words) > 1:
            vs = VirtualServer("", "", 0, words[2] if len(words) > 2 and not counters else "rr",
                               fwmark=_int(words[1], "firewall mark", source, lineno))
        elif proto is not None and len(words) > 1:
            address, port = split_address(words[1], source, lineno)
            scheduler = words[2] if len(words) > 2 and not counters else "rr"
            timeout = None
            if "persistent" in words[3:] and not counters:
                i = words.index("persistent")
                timeout = _int(words[i + 1] if i + 1 < len(words) else None, "persistence timeout", source, lineno)
            vs = VirtualServer(proto, address, port, scheduler, persistent_timeout=timeout)
        else:
            raise _bad(f"not an ipvsadm -Ln line: {raw.strip()[:60]!r}", source, lineno, _LIST_HINT)
        services.append((vs, []))
    if counters:
        warnings.append("ipvsadm --stats/--rate prints no scheduler, forwarding method or weight: shares assume "
                        "round robin over equal weights")
    return IpvsTable(services=tuple((vs, tuple(reals)) for vs, reals in services), source=source), tuple(warnings)
