"""Multi-node snapshots: the API once and each node's files under ``nodes/<name>/`` (docs/snapshot.md).

``capture --all-nodes`` writes one; ``--from`` it with ``--node NAME`` answers as that node, with
``--all-nodes`` as every node. Each node's files are the files of a single-node snapshot's ``node/`` folder
and are built into a Snapshot by the same ``build_snapshot``, one node at a time. Folders and tarballs
are read as svctrace.collectors.snapshot_dir reads them (the same safety checks).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from svctrace.collectors import snapshot_dir
from svctrace.errors import InputError, UsageError
from svctrace.model.snapshot import Snapshot
from svctrace.parsers.k8s import ApiObjects
from svctrace.parsers.snapshot import NodeInput, build_snapshot

NODES = "nodes/"


@dataclass(frozen=True)
class MultiNodeSnapshot:
    """A snapshot of several nodes: the API objects, read once, and each node's files, read when asked."""

    label: str
    api: ApiObjects | None
    nodes: tuple[str, ...]
    tree: snapshot_dir._Tree
    root: str
    warnings: tuple[str, ...] = ()

    def node_input(self, name: str) -> NodeInput:
        """One node's files, as a single-node snapshot's node/ folder holds them."""
        if name not in self.nodes:
            raise UsageError(f"{self.label} holds no node {name!r}",
                             f"pick one of: {', '.join(self.nodes)} (or --all-nodes)")
        node = NodeInput()
        prefix = f"{self.root}{NODES}{name}/"
        for full in self.tree.files:
            if full.startswith(prefix) and not snapshot_dir._hidden(full):
                file = full[len(prefix):]
                if file in snapshot_dir.NODE_FILES:
                    node.files[file] = snapshot_dir._text(self.tree, full)
                    node.where[file] = self.tree.locate(full)
        return node

    def snapshot(self, name: str, node: NodeInput | None = None) -> Snapshot:
        """The Snapshot of one node of this snapshot (``node``: its files, when already read)."""
        read = node if node is not None else self.node_input(name)
        return build_snapshot(self.api, read, source=f"{self.label} (node {name})", api_warnings=self.warnings,
                              explicit_node=name)


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


def _root(files: tuple[str, ...]) -> str | None:
    """The prefix under which nodes/<name>/ sits: "" or "one-folder/"; None for a single-node snapshot."""
    visible = [f for f in files if not snapshot_dir._hidden(f)]
    if any(f.startswith(NODES) and f.count("/") >= 2 for f in visible):
        return ""
    tops = {f.split("/", 1)[0] for f in visible if "/" in f}
    if len(tops) == 1:
        top = tops.pop() + "/"
        if any(f.startswith(top + NODES) and f.count("/") >= 3 for f in visible):
            return top
    return None


def load(spec: str) -> Snapshot | MultiNodeSnapshot:
    """A snapshot folder or tarball: a Snapshot for a single-node one, a MultiNodeSnapshot for a multi-node one."""
    if spec == "demo" or spec.startswith("demo:"):
        return snapshot_dir.load_snapshot(spec)
    from pathlib import Path

    path = Path(spec).expanduser()
    if not path.exists() or not (path.is_dir() or path.is_file()):
        return snapshot_dir.load_snapshot(spec)  # says what is wrong with it
    tree = snapshot_dir._folder_tree(path, spec) if path.is_dir() else snapshot_dir._tar_tree(path, spec)
    root = _root(tree.files)
    if root is None:
        return snapshot_dir._build(tree, spec)
    depth = root.count("/") + 2  # nodes/<name>/<file>
    nodes = sorted({f[len(root) + len(NODES):].split("/", 1)[0] for f in tree.files
                    if f.startswith(root + NODES) and not snapshot_dir._hidden(f) and f.count("/") >= depth})
    api_files = [f for f in tree.files if f.startswith(root + "api/") and not snapshot_dir._hidden(f)
                 and posixpath.splitext(f)[1].lower() in snapshot_dir.API_SUFFIXES]
    if not nodes:
        raise InputError(f"{spec}: nodes/ holds no node folders", snapshot_dir.DOCS_HINT)
    api = snapshot_dir._read_api(tree, api_files, root, spec) if api_files else None
    usable = api if api is not None and api.objects_seen > 0 else None
    return MultiNodeSnapshot(spec, usable, tuple(nodes), tree, root, api.warnings if api is not None else ())
