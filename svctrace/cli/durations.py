"""Durations as kubectl writes them (``5s``, ``500ms``, ``1m30s``), and the --timeout default: light to import
(svctrace.cli.early reads --timeout before typer is imported)."""

from __future__ import annotations

import math
import re

from svctrace.errors import UsageError

# Long enough for `capture -A` of a 10,000-Service cluster (a few hundred LIST pages), short enough that no
# server, however slow, holds a command for longer without the user asking for it.
DEFAULT_TIMEOUT = "2m"

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, flag: str = "--request-timeout", *, zero_means_none: bool = False) -> float | None:
    """Seconds in a kubectl-style duration: ``5s``, ``500ms``, ``1m30s``, or a bare number of seconds.

    ``0`` is None (no limit) where ``zero_means_none``; anything else must be more than zero and finite.
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise UsageError(f"{flag} {text!r} is not a duration",
                             f"give e.g. {flag} 5s, 500ms or 1m") from None
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds == 0 and zero_means_none:
        return None
    if not math.isfinite(seconds):
        raise UsageError(f"{flag} {text!r} is not a finite duration", f"give e.g. {flag} 5s, 500ms or 1m")
    if not seconds > 0:
        more = "0 (no limit) or more" if zero_means_none else "more than zero"
        raise UsageError(f"{flag} {text!r} must be {more}", f"give e.g. {flag} 5s")
    return seconds
