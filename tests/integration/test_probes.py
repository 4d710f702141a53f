"""SSH probes against real Debian sshd instances on 127.0.0.x: every failure kind and recovery.

Each scenario runs the real ``ProbeScheduler`` with the default timings (so the numbers here are the
product's), waits for the transition it must cause, undoes the fault and waits for the rise back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterlab.sshd import PROBE_USER, end_processes, fill_process_table
from sshd_fixtures import HealthRecorder, ProbeKeys, SshdFactory

from controller.core.model import Health, ProbeSettings
from controller.probes import ProbeScheduler, ProbeTarget
from controller.probes.errors import ProbeConfigError

pytestmark = pytest.mark.integration

UP_TIMEOUT_S = 8.0  # first UP needs `rise` banner probes and `rise` logins, on a shared busy machine


def target_of(sshd: object, host_id: str = "h1") -> ProbeTarget:
    return ProbeTarget(host_id, sshd.address, sshd.port)  # type: ignore[attr-defined]


def trust(settings: ProbeSettings, *sshds: object) -> None:
    with open(settings.known_hosts, "a") as f:
        for s in sshds:
            f.write(s.known_hosts_line() + "\n")  # type: ignore[attr-defined]


@contextlib.contextmanager
def running(targets: list[ProbeTarget], settings: ProbeSettings, rec: HealthRecorder) -> Iterator[ProbeScheduler]:
    sched = ProbeScheduler(targets, settings, rec)
    sched.start()
    try:
        yield sched
    finally:
        sched.stop()


def test_healthy_host_comes_up_and_stays_up(sshd_factory: SshdFactory, probe_settings: ProbeSettings,
                                            health_recorder: HealthRecorder) -> None:
    sshd = sshd_factory("healthy")
    trust(probe_settings, sshd)
    with running([target_of(sshd)], probe_settings, health_recorder) as sched:
        up = health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S)
        assert up.latency_ms is not None and up.latency_ms < 300
        mark = time.monotonic()
        time.sleep(3.0)  # > one login interval: level 2 keeps it up as well
        assert health_recorder.states("h1", after=mark) == []
        assert sched.snapshot()["h1"].state is Health.UP
        assert sched.stats.level2 >= 3


def test_connection_refused_is_down_fast_then_rises(sshd_factory: SshdFactory, probe_settings: ProbeSettings,
                                                   health_recorder: HealthRecorder) -> None:
    sshd = sshd_factory("refused")
    trust(probe_settings, sshd)
    with running([target_of(sshd)], probe_settings, health_recorder):
        health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S)
        t0 = time.monotonic()
        sshd.stop()
        down = health_recorder.wait_for("h1", Health.DOWN, 3.0, after=t0)
        assert "connection refused" in down.reason
        assert time.monotonic() - t0 < 0.8  # definite: two refusals one interval apart
        t1 = time.monotonic()
        sshd.start()
        health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S, after=t1)


def test_hung_sshd_is_down_within_a_second_and_recovers(sshd_factory: SshdFactory,
                                                        probe_settings: ProbeSettings,
                                                        health_recorder: HealthRecorder) -> None:
    sshd = sshd_factory("hung")
    trust(probe_settings, sshd)
    with running([target_of(sshd)], probe_settings, health_recorder) as sched:
        health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S)
        t0 = time.monotonic()
        sshd.pause()
        try:
            down = health_recorder.wait_for("h1", Health.DOWN, 3.0, after=t0)
            detected = time.monotonic() - t0
        finally:
            sshd.resume()
        # 300 ms, the floor, or a little above where the adaptive timeout learnt a busy machine's jitter
        assert re.search(r"banner timeout (\d+) ms", down.reason), down.reason
        assert detected < 1.0, f"hung sshd detected after {detected:.3f} s"
        # timed-out sockets wait for a late banner, but boundedly (the hung sshd never sends one)
        assert sched._banner.in_flight <= probe_settings.late_sockets_per_host + 4
        assert Health.SUSPECT in health_recorder.states("h1", after=t0)
        health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S, after=t0)


class DelayRelay:
    """A TCP relay that holds every server->client chunk for ``delay_s``: a slow network path.

    ``banner_only``: hold only each connection's first server chunk (the banner): an sshd slow to
    fork and answer, as on a busy host, whose sessions then run at normal speed.
    """

    def __init__(self, upstream: tuple[str, int], delay_s: float, banner_only: bool = False) -> None:
        self.upstream = upstream
        self.delay_s = delay_s
        self.banner_only = banner_only
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address, self.port = self.listener.getsockname()[:2]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, fn: object, *args: object) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                client.close()
                continue
            self._socks += [client, server]
            self._spawn(self._pump, client, server, 0.0)
            self._spawn(self._pump, server, client, None)

    def _pump(self, src: socket.socket, dst: socket.socket, delay: float | None) -> None:
        first = True
        with selectors.DefaultSelector() as sel:
            sel.register(src, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not sel.select(0.1):
                    continue
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if delay is not None:
                    time.sleep(delay)
                elif first or not self.banner_only:
                    time.sleep(self.delay_s)
                first = False
                try:
                    dst.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for t in self._threads:
            t.join(timeout=2)
        for s in self._socks:
            s.close()


def history(rec: HealthRecorder, t0: float) -> str:
    return "\n".join(f"{at - t0:+.3f} {h.host_id} {h.state.value}: {h.reason}" for at, h in rec.events)


def relay_target(relay: DelayRelay, sshd: object, settings: ProbeSettings, host_id: str) -> ProbeTarget:
    line = sshd.known_hosts_line(relay.address).replace(  # type: ignore[attr-defined]
        f"[{relay.address}]:{sshd.port}", f"[{relay.address}]:{relay.port}")  # type: ignore[attr-defined]
    with open(settings.known_hosts, "a") as f:
        f.write(line + "\n")
    return ProbeTarget(host_id, relay.address, relay.port)


def test_slow_path_tolerated_when_within_timeout_down_when_beyond(
    sshd_factory: SshdFactory, probe_settings: ProbeSettings, health_recorder: HealthRecorder
) -> None:
    """A host whose banners get slower step by step up to 600 ms (twice the banner timeout floor) is
    alive: late banners and the adaptive timeout keep it out of DOWN. A banner that stops coming
    (10 s: nothing within the late-banner window) is DOWN as fast as a hang."""
    sshd = sshd_factory("slow")
    relay = DelayRelay((sshd.address, sshd.port), delay_s=0.1, banner_only=True)
    try:
        target = relay_target(relay, sshd, probe_settings, "h1")
        with running([target], probe_settings, health_recorder) as sched:
            health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S)
            mark = time.monotonic()
            time.sleep(2.0)  # 100 ms banners: slow, yet within every timeout
            assert Health.DOWN not in health_recorder.states("h1", after=mark)
            assert sched.snapshot()["h1"].state is Health.UP
            for step in (0.2, 0.3, 0.4, 0.5, 0.6):
                relay.delay_s = step
                time.sleep(1.5)
            time.sleep(2.0)  # at 600 ms for 3.5 s in all
            seen = health_recorder.states("h1", after=mark)
            assert Health.DOWN not in seen, history(health_recorder, mark)
            assert sched.snapshot()["h1"].state in (Health.UP, Health.SUSPECT)
            assert sched._tracker.banner_timeout("h1", time.time()) > 0.6  # judged by its own behaviour now
            relay.delay_s = 10.0  # no banner within the late window: as good as hung
            t0 = time.monotonic()
            down = health_recorder.wait_for("h1", Health.DOWN, 3.0, after=t0)
            assert "banner timeout" in down.reason
            assert time.monotonic() - t0 < 2.5  # cap (1 s) + two intervals + the probe in flight
            relay.delay_s = 0.0
            health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S, after=t0)
    finally:
        relay.close()


def test_several_hosts_slow_at_once_stay_up_and_a_hung_one_still_goes_down(
    sshd_factory: SshdFactory, probe_settings: ProbeSettings, health_recorder: HealthRecorder
) -> None:
    """Three of four paths jump from fast to 700 ms at the same moment (what the controller sees when
    its own CPU or network is the problem): they are held SUSPECT, never DOWN. A fourth host hung at
    the same time is held too, but only up to hold_max_s without any sign of life."""
    settings = dataclasses.replace(probe_settings, login_interval_s=0)  # banners only: the rule under test
    sshd = sshd_factory("fleet")
    hung = sshd_factory("fleet-hung")
    relays = [DelayRelay((sshd.address, sshd.port), delay_s=0.0) for _ in range(3)]
    try:
        targets = [relay_target(r, sshd, settings, f"slow{i}") for i, r in enumerate(relays)]
        trust(settings, hung)
        targets.append(target_of(hung, "hung"))
        with running(targets, settings, health_recorder) as sched:
            for t in targets:
                health_recorder.wait_for(t.host_id, Health.UP, UP_TIMEOUT_S)
            t0 = time.monotonic()
            for r in relays:
                r.delay_s = 0.7
            hung.pause()
            try:
                down = health_recorder.wait_for("hung", Health.DOWN, settings.hold_max_s + 3.0, after=t0)
                detected = time.monotonic() - t0
                time.sleep(max(0.0, 5.0 - detected))
            finally:
                hung.resume()
            assert "banner timeout" in down.reason
            for i in range(3):
                seen = health_recorder.states(f"slow{i}", after=t0)
                assert Health.DOWN not in seen, history(health_recorder, t0)
                assert Health.SUSPECT in seen  # noticed, held, never failed
                assert sched.snapshot()[f"slow{i}"].state in (Health.UP, Health.SUSPECT)
            assert sched._banner.late_banners > 0
    finally:
        for r in relays:
            r.close()


def test_rejected_key_is_caught_by_level2_only(sshd_factory: SshdFactory, probe_settings: ProbeSettings,
                                              probe_keys: ProbeKeys, health_recorder: HealthRecorder) -> None:
    sshd = sshd_factory("rejects", probe_keys=[probe_keys.other_public])
    trust(probe_settings, sshd)
    with running([target_of(sshd)], probe_settings, health_recorder) as sched:
        down = health_recorder.wait_for("h1", Health.DOWN, UP_TIMEOUT_S)
        assert down.reason.startswith("level 2: auth failed: key SHA256:")
        assert f"rejected for user {PROBE_USER}" in down.reason
        assert sched._tracker.level_up("h1", 1)  # the banner level alone would call it healthy
        # Fix authorized_keys (sshd reads it at every login): the host rises again.
        keys_file = sshd.dir / f"authorized_keys.{PROBE_USER}"
        keys_file.write_text(keys_file.read_text().replace(probe_keys.other_public, probe_keys.public))
        t0 = time.monotonic()
        health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S, after=t0)


def test_changed_host_key_marks_down_loudly_and_unknown_key_is_refused(
    sshd_factory: SshdFactory, probe_settings: ProbeSettings, health_recorder: HealthRecorder
) -> None:
    sshd = sshd_factory("rekeyed")
    trust(probe_settings, sshd)
    with running([target_of(sshd)], probe_settings, health_recorder) as sched:
        health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S)
        t0 = time.monotonic()
        sshd.replace_host_key()
        sshd.restart()
        down = health_recorder.wait_for("h1", Health.DOWN, 6.0, after=t0)
        # On a loaded machine the restart itself may be refused twice first (DOWN: connection
        # refused); the host then stays DOWN and its reason must become the changed key.
        while not (down.state is Health.DOWN and "host key changed" in down.reason) and time.monotonic() < t0 + 8.0:
            time.sleep(0.05)
            down = sched.snapshot()["h1"]
        assert down.state is Health.DOWN
        assert f"host key changed for {sshd.address}:{sshd.port}" in down.reason
        # The operator confirms the re-install by replacing the line: it rises without a restart.
        Path(probe_settings.known_hosts).write_text(sshd.known_hosts_line() + "\n")
        t1 = time.monotonic()
        health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S, after=t1)
    # first contact, policy "refuse" (the default): no entry means down, nothing recorded.
    Path(probe_settings.known_hosts).write_text("")
    rec = HealthRecorder()
    with running([target_of(sshd, "h2")], probe_settings, rec):
        down = rec.wait_for("h2", Health.DOWN, UP_TIMEOUT_S)
        assert "unknown host key" in down.reason and "accept-new" in down.reason
    assert Path(probe_settings.known_hosts).read_text() == ""


def test_accept_new_records_the_key_on_first_contact(sshd_factory: SshdFactory, probe_settings: ProbeSettings,
                                                     health_recorder: HealthRecorder) -> None:
    sshd = sshd_factory("firstcontact")
    settings = dataclasses.replace(probe_settings, first_contact="accept-new")
    with running([target_of(sshd)], settings, health_recorder):
        health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S)
    line = Path(settings.known_hosts).read_text().strip()
    assert line == sshd.known_hosts_line()


def test_exhausted_process_limit_caught_by_level2_not_level1(
    sshd_factory: SshdFactory, probe_settings: ProbeSettings, health_recorder: HealthRecorder
) -> None:
    # The sshd and every session it starts carry RLIMIT_NPROC=N (root's listener is exempt, the
    # probe user's processes are not); N sleeping processes of that user use the limit up.
    limit = 8
    sshd = sshd_factory("forkbombed", nproc=limit)
    trust(probe_settings, sshd)
    fillers: list = []
    try:
        with running([target_of(sshd)], probe_settings, health_recorder) as sched:
            health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S)
            t0 = time.monotonic()
            fillers = fill_process_table(PROBE_USER, limit)
            down = health_recorder.wait_for("h1", Health.DOWN, 8.0, after=t0)
            assert down.reason.startswith("level 2: exec failed"), down.reason
            assert sched._tracker.level_up("h1", 1), "level 1 still sees a healthy banner"
            end_processes(fillers)
            t1 = time.monotonic()
            health_recorder.wait_for("h1", Health.UP, UP_TIMEOUT_S, after=t1)
    finally:
        end_processes(fillers)


def test_bad_probe_key_path_is_one_clear_error(probe_settings: ProbeSettings, health_recorder: HealthRecorder,
                                               sshd_workdir: Path) -> None:
    settings = dataclasses.replace(probe_settings, key_file=str(sshd_workdir / "missing_key"))
    sched = ProbeScheduler([ProbeTarget("h1", "127.0.0.1", 1)], settings, health_recorder)
    try:
        with pytest.raises(ProbeConfigError, match="does not exist: create it with ssh-keygen"):
            sched.start()
    finally:
        sched.stop()
    assert not os.path.exists(settings.key_file)


def test_many_hosts_one_hung_does_not_delay_the_others(sshd_factory: SshdFactory,
                                                       probe_settings: ProbeSettings,
                                                       health_recorder: HealthRecorder) -> None:
    sshds = [sshd_factory(f"multi{i}") for i in range(4)]
    trust(probe_settings, *sshds)
    targets = [target_of(s, f"h{i}") for i, s in enumerate(sshds)]
    with running(targets, probe_settings, health_recorder) as sched:
        for t in targets:
            health_recorder.wait_for(t.host_id, Health.UP, UP_TIMEOUT_S)
        t0 = time.monotonic()
        sshds[0].pause()
        try:
            health_recorder.wait_for("h0", Health.DOWN, 3.0, after=t0)
            time.sleep(2.5)  # the others keep their logins going while h0's hang until the deadline
        finally:
            sshds[0].resume()
        for t in targets[1:]:
            assert health_recorder.states(t.host_id, after=t0) == [], t.host_id
            assert sched.snapshot()[t.host_id].state is Health.UP
