"""Redact a snapshot consistently: names and addresses change, the dataplane's meaning does not.

Pure: documents and text in, documents and text out. One ``Redactor`` holds one table, so the same
original name or address becomes the same replacement in every API document and every node file,
and the redacted snapshot resolves exactly like the original (same frontends, verdicts, shares).
By what it rewrites:

* addresses (svctrace.redact.addresses): prefix-preserving, special and private ranges kept in place;
* names (svctrace.redact.names): readable tokens; well-known names and generic port names stay;
* kube-proxy's chain names (svctrace.redact.chains): recomputed from the redacted values they hash;
* API documents (svctrace.redact.api): cut to the fields svctrace reads, then rewritten field by field;
* node files (svctrace.redact.node): rules, comments, addresses, MACs, meta.json.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from svctrace.redact.addresses import AddressMap, parse_ip
from svctrace.redact.api import ApiRedaction, items
from svctrace.redact.chains import ChainMap
from svctrace.redact.names import KEPT_NAMES, NameTable
from svctrace.redact.node import CHAIN_FILES, NodeRedaction

__all__ = ["KEPT_NAMES", "Redactor", "redact_all"]


class Redactor:
    """One consistent redaction: the same original always maps to the same replacement."""

    def __init__(self, seed: bytes | None = None) -> None:
        key = seed if seed is not None else secrets.token_bytes(32)
        self._names = NameTable(key)
        self._addresses = AddressMap(key)
        self._chains = ChainMap(self._names, self._addresses)
        self._api = ApiRedaction(self._names, self._addresses, self.dns_name)
        self._node = NodeRedaction(self._names, self._addresses, self._chains, self.dns_name)

    def mapping(self) -> dict[str, str]:
        """Original -> replacement for every name and address redacted so far (keep it locally)."""
        return {**self._names.done, **self._addresses.done}

    def name(self, original: str, role: str = "name") -> str:
        """The token for a name; ``role`` picks the token's prefix the first time the name is seen."""
        return self._names.name(original, role)

    def port_name(self, original: str) -> str:
        return self._names.port(original)

    def dns_name(self, original: str) -> str:
        """A DNS name with each label redacted, except the cluster's own suffixes; an address as an address."""
        if parse_ip(original) is not None:
            return self._addresses.address(original)
        return self._names.dns_name(original)

    def address(self, text: str) -> str:
        """An address or CIDR, anonymised prefix-preservingly; special addresses unchanged."""
        return self._addresses.address(text)

    def mac(self, text: str) -> str:
        return self._addresses.mac(text)

    def uid(self, text: str) -> str:
        return self._names.uid(text)

    def text(self, text: str) -> str:
        """Free text: every address in it, and the kube-proxy chain names this Redactor renamed."""
        return self._node.text(text)

    def api_documents(self, docs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """API documents (stem -> object or List) redacted; kinds svctrace does not read are dropped."""
        self.learn_api(docs)
        out: dict[str, dict[str, Any]] = {}
        for stem, doc in docs.items():
            kept = [r for r in (self._api.object(o) for o in items(doc)) if r is not None]
            if "items" in doc or len(kept) != 1:
                out[stem] = {"apiVersion": "v1", "kind": "List", "items": kept}
            else:
                out[stem] = kept[0]
        return out

    def learn_api(self, docs: Mapping[str, Mapping[str, Any]]) -> None:
        """Learn the names and the chain names the API explains, without redacting (for node files first)."""
        objects = [o for doc in docs.values() for o in items(doc)]
        self._api.assign_names(objects)
        self._chains.learn_api(objects)

    def node_text(self, name: str, text: str) -> str:
        """One node/ file redacted; ``name`` is its file name (iptables-save.txt, nft.json, ...)."""
        return self._node.file(name, text)

    def meta(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """node/meta.json redacted: the node name, and any address or server URL in it."""
        return self._node.meta(meta)


def redact_all(redactor: Redactor, api_documents: Mapping[str, Mapping[str, Any]],
               node_files: Mapping[str, str], meta: Mapping[str, Any]) -> tuple[
                   dict[str, dict[str, Any]], dict[str, str], dict[str, Any]]:
    """Redact a whole snapshot's parts with one table (API first, so chain names can be recomputed)."""
    api = redactor.api_documents(api_documents)
    # Files that name chains after the API's objects go first; the rest only need the table.
    order = sorted(node_files, key=lambda n: (n not in CHAIN_FILES, n))
    node = {name: redactor.node_text(name, node_files[name]) for name in order}
    return api, {name: node[name] for name in node_files}, redactor.meta(meta)
