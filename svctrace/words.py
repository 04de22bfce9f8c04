"""Words that agree with a number: the one helper for every count svctrace prints ("1 error", "2 errors")."""

from __future__ import annotations


def agree(n: int, singular: str, plural: str | None = None) -> str:
    """The form that agrees with n: ``agree(1, "pod") == "pod"``, ``agree(2, "is", "are") == "are"``."""
    if n == 1:
        return singular
    return plural if plural is not None else singular + "s"


def count(n: int, singular: str, plural: str | None = None) -> str:
    """n and the noun that agrees with it: ``count(1, "error") == "1 error"``, ``count(0, "error") == "0 errors"``."""
    return f"{n} {agree(n, singular, plural)}"
