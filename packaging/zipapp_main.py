# The zipapp's __main__.py (packaging/build_plugin.py fills in the version and the build).
#
# Written for any python3, so that an old one gets a one-line error rather than a SyntaxError. The archive
# holds only this file and lib.zip (svctrace and its dependencies), so that Python reads a two-entry zip
# directory at start-up, not thousands. On the first run lib.zip is unpacked into ~/.cache/svctrace/<build>/
# (atomically: a temporary folder renamed into place), and every later run imports plain files whose bytecode
# Python caches there. Where nothing can be written, it is unpacked into a temporary folder for this run.
import os
import sys

VERSION = "@VERSION@"
BUILD = "@BUILD@"
MINIMUM = (3, 10)


def _fail(message, hint):
    sys.stderr.write("svctrace: error: %s\n  next: %s\n" % (message, hint))
    sys.exit(2)


def _cache_root():
    root = os.environ.get("SVCTRACE_CACHE_DIR")
    if root:
        return root
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "svctrace")


def _extract(archive, into):
    import zipfile

    with zipfile.ZipFile(archive) as outer, outer.open("lib.zip") as blob, zipfile.ZipFile(blob) as inner:
        inner.extractall(into)


def _unpacked(archive):
    root = _cache_root()
    target = os.path.join(root, BUILD)
    if os.path.isdir(os.path.join(target, "lib")):
        # The folder is svctrace's own: cache bytecode there even under PYTHONDONTWRITEBYTECODE (set in many
        # container images), or every run compiles every module again.
        sys.dont_write_bytecode = False
        return target
    import shutil
    import tempfile

    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".unpacking-", dir=root)
        _extract(archive, tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another run unpacked the same build first
            shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(os.path.join(target, "lib")):
            sys.dont_write_bytecode = False
            return target
    except OSError:
        pass
    import atexit

    tmp = tempfile.mkdtemp(prefix="svctrace-")
    atexit.register(shutil.rmtree, tmp, True)
    _extract(archive, tmp)
    return tmp


def main():
    if sys.version_info < MINIMUM:
        _fail("svctrace %s needs Python %d.%d or newer; python3 here is %d.%d.%d"
              % ((VERSION,) + MINIMUM + tuple(sys.version_info[:3])),
              "install python3 >= %d.%d (or point PATH at one), or run: pipx install svctrace" % MINIMUM)
    sys.path.insert(0, os.path.join(_unpacked(os.path.dirname(os.path.abspath(__file__))), "lib"))
    from svctrace.cli import main as svctrace_main

    svctrace_main()


main()
