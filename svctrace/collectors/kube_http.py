"""One API request, bounded: a deadline for all of it, an answer read as a stream, and failures that say which.

``--request-timeout`` is a deadline for the whole request — connecting, TLS, the headers and every byte of
the body — not a per-read timeout (a server that sends one byte a second would otherwise hold a read
forever). ``--timeout`` bounds the whole collection; each request gets what is left of it when that is
less. A watchdog cuts the request's sockets when its deadline passes, whatever the client is doing.

Answers are read as a stream (svctrace.parsers.json_stream): a LIST's items are handed to the caller one
by one, the whole answer is refused past MAX_RESPONSE_BYTES, and JSON of the wrong shape, a body that is
not JSON at all, or nesting no object has is a ``BadAnswer``, never an exception the caller did not expect.

A request that fails raises a ``ReadFailure``; the caller decides whether the read was required (exit 2,
naming the request) or optional (a warning and a partial answer).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from svctrace.collectors.kubeclient import client
from svctrace.errors import ApiUnreachableError, AuthError, CollectionError, InputError
from svctrace.parsers.json_stream import Counter, JsonStream
from svctrace.parsers.limits import MAX_OBJECT_BYTES, MAX_RESPONSE_BYTES, MAX_VALUES
from svctrace.parsers.text_stream import TextStream
from svctrace.record import record

Doc = dict[str, Any]
k8s_client = client()
_NEXT_NETWORK = ('check the VPN or network route to the cluster and run "kubectl cluster-info"; '
                 "or analyse a capture with --from SNAPSHOT")


@record
class Op:
    """One API request, described for error messages and RBAC hints."""

    verb: str  # get | list
    resource: str  # plural
    group: str = ""
    namespace: str | None = None  # None: cluster scope or all namespaces
    name: str | None = None

    @property
    def cluster_scoped(self) -> bool:
        return self.resource in ("nodes", "namespaces")

    def describe(self) -> str:
        what = f'{self.resource} "{self.name}"' if self.name else self.resource
        if self.group:
            what = f"{what} ({self.group})"
        if self.namespace is not None:
            return f'{self.verb} {what} in namespace "{self.namespace}"'
        return f"{self.verb} {what}" + ("" if self.cluster_scoped else " in all namespaces")

    def rule(self) -> str:
        kind = "Role" if self.namespace is not None else "ClusterRole"
        return (f'a {kind} rule: apiGroups: ["{self.group}"], resources: ["{self.resource}"], '
                f'verbs: ["{self.verb}"]')


class ReadFailure(Exception):
    """A request that gave no usable answer; whether that is fatal is the caller's decision."""

    status: int | None = None

    def __init__(self, op: Op, detail: str) -> None:
        super().__init__(f"{op.describe()}: {detail}")
        self.op = op
        self.detail = detail  # what went wrong, in a few words ("500: etcd is down", "the connection was refused")

    def __reduce__(self) -> tuple[Any, ...]:
        # as it is, whatever its class's own arguments: a forked lister sends its failure back (kube_spool)
        return (_remade, (type(self), self.args, self.__dict__))

    def error(self, server: str) -> CollectionError:
        """The error of a required read that failed this way."""
        return CollectionError(f"the API server at {server} failed to {self.op.describe()}: {self.detail}",
                               "retry in a moment; if it persists, check the control plane's health")


def _remade(cls: type[ReadFailure], args: tuple[Any, ...], state: dict[str, Any]) -> ReadFailure:
    failure = cls.__new__(cls)
    Exception.__init__(failure, *args)
    failure.__dict__.update(state)
    return failure


class StatusFailure(ReadFailure):
    """An answer other than 2xx."""

    def __init__(self, op: Op, status: int, body: Any) -> None:
        doc = _status_body(body)
        self.reason = str(doc.get("reason") or "")
        self.message = str(doc.get("message") or "")
        super().__init__(op, f"{status} {self.message or self.reason or 'no message'}")
        self.status = status


class NoAnswer(ReadFailure):
    """No complete answer: refused, reset, closed, or cut by a deadline."""

    def error(self, server: str) -> CollectionError:
        return ApiUnreachableError(f"cannot reach the API server at {server}: {self.detail} ({self.op.describe()})",
                                   _NEXT_NETWORK)


class BadAnswer(ReadFailure):
    """A 2xx answer svctrace cannot use: not JSON, the wrong shape, too big, or LIST pages that never end."""

    def error(self, server: str) -> CollectionError:
        return CollectionError(f"the API server at {server} sent an answer svctrace cannot use to "
                               f"{self.op.describe()}: {self.detail}",
                               'check the server URL in the kubeconfig, and the server with '
                               '"kubectl get --raw /version"')


class Deadline:
    """When requests must be done: each within ``--request-timeout``, all within ``--timeout`` (None: no bound)."""

    def __init__(self, request_timeout: float, total: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.request_timeout = request_timeout
        self.total = total
        self._clock = clock
        self.end = clock() + total if total is not None else None

    def window(self) -> tuple[float, str]:
        """Seconds this request may take and the flag that set them (``--request-timeout 5s``)."""
        now = self._clock()
        if self.end is not None and self.end - now < self.request_timeout:
            return self.end - now, f"--timeout {self.total:g}s for the whole collection"
        return self.request_timeout, f"--request-timeout {self.request_timeout:g}s"

    @property
    def passed(self) -> bool:
        return self.end is not None and self._clock() >= self.end


class _Sockets:
    """The connections' sockets, each kept as a duplicate so that it can be cut at any stage (TLS too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dups: list[socket.socket] = []

    def add(self, sock: socket.socket) -> None:
        try:
            dup = sock.dup()
        except OSError:
            return
        with self._lock:
            self._dups.append(dup)

    def cut(self) -> None:
        """Shut every connection down (a blocked read returns at once) and forget them."""
        with self._lock:
            dups, self._dups = self._dups, []
        for dup in dups:
            with contextlib.suppress(OSError):
                dup.shutdown(socket.SHUT_RDWR)
            dup.close()

    close = cut


def _tracked_pools(sockets: _Sockets) -> dict[str, type]:
    class Conn(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            sockets.add(sock)
            return sock

    class TlsConn(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            sockets.add(sock)
            return sock

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = TlsConn

    return {"http": Pool, "https": TlsPool}


class Transport:
    """Requests through one ApiClient, each bounded by the Deadline, its sockets cut when it passes."""

    def __init__(self, api_client: Any, server: str, deadline: Deadline) -> None:
        self.server = server
        self.deadline = deadline
        self._sockets = _Sockets()
        # Every connection the client opens is made by these pools, so the watchdog can reach its socket.
        api_client.rest_client.pool_manager.pool_classes_by_scheme = _tracked_pools(self._sockets)
        self.requests = 0  # every request sent, failures included

    def close(self) -> None:
        self._sockets.close()

    def request(self, op: Op, fn: Callable[..., Any], *args: Any, items: Callable[[Any], None] | None = None,
                expect: str = "object", texts: bool = False, head: Callable[[Doc], None] | None = None,
                **kwargs: Any) -> Doc:
        """One GET: the answer's top-level object; with ``items``, its ``items`` are handed to it one by one
        instead of being kept (``texts``: as Streamed values, with their JSON text; ``head``: given the members
        before them as soon as they are read, a List's metadata). Raises a ReadFailure (AuthError for 401: no
        read can do without credentials)."""
        seconds, flag = self.deadline.window()
        if seconds <= 0:
            raise NoAnswer(op, f"not sent: the {flag} had passed")
        self.requests += 1
        # (connect, read): the client before 36 ignores a float timeout (it takes only ints and pairs).
        kwargs.update(_request_timeout=(seconds, seconds), _preload_content=False)
        fired = threading.Event()

        def cut() -> None:
            fired.set()
            self._sockets.cut()

        watchdog = threading.Timer(seconds, cut)
        watchdog.daemon = True
        watchdog.start()
        try:
            with warnings.catch_warnings():
                # insecure-skip-tls-verify is the user's explicit choice; kubectl does not warn either
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                resp = fn(*args, **kwargs)
                try:
                    doc = _read_answer(op, resp, items, expect, texts, head)
                except BaseException:
                    resp.close()
                    raise
                resp.release_conn()
            return doc
        except ReadFailure:
            raise
        except k8s_client.ApiException as exc:
            if fired.is_set():
                raise NoAnswer(op, f"no complete answer within the {flag}") from None
            if not exc.status:  # the client reports TLS failures as status 0
                first = str(exc.reason or "").splitlines()
                detail = first[-1] if first else "TLS failure"
                raise ApiUnreachableError(
                    f"TLS with the API server at {self.server} failed: {detail}",
                    "check the cluster's certificate-authority in the kubeconfig (kubectl config view)") from None
            if exc.status == 401:
                raise AuthError(
                    f"the API server at {self.server} rejected the credentials (401 Unauthorized)",
                    'they may have expired: log in again, then check with "kubectl get --raw /version"') from None
            raise StatusFailure(op, int(exc.status), exc.body) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if fired.is_set():
                raise NoAnswer(op, f"no complete answer within the {flag}") from None
            raise NoAnswer(op, _transport_reason(exc, seconds, flag)) from None
        finally:
            watchdog.cancel()


def _read_answer(op: Op, resp: Any, items: Callable[[Any], None] | None, expect: str, texts: bool = False,
                 head: Callable[[Doc], None] | None = None) -> Doc:
    """The answer's one top-level object, read as a stream (its items handed to ``items``: with ``texts``, each
    as its Streamed value, with its text; the members before them to ``head``)."""
    def should_stream(members: dict[str, Any]) -> bool:
        if head is not None:
            head(members)
        return items is not None

    stream = TextStream(resp.read, "answer", limit=MAX_RESPONSE_BYTES, what="the answer")
    values = JsonStream(stream, "answer", max_value_chars=MAX_OBJECT_BYTES, counter=Counter(MAX_VALUES),
                        should_stream=should_stream, texts=texts)
    doc: Doc | None = None
    try:
        for value in values:
            if value.container is not None:
                assert items is not None
                items(value if texts else value.value)
                continue
            if value.rest and doc is None:
                doc = {**value.value, "items": []}  # its items went to ``items``
                continue
            if doc is not None or value.index is not None or not isinstance(value.value, dict):
                shown = "a JSON list" if value.index is not None else (
                    "more than one JSON value" if doc is not None else json_type(value.value))
                raise BadAnswer(op, f"the answer is {shown}, not {expect}")
            doc = value.value
    except InputError as exc:
        raise BadAnswer(op, exc.message.removeprefix("answer:").strip()) from None
    if doc is None:
        raise BadAnswer(op, f"the answer is empty, not {expect}")
    return doc


def json_type(value: Any) -> str:
    """A JSON value's type in words: "null", "a JSON list"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, (int, float)):
        return "a JSON number"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, dict):
        return "a JSON object"
    return "a JSON list"


def _status_body(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        doc = json.loads(body) if isinstance(body, str) and body else {}
    except (ValueError, RecursionError):
        text = str(body).strip()
        return {"message": text.splitlines()[0][:200] if text else ""}
    return doc if isinstance(doc, dict) else {}


def _transport_reason(exc: BaseException, seconds: float, flag: str) -> str:
    inner = getattr(exc, "reason", None) or exc
    # NameResolutionError < NewConnectionError < ConnectTimeoutError in urllib3 2: test the narrow ones first
    if isinstance(inner, urllib3.exceptions.NameResolutionError):
        return "the host name does not resolve"
    if isinstance(inner, urllib3.exceptions.NewConnectionError):
        found = re.search(r"\[Errno -?\d+\] ([^')\]]+)", str(inner))
        return found.group(1).strip().lower() if found else "the connection failed"
    if isinstance(inner, (urllib3.exceptions.TimeoutError, TimeoutError, socket.timeout)):
        # the socket's own timeout and the request's deadline are the same length and race: one sentence for both
        return f"no complete answer within the {flag}"
    if isinstance(inner, (urllib3.exceptions.ProtocolError, ConnectionError)):
        return "the connection was closed before the answer was complete"
    return type(inner).__name__


class Ahead:
    """A LIST's next pages asked for while one is read: as soon as a page's metadata (which the API server sends
    before its items) holds a continue token, a thread sends that request and reads its answer, and so on, at
    most ``DEPTH`` pages ahead of the one taken. Pages are taken in order, and a page's failure is raised then,
    as if it had been asked for then. (Used by a forked lister, which ends with its LIST: the requests a failure
    leaves behind end with it.)"""

    DEPTH = 2

    def __init__(self, one: Callable[[str | None, Callable[[Doc], None] | None], tuple[Doc, list[Doc]]]) -> None:
        self._one = one
        self._lock = threading.Lock()
        self._queue: list[tuple[str, threading.Thread, list[Any]]] = []  # (token, its reader, its answer)
        self._round = 0  # pages asked for before the list started again are not taken

    def _head(self, round_: int) -> Callable[[Doc], None]:
        def head(members: Doc) -> None:
            meta = members.get("metadata")
            token = meta.get("continue") if isinstance(meta, Mapping) else None
            if not token or not isinstance(token, str):
                return
            with self._lock:
                if round_ != self._round or len(self._queue) >= self.DEPTH or \
                        any(t == token for t, _, _ in self._queue):
                    return
                got: list[Any] = []
                thread = threading.Thread(target=self._fetch, args=(token, got, round_), daemon=True,
                                          name="svctrace-list-ahead")
                self._queue.append((token, thread, got))
            thread.start()
        return head

    def _fetch(self, token: str, got: list[Any], round_: int) -> None:
        try:
            got.append(self._one(token, self._head(round_)))
        except BaseException as exc:  # noqa: BLE001 - raised in order, when its page is taken
            got.append(exc)

    def take(self, token: str | None) -> tuple[Doc, list[Doc]]:
        """The page of ``token``: the one asked for ahead, or asked for now."""
        with self._lock:
            ahead = self._queue.pop(0) if self._queue and self._queue[0][0] == token and token else None
            if ahead is None:  # the first page, or the list started again: what was asked for is not taken
                self._queue.clear()
                self._round += 1
            round_ = self._round
        if ahead is None:
            return self._one(token, self._head(round_))
        _, thread, got = ahead
        thread.join()
        if isinstance(got[0], BaseException):
            raise got[0]
        return got[0]  # type: ignore[no-any-return]
