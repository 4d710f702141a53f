"""libnftables in-process (Debian's python3-nftables), with its errors mapped to BackendError.

Why in-process: bucket changes are on the failover path and a fork-bombed host cannot start `nft`.
One ``run`` call is one netlink batch, i.e. one kernel transaction: all of its commands apply or
none does. Listings use JSON output (never the text listing: nftables 1.0.6's text listing crashes
on some set declarations, and JSON is what we parse anyway).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from controller.core.errors import BackendError


def nft_available() -> str | None:
    """None if libnftables can be used here, else one line naming the fix."""
    try:
        import nftables  # noqa: F401
    except ImportError:
        return "python3-nftables is not importable: apt-get install python3-nftables libnftables1 (see deploy/setup.sh)"
    return None


class NftSession:
    """One libnftables context (not thread-safe by itself: calls are serialised by a lock)."""

    def __init__(self) -> None:
        try:
            import nftables
        except ImportError:
            raise BackendError(nft_available() or "python3-nftables is missing") from None
        try:
            self._ctx = nftables.Nftables()
        except OSError as exc:  # libnftables.so.1 absent
            raise BackendError(f"libnftables cannot be loaded ({exc}): apt-get install libnftables1") from None
        self._ctx.set_json_output(False)
        self._ctx.set_handle_output(False)
        self._lock = threading.Lock()

    def run(self, commands: str, what: str) -> None:
        """Apply ``commands`` (newline-separated nft commands) as one transaction."""
        with self._lock:
            self._ctx.set_json_output(False)
            rc, _, err = self._ctx.cmd(commands)
        if rc != 0:
            raise BackendError(f"{what} failed, nothing was changed: {_first_error(err)}")

    def try_run(self, commands: str) -> str | None:
        """Like :meth:`run` but returns the error text (None on success) for callers that expect some."""
        with self._lock:
            self._ctx.set_json_output(False)
            rc, _, err = self._ctx.cmd(commands)
        return None if rc == 0 else _first_error(err)

    def list_json(self, what: str) -> list[dict[str, Any]] | None:
        """``list <what>`` as the list of JSON objects (metainfo dropped); None if it does not exist."""
        with self._lock:
            self._ctx.set_json_output(True)
            try:
                rc, out, err = self._ctx.cmd(f"list {what}")
            finally:
                self._ctx.set_json_output(False)
        if rc != 0:
            if "No such file or directory" in err:
                return None
            raise BackendError(f"cannot list {what}: {_first_error(err)}")
        try:
            items = json.loads(out)["nftables"]
        except (ValueError, KeyError, TypeError):
            raise BackendError(f"libnftables returned unreadable JSON for {what}: upgrade nftables") from None
        return [item for item in items if "metainfo" not in item]


def _first_error(err: str) -> str:
    """libnftables prints an error line, the offending command and a caret line: keep the first two."""
    lines = [line.strip() for line in err.strip().splitlines() if line.strip() and set(line.strip()) - {"^", "~"}]
    return " | ".join(lines[:2]) if lines else "unknown libnftables error"
