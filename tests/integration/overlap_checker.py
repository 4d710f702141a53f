"""Exclusivity checker: fails a test if any bucket is ever held by two hooks at once.

Two independent sources, each sampled from its own thread at ~50 Hz while a test runs:

* **published state** — every hook's status znode, counted only while its member znode is live
  (a status of a hook whose session is gone claims nothing). One pipelined batch per sample lists
  the members, reads the statuses, and lists the members again; a hook counts as live only if it is
  listed both times, so the status read in between is a live hook's claim. (A hook that died *and*
  re-registered between the two listings, within milliseconds, would also count: registration
  writes member and status in one transaction, so its status is then its new, true claim.)
* **the memory "kernels"** — each hook's journal (node_hook.backends.memory), the ground truth of
  what the hook's backend held. Sampled for the running view, and at the end replayed exactly:
  the journals carry CLOCK_MONOTONIC times (one clock for all processes) with conservative
  intervals, so any intersection of two hooks' intervals for a bucket is reported even if no
  sample happened to fall into it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from controller.core import schema
from controller.core import zk_layout as layout
from controller.core.errors import SchemaError

INF = float("inf")


@dataclass
class Interval:
    host: str
    bucket: int
    start: float
    end: float = INF


def journal_intervals(host: str, text: str) -> list[Interval]:
    """Holding intervals per bucket from one journal (see node_hook.backends.memory)."""
    open_: dict[int, Interval] = {}
    done: list[Interval] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            at = float(parts[0])
        except ValueError:
            continue
        if parts[1] == "reset":
            for interval in open_.values():
                interval.end = at
                done.append(interval)
            open_.clear()
        elif len(parts) == 3 and parts[2].isdigit():
            bucket = int(parts[2])
            if parts[1] == "grant" and bucket not in open_:
                open_[bucket] = Interval(host, bucket, at)
            elif parts[1] == "revoke" and bucket in open_:
                interval = open_.pop(bucket)
                interval.end = at
                done.append(interval)
    return done + list(open_.values())


def find_overlaps(intervals: list[Interval]) -> list[str]:
    """Every pair of different hosts whose intervals for one bucket intersect."""
    problems: list[str] = []
    by_bucket: dict[int, list[Interval]] = {}
    for interval in intervals:
        by_bucket.setdefault(interval.bucket, []).append(interval)
    for bucket, items in sorted(by_bucket.items()):
        items.sort(key=lambda i: i.start)
        for i, a in enumerate(items):
            for b in items[i + 1 :]:
                if b.start >= a.end:
                    break
                if a.host != b.host:
                    problems.append(
                        f"bucket {bucket}: {a.host} held it {a.start:.3f}..{a.end:.3f} and {b.host} "
                        f"{b.start:.3f}..{b.end:.3f} (CLOCK_MONOTONIC)"
                    )
    return problems


@dataclass
class OverlapChecker:
    """Samples published statuses and journals from a thread; :meth:`stop` returns the violations."""

    client: KazooClient
    cluster: str
    hosts: tuple[str, ...]
    journals: Mapping[str, Path]
    interval_s: float = 0.02
    #: samples of the published statuses (ZooKeeper answering) and of the journals
    samples: int = 0
    journal_samples: int = 0
    violations: list[str] = field(default_factory=list)
    errors: int = 0
    #: seconds the status sampler spent in attempts ZooKeeper did not answer (outages on purpose)
    unreachable_s: float = 0.0
    started: float = 0.0
    elapsed: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> OverlapChecker:
        self.started = time.monotonic()
        for target, name in ((self._run_status, "overlap-status"), (self._run_journals, "overlap-journals")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[str]:
        """Stop sampling, replay the journals exactly, and return every violation found."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.elapsed = time.monotonic() - self.started
        intervals: list[Interval] = []
        for host, path in self.journals.items():
            if path.exists():
                intervals += journal_intervals(host, path.read_text(errors="replace"))
        self.violations += [f"journals: {p}" for p in find_overlaps(intervals)]
        return self.violations

    @property
    def rate_hz(self) -> float:
        """The lower of the two sampling rates (statuses: over the time ZooKeeper answered)."""
        answered = self.elapsed - self.unreachable_s
        status_rate = self.samples / answered if answered > 0.5 else float("inf")
        journal_rate = self.journal_samples / self.elapsed if self.elapsed > 0 else 0.0
        return min(status_rate, journal_rate)

    def describe(self) -> str:
        answered = self.elapsed - self.unreachable_s
        return (
            f"{self.samples} status samples in {answered:.1f} s of ZooKeeper answering, "
            f"{self.journal_samples} journal samples in {self.elapsed:.1f} s"
        )

    def _run_status(self) -> None:
        self._every(self._try_sample)

    def _run_journals(self) -> None:
        self._every(self._sample_journals)

    def _try_sample(self) -> None:
        began = time.monotonic()
        try:
            self.sample()
        except (KazooException, KazooTimeoutError, OSError):
            self.errors += 1  # ZooKeeper may be down on purpose; the journals are still sampled
            self.unreachable_s += time.monotonic() - began

    def _every(self, action: Callable[[], None]) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            action()
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
            self._stop.wait(max(0.0, delay))

    def sample(self) -> None:
        members = layout.members_path(self.cluster)
        pending_before = self.client.get_children_async(members)
        statuses = {h: self.client.get_async(layout.status_path(self.cluster, h)) for h in self.hosts}
        pending_after = self.client.get_children_async(members)
        live = set(pending_before.get(timeout=0.5)) & set(pending_after.get(timeout=0.5))
        claims: dict[str, frozenset[int]] = {}
        for host in self.hosts:
            try:
                data, _ = statuses[host].get(timeout=0.5)
            except NoNodeError:
                continue
            if host not in live:
                continue
            try:
                claims[host] = schema.decode_status(data, expected_host=host).held
            except SchemaError as exc:
                self.violations.append(f"status of {host} unreadable: {exc}")
        self._check("published status of live hooks", claims)
        self.samples += 1

    def _sample_journals(self) -> None:
        from node_hook.backends.memory import replay_journal

        held: dict[str, frozenset[int]] = {}
        for host, path in self.journals.items():
            try:
                held[host] = frozenset(replay_journal(path.read_text(errors="replace")))
            except FileNotFoundError:
                continue
        self._check("memory kernels (journals)", held)
        self.journal_samples += 1

    def _check(self, what: str, held: Mapping[str, frozenset[int]]) -> None:
        owner: dict[int, str] = {}
        for host, buckets in sorted(held.items()):
            for bucket in buckets:
                if bucket in owner:
                    message = f"{what}: bucket {bucket} held by {owner[bucket]} and {host} at {time.monotonic():.3f}"
                    with self._lock:
                        if len(self.violations) < 50:
                            self.violations.append(message)
                else:
                    owner[bucket] = host
