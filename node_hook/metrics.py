"""Prometheus metrics and /healthz, /readyz of the node hook (default 127.0.0.1:9465).

Fed by the agent's ``on_applied`` callback after every apply cycle; the map epoch comes from a
watch of its own on the map znode, so the lag between what the controller decided and what this
kernel applied is visible even while the apply loop is stuck.

* ``/healthz`` — liveness: 200 while the apply loop keeps cycling (it does so at least every
  ``resync_interval_s``, also without ZooKeeper); 503 when it stalled.
* ``/readyz`` — readiness: 200 when registered, connected, not self-fenced and the kernel accepted
  the last change; 503 with the reason otherwise.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controller.metrics import LATENCY_BUCKETS

if TYPE_CHECKING:
    from node_hook.agent import HookAgent, HookState


class HookMetrics:
    """Metrics of one node hook; pass ``on_applied`` to HookAgent, then :meth:`bind` the agent."""

    def __init__(self, cluster: str, host: str, registry: CollectorRegistry | None = None,
                 stall_after_s: float = 20.0) -> None:
        self.registry = registry or CollectorRegistry()
        self.cluster = cluster
        self.host = host
        self.stall_after_s = stall_after_s
        r = self.registry
        labels = ["cluster", "host"]
        self.holds = Gauge("clusterip_hook_bucket_held", "1 when this host's kernel holds the bucket",
                           [*labels, "bucket"], registry=r)
        self.held_count = Gauge("clusterip_hook_buckets_held", "Buckets this host's kernel holds", labels,
                                registry=r)
        self.applied_epoch = Gauge("clusterip_hook_applied_epoch", "Map epoch this hook applied", labels,
                                   registry=r)
        self.map_epoch = Gauge("clusterip_hook_map_epoch", "Latest map epoch this hook has seen", labels,
                               registry=r)
        self.epoch_lag = Gauge("clusterip_hook_epoch_lag", "Map epoch seen minus epoch applied", labels,
                               registry=r)
        self.grants = Counter("clusterip_hook_grants_total", "Buckets this kernel started to hold", labels,
                              registry=r)
        self.revokes = Counter("clusterip_hook_revokes_total", "Buckets this kernel let go", labels, registry=r)
        self.apply_duration = Histogram("clusterip_hook_apply_seconds", "Duration of kernel changes", labels,
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.fenced = Gauge("clusterip_hook_fenced", "1 while self-fenced (cut off from ZooKeeper)", labels,
                            registry=r)
        self.kernel_error = Gauge("clusterip_hook_kernel_error", "1 while the last kernel change failed", labels,
                                  registry=r)
        self.deadman_armed = Gauge("clusterip_hook_deadman_armed",
                                   "1 while the kernel's dead-man timer is armed and refreshed (0: the kernel "
                                   "accepts none of the VIP's traffic, or the backend has no dead-man switch)",
                                   labels, registry=r)
        self.zk_connected = Gauge("clusterip_zookeeper_connected", "1 while the ZooKeeper session is connected",
                                  registry=r)
        self._lock = threading.Lock()
        self._held: frozenset[int] = frozenset()
        self._seen_epoch = 0
        self._state: HookState | None = None
        self._agent: HookAgent | None = None
        self.last_cycle = time.monotonic()

    def bind(self, agent: HookAgent) -> None:
        """Read the connection state from ``agent`` at scrape time."""
        from kazoo.client import KazooState

        self._agent = agent
        self.zk_connected.set_function(lambda: 1.0 if agent.client.state == KazooState.CONNECTED else 0.0)

    def watch_map(self) -> None:
        """Track the map epoch (call after the agent started: its client is connected)."""
        from kazoo.recipe.watchers import DataWatch

        from controller.core import schema
        from controller.core import zk_layout as layout

        agent = self._agent
        assert agent is not None, "bind() the agent first"

        def changed(data: bytes | None, _stat: object) -> None:
            if data is None:
                return
            try:
                epoch = schema.decode_map(data).epoch
            except Exception:
                return
            with self._lock:
                self._seen_epoch = max(self._seen_epoch, epoch)
                self._publish_lag()

        DataWatch(agent.client, layout.map_path(self.cluster), changed)

    def on_applied(self, state: HookState) -> None:
        """The HookAgent callback, after every apply cycle."""
        self.last_cycle = time.monotonic()
        labels = (self.cluster, self.host)
        with self._lock:
            self._state = state
            held = state.held
            gained, lost = held - self._held, self._held - held
            if gained:
                self.grants.labels(*labels).inc(len(gained))
            if lost:
                self.revokes.labels(*labels).inc(len(lost))
            if gained or lost:
                self.apply_duration.labels(*labels).observe(state.last_apply_s)
            for bucket in gained | lost | held:
                self.holds.labels(*labels, str(bucket)).set(1.0 if bucket in held else 0.0)
            self._held = held
            self.held_count.labels(*labels).set(len(held))
            self.applied_epoch.labels(*labels).set(state.epoch)
            self._seen_epoch = max(self._seen_epoch, state.epoch)
            self.fenced.labels(*labels).set(1.0 if state.fenced else 0.0)
            self.kernel_error.labels(*labels).set(1.0 if state.error else 0.0)
            self.deadman_armed.labels(*labels).set(1.0 if state.alive_armed else 0.0)
            self._publish_lag()

    def _publish_lag(self) -> None:
        labels = (self.cluster, self.host)
        applied = self._state.epoch if self._state is not None else 0
        self.map_epoch.labels(*labels).set(self._seen_epoch)
        self.epoch_lag.labels(*labels).set(max(0, self._seen_epoch - applied))

    def live(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.last_cycle
        if idle > self.stall_after_s:
            return False, f"apply loop stalled: no cycle for {idle:.1f} s"
        return True, f"apply loop alive (last cycle {idle:.2f} s ago)"

    def ready(self) -> tuple[bool, str]:
        state = self._state
        if state is None:
            return False, "no apply cycle yet"
        agent = self._agent
        if agent is not None:
            from kazoo.client import KazooState

            if agent.client.state != KazooState.CONNECTED:
                return False, f"ZooKeeper session {str(agent.client.state).lower()}"
        if not state.registered:
            return False, "not registered in ZooKeeper yet"
        if state.fenced:
            return False, f"self-fenced: {state.fence_reason}"
        if state.error:
            return False, f"kernel error: {state.error}"
        return True, f"applied epoch {state.epoch}, holding {len(state.held)} buckets"
