#!/usr/bin/env python3
"""Build the kubectl plugin: one pure-Python zipapp, and the krew archive that holds it.

    python3 packaging/build_plugin.py [--out dist]

writes, for svctrace version X.Y.Z:

    dist/kubectl-svctrace              the zipapp (#!/usr/bin/env python3): svctrace and every dependency
    dist/svctrace-vX.Y.Z.tar.gz        krew's archive: kubectl-svctrace, README.md, LICENSE if there is one

and prints the archive's sha256. The same archive serves every platform in .krew.yaml: nothing in it is
compiled. The dependencies are resolved for the oldest supported Python (3.10, so its backports are included)
and the compiled speed-ups some of them ship are dropped, each for the pure-Python module beside it
(ALLOWED_NATIVE); any other compiled file fails the build. The zipapp is run by the host's python3 (>= 3.10);
its bootstrap (packaging/zipapp_main.py) unpacks it once into ~/.cache/svctrace/<build> so later runs import
plain files with cached bytecode. Needs pip and access to the package index; no compiler.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = Path(__file__).resolve().parent / "zipapp_main.py"
PLUGIN = "kubectl-svctrace"
OLDEST_PYTHON = "3.10"
# Compiled files dependencies may ship, each with the pure-Python module that replaces it when it is absent.
ALLOWED_NATIVE = {
    "yaml/_yaml": "yaml's pure-Python loader (yaml.SafeLoader)",
    "charset_normalizer/md": "charset_normalizer/md.py",
    "charset_normalizer/cd": "charset_normalizer/cd.py",
}
NATIVE_SUFFIXES = (".so", ".pyd", ".dylib")
# Reproducible archives: every entry gets this date (or SOURCE_DATE_EPOCH's).
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))  # 1980-01-01, the zip format's earliest


def version() -> str:
    text = (REPO / "svctrace" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not match:
        raise SystemExit("build_plugin.py: no __version__ in svctrace/__init__.py")
    return match.group(1)


def archive_name(ver: str) -> str:
    """The krew archive's file name; krew wants versions (and so release tags) to start with v."""
    return f"svctrace-v{ver}.tar.gz"


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def install_tree(lib: Path, work: Path) -> None:
    """svctrace and its dependencies as pure-Python files under ``lib``."""
    _pip("wheel", "--no-deps", "--wheel-dir", str(work / "own"), str(REPO))
    (wheel,) = (work / "own").glob("svctrace-*.whl")
    # Any manylinux platform resolves the same pure wheels; the compiled parts are removed below.
    _pip("install", "--no-compile", "--target", str(lib), "--only-binary=:all:", "--implementation", "cp",
         "--python-version", OLDEST_PYTHON, "--platform", "manylinux2014_x86_64", str(wheel))
    # Of no use at run time: the dependencies' console scripts, and bytecode (written on the first run instead).
    shutil.rmtree(lib / "bin", ignore_errors=True)
    for path in sorted(lib.rglob("__pycache__"), reverse=True):
        shutil.rmtree(path)
    for path in sorted(lib.rglob("*")):
        if path.suffix in NATIVE_SUFFIXES:
            key = path.relative_to(lib).as_posix().split(".")[0]
            if key not in ALLOWED_NATIVE:
                raise SystemExit(f"build_plugin.py: {path.relative_to(lib)} is compiled and has no pure-Python "
                                 "fallback known here; the plugin would run only on one Python and platform")
            path.unlink()


def _files(lib: Path) -> list[Path]:
    return sorted(p for p in lib.rglob("*") if p.is_file())


def build_id(lib: Path) -> str:
    digest = hashlib.sha256()
    for path in _files(lib):
        digest.update(path.relative_to(lib).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_date_time())
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _date_time() -> tuple[int, int, int, int, int, int]:
    t = time.gmtime(max(EPOCH, 315532800))
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


def write_zipapp(lib: Path, dest: Path, ver: str) -> str:
    """The single-file plugin: a shebang, then a zip of __main__.py (the bootstrap) and lib.zip (lib/)."""
    build = build_id(lib)
    main = BOOTSTRAP.read_text().replace("@VERSION@", ver).replace("@BUILD@", build)
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w", compresslevel=9) as inner:
        for path in _files(lib):
            inner.writestr(_zip_entry("lib/" + path.relative_to(lib).as_posix()), path.read_bytes())
    buf = io.BytesIO()
    buf.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buf, "w") as outer:
        outer.writestr(_zip_entry("__main__.py"), main)
        stored = _zip_entry("lib.zip")
        stored.compress_type = zipfile.ZIP_STORED  # read in place by the bootstrap; already compressed
        outer.writestr(stored, blob.getvalue())
    dest.write_bytes(buf.getvalue())
    dest.chmod(0o755)
    return build


def write_archive(zipapp: Path, dest: Path) -> None:
    """krew's archive: the plugin at the top, where .krew.yaml's ``bin`` points, and the docs beside it."""
    members = [(zipapp, PLUGIN, 0o755), (REPO / "README.md", "README.md", 0o644)]
    members += [(REPO / name, name, 0o644) for name in ("LICENSE", "LICENSE.txt") if (REPO / name).exists()]
    with open(dest, "wb") as raw, _gzip(raw) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for src, name, mode in members:
            info = tarfile.TarInfo(name)
            data = src.read_bytes()
            info.size, info.mode, info.mtime = len(data), mode, EPOCH
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))


def _gzip(raw: io.BufferedWriter) -> gzip.GzipFile:
    return gzip.GzipFile(fileobj=raw, mode="wb", mtime=EPOCH, filename="", compresslevel=9)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(out: Path) -> Path:
    ver = version()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="svctrace-build-") as tmp:
        work = Path(tmp)
        lib = work / "lib"
        install_tree(lib, work)
        zipapp = out / PLUGIN
        write_zipapp(lib, zipapp, ver)
    archive = out / archive_name(ver)
    write_archive(zipapp, archive)
    return archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    args = parser.parse_args()
    archive = build(args.out)
    zipapp = args.out / PLUGIN
    print(f"{zipapp}  {zipapp.stat().st_size / 1e6:.1f} MB")
    print(f"{archive}  {archive.stat().st_size / 1e6:.1f} MB")
    print(f"sha256  {sha256(archive)}  {archive.name}")


if __name__ == "__main__":
    main()
