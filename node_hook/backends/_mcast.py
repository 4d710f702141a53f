"""Join the cluster's multicast MAC on the interface, in-process (the ``ip maddr add`` ioctl).

Why: frames to the VIP carry the cluster MAC; the NIC delivers them only if that MAC is in its
multicast filter. ``ip maddr add`` is one SIOCADDMULTI ioctl, so we issue it ourselves instead of
forking. It adds a *global* membership (dev_mc_add_global), which is idempotent: a second add is a
no-op, and it lasts until SIOCDELMULTI or the interface goes away. Both act on the calling
process's network namespace, like everything else in the backends.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
from pathlib import Path

from controller.core.errors import BackendError

SIOCADDMULTI = 0x8931
SIOCDELMULTI = 0x8932
DEV_MCAST = Path("/proc/net/dev_mcast")


def mac_bytes(mac: str) -> bytes:
    """``01:00:5e:00:01:64`` -> 6 bytes; ValueError for anything else."""
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"{mac!r} is not a MAC address: write six hex pairs with colons")
    return bytes(int(p, 16) for p in parts)


def _ifreq(interface: str, mac: str) -> bytes:
    # struct ifreq { char ifr_name[16]; struct sockaddr ifr_hwaddr; } with sa_family AF_UNSPEC (the
    # kernel refuses anything else for SIOC{ADD,DEL}MULTI) and the MAC in sa_data.
    return struct.pack("16sH14s", interface.encode(), socket.AF_UNSPEC, mac_bytes(mac))


def _ioctl(request: int, interface: str, mac: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), request, _ifreq(interface, mac))


def joined(interface: str, mac: str) -> bool:
    """Whether ``mac`` is in the interface's multicast list (any user: ip maddr, CLUSTERIP, ...)."""
    wanted = mac_bytes(mac).hex()
    try:
        text = DEV_MCAST.read_text()
    except OSError as exc:
        raise BackendError(f"cannot read {DEV_MCAST}: {exc.strerror}; is /proc mounted?") from None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[1] == interface and fields[4].lower() == wanted:
            return True
    return False


def join(interface: str, mac: str) -> None:
    """Add the global membership (no-op if present)."""
    try:
        _ioctl(SIOCADDMULTI, interface, mac)
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise BackendError(f"interface {interface} does not exist: check the cluster's interface") from None
        raise BackendError(
            f"cannot join multicast MAC {mac} on {interface}: {exc.strerror}; run as root (CAP_NET_ADMIN)"
        ) from None


def leave(interface: str, mac: str) -> None:
    """Drop the global membership (no-op if absent or the interface is gone)."""
    try:
        _ioctl(SIOCDELMULTI, interface, mac)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENODEV):
            return
        raise BackendError(f"cannot leave multicast MAC {mac} on {interface}: {exc.strerror}") from None
