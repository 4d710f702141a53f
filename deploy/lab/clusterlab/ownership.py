"""Sample every host's *kernel* bucket ownership and find buckets two hosts accept at the same time.

Why read the kernel and not the map: the map can be perfect while a hook that lost ZooKeeper still
has a bucket in its nft set; only the kernels decide which host answers a packet. One helper per
host namespace (owned_reader.py, libnftables in-process) answers each request in about a millisecond.

A *round* asks every helper at once and waits for all replies. A bucket counts as double-owned only
when two hosts both hold it in two consecutive rounds: every reply of round k precedes every request
of round k+1, so host X held it over [x_k, x_k+1] and host Y over [y_k, y_k+1], and those intervals
overlap; the overlap is certain, not an artefact of reading hosts one after another. Overlaps seen
in a single round only are reported separately (``single_round_overlaps``) as the upper bound.
Hosts in ``excluded()`` (crashed: their data link is down, no packet reaches them) are left out.
"""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clusterlab import netns

READER = Path(__file__).with_name("owned_reader.py")


@dataclass
class Round:
    start: float
    end: float
    owned: dict[str, frozenset[int]]
    excluded: frozenset[str]


@dataclass
class OwnershipReport:
    rounds: int = 0
    seconds: float = 0.0
    #: rounds lost because a helper answered later than the reply timeout (machine load)
    errors: int = 0
    double_owner_samples: int = 0
    single_round_overlaps: int = 0
    examples: list[str] = field(default_factory=list)
    longest_unowned_s: float = 0.0
    #: "bucket B unowned <start>s-<end>s (<length> s)" in seconds since the checker started (the chaos
    #: timeline's clock), for the longest episode and for every episode longer than ``long_unowned_s``
    longest_unowned: str = ""
    long_unowned: list[str] = field(default_factory=list)
    long_unowned_count: int = 0

    @property
    def rate_hz(self) -> float:
        return self.rounds / self.seconds if self.seconds > 0 else 0.0


class KernelOwnershipChecker:
    """Rounds of kernel reads every ``interval_s`` on a background thread, judged as they come."""

    def __init__(self, namespaces: dict[str, str], table: str, buckets: int, *, interval_s: float = 0.05,
                 excluded: Callable[[], set[str]] = set) -> None:
        self.namespaces = namespaces
        self.table = table
        self.buckets = buckets
        self.interval_s = interval_s
        self.excluded = excluded
        self.report = OwnershipReport()
        self._helpers: dict[str, subprocess.Popen[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ownership-checker", daemon=True)
        self._previous: Round | None = None
        self._unowned_since: dict[int, float] = {}
        self._seq = 0
        self.reply_timeout_s = 2.0
        #: unowned episodes longer than this are listed (the default profile's crash failover bound)
        self.long_unowned_s = 2.0

    def start(self) -> None:
        for host, ns in self.namespaces.items():
            self._helpers[host] = netns.popen_in(
                ns, [sys.executable, str(READER), self.table], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, bufsize=1,
            )
        self._started = time.monotonic()
        self._thread.start()

    def stop(self) -> OwnershipReport:
        self._stop.set()
        self._thread.join(timeout=10)
        self.report.seconds = time.monotonic() - self._started
        for proc in self._helpers.values():
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return self.report

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            sample = self._round()
            if sample is not None:
                self._judge(sample)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)))

    def _round(self) -> Round | None:
        """One request to every helper, then every reply; None (and no judgement across the gap) if a
        helper is slower than ``reply_timeout_s`` (a loaded machine): its late reply is skipped later."""
        self._seq += 1
        seq = str(self._seq)
        excluded = frozenset(self.excluded())
        start = time.monotonic()
        for proc in self._helpers.values():
            try:
                proc.stdin.write(seq + "\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            except OSError:
                pass  # shows as a missing reply below
        owned: dict[str, frozenset[int]] = {}
        deadline = start + self.reply_timeout_s
        for host, proc in self._helpers.items():
            reply = self._reply(proc, seq, deadline)
            if reply is None:
                self.report.errors += 1
                self._previous = None
                return None
            owned[host] = reply
        return Round(start, time.monotonic(), owned, excluded | frozenset(self.excluded()))

    @staticmethod
    def _reply(proc: subprocess.Popen[str], seq: str, deadline: float) -> frozenset[int] | None:
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                return None  # helper gone
            try:
                reply = json.loads(line)
                if reply.get("seq") != seq:
                    continue  # the late answer to a round already given up
                return frozenset(reply["owned"])
            except (ValueError, KeyError, TypeError, AttributeError):
                return None

    def _judge(self, current: Round) -> None:
        report = self.report
        report.rounds += 1
        live = [h for h in current.owned if h not in current.excluded]
        for i, x in enumerate(live):
            for y in live[i + 1:]:
                if current.owned[x] & current.owned[y]:
                    report.single_round_overlaps += 1
        previous = self._previous
        if previous is not None:
            both = [h for h in live if h not in previous.excluded]
            doubles = set()
            for i, x in enumerate(both):
                for y in both[i + 1:]:
                    shared = previous.owned[x] & current.owned[x] & previous.owned[y] & current.owned[y]
                    doubles |= {(b, x, y) for b in shared}
            if doubles:
                report.double_owner_samples += 1
                if len(report.examples) < 20:
                    at = f"{current.start - self._started:.2f}s"
                    report.examples.append(f"{at}: " + ", ".join(f"bucket {b} on {x} and {y}"
                                                                 for b, x, y in sorted(doubles)))
        held = set().union(*(current.owned[h] for h in live)) if live else set()
        for bucket in range(1, self.buckets + 1):
            if bucket in held:
                since = self._unowned_since.pop(bucket, None)
                if since is not None:
                    length = current.start - since
                    episode = (f"bucket {bucket} unowned {since - self._started:.2f}s-"
                               f"{current.start - self._started:.2f}s ({length:.2f} s)")
                    if length > report.longest_unowned_s:
                        report.longest_unowned_s, report.longest_unowned = length, episode
                    if length > self.long_unowned_s:
                        report.long_unowned_count += 1
                        if len(report.long_unowned) < 40:
                            report.long_unowned.append(episode)
            else:
                self._unowned_since.setdefault(bucket, current.end)
        self._previous = current
