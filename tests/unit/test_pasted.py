"""Pasted dumps, read by content whatever the file is called, answer as the snapshot they were printed from.

tests/fixtures/pasted/ holds what the real tools print for era fixtures (made in a network namespace by
`nft list ruleset`, `iptables -t nat -S` and `iptables -S` after loading tests/fixtures/eras/v1.33-nft and
v1.26; the two ipvsadm -Ln listings are laid out by hand from eras/v1.25-ipvs, as this kernel has no IPVS).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from svctrace.cli.app import app
from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.errors import InputError
from svctrace.model.snapshot import NodeFile
from svctrace.parsers.pasted import read_pasted

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PASTED = FIXTURES / "pasted"
ERAS = FIXTURES / "eras"
CLUSTER_IPS = {"10.96.0.20": "demo/web:http", "10.96.0.21": "demo/hello", "10.96.0.22": "demo/shop:http",
               "10.96.0.23": "demo/lb-local:http", "10.96.0.24": "demo/sticky:http"}


def _svc(target: str, source: Path | str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["svc", target, "--from", str(source), "-o", "json"])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


def _leaves(hops: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for hop in hops:
        if hop["hops"]:
            out += _leaves(hop["hops"])
        else:
            ep = hop["endpoint"]
            out.append((hop["verdict"], f"{ep['ip']}:{ep['port']}" if ep else None))
    return sorted(out, key=str)


def _frontends(doc: dict[str, Any]) -> dict[tuple[str, str, int], tuple[str, list[tuple[str, str | None]]]]:
    return {(f["type"], f["ip"], f["port"]): (f["verdict"], _leaves(f["hops"])) for f in doc["frontends"]}


@pytest.mark.parametrize(("pasted", "era"), [("iptables-t-nat-S-v1.26.txt", "v1.26"),
                                             ("nft-list-ruleset-v1.33.txt", "v1.33-nft")])
def test_a_pasted_dump_answers_as_its_snapshot(pasted: str, era: str) -> None:
    for ip, identity in CLUSTER_IPS.items():
        from_paste = _svc(ip, PASTED / pasted)
        from_snapshot = _svc(ip, ERAS / era)
        assert from_paste["fromRules"]["identity"] == identity
        assert "fromRules" not in from_snapshot
        want = {k: v for k, v in _frontends(from_snapshot).items() if k[0] == "ClusterIP"}
        assert {k: v for k, v in _frontends(from_paste).items() if k[0] == "ClusterIP"} == want


def test_iptables_S_takes_its_table_from_the_pasted_command_else_from_its_chains() -> None:
    nat = read_pasted((PASTED / "iptables-t-nat-S-v1.26.txt").read_text(), "nat.txt")
    assert nat.format == "iptables-S"
    assert any("-t nat" in w for w in nat.warnings)
    filt = read_pasted((PASTED / "iptables-S-filter-v1.26.txt").read_text(), "filter.txt")
    dump = filt.parsed[NodeFile.IPTABLES]
    assert set(dump.tables) == {"filter"}  # type: ignore[attr-defined]
    assert any("read as the filter table, since its chains" in w for w in filt.warnings)


@pytest.mark.parametrize("pasted", ["ipvsadm-Ln-v1.25.txt", "ipvsadm-Ln-stats-v1.25.txt"])
def test_ipvsadm_listings_answer_by_address(pasted: str) -> None:
    doc = _svc("10.96.0.21:80", PASTED / pasted)
    assert doc["mode"] == "ipvs"
    (fe,) = doc["frontends"]
    assert fe["verdict"] == "forwarded"
    assert [leaf[1] for leaf in _leaves(fe["hops"])] == ["10.244.1.6:8080", "10.244.2.8:8080"]
    snapshot = load_snapshot(str(PASTED / pasted))
    if "stats" in pasted:
        assert any("--stats/--rate prints no scheduler" in w for w in snapshot.warnings)


def test_ip6tables_save_is_read_as_the_ipv6_dump(tmp_path: Path) -> None:
    f = tmp_path / "anything.log"
    f.write_text((Path(__file__).resolve().parents[2] / "svctrace/demo/tutorial/node/ip6tables-save.txt").read_text())
    snapshot = load_snapshot(str(f))
    assert snapshot.ip6tables is not None and snapshot.iptables is None


def test_a_paste_cut_mid_line_reads_every_whole_line_and_says_where_it_stops() -> None:
    text = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d 10.0.0.1/32 -p tcp -m tcp --dport 80 -j DROP\n-A KUBE-SE"
    pasted = read_pasted(text, "cut.txt")
    dump = pasted.parsed[NodeFile.IPTABLES]
    assert dump.partial is not None  # type: ignore[attr-defined]
    assert len(dump.chain("nat", "KUBE-SERVICES").rules) == 1  # type: ignore[attr-defined]
    assert any("stops mid-line at line 4" in w for w in pasted.warnings)
    assert any("table nat has no COMMIT" in w for w in pasted.warnings)
    whole = read_pasted("*nat\n:X - [0:0]\n-A X -j RETURN\nCOMMIT", "whole.txt")
    assert whole.parsed[NodeFile.IPTABLES].partial is None  # type: ignore[attr-defined]


def test_other_nft_tables_are_skipped_with_a_note() -> None:
    text = (PASTED / "nft-list-ruleset-v1.33.txt").read_text()
    text = "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n" \
           "\t\ttcp dport 22 accept\n\t}\n}\n" + text
    pasted = read_pasted(text, "ruleset.txt")
    assert any("table inet filter (line 1) is not kube-proxy's; skipped" in w for w in pasted.warnings)
    assert pasted.parsed[NodeFile.NFT].kube_proxy(4) is not None  # type: ignore[attr-defined]


# What is refused, by what the error says: the pasted text, its refused line marked with "<<".
REFUSED = {
    "iptables -L": "Chain INPUT (policy ACCEPT)<<\ntarget     prot opt source               destination",
    "an `iptables -L` listing": "$ iptables -t nat -L -n<<\nChain PREROUTING (policy ACCEPT)",
    "a log": "ok\nNov 14 11:06:11 host kube-proxy[1]: -A KUBE-SERVICES -j X<<",
    "nor a rule dump": "hello world<<",
    "Kubernetes objects": "apiVersion: v1<<\nkind: Service",
    "unterminated quote": '*nat\n:X - [0:0]\n-A X -m comment --comment "abc -j RETURN<<\nCOMMIT',
}


@pytest.mark.parametrize("says", sorted(REFUSED))
def test_what_is_not_understood_is_refused_naming_the_line(says: str) -> None:
    lines = REFUSED[says].split("\n")
    line = next(n for n, text in enumerate(lines, 1) if text.endswith("<<"))
    with pytest.raises(InputError) as err:
        read_pasted("\n".join(text.removesuffix("<<") for text in lines) + "\n", "paste.txt")
    assert f"paste.txt:{line}:" in err.value.message and says in err.value.message
    assert err.value.hint


def test_why_unreachable_on_a_node_only_dump_answers_from_the_rules() -> None:
    dump = str(FIXTURES / "realworld" / "k8s-47533-flannel-2017" / "dump.txt")
    result = CliRunner().invoke(app, ["why-unreachable", "default/kubernetes", "--from", dump, "-o", "json"])
    doc = json.loads(result.output)
    assert result.exit_code == 0 and doc["verdict"] == "reachable"
    assert doc["graph"]["fromRules"]["identity"] == "default/kubernetes:https" and doc["notChecked"]
    result = CliRunner().invoke(app, ["why-unreachable", "10.96.0.99:80", "--from", dump, "-o", "json"])
    assert result.exit_code == 1 and "no Service has the address" not in result.output
    assert json.loads(result.output)["verdict"] == "degraded"  # the fragment may not show its rules
