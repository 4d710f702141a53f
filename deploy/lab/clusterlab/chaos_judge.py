"""What a chaos run did to the map and to clients, judged against the faults it injected on purpose.

* :class:`MapPoller` reads the bucket map from ZooKeeper a few times a second and keeps every
  change of a bucket's owner (wall clock, like the clients' timestamps).
* :func:`false_failovers`: a bucket taken away from a host that was not under a fault (from the
  fault's start to a grace period after its heal) is a false failover, unless it went back to its
  home host (failback after an earlier, legitimate failover). The host that lost the bucket is the
  map's ``releasing`` when the poll sees a revoke, else the owner at the previous poll. Polling can
  miss epochs (a bucket that went X -> Y -> nobody between two polls looks as if it left X), so the
  count is an upper bound; each entry names the nearest fault so a reader can check it.
* :func:`client_failures`: every run of failed attempts of a client source (no banner) is explained
  when, around it, its bucket's owner was a faulted host or the bucket had no owner (a handoff);
  otherwise it is reported as unexplained.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Faults that make their host fail; kill_controller hits a controller replica, not the host.
HOST_FAULTS = ("crash_host", "hang_sshd", "kill_hook", "isolate_host")


@dataclass
class FaultWindow:
    kind: str
    host: str
    start: float
    end: float | None = None  # None while the fault is active


@dataclass(frozen=True)
class OwnerChange:
    at: float
    bucket: int
    before: str | None
    after: str | None
    target: str | None
    releasing: str | None = None


class MapPoller:
    """Polls ``read`` (returning {bucket: (owner, target)}) every ``interval_s`` on a thread."""

    def __init__(self, read: Callable[[], Mapping[int, tuple[str | None, ...]]],
                 interval_s: float = 0.2) -> None:
        self.read = read
        self.interval_s = interval_s
        self.changes: list[OwnerChange] = []
        self.errors = 0
        self._last: dict[int, str | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="map-poller", daemon=True)

    def start(self) -> MapPoller:
        self._thread.start()
        return self

    def stop(self) -> list[OwnerChange]:
        self._stop.set()
        self._thread.join(timeout=15)
        return self.changes

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                buckets = self.read()
            except Exception:  # ZooKeeper slow or down (a fault): try again next time
                self.errors += 1
                continue
            now = time.time()
            for bucket, (owner, target, *rest) in sorted(buckets.items()):
                releasing = rest[0] if rest else None
                if bucket in self._last and self._last[bucket] != owner:
                    self.changes.append(OwnerChange(now, bucket, self._last[bucket], owner, target, releasing))
                self._last[bucket] = owner


def read_map(lab: Any) -> dict[int, tuple[str | None, str | None, str | None]]:
    """{bucket: (owner, target, releasing)} of the lab's map, with the lab's shared reader (bounded wait)."""
    from controller.core import schema
    from controller.core import zk_layout as layout

    data, _ = lab._reader().get_async(layout.map_path("lab")).get(timeout=5)
    decoded = schema.decode_map(data)
    return {b: (st.owner, st.target, st.releasing) for b, st in decoded.buckets.items()}


def nearest_fault(faults: Sequence[FaultWindow], at: float) -> str:
    """The fault closest in time to ``at``, for a reader checking a flagged move."""
    def distance(f: FaultWindow) -> float:
        end = f.end if f.end is not None else at
        return 0.0 if f.start <= at <= end else min(abs(at - f.start), abs(at - end))

    if not faults:
        return "no fault"
    f = min(faults, key=distance)
    end = f"{at - f.end:+.1f} s after its heal" if f.end is not None and at > f.end else "during it"
    return f"nearest fault {f.kind} {f.host} ({end})" if at >= f.start else \
        f"nearest fault {f.kind} {f.host} ({f.start - at:.1f} s later)"



def _faulted(faults: Sequence[FaultWindow], host: str | None, start: float, end: float, grace_s: float) -> bool:
    if host is None:
        return False
    for fault in faults:
        if fault.kind not in HOST_FAULTS or fault.host != host:
            continue
        f_end = (fault.end if fault.end is not None else float("inf")) + grace_s
        if fault.start <= end and start <= f_end:
            return True
    return False


def false_failovers(changes: Sequence[OwnerChange], faults: Sequence[FaultWindow], homes: Mapping[int, str],
                    grace_s: float = 5.0, temporary: bool = False) -> list[str]:
    """Moves of a bucket away from a host that was under no fault, other than back to its home.

    With ``temporary=False`` only moves away from the bucket's *home* host count (a certain false
    failover: nothing but a down verdict takes a bucket from its home). With ``temporary=True`` the
    moves away from a host holding it temporarily (after an earlier failover) are listed instead:
    a failback revoked towards home whose target changed before the next poll (the home host was hit
    again) looks the same as a false failover of the temporary owner, so these are ambiguous.
    """
    out = []
    for change in changes:
        if change.before is None:
            continue  # a grant of a bucket that was moving: its revoke was judged already
        loser = change.releasing if change.after is None and change.releasing else change.before
        home = homes.get(change.bucket)
        going_home = home in (change.after, change.target) and loser != home
        if going_home or _faulted(faults, loser, change.at, change.at, grace_s) or (loser != home) != temporary:
            continue
        out.append(f"{change.at:.2f}: bucket {change.bucket} left {loser} for {change.after or 'nobody'} "
                   f"(target {change.target}) with no fault on {loser}; {nearest_fault(faults, change.at)}")
    return out


def owner_at(changes: Sequence[OwnerChange], initial: Mapping[int, str | None], bucket: int,
             at: float) -> str | None:
    owner = initial.get(bucket)
    for change in changes:
        if change.bucket == bucket and change.at <= at:
            owner = change.after
    return owner


def client_failures(transitions: Mapping[str, Sequence[tuple[float, str]]], bucket_of: Callable[[str], int],
                    changes: Sequence[OwnerChange], initial: Mapping[int, str | None],
                    faults: Sequence[FaultWindow], end: float, grace_s: float = 5.0) -> dict[str, Any]:
    """Runs of failed attempts per source, explained by a fault or handoff or not; the longest one."""
    runs = unexplained = 0
    longest = 0.0
    examples: list[str] = []
    for source, trans in transitions.items():
        bucket = bucket_of(source)
        for i, (t, state) in enumerate(trans):
            if not state.startswith("!"):
                continue
            t_end = trans[i + 1][0] if i + 1 < len(trans) else end
            runs += 1
            longest = max(longest, t_end - t)
            owners = {owner_at(changes, initial, bucket, x) for x in (t - 1.0, t, t_end)}
            owners |= {c.before for c in changes if c.bucket == bucket and t - 1.0 <= c.at <= t_end}
            if None in owners or any(_faulted(faults, o, t - 1.0, t_end, grace_s) for o in owners):
                continue
            unexplained += 1
            if len(examples) < 10:
                examples.append(f"{t:.2f}: {source} (bucket {bucket}, owner {sorted(map(str, owners))}) "
                                f"{state} for {t_end - t:.2f} s")
    return {"failure_runs": runs, "unexplained_runs": unexplained, "longest_failure_s": round(longest, 2),
            "examples": examples}


def totals(outcomes: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Attempts per outcome over every source ("answered" sums the hosts' names)."""
    out: dict[str, int] = {"attempts": 0, "answered": 0}
    for per_source in outcomes.values():
        for state, count in per_source.items():
            out["attempts"] += count
            if state.startswith("!"):
                out[state[1:]] = out.get(state[1:], 0) + count
            else:
                out["answered"] += count
    return out

