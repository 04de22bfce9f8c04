"""api/ files (kubectl's JSON or YAML) -> the Kubernetes objects in them, one at a time (pure).

The first of the two steps of reading the API (svctrace.parsers.k8s types the objects): a file's text
becomes raw objects, Lists expanded and each item given the kind and apiVersion its List implies. JSON is
streamed (svctrace.parsers.json_stream), so a 100,000-pod List is never a whole document in memory; YAML
is read whole within a smaller bound, by the C loader where PyYAML has it, and with its aliases counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from svctrace.errors import InputError
from svctrace.parsers.json_stream import Counter, JsonStream, Streamed
from svctrace.parsers.limits import MAX_DEPTH, MAX_OBJECT_BYTES, MAX_VALUES
from svctrace.parsers.text_stream import TextStream
from svctrace.record import record

HINT_EXPORT = "fix that field, or export the object again with `kubectl get ... -o json` and retry"
_HINT_NO_ERRORS = ("api/ files hold `kubectl get ... -o json` (or -o yaml) output; keep kubectl's error messages "
                   "out of them (no `2>&1`)")


@record
class RawObject:
    """One object as the file holds it, kind and apiVersion filled in from its List, and where it starts."""

    doc: Mapping[str, Any]
    line: int | None = None


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number", list: "list", dict: "mapping",
            type(None): "null"}.get(type(value), type(value).__name__)


def _is_list_kind(kind: object) -> bool:
    return isinstance(kind, str) and kind.endswith("List")


def _inherited(container: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The kind and apiVersion a List gives items that carry none (a typed List: ServiceList -> Service)."""
    kind = container.get("kind")
    if not _is_list_kind(kind) or kind == "List":
        return None, None
    assert isinstance(kind, str)
    api = container.get("apiVersion")
    return kind[: -len("List")], api if isinstance(api, str) else None


def expand(doc: Mapping[str, Any], source: str, kind: str | None = None, api: str | None = None,
           line: int | None = None, depth: int = 0) -> Iterator[RawObject]:
    """The objects in one document: a List's items (Lists inside Lists too), or the object itself."""
    own_kind = doc.get("kind", kind)
    own_api = doc.get("apiVersion", api)
    items = doc.get("items")
    if _is_list_kind(own_kind) and "items" in doc:
        if items is None:
            return
        if not isinstance(items, list):
            raise InputError(f"{own_kind}: items must be a list, not a {type_name(items)}", HINT_EXPORT,
                             path=source, line=line)
        if depth >= MAX_DEPTH:
            raise InputError(f"Lists nested more than {MAX_DEPTH} deep; refused", HINT_EXPORT, path=source, line=line)
        item_kind, item_api = _inherited({"kind": own_kind, "apiVersion": own_api})
        for i, item in enumerate(items):
            if item is None:
                continue
            if not isinstance(item, Mapping):
                raise InputError(f"{own_kind}: items[{i}] is a {type_name(item)}, not an object", HINT_EXPORT,
                                 path=source, line=line)
            yield from expand(item, source, item_kind, item_api, line, depth + 1)
        return
    if own_kind is not None and "kind" not in doc or own_api is not None and "apiVersion" not in doc:
        doc = {**doc, "kind": own_kind, "apiVersion": own_api}
    yield RawObject(doc, line)


def _not_an_object(number: int, value: object, source: str, line: int | None) -> InputError:
    return InputError(f"document {number} is a {type_name(value)}, not a Kubernetes object", _HINT_NO_ERRORS,
                      path=source, line=line)


def _json_stream(stream: TextStream, source: str, counter: Counter, *, items: bool) -> JsonStream:
    def should_stream(members: dict[str, Any]) -> bool:
        # A List's items are handed out one by one; so are those of an object whose kind comes later (kubectl
        # prints apiVersion, items, kind). An object that says first it is no List keeps an "items" field whole.
        return items and ("kind" not in members or _is_list_kind(members["kind"]))

    def ready(members: dict[str, Any], element: Any) -> bool:
        return not isinstance(element, Mapping) or "kind" in element or "kind" in members

    return JsonStream(stream, source, max_value_chars=MAX_OBJECT_BYTES, counter=counter,
                      should_stream=should_stream, ready=ready)


def _from_streamed(s: Streamed, source: str) -> Iterator[RawObject]:
    value = s.value
    if value is None or s.rest or value == []:
        return  # null items, as some generators write; what a List holds besides its items
    if s.container is not None:
        kind, api = _inherited(s.container)
        if not isinstance(value, Mapping):
            label = s.container.get("kind") if isinstance(s.container.get("kind"), str) else "List"
            raise InputError(f"{label}: items[{s.index}] is a {type_name(value)}, not an object", HINT_EXPORT,
                             path=source, line=s.line)
        yield from expand(value, source, kind, api, s.line)
        return
    if not isinstance(value, Mapping):
        raise _not_an_object(s.number, value, source, s.line)
    yield from expand(value, source, line=s.line)


def read_json_objects(stream: TextStream, source: str, counter: Counter | None = None) -> Iterator[RawObject]:
    """The objects of a JSON api/ file, item by item as they are read."""
    counter = counter if counter is not None else Counter(MAX_VALUES)
    for s in _json_stream(stream, source, counter, items=True):
        yield from _from_streamed(s, source)


def decode_yaml(text: str, source: str) -> list[Any]:
    """The documents of a YAML file (``---``-separated), bounded in depth and alias expansion."""
    # PyYAML costs ~10 ms to import: a snapshot of JSON files only never pays it.
    from svctrace.parsers.k8s_yaml import decode_yaml as decode

    return decode(text, source)


def read_yaml_objects(text: str, source: str, counter: Counter | None = None) -> Iterator[RawObject]:
    """The objects of a YAML api/ file."""
    counter = counter if counter is not None else Counter(MAX_VALUES)
    for number, value in enumerate(decode_yaml(text, source), start=1):
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue  # an empty document (a trailing `---`)
            counter.count += 1
            if counter.count > counter.limit:
                raise InputError(f"more than {counter.limit:,} objects; refused",
                                 "check that this is the right file (see the limits in docs/snapshot.md)", path=source)
            if not isinstance(item, Mapping):
                raise _not_an_object(number, item, source, None)
            yield from expand(item, source)


def _text_stream(text: str, source: str) -> TextStream:
    data = text.encode("utf-8", "surrogatepass")
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        piece = data[pos:pos + n]
        pos += len(piece)
        return piece

    return TextStream(read, source)


def decode_documents(text: str, source: str, fmt: Literal["json", "yaml"]) -> tuple[Mapping[str, Any], ...]:
    """The top-level objects in one file, Lists left whole: JSON (one or more values) or YAML documents."""
    docs: list[Mapping[str, Any]] = []
    if fmt == "yaml":
        for number, value in enumerate(decode_yaml(text, source), start=1):
            for item in value if isinstance(value, list) else [value]:
                if item is None:
                    continue
                if not isinstance(item, Mapping):
                    raise _not_an_object(number, item, source, None)
                docs.append(item)
        return tuple(docs)
    for s in _json_stream(_text_stream(text, source), source, Counter(MAX_VALUES), items=False):
        if s.value is None or s.value == [] and s.index is None:
            continue
        if not isinstance(s.value, Mapping):
            raise _not_an_object(s.number, s.value, source, s.line)
        docs.append(s.value)
    return tuple(docs)


def expand_all(docs: Iterable[Mapping[str, Any]], source: str) -> Iterator[RawObject]:
    """The objects in already decoded documents (Lists expanded)."""
    for doc in docs:
        yield from expand(doc, source)

