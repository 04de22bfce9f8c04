"""kube-proxy's chain and set names, computed the way kube-proxy computes them.

iptables mode: ``KUBE-SVC-`` + the first 16 characters of base32(SHA-256(svcPortName + protocol)),
and ``KUBE-SEP-`` + the same over svcPortName + protocol + "IP:port". ``KUBE-SVL/EXT/FW`` (and v1.4-v1.23's
``KUBE-XLB``) share the service chain's suffix. Before v1.19 an unnamed port's svcPortName kept its colon
(``ns/name:``), so the same Service hashes to other names there (``service_port_name(..., colon=True)``;
docs/eras.md). nftables mode uses an 8-character hash of the readable base it appends.
"""

from __future__ import annotations

import ipaddress

try:  # CPython's own SHA-256 (3.12: _sha2): hashlib's OpenSSL binding alone takes 3 ms to import
    from _sha2 import sha256  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found, no-redef, unused-ignore]
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment, unused-ignore]

IPT_SERVICE_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-")
IPT_ENDPOINT_PREFIX = "KUBE-SEP-"


# base32's alphabet, two characters (ten bits) at a time.
_B32_PAIRS = [a + b for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"]


def _hash(text: str, length: int) -> str:
    """The first ``length`` characters of base32(SHA-256(text)) (what kube-proxy's hash is): base32 of only the
    digest bytes they come from (five bytes make eight characters), ten bits at a time. base64.b32encode took
    four times the SHA-256 itself, and an audit of 10,000 Services names 110,000 chains."""
    if length == 16:  # every iptables chain's: the ten pairs of ten bits, spelled out (half the time of the loop)
        b = int.from_bytes(sha256(text.encode()).digest()[:10], "big")
        p = _B32_PAIRS
        return (p[b >> 70] + p[b >> 60 & 1023] + p[b >> 50 & 1023] + p[b >> 40 & 1023] + p[b >> 30 & 1023]
                + p[b >> 20 & 1023] + p[b >> 10 & 1023] + p[b & 1023])
    size = (length + 7) // 8 * 5
    digest = sha256(text.encode()).digest()
    if size > len(digest):  # past the 48th character the digest's end is padded: base32 says how
        import base64

        return base64.b32encode(digest).decode()[:length]
    bits = int.from_bytes(digest[:size], "big")
    return "".join([_B32_PAIRS[(bits >> shift) & 1023] for shift in range(size * 8 - 10, -1, -10)])[:length]


def service_port_name(namespace: str, name: str, port_name: str = "", *, colon: bool = False) -> str:
    """``ns/name:port`` as kube-proxy's ServicePortName prints it: no ``:`` for an unnamed port since v1.19,
    ``ns/name:`` before (``colon``)."""
    base = f"{namespace}/{name}"
    return f"{base}:{port_name}" if port_name or colon else base


def endpoint_string(ip: str, port: int) -> str:
    """``IP:port``; IPv6 addresses in brackets, as Go's net.JoinHostPort writes them."""
    if ":" in ip:
        return f"[{ip}]:{port}"
    return f"{ip}:{port}"


def ipt_suffix(svc_port_name: str, protocol: str) -> str:
    """The 16-character suffix shared by KUBE-SVC/SVL/EXT/FW chains of one Service port."""
    return _hash(svc_port_name + protocol.lower(), 16)


def ipt_service_chain(svc_port_name: str, protocol: str) -> str:
    return "KUBE-SVC-" + ipt_suffix(svc_port_name, protocol)


def ipt_local_chain(svc_port_name: str, protocol: str) -> str:
    return "KUBE-SVL-" + ipt_suffix(svc_port_name, protocol)


def ipt_external_chain(svc_port_name: str, protocol: str) -> str:
    return "KUBE-EXT-" + ipt_suffix(svc_port_name, protocol)


def ipt_firewall_chain(svc_port_name: str, protocol: str) -> str:
    return "KUBE-FW-" + ipt_suffix(svc_port_name, protocol)


def ipt_endpoint_chain(svc_port_name: str, protocol: str, ip: str, port: int) -> str:
    return "KUBE-SEP-" + _hash(svc_port_name + protocol.lower() + endpoint_string(ip, port), 16)


def nft_base(namespace: str, name: str, protocol: str, port_name: str) -> str:
    return f"{namespace}/{name}/{protocol.lower()}/{port_name}"


# kube-proxy (nftables) caps the hashed part of a chain name at this many characters.
NFT_CHAIN_BASE_MAX = 240


def _nft_hash_and_truncate(base: str) -> str:
    """``HASH8-base``, cut to NFT_CHAIN_BASE_MAX with a trailing "..." as kube-proxy's hashAndTruncate does."""
    name = f"{_hash(base, 8)}-{base}"
    if len(name) > NFT_CHAIN_BASE_MAX:
        name = name[: NFT_CHAIN_BASE_MAX - 3] + "..."
    return name


def nft_service_chain(namespace: str, name: str, protocol: str, port_name: str, prefix: str = "service") -> str:
    """``service-<hash8>-ns/name/proto/port`` (also ``external-``, ``firewall-``, ``local-``)."""
    return f"{prefix}-{_nft_hash_and_truncate(nft_base(namespace, name, protocol, port_name))}"


def nft_endpoint_chain(namespace: str, name: str, protocol: str, port_name: str, ip: str, port: int,
                       prefix: str = "endpoint") -> str:
    """``endpoint-<hash8>-ns/name/proto/port__IP/port`` (also ``affinity-`` for the affinity set).

    IPv6 colons are not allowed in chain names, so kube-proxy writes them as dots.
    """
    base = f"{nft_base(namespace, name, protocol, port_name)}__{ip.replace(':', '.')}/{port}"
    return f"{prefix}-{_nft_hash_and_truncate(base)}"


def is_ipv6(address: str) -> bool:
    return ":" in address


def normalize_ip(address: str) -> str:
    """The canonical text of an address (drops zero-padding and ``/32``, ``/128`` host prefixes)."""
    text = address.split("/", 1)[0] if address.endswith(("/32", "/128")) else address
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=False))
        return str(ipaddress.ip_address(text))
    except ValueError:
        return address


# What each of kube-proxy's Service chains is for, by the prefix of its name (iptables; nftables).
_IPT_KINDS = (("KUBE-SVC-", "service"), ("KUBE-SVL-", "local"), ("KUBE-EXT-", "external"), ("KUBE-FW-", "firewall"),
              ("KUBE-SEP-", "endpoint"), ("KUBE-XLB-", "external"))
_NFT_KINDS = (("service-", "service"), ("local-", "local"), ("external-", "external"), ("firewall-", "firewall"),
              ("endpoint-", "endpoint"))


def chain_kind(chain: str, *, nft: bool = False) -> str:
    """service | local | external | firewall | endpoint for kube-proxy's Service chains; "chain" otherwise.

    nftables Service chain names carry the Service's ``namespace/name``, so a name without "/" is one of
    kube-proxy's fixed chains however it starts."""
    if nft and "/" not in chain:
        return "chain"
    for prefix, kind in _NFT_KINDS if nft else _IPT_KINDS:
        if chain.startswith(prefix):
            return kind
    return "chain"
