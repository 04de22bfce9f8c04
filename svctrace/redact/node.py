"""node/ files redacted: rules keep their meaning, names and addresses in them change.

The chains a dump names are learnt from its rules as svctrace.parsers types them (svctrace.redact.chains);
the text is then rewritten where the parser's lexer says free text sits (svctrace.parsers.rule_text):
chain names word by word, comments by kube-proxy's ``ns/name:port`` shape, addresses wherever they are.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from svctrace.errors import InputError
from svctrace.model.snapshot import NodeFile
from svctrace.parsers import iptables_save
from svctrace.parsers.json_stream import deeper_than
from svctrace.parsers.limits import MAX_DEPTH
from svctrace.parsers.nft_json import parse_nft_json
from svctrace.parsers.rule_text import comment_spans, quote, quoted_spans, unquote
from svctrace.redact.addresses import MAC_RE, AddressMap, parse_ip
from svctrace.redact.chains import ChainMap
from svctrace.redact.names import NameTable

IPTABLES_FILES = (NodeFile.IPTABLES.value, NodeFile.IP6TABLES.value)
# Files that name chains after the API's objects: learnt from before the others are rewritten.
CHAIN_FILES = (*IPTABLES_FILES, NodeFile.NFT.value)


class NodeRedaction:
    """Rewrites node/ files with one name table, address map and chain map."""

    def __init__(self, names: NameTable, addresses: AddressMap, chains: ChainMap,
                 dns_name: Callable[[str], str]) -> None:
        self.n = names
        self.a = addresses
        self.chains = chains
        self.dns_name = dns_name

    def text(self, text: str) -> str:
        """Free text: every address in it, and every word that is a chain this redaction renamed."""
        text = self.a.in_text(text)
        if not self.chains.done:
            return text
        return " ".join(self._word(w) for w in text.split(" "))

    def _word(self, word: str) -> str:
        bare = word.rstrip("\n")
        colon = bare.startswith(":")  # a chain declaration, ":KUBE-SVC-... - [0:0]"
        name = bare[1:] if colon else bare
        new = self.chains.done.get(name)
        if new is None:
            return word
        return (":" if colon else "") + new + word[len(bare):]

    def comment(self, text: str) -> str:
        return self.a.in_text(self.n.comment(text))

    def file(self, name: str, text: str) -> str:
        """One node/ file redacted; ``name`` is its file name (iptables-save.txt, nft.json, ...)."""
        if name.endswith(".json"):
            value = _load(name, text)
            if name == NodeFile.IP_ADDR:
                redacted = self._ip_addr(value)
            elif name == NodeFile.META:
                redacted = self.meta(value) if isinstance(value, Mapping) else self._strings(value, None)
            else:
                if name == NodeFile.NFT:
                    with contextlib.suppress(InputError):  # then only the chain names themselves are read
                        self.chains.learn_nft(parse_nft_json(text, f"node/{name}"))
                redacted = self._strings(value, None)
            return json.dumps(redacted, indent=None if "\n" not in text.strip() else 2) + "\n"
        if name in IPTABLES_FILES:
            # A dump svctrace cannot read keeps its chain names (their readable parts are still rewritten).
            with contextlib.suppress(InputError):
                self.chains.learn_iptables(iptables_save.parse(text, f"node/{name}", family=6 if "6" in name else 4))
        spans = comment_spans if name in IPTABLES_FILES else quoted_spans
        return "".join(self._line(line, spans) for line in text.splitlines(keepends=True))

    def _line(self, line: str, spans: Callable[[str], list[tuple[int, int]]]) -> str:
        found = spans(line)
        if not found:
            return self.text(line)
        out: list[str] = []
        pos = 0
        for start, end in found:
            out.append(self.text(line[pos:start]))
            value, quoted = unquote(line[start:end])
            out.append(quote(self.comment(value), quoted))
            pos = end
        out.append(self.text(line[pos:]))
        return "".join(out)

    def meta(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """node/meta.json redacted: the node name, and any address or server URL in it."""
        out: dict[str, Any] = {}
        for key, value in meta.items():
            if key == "nodeName" and isinstance(value, str):
                out[key] = self.n.name(value, "Node") if value else value
            elif isinstance(value, str) and "://" in value:
                out[key] = self._url(value)
            elif key == "sysctls":
                out[key] = copy.deepcopy(value) if not deeper_than(value, MAX_DEPTH) else {}
            elif key == "context" and isinstance(value, str):
                out[key] = self.n.name(value, "ctx")
            else:
                out[key] = self._strings(value, None)
        return out

    def _url(self, url: str) -> str:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return self.a.in_text(url)
        host = parts.hostname or ""
        if not host:
            return url
        new_host = self.a.address(host) if parse_ip(host) is not None else self.dns_name(host)
        if ":" in new_host:
            new_host = f"[{new_host}]"
        netloc = new_host + (f":{port}" if port is not None else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def _ip_addr(self, value: Any) -> Any:
        if not isinstance(value, list):
            return self._strings(value, None)
        out = []
        for link in value:
            if not isinstance(link, dict):
                out.append(link)
                continue
            new = dict(link)
            for key in ("address", "broadcast", "permaddr", "perm_address"):
                if isinstance(new.get(key), str):
                    new[key] = self.a.mac(new[key]) if MAC_RE.match(new[key]) else self.a.in_text(new[key])
            new.pop("altnames", None)
            if isinstance(new.get("addr_info"), list):
                new["addr_info"] = [self._strings(a, None) for a in new["addr_info"]]
            out.append(new)
        return out

    def _strings(self, value: Any, key: str | None) -> Any:
        if isinstance(value, dict):
            if set(value) == {"addr", "len"} and isinstance(value["addr"], str) and isinstance(value["len"], int):
                # nft JSON's prefix: map it as a network, so the host bits stay zero.
                net = self.a.address(f"{value['addr']}/{value['len']}")
                return {"addr": net.split("/", 1)[0], "len": value["len"]}
            return {k: self._strings(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self._strings(v, key) for v in value]
        if isinstance(value, str):
            nft = self.chains.nft(value)
            if nft is not None:
                return nft
            if key == "comment":
                return self.comment(value)
            return self.text(value)
        return value


def _load(name: str, text: str) -> Any:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise InputError("not valid JSON; not redacted", "capture it again", path=f"node/{name}") from None
    if deeper_than(value, MAX_DEPTH):
        raise InputError(f"JSON nested more than {MAX_DEPTH} deep; not redacted", "capture it again",
                         path=f"node/{name}")
    return value
