"""ipvsadm -Sn and ipset save text -> the IPVS model, and the snapshot loader reading them."""

from __future__ import annotations

import ipaddress
import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from svctrace.errors import InputError
from svctrace.parsers import ipvs
from svctrace.parsers.ipvs import normalize_member, parse_ipset_save, parse_ipvsadm_save

SAVE = """\
-A -t 10.96.0.1:443 -s rr -p 10800
-a -t 10.96.0.1:443 -r 192.168.1.63:6443 -m -w 1
-a -t 10.96.0.1:443 -r 192.168.1.64:6443 -m -w 0
-A -u 10.96.0.10:53 -s rr
-a -u 10.96.0.10:53 -r 10.244.0.5:53 -m -w 1
-A -t [fd00:10:96::1]:443 -s sh -b sh-port
-a -t [fd00:10:96::1]:443 -r [fd00:10:244::5]:6443 -m -w 2 -x 100
-A --sctp-service 10.96.0.50:9000 -s wlc
-A -f 7 -s wrr
-a -f 7 -r 10.1.1.1:80 -g -w 3
"""


def test_ipvsadm_save_services_and_real_servers() -> None:
    table = parse_ipvsadm_save(SAVE, "ipvsadm.txt")
    labels = [vs.label for vs, _ in table.services]
    assert labels == ["TCP 10.96.0.1:443 rr", "UDP 10.96.0.10:53 rr", "TCP [fd00:10:96::1]:443 sh",
                      "SCTP 10.96.0.50:9000 wlc", "FWM 7 wrr"]
    vs, reals = table.services[0]
    assert vs.persistent_timeout == 10800 and vs.flags == ()
    assert [(r.endpoint, r.weight, r.forward) for r in reals] == [
        ("192.168.1.63:6443", 1, "masq"), ("192.168.1.64:6443", 0, "masq")]
    assert reals[0].active_conns is None  # -S does not print connection counts
    v6, (r6,) = table.services[2]
    assert (v6.address, v6.family, v6.flags) == ("fd00:10:96::1", 6, ("-b sh-port",))
    assert (r6.endpoint, r6.weight, r6.options) == ("[fd00:10:244::5]:6443", 2, ("-x 100",))
    assert table.services[3][1] == ()  # a virtual server with no real servers is kept
    fw, (routed,) = table.services[4]
    assert fw.fwmark == 7 and routed.forward == "route" and routed.weight == 3
    assert table.find("tcp", "10.96.0.1", 443) == table.services[0]
    assert table.find("TCP", "10.96.0.1", 80) is None


@pytest.mark.parametrize(("text", "line", "words"), [
    ("-A -t 10.96.0.1:443 -s rr\n-a -t 10.96.0.2:443 -r 10.0.0.1:80 -m -w 1\n", 2, "no earlier -A line"),
    ("-A -t localhost:https -s rr\n", 1, "not a numeric IP address"),
    ("-A -t 10.96.0.1:https -s rr\n", 1, "not a port number"),
    ("\n-A -s rr\n", 2, "no virtual server"),
    ("-A -t 10.96.0.1:443 -s rr\n-a -t 10.96.0.1:443 -r 10.0.0.1:80 -m -w one\n", 2, "weight 'one'"),
    ("IP Virtual Server version 1.2.1 (size=4096)\n", 1, "expected -A or -a"),
    ("-A -t 10.96.0.1:443 -s rr\n-A -t 10.96.0.1:443 -s rr\n", 2, "defined twice"),
])
def test_ipvsadm_bad_lines_name_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(InputError) as err:
        parse_ipvsadm_save(text, "node/ipvsadm.txt")
    assert err.value.message.startswith(f"node/ipvsadm.txt:{line}: ")
    assert words in err.value.message
    assert err.value.hint and "ipvsadm -Sn" in err.value.hint


def test_ipvsadm_list_output_is_told_apart() -> None:
    with pytest.raises(InputError) as err:
        parse_ipvsadm_save("Prot LocalAddress:Port Scheduler Flags\n", "x")
    assert "ipvsadm -Ln" in (err.value.hint or "")


# As `ipset save` (v7.17) printed it on this machine, plus a comment member and a timeout option.
IPSET = """\
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 comment bucketsize 12 initval 0xfabef7bb
add KUBE-CLUSTER-IP 10.96.0.1,tcp:443 comment "default/kubernetes:https cluster IP"
add KUBE-CLUSTER-IP 10.96.0.10,udp:53 timeout 30
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
add KUBE-NODE-PORT-TCP 30380
create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536 bucketsize 12 initval 0x9ff90272
add KUBE-6-CLUSTER-IP fd00::1,tcp:443
create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x3866f2d2
add KUBE-LOOP-BACK 10.244.1.2,tcp:80,10.244.1.2
create KUBE-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536
"""


def test_ipset_save() -> None:
    sets = parse_ipset_save(IPSET, "ipset.txt")
    assert [s.name for s in sets.sets] == ["KUBE-CLUSTER-IP", "KUBE-NODE-PORT-TCP", "KUBE-6-CLUSTER-IP",
                                           "KUBE-LOOP-BACK", "KUBE-EXTERNAL-IP"]
    cip = sets.get("KUBE-CLUSTER-IP")
    assert cip is not None and cip.type == "hash:ip,port" and cip.family == 4
    assert cip.members == ("10.96.0.1,tcp:443", "10.96.0.10,udp:53")
    assert cip.comments == (("10.96.0.1,tcp:443", "default/kubernetes:https cluster IP"),)
    assert cip.member_options == (("10.96.0.10,udp:53", ("timeout", "30")),)
    assert "initval" in cip.options and cip.options[:2] == ("family", "inet")
    nodeport = sets.get("KUBE-NODE-PORT-TCP")
    assert nodeport is not None and nodeport.members == ("30380",) and nodeport.family is None
    v6 = sets.get("KUBE-6-CLUSTER-IP")
    assert v6 is not None and v6.family == 6 and v6.has("FD00::1,TCP:443")
    empty = sets.get("KUBE-EXTERNAL-IP")
    assert empty is not None and empty.members == ()
    assert sets.get("KUBE-NOPE") is None


def test_normalize_member() -> None:
    assert normalize_member("FD00:0:0::1,TCP:443") == "fd00::1,tcp:443"
    assert normalize_member("1.2.3.4,tcp:80,10.0.0.0/8") == "1.2.3.4,tcp:80,10.0.0.0/8"
    assert normalize_member("30380") == "30380"


@pytest.mark.parametrize(("text", "line", "words"), [
    ("add KUBE-X 10.0.0.1\n", 1, "no earlier create line"),
    ("create KUBE-X hash:ip\ncreate KUBE-X hash:ip\n", 2, "created twice"),
    ("create KUBE-X hash:ip comment\nadd KUBE-X 10.0.0.1 comment \"open\n", 2, "cannot split"),
    ("create KUBE-X\n", 1, "needs a set name and a type"),
    ("Name: KUBE-X\nType: hash:ip\n", 1, "expected create or add"),
])
def test_ipset_bad_lines_name_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(InputError) as err:
        parse_ipset_save(text, "node/ipset.txt")
    assert err.value.message.startswith(f"node/ipset.txt:{line}: ")
    assert words in err.value.message
    assert err.value.hint and "ipset save" in err.value.hint


_ADDRESSES = ["10.96.0.1", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "1.2.3.04",
              "\u0661.2.3.4", "1.2.3.4 ", "", "fd00::1", "FD00:0::1", "::ffff:1.2.3.4", "1.2.3.4%eth0", "a.b.c.d"]


@pytest.mark.parametrize("text", _ADDRESSES)
def test_an_address_is_written_as_ipaddress_writes_it(text: str) -> None:
    try:
        expected: str | type[ValueError] = str(ipaddress.ip_address(text))
    except ValueError:
        expected = ValueError
    try:
        got: str | type[ValueError] = ipvs.ip_text(text)
    except ValueError:
        got = ValueError
    assert got == expected


@given(st.text(alphabet=st.sampled_from("0123456789.:af \u0661"), max_size=20))
def test_any_address_text_is_written_as_ipaddress_writes_it(text: str) -> None:
    test_an_address_is_written_as_ipaddress_writes_it(text)


_LINES = ["add KUBE-CLUSTER-IP 10.96.0.1,tcp:443", "create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024",
          "add  S\t10.0.0.1,udp:53   comment \"kube-dns\"", "add S 'a b'", "add S a\\ b", "add S #x y",
          "add S a\x0bb", "add S a\u00a0b", "add S caf\u00e9"]


@pytest.mark.parametrize("line", _LINES)
def test_a_line_splits_as_shlex_splits_it(line: str) -> None:
    assert ipvs.split_words(line) == shlex.split(line)


@given(st.text(alphabet=st.sampled_from("ab1,: \t\"'\\#\x0b\u00a0"), min_size=1, max_size=30))
def test_any_line_splits_as_shlex_splits_it(line: str) -> None:
    try:
        expected: list[str] | type[ValueError] = shlex.split(line)
    except ValueError:
        expected = ValueError
    try:
        got: list[str] | type[ValueError] = ipvs.split_words(line)
    except ValueError:
        got = ValueError
    assert got == expected


_REAL_SERVERS = ["-a -t 10.96.0.1:443 -r 192.168.1.63:6443 -m -w 1", "-a -u 10.96.0.10:53 -r 10.244.0.5:53 -m -w 0",
                 "-a -t 10.96.0.1:443 -r 10.0.0.1:65535 -m -w 0012", "-a -t 10.96.0.1:443 -r 10.0.0.1:65536 -m -w 1",
                 "-a -t 10.96.0.1:443 -r 010.0.0.1:80 -m -w 1", "-a -t 10.96.0.9:443 -r 10.0.0.1:80 -m -w 1",
                 "-a -t 10.96.0.1:80 -r 10.0.0.1:80 -m -w 1", "-a -u 10.96.0.1:443 -r 10.0.0.1:80 -m -w 1"]


@pytest.mark.parametrize("line", _REAL_SERVERS)
def test_a_plain_real_server_line_reads_as_the_general_way_reads_it(line: str) -> None:
    head = "-A -t 10.96.0.1:443 -s rr\n-A -u 10.96.0.10:53 -s rr\n"
    general = line.replace(" -r ", "  -r ")  # two blanks: not the plain shape, read word by word

    def read(text: str) -> object:
        try:
            return parse_ipvsadm_save(text, "ipvsadm.txt")
        except InputError as exc:
            return exc.message, exc.line
    assert read(head + line + "\n") == read(head + general + "\n")
