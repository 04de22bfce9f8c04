"""Parsers: text and dicts in, model out (pure)."""
