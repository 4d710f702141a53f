"""The chaos run's judge (deploy/lab/clusterlab/chaos_judge.py): false failovers and client failures."""

from __future__ import annotations

import time

from clusterlab.chaos_judge import (
    FaultWindow,
    HistoryCollector,
    MapPoller,
    OwnerChange,
    client_failures,
    judge_moves,
    move_summary,
    totals,
)

from controller.core.schema import HistoryEvent

FAULTS = [FaultWindow("hang_sshd", "h2", 100.0, 103.0), FaultWindow("kill_controller", "h3", 200.0, 202.0)]


def event(at: float, bucket: int, host: str, reason: str, kind: str = "revoke", epoch: int = 7) -> HistoryEvent:
    return HistoryEvent(at, epoch, kind, reason, "c1", bucket, from_host=host if kind == "revoke" else None,
                        to_host=host if kind == "grant" else None)


def test_every_revoke_is_attributed_from_the_planners_reason() -> None:
    events = [
        event(101.0, 2, "h2", "h2 down: banner timeout 300 ms"),  # the hung host: its fault
        event(101.0, 2, "h1", "h2 down: banner timeout 300 ms", kind="grant"),  # grants are not judged
        event(107.0, 2, "h1", "failback to home host h2 (immediate)"),  # h1 under no fault: failback
        event(150.0, 4, "h2", "hook of h2 died; its session is gone, so its dead-man switch stopped ..."),
        event(151.0, 5, "h3", "pinned to h1 by operator"),
        event(152.0, 6, "h3", "h3 drained"),
    ]
    faults = [*FAULTS, FaultWindow("kill_hook", "h2", 148.5, 149.5)]
    moves = judge_moves(events, faults)
    assert [m.cause for m in moves] == ["fault hang_sshd h2", "failback", "fault kill_hook h2", "operator",
                                       "operator"]
    summary = move_summary(moves, faults)
    assert summary["by_cause"] == {"failback": 1, "fault hang_sshd": 1, "fault kill_hook": 1, "operator": 2}
    assert summary["false_failovers"] == [] and summary["unattributed"] == []


def test_a_down_verdict_or_dead_hook_without_a_fault_is_a_false_failover() -> None:
    events = [
        event(150.0, 1, "h1", "h1 down: banner timeout 300 ms"),  # h1 never faulted
        event(201.0, 3, "h3", "h3 down: connect timeout"),  # kill_controller does not fault its "host"
        event(106.0, 2, "h2", "h2 down: banner timeout"),  # 3 s after the heal: still the fault's (grace)
        event(120.0, 2, "h2", "hook of h2 died"),  # 17 s after the heal: not the fault's any more
        event(121.0, 2, "h2", "h2 gives it up"),  # a reason the judge does not know
    ]
    moves = judge_moves(events, FAULTS)
    assert [m.cause for m in moves] == ["false failover", "false failover", "fault hang_sshd h2", "false failover",
                                       "unattributed"]
    summary = move_summary(moves, FAULTS)
    assert len(summary["false_failovers"]) == 3 and len(summary["unattributed"]) == 1
    assert "bucket 1 revoked from h1 (h1 down: banner timeout 300 ms)" in summary["false_failovers"][0]
    assert "nearest fault hang_sshd h2 (+17.0 s after its heal)" in summary["false_failovers"][2]


def test_history_collector_keeps_every_event_once_and_survives_read_errors() -> None:
    store = {"event-0000000001": "a", "event-0000000002": "b"}
    calls = {"n": 0}

    def read(known: set[str]) -> dict[str, str]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("ZooKeeper gone")
        if calls["n"] == 3:
            store["event-0000000003"] = "c"
            del store["event-0000000001"]  # pruned by the leader: already collected
        return {k: v for k, v in store.items() if k not in known}

    collector = HistoryCollector(read, interval_s=0.01).start()
    time.sleep(0.2)
    assert collector.stop() == ["a", "b", "c"] and collector.errors == 1


def test_client_failures_explained_by_faults_and_handoffs() -> None:
    initial = {1: "h1", 2: "h2"}
    changes = [OwnerChange(101.0, 2, "h2", None, "h1"), OwnerChange(101.5, 2, None, "h1", None)]
    buckets = {"s1": 1, "s2": 2}
    transitions = {
        "s2": [(99.0, "h2"), (100.2, "!banner timeout"), (101.6, "h1")],  # the hung host's bucket
        "s1": [(99.0, "h1"), (150.0, "!connect timeout"), (150.8, "h1")],  # nobody faulted: unexplained
    }
    out = client_failures(transitions, buckets.__getitem__, changes, initial, FAULTS, end=160.0)
    assert out["failure_runs"] == 2 and out["unexplained_runs"] == 1
    assert out["longest_failure_s"] == 1.4 and "s1" in out["examples"][0]
    assert totals({"s1": {"h1": 5, "!connect timeout": 2}, "s2": {"h2": 3}}) == {
        "attempts": 10, "answered": 8, "connect timeout": 2}


def test_map_poller_records_owner_changes() -> None:
    maps = iter([{1: ("h1", None)}, {1: ("h1", None)}, {1: (None, "h2")}, {1: ("h2", None)}])

    def read() -> dict[int, tuple[str | None, str | None]]:
        try:
            return next(maps)
        except StopIteration:
            raise RuntimeError("ZooKeeper gone") from None

    poller = MapPoller(read, interval_s=0.01).start()
    time.sleep(0.3)
    changes = poller.stop()
    assert [(c.before, c.after) for c in changes] == [("h1", None), (None, "h2")] and poller.errors > 0
