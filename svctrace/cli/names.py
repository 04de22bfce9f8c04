"""Live names for shell completion: namespaces and Services, from --from's snapshot or the cluster."""

from __future__ import annotations

from typing import Any

import typer

# Completion runs on every <TAB>: a short timeout, and silence on any failure.
COMPLETION_TIMEOUT = 2.0


def _params(ctx: typer.Context) -> dict[str, Any]:
    params: dict[str, Any] = dict(ctx.params or {})
    return params


def _snapshot_names(spec: str, namespace: str | None) -> tuple[list[str], list[str]]:
    from svctrace.collectors.snapshot_dir import load_snapshot

    snap = load_snapshot(spec)
    namespaces = sorted({s.namespace for s in snap.services})
    services = sorted(s.name for s in snap.services if namespace is None or s.namespace == namespace)
    return namespaces, services


def _live(ctx: typer.Context) -> Any:
    from svctrace.collectors.kube import KubeCollector

    p = _params(ctx)
    return KubeCollector(kubeconfig=p.get("kubeconfig"), context=p.get("context"), namespace=p.get("namespace"),
                         timeout=COMPLETION_TIMEOUT)


def complete_namespace(ctx: typer.Context, incomplete: str) -> list[str]:
    """Namespaces that start with what is typed."""
    try:
        p = _params(ctx)
        if p.get("from_"):
            names, _ = _snapshot_names(p["from_"], None)
        else:
            with _live(ctx) as kube:
                names = kube.list_namespaces()
    except Exception:  # never break the user's shell
        return []
    return [n for n in names if n.startswith(incomplete)]


def complete_service(ctx: typer.Context, incomplete: str) -> list[str]:
    """Service names in the chosen namespace that start with what is typed."""
    try:
        p = _params(ctx)
        if p.get("from_"):
            _, names = _snapshot_names(p["from_"], p.get("namespace") or "default")
        else:
            with _live(ctx) as kube:
                names = kube.list_service_names(p.get("namespace"))
    except Exception:  # never break the user's shell
        return []
    return [n for n in names if n.startswith(incomplete)]
