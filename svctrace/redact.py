"""Redact a snapshot consistently: names and addresses change, the dataplane's meaning does not.

Pure: documents and text in, documents and text out. One ``Redactor`` holds one table, so the same
original name or address becomes the same replacement in every API document and every node file,
and the redacted snapshot resolves exactly like the original (same frontends, verdicts, shares).

* Addresses are anonymised prefix-preservingly (the Crypto-PAn principle): output bit i is input
  bit i XOR a keyed PRF (HMAC-SHA256) of the input's first i bits. Two addresses that share a
  k-bit prefix still share one, so CIDR containment survives (pod IPs stay inside the pod CIDR).
  Special addresses (0.0.0.0/8, 127/8, 169.254/16, multicast, 240/4 and the broadcast address,
  ::, ::1, fe80::/10, ff00::/8) are kept as they are, and the private ranges (10/8, 172.16/12,
  192.168/16, 100.64/10, fc00::/7) keep their prefix, so a private address stays private.
* Names become readable tokens (``ns-1``, ``svc-2``, ``pod-3``, ``node-1``); well-known names
  (``default``, ``kube-system``, ``kubernetes``, ``kube-dns``, ``coredns``...) and port names stay.
* kube-proxy chain names embed hashes of names and addresses, so they are recomputed from the
  redacted values. A chain nothing explains (no API object, no comment that reproduces its hash)
  keeps its hash; only the names in its comments change.
* Metadata svctrace does not need and that leaks (annotations, managedFields, images, env,
  commands, volumes, node images and machine IDs) is dropped; kinds svctrace does not read are
  dropped too, and Secrets always.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from svctrace.kubeproxy import naming

# Names that are the same in every cluster, so they reveal nothing and keep the output readable.
KEPT_NAMES = frozenset({
    "default", "kube-system", "kube-public", "kube-node-lease", "kubernetes", "kube-dns", "coredns",
    "kube-proxy",
})
# DNS labels kept inside names such as an ExternalName: the cluster's own suffixes.
_KEPT_DNS_LABELS = frozenset({"svc", "cluster", "local", "pod"})
# Label values that carry no identity and that are common enough to keep for readability.
_KEPT_VALUES = frozenset({"", "true", "false"})

# Kinds svctrace reads (docs/snapshot.md); everything else is dropped from a redacted snapshot.
_READ_KINDS = frozenset({"Service", "EndpointSlice", "Endpoints", "Pod", "Node", "ConfigMap", "NetworkPolicy"})
_KEPT_CONFIG_MAPS = frozenset({("kube-system", "coredns"), ("kube-system", "kube-proxy")})

_ROLE_PREFIX = {"Namespace": "ns", "Service": "svc", "Pod": "pod", "Node": "node", "EndpointSlice": "eps",
                "Endpoints": "svc", "NetworkPolicy": "netpol", "ConfigMap": "cm"}

_IDENTITY_NETS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "fe80::/10", "ff00::/8",
))
_PRESERVED_NETS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
))

_IPV4 = r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2}(?![\d.]))?(?![\w.])"
_IPV6 = r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:/\d{1,3}(?!\d))?(?![\w:.])"
_IPT_CHAIN = r"\bKUBE-(?:SVC|SVL|EXT|FW|SEP)-[A-Z2-7]{16}\b"
_TEXT_RE = re.compile(f"(?P<chain>{_IPT_CHAIN})|(?P<v6>{_IPV6})|(?P<v4>{_IPV4})")
_COMMENT_RE = re.compile(r'(--comment )("(?:[^"\\]|\\.)*"|\S+)')
_QUOTED_RE = re.compile(r'"(?:[^"\\]|\\.)*"')
_SPN_RE = re.compile(r"(?<![\w./:-])([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)/([a-z0-9](?:[-a-z0-9.]*[a-z0-9])?)(:[\w.-]+)?")
_PROTO_RE = re.compile(r"(?:^|\s)-p (\w+)")
_DEST_RE = re.compile(r"--to-destination (\[[0-9A-Fa-f:.]+\]|[\d.]+):(\d+)")
_IPT_CHAIN_RE = re.compile(r"\bKUBE-(SVC|SVL|EXT|FW|SEP)-([A-Z2-7]{16})\b")
_NFT_CHAIN_RE = re.compile(
    r"^(?P<prefix>[a-z]+(?:-[a-z]+)*)-(?P<hash>[A-Z2-7]{8})-(?P<ns>[^/]+)/(?P<name>[^/]+)/(?P<proto>[a-z]+)/"
    r"(?P<port>[^/]*?)(?:__(?P<ip>[^/]+)/(?P<epport>\d+))?$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}$")
_PROTOCOLS = ("tcp", "udp", "sctp")

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Redactor:
    """One consistent redaction: the same original always maps to the same replacement."""

    def __init__(self, seed: bytes | None = None) -> None:
        self._key = seed if seed is not None else secrets.token_bytes(32)
        self._names: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        self._addresses: dict[str, str] = {}
        self._bit_cache: dict[tuple[int, int, int], int] = {}
        self._ipt_chains: dict[str, str] = {}
        self._forced = _forced_prefixes()

    # -----------------------------------------------------------------------------------------
    # the table

    def mapping(self) -> dict[str, str]:
        """Original -> replacement for every name and address redacted so far (keep it locally)."""
        return {**self._names, **self._addresses}

    def name(self, original: str, role: str = "name") -> str:
        """The token for a name; ``role`` picks the token's prefix the first time the name is seen."""
        if original in KEPT_NAMES or original in _KEPT_VALUES:
            return original
        token = self._names.get(original)
        if token is None:
            prefix = _ROLE_PREFIX.get(role, role)
            self._counters[prefix] = self._counters.get(prefix, 0) + 1
            token = f"{prefix}-{self._counters[prefix]}"
            self._names[original] = token
        return token

    def dns_name(self, original: str) -> str:
        """A DNS name with each label redacted, except the cluster's own suffixes (svc.cluster.local)."""
        if not original:
            return original
        if _parse_ip(original) is not None:
            return self.address(original)
        return ".".join(label if label in _KEPT_DNS_LABELS else self.name(label) for label in original.split("."))

    # -----------------------------------------------------------------------------------------
    # addresses

    def address(self, text: str) -> str:
        """An address or CIDR, anonymised prefix-preservingly; special addresses unchanged."""
        done = self._addresses.get(text)
        if done is not None:
            return done
        out = self._address(text)
        if out != text:
            self._addresses[text] = out
        return out

    def _address(self, text: str) -> str:
        if "/" in text:
            addr_text, _, length_text = text.partition("/")
            addr = _parse_ip(addr_text)
            if addr is None or not length_text.isdigit() or int(length_text) > addr.max_prefixlen:
                return text
            length = int(length_text)
            mapped = self._anonymise(addr)
            bits = addr.max_prefixlen
            masked = int(mapped) & (((1 << length) - 1) << (bits - length)) if length else 0
            # Keep a host address (10.1.2.3/24, as ip addr prints) a host address; mask only networks.
            value = masked if int(addr) & ((1 << (bits - length)) - 1) == 0 else int(mapped)
            return f"{ipaddress.ip_address(value) if addr.version == 4 else ipaddress.IPv6Address(value)}/{length}"
        addr = _parse_ip(text)
        if addr is None:
            return text
        return str(self._anonymise(addr))

    def _anonymise(self, addr: _Address) -> _Address:
        if any(addr in net for net in _IDENTITY_NETS):
            return addr
        bits = addr.max_prefixlen
        value = int(addr)
        out = 0
        for i in range(bits):
            prefix = value >> (bits - i) if i else 0
            bit = (value >> (bits - 1 - i)) & 1
            out = (out << 1) | (bit ^ self._flip(addr.version, i, prefix))
        return ipaddress.IPv4Address(out) if addr.version == 4 else ipaddress.IPv6Address(out)

    def _flip(self, version: int, length: int, prefix: int) -> int:
        if (version, length, prefix) in self._forced:
            return 0
        key = (version, length, prefix)
        cached = self._bit_cache.get(key)
        if cached is None:
            msg = f"{version}:{length}:{prefix:x}".encode()
            cached = hmac.new(self._key, msg, hashlib.sha256).digest()[0] & 1
            self._bit_cache[key] = cached
        return cached

    def mac(self, text: str) -> str:
        """A link-layer address replaced by a stable locally administered one (all-0 and all-1 kept)."""
        if text.lower() in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
            return text
        digest = bytearray(hmac.new(self._key, b"mac:" + text.lower().encode(), hashlib.sha256).digest()[:6])
        digest[0] = (digest[0] & 0xFC) | 0x02
        return ":".join(f"{b:02x}" for b in digest)

    def uid(self, text: str) -> str:
        """A stable stand-in for an object uid (ownerReferences still point at the same owner)."""
        if not text:
            return text
        return str(uuid.UUID(bytes=hmac.new(self._key, b"uid:" + text.encode(), hashlib.sha256).digest()[:16]))

    def text(self, text: str) -> str:
        """Free text: every address in it, and the kube-proxy chain names this Redactor knows."""
        def one(m: re.Match[str]) -> str:
            token = m.group(0)
            if m.group("chain"):
                return self._ipt_chains.get(token, token)
            if m.group("v6"):
                return self.address(token) if _parse_ip(token.split("/", 1)[0]) is not None else token
            before = text[max(0, m.start() - 7):m.start()]
            # A dotted mask (--mask 255.255.255.0, or 10.0.0.0/255.0.0.0) is not an address.
            if before.endswith(("--mask ", "mask ")) or (m.start() >= 2 and text[m.start() - 1] == "/"
                                                         and text[m.start() - 2].isdigit()):
                return token
            return self.address(token)

        return _TEXT_RE.sub(one, text)

    def _comment(self, comment: str) -> str:
        return _SPN_RE.sub(lambda m: (f"{self.name(m.group(1), 'Namespace')}/{self.name(m.group(2), 'Service')}"
                                      f"{m.group(3) or ''}"), comment)

    # -----------------------------------------------------------------------------------------
    # kube-proxy chain names

    def _learn_service(self, ns: str, name: str, port_name: str, protocol: str) -> None:
        old = naming.ipt_suffix(naming.service_port_name(ns, name, port_name), protocol)
        new = naming.ipt_suffix(naming.service_port_name(self.name(ns, "Namespace"), self.name(name, "Service"),
                                                         port_name), protocol)
        for prefix in naming.IPT_SERVICE_PREFIXES:
            self._ipt_chains[prefix + old] = prefix + new

    def _learn_endpoint(self, ns: str, name: str, port_name: str, protocol: str, ip: str, port: int) -> None:
        old = naming.ipt_endpoint_chain(naming.service_port_name(ns, name, port_name), protocol, ip, port)
        new_spn = naming.service_port_name(self.name(ns, "Namespace"), self.name(name, "Service"), port_name)
        self._ipt_chains[old] = naming.ipt_endpoint_chain(new_spn, protocol, self.address(ip), port)

    def _learn_from_api(self, objects: Iterable[Mapping[str, Any]]) -> None:
        for obj in objects:
            kind = obj.get("kind")
            meta = obj.get("metadata") or {}
            ns = str(meta.get("namespace") or "default")
            if kind == "Service":
                for p in (obj.get("spec") or {}).get("ports") or []:
                    self._learn_service(ns, str(meta.get("name", "")), str(p.get("name") or ""),
                                        str(p.get("protocol") or "TCP"))
            elif kind == "EndpointSlice":
                svc = (meta.get("labels") or {}).get("kubernetes.io/service-name")
                if not svc:
                    continue
                for p in obj.get("ports") or []:
                    if not isinstance(p.get("port"), int):
                        continue
                    for ep in obj.get("endpoints") or []:
                        for ip in ep.get("addresses") or []:
                            self._learn_endpoint(ns, str(svc), str(p.get("name") or ""),
                                                 str(p.get("protocol") or "TCP"), str(ip), p["port"])
            elif kind == "Endpoints":
                for subset in obj.get("subsets") or []:
                    addrs = [*(subset.get("addresses") or []), *(subset.get("notReadyAddresses") or [])]
                    for p in subset.get("ports") or []:
                        if not isinstance(p.get("port"), int):
                            continue
                        for a in addrs:
                            self._learn_endpoint(ns, str(meta.get("name", "")), str(p.get("name") or ""),
                                                 str(p.get("protocol") or "TCP"), str(a.get("ip", "")), p["port"])

    def _learn_from_iptables(self, text: str) -> None:
        """Chains whose comment and rule reproduce their hash: recomputable even without an API object."""
        for line in text.splitlines():
            if not line.startswith("-A "):
                continue
            comment = _COMMENT_RE.search(line)
            spn = _SPN_RE.search(comment.group(2).strip('"')) if comment else None
            if spn is None:
                continue
            ns, name, port_name = spn.group(1), spn.group(2), (spn.group(3) or "")[1:]
            proto = _PROTO_RE.search(line)
            protocols = (proto.group(1).lower(),) if proto else _PROTOCOLS
            dest = _DEST_RE.search(line)
            for m in _IPT_CHAIN_RE.finditer(line):
                chain = m.group(0)
                if chain in self._ipt_chains:
                    continue
                spn_text = naming.service_port_name(ns, name, port_name)
                for protocol in protocols:
                    if m.group(1) != "SEP" and naming.ipt_suffix(spn_text, protocol) == m.group(2):
                        self._learn_service(ns, name, port_name, protocol)
                        break
                    if m.group(1) == "SEP" and dest is not None:
                        ip, port = dest.group(1).strip("[]"), int(dest.group(2))
                        if naming.ipt_endpoint_chain(spn_text, protocol, ip, port) == chain:
                            self._learn_endpoint(ns, name, port_name, protocol, ip, port)
                            break

    def _nft_chain(self, text: str) -> str | None:
        m = _NFT_CHAIN_RE.match(text)
        if m is None or m.group("proto") not in _PROTOCOLS:
            return None
        prefix, ns, name, proto, port = m.group("prefix", "ns", "name", "proto", "port")
        new_ns, new_name = self.name(ns, "Namespace"), self.name(name, "Service")
        if m.group("ip") is None:
            if naming.nft_service_chain(ns, name, proto, port, prefix) == text:
                return naming.nft_service_chain(new_ns, new_name, proto, port, prefix)
            return f"{prefix}-{m.group('hash')}-{naming.nft_base(new_ns, new_name, proto, port)}"
        ip, ep_port = m.group("ip"), int(m.group("epport"))
        if naming.nft_endpoint_chain(ns, name, proto, port, ip, ep_port, prefix) == text:
            return naming.nft_endpoint_chain(new_ns, new_name, proto, port, self.address(ip), ep_port, prefix)
        # Its hash is not explained: keep it (it names the chain), replace what is readable.
        return (f"{prefix}-{m.group('hash')}-{naming.nft_base(new_ns, new_name, proto, port)}"
                f"__{self.address(ip)}/{ep_port}")

    # -----------------------------------------------------------------------------------------
    # the snapshot's parts

    def api_documents(self, docs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """API documents (stem -> object or List) redacted; kinds svctrace does not read are dropped."""
        objects = [o for doc in docs.values() for o in _items(doc)]
        self._assign_names(objects)
        self._learn_from_api(objects)
        out: dict[str, dict[str, Any]] = {}
        for stem, doc in docs.items():
            kept = [r for r in (self._object(o) for o in _items(doc)) if r is not None]
            if "items" in doc or len(kept) != 1:
                out[stem] = {"apiVersion": "v1", "kind": "List", "items": kept}
            else:
                out[stem] = kept[0]
        return out

    def learn_api(self, docs: Mapping[str, Mapping[str, Any]]) -> None:
        """Learn the chain names the API explains, without redacting (for node files redacted first)."""
        objects = [o for doc in docs.values() for o in _items(doc)]
        self._assign_names(objects)
        self._learn_from_api(objects)

    def node_text(self, name: str, text: str) -> str:
        """One node/ file redacted; ``name`` is its file name (iptables-save.txt, nft.json, ...)."""
        if name.endswith(".json"):
            value = json.loads(text)
            if name == "ip-addr.json":
                redacted = self._ip_addr(value)
            elif name == "meta.json":
                redacted = self.meta(value)
            else:
                redacted = self._json_strings(value, None)
            return json.dumps(redacted, indent=None if "\n" not in text.strip() else 2) + "\n"
        if name in ("iptables-save.txt", "ip6tables-save.txt"):
            self._learn_from_iptables(text)
        lines = []
        for line in text.splitlines(keepends=True):
            if name in ("iptables-save.txt", "ip6tables-save.txt"):
                line = _COMMENT_RE.sub(lambda m: m.group(1) + self._comment(m.group(2)), line)
            else:
                line = _QUOTED_RE.sub(lambda m: self._comment(m.group(0)), line)
            lines.append(self.text(line))
        return "".join(lines)

    def meta(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """node/meta.json redacted: the node name, and any address or server URL in it."""
        out: dict[str, Any] = {}
        for key, value in meta.items():
            if key == "nodeName" and isinstance(value, str):
                out[key] = self.name(value, "Node") if value else value
            elif isinstance(value, str) and "://" in value:
                out[key] = self._url(value)
            elif key == "sysctls":
                out[key] = copy.deepcopy(value)
            else:
                out[key] = self._json_strings(value, None)
        return out

    def _url(self, url: str) -> str:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not host:
            return url
        new_host = self.address(host) if _parse_ip(host) is not None else self.dns_name(host)
        if ":" in new_host:
            new_host = f"[{new_host}]"
        netloc = new_host + (f":{parts.port}" if parts.port is not None else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def _ip_addr(self, value: Any) -> Any:
        if not isinstance(value, list):
            return self._json_strings(value, None)
        out = []
        for link in value:
            if not isinstance(link, dict):
                out.append(link)
                continue
            new = dict(link)
            for key in ("address", "broadcast", "permaddr", "perm_address"):
                if isinstance(new.get(key), str):
                    new[key] = self.mac(new[key]) if _MAC_RE.match(new[key]) else self.text(new[key])
            new.pop("altnames", None)
            if isinstance(new.get("addr_info"), list):
                new["addr_info"] = [self._json_strings(a, None) for a in new["addr_info"]]
            out.append(new)
        return out

    def _json_strings(self, value: Any, key: str | None) -> Any:
        if isinstance(value, dict):
            if set(value) == {"addr", "len"} and isinstance(value["addr"], str) and isinstance(value["len"], int):
                # nft JSON's prefix: map it as a network, so the host bits stay zero.
                net = self.address(f"{value['addr']}/{value['len']}")
                return {"addr": net.split("/", 1)[0], "len": value["len"]}
            return {k: self._json_strings(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self._json_strings(v, key) for v in value]
        if isinstance(value, str):
            nft = self._nft_chain(value)
            if nft is not None:
                return nft
            if key == "comment":
                return self.text(self._comment(value))
            return self.text(value)
        return value

    # -----------------------------------------------------------------------------------------
    # API objects

    def _assign_names(self, objects: list[Mapping[str, Any]]) -> None:
        # Readable prefixes: namespaces first, then nodes, Services and Pods, so a name shared by a
        # namespace and a label value reads as a namespace.
        for kind in ("Namespace", "Node", "Service", "Pod", "EndpointSlice"):
            for obj in objects:
                meta = obj.get("metadata") or {}
                if kind == "Namespace" and meta.get("namespace"):
                    self.name(str(meta["namespace"]), "Namespace")
                elif obj.get("kind") == kind and meta.get("name"):
                    self.name(str(meta["name"]), kind)

    def _object(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        kind = obj.get("kind")
        meta = obj.get("metadata") or {}
        if kind not in _READ_KINDS:
            return None
        if kind == "ConfigMap" and (meta.get("namespace"), meta.get("name")) not in _KEPT_CONFIG_MAPS:
            return None
        o: dict[str, Any] = copy.deepcopy(dict(obj))
        o["metadata"] = self._metadata(o.get("metadata") or {}, str(kind))
        if kind == "Service":
            self._service(o)
        elif kind == "Pod":
            self._pod(o)
        elif kind == "Node":
            self._node(o)
        elif kind == "EndpointSlice":
            for ep in o.get("endpoints") or []:
                self._endpoint_fields(ep)
                for key in ("topology", "deprecatedTopology"):
                    if isinstance(ep.get(key), dict):
                        ep[key] = self._labels(ep[key])
        elif kind == "Endpoints":
            for subset in o.get("subsets") or []:
                for a in [*(subset.get("addresses") or []), *(subset.get("notReadyAddresses") or [])]:
                    self._endpoint_fields(a)
        elif kind == "ConfigMap":
            o["data"] = {k: self.text(v) if isinstance(v, str) else v for k, v in (o.get("data") or {}).items()}
            o.pop("binaryData", None)
        elif kind == "NetworkPolicy":
            o["spec"] = self._selectors(o.get("spec") or {})
        redacted: dict[str, Any] = self._addresses_in(o)
        return redacted

    def _metadata(self, meta: dict[str, Any], kind: str) -> dict[str, Any]:
        for key in ("annotations", "managedFields", "generateName", "selfLink", "finalizers"):
            meta.pop(key, None)
        if meta.get("name") and kind != "ConfigMap":
            meta["name"] = self.name(str(meta["name"]), kind)
        if meta.get("namespace"):
            meta["namespace"] = self.name(str(meta["namespace"]), "Namespace")
        if meta.get("uid"):
            meta["uid"] = self.uid(str(meta["uid"]))
        if isinstance(meta.get("labels"), dict):
            meta["labels"] = self._labels(meta["labels"])
        for ref in meta.get("ownerReferences") or []:
            if ref.get("name"):
                ref["name"] = self.name(str(ref["name"]), "owner")
            if ref.get("uid"):
                ref["uid"] = self.uid(str(ref["uid"]))
        return meta

    def _labels(self, labels: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self.name(v, "val") if isinstance(v, str) else v for k, v in labels.items()}

    def _selectors(self, value: Any) -> Any:
        """Label values inside matchLabels / matchExpressions anywhere below, redacted."""
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for k, v in value.items():
                if k == "matchLabels" and isinstance(v, dict):
                    out[k] = self._labels(v)
                elif k == "matchExpressions" and isinstance(v, list):
                    out[k] = [{**e, "values": [self.name(x, "val") for x in e.get("values") or []]}
                              if isinstance(e, dict) else e for e in v]
                else:
                    out[k] = self._selectors(v)
            return out
        if isinstance(value, list):
            return [self._selectors(v) for v in value]
        return value

    def _service(self, o: dict[str, Any]) -> None:
        spec = o.get("spec") or {}
        if isinstance(spec.get("selector"), dict):
            spec["selector"] = self._labels(spec["selector"])
        if isinstance(spec.get("externalName"), str):
            spec["externalName"] = self.dns_name(spec["externalName"])
        for ing in ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            if isinstance(ing.get("hostname"), str):
                ing["hostname"] = self.dns_name(ing["hostname"])

    def _pod(self, o: dict[str, Any]) -> None:
        spec = o.get("spec") or {}
        for key in ("volumes", "imagePullSecrets", "serviceAccountName", "serviceAccount", "affinity",
                    "hostAliases", "dnsConfig"):
            spec.pop(key, None)
        for key in ("nodeName", "hostname", "subdomain"):
            if isinstance(spec.get(key), str) and spec[key]:
                spec[key] = self.name(spec[key], "Node" if key == "nodeName" else "host")
        if isinstance(spec.get("nodeSelector"), dict):
            spec["nodeSelector"] = self._labels(spec["nodeSelector"])
        for key in ("containers", "initContainers", "ephemeralContainers"):
            for c in spec.get(key) or []:
                for drop in ("image", "env", "envFrom", "command", "args", "volumeMounts", "workingDir",
                             "livenessProbe", "readinessProbe", "startupProbe", "lifecycle"):
                    c.pop(drop, None)
                if c.get("name"):
                    c["name"] = self.name(str(c["name"]), "ctr")
        status = o.get("status") or {}
        status.pop("message", None)
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for cs in status.get(key) or []:
                for drop in ("image", "imageID", "containerID", "volumeMounts", "user", "allocatedResources"):
                    cs.pop(drop, None)
                if cs.get("name"):
                    cs["name"] = self.name(str(cs["name"]), "ctr")
                for state in (cs.get("state") or {}, cs.get("lastState") or {}):
                    for detail in state.values():
                        if isinstance(detail, dict):
                            detail.pop("containerID", None)
                            detail.pop("message", None)

    def _node(self, o: dict[str, Any]) -> None:
        spec = o.get("spec") or {}
        spec.pop("providerID", None)
        status = o.get("status") or {}
        for key in ("images", "nodeInfo", "volumesAttached", "volumesInUse", "config"):
            status.pop(key, None)
        for a in status.get("addresses") or []:
            if isinstance(a.get("address"), str) and a.get("type") in ("Hostname", "InternalDNS", "ExternalDNS"):
                a["address"] = self.dns_name(a["address"])

    def _endpoint_fields(self, ep: dict[str, Any]) -> None:
        if isinstance(ep.get("nodeName"), str) and ep["nodeName"]:
            ep["nodeName"] = self.name(ep["nodeName"], "Node")
        if isinstance(ep.get("hostname"), str) and ep["hostname"]:
            ep["hostname"] = self.name(ep["hostname"], "host")
        if isinstance(ep.get("zone"), str) and ep["zone"]:
            ep["zone"] = self.name(ep["zone"], "zone")
        ref = ep.get("targetRef")
        if isinstance(ref, dict):
            if ref.get("name"):
                ref["name"] = self.name(str(ref["name"]), str(ref.get("kind") or "ref"))
            if ref.get("namespace"):
                ref["namespace"] = self.name(str(ref["namespace"]), "Namespace")
            if ref.get("uid"):
                ref["uid"] = self.uid(str(ref["uid"]))
            ref.pop("resourceVersion", None)

    def _addresses_in(self, value: Any) -> Any:
        """Every string that is exactly an address or CIDR, anonymised."""
        if isinstance(value, dict):
            return {k: self._addresses_in(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._addresses_in(v) for v in value]
        if isinstance(value, str) and ("." in value or ":" in value) and _parse_ip(value.split("/", 1)[0]):
            return self.address(value)
        return value


def _items(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The objects in one document: a List's items (which may lack `kind`), or the object itself."""
    if isinstance(doc.get("items"), list):
        list_kind = str(doc.get("kind") or "")
        item_kind = list_kind[:-4] if list_kind.endswith("List") and list_kind != "List" else None
        out: list[Mapping[str, Any]] = []
        for item in doc["items"]:
            if not isinstance(item, Mapping):
                continue
            if item_kind and not item.get("kind"):
                item = {**item, "kind": item_kind}
            out += _items(item)  # a List inside a List, as a bare array of kubectl outputs makes
        return out
    return [doc]


def _parse_ip(text: str) -> _Address | None:
    if "." not in text and ":" not in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forced_prefixes() -> frozenset[tuple[int, int, int]]:
    """(version, length, prefix) on the path to a special or private network: never flipped.

    Walking the path to such a network without flips keeps it where it is, and keeps every other
    address out of it, so the anonymisation stays a bijection that leaves special addresses alone.
    """
    forced: set[tuple[int, int, int]] = set()
    for net in (*_IDENTITY_NETS, *_PRESERVED_NETS):
        bits = net.max_prefixlen
        value = int(net.network_address)
        for i in range(net.prefixlen):
            forced.add((net.version, i, value >> (bits - i) if i else 0))
    return frozenset(forced)


def redact_all(redactor: Redactor, api_documents: Mapping[str, Mapping[str, Any]],
               node_files: Mapping[str, str], meta: Mapping[str, Any]) -> tuple[
                   dict[str, dict[str, Any]], dict[str, str], dict[str, Any]]:
    """Redact a whole snapshot's parts with one table (API first, so chain names can be recomputed)."""
    api = redactor.api_documents(api_documents)
    # Files that name chains after the API's objects go first; the rest only need the table.
    order = sorted(node_files, key=lambda n: (n not in ("iptables-save.txt", "ip6tables-save.txt", "nft.json"), n))
    node = {name: redactor.node_text(name, node_files[name]) for name in order}
    return api, {name: node[name] for name in node_files}, redactor.meta(meta)

