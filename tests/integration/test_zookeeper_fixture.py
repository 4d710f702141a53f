"""The lab ZooKeeper (clusterlab.zookeeper) and its fixtures, against real servers.

These also measure the ZooKeeper behaviour the controller's timing rests on (start time, leader
failover, session loss on a hung server, ephemeral cleanup after a crash) and print the numbers
(run with -s to see them).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from clusterlab import ports
from clusterlab import zookeeper as zkmod
from clusterlab.zookeeper import ZooKeeperCluster
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import KazooException
from kazoo.protocol.states import WatchedEvent

pytestmark = pytest.mark.integration

HOLDER = Path(__file__).with_name("zk_ephemeral_holder.py")


class StateLog:
    """Records kazoo state changes with their monotonic time (listener runs on kazoo's thread)."""

    def __init__(self, client: KazooClient) -> None:
        self.events: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        client.add_listener(self._on_state)

    def _on_state(self, state: str) -> None:
        with self._lock:
            self.events.append((time.monotonic(), state))

    def states(self) -> list[str]:
        with self._lock:
            return [s for _, s in self.events]


def write_until_ok(client: KazooClient, path: str, deadline_s: float) -> float:
    """Retry a set() until it succeeds; return when (monotonic). Fails the test at the deadline."""
    end = time.monotonic() + deadline_s
    attempts = 0
    while time.monotonic() < end:
        attempts += 1
        try:
            client.set(path, str(attempts).encode())
            return time.monotonic()
        except KazooException:
            time.sleep(0.01)
    pytest.fail(f"writes did not resume within {deadline_s} s ({attempts} attempts)")


def test_standalone_starts_and_accepts_session(zk_server: ZooKeeperCluster, zk_client: KazooClient) -> None:
    (server,) = zk_server.servers
    assert server.mode() == "standalone"
    assert server.is_leader()
    assert zk_server.leader() is server
    assert zk_server.hosts == f"127.0.0.1:{server.client_port}"
    zk_client.create("/hello", b"world")
    assert zk_client.get("/hello")[0] == b"world"
    assert zk_server.start_seconds is not None
    print(f"\n[measure] standalone ZooKeeper start to first synced session: {zk_server.start_seconds:.2f} s")


def test_chroots_isolate_tests(zk_server: ZooKeeperCluster, zk_client: KazooClient) -> None:
    other = zk_server.connect(chroot=zk_client.chroot + "-other")
    try:
        other.create("/only-here", b"")
        assert zk_client.exists("/only-here") is None
    finally:
        other.stop()
        other.close()


def test_ensemble_elects_one_leader(zk_ensemble: ZooKeeperCluster) -> None:
    leader = zk_ensemble.leader()
    modes = sorted(s.mode() or "none" for s in zk_ensemble.servers)
    assert modes == ["follower", "follower", "leader"]
    assert leader.mode() == "leader"
    assert len({s.pid for s in zk_ensemble.servers}) == 3
    assert zk_ensemble.start_seconds is not None
    print(f"\n[measure] 3-server ensemble start to synced session: {zk_ensemble.start_seconds:.2f} s")


def test_leader_kill_writes_resume_without_session_loss(zk_ensemble: ZooKeeperCluster) -> None:
    client = zk_ensemble.connect(chroot="/leader-kill", session_timeout_s=4.0)
    try:
        log = StateLog(client)
        session = client.client_id
        client.create("/w", b"0")
        old = zk_ensemble.leader()
        killed_at = time.monotonic()
        old.kill()
        resumed_at = write_until_ok(client, "/w", deadline_s=20.0)
        new = zk_ensemble.leader()
        print(
            f"\n[measure] leader SIGKILL -> writes resume: {resumed_at - killed_at:.3f} s "
            f"(states seen: {log.states()})"
        )
        assert new is not old
        assert old.pid is None
        assert KazooState.LOST not in log.states()
        assert client.client_id == session
        zk_ensemble.restart_server(old)
        assert old.mode() == "follower"
    finally:
        client.stop()
        client.close()


def test_paused_server_longer_than_session_timeout_client_reconnects(zk_server: ZooKeeperCluster) -> None:
    session_timeout_s = 0.8
    client = zk_server.connect(chroot="/pause", session_timeout_s=session_timeout_s)
    (server,) = zk_server.servers
    try:
        log = StateLog(client)
        client.ensure_path("/p")
        server.pause()
        try:
            time.sleep(2.5 * session_timeout_s)
        finally:
            server.resume()
        resumed_at = time.monotonic()
        ok_at = write_until_ok(client, "/p", deadline_s=20.0)
        states = log.states()
        print(
            f"\n[measure] single server SIGSTOP {2.5 * session_timeout_s:.1f} s, SIGCONT -> write ok after "
            f"{ok_at - resumed_at:.3f} s (states seen: {states})"
        )
        assert KazooState.SUSPENDED in states  # the client noticed the hang
        assert client.state == KazooState.CONNECTED
    finally:
        client.stop()
        client.close()


def test_ephemeral_gone_after_owner_sigkill(zk_server: ZooKeeperCluster, zk_client: KazooClient) -> None:
    session_timeout_s = 1.0
    hosts = zk_server.hosts + zk_client.chroot
    holder = subprocess.Popen(
        [sys.executable, str(HOLDER), hosts, "/owner", str(session_timeout_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], 30.0)
        assert ready, "holder subprocess did not report ready within 30 s"
        line = holder.stdout.readline()
        assert line.startswith("ready"), f"holder failed: {line!r} {holder.stderr.read() if holder.stderr else ''}"
        gone = threading.Event()

        def on_event(event: WatchedEvent) -> None:
            if event.type == "DELETED":
                gone.set()

        assert zk_client.exists("/owner", watch=on_event) is not None
        killed_at = time.monotonic()
        holder.kill()
        holder.wait(timeout=10)
        assert gone.wait(timeout=session_timeout_s + 10.0), "ephemeral znode still there 10 s after timeout"
        elapsed = time.monotonic() - killed_at
        print(
            f"\n[measure] owner SIGKILL -> ephemeral znode gone: {elapsed:.3f} s "
            f"(session timeout {session_timeout_s} s)"
        )
        assert zk_client.exists("/owner") is None
        # The session outlives its TCP connection: cleanup waits for the timeout, not the socket close.
        assert elapsed > session_timeout_s / 2
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)


def test_start_retries_with_new_ports_when_a_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = int(squatter.getsockname()[1])
    real = ports.free_tcp_ports
    calls: list[int] = []

    def first_call_clashes(count: int) -> list[int]:
        calls.append(count)
        ports = real(count)
        return [taken, *ports[1:]] if len(calls) == 1 else ports

    monkeypatch.setattr(zkmod, "free_tcp_ports", first_call_clashes)
    cluster = ZooKeeperCluster(size=1)
    try:
        cluster.start(timeout_s=60)
        assert len(calls) == 2
        assert cluster.servers[0].client_port != taken
        assert cluster.servers[0].mode() == "standalone"
    finally:
        cluster.stop()
        squatter.close()


def test_start_failure_raises_with_log_tail_and_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = int(squatter.getsockname()[1])
    real = ports.free_tcp_ports
    monkeypatch.setattr(zkmod, "free_tcp_ports", lambda count: [taken, *real(count)[1:]])
    cluster = ZooKeeperCluster(size=1, port_attempts=1)
    before = set(Path(tempfile.gettempdir()).glob(f"cipfo-zk-{os.getpid()}-*"))
    try:
        with pytest.raises(zkmod.ZooKeeperStartError, match="Address already in use") as info:
            cluster.start(timeout_s=60)
        assert "log tail" in str(info.value)
        assert cluster.servers[0].pid is None
        assert set(Path(tempfile.gettempdir()).glob(f"cipfo-zk-{os.getpid()}-*")) == before
    finally:
        cluster.stop()
        squatter.close()


def test_stop_is_idempotent_and_removes_temp_dir() -> None:
    cluster = ZooKeeperCluster(size=1)
    cluster.start(timeout_s=60)
    directory = cluster.directory
    pid = cluster.servers[0].pid
    assert pid is not None
    assert directory.name.startswith(f"cipfo-zk-{os.getpid()}-")
    cluster.stop()
    cluster.stop()
    assert not directory.exists()
    assert cluster.servers[0].pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    lab = Path(__file__).resolve().parents[2] / "deploy" / "lab"
    env = {**os.environ, "PYTHONPATH": str(lab)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "clusterlab.zookeeper", "--size", "1", "--dir", str(tmp_path / "zk")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 90.0)
        assert ready, "CLI printed no connect string within 90 s"
        hosts = proc.stdout.readline().strip()
        assert hosts.startswith("127.0.0.1:"), f"unexpected CLI output {hosts!r}"
        assert (tmp_path / "zk" / "hosts").read_text().strip() == hosts
        assert int((tmp_path / "zk" / "launcher.pid").read_text()) == proc.pid
        port = int(hosts.rsplit(":", 1)[1])
        assert zkmod.server_mode(port) == "standalone"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert zkmod.server_mode(port, timeout_s=0.5) is None
        assert not (tmp_path / "zk" / "hosts").exists()
        assert (tmp_path / "zk" / "zk1" / "zookeeper.log").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_cli_bad_size_is_one_line_error(tmp_path: Path) -> None:
    lab = Path(__file__).resolve().parents[2] / "deploy" / "lab"
    result = subprocess.run(
        [sys.executable, "-m", "clusterlab.zookeeper", "--size", "0", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(lab)},
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "size must be" in result.stderr and "Traceback" not in result.stderr
