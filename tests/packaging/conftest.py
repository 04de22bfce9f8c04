"""The plugin is built once per test session (packaging/build_plugin.py, pure-Python wheels from the index)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PluginBuild:
    out: Path
    archive: Path  # svctrace-vX.Y.Z.tar.gz, what .krew.yaml points at
    zipapp: Path  # kubectl-svctrace, the single-file plugin
    installed: Path  # the archive unpacked, as krew unpacks it


@pytest.fixture(scope="session")
def plugin_build(tmp_path_factory: pytest.TempPathFactory) -> PluginBuild:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, str(REPO / "packaging" / "build_plugin.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (archive,) = out.glob("svctrace-v*.tar.gz")
    installed = tmp_path_factory.mktemp("krew-store")
    with tarfile.open(archive) as tar:
        tar.extractall(installed, filter="data")
    return PluginBuild(out, archive, out / "kubectl-svctrace", installed)
