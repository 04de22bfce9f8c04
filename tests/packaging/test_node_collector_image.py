"""packaging/node-collector: the image's tool list names every program the node collector runs.

The image itself is not built here (no container engine on the test machines); what can be checked is that
tools.txt, the one list the Containerfile installs from, covers the collector's commands and that each
program comes from the Debian package it names (CI installs those packages).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from svctrace.parsers.commands import SAVE_COMMANDS
from tests.packaging.conftest import REPO

HERE = REPO / "packaging" / "node-collector"


def tools() -> dict[str, str]:
    rows = [line.split() for line in (HERE / "tools.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    return {row[0]: row[1] for row in rows}


def test_the_list_covers_the_collectors_commands() -> None:
    saves = {command for commands in SAVE_COMMANDS.values() for command in commands.values()}
    assert saves <= set(tools())
    assert {"iptables-save", "ip6tables-save", "nft", "ipset", "conntrack", "ip", "ipvsadm"} <= set(tools())


def test_the_containerfile_installs_from_the_list() -> None:
    containerfile = (HERE / "Containerfile").read_text()
    assert "COPY tools.txt " in containerfile and "apt-get install" in containerfile
    assert "awk 'NF {print $2}'" in containerfile  # the packages column
    assert "command -v" in containerfile  # and the build fails when a listed program is missing


def test_ci_installs_the_same_packages() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert set(tools().values()) <= set(ci.replace("\\\n", " ").split())


@pytest.mark.parametrize(("program", "package"), sorted(tools().items()))
def test_each_program_comes_from_its_package(program: str, package: str) -> None:
    path = shutil.which(program)
    if path is None or shutil.which("dpkg") is None:
        pytest.fail(f"{program} is not installed: .ci/run installs {package}")
    # With merged /usr, dpkg may know /sbin/ip for what PATH finds as /usr/sbin/ip.
    candidates = {path, str(Path(path).resolve())}
    candidates |= {c.removeprefix("/usr") for c in candidates}
    found = subprocess.run(["dpkg", "-S", *sorted(candidates)], capture_output=True, text=True, check=False)
    owners = {p.strip() for line in found.stdout.splitlines() for p in line.split(":")[0].split(",")}
    assert package in owners, (program, path, owners)
