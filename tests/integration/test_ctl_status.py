"""clusterip-ctl status / nodes / which --owner against real ZooKeeper: tables, JSON, exit codes.

Each test writes one cluster situation into its own chroot (ctl_fixtures.State) and reads it back
through the CLI exactly as an operator would, without any controller running.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from clusterlab.zookeeper import ZooKeeperCluster
from ctl_fixtures import HOSTS, State, healthy, run, unix3_down, write_config
from kazoo.client import KazooClient

from controller.core.model import Health, Intents

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def config(zk_server: ZooKeeperCluster, zk_client: KazooClient, tmp_path: Path) -> Path:
    return write_config(tmp_path, zk_server.hosts, zk_client.chroot)


def status_json(config: Path, *args: str) -> tuple[int, dict[str, object]]:
    result = run(config, "status", "--json", *args)
    assert result.stderr == "", result.stderr
    return result.exit_code, json.loads(result.stdout)


def test_status_healthy_table_and_exit_0(zk_client: KazooClient, config: Path) -> None:
    healthy().write(zk_client)
    result = run(config, "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "unix0: OK: all 4 buckets served"
    assert lines[1] == "map epoch 7, leader ctl-a, controllers 1"
    assert lines[3].split() == ["BUCKET", "HOME", "OWNER", "STATE", "SINCE", "PIN", "DRAINING", "(SESSIONS)"]
    assert lines[4].split() == ["1", "unix1", "unix1", "serving", "2024-01-02", "12:01", "-", "-"]
    host_header = lines.index(next(line for line in lines if line.startswith("HOST")))
    assert lines[host_header].split() == ["HOST", "HEALTH", "SINCE", "REASON", "LATENCY", "HOOK", "APPLIED",
                                          "HOLDS", "HOME"]
    unix2 = lines[host_header + 2]
    assert unix2.startswith("unix2  up") and "2.1 ms" in unix2 and " yes " in unix2 and " 7/7 " in unix2


def test_status_json_fields_are_stable(zk_client: KazooClient, config: Path) -> None:
    healthy().write(zk_client)
    code, doc = status_json(config)
    assert code == 0
    assert set(doc) == {"schema", "time", "exit_code", "clusters"} and doc["schema"] == 1 and doc["exit_code"] == 0
    cluster = doc["clusters"][0]  # type: ignore[index]
    assert set(cluster) == {"cluster", "level", "exit_code", "verdict", "notes", "map_epoch", "paused", "leader",
                            "controllers", "buckets", "hosts"}
    assert (cluster["cluster"], cluster["level"], cluster["map_epoch"], cluster["leader"]) == ("unix0", "ok", 7,
                                                                                             "ctl-a")
    assert cluster["buckets"][2] == {"bucket": 3, "home": "unix3", "owner": "unix3", "state": "serving",
                                     "since": 1704196684.0, "releasing": None, "target": None, "pinned": None,
                                     "draining": None}
    host = cluster["hosts"][0]
    assert set(host) == {"host", "health", "health_since", "reason", "latency_ms", "hook", "hook_version", "address",
                         "applied_epoch", "lag", "held", "owns", "home", "drained", "error"}
    assert (host["host"], host["health"], host["hook"], host["applied_epoch"], host["lag"], host["held"]) == (
        "unix1", "up", True, 7, 0, [1])


def test_status_host_down_is_degraded_exit_4(zk_client: KazooClient, config: Path) -> None:
    unix3_down().write(zk_client)
    result = run(config, "status", "unix0")
    assert result.exit_code == 4, result.output
    assert result.stdout.splitlines()[0] == (
        "unix0: DEGRADED: all 4 buckets served; host unix3 down since 2024-01-02 12:03 (connection refused), "
        "its 1 bucket on unix1")
    row = next(line for line in result.stdout.splitlines() if line.startswith("3 "))
    assert row.split()[:4] == ["3", "unix3", "unix1", "serving"]
    unix3 = next(line for line in result.stdout.splitlines() if line.startswith("unix3 "))
    assert " down " in unix3 and "connection refused" in unix3 and " NO " in unix3
    code, doc = status_json(config)
    assert code == 4 and doc["clusters"][0]["level"] == "degraded"  # type: ignore[index]


def test_status_unowned_bucket_exit_5(zk_client: KazooClient, config: Path) -> None:
    state = unix3_down()
    state.owners = {1: "unix1", 2: "unix2", 3: None, 4: "unix4"}
    state.write(zk_client)
    result = run(config, "status")
    assert result.exit_code == 5
    assert result.stdout.startswith("unix0: UNOWNED: 1 of 4 buckets unowned (b3): their clients get no answer; ")
    code, doc = status_json(config)
    assert code == 5 and doc["clusters"][0]["buckets"][2]["state"] == "unowned"  # type: ignore[index]


def test_status_moving_draining_paused_and_no_controller(zk_client: KazooClient, config: Path) -> None:
    state = State(owners={1: "unix1", 2: "unix2", 3: None, 4: "unix4"}, health={h: Health.UP for h in HOSTS},
                  releasing={3: "unix3"}, leader=None,
                  intents=Intents(drained=frozenset({"unix4"}), paused=True), applied={"unix2": 5})
    state.write(zk_client)
    code, doc = status_json(config)
    cluster = doc["clusters"][0]  # type: ignore[index]
    assert code == 4 and cluster["paused"] is True and cluster["leader"] is None
    states = [b["state"] for b in cluster["buckets"]]
    assert states == ["serving", "serving", "moving", "draining"]
    verdict = cluster["verdict"]
    for part in ("3 of 4 buckets served, 1 in handoff", "b3 unix3 -> ?", "host unix4 drained, still holding b4",
                 "unix2 applied epoch 5 of 7", "paused by operator", "no controller running"):
        assert part in verdict, verdict
    text = run(config, "status")
    assert "(unix3 -> ?)" in text.stdout and "PAUSED" in text.stdout.splitlines()[1]


def test_status_without_any_map_works_and_is_degraded(zk_client: KazooClient, config: Path) -> None:
    code, doc = status_json(config)
    assert code == 4
    assert doc["clusters"][0]["verdict"].startswith("all 4 buckets served; no bucket map yet")  # type: ignore[index]


def test_status_unknown_cluster_and_unreachable_zookeeper(tmp_path: Path, config: Path) -> None:
    result = run(config, "status", "nope")
    assert result.exit_code == 2 and "no cluster named 'nope'" in result.stderr and "Traceback" not in result.output
    dead = write_config(tmp_path, "127.0.0.1:1", "/x")
    result = run(dead, "status")
    assert result.exit_code == 1
    assert result.stderr.startswith("clusterip-ctl: error: cannot reach ZooKeeper at 127.0.0.1:1")
    assert len(result.stderr.strip().splitlines()) == 1


def test_status_watch_redraws_count_frames(zk_client: KazooClient, config: Path) -> None:
    unix3_down().write(zk_client)
    result = run(config, "status", "-w", "0.1", "--count", "3", "--json")
    assert result.exit_code == 4
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(frames) == 3 and all(f["exit_code"] == 4 for f in frames)
    text = run(config, "status", "--watch", "0.1", "--count", "2")
    assert text.stdout.count("unix0: DEGRADED") == 2


def test_nodes_table_and_json(zk_client: KazooClient, config: Path) -> None:
    unix3_down().write(zk_client)
    result = run(config, "nodes")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "cluster unix0:"
    assert lines[1].split() == ["HOST", "HEALTH", "HOOK", "ADDRESS", "VERSION", "APPLIED", "HOLDS", "KERNEL", "ERROR"]
    assert lines[2].split() == ["unix1", "up", "yes", "127.0.0.11", "0.1.0", "7/7", "1,3", "-"]
    assert lines[4].split()[:3] == ["unix3", "down", "NO"]
    assert lines[-1] == "controllers: ctl-a (leader)"
    doc = json.loads(run(config, "nodes", "--json").stdout)
    assert set(doc) == {"schema", "time", "clusters"}
    cluster = doc["clusters"][0]
    assert set(cluster) == {"cluster", "map_epoch", "leader", "controllers", "hosts"}
    assert [h["hook"] for h in cluster["hosts"]] == [True, True, False, True]
    watched = run(config, "nodes", "-w", "0.1", "--count", "2", "--json")
    assert watched.exit_code == 0 and len(watched.stdout.splitlines()) == 2


def test_which_owner_reads_the_live_map(zk_client: KazooClient, config: Path) -> None:
    unix3_down().write(zk_client)
    from controller.core.hashing import bucket_for
    from controller.core.model import HashSettings

    address = next(a for a in (f"10.0.0.{i}" for i in range(1, 200))
                   if bucket_for("clusterip", __import__("ipaddress").ip_address(a), 4, HashSettings()) == 3)
    result = run(config, "which", address, "--config", str(config), "--owner")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("; home host unix3; owner unix1 (serving)")
    doc = json.loads(run(config, "which", address, "--config", str(config), "--owner", "--json").stdout)
    assert (doc["bucket"], doc["home"], doc["owner"], doc["state"]) == (3, "unix3", "unix1", "serving")
    plain = json.loads(run(config, "which", address, "--config", str(config), "--json").stdout)
    assert "owner" not in plain  # without --owner, which never touches ZooKeeper
    bad = run(config, "which", address, "--backend", "clusterip", "--buckets", "4", "--owner")
    assert bad.exit_code == 2 and "--owner reads the bucket map" in bad.stderr


def test_status_exit_codes_through_the_real_entry_point(zk_client: KazooClient, config: Path) -> None:
    unix3_down().write(zk_client)
    proc = subprocess.run([sys.executable, "-m", "controller.ctl.cli", "status", "-c", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout.startswith("unix0: DEGRADED: all 4 buckets served; host unix3 down since")
    assert proc.stderr == ""
