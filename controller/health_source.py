"""The controller's liveness input, as a narrow interface.

The controller needs only two things from whatever judges liveness: the current verdict per host,
and a call when a verdict changes (so it reacts at once). The SSH probe scheduler implements it in
production; tests drive :class:`ManualHealth` directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from controller.core.model import Health, HostHealth


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
