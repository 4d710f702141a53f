"""What a chaos run did to the map and to clients, judged against the faults it injected on purpose.

* :class:`MapPoller` reads the bucket map from ZooKeeper a few times a second and keeps every
  change of a bucket's owner (wall clock, like the clients' timestamps).
* :class:`HistoryCollector` reads the controllers' decision history (``history/event-<seq>``,
  controller/core/zk_layout.py) every second and keeps every event once, before the leader prunes
  it. :func:`judge_moves` then attributes *every* revoke exactly, from the reason the planner wrote
  with it: away from a host under a fault (a down verdict or a dead hook, during the fault or within
  a grace period after its heal), a failback, or an operator's request; a revoke for a down verdict
  or a dead hook on a host under no fault is a false failover, and a reason the judge does not know
  is listed as unattributed. (It replaced a guess from the polled map, which could not tell a
  failback whose target changed between two polls from a false failover: 42 "unclear" moves in
  the first soak with the dead-man switch.)
* :func:`client_failures`: every run of failed attempts of a client source (no banner) is explained
  when, around it, its bucket's owner was a faulted host or the bucket had no owner (a handoff);
  otherwise it is reported as unexplained.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

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


class _PollingThread:
    """Calls ``_once`` every ``interval_s`` on a daemon thread until stopped; a failed read (a fault
    slowed ZooKeeper) is counted in ``errors`` and the next one catches up."""

    def __init__(self, name: str, interval_s: float) -> None:
        self.interval_s = interval_s
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def _halt(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _once(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._once()
            except Exception:  # ZooKeeper slow or down (a fault): try again next time
                self.errors += 1


class MapPoller(_PollingThread):
    """Polls ``read`` (returning {bucket: (owner, target)}) every ``interval_s`` on a thread."""

    def __init__(self, read: Callable[[], Mapping[int, tuple[str | None, ...]]],
                 interval_s: float = 0.2) -> None:
        super().__init__("map-poller", interval_s)
        self.read = read
        self.changes: list[OwnerChange] = []
        self._last: dict[int, str | None] = {}

    def stop(self) -> list[OwnerChange]:
        self._halt()
        return self.changes

    def _once(self) -> None:
        buckets = self.read()
        now = time.time()
        for bucket, (owner, target, *rest) in sorted(buckets.items()):
            releasing = rest[0] if rest else None
            if bucket in self._last and self._last[bucket] != owner:
                self.changes.append(OwnerChange(now, bucket, self._last[bucket], owner, target, releasing))
            self._last[bucket] = owner


@dataclass(frozen=True)
class Move:
    """One revoke from the controllers' history and what the judge attributes it to."""

    at: float
    epoch: int
    bucket: int
    host: str
    reason: str
    cause: str  # "fault <kind> <host>", "failback", "operator", "false failover", "unattributed"


class HistoryCollector(_PollingThread):
    """Reads the decision history every ``interval_s`` on a thread; every event once (by znode name).

    ``read(known)`` returns {znode name: event} for the names not in ``known``; a failed read (a
    fault slowed ZooKeeper) is counted and retried. The leader prunes to the newest 1,000 events, so
    a collector that reads every second never misses one at chaos rates (a few events per second).
    """

    def __init__(self, read: Callable[[set[str]], Mapping[str, Any]], interval_s: float = 1.0) -> None:
        super().__init__("history-collector", interval_s)
        self.read = read
        self.events: dict[str, Any] = {}

    def stop(self) -> list[Any]:
        """Stop after one last read; the events oldest first (ZooKeeper's sequence order)."""
        self._halt()
        try:
            self._once()
        except Exception:  # ZooKeeper down at the very end: what was read so far
            self.errors += 1
        return [self.events[name] for name in sorted(self.events)]

    def _once(self) -> None:
        self.events.update(self.read(set(self.events)))


def read_history(lab: Any, known: set[str]) -> dict[str, Any]:
    """New history events of the lab's cluster ({znode name: HistoryEvent}); all gets pipelined."""
    from controller.core import schema
    from controller.core import zk_layout as layout

    client = lab._reader()
    path = layout.history_path("lab")
    names = [n for n in client.get_children_async(path).get(timeout=5) if n not in known]
    pending = {n: client.get_async(f"{path}/{n}") for n in names}
    out: dict[str, Any] = {}
    for name, reply in pending.items():
        try:
            data, _ = reply.get(timeout=5)
        except Exception:  # pruned between listing and reading: older than anything we still need
            continue
        try:
            out[name] = schema.decode_event(data)
        except Exception:  # not an event this judge can read: kept as None (judge_moves skips it)
            out[name] = None
    return out


#: Reasons the planner writes (controller/core/planner.py) and what they mean for the judge.
_FAILBACK = "failback to home host"
_OPERATOR = ("pinned to", "drained", "is no longer in the configuration")


def _cause(reason: str, host: str) -> str:
    """What the planner said it revoked ``host``'s bucket for: "failback", "operator", "fault", or "?"."""
    if reason.startswith(_FAILBACK):
        return "failback"
    if reason.startswith(f"{host} down") or reason.startswith(f"hook of {host} died"):
        return "fault"
    if any(reason.startswith(p) or reason.startswith(f"{host} {p}") for p in _OPERATOR):
        return "operator"
    return "?"


def judge_moves(events: Sequence[Any], faults: Sequence[FaultWindow], grace_s: float = 5.0) -> list[Move]:
    """Attribute every revoke in ``events`` (HistoryEvent objects): see the module docstring.

    A revoke for a fault counts for the fault on its host whose window (plus ``grace_s`` after the
    heal: a down verdict or a hook's session expiry can trail a short fault) contains it; the
    latest such fault is named. Without one it is a false failover.
    """
    moves: list[Move] = []
    for event in events:
        if event is None or event.kind != "revoke" or event.bucket is None or event.from_host is None:
            continue
        host = event.from_host
        cause = _cause(event.reason, host)
        if cause == "fault":
            hits = [f for f in faults if f.kind in HOST_FAULTS and f.host == host and f.start <= event.time
                    <= (f.end if f.end is not None else float("inf")) + grace_s]
            cause = f"fault {hits[-1].kind} {host}" if hits else "false failover"
        elif cause == "?":
            cause = "unattributed"
        moves.append(Move(event.time, event.epoch, event.bucket, host, event.reason, cause))
    return moves


def move_summary(moves: Sequence[Move], faults: Sequence[FaultWindow]) -> dict[str, Any]:
    """Counts per cause (faults by kind), and every false failover and unattributed move spelled out."""
    counts: dict[str, int] = {}
    for move in moves:
        key = " ".join(move.cause.split()[:2]) if move.cause.startswith("fault") else move.cause
        counts[key] = counts.get(key, 0) + 1
    def flagged(cause: str) -> list[str]:
        return [f"{m.at:.2f} epoch {m.epoch}: bucket {m.bucket} revoked from {m.host} ({m.reason}); "
                f"{nearest_fault(faults, m.at)}" for m in moves if m.cause == cause]

    return {"revokes": len(moves), "by_cause": dict(sorted(counts.items())),
            "false_failovers": flagged("false failover"), "unattributed": flagged("unattributed")}


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

