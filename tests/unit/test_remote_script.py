"""The collector pod's script: one list of read-only commands, valid POSIX sh, framed output read back."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from svctrace.collectors import node_script
from svctrace.collectors._probe import SYSCTLS
from svctrace.model.snapshot import NodeFile
from svctrace.parsers import collector_output as out
from svctrace.parsers.collector_output import node_input, parse_records
from tests.packaging.test_node_collector_image import tools

TOKEN = "@@svctrace-0123456789abcdef"
SHELL_FUNCTIONS = {"rd", "links"}
# Every command line the script may run, with its arguments: all of them only read.
READ_ONLY = [
    r"(ip6?tables)-(legacy|nft)-save( -t (nat|filter))?",
    r"nft -j list table ip6? kube-proxy",
    r"ipset save",
    r"ipvsadm -Sn",
    r"conntrack -L -f ipv[46] -p udp -o extended",
    r"ip -j addr",
    r"grep -E '\^ipv\[46\] \+\[0-9\]\+ udp ' /proc/net/nf_conntrack",
    r"rd /proc/\S+",
    r"links",
]


def _commands(script: str) -> list[str]:
    """The command of every ``rec NAME COMMAND...`` in the script."""
    return [m.group(1) for m in re.finditer(r"\brec \S+ ([^;\n]+)", script)]


@pytest.mark.parametrize("tables", [("*",), ("nat", "filter")])
def test_every_command_is_a_read_from_the_one_list(tables: tuple[str, ...]) -> None:
    script = node_script.script(TOKEN, tables)
    commands = _commands(script)
    assert len(commands) > 15
    for command in commands:
        assert any(re.fullmatch(pattern, command.strip()) for pattern in READ_ONLY), command
        program = command.split()[0]
        assert program in {*node_script.PROGRAMS, *node_script.SHELL_TOOLS, *SHELL_FUNCTIONS}, program


def test_the_programs_are_the_collector_images_tools() -> None:
    assert set(node_script.PROGRAMS) <= set(tools())  # packaging/node-collector/tools.txt: the image installs them
    have = set(re.findall(r"\bhave ([\w-]+)", node_script.script(TOKEN)))
    assert have == {*node_script.PROGRAMS, "cat"}


def test_the_script_is_posix_sh() -> None:
    shell = shutil.which("dash") or shutil.which("sh")
    assert shell is not None
    for tables in (("*",), ("nat", "filter")):
        checked = subprocess.run([shell, "-n"], input=node_script.script(TOKEN, tables), text=True,
                                 capture_output=True, check=False)
        assert checked.returncode == 0, checked.stderr


def test_bad_tokens_and_tables_are_refused() -> None:
    with pytest.raises(ValueError):
        node_script.script("@@svctrace-x; rm -rf /")
    with pytest.raises(ValueError):
        node_script.script(TOKEN, ("nat; reboot",))


def _record(name: str, text: str, status: int = 0, stderr: str = "") -> str:
    body = f"{TOKEN} B {name}\n{text}\n{TOKEN} E {status} {name}\n"
    if stderr:
        body += f"{TOKEN} B {name}!\n{stderr}\n{TOKEN} E 0 {name}!\n"
    return body


SAVE = """*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
COMMIT
"""


def test_records_come_back_whole_with_their_stderr_and_status() -> None:
    text = ("sh: 1: odd shell noise\n" + _record("save:nf_tables:4:*", SAVE) + f"{TOKEN} M ipvsadm\n"
            + f"{TOKEN} F ip_vs\n" + _record("nft:ip", "", 1, "Error: No such file or directory\nmore")
            + f"{TOKEN} Z\n")
    records = parse_records(text, TOKEN)
    assert records.complete and records.stray == len("sh: 1: odd shell noise\n")
    assert records.records["save:nf_tables:4:*"] == out.Record(SAVE, 0)
    assert records.records["nft:ip"] == out.Record("", 1, "Error: No such file or directory\nmore")
    assert records.absent == {"ipvsadm"} and records.facts == {"ip_vs"}


def test_an_output_cut_short_keeps_only_whole_records() -> None:
    text = _record("hostname", "node-a\n") + f"{TOKEN} B save:nf_tables:4:*\n*nat\n:PREROUTING ACC"
    records = parse_records(text, TOKEN)
    assert list(records.records) == ["hostname"] and not records.complete
    node = node_input(records, node_name="node-a", where="", sysctls=SYSCTLS)
    assert "the read of node node-a ended early" in node.warnings[0]
    assert "iptables-nft-save did not run (the read ended before it)" in " ".join(node.warnings)


def _full(*, legacy_names: str = "", legacy: str | None = None, nft: str = SAVE, extra: str = "") -> str:
    parts = [_record("hostname", "node-a"), _record(out.sysctl_section("net.ipv4.ip_forward"), "1\n"),
             _record(out.legacy_tables_section(4), legacy_names), _record(out.legacy_tables_section(6), ""),
             _record(out.LINKS, "1\tlo\tunknown\t772\t\n2\teth0\tup\t1\t\n"), f"{TOKEN} M ip\n",
             _record(out.FIB_TRIE, "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 192.168.1.10\n        /32 host LOCAL\n"),
             _record(out.ROUTE, "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                                "eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"),
             _record(out.save_section("nf_tables", 4, "*"), nft), _record(out.save_section("nf_tables", 6, "*"), ""),
             _record(out.nft_section("ip"), "", 1, "Error: No such file or directory"),
             _record(out.nft_section("ip6"), "", 1, "Error: No such file or directory"),
             f"{TOKEN} M conntrack\n", _record(out.NF_CONNTRACK, "", 1)]
    if legacy is not None:
        parts.append(_record(out.save_section("legacy", 4, "*"), legacy))
    return "".join(parts) + extra + f"{TOKEN} Z\n"


def test_a_read_becomes_the_node_files_a_local_read_gives() -> None:
    node = node_input(parse_records(_full(), TOKEN), node_name="node-a", where="", sysctls=SYSCTLS)
    assert node.files[NodeFile.IPTABLES] == SAVE
    assert node.where[NodeFile.IPTABLES] == "iptables-nft-save"
    meta = json.loads(node.files[NodeFile.META])
    assert meta["nodeName"] == "node-a" and meta["sysctls"] == {"net.ipv4.ip_forward": "1"}
    assert meta["iptablesBackend"] == "nf_tables"
    addresses = json.loads(node.files[NodeFile.IP_ADDR])
    assert [(a["ifname"], [i["local"] for i in a["addr_info"]]) for a in addresses] == [
        ("lo", []), ("eth0", ["192.168.1.10"])]
    assert NodeFile.CONNTRACK in node.files and node.files[NodeFile.CONNTRACK] == ""  # grep found no UDP flow
    assert {m.what for m in node.missing} == {NodeFile.IPVSADM, NodeFile.IPSET}  # not in use here
    assert node.warnings == []
    assert node.probe.nft_tables == () and node.probe.ipvs_available is False


def test_the_legacy_backend_is_read_only_where_the_kernel_holds_its_tables() -> None:
    legacy = SAVE.replace("KUBE-SERVICES", "KUBE-SERVICES").replace("*nat", "# legacy\n*nat")
    node = node_input(parse_records(_full(legacy_names="nat\nfilter\n", legacy=legacy, nft="*nat\nCOMMIT\n"), TOKEN),
                      node_name="node-c", where="", sysctls=SYSCTLS)
    assert json.loads(node.files[NodeFile.META])["iptablesBackend"] == "legacy"
    assert node.files[NodeFile.IPTABLES] == legacy and node.where[NodeFile.IPTABLES] == "iptables-legacy-save"


def test_an_ipvs_node_without_ipvsadm_is_read_from_proc() -> None:
    ip_vs = ("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n"
             "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
             "TCP  0A600001:01BB rr\n  -> C0A80165:192B      Masq    1      0          0\n")
    extra = (f"{TOKEN} M ipvsadm\n" + _record(out.IP_VS, ip_vs) + _record(out.IPSET, "create KUBE-CLUSTER-IP "
             "hash:ip,port family inet\n"))
    node = node_input(parse_records(_full(extra=f"{TOKEN} F ip_vs\n" + extra), TOKEN), node_name="n", where="",
                      sysctls=SYSCTLS)
    assert node.files[NodeFile.IPVSADM] == ("-A -t 10.96.0.1:443 -s rr\n"
                                           "-a -t 10.96.0.1:443 -r 192.168.1.101:6443 -m -w 1\n")
    assert node.probe.ipvs_available is True and node.probe.ipvs_services == 1
    assert node.files[NodeFile.IPSET].startswith("create KUBE-CLUSTER-IP")
