"""A coordination lab: real ZooKeeper, node hooks and controllers as subprocesses, for tests and bench.

Why subprocesses: SIGKILL and SIGSTOP must be real (a dead hook's session expires in ZooKeeper, a
killed controller's election znode goes away) and timings must include process boundaries.

* each hook runs ``clusterip-node-hook --backend memory --memory-journal J`` on its own loopback
  address 127.0.0.<base+i> (peer UDP on the same port per address) and talks to ZooKeeper through
  its own :class:`~zk_relay.TcpRelay`, so one hook can be cut off while the rest still reach it;
* controllers run ``clusterip-controller --health-file F``; :meth:`CoordLab.set_health` rewrites F
  atomically, which is the test's liveness input;
* :class:`~overlap_checker.OverlapChecker` watches exclusivity throughout.

Everything started here is stopped here, by its Popen object, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from clusterlab.zookeeper import ZooKeeperCluster
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from zk_relay import TcpRelay

from controller.core import zk_layout as layout
from controller.core.config import parse_config
from controller.core.model import ClusterSpec
from controller.zk.store import ClusterStore, StoreSnapshot

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUN_PREFIX = "cipfo-coord-"
CLUSTER = "lab"
T = TypeVar("T")


def _command(script: str, module: str) -> list[str]:
    exe = BIN / script
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def _no_metrics(main_module: Path) -> list[str]:
    """``--no-metrics`` when the command has a metrics server: many hooks on one machine would clash
    on its fixed default port, and these tests are not about metrics."""
    return ["--no-metrics"] if "--no-metrics" in main_module.read_text() else []


def free_udp_port(addresses: list[str]) -> int:
    """A UDP port free on every given loopback address right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((addresses[0], 0))
            port = int(probe.getsockname()[1])
        try:
            socks = []
            for address in addresses:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((address, port))
            return port
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no UDP port free on all hook addresses")


@dataclass
class Proc:
    """One started process and its log."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> float:
        """SIGKILL and reap; return the monotonic time of the kill."""
        at = time.monotonic()
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=10)
        return at

    def terminate(self, timeout_s: float = 5.0) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class CheckerProcess:
    """The overlap checker running as a subprocess (see overlap_checker.main)."""

    proc: Proc
    out: Path
    result: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> list[str]:
        """SIGTERM it and return its violations (a checker that died or hung is a violation too)."""
        self.proc.signal(signal.SIGTERM)
        try:
            self.proc.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if not self.out.exists():
            code = self.proc.popen.returncode
            return [f"overlap checker produced no result (exit {code}):\n{self.proc.log()[-2000:]}"]
        self.result = json.loads(self.out.read_text())
        return list(self.result["violations"])

    @property
    def rate_hz(self) -> float:
        return float(self.result.get("rate_hz", 0.0))

    def describe(self) -> str:
        return str(self.result.get("describe", "no result"))


@dataclass
class CoordLab:
    """Hooks h1..hN with home buckets, controllers, a health file, and a kazoo client for checks."""

    zk: ZooKeeperCluster
    chroot: str
    hosts: int = 4
    buckets: int = 8
    session_timeout_s: float = 1.0
    relay: bool = True
    address_base: int = 20
    hold_down_s: float = 300.0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-")))
    hooks: dict[str, Proc] = field(default_factory=dict)
    controllers: dict[str, Proc] = field(default_factory=dict)
    relays: dict[str, list[TcpRelay]] = field(default_factory=dict)
    health: dict[str, dict[str, str]] = field(default_factory=dict)
    retired: list[Proc] = field(default_factory=list)
    isolated: set[str] = field(default_factory=set)
    closed: list[str] | None = None

    def __post_init__(self) -> None:
        self.host_ids = tuple(f"h{i}" for i in range(1, self.hosts + 1))
        self.addresses = {h: f"127.0.0.{self.address_base + i}" for i, h in enumerate(self.host_ids, 1)}
        self.peer_port = free_udp_port(list(self.addresses.values()))
        self.health_file = self.workdir / "health.json"
        self.config_path = self.write_config("controller", self.zk.hosts)
        self.spec: ClusterSpec = parse_config(self.config_path.read_text()).cluster(CLUSTER)
        self.client: KazooClient = self.zk.connect(chroot=self.chroot, session_timeout_s=4.0)
        self.store = ClusterStore(self.client, self.spec)
        self.checker: CheckerProcess | None = None

    # ------------------------------------------------------------------ files

    def homes(self, host: str) -> list[int]:
        per = self.buckets // self.hosts
        index = self.host_ids.index(host)
        return list(range(index * per + 1, (index + 1) * per + 1))

    def write_config(self, name: str, zk_hosts: str) -> Path:
        host_lines = "\n".join(
            f'      - {{id: {h}, ssh: "{self.addresses[h]}:22", home_buckets: {self.homes(h)}}}' for h in self.host_ids
        )
        text = f"""zookeeper:
  hosts: "{zk_hosts}"
  chroot: {self.chroot}
  session_timeout_s: {self.session_timeout_s}
  connect_timeout_s: 10.0
clusters:
  - name: {CLUSTER}
    vip: 198.18.0.100
    interface: lo
    backend: nftables
    buckets: {self.buckets}
    cluster_mac: "01:00:5e:12:00:64"
    hosts:
{host_lines}
    failback: {{policy: delayed, hold_down_s: {self.hold_down_s}}}
    handoff: {{self_fence_fraction: 0.5, resync_interval_s: 5, peer_port: {self.peer_port}}}
"""
        path = self.workdir / f"{name}.yaml"
        path.write_text(text)
        return path

    def journal(self, host: str) -> Path:
        return self.workdir / f"{host}.journal"

    def set_health(self, host: str, state: str, reason: str = "") -> float:
        """Atomically rewrite the health file; return the monotonic time just before the rename."""
        self.health[host] = {"state": state, "reason": reason or f"test says {state}"}
        tmp = self.workdir / "health.json.tmp"
        tmp.write_text(json.dumps(self.health))
        at = time.monotonic()
        os.replace(tmp, self.health_file)
        return at

    def all_up(self) -> None:
        for host in self.host_ids:
            self.health[host] = {"state": "up", "reason": "test says up"}
        self.set_health(self.host_ids[0], "up")

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        log_path = self.workdir / f"{name}.log"
        if log_path.exists():
            log_path.rename(self.workdir / f"{name}.{time.monotonic_ns()}.log")
        log = log_path.open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        log.close()
        return Proc(name, popen, log_path, time.monotonic())

    def start_hook(self, host: str, *, wait: bool = True, as_host: str | None = None, name: str | None = None) -> Proc:
        """Start the hook of ``host`` (``as_host`` overrides the --host it claims, for duplicate tests)."""
        if self.relay:
            if host not in self.relays:
                self.relays[host] = [TcpRelay(("127.0.0.1", s.client_port)) for s in self.zk.servers]
            zk_hosts = ",".join(r.address for r in self.relays[host])
        else:
            zk_hosts = self.zk.hosts
        config = self.write_config(f"hook-{host}", zk_hosts)
        claimed = as_host or host
        argv = [
            *_command("clusterip-node-hook", "node_hook.main"),
            "--config", str(config), "--host", claimed, "--backend", "memory",
            "--address", self.addresses[host], "--peer-bind", self.addresses[host],
            "--memory-journal", str(self.journal(claimed)), "--log-level", "INFO",
            *_no_metrics(ROOT / "node_hook" / "main.py"),
        ]
        proc = self._spawn(name or f"hook-{host}", argv)
        if name is None:
            if host in self.hooks:
                self.retired.append(self.hooks[host])
            self.hooks[host] = proc
        else:
            self.retired.append(proc)
        if wait:
            self.wait_for(lambda: self.is_member(claimed), 60, f"hook {claimed} registered", proc)
        return proc

    def start_hooks(self) -> None:
        for host in self.host_ids:
            self.start_hook(host, wait=False)
        for host in self.host_ids:
            self.wait_for(partial(self.is_member, host), 60, f"hook {host} registered", self.hooks[host])

    def start_controller(self, cid: str, *, wait: bool = False) -> Proc:
        argv = [
            *_command("clusterip-controller", "controller.main"),
            "--config", str(self.config_path), "--id", cid, "--health-file", str(self.health_file),
            "--cycle-interval", "0.5", *_no_metrics(ROOT / "controller" / "main.py"),
        ]
        proc = self._spawn(f"controller-{cid}", argv)
        if cid in self.controllers:
            self.retired.append(self.controllers[cid])
        self.controllers[cid] = proc
        if wait:
            self.wait_for(lambda: cid in self.election_ids(), 30, f"controller {cid} joined the election", proc)
        return proc

    def cut(self, host: str) -> float:
        """Isolate ``host``'s hook from ZooKeeper (its relays blackhole); return when (monotonic)."""
        at = time.monotonic()
        for relay in self.relays[host]:
            relay.cut()
        self.isolated.add(host)
        return at

    def heal(self, host: str) -> float:
        at = time.monotonic()
        for relay in self.relays[host]:
            relay.restore()
        self.isolated.discard(host)
        return at

    def kill_hook(self, host: str, *, host_dead: bool) -> float:
        """SIGKILL the hook; with ``host_dead`` its host "powers off" too (its memory kernel resets)."""
        at = self.hooks[host].kill()
        if host_dead:
            with self.journal(host).open("a") as journal:
                journal.write(f"{at:.6f} reset\n")
        return at

    def start_checker(self) -> CheckerProcess:
        """Start the overlap checker in its own process and wait until it samples."""
        out = self.workdir / "checker.json"
        argv = [sys.executable, str(Path(__file__).with_name("overlap_checker.py")),
                "--zk", self.zk.hosts + self.chroot, "--cluster", CLUSTER, "--out", str(out)]
        for host in self.host_ids:
            argv += ["--journal", f"{host}={self.journal(host)}"]
        proc = self._spawn("overlap-checker", argv)
        self.checker = CheckerProcess(proc, out)
        self.wait_for(lambda: Path(str(out) + ".ready").exists(), 30, "overlap checker started", proc)
        return self.checker

    def close(self, keep_files: bool = False) -> list[str]:
        """Stop everything started here; return the checker's violations (empty when none ran).

        The work directory (configs, logs, journals) is removed unless ``keep_files``, violations, or
        the environment variable CIPFO_KEEP_LAB is set (for post-mortems of failed tests).
        """
        if self.closed is not None:
            return self.closed
        violations: list[str] = []
        if self.checker is not None:
            violations = self.checker.stop()
            self.retired.append(self.checker.proc)
        for proc in [*self.controllers.values(), *self.hooks.values(), *self.retired]:
            with contextlib.suppress(Exception):
                proc.terminate(timeout_s=3)
        for relays in self.relays.values():
            for relay in relays:
                relay.close()
        with contextlib.suppress(Exception):
            self.client.stop()
            self.client.close()
        self.closed = violations
        if keep_files or violations or os.environ.get("CIPFO_KEEP_LAB"):
            print(f"\ncoordination lab files kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return violations

    # ------------------------------------------------------------------ reading state

    def snapshot(self) -> StoreSnapshot:
        return self.store.snapshot()

    def is_member(self, host: str) -> bool:
        return self.client.exists(layout.member_path(CLUSTER, host)) is not None

    def election_ids(self) -> list[str]:
        """Controller ids in election order (first one leads)."""
        try:
            children = sorted(self.client.get_children(layout.ELECTION), key=lambda n: n[-10:])
        except NoNodeError:
            return []
        ids = []
        for child in children:
            with contextlib.suppress(NoNodeError):
                ids.append(self.client.get(f"{layout.ELECTION}/{child}")[0].decode())
        return ids

    def leader(self) -> str | None:
        ids = self.election_ids()
        return ids[0] if ids else None

    def owners(self) -> dict[int, str | None]:
        return {b: s.owner for b, s in self.snapshot().map.buckets.items()}

    def converged(self, expected: dict[int, str] | None = None, without: str | None = None) -> bool:
        """Map written, every bucket owned (as ``expected`` when given), every running hook registered
        and caught up (published the map's epoch holding exactly what the map gives it); with
        ``without``, that host owns nothing."""
        snap = self.snapshot()  # one snapshot for every condition: two could straddle a revoke
        if snap.map.epoch == 0:
            return False
        if without is not None and snap.map.owned_by(without):
            return False
        running = (h for h, proc in self.hooks.items() if proc.alive and h not in self.isolated)
        if any(host not in snap.members for host in running):
            return False  # a running hook that has not (re-)registered yet is not caught up
        for bucket, state in snap.map.buckets.items():
            if state.owner is None or (expected is not None and expected.get(bucket) != state.owner):
                return False
        for host in snap.members:
            status = snap.statuses.get(host)
            if status is None or status.epoch != snap.map.epoch or status.held != snap.map.owned_by(host):
                return False
        return True

    def home_map(self) -> dict[int, str]:
        return {b: h for h in self.host_ids for b in self.homes(h)}

    def wait_for(
        self, predicate: Callable[[], T], timeout_s: float, what: str, proc: Proc | None = None, poll_s: float = 0.05
    ) -> T:
        """Poll ``predicate`` until truthy; fail with ``what`` (and a log tail) at the deadline.

        50 ms by default: convergence checks read ~10 znodes, and timings come from the journals,
        not from this polling, so polling faster would only steal CPU from the processes under test.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            if proc is not None and not proc.alive:
                raise AssertionError(f"{what}: {proc.name} exited with {proc.popen.returncode}:\n{proc.log()[-3000:]}")
            if time.monotonic() >= deadline:
                tail = f"\n--- {proc.name} log tail:\n{proc.log()[-3000:]}" if proc is not None else ""
                raise AssertionError(f"timed out after {timeout_s} s waiting for: {what}{tail}")
            time.sleep(poll_s)

    def journal_events(self, host: str) -> list[tuple[float, str, int | None]]:
        path = self.journal(host)
        events: list[tuple[float, str, int | None]] = []
        if not path.exists():
            return events
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                events.append((float(parts[0]), parts[1], int(parts[2])))
            elif len(parts) == 2:
                events.append((float(parts[0]), parts[1], None))
        return events

    def grant_time(self, host: str, bucket: int, after: float) -> float | None:
        for at, op, b in self.journal_events(host):
            if op == "grant" and b == bucket and at >= after:
                return at
        return None

    def revoke_time(self, host: str, bucket: int, after: float) -> float | None:
        for at, op, b in self.journal_events(host):
            if op in ("revoke", "reset") and (b == bucket or b is None) and at >= after:
                return at
        return None

    def member_gone_time(self, host: str, after: float, timeout_s: float) -> float:
        """Poll (5 ms) until the member znode of ``host`` is gone; return when it was first seen gone."""
        deadline = after + timeout_s
        while time.monotonic() < deadline:
            if not self.is_member(host):
                return time.monotonic()
            time.sleep(0.005)
        raise AssertionError(f"member znode of {host} still present {timeout_s} s later")


def bring_up(lab: CoordLab, controllers: int = 1) -> None:
    """All hosts up, hooks registered, controllers started, map converged to the home hosts."""
    lab.all_up()
    lab.start_hooks()
    for i in range(1, controllers + 1):
        lab.start_controller(f"c{i}")
    lab.wait_for(lambda: lab.converged(lab.home_map()), 60, "map converged to home hosts",
                 next(iter(lab.controllers.values())))
    # A freshly elected leader does not take an absent member as proof of release for 1.5 session
    # timeouts (see controller.core.planner); tests start from the usual state, a settled leader.
    time.sleep(1.5 * lab.session_timeout_s)


@contextlib.contextmanager
def checked_coord_lab(zk: ZooKeeperCluster, chroot: str, session_timeout_s: float) -> Iterator[CoordLab]:
    """A CoordLab that, when the test is done, fails it on any exclusivity violation the overlap
    checker saw, or on a checker too slow to have seen one (under 20 rounds a second)."""
    coord = CoordLab(zk, chroot, session_timeout_s=session_timeout_s)
    try:
        yield coord
    finally:
        violations = coord.close()
    assert not violations, "exclusivity violated:\n" + "\n".join(violations)
    if coord.checker is not None:
        assert coord.checker.rate_hz >= 20, f"overlap checker too slow: {coord.checker.describe()}"
