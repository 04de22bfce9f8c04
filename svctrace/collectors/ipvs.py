"""Read IPVS virtual servers and ipsets live over netlink (pyroute2), converted to the model at the edge.

The ``*_from_message`` functions take one decoded pyroute2 message and return our types; they are
separate so tests feed them recorded messages (tests/fixtures/ipvs/). No netlink object leaves this module.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from svctrace.errors import CollectionError
from svctrace.model import ipvs as model

PROC_IP_VS = "/proc/net/ip_vs"
_PROTOCOLS = {socket.IPPROTO_TCP: "TCP", socket.IPPROTO_UDP: "UDP", 132: "SCTP"}
# include/uapi/linux/ip_vs.h: IP_VS_CONN_F_FWD_MASK values, and the service flags.
_FORWARD = {0: model.FORWARD_MASQ, 1: model.FORWARD_LOCAL, 2: model.FORWARD_TUNNEL, 3: model.FORWARD_ROUTE,
            4: model.FORWARD_BYPASS}
_FWD_MASK = 0x7
_SVC_F_PERSISTENT = 0x1
_SVC_F_ONEPACKET = 0x4
_SVC_SCHED_FLAGS = {0x8: "flag-1", 0x10: "flag-2", 0x20: "flag-3"}
# How ipvsadm names scheduler flags 1 and 2 for the schedulers that define them.
_SCHED_FLAG_NAMES = {"sh": {0x8: "sh-fallback", 0x10: "sh-port"}, "mh": {0x8: "mh-fallback", 0x10: "mh-port"}}

NOT_AVAILABLE = "IPVS is not available in this kernel"
_NOT_AVAILABLE_HINT = ("this node does not run kube-proxy in IPVS mode (the ip_vs module is not loaded); "
                       "check kube-proxy's mode with `curl -s localhost:10249/proxyMode`, or pass a snapshot "
                       "made on an IPVS node with --from")


def _attr(nla: Any, name: str, default: Any = None) -> Any:
    value = nla.get_attr(name)
    return default if value is None else value


def _address(value: Any, family: int | None) -> str:
    """A decoded address attribute; raw bytes when pyroute2 did not know the family (older kernels)."""
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        # pyroute2 hands back an address it could not decode with its 4-byte attribute header still on.
        if len(raw) in (8, 20) and int.from_bytes(raw[:2], "little") == len(raw):
            raw = raw[4:]
        if family == socket.AF_INET6 or (family is None and len(raw) == 16 and any(raw[4:])):
            return str(ipaddress.IPv6Address(raw[:16]))
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.ip_address(str(value)))


def _protocol(number: int) -> str:
    return _PROTOCOLS.get(number, f"proto-{number}")


def virtual_server_from_message(msg: Any) -> model.VirtualServer:
    """One IPVS_CMD_NEW_SERVICE / GET_SERVICE reply (an ``ipvsmsg``) -> VirtualServer."""
    svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
    if svc is None:
        raise CollectionError("IPVS netlink reply without a service attribute",
                              "report this with the kernel version (uname -r)")
    family = _attr(svc, "IPVS_SVC_ATTR_AF", socket.AF_INET)
    scheduler = _attr(svc, "IPVS_SVC_ATTR_SCHED_NAME", "")
    flags_attr = _attr(svc, "IPVS_SVC_ATTR_FLAGS", {})
    flags = int(flags_attr.get("flags", 0)) if hasattr(flags_attr, "get") else 0
    fwmark = _attr(svc, "IPVS_SVC_ATTR_FWMARK", 0)
    words: list[str] = []
    names = _SCHED_FLAG_NAMES.get(scheduler, {})
    sched = [names.get(bit, name) for bit, name in _SVC_SCHED_FLAGS.items() if flags & bit]
    if sched:
        words.append("-b " + ",".join(sched))
    if flags & _SVC_F_ONEPACKET:
        words.append("--ops")
    pe_name = svc.get_attr("IPVS_SVC_ATTR_PE_NAME")
    if pe_name:
        words.append(f"--pe {pe_name}")
    persistent = None
    if flags & _SVC_F_PERSISTENT:
        persistent = int(_attr(svc, "IPVS_SVC_ATTR_TIMEOUT", 0))
        netmask = svc.get_attr("IPVS_SVC_ATTR_NETMASK")
        # IPv6 services carry a prefix length here, which pyroute2 decodes as an IPv4 address; skip it.
        if family == socket.AF_INET and netmask not in (None, "255.255.255.255"):
            words.append(f"-M {netmask}")
    if fwmark:
        return model.VirtualServer(protocol="", address="", port=0, scheduler=scheduler, persistent_timeout=persistent,
                             flags=tuple(words) + (("-6",) if family == socket.AF_INET6 else ()), fwmark=fwmark)
    return model.VirtualServer(
        protocol=_protocol(_attr(svc, "IPVS_SVC_ATTR_PROTOCOL", 0)),
        address=_address(svc.get_attr("IPVS_SVC_ATTR_ADDR"), family),
        port=int(_attr(svc, "IPVS_SVC_ATTR_PORT", 0)),
        scheduler=scheduler, persistent_timeout=persistent, flags=tuple(words),
    )


def real_server_from_message(msg: Any, service_family: int | None = None) -> model.RealServer:
    """One IPVS_CMD_GET_DEST reply -> RealServer; ``service_family`` decodes kernels that omit the dest's family."""
    dest = msg.get_attr("IPVS_CMD_ATTR_DEST")
    if dest is None:
        raise CollectionError("IPVS netlink reply without a destination attribute",
                              "report this with the kernel version (uname -r)")
    family = dest.get_attr("IPVS_DEST_ATTR_ADDR_FAMILY") or service_family
    method = int(_attr(dest, "IPVS_DEST_ATTR_FWD_METHOD", 0)) & _FWD_MASK
    options: list[str] = []
    upper = dest.get_attr("IPVS_DEST_ATTR_U_THRESH")
    lower = dest.get_attr("IPVS_DEST_ATTR_L_THRESH")
    if upper:
        options.append(f"-x {upper}")
    if lower:
        options.append(f"-y {lower}")
    return model.RealServer(
        address=_address(dest.get_attr("IPVS_DEST_ATTR_ADDR"), family),
        port=int(_attr(dest, "IPVS_DEST_ATTR_PORT", 0)),
        weight=int(_attr(dest, "IPVS_DEST_ATTR_WEIGHT", 0)),
        forward=_FORWARD.get(method, f"method-{method}"),
        active_conns=dest.get_attr("IPVS_DEST_ATTR_ACTIVE_CONNS"),
        inactive_conns=dest.get_attr("IPVS_DEST_ATTR_INACT_CONNS"),
        options=tuple(options),
    )


def _family_of_vs(vs: model.VirtualServer) -> int:
    return socket.AF_INET6 if ":" in vs.address or "-6" in vs.flags else socket.AF_INET


def ipvs_available(netns: str | None = None) -> bool:
    """Whether this kernel has IPVS loaded (checked without loading the module as a side effect)."""
    if netns is not None:
        return True  # /proc/net is this process's namespace; the netlink lookup decides instead
    return os.path.exists(PROC_IP_VS)


def _not_available(detail: str = "") -> CollectionError:
    return CollectionError(NOT_AVAILABLE + (f" ({detail})" if detail else ""), hint=_NOT_AVAILABLE_HINT)


def _close(sock: Any) -> None:
    """Close a pyroute2 socket, also one whose constructor failed half way, and its event loop."""
    try:
        if getattr(sock, "asyncore", None) is not None:
            sock.close()
    except (OSError, RuntimeError, AttributeError):
        pass
    loop = getattr(getattr(sock, "asyncore", None), "event_loop", None)
    if loop is not None and not loop.is_closed():
        loop.close()


def read_ipvs(netns: str | None = None) -> model.IpvsTable:
    """Every IPVS virtual server with its real servers, read over generic netlink."""
    if not ipvs_available(netns):
        raise _not_available(f"{PROC_IP_VS} is absent")
    from pyroute2 import IPVS, IPVSService
    from pyroute2.netlink.exceptions import NetlinkError

    # Made in two steps so a failed bind can still be closed: pyroute2 leaves its event loop open otherwise.
    sock = IPVS.__new__(IPVS)
    try:
        sock.__init__(**({"netns": netns} if netns is not None else {}))
    except NetlinkError as exc:
        _close(sock)
        # The generic netlink family "IPVS" does not resolve: ENOENT.
        raise _not_available(f"the generic netlink family IPVS cannot be resolved: {exc}") from None
    except OSError as exc:
        _close(sock)
        raise CollectionError(f"cannot open a netlink socket for IPVS: {exc}",
                              "run svctrace as root (CAP_NET_ADMIN) on the node") from None
    services: list[tuple[model.VirtualServer, tuple[model.RealServer, ...]]] = []
    try:
        for smsg in sock.service("dump"):
            vs = virtual_server_from_message(smsg)
            key = IPVSService.from_message(smsg)
            reals = tuple(real_server_from_message(d, _family_of_vs(vs)) for d in sock.dest("dump", service=key))
            services.append((vs, reals))
    except NetlinkError as exc:
        raise CollectionError(f"reading IPVS over netlink failed: {exc}",
                              "run svctrace as root (CAP_NET_ADMIN); or save `ipvsadm -Sn` into a snapshot") \
            from None
    finally:
        _close(sock)
    return model.IpvsTable(services=tuple(services), source="netlink" + (f" (netns {netns})" if netns else ""))


# ---------------------------------------------------------------------------------------------
# ipsets


_PROTO_NAMES = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", 132: "sctp", 1: "icmp", 58: "icmpv6"}


def _ip(nested: Any) -> str | None:
    if nested is None:
        return None
    for name in ("IPSET_ATTR_IPADDR_IPV4", "IPSET_ATTR_IPADDR_IPV6"):
        value = nested.get_attr(name)
        if value is not None:
            return str(value)
    return None


def _member(entry: Any, set_type: str) -> str:
    """One ADT data entry -> the member as ``ipset save`` writes it ("10.96.0.1,tcp:443")."""
    ip = _ip(entry.get_attr("IPSET_ATTR_IP_FROM")) or _ip(entry.get_attr("IPSET_ATTR_IP"))
    cidr = entry.get_attr("IPSET_ATTR_CIDR")
    port = entry.get_attr("IPSET_ATTR_PORT_FROM")
    port_to = entry.get_attr("IPSET_ATTR_PORT_TO")
    proto = entry.get_attr("IPSET_ATTR_PROTO")
    ip2 = _ip(entry.get_attr("IPSET_ATTR_IP2"))
    cidr2 = entry.get_attr("IPSET_ATTR_CIDR2")
    parts: list[str] = []
    if ip is not None:
        full = 32 if ":" not in ip else 128
        parts.append(ip + (f"/{cidr}" if cidr is not None and cidr != full else ""))
    if port is not None:
        ports = f"{port}-{port_to}" if port_to not in (None, port) else str(port)
        if proto is not None and set_type.startswith("hash:"):
            ports = f"{_PROTO_NAMES.get(proto, str(proto))}:{ports}"
        parts.append(ports)
    if ip2 is not None:
        full = 32 if ":" not in ip2 else 128
        parts.append(ip2 + (f"/{cidr2}" if cidr2 is not None and cidr2 != full else ""))
    return ",".join(parts)


def ipset_from_message(msg: Any) -> model.IpSet:
    """One IPSET_CMD_LIST reply (an ``ipset_msg``) -> IpSet with its header options and members."""
    name = msg.get_attr("IPSET_ATTR_SETNAME") or ""
    set_type = msg.get_attr("IPSET_ATTR_TYPENAME") or ""
    family = msg.get_attr("IPSET_ATTR_FAMILY")
    options: list[str] = []
    if family in (socket.AF_INET, socket.AF_INET6):
        options += ["family", "inet6" if family == socket.AF_INET6 else "inet"]
    data = msg.get_attr("IPSET_ATTR_DATA")
    if data is not None:
        frm, to = data.get_attr("IPSET_ATTR_PORT_FROM"), data.get_attr("IPSET_ATTR_PORT_TO")
        if frm is not None and to is not None:
            options += ["range", f"{frm}-{to}"]
        for attr, word in (("IPSET_ATTR_HASHSIZE", "hashsize"), ("IPSET_ATTR_MAXELEM", "maxelem")):
            value = data.get_attr(attr)
            if value is not None:
                options += [word, str(value)]
        cadt = data.get_attr("IPSET_ATTR_CADT_FLAGS") or 0
        if cadt & 0x10:  # IPSET_FLAG_WITH_COMMENT
            options.append("comment")
    members: list[str] = []
    comments: list[tuple[str, str]] = []
    adt = msg.get_attr("IPSET_ATTR_ADT")
    for entry in adt.get_attrs("IPSET_ATTR_DATA") if adt is not None else ():
        member = _member(entry, set_type)
        members.append(member)
        comment = entry.get_attr("IPSET_ATTR_COMMENT")
        if comment:
            comments.append((member, str(comment)))
    return model.IpSet(name=name, type=set_type, members=tuple(members), options=tuple(options),
                 comments=tuple(comments))


def merge_ipsets(parts: list[model.IpSet], source: str) -> model.IpSets:
    """Join the messages of one dump: the kernel splits a big set over several replies with the same name."""
    merged: dict[str, model.IpSet] = {}
    for part in parts:
        have = merged.get(part.name)
        if have is None:
            merged[part.name] = part
        else:
            merged[part.name] = model.IpSet(have.name, have.type or part.type, have.members + part.members,
                                      have.options or part.options, have.comments + part.comments)
    return model.IpSets(sets=tuple(merged.values()), source=source)


@contextmanager
def _in_netns(netns: str | None) -> Iterator[None]:
    if netns is None:
        yield
        return
    from pyroute2 import netns as pr_netns

    pr_netns.pushns()
    try:
        pr_netns.setns(netns, flags=0)  # (pushns(name) would create a namespace that is not there)
    except BaseException:
        pr_netns.popns()
        raise
    try:
        yield
    finally:
        pr_netns.popns()


def read_ipsets(netns: str | None = None) -> model.IpSets:
    """Every ipset with its members, read over nfnetlink."""
    from pyroute2 import IPSet
    from pyroute2.netlink.exceptions import NetlinkError

    sock = IPSet.__new__(IPSet)
    try:
        with _in_netns(netns):
            sock.__init__()
    except (NetlinkError, OSError) as exc:
        _close(sock)
        raise CollectionError(f"cannot read ipsets over netlink: {exc}",
                              "run svctrace as root (CAP_NET_ADMIN) on the node; or save `ipset save` into "
                              "a snapshot") from None
    try:
        parts = [ipset_from_message(msg) for msg in sock.list()]
    except NetlinkError as exc:
        raise CollectionError(f"listing ipsets over netlink failed: {exc}",
                              "check that the ip_set module is loaded (`ipset list` on the node)") from None
    finally:
        _close(sock)
    return merge_ipsets(parts, "netlink" + (f" (netns {netns})" if netns else ""))
