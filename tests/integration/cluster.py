"""A simulated Kubernetes cluster for tests: nodes that are network namespaces, an API, kubelets.

    with SimCluster([NodeSpec("node-a"), NodeSpec("node-b", stale=True),
                     NodeSpec("node-c", backend="legacy")], mode="iptables") as cluster:
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        ...   # a client creates a pod with nodeName node-b: it runs in node-b's namespace
        cluster.node("node-b").netns.save_rules()   # the ground truth, read directly

What is real and what is not:

* Each node is a :class:`~tests.integration.netns.NetnsNode` (its own network namespace, address
  ``192.168.1.101`` + i on ``ens33``, a default route) loaded with the rules kube-proxy would program
  from the cluster's API state, by the real tools: ``iptables-restore`` (nf_tables or legacy backend,
  per node, after kubelet's own chains, as tests/fixtures/demo_build/gen_kube_proxy_rules.py replays a
  node start) or ``nft -f`` (the nftables proxier's transaction, gen_demo_nftables.py, with the node's
  own NodePort address).
* The API (tests/harness/apiserver.py, served over HTTP to the real ``kubernetes`` client) holds
  Namespaces, Nodes (InternalIP, Hostname, Ready condition, nodeInfo), the Services, EndpointSlices and
  backend Pods the rules were generated from, CoreDNS, the kube-proxy DaemonSet (kube-system, its image
  ``registry.k8s.io/kube-proxy:v1.30.2``), its pods (API objects only: nothing runs them) and kubeadm's
  kube-proxy ConfigMap (``mode``). Pods a client creates with a node's name run there
  (tests/harness/kubelet.py); the kube-proxy image is pullable and has the tools the real one has.
* Drift, per node (:class:`NodeSpec`): ``stale`` (rules from the previous API state: shop/cart still has
  the endpoint 10.244.2.7 the API no longer lists, as when kube-proxy is stuck), ``backend`` (the other
  iptables backend), ``ready=False`` (the kubelet is down: Node Ready=Unknown with the unreachable
  taints, nothing starts there), ``kube_proxy=False`` (no kube-proxy rules, no kube-proxy pod).
* Scale: ``SimCluster(nodes, objects=scaled_objects(names, 1000, 10))`` gives issue 12's benchmark
  state; each node replays kube-proxy's ``iptables-restore --noflush`` (about 6 s per node for 1,000
  Services x 10 here). ``--noflush`` grows quadratically with the table (a 10k-Service table takes
  minutes), so a test loading 430k lines restores whole tables, in :func:`kube_proxy_order`.
* IPVS (``mode="ipvs"``): this kernel has no ip_vs, so there is no IPVS table: ``ipvsadm`` fails and
  ``/proc/net/ip_vs`` does not exist. What IPVS mode leaves elsewhere is loaded for real: its iptables
  rules (KUBE-SERVICES matching ``--match-set KUBE-CLUSTER-IP``, KUBE-POSTROUTING, ...), its ipsets
  (``ipset restore``: KUBE-CLUSTER-IP, KUBE-NODE-PORT-TCP, KUBE-LOOP-BACK, ...) and a ``kube-ipvs0``
  interface holding the ClusterIPs (a veth, as the kernel has no dummy interfaces; DOWN, as the real
  one). The virtual servers kube-proxy would program are kept as text (``SimNode.ipvs``, ``ipvsadm -Sn``
  format); an image that itself ships ``ipvsadm`` gets, on these nodes, a stand-in that prints that text
  for ``ipvsadm -S``/``-Sn`` (the kube-proxy image has no ipvsadm, so it reads nothing).
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.fixtures.demo_build import gen_demo_nftables
from tests.fixtures.demo_build.gen_kube_proxy_rules import CLUSTER_CIDR, SvcPort, node_start, service_ports
from tests.harness.apiserver import FakeApiServer
from tests.harness.kubelet import Image, Kubelet, Script, kube_proxy_image, shell_image
from tests.integration.netns import NetnsNode, require_netns

Object = dict[str, Any]
KUBE_VERSION = "v1.30.2"
MODES = ("iptables", "nftables", "ipvs")
NODE_IP_BASE = 101  # node i has 192.168.1.(101 + i)
STALE_ENDPOINT = ("shop", "cart", "10.244.2.7")  # removed from the API, still programmed on stale nodes


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node and how it differs from a healthy one."""

    name: str
    backend: str = "nft"  # the iptables backend: "nft" or "legacy"
    stale: bool = False  # rules generated from the previous API state
    ready: bool = True  # False: its kubelet is down (NotReady)
    kube_proxy: bool = True  # False: no kube-proxy rules at all
    rules_from: tuple[Object, ...] | None = None  # an explicit API state to generate the rules from


@dataclass
class SimNode:
    """A running simulated node."""

    spec: NodeSpec
    index: int
    netns: NetnsNode
    ip: str
    api_state: list[Object]  # the objects its rules were generated from
    ipvs: str = ""  # IPVS mode: the virtual servers kube-proxy would program (ipvsadm -Sn)

    @property
    def name(self) -> str:
        return self.spec.name

    def run(self, *argv: str, input: str | None = None, check: bool = True,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a command in the node's namespace (the ground truth a collector must reproduce)."""
        return self.netns.run(*argv, input=input, check=check, timeout=timeout)


def three_nodes() -> list[NodeSpec]:
    """Issue 12's cluster: a healthy node, a stale one, one on the other iptables backend."""
    return [NodeSpec("node-a"), NodeSpec("node-b", stale=True), NodeSpec("node-c", backend="legacy")]


# --- the API state ----------------------------------------------------------------------------------------

def _meta(name: str, namespace: str | None = None, **labels: str) -> Object:
    meta: Object = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    return meta


def _node_ip(i: int) -> str:
    return f"192.168.1.{NODE_IP_BASE + i}"


def _service(ns: str, name: str, cluster_ip: str, ports: list[Object], svc_type: str = "ClusterIP",
             selector: Mapping[str, str] | None = None) -> Object:
    spec: Object = {"type": svc_type, "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ipFamilies": ["IPv4"],
                    "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                    "ports": ports}
    if selector:
        spec["selector"] = dict(selector)
    if svc_type == "NodePort":
        spec["externalTrafficPolicy"] = "Cluster"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, ns), "spec": spec}


def _slice(ns: str, service: str, endpoints: list[tuple[str, str, str]], ports: list[Object],
           suffix: str = "x8k2p") -> Object:
    """An EndpointSlice; endpoints are (ip, node, pod name)."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": _meta(f"{service}-{suffix}", ns, **{"kubernetes.io/service-name": service,
                                                            "endpointslice.kubernetes.io/managed-by":
                                                            "endpointslice-controller.k8s.io"}),
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True, "serving": True, "terminating": False},
                           **({"nodeName": node} if node else {}),
                           **({"targetRef": {"kind": "Pod", "namespace": ns, "name": pod}} if pod else {})}
                          for ip, node, pod in endpoints],
            "ports": ports}


def _backend_pod(ns: str, name: str, ip: str, node: str, app: str, image: str, port: int,
                 owner: str | None = None) -> Object:
    meta = _meta(name, ns, app=app)
    if owner:
        meta["labels"]["pod-template-hash"] = owner
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": app, "image": image,
                                                       "ports": [{"containerPort": port, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "",
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def cluster_objects(node_names: Sequence[str], *, with_stale_endpoint: bool = False) -> list[Object]:
    """The Services, EndpointSlices and backend Pods of the simulated cluster (rules are generated from these).

    ``with_stale_endpoint``: the previous state, in which shop/cart still had 10.244.2.7 (on the second
    node). Nodes are spread round-robin.
    """
    n = len(node_names)

    def node(i: int) -> str:
        return node_names[i % n]

    def pod_ip(i: int, k: int) -> str:
        return f"10.244.{i % n}.{k}"

    objs: list[Object] = []
    objs.append(_service("default", "kubernetes", "10.96.0.1",
                         [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]))
    objs.append(_slice("default", "kubernetes", [(f"{_node_ip(0)}", "", "")],
                       [{"name": "https", "port": 6443, "protocol": "TCP"}], suffix="")
                | {"metadata": _meta("kubernetes", "default", **{"kubernetes.io/service-name": "kubernetes"})})
    dns_ports = [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                 {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]
    objs.append(_service("kube-system", "kube-dns", "10.96.0.10", dns_ports, selector={"k8s-app": "kube-dns"})
                | {"metadata": _meta("kube-dns", "kube-system", **{"k8s-app": "kube-dns"})})
    dns = [(pod_ip(i, 2), node(i), f"coredns-7db6d8ff4d-{s}") for i, s in ((0, "4kq9m"), (1, "r2x8w"))]
    objs.append(_slice("kube-system", "kube-dns", dns, [{"name": "dns", "port": 53, "protocol": "UDP"},
                                                       {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]))
    for ip, nd, name in dns:
        pod = _backend_pod("kube-system", name, ip, nd, "coredns", "registry.k8s.io/coredns/coredns:v1.11.1", 53)
        pod["metadata"]["labels"] = {"k8s-app": "kube-dns", "pod-template-hash": "7db6d8ff4d"}
        objs.append(pod)
    objs.append(_service("shop", "web", "10.96.100.10",
                         [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}],
                         "NodePort", {"app": "web"}))
    web = [(pod_ip(i, 5), node(i), f"web-5d4f8c7b9-{s}") for i, s in enumerate(("a1b2c", "d3e4f", "g5h6i"))]
    objs.append(_slice("shop", "web", web, [{"name": "http", "port": 8080, "protocol": "TCP"}]))
    objs += [_backend_pod("shop", name, ip, nd, "web", "nginx:1.27", 8080, "5d4f8c7b9") for ip, nd, name in web]
    objs.append(_service("shop", "cart", "10.96.100.20",
                         [{"name": "http", "port": 8080, "protocol": "TCP", "targetPort": 8080}],
                         selector={"app": "cart"}))
    cart = [(pod_ip(i, 6), node(i), f"cart-7c9d6b5f4-{s}") for i, s in ((0, "j7k8l"), (1, "m9n0p"))]
    if with_stale_endpoint:
        cart.append((STALE_ENDPOINT[2], node(2 if n > 2 else 0), "cart-7c9d6b5f4-q1r2s"))
    objs.append(_slice("shop", "cart", cart, [{"name": "http", "port": 8080, "protocol": "TCP"}]))
    objs += [_backend_pod("shop", name, ip, nd, "cart", "ghcr.io/example/cart:2.3", 8080, "7c9d6b5f4")
             for ip, nd, name in cart]
    return objs


def scaled_objects(node_names: Sequence[str], services: int, endpoints: int) -> list[Object]:
    """``services`` ClusterIP Services in namespace shop (svc-N, 10.100.0.0/16) with ``endpoints`` ready
    endpoints each (10.245.0.0/16, spread round-robin over the nodes), plus kubernetes and kube-dns as in
    :func:`cluster_objects`: the API state of issue 12's benchmark (20 nodes x 1,000 Services x 10)."""
    objs = [o for o in cluster_objects(node_names) if o["metadata"].get("namespace") != "shop"]
    port = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    e = 0
    for n in range(services):
        name = f"svc-{n:05d}"
        objs.append(_service("shop", name, f"10.100.{n // 250}.{n % 250 + 1}", port, selector={"app": name}))
        eps = []
        for _ in range(endpoints):
            e += 1
            eps.append((f"10.245.{e // 250}.{e % 250 + 1}", node_names[e % len(node_names)], ""))
        objs.append(_slice("shop", name, eps, [{"name": "http", "port": 8080, "protocol": "TCP"}]))
    return objs


def _node_object(spec: NodeSpec, i: int) -> Object:
    ip = _node_ip(i)
    ready: Object = ({"type": "Ready", "status": "True", "reason": "KubeletReady",
                      "message": "kubelet is posting ready status"} if spec.ready else
                     {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                      "message": "Kubelet stopped posting node status."})
    for c in (ready,):
        c.update({"lastHeartbeatTime": "2024-05-14T09:12:00Z", "lastTransitionTime": "2024-05-14T09:12:00Z"})
    spec_doc: Object = {"podCIDR": f"10.244.{i}.0/24", "podCIDRs": [f"10.244.{i}.0/24"]}
    if not spec.ready:
        spec_doc["taints"] = [{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule",
                               "timeAdded": "2024-05-14T09:20:00Z"},
                              {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute",
                               "timeAdded": "2024-05-14T09:20:05Z"}]
    labels = {"kubernetes.io/hostname": spec.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    if not spec.kube_proxy:
        labels["svctrace.test/kube-proxy"] = "absent"
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": spec.name, "labels": labels},
            "spec": spec_doc,
            "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": spec.name}],
                       "conditions": [{"type": t, "status": "False", "reason": r, "message": m,
                                       "lastHeartbeatTime": "2024-05-14T09:12:00Z",
                                       "lastTransitionTime": "2024-05-14T09:12:00Z"}
                                      for t, r, m in (
                                          ("MemoryPressure", "KubeletHasSufficientMemory",
                                           "kubelet has sufficient memory available"),
                                          ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                                          ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID "
                                                                                     "available"))] + [ready],
                       "nodeInfo": {"kubeletVersion": KUBE_VERSION, "kubeProxyVersion": KUBE_VERSION,
                                    "machineID": f"{i + 1:032x}", "systemUUID": f"ec2{i + 1:05x}-0000-4000-8000-"
                                                                                f"{i + 1:012x}",
                                    "bootID": f"b00710{i + 1:02x}-0000-4000-8000-{i + 1:012x}",
                                    "containerRuntimeVersion": "containerd://1.7.13", "operatingSystem": "linux",
                                    "architecture": "amd64", "osImage": "Ubuntu 22.04.4 LTS",
                                    "kernelVersion": os.uname().release},
                       "allocatable": {"cpu": "2", "memory": "3925000Ki", "pods": "110"},
                       "capacity": {"cpu": "2", "memory": "4027400Ki", "pods": "110"}}}


def _kube_proxy_objects(specs: Sequence[NodeSpec], mode: str, image: str) -> list[Object]:
    """kube-system's kube-proxy: the kubeadm ConfigMap, the DaemonSet and its (static) pods."""
    config = (f"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
              f"clusterCIDR: {CLUSTER_CIDR}\nmode: {mode}\n"
              f"iptables:\n  masqueradeBit: 14\n  minSyncPeriod: 1s\n  syncPeriod: 30s\n"
              f"ipvs:\n  scheduler: \"\"\nnftables:\n  masqueradeBit: 14\n")
    running = [s for s in specs if s.kube_proxy]
    ready = [s for s in running if s.ready]
    template_spec: Object = {
        "containers": [{"name": "kube-proxy", "image": image,
                        "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                                    "--hostname-override=$(NODE_NAME)"],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                                                  "fieldPath": "spec.nodeName"}}}],
                        "securityContext": {"privileged": True}}],
        "hostNetwork": True, "priorityClassName": "system-node-critical", "serviceAccountName": "kube-proxy",
        "tolerations": [{"operator": "Exists"}], "nodeSelector": {"kubernetes.io/os": "linux"}}
    ds: Object = {"apiVersion": "apps/v1", "kind": "DaemonSet",
                  "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"k8s-app": "kube-proxy"},
                               "generation": 1},
                  "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
                           "template": {"metadata": {"labels": {"k8s-app": "kube-proxy"}}, "spec": template_spec},
                           "updateStrategy": {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}},
                  "status": {"currentNumberScheduled": len(running), "desiredNumberScheduled": len(running),
                             "numberAvailable": len(ready), "numberMisscheduled": 0, "numberReady": len(ready),
                             "numberUnavailable": len(running) - len(ready), "observedGeneration": 1,
                             "updatedNumberScheduled": len(running)}}
    objs: list[Object] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-proxy", "namespace": "kube-system",
                                                               "labels": {"app": "kube-proxy"}},
         "data": {"config.conf": config}},
        ds,
    ]
    for i, s in enumerate(running):
        spec = copy.deepcopy(template_spec)
        spec["nodeName"] = s.name
        suffix = "".join("bcdfghjklmnpqrstvwxz2456789"[(i * 7 + k * 3) % 27] for k in range(5))
        objs.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"kube-proxy-{suffix}", "namespace": "kube-system",
                                  "labels": {"k8s-app": "kube-proxy", "controller-revision-hash": "7d9c4b8f5"},
                                  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                                                       "name": "kube-proxy", "controller": True,
                                                       "blockOwnerDeletion": True,
                                                       "uid": "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"}]},
                     "spec": spec,
                     "status": {"phase": "Running", "hostIP": _node_ip(specs.index(s)),
                                "podIP": _node_ip(specs.index(s)),
                                "conditions": [{"type": "Ready", "status": "True" if s.ready else "False"}],
                                "containerStatuses": [{"name": "kube-proxy", "ready": s.ready, "restartCount": 0,
                                                       "image": image, "started": True,
                                                       "imageID": f"{image.rsplit(':', 1)[0]}@sha256:"
                                                                  f"{'5' * 64}",
                                                       "containerID": f"containerd://{i + 1:064x}",
                                                       "state": {"running": {"startedAt": "2024-05-14T09:12:30Z"}}}]}})
    return objs


def _coredns_configmap() -> Object:
    corefile = (".:53 {\n    errors\n    health {\n       lameduck 5s\n    }\n    ready\n"
                "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n"
                "       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n    prometheus :9153\n"
                "    forward . /etc/resolv.conf {\n       max_concurrent 1000\n    }\n    cache 30\n    loop\n"
                "    reload\n    loadbalance\n}\n")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile}}


# --- rules ------------------------------------------------------------------------------------------------

def kube_proxy_order(save: str) -> str:
    """An iptables-save dump reordered as kube-proxy writes its restore input (not iptables-save's sorted order).

    Chains are declared in the order kube-proxy creates them (KUBE-SERVICES first, then each service's
    KUBE-SVC-* chain followed by its KUBE-SEP-* chains, in KUBE-SERVICES' rule order) and rules follow
    the same order. Restoring iptables-save's alphabetical order instead makes iptables-nft-save
    quadratic on big tables (10k Services: minutes instead of seconds).
    """
    out: list[str] = []
    decls: list[str] = []
    rules: dict[str, list[str]] = {}

    def flush() -> None:
        builtin = [d for d in decls if not d.endswith("- [0:0]")]
        user = [d.split()[0][1:] for d in decls if d.endswith("- [0:0]")]
        declared = set(user)
        order: list[str] = []
        seen: set[str] = set()

        def visit(chain: str) -> None:
            if chain in declared and chain not in seen:
                seen.add(chain)
                order.append(chain)

        for chain in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"):
            visit(chain)
        for rule in rules.get("KUBE-SERVICES", []):
            m = re.search(r"-j (KUBE-(?:SVC|EXT|FW)-\S+)", rule)
            if m is None:
                continue
            visit(m.group(1))
            for inner in rules.get(m.group(1), []):
                m2 = re.search(r"-j (KUBE-(?:SEP|SVC)-\S+)", inner)
                if m2 is not None:
                    visit(m2.group(1))
        for chain in user:
            visit(chain)
        out.extend(builtin)
        out.extend(f":{c} - [0:0]" for c in order)
        for chain in [d.split()[0][1:] for d in builtin] + order:
            out.extend(rules.get(chain, []))

    for line in save.splitlines():
        if line.startswith("*"):
            out.append(line)
            decls, rules = [], {}
        elif line.startswith(":"):
            decls.append(line)
        elif line.startswith("-A "):
            rules.setdefault(line.split()[1], []).append(line)
        elif line == "COMMIT":
            flush()
            out.append(line)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _ipvs_state(ports: list[SvcPort], node_ip: str) -> tuple[str, str]:
    """IPVS mode's virtual servers (ipvsadm -Sn text) and ipsets (ipset restore text) for these ports."""
    from tests.fixtures.ipvs.gen_demo_ipvs import SETS

    ipvsadm: list[str] = []
    members: dict[str, list[str]] = {name: [] for name, _, _ in SETS}
    for sp in ports:
        vips = [(sp.cluster_ip, sp.port)] + ([(node_ip, sp.node_port)] if sp.node_port else [])
        opt = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}[sp.protocol]
        for ip, port in vips:
            ipvsadm.append(f"-A {opt} {ip}:{port} -s rr")
            ipvsadm += [f"-a {opt} {ip}:{port} -r {ep} -m -w 1" for ep in sp.endpoints]
        member = f"{sp.cluster_ip},{sp.protocol}:{sp.port}"
        if member not in members["KUBE-CLUSTER-IP"]:
            members["KUBE-CLUSTER-IP"].append(member)
        if sp.cluster_ip not in members["KUBE-IPVS-IPS"]:
            members["KUBE-IPVS-IPS"].append(sp.cluster_ip)
        if sp.node_port:
            members[f"KUBE-NODE-PORT-{sp.protocol.upper()}"].append(str(sp.node_port))
    ipset: list[str] = []
    for i, (name, kind, opts) in enumerate(SETS):
        initval = f" initval 0x{(0x5eed0000 + i * 0x1111):08x}" if kind.startswith("hash:") else ""
        ipset.append(f"create {name} {kind} {opts}{initval}")
        ipset += [f"add {name} {m}" for m in members[name]]
    return "\n".join(ipvsadm) + "\n", "\n".join(ipset) + "\n"


IPVSADM_STANDIN = """#!/bin/sh
# svctrace test cluster: this kernel has no IPVS; print the table kube-proxy would have programmed.
for a in "$@"; do case "$a" in -S|-Sn|-nS|--save) save=1 ;; -n|--numeric) ;; *) other=1 ;; esac; done
if [ -n "$save" ] && [ -z "$other" ]; then exec cat @FILE@; fi
echo "Can't initialize ipvs: Protocol not available" >&2
echo "Are you sure that IP Virtual Server is built in the kernel or as module?" >&2
exit 2
"""


# --- the cluster ------------------------------------------------------------------------------------------

class SimCluster:
    """N simulated nodes, their kube-proxy rules, the API and the kubelets (see the module docstring)."""

    def __init__(self, nodes: Sequence[NodeSpec] | int = 3, *, mode: str = "iptables",
                 objects: Iterable[Object] | None = None, previous: Iterable[Object] | None = None,
                 images: Iterable[Image] | None = None, kubelet_options: Mapping[str, Any] | None = None,
                 server_options: Mapping[str, Any] | None = None, families: Sequence[int] = (4, 6)) -> None:
        if mode not in MODES:
            raise ValueError(f"mode is one of {MODES}")
        self.specs = [NodeSpec(f"node-{chr(97 + i)}") for i in range(nodes)] if isinstance(nodes, int) else list(nodes)
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError("node names must differ")
        self.mode = mode
        self.families = tuple(families)
        self.objects = list(objects) if objects is not None else cluster_objects(names)
        self.previous = list(previous) if previous is not None else cluster_objects(names, with_stale_endpoint=True)
        self.kube_proxy_image = kube_proxy_image(KUBE_VERSION)
        self.images = list(images) if images is not None else [self.kube_proxy_image, shell_image()]
        self.kubelet_options = dict(kubelet_options or {})
        self.server_options = {"watch_timeout": None, "serve_apps": True, **(server_options or {})}
        self.nodes: dict[str, SimNode] = {}
        self.server: FakeApiServer | None = None
        self.kubelet: Kubelet | None = None
        self._scratch: list[Path] = []

    # -- lifecycle --

    def __enter__(self) -> SimCluster:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> SimCluster:
        """Create the nodes, load their rules, start the API and the kubelets (undone on failure)."""
        try:
            for i, spec in enumerate(self.specs):
                self._open_node(spec, i)
            api = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}
                   for ns in ("default", "kube-node-lease", "kube-public", "kube-system", "shop")]
            api += [_node_object(s, i) for i, s in enumerate(self.specs)]
            api += self.objects
            api += _kube_proxy_objects(self.specs, self.mode, self.kube_proxy_image.name)
            api.append(_coredns_configmap())
            self.server = FakeApiServer(api, **self.server_options).start()
            self.kubelet = Kubelet(self.server, images=self.images, **self.kubelet_options)
            for node in self.nodes.values():
                tools: dict[str, str | Script] = {}
                if node.ipvs:
                    path = node.netns.name
                    text_file = self.kubelet.root / f"ipvs-{path}.txt"
                    text_file.write_text(node.ipvs)
                    tools["ipvsadm"] = Script(IPVSADM_STANDIN.replace("@FILE@", shlex.quote(str(text_file))))
                self.kubelet.add_node(node.name, node.netns.name, ready=node.spec.ready, tools=tools)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the kubelets and the API, delete every namespace (safe to call twice)."""
        if self.kubelet is not None:
            self.kubelet.close()
        if self.server is not None:
            self.server.stop()
        for node in self.nodes.values():
            node.netns.close()

    def leftovers(self) -> list[str]:
        """Namespaces, processes and threads still alive after close() (empty when all is clean)."""
        left = [ns for node in self.nodes.values() for ns in node.netns.leftovers()]
        if self.kubelet is not None:
            left += [f"pid {pid}" for pid in self.kubelet.live_processes()]
            left += [f"thread {t.name}" for t in self.kubelet.live_threads()]
        if self.server is not None:
            left += [f"thread {t.name}" for t in self.server.live_threads()]
        return left

    # -- nodes --

    def node(self, name: str) -> SimNode:
        return self.nodes[name]

    def _open_node(self, spec: NodeSpec, index: int) -> None:
        need = ["nfacct"] + (["nft"] if self.mode == "nftables" else []) + (["ipset"] if self.mode == "ipvs" else [])
        require_netns(spec.backend, need=need)
        ip = _node_ip(index)
        netns = NetnsNode(backend=spec.backend, node_ip=ip)
        state = list(spec.rules_from) if spec.rules_from is not None else (
            self.previous if spec.stale else self.objects)
        node = SimNode(spec, index, netns, ip, state)
        self.nodes[spec.name] = node
        netns.open()
        self.load_rules(node)

    def load_rules(self, node: SimNode) -> None:
        """Program the node as kubelet and kube-proxy (in the cluster's mode) would, from its API state."""
        ports = service_ports(node.api_state)
        netns = node.netns
        if not node.spec.kube_proxy:
            gen_demo_nftables.kubelet_chains(netns)
            return
        if self.mode == "iptables":
            for family in self.families:
                node_start(netns, ports, family)
        elif self.mode == "nftables":
            text = "".join(gen_demo_nftables.ruleset(ports, family, node.ip) for family in self.families)
            netns.run("nft", "-f", "-", input=text)
            gen_demo_nftables.kubelet_and_calico(netns)
        else:
            from tests.fixtures.ipvs.gen_demo_ipvs import FILTER, NAT, POD_CIDR, STAMP

            node.ipvs, ipset = _ipvs_state(ports, node.ip)
            netns.run("ipset", "restore", input=ipset)  # the sets exist before rules refer to them
            # NAT and FILTER are IPVS mode's tables on a node, kubelet's chains included
            netns.load_rules(NAT.format(stamp=STAMP, pod_cidr=POD_CIDR) + FILTER.format(stamp=STAMP))
            for chain in ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"):
                netns.iptables("-t", "mangle", "-N", chain)
            netns.iproute("link", "add", "kube-ipvs0", "type", "veth", "peer", "name", "kube-ipvs0-peer")
            for vip in sorted({sp.cluster_ip for sp in ports}):
                netns.iproute("addr", "add", f"{vip}/32", "dev", "kube-ipvs0")

    def set_ready(self, name: str, ready: bool) -> None:
        """Bring a node's kubelet down (NotReady: Ready=Unknown, unreachable taints) or back up."""
        assert self.server is not None and self.kubelet is not None
        spec = replace(self.nodes[name].spec, ready=ready)
        self.nodes[name].spec = spec
        fresh = _node_object(spec, self.nodes[name].index)

        def change(doc: Object) -> None:
            doc["spec"] = fresh["spec"]
            doc["status"]["conditions"] = fresh["status"]["conditions"]

        self.server.update("Node", "", name, change)
        self.kubelet.set_ready(name, ready)

    # -- clients --

    def write_kubeconfig(self, path: str | Path, **kwargs: Any) -> Path:
        assert self.server is not None
        return self.server.write_kubeconfig(path, **kwargs)

    def drifted_nodes(self) -> list[str]:
        """Names of the nodes whose rules do not match the API (what an all-nodes audit must find)."""
        return [n.name for n in self.nodes.values() if n.spec.stale or not n.spec.kube_proxy]

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per node: IP, backend, stale, ready, kube-proxy present (for test messages)."""
        return {n.name: {"ip": n.ip, "backend": n.spec.backend, "stale": n.spec.stale, "ready": n.spec.ready,
                         "kube_proxy": n.spec.kube_proxy, "netns": n.netns.name} for n in self.nodes.values()}
