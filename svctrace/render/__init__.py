"""Renderers: PathGraph and findings -> rich renderables or JSON-ready dicts (pure)."""
