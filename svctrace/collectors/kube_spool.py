"""A big cluster's pods and EndpointSlices listed by other processes into files of this run's own.

``audit -A`` of a 10,000-Service cluster lists 100,000 pods and 10,000 EndpointSlices: nine of every ten
bytes the API sends. Typed in this process as the pages came, they took most of the collection's time
(each page waited for, then decoded and typed, in turn) and 150 MB that the rest of the audit then held. A
snapshot of the same cluster does better: its big files are indexed, and each namespace's pods and each
Service's slices are typed only when a forked worker of the audit needs them (svctrace.parsers.k8s_lazy).

So, when the Services alone fill a page (``SPOOL_AFTER_SERVICES``), each of the two LISTs is made by a
forked child (svctrace.parallel.Background) over a connection of its own, its items written as they came,
one a line, to an unlinked temporary file, which the child then indexes. Meanwhile this process reads
the rest. The items are then read from the file like a snapshot's: typed per question, or all at once
when the file is small (``MIN_LAZY_BYTES``, as a snapshot's file).

Nothing changes in what is read or answered: the same requests, pages, limits, 410 restart and deadlines,
made by the same code (``KubeCollector._list``). A failed request comes back as it is, for this process to
judge as it always has. A child that fails in any other way, a fork that fails, one core, a system that is
not Linux (the file is reached as /proc/self/fd/N, so it needs no name and is never left behind) or a
temporary file that cannot be made: the LIST is made here, the old way.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from svctrace.collectors.kube_http import Op, ReadFailure
from svctrace.parsers.json_stream import Streamed
from svctrace.parsers.k8s import Accumulator, ApiObjects
from svctrace.parsers.k8s_lazy import MIN_LAZY_BYTES, NotIndexed, index_spool, spooled_items
from svctrace.record import record

if TYPE_CHECKING:
    from svctrace.collectors.kube import KubeCollector
    from svctrace.parallel import Background
    from svctrace.parsers.list_index import ListIndex

# Spooled when the Services listed take at least a page: a cluster this big has as many slices and more pods.
SPOOL_AFTER_SERVICES = 500
_HEAD = b'{"apiVersion":"v1","kind":"List","items":[\n'
_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode  # ASCII: escapes stay escapes


@record
class Spooled:
    """What the child sends back: the file's index, or the request that failed; and how many requests it made."""

    index: ListIndex | None
    failure: ReadFailure | None
    requests: int


class _Writer:
    """The items of one LIST as a ``kind: List`` file, each on its own line (what ListIndex finds items by), with
    the List's kind and apiVersion stamped on, as a document of its kind (``kube._stamped``)."""

    def __init__(self, file: IO[bytes], api_version: str, kind: str) -> None:
        self.file = file
        self.stamp = f'"apiVersion":{_ENCODE(api_version)},"kind":{_ENCODE(kind)}'
        self.stamped = {"apiVersion": api_version, "kind": kind}
        self.restart()

    def restart(self) -> None:
        """Start again, empty (the server compacted the list's snapshot away: the pages are listed again)."""
        self.file.seek(0)
        self.file.truncate()
        self.file.write(_HEAD)
        self.sep = b" "

    def add(self, item: Streamed) -> None:
        """One item, written as it came, not encoded again: its text decoded as a JSON object, so it ends with its
        "}" and holds no raw line break but whitespace (a JSON string cannot hold one). The stamp goes last:
        a key given twice is read as its last value, so the stamp wins, as it does in ``_stamped``."""
        text, value = item.text, item.value
        if text is not None and isinstance(value, dict):
            line = text[:-1] + ("," if value else "") + self.stamp + "}"
            if "\n" in line or "\r" in line:
                line = line.replace("\r", " ").replace("\n", " ")
        else:  # not an object: as _stamped keeps it
            line = _ENCODE({**self.stamped, "malformed": value})
        self.file.write(self.sep)
        self.file.write(line.encode("utf-8"))
        self.sep = b",\n "

    def close(self) -> None:
        self.file.write(b"\n]}\n")
        self.file.flush()


class _Held:
    """An open file closed when nothing holds it any more (the lazy items that read it are gone)."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file

    def __del__(self) -> None:
        self.file.close()


class ListSpool:
    """The items of one LIST (``op``), listed into a temporary file by a forked child from now on."""

    def __init__(self, kube: KubeCollector, op: Op, lister: Callable[[Any], Callable[..., Any]],
                 args: tuple[Any, ...], source: str, kind: tuple[str, str]) -> None:
        from svctrace.parallel import Background

        self.kube = kube
        self.op = op
        self.lister = lister  # the client's list function, for an ApiClient
        self.args = args
        self.source = source
        self.kind = kind  # the items' (apiVersion, kind)
        self.file: IO[bytes] | None = tempfile.TemporaryFile(prefix=f"svctrace-{op.resource}-")  # noqa: SIM115 - kept open
        self.path = Path(f"/proc/self/fd/{self.file.fileno()}")
        self.job: Background[Spooled | None] | None = Background(self._list, here=lambda: None)

    @staticmethod
    def possible() -> bool:
        """Whether this system can spool: a fork, and a file reached by its descriptor alone."""
        return sys.platform.startswith("linux") and hasattr(os, "fork") and os.path.isdir("/proc/self/fd")

    @classmethod
    def start(cls, kube: KubeCollector, op: Op, kind: tuple[str, str], api_class: type, namespaced: str,
              everywhere: str) -> ListSpool | None:
        """The LIST ``op`` of items of ``kind`` (apiVersion, kind), started; ``namespaced`` and ``everywhere`` name
        ``api_class``'s list functions. None where it cannot be (the caller makes the LIST itself)."""
        if not cls.possible():
            return None
        name, args = (namespaced, (op.namespace,)) if op.namespace is not None else (everywhere, ())

        def lister(api: Any) -> Callable[..., Any]:
            found: Callable[..., Any] = getattr(api_class(api), name)
            return found

        try:
            return cls(kube, op, lister, args, f"the API server's {op.resource}", kind)
        except OSError:  # no temporary file: a full or read-only disk
            return None

    def _list(self) -> Spooled | None:
        """(In the child.) The pages, listed and written; the file indexed. None: list them in the parent."""
        assert self.file is not None
        kube = self.kube
        kube.reconnect()  # the parent's connections are the parent's
        writer = _Writer(self.file, *self.kind)
        try:
            kube.list_texts(self.op, self.lister, self.args, writer.add, writer.restart)
        except ReadFailure as failure:
            return Spooled(None, failure, kube.requests)
        writer.close()
        try:
            index = index_spool(self.path, self.kind[1])
        except NotIndexed:
            return None
        return Spooled(index, None, kube.requests)

    def result(self) -> Spooled | None:
        """The child's answer, waited for (None: it could not spool, so the caller makes the LIST itself)."""
        if self.job is None:
            return None
        got = self.job.result()
        self.job = None
        if got is None:
            self.close()
        return got

    def objects(self, index: ListIndex) -> ApiObjects:
        """The spooled items: typed when asked for, or now when the file is small (as a snapshot's would be)."""
        assert self.file is not None
        if index.size >= MIN_LAZY_BYTES:
            hold, self.file = _Held(self.file), None  # the items keep the file open for as long as they are asked
            return spooled_items(index, self.kind[1], self.source, hold=hold)
        acc = Accumulator(self.source)
        for _, doc in index.read():
            acc.add(doc, self.source)
        self.close()
        return acc.result()

    def cancel(self) -> None:
        """Stop the child (the collection failed, or was interrupted) and let the file go."""
        if self.job is not None:
            self.job.cancel()
            self.job = None
        self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
