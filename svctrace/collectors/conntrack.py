"""Read the node's UDP conntrack entries over netlink (pyroute2), read-only; never deletes an entry.

Only UDP flows are kept: a UDP "connection" pinned by conntrack to an endpoint that is gone keeps
failing until it times out, which kube-proxy normally prevents by deleting such entries; TCP flows
end with their connection. The entries are returned as model values and as `conntrack -L` text, the
snapshot's node/conntrack.txt, so a capture and a live run read alike.

For a network namespace this module runs itself inside it (``ip netns exec NAME python -m
svctrace.collectors.conntrack``), as collectors/_probe.py does: netlink sockets belong to the
namespace of the process that opens them.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from svctrace.model.conntrack import ConntrackEntry
from svctrace.parsers.conntrack import parse_conntrack
from svctrace.record import record

MISSING_CONNTRACK = "UDP conntrack entries (node/conntrack.txt)"
_PROTOCOLS = {socket.IPPROTO_UDP: "udp"}


@record
class ConntrackCollection:
    """The UDP conntrack entries, their `conntrack -L` text, or why they could not be read."""

    entries: tuple[ConntrackEntry, ...] | None
    text: str | None
    error: str | None = None


def _entry(raw: Any, family: int) -> ConntrackEntry | None:
    orig, reply = raw.tuple_orig, raw.tuple_reply
    protocol = _PROTOCOLS.get(orig.proto)
    if protocol is None or orig.saddr is None or reply.saddr is None:
        return None
    return ConntrackEntry(
        protocol=protocol, src=str(orig.saddr), dst=str(orig.daddr), sport=orig.sport, dport=orig.dport,
        reply_src=str(reply.saddr), reply_dst=str(reply.daddr), reply_sport=reply.sport, reply_dport=reply.dport,
        family=family, timeout=raw.timeout, flags=_flags(raw.status or 0), mark=raw.mark, zone=raw.zone)


def _flags(status: int) -> tuple[str, ...]:
    # IPS_SEEN_REPLY (bit 1) and IPS_ASSURED (bit 2), as `conntrack -L` shows them.
    flags = []
    if not status & 0x2:
        flags.append("UNREPLIED")
    if status & 0x4:
        flags.append("ASSURED")
    return tuple(flags)


def read_udp_entries() -> tuple[ConntrackEntry, ...]:
    """Every UDP conntrack entry (IPv4 and IPv6) of this process's network namespace."""
    from pyroute2 import Conntrack  # imported late: only a run that reads conntrack pays for it

    out: list[ConntrackEntry] = []
    for af, family in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        with Conntrack(nfgen_family=af) as ct:
            for raw in ct.dump_entries():
                entry = _entry(raw, family)
                if entry is not None:
                    out.append(entry)
    return tuple(out)


def to_text(entries: tuple[ConntrackEntry, ...]) -> str:
    """The entries as `conntrack -L` prints them (node/conntrack.txt)."""
    return "".join(e.text() + "\n" for e in entries)


def collect_conntrack() -> ConntrackCollection:
    """The UDP conntrack entries of this process's namespace; errors become ``error``. (For a network
    namespace, svctrace.collectors.node runs this module inside it and reads it with ``from_child``.)"""
    try:
        entries = read_udp_entries()
    except Exception as exc:  # noqa: BLE001 - no module, no permission, ...: all mean "not collected"
        return ConntrackCollection(None, None, f"cannot read conntrack entries: {exc}")
    return ConntrackCollection(entries, to_text(entries))


def from_child(stdout: str | None, error: str | None, netns: str) -> ConntrackCollection:
    """What ``python -m svctrace.collectors.conntrack`` printed in network namespace ``netns``, or why not."""
    where = f" in network namespace {netns}"
    if stdout is None:
        return ConntrackCollection(None, None, f"cannot read conntrack entries{where}: {error}")
    return ConntrackCollection(parse_conntrack(stdout, f"conntrack{where}"), stdout)


def main() -> None:
    sys.stdout.write(to_text(read_udp_entries()))


if __name__ == "__main__":
    main()
