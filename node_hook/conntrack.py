"""The hook's access to conntrack: the TCP pickup switch, and the per-bucket count of a draining host.

Draining (docs/drain.md) relies on conntrack telling a connection this host already tracks from a
packet in the middle of a connection it never saw. With ``nf_conntrack_tcp_loose=1`` (the kernel's
default) conntrack would adopt such a packet as a new ESTABLISHED entry, and the new owner of a
draining bucket would accept (and reset) the old owner's sessions. The switch is per network
namespace and only exists once nf_conntrack is loaded (the nftables ``ct`` rules load it).

Counting reads ``/proc/net/nf_conntrack`` in-process when the kernel has it
(CONFIG_NF_CONNTRACK_PROCFS), else runs ``conntrack -L -o extended`` (Debian package ``conntrack``)
with a timeout; the text is parsed strictly by controller.core.conntrack.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from controller.core.conntrack import ConntrackError, count_sessions, parse
from controller.core.errors import BackendError
from controller.core.model import ClusterSpec

TCP_LOOSE = Path("/proc/sys/net/netfilter/nf_conntrack_tcp_loose")
PROC_TABLE = Path("/proc/net/nf_conntrack")
#: Largest listing read (about 4 million entries): beyond it the count is refused, not truncated.
MAX_LISTING_BYTES = 1 << 30
LIST_TIMEOUT_S = 10.0


def tcp_loose() -> int | None:
    """The namespace's ``nf_conntrack_tcp_loose`` (None: nf_conntrack is not loaded here)."""
    try:
        return int(TCP_LOOSE.read_text().strip())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {TCP_LOOSE}: {exc}; check /proc is mounted") from None


def ensure_tcp_loose_off() -> None:
    """Set ``nf_conntrack_tcp_loose=0`` here and check it took; one-line BackendError if not."""
    current = tcp_loose()
    if current is None:
        raise BackendError(f"{TCP_LOOSE} does not exist: nf_conntrack is not loaded (modprobe nf_conntrack)")
    if current == 0:
        return
    try:
        TCP_LOOSE.write_text("0\n")
    except OSError as exc:
        raise BackendError(
            f"cannot set {TCP_LOOSE} to 0 ({exc.strerror}): run the hook as root in the cluster's network "
            "namespace, or set net.netfilter.nf_conntrack_tcp_loose=0 with sysctl"
        ) from None
    if tcp_loose() != 0:
        raise BackendError(f"{TCP_LOOSE} stays {tcp_loose()} after writing 0: something resets it; "
                           "set net.netfilter.nf_conntrack_tcp_loose=0 persistently")


def read_listing() -> str:
    """The conntrack table as text, in-process from /proc when possible."""
    try:
        with PROC_TABLE.open("rb") as file:
            data = file.read(MAX_LISTING_BYTES + 1)
    except FileNotFoundError:
        return _conntrack_tool()
    except OSError as exc:
        raise ConntrackError(f"cannot read {PROC_TABLE}: {exc.strerror}") from None
    if len(data) > MAX_LISTING_BYTES:
        raise ConntrackError(f"{PROC_TABLE} is larger than {MAX_LISTING_BYTES} bytes: not counting")
    return data.decode("ascii", errors="replace")


def _conntrack_tool() -> str:
    tool = shutil.which("conntrack")
    if tool is None:
        raise ConntrackError("no /proc/net/nf_conntrack and no conntrack tool: apt-get install conntrack")
    try:
        done = subprocess.run([tool, "-L", "-o", "extended"], capture_output=True, timeout=LIST_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConntrackError(f"conntrack -L failed: {exc}") from None
    if done.returncode != 0:
        raise ConntrackError(f"conntrack -L failed: {done.stderr.decode(errors='replace').strip()[:200]}")
    if len(done.stdout) > MAX_LISTING_BYTES:
        raise ConntrackError(f"conntrack -L printed more than {MAX_LISTING_BYTES} bytes: not counting")
    return done.stdout.decode("ascii", errors="replace")


def tracked_sessions(spec: ClusterSpec, buckets: Iterable[int]) -> Mapping[int, int]:
    """Live connections to the service this host's conntrack tracks, per bucket of ``buckets``."""
    wanted = frozenset(buckets)
    if not wanted:
        return {}
    return count_sessions(parse(read_listing()), spec, wanted)
