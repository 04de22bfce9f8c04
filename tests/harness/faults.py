"""Faults the fake kube-apiserver can inject, per URL path, as a broken or hostile server would send them.

Usage (the server is tests/harness/apiserver.py's FakeApiServer)::

    server.inject("/apis/discovery.k8s.io/v1/*endpointslices*", Fault.status(403))
    server.inject(re.compile(r"/pods$"), Fault.status(500), verb="list", times=2)   # first two LISTs only
    server.inject("/api/v1/services", Fault.repeat_continue())
    server.inject("*", Fault.drip(1))                                                # 1 byte per second
    server.clear_faults()

A path pattern is a glob (``fnmatch``: ``*`` also matches ``/``) on the URL path without the query,
or a compiled regular expression (``search``). ``verb`` narrows it to a Kubernetes verb (get, list,
watch, create, delete, deletecollection) or an HTTP method (GET, POST, ...); ``times`` to the first N
matching requests. The first live injection that matches a request applies; every request is still
recorded. Kinds of fault:

* ``Fault.status(code)``: a ``Status`` failure with kube-apiserver's own wording for that request
  (401, 403 with the RBAC message naming the verb/resource/scope, 404, 409 Conflict/AlreadyExists,
  410, 429 with Retry-After, 500, 503); ``message=`` overrides the wording.
* ``Fault.json(value)``: a 200 (or ``code=``) whose body is any JSON value (a list, ``None``...).
* ``Fault.invalid_json()``: a 200 whose body is not JSON.
* ``Fault.set_field(path, value)``: the real answer with one field replaced (dotted path; in each
  item of a List unless ``each_item=False``), e.g. ``set_field("spec", [])``, ``set_field("items", {},
  each_item=False)``. ``Fault.mutate(fn)`` hands the decoded document to ``fn`` for anything else.
* ``Fault.nested(depth)``: the real List with ``depth`` nested JSON arrays as its first item
  (a JSON parser's recursion limit), sent without building it in memory.
* ``Fault.huge(size)``: a valid List body of ``size`` bytes (mostly whitespace, or one long string
  with ``fill="string"``), generated while sent; ``chunked=True`` omits Content-Length.
* ``Fault.drip(bytes_per_second)``: the real answer, its body trickled out.
* ``Fault.stall()``: headers, then nothing; ``Fault.stall(headers=False)``: nothing at all. Both end
  when the client hangs up or the server stops (they never block ``stop()``).
* ``Fault.reset(after=n)``: headers and the first ``n`` body bytes (default: half), then a TCP reset.
* ``Fault.close()``: the connection closed without an answer.
* ``Fault.delay(seconds)``: the real answer, late.
* ``Fault.repeat_continue()``: LIST pages whose ``continue`` token is the one the client sent, forever
  (the first page carries the real first token).
* ``Fault.cycle_continue()``: real tokens, except that the last page points back to the first token,
  so the pages cycle.

Faults that rewrite a body apply to whole JSON answers; on a streamed answer (watch, logs) only the
transport faults (drip, stall, reset) and the answer-replacing ones (status, json...) make sense.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.harness.wire import ApiStatus, Response, forbidden_message, internal_error

if TYPE_CHECKING:
    from tests.harness.apiserver import RecordedRequest


@dataclass(frozen=True)
class Fault:
    """One kind of misbehaviour; build it with the class methods."""

    kind: str
    code: int = 200
    message: str | None = None
    reason: str | None = None
    value: Any = None
    path: str = ""
    each_item: bool = True
    fn: Callable[[Any], Any] | None = None
    rate: float = 0.0
    size: int = 0
    fill: str = "whitespace"
    chunked: bool = False
    headers: bool = True
    after: int | None = None
    seconds: float = 0.0

    # -- answers instead of the real one --

    @classmethod
    def status(cls, code: int, *, message: str | None = None, reason: str | None = None) -> Fault:
        """A ``Status`` failure worded as kube-apiserver words it for the request."""
        return cls("status", code=code, message=message, reason=reason)

    @classmethod
    def json(cls, value: Any, *, code: int = 200) -> Fault:
        """Any JSON value as the body (a list, None, a number...)."""
        return cls("json", code=code, value=value)

    @classmethod
    def invalid_json(cls, body: bytes = b'{"kind": "List", "apiVersion": "v1", "items": [{"metadata": ',
                     *, code: int = 200) -> Fault:
        """A body that does not parse as JSON (by default a document cut short)."""
        return cls("raw", code=code, value=body)

    @classmethod
    def close(cls) -> Fault:
        """Close the connection without answering."""
        return cls("close")

    @classmethod
    def huge(cls, size: int, *, fill: str = "whitespace", chunked: bool = False) -> Fault:
        """A valid JSON List of ``size`` bytes, generated while it is sent."""
        if fill not in ("whitespace", "string"):
            raise ValueError("fill is 'whitespace' or 'string'")
        return cls("huge", size=size, fill=fill, chunked=chunked)

    # -- the real answer, rewritten --

    @classmethod
    def set_field(cls, path: str, value: Any, *, each_item: bool = True) -> Fault:
        """Replace one (dotted) field of the answer, in each List item unless ``each_item=False``."""
        return cls("set_field", path=path, value=value, each_item=each_item)

    @classmethod
    def mutate(cls, fn: Callable[[Any], Any]) -> Fault:
        """The answer's decoded document passed through ``fn`` (its return value is sent)."""
        return cls("mutate", fn=fn)

    @classmethod
    def nested(cls, depth: int = 100_000) -> Fault:
        """The answer with ``depth`` nested arrays as its first item (or as ``spec`` of a single object)."""
        return cls("nested", size=depth)

    @classmethod
    def repeat_continue(cls) -> Fault:
        """LIST pages that hand back the continue token the client sent, forever."""
        return cls("repeat_continue")

    @classmethod
    def cycle_continue(cls) -> Fault:
        """LIST pages whose last page's continue token is the first page's: the pages cycle."""
        return cls("cycle_continue")

    # -- the real answer, badly delivered --

    @classmethod
    def drip(cls, bytes_per_second: float) -> Fault:
        """Send the body at this rate."""
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        return cls("drip", rate=bytes_per_second)

    @classmethod
    def stall(cls, *, headers: bool = True) -> Fault:
        """Headers then silence (or silence from the start), until the client or the server gives up."""
        return cls("stall", headers=headers)

    @classmethod
    def reset(cls, *, after: int | None = None) -> Fault:
        """Reset the connection after ``after`` body bytes (default: half the body)."""
        return cls("reset", after=after)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer, but only after ``seconds``."""
        return cls("delay", seconds=seconds)

    @property
    def replaces_answer(self) -> bool:
        """Whether the real handler is skipped."""
        return self.kind in ("status", "json", "raw", "close") or (self.kind == "stall" and not self.headers)


@dataclass
class Injection:
    """A fault bound to a path pattern; ``hits`` counts the requests it answered."""

    pattern: str | re.Pattern[str]
    fault: Fault
    verb: str | None = None
    times: int | None = None
    hits: int = 0
    # state of continue-token faults: tokens handed out, in order
    tokens: list[str] = field(default_factory=list)
    removed: bool = False

    def matches(self, req: RecordedRequest) -> bool:
        if self.removed or (self.times is not None and self.hits >= self.times):
            return False
        if isinstance(self.pattern, re.Pattern):
            if not self.pattern.search(req.path):
                return False
        elif not fnmatch.fnmatchcase(req.path, self.pattern):
            return False
        if self.verb is None:
            return True
        return self.verb == req.method if self.verb.isupper() else self.verb == req.k8s_verb

    def remove(self) -> None:
        self.removed = True


# --- building the answers ---------------------------------------------------------------------------------

def status_for(fault: Fault, req: RecordedRequest, user: str) -> ApiStatus:
    """The Status kube-apiserver would send with this code for this request."""
    code = fault.code
    res, group, ns, name, sub = req.resource_info()
    qualified = f"{res}.{group}" if group and res else res
    verb = req.k8s_verb
    message = fault.message
    details: dict[str, Any] | None = None
    headers: list[tuple[str, str]] = []
    if code == 401:
        reason, default = "Unauthorized", "Unauthorized"
    elif code == 403:
        reason = "Forbidden"
        if res:
            default, details = forbidden_message(user, verb, res, group, ns, name, sub)
        else:
            default = f'forbidden: User "{user}" cannot {verb} path "{req.path}"'
            details = {}
    elif code == 404:
        reason = "NotFound"
        if res and name:
            default = f'{qualified} "{name}" not found'
            details = {"name": name, **({"group": group} if group else {}), "kind": res}
        else:
            default, details = "the server could not find the requested resource", {}
    elif code == 409:
        if verb == "create":
            reason = "AlreadyExists"
            shown = name or "collector"
            default = f'{qualified} "{shown}" already exists'
            details = {"name": shown, **({"group": group} if group else {}), "kind": res}
        else:
            reason = "Conflict"
            default = (f'Operation cannot be fulfilled on {qualified} "{name or ""}": the object has been modified; '
                       "please apply your changes to the latest version and try again")
            details = {"name": name or "", **({"group": group} if group else {}), "kind": res}
    elif code == 410:
        reason, default = "Expired", "too old resource version: 1 (2)"
    elif code == 429:
        reason, default = "TooManyRequests", "Too many requests, please try again later."
        details = {"retryAfterSeconds": 1}
        headers.append(("Retry-After", "1"))
    elif code == 500:
        if message is None:
            st = internal_error("etcdserver: request timed out")
            return ApiStatus(500, fault.reason or st.reason, st.message, st.details)
        reason, default = "InternalError", message
    elif code == 503:
        reason, default = "ServiceUnavailable", "service unavailable"
        headers.append(("Retry-After", "1"))
    elif code == 405:
        reason, default = "MethodNotAllowed", "the server does not allow this method on the requested resource"
        details = {}
    elif code == 400:
        reason, default = "BadRequest", "the server rejected our request for an unknown reason"
    else:
        reason, default = "InternalError", f"an error on the server ({code}) has prevented the request from succeeding"
    return ApiStatus(code, fault.reason or reason, message or default, details, headers=headers)


def replacement(fault: Fault, req: RecordedRequest, user: str) -> Response:
    """The answer a fault sends instead of the real one."""
    if fault.kind == "status":
        return status_for(fault, req, user).response()
    if fault.kind == "json":
        return Response(fault.code, json.dumps(fault.value).encode(), doc=fault.value)
    if fault.kind == "raw":
        return Response(fault.code, bytes(fault.value))
    raise ValueError(f"fault {fault.kind} does not replace the answer")


def _set(doc: Any, path: str, value: Any) -> None:
    parts = path.split(".")
    cur = doc
    for part in parts[:-1]:
        if not isinstance(cur, dict):
            return
        cur = cur.setdefault(part, {})
    if isinstance(cur, dict):
        cur[parts[-1]] = value


def _is_list(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("items"), list) and str(doc.get("kind", "")).endswith("List")


def rewrite(fault: Fault, injection: Injection, req: RecordedRequest, resp: Response) -> Response:
    """Apply a body-rewriting fault to the real answer (unchanged when it has no JSON document)."""
    if fault.kind == "huge":
        return _huge(fault, resp)
    doc = resp.doc
    if doc is None or resp.streamed:
        return resp
    if fault.kind == "set_field":
        if fault.each_item and _is_list(doc):
            for item in doc["items"]:
                _set(item, fault.path, fault.value)
        else:
            _set(doc, fault.path, fault.value)
    elif fault.kind == "mutate":
        assert fault.fn is not None
        doc = fault.fn(doc)
    elif fault.kind == "nested":
        return _nested(fault.size, doc, resp)
    elif fault.kind in ("repeat_continue", "cycle_continue") and _is_list(doc):
        meta = doc.setdefault("metadata", {})
        sent = req.query.get("continue", "")
        issued = meta.get("continue", "")
        if fault.kind == "repeat_continue":
            if sent:
                meta["continue"] = sent
        else:
            if issued and issued not in injection.tokens:
                injection.tokens.append(issued)
            if not issued and injection.tokens:
                meta["continue"] = injection.tokens[0]
        meta.pop("remainingItemCount", None)
    return Response(resp.code, json.dumps(doc).encode(), resp.content_type, resp.headers, doc, resp.close)


def _nested(depth: int, doc: Any, resp: Response) -> Response:
    """``depth`` nested arrays spliced into the document's text, never built as Python objects."""
    marker = "__svctrace_nested_marker__"
    if _is_list(doc):
        doc = {**doc, "items": [marker, *doc["items"]]}
    elif isinstance(doc, dict):
        doc = {**doc, "spec": marker}
    else:
        doc = marker
    head, _, tail = json.dumps(doc).partition(json.dumps(marker))
    body = head.encode() + b"[" * depth + b"]" * depth + tail.encode()
    return Response(resp.code, body, resp.content_type, resp.headers, None, resp.close)


def _huge(fault: Fault, resp: Response) -> Response:
    doc = resp.doc if _is_list(resp.doc) else {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []}
    head = json.dumps({**doc, "items": []})[:-3].encode()  # cut `[]}`
    head += b'['
    tail = b"]}"
    if fault.fill == "string":
        head += b'{"metadata": {"name": "'
        tail = b'"}}' + tail
    fill = b" " if fault.fill == "whitespace" else b"x"
    n = max(0, fault.size - len(head) - len(tail))

    def pieces() -> Iterator[bytes]:
        yield head
        block = fill * 65536
        left = n
        while left > 0:
            yield block[:min(left, len(block))]
            left -= len(block)
        yield tail

    headers = list(resp.headers)
    if not fault.chunked:
        headers.append(("Content-Length", str(len(head) + n + len(tail))))
    return Response(200, pieces(), resp.content_type, headers, None, resp.close)
