"""The bundled demo snapshot: the tutorial cluster (k8s-service-tutorial.md).

``tutorial/`` is a snapshot folder like one captured from a node: ``api/`` holds the cluster's
objects as ``kubectl get -o json|yaml`` prints them, ``node/`` what was read on xianchaomaster1
(iptables-save, ip6tables-save, ``ip -j addr``, meta.json). It is data only; the tools that
produced it live in tests/fixtures/demo_build/.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from svctrace.errors import SvctraceError

DEMO_NAME = "tutorial"


def demo_path() -> Path:
    """The folder of the bundled demo snapshot (``svctrace/demo/tutorial``)."""
    folder = files(__name__) / DEMO_NAME
    # An installed wheel is unpacked on disk, so this is a real folder; a zipped import is not.
    if not isinstance(folder, Path) or not folder.is_dir():
        raise SvctraceError(
            f"the bundled demo snapshot is not a folder on disk ({folder})",
            "install svctrace as a regular package (pip install svctrace) instead of importing it from a zip",
        )
    return folder
