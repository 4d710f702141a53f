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


# ------------------------------------------------------------------ telling slow from hung (load)


def late(at: float, host: str = "a", ms: float = 650.0) -> ProbeResult:
    return ProbeResult(host, 1, True, ms, "late banner", at, late=True)


def fleet(n: int, fraction: float = 0.5, hold_max_s: float = 4.0) -> HealthTracker:
    hosts = [f"h{i}" for i in range(n)]
    t = HealthTracker(Thresholds(3, 3, 2, (1,), correlated_fraction=fraction, hold_max_s=hold_max_s,
                                 correlated_window_s=(1.45, 2.5)), hosts)
    for i in range(3):
        for h in hosts:
            t.observe(ok(1, i * 0.15, host=h))
    assert all(v.state is Health.UP for v in t.snapshot().values())
    return t


def test_late_banner_resets_the_streak_and_marks_alive_but_slow() -> None:
    t = tracker(levels=(1,))
    for i in range(3):
        t.observe(ok(1, i))
    t.observe(fail(1, 10.0))
    t.observe(fail(1, 10.15))
    s = t.observe(late(10.2))
    assert s is None  # already SUSPECT, still SUSPECT
    h = t.health("a")
    assert h.state is Health.SUSPECT and "alive but slow, late banner 650.0 ms" in h.reason
    # the streak restarted: two more timeouts are not three in a row
    t.observe(fail(1, 10.3))
    t.observe(fail(1, 10.45))
    assert t.health("a").state is Health.SUSPECT
    back = t.observe(ok(1, 10.6))  # an in-time banner clears "slow"
    assert back is not None and back.state is Health.UP


def test_late_banners_keep_a_slow_host_out_of_down_forever() -> None:
    t = tracker(levels=(1,))
    for i in range(3):
        t.observe(ok(1, i))
    at = 10.0
    for _ in range(200):  # every probe times out, but every banner still arrives
        t.observe(fail(1, at))
        t.observe(fail(1, at + 0.15))
        t.observe(late(at + 0.2))
        at += 0.3
        assert t.health("a").state is Health.SUSPECT


def test_late_banner_is_no_success_for_rise_and_does_not_lift_down() -> None:
    t = tracker(levels=(1,))
    for i in range(3):
        t.observe(ok(1, i))
    for i in range(3):
        t.observe(fail(1, 10 + i * 0.15))
    assert t.health("a").state is Health.DOWN
    for i in range(5):
        assert t.observe(late(11 + i)) is None
    assert t.health("a").state is Health.DOWN


def test_hung_host_without_late_banners_goes_down_after_fall() -> None:
    t = tracker(levels=(1,))
    for i in range(3):
        t.observe(ok(1, i))
    t.observe(fail(1, 10.0))
    t.observe(fail(1, 10.15))
    d = t.observe(fail(1, 10.3))
    assert d is not None and d.state is Health.DOWN


def test_adaptive_timeout_floor_for_fast_host_grows_for_slow_one_capped() -> None:
    t = HealthTracker(Thresholds(3, 3, 2, (1,), banner_timeout_s=0.3, banner_timeout_max_s=1.0), ["a"])
    assert t.banner_timeout("a", 0) == 0.3  # no sample yet
    at = 0.0
    for _ in range(20):
        t.observe(ok(1, at, ms=6.0))
        at += 0.15
    assert t.banner_timeout("a", at) == 0.3  # fast host: the floor, so a sudden hang is caught at once
    ms = 250.0
    while ms <= 640:  # gradually slower: 250 .. 640 ms; every banner arrives, in time or late
        timeout = t.banner_timeout("a", at)
        if ms / 1000 <= timeout:
            t.observe(ok(1, at, ms=ms))
        else:
            t.observe(fail(1, at, reason=f"banner timeout {timeout * 1000:.0f} ms"))
            t.observe(late(at + 0.01, ms=ms))
        assert t.health("a").state is not Health.DOWN
        at += 0.15
        ms += 2.0
    assert 0.64 < t.banner_timeout("a", at) <= 1.0  # judged against its own behaviour now
    for _ in range(40):
        t.observe(late(at, ms=5000.0))
        at += 0.15
    assert t.banner_timeout("a", at) == 1.0  # capped: a slow host is still judged within a bound
    assert t.banner_timeout("a", at + 8.1) == 0.3  # no late banner for late_banner_s: the floor again
    assert t.banner_timeout("ghost", at) == 0.3


def test_jittery_but_timely_banners_keep_the_floor() -> None:
    """A busy machine: banners 50..280 ms, all in time. The estimator would say 0.3+; we keep 0.3."""
    t = HealthTracker(Thresholds(3, 3, 2, (1,)), ["a"])
    for i in range(200):
        t.observe(ok(1, i * 0.15, ms=50.0 + (i * 37) % 230))
    assert t.banner_timeout("a", 30.0) == 0.3


def test_late_banner_samples_teach_the_adaptive_timeout() -> None:
    t = HealthTracker(Thresholds(3, 3, 2, (1,)), ["a"])
    for i in range(3):
        t.observe(ok(1, i, ms=5.0))
    for i in range(8):
        t.observe(late(10 + i * 0.15, ms=600.0))
    assert t.banner_timeout("a", 11.5) > 0.6


def test_majority_failing_at_once_is_held_suspect_and_logged_once() -> None:
    t = fleet(4)
    at = 10.0
    for _ in range(6):  # 6 timeouts in a row on every host, all at the same moment
        for h in ("h0", "h1", "h2", "h3"):
            t.observe(fail(1, at, host=h))
        at += 0.15
    snap = t.snapshot()
    assert all(v.state is Health.SUSPECT for v in snap.values()), snap
    assert "held: 4 of 4 hosts slow at once" in snap["h3"].reason
    notes = t.take_notes()
    assert len(notes) == 1 and notes[0].startswith("correlated slowness")
    for h in ("h0", "h1", "h2", "h3"):
        t.observe(ok(1, at, host=h))
    assert all(v.state is Health.UP for v in t.snapshot().values())
    assert t.take_notes() == ["correlated slowness over: no host held any more"]


def test_minority_failing_is_not_held() -> None:
    t = fleet(4)
    at = 10.0
    for _ in range(3):
        t.observe(fail(1, at, host="h0"))
        t.observe(fail(1, at, host="h1"))  # 2 of 4: not a majority
        t.observe(ok(1, at, host="h2"))
        t.observe(ok(1, at, host="h3"))
        at += 0.15
    assert t.health("h0").state is Health.DOWN and t.health("h1").state is Health.DOWN


def test_single_host_is_never_held() -> None:
    t = fleet(1)
    for i in range(3):
        t.observe(fail(1, 10 + i * 0.15, host="h0"))
    assert t.health("h0").state is Health.DOWN


def test_definite_failures_are_never_held() -> None:
    t = fleet(4)
    at = 10.0
    for _ in range(2):
        for h in ("h0", "h1", "h2"):
            t.observe(fail(1, at, host=h))
        t.observe(fail(1, at, "connection refused", definite=True, host="h3"))
        at += 0.15
    assert t.health("h3").state is Health.DOWN
    assert t.health("h0").state is Health.SUSPECT


def test_held_host_without_sign_of_life_goes_down_after_hold_max() -> None:
    t = fleet(4, hold_max_s=1.0)
    at = 10.0
    while at < 12.0:  # everyone fails; h0..h2 show late banners (alive), h3 never answers (hung)
        for h in ("h0", "h1", "h2", "h3"):
            t.observe(fail(1, at, host=h))
        for h in ("h0", "h1", "h2"):
            if round((at - 10.0) / 0.15) % 2 == 1:
                t.observe(late(at, host=h))
        at += 0.15
    assert t.health("h3").state is Health.DOWN
    assert "banner timeout" in t.health("h3").reason
    assert all(t.health(h).state is Health.SUSPECT for h in ("h0", "h1", "h2"))


def test_hold_ends_when_the_others_recover_and_a_hung_host_then_goes_down() -> None:
    t = fleet(4)
    at = 10.0
    for _ in range(4):
        for h in ("h0", "h1", "h2", "h3"):
            t.observe(fail(1, at, host=h))
        at += 0.15
    assert t.health("h0").state is Health.SUSPECT
    recovered = at
    while t.health("h0").state is not Health.DOWN and at < recovered + 5:  # others fine again; h0 still fails
        t.observe(fail(1, at, host="h0"))
        for h in ("h1", "h2", "h3"):
            t.observe(ok(1, at, host=h))
        at += 0.15
    assert t.health("h0").state is Health.DOWN
    assert at - recovered <= 1.45 + 0.3  # once their last timeout is older than the window


def test_bad_timing_thresholds_are_errors() -> None:
    with pytest.raises(ValueError, match="banner_timeout_max_s"):
        Thresholds(banner_timeout_s=0.5, banner_timeout_max_s=0.3)
    with pytest.raises(ValueError, match="correlated_fraction"):
        Thresholds(correlated_fraction=0)


def test_hosts_timing_out_in_turns_count_as_correlated() -> None:
    """On a starved controller hosts time out and come back (late banners) in turns: still correlated."""
    t = fleet(4)
    at = 10.0
    for k in range(40):
        for i, h in enumerate(("h0", "h1", "h2", "h3")):
            t.observe(fail(1, at, host=h))
            if (k + i) % 4 == 0:
                t.observe(late(at + 0.01, host=h))
        at += 0.15
    assert all(v.state is not Health.DOWN for v in t.snapshot().values()), t.snapshot()


def test_backlog_after_a_hang_does_not_inflate_the_adaptive_timeout() -> None:
    t = tracker(levels=(1,))
    for i in range(10):
        t.observe(ok(1, i * 0.15, ms=6.0))
    for i in range(3):
        t.observe(fail(1, 10 + i * 0.15))
    assert t.health("a").state is Health.DOWN
    for i in range(5):  # the resumed sshd answers its queued connections seconds late
        t.observe(late(11 + i * 0.01, ms=2500.0))
    for i in range(3):
        t.observe(ok(1, 11.1 + i * 0.15, ms=6.0))
    assert t.health("a").state is Health.UP
    for i in range(5):  # ... some only after it rose again
        t.observe(late(11.6 + i * 0.01, ms=3000.0))
    assert t.banner_timeout("a", 11.7) == 0.3  # backlog samples ignored


def test_hosts_already_down_do_not_let_the_rest_fall_one_by_one() -> None:
    t = fleet(4)
    at = 10.0
    for _ in range(3):  # two hosts go down for a definite reason
        for h in ("h0", "h1"):
            t.observe(fail(1, at, "connection refused", definite=True, host=h))
        at += 0.15
    assert t.health("h0").state is Health.DOWN and t.health("h1").state is Health.DOWN
    for _ in range(6):  # the two others are slow together: 2 of the 2 live hosts
        for h in ("h2", "h3"):
            t.observe(fail(1, at, host=h))
        at += 0.15
    assert t.health("h2").state is Health.SUSPECT and t.health("h3").state is Health.SUSPECT


def test_load_hitting_hosts_in_turns_does_not_fail_them_one_by_one() -> None:
    """Measured in the lab under stress-ng: h1, h4, h3, h2 went DOWN 0.5, 0.4 and 1.4 s apart, each
    alone in its timeout streak at its moment. A host that just fell by timeouts still counts as
    slow, so once a majority is affected the rest are held."""
    t = fleet(4)
    at = 10.0
    for _ in range(3):  # h0 alone: nothing else slow yet, a hang as far as anyone can tell
        t.observe(fail(1, at, host="h0"))
        for h in ("h1", "h2", "h3"):
            t.observe(ok(1, at, host=h))
        at += 0.15
    assert t.health("h0").state is Health.DOWN
    for victim in ("h1", "h2"):  # then h1, then h2, each alone in its streak, all within the window
        for _ in range(3):
            t.observe(fail(1, at, host=victim))
            for h in ("h1", "h2", "h3"):
                if h != victim and t.health(h).state is not Health.DOWN:
                    t.observe(ok(1, at, host=h))
            at += 0.15
    # h1: h0 (just fell) + h1 = 2 of 4, not a majority: DOWN. h2: h0 + h1 (just fell) + h2 = 3 of 4:
    # held (counting only hosts not DOWN it would be 1 of 2, and h2 would fall too)
    assert t.health("h1").state is Health.DOWN
    assert t.health("h2").state is Health.SUSPECT and "3 of 4 hosts slow at once" in t.health("h2").reason


def test_a_host_down_longer_than_the_window_no_longer_holds_others() -> None:
    t = fleet(3)
    at = 10.0
    for _ in range(3):
        t.observe(fail(1, at, host="h0"))
        at += 0.15
    assert t.health("h0").state is Health.DOWN
    at += 1.5  # longer ago than the level-1 window (1.45 s): h0 is just a dead host now
    for _ in range(3):
        t.observe(fail(1, at, host="h0"))
        t.observe(fail(1, at, host="h1"))
        t.observe(ok(1, at, host="h2"))
        at += 0.15
    assert t.health("h1").state is Health.DOWN  # a second failure is judged on its own


# ------------------------------------------------------------------ level-2 timeouts while banners answer


def login_timeout(at: float, host: str = "a") -> ProbeResult:
    return ProbeResult(host, 2, False, None, "login timeout 2000 ms during key exchange", at, timeout=True)


def test_login_timeouts_are_held_while_banners_prove_the_host_alive() -> None:
    """A saturated host: every login times out, but banners (late ones too) keep coming."""
    t = HealthTracker(Thresholds(3, 3, 2, hold_max_s=10.0, login_hold_window_s=8.0), ["a"])
    bring_up(t)
    at = 10.0
    for k in range(4):  # 4 timeouts in a row, ~2.5 s apart; a banner between each
        t.observe(login_timeout(at))
        t.observe(late(at + 1.0) if k % 2 else ok(1, at + 1.0))
        at += 2.5
    h = t.health("a")
    assert h.state is Health.SUSPECT, h
    assert "login timeout" in h.reason and "held: banners show sshd alive" in h.reason
    assert t.take_notes() == []  # one host's own hold, not a correlated-slowness episode
    t.observe(ok(2, at))  # one login gets through: the streak and the hold end
    back = t.observe(ok(1, at + 0.1))  # and a banner in time ends "slow"
    assert back is not None and back.state is Health.UP


def test_held_login_timeouts_go_down_after_hold_max_even_with_banners() -> None:
    """A host whose logins only ever time out (a fork bomb starving it) still goes down, bounded."""
    t = HealthTracker(Thresholds(3, 3, 2, hold_max_s=10.0, login_hold_window_s=8.0), ["a"])
    bring_up(t)
    at = 10.0
    held_at = None
    while t.health("a").state is not Health.DOWN and at < 60:
        t.observe(ok(1, at - 0.1))  # banners in time throughout: only level 2 sees the trouble
        t.observe(login_timeout(at))
        if held_at is None and t.health("a").state is Health.SUSPECT and "held" in t.health("a").reason:
            held_at = at
        at += 2.5
    d = t.health("a")
    assert d.state is Health.DOWN, d
    assert held_at is not None and 10.0 <= (at - 2.5) - held_at < 10.0 + 2.5
    assert d.reason.startswith("level 2: login timeout") and "held 10.0 s while banners showed sshd alive" in d.reason


def test_login_timeouts_without_banners_are_not_held() -> None:
    """No banner within the window (a hung or dead sshd): the login streak counts as before."""
    t = HealthTracker(Thresholds(3, 3, 2, levels=(1, 2), login_hold_window_s=8.0), ["a"])
    bring_up(t)  # last banner at 2
    for i in range(3):
        t.observe(login_timeout(20.0 + i * 2.5))
    assert t.health("a").state is Health.DOWN


def test_definite_and_closed_login_failures_are_never_held_by_banners() -> None:
    """The process-limit case: sshd answers banners but cannot fork the session (a clean failure)."""
    t = tracker()
    bring_up(t)
    at = 10.0
    for _ in range(2):
        t.observe(ok(1, at - 0.1))
        t.observe(fail(2, at, "exec failed: server closed the session before 'true' ran", definite=True))
        at += 0.5
    assert t.health("a").state is Health.DOWN
    t2 = tracker()
    bring_up(t2)
    for i in range(3):  # connection closed during key exchange: soft, but not a timeout
        t2.observe(ok(1, 10 + i * 0.5 - 0.1))
        t2.observe(fail(2, 10 + i * 0.5, "connection closed during key exchange"))
    assert t2.health("a").state is Health.DOWN


def test_login_hold_window_is_validated() -> None:
    with pytest.raises(ValueError, match="login_hold_window_s"):
        Thresholds(login_hold_window_s=-1)


def fleet2(n: int) -> HealthTracker:
    """n hosts probed at both levels, all UP."""
    hosts = [f"h{i}" for i in range(n)]
    t = HealthTracker(Thresholds(3, 3, 2, (1, 2), hold_max_s=10.0, correlated_window_s=(1.45, 4.0),
                                 login_hold_window_s=8.0), hosts)
    for i in range(3):
        for h in hosts:
            t.observe(ok(1, i * 0.15, host=h))
            t.observe(ok(2, i * 0.15, host=h))
    assert all(v.state is Health.UP for v in t.snapshot().values())
    return t


def test_logins_timing_out_on_most_hosts_at_once_are_held_while_banners_come() -> None:
    """The saturated benchmark: for minutes no login of any host finishes, banners come late."""
    t = fleet2(4)
    at = 10.0
    while at < 310.0:
        for i, h in enumerate(("h0", "h1", "h2", "h3")):
            t.observe(login_timeout(at + i * 0.3, host=h))
            t.observe(late(at + i * 0.3 + 1.0, host=h, ms=5600.0))
        at += 2.5
    assert all(v.state is Health.SUSPECT for v in t.snapshot().values()), t.snapshot()
    assert "hosts slow at once" in t.health("h0").reason
    assert t.take_notes()[0].startswith("correlated slowness")


def test_one_host_whose_logins_time_out_among_healthy_ones_goes_down_after_the_bound() -> None:
    """A fork bomb starving one host: its banners still come, its logins never finish; the others
    are fine. Bounded: DOWN about hold_max_s after the hold began."""
    t = fleet2(4)
    at = 10.0
    while t.health("h0").state is not Health.DOWN and at < 60.0:
        for h in ("h0", "h1", "h2", "h3"):
            t.observe(ok(1, at, host=h))
        t.observe(login_timeout(at + 0.1, host="h0"))
        for h in ("h1", "h2", "h3"):
            t.observe(ok(2, at + 0.1, host=h))
        at += 2.5
    d = t.health("h0")
    assert d.state is Health.DOWN and "while banners showed sshd alive" in d.reason, d
    assert at - 10.0 <= 3 * 2.5 + 10.0 + 2.5
    assert all(t.health(h).state is Health.UP for h in ("h1", "h2", "h3"))


def test_a_login_that_got_the_banner_before_timing_out_is_a_sign_of_life() -> None:
    """Banners too slow even to arrive late, but logins still get sshd's banner before their
    deadline: the held hosts are alive; without that answer they go DOWN at the hold bound."""
    for answered in (True, False):
        t = fleet2(4)
        at = 10.0
        k = 0
        while at < 60.0:
            for h in ("h0", "h1", "h2", "h3"):
                t.observe(fail(1, at, host=h))
            if k % 16 == 0:  # every 2.4 s a login per host runs out of time
                for h in ("h0", "h1", "h2", "h3"):
                    t.observe(ProbeResult(h, 2, False, None, "login timeout 2000 ms during key exchange", at,
                                          timeout=True, answered=answered))
            at += 0.15
            k += 1
        states = {v.state for v in t.snapshot().values()}
        if answered:
            assert states == {Health.SUSPECT}, t.snapshot()
        else:
            assert Health.DOWN in states, t.snapshot()  # "held 10.0 s, no sign of life"
