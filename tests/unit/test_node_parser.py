"""Node facts: ``ip -j addr`` (checked against this machine's real output) and a snapshot's meta.json."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from svctrace.errors import InputError
from svctrace.model.snapshot import HostAddress
from svctrace.parsers.node import NodeMeta, normalise_proxy_mode, parse_ip_addr_json, parse_meta_json

SNAPSHOTS = Path(__file__).parent.parent / "fixtures" / "snapshots"


# ---------------------------------------------------------------------------------------------- ip -j addr


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 is not installed")
def test_this_machines_ip_j_addr_agrees_with_ip_o_addr() -> None:
    # `ip -o addr` prints the same addresses as text, one per line: an independent reading of the truth.
    as_json = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
    as_text = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    expected = set()
    for line in as_text.splitlines():
        m = re.match(r"\d+:\s+(\S+?)(?:@\S+)?\s+(inet6?)\s+(\S+)/(\d+)(?:\s+peer\s+\S+)?.*\bscope\s+(\S+)", line)
        assert m, line
        ifname, fam, addr, plen, scope = m.groups()
        expected.add((ifname, addr, int(plen), 6 if fam == "inet6" else 4, scope))
    got = parse_ip_addr_json(as_json, "ip -j addr")
    assert {(a.ifname, a.address, a.prefixlen, a.family, a.scope) for a in got} == expected
    assert any(a.address == "127.0.0.1" and a.scope == "host" for a in got)


def test_fixture_addresses_in_order_links_without_addresses_give_none() -> None:
    text = (SNAPSHOTS / "overall" / "node" / "ip-addr.json").read_text()
    assert parse_ip_addr_json(text, "ip-addr.json") == (
        HostAddress("lo", "127.0.0.1", 8, 4, "host"),
        HostAddress("lo", "::1", 128, 6, "host"),
        HostAddress("eth0", "192.168.0.2", 24, 4, "global"),
        HostAddress("eth0", "192.168.99.11", 32, 4, "global"),
        HostAddress("eth0", "2001:db8::1", 64, 6, "global"),
        HostAddress("eth0", "fe80::5054:ff:fe12:3456", 64, 6, "link"),
        HostAddress("eth1", "192.168.1.2", 24, 4, "global"),
        HostAddress("eth1", "2001:db8:1::2", 64, 6, "global"),
    )


def test_filtered_output_leaves_empty_entries_which_are_skipped() -> None:
    # `ip -j -4 addr` on iproute2 5.x/6.x prints {} for each filtered-out address
    text = json.dumps([
        {"ifindex": 1, "ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8,
                                                      "scope": "host"}, {}]},
        {"ifindex": 2, "ifname": "ens33", "addr_info": [{}, {}]},
        {"ifindex": 3, "ifname": "wg0", "addr_info": [{"family": "inet", "local": "10.9.0.1", "address": "10.9.0.2",
                                                       "prefixlen": 32, "scope": "global"}]},
    ])
    assert parse_ip_addr_json(text, "f") == (HostAddress("lo", "127.0.0.1", 8, 4, "host"),
                                             HostAddress("wg0", "10.9.0.1", 32, 4, "global"))


def test_ip_addr_malformed_json_names_the_line() -> None:
    text = '[\n {"ifname": "lo",\n  "addr_info": [\n}\n'
    with pytest.raises(InputError) as err:
        parse_ip_addr_json(text, "snap/node/ip-addr.json")
    assert (err.value.path, err.value.line) == ("snap/node/ip-addr.json", 4)
    assert str(err.value).startswith("snap/node/ip-addr.json:4: not valid JSON")


@pytest.mark.parametrize(("text", "message"), [
    ("", "the file is empty"),
    ('{"ifname": "lo"}', "expected a JSON list"),
    ('["lo"]', "entry 0 is not an interface object"),
    ('[{"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": "8"}]}]',
     "interface lo: an address with malformed"),
])
def test_ip_addr_wrong_shapes(text: str, message: str) -> None:
    with pytest.raises(InputError, match=f"^node/ip-addr.json: {message}"):
        parse_ip_addr_json(text, "node/ip-addr.json")


# ---------------------------------------------------------------------------------------------- meta.json


def test_meta_full() -> None:
    meta = parse_meta_json((SNAPSHOTS / "mixed" / "node" / "meta.json").read_text(), "meta.json")
    assert meta == NodeMeta(name="worker-1", proxy_mode="ipvs",
                            sysctls={"net.ipv4.ip_forward": "1", "net.ipv4.vs.conntrack": "1",
                                     "net.bridge.bridge-nf-call-iptables": "1"})


def test_meta_every_key_optional() -> None:
    assert parse_meta_json("{}", "m") == NodeMeta()
    assert parse_meta_json('{"nodeName": null, "proxyMode": ""}', "m") == NodeMeta()


@pytest.mark.parametrize(("written", "mode"), [
    ("iptables", "iptables"), ("IPVS", "ipvs"), (" nftables\n", "nftables"), ("nft", "nftables"), ("", None)])
def test_proxy_mode_normalised(written: str, mode: str | None) -> None:
    assert normalise_proxy_mode(written, "m") == mode


def test_unknown_proxy_mode_is_an_error_with_the_choices() -> None:
    with pytest.raises(InputError, match=r"^m: proxyMode 'userspace' is not a kube-proxy mode") as err:
        normalise_proxy_mode("userspace", "m")
    assert err.value.hint is not None and "iptables, ipvs, nftables" in err.value.hint


def test_unknown_proxy_mode_in_meta_is_a_warning_and_the_mode_unknown() -> None:
    meta = parse_meta_json('{"nodeName": "w1", "proxyMode": "kernelspace"}', "node/meta.json")
    assert (meta.name, meta.proxy_mode) == ("w1", None)
    assert meta.warnings == ("node/meta.json: proxyMode 'kernelspace' is not a kube-proxy mode svctrace reads; "
                             "treated as unknown (write one of iptables, ipvs, nftables, or leave proxyMode out)",)


def test_unknown_key_is_a_warning_with_a_suggestion() -> None:
    meta = parse_meta_json('{"nodename": "n1", "comment": "captured by hand"}', "node/meta.json")
    assert meta.name is None
    assert meta.warnings == ("node/meta.json: unknown key 'nodename' ignored (did you mean 'nodeName'?)",
                             "node/meta.json: unknown key 'comment' ignored")


def test_meta_malformed_json_names_the_line() -> None:
    with pytest.raises(InputError) as err:
        parse_meta_json('{\n  "nodeName": "n1",\n}\n', "node/meta.json")
    assert (err.value.path, err.value.line) == ("node/meta.json", 3)


@pytest.mark.parametrize(("text", "message"), [
    ('["n1"]', "expected a JSON object"),
    ('{"nodeName": 7}', "nodeName must be a string"),
    ('{"proxyMode": ["ipvs"]}', "proxyMode must be a string"),
    ('{"sysctls": ["net.ipv4.ip_forward=1"]}', "sysctls must be an object"),
    ('{"sysctls": {"net.ipv4.ip_forward": {"value": 1}}}', "sysctls.net.ipv4.ip_forward must be a string"),
])
def test_meta_wrong_types(text: str, message: str) -> None:
    with pytest.raises(InputError, match=f"^m: {message}"):
        parse_meta_json(text, "m")
