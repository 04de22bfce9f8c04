"""The one-liner in docs/snapshot.md, run as written, makes a snapshot that --from loads.

kubectl is a fake that prints canned `kubectl get -o yaml` output (and records how it was called),
`sudo` just runs its command, and `curl` stands in for kube-proxy's /proxyMode. `ip -j addr` is this
machine's real one. iptables-save is either the real one reading a network namespace loaded with
kube-proxy's rules (netns test) or a canned dump (runs anywhere).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from svctrace.collectors.snapshot_dir import load_snapshot
from svctrace.model.iptables import IptablesDump
from svctrace.model.snapshot import Snapshot
from svctrace.parsers import iptables_save
from svctrace.parsers.node import parse_ip_addr_json
from tests.integration.netns import BACKENDS, NetnsNode

ROOT = Path(__file__).parent.parent.parent
DOC = ROOT / "docs" / "snapshot.md"
SNAPSHOTS = ROOT / "tests" / "fixtures" / "snapshots"
OBJECTS = SNAPSHOTS / "mixed" / "api" / "objects.yaml"
COREDNS = SNAPSHOTS / "mixed" / "api" / "coredns.yaml"
KUBE_PROXY_DUMP = SNAPSHOTS / "overall" / "node" / "iptables-save.txt"

EXPECTED_KUBECTL_CALLS = [
    "get svc,endpointslices,endpoints,pods,nodes,networkpolicies -A -o json",
    "-n kube-system get cm coredns -o json",
]

needs_tools = pytest.mark.skipif(any(shutil.which(t) is None for t in ("bash", "ip", "tar", "hostname")),
                                 reason="needs bash, ip (iproute2), tar and hostname")


def one_liner() -> str:
    """The shell line docs/snapshot.md tells users to paste, exactly as written there."""
    text = DOC.read_text()
    m = re.search(r"<!-- snapshot-one-liner:[^>]*-->\n```sh\n(.+?)\n```", text, re.DOTALL)
    assert m, "docs/snapshot.md lost its marked one-liner block"
    line = m.group(1)
    assert "\n" not in line, "the one-liner must stay one line"
    return line


def fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def canned(name: str) -> str:
    """A fixture file as `kubectl ... -o json` or `-o yaml` would print it, whichever the one-liner asks for."""
    src = {"objects": OBJECTS, "coredns": COREDNS}[name]
    to_json = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout, indent=4)"
    return f"""case "$*" in
  *"-o json"*) "{sys.executable}" -c '{to_json}' {src} ;;
  *) cat {src} ;;
esac"""


KUBECTL_CANNED = f"""case "$*" in
  *"get cm coredns"*) {canned("coredns")} ;;
  *) {canned("objects")} ;;
esac"""


def run_one_liner(tmp_path: Path, iptables_save_body: str, ip6tables_save_body: str, *,
                  kubectl_body: str = KUBECTL_CANNED, curl_body: str = "printf iptables") -> tuple[Path, Path, Path]:
    """Run the one-liner in tmp_path/work with the given fakes; returns (folder, tarball, kubectl call log)."""
    bin_dir, work = tmp_path / "bin", tmp_path / "work"
    bin_dir.mkdir()
    work.mkdir()
    calls = tmp_path / "kubectl-calls.txt"
    fake(bin_dir, "kubectl", f'echo "$*" >> {calls}\n{kubectl_body}')
    fake(bin_dir, "sudo", 'exec "$@"')
    fake(bin_dir, "curl", curl_body)
    fake(bin_dir, "iptables-save", iptables_save_body)
    fake(bin_dir, "ip6tables-save", ip6tables_save_body)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
    proc = subprocess.run(["bash", "-c", one_liner()], cwd=work, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    (tarball,) = work.glob("snap-*.tar.gz")
    assert proc.stdout.strip() == f"wrote {tarball.name}"
    folder = work / tarball.name.removesuffix(".tar.gz")
    assert folder.is_dir()
    return folder, tarball, calls


def check_common(folder: Path, tarball: Path, calls: Path) -> Snapshot:
    """What every run of the one-liner must give, folder and tarball alike."""
    hostname = subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
    assert folder.name.startswith(f"snap-{hostname}-")
    assert calls.read_text().splitlines() == EXPECTED_KUBECTL_CALLS
    with tarfile.open(tarball) as tf:
        names = tf.getnames()
    assert all(n == folder.name or n.startswith(folder.name + "/") for n in names), names

    snap = load_snapshot(folder)
    from_tar = load_snapshot(tarball)

    def plain(s: Snapshot) -> Snapshot:
        def blank(d: IptablesDump | None) -> IptablesDump | None:
            return d if d is None else d.with_source("")
        return dataclasses.replace(s, source="", iptables=blank(s.iptables), ip6tables=blank(s.ip6tables))

    assert plain(from_tar) == plain(snap)
    assert snap.warnings == ()
    assert snap.api_collected and len(snap.services) == 4 and len(snap.endpoint_slices) == 3
    assert snap.config_map("kube-system", "coredns") is not None
    assert snap.node.name == hostname and snap.node.proxy_mode == "iptables"
    # ip -j addr is this machine's own: compare with a fresh reading
    now = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
    assert snap.node.addresses == parse_ip_addr_json(now, "ip -j addr")
    assert "127.0.0.1" in snap.node.local_ips
    assert snap.iptables is not None
    return snap


@needs_tools
def test_one_liner_with_a_canned_dump(tmp_path: Path) -> None:
    # ip6tables-save failing (a node without IPv6) must leave no empty file behind
    folder, tarball, calls = run_one_liner(tmp_path, f"cat {KUBE_PROXY_DUMP}", "echo 'ip6tables: no IPv6' >&2; exit 1")
    snap = check_common(folder, tarball, calls)
    assert not (folder / "node" / "ip6tables-save.txt").exists()
    assert snap.iptables is not None
    assert snap.iptables.rule_count == iptables_save.parse(KUBE_PROXY_DUMP.read_text()).rule_count
    assert snap.missing_words == ("IPv6 iptables rules (node/ip6tables-save.txt)", "IPVS services (node/ipvsadm.txt)",
                            "ipsets (node/ipset.txt)", "nftables ruleset (node/nft.json)")


@needs_tools
def test_one_liner_without_coredns_configmap_or_kube_proxy_metrics(tmp_path: Path) -> None:
    # a cluster with kube-dns (or no DNS): kubectl fails for the ConfigMap; nothing answers on :10249
    kubectl = f"""case "$*" in
  *"get cm coredns"*) echo 'Error from server (NotFound): configmaps "coredns" not found' >&2; exit 1 ;;
  *) {canned("objects")} ;;
esac"""
    folder, _, calls = run_one_liner(tmp_path, f"cat {KUBE_PROXY_DUMP}", "exit 1", kubectl_body=kubectl,
                                     curl_body="exit 7")
    assert calls.read_text().splitlines() == EXPECTED_KUBECTL_CALLS
    assert not (folder / "api" / "coredns.json").exists()
    snap = load_snapshot(folder)
    assert snap.config_maps == () and snap.api_collected and len(snap.services) == 4
    # kube-proxy did not answer: the mode is what its rules show, decided once when the snapshot is read
    assert snap.node.proxy_mode == "iptables" and snap.node.proxy_mode_how.startswith("from the dataplane")
    assert snap.warnings == ()


@pytest.mark.netns
@needs_tools
def test_one_liner_reading_a_network_namespace(tmp_path: Path, netns_factory: Callable[..., NetnsNode]) -> None:
    node = netns_factory(backend="nft", need=("nfacct",))
    node.load_rules(KUBE_PROXY_DUMP.read_text())
    save4, save6 = BACKENDS["nft"][4][1], BACKENDS["nft"][6][1]
    folder, tarball, calls = run_one_liner(
        tmp_path, f'exec ip netns exec {node.name} {save4} "$@"', f'exec ip netns exec {node.name} {save6} "$@"')
    snap = check_common(folder, tarball, calls)
    assert snap.iptables is not None and snap.iptables.backend == "nf_tables"
    # what the kernel printed back holds every kube-proxy rule that was loaded
    assert snap.iptables.rule_count == iptables_save.parse(KUBE_PROXY_DUMP.read_text()).rule_count
    sep = snap.iptables.chain("nat", "KUBE-SEP-I77PXRDZVX7PMWMN")
    assert sep is not None and sep.rules[-1].target == "DNAT"
    assert snap.ip6tables is not None and snap.ip6tables.family == 6
    assert snap.missing_words == ("IPVS services (node/ipvsadm.txt)", "ipsets (node/ipset.txt)",
                            "nftables ruleset (node/nft.json)")
