"""Resolvers: Snapshot + query -> PathGraph, one module per proxy mode (pure)."""
