"""Coordination against real ZooKeeper: hooks and controllers as subprocesses (issue 4).

Every test runs the overlap checker (published statuses of live hooks and the memory kernels'
journals) and fails on any bucket held by two hooks at once. Session timeout 1 s, tick 200 ms.
Measured times are printed (run with -s) together with the load average, since they are noisy on a
shared machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterlab.ports import free_tcp_ports
from clusterlab.zookeeper import ZooKeeperCluster
from conftest import unique_chroot
from coordination_harness import CLUSTER, CoordLab, bring_up, checked_coord_lab

from controller.core import schema
from controller.core import zk_layout as layout

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SESSION_S = 1.0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} {five:.1f} {fifteen:.1f}"


def report(what: str, seconds: float) -> None:
    print(f"\n[measured] {what}: {seconds * 1000:.0f} ms ({load()})")


@pytest.fixture
def lab(zk_server: ZooKeeperCluster, request: pytest.FixtureRequest) -> Iterator[CoordLab]:
    with checked_coord_lab(zk_server, unique_chroot(request.node.name), SESSION_S) as coord:
        yield coord


@pytest.fixture
def ensemble_lab(zk_ensemble: ZooKeeperCluster, request: pytest.FixtureRequest) -> Iterator[CoordLab]:
    with checked_coord_lab(zk_ensemble, unique_chroot(request.node.name), SESSION_S) as coord:
        yield coord


def history_kinds(lab: CoordLab, since: float = 0.0) -> list[tuple[str, int | None]]:
    return [(e.kind, e.bucket) for e in lab.store.read_history(since=since)]


# ---------------------------------------------------------------------------------- registration


def test_registration_publishes_member_and_status_and_converges(lab: CoordLab) -> None:
    lab.start_checker()
    bring_up(lab)
    snap = lab.snapshot()
    assert set(snap.members) == set(lab.host_ids)
    for host in lab.host_ids:
        data, stat = lab.client.get(layout.member_path(CLUSTER, host))
        assert stat.ephemeralOwner != 0, "member znodes must be ephemeral"
        doc = json.loads(data)
        assert doc["schema"] == schema.SCHEMA_VERSION and doc["kind"] == "member"
        assert doc["host_id"] == host and doc["address"] == lab.addresses[host]
        assert doc["backend"] == "nftables" and doc["version"]
        status = snap.statuses[host]
        assert status.held == frozenset(lab.homes(host)) and status.epoch == snap.map.epoch
    grants = [k for k in history_kinds(lab) if k[0] == "grant"]
    assert sorted(b for _, b in grants) == list(range(1, lab.buckets + 1))


def test_duplicate_host_id_is_refused_with_exit_3(lab: CoordLab) -> None:
    lab.start_checker()
    bring_up(lab)
    first_session = lab.client.exists(layout.member_path(CLUSTER, "h1")).ephemeralOwner
    started = time.monotonic()
    dup = lab.start_hook("h2", as_host="h1", name="hook-duplicate", wait=False)
    code = dup.popen.wait(timeout=30)
    took = time.monotonic() - started
    log = dup.log()
    errors = [line for line in log.splitlines() if "error" in line.lower()]
    assert code == 3, log
    assert len(errors) == 1 and errors[0].startswith("clusterip-node-hook: error: host id h1 is already registered")
    assert "Traceback" not in log
    assert took >= 1.5 * SESSION_S, "it must wait 1.5 session timeouts for a stale registration to expire"
    assert lab.client.exists(layout.member_path(CLUSTER, "h1")).ephemeralOwner == first_session
    assert lab.snapshot().statuses["h1"].held == frozenset(lab.homes("h1")), "the live hook's status is untouched"
    report("duplicate hook refused after", took)


# ---------------------------------------------------------------------------------- handoff


def test_host_down_with_live_hook_revokes_then_acks_then_grants(lab: CoordLab) -> None:
    lab.start_checker()
    bring_up(lab)
    epoch = lab.snapshot().map.epoch
    down_at = lab.set_health("h1", "down", "power supply")
    lab.wait_for(lambda: lab.converged(without="h1"), 20,
                 "h1's buckets moved")
    snap = lab.snapshot()
    for bucket in lab.homes("h1"):
        new_owner = snap.map.buckets[bucket].owner
        assert new_owner in ("h2", "h3", "h4")
        revoked = lab.revoke_time("h1", bucket, down_at)
        granted = lab.grant_time(new_owner, bucket, down_at)
        assert revoked is not None and granted is not None
        assert revoked < granted, "the old owner released before the new one was granted"
        report(f"host down (hook alive) -> grant of b{bucket} applied on {new_owner}", granted - down_at)
    kinds = [(e.kind, e.bucket, e.epoch) for e in lab.store.read_history() if e.epoch > epoch]
    for bucket in lab.homes("h1"):
        revoke = next(e for k, b, e in kinds if k == "revoke" and b == bucket)
        grant = next(e for k, b, e in kinds if k == "grant" and b == bucket)
        assert revoke < grant, "revoke and grant happen in separate map epochs, the ack in between"
    others = {b: h for b, h in lab.home_map().items() if h != "h1"}
    assert all(snap.map.buckets[b].owner == h for b, h in others.items()), "only h1's buckets moved"


def test_host_down_with_dead_hook_grants_only_after_session_gone(lab: CoordLab) -> None:
    lab.start_checker()
    bring_up(lab)
    killed = lab.kill_hook("h2", host_dead=True)
    lab.set_health("h2", "down", "host crashed")
    gone = lab.member_gone_time("h2", killed, 10)
    lab.wait_for(lambda: lab.converged(without="h2"), 20, "h2's buckets moved")
    snap = lab.snapshot()
    for bucket in lab.homes("h2"):
        owner = snap.map.buckets[bucket].owner
        assert owner is not None
        granted = lab.grant_time(owner, bucket, killed)
        assert granted is not None
        assert granted >= gone - 0.01, f"b{bucket} granted {gone - granted:.3f} s before h2's session was gone"
        report(f"hook SIGKILL + host down -> grant of b{bucket}", granted - killed)
    report("hook SIGKILL -> its member znode gone", gone - killed)
    assert gone - killed >= SESSION_S * 0.9, "the member vanished before the session timeout"


def test_dead_hook_on_healthy_host_keeps_its_buckets_and_alerts(lab: CoordLab) -> None:
    lab.start_checker()
    bring_up(lab)
    before = lab.owners()
    killed = lab.kill_hook("h3", host_dead=False)
    lab.member_gone_time("h3", killed, 10)
    controller = lab.controllers["c1"]
    lab.wait_for(lambda: "alert: hook of h3 is not running" in controller.log(), 10, "alert about h3", controller)
    time.sleep(0.5)
    assert lab.owners() == before, "no bucket may move while the host is healthy"
    # The restarted hook adopts its kernel (journal) and never drops a bucket it still owns.
    lab.start_hook("h3")
    lab.wait_for(lambda: lab.converged(lab.home_map()), 20, "h3 back and converged")
    assert not [e for e in lab.journal_events("h3") if e[0] > killed and e[1] in ("revoke", "reset")]


# ---------------------------------------------------------------------------------- controllers


def test_killing_the_leading_controller_moves_nothing(lab: CoordLab) -> None:
    lab.start_checker()
    bring_up(lab, controllers=3)
    lab.wait_for(lambda: len(lab.election_ids()) == 3, 20, "three controllers in the election")
    leader = lab.leader()
    assert leader is not None
    snap = lab.snapshot()
    epoch, version = snap.map.epoch, snap.map_version
    history_before = len(lab.store.read_history())
    killed = lab.controllers[leader].kill()
    new_leader = lab.wait_for(lambda: (lk := lab.leader()) != leader and lk, 10, "a new leader")
    elected = time.monotonic()
    proc = lab.controllers[new_leader]
    lab.wait_for(lambda: "is now the leader" in proc.log(), 5, f"{new_leader} logs its leadership", proc)
    time.sleep(1.0)
    snap = lab.snapshot()
    assert (snap.map.epoch, snap.map_version) == (epoch, version), "the new leader must not rewrite the map"
    assert len(lab.store.read_history()) == history_before
    report(f"leader {leader} SIGKILL -> {new_leader} first in the election", elected - killed)
    assert elected - killed <= SESSION_S + 1.0
    # The new leader really acts: a host failure is handled.
    lab.set_health("h4", "down")
    lab.wait_for(lambda: lab.converged(without="h4"), 20, "new leader moved h4's buckets")
    assert re.search(r"grant b\d", proc.log())


# ---------------------------------------------------------------------------------- clusterip-ctl history


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "clusterip-ctl"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)


def test_ctl_history_shows_every_decision(lab: CoordLab) -> None:
    bring_up(lab)
    lab.set_health("h2", "down", "disk on fire")
    lab.wait_for(lambda: lab.converged(without="h2"), 20, "h2's buckets moved")
    result = ctl("history", "--config", str(lab.config_path), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    events = doc["events"]
    assert doc["cluster"] == CLUSTER
    assert [e["epoch"] for e in events] == sorted(e["epoch"] for e in events), "oldest first"
    moves = [(e["event"], e["bucket"], e["from"], e["to"]) for e in events if e["bucket"] in lab.homes("h2")]
    revokes = [m for m in moves if m[0] == "revoke"]
    assert {(b, f) for _, b, f, _ in revokes} == {(b, "h2") for b in lab.homes("h2")}
    assert all("disk on fire" in e["reason"] and e["controller"] == "c1" for e in events if e["event"] == "revoke")
    text = ctl("history", "--config", str(lab.config_path), "--since", "10m")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert len(lines) == len(events)
    assert any(re.search(r"Z epoch \d+ revoke b3 from h2 \(h2 down: disk on fire\) \[c1\]$", line) for line in lines)
    future = ctl("history", "--config", str(lab.config_path), "--since", "2999-01-01T00:00:00Z")
    assert future.returncode == 0 and future.stdout.startswith(f"cluster {CLUSTER}: no events since 2999-01-01")


def test_ctl_history_errors_are_one_line(tmp_path: Path) -> None:
    bad = ctl("history", "--config", "/nonexistent/cipfo.yaml", "--since", "yesterday")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--since" in bad.stderr
    config = tmp_path / "c.yaml"
    text = (Path(__file__).resolve().parents[2] / "deploy" / "examples" / "seed-unix0.yaml").read_text()
    port = free_tcp_ports(1)[0]
    config.write_text(text.replace('"127.0.0.1:2181"', f'"127.0.0.1:{port}"\n  connect_timeout_s: 0.5'))
    down = ctl("history", "--config", str(config))
    assert down.returncode == 1, down.stderr
    assert down.stderr.strip().count("\n") == 0 and "cannot reach ZooKeeper" in down.stderr
