"""clusterip-ctl steering against real ZooKeeper: preview, confirmation, refusals, CAS, history.

Exit codes under test: 0 requested (or already in effect), 6 refused, 7 not confirmed, 2 usage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clusterlab.zookeeper import ZooKeeperCluster
from ctl_fixtures import CLUSTER, HOSTS, State, healthy, run, spec_of, unix3_down, write_config
from kazoo.client import KazooClient

from controller.core import schema
from controller.core import zk_layout as layout
from controller.core.model import Health, Intents
from controller.ctl import zkview
from controller.zk.store import ClusterStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def config(zk_server: ZooKeeperCluster, zk_client: KazooClient, tmp_path: Path) -> Path:
    return write_config(tmp_path, zk_server.hosts, zk_client.chroot, policy="manual")


def intents(client: KazooClient) -> Intents:
    data, _ = client.get(layout.intents_path(CLUSTER))
    return schema.decode_intents(data)


def history(client: KazooClient, config: Path) -> list[schema.HistoryEvent]:
    return ClusterStore(client, spec_of(config)).read_history()


def test_drain_previews_asks_and_records_who(zk_client: KazooClient, config: Path) -> None:
    healthy().write(zk_client)
    declined = run(config, "drain", "unix2", stdin="n\n")
    assert declined.exit_code == 7
    assert declined.stdout.splitlines()[:2] == ["drain unix2 in cluster unix0:",
                                                "  bucket 2: unix2 -> unix1 (unix2 drained)"]
    assert declined.stderr.startswith("clusterip-ctl: error: not confirmed: drain unix2 was not requested")
    assert not zk_client.exists(layout.intents_path(CLUSTER))
    no_tty = run(config, "drain", "unix2")  # stdin at EOF, no --yes: never proceeds silently
    assert no_tty.exit_code == 7
    accepted = run(config, "drain", "unix2", stdin="y\n", env={"SUDO_USER": "bob"})
    assert accepted.exit_code == 0, accepted.output
    assert "requested: drain unix2 (cluster unix0)" in accepted.stdout
    assert intents(zk_client).drained == frozenset({"unix2"})
    events = history(zk_client, config)
    assert [(e.kind, e.from_host) for e in events] == [("request", "unix2")]
    assert events[0].reason.startswith("drain unix2 by bob@") and events[0].reason.endswith(": b2 unix2->unix1")
    assert events[0].controller.startswith("clusterip-ctl bob@")
    again = run(config, "drain", "unix2", "--yes")
    assert again.exit_code == 0 and "already in effect: nothing to do" in again.stdout
    status = run(config, "status", "--json")
    assert '"state": "draining"' in status.stdout and status.exit_code == 4
    undrain = run(config, "undrain", "unix2", "-y")
    assert undrain.exit_code == 0 and intents(zk_client).drained == frozenset()


def test_drain_refused_when_it_would_leave_a_bucket_unowned(zk_client: KazooClient, config: Path) -> None:
    State(owners={1: "unix1", 2: "unix1", 3: "unix1", 4: "unix1"},
          health={"unix1": Health.UP, "unix2": Health.DOWN, "unix3": Health.DOWN, "unix4": Health.DOWN},
          hooks=("unix1",)).write(zk_client)
    result = run(config, "drain", "unix1", "--yes")
    assert result.exit_code == 6
    assert result.stderr.strip() == (
        "clusterip-ctl: error: refused: drain unix1: it would leave buckets 1, 2, 3, 4 without an owner (hosts able "
        "to take buckets: none); bring another host up (or undrain one) first, see clusterip-ctl status")
    assert not zk_client.exists(layout.intents_path(CLUSTER))
    assert [e.kind for e in history(zk_client, config)] == ["request-refused"]


def test_move_pins_refuses_unhealthy_and_clears(zk_client: KazooClient, config: Path) -> None:
    unix3_down().write(zk_client)
    refused = run(config, "move", "2", "unix3", "--yes")
    assert refused.exit_code == 6 and "unix3 is down: connection refused" in refused.stderr
    missing = run(config, "move", "9", "unix1", "--yes")
    assert missing.exit_code == 6 and "bucket 9 does not exist" in missing.stderr
    unknown = run(config, "move", "2", "nohost", "--yes")
    assert unknown.exit_code == 6 and "host 'nohost' is not in cluster unix0" in unknown.stderr
    moved = run(config, "move", "2", "unix4", "--yes")
    assert moved.exit_code == 0
    assert moved.stdout.splitlines()[1] == "  bucket 2: unix2 -> unix4 (pinned to unix4 by operator)"
    assert intents(zk_client).pins == {2: "unix4"}
    assert "pinned b2->unix4" in run(config, "status").stdout.splitlines()[0]
    usage = run(config, "move", "2")
    assert usage.exit_code == 2 and "give either HOST" in usage.stderr
    cleared = run(config, "move", "2", "--clear", "--yes")
    assert cleared.exit_code == 0 and intents(zk_client).pins == {}
    assert [e.kind for e in history(zk_client, config)][-1] == "request"


def test_failback_requests_for_able_hosts_only(zk_client: KazooClient, config: Path) -> None:
    state = State(owners={1: "unix1", 2: "unix1", 3: "unix4", 4: "unix4"}, health={h: Health.UP for h in HOSTS},
                  hooks=("unix1", "unix2", "unix4"))
    state.write(zk_client)
    refused = run(config, "failback", "unix3", "--yes")
    assert refused.exit_code == 6 and "the hook of unix3 is not running" in refused.stderr
    result = run(config, "failback", "--yes")
    assert result.exit_code == 0, result.output
    assert "  bucket 2: unix1 -> unix2 (failback to home host unix2 (requested by operator))" in result.stdout
    assert set(intents(zk_client).failback_requests) == {"unix2"}


def test_pause_and_resume_preview(zk_client: KazooClient, config: Path) -> None:
    state = unix3_down()
    state.health = {h: Health.UP for h in HOSTS}
    state.hooks = HOSTS
    state.write(zk_client)
    paused = run(config, "pause", "--yes")
    assert paused.exit_code == 0 and "while paused the controller changes nothing" in paused.stdout
    assert intents(zk_client).paused is True
    run(config, "failback", "unix3", "--yes")
    resumed = run(config, "resume", stdin="y\n")
    assert resumed.exit_code == 0
    assert "  bucket 3: unix1 -> unix3 (failback to home host unix3 (requested by operator))" in resumed.stdout
    assert intents(zk_client).paused is False


def test_intents_written_with_compare_and_set(zk_client: KazooClient, config: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Another request lands between our read and our write: ours is re-evaluated, theirs kept."""
    healthy().write(zk_client)
    real = zkview.read_cluster
    calls = []

    def racing(client: KazooClient, spec: object) -> object:
        result = real(client, spec)  # type: ignore[arg-type]
        calls.append(1)
        if len(calls) == 1:  # someone drains unix4 right after our first read
            store = ClusterStore(zk_client, spec_of(config))
            snap = store.snapshot()
            assert store.write_intents(Intents(drained=frozenset({"unix4"})), snap.intents_version)
        return result

    monkeypatch.setattr(zkview, "read_cluster", racing)
    result = run(config, "drain", "unix2", "--yes")
    assert result.exit_code == 0, result.output
    assert "the intents changed meanwhile" in result.stderr
    assert intents(zk_client).drained == frozenset({"unix2", "unix4"})
    assert len(calls) == 2
