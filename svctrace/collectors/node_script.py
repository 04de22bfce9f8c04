"""The read-only shell script a collector pod runs on a node: the one list of what a remote read runs.

kube-proxy's own image (distroless-iptables: dash as ``sh``, iptables and ip6tables in both backends,
nft, ipset, cat, grep, sleep, wc; no ``ip``, ``ipvsadm`` or ``conntrack``) is on every node, so the
script uses only POSIX sh, those tools when present, and the kernel's own files where a tool is missing
(``/proc/net/ip_vs``, ``/proc/net/fib_trie``, ``/proc/net/if_inet6``, ``/sys/class/net``,
``/proc/net/nf_conntrack``). Every command only reads: ``*-save``, ``nft -j list table``, ``ipset save``,
``ipvsadm -Sn``, ``conntrack -L``, ``ip -j addr``, ``cat``/``grep`` of /proc and /sys. The legacy backend's
save runs only for tables the kernel already holds (asking for another would create it), ``ipvsadm`` only
where IPVS is in use (it may load the ip_vs module). :data:`PROGRAMS` lists every program it may run;
tests/unit/test_remote_script.py checks it against packaging/node-collector/tools.txt and the script.

What it prints is a stream of records parsed by svctrace.parsers.collector_output (the token makes the
markers unforgeable by the output they frame)::

    <token> B <name>\\n<what the command printed>\\n<token> E <exit status> <name>\\n
    <token> B <name>!\\n<what it printed on stderr>\\n<token> E 0 <name>!\\n      (only when it printed any)
    <token> M <program>\\n       the program is not in the image
    <token> F <fact>\\n          a fact (``ip_vs``: /proc/net/ip_vs exists)
    <token> Z\\n                 the end
"""

from __future__ import annotations

import shlex

from svctrace.collectors._probe import SYSCTLS
from svctrace.parsers import collector_output as out
from svctrace.parsers.node_read import ALL_TABLES, NFT_FAMILIES, SAVE_COMMANDS

# Every program the script may run besides the shell's builtins, by what it is for. The ones in the
# first group are in every image svctrace supports (kube-proxy's, svctrace's own, any Debian).
SHELL_TOOLS = ("sh", "cat", "grep", "sleep")
PROGRAMS = (
    *sorted({command for commands in SAVE_COMMANDS.values() for command in commands.values()}),
    "nft", "ipset", "ipvsadm", "conntrack", "ip",
)

_PRELUDE = r"""T=@TOKEN@
have() { command -v "$1" >/dev/null 2>&1; }
rec() {
  n=$1; shift
  printf '%s B %s\n' "$T" "$n"
  { e=$("$@" 2>&1 1>&3 3>&-); r=$?; } 3>&1
  printf '\n%s E %s %s\n' "$T" "$r" "$n"
  [ -z "$e" ] || printf '%s B %s!\n%s\n%s E 0 %s!\n' "$T" "$n" "$e" "$T" "$n"
}
miss() { printf '%s M %s\n' "$T" "$1"; }
fact() { printf '%s F %s\n' "$T" "$1"; }
if have cat; then rd() { cat "$1"; }; else
  rd() { while IFS= read -r l || [ -n "$l" ]; do printf '%s\n' "$l"; done < "$1"; }
fi
links() {
  for d in /sys/class/net/*; do
    [ -r "$d/ifindex" ] || continue
    read -r i < "$d/ifindex"; read -r o < "$d/operstate"; read -r t < "$d/type"
    m=; if [ -e "$d/master" ]; then m=$(cd "$d/master" 2>/dev/null && pwd -P); m=${m##*/}; fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$i" "${d##*/}" "$o" "$t" "$m"
  done
}
"""


def _save_lines(backend: str, tables: tuple[str, ...]) -> list[str]:
    lines: list[str] = []
    for family, command in SAVE_COMMANDS[backend].items():
        names = f"/proc/net/{'ip6' if family == 6 else 'ip'}_tables_names"
        body: list[str] = []
        if tables == ALL_TABLES:
            run = f"rec {shlex.quote(out.save_section(backend, family, '*'))} {command}"
            body.append(f"  grep -q . {names} 2>/dev/null && {run}" if backend == "legacy" else f"  {run}")
        else:
            for table in tables:
                run = f"rec {shlex.quote(out.save_section(backend, family, table))} {command} -t {table}"
                # -t on the legacy backend would create a table the kernel does not hold yet
                body.append(f"  grep -qx {table} {names} 2>/dev/null && {run}" if backend == "legacy"
                            else f"  {run}")
        lines += [f"if have {command}; then", *body, f"else miss {command}; fi"]
    return lines


def script(token: str, tables: tuple[str, ...] = ALL_TABLES) -> str:
    """The script (POSIX sh) that reads one node; ``tables``: the iptables tables to save (default: all)."""
    if not out.valid_token(token):
        raise ValueError(f"not a collector token: {token!r}")
    for table in tables:
        if table != "*" and not table.isalnum():
            raise ValueError(f"not an iptables table name: {table!r}")
    lines = [_PRELUDE.replace("@TOKEN@", token).rstrip("\n")]
    lines.append(f"rec {out.HOSTNAME} rd /proc/sys/kernel/hostname")
    for key in SYSCTLS:
        path = "/proc/sys/" + key.replace(".", "/")
        lines.append(f"[ -r {path} ] && rec {shlex.quote(out.sysctl_section(key))} rd {path}")
    for family in (4, 6):
        names = f"/proc/net/{'ip6' if family == 6 else 'ip'}_tables_names"
        lines.append(f"[ -r {names} ] && rec {shlex.quote(out.legacy_tables_section(family))} rd {names}")
    lines.append(f"rec {out.LINKS} links")
    lines += [
        f"if have ip; then rec {out.IP_ADDR} ip -j addr",
        f"else miss ip; rec {out.FIB_TRIE} rd /proc/net/fib_trie; rec {out.ROUTE} rd /proc/net/route",
        f"  [ -r /proc/net/if_inet6 ] && rec {out.IF_INET6} rd /proc/net/if_inet6; fi",
    ]
    lines += _save_lines("legacy", tables) + _save_lines("nf_tables", tables)
    nft = [f"  rec {shlex.quote(out.nft_section(family))} nft -j list table {family} kube-proxy"
           for family in NFT_FAMILIES]
    lines += ["if have nft; then", *nft, "else miss nft; fi"]
    # IPVS only where the node shows it: ipvsadm may load the ip_vs module elsewhere.
    lines += [
        f"if [ -e /proc/net/ip_vs ]; then fact {out.FACT_IP_VS}; fi",
        f"if [ -e /proc/net/ip_vs ] || [ -e /sys/class/net/{out.IPVS_INTERFACE} ]; then",
        f"  if have ipvsadm; then rec {out.IPVSADM} ipvsadm -Sn",
        f"  else miss ipvsadm; [ -e /proc/net/ip_vs ] && rec {out.IP_VS} rd /proc/net/ip_vs; fi",
        f"  if have ipset; then rec {out.IPSET} ipset save; else miss ipset; fi",
        "fi",
        "if have conntrack; then",
        *[f"  rec {shlex.quote(out.conntrack_section(f))} conntrack -L -f {f} -p udp -o extended"
          for f in ("ipv4", "ipv6")],
        "else miss conntrack",
        f"  [ -r /proc/net/nf_conntrack ] && rec {out.NF_CONNTRACK} grep -E '^ipv[46] +[0-9]+ udp ' "
        "/proc/net/nf_conntrack; fi",
        "printf '%s Z\\n' \"$T\"",
    ]
    return "\n".join(lines) + "\n"
