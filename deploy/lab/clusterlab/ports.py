"""Free TCP ports on the loopback address for lab servers (ZooKeeper, sshd).

Ports are found by letting the kernel pick them (bind to port 0) instead of guessing, so tests never
collide with a fixed port someone else uses. All sockets of one request are held open together, so
the ports returned are distinct from each other. Between closing them and the server binding there
is a small window in which another process may take a port; callers that care retry with new ports
when the server reports "Address already in use".
"""

from __future__ import annotations

import socket
from contextlib import ExitStack

LOOPBACK = "127.0.0.1"


def free_tcp_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct TCP ports that were free on ``host`` a moment ago."""
    if count < 1:
        raise ValueError(f"count must be at least 1 (got {count})")
    with ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports
