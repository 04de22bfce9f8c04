"""Every era and real-world fixture has its provenance and expectations, and the expectations follow the schema.

The schema is tests/fixtures/realworld/README.md's; these checks keep the corpus machine-checkable (so a test
can run svctrace on every fixture) and honest (uncertain outcomes carry conditions, shares add up, chain
identities recompute from their hash input).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from svctrace.kubeproxy import naming

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ERAS = sorted(p for p in (FIXTURES / "eras").iterdir() if p.is_dir() and p.name.startswith("v"))
REALWORLD = sorted(p for p in (FIXTURES / "realworld").iterdir() if p.is_dir())
ALL = ERAS + REALWORLD

KINDS = {"era", "realworld", "kube-proxy-test"}
FORMATS = {"iptables-save", "iptables-save-counters", "iptables-save-grep", "iptables-S", "iptables-restore-input",
           "iptables-L", "ipvsadm-Ln", "ipvsadm-Sn", "nft-list-ruleset", "nft-json", "journal-log", "notes"}
MODES = {"iptables", "ipvs", "nftables", "unknown"}
PARSE = {"ok", "partial", "refuse"}
FRONTEND_TYPES = {"ClusterIP", "ExternalIP", "LoadBalancer", "NodePort"}
FRONTEND_VERDICTS = {"forwarded", "rejected", "dropped", "untranslated", "not-programmed", "uncertain"}
TRACE_VERDICTS = {"DNAT", "ACCEPT", "REJECT", "DROP"}
ORIGINS = {"pod", "node", "external"}
PROTOS = {"tcp", "udp", "sctp"}
ANSWERS = {"reachable", "unreachable", "uncertain"}
AUDIT_STATES = {"programmed", "drifted", "not-programmed", "unknown"}
TOP_KEYS = {"schema", "fixture", "kind", "snapshot", "format", "truncated", "parse", "parse_error", "mode",
            "kube_proxy", "chains", "node_addresses", "note", "svc", "trace", "why_unreachable", "audit",
            "cannot_know"}
TOLERANCE = 0.001
HOSTPORT = re.compile(r"^\d{1,3}(\.\d{1,3}){3}:\d+$")


def load(folder: Path) -> dict[str, Any]:
    doc = yaml.safe_load((folder / "expectations.yaml").read_text())
    assert isinstance(doc, dict), f"{folder.name}: expectations.yaml is not a mapping"
    return doc


def is_unknown(value: object) -> bool:
    return value == "unknown"


def check_frontend(where: str, fe: dict[str, Any]) -> None:
    assert fe["type"] in FRONTEND_TYPES, where
    assert isinstance(fe["ip"], str) and isinstance(fe["port"], int) and fe["proto"] in PROTOS, where
    assert fe["verdict"] in FRONTEND_VERDICTS, f"{where}: verdict {fe['verdict']!r}"
    assert fe.get("entry", "shown") in ("shown", "not-in-dump"), where
    endpoints = fe.get("endpoints", [])
    if fe["verdict"] == "forwarded":
        assert endpoints, f"{where}: a forwarded frontend lists its endpoints"
        total = sum(ep["share"] for ep in endpoints)
        assert math.isclose(total, 1.0, abs_tol=TOLERANCE * len(endpoints)), f"{where}: shares add up to {total}"
    for ep in endpoints:
        assert 0 < ep["share"] <= 1, where
        assert is_unknown(ep["ip"]) or re.match(r"^\d", str(ep["ip"])), where
        if is_unknown(ep["ip"]):
            assert ep.get("via", "").startswith("KUBE-SEP-"), f"{where}: an unknown endpoint names its SEP chain"
    if "affinity" in fe:
        assert fe["affinity"]["type"] == "ClientIP" and fe["affinity"]["seconds"] > 0, where


def check_trace(where: str, t: dict[str, Any]) -> None:
    p = t["packet"]
    assert p["origin"] in ORIGINS and p["proto"] in PROTOS and isinstance(p["dport"], int), where
    assert t["outcomes"], f"{where}: no outcomes"
    uncertain = t.get("uncertain", False)
    numbers = []
    for o in t["outcomes"]:
        assert o["verdict"] in TRACE_VERDICTS, f"{where}: verdict {o['verdict']!r}"
        dest = o["destination"]
        if o["verdict"] == "DNAT":
            assert is_unknown(dest) or HOSTPORT.match(dest), f"{where}: DNAT destination {dest!r}"
            if is_unknown(dest):
                assert o.get("via", "").startswith("KUBE-SEP-"), f"{where}: an unknown destination names its chain"
        else:
            assert dest is None, f"{where}: only DNAT has a destination"
        assert o["masquerade"] in (True, False, "unknown"), where
        if uncertain:
            assert o.get("condition"), f"{where}: every branch of an uncertain trace has a condition"
            assert is_unknown(o["probability"]), f"{where}: uncertain branches carry no made-up probability"
        elif not is_unknown(o["probability"]):
            numbers.append(o["probability"])
    if not uncertain and len(numbers) == len(t["outcomes"]):
        assert math.isclose(sum(numbers), 1.0, abs_tol=TOLERANCE * len(numbers)), f"{where}: {sum(numbers)}"


def check_chains(where: str, chains: dict[str, Any]) -> None:
    for chain, ident in chains.items():
        assert re.match(r"^KUBE-(SVC|SVL|EXT|FW|XLB)-[A-Z2-7]{16}$", chain), f"{where}: {chain}"
        assert {"service", "port", "protocol", "hash_input"} <= set(ident), f"{where}: {chain}"
        if ident["hash_input"] == "unknown":
            assert ident.get("note"), f"{where}: {chain}: say why the hash input is unknown"
            continue
        # The hash input is the Service port name plus the protocol; it must give this chain's suffix.
        suffix = chain.split("-", 2)[2]
        spn = ident["hash_input"][: -len(ident["protocol"])]
        assert naming.ipt_suffix(spn, ident["protocol"]) == suffix, f"{where}: {chain} is not {ident['hash_input']!r}"
        assert spn.startswith(ident["service"]), f"{where}: {chain}"


@pytest.mark.parametrize("folder", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_has_provenance_and_expectations(folder: Path) -> None:
    provenance = folder / ("PROVENANCE.md" if folder.parent.name == "eras" else "provenance.md")
    assert provenance.is_file() and len(provenance.read_text()) > 200, f"{folder.name}: provenance missing or empty"
    assert (folder / "expectations.yaml").is_file()
    doc = load(folder)
    assert doc["fixture"] == f"{folder.parent.name}/{folder.name}"
    snap = doc["snapshot"]
    if "from" in snap:
        assert snap["from"] == "." and (folder / "node").is_dir(), folder.name
        if snap["api"]:
            assert any((folder / "api").iterdir()), folder.name
    else:
        files = snap.get("files") or [snap["file"]]
        for name in files:
            assert (folder / name).is_file(), f"{folder.name}: {name} missing"


@pytest.mark.parametrize("folder", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_expectations_follow_the_schema(folder: Path) -> None:
    doc = load(folder)
    where = folder.name
    assert set(doc) <= TOP_KEYS, f"{where}: unknown keys {set(doc) - TOP_KEYS}"
    assert doc["schema"] == 1 and doc["kind"] in KINDS and doc["mode"] in MODES, where
    if doc["kind"] != "era":
        assert doc["format"] in FORMATS and doc["parse"] in PARSE and isinstance(doc["truncated"], bool), where
        if doc["parse"] == "refuse":
            assert doc["parse_error"]["line"] >= 1 and doc["parse_error"]["next_step"], where
            assert doc["audit"] is None and not doc["svc"] and not doc["trace"], f"{where}: refused text has no answers"
    check_chains(where, doc.get("chains") or {})
    for s in doc["svc"]:
        assert "service" in s or "cluster_ip" in s, where
        if doc["snapshot"].get("api") is False:
            assert "cluster_ip" in s, f"{where}: node-only dumps look Services up by ClusterIP"
        for fe in s["frontends"]:
            check_frontend(f"{where}: {s.get('service') or s['cluster_ip']}", fe)
    for t in doc["trace"]:
        check_trace(f"{where}: trace {t['name']!r}", t)
    for w in doc["why_unreachable"]:
        assert w["answer"] in ANSWERS, where
    audit = doc["audit"]
    if audit is not None:
        assert isinstance(audit["objects_collected"], bool) and audit["exit"] in (0, 1, 2), where
        assert all(v in AUDIT_STATES for v in audit["services"].values()), where
        if not audit["objects_collected"] and not audit["services"]:
            assert audit["exit"] == 2, f"{where}: an audit that can check nothing exits 2"
    assert doc["cannot_know"], f"{where}: say what the dump cannot tell"
    for c in doc["cannot_know"]:
        assert c["what"] and c["answer"], where


@pytest.mark.parametrize("folder", ERAS, ids=lambda p: p.name)
def test_era_fixture_is_complete(folder: Path) -> None:
    for name in ("rules-as-written.txt", "api/objects.json", "node/meta.json", "node/ip-addr.json"):
        assert (folder / name).is_file(), f"{folder.name}: {name}"
    node = {p.name for p in (folder / "node").iterdir()}
    mode = load(folder)["mode"]
    wanted = {"iptables": {"iptables-save.txt"}, "ipvs": {"iptables-save.txt", "ipvsadm.txt", "ipset.txt"},
              "nftables": {"nft.json"}}[mode]
    assert wanted <= node, f"{folder.name}: {wanted - node}"


def test_corpus_spans_the_eras_and_platforms() -> None:
    """The corpus keeps its breadth: enough real dumps, every proxy mode, and the formats users paste."""
    real = [load(f) for f in REALWORLD if load(f)["kind"] == "realworld"]
    assert len(real) >= 12
    assert {d["mode"] for d in real} >= {"iptables", "ipvs"}
    assert {d["format"] for d in real} >= {"iptables-save", "ipvsadm-Ln", "nft-list-ruleset", "iptables-L"}
    assert {load(f)["mode"] for f in ERAS} == {"iptables", "ipvs", "nftables"}
