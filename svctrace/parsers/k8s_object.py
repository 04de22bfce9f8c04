"""One Kubernetes object being typed: its fields read with the type they must have, or an error that says where.

``TypedObject.fail`` names the file (and line), the object (kind namespace/name) and the field path, with the
value found, so a wrong type in a 100,000-object dump is found without searching.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from sys import intern
from typing import Any, NoReturn

from svctrace.errors import InputError
from svctrace.model.k8s import Protocol
from svctrace.parsers.k8s_documents import HINT_EXPORT, type_name

MAX_NAME = 253  # the longest name any Kubernetes object may have (a DNS subdomain)
_PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP")


@dataclass(slots=True)
class TypedObject:
    """One object being typed: its raw mapping plus what names it in error messages."""

    doc: Mapping[str, Any]
    kind: str
    source: str
    namespace: str
    name: str
    line: int | None = None

    @classmethod
    def of(cls, doc: Mapping[str, Any], kind: str, source: str, *, namespaced: bool,
           line: int | None = None) -> TypedObject:
        meta = doc.get("metadata")
        if not isinstance(meta, Mapping):
            raise InputError(f"a {kind} without metadata (its name is needed)", HINT_EXPORT, path=source, line=line)
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"a {kind} without metadata.name", HINT_EXPORT, path=source, line=line)
        namespace = ""
        if namespaced:
            ns = meta.get("namespace")
            # kubectl always prints it; a hand-written manifest without one means "default" (kubectl apply).
            namespace = intern(ns) if isinstance(ns, str) and ns else "default"
        if len(name) > MAX_NAME or len(namespace) > MAX_NAME:
            # The API refuses longer names; one of megabytes would be printed in every line that names it.
            raise InputError(f"a {kind} whose name or namespace is longer than {MAX_NAME} characters; refused",
                             HINT_EXPORT, path=source, line=line)
        return cls(doc, kind, source, namespace, name, line)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.as_map(self.doc.get("metadata"), "metadata")

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.as_map(self.doc.get("spec"), "spec")

    @property
    def status(self) -> Mapping[str, Any]:
        return self.as_map(self.doc.get("status"), "status")

    def fail(self, path: str, expected: str, value: object) -> NoReturn:
        raise InputError(f"{self.kind} {self.ref}: {path} must be {expected}, not {_describe(value)}",
                         HINT_EXPORT, path=self.source, line=self.line)

    def as_map(self, value: object, path: str) -> Mapping[str, Any]:
        if type(value) is dict:  # what JSON and YAML decode to: no ABC check (called millions of times)
            return value
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path, "a mapping", value)
        return value

    def as_list(self, value: object, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, "a list", value)
        return value

    def as_str(self, value: object, path: str, default: str = "") -> str:
        if type(value) is str:
            return value
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(path, "a string", value)
        return value

    def as_opt_str(self, value: object, path: str) -> str | None:
        return None if value is None else self.as_str(value, path)

    def as_word(self, value: object, path: str, default: str = "") -> str:
        """``as_str`` of a value many objects share (a node, a phase, a container or port name): one copy of it
        is kept for them all. 100,000 pods decoded from JSON held 28 strings each, most of them repeats."""
        return intern(self.as_str(value, path, default))

    def as_opt_word(self, value: object, path: str) -> str | None:
        return None if value is None else self.as_word(value, path)

    def as_int(self, value: object, path: str) -> int | None:
        # bool is an int in Python; `port: true` is a mistake, not 1.
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(path, "an integer", value)
        return value

    def as_port(self, value: object, path: str, *, required: bool = False) -> int | None:
        number = self.as_int(value, path)
        if number is None:
            if required:
                raise InputError(f"{self.kind} {self.ref}: {path} is missing", HINT_EXPORT, path=self.source,
                                 line=self.line)
            return None
        if not 0 < number < 65536:
            self.fail(path, "a port number between 1 and 65535", value)
        return number

    def as_bool(self, value: object, path: str) -> bool | None:
        if value is None:
            return None
        if not isinstance(value, bool):
            self.fail(path, "true or false", value)
        return value

    def as_protocol(self, value: object, path: str) -> Protocol:
        text = self.as_str(value, path, "TCP")
        for proto in _PROTOCOLS:
            if text == proto:
                return proto
        self.fail(path, "TCP, UDP or SCTP", value)

    def as_str_list(self, value: object, path: str) -> tuple[str, ...]:
        return tuple(self.as_str(v, f"{path}[{i}]") for i, v in enumerate(self.as_list(value, path)))

    def as_str_map(self, value: object, path: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in self.as_map(value, path).items():  # labels and selectors: keys and values shared (as_word)
            if type(v) is str and type(k) is str:
                out[intern(k)] = intern(v)
                continue
            if isinstance(v, (Mapping, list)):
                self.fail(f"{path}.{k}", "a string", v)
            out[str(k)] = v if isinstance(v, str) else _scalar_text(v)
        return out


def _scalar_text(value: object) -> str:
    # Unquoted YAML turns `true`/`8080` into bool/int; the API would have kept them as text.
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _describe(value: object) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        return f"the {type_name(value)} {shown}"
    return f"a {type_name(value)}"
