"""Pods and EndpointSlices of a big api/ List file, typed when a question needs them (pure: reads its file).

``svctrace svc NAME`` on a snapshot of a 10,000-Service cluster needs one namespace's pods (of 100,000)
and one Service's EndpointSlices (of 10,000). Typing them all costs several times the kernel's own read of
the rules and more memory than svctrace may use, so a pretty-printed List file of a regular snapshot
folder is indexed (svctrace.parsers.list_index: each item's span, its own ``kind``, its namespace, the
service-name label, its addresses) and its Pods and EndpointSlices are decoded and typed per question:
by namespace, by address, by Service. Every other item (Services, Nodes, ConfigMaps, NetworkPolicies,
Endpoints, and any item whose kind the index is unsure of) is typed at once, as a streamed file's are.

The index only narrows the candidates: each decoded item is checked against the question again, so an
item the index was unsure of costs time, never a wrong answer. A file the index cannot read (minified,
several documents, YAML) is read as a stream instead, which is always right.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from svctrace.errors import InputError
from svctrace.model.k8s import EndpointSlice, Pod
from svctrace.parsers.k8s import Accumulator, ApiObjects
from svctrace.parsers.list_index import ListIndex, NotIndexed, key_pattern

__all__ = ["MIN_LAZY_BYTES", "LazyItems", "NotIndexed", "index_list", "index_spool", "read_indexed", "spooled_items"]

# Below this a file is read whole: typing it all is cheaper than indexing it.
MIN_LAZY_BYTES = 8 << 20
# Typed items remembered per file: a namespace's pods (typing one again costs time, never an answer).
KEEP_TYPED = 1024
_LAZY_KINDS = ("Pod", "EndpointSlice")
_KEYS = {"namespace": key_pattern("namespace"), "service": key_pattern("kubernetes.io/service-name")}
_MANY = {"ip": key_pattern("ip", "podIP")}
_ASKED_BY = {"Pod": "namespace", "EndpointSlice": "service"}  # what each lazy kind is asked about first

T = TypeVar("T", Pod, EndpointSlice)


class LazyItems(Generic[T]):
    """The items of one kind in one indexed file, each typed once, when first asked for."""

    def __init__(self, index: ListIndex, numbers: list[int], kind: str, source: str, *,
                 hold: object = None) -> None:
        self.index = index
        self.hold = hold  # what keeps the file there (an unlinked file of this run's own: its open file)
        self.numbers = numbers
        self.kind = kind
        self.source = source
        self._mine = set(numbers)
        self._typed: dict[int, tuple[T, ...]] = {}

    def __len__(self) -> int:
        return len(self.numbers)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """The file read again: one that changed since it was indexed, or went away, is an input error."""
        try:
            yield
        except NotIndexed as exc:
            raise InputError(f"changed while svctrace read it: {exc.reason}", "run the command again",
                             path=self.source) from None
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror or exc}", "check the file (it was readable a moment ago)",
                             path=self.source) from None

    def _type(self, numbers: Iterable[int]) -> list[T]:
        wanted = [n for n in numbers if n in self._mine]
        todo = [n for n in wanted if n not in self._typed]
        if todo and len(self._typed) + len(todo) > KEEP_TYPED:
            # ``audit -A`` asks about every namespace in turn: keep what this question needs, not all it typed
            self._typed = {n: self._typed[n] for n in wanted if n in self._typed}
        acc = Accumulator(self.source)  # (one for them all: it only collects; its warnings are not read here)
        got: list[T] = acc.pods if self.kind == "Pod" else acc.slices  # type: ignore[assignment]
        with self._reading():
            for n, doc in self.index.read(todo):
                before = len(got)
                acc.add(doc, self.source)
                self._typed[n] = tuple(got[before:])
        return [item for n in wanted for item in self._typed[n]]

    def where(self, key: str, value: str) -> list[T]:
        """The items whose ``key`` may be ``value`` (the caller checks), in file order."""
        with self._reading():
            numbers = self.index.items_where(key, value)
        return self._type(numbers)

    def all(self) -> list[T]:
        return self._type(self.numbers)

    @property
    def asked_by(self) -> str:
        """The key questions about this kind name (a Pod's namespace, an EndpointSlice's Service)."""
        return _ASKED_BY[self.kind]

    def prepare(self, key: str) -> None:
        """Index the file by ``key`` now, so that forked workers asking ``where(key, ...)`` share the index."""
        with self._reading():
            self.index.prepare(key)


def index_list(path: Path, *, asked: bool = True) -> ListIndex:
    """The index of a big List file: where each item is, its kind, and (``asked``) for each lazy kind it holds the
    key that kind is asked about by (a Pod's namespace, an EndpointSlice's Service), scanned and indexed: what
    any command asks first. Raises NotIndexed. (The snapshot loader runs it in another process while it reads
    the rest of the snapshot: svctrace.parallel.Background.)"""
    index = ListIndex.open(path, _KEYS, _MANY, top=("kind",), later=True)
    if asked:
        kinds = set(index.keys["kind"])
        for kind, key in _ASKED_BY.items():
            if kind in kinds:
                index.prepare(key)
    return index


def index_spool(path: Path, kind: str) -> ListIndex:
    """The index of a List file svctrace wrote itself, all of one lazy ``kind``, one compact item a line
    (svctrace.collectors.kube_spool), indexed by what that kind is asked about first (a Pod's namespace)."""
    index = ListIndex.open(path, _KEYS, _MANY, later=True)
    index.prepare(_ASKED_BY[kind])
    return index


def spooled_items(index: ListIndex, kind: str, source: str, *, hold: object) -> ApiObjects:
    """Every item of ``index`` (``index_spool``), all of ``kind``, left to be typed when asked for."""
    lazy = LazyItems(index, list(range(len(index))), kind, source, hold=hold)
    return ApiObjects().with_lazy((lazy,), len(lazy))


def read_indexed(path: Path, source: str, index: ListIndex | None = None) -> ApiObjects:
    """The objects of a big List file: Pods and EndpointSlices left for later (``ApiObjects.lazy``), every
    other item typed now. ``index``: the file's, made already (``index_list``). Raises NotIndexed when the file is
    not laid out for it."""
    if index is None:
        index = index_list(path, asked=False)
    kinds = index.keys["kind"]
    later: dict[str, list[int]] = {kind: [] for kind in _LAZY_KINDS}
    now: list[int] = []
    for n, kind in enumerate(kinds):
        if kind is None:  # an item without its own kind takes its List's: the stream reader knows how
            raise NotIndexed(f"item {n + 1} has no kind of its own")
        later.get(kind, now).append(n)
    acc = Accumulator(source)
    for _, doc in index.read(now):
        acc.add(doc, source)
    objects = acc.result()
    lazy = tuple(LazyItems(index, numbers, kind, source)
                 for kind, numbers in later.items() if numbers)
    return objects.with_lazy(lazy, sum(len(x) for x in lazy))
