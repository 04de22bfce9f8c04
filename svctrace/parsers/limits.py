"""The bounds on what svctrace reads, in one place (docs/snapshot.md lists them; a test keeps the two in step).

Each bound is far above what an honest snapshot of a big cluster holds (10,000 Services x 10 endpoints:
~60 MB of iptables-save, ~150,000 API objects) and low enough that a hostile or broken input is refused in
seconds and a few hundred MB instead of hanging or filling memory. A bound that cuts says which one, so the
user can tell a broken file from a cluster bigger than svctrace was built for.
"""

from __future__ import annotations

from svctrace.model.snapshot import NodeFile

MiB = 1 << 20

# A snapshot folder or tarball.
MAX_SNAPSHOT_FILES = 10_000  # files in a folder, members in a tarball (headers cost time even when skipped)
MAX_SNAPSHOT_BYTES = 1 << 30  # all the bytes a snapshot unpacks to, read or skipped
MAX_API_FILE_BYTES = 1 << 30  # one api/*.json file (read as a stream, item by item)
MAX_YAML_FILE_BYTES = 64 * MiB  # one api/*.yaml file (YAML is read whole; use JSON beyond this)

# node/ files are read whole, so each has its own bound: the biggest honest one with room to spare.
MAX_NODE_FILE_BYTES: dict[str, int] = {
    NodeFile.IPTABLES: 256 * MiB,
    NodeFile.IP6TABLES: 256 * MiB,
    NodeFile.NFT: 256 * MiB,
    NodeFile.IPVSADM: 128 * MiB,
    NodeFile.IPSET: 128 * MiB,
    NodeFile.CONNTRACK: 256 * MiB,
    NodeFile.IP_ADDR: 16 * MiB,
    NodeFile.META: 1 * MiB,
}

# JSON and YAML values.
MAX_OBJECT_BYTES = 16 * MiB  # one Kubernetes object (etcd refuses anything over 1.5 MiB by default)
MAX_VALUES = 2_000_000  # top-level values, fields and List items in one snapshot's api/ files together
MAX_DEPTH = 100  # nesting of JSON arrays and objects (Kubernetes objects nest about 10 deep)
MAX_YAML_NODES = 5_000_000  # YAML nodes once aliases are expanded (a "billion laughs" is refused)

# The live API.
MAX_RESPONSE_BYTES = 256 * MiB  # one API answer (a LIST page of 500 objects is a few MB)
MAX_LIST_PAGES = 2_000  # pages of one LIST (500 objects each: a million objects)


def mib(n: int) -> str:
    """A byte count as people read it: ``16 MiB``, ``1 GiB``."""
    if n >= 1 << 30 and n % (1 << 30) == 0:
        return f"{n >> 30} GiB"
    if n < MiB:
        return f"{n:,} bytes"
    return f"{n / MiB:g} MiB"
