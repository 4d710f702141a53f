"""What draining asks of one hook: the map's three roles for this host, and the session count.

Kept out of agent.py so the apply loop only gains two calls: ``Roles.of(map, host)`` says which
buckets the kernel must accept new connections of, keep for tracked connections only, and hush
(owned while another host drains them); ``SessionCounter.count`` says how many connections each
draining bucket still has, which the controller waits for to reach 0 (docs/drain.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from controller.core.conntrack import ConntrackError
from controller.core.model import BucketMap, ClusterSpec
from node_hook import conntrack
from node_hook.backends.base import BucketBackend

log = logging.getLogger("clusterip.hook")


@dataclass(frozen=True)
class Roles:
    """The buckets this host drains, and the owned ones another host drains (quiet)."""

    draining: frozenset[int] = frozenset()
    quiet: frozenset[int] = frozenset()

    @staticmethod
    def of(bucket_map: BucketMap, host: str) -> Roles:
        return Roles(bucket_map.draining_on(host), bucket_map.quiet_on(host))

    def within(self, wanted: frozenset[int], draining_now: frozenset[int]) -> Roles:
        """While the map may be stale: start no new drain and hush only what is still owned."""
        return Roles(self.draining & draining_now, self.quiet & wanted)


class SessionCounter:
    """Counts tracked connections of draining buckets; a failure means "unknown", logged once."""

    def __init__(self, spec: ClusterSpec, backend: BucketBackend) -> None:
        self.spec = spec
        self.backend = backend
        self._problem = ""

    def count(self, draining: frozenset[int]) -> Mapping[int, int]:
        if not draining:
            self._problem = ""
            return {}
        fake = getattr(self.backend, "sessions", None)  # the memory backend's stand-in for conntrack
        if isinstance(fake, dict):
            return {b: int(fake.get(b, 0)) for b in draining}
        try:
            counts = conntrack.tracked_sessions(self.spec, draining)
        except ConntrackError as exc:
            if str(exc) != self._problem:
                log.warning("cannot count the sessions of draining buckets (the drain lasts until "
                            "failback.max_drain_s): %s", exc)
                self._problem = str(exc)
            return {}
        self._problem = ""
        return counts
