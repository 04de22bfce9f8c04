"""Every proxy mode implements the resolver and tracer contracts, and the mode files do not lean on each other."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import svctrace.resolver  # noqa: F401 - registers every mode's resolver
from svctrace.collectors.snapshot_dir import load_demo
from svctrace.model.graph import Frontend
from svctrace.model.mode import ProxyMode
from svctrace.model.snapshot import NodeFile, Snapshot
from svctrace.resolver.contract import ModeResolver, every_mode, for_mode
from svctrace.trace import TRACERS, ModeTracer

SVCTRACE = Path(svctrace.resolver.__file__).resolve().parents[1]
DEMO_MODE = {ProxyMode.IPTABLES: "iptables", ProxyMode.IPVS: "ipvs", ProxyMode.NFTABLES: "nftables"}


def _protocol_methods(protocol: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(protocol).items()
            if callable(fn) and not name.startswith("_")}


def test_every_mode_has_a_resolver_and_a_tracer() -> None:
    assert set(every_mode()) == set(ProxyMode)
    assert set(TRACERS) == set(ProxyMode)
    assert set(DEMO_MODE) == set(ProxyMode), "a new mode needs a demo snapshot for these tests"


@pytest.mark.parametrize("mode", list(ProxyMode))
def test_the_resolver_implements_the_contract(mode: ProxyMode) -> None:
    resolver = every_mode()[mode]
    assert isinstance(resolver, ModeResolver)
    assert resolver.mode is mode
    assert for_mode(mode) is resolver and for_mode(mode.value) is resolver
    for name, want in _protocol_methods(ModeResolver).items():
        got = inspect.signature(getattr(resolver, name))
        assert list(got.parameters) == [p for p in want.parameters if p != "self"], name
    assert resolver.files and resolver.files <= {f.value for f in NodeFile}

    demo = load_demo(DEMO_MODE[mode])
    assert demo.mode is mode
    assert resolver.gap(demo, 4) is None
    gap = resolver.gap(Snapshot(), 4)
    assert isinstance(gap, str) and gap
    words = resolver.not_programmed(Frontend("ClusterIP", "10.0.0.1", 80, "TCP", "", "not programmed"))
    assert isinstance(words, str) and words
    assert resolver.orphans(demo) == ()  # the demo's dataplane is what its API asks for


@pytest.mark.parametrize("mode", list(ProxyMode))
def test_the_tracer_implements_the_contract(mode: ProxyMode) -> None:
    tracer = TRACERS[mode]
    assert isinstance(tracer, ModeTracer)
    assert tracer.mode is mode
    for name, want in _protocol_methods(ModeTracer).items():
        got = inspect.signature(getattr(tracer, name))
        assert list(got.parameters) == [p for p in want.parameters if p != "self"], name
    assert tracer.gap(load_demo(DEMO_MODE[mode]), 4) is None
    assert tracer.gap(Snapshot(), 4) is not None


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


# kube-proxy's IPVS proxier writes iptables rules too (masquerade, filter) and the kernel walks them before
# the IPVS lookup: the IPVS tracer runs the iptables walk with an IPVS hook. The one allowed dependency.
BUILDS_ON = {("trace", "ipvs"): {"svctrace.trace.iptables"}}


@pytest.mark.parametrize("layer", ["resolver", "trace"])
def test_mode_files_do_not_import_each_other(layer: str) -> None:
    # A mode is one file per layer over the shared code: adding or removing one touches no other mode.
    modes = {m.value for m in ProxyMode}
    for mode in modes:
        path = SVCTRACE / layer / f"{mode}.py"
        assert path.exists(), path
        others = {f"svctrace.{layer}.{m}" for m in modes - {mode}} - BUILDS_ON.get((layer, mode), set())
        assert not _imports(path) & others, f"{path} imports {_imports(path) & others}"
