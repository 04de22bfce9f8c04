"""Write a snapshot (docs/snapshot.md) from what `svctrace capture` collected: a folder or a .tar.gz.

A snapshot holds a cluster's addresses and names, so only its owner may read it: every file is
0600 and every folder 0700 whatever the umask, and a tarball records no owner names. Only what svctrace
reads is written: each object is cut down to its kind's fields in svctrace.parsers.k8s_fields (no env,
args, commands, volumes, annotations, managedFields or status messages), objects of kinds svctrace does
not read are left out, and Secrets are never written, even if a caller passes one.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from svctrace.errors import InputError
from svctrace.model.snapshot import NodeFile
from svctrace.parsers.k8s_documents import expand
from svctrace.parsers.k8s_fields import READ_FIELDS, read_fields

NODE_FILE_NAMES = frozenset(f.value for f in NodeFile if f is not NodeFile.META)
TARBALL_SUFFIXES = (".tar.gz", ".tgz")
FILE_MODE = 0o600
DIR_MODE = 0o700


def write_snapshot(dest: Path, *, api_documents: Mapping[str, Mapping[str, Any]], node_files: Mapping[str, str],
                   meta: Mapping[str, Any]) -> Path:
    """Write api/<stem>.json, node/<file> and node/meta.json as a folder or, for .tar.gz/.tgz, a tarball."""
    files = snapshot_files(api_documents=api_documents, node_files=node_files, meta=meta)
    dest = Path(dest)
    if dest.name.endswith(TARBALL_SUFFIXES):
        return _write_tarball(dest, files, _capture_time(meta))
    return _write_folder(dest, files)


def write_files(dest: Path, files: Mapping[str, bytes], meta: Mapping[str, Any]) -> Path:
    """Write snapshot files already laid out (a multi-node snapshot's) as a folder or a .tar.gz, as
    :func:`write_snapshot` does (``meta``: for the tarball's capture time)."""
    dest = Path(dest)
    if dest.name.endswith(TARBALL_SUFFIXES):
        return _write_tarball(dest, files, _capture_time(meta))
    return _write_folder(dest, files)


def snapshot_files(*, api_documents: Mapping[str, Mapping[str, Any]], node_files: Mapping[str, str],
                   meta: Mapping[str, Any]) -> dict[str, bytes]:
    """The snapshot's files by relative path ("api/services.json"), Secrets left out."""
    files: dict[str, bytes] = {}
    for stem, doc in api_documents.items():
        if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
            raise ValueError(f"api document stem {stem!r} must be a plain file name")
        kept = _without_secrets(doc)
        if kept is not None:
            files[f"api/{stem}.json"] = _json(kept)
    for name, text in node_files.items():
        if name not in NODE_FILE_NAMES:
            known = ", ".join(sorted(NODE_FILE_NAMES))
            raise ValueError(f"{name!r} is not a node/ file of the snapshot format ({known})")
        files[f"node/{name}"] = text.encode()
    files[f"node/{NodeFile.META}"] = _json(meta)
    return files


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode()


def _without_secrets(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The document with only the objects, and the fields, svctrace reads (never a Secret)."""
    # Defensive: the collector already cuts what it reads, but nothing else may reach the disk.
    kept = [read_fields(o.doc) for o in expand(doc, "capture") if _read(o.doc.get("kind"))]
    if "items" in doc:
        return {"apiVersion": "v1", "kind": "List", "items": kept}
    return kept[0] if kept else None


def _read(kind: object) -> bool:
    return isinstance(kind, str) and kind in READ_FIELDS and kind != "Namespace"


def _capture_time(meta: Mapping[str, Any]) -> int:
    """capturedAt (ISO 8601 or seconds since the epoch) as the tarball's mtimes; now when absent."""
    value = meta.get("capturedAt")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp())
    return int(datetime.now(timezone.utc).timestamp())


def _write_folder(dest: Path, files: Mapping[str, bytes]) -> Path:
    if dest.exists():
        if not dest.is_dir():
            raise InputError(f"{dest}: exists and is not a folder",
                             "pass a new folder name, or a name ending in .tar.gz for a tarball")
        if any(dest.iterdir()):
            raise InputError(f"{dest}: the folder exists and is not empty; refusing to write into it",
                             "pass a new folder name (or empty this one) so no older files mix into the snapshot")
    else:
        if not dest.parent.is_dir():
            raise InputError(f"{dest.parent}: no such folder", "create it first, or pass a path in an existing folder")
        try:
            os.mkdir(dest, DIR_MODE)
        except OSError as exc:
            raise InputError(f"{dest}: cannot create the folder: {exc.strerror or exc}",
                             "pass a path where you may write") from None
    try:
        os.chmod(dest, DIR_MODE)  # mkdir's mode is filtered by the umask; chmod is not
        for rel in sorted(files):
            parent = dest
            for part in rel.split("/")[:-1]:
                parent = parent / part
                if not parent.is_dir():
                    os.mkdir(parent, DIR_MODE)
                    os.chmod(parent, DIR_MODE)
            _write_file(dest / rel, files[rel])
    except OSError as exc:
        raise InputError(f"{dest}: cannot write the snapshot: {exc.strerror or exc}",
                         "check the free space and permissions there, or pass another path") from None
    return dest


def _write_file(path: Path, data: bytes) -> None:
    """Create a new file readable only by its owner; O_EXCL so nothing is written through a planted link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _tar_stem(dest: Path) -> str:
    for suffix in TARBALL_SUFFIXES:
        if dest.name.endswith(suffix):
            return dest.name[: -len(suffix)] or "snapshot"
    return dest.name


def tarball_bytes(top: str, files: Mapping[str, bytes], mtime: int) -> bytes:
    """A gzipped tarball of ``files`` under ``top/``: 0700 folders, 0600 files, no owners, fixed mtimes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted({top} | {f"{top}/{rel.rsplit('/', 1)[0]}" for rel in files if "/" in rel})
        for d in dirs:
            tf.addfile(_member(d, tarfile.DIRTYPE, DIR_MODE, 0, mtime))
        for rel in sorted(files):
            data = files[rel]
            tf.addfile(_member(f"{top}/{rel}", tarfile.REGTYPE, FILE_MODE, len(data), mtime), io.BytesIO(data))
    out = io.BytesIO()
    # gzip's header carries a time and a file name too; fix both so one capture gives one byte string.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=mtime) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _member(name: str, type_: bytes, mode: int, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.mode = mode
    info.size = size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_tarball(dest: Path, files: Mapping[str, bytes], mtime: int) -> Path:
    if dest.exists() or dest.is_symlink():
        raise InputError(f"{dest}: already exists; refusing to overwrite it",
                         "pass a new file name, or remove the old tarball first")
    if not dest.parent.is_dir():
        raise InputError(f"{dest.parent}: no such folder", "create it first, or pass a path in an existing folder")
    data = tarball_bytes(_tar_stem(dest), files, mtime)
    try:
        _write_file(dest, data)
    except FileExistsError:
        raise InputError(f"{dest}: already exists; refusing to overwrite it",
                         "pass a new file name, or remove the old tarball first") from None
    except OSError as exc:
        dest.unlink(missing_ok=True)  # a partial tarball would only fail later, far from the cause
        raise InputError(f"{dest}: cannot write the tarball: {exc.strerror or exc}",
                         "check the free space and permissions there, or pass another path") from None
    return dest
