"""The chaos run's judge (deploy/lab/clusterlab/chaos_judge.py): false failovers and client failures."""

from __future__ import annotations

import time

from clusterlab.chaos_judge import FaultWindow, MapPoller, OwnerChange, client_failures, false_failovers, totals

HOMES = {1: "h1", 2: "h2", 3: "h3"}
FAULTS = [FaultWindow("hang_sshd", "h2", 100.0, 103.0), FaultWindow("kill_controller", "h3", 200.0, 202.0)]


def test_moves_away_from_a_faulted_host_or_back_home_are_not_false_failovers() -> None:
    changes = [
        OwnerChange(101.0, 2, "h2", None, "h1"),  # revoke from the hung host
        OwnerChange(101.5, 2, None, "h1", None),  # grant: judged with its revoke
        OwnerChange(107.0, 2, "h1", None, "h2"),  # failback home (h1 was never faulted)
        OwnerChange(107.5, 2, None, "h2", None),
    ]
    assert false_failovers(changes, FAULTS, HOMES) == []


def test_a_move_away_from_a_healthy_host_is_a_false_failover() -> None:
    changes = [OwnerChange(150.0, 1, "h1", None, "h3"),  # h1 never faulted, not going home
               OwnerChange(201.0, 3, "h3", "h1", None)]  # kill_controller does not fault its "host"
    found = false_failovers(changes, FAULTS, HOMES)
    assert len(found) == 2 and "bucket 1 left h1" in found[0] and "bucket 3 left h3" in found[1]
    # away from a temporary owner (not its home): failback churn or a false failover, listed apart
    churn = [OwnerChange(150.0, 1, "h2", None, "h3", releasing="h2")]
    assert false_failovers(churn, FAULTS, HOMES) == []
    assert len(false_failovers(churn, FAULTS, HOMES, temporary=True)) == 1
    # a move shortly after the fault healed (probes rise, hooks restart) is still the fault's
    assert false_failovers([OwnerChange(106.0, 2, "h2", None, "h1")], FAULTS, HOMES) == []
    # a poll that missed epochs: the previous owner h1 did not lose it, the revoke released h2
    assert false_failovers([OwnerChange(102.0, 3, "h1", None, "h1", releasing="h2")], FAULTS, HOMES,
                           temporary=True) == []
    assert "nearest fault hang_sshd h2 (+17.0 s after its heal)" in false_failovers(
        [OwnerChange(120.0, 2, "h2", None, "h1")], FAULTS, HOMES)[0]
    assert len(false_failovers([OwnerChange(120.0, 2, "h2", None, "h1")], FAULTS, HOMES)) == 1


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
