"""Serve a generated cluster's api/ folder with the test API server, from a background process, for live runs.

    python bench/fake_api.py --api CLUSTER/api --kubeconfig /tmp/kubeconfig

prints ``ready <url>`` once the kubeconfig is written and serves until its stdin closes (or SIGTERM).

The server is tests/harness/apiserver.py's FakeApiServer (the same REST protocol, paging, selectors and
Status errors the integration tests use) with two changes for scale, neither of which the client can see
(the bytes sent are the same; a test compares them):

- it keeps each resource's objects indexed and ready to serve instead of sorting and deep-copying the
  whole store on every request, so that a LIST of 100,000 pods in pages of 500 costs the server O(page),
  not O(store) per page;
- each object's JSON is written once (for the LISTs of all namespaces, before it says it is ready) and a
  page is those texts joined: encoding every page's 1 MB again took this Python server 5.5 CPU-seconds per
  10k-Service listing, on the two cores that the client measured beside it has. A real API server runs
  elsewhere, in Go, and serves LISTs from its watch cache; what the bench times should be the client's work.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import json
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.harness.apiserver import (  # noqa: E402
    RESOURCES,
    FakeApiServer,
    Object,
    Resource,
    _field_value,
    parse_field_selector,
    parse_label_selector,
)
from tests.harness.wire import Response  # noqa: E402


class IndexedApiServer(FakeApiServer):
    """FakeApiServer whose LISTs read a per-resource index (sorted keys, items without kind/apiVersion)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._index: dict[tuple[str, str | None], tuple[list[str], list[Object]]] = {}
        # id(an item served) -> (the item, its JSON as json.dumps writes it in a page); the item is kept with its
        # text, so that no other object can take its id while the text is kept
        self._texts: dict[int, tuple[Object, str]] = {}
        self._index_lock = threading.Lock()
        self._remaining = threading.local()
        super().__init__(*args, **kwargs)

    def add(self, obj: Mapping[str, Any], *, _bump: bool = True) -> Object:
        self._index, self._texts = {}, {}
        return super().add(obj, _bump=_bump)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._index, self._texts = {}, {}
        super().delete(kind, namespace, name)

    def encode_all(self) -> None:
        """Write every object's JSON now, for the LISTs of all namespaces (their first client does not pay)."""
        for res in RESOURCES:
            _, items = self._listing(res, None)
            for item in items:
                self._text(item)

    def _listing(self, res: Resource, namespace: str | None) -> tuple[list[str], list[Object]]:
        """(sorted paging keys, items) of one resource, in one namespace or all of them; built once."""
        key = (res.plural, namespace)
        with self._index_lock:
            found = self._index.get(key)
            if found is None:
                with self._lock:
                    objs = sorted((k, o) for k, o in self._store.items() if k[0] == res.plural
                                  and (namespace is None or k[1] == namespace))
                keys = [f"{ns}/{name}" if res.namespaced else name for (_, ns, name), _ in objs]
                items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for _, o in objs]
                found = self._index[key] = (keys, items)
        return found

    def _select(self, res: Resource, namespace: str | None, query: Mapping[str, str]) -> list[Object]:
        keys, items = self._listing(res, namespace)
        start = 0
        token, limit = query.get("continue", ""), int(query.get("limit") or 0)
        if token:
            try:
                start = bisect.bisect_left(keys, str(json.loads(base64.urlsafe_b64decode(
                    token + "=" * (-len(token) % 4)))["start"]))
            except (ValueError, KeyError, TypeError):
                start = 0  # the base class answers a bad token with the real server's 400
        try:
            labels = parse_label_selector(query.get("labelSelector", ""))
            fields = parse_field_selector(query.get("fieldSelector", ""))
        except ValueError:
            return super()._select(res, namespace, query)  # let the base class word the 400
        allowed = {"metadata.name", "metadata.namespace", *res.fields}
        if any(f not in allowed for f, _, _ in fields):
            return super()._select(res, namespace, query)
        self._remaining.value = max(0, len(items) - start - limit)
        out: list[Object] = []
        for item in items[start:]:
            if labels and not all(r.matches(item["metadata"].get("labels") or {}) for r in labels):
                continue
            if fields and not all((_field_value(item, f) == v) == (op == "=") for f, op, v in fields):
                continue
            out.append(item)
            if limit and len(out) > limit:  # one more than a page tells _page that another page follows
                break
        return out

    def _list(self, res: Resource, namespace: str | None, query: Mapping[str, str]) -> Response:
        """The base class's answer, byte for byte, from each item's JSON written once: json.dumps writes a list
        as its items' texts joined by ", ", and "items" is the page's last member."""
        doc = self._page(res, self._select(res, namespace, query), query)
        head = json.dumps({**doc, "items": []})
        assert head.endswith('"items": []}')
        body = head[:-3] + "[" + ", ".join(self._text(item) for item in doc["items"]) + "]}"
        return Response(200, body.encode(), doc=doc)

    def _text(self, item: Object) -> str:
        kept = self._texts.get(id(item))
        if kept is None or kept[0] is not item:
            kept = self._texts[id(item)] = (item, json.dumps(item))
        return kept[1]

    def _page(self, res: Resource, items: list[Object], query: Mapping[str, str]) -> Object:
        doc = super()._page(res, items, query)
        if "remainingItemCount" in doc["metadata"]:  # _select handed over one page (+1), not the whole rest
            doc["metadata"]["remainingItemCount"] = self._remaining.value
        return doc


def load_objects(api: Path) -> list[Object]:
    """Every object of every List in api/*.json."""
    objects: list[Object] = []
    for path in sorted(api.glob("*.json")):
        doc = json.loads(path.read_text())
        objects += doc["items"] if doc.get("kind") == "List" else [doc]
    return objects


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--api", type=Path, required=True, help="a folder of kubectl -o json files")
    ap.add_argument("--kubeconfig", type=Path, required=True, help="where to write the kubeconfig")
    args = ap.parse_args()
    server = IndexedApiServer(load_objects(args.api))
    server.encode_all()
    server.start()
    server.write_kubeconfig(args.kubeconfig, namespace="default")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    print(f"ready {server.url}", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
