"""ruff and mypy (strict), as configured in pyproject.toml, are part of the test suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_is_clean() -> None:
    if shutil.which("ruff") is None and _run(sys.executable, "-m", "ruff", "--version").returncode != 0:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    result = _run(sys.executable, "-m", "ruff", "check", "svctrace", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = _run(sys.executable, "-m", "mypy", "svctrace")
    assert result.returncode == 0, result.stdout + result.stderr


_OFFENCES = ("import kubernetes\nimport rich\nimport socket\nimport subprocess\nimport sys\nimport typer\n\n"
             "sys.exit(print(1))\n")
_ALL = {"kubernetes", "rich", "socket", "subprocess", "typer", "sys.exit", "print"}


@pytest.mark.parametrize(("layer", "allowed"), [
    ("resolver", set()), ("trace", set()), ("diagnosis", set()), ("parsers", set()), ("model", set()),
    ("render", {"rich"}),
    ("cli", {"rich", "typer", "sys.exit", "print"}),
    ("collectors", {"kubernetes", "socket", "subprocess"}),
])
def test_each_layer_may_use_only_what_it_needs(layer: str, allowed: set[str]) -> None:
    # ruff applies the config of the path it is told, so the layer rules are checked without writing a file.
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                             "--stdin-filename", f"svctrace/{layer}/offences.py", "-"],
                            cwd=REPO, input=_OFFENCES, capture_output=True, text=True, timeout=60, check=False)
    refused = {name for name in _ALL if f"`{name}` is banned" in result.stdout} | (
        {"print"} if "T201" in result.stdout else set())
    assert refused == _ALL - allowed, result.stdout + result.stderr
