"""An in-memory backend: the kernel is a Python set. For tests of coordination, never as proof of kernels."""

from __future__ import annotations

import threading

from controller.core.errors import BackendError
from node_hook.backends.base import BucketBackend


class MemoryBackend(BucketBackend):
    """Holds buckets in memory; ``fail_next`` lets a test inject one kernel error."""

    name = "memory"

    def __init__(self, total: int, initial: frozenset[int] = frozenset()) -> None:
        self.total = total
        self._held = set(initial)
        self._lock = threading.Lock()
        self.installed = False
        self.fail_next: str | None = None

    def _maybe_fail(self) -> None:
        if self.fail_next:
            message, self.fail_next = self.fail_next, None
            raise BackendError(message)

    def check_prerequisites(self) -> list[str]:
        return []

    def install(self, initial: frozenset[int] = frozenset()) -> None:
        with self._lock:
            if not self.installed and not self._held:
                self._held = set(initial)
            self.installed = True

    def held(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._held)

    def grant(self, bucket: int) -> None:
        if not 1 <= bucket <= self.total:
            raise BackendError(f"bucket {bucket} is outside 1..{self.total}")
        with self._lock:
            self._maybe_fail()
            self._held.add(bucket)

    def revoke(self, bucket: int) -> None:
        with self._lock:
            self._maybe_fail()
            self._held.discard(bucket)

    def remove(self) -> None:
        with self._lock:
            self._held.clear()
            self.installed = False
