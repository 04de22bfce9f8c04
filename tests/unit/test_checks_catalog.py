"""The check catalog: one module per subject, every check ordered and tested, and a healthy demo raises nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import svctrace.diagnosis.checks as checks
from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.diagnosis.diagnose import diagnose
from svctrace.diagnosis.findings import ERROR, WARNING
from svctrace.diagnosis.registry import CATALOG, catalog

UNIT = Path(__file__).parent
CHECKS = Path(checks.__file__).parent


def test_every_check_is_in_the_order_once_and_runs_in_it() -> None:
    assert len(set(checks.ORDER)) == len(checks.ORDER)
    assert set(checks.ORDER) == set(CATALOG)
    assert tuple(c.code for c in catalog()) == checks.ORDER


def test_each_subject_is_a_module_of_readable_size() -> None:
    subjects = {c.subject for c in CATALOG.values()}
    assert subjects == {*checks.API_SUBJECTS, "dataplane", "node"}
    for path in CHECKS.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 600, path.name


@pytest.mark.parametrize("subject", sorted(checks.API_SUBJECTS))
def test_every_api_code_is_the_top_finding_of_a_test_of_its_subject(subject: str) -> None:
    source = (UNIT / f"test_checks_{subject}.py").read_text()
    tested = set(re.findall(r'top\([^\n]*?"([a-z-]+)", (?:ERROR|WARNING|INFO)\)', source))
    codes = {c.code for c in CATALOG.values() if c.subject == subject}
    assert codes and codes - tested == set()


def test_the_api_subjects_hold_the_sixteen_api_checks() -> None:
    assert len([c for c in CATALOG.values() if c.subject in checks.API_SUBJECTS]) == 16


@pytest.mark.parametrize("ref", [s.ref for s in load_snapshot("demo").services])
def test_the_healthy_demo_raises_no_error_or_warning(ref: str) -> None:
    d = diagnose(load_snapshot("demo"), ref)
    assert [f for f in d.findings if f.severity in (ERROR, WARNING)] == []
    assert d.verdict == "reachable"


def test_docs_describe_every_check_and_hold_no_placeholder() -> None:
    doc = (UNIT.parents[1] / "docs" / "diagnosis.md").read_text()
    assert [c for c in checks.ORDER if f"| `{c}` |" not in doc] == []
    assert "placeholder" not in doc.lower()
    assert doc.count("## Dataplane checks") == 1
