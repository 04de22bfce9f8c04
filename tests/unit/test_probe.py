"""The probe child (svctrace.collectors._probe) a live read runs in the node's namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from svctrace.collectors._probe import SYSCTLS

REPO = Path(__file__).resolve().parents[2]


def test_the_child_prints_its_facts_whole_before_it_leaves() -> None:
    # It leaves by os._exit (no interpreter teardown, which the collector would wait for): what it printed must
    # have been flushed first. Released at once on stdin, as the collector releases it after the saves.
    proc = subprocess.run([sys.executable, "-m", "svctrace.collectors._probe", "http://127.0.0.1:9/proxyMode", "0.5",
                           "--after-stdin"], input="\n", capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=False, env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert set(facts) == {"sysctls", "ip_vs_present", "ip_vs", "url_answer"}
    assert set(facts["sysctls"]) == set(SYSCTLS)
    assert facts["url_answer"] is None  # nothing answers on port 9
