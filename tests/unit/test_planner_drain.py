"""Connection-aware drain in the pure planner (issue 9): properties and the cases that define it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.model import Health, HostHealth, Intents
from controller.core.planner import Action

from .planner_sim import Sim, make_spec

CASES = settings(max_examples=400, deadline=None)


def kinds(actions: tuple[Action, ...]) -> list[tuple[str, int, str]]:
    return [(a.kind, a.bucket, a.host) for a in actions]


def failed_over(policy: str = "drain", max_drain: float = 600.0) -> Sim:
    """4 hosts, 8 buckets; h2 failed (hook gone) and its buckets 2 and 6 went to survivors."""
    sim = Sim(make_spec(4, 8, policy, max_drain=max_drain))
    sim.converge()
    sim.fail(["h2"])
    sim.converge()
    assert not sim.map.owned_by("h2")
    return sim


def draining_b2(max_drain: float = 600.0, sessions: int = 1) -> tuple[Sim, str]:
    """h2 failed over and came back: bucket 2 drains on the survivor that held it, with ``sessions``."""
    sim = failed_over(max_drain=max_drain)
    sim.recover("h2")
    drainer = sim.map.owner_of(2)
    assert drainer is not None
    sim.sessions = {drainer: {2: sessions}}
    sim.converge()
    return sim, drainer


def test_a_failed_hosts_buckets_are_taken_over_at_once_without_drain() -> None:
    sim = Sim(make_spec(4, 8, "drain"))
    sim.converge()
    sim.fail(["h2"])
    decision = sim.step()
    assert [k for k, _, _ in kinds(decision.actions)] == ["revoke", "grant", "revoke", "grant"]
    assert all(s.draining is None for s in sim.map.buckets.values())


def test_failback_drain_gives_new_connections_home_and_ends_when_the_last_session_closes() -> None:
    sim = failed_over()
    survivor = {b: sim.map.owner_of(b) for b in (2, 6)}
    sim.now += 1
    sim.recover("h2")
    sim.sessions = {h: {b: 2 for b in (2, 6)} for h in sim.spec.host_ids if h != "h2"}
    first = sim.step()
    assert ("drain-start", 2, survivor[2]) in kinds(first.actions)
    assert sim.map.buckets[2].owner is None and sim.map.buckets[2].draining == survivor[2]
    sim.apply_all()
    second = sim.step()
    assert ("grant", 2, "h2") in kinds(second.actions) and ("grant", 6, "h2") in kinds(second.actions)
    assert sim.map.owned_by("h2") == {2, 6}, "the home host takes new connections at once"
    assert sim.map.quiet_on("h2") == {2, 6}
    assert sim.map.draining_on(survivor[2]) >= {2}
    sim.apply_all()
    sim.now += 5
    assert not sim.step().changed, "sessions remain: the drain goes on"
    sim.sessions[survivor[2]][2] = 0
    sim.apply_all()
    third = sim.step()
    end = [a for a in third.actions if a.kind == "drain-end"]
    assert [(a.bucket, a.host, a.preserved, a.cut) for a in end] == [(2, survivor[2], 2, 0)]
    assert sim.map.buckets[2].draining is None and sim.map.buckets[6].draining == survivor[6]
    assert not sim.map.quiet_on("h2") - {6}


def test_max_drain_time_cuts_the_remaining_sessions_and_counts_them() -> None:
    sim = failed_over(max_drain=30.0)
    sim.recover("h2")
    sim.sessions = {h: {2: 4, 6: 1} for h in sim.spec.host_ids}
    sim.converge()
    assert sim.map.owned_by("h2") == {2, 6}
    assert {b for b, s in sim.map.buckets.items() if s.draining} == {2, 6}
    for host in sim.sessions:
        sim.sessions[host] = {2: 3, 6: 1}  # one of bucket 2's four sessions finished
    sim.apply_all()
    sim.now += 30
    decision = sim.step()
    ends = {a.bucket: (a.preserved, a.cut) for a in decision.actions if a.kind == "drain-end"}
    assert ends == {2: (1, 3), 6: (0, 1)}
    assert all("maximum drain time 30 s" in a.reason for a in decision.actions)
    assert all(s.draining is None for s in sim.map.buckets.values())


def test_drain_ends_when_the_draining_host_fails() -> None:
    sim, drainer = draining_b2(sessions=5)
    assert sim.map.buckets[2].draining == drainer
    sim.fail([drainer], hook_dies=False)  # its last count is still published
    decision = sim.step()
    ends = [a for a in decision.actions if a.kind == "drain-end" and a.bucket == 2]
    assert ends and ends[0].cut == 5 and ends[0].preserved == 0 and "went down" in ends[0].reason


def test_a_drainer_whose_hook_restarts_keeps_draining_until_the_maximum() -> None:
    sim, drainer = draining_b2(max_drain=30.0, sessions=5)
    sim.members.pop(drainer)  # hook stopped, host healthy: its kernel still serves the sessions
    assert not any(a.kind == "drain-end" for a in sim.step().actions)
    sim.now += 30
    ends = [a for a in sim.step().actions if a.kind == "drain-end" and a.bucket == 2]
    assert ends and "maximum drain time" in ends[0].reason


def test_drain_of_a_vanished_hook_ends_with_unknown_counts() -> None:
    sim, drainer = draining_b2(sessions=5)
    sim.fail([drainer], hook_dies=True)
    ends = [a for a in sim.step().actions if a.kind == "drain-end" and a.bucket == 2]
    assert ends and ends[0].cut is None and ends[0].preserved is None and "? cut" in ends[0].reason


def test_clusterip_cannot_drain_and_moves_plainly() -> None:
    sim = Sim(make_spec(3, 6, "drain", backend="clusterip"))
    sim.converge()
    sim.intents = Intents(pins={1: "h3"})
    assert kinds(sim.step().actions) == [("revoke", 1, "h1")]


def test_drained_host_drains_its_sessions_and_a_move_back_to_it_keeps_them() -> None:
    sim = Sim(make_spec(3, 6, "immediate"))
    sim.converge()
    sim.sessions = {"h1": {1: 2, 4: 2}}
    sim.intents = Intents(drained=frozenset({"h1"}))
    sim.converge()
    assert sim.map.owned_by("h1") == frozenset() and sim.map.draining_on("h1") == {1, 4}
    sim.intents = Intents()  # undrain: immediate failback while its sessions still drain
    decision = sim.converge()
    assert decision.owned_by("h1") == {1, 4} and not sim.map.draining_on("h1")
    ends = [a for d in sim.decisions[-4:] for a in d.actions if a.kind == "drain-end"]
    assert {a.bucket for a in ends} == {1, 4}


@st.composite
def scenario(draw: st.DrawFn) -> tuple[int, int, str, list[tuple[str, int]]]:
    hosts = draw(st.integers(2, 5))
    buckets = draw(st.integers(hosts, hosts * 3))
    policy = draw(st.sampled_from(["immediate", "drain", "delayed", "manual"]))
    ops = draw(st.lists(st.tuples(st.sampled_from(["fail", "recover", "drain", "undrain", "pin", "close",
                                                   "hookloss", "time", "plan", "apply"]),
                                  st.integers(0, 100)), max_size=40))
    return hosts, buckets, policy, ops


@CASES
@given(scenario())
def test_never_two_hosts_accept_new_connections_of_a_bucket_and_every_drain_ends(
    case: tuple[int, int, str, list[tuple[str, int]]],
) -> None:
    hosts, buckets, policy, ops = case
    sim = Sim(make_spec(hosts, buckets, policy, hold=5.0, max_drain=60.0))
    sim.converge()
    ids = list(sim.spec.host_ids)
    for op, n in ops:
        host = ids[n % len(ids)]
        if op == "fail" and sum(1 for h in ids if sim.health[h].state is Health.UP) > 1:
            sim.fail([host], hook_dies=n % 2 == 0)
        elif op == "recover" and sim.health[host].state is Health.DOWN:
            sim.recover(host)
        elif op == "drain":
            sim.intents = Intents(drained=sim.intents.drained | {host}, pins=sim.intents.pins)
        elif op == "undrain":
            sim.intents = Intents(drained=sim.intents.drained - {host}, pins=sim.intents.pins)
        elif op == "pin":
            sim.intents = Intents(drained=sim.intents.drained, pins={1 + n % buckets: host})
        elif op == "close":
            sim.sessions[host] = {b: n % 3 for b in range(1, buckets + 1)}
        elif op == "hookloss" and host in sim.members:
            sim.members.pop(host)
        elif op == "time":
            sim.now += n
        elif op == "plan":
            sim.step()
        else:
            sim.apply(host)
        check_exclusive(sim)
    # Every drain ends: after the maximum drain time at the latest, with every host healthy.
    for host in ids:
        if sim.health[host].state is not Health.UP or host not in sim.members:
            sim.recover(host)
    sim.now += 61
    sim.converge()
    sim.now += 61
    sim.converge()
    assert all(s.draining is None for s in sim.map.buckets.values()), sim.decisions[-1].summary
    check_exclusive(sim)


def check_exclusive(sim: Sim) -> None:
    assert not sim.held_overlap(), "two live hooks accept new connections of one bucket"
    for bucket, state in sim.map.buckets.items():
        assert state.draining is None or state.draining != state.owner, f"bucket {bucket} owned and drained"
        assert state.owner is None or state.releasing is None
    for host, status in sim.statuses.items():
        assert not status.held & status.draining, f"{host} both accepts and drains a bucket"


def test_a_suspect_drainer_keeps_draining() -> None:
    sim, drainer = draining_b2(sessions=1)
    sim.health[drainer] = HostHealth(drainer, Health.SUSPECT, sim.now, "slow banner")
    assert not any(a.kind == "drain-end" for a in sim.step().actions)
