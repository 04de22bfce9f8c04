"""Coverage-guided fuzzing of each parser alone: many more inputs a second than bench/fuzz_snapshot.py.

    python bench/fuzz_parsers.py -max_total_time=3600       # atheris (pip install atheris)
    python bench/fuzz_parsers.py --hypothesis 20000         # without atheris

The input's first byte picks the parser, the rest is its text. Every parser must return a value or raise
InputError; anything else (and a parse that takes more than 20 s) is a crash, written by libFuzzer as
crash-<sha1>.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svctrace.errors import InputError  # noqa: E402
from svctrace.parsers import iptables_save, ipvs  # noqa: E402
from svctrace.parsers.conntrack import parse_conntrack  # noqa: E402
from svctrace.parsers.json_stream import Counter  # noqa: E402
from svctrace.parsers.k8s import parse_raw  # noqa: E402
from svctrace.parsers.k8s_documents import read_json_objects, read_yaml_objects  # noqa: E402
from svctrace.parsers.nft_json import parse_nft_json  # noqa: E402
from svctrace.parsers.nft_transaction import parse_nft_transaction  # noqa: E402
from svctrace.parsers.node import parse_ip_addr_json, parse_links, parse_meta_json  # noqa: E402
from svctrace.parsers.text_stream import TextStream  # noqa: E402
from tests.fuzzing import DEADLINE, DEMOS, deadline, hypothesis_run  # noqa: E402


def _iptables(text: str) -> None:
    dump = iptables_save.parse(text, "t", family=4, eager=len(text) < 2000)
    for table in dump.tables.values():
        for name in list(table.heads):
            table.chain(name)


def _nft(text: str) -> None:
    for table in parse_nft_json(text, "t").tables:
        for s in (*table.sets.values(), *table.maps.values()):
            for e in s.elements:
                _ = e.typed


def _api_json(data: bytes) -> None:
    parse_raw(read_json_objects(TextStream(io.BytesIO(data).read, "t"), "t", Counter(100_000)), "t")


PARSERS: list[tuple[str, Callable[[str], Any] | None, Callable[[bytes], Any] | None]] = [
    ("iptables-save", _iptables, None),
    ("nft.json", _nft, None),
    ("nft transaction", lambda t: parse_nft_transaction(t, "t"), None),
    ("ipvsadm -Sn", lambda t: ipvs.parse_ipvsadm_save(t, "t"), None),
    ("ipset save", lambda t: ipvs.parse_ipset_save(t, "t"), None),
    ("conntrack -L", lambda t: parse_conntrack(t, "t"), None),
    ("ip -j addr", lambda t: (parse_ip_addr_json(t, "t"), parse_links(t, "t")), None),
    ("meta.json", lambda t: parse_meta_json(t, "t"), None),
    ("api JSON", None, _api_json),
    ("api YAML", lambda t: parse_raw(read_yaml_objects(t, "t"), "t"), None),
]
SEED_FILES = {0: "tutorial/node/iptables-save.txt", 1: "tutorial-nftables/node/nft.json",
              3: "tutorial-ipvs/node/ipvsadm.txt", 4: "tutorial-ipvs/node/ipset.txt",
              6: "tutorial/node/ip-addr.json", 7: "tutorial/node/meta.json", 8: "tutorial/api/pods.json",
              9: "../../tests/fixtures/api/default.yaml"}  # the demo is JSON only: a YAML List of the tests


def one(data: bytes) -> None:
    if not data:
        return
    _, on_text, on_bytes = PARSERS[data[0] % len(PARSERS)]
    with deadline(DEADLINE):
        try:
            if on_bytes is not None:
                on_bytes(data[1:])
            else:
                assert on_text is not None
                on_text(data[1:].decode("utf-8", "replace"))
        except InputError:
            pass


def seeds(into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    demo = DEMOS["iptables"].parent
    for index, rel in SEED_FILES.items():
        (into / f"seed-{index}").write_bytes(bytes([index]) + (demo / rel).read_bytes())
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hypothesis", type=int, metavar="N", help="run N hypothesis examples instead of atheris")
    args, rest = parser.parse_known_args()
    import tempfile

    corpus = seeds(Path(tempfile.mkdtemp(prefix="svctrace-fuzz-parsers-")))
    if args.hypothesis:
        return hypothesis_run([p.read_bytes()[:4000] for p in sorted(corpus.iterdir())], one, args.hypothesis, keep=1)
    try:
        import atheris
    except ImportError:
        print("atheris is not installed; run with --hypothesis N (see the docstring)", file=sys.stderr)
        return 2
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *rest, str(corpus)], one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
