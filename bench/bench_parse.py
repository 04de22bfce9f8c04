"""How long svctrace takes to parse a big kube-proxy iptables-save dump, and how much memory it holds.

    python bench/bench_parse.py                       # 10k Services x 10 endpoints (~430k lines)
    python bench/bench_parse.py --services 1000 --endpoints 5 --repeat 5
    python bench/bench_parse.py --file /path/to/iptables-save.txt

Prints the line and rule counts, the best wall time of --repeat runs, and the peak memory Python
allocated during one more run (tracemalloc; that run is slower and not timed). The same numbers are
available to pytest-benchmark via ``test_parse_benchmark`` below when it is collected explicitly.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_iptables import generate  # noqa: E402

from svctrace.parsers.iptables_save import parse  # noqa: E402


def reference_loop() -> float:
    """Seconds for a plain 10M-step Python loop: how fast this machine runs Python right now (shared
    machines vary by 2x from minute to minute; compare parse times against this)."""
    t0 = time.process_time()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.process_time() - t0


def measure(text: str, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` parse time (wall and CPU), then one traced run for peak allocated memory."""
    times = []
    cpu = []
    rules = 0
    for _ in range(repeat):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        dump = parse(text, "bench")
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        rules = dump.rule_count
        del dump
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before tracemalloc adds its own
    gc.collect()
    tracemalloc.start()
    dump = parse(text, "bench")
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del dump
    return {"lines": text.count("\n"), "rules": rules, "best_s": min(times), "mean_s": sum(times) / len(times),
            "cpu_s": min(cpu), "peak_mib": peak / 2**20, "retained_mib": retained / 2**20, "max_rss_mib": max_rss}


def main() -> None:
    ap = argparse.ArgumentParser(description="parse-time benchmark for svctrace.parsers.iptables_save")
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--file", type=Path, help="parse this dump instead of a generated one")
    args = ap.parse_args()
    if args.file:
        text, what = args.file.read_text(), str(args.file)
    else:
        text, what = generate(args.services, args.endpoints), f"{args.services} services x {args.endpoints} endpoints"
    r = measure(text, args.repeat)
    print(f"reference:      a 10M-step Python loop takes {reference_loop():.2f} s of CPU here")
    print(f"input:          {what}")
    print(f"lines:          {r['lines']:,.0f} ({len(text) / 2**20:.1f} MiB of text)")
    print(f"rules:          {r['rules']:,.0f}")
    print(f"parse time:     best {r['best_s']:.2f} s wall ({r['cpu_s']:.2f} s CPU), mean {r['mean_s']:.2f} s "
          f"over {args.repeat} runs ({r['lines'] / r['best_s']:,.0f} lines/s)")
    print(f"peak memory:    {r['peak_mib']:.0f} MiB allocated during parse (tracemalloc), "
          f"{r['retained_mib']:.0f} MiB held by the result")
    print(f"max RSS:        {r['max_rss_mib']:.0f} MiB (whole process: the text, the generator, one dump)")


def test_parse_benchmark(benchmark) -> None:  # type: ignore[no-untyped-def]  # pragma: no cover
    """``pytest bench/bench_parse.py`` (pytest-benchmark): 1k x 10, to keep a run short."""
    text = generate(1000, 10)
    dump = benchmark(parse, text, "bench")
    assert dump.rule_count == text.count("\n-A ")


if __name__ == "__main__":
    main()
