"""An in-process stand-in for kube-apiserver that speaks its REST protocol over real HTTP(S).

No real apiserver can run on a test machine, so API tests talk to this server through the real
``kubernetes`` Python client with a real kubeconfig. It serves the read side of the API the way
kube-apiserver does — GET one, LIST (namespaced and across namespaces) with label and field
selectors, ``limit``/``continue`` paging, discovery documents and ``Status`` error bodies with the
real server's messages — and records every request so tests can count them.

Writes are refused with 405 (and recorded): svctrace must never change a cluster.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

DEFAULT_TOKEN = "svctrace-test-token"
DEFAULT_USER = "system:serviceaccount:svctrace:reader"
GIT_VERSION = "v1.30.2"
CREATION_TIMESTAMP = "2024-05-14T09:12:00Z"

Object = dict[str, Any]


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
              "status.nominatedNodeName")),
    Resource("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",)),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, "endpointslice"),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, "networkpolicy",
             ("netpol",)),
)
_BY_KIND = {r.kind: r for r in RESOURCES}
_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
# What the apiserver's query parsing (Go's strconv.ParseBool) reads as true; kubernetes < 36 sends watch=True.
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
_WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

_EXPIRED_MESSAGE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - "
    "objects that were created, modified, or deleted between the time the first chunk was returned and "
    "now may show up in the list."
)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    query: Mapping[str, str]
    user_agent: str
    authorization: str | None = None

    @property
    def verb(self) -> str:
        """The Kubernetes verb: get, list, watch, or the HTTP method for anything else."""
        if self.method != "GET":
            return self.method.lower()
        if self.query.get("watch") in _TRUE:
            return "watch"
        route = _route(self.path)
        if route is not None and route.name is None and route.resource is not None:
            return "list"
        return "get"


class ApiStatus(Exception):
    """A ``Status`` failure the handler answers with."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None,
                 metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.metadata = metadata

    def body(self) -> Object:
        """The JSON body kube-apiserver sends for this failure."""
        doc: Object = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": dict(self.metadata or {}),
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            doc["details"] = dict(self.details)
        doc["code"] = self.code
        return doc


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
    if len(rest) > 2:
        return None  # subresources (status, log, proxy, ...) are not served
    res = _BY_PATH.get((group, version, rest[0]))
    name = rest[1] if len(rest) == 2 else None
    if res is None:
        return Route(group, version, None, namespace, name, unknown_resource=rest[0])
    if namespace is not None and not res.namespaced:
        return None
    return Route(group, version, res, namespace, name)


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


# --- the server ------------------------------------------------------------------------------------------

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


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeApiServer


class FakeApiServer:
    """A kube-apiserver stand-in on 127.0.0.1 with an ephemeral port, serving the read API."""

    def __init__(
        self,
        objects: Iterable[Mapping[str, Any]] = (),
        *,
        tls: bool = False,
        token: str = DEFAULT_TOKEN,
        user: str = DEFAULT_USER,
        forbid: Iterable[tuple[str, str, str | None]] = (),
        serve_endpointslices: bool = True,
        delay: float = 0.0,
        close_without_answer: bool = False,
        git_version: str = GIT_VERSION,
        on_request: Callable[[RecordedRequest], None] | None = None,
    ) -> None:
        self.tls = tls
        self.token = token
        self.user = user
        # (verb, resource plural, namespace): namespace None denies everywhere, "" denies cluster scope
        # (cluster-scoped objects and lists across all namespaces), a name denies that namespace only.
        self.forbid: list[tuple[str, str, str | None]] = list(forbid)
        self.serve_endpointslices = serve_endpointslices
        self.delay = delay
        self.close_without_answer = close_without_answer
        self.git_version = git_version
        # called after each request is recorded, before it is answered (e.g. to expire tokens mid-list)
        self.on_request = on_request
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._store: dict[tuple[str, str, str], Object] = {}  # (plural, namespace, name) -> object
        self._rv = 1000
        self._compacted_rv = 0
        self._tmp = Path(tempfile.mkdtemp(prefix="svctrace-apiserver-"))
        self.ca_file: Path | None = None
        for obj in objects:
            self.add(obj, _bump=False)
        for ns in sorted({"default", "kube-system", *(k[1] for k in self._store if k[1])}):
            if ("namespaces", "", ns) not in self._store:
                self.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
                          "status": {"phase": "Active"}}, _bump=False)
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
        """Stop serving, wake delayed handlers and remove the TLS material."""
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- objects --

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
            self._store[(res.plural, ns, meta["name"])] = doc
        return doc

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Remove an object (as if the cluster changed underneath a client)."""
        with self._lock:
            self._rv += 1
            del self._store[(_BY_KIND[kind].plural, namespace, name)]

    def expire_continue_tokens(self) -> None:
        """Compact history so every continue token handed out so far answers 410 Expired."""
        with self._lock:
            self._rv += 1
            self._compacted_rv = self._rv

    @property
    def resource_version(self) -> str:
        return str(self._rv)

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

    # -- request handling (called from handler threads) --

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _authenticate(self, authorization: str | None) -> None:
        scheme, _, credential = (authorization or "").partition(" ")
        # the in-cluster loader sends "bearer", kubeconfig users "Bearer": the scheme is case-insensitive
        if scheme.lower() != "bearer" or credential.strip() != self.token:
            raise ApiStatus(401, "Unauthorized", "Unauthorized")

    def _authorize(self, verb: str, res: Resource, namespace: str | None, name: str | None) -> None:
        for f_verb, f_res, f_ns in self.forbid:
            if f_verb != verb or f_res != res.plural:
                continue
            if f_ns is None or (f_ns == "" and namespace is None) or (f_ns and f_ns == namespace):
                where = f'in the namespace "{namespace}"' if namespace is not None else "at the cluster scope"
                subject = f'{res.qualified} "{name}"' if name else res.qualified
                # NewForbidden's details: name (if any), group (if not core), kind = the resource
                details: Object = {**({"name": name} if name else {}),
                                   **({"group": res.group} if res.group else {}), "kind": res.plural}
                raise ApiStatus(
                    403, "Forbidden",
                    f'{subject} is forbidden: User "{self.user}" cannot {verb} resource "{res.plural}" '
                    f'in API group "{res.group}" {where}',
                    details,
                )

    def _serves(self, group: str, version: str | None) -> bool:
        if group == "discovery.k8s.io" and not self.serve_endpointslices:
            return False
        return any(r.group == group and version in (None, r.version) for r in RESOURCES)

    def handle(self, method: str, raw_path: str) -> tuple[int, Object | bytes]:
        """Answer one request: (status code, JSON document or raw body)."""
        if method in _WRITE_METHODS:
            raise ApiStatus(405, "MethodNotAllowed",
                            "the server does not allow this method on the requested resource", {})
        parts = urlsplit(raw_path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        route = _route(parts.path)
        not_found = ApiStatus(404, "NotFound", "the server could not find the requested resource", {})
        if route is None:
            raise not_found
        if route.discovery in ("version", "api", "apis"):
            return 200, self._discovery(route)
        if route.group and not self._serves(route.group, route.version or None):
            raise not_found  # an API group this server does not have, e.g. discovery.k8s.io switched off
        if route.discovery is not None:
            return 200, self._discovery(route)
        if route.resource is None:
            raise not_found
        res = route.resource
        watch = query.get("watch") in _TRUE
        verb = "get" if route.name else ("watch" if watch else "list")
        self._authorize(verb, res, route.namespace if res.namespaced else None, route.name)
        if route.name is not None:
            with self._lock:
                obj = self._store.get((res.plural, route.namespace or "", route.name))
            if obj is None:
                raise ApiStatus(404, "NotFound", f'{res.qualified} "{route.name}" not found',
                                {"name": route.name, **({"group": res.group} if res.group else {}),
                                 "kind": res.plural})
            return 200, copy.deepcopy(obj)
        items = self._select(res, route.namespace, query)
        if watch:
            lines = b"".join(json.dumps({"type": "ADDED", "object": {
                "kind": res.kind, "apiVersion": res.group_version, **o}}).encode() + b"\n" for o in items)
            return 200, lines
        return 200, self._page(res, items, query)

    def _select(self, res: Resource, namespace: str | None, query: Mapping[str, str]) -> list[Object]:
        try:
            labels = parse_label_selector(query.get("labelSelector", ""))
        except ValueError as exc:
            raise ApiStatus(400, "BadRequest", f"unable to parse requirement: {exc}") from None
        try:
            fields = parse_field_selector(query.get("fieldSelector", ""))
        except ValueError as exc:
            raise ApiStatus(400, "BadRequest", str(exc)) from None
        allowed = {"metadata.name", "metadata.namespace", *res.fields}
        for fname, _, _ in fields:
            if fname not in allowed:
                raise ApiStatus(400, "BadRequest", f"field label not supported: {fname}")
        with self._lock:
            objs = [o for (plural, ns, _), o in sorted(self._store.items())
                    if plural == res.plural and (namespace is None or ns == namespace)]
        out: list[Object] = []
        for obj in objs:
            obj_labels = obj["metadata"].get("labels") or {}
            if not all(r.matches(obj_labels) for r in labels):
                continue
            if not all((_field_value(obj, f) == v) == (op == "=") for f, op, v in fields):
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
                raise ApiStatus(400, "BadRequest",
                                f"invalid continue token: continue key is not valid: {exc}") from None
            if list_rv < self._compacted_rv:
                # the real server also offers a token to continue inconsistently from "now"
                fresh = self._token(self._rv, start)
                raise ApiStatus(410, "Expired", _EXPIRED_MESSAGE, metadata={"continue": fresh})
        keyed = [(f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" if res.namespaced
                  else i["metadata"]["name"], i) for i in items]
        keyed = [(k, i) for k, i in keyed if k >= start]
        meta: Object = {"resourceVersion": str(list_rv)}
        limit = int(query.get("limit") or 0)
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
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
            {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
             "verbs": _VERBS, **({"shortNames": list(r.short_names)} if r.short_names else {})}
            for r in self._resources(route.group, route.version)]}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as urllib3's pool expects
    server: _HTTPServer
    server_version = "FakeKubeApiserver"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: pytest would show every request otherwise

    def _serve(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        recorded = RecordedRequest(
            method=self.command, path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            user_agent=self.headers.get("User-Agent", ""),
            authorization=self.headers.get("Authorization"),
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
        try:
            fake._authenticate(self.headers.get("Authorization"))
            code, body = fake.handle(self.command, self.path)
        except ApiStatus as status:
            code, body = status.code, status.body()
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Kubernetes-Pf-Flowschema-Uid", "2d0a7fb4-4e7e-4a57-8b6b-0b3e2c4c2f9a")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "api"


def fixture_cluster(**kwargs: Any) -> FakeApiServer:
    """A server holding tests/fixtures/api/: the tutorial's my-nginx in default, kube-system, other."""
    return FakeApiServer.from_manifests(sorted(FIXTURES.glob("*.*")), **kwargs)
