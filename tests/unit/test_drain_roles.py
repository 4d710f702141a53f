"""The hook's view of a draining map (node_hook/drain.py) and the memory backend's drain."""

from __future__ import annotations

from controller.core.model import BucketMap, BucketState
from node_hook.backends.memory import MemoryBackend
from node_hook.drain import Roles, SessionCounter

from .planner_sim import make_spec

MAP = BucketMap("c1", 9, {
    1: BucketState("h1"),
    2: BucketState("h2", draining="h1", drain_epoch=8),
    3: BucketState(None, releasing="h3", target="h2", draining="h3", drain_epoch=9),
    4: BucketState("h3"),
})


def test_roles_per_host() -> None:
    assert (MAP.owned_by("h1"), Roles.of(MAP, "h1")) == ({1}, Roles(frozenset({2}), frozenset()))
    assert (MAP.owned_by("h2"), Roles.of(MAP, "h2")) == ({2}, Roles(frozenset(), frozenset({2})))
    assert (MAP.owned_by("h3"), Roles.of(MAP, "h3")) == ({4}, Roles(frozenset({3}), frozenset()))
    # a stale map starts no new drain and hushes only what is still owned
    assert Roles.of(MAP, "h3").within(frozenset({4}), frozenset()) == Roles()


def test_memory_backend_moves_a_bucket_from_owned_to_draining_and_counts() -> None:
    backend = MemoryBackend(4, frozenset({1, 2}))
    assert backend.apply_drain({1}, {2}) == ({1}, {2})
    assert backend.apply_drain({1, 3}, {2}, {3}) == ({1, 3}, {2}) and backend.quiet == {3}
    backend.sessions = {2: 5}
    assert SessionCounter(make_spec(2, 4), backend).count(backend.draining()) == {2: 5}
    assert backend.apply({1}) == {1} and backend.draining() == frozenset() and backend.quiet == frozenset()
