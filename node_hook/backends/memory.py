"""An in-memory backend: the kernel is a Python set. For tests of coordination, never as proof of kernels.

With a *journal* file the "kernel" becomes observable and persistent, like a real one: every grant
and revoke is appended (``<CLOCK_MONOTONIC seconds> grant|revoke <bucket>``) with an unbuffered
O_APPEND write, so it survives a SIGKILL of the hook; a restarted hook replays it and adopts what
the kernel held. A ``reset`` line (written by a test harness when it "powers the host off") empties
it. Grant lines carry the time *before* the bucket is added and revoke lines the time *after* it is
removed, so the intervals a checker rebuilds from journals are conservative: they contain the real
holding time, and two hooks' intervals that intersect flag a possible overlap.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable

from controller.core.errors import BackendError
from node_hook.backends.base import BucketBackend


def replay_journal(text: str) -> set[int]:
    """The buckets held after the journal's lines (unknown or torn lines are ignored)."""
    held: set[int] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == "reset":
            held.clear()
        elif len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "grant":
                held.add(int(parts[2]))
            elif parts[1] == "revoke":
                held.discard(int(parts[2]))
    return held


class MemoryBackend(BucketBackend):
    """Holds buckets in memory; ``fail_next`` lets a test inject one kernel error."""

    name = "memory"
    can_drain = True

    def __init__(self, total: int, initial: frozenset[int] = frozenset(), journal: str | None = None) -> None:
        self.total = total
        self._held = set(initial)
        self._lock = threading.Lock()
        self.installed = False
        self.fail_next: str | None = None
        #: drain roles (not journaled: the overlap checker judges only buckets accepting new connections)
        self._draining: set[int] = set()
        self.quiet: frozenset[int] = frozenset()
        #: what a test says conntrack tracks per bucket (node_hook.agent counts through this if set)
        self.sessions: dict[int, int] | None = None
        self._journal_fd: int | None = None
        if journal is not None:
            self.attach_journal(journal)

    def attach_journal(self, path: str) -> None:
        """Persist the "kernel" in ``path``: adopt what it records, append every change from now on."""
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                adopted = replay_journal(file.read())
            self._journal_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except FileNotFoundError:
            adopted = set()
            self._journal_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise BackendError(f"memory journal {path}: {exc.strerror}; check the path") from None
        with self._lock:
            self._held = adopted
            self.installed = bool(adopted)

    def _log(self, at: float, op: str, bucket: int) -> None:
        if self._journal_fd is not None:
            os.write(self._journal_fd, f"{at:.6f} {op} {bucket}\n".encode())

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
                for bucket in sorted(initial):
                    self._log(time.monotonic(), "grant", bucket)
            self.installed = True

    def held(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._held)

    def grant(self, bucket: int) -> None:
        if not 1 <= bucket <= self.total:
            raise BackendError(f"bucket {bucket} is outside 1..{self.total}")
        with self._lock:
            self._maybe_fail()
            if bucket not in self._held:
                self._log(time.monotonic(), "grant", bucket)
                self._held.add(bucket)

    def revoke(self, bucket: int) -> None:
        with self._lock:
            self._maybe_fail()
            if bucket in self._held:
                self._held.discard(bucket)
                self._log(time.monotonic(), "revoke", bucket)

    def draining(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._draining)

    def apply(self, wanted: Iterable[int]) -> frozenset[int]:
        return self.apply_drain(wanted)[0]

    def apply_drain(
        self, wanted: Iterable[int], draining: Iterable[int] = (), quiet: Iterable[int] = ()
    ) -> tuple[frozenset[int], frozenset[int]]:
        want = frozenset(wanted)
        drain = frozenset(draining) - want
        have = self.held()
        for bucket in sorted(have - want):
            self.revoke(bucket)
        with self._lock:
            self._draining = set(drain)
            self.quiet = frozenset(quiet) & want
        for bucket in sorted(want - have):
            self.grant(bucket)
        return self.held(), self.draining()

    def remove(self) -> None:
        with self._lock:
            self._draining.clear()
            self.quiet = frozenset()
            for bucket in sorted(self._held):
                self._log(time.monotonic(), "revoke", bucket)
            self._held.clear()
            self.installed = False
