"""``svctrace trace`` end to end on snapshots: outcomes, JSON shape, source choice and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from svctrace.cli.app import app
from svctrace.cli.trace import parse_destination
from svctrace.errors import UsageError

OVERALL = str(Path(__file__).resolve().parents[1] / "fixtures" / "overall")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _json(runner: CliRunner, *args: str) -> dict[str, object]:
    result = runner.invoke(app, ["trace", *args, "-o", "json"])
    assert result.exit_code == 0, result.output
    doc: dict[str, object] = json.loads(result.output)
    return doc


def test_cluster_ip_from_a_pod_splits_evenly(runner: CliRunner) -> None:
    doc = _json(runner, "--dst", "10.99.198.177:80", "--from-pod", "default/client-76b6556d97-xk7mg",
                "--from", "demo")
    outcomes = doc["outcomes"]
    assert isinstance(outcomes, list)
    assert sorted((o["verdict"], o["destination"], o["probability"], o["masquerade"]) for o in outcomes) == [
        ("DNAT", "10.244.187.102:80", 0.5, False), ("DNAT", "10.244.209.149:80", 0.5, False)]
    assert doc["packet"] == {"src": "10.244.187.103", "dst": "10.99.198.177", "dport": 80, "sport": 40000,
                             "protocol": "tcp", "origin": "pod", "inInterface": None}
    path = outcomes[0]["path"]
    assert {"table", "chain", "rule"} <= set(path[0])
    assert any(step["chain"].startswith("KUBE-SEP-") and step["action"].startswith("DNAT") for step in path)
    assert any("runs on xianchaonode2" in w for w in doc["warnings"])  # type: ignore[union-attr]


def test_nodeport_from_outside_is_masqueraded(runner: CliRunner) -> None:
    doc = _json(runner, "--dst", "192.168.1.63:30380", "--from-external", "--from", "demo")
    outcomes = doc["outcomes"]
    assert isinstance(outcomes, list)
    assert {(o["destination"], o["masquerade"]) for o in outcomes} == {
        ("10.244.102.90:80", True), ("10.244.121.23:80", True)}


def test_no_endpoints_is_rejected(runner: CliRunner) -> None:
    doc = _json(runner, "--dst", "172.30.0.46:80", "--src", "10.0.0.5", "--from", OVERALL)
    outcomes = doc["outcomes"]
    assert isinstance(outcomes, list)
    assert [(o["verdict"], o["destination"], o["probability"]) for o in outcomes] == [("REJECT", None, 1.0)]


def test_kube_proxy_test_semantics_are_labelled(runner: CliRunner) -> None:
    doc = _json(runner, "--dst", "172.30.0.44:80", "--src", "10.0.0.5", "--from", OVERALL, "--kube-proxy-test")
    assert doc["semantics"] == "kube-proxy-test"
    assert doc["kubeProxyTest"] == {"output": "10.180.0.4:80, 10.180.0.5:80", "masq": False}


def test_tree_names_the_pods(runner: CliRunner) -> None:
    result = runner.invoke(app, ["trace", "--dst", "10.99.198.177:80", "--from-pod",
                                 "default/client-76b6556d97-xk7mg", "--from", "demo"])
    assert result.exit_code == 0, result.output
    assert "DNAT -> 10.244.187.102:80  pod default/my-nginx-5b56ccd65f-7xzr4  xianchaonode2" in result.output
    assert "nat PREROUTING #2  jump -> KUBE-SERVICES" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--dst", "10.0.0.1"], "is not IP:PORT"),
    (["--dst", "nginx:80"], "is not an IP address"),
    (["--dst", "10.0.0.1:80", "--from-pod", "default/nope"], "pod default/nope is not in"),
    (["--dst", "10.0.0.1:80", "--from-node", "--from-external"], "only one of"),
    (["--dst", "10.0.0.1:80", "--proto", "icmp"], "protocol 'icmp' is not supported"),
])
def test_errors_are_one_line(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["trace", *args, "--from", "demo"])
    assert result.exit_code == 2
    assert result.output.startswith("svctrace: error: ") and message in result.output.splitlines()[0]


def test_parse_destination() -> None:
    assert parse_destination("[fd00::10]:443") == ("fd00::10", 443)
    with pytest.raises(UsageError):
        parse_destination("[fd00::10]")


def test_each_outcome_summarises_its_journey(runner: CliRunner) -> None:
    result = runner.invoke(app, ["trace", "--dst", "192.168.1.63:30380", "--from-external", "--from", "demo"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.replace("│", " ").split())
    assert ("nat: PREROUTING > cali-PREROUTING > KUBE-SERVICES > KUBE-NODEPORTS > KUBE-EXT-J5QV2XWG4FEBPH3Q > "
            "KUBE-MARK-MASQ > KUBE-SVC-J5QV2XWG4FEBPH3Q > KUBE-SEP-XRUO23GXY67LXLQN | routing: forward (FORWARD) | "
            "filter: FORWARD > cali-FORWARD > KUBE-FORWARD | nat: POSTROUTING") in flat


def test_a_wrapped_journey_goes_on_under_its_own_start(runner: CliRunner) -> None:
    # CliRunner's terminal is 80 columns: the journey wraps; each piece starts where the first did.
    result = runner.invoke(app, ["trace", "--dst", "192.168.1.63:30380", "--from-external", "--from", "demo"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    first = next(i for i, line in enumerate(lines) if "nat: PREROUTING" in line)
    start = lines[first].index("nat: PREROUTING")
    journey = [lines[first]]
    for line in lines[first + 1:]:
        if line[start - 2:start] != "  " or not line[start:start + 1].strip():
            break
        journey.append(line)
    assert len(journey) > 1, "the journey should wrap at 80 columns"
    assert "KUBE-SEP-XRUO23GXY67LXLQN" in " ".join(journey)
    assert all(set(line[:start].replace("│", " ")) == {" "} for line in journey[1:])
    assert [line for line in lines if line != line.rstrip()] == []  # no trailing spaces anywhere
