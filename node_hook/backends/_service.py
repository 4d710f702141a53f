"""What of the VIP's traffic is "the service" (balanced by bucket) and what happens to the rest.

Policy, identical for every backend (docs/backends.md):

* The service is ``protocol`` (+ ``ports`` if given). Its packets are balanced: the host owning the
  source's bucket accepts them, every other host drops them.
* With ``protocol: all`` every packet to the VIP is the service.
* Otherwise, other traffic to the VIP on the cluster interface is dropped on every host: the VIP is
  the service's address, nothing else. Exception: ICMP errors (destination unreachable incl.
  fragmentation needed, time exceeded, parameter problem; for IPv6 also packet too big) pass on every
  host, because they come from routers (so their source says nothing about the client's bucket) and
  only the host that holds the socket acts on them; dropping them would break path-MTU discovery.
  For IPv6, neighbour discovery addressed to the VIP passes too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from controller.core.model import ClusterSpec

Protocol = Literal["tcp", "udp", "all"]

ICMP4_ERRORS = ("destination-unreachable", "time-exceeded", "parameter-problem")
ICMP6_PASS = (
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
)
#: iptables --icmp-type names for the same ICMPv4 errors.
IPT_ICMP4_ERRORS = ("destination-unreachable", "time-exceeded", "parameter-problem")


@dataclass(frozen=True)
class Service:
    """The balanced part of the VIP's traffic."""

    protocol: Protocol
    ports: tuple[int, ...]
    ipv6: bool

    @staticmethod
    def of(spec: ClusterSpec) -> Service:
        if spec.ports and spec.protocol == "all":
            raise ValueError("ports need protocol tcp or udp, but protocol is all")
        return Service(spec.protocol, tuple(spec.ports), spec.vip.version == 6)

    @property
    def everything(self) -> bool:
        """True when every packet to the VIP is balanced (nothing else to decide)."""
        return self.protocol == "all"

    def nft_match(self) -> str:
        """nft expression selecting the service ('' for protocol all)."""
        if self.everything:
            return ""
        if not self.ports:
            return f"meta l4proto {self.protocol}"
        return f"{self.protocol} dport {{ {', '.join(str(p) for p in self.ports)} }}"

    def nft_passthrough(self) -> str:
        """nft expression for the non-service VIP traffic every host accepts (ICMP errors, ND)."""
        if self.ipv6:
            return f"icmpv6 type {{ {', '.join(ICMP6_PASS)} }}"
        return f"icmp type {{ {', '.join(ICMP4_ERRORS)} }}"


def fingerprint(*parts: object) -> str:
    """Short digest of the rules we would install; stored in rule comments so a restarted hook can
    tell "our rules, unchanged" (adopt, write nothing) from "rules of another configuration"."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]
