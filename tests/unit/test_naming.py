"""kube-proxy's chain names, recomputed: values from its unit tests, the tutorial's real node, and its source rules."""

from __future__ import annotations

from svctrace.kubeproxy import naming


def test_iptables_names_match_kube_proxy_tests_and_a_real_node() -> None:
    assert naming.ipt_service_chain("ns1/svc1:p80", "tcp") == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert naming.ipt_endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1", 80) == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    # iptables -t nat -S on the tutorial's node (k8s-service-tutorial.md)
    assert naming.ipt_service_chain("default/my-nginx-nodeport", "TCP") == "KUBE-SVC-J5QV2XWG4FEBPH3Q"
    assert naming.ipt_endpoint_chain("default/my-nginx-nodeport", "tcp", "10.244.102.90", 80) \
        == "KUBE-SEP-XRUO23GXY67LXLQN"
    assert naming.ipt_local_chain("ns1/svc1:p80", "tcp") == "KUBE-SVL-XPGD46QRK7WJZT7O"


def test_unnamed_ports_and_ipv6_endpoints() -> None:
    assert naming.service_port_name("ns1", "svc1") == "ns1/svc1"
    assert naming.endpoint_string("fd00::1", 80) == "[fd00::1]:80"


def test_nftables_names() -> None:
    assert naming.nft_endpoint_chain("ns1", "svc1", "tcp", "p80", "10.180.0.1", 80) \
        == "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    # colons are not allowed in nft chain names: kube-proxy writes IPv6 endpoints with dots
    v6 = naming.nft_endpoint_chain("ns1", "svc1", "tcp", "p80", "fd00::1", 80)
    assert v6.endswith("-ns1/svc1/tcp/p80__fd00..1/80") and ":" not in v6


def test_nftables_names_are_truncated_like_hash_and_truncate() -> None:
    v6 = "fd00:1111:2222:3333:4444:5555:6666:7777"
    long = naming.nft_endpoint_chain("n" * 63, "s" * 63, "tcp", "p" * 63, v6, 65535)
    assert len(long) == len("endpoint-") + naming.NFT_CHAIN_BASE_MAX and long.endswith("...")
    short = naming.nft_service_chain("ns1", "svc1", "tcp", "p80")
    assert not short.endswith("...")


def test_the_hash_is_base32_of_sha256_however_long() -> None:
    import base64
    import hashlib
    import random
    import string

    rng = random.Random(3)
    for _ in range(3000):
        text = "".join(rng.choice(string.printable + "é日") for _ in range(rng.randrange(0, 80)))
        want = base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()
        for length in (1, 8, 13, 16, 40, 48, 49, 52, 56):
            assert naming._hash(text, length) == want[:length]
