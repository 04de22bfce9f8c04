"""API objects redacted: only the fields svctrace reads survive, and every name and address in them is replaced.

An object is first cut down to what svctrace reads (svctrace.parsers.k8s_fields), so nothing it never looks at
(env, commands, annotations, status messages...) can leak; kinds it does not read are dropped, Secrets
always. What is left is rewritten field by field: names by role, label keys and values, port names (named
targetPorts and NetworkPolicy ports included, one table so they still match), appProtocols, DNS names,
uids, addresses and CIDRs; the CoreDNS Corefile is reduced to the kubernetes plugin's zones, which is
all svctrace reads of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from svctrace.parsers.json_stream import deeper_than
from svctrace.parsers.k8s_fields import READ_FIELDS, read_fields
from svctrace.parsers.limits import MAX_DEPTH
from svctrace.redact.addresses import AddressMap, parse_ip
from svctrace.redact.names import NameTable

KEPT_CONFIG_MAPS = frozenset({("kube-system", "coredns"), ("kube-system", "kube-proxy")})
_READ_KINDS = frozenset(READ_FIELDS) - {"Namespace"}
_DNS_ADDRESS_TYPES = ("Hostname", "InternalDNS", "ExternalDNS")

Doc = dict[str, Any]


def items(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
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
            out += items(item)  # a List inside a List, as a bare array of kubectl outputs makes
        return out
    return [doc]


def _dicts(value: Any) -> list[Doc]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _dict(value: Any) -> Doc:
    return value if isinstance(value, dict) else {}


class ApiRedaction:
    """Rewrites API objects with one name table and one address map."""

    def __init__(self, names: NameTable, addresses: AddressMap, dns_name: Callable[[str], str]) -> None:
        self.n = names
        self.a = addresses
        self.dns_name = dns_name

    def assign_names(self, objects: list[Mapping[str, Any]]) -> None:
        """Readable prefixes: namespaces first, then nodes, Services and Pods, so a name shared by a
        namespace and a label value reads as a namespace."""
        for kind in ("Namespace", "Node", "Service", "Pod", "EndpointSlice"):
            for obj in objects:
                meta = _dict(obj.get("metadata"))
                if kind == "Namespace" and isinstance(meta.get("namespace"), str) and meta["namespace"]:
                    self.n.name(meta["namespace"], "Namespace")
                elif obj.get("kind") == kind and isinstance(meta.get("name"), str) and meta["name"]:
                    self.n.name(meta["name"], kind)

    def object(self, obj: Mapping[str, Any]) -> Doc | None:
        """One object redacted; None for kinds svctrace does not read (and ConfigMaps it does not keep)."""
        kind = obj.get("kind")
        if kind not in _READ_KINDS:
            return None
        meta = _dict(obj.get("metadata"))
        if kind == "ConfigMap" and (meta.get("namespace"), meta.get("name")) not in KEPT_CONFIG_MAPS:
            return None
        o = read_fields(obj)
        if deeper_than(o, MAX_DEPTH):
            return None  # the parser refuses such an object; nothing of it is written
        o = dict(_copy(o))  # a new object: the input is never modified below
        o["metadata"] = self._metadata(_dict(o.get("metadata")), str(kind))
        getattr(self, f"_{str(kind).lower()}")(o)
        return o

    # -- fields every kind has --

    def _metadata(self, meta: Doc, kind: str) -> Doc:
        if isinstance(meta.get("name"), str) and meta["name"] and kind != "ConfigMap":
            meta["name"] = self.n.name(meta["name"], kind)
        if isinstance(meta.get("namespace"), str) and meta["namespace"]:
            meta["namespace"] = self.n.name(meta["namespace"], "Namespace")
        if isinstance(meta.get("uid"), str):
            meta["uid"] = self.n.uid(meta["uid"])
        if isinstance(meta.get("labels"), dict):
            meta["labels"] = self.labels(meta["labels"])
        for ref in _dicts(meta.get("ownerReferences")):
            if isinstance(ref.get("name"), str):
                ref["name"] = self.n.name(ref["name"], "owner")
        return meta

    def labels(self, labels: Mapping[str, Any]) -> Doc:
        return {self.n.label_key(str(k)): self.n.name(v, "val") if isinstance(v, str) else v
                for k, v in labels.items()}

    def _ports(self, ports: Any, number_key: str = "port") -> None:
        for p in _dicts(ports):
            if isinstance(p.get("name"), str):
                p["name"] = self.n.port(p["name"])
            if isinstance(p.get("appProtocol"), str):
                p["appProtocol"] = self.n.app_protocol(p["appProtocol"])
            if isinstance(p.get(number_key), str):  # a named port
                p[number_key] = self.n.port(p[number_key])

    def _addr(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.a.address(value.strip()) if parse_ip(value.strip().split("/", 1)[0]) else value
        if isinstance(value, list):
            return [self._addr(v) for v in value]
        return value

    def _ref(self, ref: Any) -> None:
        if isinstance(ref, dict):
            if isinstance(ref.get("name"), str) and ref["name"]:
                ref["name"] = self.n.name(ref["name"], str(ref.get("kind") or "ref"))
            if isinstance(ref.get("namespace"), str) and ref["namespace"]:
                ref["namespace"] = self.n.name(ref["namespace"], "Namespace")

    def _endpoint(self, ep: Doc) -> None:
        for key, role in (("nodeName", "Node"), ("hostname", "host"), ("zone", "zone")):
            if isinstance(ep.get(key), str) and ep[key]:
                ep[key] = self.n.name(ep[key], role)
        for key in ("addresses", "ip"):
            if key in ep:
                ep[key] = self._addr(ep[key])
        self._ref(ep.get("targetRef"))
        for key in ("topology", "deprecatedTopology"):
            if isinstance(ep.get(key), dict):
                ep[key] = self.labels(ep[key])

    # -- one method per kind --

    def _service(self, o: Doc) -> None:
        spec = _dict(o.get("spec"))
        if isinstance(spec.get("selector"), dict):
            spec["selector"] = self.labels(spec["selector"])
        if isinstance(spec.get("externalName"), str):
            spec["externalName"] = self.dns_name(spec["externalName"])
        self._ports(spec.get("ports"), "targetPort")
        for key in ("clusterIP", "clusterIPs", "externalIPs", "loadBalancerSourceRanges"):
            if key in spec:
                spec[key] = self._addr(spec[key])
        for ing in _dicts(_dict(_dict(o.get("status")).get("loadBalancer")).get("ingress")):
            if isinstance(ing.get("hostname"), str):
                ing["hostname"] = self.dns_name(ing["hostname"])
            if "ip" in ing:
                ing["ip"] = self._addr(ing["ip"])

    def _endpointslice(self, o: Doc) -> None:
        for ep in _dicts(o.get("endpoints")):
            self._endpoint(ep)
        self._ports(o.get("ports"))

    def _endpoints(self, o: Doc) -> None:
        for subset in _dicts(o.get("subsets")):
            for a in [*_dicts(subset.get("addresses")), *_dicts(subset.get("notReadyAddresses"))]:
                self._endpoint(a)
            self._ports(subset.get("ports"))

    def _pod(self, o: Doc) -> None:
        spec = _dict(o.get("spec"))
        if isinstance(spec.get("nodeName"), str) and spec["nodeName"]:
            spec["nodeName"] = self.n.name(spec["nodeName"], "Node")
        for key in ("containers", "initContainers"):
            for c in _dicts(spec.get(key)):
                if isinstance(c.get("name"), str):
                    c["name"] = self.n.name(c["name"], "ctr")
                self._ports(c.get("ports"), "containerPort")
        status = _dict(o.get("status"))
        for key in ("podIP", "podIPs"):
            if key in status:
                status[key] = self._addr(status[key])
        for p in _dicts(status.get("podIPs")):
            if "ip" in p:
                p["ip"] = self._addr(p["ip"])
        for cs in _dicts(status.get("containerStatuses")):
            if isinstance(cs.get("name"), str):
                cs["name"] = self.n.name(cs["name"], "ctr")

    def _node(self, o: Doc) -> None:
        spec = _dict(o.get("spec"))
        for key in ("podCIDR", "podCIDRs"):
            if key in spec:
                spec[key] = self._addr(spec[key])
        for a in _dicts(_dict(o.get("status")).get("addresses")):
            if isinstance(a.get("address"), str):
                a["address"] = self.dns_name(a["address"]) if a.get("type") in _DNS_ADDRESS_TYPES \
                    else self._addr(a["address"])

    def _configmap(self, o: Doc) -> None:
        data = _dict(o.get("data"))
        o["data"] = {k: corefile(v, self.dns_name) for k, v in data.items() if k == "Corefile" and isinstance(v, str)}

    def _networkpolicy(self, o: Doc) -> None:
        if "spec" in o:
            o["spec"] = self._policy(o["spec"])

    def _policy(self, value: Any, key: str | None = None) -> Any:
        """Selectors (keys and values), named ports and CIDRs anywhere in a NetworkPolicy's spec."""
        if isinstance(value, dict):
            out: Doc = {}
            for k, v in value.items():
                if k == "matchLabels" and isinstance(v, dict):
                    out[k] = self.labels(v)
                elif k == "matchExpressions" and isinstance(v, list):
                    out[k] = [self._expression(e) for e in v]
                elif k == "port" and isinstance(v, str):
                    out[k] = self.n.port(v)
                elif k in ("cidr", "except"):
                    out[k] = self._addr(v)
                else:
                    out[k] = self._policy(v, k)
            return out
        if isinstance(value, list):
            return [self._policy(v, key) for v in value]
        return value


    def _expression(self, e: Any) -> Any:
        if not isinstance(e, dict):
            return e
        out = dict(e)
        if isinstance(e.get("key"), str):
            out["key"] = self.n.label_key(e["key"])
        if isinstance(e.get("values"), list):
            out["values"] = [self.n.name(x, "val") if isinstance(x, str) else x for x in e["values"]]
        return out


def corefile(text: str, dns_name: Callable[[str], str]) -> str:
    """A Corefile reduced to what svctrace reads of it: the kubernetes plugin's zones, redacted."""
    zones: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "kubernetes":
            zones = [w for w in words[1:] if w != "{"]
            break
    if not zones:
        return ".:53 {\n}\n"
    redacted = [dns_name(z.rstrip(".")) + ("." if z.endswith(".") else "") for z in zones]
    return ".:53 {\n    kubernetes " + " ".join(redacted) + "\n}\n"


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like data (its depth checked before)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
