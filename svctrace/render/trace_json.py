"""A trace result as JSON-ready dicts (``svctrace trace -o json``); shape in docs/tracer.md."""

from __future__ import annotations

from typing import Any

from svctrace.model.trace import Outcome, Packet, TraceResult, TraceStep
from svctrace.render.json import fields

SCHEMA_VERSION = 2


def packet_to_dict(packet: Packet) -> dict[str, Any]:
    return fields(packet, "src", "dst", "dport", "sport", "protocol", "origin", "in_interface")


def step_to_dict(step: TraceStep) -> dict[str, Any]:
    return {**fields(step, "table", "chain"), "index": step.rule_index, "rule": step.rule_text,
            **fields(step, "action", "target")}


def outcome_to_dict(outcome: Outcome) -> dict[str, Any]:
    return {
        **fields(outcome, "verdict", "destination"),
        # Rounded so shares like 1/3 print readably; the sum stays within 1e-9 of 1. null: the outcome rests on
        # "conditions" the snapshot cannot decide, so how often it happens is unknown.
        "probability": round(outcome.probability, 10) if outcome.probability is not None else None,
        **fields(outcome, "masquerade", "uncertain", "affinity"),
        "conditions": list(outcome.conditions),
        "conditionalProbability": round(outcome.conditional_probability, 10)
        if outcome.conditional_probability is not None else None,
        "path": [step_to_dict(s) for s in outcome.path],
        "notes": list(outcome.notes),
        # only for a DNAT by a chain a partial dump does not show: the endpoint's address is not known
        **({"via": outcome.via} if outcome.via is not None else {}),
    }


def trace_to_dict(result: TraceResult) -> dict[str, Any]:
    """The documented trace JSON: packet, outcomes (with paths), warnings."""
    out: dict[str, Any] = {
        "schemaVersion": SCHEMA_VERSION,
        "kind": "PacketTrace",
        **fields(result, "mode", "semantics"),
        "packet": packet_to_dict(result.packet),
        "outcomes": [outcome_to_dict(o) for o in result.outcomes],
        "warnings": list(result.warnings),
    }
    if result.kube_proxy_test is not None:
        out["kubeProxyTest"] = {"output": result.kube_proxy_test.output, "masq": result.kube_proxy_test.masq}
    return out
