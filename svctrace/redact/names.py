"""Names replaced by readable tokens, the same original always by the same token.

``ns-1``, ``svc-2``, ``pod-3``, ``node-1``, ``port-1``: the role picks a token's prefix the first time a
name is seen. Names that are the same in every cluster (``default``, ``kube-system``, ``kubernetes``,
``kube-dns``...) and generic port names (``http``, ``dns``...) stay, since they reveal nothing; label keys
and appProtocols stay when they belong to Kubernetes itself or are generic, and are tokens otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

# Names that are the same in every cluster, so they reveal nothing and keep the output readable.
KEPT_NAMES = frozenset({
    "default", "kube-system", "kube-public", "kube-node-lease", "kubernetes", "kube-dns", "coredns",
    "kube-proxy",
})
# Port names that say what a port speaks, not whose it is (kube-dns's and the API's among them).
KEPT_PORT_NAMES = frozenset({"http", "https", "http2", "h2c", "grpc", "dns", "dns-tcp", "metrics", "tcp", "udp"})
# DNS labels kept inside names such as an ExternalName: the cluster's own suffixes and reverse zones.
KEPT_DNS_LABELS = frozenset({"svc", "cluster", "local", "pod", "in-addr", "ip6", "arpa"})
# Label values that carry no identity and that are common enough to keep for readability.
KEPT_VALUES = frozenset({"", "true", "false"})
# Label keys people use everywhere; keys under a Kubernetes domain are kept too (svctrace reads some).
KEPT_LABEL_KEYS = frozenset({"app", "name", "component", "tier", "version", "role", "k8s-app", "run", "release",
                             "pod-template-hash", "controller-revision-hash", "pod-template-generation"})
_KUBERNETES_DOMAINS = ("kubernetes.io", "k8s.io")

ROLE_PREFIX = {"Namespace": "ns", "Service": "svc", "Pod": "pod", "Node": "node", "EndpointSlice": "eps",
               "Endpoints": "svc", "NetworkPolicy": "netpol", "ConfigMap": "cm"}


def _kubernetes_domain(prefix: str) -> bool:
    return any(prefix == d or prefix.endswith("." + d) for d in _KUBERNETES_DOMAINS)


class NameTable:
    """Original name -> token, for one redaction."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.done: dict[str, str] = {}
        self._counters: dict[str, int] = {}

    def name(self, original: str, role: str = "name") -> str:
        """The token for a name; ``role`` picks the token's prefix the first time the name is seen."""
        if original in KEPT_NAMES or original in KEPT_VALUES:
            return original
        token = self.done.get(original)
        if token is None:
            prefix = ROLE_PREFIX.get(role, role)
            self._counters[prefix] = self._counters.get(prefix, 0) + 1
            token = f"{prefix}-{self._counters[prefix]}"
            self.done[original] = token
        return token

    def port(self, original: str) -> str:
        """A port name (a Service's, an endpoint's, a container's: one table, so named targetPorts still match)."""
        return original if original in KEPT_PORT_NAMES else self.name(original, "port")

    def dns_name(self, original: str) -> str:
        """A DNS name with each label redacted, except the cluster's own suffixes (svc.cluster.local)."""
        if not original:
            return original
        return ".".join(label if label in KEPT_DNS_LABELS else self.name(label) for label in original.split("."))

    def label_key(self, key: str) -> str:
        """A label key: kept under a Kubernetes domain or when generic; otherwise its parts are tokens."""
        prefix, sep, name = key.rpartition("/")
        if sep and _kubernetes_domain(prefix):
            return key
        if not sep and key in KEPT_LABEL_KEYS:
            return key
        new_name = name if name in KEPT_LABEL_KEYS else self.name(name, "key")
        return f"{self.dns_name(prefix)}/{new_name}" if sep else new_name

    def app_protocol(self, value: str) -> str:
        """An appProtocol: IANA names (no ``/``) and kubernetes.io ones are kept, a company's own is a token."""
        prefix, sep, name = value.rpartition("/")
        if not sep or _kubernetes_domain(prefix):
            return value
        return f"{self.dns_name(prefix)}/{self.name(name, 'proto')}"

    def uid(self, text: str) -> str:
        """A stable stand-in for an object uid (ownerReferences still point at the same owner)."""
        if not text:
            return text
        return str(uuid.UUID(bytes=hmac.new(self._key, b"uid:" + text.encode(), hashlib.sha256).digest()[:16]))

    def service_port_name(self, text: str) -> str:
        """kube-proxy's ``ns/name:port`` (or ``ns/name``) redacted; any other word unchanged."""
        ns, slash, rest = text.partition("/")
        name, colon, port = rest.partition(":")
        if not slash or not _label(ns) or not _name(name) or (colon and not _name(port)):
            return text
        out = f"{self.name(ns, 'Namespace')}/{self.name(name, 'Service')}"
        return out + (f":{self.port(port)}" if colon else "")

    def comment(self, text: str) -> str:
        """A kube-proxy comment ("masquerade traffic for ns/name:port external destinations"): each
        ``ns/name:port`` in it redacted, its fixed words kept."""
        if "/" not in text:
            return text
        return " ".join(self.service_port_name(w) if "/" in w else w for w in text.split(" "))


_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _label(text: str) -> bool:
    """A DNS label (a namespace): a-z, 0-9 and '-', starting and ending alphanumeric."""
    return bool(text) and set(text) <= _LABEL_CHARS and text[0] != "-" and text[-1] != "-"


def _name(text: str) -> bool:
    """A Service or port name: DNS labels joined by dots, not an address."""
    return all(_label(part) for part in text.split(".")) and not text.replace(".", "").isdigit()
