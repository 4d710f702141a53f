"""The rise/fall state machine that turns raw SSH probe results into a host's liveness verdict.

Pure: no clock, no I/O. Time comes in with each result (``ProbeResult.at``), so a test can drive
it with a list of results and the scheduler can drive it with live ones.

Why a state machine at all: one slow probe under load must never fail a host (false alarms move
buckets and break sessions), yet a hung host must be declared down within a fraction of a second.
Like keepalived and HAProxy, a level fails only after ``fall`` consecutive failures and recovers
only after ``rise`` consecutive successes. A *definite* failure (connection refused, host key
changed, login impossible) is not a symptom of load, so it needs only ``definite_fall`` in a row.

Each probe level (1 = banner, 2 = login) has its own counters: the frequent banner successes of a
fork-bombed host must not wash out the failures of its rare logins. The host is

* DOWN while any level is down (latched until that level rose again),
* UP when every level is up and none is currently failing,
* SUSPECT when it was up and some level has failed fewer than ``fall`` times in a row,
* UNKNOWN before every level has risen once (keep what it has, give it nothing new).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from controller.core.model import Health, HostHealth

Level = Literal[1, 2]


@dataclass(frozen=True)
class ProbeResult:
    """One finished probe. ``definite`` marks failures that load cannot cause (see module doc)."""

    host_id: str
    level: Level
    ok: bool
    latency_ms: float | None
    reason: str
    at: float
    definite: bool = False


class _LevelState(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass
class _LevelCounters:
    """Consecutive counters of one probe level of one host (mutable, private to the tracker)."""

    state: _LevelState = _LevelState.UNKNOWN
    oks: int = 0
    fails: int = 0
    definite_fails: int = 0
    reason: str = ""


@dataclass
class _HostCounters:
    levels: dict[Level, _LevelCounters]
    health: HostHealth
    last_latency_ms: float | None = None


@dataclass(frozen=True)
class Thresholds:
    """Counts of the state machine; validated here so a bad config fails early with one line."""

    fall: int = 3
    rise: int = 3
    definite_fall: int = 1
    levels: tuple[Level, ...] = field(default=(1, 2))

    def __post_init__(self) -> None:
        for name in ("fall", "rise", "definite_fall"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"probe {name} must be at least 1 (got {value}): fix the config")
        if not self.levels or any(lv not in (1, 2) for lv in self.levels):
            raise ValueError(f"probe levels must be a non-empty subset of (1, 2), got {self.levels}")


class HealthTracker:
    """Feed probe results for many hosts, get a ``HostHealth`` back whenever a host's state changes."""

    def __init__(self, thresholds: Thresholds, hosts: Iterable[str] = (), now: float = 0.0) -> None:
        self._t = thresholds
        self._hosts: dict[str, _HostCounters] = {}
        for host_id in hosts:
            self.add(host_id, now)

    @property
    def thresholds(self) -> Thresholds:
        return self._t

    def add(self, host_id: str, now: float) -> HostHealth:
        """Start tracking a host (UNKNOWN); adding a known host keeps its state."""
        if host_id not in self._hosts:
            levels = {lv: _LevelCounters() for lv in self._t.levels}
            unknown = HostHealth(host_id, Health.UNKNOWN, now, "not probed yet")
            self._hosts[host_id] = _HostCounters(levels, unknown)
        return self._hosts[host_id].health

    def forget(self, host_id: str) -> None:
        self._hosts.pop(host_id, None)

    def health(self, host_id: str) -> HostHealth:
        return self._hosts[host_id].health

    def snapshot(self) -> Mapping[str, HostHealth]:
        return {h: c.health for h, c in self._hosts.items()}

    def level_up(self, host_id: str, level: Level) -> bool:
        """Whether a level is up now; the scheduler re-checks a level that is not up more often."""
        host = self._hosts.get(host_id)
        counters = host.levels.get(level) if host else None
        return counters is not None and counters.state is _LevelState.UP and counters.fails == 0

    def observe(self, result: ProbeResult) -> HostHealth | None:
        """Account one result; return the new ``HostHealth`` if the host's state changed, else None.

        Results of unknown hosts or of levels not tracked are ignored (a late result of a host
        just removed from the targets must not resurrect it).
        """
        host = self._hosts.get(result.host_id)
        if host is None or result.level not in host.levels:
            return None
        if result.level == 1 and result.ok:
            host.last_latency_ms = result.latency_ms
        self._count(host.levels[result.level], result)
        state, reason = self._judge(host, result)
        if state is host.health.state:
            return None
        host.health = HostHealth(result.host_id, state, result.at, reason, host.last_latency_ms)
        return host.health

    def _count(self, c: _LevelCounters, r: ProbeResult) -> None:
        t = self._t
        if r.ok:
            c.oks += 1
            c.fails = 0
            c.definite_fails = 0
            if c.state is not _LevelState.UP and c.oks >= t.rise:
                c.state = _LevelState.UP
                c.reason = ""
            return
        c.oks = 0
        c.fails += 1
        c.definite_fails = c.definite_fails + 1 if r.definite else 0
        c.reason = r.reason
        if c.fails >= t.fall or c.definite_fails >= t.definite_fall:
            c.state = _LevelState.DOWN

    def _judge(self, host: _HostCounters, r: ProbeResult) -> tuple[Health, str]:
        levels = host.levels
        down = [lv for lv, c in sorted(levels.items()) if c.state is _LevelState.DOWN]
        if down:
            c = levels[down[0]]
            return Health.DOWN, f"level {down[0]}: {c.reason}"
        failing = [lv for lv, c in sorted(levels.items()) if c.fails > 0]
        if all(c.state is _LevelState.UP for c in levels.values()) and not failing:
            return Health.UP, f"probes ok, banner latency {_ms(host.last_latency_ms)}"
        previous = host.health.state
        if failing and previous in (Health.UP, Health.SUSPECT):
            lv = failing[0]
            c = levels[lv]
            return Health.SUSPECT, f"level {lv}: {c.reason} ({c.fails} of {self._t.fall})"
        if previous is Health.DOWN:
            # Not down any more at any level but not every level rose yet: stay down until it has.
            return Health.DOWN, host.health.reason
        if failing:
            lv = failing[0]
            return Health.UNKNOWN, f"level {lv}: {levels[lv].reason} ({levels[lv].fails} of {self._t.fall})"
        return Health.UNKNOWN, "rising"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"
