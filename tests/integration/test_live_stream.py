"""A big live save is indexed while iptables-save writes it, and gives what parsing its text gives.

The rules of 1,200 Services x 10 endpoints (over svctrace.parsers.snapshot.EAGER_BYTES, so they are read
lazily) are loaded into a node namespace by the backend's real iptables-restore; collect_node follows the
save's output as it grows (svctrace.collectors.spawn) and hands build_snapshot an index made meanwhile.
That index, the text and every chain's rules must be what `iptables_save.parse(text, eager=False)` gives,
and a Service's answer from it the same as from the text.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from svctrace.collectors.node import collect_node
from svctrace.model.iptables import IptablesDump
from svctrace.model.snapshot import NodeFile
from svctrace.parsers import iptables_save
from svctrace.parsers.snapshot import EAGER_BYTES, NodeInput, build_snapshot
from svctrace.resolver import resolve
from tests.integration.cluster import kube_proxy_order
from tests.integration.netns import NetnsNode

pytestmark = pytest.mark.netns

NO_KUBE_PROXY = "http://127.0.0.1:1/proxyMode"
SERVICES = 1200


def _rules() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from gen_iptables import generate  # type: ignore[import-not-found]

    return kube_proxy_order(generate(SERVICES, 10))


def _index(dump: IptablesDump) -> dict[str, list[tuple[object, ...]]]:
    return {name: [(h.name, h.policy, h.packets, h.bytes, h.declared, h.rule_count, tuple(h.spans))
                   for h in t.heads.values()] for name, t in dump.tables.items()}


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_a_big_save_is_indexed_as_it_is_written(netns_factory: Callable[..., NetnsNode], backend: str) -> None:
    node = netns_factory(backend=backend, need=("nfacct", "nft"))
    node.load_rules(_rules())
    node.load_rules("*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n", noflush=True)  # a table svc does not read
    read = collect_node(netns=node.name, proxy_mode_url=NO_KUBE_PROXY, timeout=0.5, tables=("nat", "filter"))
    text = read.files[NodeFile.IPTABLES]
    assert len(text) > EAGER_BYTES
    streamed = read.parsed.get(NodeFile.IPTABLES)
    assert isinstance(streamed, IptablesDump)  # made while the save ran
    assert streamed.source == read.source(NodeFile.IPTABLES)
    want = iptables_save.parse(text, read.source(NodeFile.IPTABLES), 4, eager=False)
    # The nf_tables backend's one save of every table is kept whole (no 48 MB copy cut to two tables at 10k
    # Services): its dump holds the tables asked for; a legacy save is one -t run per table, joined.
    assert set(streamed.tables) == {"nat", "filter"} <= set(want.tables)
    assert _index(streamed) == {name: t for name, t in _index(want).items() if name in ("nat", "filter")}
    for name, table in want.tables.items():
        if name not in streamed.tables:
            continue
        assert [repr(streamed.tables[name].chain(c)) for c in table.heads] == \
            [repr(table.chain(c)) for c in table.heads]

    # The same answer about a Service (named by the rules: no API objects here) from the index made meanwhile
    # and from the text.
    at = text.index("-A KUBE-SVC-", len(text) // 2)
    ref = text[text.index('--comment "', at) + 11:].split(":", 1)[0]
    namespace, name = ref.split("/")

    def answer(files: NodeInput) -> object:
        snap = build_snapshot(None, files, source="t", explicit_node="n", hostname="n", api_collected=False)
        graph = resolve(snap, namespace, name)
        assert graph.endpoints, f"{ref}: no endpoints"
        return graph

    plain = NodeInput(netns=read.netns, files=dict(read.files), where=dict(read.where), missing=list(read.missing),
                      warnings=list(read.warnings), probe=read.probe,
                      parsed={k: v for k, v in read.parsed.items() if k != NodeFile.IPTABLES})
    assert repr(answer(read)) == repr(answer(plain))
