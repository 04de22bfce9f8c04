"""Generate a whole cluster at scale as snapshot folders, one per proxy mode, kube-proxy's rules loaded for real.

N Services x M endpoints (plus the usual extras: ``default/kubernetes``, ``kube-system/kube-dns``, a few
headless and ExternalName Services) become:

    <cache>/cluster-<N>x<M>-<key>/
      info.json                 what was generated: sizes, the Services the benchmarks ask about, timings
      api/                      services.json, endpointslices.json, pods.json, nodes.json, coredns.json
                                (each a `kind: List` as `kubectl get -o json` prints it)
      kube-proxy/
        iptables-restore.txt    what kube-proxy's iptables proxier passes to iptables-restore (its chain order)
        kube-proxy.nft          what kube-proxy's nftables proxier loads (`nft -f`), both families
      iptables-nft/             snapshot: api/ + node/iptables-save.txt (iptables-nft-save after a node start)
      iptables-legacy/          snapshot: the same on the legacy backend (iptables-legacy-save)
      nftables/                 snapshot: node/nft.json (`nft -j list table ip kube-proxy`) + kubelet's iptables
      ipvs/                     snapshot: node/ipvsadm.txt, ipset.txt and IPVS mode's iptables rules

The Service mix: every 10th Service (index % 10 == 1) is a NodePort, every 20th (% 20 == 2) a LoadBalancer
whose load balancer is still pending (kube-proxy programs it like a NodePort), the rest ClusterIP, each with
one port ``http`` 80 -> 8080 (named targetPort on every third). N/50 headless and N/50 ExternalName Services
come on top. Every endpoint is a ready Pod; pods are spread over ceil(endpoints/100) Nodes (100 pods a node),
``node-0000`` is the node whose dataplane the snapshots hold.

The node files are not written by hand: the rules are rendered from the same objects by the demo's
kube-proxy renderers (tests/fixtures/demo_build/), loaded into a throw-away network namespace the way a
node starts (kubelet, kube-proxy, calico: gen_kube_proxy_rules.node_start) with kube-proxy's chains
created in kube-proxy's order (restoring in iptables-save's sorted order makes iptables-nft-save 1.8.9
quadratic), and saved back with the real tools. kube-proxy's one big ``--noflush`` restore is replayed
as the equivalent flush-mode restore: iptables-nft-restore 1.8.9 takes minutes with --noflush at 2k
Services and does not finish at 10k (the resulting tables are the same; a test checks it). IPVS has no
kernel support here, so its files are rendered as `ipvsadm -Sn` and `ipset save` print them
(tests/fixtures/ipvs/gen_demo_ipvs.py's sets and fixed rules).

Generated once and reused: the folder name holds the sizes and a hash of the generators' source, so a
change to any generator makes a new folder. Needs root (network namespaces).

    sudo python bench/gen_cluster.py --services 1000 --endpoints 10      # prints the folder
    sudo python bench/gen_cluster.py --services 3 --endpoints 2 --out /tmp/tiny
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import math
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from svctrace.kubeproxy import naming  # noqa: E402
from tests.fixtures.demo_build import gen_demo_nftables as nftgen  # noqa: E402
from tests.fixtures.demo_build import gen_kube_proxy_rules as iptgen  # noqa: E402
from tests.fixtures.ipvs import gen_demo_ipvs as ipvsgen  # noqa: E402
from tests.integration.netns import BACKENDS, NetnsNode  # noqa: E402

GEN_VERSION = 1  # bump when the output changes in a way the source hash would not show
DEFAULT_CACHE = Path("/var/tmp/svctrace-bench")
CACHE_ENV = "SVCTRACE_BENCH_DIR"

SERVICE_CIDR = "10.96.0.0/12"
CLUSTER_CIDR = "10.128.0.0/12"  # 4,096 node /24s: room for 400k pods
PODS_PER_NODE = 100
STAMP = "2025-05-13T06:40:02Z"
SAVE_DATE = iptgen.SAVE_DATE
IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.52"
ZONES = ("zone-a", "zone-b", "zone-c")
MODES = ("iptables-nft", "iptables-legacy", "nftables", "ipvs")
NODE_PORT_RANGE = range(30000, 32768)
FLUSH_MODE_ABOVE_LINES = 1000  # --noflush restores longer than this are replayed in flush mode (flush_mode_restore)
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes' generateName draws from


def cache_root() -> Path:
    """Where generated data lives: $SVCTRACE_BENCH_DIR, else /var/tmp/svctrace-bench (never the repository)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


# ------------------------------------------------------------------------------------------------
# The cluster, as plain values


@dataclass(frozen=True)
class Node:
    name: str
    ip: str
    pod_cidr: str
    zone: str


@dataclass(frozen=True)
class Endpoint:
    ip: str
    node: str
    pod: str | None  # None: not a pod (the apiserver behind default/kubernetes)


@dataclass(frozen=True)
class Port:
    name: str
    protocol: str  # TCP / UDP, as the API writes it
    port: int
    target_port: int | str
    endpoint_port: int
    node_port: int | None = None


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    type: str  # ClusterIP, NodePort, LoadBalancer, ExternalName
    cluster_ip: str | None  # "None" for headless, None for ExternalName
    ports: tuple[Port, ...]
    selector: dict[str, str] | None
    endpoints: tuple[Endpoint, ...]
    external_name: str | None = None

    @property
    def programmed(self) -> bool:
        """kube-proxy writes rules for it (not headless, not ExternalName)."""
        return self.cluster_ip not in (None, "None")


@dataclass(frozen=True)
class Cluster:
    services_n: int
    endpoints_m: int
    nodes: tuple[Node, ...]
    services: tuple[Service, ...]

    @property
    def this_node(self) -> Node:
        return self.nodes[0]


def _suffix(seed: str, n: int) -> str:
    digest = hashlib.sha1(seed.encode()).digest()
    return "".join(_SUFFIX_ALPHABET[b % len(_SUFFIX_ALPHABET)] for b in digest[:n])


def node_ip(k: int) -> str:
    """node-0000 is 192.168.1.63, the address the netns harness gives its node."""
    return f"192.168.{1 + k // 150}.{63 + k % 150}"


def service_ip(s: int) -> str:
    return str(ipaddress.IPv4Address("10.96.4.0") + s)


def build_cluster(services: int, endpoints: int) -> Cluster:
    """The cluster's objects for ``services`` x ``endpoints`` (deterministic)."""
    if services < 1 or endpoints < 1:
        raise ValueError("need at least one Service and one endpoint each")
    extras = max(1, services // 50)
    total_pods = services * endpoints + extras * endpoints + 2  # + headless + CoreDNS
    n_nodes = max(3, math.ceil(total_pods / PODS_PER_NODE))
    base = int(ipaddress.IPv4Address("10.128.0.0"))
    nodes = tuple(Node(f"node-{k:04d}", node_ip(k), f"{ipaddress.IPv4Address(base + k * 256)}/24",
                       ZONES[k % len(ZONES)]) for k in range(n_nodes))
    placed = [0] * n_nodes
    pod_counter = 0

    def place(pod: str) -> Endpoint:
        nonlocal pod_counter
        k = pod_counter % n_nodes
        pod_counter += 1
        placed[k] += 1
        return Endpoint(str(ipaddress.IPv4Address(base + k * 256 + placed[k])), nodes[k].name, pod)

    def pods_for(ns: str, name: str) -> tuple[Endpoint, ...]:
        rs = _suffix(f"{ns}/{name}", 10)
        return tuple(place(f"{name}-{rs}-{_suffix(f'{ns}/{name}/{j}', 5)}") for j in range(endpoints))

    out: list[Service] = [
        Service("default", "kubernetes", "ClusterIP", "10.96.0.1", (Port("https", "TCP", 443, 6443, 6443),),
                None, (Endpoint(nodes[0].ip, nodes[0].name, None),)),
    ]
    dns = tuple(place(f"coredns-674b8bbfcf-{_suffix(f'coredns/{j}', 5)}") for j in range(2))
    out.append(Service("kube-system", "kube-dns", "ClusterIP", "10.96.0.10",
                       (Port("dns", "UDP", 53, 53, 53), Port("dns-tcp", "TCP", 53, 53, 53),
                        Port("metrics", "TCP", 9153, 9153, 9153)), {"k8s-app": "kube-dns"}, dns))
    node_ports = iter(NODE_PORT_RANGE)
    for s in range(services):
        ns, name = f"ns{s % 100}", f"svc{s}"
        kind = "NodePort" if s % 10 == 1 else "LoadBalancer" if s % 20 == 2 else "ClusterIP"
        node_port = next(node_ports, None) if kind != "ClusterIP" else None
        if node_port is None:
            kind = "ClusterIP"  # the NodePort range is used up
        target: int | str = "http" if s % 3 == 0 else 8080
        out.append(Service(ns, name, kind, service_ip(s), (Port("http", "TCP", 80, target, 8080, node_port),),
                           {"app": name}, pods_for(ns, name)))
    for k in range(extras):
        ns = f"ns{k % 100}"
        out.append(Service(ns, f"headless{k}", "ClusterIP", "None", (Port("http", "TCP", 80, 8080, 8080),),
                           {"app": f"headless{k}"}, pods_for(ns, f"headless{k}")))
        out.append(Service(ns, f"extname{k}", "ExternalName", None, (Port("http", "TCP", 80, 80, 80),), None, (),
                           external_name=f"svc{k}.ns{k % 100}.svc.cluster.local"))
    return Cluster(services, endpoints, nodes, tuple(out))


# ------------------------------------------------------------------------------------------------
# API objects (what `kubectl get -o json` prints)


def _uid(key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def _meta(name: str, namespace: str | None, kind: str, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"creationTimestamp": STAMP, "name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["resourceVersion"] = "1000"
    meta["uid"] = _uid(f"{kind}/{namespace}/{name}")
    meta.update(extra)
    return meta


def service_doc(svc: Service) -> dict[str, Any]:
    ports = []
    for p in svc.ports:
        port: dict[str, Any] = {"name": p.name, "port": p.port, "protocol": p.protocol, "targetPort": p.target_port}
        if p.node_port is not None:
            port["nodePort"] = p.node_port
        ports.append(port)
    spec: dict[str, Any] = {"ports": ports, "sessionAffinity": "None", "type": svc.type}
    if svc.type == "ExternalName":
        spec["externalName"] = svc.external_name
    else:
        spec.update({"clusterIP": svc.cluster_ip, "clusterIPs": [svc.cluster_ip], "internalTrafficPolicy": "Cluster",
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"})
    if svc.type in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = "Cluster"
    if svc.type == "LoadBalancer":
        spec["allocateLoadBalancerNodePorts"] = True
    if svc.selector is not None:
        spec["selector"] = svc.selector
    labels = {"app": svc.name} if svc.selector else {}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(svc.name, svc.namespace, "Service", **({"labels": labels} if labels else {})),
            "spec": dict(sorted(spec.items())), "status": {"loadBalancer": {}}}


def endpoint_slice_doc(svc: Service, nodes: dict[str, Node]) -> dict[str, Any]:
    name = f"{svc.name}-{_suffix(svc.namespace + '/' + svc.name + '/slice', 5)}"
    managed = "endpointslice-controller.k8s.io" if svc.selector is not None else None
    labels = {"kubernetes.io/service-name": svc.name}
    if managed:
        labels["endpointslice.kubernetes.io/managed-by"] = managed
    if svc.cluster_ip == "None":
        labels["service.kubernetes.io/headless"] = ""
    endpoints = []
    for ep in svc.endpoints:
        doc: dict[str, Any] = {"addresses": [ep.ip], "conditions": {"ready": True, "serving": True,
                                                                   "terminating": False}, "nodeName": ep.node}
        if ep.pod is not None:
            doc["targetRef"] = {"kind": "Pod", "name": ep.pod, "namespace": svc.namespace,
                                "uid": _uid(f"Pod/{svc.namespace}/{ep.pod}")}
            doc["zone"] = nodes[ep.node].zone
        endpoints.append(doc)
    meta = _meta(name, svc.namespace, "EndpointSlice", labels=labels)
    if managed:
        meta["generateName"] = f"{svc.name}-"
        meta["ownerReferences"] = [{"apiVersion": "v1", "blockOwnerDeletion": True, "controller": True,
                                    "kind": "Service", "name": svc.name,
                                    "uid": _uid(f"Service/{svc.namespace}/{svc.name}")}]
    return {"addressType": "IPv4", "apiVersion": "discovery.k8s.io/v1", "endpoints": endpoints,
            "kind": "EndpointSlice", "metadata": meta,
            "ports": [{"name": p.name, "port": p.endpoint_port, "protocol": p.protocol} for p in svc.ports]}


def pod_doc(svc: Service, ep: Endpoint, nodes: dict[str, Node]) -> dict[str, Any]:
    assert ep.pod is not None and svc.selector is not None
    template_hash = ep.pod.split("-")[-2]
    owner = ep.pod.rsplit("-", 1)[0]
    container_ports = [{"containerPort": p.endpoint_port, "name": p.name, "protocol": p.protocol} for p in svc.ports]
    ready = [{"lastProbeTime": None, "lastTransitionTime": STAMP, "status": "True", "type": t}
             for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
    host = nodes[ep.node].ip
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": _meta(ep.pod, svc.namespace, "Pod", generateName=f"{owner}-",
                          labels={**svc.selector, "pod-template-hash": template_hash},
                          ownerReferences=[{"apiVersion": "apps/v1", "blockOwnerDeletion": True, "controller": True,
                                            "kind": "ReplicaSet", "name": owner,
                                            "uid": _uid(f"ReplicaSet/{svc.namespace}/{owner}")}]),
        "spec": {"containers": [{"image": IMAGE, "imagePullPolicy": "IfNotPresent", "name": "app",
                                 "ports": container_ports}],
                 "nodeName": ep.node, "restartPolicy": "Always", "schedulerName": "default-scheduler"},
        "status": {"conditions": ready,
                   "containerStatuses": [{"image": IMAGE, "imageID": "", "lastState": {}, "name": "app",
                                          "ready": True, "restartCount": 0, "started": True,
                                          "state": {"running": {"startedAt": STAMP}}}],
                   "hostIP": host, "hostIPs": [{"ip": host}], "phase": "Running", "podIP": ep.ip,
                   "podIPs": [{"ip": ep.ip}], "qosClass": "BestEffort", "startTime": STAMP},
    }


def node_doc(node: Node) -> dict[str, Any]:
    labels = {"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
              "topology.kubernetes.io/zone": node.zone}
    return {"apiVersion": "v1", "kind": "Node", "metadata": _meta(node.name, None, "Node", labels=labels),
            "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
            "status": {"addresses": [{"address": node.ip, "type": "InternalIP"},
                                     {"address": node.name, "type": "Hostname"}],
                       "conditions": [{"lastHeartbeatTime": STAMP, "lastTransitionTime": STAMP,
                                       "message": "kubelet is posting ready status", "reason": "KubeletReady",
                                       "status": "True", "type": "Ready"}],
                       "nodeInfo": {"kubeProxyVersion": "v1.33.1", "kubeletVersion": "v1.33.1",
                                    "operatingSystem": "linux", "architecture": "amd64"}}}


def coredns_doc() -> dict[str, Any]:
    """The demo cluster's CoreDNS ConfigMap (cluster.local)."""
    doc: dict[str, Any] = json.loads((REPO / "svctrace/demo/tutorial/api/coredns-configmap.json").read_text())
    return doc


def api_documents(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """File name -> the `kind: List` kubectl would print, for api/."""
    nodes = {n.name: n for n in cluster.nodes}

    def as_list(items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}

    with_endpoints = [s for s in cluster.services if s.endpoints]
    return {
        "services.json": as_list([service_doc(s) for s in cluster.services]),
        "endpointslices.json": as_list([endpoint_slice_doc(s, nodes) for s in with_endpoints]),
        "pods.json": as_list([pod_doc(s, ep, nodes) for s in with_endpoints for ep in s.endpoints
                              if ep.pod is not None]),
        "nodes.json": as_list([node_doc(n) for n in cluster.nodes]),
        "coredns.json": coredns_doc(),
    }


def api_objects(cluster: Cluster) -> list[dict[str, Any]]:
    """Every API object, unpacked from the Lists (what a fake API server serves)."""
    out: list[dict[str, Any]] = []
    for doc in api_documents(cluster).values():
        out += doc["items"] if doc.get("kind") == "List" else [doc]
    return out


# ------------------------------------------------------------------------------------------------
# kube-proxy's inputs, rendered by the demo's renderers


def service_ports(cluster: Cluster) -> list[iptgen.SvcPort]:
    """kube-proxy's view: one entry per port of every programmed Service, endpoints sorted as it sorts them."""
    out = []
    for svc in cluster.services:
        if not svc.programmed:
            continue
        assert svc.cluster_ip is not None
        for p in svc.ports:
            eps = tuple(sorted(naming.endpoint_string(ep.ip, p.endpoint_port) for ep in svc.endpoints))
            out.append(iptgen.SvcPort(svc.namespace, svc.name, p.name, p.protocol.lower(), svc.cluster_ip, p.port,
                                      p.node_port, eps))
    return out


@contextlib.contextmanager
def _settings(module: ModuleType, **values: str) -> Iterator[None]:
    """The demo renderers read the demo cluster's CIDRs and node address from module constants; use ours."""
    old = {k: getattr(module, k) for k in values}
    for k, v in values.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


def iptables_restore_text(cluster: Cluster) -> str:
    """kube-proxy's IPv4 iptables-restore input (its chain order)."""
    with _settings(iptgen, CLUSTER_CIDR=CLUSTER_CIDR):
        return iptgen.kube_proxy_restore(service_ports(cluster), 4)


def nft_text(cluster: Cluster) -> str:
    """kube-proxy's nftables transaction for both families, in an order `nft -f` loads."""
    ports = service_ports(cluster)
    with _settings(nftgen, NODE_IP=cluster.this_node.ip, POD_CIDR=CLUSTER_CIDR, SERVICE_CIDR=SERVICE_CIDR):
        return (f"# kube-proxy (nftables mode) for {cluster.services_n} Services x {cluster.endpoints_m} endpoints "
                "(bench/gen_cluster.py)\n" + nftgen.ruleset(ports, 4) + nftgen.ruleset(ports, 6))


def ipvs_files(cluster: Cluster) -> dict[str, str]:
    """node/ipvsadm.txt, ipset.txt and iptables-save.txt of IPVS mode (one virtual server per ClusterIP port
    and per NodePort on the node's address, real servers weight 1, scheduler rr)."""
    me = cluster.this_node
    local = {ep.ip for svc in cluster.services for ep in svc.endpoints if ep.node == me.name}
    virtual: list[str] = []
    members: dict[str, list[str]] = {name: [] for name, _, _ in ipvsgen.SETS}
    vips: set[str] = set()
    for sp in service_ports(cluster):
        opt = ipvsgen.PROTO_OPT[sp.protocol.upper()]
        fronts = [f"{sp.cluster_ip}:{sp.port}"] + ([f"{me.ip}:{sp.node_port}"] if sp.node_port else [])
        for front in fronts:
            virtual.append(f"-A {opt} {front} -s rr")
            virtual += [f"-a {opt} {front} -r {ep} -m -w 1" for ep in sp.endpoints]
        members["KUBE-CLUSTER-IP"].append(f"{sp.cluster_ip},{sp.protocol}:{sp.port}")
        if sp.cluster_ip not in vips:
            vips.add(sp.cluster_ip)
            members["KUBE-IPVS-IPS"].append(sp.cluster_ip)
        if sp.node_port:
            members[f"KUBE-NODE-PORT-{sp.protocol.upper()}"].append(str(sp.node_port))
        for ep in sp.endpoints:
            ip, port = ep.rsplit(":", 1)
            if ip in local:
                members["KUBE-LOOP-BACK"].append(f"{ip},{sp.protocol}:{port},{ip}")
    ipset: list[str] = []
    for i, (name, type_, opts) in enumerate(ipvsgen.SETS):
        initval = f" initval 0x{(0x5eed0000 + i * 0x1111):08x}" if type_.startswith("hash:") else ""
        ipset.append(f"create {name} {type_} {opts}{initval}")
        ipset += [f"add {name} {m}" for m in members[name]]
    rules = ipvsgen.NAT.format(stamp=SAVE_DATE, pod_cidr=CLUSTER_CIDR) + ipvsgen.FILTER.format(stamp=SAVE_DATE)
    return {"ipvsadm.txt": "\n".join(virtual) + "\n", "ipset.txt": "\n".join(ipset) + "\n",
            "iptables-save.txt": rules}


def with_kube_ipvs0(ip_addr_json: str, addresses: list[str]) -> str:
    """`ip -j addr` of an IPVS node: kube-proxy binds every virtual IP to the dummy device kube-ipvs0."""
    links = json.loads(ip_addr_json)
    index = max(int(link["ifindex"]) for link in links) + 1
    life = 4294967295
    links.append({"ifindex": index, "ifname": "kube-ipvs0", "flags": ["BROADCAST", "NOARP"], "mtu": 1500,
                  "qdisc": "noop", "operstate": "DOWN", "group": "default", "txqlen": 1000, "link_type": "ether",
                  "address": "6e:93:40:2a:1c:5f", "broadcast": "ff:ff:ff:ff:ff:ff",
                  "addr_info": [{"family": "inet", "local": ip, "prefixlen": 32, "scope": "global",
                                 "label": "kube-ipvs0", "valid_life_time": life, "preferred_life_time": life}
                                for ip in addresses]})
    return json.dumps(links)


# ------------------------------------------------------------------------------------------------
# Loading the rules into a network namespace (also what the live benchmarks use)


BACKEND_OF = {"iptables-nft": "nft", "iptables-legacy": "legacy", "nftables": "nft", "ipvs": "nft"}


def netns_node(cluster: Cluster, backend: str = "nft") -> NetnsNode:
    """A node namespace with node-0000's address (not yet opened: use it as a context manager)."""
    return NetnsNode(backend=backend, node_ip=cluster.this_node.ip)


def load_iptables(node: NetnsNode, cluster: Cluster) -> None:
    """Start kubelet, kube-proxy (iptables mode) and calico on the node, as gen_kube_proxy_rules does for the
    demo, except that kube-proxy's big ``--noflush`` restore is replayed in flush mode (see flush_mode_restore)."""
    ports = service_ports(cluster)
    load = node.load_rules

    def fast(rules: str, *, family: int = 4, noflush: bool = False, counters: bool = False) -> None:
        if noflush and rules.count("\n") > FLUSH_MODE_ABOVE_LINES:
            load(flush_mode_restore(node.save_rules(family=family), rules), family=family)
        else:
            load(rules, family=family, noflush=noflush, counters=counters)

    node.load_rules = fast  # type: ignore[method-assign]
    try:
        with _settings(iptgen, CLUSTER_CIDR=CLUSTER_CIDR), _long_timeouts():
            for family in (4, 6):
                iptgen.node_start(node, ports, family)
    finally:
        del node.load_rules


def _tables(text: str) -> dict[str, tuple[dict[str, str], dict[str, list[str]]]]:
    """table -> (chain -> policy, chain -> its -A lines), in the text's order."""
    tables: dict[str, tuple[dict[str, str], dict[str, list[str]]]] = {}
    chains: dict[str, str] = {}
    rules: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            chains, rules = tables.setdefault(line[1:].strip(), ({}, {}))
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            chains[name] = policy
            rules.setdefault(name, [])
        elif line.startswith("-A "):
            rules.setdefault(line.split(None, 2)[1], []).append(line)
    return tables


def flush_mode_restore(current: str, noflush_input: str) -> str:
    """One flush-mode restore text that leaves the tables as ``iptables-restore --noflush noflush_input`` would
    leave a node whose rules are ``current`` (an iptables-save dump): chains the input declares are flushed or
    created, in its order, and its rules appended.

    Why: iptables-nft-restore 1.8.9 with --noflush is far worse than quadratic in the chains it declares (1k
    Services 6 s, 2k 60 s on this machine), while the same rules restored in flush mode take about a second at 2k.
    """
    tables = _tables(current)
    for table, (chains, rules) in _tables(noflush_input).items():
        cur_chains, cur_rules = tables.setdefault(table, ({}, {}))
        for name, policy in chains.items():
            if name in cur_chains:
                cur_rules[name] = []
            else:
                cur_chains[name] = policy
        for name, lines in rules.items():
            cur_rules.setdefault(name, []).extend(lines)
    out: list[str] = []
    for table, (chains, rules) in tables.items():
        out.append(f"*{table}")
        out += [f":{name} {policy} [0:0]" for name, policy in chains.items()]
        out += [line for name in chains for line in rules.get(name, [])]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def load_nftables(node: NetnsNode, text: str) -> None:
    """kube-proxy (nftables mode) plus what kubelet and calico still add to iptables."""
    node.run("nft", "-f", "-", input=text, timeout=1800)
    nftgen.kubelet_and_calico(node)


@contextlib.contextmanager
def _long_timeouts() -> Iterator[None]:
    """The harness gives each command 30 s; a 10k-Service restore on a busy machine may need more."""
    import tests.integration.netns as harness

    run = harness._run

    def patient(argv: Any, *, input: str | None = None, check: bool = True, timeout: float = 30.0) -> Any:
        return run(argv, input=input, check=check, timeout=max(timeout, 1800.0))

    harness._run = patient
    try:
        yield
    finally:
        harness._run = run


# ------------------------------------------------------------------------------------------------
# Writing the snapshot folders


def _write_json(path: Path, doc: Any) -> None:
    # indent=1 as `svctrace capture` writes api/ (kubectl's indent=4 makes pods.json 1.7x larger: 420 MB at 10k x 10)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def _link_api(api: Path, snap: Path) -> None:
    """Each mode's snapshot shares the one api/ (hard links: svctrace refuses symlinks out of a snapshot)."""
    (snap / "api").mkdir(parents=True, exist_ok=True)
    for f in sorted(api.iterdir()):
        target = snap / "api" / f.name
        if not target.exists():
            try:
                os.link(f, target)
            except OSError:
                shutil.copyfile(f, target)


def _meta_json(cluster: Cluster, mode: str) -> dict[str, str]:
    return {"nodeName": cluster.this_node.name, "proxyMode": "iptables" if mode.startswith("iptables") else mode}


def target_info(cluster: Cluster) -> dict[str, Any]:
    """The Services the benchmarks ask about: the last ClusterIP one (worst case for a linear scan) and a
    NodePort one."""
    last = next(s for s in reversed(cluster.services) if s.type == "ClusterIP" and s.programmed)
    nodeport = next((s for s in cluster.services if s.type == "NodePort"), None)

    def brief(s: Service | None) -> dict[str, Any] | None:
        if s is None:
            return None
        return {"namespace": s.namespace, "name": s.name, "clusterIP": s.cluster_ip, "port": s.ports[0].port,
                "nodePort": s.ports[0].node_port, "endpoints": sorted(ep.ip for ep in s.endpoints),
                "endpointPort": s.ports[0].endpoint_port}

    return {"service": brief(last), "nodePortService": brief(nodeport)}


def write_cluster(out: Path, services: int, endpoints: int, *, modes: tuple[str, ...] = MODES,
                  log: Any = None) -> dict[str, Any]:
    """Write every file of the cluster into ``out`` (see the module docstring); returns info.json's content."""
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    cluster = build_cluster(services, endpoints)
    out.mkdir(parents=True, exist_ok=True)
    api = out / "api"
    api.mkdir(exist_ok=True)
    timings: dict[str, float] = {}
    for name, doc in api_documents(cluster).items():
        _write_json(api / name, doc)
    timings["api"] = time.perf_counter() - t0
    say(f"api/ written ({timings['api']:.1f} s)")
    kp = out / "kube-proxy"
    kp.mkdir(exist_ok=True)
    restore = iptables_restore_text(cluster)
    (kp / "iptables-restore.txt").write_text(restore)
    nft = nft_text(cluster)
    (kp / "kube-proxy.nft").write_text(nft)
    ip_addr = None
    for mode in modes:
        t = time.perf_counter()
        snap = out / mode
        node_dir = snap / "node"
        node_dir.mkdir(parents=True, exist_ok=True)
        _link_api(api, snap)
        files: dict[str, str] = {}
        if mode in ("iptables-nft", "iptables-legacy", "nftables"):
            with netns_node(cluster, BACKEND_OF[mode]) as node:
                if mode == "nftables":
                    load_nftables(node, nft)
                    files["nft.json"] = node.run("nft", "-j", "list", "table", "ip", "kube-proxy",
                                                 timeout=1800).stdout
                else:
                    load_iptables(node, cluster)
                    files["ip6tables-save.txt"] = iptgen.fix_dates(
                        node.run(_save_command(node.backend, 6), timeout=1800).stdout)
                files["iptables-save.txt"] = iptgen.fix_dates(node.run(_save_command(node.backend, 4),
                                                                       timeout=1800).stdout)
                ip_addr = node.run("ip", "-j", "addr").stdout
        else:
            files.update(ipvs_files(cluster))
            vips = sorted({sp.cluster_ip for sp in service_ports(cluster)},
                          key=lambda ip: int(ipaddress.IPv4Address(ip)))
            if ip_addr is None:
                with netns_node(cluster) as node:
                    ip_addr = node.run("ip", "-j", "addr").stdout
            files["ip-addr.json"] = with_kube_ipvs0(ip_addr, vips)
        if ip_addr is not None and "ip-addr.json" not in files:
            files["ip-addr.json"] = ip_addr
        for name, text in files.items():
            (node_dir / name).write_text(text)
        _write_json(node_dir / "meta.json", _meta_json(cluster, mode))
        timings[mode] = time.perf_counter() - t
        say(f"{mode}/ written ({timings[mode]:.1f} s)")
    folders = [api, kp, *(out / m / "node" for m in modes)]
    sizes = {str(f.relative_to(out)): f.stat().st_size for d in folders for f in sorted(d.iterdir())}
    info = {"generator": GEN_VERSION, "services": services, "endpoints": endpoints, "nodes": len(cluster.nodes),
            "serviceObjects": len(cluster.services), "restoreLines": restore.count("\n"), "bytes": sizes,
            "pods": sum(1 for s in cluster.services for ep in s.endpoints if ep.pod),
            "thisNode": asdict(cluster.this_node), "modes": list(modes), "seconds": timings, **target_info(cluster)}
    _write_json(out / "info.json", info)
    return info


def _save_command(backend: str, family: int) -> str:
    return BACKENDS[backend][family][1]


# ------------------------------------------------------------------------------------------------
# The cache


def source_key() -> str:
    """A short hash of every generator this data comes from, plus GEN_VERSION."""
    h = hashlib.sha256(str(GEN_VERSION).encode())
    for path in (Path(__file__), Path(iptgen.__file__), Path(nftgen.__file__), Path(ipvsgen.__file__)):
        h.update(path.read_bytes())
    return h.hexdigest()[:10]


def cluster_dir(services: int, endpoints: int, root: Path | None = None) -> Path:
    return (root or cache_root()) / f"cluster-{services}x{endpoints}-{source_key()}"


def ensure_cluster(services: int, endpoints: int, *, root: Path | None = None, log: Any = None) -> Path:
    """The cached cluster folder for this size, generated first if it is not there (or was left half-done)."""
    final = cluster_dir(services, endpoints, root)
    if (final / "info.json").is_file():
        return final
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_cluster(tmp, services, endpoints, log=log)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the namespaces are removed on the way out
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--out", type=Path, help="write here instead of the cache (overwrites)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("gen_cluster.py needs root (it loads the rules in a network namespace)")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.out:
        write_cluster(args.out, args.services, args.endpoints, log=log)
        print(args.out)
    else:
        print(ensure_cluster(args.services, args.endpoints, log=log))


if __name__ == "__main__":
    main()
