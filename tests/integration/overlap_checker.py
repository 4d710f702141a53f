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
from functools import partial
from pathlib import Path

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.interfaces import IAsyncResult

from controller.core import schema
from controller.core import zk_layout as layout
from controller.core.errors import SchemaError

INF = float("inf")
#: sample batches allowed in flight; more means ZooKeeper is not answering (an outage on purpose)
MAX_INFLIGHT = 25


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
    _inflight: int = 0

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
        """Issue one sample batch every interval without waiting for the previous one's replies.

        A loaded machine makes each round trip slow (tens of ms), but requests of one session are
        answered in order, so batches can overlap in flight; the rate then no longer depends on
        the latency. Batches that fail, or are not sent because too many are in flight (ZooKeeper
        not answering), count as time ZooKeeper was unreachable.
        """
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                inflight = self._inflight
            if inflight < MAX_INFLIGHT:
                try:
                    self._issue_batch()
                except (KazooException, KazooTimeoutError, OSError):
                    self._failed_batch()
            else:
                self._failed_batch()
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
            self._stop.wait(max(0.0, delay))

    def _failed_batch(self) -> None:
        with self._lock:
            self.errors += 1
            self.unreachable_s += self.interval_s

    def _issue_batch(self) -> None:
        members = layout.members_path(self.cluster)
        replies: dict[str, object] = {}
        keys = ["before", *self.hosts, "after"]
        remaining = [len(keys)]

        def done(key: str, result: IAsyncResult) -> None:
            try:
                value: object = result.get_nowait()
            except NoNodeError:
                value = None
            except Exception as exc:
                value = exc
            with self._lock:
                replies[key] = value
                remaining[0] -= 1
                last = remaining[0] == 0
                if last:
                    self._inflight -= 1
            if last:
                self._evaluate(replies)

        with self._lock:
            self._inflight += 1
        self.client.get_children_async(members).rawlink(partial(done, "before"))
        for host in self.hosts:
            self.client.get_async(layout.status_path(self.cluster, host)).rawlink(partial(done, host))
        self.client.get_children_async(members).rawlink(partial(done, "after"))

    def _evaluate(self, replies: Mapping[str, object]) -> None:
        if any(isinstance(v, Exception) for v in replies.values()):
            self._failed_batch()
            return
        before, after = replies["before"], replies["after"]
        live = set(before if isinstance(before, list) else ()) & set(after if isinstance(after, list) else ())
        claims: dict[str, frozenset[int]] = {}
        for host in self.hosts:
            reply = replies[host]
            if host not in live or not isinstance(reply, tuple):
                continue
            try:
                claims[host] = schema.decode_status(reply[0], expected_host=host).held
            except SchemaError as exc:
                with self._lock:
                    self.violations.append(f"status of {host} unreadable: {exc}")
        self._check("published status of live hooks", claims)
        with self._lock:
            self.samples += 1

    def _run_journals(self) -> None:
        self._every(self._sample_journals)

    def _every(self, action: Callable[[], None]) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            action()
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
            self._stop.wait(max(0.0, delay))

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


# ------------------------------------------------------------------------------------------ subprocess


def main(argv: list[str] | None = None) -> int:
    """Run a checker in its own process (own GIL: the test process is busy relaying ZooKeeper traffic).

    Samples until SIGTERM, then writes {"violations", "samples", ...} as JSON to --out.
    """
    import argparse
    import contextlib
    import json
    import os
    import signal

    from kazoo.client import KazooClient
    from kazoo.retry import KazooRetry

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zk", required=True, help="connect string including the chroot")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--journal", action="append", default=[], help="HOST=PATH, repeated")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        # A measuring instrument needs little CPU but needs it on time; on a saturated machine the
        # default priority let it fall below 20 samples/s. Without the privilege it just runs as is.
        os.setpriority(os.PRIO_PROCESS, 0, -5)
    journals = {k: Path(v) for k, v in (item.split("=", 1) for item in args.journal)}
    client = KazooClient(hosts=args.zk, timeout=4.0, connection_retry=KazooRetry(max_tries=-1, delay=0.02, backoff=1))
    client.start(timeout=30)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    checker = OverlapChecker(client, args.cluster, tuple(journals), journals).start()
    Path(args.out + ".ready").write_text("ready\n")
    while not stop.wait(0.2):
        pass
    violations = checker.stop()
    result = {
        "violations": violations,
        "samples": checker.samples,
        "journal_samples": checker.journal_samples,
        "elapsed": checker.elapsed,
        "unreachable_s": checker.unreachable_s,
        "rate_hz": checker.rate_hz,
        "describe": checker.describe(),
    }
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(args.out)
    client.stop()
    client.close()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
