"""The pure rise/fall state machine, driven by hand-made probe results."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.health import HealthTracker, ProbeResult, Thresholds
from controller.core.model import Health


def ok(level: int = 1, at: float = 0.0, host: str = "a", ms: float = 5.0) -> ProbeResult:
    return ProbeResult(host, level, True, ms, "ok", at)  # type: ignore[arg-type]


def fail(level: int = 1, at: float = 0.0, reason: str = "banner timeout 300 ms", definite: bool = False,
         host: str = "a") -> ProbeResult:
    return ProbeResult(host, level, False, None, reason, at, definite)  # type: ignore[arg-type]


def tracker(fall: int = 3, rise: int = 3, definite_fall: int = 2, levels: tuple[int, ...] = (1, 2)) -> HealthTracker:
    return HealthTracker(Thresholds(fall, rise, definite_fall, levels), ["a"])  # type: ignore[arg-type]


def bring_up(t: HealthTracker, rise: int = 3) -> None:
    for i in range(rise):
        t.observe(ok(1, i))
        t.observe(ok(2, i))
    assert t.health("a").state is Health.UP


def test_starts_unknown_and_rises_only_when_every_level_rose() -> None:
    t = tracker()
    assert t.health("a").state is Health.UNKNOWN
    for i in range(5):
        assert t.observe(ok(1, i)) is None  # banner alone never makes it UP
    assert t.observe(ok(2, 10)) is None
    assert t.observe(ok(2, 11)) is None
    up = t.observe(ok(2, 12))
    assert up is not None and up.state is Health.UP and up.since == 12 and up.latency_ms == 5.0


def test_fall_consecutive_failures_go_down_through_suspect() -> None:
    t = tracker()
    bring_up(t)
    s = t.observe(fail(1, 20))
    assert s is not None and s.state is Health.SUSPECT and "(1 of 3)" in s.reason
    assert t.observe(fail(1, 21)) is None
    d = t.observe(fail(1, 22))
    assert d is not None and d.state is Health.DOWN and d.reason == "level 1: banner timeout 300 ms" and d.since == 22


def test_one_success_between_failures_resets_the_count() -> None:
    t = tracker()
    bring_up(t)
    for i in range(10):
        t.observe(fail(1, i))
        t.observe(fail(1, i))
        back = t.observe(ok(1, i))
        assert back is not None and back.state is Health.UP
    assert t.health("a").state is Health.UP


def test_definite_failures_need_only_definite_fall() -> None:
    t = tracker(fall=5, definite_fall=2)
    bring_up(t)
    t.observe(fail(1, 1, "connection refused", definite=True))
    d = t.observe(fail(1, 2, "connection refused", definite=True))
    assert d is not None and d.state is Health.DOWN and "connection refused" in d.reason


def test_definite_streak_is_broken_by_a_soft_failure() -> None:
    t = tracker(fall=5, definite_fall=2)
    bring_up(t)
    t.observe(fail(1, 1, "connection refused", definite=True))
    t.observe(fail(1, 2))
    assert t.observe(fail(1, 3, "connection refused", definite=True)) is None
    assert t.health("a").state is Health.SUSPECT


def test_banner_successes_do_not_wash_out_login_failures() -> None:
    t = tracker()
    bring_up(t)
    changes = []
    for i in range(3):
        changes.append(t.observe(fail(2, i, "exec failed: 'true' exited 1", definite=True)))
        for j in range(10):
            changes.append(t.observe(ok(1, i + j / 10)))
    states = [c.state for c in changes if c is not None]
    assert states == [Health.SUSPECT, Health.DOWN]
    assert t.health("a").reason.startswith("level 2: exec failed")


def test_down_needs_rise_successes_of_the_failed_level() -> None:
    t = tracker()
    bring_up(t)
    for i in range(3):
        t.observe(fail(1, i))
    assert t.health("a").state is Health.DOWN
    assert t.observe(ok(1, 10)) is None
    assert t.observe(fail(1, 11)) is None  # a relapse restarts the rise count
    assert t.observe(ok(1, 12)) is None
    assert t.observe(ok(1, 13)) is None
    up = t.observe(ok(1, 14))
    assert up is not None and up.state is Health.UP


def test_down_from_unknown_and_results_of_unknown_hosts_are_ignored() -> None:
    t = tracker(levels=(1,))
    t.observe(fail(1, 1, "connection refused", definite=True))
    d = t.observe(fail(1, 2, "connection refused", definite=True))
    assert d is not None and d.state is Health.DOWN
    assert t.observe(fail(1, 3, host="ghost")) is None
    assert t.observe(ok(2, 3)) is None  # level 2 not tracked
    t.forget("a")
    assert t.observe(ok(1, 4)) is None and "a" not in t.snapshot()


@pytest.mark.parametrize("field", ["fall", "rise", "definite_fall"])
def test_bad_thresholds_are_one_line_errors(field: str) -> None:
    kwargs = {"fall": 3, "rise": 3, "definite_fall": 2, field: 0}
    with pytest.raises(ValueError, match=f"probe {field} must be at least 1 \\(got 0\\): fix the config"):
        Thresholds(**kwargs)


@given(st.lists(st.tuples(st.sampled_from([1, 2]), st.booleans(), st.booleans()), max_size=200),
       st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))
def test_invariants_under_any_sequence(seq: list[tuple[int, bool, bool]], fall: int, rise: int, dfall: int) -> None:
    """DOWN only after fall (or definite_fall) failures in a row at one level; UP only when rises met;
    a transition is reported exactly when the state changes."""
    t = HealthTracker(Thresholds(fall, rise, dfall), ["a"])
    runs = {1: [0, 0, 0], 2: [0, 0, 0]}  # fails, definite fails, oks in a row
    prev = t.health("a").state
    for i, (level, good, definite) in enumerate(seq):
        r = ok(level, i) if good else fail(level, i, definite=definite)
        c = runs[level]
        if good:
            c[0], c[1], c[2] = 0, 0, c[2] + 1
        else:
            c[0], c[1], c[2] = c[0] + 1, (c[1] + 1 if definite else 0), 0
        change = t.observe(r)
        now = t.health("a").state
        assert (change is not None) == (now is not prev)
        if now is Health.DOWN and prev is not Health.DOWN:
            assert not good and (c[0] >= fall or c[1] >= dfall)
        if now is Health.UP and prev is not Health.UP:
            assert good and c[2] >= 1 and all(runs[lv][0] == 0 for lv in (1, 2))
        prev = now
