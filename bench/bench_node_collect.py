"""How to read a big iptables-legacy nat table on a live node: iptables-legacy-save + our parser, or python-iptables.

Loads a generated kube-proxy dump (bench/gen_iptables.py) into a throw-away network namespace with
iptables-legacy-restore, then times, inside that namespace:

  (a) ``iptables-legacy-save`` (the subprocess alone, then our parser on its text)
  (b) python-iptables (iptc) decoding every rule of the nat table (chain, addresses, protocol, each
      match's and the target's parameters: what we would need to build our model)
  (c) iptc reading only the chains one Service reaches: KUBE-SERVICES (scanned for the Service's
      ClusterIP), its KUBE-SVC-x chain and that chain's KUBE-SEP-y chains
  (d) svctrace's own ``collect_node(netns=...)`` end to end (both backends' save commands, addresses,
      sysctls, proxy-mode detection)

    sudo python bench/bench_node_collect.py                       # 1,000 and 10,000 Services x 10 endpoints
    sudo python bench/bench_node_collect.py --services 1000 --endpoints 5 --repeat 3

Needs root (network namespaces). The namespace is removed afterwards, also on failure. python-iptables is not a
dependency of svctrace (it compiles a C helper at install time and reads only the legacy backend): (b) and (c) run
only where it is installed (`pip install python-iptables`), and are reported as skipped otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from gen_iptables import generate  # noqa: E402

# Run inside the namespace by `ip netns exec`, so iptc and the subprocesses see its tables.
INNER = r"""
import json, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
what, repeat = sys.argv[2], int(sys.argv[3])
out = {}

def best(fn):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result

if what == "save":
    from svctrace.parsers.iptables_save import parse
    t_save, text = best(lambda: subprocess.run(["iptables-legacy-save"], capture_output=True, text=True,
                                               check=True).stdout)
    t_parse, dump = best(lambda: parse(text, "bench", 4))
    out = {"save_s": t_save, "parse_s": t_parse, "rules": dump.rule_count, "lines": text.count("\n")}
elif what in ("iptc_all", "iptc_one"):
    try:
        import iptc
    except ImportError:
        print(json.dumps({"skipped": "python-iptables is not installed"}))
        sys.exit(0)
if what == "iptc_all":
    def read_all():
        table = iptc.Table("nat")
        table.autocommit = False
        n = 0
        for chain in table.chains:
            for r in chain.rules:
                _ = (chain.name, r.src, r.dst, r.protocol, r.in_interface, r.out_interface,
                     [(m.name, m.get_all_parameters()) for m in r.matches],
                     r.target.name, r.target.get_all_parameters())
                n += 1
        return n
    t, n = best(read_all)
    out = {"iptc_all_s": t, "rules": n}
elif what == "iptc_one":
    cluster_ip = sys.argv[4] + "/255.255.255.255"
    def read_one():
        table = iptc.Table("nat")
        table.autocommit = False
        n = 0
        svc = None
        for r in iptc.Chain(table, "KUBE-SERVICES").rules:
            n += 1
            if r.dst == cluster_ip:
                svc = r.target.name
                break
        seps = []
        for r in iptc.Chain(table, svc).rules:
            n += 1
            _ = [(m.name, m.get_all_parameters()) for m in r.matches]
            if r.target.name.startswith("KUBE-SEP-"):
                seps.append(r.target.name)
        for sep in seps:
            for r in iptc.Chain(table, sep).rules:
                n += 1
                _ = (r.src, [(m.name, m.get_all_parameters()) for m in r.matches], r.target.get_all_parameters())
        return n, svc, len(seps)
    t, (n, svc, seps) = best(read_one)
    out = {"iptc_one_s": t, "rules_read": n, "svc_chain": svc, "sep_chains": seps}
elif what == "collect":
    from svctrace.collectors.node import collect_node
    t, col = best(lambda: collect_node(proxy_mode_url="http://127.0.0.1:1/proxyMode", timeout=0.2))
    out = {"collect_s": t, "backend": col.backend, "proxy_mode": col.proxy_mode,
           "rules": col.iptables.rule_count if col.iptables else 0}
print(json.dumps(out))
"""


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True, **kw)  # type: ignore[call-overload,no-any-return]


def inner(ns: str, what: str, repeat: int, *extra: str) -> dict[str, Any]:
    proc = run(["ip", "netns", "exec", ns, sys.executable, "-c", INNER, str(HERE.parent), what, str(repeat), *extra])
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def bench(services: int, endpoints: int, repeat: int, slow_repeat: int) -> None:
    text = generate(services, endpoints)
    ns = f"svct-bench-{secrets.token_hex(3)}"
    run(["ip", "netns", "add", ns])
    try:
        for counter in sorted(set(re.findall(r"--nfacct-name\s+(\S+)", text))):
            run(["ip", "netns", "exec", ns, "nfacct", "add", counter])
        t0 = time.perf_counter()
        run(["ip", "netns", "exec", ns, "iptables-legacy-restore"], input=text)
        load = time.perf_counter() - t0
        a = inner(ns, "save", repeat)
        b = inner(ns, "iptc_all", slow_repeat)
        # The last Service: KUBE-SERVICES is scanned to its end, the worst case for one Service.
        s = services - 1
        c = inner(ns, "iptc_one", repeat, f"172.30.{(s >> 8) & 255}.{s & 255}")
        d = inner(ns, "collect", repeat)
        print(f"\n{services:,} Services x {endpoints} endpoints: {a['lines']:,} lines, {a['rules']:,} rules "
              f"(iptables-legacy-restore took {load:.2f} s)")
        print(f"  (a) iptables-legacy-save          {a['save_s']:8.3f} s")
        print(f"      + svctrace parser              {a['parse_s']:8.3f} s   = {a['save_s'] + a['parse_s']:.3f} s "
              "for every table")
        if "skipped" in b:
            print(f"  (b), (c) iptc                      skipped: {b['skipped']}")
        else:
            print(f"  (b) iptc, whole nat table          {b['iptc_all_s']:8.3f} s   ({b['rules']:,} rules)")
            print(f"  (c) iptc, one Service's chains     {c['iptc_one_s']:8.3f} s   ({c['rules_read']:,} rules "
                  f"read, {c['sep_chains']} endpoints)")
        print(f"  (d) collect_node (whole node)      {d['collect_s']:8.3f} s   (backend {d['backend']}, "
              f"mode {d['proxy_mode']}, {d['rules']:,} rules)")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, action="append", help="repeatable (default: 1000 and 10000)")
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="best of N for the fast ways")
    ap.add_argument("--slow-repeat", type=int, default=1, help="best of N for iptc over the whole table")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_node_collect.py needs root (it makes a network namespace)")
    for services in args.services or [1000, 10000]:
        bench(services, args.endpoints, args.repeat, args.slow_repeat)


if __name__ == "__main__":
    main()
