"""A Service's stale chains found by searching a big dump's text give what the whole owner index gives.

Big dumps (over svctrace.parsers.snapshot.EAGER_BYTES) are read lazily, and `svc NAME` finds the chains
whose comments name its Service by searching the text for the name (svctrace.parsers.iptables_save
``first_comments_mentioning``) instead of reading the first comment of every one of 100,000 chains. Every
dump the tests hold is read both ways here, and each Service any chain names must get the same answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from svctrace.model.graph import StaleChain
from svctrace.model.iptables import SWEEP, IptablesDump
from svctrace.model.k8s import Service, ServicePort
from svctrace.parsers import iptables_save
from svctrace.resolver import iptables_names

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _readable(path: Path) -> bool:
    try:
        text = path.read_text()
    except UnicodeDecodeError:  # the fuzz corpus's UTF-16 dump: not a dump this compares
        return False
    return "*nat" in text and ("-A KUBE-SVC-" in text or "-A KUBE-SEP-" in text)  # Service chains


DUMPS = sorted(p for p in FIXTURES.rglob("iptables-save*.txt") if "ip6" not in p.name and _readable(p))

# Chains a svc NAME answer must tell apart: a stale chain of web (its first comment names it), web's current
# chain, web2's chains (its name starts with web's), a chain whose later rule mentions web (owned by db), and
# a rule written with counters first.
CRAFTED = """*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-SVC-OLDOLDOLDOLDOLDO - [0:0]
:KUBE-SEP-OLDOLDOLDOLDOLDO - [0:0]
:KUBE-SVC-WEB2WEB2WEB2WEB2 - [0:0]
:KUBE-SVC-DBDBDBDBDBDBDBDB - [0:0]
:KUBE-SEP-CCCCCCCCCCCCCCCC - [0:0]
-A KUBE-SERVICES -d 10.0.0.1/32 -p tcp -m comment --comment "ns/web:http cluster IP" -j KUBE-SVC-AAAAAAAAAAAAAAAA
-A KUBE-SVC-AAAAAAAAAAAAAAAA -m comment --comment "ns/web:http" -j KUBE-SEP-CCCCCCCCCCCCCCCC
-A KUBE-SVC-OLDOLDOLDOLDOLDO -m comment --comment "ns/web:old" -j KUBE-SEP-OLDOLDOLDOLDOLDO
[3:180] -A KUBE-SEP-OLDOLDOLDOLDOLDO -s 10.1.0.9/32 -m comment --comment "ns/web:old" -j KUBE-MARK-MASQ
-A KUBE-SVC-WEB2WEB2WEB2WEB2 -m comment --comment "ns/web2:http" -j KUBE-SEP-CCCCCCCCCCCCCCCC
-A KUBE-SVC-DBDBDBDBDBDBDBDB -m comment --comment "ns/db:sql" -j KUBE-SEP-CCCCCCCCCCCCCCCC
-A KUBE-SVC-DBDBDBDBDBDBDBDB -m comment --comment "ns/web:http as a note" -j KUBE-SEP-CCCCCCCCCCCCCCCC
-A KUBE-SEP-CCCCCCCCCCCCCCCC -m comment --comment ns/web:http -p tcp -m tcp -j DNAT --to-destination 10.1.0.1:80
COMMIT
"""


def _both(text: str) -> tuple[IptablesDump, IptablesDump]:
    return iptables_save.parse(text, "t", eager=True), iptables_save.parse(text, "t", eager=False)


def _stale(dump: IptablesDump, svc: Service, reached: set[str]) -> tuple[StaleChain, ...]:
    return iptables_names.stale_chains(svc, dump, reached)


def _services(dump: IptablesDump) -> list[Service]:
    refs = {iptables_names.owner(c) for c in dump.first_comments("nat", iptables_names.SERVICE_CHAIN_PREFIXES).values()}
    return [Service(namespace=ref.split("/", 1)[0], name=ref.split("/", 1)[1], ports=(ServicePort(port=80),))
            for ref in sorted(r for r in refs if r and "/" in r)]


def test_the_crafted_dump_by_search_and_by_index() -> None:
    whole, lazy = _both(CRAFTED)
    web = Service(namespace="ns", name="web", ports=(ServicePort(name="http", port=80),))
    reached = {"KUBE-SVC-AAAAAAAAAAAAAAAA", "KUBE-SEP-CCCCCCCCCCCCCCCC"}
    got = _stale(lazy, web, reached)
    assert [c.chain for c in got] == ["KUBE-SVC-OLDOLDOLDOLDOLDO", "KUBE-SEP-OLDOLDOLDOLDOLDO"]
    assert got == _stale(whole, web, reached)
    assert lazy.first_comments_mentioning("nat", "ns/web", iptables_names.SERVICE_CHAIN_PREFIXES) == {
        "KUBE-SVC-AAAAAAAAAAAAAAAA": "ns/web:http", "KUBE-SVC-OLDOLDOLDOLDOLDO": "ns/web:old",
        "KUBE-SEP-OLDOLDOLDOLDOLDO": "ns/web:old", "KUBE-SVC-WEB2WEB2WEB2WEB2": "ns/web2:http",
        "KUBE-SVC-DBDBDBDBDBDBDBDB": "ns/db:sql", "KUBE-SEP-CCCCCCCCCCCCCCCC": "ns/web:http"}
    assert whole.first_comments_mentioning("nat", "ns/web", iptables_names.SERVICE_CHAIN_PREFIXES) is None


def test_many_services_switch_to_the_index_with_the_same_answers() -> None:
    whole, lazy = _both(CRAFTED)
    services = [Service(namespace="ns", name=n, ports=(ServicePort(port=80),)) for n in ("web", "web2", "db")]
    for _ in range(iptables_names._ASKED_ALONE + 2):  # past the searches, the index answers
        for svc in services:
            assert _stale(lazy, svc, set()) == _stale(whole, svc, set())
    assert "owners" in lazy.table("nat").memo  # type: ignore[union-attr]


def test_a_sweep_asks_the_index_from_the_first_service(monkeypatch: pytest.MonkeyPatch) -> None:
    # audit asks about every Service: a search of the text per Service (in every worker) would come first for
    # nothing, the owner index being built anyway.
    _whole, lazy = _both(CRAFTED)
    nat = lazy.table("nat")
    assert nat is not None
    nat.memo[SWEEP] = True
    web = Service(namespace="ns", name="web", ports=(ServicePort(name="http", port=80),))
    searched: list[str] = []
    real = IptablesDump.first_comments_mentioning

    def spy(self: IptablesDump, table: str, needle: str, prefixes: tuple[str, ...]) -> object:
        searched.append(needle)
        return real(self, table, needle, prefixes)

    monkeypatch.setattr(IptablesDump, "first_comments_mentioning", spy)
    got = _stale(lazy, web, {"KUBE-SVC-AAAAAAAAAAAAAAAA", "KUBE-SEP-CCCCCCCCCCCCCCCC"})
    assert [c.chain for c in got] == ["KUBE-SVC-OLDOLDOLDOLDOLDO", "KUBE-SEP-OLDOLDOLDOLDOLDO"]
    assert searched == [] and "owners" in nat.memo
    del nat.memo[SWEEP]  # and without the sweep, the first Service is searched for
    _stale(lazy, Service(namespace="ns", name="db", ports=()), set())
    assert searched == ["ns/db"]


@pytest.mark.parametrize("path", DUMPS, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_every_dump_gives_the_same_stale_chains_both_ways(path: Path) -> None:
    whole, lazy = _both(path.read_text())
    services = _services(whole)
    assert services, "a nat table whose chains name no Service"
    for svc in services[:iptables_names._ASKED_ALONE]:
        assert _stale(lazy, svc, set()) == _stale(whole, svc, set()), svc.ref


@pytest.mark.parametrize("path", [*DUMPS, None], ids=lambda p: str(p.relative_to(FIXTURES)) if p else "crafted")
def test_left_over_chains_are_the_same_read_from_the_text_or_from_the_rules(path: Path | None) -> None:
    """audit's node-wide stale chains read a big dump's comments one chain at a time, by name."""
    whole, lazy = _both(path.read_text() if path is not None else CRAFTED)
    services = _services(whole)
    for keep in (services, services[: len(services) // 2], []):  # fewer Services: more chains are left over
        current = iptables_names.current_suffixes(tuple(keep))
        got = iptables_names.orphan_chains(lazy, tuple(keep), current)
        assert got == iptables_names.orphan_chains(whole, tuple(keep), current)
        assert all(c.comment == whole.first_comments("nat", iptables_names.SERVICE_CHAIN_PREFIXES)[c.chain]
                   for c in got)
    assert iptables_names.unreferenced_endpoint_chains(lazy) == iptables_names.unreferenced_endpoint_chains(whole)
    if path is None:  # the old endpoint chain is still jumped to; without its Service chain's rule it is not
        assert iptables_names.unreferenced_endpoint_chains(lazy) == ()
        cut = "\n".join(line for line in CRAFTED.split("\n") if not line.startswith("-A KUBE-SVC-OLD"))
        assert [(c.chain, c.comment, c.rule_count) for c in iptables_names.unreferenced_endpoint_chains(
            _both(cut)[1])] == [("KUBE-SEP-OLDOLDOLDOLDOLDO", "ns/web:old", 1)]


def test_the_owner_index_keeps_names_and_rereads_comments() -> None:
    _whole, lazy = _both(CRAFTED)
    for _ in range(iptables_names._ASKED_ALONE):
        iptables_names.stale_chains(Service(namespace="ns", name="x", ports=()), lazy, set())
    web = Service(namespace="ns", name="web", ports=(ServicePort(name="http", port=80),))
    got = iptables_names.stale_chains(web, lazy, {"KUBE-SVC-AAAAAAAAAAAAAAAA"})
    assert [(c.chain, c.comment, c.rule_count) for c in got] == [
        ("KUBE-SVC-OLDOLDOLDOLDOLDO", "ns/web:old", 1), ("KUBE-SEP-OLDOLDOLDOLDOLDO", "ns/web:old", 1),
        ("KUBE-SEP-CCCCCCCCCCCCCCCC", "ns/web:http", 1)]
    assert lazy.table("nat").memo["owners"]["ns/web"] == [  # type: ignore[union-attr,index]
        "KUBE-SVC-AAAAAAAAAAAAAAAA", "KUBE-SVC-OLDOLDOLDOLDOLDO", "KUBE-SEP-OLDOLDOLDOLDOLDO",
        "KUBE-SEP-CCCCCCCCCCCCCCCC"]
