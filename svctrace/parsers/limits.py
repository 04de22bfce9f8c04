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
MAX_YAML_FILE_BYTES = 16 * MiB  # one api/*.yaml file (YAML is read whole and slowly: use JSON beyond this)

# node/ files are read whole (nft.json is compacted as it is read), so each has its own bound: the biggest
# honest one (10,000 Services x 10 endpoints: ~60 MB of iptables-save, ~150 MB of nft -j) with room to spare.
MAX_NODE_FILE_BYTES: dict[str, int] = {
    NodeFile.IPTABLES: 128 * MiB,
    NodeFile.IP6TABLES: 128 * MiB,
    NodeFile.NFT: 256 * MiB,
    NodeFile.IPVSADM: 64 * MiB,
    NodeFile.IPSET: 64 * MiB,
    NodeFile.CONNTRACK: 16 * MiB,  # optional: a bigger one is skipped with a warning
    NodeFile.IP_ADDR: 16 * MiB,
    NodeFile.META: 1 * MiB,
}
# Lines of a node/ text file (a 10,000-Service dump has 430,000) and the longest line (a rule is < 1 KiB).
MAX_NODE_FILE_LINES = 1_000_000
MAX_LINE_BYTES = 64 << 10
# Rules in one iptables chain of a snapshot (KUBE-SERVICES of 10,000 Services holds 10,000-30,000): a chain is
# typed whole when it is first followed, so this bounds what one jump can cost.
MAX_CHAIN_RULES = 200_000

# JSON and YAML values.
MAX_OBJECT_BYTES = 16 * MiB  # one Kubernetes object (etcd refuses anything over 1.5 MiB by default)
# Top-level values, fields and List items in one snapshot's api/ files together: Kubernetes' own scalability
# limits (10,000 Services, 150,000 pods, 5,000 nodes: about 175,000 objects) with room to spare.
MAX_VALUES = 250_000
MAX_DEPTH = 100  # nesting of JSON arrays and objects (Kubernetes objects nest about 10 deep)
# YAML values, aliases expanded (a "billion laughs" is refused): about 1,000 pods' worth (PyYAML holds each
# as a node of ~500 bytes); write JSON for bigger dumps.
MAX_YAML_NODES = 400_000

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
