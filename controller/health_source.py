"""The controller's liveness input, as a narrow interface.

The controller needs only two things from whatever judges liveness: the current verdict per host,
and a call when a verdict changes (so it reacts at once). The SSH probe scheduler implements it in
production; tests drive :class:`ManualHealth` directly, and :class:`FileHealth` reads the *external
health input* (a JSON file another checker writes; format in controller.core.health_file).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from controller.core.errors import SchemaError
from controller.core.health_file import MAX_HEALTH_FILE_BYTES, parse_health_file
from controller.core.model import Health, HostHealth

log = logging.getLogger("clusterip.health")


class HealthSource(Protocol):
    def snapshot(self) -> dict[str, HostHealth]: ...

    def subscribe(self, callback: Callable[[HostHealth], None]) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ManualHealth:
    """A health source whose verdicts a test (or an operator tool) sets by hand."""

    def __init__(self, hosts: Iterable[str], initial: Health = Health.UP) -> None:
        now = time.time()
        self._health = {h: HostHealth(h, initial, now, "set by hand") for h in hosts}
        self._callbacks: list[Callable[[HostHealth], None]] = []
        self._lock = threading.Lock()

    def set(self, host: str, state: Health, reason: str = "") -> None:
        health = HostHealth(host, state, time.time(), reason)
        with self._lock:
            self._health[host] = health
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback(health)

    def snapshot(self) -> dict[str, HostHealth]:
        with self._lock:
            return dict(self._health)

    def subscribe(self, callback: Callable[[HostHealth], None]) -> None:
        self._callbacks.append(callback)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class ProbeHealth:
    """Adapts the SSH ProbeScheduler (controller.probes) to the HealthSource interface."""

    def __init__(self, spec_hosts: Iterable[tuple[str, str, int]], settings: object) -> None:
        from controller.core.model import ProbeSettings
        from controller.probes.scheduler import ProbeScheduler
        from controller.probes.target import ProbeTarget

        assert isinstance(settings, ProbeSettings)
        self._callbacks: list[Callable[[HostHealth], None]] = []
        targets = [ProbeTarget(h, addr, port) for h, addr, port in spec_hosts]
        self.scheduler = ProbeScheduler(targets, settings, self._changed)

    def _changed(self, health: HostHealth) -> None:
        for callback in list(self._callbacks):
            callback(health)

    def snapshot(self) -> dict[str, HostHealth]:
        return self.scheduler.snapshot()

    def subscribe(self, callback: Callable[[HostHealth], None]) -> None:
        self._callbacks.append(callback)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()


class FileHealth:
    """External health input: verdicts from a JSON file that another checker replaces atomically.

    Checked every ``poll_s`` (10 ms) by comparing (inode, size, mtime), which works on any
    filesystem (network, bind mounts), and at once when inotify reports a change in the file's
    directory (local filesystems): polling alone made the reaction wait half a poll period on
    average, up to a whole one. A missing file means every host is ``unknown`` (keep, give nothing
    new); an unreadable or invalid file keeps the last good verdicts and is reported once, because
    flapping every host to unknown on a half-written file would be worse.
    """

    def __init__(self, path: str, hosts: Iterable[str], poll_s: float = 0.01) -> None:
        self.path = path
        self.hosts = tuple(hosts)
        self.poll_s = poll_s
        now = time.time()
        self._health = {h: HostHealth(h, Health.UNKNOWN, now, "no health file yet") for h in self.hosts}
        self._callbacks: list[Callable[[HostHealth], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._seen: tuple[int, int, int] | None = None
        self._problem = ""
        self._notify: _DirectoryNotify | None = None
        self._thread = threading.Thread(target=self._run, name="health-file", daemon=True)
        self.poll()

    def poll(self) -> bool:
        """Re-read the file if it changed; return True when a verdict changed (callbacks were called)."""
        try:
            st = os.stat(self.path)
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            key = (0, 0, 0)
        if key == self._seen:
            return False
        self._seen = key
        try:
            text = "{}" if key == (0, 0, 0) else _read_limited(self.path)
            with self._lock:
                previous = dict(self._health)
            fresh, warnings = parse_health_file(text, self.hosts, previous, time.time())
        except (OSError, SchemaError) as exc:
            self._report(f"{self.path}: {exc}; keeping the previous verdicts")
            return False
        self._report("; ".join(warnings))
        changed = [h for h in fresh.values() if previous[h.host_id].state is not h.state]
        with self._lock:
            self._health = fresh
            callbacks = list(self._callbacks)
        for health in changed:
            log.info("host %s is %s (%s)", health.host_id, health.state.value, health.reason)
            for callback in callbacks:
                callback(health)
        return bool(changed)

    def _report(self, problem: str) -> None:
        if problem and problem != self._problem:
            log.warning("health file: %s", problem)
        self._problem = problem

    def _run(self) -> None:
        notify = self._notify
        try:
            while not self._stop.is_set():
                if notify is None:
                    self._stop.wait(self.poll_s)
                else:
                    notify.wait(self.poll_s)
                if not self._stop.is_set():
                    self.poll()
        finally:
            if notify is not None:
                notify.close()

    def snapshot(self) -> dict[str, HostHealth]:
        with self._lock:
            return dict(self._health)

    def subscribe(self, callback: Callable[[HostHealth], None]) -> None:
        self._callbacks.append(callback)

    def start(self) -> None:
        # Watch before the thread runs and read once more after: no change can fall in between.
        self._notify = _DirectoryNotify.open(os.path.dirname(os.path.abspath(self.path)))
        self.poll()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._notify is not None:
            self._notify.interrupt()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


def _read_limited(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        text = file.read(MAX_HEALTH_FILE_BYTES + 1)
    return text


class _DirectoryNotify:
    """inotify on one directory through libc (no extra dependency): ``wait`` returns as soon as an
    entry of it is written, created, renamed or removed, or after the timeout. Only a wake-up
    hint: the caller still compares the file's (inode, size, mtime), so a spurious or missed event
    costs nothing but one poll period."""

    _IN_NONBLOCK_CLOEXEC = os.O_NONBLOCK | os.O_CLOEXEC
    #: IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
    _MASK = 0x002 | 0x004 | 0x008 | 0x040 | 0x080 | 0x100 | 0x200

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    @classmethod
    def open(cls, directory: str) -> _DirectoryNotify | None:
        """None where inotify is unavailable (not Linux, no libc, limits reached): poll only."""
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fd = libc.inotify_init1(cls._IN_NONBLOCK_CLOEXEC)
            if fd < 0:
                return None
            if libc.inotify_add_watch(fd, os.fsencode(directory), cls._MASK) < 0:
                os.close(fd)
                return None
        except (OSError, AttributeError):
            return None
        return cls(fd)

    def wait(self, timeout_s: float) -> None:
        ready, _, _ = select.select([self.fd, self._wake_r], [], [], timeout_s)
        if self.fd in ready:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while os.read(self.fd, 64 * (struct.calcsize("iIII") + 256)):
                    pass

    def interrupt(self) -> None:
        """End a ``wait`` at once (stop)."""
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        for fd in (self.fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
