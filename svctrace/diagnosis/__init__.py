"""Diagnosis: ranked findings with evidence and a next step, from a Snapshot and a target (pure)."""
