"""The narrow interface every kernel backend implements.

The hook only ever asks a backend to (1) check it can work here, (2) install the cluster's rules,
(3) say which buckets the kernel accepts now, (4) grant or revoke one bucket, and (5) remove
everything. All operations are idempotent so that a restarted hook can simply re-assert state.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable


class BucketBackend(abc.ABC):
    """Tells one kernel which hash buckets of one cluster this host accepts."""

    #: The configuration name of the backend ("clusterip", "xt_cluster", "nftables", "memory").
    name: str = "abstract"

    @abc.abstractmethod
    def check_prerequisites(self) -> list[str]:
        """One line per problem that prevents this backend from working here (empty: fine)."""

    @abc.abstractmethod
    def install(self, initial: frozenset[int] = frozenset()) -> None:
        """Install the cluster's rules, MAC membership and ARP handling; all or nothing.

        If the rules already exist they are adopted as they are: the buckets the kernel holds are
        never reset by a (re)install, ``initial`` is used only when nothing was installed before.
        """

    @abc.abstractmethod
    def held(self) -> frozenset[int]:
        """The buckets the kernel accepts right now, read back from the kernel itself."""

    @abc.abstractmethod
    def grant(self, bucket: int) -> None:
        """Make the kernel accept ``bucket``; a no-op when it already does."""

    @abc.abstractmethod
    def revoke(self, bucket: int) -> None:
        """Make the kernel drop ``bucket``; a no-op when it already does not hold it."""

    @abc.abstractmethod
    def remove(self) -> None:
        """Remove every rule this backend installed; a no-op when nothing is installed."""

    def apply(self, wanted: Iterable[int]) -> frozenset[int]:
        """Converge the kernel to exactly ``wanted``: revokes first, then grants; return the read-back.

        Backends that can swap the whole set atomically (xt_cluster's nodemask) override this.
        """
        want = frozenset(wanted)
        have = self.held()
        for bucket in sorted(have - want):
            self.revoke(bucket)
        for bucket in sorted(want - have):
            self.grant(bucket)
        return self.held()

    def describe_changes(self, wanted: Iterable[int]) -> list[str]:
        """What :meth:`apply` would do, one line per change, for ``--dry-run``."""
        want = frozenset(wanted)
        have = self.held()
        lines = [f"revoke bucket {b}" for b in sorted(have - want)]
        lines += [f"grant bucket {b}" for b in sorted(want - have)]
        return lines

    # ------------------------------------------------------------------ dead-man switch (docs/failure-modes.md)

    #: E: how long the kernel keeps accepting the cluster's traffic after the hook's last refresh
    #: (controller/core/deadman.py derives it from the session timeout); None: no dead-man switch.
    deadman_s: float | None = None

    def arm_alive(self) -> None:
        """(Re)start the kernel's timer unconditionally; only after the map was applied and published.

        Backends without a dead-man switch do nothing.
        """
        return None

    def refresh_alive(self) -> bool:
        """Extend the timer if it has not run out; False if it had (the kernel stopped accepting).

        Never revives a lapsed timer where the kernel can tell (nftables); where it cannot
        (xt_recent) the hook's own clock guards the refresh.
        """
        return True

    def disarm_alive(self) -> None:
        """Stop accepting now (the timer is cleared); a no-op without a dead-man switch."""
        return None
