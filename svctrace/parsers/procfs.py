"""The kernel's own files, for a node read made without the tools (pure): IPVS, addresses, links.

kube-proxy's image (distroless-iptables) ships iptables, ip6tables, nft and ipset but not ``ipvsadm`` or
``ip``. A collector pod on the host's network namespace can still read what the kernel exposes there:
``/proc/net/ip_vs`` (IPVS virtual and real servers), ``/proc/net/fib_trie`` + ``/proc/net/route`` (IPv4
addresses and the interface of their subnet), ``/proc/net/if_inet6`` (IPv6 addresses) and
``/sys/class/net`` (links, operstate, bridge masters). These functions turn that text into what the
tools would have given (an IpvsTable; ``ip -j addr`` JSON), so the rest of svctrace sees a node/ folder.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from svctrace.errors import InputError
from svctrace.model.ipvs import (
    FORWARD_BYPASS,
    FORWARD_LOCAL,
    FORWARD_MASQ,
    FORWARD_ROUTE,
    FORWARD_TUNNEL,
    IpvsTable,
    RealServer,
    VirtualServer,
)
from svctrace.record import record

IPVS_INTERFACE = "kube-ipvs0"
_FORWARD = {"masq": FORWARD_MASQ, "local": FORWARD_LOCAL, "tunnel": FORWARD_TUNNEL, "route": FORWARD_ROUTE,
            "bypass": FORWARD_BYPASS}
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_IPV6_SCOPES = {0x00: "global", 0x10: "host", 0x20: "link", 0x40: "site"}
_ARPHRD = {"772": "loopback", "1": "ether", "768": "ipip", "65534": "none"}


# --- /proc/net/ip_vs --------------------------------------------------------------------------------------

def _hex_ipv4(text: str) -> str:
    return str(ipaddress.IPv4Address(int(text, 16)))


def _endpoint(text: str, source: str, line: int) -> tuple[str, int]:
    """``0A600001:01BB`` or ``[2001:0db8::0001]:0050`` -> (address, port)."""
    try:
        if text.startswith("["):
            host, _, port = text[1:].partition("]:")
            return str(ipaddress.IPv6Address(host)), int(port, 16)
        host, _, port = text.partition(":")
        return _hex_ipv4(host), int(port, 16)
    except ValueError:
        raise InputError(f"not an address:port of /proc/net/ip_vs: {text!r}",
                         "the file should hold what `cat /proc/net/ip_vs` prints", path=source, line=line) from None


def parse_proc_ip_vs(text: str, source: str) -> IpvsTable:
    """``/proc/net/ip_vs`` (the kernel's IPVS table) as an IpvsTable: what ``ipvsadm -Sn`` would have listed."""
    services: list[tuple[VirtualServer, list[RealServer]]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        words = raw.split()
        if not words or words[0] in ("IP", "Prot") or raw.lstrip().startswith("-> RemoteAddress"):
            continue
        if words[0] == "->":
            if not services or len(words) < 4:
                raise InputError(f"a real server outside a virtual server: {raw.strip()!r}",
                                 "the file should hold what `cat /proc/net/ip_vs` prints", path=source, line=lineno)
            address, port = _endpoint(words[1], source, lineno)
            services[-1][1].append(RealServer(
                address=address, port=port, weight=int(words[3]),
                forward=_FORWARD.get(words[2].lower(), words[2].lower()),
                active_conns=int(words[4]) if len(words) > 4 else None,
                inactive_conns=int(words[5]) if len(words) > 5 else None))
            continue
        persistent = None
        if "persistent" in words:
            i = words.index("persistent")
            persistent = int(words[i + 1]) if len(words) > i + 1 else None
            words = words[:i]
        flags = tuple("-o" for w in words[3:] if w == "ops")
        if words[0] == "FWM" and len(words) >= 3:
            vs = VirtualServer(protocol="", address="", port=0, scheduler=words[2], persistent_timeout=persistent,
                               flags=flags, fwmark=int(words[1], 16))
        elif words[0] in _PROTOCOLS and len(words) >= 3:
            address, port = _endpoint(words[1], source, lineno)
            vs = VirtualServer(protocol=words[0], address=address, port=port, scheduler=words[2],
                               persistent_timeout=persistent, flags=flags)
        else:
            raise InputError(f"not a line of /proc/net/ip_vs: {raw.strip()[:80]!r}",
                             "the file should hold what `cat /proc/net/ip_vs` prints", path=source, line=lineno)
        services.append((vs, []))
    return IpvsTable(tuple((vs, tuple(reals)) for vs, reals in services), source=source)


# --- addresses and links: /proc/net/fib_trie, /proc/net/route, /proc/net/if_inet6, /sys/class/net ------------

@record
class _Link:
    index: int
    name: str
    operstate: str
    link_type: str
    master: str | None


def _links(text: str) -> list[_Link]:
    """The collector's links listing: ``ifindex<TAB>name<TAB>operstate<TAB>type<TAB>master`` per line."""
    out: list[_Link] = []
    for raw in text.splitlines():
        parts = raw.split("\t")
        if len(parts) < 4 or not parts[0].strip().isdigit():
            continue
        master = parts[4].strip() if len(parts) > 4 and parts[4].strip() else None
        out.append(_Link(int(parts[0]), parts[1].strip(), parts[2].strip().upper() or "UNKNOWN",
                         _ARPHRD.get(parts[3].strip(), "ether"), master))
    return out


def _local_ipv4(fib_trie: str) -> list[str]:
    """Addresses fib_trie lists as ``/32 host LOCAL`` (the node's own IPv4 addresses), in order."""
    out: list[str] = []
    current: str | None = None
    for raw in fib_trie.splitlines():
        m = re.match(r"\s*\|-- (\S+)$", raw)
        if m:
            current = m.group(1)
            continue
        if current is not None and raw.split()[:3] == ["/32", "host", "LOCAL"] and current not in out:
            out.append(current)
    return out


def _swap(word: int) -> int:
    return int.from_bytes(word.to_bytes(4, "big"), "little")


def _prefix(word: int) -> int | None:
    ones = bin(word).count("1")
    return ones if word == ((0xFFFFFFFF << (32 - ones)) & 0xFFFFFFFF) else None


def _connected_routes(route: str) -> list[tuple[ipaddress.IPv4Network, str]]:
    """/proc/net/route's routes without a gateway (the subnets configured on each interface).

    The kernel prints each address as a host-order word of network-order bytes: swapped on little-endian
    machines. The masks tell which: only one reading of a mask like 255.255.255.0 has its ones first.
    """
    rows = [cols for cols in (raw.split() for raw in route.splitlines()[1:])
            if len(cols) >= 8 and re.fullmatch(r"[0-9A-Fa-f]{8}", cols[1]) and re.fullmatch(r"[0-9A-Fa-f]{8}", cols[7])]
    little = not any(_prefix(int(c[7], 16)) is not None and _prefix(_swap(int(c[7], 16))) is None for c in rows)
    out: list[tuple[ipaddress.IPv4Network, str]] = []
    for cols in rows:
        if int(cols[2], 16) != 0:
            continue
        mask, dest = int(cols[7], 16), int(cols[1], 16)
        if little:
            mask, dest = _swap(mask), _swap(dest)
        length = _prefix(mask)
        if length is None:
            continue
        out.append((ipaddress.IPv4Network((dest, length), strict=False), cols[0]))
    return out


def _ipv4_scope(ip: ipaddress.IPv4Address) -> str:
    return "host" if ip.is_loopback else "link" if ip.is_link_local else "global"


def addresses_from_proc(*, fib_trie: str, route: str, if_inet6: str | None, links: str) -> str:
    """The node's links and addresses as ``ip -j addr`` JSON (node/ip-addr.json), from the kernel's files.

    An IPv4 address's interface and prefix come from the connected route of its subnet; 127/8 is lo's;
    an address without one (a /32) is taken to be on kube-ipvs0 when that device exists (IPVS mode binds
    every Service address there), else its interface is left empty.
    """
    link_list = _links(links)
    by_name = {link.name: link for link in link_list}
    infos: dict[str, list[dict[str, Any]]] = {link.name: [] for link in link_list}
    routes = _connected_routes(route)
    for text in _local_ipv4(fib_trie):
        ip = ipaddress.IPv4Address(text)
        matches = sorted(((net, dev) for net, dev in routes if ip in net and net.prefixlen > 0),
                         key=lambda r: -r[0].prefixlen)
        if matches:
            net, dev = matches[0]
            ifname, prefix = dev, net.prefixlen
        elif ip.is_loopback:
            ifname, prefix = "lo", 8
        elif IPVS_INTERFACE in by_name:
            ifname, prefix = IPVS_INTERFACE, 32
        else:
            ifname, prefix = "", 32
        infos.setdefault(ifname, []).append({"family": "inet", "local": text, "prefixlen": prefix,
                                             "scope": _ipv4_scope(ip)})
    for raw in (if_inet6 or "").splitlines():
        cols = raw.split()
        if len(cols) < 6 or len(cols[0]) != 32:
            continue
        try:
            address = str(ipaddress.IPv6Address(int(cols[0], 16)))
            prefix, scope = int(cols[2], 16), int(cols[3], 16) & 0xF0
        except ValueError:
            continue
        infos.setdefault(cols[5], []).append({"family": "inet6", "local": address, "prefixlen": prefix,
                                              "scope": _IPV6_SCOPES.get(scope, str(scope))})
    doc: list[dict[str, Any]] = []
    for link in sorted(link_list, key=lambda item: item.index):
        entry: dict[str, Any] = {"ifindex": link.index, "ifname": link.name, "operstate": link.operstate,
                                 "link_type": link.link_type}
        if link.master is not None and link.master in by_name:
            entry["master"] = link.master
        entry["addr_info"] = infos.pop(link.name, [])
        doc.append(entry)
    for ifname, addr_info in infos.items():  # addresses on an interface the listing did not show
        if addr_info:
            doc.append({"ifname": ifname, "addr_info": addr_info})
    return json.dumps(doc, indent=1) + "\n"
