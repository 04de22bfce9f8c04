"""The krew archive: small, nothing compiled, and the plugin inside runs on a bare python3 as `kubectl svctrace`."""

from __future__ import annotations

import io
import os
import platform
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from svctrace import __version__
from tests.packaging.conftest import REPO, PluginBuild

MB = 1_000_000


def run_plugin(plugin: Path, *args: str, cache: Path, python: str = sys.executable,
               extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the plugin with `python -S -I`: no site-packages (so nothing but what it carries), no PYTHON* vars,
    temporary files in `cache`/tmp."""
    (cache / "tmp").mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cache / "home"),
           "XDG_CACHE_HOME": str(cache), "TMPDIR": str(cache / "tmp"), **(extra_env or {})}
    return subprocess.run([python, "-S", "-I", str(plugin), *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


def test_one_small_archive_for_every_platform(plugin_build: PluginBuild) -> None:
    assert plugin_build.archive.name == f"svctrace-v{__version__}.tar.gz"
    assert plugin_build.archive.stat().st_size < 30 * MB
    with tarfile.open(plugin_build.archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) <= {"kubectl-svctrace", "README.md", "LICENSE", "LICENSE.txt"}
    assert members["kubectl-svctrace"].mode == 0o755 and members["kubectl-svctrace"].isfile()


def _lib(plugin: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(plugin) as outer:
        assert outer.namelist() == ["__main__.py", "lib.zip"]  # a two-entry directory to read at start-up
        return zipfile.ZipFile(io.BytesIO(outer.read("lib.zip")))


def test_nothing_compiled_inside(plugin_build: PluginBuild) -> None:
    names = _lib(plugin_build.zipapp).namelist()
    assert [n for n in names if n.endswith((".so", ".pyd", ".dylib", ".pyc"))] == []
    tops = {n.split("/")[1] for n in names}
    assert {"svctrace", "typer", "rich", "kubernetes", "pyroute2", "yaml"} <= tops
    # What pyproject.toml no longer allows: the asyncio client's stack, pydantic, python-iptables.
    assert not tops & {"aiohttp", "pydantic", "pydantic_core", "iptc", "bin"}


def test_the_build_is_reproducible(plugin_build: PluginBuild, tmp_path: Path) -> None:
    # Same inputs, same bytes: the sha256 in the krew manifest can be checked by rebuilding.
    from packaging_build import write_archive, write_zipapp  # type: ignore[import-not-found]

    lib = tmp_path / "lib"
    with _lib(plugin_build.zipapp) as zf:
        zf.extractall(tmp_path)
    again = tmp_path / "kubectl-svctrace"
    write_zipapp(lib, again, __version__)
    assert again.read_bytes() == plugin_build.zipapp.read_bytes()
    write_archive(again, tmp_path / "again.tar.gz")
    assert (tmp_path / "again.tar.gz").read_bytes() == plugin_build.archive.read_bytes()


def test_the_plugin_runs_on_a_bare_python(plugin_build: PluginBuild, tmp_path: Path) -> None:
    plugin = plugin_build.installed / "kubectl-svctrace"
    version = run_plugin(plugin, "--version", cache=tmp_path)
    assert (version.returncode, version.stdout) == (0, f"svctrace {__version__}\n"), version.stderr
    tree = run_plugin(plugin, "svc", "my-nginx-nodeport", "--from", "demo", cache=tmp_path)
    assert tree.returncode == 0, tree.stderr
    assert tree.stdout.startswith("Service default/my-nginx-nodeport  NodePort  iptables  node xianchaomaster1\n")
    # Unpacked once into the cache (a folder per build), bytecode cached beside it.
    (build,) = (tmp_path / "svctrace").iterdir()
    assert (build / "lib" / "svctrace" / "cli" / "__init__.py").is_file()
    assert list((build / "lib" / "svctrace" / "cli").glob("__pycache__/*.pyc"))


def test_the_plugin_calls_itself_kubectl_svctrace(plugin_build: PluginBuild, tmp_path: Path) -> None:
    plugin = plugin_build.installed / "kubectl-svctrace"
    usage = run_plugin(plugin, "svc", "--help", cache=tmp_path)
    assert "  kubectl svctrace svc NAME [options]" in usage.stdout.splitlines()
    error = run_plugin(plugin, "svc", cache=tmp_path)
    assert error.returncode == 2
    assert error.stderr.splitlines() == ["svctrace: error: missing NAME", "  next: see 'kubectl svctrace svc --help'"]
    assert "python -m" not in usage.stdout + error.stderr


def test_the_plugin_runs_where_nothing_can_be_written(plugin_build: PluginBuild, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    blocked_env = {"SVCTRACE_CACHE_DIR": str(blocked / "svctrace")}
    result = run_plugin(plugin_build.zipapp, "svc", "my-nginx", "--from", "demo", cache=tmp_path,
                        extra_env=blocked_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Service default/my-nginx  ClusterIP")
    # It was unpacked into a temporary folder for the run, and the run removed it (39 MB a run otherwise),
    # also when the command fails.
    assert list((tmp_path / "tmp").iterdir()) == []
    failed = run_plugin(plugin_build.zipapp, "svc", "nope", "--from", "demo", cache=tmp_path, extra_env=blocked_env)
    assert failed.returncode == 2 and failed.stderr.startswith('svctrace: error: service "nope" not found')
    assert list((tmp_path / "tmp").iterdir()) == []


def test_an_old_python_is_told_its_version(tmp_path: Path) -> None:
    # The bootstrap runs on any python3; here its minimum is raised so that this interpreter is too old.
    bootstrap = (REPO / "packaging" / "zipapp_main.py").read_text()
    assert "MINIMUM = (3, 10)" in bootstrap
    old = tmp_path / "main.py"
    old.write_text(bootstrap.replace("MINIMUM = (3, 10)", "MINIMUM = (99, 0)").replace("@VERSION@", "1.2.3"))
    result = subprocess.run([sys.executable, "-S", "-I", str(old)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"svctrace: error: svctrace 1.2.3 needs Python 99.0 or newer; python3 here is {platform.python_version()}")


@pytest.fixture(autouse=True)
def _packaging_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # packaging/build_plugin.py is a script, not a package of svctrace: import it by path.
    import importlib.util

    spec = importlib.util.spec_from_file_location("packaging_build", REPO / "packaging" / "build_plugin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "packaging_build", module)
