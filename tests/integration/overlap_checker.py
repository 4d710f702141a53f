"""Exclusivity checker: fails a test if any bucket is ever held by two hooks at once.

Two independent sources, sampled together from one thread at ~50 Hz while a test runs:

* **published state** — every hook's status znode, counted only while its member znode is live
  (a status of a hook whose session is gone claims nothing). One pipelined batch per sample reads
  members, then statuses, then members again; a hook counts as live only if both member reads show
  the same session, so the status read in between is that session's claim.
* **the memory "kernels"** — each hook's journal (node_hook.backends.memory), the ground truth of
  what the hook's backend held. Sampled for the running view, and at the end replayed exactly:
  the journals carry CLOCK_MONOTONIC times (one clock for all processes) with conservative
  intervals, so any intersection of two hooks' intervals for a bucket is reported even if no
  sample happened to fall into it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError

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
    samples: int = 0
    violations: list[str] = field(default_factory=list)
    errors: int = 0
    started: float = 0.0
    elapsed: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> OverlapChecker:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="overlap-checker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        """Stop sampling, replay the journals exactly, and return every violation found."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.elapsed = time.monotonic() - self.started
        intervals: list[Interval] = []
        for host, path in self.journals.items():
            if path.exists():
                intervals += journal_intervals(host, path.read_text(errors="replace"))
        self.violations += [f"journals: {p}" for p in find_overlaps(intervals)]
        return self.violations

    @property
    def rate_hz(self) -> float:
        return self.samples / self.elapsed if self.elapsed > 0 else 0.0

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except (KazooException, OSError):
                self.errors += 1  # ZooKeeper may be down on purpose; the journals still count
                self._sample_journals()
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
            self._stop.wait(max(0.0, delay))

    def sample(self) -> None:
        members_before = {h: self.client.exists_async(layout.member_path(self.cluster, h)) for h in self.hosts}
        statuses = {h: self.client.get_async(layout.status_path(self.cluster, h)) for h in self.hosts}
        members_after = {h: self.client.exists_async(layout.member_path(self.cluster, h)) for h in self.hosts}
        claims: dict[str, frozenset[int]] = {}
        for host in self.hosts:
            before = members_before[host].get(timeout=2)
            after = members_after[host].get(timeout=2)
            try:
                data, _ = statuses[host].get(timeout=2)
            except NoNodeError:
                continue
            if before is None or after is None or before.ephemeralOwner != after.ephemeralOwner:
                continue
            try:
                claims[host] = schema.decode_status(data, expected_host=host).held
            except SchemaError as exc:
                self.violations.append(f"status of {host} unreadable: {exc}")
        self._check("published status of live hooks", claims)
        self._sample_journals()
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

    def _check(self, what: str, held: Mapping[str, frozenset[int]]) -> None:
        owner: dict[int, str] = {}
        for host, buckets in sorted(held.items()):
            for bucket in buckets:
                if bucket in owner:
                    message = f"{what}: bucket {bucket} held by {owner[bucket]} and {host} at {time.monotonic():.3f}"
                    if len(self.violations) < 50:
                        self.violations.append(message)
                else:
                    owner[bucket] = host
