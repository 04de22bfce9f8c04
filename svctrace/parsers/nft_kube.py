"""A fast path for kube-proxy's nftables endpoint chains, read from `nft -j`'s text without typing them.

At 10,000 Services x 10 endpoints kube-proxy's ``ip kube-proxy`` table has 100,000 endpoint chains of two
rules each: the hairpin mark (``ip saddr ADDR jump mark-for-masquerade``) and the DNAT (``meta l4proto tcp
dnat to ADDR:PORT``). Typing each (decoding its JSON, writing it as `nft list` would, and reading that
text's statements) was two thirds of an ``audit -A`` sweep's time in nftables mode. A rule kept as its JSON
text (svctrace.parsers.nft_json.TableBuilder) that is exactly one of these two shapes, as `nft -j` writes
them, is read here by one regular expression; anything else (another member, another order, an escape, an
address not in its canonical spelling) returns None, and the chain is typed as before. What the resolver
makes of it is the same, value for value (tests/unit/test_nft_kube.py checks it on every endpoint chain of the
bundled tables and on altered copies).
"""

from __future__ import annotations

import ipaddress
import re

from svctrace.model.iptables import EndpointLine

_OCTET = rb"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"  # as nft prints it: no leading zeros, at most 255
_ADDR = rb"(?P<ip>" + _OCTET + rb"(?:\." + _OCTET + rb"){3}|[0-9a-f:]{2,39})"


def _shape(template: bytes) -> re.Pattern[bytes]:
    """A JSON text's pattern: ``template`` (compact JSON with regular-expression pieces between backquotes) with
    the blanks JSON allows around its structural characters (one run of them, matched one way)."""
    out = [_BLANKS]
    for i, part in enumerate(re.split(rb"`([^`]*)`", template)):
        if i % 2:
            out.append(part)  # a piece, as written
            continue
        for c in part:
            if c in b"{}[]:,":
                if out[-1] != _BLANKS:
                    out.append(_BLANKS)
                out += [re.escape(bytes([c])), _BLANKS]
            else:
                out.append(re.escape(bytes([c])))
    if out[-1] != _BLANKS:
        out.append(_BLANKS)
    return re.compile(b"".join(out))


_BLANKS = rb"[ \t\n\r]*"
_STRING = rb'"(?:[^"\\]|\\.)*"'
# Kept in place, a rule is its members after "chain"; a document spelled otherwise keeps it as json.dumps wrote it
# (compact, its table and chain first).
_HEAD = b'{`(?:"family":' + _STRING + b',"table":' + _STRING + b',"chain":' + _STRING + \
    b',)?`"handle":`\\d{1,20}`,"expr":['
_MARK = _shape(_HEAD + b'{"match":{"op":"==","left":{"payload":{"protocol":"`(?P<fam>ip6?)`","field":"saddr"}},'
               b'"right":"`' + _ADDR + b'`"}},{"jump":{"target":"mark-for-masquerade"}}]}')
_DNAT = _shape(_HEAD + b'{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"`(?P<p>tcp|udp|sctp)`"}},'
               b'{"dnat":{"addr":"`' + _ADDR + b'`","port":`(?P<port>[1-9]\\d{0,4})`}}]}')


def _canonical(ip: str, v6: bool) -> bool:
    """Whether ``ip`` (of the pattern's characters) is an address of that version as nft spells it."""
    if not v6:
        return "." in ip  # the pattern's dotted quad (its other choice, hex digits and colons, has no dot)
    if "." in ip:
        return False
    try:
        return ipaddress.IPv6Address(ip).compressed == ip
    except ValueError:
        return False


def endpoint_rule(kept: bytes) -> EndpointLine | None:
    """An endpoint chain's rule (``{"handle": N, "expr": [...]}``) of one of kube-proxy's two shapes, as
    (text, address, port); None when it is anything else."""
    m = _MARK.fullmatch(kept)
    if m is not None:
        fam, ip = m["fam"].decode(), m["ip"].decode()
        if not _canonical(ip, fam == "ip6"):
            return None
        return f"{fam} saddr {ip} jump mark-for-masquerade", ip, None
    m = _DNAT.fullmatch(kept)
    if m is None:
        return None
    ip, port = m["ip"].decode(), int(m["port"])
    v6 = ":" in ip
    if port > 65535 or not _canonical(ip, v6):
        return None
    return f"meta l4proto {m['p'].decode()} dnat to {f'[{ip}]' if v6 else ip}:{port}", ip, port
