"""svctrace audit: the summary table, findings grouped by Service, JSON and exit statuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from svctrace.cli.app import app
from svctrace.demo import demo_path

ORPHAN = """\
apiVersion: v1
kind: Service
metadata: {name: orphan, namespace: default}
spec:
  clusterIP: 10.96.7.7
  ports: [{port: 5432}]
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """The demo plus a selectorless Service whose Endpoints were never created."""
    copy = tmp_path / "broken"
    shutil.copytree(demo_path(), copy)
    (copy / "api" / "orphan.yaml").write_text(ORPHAN)
    return copy


def _row(output: str, label: str) -> str:
    line = next(x for x in output.splitlines() if x.strip().startswith(label))
    return line.split()[-1]


def test_the_healthy_demo_passes_with_exit_status_0(runner: CliRunner) -> None:
    result = runner.invoke(app, ["audit", "-A", "--from", "demo"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "svctrace audit: all namespaces  (demo)"
    assert _row(result.output, "Services") == "7"
    assert _row(result.output, "programmed on this node") == "6"  # all but the ExternalName
    assert _row(result.output, "drifted") == "0"
    assert _row(result.output, "without ready endpoints") == "0"
    assert "0 errors, 0 warnings, 0 info" in result.output
    assert result.output.rstrip().endswith("no errors or warnings")


def test_namespace_scope(runner: CliRunner) -> None:
    result = runner.invoke(app, ["audit", "-n", "kube-system", "--from", "demo", "-o", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["namespace"] == "kube-system"
    assert [s["service"] for s in doc["services"]] == ["kube-system/kube-dns"]
    default = json.loads(runner.invoke(app, ["audit", "--from", "demo", "-o", "json"]).output)
    assert default["namespace"] == "default" and default["summary"]["services"] == 5


def test_a_broken_copy_exits_1_and_groups_findings_by_service(runner: CliRunner, broken: Path) -> None:
    result = runner.invoke(app, ["audit", "-A", "--from", str(broken)])
    assert result.exit_code == 1, result.output
    assert _row(result.output, "Services") == "8"
    assert _row(result.output, "without ready endpoints") == "1"
    lines = result.output.splitlines()
    assert any(x.split() == ["selectorless-without-endpoints", "1"] for x in lines)
    start = lines.index("default/orphan: UNREACHABLE")
    assert lines[start + 1].startswith("ERROR   selectorless-without-endpoints  Service default/orphan has no "
                                       "selector and no endpoints")
    assert not any(x.startswith("default/my-nginx:") for x in lines)  # healthy Services are not listed


def test_json_summary_of_the_broken_copy(runner: CliRunner, broken: Path) -> None:
    result = runner.invoke(app, ["audit", "-A", "--from", str(broken), "-o", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["kind"] == "Audit" and doc["summary"]["services"] == 8
    assert doc["summary"]["findingsByCode"]["selectorless-without-endpoints"] == 1
    orphan = next(s for s in doc["services"] if s["service"] == "default/orphan")
    assert orphan["verdict"] == "unreachable" and orphan["withoutEndpoints"] is True
    assert set(orphan["findings"][0]) == {"code", "severity", "title", "evidence", "hint", "hops"}


def test_all_namespaces_and_a_namespace_together_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["audit", "-A", "-n", "default", "--from", "demo"])
    assert result.exit_code == 2
    assert "svctrace: error: give -A or -n NAMESPACE, not both" in result.output


def test_the_summary_has_no_line_of_only_spaces(runner: CliRunner, broken: Path) -> None:
    for args in (["audit", "-A", "--from", str(broken)], ["audit", "-A", "--from", "demo"]):
        lines = runner.invoke(app, args).output.splitlines()
        assert [x for x in lines if x and not x.strip()] == []
        assert "" in lines  # the parts are still set apart, by empty lines


def test_one_error_is_counted_in_the_singular(runner: CliRunner, tmp_path: Path) -> None:
    copy = tmp_path / "one"
    shutil.copytree(demo_path(), copy)
    (copy / "api" / "ext.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: default}\n"
                                           "spec: {type: ExternalName, externalName: 10.1.2.3}\n")
    result = runner.invoke(app, ["audit", "-A", "--from", str(copy)])
    assert result.exit_code == 1, result.output
    assert "1 error, 0 warnings, 0 info" in result.output


@pytest.fixture
def node_only(tmp_path: Path) -> Path:
    """Only the node's files, which docs/snapshot.md calls a valid snapshot."""
    shutil.copytree(demo_path() / "node", tmp_path / "node-only" / "node")
    return tmp_path / "node-only"


def test_a_node_only_snapshot_says_the_objects_were_not_collected_and_exits_2(runner: CliRunner,
                                                                               node_only: Path) -> None:
    result = runner.invoke(app, ["audit", "-A", "--from", str(node_only)])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[2].split() == ["Kubernetes", "objects", "not", "collected"]
    assert lines[3].split() == ["Services", "unknown"]
    assert "0 errors" not in result.output and "no errors or warnings" not in result.output
    assert "not checked: every check: each one compares a Service's objects" in result.output
    assert "next: add the Kubernetes objects to the snapshot as api/ files" in result.output


def test_a_node_only_snapshot_in_json(runner: CliRunner, node_only: Path) -> None:
    result = runner.invoke(app, ["audit", "-A", "--from", str(node_only), "-o", "json"])
    assert result.exit_code == 2, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["apiCollected"] is False and len(summary["notChecked"]) == 1
    assert [summary[k] for k in ("services", "programmed", "drifted", "withoutEndpoints")] == [None] * 4


def test_an_empty_namespace_of_a_full_snapshot_is_checked_and_empty(runner: CliRunner) -> None:
    result = runner.invoke(app, ["audit", "-n", "empty", "--from", "demo", "-o", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["services"] == 0 and summary["apiCollected"] is True and summary["notChecked"] == []
