"""A fast path for the rule shapes kube-proxy writes a hundred thousand times on a big node.

Nine in ten lines of a 10,000-Service nat table are one of six shapes (an endpoint chain's hairpin mark
and DNAT, a service chain's masquerade mark and probability ladder, KUBE-SERVICES' dispatch). Each is
matched here by one regular expression and typed directly; anything else (other writers, other
spellings, quotes that need unescaping) returns None and goes through the general stages. The result
is the same as the general path's, value for value (tests/unit/test_iptables_kube.py checks it on
every line of the corpus).
"""

from __future__ import annotations

import re
from functools import lru_cache

from svctrace.model.actions import DnatAction, NatRange
from svctrace.model.addresses import Prefix, parse_prefix
from svctrace.model.matches import DST, SRC, AddrMatch, Match, PortMatch, ProtocolOnly, ProtoMatch, StatisticMatch

_PROTOS = "tcp|udp|sctp"
_COMMENT = r'-m comment --comment "(?P<cm>[^"\\]*)"'
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"  # as iptables prints it: no leading zeros, at most 255
_IP = rf"(?P<ip>{_OCTET}(?:\.{_OCTET}){{3}})"
# What follows "-A CHAIN " in each shape (iptables-save's own spelling and order).
_SHAPES: dict[str, re.Pattern[str]] = {
    # KUBE-SEP: hairpin masquerade (without its comment: kube-proxy's large-cluster mode, past 1,000 endpoints)
    "-s": re.compile(rf"-s {_IP}/32(?: {_COMMENT})? -j (?P<t>KUBE-MARK-MASQ)"),
    # KUBE-SEP: the DNAT
    "-p": re.compile(rf"-p (?P<p>{_PROTOS})(?: {_COMMENT})? -m (?P=p) -j DNAT --to-destination {_IP}:"
                     r"(?P<port>\d{1,5})"),
    # KUBE-SVC: one step of the probability ladder, or its last rule
    "-m": re.compile(rf"{_COMMENT}(?: -m statistic --mode random --probability (?P<prob>[0-9.]+))? -j (?P<t>[\w-]+)"),
    # KUBE-SVC: the masquerade rule for clients outside the pod network
    "!": re.compile(rf"! -s (?P<cidr>[0-9./]+) -d {_IP}/32 -p (?P<p>{_PROTOS}) {_COMMENT} -m (?P=p) "
                    rf"--dport (?P<port>\d{{1,5}}) -j (?P<t>[\w-]+)"),
    # KUBE-SERVICES: dispatch of a ClusterIP (or external IP) and port
    "-d": re.compile(rf"-d {_IP}/32 -p (?P<p>{_PROTOS}) {_COMMENT} -m (?P=p) --dport (?P<port>\d{{1,5}}) "
                     r"-j (?P<t>[\w-]+)"),
}

_WITH_ACTION = frozenset({"DNAT", "REDIRECT", "SNAT", "MASQUERADE", "REJECT", "NOTRACK"})
KubeRule = tuple[str, tuple[Match, ...], str, "DnatAction | None", str]  # chain, matches, target, action, comment


@lru_cache(maxsize=64)
def _proto(name: str) -> ProtoMatch:
    return ProtoMatch(name)


@lru_cache(maxsize=64)
def _only(name: str) -> ProtocolOnly:
    return ProtocolOnly(name)


@lru_cache(maxsize=4096)
def _dport(port: int, proto: str) -> PortMatch:
    return PortMatch("dport", ((port, port),), False, proto)


@lru_cache(maxsize=256)
def _statistic(raw: str) -> StatisticMatch | None:
    try:
        return StatisticMatch(float(raw), False, raw=raw)
    except ValueError:
        return None


_HOSTS: dict[str, Prefix] = {}


def _host(ip: str) -> Prefix:
    """The /32 of an address the shape's regular expression has already checked."""
    got = _HOSTS.get(ip)
    if got is None:
        a, b, c, d = ip.split(".")
        got = Prefix(4, (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d), 32)
        if len(_HOSTS) < 1 << 13:  # beyond this an address is read again: 131,072 of them held 13 MB at 10k
            _HOSTS[ip] = got
    return got


def endpoint_line(line: str) -> tuple[str, int | None] | None:
    """(address, port) of one of an endpoint chain's two common lines, read as ``kube_rule`` would type it: the
    DNAT (its port) or the hairpin mark (port None); None for any other line. An audit reads 200,000 of them."""
    sp = line.find(" ", 3)
    if sp < 0 or not line.startswith("-A "):
        return None
    kind = line[sp + 1:sp + 3]
    if kind != "-s" and kind != "-p":
        return None
    m = _SHAPES[kind].fullmatch(line, sp + 1)
    if m is None:
        return None
    if kind == "-s":
        return m["ip"], None
    port = int(m["port"])
    return None if port > 65535 else (m["ip"], port)


_MASQ = "KUBE-MARK-MASQ"
_ENDPOINT = "KUBE-SEP-"


def service_line(line: str) -> tuple[str, str | None, str | None] | None:
    """(target, probability as written, pod network) of one of a service chain's two common lines, read as
    ``kube_rule`` would type it: a step of the probability ladder to an endpoint chain (its probability; None for
    the last step), or the mark for masquerading clients outside the pod network (target KUBE-MARK-MASQ, the
    network as the typed match prints it); None for any other line. An audit reads 110,000 of them."""
    sp = line.find(" ", 3)
    if sp < 0 or not line.startswith("-A "):
        return None
    if line.startswith("!", sp + 1):
        m = _SHAPES["!"].fullmatch(line, sp + 1)
        if m is None or m["t"] != _MASQ or int(m["port"]) > 65535:
            return None
        network = _network(m["cidr"])
        return None if network is None else (_MASQ, None, network)
    if not line.startswith("-m", sp + 1):
        return None
    m = _SHAPES["-m"].fullmatch(line, sp + 1)
    if m is None or not m["t"].startswith(_ENDPOINT):
        return None
    probability = m["prob"]
    if probability is not None and _statistic(probability) is None:
        return None
    return m["t"], probability, None


@lru_cache(maxsize=256)
def _network(cidr: str) -> str | None:
    """A source network as its typed match prints it (a node has one pod network, or a few)."""
    prefix = parse_prefix(cidr)
    return None if prefix is None else str(prefix)


def kube_rule(line: str) -> KubeRule | None:
    """(chain, typed matches, target, action, comment) of one of kube-proxy's common lines, else None."""
    sp = line.find(" ", 3)
    if sp < 0 or not line.startswith("-A "):
        return None
    rest = line[sp + 1:]
    kind = "!" if rest[:1] == "!" else rest[:2]
    shape = _SHAPES.get(kind)
    m = shape.fullmatch(rest) if shape is not None else None
    if m is None:
        return None
    chain, g = line[3:sp], m.groupdict()
    if g.get("t") in _WITH_ACTION:
        return None  # a target whose bare name types an action: the general path says which
    comment = g["cm"]
    if kind == "-s":
        return chain, (AddrMatch(SRC, (_host(g["ip"]),)),), g["t"], None, comment
    if kind == "-p":
        port = int(g["port"])
        if port > 65535:
            return None
        proto = g["p"]
        action = DnatAction((NatRange(g["ip"], g["ip"], port, port),))
        return chain, (_proto(proto), _only(proto)), "DNAT", action, comment
    if kind == "-m":
        if g["prob"] is None:
            return chain, (), g["t"], None, comment
        stat = _statistic(g["prob"])
        return None if stat is None else (chain, (stat,), g["t"], None, comment)
    port = int(g["port"])
    if port > 65535:
        return None
    proto = g["p"]
    matches: tuple[Match, ...] = (AddrMatch(DST, (_host(g["ip"]),)), _proto(proto), _dport(port, proto))
    if kind == "!":
        cidr = parse_prefix(g["cidr"])
        if cidr is None:
            return None
        matches = (AddrMatch(SRC, (cidr,), True), *matches)
    return chain, matches, g["t"], None, comment
