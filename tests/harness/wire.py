"""What the fake kube-apiserver puts on the wire: ``Status`` failures and responses (whole or streamed).

Kept apart from apiserver.py so the fault injector (faults.py) and the stand-in kubelet (kubelet.py)
can build the same bodies the server does without importing it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

Object = dict[str, Any]


class ApiStatus(Exception):
    """A ``Status`` failure the handler answers with."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None,
                 metadata: Mapping[str, Any] | None = None, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.metadata = metadata
        self.headers = list(headers)

    def body(self) -> Object:
        """The JSON body kube-apiserver sends for this failure."""
        doc: Object = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": dict(self.metadata or {}),
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:  # a Status without a reason: kubectl shows "Error from server: <message>"
            doc["reason"] = self.reason
        if self.details is not None:
            doc["details"] = dict(self.details)
        doc["code"] = self.code
        return doc

    def response(self) -> Response:
        return Response(self.code, json.dumps(self.body()).encode(), headers=list(self.headers))


@dataclass
class Response:
    """One HTTP answer. ``body`` is the whole payload, or an iterator of pieces sent with chunked encoding.

    ``doc`` keeps the JSON document a whole body was made from, so a fault can rewrite it (faults.py).
    ``close`` is called once the answer has been sent or abandoned (a watch's or a log stream's cleanup).
    """

    code: int
    body: bytes | Iterator[bytes] = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    doc: Any = None
    close: Callable[[], None] | None = None

    @classmethod
    def json(cls, code: int, doc: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
        return cls(code, json.dumps(doc).encode(), headers=list(headers), doc=doc)

    @property
    def streamed(self) -> bool:
        return not isinstance(self.body, bytes)

    def pieces(self) -> Iterator[bytes]:
        if isinstance(self.body, bytes):
            if self.body:
                yield self.body
        else:
            yield from self.body


def now_rfc3339(ts: float | None = None) -> str:
    """A timestamp as the API prints metav1.Time: RFC 3339, UTC, whole seconds."""
    moment = datetime.now(timezone.utc) if ts is None else datetime.fromtimestamp(ts, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano_fixed(ts: float) -> str:
    """The kubelet's log timestamp (RFC3339NanoFixed: always nine fractional digits)."""
    whole = int(ts)
    nanos = int(round((ts - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    base = datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"


def forbidden_message(user: str, verb: str, resource: str, group: str, namespace: str | None,
                      name: str | None, subresource: str = "") -> tuple[str, Object]:
    """The RBAC authorizer's 403 message and details (k8s.io/apiserver forbiddenMessage + NewForbidden)."""
    qualified = f"{resource}.{group}" if group else resource
    subject = f'{qualified} "{name}"' if name else qualified
    where = f'in the namespace "{namespace}"' if namespace is not None else "at the cluster scope"
    shown = f"{resource}/{subresource}" if subresource else resource
    details: Object = {**({"name": name} if name else {}), **({"group": group} if group else {}), "kind": resource}
    return (f'{subject} is forbidden: User "{user}" cannot {verb} resource "{shown}" in API group "{group}" '
            f"{where}", details)


def forbidden(user: str, verb: str, resource: str, group: str, namespace: str | None, name: str | None,
              subresource: str = "") -> ApiStatus:
    message, details = forbidden_message(user, verb, resource, group, namespace, name, subresource)
    return ApiStatus(403, "Forbidden", message, details)


def not_found(resource: str, group: str, name: str) -> ApiStatus:
    qualified = f"{resource}.{group}" if group else resource
    return ApiStatus(404, "NotFound", f'{qualified} "{name}" not found',
                     {"name": name, **({"group": group} if group else {}), "kind": resource})


def bad_request(message: str) -> ApiStatus:
    return ApiStatus(400, "BadRequest", message)


def internal_error(cause: str) -> ApiStatus:
    return ApiStatus(500, "InternalError", f"Internal error occurred: {cause}", {"causes": [{"message": cause}]})


@dataclass(frozen=True)
class FieldError:
    """One field.ErrorList entry: how validation errors are worded (k8s.io/apimachinery/.../field/errors.go)."""

    type: str  # Required | Invalid | NotSupported | Forbidden | Duplicate | TooLong
    field: str
    value: Any = None
    detail: str = ""

    REASONS = {"Required": "FieldValueRequired", "Invalid": "FieldValueInvalid",
               "NotSupported": "FieldValueNotSupported", "Forbidden": "FieldValueForbidden",
               "Duplicate": "FieldValueDuplicate", "TooLong": "FieldValueTooLong"}

    def body(self) -> str:
        if self.type == "Required":
            text = "Required value"
        elif self.type == "Forbidden":
            text = "Forbidden"
        else:
            shown = {"Invalid": "Invalid value", "NotSupported": "Unsupported value", "Duplicate": "Duplicate value",
                     "TooLong": "Too long"}[self.type]
            text = f"{shown}: {json.dumps(self.value) if isinstance(self.value, str) else _go_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def _go_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def invalid(kind: str, name: str, errors: list[FieldError], group: str = "") -> ApiStatus:
    """422 Invalid, as NewInvalid words it: one error inline, several in brackets."""
    listed = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    qualified = f"{kind}.{group}" if group else kind
    return ApiStatus(422, "Invalid", f'{qualified} "{name}" is invalid: {listed}', {
        "name": name, **({"group": group} if group else {}), "kind": kind,
        "causes": [{"reason": FieldError.REASONS[e.type], "message": e.body(), "field": e.field} for e in errors]})
