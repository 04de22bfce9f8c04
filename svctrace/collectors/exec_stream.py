"""A collector pod's exec stream, read whole: every stdout frame until the server ends the stream.

The client's own reader (kubernetes.stream.WSClient.update) keeps a second copy of everything read and joins
each frame onto a growing buffer; a 46 MB read would cost it gigabytes of copying. Reading the WebSocket's
frames directly keeps one buffer, and the stream's end (the exec's Status on channel 3) says whether the
script ran.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from svctrace.collectors.collector_pod import NodeReadError, size_words

STDOUT, STDERR, ERROR = 1, 2, 3
PROGRESS_EVERY = 4 << 20  # bytes between two progress reports


def drain(resp: Any, node: str, *, abandon: threading.Event, limit: int, idle: float,
          progress: Callable[[int], None]) -> bytearray:
    """Everything the read printed (stdout and stderr, in order), until the server closes the stream.

    Stops with a NodeReadError when ``abandon`` is set, past ``limit`` bytes, after ``idle`` seconds without a
    frame, when the connection breaks before anything arrived, or when the exec could not run at all.
    """
    from websocket import ABNF, WebSocketTimeoutException

    sock = resp.sock
    sock.settimeout(1.0)
    received = bytearray()
    status: dict[str, Any] | None = None
    last = time.monotonic()
    shown = 0
    while True:
        if abandon.is_set():
            raise NodeReadError(node, "interrupted")
        try:
            opcode, frame = sock.recv_data_frame(True)
        except WebSocketTimeoutException:
            if time.monotonic() - last > idle:
                raise NodeReadError(node, f"the read on node {node} sent nothing for {idle:g}s",
                                    "retry; if it persists, check the node's load") from None
            continue
        except Exception as exc:  # noqa: BLE001 - the connection ended: what arrived is judged below
            if status is None and not received:
                raise NodeReadError(node, f"the exec stream from node {node} broke: {exc}",
                                    "retry; check the network path to the API server") from None
            break
        last = time.monotonic()
        if opcode == ABNF.OPCODE_CLOSE:
            break
        data = frame.data
        if len(data) < 2:
            continue
        channel, payload = data[0], memoryview(data)[1:]
        if channel in (STDOUT, STDERR):
            received += payload
            if len(received) > limit:
                raise NodeReadError(node, f"node {node}'s read is over the {size_words(limit)} limit; stopped",
                                    "run `sudo svctrace capture` on the node and analyse it with --from")
            if len(received) - shown > PROGRESS_EVERY:
                shown = len(received)
                progress(shown)
        elif channel == ERROR:
            with contextlib.suppress(ValueError):
                status = json.loads(bytes(payload))
    if status is not None and status.get("status") != "Success" and status.get("reason") != "NonZeroExitCode":
        raise NodeReadError(node, f"the read could not run in the collector pod on node {node}: "
                            f"{status.get('message') or status}",
                            "the image needs sh (kube-proxy's has it); pass --image with one that does")
    return received


def wait_closed(resp: Any, seconds: float) -> None:
    """Read and drop what an exec stream still sends until the server closes it (at most ``seconds``)."""
    from websocket import ABNF, WebSocketTimeoutException

    end = time.monotonic() + seconds
    with contextlib.suppress(Exception):
        resp.sock.settimeout(0.2)
        while time.monotonic() < end:
            try:
                opcode, _ = resp.sock.recv_data_frame(True)
            except WebSocketTimeoutException:
                continue
            except Exception:  # noqa: BLE001 - the connection ended: that is what was waited for
                return
            if opcode == ABNF.OPCODE_CLOSE:
                return
