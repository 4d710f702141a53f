"""Leader election among controller replicas, with a fencing znode.

Each replica creates an ephemeral sequential znode under ``/controllers/election``; the lowest
sequence leads. The leader's own znode path is its fencing token: every map write is a
transaction that first checks this znode exists (version 0), so a replica whose session expired —
and whose znode ZooKeeper therefore deleted — can never write, even if it still believes it leads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from kazoo.client import KazooClient, KazooState

from controller.core import zk_layout as layout
from controller.zk.client import mapped_errors

log = logging.getLogger("clusterip.election")


class LeaderElection:
    """Tracks whether this replica leads; call :meth:`refresh` from the controller's loop."""

    def __init__(self, client: KazooClient, controller_id: str, wake: threading.Event) -> None:
        self.client = client
        self.controller_id = controller_id
        self.wake = wake
        self.node: str | None = None
        self._session: int | None = None
        self.is_leader = False
        #: monotonic time this replica last became leader (None: not leading)
        self.leader_since: float | None = None
        self._watched: str | None = None
        self._recheck = True
        client.add_listener(self._on_state)

    def _on_state(self, state: str) -> None:
        if state != KazooState.CONNECTED:
            # Suspended or lost: stop writing at once; refresh() decides again after reconnecting.
            if self.is_leader:
                log.warning("leadership suspended: ZooKeeper connection %s", state.lower())
            self.is_leader = False
            self.leader_since = None
            self._watched = None  # a lost session takes its watches along: re-arm after reconnecting
            self._recheck = True
        self.wake.set()

    @property
    def fence_path(self) -> str | None:
        return f"{layout.ELECTION}/{self.node}" if self.node and self.is_leader else None

    def refresh(self) -> bool:
        """(Re)join the election if needed and find out whether this replica leads now."""
        if self.client.state != KazooState.CONNECTED:
            self.is_leader = False
            return False
        session = self.client.client_id[0] if self.client.client_id else None
        if self.is_leader and not self._recheck and self.node is not None and session == self._session:
            # A settled leader stays leader until its connection state changes (the listener then
            # clears is_leader) or a fenced write is rejected (recheck()): no round trip per cycle.
            return True
        with mapped_errors("leader election"):
            if self.node is None or session != self._session:
                self.client.ensure_path(layout.ELECTION)
                path = self.client.create(
                    f"{layout.ELECTION}/n_", self.controller_id.encode(), ephemeral=True, sequence=True
                )
                self.node = path.rsplit("/", 1)[1]
                self._session = session
            children = sorted(self.client.get_children(layout.ELECTION), key=lambda n: n[-10:])
            if self.node not in children:
                self.node = None  # our znode vanished (session expired and was re-created): rejoin
                self.is_leader = False
                self.wake.set()
                return False
            index = children.index(self.node)
            was = self.is_leader
            self._recheck = False
            self.is_leader = index == 0
            if not self.is_leader:
                predecessor = f"{layout.ELECTION}/{children[index - 1]}"
                if predecessor != self._watched:
                    # One watch per predecessor: re-arming it every cycle piled up watchers.
                    self._watched = predecessor
                    if self.client.exists(predecessor, watch=self._on_predecessor) is None:
                        self._watched = None
                        self.wake.set()
            else:
                self._watched = None
            if self.is_leader and not was:
                self.leader_since = time.monotonic()
                log.info("controller %s is now the leader (%s)", self.controller_id, self.node)
            elif not self.is_leader:
                self.leader_since = None
            if was and not self.is_leader:
                log.warning("controller %s lost the leadership", self.controller_id)
        return self.is_leader

    def recheck(self) -> None:
        """Verify the leadership with ZooKeeper on the next refresh (a fenced write was rejected)."""
        self._recheck = True

    def _on_predecessor(self, _event: object) -> None:
        self._watched = None
        self.wake.set()

    def resign(self, timeout_s: float = 1.0) -> None:
        """Step down at once; delete our znode if ZooKeeper answers within ``timeout_s``.

        Never blocks longer: with ZooKeeper unreachable a plain delete would wait for a reconnect
        forever, and a replica being stopped must stop. The session's end removes the znode anyway.
        """
        self.is_leader = False
        if self.node is not None:
            if self.client.state == KazooState.CONNECTED:
                with contextlib.suppress(Exception):
                    self.client.delete_async(f"{layout.ELECTION}/{self.node}").get(timeout=timeout_s)
            self.node = None

    def current_leader(self) -> str | None:
        try:
            children = sorted(self.client.get_children(layout.ELECTION), key=lambda n: n[-10:])
            if not children:
                return None
            data, _ = self.client.get(f"{layout.ELECTION}/{children[0]}")
            return bytes(data).decode(errors="replace")
        except Exception:
            return None
