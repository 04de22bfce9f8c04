"""Golden trees and JSON for every Service of the demo snapshot (reviewed like code).

Regenerate after an intended change with ``SVCTRACE_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_golden.py``
and review the diff.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.model.snapshot import Snapshot
from svctrace.render.json import graph_to_dict
from svctrace.render.theme import THEME
from svctrace.render.tree import render_graph
from svctrace.resolver import resolve

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "demo"
WIDTH = 160  # the width svctrace uses when its output is piped
UPDATE = bool(os.environ.get("SVCTRACE_UPDATE_GOLDEN"))


@pytest.fixture(scope="module")
def demo() -> Snapshot:
    return load_snapshot("demo")


def _text(renderable: object) -> str:
    buf = io.StringIO()
    Console(file=buf, width=WIDTH, color_system=None, theme=THEME, highlight=False, markup=False,
            emoji=False).print(renderable)
    return buf.getvalue()


def _check(path: Path, actual: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: run with SVCTRACE_UPDATE_GOLDEN=1 and review it"
    assert actual == path.read_text()


DEMO_SERVICES = [("default", "client-svc"), ("default", "kubernetes"), ("default", "my-nginx"),
                 ("default", "my-nginx-nodeport"), ("default", "mysql"), ("kube-system", "kube-dns"),
                 ("nginx-ns", "nginx-svc")]


def test_the_demo_has_exactly_these_services(demo: Snapshot) -> None:
    assert sorted((s.namespace, s.name) for s in demo.services) == DEMO_SERVICES


@pytest.mark.parametrize(("namespace", "name"), DEMO_SERVICES)
@pytest.mark.parametrize("explain", [False, True], ids=["tree", "explain"])
def test_tree(demo: Snapshot, namespace: str, name: str, explain: bool) -> None:
    graph = resolve(demo, namespace, name)
    suffix = ".explain.txt" if explain else ".txt"
    _check(GOLDEN / f"{namespace}_{name}{suffix}", _text(render_graph(graph, explain=explain)))


@pytest.mark.parametrize(("namespace", "name"), [("default", "my-nginx-nodeport"), ("default", "mysql")])
def test_json(demo: Snapshot, namespace: str, name: str) -> None:
    doc = graph_to_dict(resolve(demo, namespace, name))
    _check(GOLDEN / f"{namespace}_{name}.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")
