"""What a probe is aimed at: one host's sshd address. Any address, not only loopback."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from controller.probes.errors import ProbeConfigError


@dataclass(frozen=True)
class ProbeTarget:
    """One host to probe. ``address`` is an IP literal or a name resolved once by ``resolved()``."""

    host_id: str
    address: str
    port: int = 22

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ProbeConfigError(f"host {self.host_id}: ssh port {self.port} is not in 1..65535: fix ssh_port")

    @property
    def label(self) -> str:
        """``addr:port`` as it appears in reasons, ``[addr]:port`` for IPv6."""
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    def resolved(self) -> tuple[socket.AddressFamily, str]:
        """Family and IP literal; names are resolved here (blocking, once) so probes never wait on DNS."""
        try:
            return _family(ipaddress.ip_address(self.address)), self.address
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(self.address, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ProbeConfigError(
                f"host {self.host_id}: cannot resolve ssh_host {self.address!r} ({exc}): use an IP address"
            ) from exc
        family, _, _, _, sockaddr = infos[0]
        return family, str(sockaddr[0])


def _family(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> socket.AddressFamily:
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET
