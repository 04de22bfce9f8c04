"""Coverage-guided fuzzing of whole snapshots: one file of a demo snapshot replaced by the input, every command run.

    pip install atheris                    # a binary wheel for CPython 3.8-3.12 on Linux x86-64
    python bench/fuzz_snapshot.py -atheris_runs=20000          # or -max_total_time=3600
    python bench/fuzz_snapshot.py --hypothesis 5000            # without atheris: a long hypothesis run
    python bench/fuzz_snapshot.py --replay crash-*             # run saved inputs again

The input's first byte picks the demo (iptables, IPVS or nftables mode), its second which file it replaces
(an api/ document or a node/ file), the rest is that file. The corpus starts from the demo's own files, so
mutations begin from inputs every parser accepts. A crash (exit status 3, an exception, or a command that
takes more than 20 s) stops the run and libFuzzer writes the input as crash-<sha1>; make it a seed in
tests/fixtures/fuzz/ (see make_seeds.py there) once fixed, so the normal test run keeps checking it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzzing import DEMOS, FILES, REPO, check_input, hypothesis_run  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="svctrace-fuzz-"))


def seed_corpus(into: Path) -> Path:
    """Every demo file as an input that reproduces it (mode byte, file byte, content)."""
    into.mkdir(parents=True, exist_ok=True)
    for m, mode in enumerate(("iptables", "ipvs", "nftables")):
        for f, rel in enumerate(FILES):
            node = DEMOS[mode] / rel if mode != "iptables" or rel.startswith("node/") else None
            source = node if node is not None and node.exists() else DEMOS["iptables"] / rel
            if rel.startswith("api/"):
                source = DEMOS["iptables"] / "api" / "pods.json" if rel.endswith(".json") else \
                    REPO / "tests" / "fixtures" / "api" / "default.yaml"  # the demo is JSON only
            if source.exists():
                (into / f"{mode}-{rel.replace('/', '-')}").write_bytes(bytes([m, f]) + source.read_bytes())
    return into


def one(data: bytes) -> None:
    check_input(data, WORK)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hypothesis", type=int, metavar="N", help="run N hypothesis examples instead of atheris")
    parser.add_argument("--replay", nargs="+", type=Path, metavar="FILE", help="run these saved inputs")
    args, rest = parser.parse_known_args()
    try:
        if args.replay:
            for path in args.replay:
                one(path.read_bytes())
                print(f"{path}: ok")
            return 0
        if args.hypothesis:
            seeds = [p.read_bytes() for p in sorted(seed_corpus(WORK / "corpus").iterdir())]
            return hypothesis_run(seeds, one, args.hypothesis, keep=2)
        try:
            import atheris
        except ImportError:
            print("atheris is not installed; run with --hypothesis N (see the docstring)", file=sys.stderr)
            return 2
        corpus = seed_corpus(WORK / "corpus")
        atheris.instrument_all()  # coverage of every loaded module: svctrace and what it calls
        atheris.Setup([sys.argv[0], *rest, str(corpus)], one)
        atheris.Fuzz()
        return 0
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
