"""Read a snapshot (a folder, a tarball of one, or the bundled demo) into a Snapshot.

The layout and the limits are documented in docs/snapshot.md. This module only finds and opens files;
the parsers turn their text into the model. Only regular files are opened (a FIFO, a device or a socket
would block or never end), each is refused by its size before it is read when it is bigger than any
honest one, and api/ files are parsed as they are read, item by item, so a big cluster's objects are
never a whole document in memory. A tarball is read as a stream and never extracted: members that are
not snapshot files are skipped without being kept, and hostile member names cannot write anywhere
(they are refused all the same, since no honest snapshot has them).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from svctrace.errors import InputError
from svctrace.model.snapshot import NodeFile, Snapshot
from svctrace.parsers.json_stream import Counter, compact
from svctrace.parsers.k8s import ApiObjects, merge_objects, parse_raw
from svctrace.parsers.k8s_documents import read_json_objects, read_yaml_objects
from svctrace.parsers.k8s_lazy import MIN_LAZY_BYTES, NotIndexed, index_list, read_indexed
from svctrace.parsers.limits import (
    MAX_API_FILE_BYTES,
    MAX_CHAIN_RULES,
    MAX_LINE_BYTES,
    MAX_NODE_FILE_BYTES,
    MAX_NODE_FILE_LINES,
    MAX_OBJECT_BYTES,
    MAX_SNAPSHOT_BYTES,
    MAX_SNAPSHOT_FILES,
    MAX_VALUES,
    MAX_YAML_FILE_BYTES,
    mib,
)
from svctrace.parsers.snapshot import OPTIONAL_NODE_FILES, NodeInput, build_snapshot, read_dumps
from svctrace.parsers.text_stream import TextStream
from svctrace.record import record

if TYPE_CHECKING:
    import tarfile

    from svctrace import parallel
    from svctrace.parsers.list_index import ListIndex


def _debug(message: str, *args: object) -> None:
    """A note for the svctrace.collectors.snapshot_dir logger; logging is imported only when there is one."""
    import logging

    logging.getLogger(__name__).debug(message, *args)


DOCS_HINT = "see docs/snapshot.md for the layout and the one-liner that makes a snapshot on a node"
_HINT_LIMITS = "check that this is the right file; docs/snapshot.md lists the limits"
_HINT_PLAIN = ("a snapshot holds plain files only; copy it again with `cp -r` or `tar czf snap.tar.gz snap/` "
               "(or remove that entry)")

# The node/ files svctrace knows (docs/snapshot.md).
NODE_FILES = frozenset(f.value for f in NodeFile)

API_SUFFIXES: dict[str, Literal["json", "yaml"]] = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}

# Kept for callers that name the old bound.
MAX_TOTAL_BYTES = MAX_SNAPSHOT_BYTES

_Open = Callable[[], IO[bytes]]


def load_snapshot(spec: str | Path) -> Snapshot:
    """A Snapshot from a snapshot folder, a .tar.gz of one, or the word ``demo``."""
    if isinstance(spec, str) and spec == "demo":
        return _read_entries(_folder_entries(_demo_path(), "demo"), "demo")
    if isinstance(spec, str) and spec.startswith("demo:"):
        return load_demo(spec.partition(":")[2])
    label = str(spec)
    path = Path(spec).expanduser()
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{label}: a symlink loop; refused", f"pass the snapshot folder itself; {DOCS_HINT}") \
                from None
        raise InputError(f"{label}: no such folder or file",
                         f"pass a snapshot folder, a .tar.gz of one, or `demo`; {DOCS_HINT}") from None
    if stat.S_ISDIR(st.st_mode):
        read = Read()
        return _read_entries(_folder_entries(path, label, read.skipped), label, read)
    if stat.S_ISREG(st.st_mode):
        if not _is_tarball(path):
            from svctrace.collectors.pasted_file import load_pasted_file

            return load_pasted_file(path, label)
        return _read_tarball(path, label)
    raise InputError(f"{label}: a {_kind_of(st.st_mode)}, not a folder or a tarball",
                     f"pass a snapshot folder or a .tar.gz of one; {DOCS_HINT}")


@contextlib.contextmanager
def _tar_stream(path: Path, label: str) -> Iterator[Iterator[Entry]]:
    import tarfile
    import zlib

    with _opener(path, label)() as f:
        try:
            with tarfile.open(fileobj=f, mode="r:*") as tf:
                yield _tar_entries(tf, label)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            if _looks_compressed(path) or isinstance(exc, (EOFError, zlib.error)):
                raise InputError(f"{label}: cannot read the tarball ({exc or type(exc).__name__})",
                                 _HINT_CORRUPT) from None
            raise InputError(f"{label}: not a snapshot folder or tarball",
                             f"pass a snapshot folder or a .tar.gz of one; {DOCS_HINT}") from None


def entries(spec: str, skipped: list[str] | None = None) -> contextlib.AbstractContextManager[Iterator[Entry]] | None:
    """The files of a snapshot folder or the members of a tarball, one at a time, with every safety check;
    None when ``spec`` is neither (load_snapshot says why). A folder's files left unread are said in
    ``skipped``."""
    path = Path(spec).expanduser()
    try:
        st = path.stat()
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return contextlib.nullcontext(_folder_entries(path, spec, skipped))
    if stat.S_ISREG(st.st_mode) and _is_tarball(path):
        return _tar_stream(path, spec)
    return None


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
    if mode == "iptables":
        return _read_entries(_folder_entries(_demo_path(), label), label)
    api = (e for e in _folder_entries(_demo_path(), label) if e.name.startswith("api/"))
    node = (e for e in _folder_entries(_demo_path(mode), label) if e.name.startswith("node/"))
    return _read_entries(_chain(api, node), label)


def _chain(*parts: Iterator[Entry]) -> Iterator[Entry]:
    for part in parts:
        yield from part


# ---------------------------------------------------------------------------------------------
# entries: the files of a folder or the members of a tarball, one at a time


@record
class Entry:
    """One file of a snapshot: its path under what the user passed, its size, where to say it is, how to open it.

    A tarball's member can only be opened while it is the current one: read it before asking for the next.
    """

    name: str
    size: int
    where: str
    open: _Open
    lasting: bool = True  # whether it can be opened later (a folder's file) or only now (a tarball's member)
    path: Path | None = None  # a folder's regular file (checked as one), which an index may read again


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "special file"


def _hidden(rel: str) -> bool:
    # Editor swap files, .DS_Store and the ._* files macOS tar adds are never snapshot data.
    return any(part.startswith(".") for part in rel.split("/"))


_HINT_LINKS = "copy the snapshot with `cp -rL` to follow it"
MAX_LINKS_NAMED = 10  # symlinks not followed, each named in a warning; the rest counted in one


def _folder_entries(root: Path, label: str, skipped: list[str] | None = None) -> Iterator[Entry]:
    """The folder's files. A symlink is followed only to a regular file inside the folder (a snapshot from
    elsewhere may hold links to anywhere on this machine); a symlink to a folder is not followed. Each
    snapshot file left unread so is said in ``skipped`` (the snapshot's warnings), so that a snapshot
    assembled with links is never read as if those files were absent."""
    real_root = root.resolve()
    count = 0
    links: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        linked = [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
        for name in sorted(filenames) + linked:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if _hidden(rel):
                continue  # never even looked at
            count += 1
            if count > MAX_SNAPSHOT_FILES:
                raise InputError(f"{label}: more than {MAX_SNAPSHOT_FILES:,} files; refused", _HINT_LIMITS)
            if name in linked:
                links.append(f"{rel}/: not read: a symlink to a folder ({full.resolve()}); {_HINT_LINKS}")
                continue
            target = _regular_target(full, real_root, rel, label)
            if isinstance(target, str):
                links.append(f"{rel}: not read: {target}; {_HINT_LINKS}")
                continue
            yield Entry(rel, target[1], str(full), _opener(target[0], str(full)), path=target[0])
    if skipped is not None:  # (each named, up to a point: a folder may hold thousands)
        if len(links) > MAX_LINKS_NAMED:
            links[MAX_LINKS_NAMED - 1:] = [f"{len(links) - MAX_LINKS_NAMED + 1} more symlinks: not read; {_HINT_LINKS}"]
        skipped += links


def _regular_target(full: Path, real_root: Path, rel: str, label: str) -> tuple[Path, int] | str:
    """The regular file behind ``full`` and its size; why not, for a symlink out of the snapshot or to nothing."""
    try:
        st = full.lstat()
    except OSError as exc:
        raise InputError(f"{full}: cannot read: {exc.strerror or exc}",
                         "check the file's permissions (or run as a user who can read it)") from None
    target = full
    if stat.S_ISLNK(st.st_mode):
        # A symlink may point anywhere on this machine; follow it only while it stays in the snapshot.
        try:
            target = full.resolve(strict=True)
        except (RuntimeError, OSError) as exc:
            if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
                raise InputError(f"{label}: {rel} is a symlink loop; refused", _HINT_PLAIN) from None
            return "a symlink to nothing"
        if not target.is_relative_to(real_root):
            return f"a symlink out of the snapshot folder ({target})"
        st = target.stat()
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{label}: {rel} is a {_kind_of(st.st_mode)}, not a regular file; refused", _HINT_PLAIN)
    return target, st.st_size


def _opener(path: Path, shown: str) -> _Open:
    def open_() -> IO[bytes]:
        # O_NONBLOCK: if the file was swapped for a FIFO since it was looked at, open must not wait for a writer.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise InputError(f"{shown}: cannot read: {exc.strerror or exc}",
                             "check the file's permissions (or run as a user who can read it)") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise InputError(f"{shown}: not a regular file; refused", _HINT_PLAIN)
        return os.fdopen(fd, "rb")

    return open_


_HINT_CORRUPT = "it may be truncated or corrupt; copy it again, or pass the unpacked folder"
_HINT_REMAKE = ("a snapshot holds plain files only; make the tarball again from the folder "
                "(tar czf snap.tar.gz snap/)")


def _read_tarball(path: Path, label: str) -> Snapshot:
    with _tar_stream(path, label) as each:
        return _read_entries(each, label)


def _tar_entries(tf: tarfile.TarFile, label: str) -> Iterator[Entry]:
    total = 0
    count = 0
    for member in tf:
        count += 1
        if count > MAX_SNAPSHOT_FILES:
            raise InputError(f"{label}: more than {MAX_SNAPSHOT_FILES:,} members; refused", _HINT_LIMITS)
        name = _safe_member_name(member, label)
        if name is None or member.isdir():
            continue
        if not member.isfile():
            raise InputError(f"{label}: member {member.name!r} is a link or special file; refused", _HINT_REMAKE)
        # Skipped members are unpacked too (a compressed stream cannot jump), so all of them count.
        total += member.size
        if total > MAX_SNAPSHOT_BYTES:
            raise InputError(f"{label}: unpacks to more than {mib(MAX_SNAPSHOT_BYTES)}; refused",
                             "a snapshot is normally a few MB; check that this is the right file")
        if _hidden(name):
            continue

        def open_(member: tarfile.TarInfo = member) -> IO[bytes]:
            fileobj = tf.extractfile(member)
            assert fileobj is not None  # a regular member always has one
            return fileobj

        yield Entry(name, member.size, f"{label}:{name}", open_, lasting=False)


def _is_tarball(path: Path) -> bool:
    """Whether a regular file is a tarball (compressed or not) rather than one pasted dump."""
    import tarfile

    try:
        return _looks_compressed(path) or tarfile.is_tarfile(path)
    except OSError:
        return True  # reading it as a tarball says what is wrong


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
# entries -> Snapshot


def _snapshot_file(rel: str) -> str | None:
    """"api" for an api/ document, the node file's name for a node/ file, None for anything else."""
    if rel.startswith("api/") and posixpath.splitext(rel)[1].lower() in API_SUFFIXES:
        return "api"
    if rel.startswith("node/") and rel[len("node/"):] in NODE_FILES:
        return rel[len("node/"):]
    return None


def may_be_snapshot_file(name: str) -> bool:
    """Whether ``name`` is a snapshot file under the root or under a single top-level folder (decided at the end)."""
    if _snapshot_file(name) is not None:
        return True
    _, sep, rest = name.partition("/")
    return bool(sep) and _snapshot_file(rest) is not None


@dataclass
class Read:
    """What was read from the entries so far, by entry name: parsed API files and node files' text."""

    names: list[str] = field(default_factory=list)
    api: dict[str, ApiObjects] = field(default_factory=dict)
    node: dict[str, str] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    total: int = 0
    counter: Counter = field(default_factory=lambda: Counter(MAX_VALUES))
    skipped: list[str] = field(default_factory=list)  # optional files not read, and why
    # big api/ files being indexed in another process while the rest is read (``finish`` types them)
    indexing: dict[str, tuple[Entry, parallel.Background[ListIndex | NotIndexed]]] = field(default_factory=dict)
    early: dict[str, parallel.Background[ListIndex | NotIndexed]] = field(default_factory=dict)  # before ``take``

    def cancel(self) -> None:
        """Stop the indexing not waited for (the snapshot was refused on the way)."""
        for job in (*self.early.values(), *(job for _entry, job in self.indexing.values())):
            job.cancel()
        self.early.clear()
        self.indexing.clear()


def _limit_for(rel: str, kind: str) -> tuple[int, str]:
    if kind == "api":
        if API_SUFFIXES[posixpath.splitext(rel)[1].lower()] == "yaml":
            return MAX_YAML_FILE_BYTES, "a YAML file in api/ (write JSON for big clusters)"
        return MAX_API_FILE_BYTES, "a file in api/"
    return MAX_NODE_FILE_BYTES[kind], f"node/{kind}"


def _fits(entry: Entry, read: Read, rel: str, kind: str) -> tuple[int, str] | None:
    """The entry's read limit and what it is; None (and a note in ``read.skipped``) for an optional file too big."""
    limit, what = _limit_for(rel, kind)
    if entry.size > limit and kind in OPTIONAL_NODE_FILES:
        read.skipped.append(f"{entry.where}: bigger than the {mib(limit)} svctrace reads for {what}; not read")
        return None
    if entry.size > limit:
        raise InputError(f"{mib(entry.size) if entry.size >= 1 << 20 else f'{entry.size} bytes'}, more than the "
                         f"{mib(limit)} svctrace reads for {what}; refused", _HINT_LIMITS, path=entry.where)
    read.total += entry.size
    if read.total > MAX_SNAPSHOT_BYTES:
        raise InputError(f"files to read add up to more than {mib(MAX_SNAPSHOT_BYTES)}; refused", _HINT_LIMITS,
                         path=entry.where)
    return limit, what


def take(entry: Entry, read: Read) -> None:
    name = entry.name
    rel = name if _snapshot_file(name) is not None else name.partition("/")[2]
    kind = _snapshot_file(rel)
    assert kind is not None
    fits = _fits(entry, read, rel, kind)
    if fits is None:
        return
    limit, what = fits
    if kind == "api" and _indexing(entry, rel, read):
        return
    if kind != "api":
        with entry.open() as f:
            try:
                read.node[name] = _node_text(kind, f, entry.where, limit, what)
            except InputError as exc:
                if kind not in OPTIONAL_NODE_FILES:
                    raise
                # An optional file too big to read leaves its check saying it could not look; no reason to
                # refuse the snapshot.
                read.skipped.append(f"{exc.message}; not read ({exc.hint})")
    else:
        _stream_api(entry, rel, read, limit, what)
    read.where[name] = entry.where


def _stream_api(entry: Entry, rel: str, read: Read, limit: int, what: str) -> None:
    with entry.open() as f:
        stream = TextStream(f.read, entry.where, limit=limit, what=what)
        if API_SUFFIXES[posixpath.splitext(rel)[1].lower()] == "json":
            objects = read_json_objects(stream, entry.where, read.counter)
        else:
            objects = read_yaml_objects(stream.read_all(), entry.where, read.counter)
        read.api[entry.name] = parse_raw(objects, entry.where)


def _indexing(entry: Entry, rel: str, read: Read) -> bool:
    """Index a big api/ List file of a folder in another process while the rest is read (its Pods and
    EndpointSlices are typed when asked for); False when it is not one (then it is read as a stream now)."""
    if not _indexable(entry, rel):
        return False
    job = read.early.pop(entry.name, None) or _index_job(entry)
    read.indexing[entry.name] = (entry, job)
    read.where[entry.name] = entry.where
    return True


def index_early(entry: Entry, read: Read) -> None:
    """Start indexing a big api/ List file of a folder before the node files are read; ``take`` still checks it
    in its turn (its limits, the snapshot's total) and takes the job over then."""
    rel = entry.name if _snapshot_file(entry.name) is not None else entry.name.partition("/")[2]
    if _snapshot_file(rel) == "api" and _indexable(entry, rel) and entry.name not in read.early:
        read.early[entry.name] = _index_job(entry)


def _indexable(entry: Entry, rel: str) -> bool:
    return entry.path is not None and entry.size >= MIN_LAZY_BYTES and \
        API_SUFFIXES[posixpath.splitext(rel)[1].lower()] == "json"


def _index_job(entry: Entry) -> parallel.Background[ListIndex | NotIndexed]:
    from svctrace import parallel  # (only for a big file: start-up)

    path = entry.path
    assert path is not None
    # (the other process also indexes what is asked first; on one core that waits for the question)
    return parallel.Background(lambda: _index_or_why(path, True), lambda: _index_or_why(path, False))


def _index_or_why(path: Path, asked: bool) -> ListIndex | NotIndexed:
    """The file's index, or why it has none: an answer, sent back as one (not an error to redo here)."""
    try:
        return index_list(path, asked=asked)
    except NotIndexed as exc:
        return exc


def finish(read: Read) -> None:
    """The big api/ files indexed meanwhile, read through their index; one whose layout allows none (minified,
    several documents, ...) is read as a stream now."""
    try:
        for name, (entry, job) in list(read.indexing.items()):
            del read.indexing[name]
            assert entry.path is not None
            try:
                index = job.result()
                if isinstance(index, NotIndexed):
                    raise index
                read.api[name] = read_indexed(entry.path, entry.where, index)
            except NotIndexed as exc:
                _debug("%s: read as a stream: %s", entry.where, exc.reason)
                rel = name if _snapshot_file(name) is not None else name.partition("/")[2]
                _stream_api(entry, rel, read, *_limit_for(rel, "api"))
            except OSError as exc:
                raise InputError(f"cannot read: {exc.strerror or exc}", "check the file's permissions (or run as a "
                                 "user who can read it)", path=entry.where) from None
    finally:
        read.cancel()


def node_text_reader(entry: Entry, kind: str, read: Read) -> Callable[[], str] | None:
    """How to read one node file of a multi-node snapshot (svctrace.collectors.snapshot_nodes), within the
    same bounds as ``node/``: later for a folder's file, now for a tarball's member; None when it is skipped."""
    fits = _fits(entry, read, f"node/{kind}", kind)
    if fits is None:
        return None
    limit, what = fits

    def text() -> str:
        with entry.open() as f:
            return _node_text(kind, f, entry.where, limit, what)

    if entry.lasting:
        return text
    now = text()
    return lambda: now


def _node_text(kind: str, f: IO[bytes], where: str, limit: int, what: str) -> str:
    """A node/ file's text, within its bounds: size, lines and line length; nft.json compacted as it is read."""
    if kind.endswith(".json"):
        stream = TextStream(f.read, where, limit=limit, what=what)
        if kind == NodeFile.NFT:
            text = stream.read_all()
            # `nft -j` writes one dense line: read as it is (compacting 90 MB costs seconds). A file of
            # mostly whitespace (pretty-printed, or padded) is compacted first, item by item.
            blank = text.count(" ") + text.count("\n") + text.count("\t") + text.count("\r")
            if blank * 10 < len(text):
                return text
            data = io.BytesIO(text.encode())
            del text
            return compact(TextStream(data.read, where, limit=limit, what=what), where, stream_key="nftables",
                           max_value_chars=MAX_OBJECT_BYTES, counter=Counter(MAX_NODE_FILE_LINES * 10))
        return stream.read_all()
    return TextStream(f.read, where, limit=limit, what=what, max_lines=MAX_NODE_FILE_LINES,
                      max_line=MAX_LINE_BYTES).read_all()


def _find_root(files: list[str]) -> str | None:
    """The prefix under which api/ and node/ sit: "" or "one-folder/"; None when there is none."""
    if any(f.startswith(("api/", "node/")) for f in files):
        return ""
    tops = {f.split("/", 1)[0] for f in files if "/" in f}
    if len(tops) == 1:
        top = tops.pop() + "/"
        if any(f.startswith((top + "api/", top + "node/")) for f in files):
            return top
    return None


def _read_entries(entries: Iterator[Entry], label: str, read: Read | None = None) -> Snapshot:
    read = read if read is not None else Read()
    try:
        return _read_into(read, entries, label)
    finally:
        read.cancel()


def _read_into(read: Read, entries: Iterator[Entry], label: str) -> Snapshot:
    api_files: list[Entry] = []
    for entry in entries:
        read.names.append(entry.name)
        if may_be_snapshot_file(entry.name):
            if entry.lasting and is_api_file(entry.name):
                api_files.append(entry)  # a folder's api/ files after its node/ files (a tarball's as they come)
                index_early(entry, read)
            else:
                take(entry, read)
    # node/nft.json of 10,000 Services is 91 MB of text, read with a second copy of it for a moment: read
    # before the API objects are, that moment costs 40 MB less of peak memory (a tarball's come as they come).
    for entry in api_files:
        take(entry, read)
    return build(read, label)


def is_api_file(name: str) -> bool:
    """Whether an entry's name is an api/ document (under the root or a single top-level folder)."""
    rel = name if _snapshot_file(name) is not None else name.partition("/")[2]
    return _snapshot_file(rel) == "api"


def _relative(warnings: tuple[str, ...], where: str, rel: str) -> tuple[str, ...]:
    # Warnings name files inside the snapshot, so a folder and its tarball warn alike.
    return tuple(w.replace(where, rel) for w in warnings)


def build(read: Read, label: str) -> Snapshot:
    files = sorted(read.names)
    root = _find_root(files)
    if root is None:
        inner = sorted({f.split("/", 1)[0] for f in files
                        if f.count("/") >= 2 and f.split("/")[1] in ("api", "node")})
        if len(inner) > 1:
            raise InputError(f"{label}: holds several snapshots ({', '.join(inner)}); pass one of them",
                             f"e.g. --from {posixpath.join(label, inner[0])}")
        if read.skipped:  # (here only symlinks not followed: nothing else was looked at)
            raise InputError(f"{label}: no api/ or node/ file svctrace can read: {read.skipped[0].partition('; ')[0]}"
                             + (f" (and {len(read.skipped) - 1} more)" if len(read.skipped) > 1 else ""),
                             f"copy the snapshot with `cp -rL {label} COPY` and pass --from COPY")
        raise InputError(f"{label}: no api/ or node/ files found; this is not a snapshot",
                         f"pass the folder that holds api/ and node/; {DOCS_HINT}")
    warnings: list[str] = []
    api_files: list[tuple[str, str]] = []
    node = NodeInput()
    for full in files:
        rel = full[len(root):] if full.startswith(root) else None
        kind = _snapshot_file(rel) if rel is not None else None
        if kind == "api" and (full in read.api or full in read.indexing) and rel is not None:
            api_files.append((full, rel))
        elif kind is not None and full in read.node:
            node.files[kind] = read.node[full]
            node.where[kind] = read.where[full]
        else:
            warnings.append(f"{rel if rel is not None else full}: not a file svctrace reads; ignored "
                            "(see docs/snapshot.md)")
    node.warnings = warnings + [w.replace(label + ":", "") for w in read.skipped]
    read_dumps(node)  # while the big api/ files are still being indexed
    finish(read)
    parts = [replace(part, warnings=_relative(part.warnings, read.where[full], rel))
             for full, rel in api_files for part in (read.api[full],)]
    api = merge_objects(parts)
    if api.ignored_kinds:
        _debug("%s: %d objects of kinds svctrace does not read were ignored: %s", label, api.ignored,
                  ", ".join(f"{kind} ({n})" for kind, n in api.ignored_kinds.items()))
    snapshot = build_snapshot(api if parts and api.objects_seen > 0 else None, node, source=label,
                              api_warnings=api.warnings)
    check_chains(snapshot, node)
    return snapshot


def check_chains(snapshot: Snapshot, node: NodeInput) -> None:
    """Refuse a dump with a chain of more rules than MAX_CHAIN_RULES (counted by the index, before any is typed)."""
    for dump, name in ((snapshot.iptables, NodeFile.IPTABLES), (snapshot.ip6tables, NodeFile.IP6TABLES)):
        for table in dump.tables.values() if dump is not None else ():
            if table.most_rules() <= MAX_CHAIN_RULES:  # the usual case, answered without a head per chain
                continue
            for head in table.heads.values():
                if head.rule_count > MAX_CHAIN_RULES:
                    raise InputError(f"chain {table.name} {head.name} has {head.rule_count:,} rules, more than the "
                                     f"{MAX_CHAIN_RULES:,} svctrace reads in one chain; refused", _HINT_LIMITS,
                                     path=node.source(name))
