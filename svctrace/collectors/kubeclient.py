"""The parts of the ``kubernetes`` client svctrace uses, imported without the rest.

``import kubernetes`` imports every generated API and model class: about 700 modules and 0.4 s of CPU.
On a node, that CPU is taken while the node's save is running. svctrace reads objects as JSON
(``_preload_content=False``). It uses only:

- ``Configuration`` and ``ApiClient``;
- a few API classes;
- ``ApiException``;
- the kubeconfig loaders.

``client()`` enters ``kubernetes``, ``kubernetes.client``, ``kubernetes.client.api`` and
``kubernetes.client.models`` in ``sys.modules`` as bare packages: their ``__init__`` has not run. It then
imports only the modules those parts live in, and binds their classes on ``kubernetes.client`` as the
package's own ``__init__`` would. A bare package completes itself when something asks it for a name it does not
have yet. Its submodules are imported one by one; any other name runs its ``__init__`` first. So code that
imports ``kubernetes`` later, svctrace's or anyone's, still sees the whole package. If ``kubernetes`` was
imported before, it is used as it is; a client laid out otherwise (a module missing) is imported whole.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

# What svctrace uses from kubernetes.client, and the module that defines it.
_PARTS = {
    "Configuration": "kubernetes.client.configuration",
    "ApiClient": "kubernetes.client.api_client",
    "ApiException": "kubernetes.client.exceptions",
    "CoreV1Api": "kubernetes.client.api.core_v1_api",
    "DiscoveryV1Api": "kubernetes.client.api.discovery_v1_api",
    "NetworkingV1Api": "kubernetes.client.api.networking_v1_api",
    "AppsV1Api": "kubernetes.client.api.apps_v1_api",
}
_BARE = ("kubernetes", "kubernetes.client", "kubernetes.client.api", "kubernetes.client.models")
_lock = threading.RLock()


def client() -> ModuleType:
    """``kubernetes.client``, with what svctrace uses bound on it (the rest is imported when asked for)."""
    with _lock:
        pkg = sys.modules.get("kubernetes.client")
        if pkg is not None and all(name in pkg.__dict__ for name in _PARTS):
            return pkg
        entered: list[str] = []
        try:
            if "kubernetes" not in sys.modules:
                for name in _BARE:
                    _bare(name)
                    entered.append(name)
            pkg = importlib.import_module("kubernetes.client")
            for name, module in _PARTS.items():
                if name not in pkg.__dict__:
                    setattr(pkg, name, getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # a client laid out otherwise: import it whole, the usual way
            for name in entered:
                sys.modules.pop(name, None)
            pkg = importlib.import_module("kubernetes.client")
        return pkg


def _bare(name: str) -> None:
    """Enter the package ``name`` in sys.modules without running its ``__init__`` (see the module's note)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not a package")
    module = importlib.util.module_from_spec(spec)
    ran = False

    def __getattr__(attr: str) -> Any:
        nonlocal ran
        with _lock:
            if not ran:
                if importlib.util.find_spec(f"{name}.{attr}") is not None:  # `from package import submodule`
                    return importlib.import_module(f"{name}.{attr}")
                ran = True
                spec.loader.exec_module(module)  # type: ignore[union-attr]
                if module.__dict__.get("__getattr__") is __getattr__:
                    del module.__dict__["__getattr__"]
        try:
            return module.__dict__[attr]
        except KeyError:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
