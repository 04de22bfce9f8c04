"""How to read a big kube-proxy nftables table on a live node: ``nft -j`` + our parser, or pyroute2's nftables.

Generates kube-proxy's nftables ruleset (proxier.go's layout: verdict maps, a service- chain with a
``numgen random mod N vmap`` and N endpoint- chains per Service), loads it with ``nft -f`` into a throw-away
network namespace and times, inside that namespace:

  (a) ``nft -j list ruleset`` (the subprocess alone), then ``svctrace.parsers.nft_json.parse_nft_json`` on it
  (b) pyroute2.nftables: dumping tables, chains, rules and sets over netlink, then the elements of every
      named set/map and anonymous ``__map`` (the numgen vmaps) with a raw NFT_MSG_GETSETELEM dump (pyroute2
      0.9.7's ``set_elems("get")`` fails: it indexes an un-awaited coroutine), then ``NFTRule.from_netlink``
      on every rule; and reports what that yields (register-level expressions, packed keys)

    sudo python bench/bench_nft_read.py                      # 5,000 Services x 5 endpoints
    sudo python bench/bench_nft_read.py --services 1000 --endpoints 10 --repeat 3

Needs root (network namespaces). The namespace is removed afterwards, also on failure.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from svctrace.kubeproxy import naming  # noqa: E402

INNER = r"""
import json, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
what, repeat = sys.argv[2], int(sys.argv[3])

def best(fn):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result

if what == "nft":
    from svctrace.parsers.nft_json import parse_nft_json
    t_list, text = best(lambda: subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True,
                                               check=True).stdout)
    t_parse, rs = best(lambda: parse_nft_json(text, "bench"))
    t = rs.kube_proxy(4)
    out = {"list_s": t_list, "parse_s": t_parse, "bytes": len(text),
           "rules": sum(len(c.rules) for c in t.chains.values()), "chains": len(t.chains),
           "service_ips": len(t.maps["service-ips"].elements),
           "sample": next(r.text for r in t.chains.values() for r in r.rules if "numgen" in r.text)}
else:
    from pyroute2.nftables.main import NFTables
    from pyroute2.nftables.rule import NFTRule
    from pyroute2.netlink.nfnetlink.nftsocket import nft_set_elem_list_msg, NFT_MSG_GETSETELEM
    nft = NFTables(nfgen_family=2)

    async def elems(name):
        msg = nft_set_elem_list_msg()
        msg["attrs"] = [["NFTA_SET_ELEM_LIST_TABLE", "kube-proxy"], ["NFTA_SET_ELEM_LIST_SET", name]]
        return [x async for x in await nft.asyncore.request_get(msg, NFT_MSG_GETSETELEM)]

    def dump():
        tables, chains, rules, sets = nft.get_tables(), nft.get_chains(), nft.get_rules(), nft.get_sets()
        elements = {}
        for s in sets:
            name = s.get_attr("NFTA_SET_NAME")
            msgs = nft.asyncore.event_loop.run_until_complete(elems(name))
            elements[name] = [e for m in msgs for e in (m.get_attr("NFTA_SET_ELEM_LIST_ELEMENTS") or [])]
        return tables, chains, rules, sets, elements

    t_dump, (tables, chains, rules, sets, elements) = best(dump)
    def decode():
        ok, failed = 0, {}
        for r in rules:
            try:
                NFTRule.from_netlink(r)
                ok += 1
            except Exception as exc:  # pyroute2 raises NotImplementedError for expressions it lacks
                failed[type(exc).__name__ + ": " + str(exc)[:60]] = failed.get(type(exc).__name__ + ": "
                                                                              + str(exc)[:60], 0) + 1
        return ok, failed

    t_decode, (decoded_ok, decode_failed) = best(decode)
    named = [n for n in elements if not n.startswith("__")]
    si = elements.get("service-ips", [])
    key = si[0].get_attr("NFTA_SET_ELEM_KEY").get_attr("NFTA_DATA_VALUE") if si else b""
    exprs = {e.get_attr("NFTA_EXPR_NAME") for r in rules for e in r.get_attr("NFTA_RULE_EXPRESSIONS") or []}
    out = {"dump_s": t_dump, "decode_s": t_decode, "rules": len(rules), "chains": len(chains),
           "rules_decoded": decoded_ok, "rules_not_decoded": decode_failed,
           "sets_named": len(named), "sets_anonymous": len(elements) - len(named),
           "service_ips": len(si), "service_ips_key_sample": key.hex(),
           "expression_kinds": sorted(exprs)}
print(json.dumps(out))
"""


def generate(services: int, endpoints: int) -> str:
    """kube-proxy's ``ip kube-proxy`` table for ``services`` ClusterIP+NodePort Services, in `nft -f` order."""
    t = "ip kube-proxy"
    key = "ipv4_addr . inet_proto . inet_service"
    decl = [f'add table {t} {{ comment "rules for kube-proxy" ; }}',
            f"add set {t} cluster-ips {{ type ipv4_addr ; }}", f"add set {t} nodeport-ips {{ type ipv4_addr ; }}",
            f"add map {t} service-ips {{ type {key} : verdict ; }}",
            f"add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; }}",
            f"add map {t} no-endpoint-services {{ type {key} : verdict ; }}",
            f"add chain {t} mark-for-masquerade", f"add chain {t} services",
            f"add chain {t} nat-prerouting {{ type nat hook prerouting priority -100 ; }}"]
    rules = [f"add rule {t} mark-for-masquerade mark set mark or 0x4000",
             f"add rule {t} nat-prerouting jump services",
             f"add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips",
             f"add rule {t} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"]
    elements = [f"add element {t} nodeport-ips {{ 192.168.0.2 }}"]
    for i in range(services):
        ns, name, vip = f"ns{i % 50}", f"svc{i}", f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"
        svc = naming.nft_service_chain(ns, name, "tcp", "http")
        ext = naming.nft_service_chain(ns, name, "tcp", "http", "external")
        eps = []
        for j in range(endpoints):
            n = i * endpoints + j
            ip = f"10.{200 + n // 65536}.{n // 256 % 256}.{n % 256}"
            eps.append((ip, naming.nft_endpoint_chain(ns, name, "tcp", "http", ip, 8080)))
        decl += [f"add chain {t} {svc}", f"add chain {t} {ext}"] + [f"add chain {t} {c}" for _, c in eps]
        rules.append(f"add rule {t} {svc} ip daddr {vip} ip saddr != 10.0.0.0/8 jump mark-for-masquerade")
        vmap = " , ".join(f"{k} : goto {c}" for k, (_, c) in enumerate(eps))
        rules.append(f"add rule {t} {svc} numgen random mod {len(eps)} vmap {{ {vmap} }}")
        rules += [f"add rule {t} {ext} jump mark-for-masquerade", f"add rule {t} {ext} goto {svc}"]
        for ip, c in eps:
            rules += [f"add rule {t} {c} ip saddr {ip} jump mark-for-masquerade",
                      f"add rule {t} {c} meta l4proto tcp dnat to {ip}:8080"]
        elements += [f"add element {t} cluster-ips {{ {vip} }}",
                     f"add element {t} service-ips {{ {vip} . tcp . 80 : goto {svc} }}"]
        if i < 2768:  # the NodePort range 30000-32767 holds 2,768 ports
            elements.append(f"add element {t} service-nodeports {{ tcp . {30000 + i} : goto {ext} }}")
    return "\n".join(decl + rules + elements) + "\n"


def run(ns: str, what: str, repeat: int) -> dict[str, Any]:
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", INNER, str(HERE.parent), what,
                           str(repeat)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--endpoints", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ns = f"svct-bench-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
            f.write(generate(args.services, args.endpoints))
            f.flush()
            subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", f.name], check=True)
        print(f"{args.services} Services x {args.endpoints} endpoints, best of {args.repeat}")
        nft = run(ns, "nft", args.repeat)
        print("(a) nft -j list ruleset + parse_nft_json:", json.dumps(nft))
        pr2 = run(ns, "pyroute2", args.repeat)
        print("(b) pyroute2.nftables netlink dump + NFTRule.from_netlink:", json.dumps(pr2))
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
