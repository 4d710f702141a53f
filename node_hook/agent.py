"""The node hook's agent: register in ZooKeeper, apply the map's buckets for this host, report back.

The agent only *applies*; the controller decides. It is level-triggered: every cycle converges the
kernel to what the current map says this host owns (revokes before grants), reads the kernel back
and publishes that with the map epoch. Watches make it react at once; a periodic resync covers a
missed watch. Three background activities:

* the apply loop (woken by the map watch, membership changes, reconnects and a resync timer);
* the ZooKeeper heartbeat, which self-fences (releases every bucket) when this host appears to be
  cut off from ZooKeeper while its peers are not (see node_hook.fencing);
* the peer responder, which answers the same question for the other hooks;
* the dead-man refresher (backends with a dead-man switch): keeps the kernel's timer running, so
  that a hook that dies or stalls takes its kernel out of service by itself within E
  (controller/core/deadman.py). The timer is armed only after a cycle read the map in the current
  session, applied it and published the result, and it is never revived after it may have run out:
  then the next cycle re-reads the map first. A restarted or stalled hook therefore never brings
  back buckets that were granted elsewhere meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from controller.core import schema
from controller.core import zk_layout as layout
from controller.core.deadman import DeadmanTiming
from controller.core.errors import BackendError, ClusterIPFailoverError, CoordinationError, SchemaError
from controller.core.model import BucketMap, ClusterSpec, HookStatus, Member, ZooKeeperSettings
from controller.zk.client import make_client, mapped_errors, start_client
from controller.zk.store import ClusterStore
from node_hook import drain, fencing
from node_hook.backends.base import BucketBackend
from node_hook.peers import PeerResponder, ask_peers

log = logging.getLogger("clusterip.hook")


class DuplicateHostError(CoordinationError):
    """Another live hook is registered under the same host id."""

    exit_code = 3


def software_version() -> str:
    try:
        from importlib.metadata import version

        return version("clusterip-failover")
    except Exception:
        return "dev"


@dataclass
class HookState:
    """What the agent last did, for metrics, tests and the health endpoint."""

    epoch: int = 0
    held: frozenset[int] = frozenset()
    error: str = ""
    fenced: bool = False
    fence_reason: str = ""
    registered: bool = False
    last_apply_s: float = 0.0
    #: the dead-man timer is armed and being refreshed (False also without a dead-man switch)
    alive_armed: bool = False
    #: buckets kept for tracked connections only, and how many each still tracks (docs/drain.md)
    draining: frozenset[int] = frozenset()
    sessions: Mapping[int, int] = field(default_factory=dict)


class HookAgent:
    """Keeps one host's kernel in line with the bucket map of one cluster."""

    def __init__(
        self,
        spec: ClusterSpec,
        zk: ZooKeeperSettings,
        host_id: str,
        backend: BucketBackend,
        *,
        address: str | None = None,
        peer_bind: str = "0.0.0.0",
        peer_secret: bytes = b"",
        id_wait_s: float | None = None,
        on_applied: Callable[[HookState], None] | None = None,
    ) -> None:
        if host_id not in spec.host_ids:
            raise CoordinationError(
                f"host {host_id!r} is not in cluster {spec.name} (hosts: {', '.join(spec.host_ids)}); check --host"
            )
        self.spec = spec
        self.zk = zk
        self.host_id = host_id
        self.backend = backend
        self.address = address or spec.host(host_id).ssh_host
        self.peer_bind = peer_bind
        self.peer_secret = peer_secret
        self.id_wait_s = zk.session_timeout_s * 1.5 if id_wait_s is None else id_wait_s
        self.on_applied = on_applied
        self.state = HookState()
        self.client: KazooClient = make_client(zk)
        self.store = ClusterStore(self.client, spec)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # serialises kernel changes between apply loop and fencing
        self._map: BucketMap | None = None
        self._map_problem = ""
        #: True after a session loss until the apply loop has read the map in the new session: a map
        #: kept from the old session may be stale (our buckets handed away while we were expired), so
        #: until then the hook may only let go of buckets, never take one.
        self._map_stale = False
        self._peers: dict[str, tuple[str, int]] = {}
        self._peers_dirty = True
        self._need_register = True
        self._outage_confirmed = False
        self._outage_confirmed_at: float | None = None
        self._peers_back_since: float | None = None
        self._last_published: tuple[object, ...] | None = None
        self._last_publish_time = 0.0
        self._last_zk_ok = time.monotonic()
        self._zk_streak_since = self._last_zk_ok
        #: a heartbeat gap longer than this ends a streak of ZooKeeper contact (3 heartbeats)
        self._streak_gap_s = 3 * max(0.02, zk.session_timeout_s / 20)
        self._threads: list[threading.Thread] = []
        self._responder: PeerResponder | None = None
        self.fence_threshold_s = spec.handoff.self_fence_fraction * zk.session_timeout_s
        self.deadman = (None if backend.deadman_s is None
                        else DeadmanTiming(backend.deadman_s, zk.session_timeout_s))
        #: monotonic time taken just before the last successful arm or refresh of the kernel timer
        self._alive_at = 0.0
        self._drain_counter = drain.SessionCounter(spec, backend)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Install rules (adopting existing kernel state), connect, register and start the loops."""
        problems = self.backend.check_prerequisites()
        if problems:
            raise BackendError("; ".join(problems))
        self.backend.install()
        self.state.held = self.backend.held()
        if self.deadman is not None:
            # Adopted rules may hold buckets granted elsewhere while no hook ran here: read the map
            # synchronously in the first cycle (take nothing before) and arm only after applying it.
            self._map_stale = True
        self.client.add_listener(self._on_connection_state)
        start_client(self.client, self.zk)
        self._last_zk_ok = time.monotonic()
        self._zk_streak_since = self._last_zk_ok
        self.store.ensure_paths()
        self._register_at_start()
        self._publish(force=True)
        self._responder = PeerResponder(
            self.spec.name,
            self.host_id,
            (self.peer_bind, self.spec.handoff.peer_port),
            self.zk_reachable,
            self.peer_secret,
            silent_for=self.zk_silent_for,
            connected_for=self.zk_connected_for,
        )
        self._responder.start()
        DataWatch(self.client, layout.map_path(self.spec.name), self._on_map)
        ChildrenWatch(self.client, layout.members_path(self.spec.name), self._on_members)
        loops = [(self._apply_loop, "apply"), (self._heartbeat_loop, "zk-heartbeat")]
        if self.deadman is not None:
            loops.append((self._deadman_loop, "dead-man"))
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info(
            "hook %s of cluster %s started: kernel holds %s, backend %s",
            self.host_id,
            self.spec.name,
            _fmt(self.state.held),
            self.backend.name,
        )

    def stop(self, release: bool = False) -> None:
        """Stop the loops and close the session. Buckets stay in the kernel unless ``release``.

        With a dead-man switch the kernel stops accepting *before* the session is closed: the
        controller counts a closed session of such a hook as a release at once (planner
        ``deadman_fenced``), while the kernel timer would otherwise run E longer.
        """
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._responder is not None:
            self._responder.stop()
        if release:
            with self._lock:
                self.state.held = self.backend.apply(frozenset())
        if self.deadman is not None:
            self._stop_accepting()
        try:
            self.client.stop()
            self.client.close()
        except KazooException:
            pass

    def wait(self) -> None:
        while not self._stop.wait(1.0):
            pass

    def _stop_accepting(self) -> None:
        """Clear the kernel timer; if that fails, wait until it has surely run out (E after the last refresh)."""
        assert self.deadman is not None
        with self._lock:
            self.state.alive_armed = False
            try:
                self.backend.disarm_alive()
                return
            except BackendError as exc:
                log.error("could not clear the dead-man timer, waiting for it to run out: %s", exc)
        remaining = self._alive_at + self.deadman.expiry_s - time.monotonic()
        if remaining > 0:
            time.sleep(remaining + 0.05)

    # ------------------------------------------------------------------ ZooKeeper callbacks

    def _on_connection_state(self, state: str) -> None:
        if state == KazooState.LOST:
            self._need_register = True
            self._map_stale = True
        if state == KazooState.CONNECTED:
            self._wake.set()

    def _on_map(self, data: bytes | None, stat: object) -> None:
        if data is None:
            self._map = None
        else:
            try:
                decoded = schema.decode_map(data)
                if len(decoded.buckets) != self.spec.buckets:
                    raise SchemaError(f"map has {len(decoded.buckets)} buckets, the config {self.spec.buckets}")
                current = self._map
                if current is not None and decoded.epoch < current.epoch:
                    # A resync read racing the watch delivered an older map: epochs only grow.
                    self._wake.set()
                    return
                self._map = decoded
                self._map_problem = ""
            except SchemaError as exc:
                if str(exc) != self._map_problem:
                    log.error("ignoring unreadable map %s: %s", layout.map_path(self.spec.name), exc)
                self._map_problem = str(exc)
        self._wake.set()

    def _on_members(self, children: list[str]) -> None:
        self._peers_dirty = True
        self._wake.set()

    # ------------------------------------------------------------------ registration

    def _register(self) -> None:
        """Create the ephemeral member znode and publish the status in one transaction.

        Atomic so that a live member never shows a status left over from before (a restarted or
        re-connected hook's old status may list buckets it no longer holds), and so that a duplicate
        hook refused for a live host id never overwrites the live hook's status.
        """
        path = layout.member_path(self.spec.name, self.host_id)
        data = schema.encode_member(Member(self.host_id, self.address, software_version(), self.spec.backend))
        deadline = time.monotonic() + self.id_wait_s
        with mapped_errors(f"registering host {self.host_id}"):
            while True:
                try:
                    self._create_member_with_status(path, data)
                    break
                except NodeExistsError:
                    try:
                        _, stat = self.client.get(path)
                    except NoNodeError:
                        continue
                    if stat.ephemeralOwner == self.client.client_id[0]:
                        break  # our own registration, created before a reconnect
                    if time.monotonic() >= deadline:
                        raise DuplicateHostError(
                            f"host id {self.host_id} is already registered by another live hook "
                            f"(session 0x{stat.ephemeralOwner:x}); stop that hook or start this one with the right "
                            "--host"
                        ) from None
                    time.sleep(0.1)
        self._need_register = False
        self.state.registered = True

    def _register_at_start(self) -> None:
        """Register, retrying transient ZooKeeper errors (a session may expire while a loaded host
        starts); only a live duplicate, or no success within the connect timeout plus 10 session
        timeouts, is fatal."""
        deadline = time.monotonic() + self.zk.connect_timeout_s + 10 * self.zk.session_timeout_s
        while True:
            try:
                self._register()
                return
            except DuplicateHostError:
                raise
            except CoordinationError as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("registration failed, retrying: %s", exc)
                time.sleep(0.1)

    def _create_member_with_status(self, member_path: str, member_data: bytes) -> None:
        status_path = layout.status_path(self.spec.name, self.host_id)
        key = self._status_key()
        status = schema.encode_status(self._status())
        for _ in range(5):
            exists = self.client.exists(status_path) is not None
            txn = self.client.transaction()
            txn.create(member_path, member_data, ephemeral=True)
            if exists:
                txn.set_data(status_path, status)
            else:
                txn.create(status_path, status)
            results = txn.commit()
            if not any(isinstance(r, Exception) for r in results):
                self._last_published = key
                return
            if isinstance(results[0], NodeExistsError):
                raise results[0]
            # The status znode appeared or vanished between exists() and commit(): try again.
        raise CoordinationError(f"could not register host {self.host_id}: its status znode keeps changing")

    def _refresh_peers(self) -> None:
        members = self.store.read_members([])
        port = self.spec.handoff.peer_port
        self._peers = {h: (m.address, port) for h, m in members.items() if h != self.host_id}

    # ------------------------------------------------------------------ apply loop

    def _apply_loop(self) -> None:
        resync = self.spec.handoff.resync_interval_s
        last_resync = time.monotonic()
        while not self._stop.is_set():
            wait = resync - (time.monotonic() - last_resync)
            if self.state.draining:  # recount the draining buckets' connections
                wait = min(wait, self.spec.failback.drain_poll_s)
            self._wake.wait(timeout=max(0.05, wait))
            self._wake.clear()
            if self._stop.is_set():
                break
            is_resync = time.monotonic() - last_resync >= resync
            if is_resync:
                last_resync = time.monotonic()
            try:
                self.cycle(resync=is_resync)
            except ClusterIPFailoverError as exc:
                log.warning("apply cycle: %s", exc)
                time.sleep(0.05)
                self._wake.set() if not is_resync else None
            except Exception:  # pragma: no cover - a bug; keep serving, say so loudly
                log.exception("apply cycle failed unexpectedly")
                time.sleep(0.5)

    def cycle(self, resync: bool = False) -> None:
        """One level-triggered pass: (re)register, converge the kernel, publish (then arm the dead-man timer)."""
        began = time.monotonic()
        connected = self.client.state == KazooState.CONNECTED
        if connected and self._need_register:
            self._register()
        if connected and self._map_stale:
            self._map_stale = False
            if not self._reread_map():
                self._map_stale = True
        if connected and (resync or self._peers_dirty or not self._peers):
            self._peers_dirty = False
            self._refresh_peers()
            if resync:
                self._reread_map()
        started = time.perf_counter()
        with self._lock:
            roles = drain.Roles()
            if self.state.fenced:
                wanted: frozenset[int] | None = frozenset()
                epoch = self.state.epoch
            elif self._map is None or self._map.epoch == 0:
                wanted = None  # no controller has written a map yet: keep what the kernel has
                epoch = 0
            else:
                wanted = self._map.owned_by(self.host_id)
                roles = drain.Roles.of(self._map, self.host_id)
                epoch = self._map.epoch
                if self._map_stale:
                    # Session lost and the map not re-read yet: let go of what it revokes, take nothing.
                    wanted = wanted & self.state.held
                    roles = roles.within(wanted, self.state.draining)
                    epoch = self.state.epoch
            try:
                if wanted is None:
                    held, draining = self.backend.held(), self.backend.draining()
                else:
                    held, draining = self.backend.apply_drain(wanted, roles.draining, roles.quiet)
                error = ""
            except BackendError as exc:
                held, draining = self._safe_held(), self.state.draining
                error = str(exc)
                log.error("kernel apply failed for epoch %d: %s", epoch, exc)
            changed = held != self.state.held or draining != self.state.draining
            self.state.draining = draining
            self.state.held = held
            self.state.epoch = epoch
            self.state.error = error
            self.state.last_apply_s = time.perf_counter() - started
        if changed:
            log.info("epoch %d: kernel now holds %s%s (%.2f ms)", epoch, _fmt(held),
                     f", draining {_fmt(draining)}" if draining else "", self.state.last_apply_s * 1000)
        self.state.sessions = self._drain_counter.count(draining)
        if connected and not self.state.fenced:
            self._publish(force=resync)
        if connected and not error:
            self._maybe_arm(began)
        if self.on_applied is not None:
            self.on_applied(self.state)
        if error:
            self._wake.set()
            time.sleep(0.2)

    def _safe_held(self) -> frozenset[int]:
        try:
            return self.backend.held()
        except BackendError:
            return self.state.held

    def _reread_map(self) -> bool:
        """Read the map synchronously (True when it was read, or does not exist yet)."""
        try:
            data, _ = self.client.get(layout.map_path(self.spec.name))
        except NoNodeError:
            return True
        except (KazooException, KazooTimeoutError):
            return False
        self._on_map(data, None)
        return True

    def _status_key(self) -> tuple[object, ...]:
        st = self.state
        return (st.epoch, st.held, st.error, st.draining, tuple(sorted(st.sessions.items())))

    def _status(self) -> HookStatus:
        st = self.state
        return HookStatus(self.host_id, st.epoch, st.held, time.time(), st.error, st.draining, dict(st.sessions),
                          self._deadman_s())

    def _deadman_s(self) -> float | None:
        """E for the status, which tells the controller our session's end means our kernel stopped."""
        return None if self.deadman is None else self.deadman.expiry_s

    def _publish(self, force: bool = False) -> None:
        key = self._status_key()
        if not force and key == self._last_published:
            return
        status = self._status()
        try:
            self.store.publish_status(status)
        except CoordinationError as exc:
            log.debug("status not published: %s", exc)
            return
        self._last_published = key

    # ------------------------------------------------------------------ dead-man switch

    def _maybe_arm(self, began: float) -> None:
        """Arm the kernel timer after a cycle that applied a map read in this session, if it is not armed.

        A cycle that took longer than the lapse time may have been stalled with an old map: it re-reads
        instead. The status write just before arming proves the session (hence the member znode) was
        alive after the kernel was converged, so no bucket it holds can have been granted elsewhere
        through "session gone" (planner ``_released``); a published release is never re-granted
        to us without a newer map, which the apply would have followed.
        """
        timing = self.deadman
        if timing is None or self.state.alive_armed or self.state.fenced or self._map_stale:
            return
        if time.monotonic() - began > timing.lapse_s:
            self._lapsed("the apply cycle took longer than the dead-man lapse time")
            return
        status = HookStatus(self.host_id, self.state.epoch, self.state.held, time.time(), self.state.error,
                            deadman_s=self._deadman_s())
        try:
            self.store.publish_status(status)
        except CoordinationError as exc:
            log.debug("not arming the dead-man switch, status not published: %s", exc)
            self._wake.set()
            return
        self._last_published = (self.state.epoch, self.state.held, self.state.error)
        with self._lock:
            if self.state.fenced:
                return
            at = time.monotonic()
            try:
                self.backend.arm_alive()
            except BackendError as exc:
                log.error("could not arm the dead-man switch (the kernel keeps dropping the VIP): %s", exc)
                self._wake.set()
                return
            self._alive_at = at
            self.state.alive_armed = True
        log.info("dead-man switch armed: kernel accepts %s for %.3g s per refresh", _fmt(self.state.held),
                 timing.expiry_s)

    def _lapsed(self, why: str) -> None:
        """The timer may have run out: stop refreshing, re-read the map, re-apply, then re-arm."""
        self.state.alive_armed = False
        self._map_stale = True
        log.warning("dead-man switch not refreshed (%s): re-reading the map before accepting again", why)
        self._wake.set()

    def _deadman_loop(self) -> None:
        assert self.deadman is not None
        while not self._stop.wait(self.deadman.refresh_s):
            try:
                self.refresh_deadman()
            except Exception:  # pragma: no cover - a bug; the timer then lapses, which is the safe side
                log.exception("dead-man refresh failed unexpectedly")

    def refresh_deadman(self) -> None:
        """Extend the kernel timer unless it may have run out (stalled hook) or the hook is fenced."""
        timing = self.deadman
        if timing is None or not self.state.alive_armed:
            return
        with self._lock:
            if self.state.fenced or not self.state.alive_armed:
                return
            at = time.monotonic()
            if at - self._alive_at > timing.lapse_s:
                self._lapsed(f"last refresh {at - self._alive_at:.2f} s ago")
                return
            ok = self.backend.refresh_alive()
            late = time.monotonic() - self._alive_at > timing.expiry_s
            if ok and late:
                # Stalled inside the refresh: it may have revived a timer that had run out (xt_recent
                # cannot refuse that); take it back at once and go through the map again.
                with contextlib.suppress(BackendError):
                    self.backend.disarm_alive()
                ok = False
            if ok:
                self._alive_at = at
                return
        self._lapsed("the kernel timer had already run out" if not late else "a refresh was stalled")

    # ------------------------------------------------------------------ heartbeat and self-fencing

    def zk_reachable(self) -> bool:
        """Did this hook hear from ZooKeeper recently (within the self-fence threshold)?"""
        return self.zk_silent_for() < self.fence_threshold_s

    def zk_silent_for(self) -> float:
        """Seconds since this hook last heard from ZooKeeper."""
        return time.monotonic() - self._last_zk_ok

    def zk_connected_for(self) -> float:
        """Seconds this hook has heard from ZooKeeper without a gap (0 while it is silent)."""
        now = time.monotonic()
        if now - self._last_zk_ok > self._streak_gap_s:
            return 0.0
        return now - self._zk_streak_since

    def _heartbeat_loop(self) -> None:
        interval = max(0.02, self.zk.session_timeout_s / 20)
        path = layout.member_path(self.spec.name, self.host_id)
        while not self._stop.wait(interval):
            try:
                self.client.exists_async(path).get(timeout=interval * 2)
                now = time.monotonic()
                if now - self._last_zk_ok > self._streak_gap_s:
                    self._zk_streak_since = now  # back after a gap: a new streak begins
                self._last_zk_ok = now
            except (KazooException, KazooTimeoutError, OSError):
                pass
            except Exception:
                pass
            self._check_fence()

    def _check_fence(self) -> None:
        silent = time.monotonic() - self._last_zk_ok
        if silent < self.fence_threshold_s:
            self._outage_confirmed = False
            self._outage_confirmed_at = None
            self._peers_back_since = None
            if self.state.fenced:
                log.warning("ZooKeeper reachable again after self-fencing: re-applying the map")
                with self._lock:
                    self.state.fenced = False
                    self.state.fence_reason = ""
                self._wake.set()
            return
        if self.state.fenced:
            return
        peer_timeout = min(0.3, max(0.05, self.zk.session_timeout_s * 0.1))
        answers = ask_peers(self.spec.name, self.host_id, self._peers, peer_timeout, self.peer_secret)
        fresh_s = self.fence_threshold_s / 2
        now = time.monotonic()
        if self._outage_confirmed and any(fencing.reaches_zookeeper(a, fresh_s) for a in answers.values()):
            # Counted from the first sighting and never restarted while this silence lasts.
            self._peers_back_since = self._peers_back_since or now
        verdict = fencing.decide(
            time.monotonic() - self._last_zk_ok,
            self.fence_threshold_s,
            frozenset(self._peers),
            answers,
            fresh_s=fresh_s,
            outage_confirmed=self._outage_confirmed,
            peers_back_for=0.0 if self._peers_back_since is None else now - self._peers_back_since,
            confirmed_ago=None if self._outage_confirmed_at is None else now - self._outage_confirmed_at,
            # A recovering ZooKeeper re-arms every session with a full timeout, so waiting 0.6 of it
            # for our own reconnect (a restarted ensemble takes clients back one after another) still
            # releases before an isolated host's session can expire (check period + peer query < 0.2).
            grace_s=self.zk.session_timeout_s * 0.6,
            # Waiting for our own reconnect while peers are just back from the same outage must end
            # well before our session could expire (the check period and the peer query come on top).
            hard_limit_s=self.zk.session_timeout_s * 0.7,
        )
        self._outage_confirmed = self._outage_confirmed or verdict.outage
        if verdict.confirmed:
            self._outage_confirmed_at = now
        if verdict.action == "release":
            with self._lock:
                self.state.fenced = True
                self.state.alive_armed = False  # re-armed only after the map is applied again
                self.state.fence_reason = verdict.reason
                try:
                    self.state.held = self.backend.apply(frozenset())
                except BackendError as exc:
                    log.error("self-fence could not release every bucket: %s", exc)
            log.warning("self-fenced, released all buckets: %s", verdict.reason)
        elif verdict.reason != self.state.fence_reason:
            self.state.fence_reason = verdict.reason
            log.warning("ZooKeeper silent for %.2f s: %s", silent, verdict.reason)


def _fmt(buckets: frozenset[int]) -> str:
    return "{" + ",".join(str(b) for b in sorted(buckets)) + "}" if buckets else "nothing"
