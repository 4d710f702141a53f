"""Properties of the pure planner, each checked on >= 1,000 generated cases."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.model import Health, HostHealth, Intents
from controller.core.planner import plan

from .planner_sim import Sim, make_spec

CASES = settings(max_examples=1000, deadline=None)


@st.composite
def clusters(draw: st.DrawFn, min_buckets_per_host: int = 0) -> tuple[int, int, str]:
    hosts = draw(st.integers(2, 6))
    low = max(1, hosts * min_buckets_per_host)
    buckets = draw(st.integers(low, max(low, min(32, hosts * 4))))
    policy = draw(st.sampled_from(["immediate", "delayed", "manual"]))
    return hosts, buckets, policy


def converged(hosts: int, buckets: int, policy: str) -> Sim:
    sim = Sim(make_spec(hosts, buckets, policy))
    sim.converge()
    return sim


@CASES
@given(clusters(), st.data())
def test_every_bucket_has_one_healthy_owner_while_a_host_is_healthy(
    c: tuple[int, int, str], data: st.DataObject
) -> None:
    sim = converged(*c)
    ids = list(sim.spec.host_ids)
    down = data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids) - 1))
    hook_alive = data.draw(st.booleans())
    sim.fail(down, hook_dies=not hook_alive)
    sim.converge()
    for bucket, state in sim.map.buckets.items():
        assert state.owner is not None, f"bucket {bucket} unowned: {sim.decisions[-1].summary}"
        assert sim.health[state.owner].state is Health.UP
        assert state.owner not in down


@CASES
@given(clusters(), st.data())
def test_buckets_of_healthy_hosts_never_move_when_another_host_fails(
    c: tuple[int, int, str], data: st.DataObject
) -> None:
    sim = converged(*c)
    ids = list(sim.spec.host_ids)
    down = data.draw(st.lists(st.sampled_from(ids), unique=True, min_size=1, max_size=len(ids) - 1))
    before = dict(sim.map.buckets)
    sim.fail(down, hook_dies=data.draw(st.booleans()))
    sim.converge()
    for bucket, state in before.items():
        if state.owner not in down:
            assert sim.map.buckets[bucket].owner == state.owner


@CASES
@given(clusters(min_buckets_per_host=1), st.data())
def test_survivors_bucket_counts_differ_by_at_most_one(c: tuple[int, int, str], data: st.DataObject) -> None:
    sim = converged(*c)
    ids = list(sim.spec.host_ids)
    # Hosts fail one after another; after each failover the survivors stay balanced.
    order = data.draw(st.permutations(ids))
    for i, host in enumerate(order[:-1]):
        sim.fail([host], hook_dies=data.draw(st.booleans()))
        sim.converge()
        survivors = order[i + 1 :]
        counts = sim.counts(survivors)
        assert max(counts.values()) - min(counts.values()) <= 1, counts
        assert sum(counts.values()) == sim.spec.buckets


@CASES
@given(clusters(), st.data())
def test_deterministic_regardless_of_snapshot_order(c: tuple[int, int, str], data: st.DataObject) -> None:
    sim = converged(*c)
    ids = list(sim.spec.host_ids)
    sim.fail(data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids))), hook_dies=True)
    view = sim.view()
    shuffled = list(ids)
    random.Random(data.draw(st.integers(0, 2**32))).shuffle(shuffled)
    reordered = type(view)(
        view.spec,
        view.map,
        view.map_version,
        {h: view.health[h] for h in shuffled if h in view.health},
        {h: view.members[h] for h in shuffled if h in view.members},
        {h: view.statuses[h] for h in shuffled if h in view.statuses},
        view.intents,
    )
    assert plan(view, sim.now) == plan(view, sim.now) == plan(reordered, sim.now)


@CASES
@given(clusters(), st.data())
def test_no_two_hooks_ever_hold_a_bucket_with_lagging_hooks(c: tuple[int, int, str], data: st.DataObject) -> None:
    """Random interleaving of controller cycles, slow hooks, failures and recoveries."""
    sim = Sim(make_spec(*c))
    ids = list(sim.spec.host_ids)
    last_epoch = 0
    for _ in range(data.draw(st.integers(5, 40))):
        event = data.draw(st.sampled_from(["plan", "plan", "apply", "apply", "fail", "recover", "drain", "tick"]))
        if event == "plan":
            decision = sim.step()
            for action in decision.actions:
                if action.kind == "grant":
                    others = [h for h in sim.members if h != action.host and action.bucket in sim.statuses[h].held]
                    assert not others, f"granted b{action.bucket} to {action.host} while {others} hold it"
        elif event == "apply":
            sim.apply(data.draw(st.sampled_from(ids)))
        elif event == "fail":
            sim.fail([data.draw(st.sampled_from(ids))], hook_dies=data.draw(st.booleans()))
        elif event == "recover":
            host = data.draw(st.sampled_from(ids))
            if host not in sim.members:
                sim.recover(host)
        elif event == "drain":
            sim.intents = Intents(drained=frozenset(data.draw(st.lists(st.sampled_from(ids), max_size=2))))
        else:
            sim.now += data.draw(st.floats(0, 60))
        assert not sim.held_overlap(), f"overlap after {event}"
        assert sim.map.epoch >= last_epoch
        last_epoch = sim.map.epoch
        # A move is revoke then grant: a bucket never goes straight from one live hook to another.
        if event == "plan" and len(sim.decisions) >= 2:
            prev, cur = sim.decisions[-2].map, sim.decisions[-1].map
            for b, state in cur.buckets.items():
                old = prev.buckets[b].owner
                if old is not None and state.owner is not None and old != state.owner:
                    assert old not in sim.members


@CASES
@given(clusters(), st.data())
def test_failback_policies(c: tuple[int, int, str], data: st.DataObject) -> None:
    hosts, buckets, policy = c
    sim = Sim(make_spec(hosts, buckets, policy, hold=30.0))
    sim.converge()
    host = data.draw(st.sampled_from(list(sim.spec.host_ids)))
    home = set(sim.spec.host(host).home_buckets)
    sim.fail([host])
    sim.converge()
    sim.now += 5
    sim.recover(host)
    sim.converge()
    if policy == "immediate":
        assert sim.map.owned_by(host) == home
        return
    assert sim.map.owned_by(host) == frozenset(), "no failback before its time"
    if policy == "delayed":
        sim.now += 29
        sim.converge()
        assert sim.map.owned_by(host) == frozenset()
        sim.now += 1
        sim.converge()
        assert sim.map.owned_by(host) == home
    else:
        sim.now += 3600
        sim.converge()
        assert sim.map.owned_by(host) == frozenset(), "manual: never without a request"
        sim.intents = Intents(failback_requests={host: sim.now - 7200})
        sim.converge()
        assert sim.map.owned_by(host) == frozenset(), "a request older than the recovery does not count"
        sim.intents = Intents(failback_requests={host: sim.now})
        sim.converge()
        assert sim.map.owned_by(host) == home


@CASES
@given(clusters(min_buckets_per_host=1), st.data())
def test_drain_and_undrain(c: tuple[int, int, str], data: st.DataObject) -> None:
    sim = converged(*c)
    host = data.draw(st.sampled_from(list(sim.spec.host_ids)))
    home = set(sim.spec.host(host).home_buckets)
    sim.intents = Intents(drained=frozenset({host}))
    sim.converge()
    assert sim.map.owned_by(host) == frozenset()
    assert all(s.owner is not None for s in sim.map.buckets.values())
    others = [h for h in sim.spec.host_ids if h != host]
    counts = sim.counts(others)
    assert max(counts.values()) - min(counts.values()) <= 1
    sim.intents = Intents()
    sim.intents = Intents(failback_requests={host: sim.now})
    sim.converge()
    assert sim.map.owned_by(host) == home


def test_summary_is_one_line_and_says_why() -> None:
    sim = converged(4, 16, "delayed")
    sim.fail(["h3"], hook_dies=False)
    decision = sim.step()
    assert "\n" not in decision.summary
    assert "revoke b3 from h3 (h3 down: banner timeout 300 ms)" in decision.summary
    assert all(a.kind == "revoke" for a in decision.actions)
    sim.apply_all()
    decision = sim.step()
    assert decision.actions and all(a.kind == "grant" for a in decision.actions)
    assert "h3 released it" in decision.summary


def test_dead_hook_of_down_host_moves_in_one_write() -> None:
    sim = converged(4, 8, "immediate")
    sim.fail(["h2"], hook_dies=True)
    decision = sim.step()
    kinds = [(a.kind, a.bucket) for a in decision.actions]
    assert kinds == [("revoke", 2), ("grant", 2), ("revoke", 6), ("grant", 6)]
    assert "session is gone" in decision.summary


def test_healthy_host_with_dead_hook_keeps_its_buckets() -> None:
    sim = converged(4, 8, "immediate")
    sim.members.pop("h2")
    decision = sim.step()
    assert not decision.changed
    assert sim.map.owned_by("h2") == {2, 6}


def test_nothing_changes_when_no_host_is_eligible_or_when_paused() -> None:
    sim = converged(3, 6, "immediate")
    before = sim.map
    sim.fail(["h1", "h2", "h3"], hook_dies=False)
    assert not sim.step().changed and sim.map == before
    sim = converged(3, 6, "immediate")
    sim.intents = Intents(paused=True)
    sim.fail(["h1"])
    decision = sim.step()
    assert not decision.changed and "paused" in decision.summary


def test_suspect_host_keeps_but_receives_nothing() -> None:
    sim = converged(3, 6, "immediate")
    sim.health["h1"] = HostHealth("h1", Health.SUSPECT, sim.now, "banner timeout")
    sim.fail(["h2"])
    sim.converge()
    assert sim.map.owned_by("h1") == {1, 4}
    assert sim.map.owned_by("h3") == {2, 3, 5, 6}


def test_operator_pin_moves_a_bucket_through_revoke_and_grant() -> None:
    sim = Sim(make_spec(3, 6, "immediate", max_drain=0))  # draining off: a plain move
    sim.converge()
    sim.intents = Intents(pins={1: "h3"})
    first = sim.step()
    assert [(a.kind, a.host) for a in first.actions] == [("revoke", "h1")]
    sim.apply_all()
    second = sim.step()
    assert [(a.kind, a.host) for a in second.actions] == [("grant", "h3")]
    assert "pinned to h3" in second.summary


def test_operator_pin_of_a_healthy_owner_drains_through_revoke_and_grant() -> None:
    sim = converged(3, 6, "immediate")
    sim.intents = Intents(pins={1: "h3"})
    first = sim.step()
    assert [(a.kind, a.host) for a in first.actions] == [("revoke", "h1"), ("drain-start", "h1")]
    sim.sessions["h1"] = {1: 3}
    sim.apply_all()
    second = sim.step()
    assert [(a.kind, a.host) for a in second.actions] == [("grant", "h3")]
    assert "pinned to h3" in second.summary
    assert sim.map.buckets[1].draining == "h1" and sim.map.buckets[1].drain_sessions == 3


def test_start_up_waits_for_each_home_host_verdict() -> None:
    """The first host to answer must not collect every bucket; a host found down loses its homes."""
    sim = Sim(make_spec(3, 6, "delayed"))
    sim.health = {h: HostHealth(h, Health.UNKNOWN, 0.0) for h in sim.spec.host_ids}
    sim.health["h1"] = HostHealth("h1", Health.UP, 0.0)
    sim.converge()
    assert sim.map.owned_by("h1") == {1, 4}
    assert sim.map.owner_of(2) is None and sim.map.owner_of(3) is None
    sim.health["h2"] = HostHealth("h2", Health.DOWN, 0.0, "connection refused")
    sim.health["h3"] = HostHealth("h3", Health.UP, 0.0)
    sim.converge()
    assert sim.map.owned_by("h3") >= {3, 6}
    assert {sim.map.owner_of(2), sim.map.owner_of(5)} == {"h1", "h3"}, "h2's buckets spread one each"


def test_start_up_waits_for_the_home_hook_within_a_grace_period() -> None:
    sim = Sim(make_spec(3, 6, "delayed"))
    del sim.members["h2"]
    sim.health["h2"] = HostHealth("h2", Health.UP, sim.now, "")
    sim.converge()
    assert sim.map.owner_of(2) is None and sim.map.owner_of(5) is None, "waits for h2's hook"
    sim.now += 11
    sim.converge()
    assert {sim.map.owner_of(2), sim.map.owner_of(5)} == {"h1", "h3"}, "gives up after the grace period"
