"""kube-proxy's chain names, recomputed from the redacted names and addresses they hash.

iptables mode names a Service port's chains ``KUBE-SVC-<hash>`` (and SVL/EXT/FW) and an endpoint's
``KUBE-SEP-<hash>``, nftables mode ``service-<hash8>-ns/name/proto/port`` and ``endpoint-...__IP/port``
(svctrace.kubeproxy.naming). What each chain stands for is learnt from the API objects and from the rules
as the parsers type them (a rule's chain, its jump target, its comment, its protocol and its DNAT
destination); a chain is renamed only when its hash is reproduced, so a chain nothing explains keeps its
name, and the redacted snapshot resolves exactly like the original.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from svctrace.kubeproxy import naming
from svctrace.model.actions import DnatAction
from svctrace.model.iptables import IptablesDump, Rule
from svctrace.model.nft import NftRuleset
from svctrace.redact.addresses import AddressMap, parse_ip
from svctrace.redact.names import NameTable

PROTOCOLS = ("tcp", "udp", "sctp")
_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def _maps(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


class ChainMap:
    """Old chain name -> new, for one redaction (its names and addresses)."""

    def __init__(self, names: NameTable, addresses: AddressMap) -> None:
        self._names = names
        self._addresses = addresses
        self.done: dict[str, str] = {}

    def _spn(self, ns: str, name: str, port_name: str) -> str:
        return naming.service_port_name(self._names.name(ns, "Namespace"), self._names.name(name, "Service"),
                                        self._names.port(port_name) if port_name else "")

    # -- learning --

    def service(self, ns: str, name: str, port_name: str, protocol: str) -> None:
        old = naming.ipt_suffix(naming.service_port_name(ns, name, port_name), protocol)
        new = naming.ipt_suffix(self._spn(ns, name, port_name), protocol)
        for prefix in naming.IPT_SERVICE_PREFIXES:
            self.done[prefix + old] = prefix + new

    def endpoint(self, ns: str, name: str, port_name: str, protocol: str, ip: str, port: int) -> None:
        old = naming.ipt_endpoint_chain(naming.service_port_name(ns, name, port_name), protocol, ip, port)
        self.done[old] = naming.ipt_endpoint_chain(self._spn(ns, name, port_name), protocol,
                                                   self._addresses.address(ip), port)

    def learn_api(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """The chains each Service port and endpoint of the API objects gets."""
        for obj in objects:
            kind = obj.get("kind")
            meta = _map(obj.get("metadata"))
            ns = _str(meta.get("namespace")) or "default"
            name = _str(meta.get("name"))
            if kind == "Service":
                for p in _maps(_map(obj.get("spec")).get("ports")):
                    self.service(ns, name, _str(p.get("name")), _str(p.get("protocol"), "TCP"))
            elif kind == "EndpointSlice":
                svc = _str(_map(meta.get("labels")).get("kubernetes.io/service-name"))
                if svc:
                    self._endpoints(ns, svc, _maps(obj.get("ports")),
                                    [ip for ep in _maps(obj.get("endpoints")) for ip in ep.get("addresses") or []
                                     if isinstance(ip, str)])
            elif kind == "Endpoints":
                for subset in _maps(obj.get("subsets")):
                    addrs = [*_maps(subset.get("addresses")), *_maps(subset.get("notReadyAddresses"))]
                    self._endpoints(ns, name, _maps(subset.get("ports")), [_str(a.get("ip")) for a in addrs])

    def _endpoints(self, ns: str, svc: str, ports: list[Mapping[str, Any]], ips: list[str]) -> None:
        for p in ports:
            number = p.get("port")
            if not isinstance(number, int) or isinstance(number, bool):
                continue
            for ip in ips:
                self.endpoint(ns, svc, _str(p.get("name")), _str(p.get("protocol"), "TCP"), ip, number)

    def learn_iptables(self, dump: IptablesDump) -> None:
        """Chains whose rules explain their hash: a comment naming the Service port, and for an endpoint's chain
        its DNAT destination. Recomputable even when the API no longer has the Service (stale chains)."""
        for table in dump.tables.values():
            for chain_name in list(table.heads):
                chain = table.chain(chain_name)
                for rule in chain.rules if chain is not None else ():
                    self._learn_rule(rule)

    def _learn_rule(self, rule: Rule) -> None:
        spn = _service_port(rule.comment)
        if spn is None:
            return
        ns, name, port_name = spn
        proto = rule.protocol
        protocols = (proto.protocol,) if proto is not None and not proto.negated else PROTOCOLS
        dnat = next((a for a in (rule.action,) if isinstance(a, DnatAction) and a.ranges), None)
        for chain in (rule.chain, rule.target):
            if not chain or chain in self.done:
                continue
            spn_text = naming.service_port_name(ns, name, port_name)
            for protocol in protocols:
                if chain.startswith(naming.IPT_SERVICE_PREFIXES):
                    if chain.split("-", 2)[2] == naming.ipt_suffix(spn_text, protocol):
                        self.service(ns, name, port_name, protocol)
                        break
                elif chain.startswith(naming.IPT_ENDPOINT_PREFIX) and chain == rule.chain and dnat is not None:
                    first = dnat.ranges[0]
                    if first.first_ip is None or first.first_port is None:
                        break
                    if naming.ipt_endpoint_chain(spn_text, protocol, first.first_ip, first.first_port) == chain:
                        self.endpoint(ns, name, port_name, protocol, first.first_ip, first.first_port)
                        break

    def learn_nft(self, ruleset: NftRuleset) -> None:
        for table in ruleset.tables:
            for chain in table.chains:
                self.nft(chain)

    # -- renaming --

    def nft(self, text: str) -> str | None:
        """The new name of a kube-proxy nftables chain (None when ``text`` is not one)."""
        done = self.done.get(text)
        if done is not None:
            return done
        parsed = _nft_chain(text)
        if parsed is None:
            return None
        prefix, digest, ns, name, proto, port, ip, ep_port = parsed
        new_ns, new_name, new_port = self._names.name(ns, "Namespace"), self._names.name(name, "Service"), \
            self._names.port(port) if port else port
        if ip is None:
            if naming.nft_service_chain(ns, name, proto, port, prefix) == text:
                out = naming.nft_service_chain(new_ns, new_name, proto, new_port, prefix)
            else:  # its hash is not explained: keep it (it names the chain), replace what is readable
                out = f"{prefix}-{digest}-{naming.nft_base(new_ns, new_name, proto, new_port)}"
        else:
            assert ep_port is not None
            # kube-proxy writes an IPv6 address's colons as dots
            address = ip if parse_ip(ip) is not None else ip.replace(".", ":")
            if naming.nft_endpoint_chain(ns, name, proto, port, address, ep_port, prefix) == text:
                out = naming.nft_endpoint_chain(new_ns, new_name, proto, new_port, self._addresses.address(address),
                                                ep_port, prefix)
            else:
                new_ip = self._addresses.address(address)
                out = (f"{prefix}-{digest}-{naming.nft_base(new_ns, new_name, proto, new_port)}"
                       f"__{new_ip.replace(':', '.')}/{ep_port}")
        self.done[text] = out
        return out


def _service_port(comment: str | None) -> tuple[str, str, str] | None:
    """(namespace, name, port name) of a kube-proxy comment's leading ``ns/name:port``."""
    if not comment:
        return None
    first = comment.split(" ", 1)[0]
    ns, slash, rest = first.partition("/")
    name, _, port = rest.partition(":")
    if not slash or not ns or not name or "/" in rest:
        return None
    return ns, name, port


def _nft_chain(text: str) -> tuple[str, str, str, str, str, str, str | None, int | None] | None:
    """(prefix, hash, namespace, name, protocol, port name, endpoint IP, endpoint port) of a kube-proxy
    nftables chain name (``service-ABCDEFGH-ns/name/tcp/port``, ``endpoint-...__10.0.0.1/80``)."""
    head, slash, rest = text.partition("/")
    if not slash or text.endswith("..."):
        return None
    parts = head.split("-")
    at = next((i for i, p in enumerate(parts) if i > 0 and len(p) == 8 and set(p) <= _BASE32), None)
    if at is None or at + 1 >= len(parts):
        return None
    prefix, digest, ns = "-".join(parts[:at]), parts[at], "-".join(parts[at + 1:])
    base, sep, endpoint = rest.partition("__")
    fields = base.split("/")
    if len(fields) != 3 or fields[1] not in PROTOCOLS or not prefix.replace("-", "").isalpha():
        return None
    name, proto, port = fields
    if not sep:
        return prefix, digest, ns, name, proto, port, None, None
    ip, _, ep_port = endpoint.rpartition("/")
    if not ip or not ep_port.isdigit() or len(ep_port) > 5:
        return None
    return prefix, digest, ns, name, proto, port, ip, int(ep_port)
