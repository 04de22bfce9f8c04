"""The commands a node read runs and what one of them gave (pure, and light to import).

Kept apart from svctrace.parsers.node_read, which needs the model, so that svctrace.collectors.spawn can
start the kernel's saves before anything heavy is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LEGACY = "legacy"  # the iptables backends, as svctrace.parsers.detect decides between them
NFT = "nf_tables"

ALL_TABLES = ("*",)  # every iptables table (one save run without -t)

# Save commands per backend and family.
SAVE_COMMANDS: dict[str, dict[int, str]] = {
    LEGACY: {4: "iptables-legacy-save", 6: "ip6tables-legacy-save"},
    NFT: {4: "iptables-nft-save", 6: "ip6tables-nft-save"},
}
NFT_FAMILIES = ("ip", "ip6")  # kube-proxy's nftables tables: `ip kube-proxy` and `ip6 kube-proxy`


def nft_source(where: str) -> str:
    """How the node's nftables file is named in messages when it was read live (``where``: " in network
    namespace NS", or "")."""
    return f"nft -j list table ip/ip6 kube-proxy{where}"


@dataclass
class CommandRun:
    """What one command printed, or why it could not run."""

    stdout: str | None
    error: str | None = None
    skipped: bool = False  # not run: the kernel holds nothing for it to read
    followed: bool = False  # its output went to a sink as it was written (stdout is then "")
    # An iptables save whose text was indexed as it was read: (source, family, only these tables) -> the
    # IptablesDump parse(stdout, eager=False) would give (None: parse it). See iptables_save.Stream.dump.
    indexed: Callable[[str, int, tuple[str, ...] | None], Any] | None = None
    kube_chains: int | None = None  # its stdout's ":KUBE-" lines, counted as it was read (None: count them)
