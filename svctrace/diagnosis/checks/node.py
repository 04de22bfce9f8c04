"""Checks of the node area (registered in svctrace.diagnosis.registry.CATALOG)."""

from __future__ import annotations
