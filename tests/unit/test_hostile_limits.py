"""The limits docs/snapshot.md states are the limits svctrace enforces."""

from __future__ import annotations

from pathlib import Path

import pytest

from svctrace.cli.options import DEFAULT_REQUEST_TIMEOUT, DEFAULT_TIMEOUT
from svctrace.model.snapshot import NodeFile
from svctrace.model.trace import TraceOptions
from svctrace.parsers import limits
from svctrace.parsers.k8s_object import MAX_NAME
from svctrace.parsers.limits import mib

DOC = (Path(__file__).resolve().parents[2] / "docs" / "snapshot.md").read_text()
ROWS = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in DOC.splitlines()
        if line.startswith("| ") and line.count("|") == 3}
NODE = limits.MAX_NODE_FILE_BYTES


@pytest.mark.parametrize(("row", "words"), [
    ("files in a folder, members in a tarball", f"{limits.MAX_SNAPSHOT_FILES:,}"),
    ("all the bytes a snapshot unpacks to, read or skipped", mib(limits.MAX_SNAPSHOT_BYTES)),
    ("one `api/*.json` file", mib(limits.MAX_API_FILE_BYTES)),
    ("one `api/*.yaml` file", f"{mib(limits.MAX_YAML_FILE_BYTES)} and {limits.MAX_YAML_NODES:,} YAML values"),
    ("one Kubernetes object", mib(limits.MAX_OBJECT_BYTES)),
    ("values (objects, List items, top-level fields) in all `api/` files", f"{limits.MAX_VALUES:,}"),
    ("nesting of JSON or YAML", f"{limits.MAX_DEPTH} levels"),
    ("an object's name or namespace", f"{MAX_NAME} characters"),
    ("`node/iptables-save.txt`, `node/ip6tables-save.txt`", mib(NODE[NodeFile.IPTABLES])),
    ("`node/nft.json`", mib(NODE[NodeFile.NFT])),
    ("`node/ipvsadm.txt`, `node/ipset.txt`", mib(NODE[NodeFile.IPVSADM])),
    ("`node/conntrack.txt`", mib(NODE[NodeFile.CONNTRACK])),
    ("`node/ip-addr.json`", mib(NODE[NodeFile.IP_ADDR])),
    ("`node/meta.json`", mib(NODE[NodeFile.META])),
    ("lines of a `node/` text file", f"{limits.MAX_NODE_FILE_LINES:,}, each at most {limits.MAX_LINE_BYTES >> 10} KiB"),
    ("rules in one iptables chain", f"{limits.MAX_CHAIN_RULES:,}"),
])
def test_each_limit_in_the_table_is_the_enforced_one(row: str, words: str) -> None:
    assert ROWS[row].startswith(words), (row, ROWS.get(row))


def test_the_other_bounds_named_in_the_text() -> None:
    assert NODE[NodeFile.IPTABLES] == NODE[NodeFile.IP6TABLES] and NODE[NodeFile.IPVSADM] == NODE[NodeFile.IPSET]
    opts = TraceOptions()
    text = " ".join(DOC.split())
    for words in (f"at most {opts.max_depth} nested jumps and {opts.max_states:,} live branches",
                  f"after {opts.max_steps:,} rule evaluations",
                  f"`--request-timeout` ({DEFAULT_REQUEST_TIMEOUT} by default",
                  f"`--timeout` ({DEFAULT_TIMEOUT} by default",
                  f"by {mib(limits.MAX_RESPONSE_BYTES)} per API answer and by {limits.MAX_LIST_PAGES:,} pages "
                  "per LIST"):
        assert words in text, words
