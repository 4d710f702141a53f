"""One thread that fires callbacks at deadlines: a hard stop for blocking paramiko calls.

paramiko's ``Channel.exec_command`` waits without a timeout; closing the transport is the only way
to unblock it. One shared thread costs less than a ``threading.Timer`` (a thread) per login.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Watchdog:
    """Calls ``callback()`` at ``deadline`` (monotonic) unless disarmed first."""

    def __init__(self, name: str = "probe-watchdog") -> None:
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def arm(self, deadline: float, callback: Callable[[], None]) -> int:
        with self._cv:
            token = next(self._ids)
            self._armed[token] = callback
            heapq.heappush(self._heap, (deadline, token))
            self._cv.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cv:
            self._armed.pop(token, None)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while True:
            with self._cv:
                if self._stopped:
                    return
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                now = time.monotonic()
                if not self._heap or self._heap[0][0] > now:
                    wait = self._heap[0][0] - now if self._heap else None
                    self._cv.wait(wait)
                    continue
                _, token = heapq.heappop(self._heap)
                callback = self._armed.pop(token)
            try:
                callback()
            except Exception:  # a failing callback must not kill the watchdog
                log.exception("watchdog callback failed")
