"""Read a snapshot (a folder, a tarball of one, or the bundled demo) into a Snapshot.

The layout is documented in docs/snapshot.md. This module only finds and reads files; the parsers
turn their text into the model. A tarball is read in memory and never extracted, so hostile member
names cannot write anywhere; they are refused all the same, since no honest snapshot has them.
"""

from __future__ import annotations

import logging
import os
import posixpath
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from svctrace.errors import InputError
from svctrace.model.snapshot import NodeFile, Snapshot
from svctrace.parsers.k8s import ApiObjects, decode_documents, merge_objects, parse_objects
from svctrace.parsers.snapshot import NodeInput, build_snapshot, check_text

log = logging.getLogger(__name__)

DOCS_HINT = "see docs/snapshot.md for the layout and the one-liner that makes a snapshot on a node"

# The node/ files svctrace knows (docs/snapshot.md).
NODE_FILES = frozenset(f.value for f in NodeFile)

API_SUFFIXES: dict[str, Literal["json", "yaml"]] = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}

# A snapshot of a big cluster is tens of MB; this bound only stops a tarball that claims gigabytes.
MAX_TOTAL_BYTES = 1 << 30


@dataclass(frozen=True)
class _Tree:
    """The files of a snapshot, by path relative to its root ("api/objects.yaml")."""

    label: str  # what the user passed, for messages
    files: tuple[str, ...]
    read: Callable[[str], bytes]
    locate: Callable[[str], str]  # a path for messages: where the user finds the file


def load_snapshot(spec: str | Path) -> Snapshot:
    """A Snapshot from a snapshot folder, a .tar.gz of one, or the word ``demo``."""
    if isinstance(spec, str) and spec == "demo":
        return _build(_folder_tree(_demo_path(), "demo"), "demo")
    if isinstance(spec, str) and spec.startswith("demo:"):
        return load_demo(spec.partition(":")[2])
    label = str(spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"{label}: no such folder or file",
                         f"pass a snapshot folder, a .tar.gz of one, or `demo`; {DOCS_HINT}")
    if path.is_dir():
        return _build(_folder_tree(path, label), label)
    if path.is_file():
        if not (_looks_compressed(path) or tarfile.is_tarfile(path)):
            from svctrace.collectors.pasted_file import load_pasted_file

            return load_pasted_file(path, label)
        return _build(_tar_tree(path, label), label)
    raise InputError(f"{label}: not a folder or a tarball",
                     f"pass a snapshot folder or a .tar.gz of one; {DOCS_HINT}")


def _demo_path(mode: str = "iptables") -> Path:
    try:
        from svctrace.demo import demo_path
    except ImportError:
        raise InputError("this build of svctrace has no bundled demo",
                         "pass a snapshot folder or tarball with --from instead") from None
    return Path(demo_path(mode))


def load_demo(mode: str = "iptables") -> Snapshot:
    """The demo cluster as kube-proxy in ``mode`` programs it: the shared api/ plus that mode's node/ files."""
    label = "demo" if mode == "iptables" else f"demo:{mode}"
    api = _folder_tree(_demo_path(), label)
    if mode == "iptables":
        return _build(api, label)
    node = _folder_tree(_demo_path(mode), label)
    files = tuple(f for f in api.files if f.startswith("api/")) + tuple(f for f in node.files if f.startswith("node/"))

    def read(name: str) -> bytes:
        return (api if name.startswith("api/") else node).read(name)

    def locate(name: str) -> str:
        return (api if name.startswith("api/") else node).locate(name)

    return _build(_Tree(label=label, files=files, read=read, locate=locate), label)


# ---------------------------------------------------------------------------------------------
# trees: a folder or a tarball


def _folder_tree(root: Path, label: str) -> _Tree:
    real_root = root.resolve()
    found: list[str] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            # A symlink may point anywhere on this machine; follow it only while it stays in the snapshot.
            if full.is_symlink() and not full.resolve().is_relative_to(real_root):
                skipped.append(rel)
                continue
            found.append(rel)
    if skipped:
        log.debug("%s: symlinks leading out of the snapshot skipped: %s", label, ", ".join(skipped))

    def read(rel: str) -> bytes:
        try:
            return (root / rel).read_bytes()
        except OSError as exc:
            raise InputError(f"{root / rel}: cannot read: {exc.strerror or exc}",
                             "check the file's permissions (or run as a user who can read it)") from None

    return _Tree(label, tuple(found), read, lambda rel: str(root / rel))


_HINT_CORRUPT = "it may be truncated or corrupt; copy it again, or pass the unpacked folder"
_HINT_REMAKE = ("a snapshot holds plain files only; make the tarball again from the folder "
                "(tar czf snap.tar.gz snap/)")


def _tar_tree(path: Path, label: str) -> _Tree:
    try:
        with tarfile.open(path, "r:*") as tf:
            contents = _tar_contents(tf, label)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if _looks_compressed(path) or isinstance(exc, (EOFError, zlib.error)):
            raise InputError(f"{label}: cannot read the tarball ({exc})", _HINT_CORRUPT) from None
        raise InputError(f"{label}: not a snapshot folder or tarball",
                         f"pass a snapshot folder or a .tar.gz of one; {DOCS_HINT}") from None
    return _Tree(label, tuple(sorted(contents)), contents.__getitem__, lambda rel: f"{label}:{rel}")


def _tar_contents(tf: tarfile.TarFile, label: str) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    total = 0
    for member in tf:
        name = _safe_member_name(member, label)
        if name is None or member.isdir():
            continue
        if not member.isfile():
            raise InputError(f"{label}: member {member.name!r} is a link or special file; refused",
                             _HINT_REMAKE)
        total += member.size
        if total > MAX_TOTAL_BYTES:
            raise InputError(f"{label}: unpacks to more than {MAX_TOTAL_BYTES >> 20} MiB; refused",
                             "a snapshot is normally a few MB; check that this is the right file")
        fileobj = tf.extractfile(member)
        if fileobj is not None:
            contents[name] = fileobj.read()
    return contents


def _looks_compressed(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(6)
    except OSError:
        return False
    return head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))


def _safe_member_name(member: tarfile.TarInfo, label: str) -> str | None:
    raw = member.name
    parts = raw.replace("\\", "/").split("/")
    if raw.startswith(("/", "\\")) or ".." in parts or (len(parts[0]) == 2 and parts[0][1] == ":"):
        raise InputError(f"{label}: member {raw!r} points outside the snapshot; refused",
                         "a snapshot tarball holds relative paths only; make it again with "
                         "`tar czf snap.tar.gz snap/`")
    name = posixpath.normpath(raw)
    return None if name in (".", "") else name


# ---------------------------------------------------------------------------------------------
# tree -> Snapshot


def _hidden(rel: str) -> bool:
    # Editor swap files, .DS_Store and the ._* files macOS tar adds are never snapshot data.
    return any(part.startswith(".") for part in rel.split("/"))


def _find_root(files: tuple[str, ...]) -> str | None:
    """The prefix under which api/ and node/ sit: "" or "one-folder/"; None when there is none."""
    visible = [f for f in files if not _hidden(f)]
    if any(f.startswith(("api/", "node/")) for f in visible):
        return ""
    tops = {f.split("/", 1)[0] for f in visible if "/" in f}
    if len(tops) == 1:
        top = tops.pop() + "/"
        if any(f.startswith((top + "api/", top + "node/")) for f in visible):
            return top
    return None


def _text(tree: _Tree, rel: str) -> str:
    return check_text(tree.read(rel), tree.locate(rel))


def _build(tree: _Tree, label: str) -> Snapshot:
    root = _find_root(tree.files)
    if root is None:
        inner = sorted({f.split("/", 1)[0] for f in tree.files
                        if not _hidden(f) and f.count("/") >= 2 and f.split("/")[1] in ("api", "node")})
        if len(inner) > 1:
            raise InputError(f"{label}: holds several snapshots ({', '.join(inner)}); pass one of them",
                             f"e.g. --from {posixpath.join(label, inner[0])}")
        raise InputError(f"{label}: no api/ or node/ files found; this is not a snapshot",
                         f"pass the folder that holds api/ and node/; {DOCS_HINT}")
    warnings: list[str] = []
    api_files: list[str] = []
    node = NodeInput()
    for full in tree.files:
        if _hidden(full):
            log.debug("%s: hidden file %s skipped", label, full)
            continue
        rel = full[len(root):] if full.startswith(root) else None
        if rel is not None and rel.startswith("api/") and posixpath.splitext(rel)[1].lower() in API_SUFFIXES:
            api_files.append(full)
        elif rel is not None and rel.startswith("node/") and rel[len("node/"):] in NODE_FILES:
            name = rel[len("node/"):]
            node.files[name] = _text(tree, full)
            node.where[name] = tree.locate(full)
        else:
            shown = rel if rel is not None else full
            warnings.append(f"{shown}: not a file svctrace reads; ignored (see docs/snapshot.md)")
    node.warnings = warnings
    api = _read_api(tree, api_files, root, label)
    return build_snapshot(api if api_files and api.objects_seen > 0 else None, node, source=label,
                          api_warnings=api.warnings)


def _relative(warnings: tuple[str, ...], where: str, rel: str) -> list[str]:
    # Warnings name files inside the snapshot, so a folder and its tarball warn alike.
    return [w.replace(where, rel) for w in warnings]


def _read_api(tree: _Tree, files: list[str], root: str, label: str) -> ApiObjects:
    parts = []
    for full in files:
        fmt = API_SUFFIXES[posixpath.splitext(full)[1].lower()]
        where = tree.locate(full)
        part = parse_objects(decode_documents(_text(tree, full), where, fmt), where)
        parts.append(replace(part, warnings=tuple(_relative(part.warnings, where, full[len(root):]))))
    api = merge_objects(parts)
    if api.ignored_kinds:
        log.debug("%s: %d objects of kinds svctrace does not read were ignored: %s", label, api.ignored,
                  ", ".join(f"{kind} ({n})" for kind, n in api.ignored_kinds.items()))
    return api
