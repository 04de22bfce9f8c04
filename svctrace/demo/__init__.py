"""The bundled demo snapshot: the tutorial cluster (k8s-service-tutorial.md).

``tutorial/`` is a snapshot folder like one captured from a node: ``api/`` holds the cluster's
objects as ``kubectl get -o json`` prints them, ``node/`` what was read on xianchaomaster1
(iptables-save, ip6tables-save, ``ip -j addr``, meta.json). It is data only; the tools that
produced it live in tests/fixtures/demo_build/.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from svctrace.errors import SvctraceError

if TYPE_CHECKING:
    from importlib.abc import Traversable  # importlib.resources.abc from Python 3.11

DEMO_NAME = "tutorial"
# The same cluster as each proxy mode writes it: ``tutorial-<mode>/node/`` beside the shared ``tutorial/api/``.
DEMO_MODES = ("iptables", "ipvs", "nftables")


def demo_path(mode: str = "iptables") -> Path:
    """The folder of the bundled demo snapshot (``svctrace/demo/tutorial``, or ``tutorial-<mode>``)."""
    if mode not in DEMO_MODES:
        raise SvctraceError(f"the demo has no {mode!r} mode", f"choose one of {', '.join(DEMO_MODES)}")
    folder = _package_folder() / (DEMO_NAME if mode == "iptables" else f"{DEMO_NAME}-{mode}")
    # An installed wheel is unpacked on disk, so this is a real folder; a zipped import is not.
    if isinstance(folder, Path) and not folder.exists():
        raise SvctraceError(f"this build of svctrace has no {mode} demo ({folder} is missing)",
                            "try `svctrace demo` (iptables mode), or reinstall svctrace")
    if not isinstance(folder, Path) or not folder.is_dir():
        raise SvctraceError(
            f"the bundled demo snapshot is not a folder on disk ({folder})",
            "install svctrace as a regular package (pip install svctrace) instead of importing it from a zip",
        )
    return folder


def _package_folder() -> Traversable:
    """This package's folder: on disk as installed (importlib.resources, and the zipfile it imports, cost a few
    milliseconds of every --from demo), else whatever importlib.resources says it is (a zipped import)."""
    here = Path(__file__).parent
    if here.is_dir():
        return here
    from importlib.resources import files

    return files(__name__)
