"""A single pasted dump given to ``--from`` (a snapshot of one file): read it and build the Snapshot.

The format is decided from the text (svctrace.parsers.pasted); the file's name does not matter. What the
paste could not give (the API objects, the node's addresses, the other node files) is missing, as in any
node-only snapshot, and what reading it skipped or assumed is in the Snapshot's warnings.
"""

from __future__ import annotations

from pathlib import Path

from svctrace.errors import InputError
from svctrace.model.snapshot import Snapshot
from svctrace.parsers.pasted import read_pasted
from svctrace.parsers.snapshot import NodeInput, build_snapshot, check_text

# A pasted dump is a few hundred KB at most; a bigger plain file is not one.
MAX_PASTE_BYTES = 64 << 20


def load_pasted_file(path: Path, label: str) -> Snapshot:
    """The Snapshot of one pasted dump (iptables-save/-S, ipvsadm -Ln/-Sn, nft list, ...)."""
    try:
        size = path.stat().st_size
        if size > MAX_PASTE_BYTES:
            raise InputError(f"{label}: {size >> 20} MiB is too big for a pasted dump",
                             "pass a snapshot folder or a .tar.gz of one")
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{label}: cannot read: {exc.strerror or exc}",
                         "check the file's permissions (or run as a user who can read it)") from None
    pasted = read_pasted(check_text(data, label), label)
    node = NodeInput(files=dict(pasted.files), parsed=dict(pasted.parsed),
                     warnings=[f"{label}: read as {pasted.format} output", *pasted.warnings])
    for name in pasted.files:
        node.where[name] = label
    return build_snapshot(None, node, source=label)
