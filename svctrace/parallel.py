"""Work split over forked copies of this process: a big audit uses every core it may (read-only, like the rest).

``audit -A`` of 10,000 Services is pure Python over one Snapshot, so threads would not help. A forked
child shares the parent's Snapshot as it is (nothing is sent or rebuilt), works through its share of the
items, and sends back only its results, pickled. Rules and objects a child parses on demand stay in the
child, so the parsing is split too.

Correctness comes first: a child that fails, is killed or sends something unreadable is not trusted, and
its share is worked through again in this process. ``SVCTRACE_WORKERS=1`` turns the split off.

``Background`` is the same for one job done while this process goes on: a big file's index while the rest of
a snapshot is read.

Before each fork, and before the workers' answers are read, the C allocator's free memory is given back to the
system (``release_free_memory``): what a 10,000-Service read freed would otherwise stay resident in this
process and in every child forked from it.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

MIN_SHARE = 500  # items per worker below which forking costs more than it saves


def workers(items: int) -> int:
    """How many processes to use for ``items`` items: the usable cores, at most one per MIN_SHARE items."""
    env = os.environ.get("SVCTRACE_WORKERS", "").strip()
    if env.isdigit() and int(env) > 0:
        wanted = int(env)
    else:
        try:
            wanted = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            wanted = os.cpu_count() or 1
        wanted = min(wanted, 8)
    if not hasattr(os, "fork"):
        return 1
    return max(1, min(wanted, items // MIN_SHARE))


def split(items: Sequence[T], n: int, key: Callable[[T], object] | None = None) -> list[Sequence[T]]:
    """``n`` contiguous shares of ``items`` (neighbours stay together: a namespace's Services share pods).

    With ``key``, a cut between two items of one key moves to the nearest change of key within half a share,
    so that what items of one key share (a namespace's pods, typed once by a process that needs any of them)
    is worked out by one process, not by the two on either side of the cut. A run of one key longer than that
    is cut inside. Fewer shares may come back then, never an empty one."""
    size, extra = divmod(len(items), n)
    cuts: list[int] = []
    at = 0
    for k in range(n - 1):
        at += size + (1 if k < extra else 0)
        cuts.append(at)
    if key is not None and size > 1:
        cuts = [_nearest_change(items, cut, key, size // 2) for cut in cuts]
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(items)}), len(items)]
    return [items[a:b] for a, b in pairwise(bounds) if b > a]


def _nearest_change(items: Sequence[T], cut: int, key: Callable[[T], object], reach: int) -> int:
    """The cut nearest ``cut`` (within ``reach``; the earlier of two as near) where the key changes; else ``cut``."""
    def changes(at: int) -> bool:
        return 0 < at < len(items) and key(items[at - 1]) != key(items[at])

    for d in range(reach + 1):
        if changes(cut - d):
            return cut - d
        if changes(cut + d):
            return cut + d
    return cut


class _Child:
    def __init__(self, pid: int, fd: int, share: Sequence[object], shared: Sequence[object] = ()) -> None:
        self.pid = pid
        self.fd = fd
        self.share = share
        self.shared = shared  # objects its answer names by their place here (_dumps)
        self.data = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        while True:
            try:
                piece = os.read(self.fd, 1 << 20)
            except OSError:
                break
            if not piece:
                break
            self.data += piece
        os.close(self.fd)


PIECES_PER_WORKER = 16  # the items are cut into this many pieces a worker: each process takes the next one it can
# (smaller pieces leave less of one process's last piece to wait for: at 10k Services, pieces of 312 left the
# processes 0.04-0.12 s apart at the end, pieces of 624 up to 0.35 s; cut where the key changes, they cost no more)


def fork_map(work: Callable[[Sequence[T]], list[R]], items: Sequence[T], n: int | None = None, *,
             then: Callable[[], None] | None = None, key: Callable[[T], object] | None = None) -> list[R]:
    """``work`` over ``items`` in ``n`` processes (``workers(len(items))`` when None), results in order.

    The items are cut into contiguous pieces (where ``key`` changes, if one is near: ``split``); this process
    does the first, and every process (the workers and this one) takes the next piece left whenever it is
    free, so that one slowed by a busy core or costlier items does fewer rather than keeping the others
    waiting. ``then()`` runs in this process once it finds no piece left, before the workers' answers are read.
    A worker that fails has the pieces it took redone here. An item an answer holds comes back as this
    process's own (it is sent as its place in ``items``): ``work`` must not change the items."""
    n = workers(len(items)) if n is None else n
    if n <= 1 or len(items) < 2:
        done = work(items)
        if then is not None:
            then()
        return done
    pieces = split(items, min(len(items), n * PIECES_PER_WORKER), key)
    # The pieces' numbers, written at once (a few hundred bytes: less than a pipe holds) and read 4 bytes at a
    # time by whichever process is free: Linux hands each read whole numbers, and an empty pipe whose writer
    # has closed says so (b"").
    queue, feed = os.pipe()
    os.write(feed, b"".join(i.to_bytes(4, "little") for i in range(1, len(pieces))))

    def drain(done: list[tuple[int, list[R]]]) -> list[tuple[int, list[R]]]:
        while len(number := os.read(queue, 4)) == 4:
            i = int.from_bytes(number, "little")
            done.append((i, work(pieces[i])))
        return done

    def worker(_: Sequence[object]) -> list[tuple[int, list[R]]]:
        os.close(feed)  # (its copy of the writer: the last read would wait for it)
        return drain([])

    children: list[_Child] = []
    try:
        for _ in range(n - 1):
            child = _fork(worker, (), shared=items)
            if child is None:
                break
            children.append(child)
        os.close(feed)
        feed = -1
        mine = drain([(0, work(pieces[0]))])
        if then is not None:
            then()
        release_free_memory()  # what this share's work and then() freed: the answers come on top of what stays
        # Read the answers only now: a worker done first waits to send its answer (the pipe holds little), where
        # reading it meanwhile put it in this process's memory on top of this share's work.
        for child in children:
            child.thread.start()
        got: dict[int, list[R]] = dict(mine)
        for child in children:
            answer = _answer(child)
            if answer is not None:
                got.update(answer)
        for i in range(len(pieces)):  # the pieces of a worker that failed: done here
            if i not in got:
                got[i] = work(pieces[i])
    finally:
        if feed >= 0:
            os.close(feed)
        os.close(queue)
        for child in children:
            _reap(child)
    return [r for i in range(len(pieces)) for r in got[i]]


class Background(Generic[R]):
    """``job()`` computed in a forked copy of this process while this one goes on; ``result()`` waits for it.

    A fork that fails, or one core (or ``SVCTRACE_WORKERS=1``): nothing is forked and ``result()`` computes
    ``here()`` (``job`` when None: the same answer, without what only pays off on another core). A child that
    fails, is killed or sends something unreadable: ``result()`` computes it here, so the answer, or the error,
    is the one this process would have got. ``cancel()`` stops a job whose answer is no longer wanted."""

    def __init__(self, job: Callable[[], R], here: Callable[[], R] | None = None) -> None:
        self._job = job
        self._here = here or job
        self._answer: list[R] = []  # (once asked for)
        self._child = _fork(self._work, ()) if workers(2 * MIN_SHARE) > 1 else None
        if self._child is not None:
            self._child.thread.start()  # its answer comes into this process's memory as it is sent

    def _work(self, _share: Sequence[object]) -> list[R]:
        return [self._job()]

    def result(self) -> R:
        if not self._answer:
            child, self._child = self._child, None
            try:
                self._answer = [self._here()] if child is None else _collect(child, lambda _: [self._here()], ())
            finally:
                if child is not None:
                    _reap(child)
        return self._answer[0]

    def cancel(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            _reap(child)


def release_free_memory() -> None:
    """Give the C allocator's free pages back to the system, where the C library can (glibc's malloc_trim).

    glibc keeps memory Python has freed for its own reuse. After a big read (a listing's pages decoded, a
    table's text and index built, a share of a sweep) that is tens of MB no object uses, resident in this
    process until it ends, and in each child forked from it: a live ``audit -A`` of 10,000 Services peaked
    15-35 MB higher with it. Where the C library has no malloc_trim (musl, macOS), nothing is done."""
    if not _TRIM:
        _TRIM.append(_malloc_trim())
    trim = _TRIM[0]
    if trim is not None:
        trim(0)


_TRIM: list[Callable[[int], int] | None] = []  # (looked up once)


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):  # no ctypes, or a C library without it (musl)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def _fork(work: Callable[[Sequence[T]], list[R]], share: Sequence[T],
          shared: Sequence[object] = ()) -> _Child | None:
    """``work(share)`` in a forked child, its answer pickled back; objects of ``shared`` the answer holds are sent
    as their place in it (both processes have them: the child by the fork), read back as this process's own."""
    release_free_memory()  # (a child starts with every page this process holds, free ones included)
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork while rich's refresh thread runs
            pid = os.fork()
    except OSError as exc:
        log.debug("fork failed (%s); working through that share here", exc)
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        status = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            payload = _dumps(("ok", work(share)), shared)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which redoes the share
            payload = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
            status = 1
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(write_fd, view):]
        finally:
            os._exit(status)
    os.close(write_fd)
    return _Child(pid, read_fd, share, shared)


def _dumps(answer: object, shared: Sequence[object]) -> bytes:
    """``answer`` pickled, each object of ``shared`` in it as its place there. An audit's answers hold the very
    Services they were asked about: sent whole, they were half of what 5,000 answers took to pickle and read."""
    if not shared:
        return pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    places = {id(x): i for i, x in enumerate(shared)}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> int | None:
            return places.get(id(obj))

    out = io.BytesIO()
    Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(answer)
    return out.getvalue()


def _loads(data: bytearray, shared: Sequence[object]) -> Any:
    """What ``_dumps`` wrote, read with the same ``shared``."""
    if not shared:
        return pickle.loads(data)  # (read in place)

    class Unpickler(pickle.Unpickler):  # (BytesIO copies the answer: the half of it that is left)
        def persistent_load(self, pid: object) -> object:
            if not isinstance(pid, int) or not 0 <= pid < len(shared):
                raise pickle.UnpicklingError(f"no shared object {pid!r}")
            return shared[pid]

    return Unpickler(io.BytesIO(data)).load()


def _answer(child: _Child) -> list[Any] | None:
    """What a worker sent, once it has ended; None when it failed, was killed or sent something unreadable."""
    child.thread.join()
    _, status = os.waitpid(child.pid, 0)
    child.pid = 0
    try:  # (read where it was received: a bytes copy of a big answer first was one more answer's worth of memory)
        kind, value = _loads(child.data, child.shared) if child.data else ("error", "sent nothing")
    except Exception as exc:  # noqa: BLE001 - an unreadable answer is redone, not trusted
        kind, value = "error", f"unreadable answer ({exc})"
    child.data = bytearray()
    if kind == "ok" and status == 0 and isinstance(value, list):
        return value
    log.debug("a worker failed (%s, exit status %s); what it took is done here", value, status)
    return None


def _collect(child: _Child, work: Callable[[Sequence[T]], list[R]], share: Sequence[T]) -> list[R]:
    answer: list[R] | None = _answer(child)
    return answer if answer is not None else work(share)


def _reap(child: _Child) -> None:
    if child.pid:
        try:
            os.kill(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)
        except OSError:
            pass
        child.pid = 0
