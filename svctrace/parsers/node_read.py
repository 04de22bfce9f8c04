"""What a node read's raw command results mean: the node/ files, the backend decision, warnings (pure).

A node is read the same way wherever the commands run: on this node (collectors/node.py runs them with
subprocess) or in a collector pod on another node (collectors/remote.py runs one read-only shell script
through the API). Both hand the raw results (what each command printed, or why it could not run) to
these functions, so the iptables backend, kube-proxy's nftables tables and meta.json are decided by
one piece of code, and a remote read of a node gives the local read's NodeInput.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from svctrace.errors import InputError
from svctrace.model.snapshot import Missing, NodeFile
from svctrace.parsers.commands import ALL_TABLES as ALL_TABLES
from svctrace.parsers.commands import LEGACY, NFT
from svctrace.parsers.commands import NFT_FAMILIES as NFT_FAMILIES
from svctrace.parsers.commands import SAVE_COMMANDS as SAVE_COMMANDS
from svctrace.parsers.commands import CommandRun as CommandRun
from svctrace.parsers.detect import BackendDecision, CountedSave, decide_backend
from svctrace.parsers.snapshot import EAGER_BYTES, NodeInput

if TYPE_CHECKING:
    from svctrace.model.nft import NftRuleset, NftTable  # noqa: TC004 - NftRuleset is imported where it is built

NFT_NO_TABLE = "No such file or directory"  # what nft says for a table that does not exist


def joined(runs: Sequence[CommandRun]) -> CommandRun:
    """Per-table runs of one save command as one dump; the first failure fails it (as one run would)."""
    texts: list[str] = []
    for run in runs:
        if run.stdout is None:
            return run
        texts.append(run.stdout)
    return CommandRun("".join(texts))


def only_tables(run: CommandRun, tables: Sequence[str]) -> CommandRun:
    """A whole save's text cut to ``tables`` (each ``*table`` ... ``COMMIT`` section kept whole, in order, and
    the comment lines before the first). The nf_tables backend's save fetches every table from the kernel
    even with ``-t``, so one save of all costs what one of a table does, and several ``-t`` runs add up."""
    text = run.stdout
    if text is None or tables == ALL_TABLES:
        return run
    start = 0 if text.startswith("*") else text.find("\n*") + 1
    if start <= 0 and not text.startswith("*"):
        return run  # no table at all: as it is
    kept = [text[:start]]
    dropped = False
    while start >= 0:
        name = text[start + 1:text.find("\n", start)].strip()
        commit = text.find("\nCOMMIT", start)
        end = len(text) if commit < 0 else (text.find("\n", commit + 1) + 1 or len(text))
        if name in tables:
            kept.append(text[start:end])
        else:
            dropped = True
        following = text.find("\n*", end - 1)
        start = following + 1 if following >= 0 else -1
    # every table wanted: the text as it is (a 10k-Service dump is 48 MB: no copy of it)
    return run if not dropped else CommandRun("".join(kept))


def _either(*runs: CommandRun) -> tuple[str | CountedSave, ...] | None:
    texts = tuple(r.stdout if r.kube_chains is None else CountedSave(r.stdout, r.kube_chains)
                  for r in runs if r.stdout is not None)
    return texts if texts else None


def choose_iptables(runs: Mapping[tuple[str, int], CommandRun], node: NodeInput, *, where: str,
                    tables: tuple[str, ...]) -> BackendDecision:
    """Keep the iptables rules of the backend that holds kube's chains (``runs``: (backend, family) -> run),
    as node/ files, with warnings and missing inputs; the decision says which backend and why."""
    decision = decide_backend(_either(runs[LEGACY, 4], runs[LEGACY, 6]), _either(runs[NFT, 4], runs[NFT, 6]))
    node.warnings.extend(decision.warnings)
    for backend in (LEGACY, NFT):
        error = runs[backend, 4].error
        if decision.use is not None and backend != decision.use and error and not runs[backend, 4].skipped:
            node.warnings.append(f"cannot check the {backend} backend for KUBE-* chains{where}: {error}")
    for family, name in ((4, NodeFile.IPTABLES), (6, NodeFile.IP6TABLES)):
        if decision.use is None:
            errors = "; ".join(e for e in (runs[LEGACY, family].error, runs[NFT, family].error) if e)
            node.warnings.append(f"cannot read the IPv{family} iptables rules{where}: {errors}")
            node.missing.append(Missing(name, errors))
            continue
        run = runs[decision.use, family]
        if run.stdout is None:
            node.warnings.append(f"cannot read the IPv{family} iptables rules of the {decision.use} backend{where}: "
                                 f"{run.error}")
            node.missing.append(Missing(name, run.error or ""))
            continue
        node.files[name] = run.stdout
        node.where[name] = f"{SAVE_COMMANDS[decision.use][family]}{where}"
        if run.indexed is not None and len(run.stdout) > EAGER_BYTES:
            # indexed while the save ran: what build_snapshot would parse it into, ready (None: parse it)
            dump = run.indexed(node.source(name), family, None if tables == ALL_TABLES else tables)
            if dump is not None:
                node.parsed[name] = dump
    if tables != ALL_TABLES:
        node.missing.append(Missing("iptables tables", f"only {', '.join(tables)} read"))
    return decision


_NFT_HEAD = re.compile(r'\s*\{\s*"nftables"\s*:\s*\[\s*')


def _before_space(text: str, end: int) -> int:
    """Where the whitespace that ends ``text[:end]`` starts (no copy of a 91 MB text, as rstrip would make)."""
    while end > 0 and text[end - 1] in " \t\r\n":
        end -= 1
    return end


def _not_read(family: str, run: CommandRun, where: str, warnings: list[str]) -> None:
    """A family's table that nft did not list: a warning, unless the table does not exist."""
    if run.error and NFT_NO_TABLE not in run.error:
        warnings.append(f"cannot read nftables table {family} kube-proxy{where}: {run.error}")


def kube_proxy_nft(runs: Sequence[tuple[str, CommandRun]], *, where: str,
                   warnings: list[str]) -> tuple[str, tuple[str, ...]]:
    """kube-proxy's nftables tables (``nft -j list table FAMILY kube-proxy`` per family) as `nft -j` text, and
    the tables that exist ("ip kube-proxy", ...).

    Each family's document is kept as printed, one after the other (the parser reads them in turn): at 10,000
    Services one is 91 MB, and joining their items into one document copied it twice. Only its first and
    last characters are looked at here; its items are checked by the parser, as a snapshot's would be."""
    docs: list[str] = []
    found: list[str] = []
    for family, run in runs:
        text = run.stdout
        if text is None:
            _not_read(family, run, where, warnings)
            continue
        head = _NFT_HEAD.match(text)
        close = _before_space(text, len(text)) - 1  # its last "}", then the items' "]"
        bracket = _before_space(text, close) - 1 if close >= 0 and text[close] == "}" else -1
        if head is None or bracket < 0 or text[bracket] != "]" or bracket + 1 < head.end():
            warnings.append(f"nft -j list table {family} kube-proxy{where} printed something that is not JSON")
            continue
        if bracket > head.end():  # it has items
            docs.append(text if text.endswith("\n") else text + "\n")
        found.append(f"{family} kube-proxy")
    if not docs:
        return json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}]}) + "\n", tuple(found)
    return docs[0] if len(docs) == 1 else "".join(docs), tuple(found)


def kube_proxy_nft_read(runs: Sequence[tuple[str, CommandRun, Callable[[], NftRuleset]]], *, where: str,
                        warnings: list[str], source: str) -> tuple[NftRuleset, tuple[str, ...]]:
    """kube-proxy's nftables tables as a ruleset, each family's document read as it was written (its reader's
    ruleset: ``read``) or, where its reader failed, from its text; and the tables that exist. The text is not
    kept: only ``capture`` writes it (kube_proxy_nft). A document that does not read is a warning, its table
    not read, as kube_proxy_nft says of one that is not JSON at all."""
    from svctrace.model.nft import NftRuleset
    from svctrace.parsers.nft_json import parse_nft_json

    tables: list[NftTable] = []
    found: list[str] = []
    for family, run, read in runs:
        if run.stdout is None:
            _not_read(family, run, where, warnings)
            continue
        try:
            ruleset = read() if run.followed else parse_nft_json(run.stdout, source)
        except InputError as exc:
            said = re.sub(rf"^{re.escape(source)}(?::(\d+))?: ", lambda m: f"line {m[1]}: " if m[1] else "",
                          exc.message)
            warnings.append(f"nft -j list table {family} kube-proxy{where} printed something that is not JSON "
                            f"({said})")
            continue
        tables += ruleset.tables
        found.append(f"{family} kube-proxy")
    return NftRuleset(tuple(tables), source), tuple(found)


def meta_json(node_name: str | None, sysctls: Mapping[str, str | None], decision: BackendDecision | None) -> str:
    """node/meta.json of a live read: the node's name, its sysctls and the iptables backend decision."""
    doc: dict[str, Any] = {"sysctls": {k: v for k, v in sysctls.items() if v is not None}}
    if node_name:
        doc["nodeName"] = node_name
    if decision is not None and decision.backend is not None:
        doc["iptablesBackend"] = decision.backend
        doc["iptablesBackendReason"] = decision.reason
    return json.dumps(doc, indent=1) + "\n"
