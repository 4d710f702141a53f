"""Runs level-1 and level-2 probes for many hosts in parallel and reports health transitions at once.

One thread drives every level-1 probe on a selector (no thread per host); level-2 logins run in a
small bounded thread pool with at most one login per host in flight. A slow or hung host only
holds its own sockets, never delays the others. Each result goes through the pure
``HealthTracker``; a transition calls ``on_change`` immediately from the probing thread, so the
controller reacts to a dead host at once instead of at its next tick.

Probes run at a fixed rate, not "interval after the previous one finished": with a banner timeout
longer than the interval, the probes of a hung host overlap and ``fall`` failures arrive one
interval apart, which is what bounds detection to about ``(fall - 1) * interval + banner_timeout``.

Telling slow from hung (docs/probes.md, "Load"): each banner probe gets its host's adaptive
timeout from the tracker, and timed-out sockets stay open a while so that a late banner can be
reported as proof of life; the tracker also holds hosts that fail all at once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import heapq
import itertools
import logging
import math
import resource
import select
import socket
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controller.core.health import HealthTracker, ProbeResult, Thresholds
from controller.core.model import HostHealth, ProbeSettings
from controller.probes.banner import BannerProber
from controller.probes.errors import ProbeConfigError, ProbeError
from controller.probes.known_hosts import KnownHosts
from controller.probes.login import LoginProber, load_probe_key
from controller.probes.target import ProbeTarget
from controller.probes.watchdog import Watchdog

log = logging.getLogger(__name__)

#: While probes are in flight the probe thread wakes every ``_TICK_S`` and handles everything ready
#: and due in one batch, instead of waking for every connect, banner and due time (two or three
#: wake-ups per probe, thousands a second at 500 hosts, each an epoll_wait, two context switches and
#: a round of the loop). The price: probes start, and banners and deadlines are seen, up to one tick
#: late (banner latencies have a resolution of one tick; hung-sshd detection is at most one tick
#: slower). Ready sockets are still handled before deadlines, so the tick never turns a banner
#: that came in time into a timeout.
_TICK_S = 0.004


@dataclass
class _Slot:
    """Per-host schedule (owned by the probe thread, except ``login_due`` set by login workers)."""

    target: ProbeTarget
    family: socket.AddressFamily
    ip: str
    due: float
    login_due: float
    login_running: bool = False
    removed: bool = False


@dataclass
class ProbeStats:
    level1: int = 0
    level2: int = 0
    transitions: int = 0
    late_banners: int = 0


class ProbeScheduler:
    """Probe many hosts; keep their ``HostHealth``; call ``on_change`` on every transition.

    ``on_change`` runs on a probe thread, serialised (never two calls at once): keep it short
    (hand the event to the controller's own queue).
    """

    def __init__(
        self,
        targets: Sequence[ProbeTarget],
        settings: ProbeSettings,
        on_change: Callable[[HostHealth], None],
    ) -> None:
        _validate(settings)
        self.settings = settings
        self._on_change = on_change
        self._login_enabled = settings.login_interval_s > 0
        levels: tuple[int, ...] = (1, 2) if self._login_enabled else (1,)
        self._tracker = HealthTracker(thresholds_of(settings, levels))
        self._lock = threading.RLock()  # tracker, slots and on_change delivery
        self._slots: dict[str, _Slot] = {}
        # Due times in a heap (kind 1 = banner, 2 = login): each wake-up costs O(log n), not O(hosts).
        self._heap: list[tuple[float, int, int, _Slot]] = []
        self._pending: list[tuple[float, int, _Slot]] = []  # pushed by other threads, under _lock
        self._seq = itertools.count()
        # A bare epoll, not selectors: see controller/probes/banner.py (CPU per probe).
        self._poll = select.epoll()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_fd = self._wake_r.fileno()
        self._poll.register(self._wake_fd, select.EPOLLIN)
        budget = _socket_budget()
        # Idle sockets kept for reuse (controller/probes/banner.py) come out of the same fd budget.
        pool_max = min(256, budget // 8)
        self._max_sockets = budget - pool_max
        self._banner = BannerProber(
            self._poll, settings.connect_timeout_s, settings.banner_timeout_s, self._on_banner,
            self._on_late_banner, settings.late_banner_s, settings.late_sockets_per_host,
            late_total=max(16, budget // 4), pool_max=pool_max,
        )
        self._wall = time.time()  # the probe thread's wall clock, read once per wake-up
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._watchdog: Watchdog | None = None
        self._login: LoginProber | None = None
        self.stats = ProbeStats()
        self.set_targets(targets)

    # ------------------------------------------------------------------ public API

    def start(self) -> None:
        """Start probing (returns at once). Level-2 set-up errors raise ``ProbeConfigError`` here."""
        if self._thread is not None:
            return
        if self._login_enabled:
            s = self.settings
            known = KnownHosts(s.known_hosts, s.first_contact)
            self._watchdog = Watchdog()
            self._login = LoginProber(
                s.user, load_probe_key(s.key_file), known, s.command, s.connect_timeout_s, s.login_timeout_s,
                self._watchdog,
            )
            self._pool = concurrent.futures.ThreadPoolExecutor(s.login_workers, thread_name_prefix="probe-login")
        self._thread = threading.Thread(target=self._run, name="probe-banner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop probing and release every socket and thread (idempotent)."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        self._banner.cancel_all()
        self._poll.close()
        self._wake_r.close()
        self._wake_w.close()

    def snapshot(self) -> dict[str, HostHealth]:
        with self._lock:
            return dict(self._tracker.snapshot())

    def set_targets(self, targets: Sequence[ProbeTarget]) -> None:
        """Replace the set of hosts; hosts that stay keep their state, new ones start UNKNOWN."""
        ids = [t.host_id for t in targets]
        if len(set(ids)) != len(ids):
            raise ProbeConfigError("probe targets have duplicate host ids: give every host a unique id")
        resolved = {t.host_id: (t, *t.resolved()) for t in targets}
        now_wall, now = time.time(), time.monotonic()
        interval = self.settings.interval_s
        with self._lock:
            for host_id in list(self._slots):
                if host_id not in resolved or self._slots[host_id].target != resolved[host_id][0]:
                    self._slots.pop(host_id).removed = True
                    self._tracker.forget(host_id)
            for host_id, (target, family, ip) in resolved.items():
                if host_id in self._slots:
                    continue
                # Spread hosts over the interval so probes (and CPU) are smooth, not bursts.
                phase = (zlib.crc32(host_id.encode()) % 1000) / 1000.0
                slot = _Slot(target, family, ip, now + phase * interval, now + phase * interval)
                self._slots[host_id] = slot
                self._pending.append((slot.due, 1, slot))
                if self._login_enabled:
                    self._pending.append((slot.login_due, 2, slot))
                self._tracker.add(host_id, now_wall)
        self._wake()

    # ------------------------------------------------------------------ probe thread

    def _run(self) -> None:
        banner, poll, wake_fd = self._banner, self._poll.poll, self._wake_fd
        ready = banner.ready
        try:
            while not self._stop.is_set():
                self._start_due(time.monotonic())
                now = time.monotonic()
                # Room for every registered fd (idle pooled sockets too), so that no ready socket is
                # left for the next round.
                room = banner.in_flight + banner.pooled + 1
                if banner.in_flight:
                    # Probes in flight: wake on a fixed grid of ``_TICK_S``, not on every connect and
                    # banner, and handle all that is ready in one batch (see _TICK_S).
                    time.sleep(max(0.0, (math.floor(now / _TICK_S) + 1) * _TICK_S - now))
                    events = poll(0, room)
                else:
                    # Nothing in flight: sleep until the next probe is due (ms resolution, rounded
                    # up as selectors does); the wake-up socket interrupts it.
                    events = poll(math.ceil(self._next_wake(now) * 1e3) * 1e-3, room)
                now = time.monotonic()
                self._wall = time.time()
                for fd, mask in events:  # ready sockets first: our own lateness is no timeout
                    if fd == wake_fd:
                        self._drain_wake()
                    else:
                        ready(fd, mask, now)
                banner.expire(time.monotonic())
        except Exception:
            log.exception("probe loop crashed; hosts will stop changing state")
            raise

    def _start_due(self, now: float) -> None:
        interval = self.settings.interval_s
        if self._pending:  # other threads append under the lock, then wake us: no lock per wake-up
            with self._lock:
                for due, kind, slot in self._pending:
                    heapq.heappush(self._heap, (due, next(self._seq), kind, slot))
                self._pending.clear()
        heap = self._heap
        if not heap or heap[0][0] > now:
            return
        banner, tracker, stats = self._banner, self._tracker, self.stats
        # One lock and one clock read for every probe due now, not one per probe.
        with self._lock:
            wall = self._wall = time.time()
            while heap and heap[0][0] <= now:
                due, _, kind, slot = heap[0]
                if slot.removed:
                    heapq.heappop(heap)
                    continue
                if kind == 1:
                    if banner.in_flight < self._max_sockets:
                        timeout = tracker.banner_timeout(slot.target.host_id, wall)
                        banner.start(slot.target, slot.family, slot.ip, now, timeout)
                        stats.level1 += 1
                    # Fixed rate; if this thread was late, skip missed ticks rather than burst them.
                    slot.due = due + interval * max(1, int((now - due) // interval) + 1)
                    heapq.heapreplace(heap, (slot.due, next(self._seq), 1, slot))  # pop and push in one
                    continue
                heapq.heappop(heap)
                if self._pool is not None and not slot.login_running:
                    slot.login_running = True
                    self._pool.submit(self._login_once, slot)

    def _next_wake(self, now: float) -> float:
        candidates = [self._heap[0][0]] if self._heap else []
        deadline = self._banner.next_deadline()
        if deadline is not None:
            candidates.append(deadline)
        if not candidates:
            return 1.0
        return min(1.0, max(0.0, min(candidates) - now))

    def _on_banner(self, target: ProbeTarget, latency_ms: float | None, err: ProbeError | None) -> None:
        # ``_wall``: the wall clock read once per wake-up of the probe thread (results carry it)
        if err is None:
            self._record(target, ProbeResult(target.host_id, 1, True, latency_ms, "banner ok", self._wall))
        else:
            self._record(target, ProbeResult(target.host_id, 1, False, None, err.reason, self._wall, err.definite,
                                             timeout=err.timeout))

    def _on_late_banner(self, target: ProbeTarget, latency_ms: float) -> None:
        self.stats.late_banners += 1
        self._record(target, ProbeResult(target.host_id, 1, True, latency_ms, "late banner", self._wall,
                                         late=True))

    # ------------------------------------------------------------------ login workers

    def _login_once(self, slot: _Slot) -> None:
        assert self._login is not None
        target = slot.target
        try:
            latency = self._login.probe(target)
            result = ProbeResult(target.host_id, 2, True, latency, "login ok", time.time())
        except ProbeError as err:
            result = ProbeResult(target.host_id, 2, False, None, err.reason, time.time(), err.definite,
                                 timeout=err.timeout, answered=err.answered)
        except Exception as exc:  # a bug in a probe must not silently stop this host's logins
            log.exception("level-2 probe of %s crashed", target.host_id)
            result = ProbeResult(target.host_id, 2, False, None, f"probe error: {exc}", time.time())
        self._record(target, result)
        with self._lock:
            up = self._tracker.level_up(target.host_id, 2) if target.host_id in self._slots else True
            gap = self.settings.login_interval_s if up else self.settings.login_retry_s
            slot.login_due = time.monotonic() + gap
            slot.login_running = False
            self._pending.append((slot.login_due, 2, slot))
        self._wake()

    # ------------------------------------------------------------------ shared

    def _record(self, target: ProbeTarget, result: ProbeResult) -> None:
        with self._lock:
            slot = self._slots.get(target.host_id)
            if slot is None or (slot.target is not target and slot.target != target):
                return  # a late result of a host that was removed or re-addressed
            if result.level == 2:
                self.stats.level2 += 1
            change = self._tracker.observe(result)
            for note in self._tracker.take_notes():
                log.warning("%s", note)
            if change is None:
                return
            self.stats.transitions += 1
            log.info("host %s is %s: %s", change.host_id, change.state.value, change.reason)
            try:
                self._on_change(change)
            except Exception:
                log.exception("on_change failed for %s", change.host_id)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already pending (full), or closed by stop()
            self._wake_w.send(b"x")

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass


def _validate(s: ProbeSettings) -> None:
    for name in ("interval_s", "connect_timeout_s", "banner_timeout_s", "login_timeout_s", "login_retry_s"):
        if getattr(s, name) <= 0:
            raise ProbeConfigError(f"probe {name} must be > 0 (got {getattr(s, name)}): fix the config")
    if s.login_workers < 1:
        raise ProbeConfigError(f"probe login_workers must be >= 1 (got {s.login_workers}): fix the config")
    if s.late_sockets_per_host < 0 or s.late_banner_s < 0:
        raise ProbeConfigError("probe late_sockets_per_host and late_banner_s must be >= 0: fix the config")
    try:
        thresholds_of(s, (1,))
    except ValueError as exc:
        raise ProbeConfigError(str(exc)) from exc


def thresholds_of(s: ProbeSettings, levels: tuple[int, ...]) -> Thresholds:
    """The tracker's rules from the settings; "at the same moment" spans one detection window."""
    return Thresholds(
        s.fall, s.rise, s.definite_fall, levels,  # type: ignore[arg-type]
        banner_timeout_s=s.banner_timeout_s,
        banner_timeout_max_s=max(s.banner_timeout_s, s.banner_timeout_max_s),
        correlated_fraction=s.correlated_fraction,
        hold_max_s=s.hold_max_s,
        correlated_window_s=(s.fall * s.interval_s + max(s.banner_timeout_s, s.banner_timeout_max_s),
                             s.login_interval_s + s.login_timeout_s),
        late_banner_s=s.late_banner_s,
        # a banner of a busy host may arrive up to late_banner_s after its probe began; with late
        # banners off, in-time banners come every interval, so one login window is plenty
        login_hold_window_s=max(s.late_banner_s, s.login_interval_s + s.login_timeout_s),
    )


def _socket_budget() -> int:
    """Sockets level 1 may hold at once: most of the fd limit, leaving room for the rest."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, (soft if soft != resource.RLIM_INFINITY else 65536) - 128)
