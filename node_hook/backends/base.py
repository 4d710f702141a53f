"""The narrow interface every kernel backend implements.

The hook only ever asks a backend to (1) check it can work here, (2) install the cluster's rules,
(3) say which buckets the kernel accepts now, (4) grant or revoke one bucket, and (5) remove
everything. All operations are idempotent so that a restarted hook can simply re-assert state.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable

log = logging.getLogger("clusterip.hook")


class BucketBackend(abc.ABC):
    """Tells one kernel which hash buckets of one cluster this host accepts."""

    #: The configuration name of the backend ("clusterip", "xt_cluster", "nftables", "memory").
    name: str = "abstract"
    #: Can the kernel rules keep a bucket for already tracked connections only (docs/drain.md)?
    can_drain: bool = False
    _warned_drain = False

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

    def draining(self) -> frozenset[int]:
        """Buckets the kernel keeps for tracked connections only, read back (none without drain)."""
        return frozenset()

    def apply_drain(
        self, wanted: Iterable[int], draining: Iterable[int] = (), quiet: Iterable[int] = ()
    ) -> tuple[frozenset[int], frozenset[int]]:
        """Converge the kernel to three roles at once; return (held, draining) as read back.

        ``wanted``: accept new connections and tracked ones (the map's owner). ``draining``: accept
        packets of connections this host already tracks, nothing new. ``quiet`` (a subset of
        ``wanted`` that another host drains): drop mid-stream packets this host does not track
        instead of answering them with a reset, which would kill the drainer's sessions. Outside
        ``quiet``, an owned bucket lets such packets reach the TCP stack, which resets them, so the
        clients of a failed host reconnect at once. Plain :meth:`apply` clears draining and quiet.

        This default is for backends that cannot drain (CLUSTERIP): draining buckets are dropped,
        a plain move that cuts their sessions, said once in the log.
        """
        if frozenset(draining) and not self._warned_drain:
            self._warned_drain = True
            log.warning("the %s backend cannot drain: planned moves cut established sessions "
                        "(use nftables or xt_cluster to keep them, docs/drain.md)", self.name)
        return self.apply(wanted), frozenset()

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
