"""kube-proxy's proxy modes: decided once, when a Snapshot is built, and read everywhere after."""

from __future__ import annotations

import enum


class ProxyMode(str, enum.Enum):
    """The modes svctrace reads. Each is implemented once per layer (resolver, tracer): see CONTRIBUTING.md."""

    IPTABLES = "iptables"
    IPVS = "ipvs"
    NFTABLES = "nftables"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | None) -> ProxyMode | None:
        """A mode from its name (``nft`` for nftables too); None for an empty or unknown name."""
        if value is None:
            return None
        name = value.strip().lower()
        name = {"nft": "nftables"}.get(name, name)
        try:
            return cls(name)
        except ValueError:
            return None


NAMES = tuple(m.value for m in ProxyMode)
