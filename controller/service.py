"""The controller service: every replica probes; only the elected leader writes the map.

One loop thread per replica. It wakes on any event that can change a decision — a probe verdict,
a member joining or leaving, a hook publishing its status, the map or the operator intents
changing, the leadership changing — or after ``cycle_interval_s`` at the latest (delayed failback
needs the clock). Each wake runs one cycle per cluster: read one snapshot, ask the pure planner,
compare-and-set the map fenced by the election znode, append the history, and log one line.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kazoo.client import KazooClient
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from controller.core import zk_layout as layout
from controller.core.errors import ClusterIPFailoverError, CoordinationError, SchemaError
from controller.core.model import DRAIN_BACKENDS, ClusterSpec, ClusterView, Config, Health, HostHealth
from controller.core.planner import Decision, plan
from controller.core.schema import HistoryEvent
from controller.election import LeaderElection
from controller.health_source import HealthSource
from controller.zk.client import make_client, mapped_errors, start_client
from controller.zk.store import ClusterStore

log = logging.getLogger("clusterip.controller")


def default_controller_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class CycleResult:
    """What one cycle of one cluster did (returned for tests and metrics)."""

    cluster: str
    summary: str
    wrote: bool = False
    decision: Decision | None = None
    alerts: tuple[str, ...] = ()
    duration_s: float = 0.0
    #: where the time of a writing cycle went (ms): since the event that woke the loop, snapshot,
    #: plan, map write; for the decision log and the handoff benchmark's breakdown
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ClusterLoop:
    """Per-cluster state of the controller: store, health input, what was last said."""

    spec: ClusterSpec
    store: ClusterStore
    health: HealthSource
    last_summary: str = ""
    last_alerts: tuple[str, ...] = ()
    last_health: Mapping[str, HostHealth] = field(default_factory=dict)
    history_writes: int = 0
    #: version the map znode gets from our own write in flight or just done (None: none); its watch
    #: event needs no new cycle
    own_map_version: int | None = None


class ControllerService:
    """One controller replica for all clusters of a configuration."""

    def __init__(
        self,
        config: Config,
        health_sources: Mapping[str, HealthSource],
        *,
        controller_id: str | None = None,
        cycle_interval_s: float = 0.5,
        on_cycle: Callable[[CycleResult], None] | None = None,
    ) -> None:
        self.config = config
        self.controller_id = controller_id or default_controller_id()
        self.cycle_interval_s = cycle_interval_s
        self.on_cycle = on_cycle
        self.client: KazooClient = make_client(config.zookeeper)
        self.wake = threading.Event()
        self._stop = threading.Event()
        self.election = LeaderElection(self.client, self.controller_id, self.wake)
        self.loops = {
            spec.name: ClusterLoop(spec, ClusterStore(self.client, spec), health_sources[spec.name])
            for spec in config.clusters
        }
        self._thread: threading.Thread | None = None
        self.cycles = 0
        #: monotonic time of the first wake-up request not yet served (tracing only: a race may
        #: lose one stamp, never a wake-up)
        self._poked_at: float | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        start_client(self.client, self.config.zookeeper)
        with mapped_errors("registering the controller replica"):
            self.client.ensure_path(layout.REPLICAS)
            self.client.create(
                layout.replica_path(self.controller_id), self.controller_id.encode(), ephemeral=True
            )
        for loop in self.loops.values():
            loop.store.ensure_paths()
            loop.health.subscribe(lambda _h: self._poke())
            loop.health.start()
            self._watch(loop.spec)
        for spec in self.config.clusters:
            if spec.backend not in DRAIN_BACKENDS and spec.failback.policy == "drain":
                log.warning("cluster %s: the %s backend cannot drain (no connection-state rule): failback policy "
                            "drain moves buckets plainly and cuts their sessions; use nftables or xt_cluster",
                            spec.name, spec.backend)
            elif spec.backend not in DRAIN_BACKENDS:
                log.info("cluster %s: failback policy %s; drain, the default where a backend can drain, is not "
                         "possible on %s (no connection-state rule): a failback cuts the sessions opened on the "
                         "survivor", spec.name, spec.failback.policy, spec.backend)
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)
        self._thread.start()
        log.info("controller %s started for clusters %s", self.controller_id, ", ".join(self.loops))

    def _watch(self, spec: ClusterSpec) -> None:
        """Watches only wake the loop; the cycle re-reads everything (level-triggered)."""

        def poke(*_args: object) -> None:
            self._poke()

        loop = self.loops[spec.name]

        def map_changed(_data: object, stat: object, *_event: object) -> None:
            # Our own write needs no cycle: it would only re-read and re-plan the same map, right
            # when the hook's acknowledgement of that write is about to arrive (the handoff's path).
            # A foreign write cannot slip through here: if it took that version first, our write
            # failed, and a failed write re-plans anyway.
            if stat is not None and getattr(stat, "version", None) == loop.own_map_version:
                return
            self._poke()

        name = spec.name
        ChildrenWatch(self.client, layout.members_path(name), poke)
        DataWatch(self.client, layout.map_path(name), map_changed)
        DataWatch(self.client, layout.intents_path(name), poke)
        for host in spec.host_ids:
            DataWatch(self.client, layout.status_path(name, host), poke)

    def _poke(self) -> None:
        """Wake the loop, remembering when the first unserved event came (for the decision log)."""
        if self._poked_at is None:
            self._poked_at = time.monotonic()
        self.wake.set()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for loop in self.loops.values():
            loop.health.stop()
        self.election.resign()
        try:
            self.client.stop()
            self.client.close()
        except Exception:
            pass

    def wait(self) -> None:
        while not self._stop.wait(1.0):
            pass

    # ------------------------------------------------------------------ loop

    @property
    def absence_grace_s(self) -> float:
        """After (re)gaining leadership, how long an absent member proves nothing (see planner).

        1.5 session timeouts: the time a hook waits for a stale registration of its own host id, so
        every live hook has re-registered by then even if an outage expired all sessions.
        """
        return 1.5 * self.config.zookeeper.session_timeout_s

    def _next_wait(self) -> float:
        since = self.election.leader_since
        if since is not None:
            remaining = since + self.absence_grace_s - time.monotonic()
            if remaining > 0:
                return min(self.cycle_interval_s, remaining + 0.005)  # re-plan as the grace ends
        return self.cycle_interval_s

    def _run(self) -> None:
        while not self._stop.is_set():
            self.wake.wait(timeout=self._next_wait())
            poked_at, self._poked_at = self._poked_at, None
            self.wake.clear()
            if self._stop.is_set():
                break
            try:
                leader = self.election.refresh()
            except CoordinationError as exc:
                log.warning("election: %s", exc)
                time.sleep(0.05)
                continue
            for loop in self.loops.values():
                try:
                    result = self.cycle(loop, leader, poked_at)
                except (ClusterIPFailoverError, SchemaError) as exc:
                    log.warning("cluster %s: cycle failed: %s", loop.spec.name, exc)
                    time.sleep(0.05)
                    continue
                except Exception:  # pragma: no cover - a bug: keep the replica alive and say so
                    log.exception("cluster %s: cycle crashed", loop.spec.name)
                    time.sleep(0.5)
                    continue
                if self.on_cycle is not None:
                    self.on_cycle(result)
            self.cycles += 1

    def cycle(self, loop: ClusterLoop, leader: bool, poked_at: float | None = None) -> CycleResult:
        """Read one snapshot, plan, and (leader only) write; return what happened.

        ``poked_at``: when the event that woke this cycle came (monotonic), so the decision log can
        say how long the reaction took and where the time went.
        """
        started = time.perf_counter()
        started_mono = time.monotonic()
        spec = loop.spec
        health = loop.health.snapshot()
        # Captured once: if leadership is suspended mid-cycle, fence_path turns None, and writing
        # with None would skip the fence check instead of failing it.
        fence = self.election.fence_path
        leader_since = self.election.leader_since
        if not leader or fence is None or leader_since is None:
            return CycleResult(spec.name, "follower: watching, not writing", duration_s=time.perf_counter() - started)
        snap = loop.store.snapshot()
        read = time.perf_counter()
        view = ClusterView(spec, snap.map, snap.map_version, health, snap.members, snap.statuses, snap.intents)
        now = time.time()
        trust_absence = time.monotonic() - leader_since >= self.absence_grace_s
        decision = plan(view, now, trust_absence=trust_absence)
        planned = time.perf_counter()
        alerts = self._alerts(view) + snap.problems
        wrote = False
        summary = decision.summary
        timings: dict[str, float] = {}
        if decision.changed:
            loop.own_map_version = snap.map_version + 1 if snap.map_version >= 0 else 0
            absent = {h: v for h, v in snap.status_versions.items() if h not in snap.members}
            wrote = loop.store.write_map(decision.map, snap.map_version, fence, absent)
            timings = {
                "event": (started_mono - poked_at) * 1000 if poked_at is not None else float("nan"),
                "snapshot": (read - started) * 1000,
                "plan": (planned - read) * 1000,
                "write": (time.perf_counter() - planned) * 1000,
            }
            if wrote:
                self._record(loop, decision, now)
            else:
                summary += " [not written: the map changed or leadership was lost; re-planning]"
                self.election.recheck()
                self.wake.set()
        if health != loop.last_health:
            loop.store.write_health_async(health)  # for operators only: off the handoff's path
            loop.last_health = health
        if summary != loop.last_summary:
            log.info("cluster %s: %s%s", spec.name, summary, _timing_note(timings) if wrote else "")
            loop.last_summary = summary
        if alerts != loop.last_alerts:
            for alert in alerts:
                if alert not in loop.last_alerts:
                    log.warning("cluster %s: alert: %s", spec.name, alert)
            loop.last_alerts = alerts
        if decision.waiting and not wrote:
            pass  # the hook's status watch will wake us when it acknowledges
        return CycleResult(spec.name, summary, wrote, decision, alerts, time.perf_counter() - started, timings)

    def _alerts(self, view: ClusterView) -> tuple[str, ...]:
        alerts: list[str] = []
        for host in view.spec.host_ids:
            h = view.health.get(host)
            state = h.state if h else Health.UNKNOWN
            if host not in view.members and state is not Health.DOWN:
                held = sorted(view.map.owned_by(host))
                status = view.statuses.get(host)
                if status is not None and status.deadman_s is not None:
                    # Its kernel stopped with the dead-man switch: the planner moves its buckets to
                    # survivors (once an absent hook may be believed) and fails them back on return.
                    alerts.append(
                        f"hook of {host} is not running (host {state.value}); its kernel stopped serving by its "
                        f"dead-man switch, its buckets go to other hosts until it returns"
                        + (f" (still on it: {held})" if held else "")
                    )
                else:
                    alerts.append(
                        f"hook of {host} is not running (host {state.value}); its buckets {held or 'none'} stay "
                        "where they are until it returns or the host goes down"
                    )
            status = view.statuses.get(host)
            if status is not None and status.error and host in view.members:
                alerts.append(f"hook of {host} reports a kernel error: {status.error}")
        for bucket, bucket_state in sorted(view.map.buckets.items()):
            if bucket_state.owner is None and bucket_state.releasing is None and view.map.epoch > 0:
                alerts.append(f"bucket {bucket} is unowned: its clients get no answer")
        return tuple(alerts)

    def _record(self, loop: ClusterLoop, decision: Decision, now: float) -> None:
        events = [
            HistoryEvent(
                time=now,
                epoch=decision.map.epoch,
                kind=action.kind,
                reason=action.reason,
                controller=self.controller_id,
                bucket=action.bucket,
                from_host=action.host if action.kind in ("revoke", "drain-start", "drain-end") else None,
                to_host=action.host if action.kind == "grant" else None,
                preserved=action.preserved,
                cut=action.cut,
            )
            for action in decision.actions
        ]
        try:
            loop.store.append_history(events, wait=False)
            loop.history_writes += len(events)
            if loop.history_writes >= layout.HISTORY_LIMIT // 10:
                loop.store.prune_history()
                loop.history_writes = 0
        except CoordinationError as exc:
            log.warning("cluster %s: history not recorded: %s", loop.spec.name, exc)


def _timing_note(t: Mapping[str, float]) -> str:
    """`` [woke 0.3 ms after the event; snapshot 1.1 ms, plan 0.2 ms, write 1.4 ms]``: the controller's
    share of a handoff's latency, on the decision's own log line (a trace without a tracer)."""
    if not t:
        return ""
    return (f" [woke {t['event']:.1f} ms after the event; snapshot {t['snapshot']:.1f} ms, plan {t['plan']:.1f} ms, "
            f"write {t['write']:.1f} ms]")
