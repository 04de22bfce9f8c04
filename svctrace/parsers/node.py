"""Facts about the node from small files: ``ip -j addr`` output and a snapshot's ``meta.json`` (pure)."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from svctrace.errors import InputError
from svctrace.model.snapshot import HostAddress
from svctrace.parsers.json_stream import deeper_than
from svctrace.parsers.limits import MAX_DEPTH
from svctrace.record import record

PROXY_MODES = ("iptables", "ipvs", "nftables")
_MODE_ALIASES = {"nft": "nftables"}
IPTABLES_BACKENDS = ("legacy", "nf_tables", "both")  # as collectors/node.py decides it
_META_KEYS = ("nodeName", "proxyMode", "proxyModeHow", "sysctls", "iptablesBackend", "iptablesBackendReason",
              # written by `svctrace capture` for the record; not needed to analyse the snapshot
              "capturedAt", "svctraceVersion", "server", "context")
_FAMILIES = {"inet": 4, "inet6": 6}


@record
class NodeMeta:
    """What a ``meta.json`` says: every field optional."""

    name: str | None = None
    proxy_mode: str | None = None  # iptables | ipvs | nftables
    sysctls: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    iptables_backend: str | None = None  # legacy | nf_tables | both
    iptables_backend_reason: str = ""
    proxy_mode_how: str = ""  # how the capture decided the mode


def _load_json(text: str, source: str, what: str) -> Any:
    if not text.strip():
        raise InputError(f"the file is empty; expected {what}",
                         "fill it again on the node, or delete it to mark it as not collected", path=source)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} (column {exc.colno})",
                         f"the file should hold {what}; fill it again on the node", path=source,
                         line=exc.lineno) from None
    except ValueError as exc:  # a number of more than 4,300 digits
        raise InputError(f"not read: {exc}", f"the file should hold {what}; fill it again on the node",
                         path=source) from None
    except RecursionError:
        value = None
    if value is None and text.strip() != "null" or deeper_than(value, MAX_DEPTH):
        raise InputError(f"not read: JSON nested more than {MAX_DEPTH} deep",
                         f"the file should hold {what}; fill it again on the node", path=source)
    return value


def parse_ip_addr_json(text: str, source: str) -> tuple[HostAddress, ...]:
    """The node's own addresses from ``ip -j addr`` output (links without addresses contribute none)."""
    what = "the output of `ip -j addr`"
    links = _load_json(text, source, what)
    if not isinstance(links, list):
        raise InputError(f"expected a JSON list (one entry per interface), not a {type(links).__name__}",
                         f"the file should hold {what}", path=source)
    out: list[HostAddress] = []
    for i, link in enumerate(links):
        if not isinstance(link, Mapping):
            raise InputError(f"entry {i} is not an interface object", f"the file should hold {what}",
                             path=source)
        ifname = link.get("ifname", "")
        infos = link.get("addr_info") or []
        if not isinstance(ifname, str) or not isinstance(infos, list):
            raise InputError(f"entry {i}: ifname must be a string and addr_info a list",
                             f"the file should hold {what}", path=source)
        for info in infos:
            # `ip -j -4 addr` leaves `{}` behind for filtered-out addresses; they carry nothing.
            if not isinstance(info, Mapping) or "local" not in info:
                continue
            family = _FAMILIES.get(str(info.get("family")))
            if family is None:
                continue
            local, prefixlen, scope = info.get("local"), info.get("prefixlen"), info.get("scope", "global")
            if (not isinstance(local, str) or not isinstance(prefixlen, int) or isinstance(prefixlen, bool)
                    or not isinstance(scope, str)):
                raise InputError(f"interface {ifname or i}: an address with malformed local/prefixlen/scope",
                                 f"the file should hold {what}", path=source)
            out.append(HostAddress(ifname=ifname, address=local, prefixlen=prefixlen, family=family,
                                   scope=scope))
    return tuple(out)


def parse_links(text: str, source: str) -> tuple[dict[str, str] | None, tuple[str, ...]]:
    """From ``ip -j addr`` output: each interface's bridge ("master", when the output has masters at all;
    None when no entry says) and every interface's name. Call after ``parse_ip_addr_json`` checked it."""
    links = _load_json(text, source, "the output of `ip -j addr`")
    bridges: dict[str, str] = {}
    names: list[str] = []
    has_master_info = False
    for link in links if isinstance(links, list) else ():
        if not isinstance(link, Mapping) or not isinstance(link.get("ifname"), str):
            continue
        names.append(link["ifname"])
        master = link.get("master")
        if "master" in link or "link_type" in link:
            has_master_info = True
        if isinstance(master, str):
            bridges[link["ifname"]] = master
    return (bridges if has_master_info else None), tuple(names)


def normalise_proxy_mode(value: str, source: str) -> str | None:
    """``iptables``, ``ipvs`` or ``nftables`` from how people write it; empty means unknown."""
    mode = value.strip().lower()
    if not mode:
        return None
    mode = _MODE_ALIASES.get(mode, mode)
    if mode not in PROXY_MODES:
        raise InputError(f"proxyMode {value!r} is not a kube-proxy mode svctrace reads",
                         "write one of iptables, ipvs, nftables, or leave proxyMode out", path=source)
    return mode


def parse_meta_json(text: str, source: str) -> NodeMeta:
    """A snapshot's ``node/meta.json``: ``{"nodeName": ..., "proxyMode": ..., "sysctls": {...}}``."""
    what = 'a JSON object like {"nodeName": "node-1", "proxyMode": "iptables"}'
    doc = _load_json(text, source, what)
    if not isinstance(doc, Mapping):
        raise InputError(f"expected a JSON object, not a {type(doc).__name__}", f"write {what}", path=source)
    warnings = []
    for key in doc:
        if key not in _META_KEYS:
            close = difflib.get_close_matches(str(key), _META_KEYS, n=1, cutoff=0.6)
            also = f" (did you mean {close[0]!r}?)" if close else ""
            warnings.append(f"{source}: unknown key {key!r} ignored{also}")
    name = doc.get("nodeName")
    if name is not None and not isinstance(name, str):
        raise InputError(f"nodeName must be a string, not {json.dumps(name)}", f"write {what}", path=source)
    mode = doc.get("proxyMode")
    if mode is not None and not isinstance(mode, str):
        raise InputError(f"proxyMode must be a string, not {json.dumps(mode)}", f"write {what}", path=source)
    raw_sysctls = doc.get("sysctls") or {}
    if not isinstance(raw_sysctls, Mapping):
        raise InputError("sysctls must be an object of name: value", 'write e.g. "sysctls": '
                         '{"net.ipv4.ip_forward": "1"}', path=source)
    sysctls: dict[str, str] = {}
    for key, value in raw_sysctls.items():
        if isinstance(value, (Mapping, list)) or value is None:
            raise InputError(f"sysctls.{key} must be a string or a number", 'write e.g. "sysctls": '
                             '{"net.ipv4.ip_forward": "1"}', path=source)
        # `sysctl -n` prints text; a number written by hand means the same.
        sysctls[str(key)] = ("1" if value else "0") if isinstance(value, bool) else str(value).strip()
    backend = doc.get("iptablesBackend")
    if backend is not None and backend not in IPTABLES_BACKENDS:
        warnings.append(f"{source}: iptablesBackend {backend!r} is not one of {', '.join(IPTABLES_BACKENDS)}; "
                        "treated as unknown")
        backend = None
    reason = doc.get("iptablesBackendReason")
    proxy_mode = None
    try:
        proxy_mode = normalise_proxy_mode(mode, source) if mode else None
    except InputError as exc:
        # A mode this version does not know (a newer kube-proxy, Windows' kernelspace) makes the mode
        # unknown; it is no reason to refuse the rest of the snapshot.
        warnings.append(f"{exc.message}; treated as unknown ({exc.hint})")
    how = doc.get("proxyModeHow")
    return NodeMeta(name=name or None, proxy_mode=proxy_mode, sysctls=sysctls, warnings=tuple(warnings),
                    iptables_backend=backend, iptables_backend_reason=reason if isinstance(reason, str) else "",
                    proxy_mode_how=how if isinstance(how, str) and proxy_mode else "")
