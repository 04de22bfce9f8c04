"""What ``svctrace trace`` simulates and what it reports: one new connection and its possible outcomes.

The same shapes serve every proxy mode; each mode's tracer (svctrace/trace/) fills them in.
Conventions (docs/tracer.md):

* ``Outcome.probability`` is the share of *new clients* (no session-affinity entry yet) that end in
  this outcome; the probabilities of a result sum to 1.
* Session affinity (``-m recent --rcheck``): outcomes reachable only by a client that is already
  pinned to an endpoint carry ``probability`` 0.0, ``affinity`` = the pin (recent list name) and a note
  "only for a client already pinned to ...". They are listed so nothing reachable is hidden.
* A match the tracer cannot decide from the snapshot (an unknown module, ``physdev`` without bridge
  knowledge, an ipset whose members were not collected) is followed both ways. An outcome reached only
  under such an assumption lists it in ``conditions`` ("if it matches: ...", "if it does not match:
  ..."), is ``uncertain``, and its ``probability`` is None: the snapshot cannot say how often the
  condition holds (``conditional_probability`` is its share when it does). Where both ways end alike
  the assumption is dropped. The known probabilities of a result sum to 1 when nothing is uncertain.
"""

from __future__ import annotations

import ipaddress

from svctrace.errors import UsageError
from svctrace.record import record

ORIGINS = ("pod", "node", "external")
PROTOCOLS = ("tcp", "udp", "sctp")
VERDICTS = ("DNAT", "ACCEPT", "REJECT", "DROP")


def _ip(value: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise UsageError(f"{what} {value!r} is not an IP address",
                         "give a literal IPv4 or IPv6 address, e.g. 10.96.0.10") from None


@record
class Packet:
    """The first packet of one new connection, as it enters the node's rules."""

    src: str
    dst: str
    dport: int
    protocol: str = "tcp"
    sport: int = 40000
    origin: str = "pod"  # pod | node | external: where the packet enters the node's netfilter hooks
    in_interface: str | None = None  # None: unknown (rules matching -i are then uncertain)

    def __post_init__(self) -> None:
        src = _ip(self.src, "source")
        dst = _ip(self.dst, "destination")
        if src.version != dst.version:
            raise UsageError(f"source {self.src} and destination {self.dst} are different IP families",
                             "trace an IPv4 packet against IPv4 rules or an IPv6 one against IPv6 rules")
        # Store the canonical spelling so 010.0.0.1-style input cannot make rules fail to match.
        object.__setattr__(self, "src", str(src))
        object.__setattr__(self, "dst", str(dst))
        object.__setattr__(self, "protocol", self.protocol.lower())
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"protocol {self.protocol!r} is not supported",
                             f"use one of {', '.join(PROTOCOLS)}")
        for name, port in (("destination port", self.dport), ("source port", self.sport)):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise UsageError(f"{name} {port!r} is out of range", "use a port between 1 and 65535")
        if self.origin not in ORIGINS:
            raise UsageError(f"packet origin {self.origin!r} is not known",
                             f"use one of {', '.join(ORIGINS)}")

    @property
    def family(self) -> int:
        return 6 if ":" in self.dst else 4

    @property
    def destination(self) -> str:
        return format_address(self.dst, self.dport)


def format_address(ip: str, port: int | None) -> str:
    """``ip:port`` with IPv6 addresses bracketed; just the IP when there is no port."""
    if port is None:
        return ip
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@record
class TraceStep:
    """One rule (or chain policy) the packet went through, and what it did there."""

    table: str
    chain: str
    rule_index: int | None  # 1-based position in the chain; None for a chain policy or a hook
    rule_text: str
    action: str  # in words: "jump", "goto", "mark 0x4000", "DNAT to 10.0.0.1:80", "policy ACCEPT", ...
    target: str | None = None  # the chain a jump or goto enters


@record
class Outcome:
    """One way the connection can end."""

    verdict: str  # DNAT | ACCEPT | REJECT | DROP
    destination: str | None  # "ip:port" after DNAT; None when no rule rewrote it (and for REJECT/DROP)
    # Share of new clients; 0.0 for affinity-only outcomes; None when it rests on ``conditions``.
    probability: float | None
    masquerade: bool  # the source address is rewritten (MASQUERADE/SNAT) on the way out
    uncertain: bool = False  # a match on this path could not be decided, or a step was not modelled
    path: tuple[TraceStep, ...] = ()
    notes: tuple[str, ...] = ()
    affinity: str | None = None  # recent-list name this outcome is conditional on (session affinity)
    conditions: tuple[str, ...] = ()  # what must hold for it ("if it matches: -m physdev ...")
    conditional_probability: float | None = None  # its share when the conditions hold
    # DNAT to an endpoint whose address the snapshot does not hold (a pasted fragment without its KUBE-SEP
    # chain): the chain that would say it; ``destination`` is then None.
    via: str | None = None

    @property
    def share(self) -> float:
        """The probability, or the conditional one when the probability is unknown (for sorting)."""
        if self.probability is not None:
            return self.probability
        return self.conditional_probability or 0.0


@record
class KubeProxyTestView:
    """What kube-proxy's unit-test tracer would report: its ``output`` list and ``masq`` flag."""

    outputs: tuple[str, ...]
    masq: bool

    @property
    def output(self) -> str:
        return ", ".join(self.outputs)


@record
class TraceResult:
    packet: Packet
    mode: str  # iptables | ipvs | nftables
    outcomes: tuple[Outcome, ...]
    warnings: tuple[str, ...] = ()
    semantics: str = "kernel"  # kernel | kube-proxy-test
    kube_proxy_test: KubeProxyTestView | None = None  # set only with kube-proxy test semantics

    @property
    def total_probability(self) -> float:
        """The sum of the known probabilities (1 when no outcome rests on a condition)."""
        return sum(o.probability for o in self.outcomes if o.probability is not None)

    @property
    def certain(self) -> bool:
        """Every outcome's probability is known."""
        return all(o.probability is not None for o in self.outcomes)


@record
class TraceOptions:
    """How to trace; the defaults follow the kernel."""

    # Reproduce kube-proxy's own unit-test tracer instead of the kernel (docs/tracer.md, "kube-proxy
    # test semantics"): used to check svctrace against kube-proxy's expectations.
    kube_proxy_test_semantics: bool = False
    mode: str | None = None  # force a proxy mode; None: from the snapshot
    out_interface: str | None = None  # where the node routes the packet out, if known (rules with -o)
    # net.ipv4.conf.all.route_localnet: may 127.0.0.0/8 cross a non-loopback interface? None: unknown,
    # assumed 1 as kube-proxy sets it for localhost NodePorts (with a warning when it matters).
    route_localnet: bool | None = None
    max_depth: int = 64  # nested jumps before a branch is abandoned (a loop in hand-written rules)
    max_states: int = 4096  # live branches kept at once; beyond it the least likely are dropped
    # Rules evaluated (per branch) in one trace before jumps are no longer followed: chains that each jump
    # many times into the next cost their widths multiplied (20 rules x 8 chains: 20^8), merged states or not.
    max_steps: int = 50_000
    masquerade_mark: int = 0x4000  # kube-proxy's --iptables-masquerade-bit, used if KUBE-MARK-MASQ is absent
    # False when the snapshot holds none of the node's addresses: whether an address is LOCAL (addrtype, fib)
    # is then not known for any but loopback, and such matches are followed both ways.
    node_addresses_known: bool = True
