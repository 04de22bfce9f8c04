"""An in-process stand-in for kube-apiserver that speaks its REST protocol over real HTTP(S).

No real apiserver can run on a test machine, so API tests talk to this server through the real
``kubernetes`` Python client with a real kubeconfig. It serves the API the way kube-apiserver (v1.30)
does, and records every request (method, path, query, body) so tests can assert what a command sent:

* reads of every served kind: GET one, LIST (namespaced and across namespaces) with label and field
  selectors, ``limit``/``continue`` paging, WATCH (streamed with ``resourceVersion``/``timeoutSeconds``,
  selector-filtered ADDED/MODIFIED/DELETED events, 410 for a compacted version), discovery documents;
* Pods are writable as on a real cluster, and nothing else is: POST (decoding errors, admission
  defaults, validation, AlreadyExists, ``generateName``, ``dryRun``), DELETE one (grace periods,
  preconditions, propagationPolicy; the deleted Pod is returned) and deletecollection; every other
  write is refused with 405, so an unexpected write is loud;
* ``pods/log`` and ``pods/exec`` (WebSocket, v4/v5 channel protocols) are answered by the node's
  kubelet: attach a stand-in one (tests/harness/kubelet.py) to make pods run;
* RBAC per (verb, resource[/subresource], namespace) with the authorizer's real 403 messages
  (:class:`Rbac`);
* fault injection per path (:meth:`FakeApiServer.inject`, tests/harness/faults.py);
* ``Status`` error bodies with the real server's messages everywhere.

Writes made by the kubelet (pod status, Events, the final removal of a pod) go straight to the store:
they are the cluster's own traffic, not the client's, so they are not in the request log.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import copy
import json
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from tests.harness import pods as podlib
from tests.harness.faults import Fault, Injection, replacement, rewrite
from tests.harness.websocket import SUPPORTED, ChannelSocket, accept_key, negotiate
from tests.harness.wire import (
    ApiStatus,
    Object,
    Response,
    bad_request,
    forbidden,
    not_found,
    now_rfc3339,
)

__all__ = ["ApiStatus", "FakeApiServer", "Fault", "Injection", "Rbac", "RbacRule", "RecordedRequest", "Resource",
           "fixture_cluster", "load_manifests", "parse_field_selector", "parse_label_selector"]

DEFAULT_TOKEN = "svctrace-test-token"
DEFAULT_USER = "system:serviceaccount:svctrace:reader"
GIT_VERSION = "v1.30.2"
CREATION_TIMESTAMP = "2024-05-14T09:12:00Z"


@dataclass(frozen=True)
class Resource:
    """One served API resource: where it lives and what its field selectors accept."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    short_names: tuple[str, ...] = ()
    # field labels beyond metadata.name / metadata.namespace, as the real registry strategies allow
    fields: tuple[str, ...] = ()
    # subresources served (name, kind, verbs), as discovery lists them
    subresources: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``pods`` or ``endpointslices.discovery.k8s.io``: how the server names it in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",), ("status.phase",)),
    Resource("", "v1", "nodes", "Node", False, "node", ("no",), ("spec.unschedulable",)),
    Resource("", "v1", "services", "Service", True, "service", ("svc",), ("spec.clusterIP", "spec.type")),
    Resource("", "v1", "endpoints", "Endpoints", True, "endpoints", ("ep",)),
    Resource("", "v1", "pods", "Pod", True, "pod", ("po",),
             ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
              "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs",
              "status.nominatedNodeName"),
             (("exec", "PodExecOptions", ("create", "get")), ("log", "Pod", ("get",)),
              ("status", "Pod", ("get", "patch", "update")))),
    Resource("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",)),
    Resource("", "v1", "events", "Event", True, "event", ("ev",),
             ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
              "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
              "reason", "reportingComponent", "source", "type")),
    Resource("apps", "v1", "daemonsets", "DaemonSet", True, "daemonset", ("ds",)),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, "endpointslice"),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, "networkpolicy",
             ("netpol",)),
)
_BY_KIND = {r.kind: r for r in RESOURCES}
_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
# What the apiserver's query parsing (Go's strconv.ParseBool) reads as true; kubernetes < 36 sends watch=True.
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_BY_PLURAL = {r.plural: r for r in RESOURCES}
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_NOT_ALLOWED = ApiStatus(405, "MethodNotAllowed", "the server does not allow this method on the requested resource",
                         {})

_EXPIRED_MESSAGE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - "
    "objects that were created, modified, or deleted between the time the first chunk was returned and "
    "now may show up in the list."
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (``body``: the decoded JSON body, or the raw bytes, or None)."""

    method: str
    path: str
    query: Mapping[str, str]
    user_agent: str
    authorization: str | None = None
    body: Any = None
    # every query parameter in order, repeated ones included (exec's `command`)
    query_items: tuple[tuple[str, str], ...] = ()
    upgrade: str = ""

    @property
    def verb(self) -> str:
        """get, list, watch for GETs; the lower-case HTTP method for anything else (see k8s_verb)."""
        if self.method != "GET":
            return self.method.lower()
        if self.query.get("watch") in _TRUE:
            return "watch"
        route = _route(self.path)
        if route is not None and route.name is None and route.resource is not None:
            return "list"
        return "get"

    @property
    def k8s_verb(self) -> str:
        """The verb the authorizer sees: get/list/watch, create, update, patch, delete, deletecollection."""
        if self.method in ("GET", "HEAD"):
            return self.verb
        route = _route(self.path)
        if self.method == "POST":
            return "create"
        if self.method == "DELETE":
            return "deletecollection" if route is not None and route.name is None else "delete"
        return {"PUT": "update", "PATCH": "patch"}.get(self.method, self.method.lower())

    def resource_info(self) -> tuple[str, str, str | None, str | None, str]:
        """(resource plural, API group, namespace, name, subresource); the plural is '' for other paths."""
        route = _route(self.path)
        if route is None or (route.resource is None and route.unknown_resource is None):
            return "", "", None, None, ""
        plural = route.resource.plural if route.resource is not None else route.unknown_resource or ""
        name = route.name
        if name is None and self.method == "POST" and isinstance(self.body, dict):
            meta = self.body.get("metadata")
            if isinstance(meta, dict) and isinstance(meta.get("name"), str):
                name = meta["name"] or None
        return plural, route.group, route.namespace, name, route.subresource or ""

    def line(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        """(method, path, sorted query) for asserting exact request sets."""
        return self.method, self.path, tuple(sorted(self.query_items))


# --- RBAC ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RbacRule:
    """Verbs on resources ("pods", "pods/log", "*") in a scope.

    ``namespace`` None: every namespace and the cluster scope (a ClusterRoleBinding); "": the cluster
    scope only (cluster-scoped kinds and lists across all namespaces); a name: that namespace only
    (a RoleBinding). "*" matches every verb or every resource, subresources included; "pods" does not
    cover "pods/log", as in RBAC.
    """

    verbs: tuple[str, ...]
    resources: tuple[str, ...]
    namespace: str | None = None

    def matches(self, verb: str, resource: str, namespace: str | None) -> bool:
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        if "*" not in self.resources and resource not in self.resources:
            return False
        if self.namespace is None:
            return True
        return (self.namespace == "" and namespace is None) or (self.namespace != "" and self.namespace == namespace)


def _tuple(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


class Rbac:
    """Who may do what: everything unless denied (the default), or only what is allowed.

        server.rbac.deny("create", "pods", namespace="default")
        server.rbac = Rbac.only(RbacRule(("get", "list"), ("*",)), RbacRule(("create", "delete"), ("pods",), "tools"))
    """

    def __init__(self, *, allow_all: bool = True) -> None:
        self.allow_all = allow_all
        self.allows: list[RbacRule] = []
        self.denies: list[RbacRule] = []

    @classmethod
    def only(cls, *rules: RbacRule) -> Rbac:
        rbac = cls(allow_all=False)
        rbac.allows.extend(rules)
        return rbac

    def allow(self, verbs: str | Iterable[str], resources: str | Iterable[str], namespace: str | None = None) -> Rbac:
        self.allows.append(RbacRule(_tuple(verbs), _tuple(resources), namespace))
        return self

    def deny(self, verbs: str | Iterable[str], resources: str | Iterable[str], namespace: str | None = None) -> Rbac:
        self.denies.append(RbacRule(_tuple(verbs), _tuple(resources), namespace))
        return self

    def permits(self, verb: str, resource: str, namespace: str | None) -> bool:
        """``resource`` is "plural" or "plural/subresource"; ``namespace`` None is the cluster scope."""
        if any(r.matches(verb, resource, namespace) for r in self.denies):
            return False
        return self.allow_all or any(r.matches(verb, resource, namespace) for r in self.allows)


# --- selectors -------------------------------------------------------------------------------------------

_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SPECIAL = ("!=", "==", "=", "!", "(", ")", ",", ">", "<")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # exists | !exists | = | != | in | notin | gt | lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a label set satisfies this requirement (k8s.io/apimachinery/pkg/labels semantics)."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            # an absent key satisfies != and notin, as the real selector does
            return not present or value not in self.values
        if not present:
            return False
        try:
            have, want = int(value or ""), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.op == "gt" else have < want


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        for special in _SPECIAL:
            if text.startswith(special, i):
                out.append(special)
                i += len(special)
                break
        else:
            start = i
            while i < len(text) and not text[i].isspace() and not any(
                    text.startswith(s, i) for s in _SPECIAL):
                i += 1
            out.append(text[start:i])
    return out


def _check_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))) or len(name) > 63 \
            or not _LABEL_NAME.match(name):
        raise ValueError(f'key: Invalid value: "{key}": name part must consist of alphanumeric characters, '
                         "'-', '_' or '.', and must start and end with an alphanumeric character")


def _check_value(key: str, value: str) -> None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise ValueError(f'values[0][{key}]: Invalid value: "{value}": a valid label must be an empty string '
                         "or consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                         "with an alphanumeric character")


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse a labelSelector query value; ValueError carries the real server's wording."""
    toks = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def take() -> str:
        nonlocal i
        if i >= len(toks):
            raise ValueError("found '', expected: identifier")
        i += 1
        return toks[i - 1]

    while i < len(toks):
        negate = toks[i] == "!"
        if negate:
            i += 1
        key = take()
        if key in _SPECIAL:
            raise ValueError(f"found '{key}', expected: !, identifier, or 'end of string'")
        _check_key(key)
        if negate or i >= len(toks) or toks[i] == ",":
            reqs.append(Requirement(key, "!exists" if negate else "exists"))
        else:
            op = take()
            if op in ("=", "==", "!="):
                value = toks[i] if i < len(toks) and toks[i] not in _SPECIAL else ""
                if value:
                    i += 1
                _check_value(key, value)
                reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
            elif op in ("in", "notin"):
                if take() != "(":
                    raise ValueError(f"found '{toks[i - 1]}', expected: '('")
                values: list[str] = []
                while True:
                    tok = take()
                    if tok == ")":
                        break
                    if tok == ",":
                        continue
                    _check_value(key, tok)
                    values.append(tok)
                reqs.append(Requirement(key, op, tuple(values)))
            elif op in (">", "<"):
                value = take()
                if not value.lstrip("-").isdigit():
                    raise ValueError(f"for 'Gt', 'Lt' operators, the value must be an integer: {value}")
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
            else:
                raise ValueError(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")
        if i < len(toks):
            if toks[i] != ",":
                raise ValueError(f"found '{toks[i]}', expected: ',' or 'end of string'")
            i += 1
            if i >= len(toks):
                raise ValueError("found '', expected: identifier after ','")
    return reqs


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, escaped = [], [], False
    for ch in text:
        if escaped:
            cur.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str) -> list[tuple[str, str, str]]:
    """Parse a fieldSelector into (field, op, value) terms; op is ``=`` or ``!=``."""
    terms: list[tuple[str, str, str]] = []
    for part in _split_unescaped(text, ","):
        if not part:
            continue
        for op in ("!=", "==", "="):
            if op in part:
                left, _, right = part.partition(op)
                terms.append((left.strip(), "!=" if op == "!=" else "=", _unescape(right)))
                break
        else:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{part}'")
    return terms


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    if path == "status.podIPs":
        ips = (obj.get("status") or {}).get("podIPs") or []
        return ",".join(str(p.get("ip", "")) for p in ips)
    if path == "source":  # an Event's "source" field label is its source.component
        cur = (obj.get("source") or {}).get("component")
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if cur is None:
        return "false" if path in ("spec.unschedulable", "spec.hostNetwork") else ""
    return str(cur)


# --- routing ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    group: str
    version: str
    resource: Resource | None  # None: a discovery document
    namespace: str | None = None
    name: str | None = None
    discovery: str | None = None  # "api", "apis", "group", "groupversion", "version"
    unknown_resource: str | None = None
    subresource: str | None = None


def _route(path: str) -> Route | None:
    parts = [unquote(p) for p in path.split("/") if p]
    if parts == ["version"]:
        return Route("", "", None, discovery="version")
    if parts == ["api"]:
        return Route("", "", None, discovery="api")
    if parts == ["apis"]:
        return Route("", "", None, discovery="apis")
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 2 and parts[0] == "apis":
        if len(parts) == 2:
            return Route(parts[1], "", None, discovery="group")
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return Route(group, version, None, discovery="groupversion")
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return None
    res = _BY_PATH.get((group, version, rest[0]))
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) == 3 else None
    if res is None:
        return Route(group, version, None, namespace, name, unknown_resource=rest[0], subresource=sub)
    if namespace is not None and not res.namespaced:
        return None
    if sub is not None and sub not in {s[0] for s in res.subresources}:
        return None
    return Route(group, version, res, namespace, name, subresource=sub)


# --- TLS material ----------------------------------------------------------------------------------------

def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 that clients can pin as their CA."""
    cert, key = directory / "apiserver.crt", directory / "apiserver.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=kube-apiserver",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def load_manifests(paths: Iterable[str | Path]) -> list[Object]:
    """Objects from YAML (multi-document) or JSON files; ``List`` documents are flattened."""
    out: list[Object] = []

    def add(doc: Any) -> None:
        if not isinstance(doc, dict):
            return
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                add(item)
        else:
            out.append(doc)

    for p in paths:
        text = Path(p).read_text(encoding="utf-8")
        docs = [json.loads(text)] if str(p).endswith(".json") else list(yaml.safe_load_all(text))
        for doc in docs:
            add(doc)
    return out


# --- what the kubelet provides -----------------------------------------------------------------------------

@dataclass(frozen=True)
class LogOptions:
    """PodLogOptions as the query carries them."""

    container: str
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since: float | None = None  # a Unix time: lines older than this are skipped


class NodeAgent(Protocol):
    """The stand-in kubelet's side of the contract (tests/harness/kubelet.py implements it)."""

    def knows(self, node: str) -> bool: ...  # the node has a kubelet, up or down
    def serves(self, node: str) -> bool: ...  # ... and it is up (logs and exec reach it)
    def pod_created(self, pod: Object) -> None: ...
    def pod_deleting(self, pod: Object) -> None: ...
    def pod_removed(self, pod: Object) -> None: ...
    def logs(self, pod: Object, opts: LogOptions, stop: threading.Event) -> Iterator[bytes]: ...
    def check_exec(self, pod: Object, container: str) -> None: ...
    def exec_stream(self, pod: Object, container: str, command: list[str], *, stdin: bool, stdout: bool,
                    stderr: bool, tty: bool, ws: ChannelSocket, stop: threading.Event) -> None: ...


@dataclass(frozen=True)
class _Upgrade:
    """An exec request that passed every check: the handler upgrades the connection and runs it."""

    pod: Object
    container: str
    command: list[str]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


@dataclass
class _WatchEvent:
    rv: int
    type: str
    plural: str
    namespace: str
    obj: Object
    old: Object | None = None


# --- the server ------------------------------------------------------------------------------------------

class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeApiServer

    def process_request(self, request: Any, client_address: Any) -> None:
        # Track each connection's thread so stop() can wake and join it (daemon threads are not joined).
        thread = threading.Thread(target=self._serve_one, args=(request, client_address), daemon=True,
                                  name=f"fake-apiserver-conn-{self.server_address[1]}")
        with self.fake._lock:
            self.fake._connections[thread] = request
        thread.start()

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.fake._lock:
                self.fake._connections.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer, or stop() cutting a connection: not the test's business


class FakeApiServer:
    """A kube-apiserver stand-in on 127.0.0.1 with an ephemeral port.

    Knobs: ``forbid`` (verb, plural, namespace) denials and ``rbac`` (an :class:`Rbac`); ``delay`` and
    ``close_without_answer`` for every request (older, coarse versions of faults); ``watch_timeout``:
    how long a WATCH without ``timeoutSeconds`` streams (0: it ends after the current state, which
    suits one-shot tests; None: until the server stops, as a real server's 30-60 minutes);
    ``exec_protocols``: the WebSocket subprotocols offered for exec, newest first;
    ``serve_apps``: serve the apps/v1 group (DaemonSets); by default only when DaemonSets were loaded,
    so older tests see the groups they always saw. ``exec_needs_create``: also require ``create
    pods/exec`` for WebSocket exec (the AuthorizePodWebsocketUpgradeCreatePermission behaviour of newer
    servers; v1.30 checks ``get`` only).
    """

    def __init__(
        self,
        objects: Iterable[Mapping[str, Any]] = (),
        *,
        tls: bool = False,
        token: str = DEFAULT_TOKEN,
        user: str = DEFAULT_USER,
        forbid: Iterable[tuple[str, str, str | None]] = (),
        rbac: Rbac | None = None,
        serve_endpointslices: bool = True,
        serve_apps: bool | None = None,
        delay: float = 0.0,
        close_without_answer: bool = False,
        git_version: str = GIT_VERSION,
        on_request: Callable[[RecordedRequest], None] | None = None,
        watch_timeout: float | None = 0.0,
        exec_protocols: Sequence[str] = SUPPORTED,
        exec_needs_create: bool = False,
        history: int = 20_000,
    ) -> None:
        self.tls = tls
        self.token = token
        self.user = user
        # (verb, resource plural, namespace): namespace None denies everywhere, "" denies cluster scope
        # (cluster-scoped objects and lists across all namespaces), a name denies that namespace only.
        self.forbid: list[tuple[str, str, str | None]] = list(forbid)
        self.rbac = rbac if rbac is not None else Rbac()
        self.serve_endpointslices = serve_endpointslices
        self.serve_apps = serve_apps
        self.delay = delay
        self.close_without_answer = close_without_answer
        self.git_version = git_version
        # called after each request is recorded, before it is answered (e.g. to expire tokens mid-list)
        self.on_request = on_request
        self.watch_timeout = watch_timeout
        self.exec_protocols = tuple(exec_protocols)
        self.exec_needs_create = exec_needs_create
        self.kubelet: NodeAgent | None = None
        self.requests: list[RecordedRequest] = []
        self.injections: list[Injection] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._connections: dict[threading.Thread, Any] = {}
        self._store: dict[tuple[str, str, str], Object] = {}  # (plural, namespace, name) -> object
        self._rv = 1000
        self._compacted_rv = 0
        self._history: collections.deque[_WatchEvent] = collections.deque(maxlen=history)
        self._recording = False
        self._tmp = Path(tempfile.mkdtemp(prefix="svctrace-apiserver-"))
        self.ca_file: Path | None = None
        for obj in objects:
            self.add(obj, _bump=False)
        for ns in sorted({"default", "kube-system", *(k[1] for k in self._store if k[1])}):
            if ("namespaces", "", ns) not in self._store:
                self.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
                          "status": {"phase": "Active"}}, _bump=False)
        if self.serve_apps is None:
            self.serve_apps = any(k[0] == "daemonsets" for k in self._store)
        self._history_floor = self._rv
        self._recording = True
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        if tls:
            cert, key = _self_signed(self._tmp)
            self.ca_file = cert
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            # the handshake runs in the handler thread, so a silent client cannot block accept()
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @classmethod
    def from_manifests(cls, paths: Iterable[str | Path], **kwargs: Any) -> FakeApiServer:
        """A server holding the objects of these YAML/JSON files."""
        return cls(load_manifests(paths), **kwargs)

    # -- lifecycle --

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> FakeApiServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-apiserver-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wake stalled, streaming and idle connections, join their threads, remove TLS material."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            connections = dict(self._connections)
        for conn in connections.values():
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 10
        for thread in connections:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._httpd.server_close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def live_threads(self) -> list[threading.Thread]:
        """Connection threads still running (empty after stop())."""
        with self._lock:
            return [t for t in self._connections if t.is_alive()]

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- objects (the cluster's side: not requests, not recorded) --

    def add(self, obj: Mapping[str, Any], *, _bump: bool = True) -> Object:
        """Store (or replace) an object, filling in what the server would: uid, resourceVersion, timestamp."""
        doc: Object = copy.deepcopy(dict(obj))
        res = _BY_KIND.get(str(doc.get("kind")))
        if res is None:
            raise ValueError(f"FakeApiServer does not serve kind {doc.get('kind')!r}")
        doc["apiVersion"] = res.group_version
        meta = doc.setdefault("metadata", {})
        if res.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        ns = meta.get("namespace", "")
        with self._lock:
            self._rv += 1
            meta.setdefault("uid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"{res.plural}/{ns}/{meta['name']}")))
            if _bump or "resourceVersion" not in meta:
                meta["resourceVersion"] = str(self._rv)
            meta.setdefault("creationTimestamp", CREATION_TIMESTAMP)
            key = (res.plural, ns, meta["name"])
            old = self._store.get(key)
            self._store[key] = doc
            self._emit("MODIFIED" if old is not None else "ADDED", res, doc, old)
        return doc

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Remove an object (as if the cluster changed underneath a client)."""
        if self.remove(kind, namespace, name) is None:
            raise KeyError((kind, namespace, name))

    def get(self, kind: str, namespace: str, name: str) -> Object | None:
        """A copy of a stored object, or None."""
        with self._lock:
            obj = self._store.get((_BY_KIND[kind].plural, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, kind: str, namespace: str | None = None) -> list[Object]:
        """Copies of every stored object of a kind (in one namespace, or all)."""
        plural = _BY_KIND[kind].plural
        with self._lock:
            return [copy.deepcopy(o) for (p, ns, _), o in sorted(self._store.items())
                    if p == plural and (namespace is None or ns == namespace)]

    def update(self, kind: str, namespace: str, name: str, change: Callable[[Object], None], *,
               uid: str | None = None) -> Object | None:
        """Change a stored object in place (a new resourceVersion, a MODIFIED event); None if it is gone."""
        res = _BY_KIND[kind]
        with self._lock:
            old = self._store.get((res.plural, namespace, name))
            if old is None or (uid is not None and old["metadata"].get("uid") != uid):
                return None
            doc = copy.deepcopy(old)
            change(doc)
            self._rv += 1
            doc["metadata"]["resourceVersion"] = str(self._rv)
            self._store[(res.plural, namespace, name)] = doc
            self._emit("MODIFIED", res, doc, old)
            return copy.deepcopy(doc)

    def remove(self, kind: str, namespace: str, name: str, *, uid: str | None = None) -> Object | None:
        """Take an object out of the store (a DELETED event); the removed object, or None."""
        res = _BY_KIND[kind]
        with self._lock:
            old = self._store.get((res.plural, namespace, name))
            if old is None or (uid is not None and old["metadata"].get("uid") != uid):
                return None
            del self._store[(res.plural, namespace, name)]
            self._rv += 1
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._emit("DELETED", res, gone, old)
            return gone

    def _emit(self, type_: str, res: Resource, obj: Object, old: Object | None) -> None:
        if not self._recording:
            return
        if len(self._history) == self._history.maxlen:
            self._history_floor = self._history[0].rv
        self._history.append(_WatchEvent(int(obj["metadata"]["resourceVersion"]), type_, res.plural,
                                         obj["metadata"].get("namespace", ""), copy.deepcopy(obj), old))
        self._changed.notify_all()

    def expire_continue_tokens(self) -> None:
        """Compact history so every continue token handed out so far answers 410 Expired."""
        with self._lock:
            self._rv += 1
            self._compacted_rv = self._rv

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def attach_kubelet(self, kubelet: NodeAgent) -> None:
        """Route pods/log, pods/exec and pod lifecycle to this kubelet (for the nodes it serves)."""
        self.kubelet = kubelet

    # -- kubeconfig --

    def write_kubeconfig(self, path: str | Path, *, token: str | None = None, namespace: str | None = None,
                         context_name: str = "fake", current: bool = True, insecure: bool = False) -> Path:
        """Write a kubeconfig (one cluster, one token user, one context) that reaches this server."""
        cluster: Object = {"server": self.url}
        if insecure:
            cluster["insecure-skip-tls-verify"] = True
        elif self.ca_file is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_file.read_bytes()).decode()
        context: Object = {"cluster": f"{context_name}-cluster", "user": f"{context_name}-user"}
        if namespace is not None:
            context["namespace"] = namespace
        doc: Object = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": f"{context_name}-cluster", "cluster": cluster}],
            "users": [{"name": f"{context_name}-user",
                       "user": {"token": self.token if token is None else token}}],
            "contexts": [{"name": context_name, "context": context}],
        }
        if current:
            doc["current-context"] = context_name
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return out

    # -- what tests assert on --

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def verbs(self) -> list[tuple[str, str]]:
        """(verb, path) of every recorded request, in order."""
        with self._lock:
            return [(r.verb, r.path) for r in self.requests]

    def writes(self) -> list[RecordedRequest]:
        """Every recorded request that is not a GET/HEAD (creates, deletes, and refused writes), in order."""
        with self._lock:
            return [r for r in self.requests if r.method not in ("GET", "HEAD")]

    # -- faults and RBAC --

    def inject(self, pattern: str | re.Pattern[str], fault: Fault, *, verb: str | None = None,
               times: int | None = None) -> Injection:
        """Answer requests whose path matches with ``fault`` (see faults.py); the first live match wins."""
        injection = Injection(pattern, fault, verb, times)
        with self._lock:
            self.injections.append(injection)
        return injection

    def clear_faults(self) -> None:
        with self._lock:
            for injection in self.injections:
                injection.removed = True
            self.injections.clear()

    def _fault_for(self, req: RecordedRequest) -> Injection | None:
        with self._lock:
            for injection in self.injections:
                if injection.matches(req):
                    injection.hits += 1
                    return injection
        return None

    def deny(self, verbs: str | Iterable[str], resources: str | Iterable[str], namespace: str | None = None) -> None:
        """Shorthand for ``self.rbac.deny(...)``."""
        self.rbac.deny(verbs, resources, namespace)

    # -- request handling (called from handler threads) --

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _authenticate(self, authorization: str | None) -> None:
        scheme, _, credential = (authorization or "").partition(" ")
        # the in-cluster loader sends "bearer", kubeconfig users "Bearer": the scheme is case-insensitive
        if scheme.lower() != "bearer" or credential.strip() != self.token:
            raise ApiStatus(401, "Unauthorized", "Unauthorized")

    def _authorize(self, verb: str, res: Resource, namespace: str | None, name: str | None,
                   subresource: str = "") -> None:
        for f_verb, f_res, f_ns in self.forbid:
            if f_verb != verb or f_res != res.plural or subresource:
                continue
            if f_ns is None or (f_ns == "" and namespace is None) or (f_ns and f_ns == namespace):
                raise forbidden(self.user, verb, res.plural, res.group, namespace, name)
        shown = f"{res.plural}/{subresource}" if subresource else res.plural
        if not self.rbac.permits(verb, shown, namespace):
            raise forbidden(self.user, verb, res.plural, res.group, namespace, name, subresource)

    def _serves(self, group: str, version: str | None) -> bool:
        if group == "discovery.k8s.io" and not self.serve_endpointslices:
            return False
        if group == "apps" and not self.serve_apps:
            return False
        return any(r.group == group and version in (None, r.version) for r in RESOURCES)

    def dispatch(self, req: RecordedRequest) -> Response | _Upgrade:
        """Answer one authenticated request."""
        route = _route(req.path)
        query = req.query
        not_found_status = ApiStatus(404, "NotFound", "the server could not find the requested resource", {})
        pod_write = (route is not None and route.resource is not None and route.resource.plural == "pods"
                     and route.namespace is not None)
        if req.method in _WRITE_METHODS and not (
                pod_write and route is not None and (
                    (req.method == "POST" and route.name is None)
                    or (req.method == "POST" and route.subresource == "exec")
                    or (req.method == "DELETE" and route.subresource is None))):
            raise _NOT_ALLOWED
        if route is None:
            raise not_found_status
        if route.discovery in ("version", "api", "apis"):
            return Response.json(200, self._discovery(route))
        if route.group and not self._serves(route.group, route.version or None):
            raise not_found_status  # an API group this server does not have, e.g. discovery.k8s.io switched off
        if route.discovery is not None:
            return Response.json(200, self._discovery(route))
        if route.resource is None:
            raise not_found_status
        res = route.resource
        ns = route.namespace if res.namespaced else None
        sub = route.subresource or ""
        verb = req.k8s_verb
        if sub == "exec" and req.method == "GET" and self.exec_needs_create:
            self._authorize("create", res, ns, route.name, sub)
        self._authorize(verb, res, ns, route.name, sub)
        if req.method == "POST":
            if sub == "exec":
                return self._pod_exec(route, req)
            return self._create_pod(route.namespace or "", req)
        if req.method == "DELETE":
            if route.name is None:
                return self._delete_collection(route.namespace or "", req)
            return self._delete_pod(route.namespace or "", route.name, req)
        if sub == "log":
            return self._pod_log(route, query)
        if sub == "exec":
            return self._pod_exec(route, req)
        if route.name is not None:
            with self._lock:
                obj = self._store.get((res.plural, route.namespace or "", route.name))
            if obj is None:
                raise not_found(res.plural, res.group, route.name)
            return Response.json(200, copy.deepcopy(obj))
        if query.get("watch") in _TRUE:
            return self._watch(res, route.namespace, query)
        return self._list(res, route.namespace, query)

    # -- LIST and WATCH --

    def _list(self, res: Resource, namespace: str | None, query: Mapping[str, str]) -> Response:
        """A LIST's answer: one page of the objects the query selects."""
        return Response.json(200, self._page(res, self._select(res, namespace, query), query))

    def _selector(self, res: Resource, query: Mapping[str, str]) -> Callable[[Object], bool]:
        try:
            labels = parse_label_selector(query.get("labelSelector", ""))
        except ValueError as exc:
            raise bad_request(f"unable to parse requirement: {exc}") from None
        try:
            fields = parse_field_selector(query.get("fieldSelector", ""))
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        allowed = {"metadata.name", "metadata.namespace", *res.fields}
        for fname, _, _ in fields:
            if fname not in allowed:
                raise bad_request(f"field label not supported: {fname}")

        def matches(obj: Object) -> bool:
            obj_labels = obj["metadata"].get("labels") or {}
            if not all(r.matches(obj_labels) for r in labels):
                return False
            return all((_field_value(obj, f) == v) == (op == "=") for f, op, v in fields)

        return matches

    def _select(self, res: Resource, namespace: str | None, query: Mapping[str, str]) -> list[Object]:
        matches = self._selector(res, query)
        with self._lock:
            objs = [o for (plural, ns, _), o in sorted(self._store.items())
                    if plural == res.plural and (namespace is None or ns == namespace)]
            out: list[Object] = []
            for obj in objs:
                if not matches(obj):
                    continue
                item = copy.deepcopy(obj)
                # list items carry no kind/apiVersion on the wire; the List itself does
                item.pop("kind", None)
                item.pop("apiVersion", None)
                out.append(item)
        return out

    def _page(self, res: Resource, items: list[Object], query: Mapping[str, str]) -> Object:
        list_rv = self._rv
        start = ""
        token = query.get("continue", "")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                if decoded.get("v") != "meta.k8s.io/v1":
                    raise ValueError(f"incorrect encoded start resourceVersion (version {decoded.get('v')})")
                list_rv, start = int(decoded["rv"]), str(decoded["start"])
            except (ValueError, KeyError, TypeError, binascii.Error, AttributeError) as exc:
                raise bad_request(f"invalid continue token: continue key is not valid: {exc}") from None
            if list_rv < self._compacted_rv:
                # the real server also offers a token to continue inconsistently from "now"
                fresh = self._token(self._rv, start)
                raise ApiStatus(410, "Expired", _EXPIRED_MESSAGE, metadata={"continue": fresh})
        keyed = [(f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" if res.namespaced
                  else i["metadata"]["name"], i) for i in items]
        keyed = [(k, i) for k, i in keyed if k >= start]
        meta: Object = {"resourceVersion": str(list_rv)}
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise bad_request(f'strconv.ParseInt: parsing "{query.get("limit")}": invalid syntax') from None
        if limit > 0 and len(keyed) > limit:
            page, rest = keyed[:limit], keyed[limit:]
            meta["continue"] = self._token(list_rv, page[-1][0] + "\x00")
            if not query.get("labelSelector") and not query.get("fieldSelector"):
                # unknown with selectors, so the real server leaves it out
                meta["remainingItemCount"] = len(rest)
            keyed = page
        return {"kind": f"{res.kind}List", "apiVersion": res.group_version, "metadata": meta,
                "items": [i for _, i in keyed]}

    @staticmethod
    def _token(rv: int, start: str) -> str:
        raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def _watch(self, res: Resource, namespace: str | None, query: Mapping[str, str]) -> Response:
        matches = self._selector(res, query)
        rv_text = query.get("resourceVersion", "")
        timeout_text = query.get("timeoutSeconds")
        try:
            timeout = float(timeout_text) if timeout_text else self.watch_timeout
            start = int(rv_text) if rv_text not in ("", "0") else None
        except ValueError:
            raise bad_request(f'strconv.ParseUint: parsing "{rv_text}": invalid syntax') from None

        def in_scope(ev: _WatchEvent) -> bool:
            return ev.plural == res.plural and (namespace is None or ev.namespace == namespace)

        def wire(type_: str, obj: Object) -> bytes:
            return json.dumps({"type": type_, "object": obj}).encode() + b"\n"

        with self._lock:
            initial = [] if start is not None else [
                copy.deepcopy(o) for (p, ns, _), o in sorted(self._store.items())
                if p == res.plural and (namespace is None or ns == namespace) and matches(o)]
            cursor = self._rv if start is None else start
            too_old = start is not None and start < self._history_floor

        def events() -> Iterator[bytes]:
            nonlocal cursor
            if too_old:
                yield wire("ERROR", self._too_old(cursor))
                return
            for obj in initial:
                yield wire("ADDED", obj)
            if timeout is not None and timeout <= 0:
                return
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._stopping.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                with self._changed:
                    if cursor < self._history_floor:
                        lost = True
                    else:
                        lost = False
                        fresh = [e for e in self._history if e.rv > cursor]
                        if not fresh:
                            self._changed.wait(timeout=min(0.25, left) if left is not None else 0.25)
                            continue
                if lost:  # the watcher fell behind the history: a real watch cache ends it the same way
                    yield wire("ERROR", self._too_old(cursor))
                    return
                for ev in fresh:
                    cursor = ev.rv
                    if not in_scope(ev):
                        continue
                    was = ev.old is not None and ev.type != "ADDED" and matches(ev.old)
                    now = ev.type != "DELETED" and matches(ev.obj)
                    if ev.type == "DELETED":
                        if matches(ev.obj):
                            yield wire("DELETED", ev.obj)
                    elif was and now:
                        yield wire("MODIFIED", ev.obj)
                    elif now:
                        yield wire("ADDED", ev.obj)
                    elif was:
                        yield wire("DELETED", ev.obj)

        return Response(200, events())

    def _too_old(self, rv: int) -> Object:
        return ApiStatus(410, "Expired", f"too old resource version: {rv} ({self._history_floor})").body()

    # -- pods: create, delete, log, exec --

    def _node_ip(self, node: str) -> str:
        with self._lock:
            obj = self._store.get(("nodes", "", node)) or {}
        for addr in (obj.get("status") or {}).get("addresses") or []:
            if addr.get("type") == "InternalIP":
                return str(addr.get("address"))
        return node

    def _agent(self, node: str, *, reachable: bool = True) -> NodeAgent | None:
        """The node's kubelet: one that is up (logs, exec), or any (pod lifecycle, seen when it comes back)."""
        kubelet = self.kubelet
        if kubelet is None:
            return None
        return kubelet if (kubelet.serves(node) if reachable else kubelet.knows(node)) else None

    def _create_pod(self, namespace: str, req: RecordedRequest) -> Response:
        body = req.body
        if isinstance(body, (bytes, bytearray)) or body is None:
            raise bad_request("couldn't get version/kind; json parse error: unexpected end of JSON input"
                              if not body else "couldn't get version/kind; json parse error: invalid character")
        podlib.decode(body)
        meta_ns = (body.get("metadata") or {}).get("namespace")
        if meta_ns and meta_ns != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        with self._lock:
            if ("namespaces", "", namespace) not in self._store:
                raise not_found("namespaces", "", namespace)
        dry_run = "All" in [v for k, v in req.query_items if k == "dryRun"]
        pod = podlib.default_pod(body, namespace, "0")
        podlib.validate(pod)
        name = pod["metadata"]["name"]
        with self._lock:
            if ("pods", namespace, name) in self._store:
                raise ApiStatus(409, "AlreadyExists", f'pods "{name}" already exists', {"name": name, "kind": "pods"})
            if not dry_run:
                self._rv += 1
                pod["metadata"]["resourceVersion"] = str(self._rv)
                self._store[("pods", namespace, name)] = pod
                self._emit("ADDED", _BY_PLURAL["pods"], pod, None)
            created = copy.deepcopy(pod)
        if not dry_run:
            agent = self._agent(str(pod["spec"].get("nodeName") or ""), reachable=False)
            if agent is not None:
                agent.pod_created(copy.deepcopy(created))
        return Response.json(201, created)

    def _delete_options(self, req: RecordedRequest) -> Object:
        if req.body is not None:
            if not isinstance(req.body, dict):
                raise bad_request("couldn't get version/kind; json parse error: invalid character")
            return dict(req.body)
        opts: Object = {}
        for key in ("gracePeriodSeconds", "propagationPolicy", "orphanDependents"):
            if key in req.query:
                opts[key] = req.query[key]
        if "gracePeriodSeconds" in opts:
            try:
                opts["gracePeriodSeconds"] = int(opts["gracePeriodSeconds"])
            except ValueError:
                raise bad_request(f'strconv.ParseInt: parsing "{opts["gracePeriodSeconds"]}": invalid syntax') from None
        if "orphanDependents" in opts:
            opts["orphanDependents"] = opts["orphanDependents"] == "true"
        return opts

    def _delete_pod(self, namespace: str, name: str, req: RecordedRequest) -> Response:
        opts = self._delete_options(req)
        policy = opts.get("propagationPolicy")
        if policy is not None and policy not in ("Foreground", "Background", "Orphan"):
            raise ApiStatus(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
                            f'value: "{policy}": supported values: "Foreground", "Background", "Orphan", "nil"',
                            {"kind": "DeleteOptions", "group": "meta.k8s.io", "causes": [
                                {"reason": "FieldValueNotSupported", "field": "propagationPolicy",
                                 "message": f'Unsupported value: "{policy}": supported values: "Foreground", '
                                            '"Background", "Orphan", "nil"'}]})
        dry_run = "All" in [v for k, v in req.query_items if k == "dryRun"] or opts.get("dryRun") == ["All"]
        result, notify = self._delete_one(namespace, name, opts, dry_run)
        if notify is not None:
            notify()
        code = 202 if opts.get("orphanDependents") is False and result["metadata"].get("deletionTimestamp") else 200
        return Response.json(code, result)

    def _delete_one(self, namespace: str, name: str, opts: Object, dry_run: bool
                    ) -> tuple[Object, Callable[[], None] | None]:
        """Delete one pod as the registry does; returns the answer and the kubelet notification to make."""
        with self._lock:
            pod = self._store.get(("pods", namespace, name))
            if pod is None:
                raise not_found("pods", "", name)
            pre = opts.get("preconditions") or {}
            meta = pod["metadata"]
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise ApiStatus(409, "Conflict", f'Operation cannot be fulfilled on pods "{name}": Precondition '
                                f'failed: UID in precondition: {pre["uid"]}, UID in object meta: {meta.get("uid")}',
                                {"name": name, "kind": "pods"})
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
                raise ApiStatus(409, "Conflict", f'Operation cannot be fulfilled on pods "{name}": Precondition '
                                f'failed: ResourceVersion in precondition: {pre["resourceVersion"]}, '
                                f'ResourceVersion in object meta: {meta.get("resourceVersion")}',
                                {"name": name, "kind": "pods"})
            grace = opts.get("gracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            # podStrategy.CheckGracefulTermination: unbound or finished pods go at once
            if not pod["spec"].get("nodeName") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                grace = 0
            grace = 1 if grace < 0 else int(grace)
            if dry_run:
                return copy.deepcopy(pod), None
            current = meta.get("deletionGracePeriodSeconds")
            if current is not None and grace != 0 and grace >= current:
                return copy.deepcopy(pod), None  # already terminating with a shorter (or equal) grace period
            if grace == 0:
                gone = self.remove("Pod", namespace, name)
                assert gone is not None
                agent = self._agent(str(gone["spec"].get("nodeName") or ""), reachable=False)
                return gone, (partial(agent.pod_removed, copy.deepcopy(gone)) if agent is not None else None)

            def mark(doc: Object) -> None:
                doc["metadata"]["deletionTimestamp"] = now_rfc3339(time.time() + grace)
                doc["metadata"]["deletionGracePeriodSeconds"] = grace

            updated = self.update("Pod", namespace, name, mark)
            assert updated is not None
            agent = self._agent(str(updated["spec"].get("nodeName") or ""), reachable=False)
            return updated, (partial(agent.pod_deleting, copy.deepcopy(updated)) if agent is not None else None)

    def _delete_collection(self, namespace: str, req: RecordedRequest) -> Response:
        res = _BY_PLURAL["pods"]
        opts = self._delete_options(req)
        dry_run = "All" in [v for k, v in req.query_items if k == "dryRun"]
        items: list[Object] = []
        for pod in self._select(res, namespace, req.query):
            try:
                result, notify = self._delete_one(namespace, pod["metadata"]["name"], opts, dry_run)
            except ApiStatus as exc:
                if exc.code == 404:
                    continue  # gone meanwhile
                raise
            if notify is not None:
                notify()
            result.pop("kind", None)
            result.pop("apiVersion", None)
            items.append(result)
        return Response.json(200, {"kind": "PodList", "apiVersion": "v1",
                                   "metadata": {"resourceVersion": self.resource_version}, "items": items})

    def _pod_and_container(self, route: Route, container: str | None) -> tuple[Object, str]:
        name = route.name or ""
        with self._lock:
            pod = self._store.get(("pods", route.namespace or "", name))
            pod = copy.deepcopy(pod) if pod is not None else None
        if pod is None:
            raise not_found("pods", "", name)
        names = [c.get("name", "") for c in pod["spec"].get("containers") or []]
        if not container:
            if len(names) != 1:
                raise bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                  f"[{' '.join(names)}]")
            container = names[0]
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        return pod, container

    def _pod_log(self, route: Route, query: Mapping[str, str]) -> Response:
        pod, container = self._pod_and_container(route, query.get("container"))

        def flag(key: str) -> bool:
            return query.get(key, "false") in ("true", "1", "True")

        def number(key: str) -> int | None:
            if key not in query:
                return None
            try:
                value = int(query[key])
            except ValueError:
                raise bad_request(f'strconv.ParseInt: parsing "{query[key]}": invalid syntax') from None
            minimum = 0 if key == "tailLines" else 1
            if value < minimum:
                raise ApiStatus(422, "Invalid", f'PodLogOptions "{route.name}" is invalid: {key}: Invalid value: '
                                f"{value}: must be greater than or equal to {minimum}")
            return value

        since: float | None = None
        if "sinceSeconds" in query:
            seconds = number("sinceSeconds")
            since = time.time() - float(seconds or 0)
        if "sinceTime" in query:
            try:
                since = time.mktime(time.strptime(query["sinceTime"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
            except ValueError:
                raise bad_request(f'parsing time "{query["sinceTime"]}" as "2006-01-02T15:04:05Z07:00": '
                                  "cannot parse") from None
        opts = LogOptions(container, flag("follow"), flag("previous"), flag("timestamps"), number("tailLines"),
                          number("limitBytes"), since)
        node = str(pod["spec"].get("nodeName") or "")
        if not node:
            return Response(200, b"", content_type="text/plain")  # the real LogLocation: no host, no log
        agent = self._agent(node)
        if agent is None:
            ip = self._node_ip(node)
            raise ApiStatus(500, "", f'Get "https://{ip}:10250/containerLogs/{route.namespace}/{route.name}/'
                            f'{container}": dial tcp {ip}:10250: connect: connection refused')
        return Response(200, agent.logs(pod, opts, self._stopping), content_type="text/plain")

    def _pod_exec(self, route: Route, req: RecordedRequest) -> _Upgrade:
        pod, container = self._pod_and_container(route, req.query.get("container"))
        name = route.name or ""
        node = str(pod["spec"].get("nodeName") or "")
        if not node:
            raise bad_request(f"pod {name} does not have a host assigned")
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            raise bad_request(f"cannot exec into a container in a completed pod; current phase is {phase}")
        command = [v for k, v in req.query_items if k == "command"]

        def flag(key: str) -> bool:
            return req.query.get(key, "false") in ("true", "1", "True")

        stdin, stdout, stderr, tty = flag("stdin"), flag("stdout"), flag("stderr"), flag("tty")
        if not (stdin or stdout or stderr):
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        if not command:
            raise bad_request("you must specify at least one command for the container")
        if req.upgrade.lower() != "websocket":
            raise bad_request("Upgrade request required")
        agent = self._agent(node)
        if agent is None:
            ip = self._node_ip(node)
            raise ApiStatus(500, "", f"error dialing backend: dial tcp {ip}:10250: connect: connection refused")
        agent.check_exec(pod, container)
        return _Upgrade(pod, container, command, stdin, stdout, stderr, tty)

    # -- discovery --

    def _resources(self, group: str, version: str) -> list[Resource]:
        return [r for r in RESOURCES if r.group == group and r.version == version]

    def _api_group(self, group: str) -> Object:
        gv = {"groupVersion": f"{group}/v1", "version": "v1"}
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv],
                "preferredVersion": gv}

    def _discovery(self, route: Route) -> Object:
        if route.discovery == "version":
            major, minor = self.git_version.lstrip("v").split(".")[:2]
            return {"major": major, "minor": minor, "gitVersion": self.git_version,
                    "gitCommit": "39683505b630ff2121012f3c5b16215a1449d5ed", "gitTreeState": "clean",
                    "buildDate": "2024-06-11T20:21:00Z", "goVersion": "go1.22.4", "compiler": "gc",
                    "platform": "linux/amd64"}
        if route.discovery == "api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]}
        if route.discovery == "apis":
            groups = sorted({r.group for r in RESOURCES if r.group and self._serves(r.group, r.version)})
            entries = [{k: v for k, v in self._api_group(g).items() if k not in ("kind", "apiVersion")}
                       for g in groups]
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": entries}
        if route.discovery == "group":
            return self._api_group(route.group)
        gv = f"{route.group}/{route.version}" if route.group else route.version
        resources: list[Object] = []
        for r in self._resources(route.group, route.version):
            resources.append({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                              "kind": r.kind, "verbs": _VERBS,
                              **({"shortNames": list(r.short_names)} if r.short_names else {})})
            resources += [{"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                           "kind": kind, "verbs": list(verbs)} for sub, kind, verbs in r.subresources]
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as urllib3's pool expects
    server: _HTTPServer
    server_version = "FakeKubeApiserver"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: pytest would show every request otherwise

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def _serve(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        raw = self._read_body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        items = tuple(parse_qsl(parts.query, keep_blank_values=True))
        recorded = RecordedRequest(
            method=self.command, path=parts.path, query=dict(items),
            user_agent=self.headers.get("User-Agent", ""),
            authorization=self.headers.get("Authorization"),
            body=body, query_items=items, upgrade=self.headers.get("Upgrade", ""),
        )
        fake._record(recorded)
        if fake.on_request is not None:
            fake.on_request(recorded)
        if fake.delay and fake._stopping.wait(fake.delay):
            self.close_connection = True
            return
        if fake.close_without_answer:
            self.close_connection = True
            return
        injection = fake._fault_for(recorded)
        fault = injection.fault if injection is not None else None
        resp: Response | None = None
        if fault is not None:
            if fault.kind == "close":
                self.close_connection = True
                return
            if fault.kind == "stall" and not fault.headers:
                self._wait_until_gone()
                self.close_connection = True
                return
            if fault.kind == "delay" and fake._stopping.wait(fault.seconds):
                self.close_connection = True
                return
            if fault.replaces_answer:
                resp = replacement(fault, recorded, fake.user)
        if resp is None:
            try:
                fake._authenticate(self.headers.get("Authorization"))
                result = fake.dispatch(recorded)
            except ApiStatus as status:
                result = status.response()
            if isinstance(result, _Upgrade):
                self._upgrade(result)
                return
            resp = result
            if injection is not None and fault is not None and fault.kind in (
                    "set_field", "mutate", "nested", "repeat_continue", "cycle_continue", "huge"):
                resp = rewrite(fault, injection, recorded, resp)
        try:
            self._send(resp, fault)
        finally:
            if resp.close is not None:
                resp.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    # -- answering --

    def _send(self, resp: Response, fault: Fault | None) -> None:
        fake = self.server.fake
        explicit = next((v for k, v in resp.headers if k.lower() == "content-length"), None)
        chunked = resp.streamed and explicit is None
        self.send_response(resp.code)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", resp.content_type)
        self.send_header("X-Kubernetes-Pf-Flowschema-Uid", "2d0a7fb4-4e7e-4a57-8b6b-0b3e2c4c2f9a")
        self.send_header("X-Kubernetes-Pf-Prioritylevel-Uid", "0b8e4d4e-7b1e-4d3c-9a4f-6f1d2b6a3c5e")
        for key, value in resp.headers:
            self.send_header(key, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif explicit is None:
            assert isinstance(resp.body, bytes)
            self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault is not None and fault.kind == "stall":
            self.wfile.flush()
            self._wait_until_gone()
            self.close_connection = True
            return
        total = int(explicit) if explicit is not None else (len(resp.body) if isinstance(resp.body, bytes) else None)
        reset_at: int | None = None
        if fault is not None and fault.kind == "reset":
            reset_at = fault.after if fault.after is not None else (total // 2 if total else 4096)
        rate = fault.rate if fault is not None and fault.kind == "drip" else 0.0
        sent = 0
        try:
            for piece in resp.pieces():
                if fake._stopping.is_set() and resp.streamed:
                    break
                if reset_at is not None and sent + len(piece) >= reset_at:
                    self._write(piece[:reset_at - sent], chunked)
                    self._reset()
                    return
                if rate:
                    if not self._drip(piece, rate, chunked):
                        self.close_connection = True
                        return
                else:
                    self._write(piece, chunked)
                sent += len(piece)
            if reset_at is not None:
                self._reset()
                return
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away (or stop() cut the connection)
            self.close_connection = True

    def _write(self, data: bytes, chunked: bool) -> None:
        if not data:
            return
        if chunked:
            self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            self.wfile.write(data)
        self.wfile.flush()

    def _drip(self, data: bytes, rate: float, chunked: bool) -> bool:
        """Send ``data`` at ``rate`` bytes per second; False if the server stopped meanwhile."""
        step = max(1, int(rate / 10))
        interval = step / rate
        for i in range(0, len(data), step):
            self._write(data[i:i + step], chunked)
            if self.server.fake._stopping.wait(interval):
                return False
        return True

    def _reset(self) -> None:
        """A TCP reset: close with SO_LINGER 0."""
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _wait_until_gone(self) -> None:
        """Hold the connection until the client closes it or the server stops."""
        conn = self.connection
        plain = not isinstance(conn, ssl.SSLSocket)
        while not self.server.fake._stopping.wait(0.1):
            if not plain:
                continue
            try:
                ready, _, _ = select.select([conn], [], [], 0)
                if ready and conn.recv(1, socket.MSG_PEEK) == b"":
                    return
            except OSError:
                return

    # -- exec: the WebSocket upgrade --

    def _upgrade(self, up: _Upgrade) -> None:
        fake = self.server.fake
        self.close_connection = True
        protocol = negotiate(self.headers.get("Sec-WebSocket-Protocol", ""), fake.exec_protocols)
        key = self.headers.get("Sec-WebSocket-Key")
        if protocol is None or not key:
            status = bad_request("unable to upgrade connection: requested protocol(s) are not supported: "
                                 f"{self.headers.get('Sec-WebSocket-Protocol', '')}; supports "
                                 f"{list(fake.exec_protocols)}" if key else "Upgrade request required")
            self._send(status.response(), None)
            return
        self.send_response_only(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(key))
        if protocol:
            self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()
        ws = ChannelSocket(self.connection, protocol)
        kubelet = fake.kubelet
        assert kubelet is not None
        try:
            # an empty frame on the lowest channel asked for: the client knows the stream is open
            ws.send_channel(1 if up.stdout else 2 if up.stderr else 3, b"")
            kubelet.exec_stream(up.pod, up.container, up.command, stdin=up.stdin, stdout=up.stdout,
                                stderr=up.stderr, tty=up.tty, ws=ws, stop=fake._stopping)
        except Exception:  # noqa: BLE001 - the client hung up; nothing to answer
            pass
        finally:
            ws.close()


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "api"


def fixture_cluster(**kwargs: Any) -> FakeApiServer:
    """A server holding tests/fixtures/api/: the tutorial's my-nginx in default, kube-system, other."""
    return FakeApiServer.from_manifests(sorted(FIXTURES.glob("*.*")), **kwargs)
