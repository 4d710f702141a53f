"""A hook that dies on a healthy host: with a dead-man switch its buckets move, without one they stay.

The dead-man switch (controller/core/deadman.py) stops a kernel E after its hook's last refresh,
before the hook's session can expire, so an absent member whose last status reports ``deadman_s``
proves the kernel no longer serves: its buckets must go to survivors at once, even though the
host's probes say up. Without the field (memory backend, older hook) nothing may move, and right
after a ZooKeeper outage (``trust_absence=False``) an absent member proves nothing at all.
"""

from __future__ import annotations

from controller.core.model import BucketState
from controller.core.planner import keeps_buckets, plan

from .planner_sim import Sim, make_spec

E = 0.9  # the default profile: session timeout 1.5 s, E = 0.6 x 1.5


def armed(hosts: int = 4, buckets: int = 8, policy: str = "immediate", deadman: float | None = E) -> Sim:
    sim = Sim(make_spec(hosts, buckets, policy))
    sim.deadman_s = deadman
    sim.converge()
    return sim


def test_dead_hook_with_deadman_switch_on_an_up_host_moves_its_buckets_in_one_write() -> None:
    sim = armed()
    assert sim.map.owned_by("h2") == {2, 6}
    sim.kill_hook("h2")  # host still probed UP
    decision = sim.step()
    kinds = [(a.kind, a.bucket, a.host) for a in decision.actions]
    assert [k[:2] for k in kinds] == [("revoke", 2), ("grant", 2), ("revoke", 6), ("grant", 6)]
    assert {h for kind, _, h in kinds if kind == "revoke"} == {"h2"}
    receivers = {h for kind, _, h in kinds if kind == "grant"}
    assert receivers and "h2" not in receivers and len(receivers) == 2  # spread over survivors
    assert "dead-man switch" in decision.summary and "hook of h2 died" in decision.summary
    assert sim.map.owned_by("h2") == frozenset()
    # The other hosts' buckets did not move.
    for host in ("h1", "h3", "h4"):
        assert {1: "h1", 3: "h3", 4: "h4", 5: "h1", 7: "h3", 8: "h4"}.keys() >= sim.map.owned_by(host) - {2, 6}
    sim.apply_all()
    assert sim.held_overlap() == []
    assert not sim.step().changed


def test_revoke_in_flight_is_granted_once_the_dead_hooks_session_is_gone() -> None:
    """Two steps: a bucket revoked from h2 (a planned move) whose hook died before publishing the release."""
    sim = armed(policy="immediate")
    state = sim.map.buckets[2]
    moving = dict(sim.map.buckets)
    moving[2] = BucketState(owner=None, releasing="h2", target="h3", changed_epoch=sim.map.epoch + 1, since=sim.now)
    sim.map = type(sim.map)(sim.map.cluster, sim.map.epoch + 1, moving)
    assert state.owner == "h2"
    decision = plan(sim.view(), sim.now)
    assert decision.waiting.get(2, "").startswith("waiting for h2 to release")  # hook alive: wait for it
    sim.kill_hook("h2")
    decision = sim.step()
    grants = {a.bucket: a.host for a in decision.actions if a.kind == "grant"}
    assert grants.get(2) not in (None, "h2"), decision.summary  # to a survivor, without waiting for h2
    assert "dead-man switch" in decision.summary


def test_restarted_hook_gets_its_buckets_back_by_failback() -> None:
    sim = armed(policy="immediate")
    sim.kill_hook("h2")
    sim.step()
    sim.apply_all()
    assert sim.map.owned_by("h2") == frozenset()
    sim.start_hook("h2")
    for _ in range(6):
        sim.step()
        sim.apply_all()
        assert sim.held_overlap() == []
    assert sim.map.owned_by("h2") == {2, 6}
    assert any("failback to home host h2" in a.reason for d in sim.decisions[-6:] for a in d.actions)


def test_without_the_deadman_field_a_dead_hook_on_an_up_host_keeps_its_buckets() -> None:
    sim = armed(deadman=None)
    before = sim.map
    sim.kill_hook("h2")
    decision = sim.step()
    assert not decision.changed and sim.map == before
    assert keeps_buckets(sim.view(), "h2")


def test_no_revoke_while_absence_is_not_trusted_after_an_outage() -> None:
    sim = armed()
    before = sim.map
    for host in sim.spec.host_ids:  # an outage expired every session; no hook re-registered yet
        sim.kill_hook(host)
    sim.members["h1"] = sim.members.get("h1") or __import__("controller.core.model", fromlist=["Member"]).Member(
        "h1", "127.0.0.1", "test", sim.spec.backend)  # one hook is back: there is an eligible host
    decision = plan(sim.view(), sim.now, trust_absence=False)
    assert not decision.changed and decision.map == before and decision.actions == ()
    assert all(keeps_buckets(sim.view(), h, trust_absence=False) for h in sim.spec.host_ids)
    # Once the grace period is over, the absent hooks' buckets go to the one hook that came back.
    decision = plan(sim.view(), sim.now, trust_absence=True)
    assert decision.changed and {a.host for a in decision.actions if a.kind == "grant"} == {"h1"}


def test_trust_absence_false_keeps_a_single_dead_hooks_buckets() -> None:
    sim = armed()
    before = sim.map
    sim.kill_hook("h3")
    decision = plan(sim.view(), sim.now, trust_absence=False)
    assert not decision.changed and decision.map == before


def test_down_host_with_deadman_still_moves_in_one_write() -> None:
    sim = armed()
    sim.fail(["h2"], hook_dies=False)
    sim.kill_hook("h2")
    decision = sim.step()
    assert [(a.kind, a.bucket) for a in decision.actions] == [("revoke", 2), ("grant", 2), ("revoke", 6),
                                                              ("grant", 6)]


def test_drain_ends_when_the_draining_hook_dies_with_a_deadman_switch() -> None:
    sim = Sim(make_spec(3, 6, "drain"))
    sim.deadman_s = E
    sim.converge()
    sim.sessions["h3"] = {3: 5}
    sim.intents = type(sim.intents)(pins={3: "h1"})
    for _ in range(3):
        sim.step()
        sim.apply_all()
    assert sim.map.buckets[3].owner == "h1" and sim.map.buckets[3].draining == "h3"
    sim.kill_hook("h3")
    decision = plan(sim.view(), sim.now, trust_absence=False)
    assert not any(a.kind == "drain-end" for a in decision.actions)  # absence proves nothing yet
    decision = sim.step()
    ends = [a for a in decision.actions if a.kind == "drain-end" and a.bucket == 3]
    assert ends and "dead-man switch" in ends[0].reason
    assert sim.map.buckets[3].draining is None
