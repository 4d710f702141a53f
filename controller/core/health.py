"""The rise/fall state machine that turns raw SSH probe results into a host's liveness verdict.

Pure: no clock, no I/O. Time comes in with each result (``ProbeResult.at``), so a test can drive
it with a list of results and the scheduler can drive it with live ones.

Why a state machine at all: one slow probe under load must never fail a host (false alarms move
buckets and break sessions), yet a hung host must be declared down within a fraction of a second.
Like keepalived and HAProxy, a level fails only after ``fall`` consecutive failures and recovers
only after ``rise`` consecutive successes. A *definite* failure (connection refused, host key
changed, login impossible) is not a symptom of load, so it needs only ``definite_fall`` in a row.

Counting alone is not enough on a saturated machine: banners then take longer than any timeout
short enough to catch a hang quickly, several times in a row. Three rules tell "slow" from "hung"
without delaying the detection of a hang (a SIGSTOPped sshd never answers at all):

* **A late banner is proof of life.** The prober keeps a timed-out socket open a while; if its
  banner arrives late, the host's failure streak is reset and it is SUSPECT ("alive but slow"),
  not DOWN. A hung sshd sends nothing, so its streak is never reset.
* **Adaptive timeout.** Once a late banner has shown the configured ``banner_timeout_s`` too short
  for a host, its timeout becomes smoothed latency + ``rto_k`` x mean deviation (TCP's RTO,
  RFC 6298), floored at ``banner_timeout_s`` and capped, for as long as its banners stay slow: a
  host whose banners slowly get slower is judged against its own recent behaviour, while
  a sudden hang of a host whose banners come in time (however jittery) is caught at the floor.
* **Correlated slowness is not a host failure.** When more than ``correlated_fraction`` of the
  hosts not yet DOWN (and at least two) are slow at the same moment (in a timeout streak, or just
  answered late), the likely cause is the controller's own side (its CPU, its network): their soft
  failures are *held* at SUSPECT (like Envoy's max-ejection percent) for at most ``hold_max_s``
  without a sign of life (any answer: a banner, late or not, a login, even one that ran out of
  time after sshd's banner), after which a host that
  still never answered goes DOWN. Definite failures are never held.
* **A login that times out while banners answer is held.** On a saturated machine a paramiko
  login (key exchange, auth, exec: hundreds of ms of CPU on both sides) times out long before a
  banner does, so level 2 would fail a host that level 1 shows alive. A level-2 *timeout* streak
  is held at SUSPECT while the host's banners (in time or late) came within
  ``login_hold_window_s``, for at most ``hold_max_s`` from the start of the hold (banners do not
  restart it): a host whose logins alone only ever time out (a fork bomb that starves the host
  rather than failing the fork) still goes DOWN, about ``hold_max_s`` later. When most hosts are
  in that state at once, the correlated hold above takes over (held while banners keep coming):
  on a saturated machine no login may finish for minutes. Clean login failures (key rejected,
  host key changed, session refused because sshd cannot fork) are definite and never held;
  neither are closed connections.

Each probe level (1 = banner, 2 = login) has its own counters: the frequent banner successes of a
fork-bombed host must not wash out the failures of its rare logins. The host is

* DOWN while any level is down (latched until that level rose again),
* UP when every level is up and none is currently failing or slow,
* SUSPECT when it was up and some level is failing (fewer than ``fall``, or held) or slow,
* UNKNOWN before every level has risen once (keep what it has, give it nothing new).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from controller.core.model import Health, HostHealth

Level = Literal[1, 2]


@dataclass(frozen=True)
class ProbeResult:
    """One finished probe. ``definite`` marks failures that load cannot cause (see module doc).

    ``late`` marks a banner that arrived after its probe had already been reported as a timeout:
    ``ok`` is True and ``latency_ms`` is the real latency; it resets the failure streak but does
    not count towards ``rise``.

    ``timeout`` marks a failure where the host simply did not answer in time (connect, banner or
    login deadline), as opposed to a clean failure (refused, closed, rejected): only a level-2
    timeout may be held while banners prove the host alive.

    ``answered`` marks a failure during which the server still answered (a login that got sshd's
    banner, then timed out): a sign of life for the holds, never a success.
    """

    host_id: str
    level: Level
    ok: bool
    latency_ms: float | None
    reason: str
    at: float
    definite: bool = False
    late: bool = False
    timeout: bool = False
    answered: bool = False


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
    #: when this level last had a soft (non-definite) failure
    last_soft_fail_at: float = float("-inf")
    #: when this level last got a late banner
    last_late_at: float = float("-inf")
    #: when this level last rose from DOWN (late banners right after are a hang's backlog)
    rose_at: float = float("-inf")
    #: when the current hold began (None: not held)
    held_since: float | None = None
    held_note: str = ""
    #: latency of the last late banner while no in-time success followed it (None: not slow)
    slow_ms: float | None = None
    #: when this level last got an in-time success
    last_ok_at: float = float("-inf")
    #: level 2: when the hold of its timeout streak by level-1 proof of life began (None: not held);
    #: never restarted by banners, so the hold is bounded by hold_max_s
    alive_held_since: float | None = None


@dataclass
class _Rto:
    """Smoothed banner latency and its mean deviation, in seconds (RFC 6298 estimator)."""

    srtt: float | None = None
    rttvar: float = 0.0

    def sample(self, seconds: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = seconds, seconds / 2
            return
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - seconds)
        self.srtt = 0.875 * self.srtt + 0.125 * seconds


@dataclass
class _HostCounters:
    levels: dict[Level, _LevelCounters]
    health: HostHealth
    last_latency_ms: float | None = None
    rto: _Rto = field(default_factory=_Rto)
    #: the adaptive timeout applies until then (a late banner showed the floor too short for it)
    adaptive_until: float = float("-inf")
    #: when a failed login last got sshd's banner (a sign of life, see ProbeResult.answered)
    last_login_answer_at: float = float("-inf")
    #: when a level last went DOWN by a streak of soft failures (timeouts, not held), and which
    #: level: such a host still counts as "slow at once" for the others for one correlated window
    soft_down: tuple[float, Level] | None = None


@dataclass(frozen=True)
class Thresholds:
    """Counts and timing rules of the state machine; validated here so a bad config fails early.

    ``banner_timeout_s``/``banner_timeout_max_s``: floor and cap of the adaptive banner timeout
    (equal values disable adaptation). ``correlated_fraction`` >= 1 disables holding.
    ``correlated_window_s``: per level, how recent a host's last soft failure must be to count as
    failing "at the same moment" (the scheduler derives it from the probe timings).
    ``late_banner_s``: how long the prober waits for a late banner (see ``observe``).
    ``login_hold_window_s``: a level-2 timeout is held while a level-1 banner (in time or late)
    came at most this long before it (the scheduler uses the late-banner wait: a banner of a busy
    host may arrive that late).
    """

    fall: int = 3
    rise: int = 3
    definite_fall: int = 1
    levels: tuple[Level, ...] = field(default=(1, 2))
    banner_timeout_s: float = 0.3
    banner_timeout_max_s: float = 1.0
    rto_k: float = 4.0
    correlated_fraction: float = 0.5
    hold_max_s: float = 10.0
    correlated_window_s: tuple[float, float] = (1.45, 2.5)
    late_banner_s: float = 8.0
    login_hold_window_s: float = 8.0

    def __post_init__(self) -> None:
        for name in ("fall", "rise", "definite_fall"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"probe {name} must be at least 1 (got {value}): fix the config")
        if not self.levels or any(lv not in (1, 2) for lv in self.levels):
            raise ValueError(f"probe levels must be a non-empty subset of (1, 2), got {self.levels}")
        if not 0 < self.banner_timeout_s <= self.banner_timeout_max_s:
            raise ValueError(
                f"probe banner_timeout_max_s ({self.banner_timeout_max_s}) must be >= banner_timeout_s "
                f"({self.banner_timeout_s}) > 0: fix the config")
        if self.correlated_fraction <= 0 or self.hold_max_s < 0 or self.rto_k < 0:
            raise ValueError("probe correlated_fraction must be > 0, hold_max_s and rto_k >= 0: fix the config")
        if self.login_hold_window_s < 0:
            raise ValueError(f"probe login_hold_window_s must be >= 0 (got {self.login_hold_window_s}): fix the config")


class HealthTracker:
    """Feed probe results for many hosts, get a ``HostHealth`` back whenever a host's state changes."""

    def __init__(self, thresholds: Thresholds, hosts: Iterable[str] = (), now: float = 0.0) -> None:
        self._t = thresholds
        self._hosts: dict[str, _HostCounters] = {}
        self._episode = False
        self._held: set[str] = set()  # hosts with a held level: kept per result, O(1), not a scan
        self._notes: list[str] = []
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
        self._held.discard(host_id)
        self._track_episode(host_id)

    def health(self, host_id: str) -> HostHealth:
        return self._hosts[host_id].health

    def snapshot(self) -> Mapping[str, HostHealth]:
        return {h: c.health for h, c in self._hosts.items()}

    def level_up(self, host_id: str, level: Level) -> bool:
        """Whether a level is up now; the scheduler re-checks a level that is not up more often."""
        host = self._hosts.get(host_id)
        counters = host.levels.get(level) if host else None
        return counters is not None and counters.state is _LevelState.UP and counters.fails == 0

    def banner_timeout(self, host_id: str, now: float) -> float:
        """This host's level-1 banner timeout at ``now``: the floor, unless a late banner showed the
        floor too short for this host (and its banners stayed slower than half the floor since, with
        no gap of ``late_banner_s``); then srtt + k x rttvar within [floor, cap]. So jitter on a busy
        machine never slows the detection of a hang of a host whose banners all come in time; only a
        host proven slow is judged by its own latency."""
        t = self._t
        host = self._hosts.get(host_id)
        if host is None or host.rto.srtt is None or now >= host.adaptive_until:
            return t.banner_timeout_s
        rto = host.rto.srtt + t.rto_k * host.rto.rttvar
        return min(t.banner_timeout_max_s, max(t.banner_timeout_s, rto))

    def take_notes(self) -> list[str]:
        """Episode notes (correlated slowness began / ended) since the last call, to log once each."""
        notes, self._notes = self._notes, []
        return notes

    def observe(self, result: ProbeResult) -> HostHealth | None:
        """Account one result; return the new ``HostHealth`` if the host's state changed, else None.

        Results of unknown hosts or of levels not tracked are ignored (a late result of a host
        just removed from the targets must not resurrect it).
        """
        host = self._hosts.get(result.host_id)
        if host is None or result.level not in host.levels:
            return None
        c = host.levels[result.level]
        if result.answered and not result.ok:
            host.last_login_answer_at = max(host.last_login_answer_at, result.at)
        if result.level == 1 and result.ok and result.latency_ms is not None:
            host.last_latency_ms = result.latency_ms
            # Not while DOWN or just after: a hung sshd that resumes answers its whole backlog seconds
            # late, which says nothing about its normal latency and would blunt the next detection.
            backlog = c.state is _LevelState.DOWN or result.at - c.rose_at < self._t.late_banner_s
            if not (result.late and backlog):
                host.rto.sample(result.latency_ms / 1000.0)
                slow = result.latency_ms / 1000.0 > self._t.banner_timeout_s / 2
                if result.late or (slow and result.at < host.adaptive_until):
                    # entered by a late banner, kept while banners stay slow (over half the floor)
                    host.adaptive_until = result.at + self._t.late_banner_s
        if result.late:
            c.last_late_at = result.at
            self._proof_of_life(c, result.latency_ms)
        else:
            self._count(host, c, result)
        if result.ok or result.answered:
            # Any answer of sshd (a banner, late or not; a login, or a login that got the banner
            # before it ran out of time) shows it alive, however slow: restart the holds of the
            # host's other level (not its streak: that probe may have been accepted just before a
            # hang), and of its own level when the answer did not end that level's streak.
            for lv, other in host.levels.items():
                if (lv != result.level or not result.ok) and other.held_since is not None:
                    other.held_since = result.at
        if any(lc.held_since is not None for lc in host.levels.values()):
            self._held.add(result.host_id)
        else:
            self._held.discard(result.host_id)
        self._track_episode(result.host_id)
        if host.health.state is Health.UP and _all_up(host.levels):
            # Stays UP: what _judge would say, without formatting a reason nobody reads (an UP
            # host's reason is only refreshed on a transition). This is the result of almost every
            # probe, thousands a second (docs/probes.md, controller cost).
            return None
        state, reason = self._judge(host)
        if state is host.health.state:
            if reason != host.health.reason and state is not Health.UP:
                # same state, newer why (e.g. now held, or slow): visible in snapshots, not a transition
                host.health = dataclasses.replace(host.health, reason=reason, latency_ms=host.last_latency_ms)
            return None
        host.health = HostHealth(result.host_id, state, result.at, reason, host.last_latency_ms)
        return host.health

    @staticmethod
    def _proof_of_life(c: _LevelCounters, late_ms: float | None) -> None:
        """A late banner shows sshd alive but slow: reset the streak; it is no success for rise."""
        c.fails = 0
        c.definite_fails = 0
        c.held_since = None
        c.alive_held_since = None
        c.slow_ms = late_ms if late_ms is not None else 0.0

    def _count(self, host: _HostCounters, c: _LevelCounters, r: ProbeResult) -> None:
        t = self._t
        if r.ok:
            c.oks += 1
            c.fails = 0
            c.definite_fails = 0
            c.held_since = None
            c.alive_held_since = None
            c.slow_ms = None
            c.last_ok_at = r.at
            if c.state is not _LevelState.UP and c.oks >= t.rise:
                if c.state is _LevelState.DOWN:
                    c.rose_at = r.at
                c.state = _LevelState.UP
                c.reason = ""
            return
        c.oks = 0
        c.fails += 1
        c.definite_fails = c.definite_fails + 1 if r.definite else 0
        c.reason = r.reason
        if not r.definite:
            c.last_soft_fail_at = r.at
        if c.definite_fails >= t.definite_fall:
            c.state = _LevelState.DOWN
            c.held_since = None
            c.alive_held_since = None
        elif c.fails >= t.fall and c.state is not _LevelState.DOWN:
            alive_note = ""
            if r.level == 2 and r.timeout and self._banners_alive(host, r.at):
                if c.alive_held_since is None:
                    c.alive_held_since = r.at
                held_for = r.at - c.alive_held_since
                if held_for < t.hold_max_s:
                    return  # held: SUSPECT, not DOWN (see _judge for the reason shown)
                # Bound reached. Alone, this is a host whose logins only time out (a fork bomb
                # starving it): DOWN. Most hosts at once: the correlated hold below decides.
                alive_note = (f"; held {held_for:.1f} s while banners showed sshd alive, logins kept timing "
                              "out (fork bomb or starved host?)")
            slow, total = self._slow_at_once(host, r.at) if not r.definite else (0, 0)
            if slow >= 2 and slow > t.correlated_fraction * total:
                c.held_note = f"held: {slow} of {total} hosts slow at once"
                if c.held_since is None:
                    c.held_since = r.at
                if r.at - c.held_since < t.hold_max_s:
                    return  # held: SUSPECT, not DOWN
                c.reason = f"{r.reason}; held {r.at - c.held_since:.1f} s, no sign of life"
            elif alive_note:
                c.reason = r.reason + alive_note
            c.state = _LevelState.DOWN
            c.held_since = None
            c.alive_held_since = None
            if not r.definite:
                host.soft_down = (r.at, r.level)

    def _banners_alive(self, host: _HostCounters, at: float) -> bool:
        """Level 1 is not DOWN and got a banner (in time or late) within ``login_hold_window_s``
        before ``at``: sshd accepts connections and answers, so a login timing out meanwhile is more
        likely a starved login than a dead host. A failed login that got the banner counts too."""
        banner = host.levels.get(1)
        if banner is None or banner.state is _LevelState.DOWN:
            return False
        last = max(banner.last_ok_at, banner.last_late_at, host.last_login_answer_at)
        return at - last <= self._t.login_hold_window_s

    def _slow_now(self, host: _HostCounters, at: float) -> bool:
        """Not DOWN, and slow at ``at``: a level in a soft-failure streak (its last result a timeout
        within the window) or a late banner within the window. One timeout followed by timely
        answers is not enough: on a merely busy machine that would hold a hung host too often."""
        if any(c.state is _LevelState.DOWN for c in host.levels.values()):
            return False
        for lv, c in host.levels.items():
            window = self._t.correlated_window_s[lv - 1]
            if (c.fails > 0 and at - c.last_soft_fail_at <= window) or at - c.last_late_at <= window:
                return True
        return False

    def _slow_at_once(self, judged: _HostCounters, at: float) -> tuple[int, int]:
        """(hosts slow at ``at``, hosts counted). Any recent timeout counts, even if a late banner
        reset that host's streak since: on a saturated controller hosts time out and come back in
        turns, never all in one instant. Hosts DOWN are left out of both counts, or the first hosts
        to fall would let the rest fall one by one -- except a host that went DOWN by timeouts within
        the last correlated window, which counts as slow: when load hits a whole cluster at once
        (measured: 4 of 4 lab hosts DOWN within 2.4 s under stress-ng), the hosts fall in turns,
        each alone at its moment, and without this the first to fall would hide the episode from
        the rest."""
        live = []
        recently_down = 0
        for h in self._hosts.values():
            if all(c.state is not _LevelState.DOWN for c in h.levels.values()):
                live.append(h)
            elif h.soft_down is not None and at - h.soft_down[0] <= self._t.correlated_window_s[h.soft_down[1] - 1]:
                recently_down += 1
        # the judged host is failing right now (not DOWN yet, so it is in ``live``)
        slow = sum(1 for h in live if h is judged or self._slow_now(h, at))
        return slow + recently_down, len(live) + recently_down

    def _track_episode(self, host_id: str) -> None:
        if self._held and not self._episode:
            self._episode = True
            self._notes.append(
                f"correlated slowness: many hosts failing probes at once ({host_id} held first); the cause is "
                "likely on the controller's side (CPU, network): holding them SUSPECT, not DOWN")
        elif not self._held and self._episode:
            self._episode = False
            self._notes.append("correlated slowness over: no host held any more")

    def _judge(self, host: _HostCounters) -> tuple[Health, str]:
        levels = host.levels
        down = [lv for lv, c in sorted(levels.items()) if c.state is _LevelState.DOWN]
        if down:
            c = levels[down[0]]
            return Health.DOWN, f"level {down[0]}: {c.reason}"
        failing = [lv for lv, c in sorted(levels.items()) if c.fails > 0]
        slow = [lv for lv, c in sorted(levels.items()) if c.slow_ms is not None]
        if all(c.state is _LevelState.UP for c in levels.values()) and not failing and not slow:
            return Health.UP, f"probes ok, banner latency {_ms(host.last_latency_ms)}"
        previous = host.health.state
        if previous is Health.DOWN:
            # Not down any more at any level but not every level rose yet: stay down until it has.
            return Health.DOWN, host.health.reason
        healthy_before = previous in (Health.UP, Health.SUSPECT)
        if failing:
            lv = failing[0]
            c = levels[lv]
            if c.held_since is not None:
                why = f"level {lv}: {c.reason} ({c.fails} in a row), {c.held_note}"
            elif c.alive_held_since is not None:
                why = (f"level {lv}: {c.reason} ({c.fails} in a row), held: banners show sshd alive "
                       f"(alone: at most {self._t.hold_max_s:g} s)")
            else:
                why = f"level {lv}: {c.reason} ({c.fails} of {self._t.fall})"
            return (Health.SUSPECT if healthy_before else Health.UNKNOWN), why
        if slow:
            lv = slow[0]
            why = f"level {lv}: alive but slow, late banner {_ms(levels[lv].slow_ms)}"
            return (Health.SUSPECT if healthy_before else Health.UNKNOWN), why
        return Health.UNKNOWN, "rising"


def _all_up(levels: Mapping[Level, _LevelCounters]) -> bool:
    """Every level UP, none failing or slow: exactly when ``_judge`` says UP."""
    return all(c.state is _LevelState.UP and not c.fails and c.slow_ms is None for c in levels.values())


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"
