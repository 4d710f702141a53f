"""Prometheus metrics and the /healthz and /readyz endpoints of the controller.

Why from callbacks: the controller loop belongs to controller.service; it hands each cycle's result
to ``on_cycle`` and this module turns it into metrics, so the loop carries no metrics code. The few
things a cycle result does not carry (leadership, ZooKeeper connection state) are read at scrape
time, and the hooks' applied epochs come from watches on their status znodes.

Endpoints (one small HTTP server, default 127.0.0.1:9464):

* ``/metrics`` — Prometheus text format;
* ``/healthz`` — liveness: 200 while the controller loop keeps cycling (even without ZooKeeper),
  503 when it stalled: restart the process;
* ``/readyz`` — readiness: 200 when connected to ZooKeeper and a full cycle succeeded recently,
  503 otherwise (with the reason as the body).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller.core.errors import ConfigError
from controller.core.model import BucketMap, Health, HostHealth

if TYPE_CHECKING:
    from controller.service import ControllerService, CycleResult

log = logging.getLogger("clusterip.metrics")

DEFAULT_BIND = "127.0.0.1"
CONTROLLER_PORT = 9464
HOOK_PORT = 9465
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
HANDOFF_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: A check returns (healthy, one-line reason).
Check = Callable[[], tuple[bool, str]]


# --------------------------------------------------------------------------- HTTP server


class MetricsServer:
    """/metrics, /healthz and /readyz on one address, served by daemon threads."""

    def __init__(self, registry: CollectorRegistry, bind: str, port: int, live: Check, ready: Check) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(server.registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, why = (server.live if path == "/healthz" else server.ready)()
                    self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: use /metrics, /healthz or /readyz\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
                pass

        self.registry = registry
        self.live = live
        self.ready = ready
        try:
            self.httpd = ThreadingHTTPServer((bind, port), Handler)
        except OSError as exc:
            raise ConfigError([f"metrics: cannot listen on {bind}:{port}: {exc.strerror}; pick another "
                               "--metrics-port/--metrics-bind or --no-metrics"]) from None
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics (health: /healthz, /readyz)", *self.address)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- controller metrics


class ControllerMetrics:
    """Metrics of one controller replica; feed it with ``on_cycle`` and :meth:`bind` the service."""

    def __init__(self, registry: CollectorRegistry | None = None, stall_after_s: float = 10.0) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.stall_after_s = stall_after_s
        self.bucket_owner = Gauge("clusterip_bucket_owner", "1 for the host that owns the bucket in the map "
                                  "(owner=\"\" while unowned or moving)", ["cluster", "bucket", "owner"], registry=r)
        self.buckets = Gauge("clusterip_buckets", "Buckets per state (serving, moving, unowned)",
                             ["cluster", "state"], registry=r)
        self.map_epoch = Gauge("clusterip_map_epoch", "Epoch of the bucket map", ["cluster"], registry=r)
        self.host_up = Gauge("clusterip_host_up", "1 when the host's probes say up", ["cluster", "host"], registry=r)
        self.host_health = Gauge("clusterip_host_health", "1 for the host's current health state",
                                 ["cluster", "host", "state"], registry=r)
        self.probe_latency = Histogram("clusterip_probe_latency_seconds",
                                       "Latency of the probe behind each new verdict (sampled per cycle)",
                                       ["cluster", "host"], buckets=LATENCY_BUCKETS, registry=r)
        self.failovers = Counter("clusterip_failovers_total",
                                 "Buckets granted to another host because their owner was down",
                                 ["cluster"], registry=r)
        self.handoffs = Counter("clusterip_handoffs_total", "Buckets granted after a revoke (any reason)",
                                ["cluster"], registry=r)
        self.handoff_duration = Histogram("clusterip_handoff_duration_seconds",
                                          "Time from revoking a bucket to granting it (clients unanswered)",
                                          ["cluster"], buckets=HANDOFF_BUCKETS, registry=r)
        self.leader = Gauge("clusterip_controller_leader", "1 while this replica leads", registry=r)
        self.zk_connected = Gauge("clusterip_zookeeper_connected", "1 while the ZooKeeper session is connected",
                                  registry=r)
        self.applied_epoch = Gauge("clusterip_hook_applied_epoch", "Map epoch each hook reports applied",
                                   ["cluster", "host"], registry=r)
        self.epoch_lag = Gauge("clusterip_hook_epoch_lag", "Map epoch minus the epoch the hook applied",
                               ["cluster", "host"], registry=r)
        self.alerts = Gauge("clusterip_alerts", "Alerts the controller raised in its last cycle", ["cluster"],
                            registry=r)
        self.cycle_duration = Histogram("clusterip_controller_cycle_seconds", "Duration of one controller cycle",
                                        ["cluster"], buckets=LATENCY_BUCKETS, registry=r)
        self._lock = threading.Lock()
        self._maps: dict[str, BucketMap] = {}
        self._owner_labels: dict[tuple[str, int], str] = {}
        self._seen_health: dict[tuple[str, str], tuple[float, float | None]] = {}
        self._applied: dict[tuple[str, str], int] = {}
        self._health: dict[str, dict[str, HostHealth]] = {}
        self.last_cycle = time.monotonic()
        self.last_leader_cycle = 0.0
        self.last_ok_cycle = 0.0
        self._service: ControllerService | None = None

    # ------------------------------------------------------------------ wiring

    def bind(self, service: ControllerService) -> None:
        """Read leadership and connection state from ``service`` at scrape time."""
        from kazoo.client import KazooState

        self._service = service
        self.leader.set_function(lambda: 1.0 if service.election.is_leader else 0.0)
        self.zk_connected.set_function(lambda: 1.0 if service.client.state == KazooState.CONNECTED else 0.0)

    def watch_hooks(self) -> None:
        """Watch every hook's status znode (call after the service started: the client is connected)."""
        from kazoo.recipe.watchers import DataWatch

        from controller.core import schema
        from controller.core import zk_layout as layout

        service = self._service
        assert service is not None, "bind() the service first"
        def watcher(cluster: str, host: str) -> Callable[[bytes | None, object], None]:
            # A closure with exactly (data, stat): kazoo passes the event too to 3-argument functions.
            def changed(data: bytes | None, _stat: object) -> None:
                if data is None:
                    return
                try:
                    status = schema.decode_status(data, expected_host=host)
                except Exception:
                    return
                with self._lock:
                    self._applied[(cluster, host)] = status.epoch
                    self._update_lag(cluster)

            return changed

        for name, loop in service.loops.items():
            for host in loop.spec.host_ids:
                DataWatch(service.client, layout.status_path(name, host), watcher(name, host))

    # ------------------------------------------------------------------ per cycle

    def on_cycle(self, result: CycleResult) -> None:
        """The ControllerService callback: one cycle of one cluster."""
        now = time.monotonic()
        self.last_cycle = now
        cluster = result.cluster
        self.cycle_duration.labels(cluster).observe(result.duration_s)
        if self._service is not None:
            loop = self._service.loops.get(cluster)
            if loop is not None:
                self._observe_health(cluster, loop.health.snapshot())
        decision = result.decision
        if decision is None:
            return  # a follower: it does not plan
        self.last_leader_cycle = now
        self.last_ok_cycle = now
        self.alerts.labels(cluster).set(len(result.alerts))
        with self._lock:
            previous = self._maps.get(cluster)
            if result.wrote:
                self._count_handoffs(cluster, previous, decision.map, time.time())
            current = decision.map if result.wrote or previous is None else previous
            if result.wrote or previous is None:
                self._maps[cluster] = decision.map
            self._publish_map(cluster, current)
            self._update_lag(cluster)

    def _observe_health(self, cluster: str, health: dict[str, HostHealth]) -> None:
        self._health[cluster] = health
        for host, h in health.items():
            self.host_up.labels(cluster, host).set(1.0 if h.state is Health.UP else 0.0)
            for state in Health:
                self.host_health.labels(cluster, host, state.value).set(1.0 if h.state is state else 0.0)
            key = (cluster, host)
            seen = (h.since, h.latency_ms)
            if h.latency_ms is not None and self._seen_health.get(key) != seen:
                self.probe_latency.labels(cluster, host).observe(h.latency_ms / 1000.0)
            self._seen_health[key] = seen

    def _count_handoffs(self, cluster: str, previous: BucketMap | None, new: BucketMap, wall: float) -> None:
        health = self._health.get(cluster, {})
        for bucket, state in new.buckets.items():
            before = previous.buckets.get(bucket) if previous is not None else None
            if state.owner is None or before is None or before.owner == state.owner:
                continue
            origin = before.owner or before.releasing
            if origin is None:
                continue  # first grant of an unowned bucket: not a handoff
            self.handoffs.labels(cluster).inc()
            revoked_at = before.since if before.owner is None else wall
            self.handoff_duration.labels(cluster).observe(max(0.0, wall - revoked_at))
            h = health.get(origin)
            if h is not None and h.state is Health.DOWN:
                self.failovers.labels(cluster).inc()

    def _publish_map(self, cluster: str, bucket_map: BucketMap) -> None:
        counts = {"serving": 0, "moving": 0, "unowned": 0}
        for bucket, state in bucket_map.buckets.items():
            counts[state.state] += 1
            owner = state.owner or ""
            old = self._owner_labels.get((cluster, bucket))
            if old is not None and old != owner:
                self.bucket_owner.remove(cluster, str(bucket), old)
            self.bucket_owner.labels(cluster, str(bucket), owner).set(1.0)
            self._owner_labels[(cluster, bucket)] = owner
        for state_name, count in counts.items():
            self.buckets.labels(cluster, state_name).set(count)
        self.map_epoch.labels(cluster).set(bucket_map.epoch)

    def _update_lag(self, cluster: str) -> None:
        bucket_map = self._maps.get(cluster)
        for (name, host), epoch in self._applied.items():
            if name != cluster:
                continue
            self.applied_epoch.labels(cluster, host).set(epoch)
            if bucket_map is not None:
                self.epoch_lag.labels(cluster, host).set(max(0, bucket_map.epoch - epoch))

    # ------------------------------------------------------------------ health endpoints

    def live(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.last_cycle
        if idle > self.stall_after_s:
            return False, f"controller loop stalled: no cycle for {idle:.1f} s"
        return True, f"controller loop alive (last cycle {idle:.2f} s ago)"

    def ready(self) -> tuple[bool, str]:
        service = self._service
        if service is not None:
            from kazoo.client import KazooState

            if service.client.state != KazooState.CONNECTED:
                return False, f"ZooKeeper session {str(service.client.state).lower()}"
        idle = time.monotonic() - self.last_cycle
        if idle > self.stall_after_s:
            return False, f"no cycle for {idle:.1f} s"
        role = "leader" if service is not None and service.election.is_leader else "follower"
        return True, f"connected to ZooKeeper, cycling ({role})"


def serve(registry: CollectorRegistry, bind: str, port: int, live: Check, ready: Check) -> MetricsServer | None:
    """Start the metrics/health HTTP server (port 0 picks a free port); None if it cannot listen.

    Why not fail: a busy port must never stop a hook from serving buckets or a controller from
    failing over; the error is logged once and monitoring sees the endpoint missing.
    """
    try:
        server = MetricsServer(registry, bind, port, live, ready)
    except ConfigError as exc:
        log.error("%s; running without metrics", exc)
        return None
    server.start()
    return server
