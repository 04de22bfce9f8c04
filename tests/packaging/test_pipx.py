"""`pipx install .`, as the README says, installs and runs, with no C compiler needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from svctrace import __version__
from tests.packaging.conftest import REPO


def test_pipx_install_without_a_compiler(tmp_path: Path) -> None:
    home, bin_dir = tmp_path / "pipx", tmp_path / "bin"
    # A compiler that always fails: any dependency that needs building from C would break the install.
    no_cc = tmp_path / "no-cc"
    no_cc.mkdir()
    for name in ("cc", "gcc", "c++", "g++", "clang"):
        (no_cc / name).write_text("#!/bin/sh\necho 'no compiler here' >&2\nexit 1\n")
        (no_cc / name).chmod(0o755)
    env = {**os.environ, "PIPX_HOME": str(home), "PIPX_BIN_DIR": str(bin_dir), "PIPX_MAN_DIR": str(tmp_path / "man"),
           "PATH": f"{no_cc}:{os.environ.get('PATH', '/usr/bin:/bin')}", "CC": str(no_cc / "cc"),
           "CXX": str(no_cc / "c++"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    install = subprocess.run([sys.executable, "-m", "pipx", "install", "--python", sys.executable, str(REPO)],
                             capture_output=True, text=True, env=env, timeout=900, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    for script in ("svctrace", "kubectl-svctrace", "kubectl_complete-svctrace"):
        assert (bin_dir / script).exists(), script

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)

    assert run(str(bin_dir / "svctrace"), "--version").stdout == f"svctrace {__version__}\n"
    tree = run(str(bin_dir / "kubectl-svctrace"), "svc", "my-nginx", "--from", "demo")
    assert tree.returncode == 0 and tree.stdout.startswith("Service default/my-nginx  ClusterIP"), tree.stderr
    usage = run(str(bin_dir / "kubectl-svctrace"), "svc", "--help")
    assert "  kubectl svctrace svc NAME [options]" in usage.stdout.splitlines()
    assert run(str(bin_dir / "kubectl_complete-svctrace"), "completion", "").stdout.splitlines() == [
        "bash", "zsh", "fish", ":4"]
    # What pyproject.toml resolves to: the pure-Python client, no python-iptables.
    listed = run(sys.executable, "-m", "pipx", "runpip", "svctrace", "list", "--format=freeze").stdout.lower()
    assert "python-iptables" not in listed and "pydantic" not in listed and "aiohttp" not in listed
