"""Prerequisite checks shared by the backends: each returns one line naming the problem and the fix.

Why separate: the hook refuses to start on any of these, and an operator should see every problem
at once (not fix them one failed start at a time), so checks return lines instead of raising.
"""

from __future__ import annotations

import ipaddress
import os
import platform
import shutil
import socket
from pathlib import Path

from controller.core.model import IPAddress

CAP_NET_ADMIN = 12


def capability_problem() -> str | None:
    """Not root / no CAP_NET_ADMIN."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                if int(line.split()[1], 16) >> CAP_NET_ADMIN & 1:
                    return None
                break
    except (OSError, ValueError):
        if os.geteuid() == 0:
            return None
    return "not running as root (CAP_NET_ADMIN missing): run the node hook as root"


def interface_problem(interface: str) -> str | None:
    """The cluster interface is absent in this network namespace."""
    try:
        socket.if_nametoindex(interface)
    except OSError:
        return f"interface {interface} does not exist here: create it or fix the cluster's interface"
    return None


def vip_problem(vip: IPAddress, interface: str) -> str | None:
    """The VIP is not a local address (sockets could not accept its traffic)."""
    family = socket.AF_INET6 if isinstance(vip, ipaddress.IPv6Address) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((str(vip), 0))
    except OSError:
        plen = 128 if family == socket.AF_INET6 else 32
        return f"VIP {vip} is not configured on this host: ip addr add {vip}/{plen} dev {interface}"
    return None


def kernel_release() -> tuple[int, int]:
    """(major, minor) of the running kernel, e.g. (6, 1)."""
    parts = platform.release().split(".")
    try:
        return int(parts[0]), int(parts[1].split("-")[0])
    except (IndexError, ValueError):
        return (0, 0)


def _listed(proc_file: str, name: str) -> bool:
    try:
        return name in Path(proc_file).read_text().split()
    except OSError:
        return False


def _module_file_exists(module: str) -> bool:
    base = Path("/lib/modules") / platform.release()
    for index in ("modules.dep", "modules.builtin"):
        try:
            text = (base / index).read_text()
        except OSError:
            continue
        if f"/{module}.ko" in text:
            return True
    return False


def xt_extension_problem(kind: str, name: str, module: str) -> str | None:
    """An ip_tables match/target (``kind`` = matches/targets) neither registered nor loadable."""
    if _listed(f"/proc/net/ip_tables_{kind}", name) or _module_file_exists(module):
        return None
    return f"kernel has no {name} {kind[:-1]} (module {module} not loaded or absent): modprobe {module}"


def iptables_is_nft() -> bool:
    """Whether `iptables` on PATH is the nf_tables variant (Debian's default since 10)."""
    path = shutil.which("iptables")
    return path is not None and "nft" in os.path.basename(os.path.realpath(path))
