"""The bundled demo snapshot is a consistent picture of the tutorial cluster.

Checked on the raw files (not through svctrace's parsers): every file reads, the objects agree with
each other the way a real cluster's do, and every kube-proxy chain name in the node's dump is the
hash svctrace.kubeproxy.naming computes for the Service port / endpoint it serves.
"""

from __future__ import annotations

import ipaddress
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import svctrace.demo
from svctrace.demo import demo_path
from svctrace.errors import SvctraceError
from svctrace.kubeproxy import naming
from tests.fixtures.demo_build.demo_api import api_objects, read

DEMO = demo_path()
Obj = dict[str, Any]
UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"  # apiserver uids are random UUIDs


OBJECTS = api_objects(DEMO)


def of_kind(kind: str) -> list[Obj]:
    return [o for o in OBJECTS if o["kind"] == kind]


def key(o: Obj) -> tuple[str, str]:
    return o["metadata"].get("namespace", ""), o["metadata"]["name"]


PODS = {key(p): p for p in of_kind("Pod")}
SERVICES = {key(s): s for s in of_kind("Service")}


def slices_of(namespace: str, name: str) -> list[Obj]:
    return [s for s in of_kind("EndpointSlice") if s["metadata"]["namespace"] == namespace
            and s["metadata"]["labels"].get("kubernetes.io/service-name") == name]


def test_demo_path_is_the_packaged_folder() -> None:
    assert Path(svctrace.demo.__file__).parent / "tutorial" == DEMO
    assert {p.name for p in DEMO.iterdir()} == {"api", "node"}


def test_demo_path_refuses_a_zipped_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    archive = tmp_path / "svctrace.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("svctrace/demo/tutorial/node/meta.json", "{}")
    monkeypatch.setattr(svctrace.demo, "_package_folder", lambda: zipfile.Path(archive, "svctrace/demo/"))
    with pytest.raises(SvctraceError, match="not a folder on disk") as info:
        demo_path()
    assert info.value.hint and "pip install" in info.value.hint


def test_api_files_are_json_lists_and_single_objects() -> None:
    # JSON only: `--from demo` then never imports PyYAML (tests/cli/test_startup.py); YAML has its own fixtures.
    files = {p.name: read(p) for p in (DEMO / "api").iterdir()}
    assert {name.rsplit(".", 1)[1] for name in files} == {"json"}
    assert files["services.json"]["kind"] == "List" and files["pods.json"]["kind"] == "List"
    assert files["coredns-configmap.json"]["kind"] == "ConfigMap"


def test_kinds_and_counts() -> None:
    assert Counter(o["kind"] for o in OBJECTS) == {"Service": 7, "EndpointSlice": 6, "Endpoints": 6, "Pod": 12,
                                                   "Node": 3, "ConfigMap": 1}
    for o in OBJECTS:
        api = {"EndpointSlice": "discovery.k8s.io/v1"}.get(o["kind"], "v1")
        assert o["apiVersion"] == api
        assert re.fullmatch(UUID4, o["metadata"]["uid"])
        assert o["metadata"]["resourceVersion"].isdigit()


def test_services_are_the_tutorials() -> None:
    def summary(s: Obj) -> tuple[Any, ...]:
        spec = s["spec"]
        ports = tuple((p.get("name", ""), p["port"], p["protocol"], p.get("targetPort"), p.get("nodePort"))
                      for p in spec["ports"])
        return spec["type"], spec.get("clusterIP"), ports, spec.get("selector"), spec.get("externalName")

    assert {k: summary(s) for k, s in SERVICES.items()} == {
        ("default", "kubernetes"): ("ClusterIP", "10.96.0.1", (("https", 443, "TCP", 6443, None),), None, None),
        ("kube-system", "kube-dns"): ("ClusterIP", "10.96.0.10", (("dns", 53, "UDP", 53, None),
                                                                  ("dns-tcp", 53, "TCP", 53, None),
                                                                  ("metrics", 9153, "TCP", 9153, None)),
                                      {"k8s-app": "kube-dns"}, None),
        ("default", "my-nginx"): ("ClusterIP", "10.99.198.177", (("", 80, "TCP", 80, None),),
                                  {"run": "my-nginx"}, None),
        ("default", "my-nginx-nodeport"): ("NodePort", "10.104.251.190", (("", 80, "TCP", 80, 30380),),
                                           {"run": "my-nginx-nodeport"}, None),
        ("default", "client-svc"): ("ExternalName", None, (("http", 80, "TCP", 80, None),), None,
                                    "nginx-svc.nginx-ns.svc.cluster.local"),
        ("nginx-ns", "nginx-svc"): ("ClusterIP", "10.103.136.27", (("http", 80, "TCP", 80, None),),
                                    {"app": "nginx"}, None),
        ("default", "mysql"): ("ClusterIP", "10.107.232.103", (("", 3306, "TCP", 3306, None),), None, None),
    }
    for s in SERVICES.values():
        spec = s["spec"]
        assert spec["sessionAffinity"] == "None"
        if spec["type"] == "ExternalName":
            assert not {"clusterIP", "clusterIPs", "ipFamilies", "internalTrafficPolicy"} & set(spec)
            continue
        assert ipaddress.ip_address(spec["clusterIP"]) in ipaddress.ip_network("10.96.0.0/12")
        assert spec["clusterIPs"] == [spec["clusterIP"]]
        assert (spec["ipFamilies"], spec["ipFamilyPolicy"], spec["internalTrafficPolicy"]) == \
            (["IPv4"], "SingleStack", "Cluster")
        assert ("externalTrafficPolicy" in spec) == (spec["type"] == "NodePort")


def test_pods_match_the_tutorial() -> None:
    where = {k[1]: (p["status"]["podIP"], p["spec"]["nodeName"]) for k, p in PODS.items()
             if not p["spec"].get("hostNetwork")}
    assert where["my-nginx-5b56ccd65f-7xzr4"] == ("10.244.187.102", "xianchaonode2")
    assert where["my-nginx-5b56ccd65f-95n7p"] == ("10.244.209.149", "xianchaonode1")
    assert where["my-nginx-nodeport-649c945f85-l2hj6"] == ("10.244.121.23", "xianchaonode1")
    assert where["my-nginx-nodeport-649c945f85-zr47r"] == ("10.244.102.90", "xianchaonode2")
    assert {"client-76b6556d97-xk7mg", "dig", "nginx-7cf7d6dbc8-lzm6j"} <= set(where)
    for p in PODS.values():
        st = p["status"]
        assert st["phase"] == "Running" and st["podIPs"] == [{"ip": st["podIP"]}]
        node = next(n for n in of_kind("Node") if n["metadata"]["name"] == p["spec"]["nodeName"])
        assert st["hostIP"] == next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
        assert all(c["ready"] for c in st["containerStatuses"])
        if not p["spec"].get("hostNetwork"):
            assert ipaddress.ip_address(st["podIP"]) in ipaddress.ip_network("10.244.0.0/16")
    assert len({p["status"]["podIP"] for p in PODS.values() if not p["spec"].get("hostNetwork")}) == 9


def test_endpointslices_match_pods_and_selectors() -> None:
    for (ns, name), svc in SERVICES.items():
        selector = svc["spec"].get("selector")
        slices = slices_of(ns, name)
        if svc["spec"]["type"] == "ExternalName":
            assert not slices
            continue
        assert len(slices) == 1, (ns, name)
        eps = slices[0]["endpoints"]
        if selector is None:
            continue
        selected = {k[1] for k, p in PODS.items() if k[0] == ns
                    and all(p["metadata"].get("labels", {}).get(lk) == lv for lk, lv in selector.items())}
        assert {e["targetRef"]["name"] for e in eps} == selected, (ns, name)
        for e in eps:
            pod = PODS[(ns, e["targetRef"]["name"])]
            assert e["addresses"] == [pod["status"]["podIP"]]
            assert e["nodeName"] == pod["spec"]["nodeName"]
            assert e["targetRef"]["uid"] == pod["metadata"]["uid"]
            assert e["conditions"] == {"ready": True, "serving": True, "terminating": False}
        labels = slices[0]["metadata"]["labels"]
        assert labels["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
        assert slices[0]["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
        assert [p["name"] for p in slices[0]["ports"]] == [p.get("name", "") for p in svc["spec"]["ports"]]


def test_selectorless_services_have_the_slices_a_real_control_plane_writes() -> None:
    (apiserver,) = slices_of("default", "kubernetes")
    assert apiserver["metadata"]["name"] == "kubernetes"
    assert apiserver["metadata"]["labels"] == {"kubernetes.io/service-name": "kubernetes"}
    assert apiserver["endpoints"] == [{"addresses": ["192.168.1.63"], "conditions": {"ready": True}}]
    assert apiserver["ports"] == [{"name": "https", "port": 6443, "protocol": "TCP"}]

    (mirrored,) = slices_of("default", "mysql")
    assert mirrored["metadata"]["name"].startswith("mysql-")
    assert mirrored["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == \
        "endpointslicemirroring-controller.k8s.io"
    endpoints = next(e for e in of_kind("Endpoints") if key(e) == ("default", "mysql"))
    assert mirrored["metadata"]["ownerReferences"][0]["uid"] == endpoints["metadata"]["uid"]
    assert mirrored["endpoints"] == [{"addresses": ["192.168.40.182"], "conditions": {"ready": True}}]
    assert "annotations" not in mirrored["metadata"]  # last-applied-configuration is not mirrored


def test_v1_endpoints_agree_with_the_slices() -> None:
    for ep in of_kind("Endpoints"):
        ns, name = key(ep)
        from_endpoints = {a["ip"] for subset in ep["subsets"] for a in subset["addresses"]}
        from_slices = {a for s in slices_of(ns, name) for e in s["endpoints"] for a in e["addresses"]}
        assert from_endpoints == from_slices, name
    kubernetes = next(e for e in of_kind("Endpoints") if key(e) == ("default", "kubernetes"))
    assert kubernetes["metadata"]["labels"] == {"endpointslice.kubernetes.io/skip-mirror": "true"}


def test_nodes_and_coredns() -> None:
    nodes = {n["metadata"]["name"]: n for n in of_kind("Node")}
    assert {name: [a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"]
            for name, n in nodes.items()} == {"xianchaomaster1": ["192.168.1.63"],
                                               "xianchaonode1": ["192.168.1.64"],
                                               "xianchaonode2": ["192.168.1.65"]}
    assert all(ipaddress.IPv4Network(n["spec"]["podCIDR"]).subnet_of(ipaddress.IPv4Network("10.244.0.0/16"))
               for n in nodes.values())
    (cm,) = of_kind("ConfigMap")
    assert key(cm) == ("kube-system", "coredns")
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in cm["data"]["Corefile"]


def test_node_facts() -> None:
    assert read(DEMO / "node" / "meta.json") == {"nodeName": "xianchaomaster1", "proxyMode": "iptables"}
    links = read(DEMO / "node" / "ip-addr.json")
    # Only the keys `ip -j addr` (iproute2 6.x) prints; see tests/fixtures/demo_build/gen_demo_objects.py.
    link_keys = {"ifindex", "link", "link_index", "ifname", "flags", "mtu", "qdisc", "operstate", "group",
                 "txqlen", "link_type", "address", "broadcast", "link_netnsid", "addr_info"}
    addr_keys = {"family", "local", "prefixlen", "broadcast", "scope", "label", "valid_life_time",
                 "preferred_life_time"}
    assert all(set(link) <= link_keys and all(set(a) <= addr_keys for a in link["addr_info"]) for link in links)
    by_name = {link["ifname"]: link for link in links}
    assert by_name["ens33"]["addr_info"][0].items() >= {"local": "192.168.1.63", "prefixlen": 24,
                                                         "family": "inet"}.items()
    assert [a["local"] for a in by_name["tunl0"]["addr_info"]] == ["10.244.123.128"]
    cali = [link for name, link in by_name.items() if name.startswith("cali")]
    assert len(cali) == 2 and all(a["scope"] == "link" for link in cali for a in link["addr_info"])
    assert [link["ifindex"] for link in links] == sorted(link["ifindex"] for link in links)


# -- the node's iptables dump ------------------------------------------------------------------------

RULES = (DEMO / "node" / "iptables-save.txt").read_text()
RULE6 = (DEMO / "node" / "ip6tables-save.txt").read_text()


def table(text: str, name: str) -> list[str]:
    return text.split(f"*{name}\n", 1)[1].split("\nCOMMIT\n", 1)[0].splitlines()


def comment(rule: str) -> str:
    m = re.search(r'--comment "([^"]*)"', rule)
    assert m, rule
    return m.group(1)


def target(rule: str) -> str:
    return rule.rsplit(" -j ", 1)[1].split()[0]


def expected_endpoints() -> dict[tuple[str, str], set[str]]:
    """{(svcPortName, protocol): {"IP:port"}} from Services + EndpointSlices, as kube-proxy builds it."""
    out: dict[tuple[str, str], set[str]] = {}
    for (ns, name), svc in SERVICES.items():
        if svc["spec"]["type"] == "ExternalName":
            continue
        for port in svc["spec"]["ports"]:
            spn = naming.service_port_name(ns, name, port.get("name", ""))
            eps = out.setdefault((spn, port["protocol"].lower()), set())
            for s in slices_of(ns, name):
                for sp in s["ports"]:
                    if sp["name"] == port.get("name", "") and sp["protocol"] == port["protocol"]:
                        eps |= {naming.endpoint_string(e["addresses"][0], sp["port"]) for e in s["endpoints"]}
    return out


def test_dump_is_iptables_save_output_of_a_v1_33_kube_proxy() -> None:
    assert RULES.startswith("# Generated by iptables-nft-save v1.8.9 (nf_tables) on ")
    assert [line[1:] for line in RULES.splitlines() if line.startswith("*")] == ["mangle", "filter", "nat"]
    for name in ("mangle", "filter", "nat"):
        assert ":KUBE-PROXY-CANARY - [0:0]" in table(RULES, name)
    nat, filt = table(RULES, "nat"), table(RULES, "filter")
    assert "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000" in nat
    services = [r for r in nat if r.startswith("-A KUBE-SERVICES ")]
    assert services[-1].startswith('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports;')
    assert any("--nfacct-name  localhost_nps_accepted_pkts" in r for r in nat)
    assert any("--nfacct-name  ct_state_invalid_dropped_pkts" in r for r in filt)
    assert any(r.startswith("-A KUBE-FIREWALL ") for r in filt)
    assert "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" in nat
    assert any(r.startswith("-A FORWARD") and "-j cali-FORWARD" in r for r in filt)  # Calico was there too


def test_every_service_chain_recomputes_from_naming() -> None:
    nat = table(RULES, "nat")
    expected = expected_endpoints()
    seen: dict[tuple[str, str], set[str]] = {}
    for rule in nat:
        if rule.startswith("-A KUBE-SERVICES ") and comment(rule).endswith(" cluster IP"):
            spn = comment(rule).removesuffix(" cluster IP")
            proto = re.search(r" -p (\w+) ", rule).group(1)  # type: ignore[union-attr]
            assert target(rule) == naming.ipt_service_chain(spn, proto)
            seen.setdefault((spn, proto), set())
    for rule in nat:
        m = re.match(r"-A (KUBE-SVC-\w+) .*--comment \"(\S+) -> (\S+)\"", rule)
        if not m:
            continue
        svc_chain, spn, endpoint = m.groups()
        proto = next(p for s, p in seen if s == spn)
        ip, port = endpoint.rsplit(":", 1)
        assert svc_chain == naming.ipt_service_chain(spn, proto)
        sep = naming.ipt_endpoint_chain(spn, proto, ip, int(port))
        assert target(rule) == sep
        assert f"-A {sep} -p {proto} -m comment --comment \"{spn}\" -m {proto} -j DNAT --to-destination {endpoint}" \
            in nat
        seen[(spn, proto)].add(endpoint)
    assert seen == expected
    declared = {line[1:].split()[0] for line in nat if line.startswith(":KUBE-S")} - {"KUBE-SERVICES"}
    referenced = {naming.ipt_service_chain(spn, proto) for spn, proto in expected}
    for (spn, proto), eps in expected.items():
        for ep in eps:
            ip, port = ep.rsplit(":", 1)
            referenced.add(naming.ipt_endpoint_chain(spn, proto, ip, int(port)))
    assert declared == referenced


def test_tutorial_chain_names_appear() -> None:
    # The tutorial's own `iptables -t nat -S` output names these for my-nginx-nodeport and my-nginx.
    for chain in ("KUBE-SVC-J5QV2XWG4FEBPH3Q", "KUBE-SEP-XRUO23GXY67LXLQN", "KUBE-SEP-IIBDPNPJZXXASELC",
                  "KUBE-SVC-L65ENXXZWWSAPRCR"):
        assert f":{chain} - [0:0]" in table(RULES, "nat")
    assert "-A KUBE-NODEPORTS -p tcp -m comment --comment \"default/my-nginx-nodeport\" -m tcp --dport 30380 " \
           "-j KUBE-EXT-J5QV2XWG4FEBPH3Q" in table(RULES, "nat")


def test_externalname_has_no_rules_and_ipv6_has_no_services() -> None:
    assert "client-svc" not in RULES
    assert not re.search(r"KUBE-(SVC|SEP|EXT)-", RULE6)
    assert '! -d ::1/128 -m comment --comment "kubernetes service nodeports;' in RULE6
