"""svctrace's answers on every era and real-world fixture are the ones their expectations.yaml give.

Each folder of tests/fixtures/eras/ and tests/fixtures/realworld/ (schema: tests/fixtures/realworld/README.md)
is given to svctrace as a user would: the snapshot folder, or the pasted file itself with ``--from FILE``.
``svc``, ``why-unreachable`` and ``audit`` run through the CLI (JSON output); traces go through the Python API
(``trace_packet``) on the snapshot the CLI loads, because a pod's packet in a node-only dump has no pod to
name on the command line. Every folder is checked; a folder with nothing to check fails.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from svctrace.cli.app import app
from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.model.snapshot import HostAddress, Snapshot
from svctrace.trace import Packet, trace_packet

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FOLDERS = sorted([p for p in (FIXTURES / "eras").iterdir() if p.is_dir() and p.name.startswith("v")]
                 + [p for p in (FIXTURES / "realworld").iterdir() if p.is_dir()])
TOL = 0.001
VERDICTS = {  # an expected frontend verdict -> the svctrace verdicts that say it
    "forwarded": {"forwarded"}, "rejected": {"rejected"}, "dropped": {"dropped"},
    "untranslated": {"untranslated"}, "not-programmed": {"not-programmed"}, "uncertain": {"unknown"},
}


def _doc(folder: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((folder / "expectations.yaml").read_text())
    return doc


def _sources(folder: Path, doc: dict[str, Any]) -> list[str]:
    snap = doc["snapshot"]
    if "from" in snap:
        return [str(folder / snap["from"])]
    if "file" in snap:
        return [str(folder / snap["file"])]
    return [str(folder / f) for f in snap["files"]]


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out = _cli(*args, "-o", "json")
    assert out.lstrip().startswith("{"), f"svctrace {' '.join(args)}: exit {code}: {out[:800]}"
    doc: dict[str, Any] = json.loads(out)
    return code, doc


# -- svc ----------------------------------------------------------------------------------------------


def _views(hop: dict[str, Any], share: float = 1.0) -> list[list[tuple[str, float]]]:
    """The endpoint sets a hop can lead to: one per alternative (children with a "when"), shares multiplied."""
    here = share * (hop["share"] if hop["share"] is not None else 1.0)
    if hop["verdict"] == "DNAT":
        ep = hop["endpoint"]
        key = f"{ep['ip']}:{ep['port']}" if ep is not None else f"unknown via {hop['name']}"
        return [[(key, here)]]
    if hop["verdict"] in ("DROP", "REJECT"):
        return [[(hop["verdict"], here)]]
    children = hop["hops"]
    if not children:
        return [[]]
    alternatives = [c for c in children if c["when"] is not None]
    together = [c for c in children if c["when"] is None]
    views: list[list[tuple[str, float]]] = []
    for c in alternatives:
        views += _views(c, here)
    if together:
        combined: list[list[tuple[str, float]]] = [[]]
        for c in together:
            combined = [a + b for a in combined for b in _views(c, here)]
        views += combined
    return views


def _endpoint_key(ep: dict[str, Any]) -> str:
    if ep["ip"] == "unknown":
        return f"unknown via {ep['via']}"
    return f"{ep['ip']}:{ep['port']}"


def _same_endpoints(view: list[tuple[str, float]], expected: list[dict[str, Any]]) -> bool:
    got: dict[str, float] = {}
    for key, share in view:
        got[key] = got.get(key, 0.0) + share
    want = {_endpoint_key(e): e["share"] for e in expected}
    return set(got) == set(want) and all(abs(got[k] - want[k]) <= TOL for k in want)


def _frontend(graph: dict[str, Any], want: dict[str, Any]) -> dict[str, Any] | None:
    for fe in graph["frontends"]:
        if fe["type"] != want["type"] or fe["port"] != want["port"] or fe["protocol"].lower() != want["proto"]:
            continue
        if fe["ip"] == want["ip"] or (want["type"] == "NodePort" and fe["ip"] == "*"):
            found: dict[str, Any] = fe
            return found
    return None


def check_svc(where: str, source: str, want: dict[str, Any]) -> None:
    target = want.get("service") or want["cluster_ip"]
    code, graph = _json("svc", target, "--from", source)
    assert code == 0, f"{where}: svc {target}: exit {code}"
    if "identity" in want and graph.get("fromRules"):
        assert graph["fromRules"]["identity"] in (want["identity"], None), f"{where}: identity"
    for fw in want["frontends"]:
        fe = _frontend(graph, fw)
        label = f"{where}: {target} {fw['type']} {fw['ip']}:{fw['port']}/{fw['proto']}"
        shown = [(f["type"], f["ip"], f["port"]) for f in graph["frontends"]]
        assert fe is not None, f"{label}: no such frontend in {shown}"
        allowed = set(VERDICTS[fw["verdict"]])
        if "by_origin" in fw:
            allowed.add("partial")
        assert fe["verdict"] in allowed, f"{label}: verdict {fe['verdict']}, expected {fw['verdict']}"
        if fw.get("entry") == "not-in-dump":
            assert any("not in the dump" in n for n in fe["notes"]), f"{label}: the missing entry is not said"
        if fw["verdict"] == "forwarded":
            views = [v for hop in fe["hops"] for v in _views(hop)]
            assert any(_same_endpoints([x for x in v if x[0] not in ("DROP", "REJECT")], fw["endpoints"])
                       for v in views), f"{label}: endpoints {views}, expected {fw['endpoints']}"
        if fw.get("affinity"):
            text = json.dumps(fe)
            assert f"ClientIP, {fw['affinity']['seconds']}s" in text, f"{label}: affinity"


# -- trace --------------------------------------------------------------------------------------------


def _with_addresses(snapshot: Snapshot, addresses: list[str]) -> Snapshot:
    node = replace(snapshot.node, addresses=tuple(HostAddress("eth0", a, 24, 6 if ":" in a else 4)
                                                  for a in addresses))
    return replace(snapshot, node=node)


def check_trace(where: str, snapshot: Snapshot, want: dict[str, Any]) -> None:
    p = want["packet"]
    packet = Packet(src=p["src"], dst=p["dst"], dport=p["dport"], protocol=p["proto"], origin=p["origin"],
                    in_interface=p.get("in_interface"))
    result = trace_packet(snapshot, packet)
    label = f"{where}: trace {want['name']!r}"
    got: dict[tuple[str, str | None, bool], list[Any]] = {}
    for o in result.outcomes:
        dest = o.destination if o.destination is not None else (f"unknown via {o.via}" if o.via else None)
        key = (o.verdict, dest, o.masquerade)
        got[key] = got.get(key, [])
        got[key].append(o)
    expected = set()
    for o in want["outcomes"]:
        dest = o["destination"]
        if dest == "unknown":
            dest = f"unknown via {o['via']}"
        masq = o["masquerade"]
        matching = [k for k in got if k[0] == o["verdict"] and k[1] == dest and (masq == "unknown" or k[2] == masq)]
        assert matching, f"{label}: no outcome {o['verdict']} {dest} masquerade={masq}; got {sorted(map(str, got))}"
        expected.update(matching)
        found = [x for k in matching for x in got[k]]
        if o["probability"] == "unknown":
            assert all(x.probability is None and x.conditions for x in found), \
                f"{label}: {dest} should be conditional with an unknown probability: {found}"
        else:
            total = sum(x.probability or 0.0 for x in found)
            assert abs(total - o["probability"]) <= TOL, \
                f"{label}: {dest} probability {total}, expected {o['probability']}"
    extra = [k for k in got if k not in expected and any((x.probability or 0) > 0 or x.conditions for x in got[k])]
    assert not extra, f"{label}: outcomes not expected: {extra}"


# -- why-unreachable and audit ------------------------------------------------------------------------

ANSWER = {"reachable": {0}, "unreachable": {1}, "uncertain": {0, 1}}


def check_why(where: str, source: str, want: dict[str, Any]) -> None:
    args = ["why-unreachable", want["target"], "--from", source]
    if "src" in want.get("from", {}):
        args += ["--src", want["from"]["src"]]
    if "pod" in want.get("from", {}):
        args += ["--from-pod", want["from"]["pod"]]
    code, doc = _json(*args)
    label = f"{where}: why-unreachable {want['target']}"
    assert code in ANSWER[want["answer"]], f"{label}: exit {code} ({doc['verdict']}: {doc['reason']})"
    if want["answer"] == "uncertain":
        assert doc["verdict"] != "reachable" or doc["notChecked"], f"{label}: said certainly reachable"
    assert "no Service" not in doc["reason"] or want["answer"] == "unreachable", f"{label}: {doc['reason']}"
    if "finding" in want:
        codes = [f["code"] for f in doc["findings"]]
        assert want["finding"] in codes, f"{label}: findings {codes}"


def check_audit(where: str, source: str, want: dict[str, Any]) -> dict[str, Any]:
    code, doc = _json("audit", "-A", "--from", source)
    label = f"{where}: audit"
    assert code == want["exit"], f"{label}: exit {code}, expected {want['exit']}: {doc['summary']}"
    assert doc["summary"]["apiCollected"] == want["objects_collected"], label
    states = {s["service"]: s for s in doc["services"]}
    for ref, state in want["services"].items():
        s = states[ref]
        if state == "programmed":
            assert s["programmed"] and not s["drifted"], f"{label}: {ref} {s}"
        elif state == "drifted":
            assert s["drifted"], f"{label}: {ref}"
        elif state == "not-programmed":
            assert not s["programmed"], f"{label}: {ref}"
    for ref, codes in (want.get("findings") or {}).items():
        got = {f["code"] for f in states[ref]["findings"]}
        assert set(codes) <= got, f"{label}: {ref} findings {got}"
    stale = {c["chain"] for c in doc.get("staleChains", [])}
    assert stale == set(want["stale_chains"]), f"{label}: stale chains {stale}"
    return doc


def check_chains(where: str, audit: dict[str, Any], doc: dict[str, Any], text: str) -> int:
    """The Service chains' identities, where the dump can tell them: a name its text mentions, or a well-known one."""
    from svctrace.resolver.iptables_identity import WELL_KNOWN

    shown = {s["chains"]: s for s in audit["servicesInRules"] if s["chains"]}
    checked = 0
    for chain, want in (doc.get("chains") or {}).items():
        if chain not in text:
            continue  # named only in a line the paste cuts short (not read), or in another fragment
        got = shown.get(chain.rsplit("-", 1)[-1])
        assert got is not None, f"{where}: {chain} is not among the Service ports the rules show"
        if want["hash_input"] == "unknown":
            assert "do not check out" in got["how"], f"{where}: {chain}: {got}"
        else:
            spn = want["hash_input"][: -len(want["protocol"])]
            if spn in text or spn in WELL_KNOWN:
                assert got["identity"] == spn, f"{where}: {chain} is {got['identity']}, expected {spn}"
        checked += 1
    return checked


def check_refused(where: str, source: str, want: dict[str, Any]) -> None:
    code, out = _cli("audit", "-A", "--from", source)
    assert code == 2, f"{where}: exit {code}: {out}"
    assert out.startswith("svctrace: error: ") and f":{want['line']}:" in out.splitlines()[0], f"{where}: {out}"
    assert "next:" in out, f"{where}: no next step: {out}"


# -- the test -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", FOLDERS, ids=[f"{p.parent.name}/{p.name}" for p in FOLDERS])
def test_answers_match_the_expectations(folder: Path) -> None:
    doc = _doc(folder)
    where = doc["fixture"]
    sources = _sources(folder, doc)
    checked = 0
    if doc.get("parse") == "refuse":
        for source in sources:
            check_refused(where, source, doc["parse_error"])
        return
    for source in sources:
        code, out = _cli("audit", "-A", "--from", source, "-o", "json")
        assert out.lstrip().startswith("{"), f"{where}: {source}: {out}"
        if doc.get("parse") == "partial":
            warned = json.loads(out).get("warnings", [])
            assert any("line" in w for w in warned), f"{where}: a partial read names no line: {warned}"
        warned = json.loads(out).get("warnings", [])
        if doc.get("truncated"):
            assert any("stops" in w or "elide" in w for w in warned), f"{where}: a cut dump is not said so: {warned}"
        mode = json.loads(out)["summary"]["proxyMode"]
        if doc["mode"] != "unknown" and source == sources[-1]:
            assert mode == doc["mode"], f"{where}: mode {mode}, expected {doc['mode']}"
        if doc.get("audit") is not None:
            audit = check_audit(where, source, doc["audit"])
            if doc.get("chains") and not doc["snapshot"].get("api"):
                text = Path(source).read_text()
                if doc.get("truncated") and not text.endswith("\n"):
                    text = text.rsplit("\n", 1)[0]  # the line the paste stops in is not read
                checked += check_chains(where, audit, doc, text)
            checked += 1
    for want in doc.get("svc") or []:
        errors = []
        for source in sources:
            try:
                check_svc(where, source, want)
                break
            except AssertionError as exc:
                errors.append(str(exc))
        else:
            raise AssertionError("\n".join(errors))
        checked += 1
    for want in doc.get("why_unreachable") or []:
        check_why(where, sources[0], want)
        checked += 1
    if doc.get("trace"):
        snapshot = load_snapshot(sources[0])
        if doc.get("node_addresses"):
            snapshot = _with_addresses(snapshot, doc["node_addresses"])
        for want in doc["trace"]:
            check_trace(where, snapshot, want)
            checked += 1
    assert checked, f"{where}: nothing was checked"
