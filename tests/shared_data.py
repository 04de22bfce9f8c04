"""Where the project's shared data (../shared: the conformance corpus, the tutorial) lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``../shared`` beside the repository; a hard failure in CI, a skip elsewhere, when absent."""
    candidates = [Path(os.environ["SVCTRACE_SHARED"])] if os.environ.get("SVCTRACE_SHARED") else []
    candidates.append(REPO.parent / "shared")
    for path in candidates:
        if (path / "conformance").is_dir():
            return path
    message = f"the shared data folder was not found (looked in {', '.join(map(str, candidates))})"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI clones the repository with shared/ beside it")
    pytest.skip(message)
