"""Multi-node snapshots: the API once and each node's files under ``nodes/<name>/`` (docs/snapshot.md).

``capture --all-nodes`` writes one; ``--from`` it with ``--node NAME`` answers as that node, with
``--all-nodes`` as every node. Each node's files are the files of a single-node snapshot's ``node/`` folder
and are built into a Snapshot by the same ``build_snapshot``, one node at a time. Folders and tarballs
are read as svctrace.collectors.snapshot_dir reads them (the same safety checks).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from svctrace.collectors import snapshot_dir
from svctrace.errors import InputError, UsageError
from svctrace.model.snapshot import Snapshot
from svctrace.parsers.k8s import ApiObjects, merge_objects
from svctrace.parsers.snapshot import NodeInput, build_snapshot

NODES = "nodes/"


# One node file: its text (read now, as from a tarball) or how to read it (a folder's file, read when asked).
_NodeText = Callable[[], str]


@dataclass(frozen=True)
class MultiNodeSnapshot:
    """A snapshot of several nodes: the API objects, read once, and each node's files."""

    label: str
    api: ApiObjects | None
    nodes: tuple[str, ...]
    files: Mapping[str, Mapping[str, tuple[_NodeText, str]]]  # node -> node file -> (its text, where it is)
    warnings: tuple[str, ...] = ()

    def node_input(self, name: str) -> NodeInput:
        """One node's files, as a single-node snapshot's node/ folder holds them."""
        if name not in self.nodes:
            raise UsageError(f"{self.label} holds no node {name!r}",
                             f"pick one of: {', '.join(self.nodes)} (or --all-nodes)")
        node = NodeInput()
        for file, (text, where) in sorted(self.files.get(name, {}).items()):
            node.files[file] = text()
            node.where[file] = where
        return node

    def snapshot(self, name: str, node: NodeInput | None = None) -> Snapshot:
        """The Snapshot of one node of this snapshot (``node``: its files, when already read)."""
        read = node if node is not None else self.node_input(name)
        snapshot = build_snapshot(self.api, read, source=f"{self.label} (node {name})", api_warnings=self.warnings,
                                  explicit_node=name)
        snapshot_dir.check_chains(snapshot, read)
        return snapshot


def multi_node_files(api_documents: Mapping[str, Mapping[str, Any]],
                     nodes: Mapping[str, tuple[Mapping[str, str], Mapping[str, Any]]]) -> dict[str, bytes]:
    """A multi-node snapshot's files: api/ once, then nodes/<name>/ (each node's files and meta.json)."""
    from svctrace.collectors.capture import snapshot_files

    files = {rel: data for rel, data in snapshot_files(api_documents=api_documents, node_files={}, meta={}).items()
             if rel.startswith("api/")}
    for name, (node_files, meta) in nodes.items():
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"node name {name!r} cannot be a folder name")
        for rel, data in snapshot_files(api_documents={}, node_files=node_files, meta=meta).items():
            files[f"{NODES}{name}/{rel.removeprefix('node/')}"] = data
    return files


def _node_file(name: str) -> tuple[str, str, str] | None:
    """(root, node, file) of ``[top/]nodes/<node>/<file>``, for a file svctrace reads; None for anything else."""
    parts = name.split("/")
    for root_len in (0, 1):
        rest = parts[root_len:]
        if len(rest) == 3 and rest[0] == NODES.rstrip("/") and rest[2] in snapshot_dir.NODE_FILES and rest[1]:
            return "/".join(parts[:root_len]), rest[1], rest[2]
    return None


def load(spec: str) -> Snapshot | MultiNodeSnapshot:
    """A snapshot folder or tarball: a Snapshot for a single-node one, a MultiNodeSnapshot for a multi-node one.

    Both are read in one pass over the entries, with the safety checks of svctrace.collectors.snapshot_dir:
    api/ as it is read; node files of a folder when a node is asked for, of a tarball (a stream) at once.
    """
    if spec == "demo" or spec.startswith("demo:"):
        return snapshot_dir.load_snapshot(spec)
    read = snapshot_dir.Read()
    entries = snapshot_dir.entries(spec, read.skipped)
    if entries is None:
        return snapshot_dir.load_snapshot(spec)  # says what is wrong with it
    try:  # (a big api/ file's index is made meanwhile in another process: stopped if refused)
        with entries as each:
            api_files: list[snapshot_dir.Entry] = []
            files: dict[tuple[str, str], dict[str, tuple[_NodeText, str]]] = {}
            for entry in each:
                read.names.append(entry.name)
                found = _node_file(entry.name)
                if found is not None:
                    root, node, file = found
                    text = snapshot_dir.node_text_reader(entry, file, read)
                    if text is not None:
                        files.setdefault((root, node), {})[file] = (text, entry.where)
                elif snapshot_dir.may_be_snapshot_file(entry.name):
                    if entry.lasting and snapshot_dir.is_api_file(entry.name):
                        api_files.append(entry)  # a folder's api/ files after its node/ files (as _read_entries)
                        snapshot_dir.index_early(entry, read)
                    else:
                        snapshot_dir.take(entry, read)
            for entry in api_files:
                snapshot_dir.take(entry, read)
        roots = {root for root, _ in files}
        if not roots:
            return snapshot_dir.build(read, spec)
        if len(roots) > 1:
            raise InputError(f"{spec}: holds several multi-node snapshots ({', '.join(sorted(roots))}); pass one of "
                             "them", f"e.g. --from {posixpath.join(spec, sorted(roots)[0])}")
        root = roots.pop()
        prefix = f"{root}/" if root else ""
        snapshot_dir.finish(read)
        api_parts = [part for name, part in read.api.items() if name.startswith(prefix + "api/")]
        api = merge_objects(api_parts) if api_parts else None
        usable = api if api is not None and api.objects_seen > 0 else None
        by_node = {node: node_files for (_, node), node_files in files.items()}
        return MultiNodeSnapshot(spec, usable, tuple(sorted(by_node)), by_node,
                                 (*read.skipped, *(api.warnings if api is not None else ())))
    finally:
        read.cancel()
