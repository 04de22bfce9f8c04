"""Read the node's small /proc facts and kube-proxy's /proxyMode from inside one network namespace.

``/proc/sys/net``, ``/proc/net/ip_vs`` and 127.0.0.1 all belong to the network namespace of the
process that reads them, so for ``collect_node(netns=...)`` this module is run as
``ip netns exec NAME python -m svctrace.collectors._probe URL TIMEOUT`` and prints JSON; without a
namespace the collector calls :func:`probe` directly. Standard library only, so it starts fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import urllib.request

SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.default.rp_filter",
)
IP_VS = Path("/proc/net/ip_vs")


def read_sysctl(key: str) -> str | None:
    """A sysctl's value, None when its file does not exist (the module behind it is not loaded)."""
    try:
        return Path("/proc/sys", key.replace(".", "/")).read_text().strip()
    except FileNotFoundError:
        return None


def _opener() -> urllib.request.OpenerDirector:
    """What asks /proxyMode. urllib (30 ms to import) is imported here: the collector that imports this module
    for its constants never asks, and the probe child builds it before it waits to ask."""
    import urllib.request

    # No proxies: an http_proxy variable must not send a request for 127.0.0.1 anywhere else.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch_proxy_mode(url: str, timeout: float, opener: urllib.request.OpenerDirector | None = None) -> str | None:
    """kube-proxy's answer on /proxyMode; None when nothing answers (normal: it may not run here)."""
    import urllib.error

    try:
        with (opener or _opener()).open(url, timeout=timeout) as resp:
            body: bytes = resp.read(256)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return body.decode("utf-8", "replace").strip() or None


def probe(url: str | None, timeout: float, before_fetch: Callable[[], object] | None = None) -> dict[str, Any]:
    """Sysctls, the IPVS table and kube-proxy's /proxyMode answer, as seen from this process's namespace.
    ``before_fetch`` is waited for before /proxyMode is asked (its packet passes nat OUTPUT, whose counters
    the rules' read must show as they were)."""
    ip_vs: str | None = None
    # Absent: no IPVS in this kernel; unreadable: not root (ip_vs_present tells which).
    with contextlib.suppress(OSError):
        ip_vs = IP_VS.read_text()
    facts: dict[str, Any] = {
        "sysctls": {key: read_sysctl(key) for key in SYSCTLS},
        "ip_vs_present": IP_VS.exists(),
        "ip_vs": ip_vs,
    }
    opener = _opener() if url else None
    if url and before_fetch is not None:
        before_fetch()
    facts["url_answer"] = fetch_proxy_mode(url, timeout, opener) if url else None
    return facts


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    # --after-stdin: the collector says (a line on stdin) when its saves are done; /proxyMode is asked then.
    wait = sys.stdin.readline if len(sys.argv) > 3 and sys.argv[3] == "--after-stdin" else None
    sys.stdout.write(json.dumps(probe(url, timeout, wait)))
    sys.stdout.flush()
    # The collector waits for this process to end; the interpreter's teardown (~10 ms) is not worth it.
    os._exit(0)


if __name__ == "__main__":
    main()
