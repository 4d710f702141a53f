"""status_view and steering without ZooKeeper: levels, verdict lines, rows, JSON, previews, refusals."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from controller.core import status_view as sv
from controller.core.model import (
    BucketMap,
    BucketState,
    ClusterSpec,
    ClusterView,
    Health,
    HookStatus,
    HostHealth,
    HostSpec,
    Intents,
    Member,
)
from controller.core.steering import Request, evaluate

NOW = 1_000_000.0
HOSTS = ("h1", "h2", "h3")
SPEC = ClusterSpec(
    name="c", vip=ipaddress.ip_address("198.18.0.1"), interface="eth0", backend="clusterip", buckets=3,
    cluster_mac="01:00:5E:00:00:01",
    hosts=tuple(HostSpec(h, (i + 1,), f"127.0.0.{i + 1}") for i, h in enumerate(HOSTS)),
)


def view(owners: dict[int, str | None], down: tuple[str, ...] = (), hooks: tuple[str, ...] = HOSTS,
         intents: Intents | None = None, releasing: dict[int, str] | None = None, epoch: int = 5) -> ClusterView:
    buckets = {b: BucketState(owner=o, releasing=(releasing or {}).get(b), since=NOW - 60) for b, o in owners.items()}
    bucket_map = BucketMap("c", epoch, buckets)
    health = {h: HostHealth(h, Health.DOWN if h in down else Health.UP, NOW - 30, "refused" if h in down else "ok",
                            None if h in down else 1.5) for h in HOSTS}
    members = {h: Member(h, "127.0.0.1", "1", "clusterip") for h in hooks}
    statuses = {h: HookStatus(h, epoch, bucket_map.owned_by(h), NOW) for h in hooks}
    return ClusterView(SPEC, bucket_map, 1, health, members, statuses, intents or Intents())


def summary(v: ClusterView, leader: str | None = "ctl") -> sv.ClusterStatus:
    return sv.summarize(sv.StatusInput(v, NOW, leader, ("ctl",) if leader else ()))


def test_all_served_is_ok_exit_0() -> None:
    status = summary(view({1: "h1", 2: "h2", 3: "h3"}))
    assert (status.level, status.exit_code, status.verdict) == ("ok", 0, "all 3 buckets served")


def test_host_down_names_where_its_buckets_went() -> None:
    status = summary(view({1: "h1", 2: "h2", 3: "h1"}, down=("h3",), hooks=("h1", "h2")))
    assert status.exit_code == 4
    assert status.verdict == "all 3 buckets served; host h3 down since 13:46:10 (refused), its 1 bucket on h1"


def test_unowned_bucket_is_exit_5_and_moving_is_degraded() -> None:
    unowned = summary(view({1: "h1", 2: None, 3: "h3"}))
    assert unowned.exit_code == 5 and unowned.verdict.startswith("1 of 3 buckets unowned (b2)")
    moving = summary(view({1: "h1", 2: None, 3: "h3"}, releasing={2: "h2"}))
    assert moving.exit_code == 4 and moving.verdict.startswith("2 of 3 buckets served, 1 in handoff")
    assert [r.state for r in moving.buckets] == ["serving", "moving", "serving"]
    assert sv.overall_exit_code([moving, unowned]) == 5


def test_draining_paused_lag_and_no_controller() -> None:
    v = view({1: "h1", 2: "h2", 3: "h3"}, intents=Intents(drained=frozenset({"h2"}), paused=True))
    status = summary(v, leader=None)
    assert status.buckets[1].state == "draining"
    for part in ("host h2 drained, still holding b2", "paused by operator", "no controller running"):
        assert part in status.verdict
    lagging = view({1: "h1", 2: "h2", 3: "h3"})
    lagging = ClusterView(lagging.spec, lagging.map, 1, lagging.health, lagging.members,
                          {**lagging.statuses, "h1": HookStatus("h1", 3, frozenset({1}), NOW)})
    assert "h1 applied epoch 3 of 5" in summary(lagging).verdict


def test_json_and_tables_have_every_row() -> None:
    status = summary(view({1: "h1", 2: "h2", 3: "h1"}, down=("h3",), hooks=("h1", "h2")))
    doc = sv.document([status], NOW)
    assert doc["exit_code"] == 4 and doc["schema"] == sv.JSON_SCHEMA
    hosts = doc["clusters"][0]["hosts"]
    assert [h["host"] for h in hosts] == list(HOSTS) and hosts[2]["hook"] is False and hosts[0]["held"] == [1, 3]
    lines = sv.render_status(status, NOW)
    assert lines[0].startswith("c: DEGRADED: ") and len(lines) == 3 + 4 + 1 + 4
    assert all(line == line.rstrip() for line in lines)
    assert sv.render_nodes(status, NOW)[-1] == "controllers: ctl (leader)"


@given(st.lists(st.sampled_from([None, *HOSTS]), min_size=3, max_size=3),
       st.sets(st.sampled_from(HOSTS)), st.sets(st.sampled_from(HOSTS)))
def test_level_matches_unowned_buckets(owners: list[str | None], down: set[str], drained: set[str]) -> None:
    v = view(dict(enumerate(owners, start=1)), down=tuple(down), intents=Intents(drained=frozenset(drained)))
    status = summary(v)
    assert (status.level == "unowned") == (None in owners)
    assert status.level != "ok" or (not down and not drained and None not in owners)
    assert "\n" not in status.verdict


def test_steering_preview_and_refusals() -> None:
    v = view({1: "h1", 2: "h2", 3: "h3"})
    drain = evaluate(v, Request("drain", host="h2"), NOW)
    assert drain.changed and not drain.refusal
    assert [(m.bucket, m.from_host, m.to_host) for m in drain.moves] == [(2, "h2", "h1")]
    last = view({1: "h1", 2: "h1", 3: "h1"}, down=("h2", "h3"), hooks=("h1",))
    assert "without an owner" in evaluate(last, Request("drain", host="h1"), NOW).refusal
    assert evaluate(view({1: "h1", 2: "h2", 3: "h1"}, down=("h3",)), Request("move", "h3", 1), NOW).refusal \
        == "h3 is down: refused"
    assert "not in cluster c" in evaluate(v, Request("drain", host="zz"), NOW).refusal
    pin = evaluate(v, Request("move", "h3", 1), NOW)
    assert [(m.bucket, m.to_host, m.reason) for m in pin.moves] == [(1, "h3", "pinned to h3 by operator")]
    paused = view({1: "h1", 2: "h2", 3: "h1"}, intents=Intents(paused=True))
    resume = evaluate(paused, Request("resume"), NOW)
    assert resume.changed and resume.intents.paused is False


def test_draining_bucket_shows_its_remaining_sessions_and_stays_ok() -> None:
    base = view({1: "h1", 2: "h2", 3: "h3"})
    buckets = dict(base.map.buckets)
    buckets[3] = BucketState("h3", changed_epoch=5, since=NOW - 5, draining="h1", drain_since=NOW - 6, drain_epoch=4,
                             drain_sessions=7)
    statuses = dict(base.statuses)
    statuses["h1"] = HookStatus("h1", 5, frozenset({1}), NOW, draining=frozenset({3}), sessions={3: 4})
    v = ClusterView(SPEC, BucketMap("c", 5, buckets), 1, base.health, base.members, statuses, base.intents)
    status = summary(v)
    assert status.level == "ok"
    assert status.verdict == "all 3 buckets served; 1 bucket draining (b3 on h1: 4 sessions)"
    row = status.buckets[2]
    assert (row.state, row.drain_host, row.drain_sessions) == ("draining", "h1", 4)
    assert sv.bucket_json(row)["draining"] == {"host": "h1", "sessions": 4, "since": NOW - 6}
    assert sv.bucket_json(status.buckets[0])["draining"] is None
    text = "\n".join(sv.render_status(status, NOW))
    assert "DRAINING (SESSIONS)" in text and "h1: 4" in text
