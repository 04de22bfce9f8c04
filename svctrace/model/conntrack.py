"""Connection-tracking entries: what the kernel remembers about flows it has already NATed (stdlib only)."""

from __future__ import annotations

from svctrace.record import record


@record
class ConntrackEntry:
    """One conntrack flow: the original direction (as the client sent it) and the reply direction.

    After DNAT the reply tuple's source is the endpoint the flow is pinned to; later packets of the
    flow go there without passing kube-proxy's rules again.
    """

    protocol: str  # udp | tcp | sctp | icmp ... (lower case, as `conntrack -L` names it)
    src: str  # original direction
    dst: str
    sport: int | None
    dport: int | None
    reply_src: str  # reply direction: after DNAT, the endpoint
    reply_dst: str
    reply_sport: int | None
    reply_dport: int | None
    family: int = 4
    timeout: int | None = None  # seconds left
    state: str | None = None  # TCP state (ESTABLISHED, ...); None for UDP
    flags: tuple[str, ...] = ()  # UNREPLIED, ASSURED, ...
    mark: int | None = None
    zone: int | None = None

    @property
    def dnat(self) -> bool:
        """The reply comes from somewhere else than the original destination: the flow was DNATed."""
        return self.reply_src != self.dst

    def text(self) -> str:
        """The entry as `conntrack -L` prints it."""
        head = f"{self.protocol:<8} {_PROTO_NUMBERS.get(self.protocol, 0)} {self.timeout or 0}"
        if self.state:
            head += f" {self.state}"
        orig = f"src={self.src} dst={self.dst}" + _ports(self.sport, self.dport)
        reply = f"src={self.reply_src} dst={self.reply_dst}" + _ports(self.reply_sport, self.reply_dport)
        unreplied = " [UNREPLIED]" if "UNREPLIED" in self.flags else ""
        rest = "".join(f" [{f}]" for f in self.flags if f != "UNREPLIED")
        tail = (f" mark={self.mark}" if self.mark is not None else "") + (f" zone={self.zone}" if self.zone else "")
        return f"{head} {orig}{unreplied} {reply}{rest}{tail} use=1"


_PROTO_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132}


def _ports(sport: int | None, dport: int | None) -> str:
    return f" sport={sport} dport={dport}" if sport is not None and dport is not None else ""
