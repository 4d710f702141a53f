"""The whole product on one machine: namespaces, ZooKeeper, sshd, hooks and controllers, plus faults.

``LabStack.up()`` builds a namespace cluster (clusterlab.netns), starts ZooKeeper on the management
gateway, one real sshd per host (answering on the VIP, the data address and the management
address; its banner names the host), one ``clusterip-node-hook`` per host inside its namespace with
a real kernel backend, and several ``clusterip-controller`` replicas in the root namespace probing
the hosts over the management network. Every process is started and stopped by this object, by
PID. ``down()`` removes everything; a crashed run is cleaned by ``netns.remove_stale``.

Faults (each with its undo): crash_host/restore_host, hang_sshd/resume_sshd, exhaust_logins/
restore_logins, kill_hook/start_hook, kill_controller (the leader), zk_kill_leader, zk_stop_all/
zk_start_all, isolate_host/unisolate_host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clusterlab import netns
from clusterlab.errors import LabError
from clusterlab.netns import LabTopology
from clusterlab.sshd import LOGIN_USER, PROBE_USER, Sshd, end_processes, fill_process_table, generate_key
from clusterlab.traffic import Responders
from clusterlab.zookeeper import ZooKeeperCluster

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
LAB_DIR = REPO / "deploy" / "lab"
#: A killed test runner must not leave hooks and controllers running: the kernel kills them with it.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL"]


@dataclass
class StackOptions:
    hosts: int = 4
    buckets: int = 0  # 0: 4 x hosts (capped by the backend)
    backend: str = "nftables"
    ensemble: bool = False
    controllers: int = 2
    client_sources: int = 64
    profile: str = "default"  # controller/core/profiles.py: timings, ZooKeeper session and tickTime
    session_timeout_s: float | None = None  # None: the profile's
    failback: str = "delayed"
    hold_down_s: float = 5.0
    failback_extra: dict[str, Any] = field(default_factory=dict)  # e.g. max_drain_s (docs/drain.md)
    probe: dict[str, Any] = field(default_factory=dict)
    handoff: dict[str, Any] = field(default_factory=dict)
    responder_port: int = 7000
    keep_workdir: bool = False
    #: CPU priorities (nice values; None: inherited), as systemd's Nice= would set them on real hosts
    #: (docs/profiles.md, "Recommendations"): ZooKeeper, the node hooks, the controllers, the sshds
    #: (their sessions inherit it)
    zk_nice: int | None = None
    hook_nice: int | None = None
    controller_nice: int | None = None
    sshd_nice: int | None = None

    def priorities(self) -> str:
        """A short label of the non-default priorities ("" if none), for benchmark rows and logs."""
        parts = [f"{name} {value:+d}" for name, value in (("ZK", self.zk_nice), ("hooks", self.hook_nice),
                                                          ("controllers", self.controller_nice),
                                                          ("sshd", self.sshd_nice)) if value is not None]
        return ("nice " + ", ".join(parts)) if parts else ""


def _nice(value: int | None) -> list[str]:
    """``nice -n N`` to put before a command (it execs it: the PID stays the program's), or nothing."""
    return [] if value is None else ["nice", "-n", str(value)]


class LabStack:
    """One running lab. Use as a context manager, or call up() and down()."""

    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.topology: LabTopology | None = None
        self.workdir: Path | None = None
        self.zk: ZooKeeperCluster | None = None
        self.sshd: dict[str, Sshd] = {}
        self.hooks: dict[str, subprocess.Popen[bytes]] = {}
        self.controllers: dict[str, subprocess.Popen[bytes]] = {}
        self.responders: Responders | None = None
        self.config_path: Path | None = None
        self._fillers: dict[str, list[subprocess.Popen[bytes]]] = {}

    # ------------------------------------------------------------------ properties

    @property
    def topo(self) -> LabTopology:
        if self.topology is None:
            raise LabError("the lab is not up: call up() first")
        return self.topology

    @property
    def dir(self) -> Path:
        if self.workdir is None:
            raise LabError("the lab is not up: call up() first")
        return self.workdir

    @property
    def profile(self):  # type: ignore[no-untyped-def]
        from controller.core.profiles import get_profile

        return get_profile(self.options.profile)

    @property
    def session_timeout_s(self) -> float:
        return self.options.session_timeout_s or self.profile.session_timeout_s

    @property
    def buckets(self) -> int:
        if self.options.buckets:
            return self.options.buckets
        cap = {"clusterip": 16, "xt_cluster": 32}.get(self.options.backend, 256)
        return min(cap, 4 * self.options.hosts)

    @property
    def host_names(self) -> list[str]:
        return [h.name for h in self.topo.hosts]

    def home_buckets(self, host: str) -> list[int]:
        index = self.host_names.index(host)
        return [b for b in range(1, self.buckets + 1) if (b - 1) % len(self.host_names) == index]

    # ------------------------------------------------------------------ up / down

    def __enter__(self) -> LabStack:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self, timeout_s: float = 60.0) -> None:
        opts = self.options
        netns.remove_stale("cif")
        prefix = netns.new_prefix("cif")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-lab-"))
        os.chmod(self.workdir, 0o755)  # sshd reads authorized_keys as the login user
        (self.dir / "logs").mkdir()
        try:
            self.topology = netns.build(prefix, hosts=opts.hosts, client_sources=opts.client_sources,
                                        client_static_neigh=False)
            self.zk = ZooKeeperCluster(size=3 if opts.ensemble else 1, tick_ms=self.profile.zk_tick_ms,
                                       base_dir=self.dir / "zk", client_address=self.topo.mgmt_gateway,
                                       nice=opts.zk_nice)
            self.zk.start(timeout_s=90)
            self._start_sshds()
            self._write_config()
            for host in self.host_names:
                self.start_hook(host)
            self._wait_members(timeout_s)
            for i in range(1, opts.controllers + 1):
                self.start_controller(f"ctl{i}")
            self.responders = Responders(self.topo, opts.responder_port).start()
            self.wait_converged(timeout_s)
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        reader = getattr(self, "_read_client", None)
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.stop()
                reader.close()
            self._read_client = None
        for procs in self._fillers.values():
            end_processes(procs)
        self._fillers.clear()
        if self.responders is not None:
            self.responders.stop()
            self.responders = None
        for name in list(self.controllers):
            self._stop_proc(self.controllers.pop(name))
        for name in list(self.hooks):
            self._stop_proc(self.hooks.pop(name))
        for sshd in self.sshd.values():
            with contextlib.suppress(Exception):
                sshd.stop()
        self.sshd.clear()
        if self.zk is not None:
            with contextlib.suppress(Exception):
                self.zk.stop()
            self.zk = None
        if self.topology is not None:
            netns.destroy(self.topology.prefix)
            self.topology = None
        if self.workdir is not None and not self.options.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def _stop_proc(proc: subprocess.Popen[bytes], grace_s: float = 3.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    # ------------------------------------------------------------------ pieces

    def _start_sshds(self) -> None:
        keys = self.dir / "keys"
        keys.mkdir()
        self.probe_key = keys / "probe_key"
        self.user_key = keys / "user_key"
        probe_pub = generate_key(self.probe_key)
        user_pub = generate_key(self.user_key)
        os.chmod(keys, 0o755)
        os.chmod(self.user_key, 0o644)  # the client runs as root in its namespace; fine for a lab key
        lines = []
        for host in self.topo.hosts:
            sshd = Sshd(self.dir / "sshd", host.name, host.mgmt_address, 22, netns=host.namespace,
                        probe_keys=[probe_pub], user_keys=[user_pub],
                        extra_config=(f"ListenAddress {self.topo.vip}:22\nListenAddress {host.address}:22\n"
                                      f"VersionAddendum cif-node-{host.name}\n"),
                        nice=self.options.sshd_nice)
            sshd.start(timeout_s=20)
            self.sshd[host.name] = sshd
            lines.append(sshd.known_hosts_line(host.mgmt_address))
        self.known_hosts = keys / "known_hosts"
        self.known_hosts.write_text("\n".join(lines) + "\n")
        os.chmod(self.probe_key, 0o600)

    def _write_config(self) -> None:
        opts = self.options
        assert self.zk is not None
        probe: dict[str, Any] = {"key_file": str(self.probe_key), "known_hosts": str(self.known_hosts),
                                 "user": PROBE_USER}
        probe.update(opts.probe)
        hosts = [
            {"id": h.name, "ssh": f"{h.mgmt_address}:22", "home_buckets": self.home_buckets(h.name)}
            for h in self.topo.hosts
        ]
        cluster: dict[str, Any] = {
            "name": "lab",
            "vip": self.topo.vip,
            "interface": self.topo.interface,
            "backend": "nftables" if opts.backend == "memory" else opts.backend,
            "buckets": self.buckets,
            "cluster_mac": self.topo.cluster_mac,
            "protocol": "all",
            "hosts": hosts,
            "probe": probe,
            "failback": {"policy": opts.failback, "hold_down_s": opts.hold_down_s, **opts.failback_extra},
            "handoff": {"resync_interval_s": 2.0, **opts.handoff},
        }
        if opts.backend == "clusterip":
            cluster["hash"] = {"mode": "sourceip", "hash_init": 0}
        else:
            cluster["hash"] = {"seed": 0xDEADBEEF}
        config = {
            "profile": opts.profile,
            "zookeeper": {"hosts": self.zk.hosts, "chroot": "/clusterip-failover",
                          "session_timeout_s": self.session_timeout_s},
            "clusters": [cluster],
        }
        self.config_path = self.dir / "cluster.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start_hook(self, host: str) -> None:
        h = self.topo.host(host)
        log = open(self.dir / "logs" / f"hook-{host}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.hooks[host] = netns.popen_in(
                h.namespace,
                [*DIE_WITH_PARENT, *_nice(self.options.hook_nice), str(VENV_BIN / "clusterip-node-hook"),
                 "--config", str(self.config_path),
                 "--host", host,
                 "--address", h.mgmt_address, "--peer-bind", h.mgmt_address,
                 *(["--backend", "memory"] if self.options.backend == "memory" else [])],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()

    def _wait_members(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.read_state()["members"]) == len(self.host_names):
                return
            dead = [h for h, p in self.hooks.items() if p.poll() is not None]
            if dead:
                raise LabError(f"hook of {dead[0]} exited at start: {self.log_tail('hook-' + dead[0], 5)}")
            time.sleep(0.1)
        raise LabError(f"hooks did not all register within {timeout_s} s; logs in {self.workdir}")

    def start_controller(self, name: str) -> None:
        log = open(self.dir / "logs" / f"controller-{name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.controllers[name] = subprocess.Popen(
                [*DIE_WITH_PARENT, *_nice(self.options.controller_nice), str(VENV_BIN / "clusterip-controller"),
                 "--config", str(self.config_path),
                 "--id", name, "--metrics-port", "0"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()

    # ------------------------------------------------------------------ reading state

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``clusterip-ctl ARGS --config <lab config>`` and return the result."""
        argv = [str(VENV_BIN / "clusterip-ctl"), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)

    def kazoo(self):  # type: ignore[no-untyped-def]
        """A new kazoo client on the lab's chroot (the caller stops it)."""
        from kazoo.client import KazooClient
        from kazoo.retry import KazooRetry

        assert self.zk is not None
        client = KazooClient(hosts=self.zk.hosts + "/clusterip-failover", timeout=5,
                             connection_retry=KazooRetry(max_tries=-1, delay=0.05, backoff=1))
        client.start(timeout=20)
        return client

    def _reader(self):  # type: ignore[no-untyped-def]
        """One long-lived client for the frequent state reads of tests and benchmarks."""
        if getattr(self, "_read_client", None) is None:
            self._read_client = self.kazoo()
        return self._read_client

    def read_state(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """The map's owners and every hook's published holdings, straight from ZooKeeper.

        Reads are pipelined and bounded: with ZooKeeper down this raises LabError after
        ``timeout_s`` instead of waiting for a reconnect forever.
        """
        from kazoo.exceptions import NoNodeError
        from kazoo.handlers.threading import KazooTimeoutError

        from controller.core import schema
        from controller.core import zk_layout as layout

        client = self._reader()  # the shared reader stays open; down() closes it
        pending_map = client.get_async(layout.map_path("lab"))
        pending_status = {h: client.get_async(layout.status_path("lab", h)) for h in self.host_names}
        pending_members = client.get_children_async(layout.members_path("lab"))
        deadline = time.monotonic() + timeout_s

        def result(reply: Any) -> Any:
            try:
                return reply.get(timeout=max(0.01, deadline - time.monotonic()))
            except NoNodeError:
                return None
            except KazooTimeoutError:
                raise LabError(f"ZooKeeper did not answer within {timeout_s} s (is it down?)") from None

        state: dict[str, Any] = {"epoch": 0, "owners": {}, "held": {}, "members": []}
        reply = result(pending_map)
        if reply is not None:
            m = schema.decode_map(reply[0])
            state["epoch"] = m.epoch
            state["owners"] = {b: st.owner for b, st in m.buckets.items()}
        for host, pending in pending_status.items():
            reply = result(pending)
            if reply is not None:
                state["held"][host] = sorted(schema.decode_status(reply[0]).held)
        state["members"] = sorted(result(pending_members) or [])
        return state

    def owners(self) -> dict[int, str | None]:
        return dict(self.read_state()["owners"])

    def wait_converged(self, timeout_s: float = 30.0, expect: dict[str, list[int]] | None = None) -> dict[str, Any]:
        """Wait until every bucket has an owner whose hook publishes holding it (and ``expect`` holds)."""
        deadline = time.monotonic() + timeout_s
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.read_state()
            owners = state["owners"]
            held = state["held"]
            ok = bool(owners) and all(o is not None for o in owners.values()) and all(
                b in held.get(o, []) for b, o in owners.items()
            )
            if ok and expect is not None:
                ok = all(sorted(held.get(h, [])) == sorted(bs) for h, bs in expect.items())
            if ok:
                return state
            time.sleep(0.1)
        raise LabError(f"lab did not converge within {timeout_s} s: {json.dumps(state)[:600]}; "
                       f"logs in {self.workdir}")

    def wait_taken_over(self, victim: str, sources: list[str], timeout_s: float) -> None:
        """Wait until every bucket of ``sources`` has a new owner (not ``victim``) whose hook holds it.

        The map moving is not enough for a client: the new owner's kernel answers only once its
        hook applied the grant, which on a loaded machine can be a noticeable while later.
        """
        buckets = {self.bucket_of(s) for s in sources}

        def applied() -> bool:
            state = self.read_state()
            owners, held = state["owners"], state["held"]
            return all(owners.get(b) not in (None, victim) and b in held.get(owners[b], []) for b in buckets)

        deadline = time.monotonic() + timeout_s
        while not applied():
            if time.monotonic() > deadline:
                raise LabError(f"{victim}'s buckets {sorted(buckets)} were not taken over and applied within "
                               f"{timeout_s} s; logs in {self.workdir}")
            time.sleep(0.05)

    # ------------------------------------------------------------------ client side

    def client_run(self, module: str, *args: str, timeout_s: float = 120.0) -> Any:
        env = dict(os.environ, PYTHONPATH=f"{LAB_DIR}:{REPO}")
        argv = ["ip", "netns", "exec", self.topo.client_ns, sys.executable, "-m", module, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
        if proc.returncode != 0:
            raise LabError(f"{module} {args[:1]} failed: {proc.stderr.strip()[-500:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def banners(self, sources: list[str] | None = None, timeout_s: float = 2.0,
                spread_s: float = 1.0) -> dict[str, str | None]:
        """Which host's sshd answers each source right now (None: nobody); attempts spread over spread_s."""
        srcs = sources or list(self.topo.client_sources)
        result: dict[str, str | None] = self.client_run(
            "clusterlab.sshclient", "banner", "--vip", self.topo.vip, "--sources", ",".join(srcs),
            "--timeout", str(timeout_s), "--interval", str(spread_s))
        return result

    def logins(self, sources: list[str] | None = None, timeout_s: float = 5.0) -> dict[str, str]:
        srcs = sources or list(self.topo.client_sources)
        result: dict[str, str] = self.client_run(
            "clusterlab.sshclient", "login", "--vip", self.topo.vip, "--sources", ",".join(srcs),
            "--key", str(self.user_key), "--timeout", str(timeout_s), timeout_s=300)
        return result

    def popen_client(self, module: str, *args: str) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONPATH=f"{LAB_DIR}:{REPO}")
        argv = ["ip", "netns", "exec", self.topo.client_ns, sys.executable, "-m", module, *args]
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)

    def expected_host(self, source: str, owners: dict[int, str | None] | None = None) -> str | None:
        """The host that should answer ``source`` according to the kernel-exact hash and the map."""


        owners = owners if owners is not None else self.owners()
        return owners.get(self.bucket_of(source))

    def bucket_of(self, source: str) -> int:
        import ipaddress

        from controller.core.hashing import bucket_for
        from controller.core.model import HashSettings

        backend = "nftables" if self.options.backend == "memory" else self.options.backend
        if backend == "clusterip":
            return bucket_for(backend, ipaddress.ip_address(source), self.buckets, HashSettings())
        return bucket_for(backend, ipaddress.ip_address(source), self.buckets,  # type: ignore[arg-type]
                          HashSettings(seed=0xDEADBEEF))

    # ------------------------------------------------------------------ faults

    def crash_host(self, host: str) -> None:
        """Link down and every process of the host killed: the machine is gone."""
        netns.link_down(self.topo, host, "all")
        if host in self.hooks:
            self.hooks[host].kill()
            self.hooks.pop(host).wait(timeout=5)
        self.sshd[host].kill()

    def restore_host(self, host: str) -> None:
        netns.link_up(self.topo, host, "all")
        self.sshd[host].start(timeout_s=20)
        self.start_hook(host)

    def hang_sshd(self, host: str) -> None:
        self.sshd[host].pause()

    def resume_sshd(self, host: str) -> None:
        self.sshd[host].resume()

    def exhaust_logins(self, host: str, limit: int = 16) -> None:
        """The probe user's process limit is used up on ``host``: its sshd accepts, logins fail."""
        sshd = self.sshd[host]
        sshd.stop()
        sshd.nproc = limit
        sshd.start(timeout_s=20)
        self._fillers[host] = fill_process_table(PROBE_USER, limit, seconds=600)

    def restore_logins(self, host: str) -> None:
        end_processes(self._fillers.pop(host, []))
        sshd = self.sshd[host]
        sshd.stop()
        sshd.nproc = None
        sshd.start(timeout_s=20)

    def kill_hook(self, host: str) -> None:
        self.hooks[host].kill()
        self.hooks.pop(host).wait(timeout=5)

    def leader(self) -> str | None:
        from controller.core import zk_layout as layout

        client = self.kazoo()
        try:
            children = sorted(client.get_children(layout.ELECTION), key=lambda n: n[-10:])
            if not children:
                return None
            data, _ = client.get(f"{layout.ELECTION}/{children[0]}")
            return bytes(data).decode()
        finally:
            client.stop()
            client.close()

    def kill_controller(self, name: str | None = None) -> str:
        """SIGKILL a controller replica (default: the leader); returns its name."""
        victim = name or self.leader()
        if victim is None or victim not in self.controllers:
            raise LabError(f"no running controller {victim!r} to kill")
        proc = self.controllers.pop(victim)
        proc.kill()
        proc.wait(timeout=5)
        return victim

    def zk_kill_leader(self) -> None:
        assert self.zk is not None
        self.zk.leader().kill()

    def zk_stop_all(self) -> None:
        assert self.zk is not None
        for server in self.zk.servers:
            server.kill()

    def zk_start_all(self, timeout_s: float = 90.0) -> None:
        """Start every stopped server, then wait for all: one ensemble member alone never serves."""
        assert self.zk is not None
        stopped = [server for server in self.zk.servers if not server.running]
        for server in stopped:
            server.start()
        deadline = time.monotonic() + timeout_s
        for server in stopped:
            server.wait_ready(deadline)

    def isolate_host(self, host: str) -> None:
        """Cut the host from ZooKeeper, the controllers and its peers; clients still reach it."""
        netns.link_down(self.topo, host, "mgmt")

    def unisolate_host(self, host: str) -> None:
        netns.link_up(self.topo, host, "mgmt")

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.dir / "logs" / f"{name}.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""


__all__ = ["LOGIN_USER", "LabStack", "StackOptions"]
