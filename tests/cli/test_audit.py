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
