"""Live IPVS and ipset reading against this machine's kernel.

The CI kernel has no IPVS: reading it must give the one clear "not available" error, not a traceback,
and must not load the module as a side effect. ipsets are read for real inside a namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from svctrace.collectors import ipvs
from svctrace.errors import CollectionError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "ipvs"
NO_IPVS = not os.path.exists(ipvs.PROC_IP_VS)


def _needs_root() -> None:
    if os.geteuid() != 0 and not os.environ.get("SVCTRACE_REQUIRE_NETNS"):
        pytest.skip("needs root (set SVCTRACE_REQUIRE_NETNS=1 to make this a failure)")


@pytest.mark.skipif(not NO_IPVS, reason="this kernel has IPVS; the test is about kernels without it")
def test_reading_ipvs_without_ipvs_is_a_clear_error() -> None:
    with pytest.raises(CollectionError) as err:
        ipvs.read_ipvs()
    assert err.value.message.startswith("IPVS is not available in this kernel")
    assert err.value.hint and "--from" in err.value.hint
    assert not os.path.exists(ipvs.PROC_IP_VS)  # asking did not load ip_vs


@pytest.mark.netns
@pytest.mark.skipif(not NO_IPVS, reason="this kernel has IPVS; the test is about kernels without it")
def test_netlink_lookup_failure_is_the_same_clear_error(netns_name: str) -> None:
    """Past the /proc check (a namespace), the genl family IPVS does not resolve: same error, no traceback."""
    with pytest.raises(CollectionError) as err:
        ipvs.read_ipvs(netns=netns_name)
    assert err.value.message.startswith("IPVS is not available in this kernel")
    assert "IPVS cannot be resolved" in err.value.message


def test_a_process_reading_ipvs_prints_no_traceback() -> None:
    code = ("from svctrace.collectors.ipvs import read_ipvs\n"
            "from svctrace.errors import CollectionError\n"
            "try:\n    read_ipvs()\nexcept CollectionError as e:\n    print('error:', e.message)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "Traceback" not in out.stderr + out.stdout
    if NO_IPVS:
        assert out.stdout.startswith("error: IPVS is not available in this kernel")


@pytest.fixture
def netns_name() -> Iterator[str]:
    _needs_root()
    name = f"svctrace-ipvs-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.netns
def test_read_ipsets_live_in_a_namespace(netns_name: str) -> None:
    commands = (FIXTURES / "ipset_commands.txt").read_text()
    subprocess.run(["ip", "netns", "exec", netns_name, "ipset", "restore"], input=commands, text=True,
                   check=True)
    sets = ipvs.read_ipsets(netns=netns_name)
    cip = sets.get("KUBE-CLUSTER-IP")
    assert cip is not None and sorted(cip.members) == ["10.96.0.1,tcp:443", "10.96.0.10,udp:53"]
    lb = sets.get("KUBE-LOAD-BALANCER-SOURCE-CIDR")
    assert lb is not None and lb.members == ("1.2.3.4,tcp:80,10.0.0.0/8",)
    v6 = sets.get("KUBE-6-CLUSTER-IP")
    assert v6 is not None and v6.family == 6 and v6.members == ("fd00:10:96::1,tcp:443",)
