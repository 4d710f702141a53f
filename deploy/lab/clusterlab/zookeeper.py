"""Real ZooKeeper servers (Debian's ``zookeeper`` 3.8 package) for tests and the demo.

Why: the controller's correctness rests on ZooKeeper's real behaviour (session expiry, ephemeral
znodes, leader elections), which a fake would only imitate. This module starts real servers on
127.0.0.1, with free ports and a private directory, and stops exactly the processes it started.

The cluster is ready when every server's ``srvr`` shows a ``Mode:`` line and a kazoo client has
connected and synced through the leader. How one server is launched and signalled: see
clusterlab.zk_server (each JVM dies with the thread that started it, so start clusters from a
long-lived thread, e.g. the main thread).

Library use::

    with ZooKeeperCluster(size=3) as zk:          # start() on enter, stop() on exit
        client = zk.connect(chroot="/demo")       # started KazooClient with fast reconnects
        zk.leader().kill()                        # fault injection: kill/pause/resume/stop

    with ZooKeeperCluster(tls=True) as zk:        # also a TLS port per server (clusterlab.zk_tls)
        zk.secure_hosts, zk.tls.ca, zk.tls.client_cert, zk.tls.client_key

CLI (for the demo), runs in the foreground until SIGTERM or SIGINT::

    python -m clusterlab.zookeeper --size 1 --dir DIR [--tick-ms 200] [--max-seconds 14400] [--tls]

It prints the connect string on stdout once ready and writes ``DIR/hosts`` (connect string) and
``DIR/launcher.pid`` (this launcher's pid: ``kill $(cat DIR/launcher.pid)`` stops everything).
Server logs stay in ``DIR/zk<N>/zookeeper.log``. Exit codes: 0 after a clean stop, 1 if start
failed (the log tail is printed), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry

from clusterlab.ports import LOOPBACK, free_tcp_ports
from clusterlab.zk_server import (
    POLL_S,
    ServerPorts,
    ZooKeeperLabError,
    ZooKeeperServer,
    ZooKeeperStartError,
    four_letter_word,
    server_mode,
)
from clusterlab.zk_tls import TlsFiles, make_tls_files

__all__ = [
    "ServerPorts",
    "ZooKeeperCluster",
    "ZooKeeperLabError",
    "ZooKeeperServer",
    "ZooKeeperStartError",
    "four_letter_word",
    "free_tcp_ports",
    "main",
    "server_mode",
]

RUN_PREFIX = "cipfo-zk-"
MAX_SIZE = 9


class ZooKeeperCluster:
    """1..9 ZooKeeper servers on 127.0.0.1 (size 1: standalone, else an ensemble).

    ``base_dir`` None: a fresh temp dir ``cipfo-zk-<pid>-*`` is created and removed by :meth:`stop`.
    A given ``base_dir`` is created if missing, its ``zk<N>`` subdirectories are wiped on start, and
    it is kept after stop (logs for post-mortems).

    ``tls=True``: a throwaway CA, server and client certificate are made in ``<dir>/tls`` and every
    server also serves TLS clients (client certificate required) on its ``secure`` port; the plain
    port stays for readiness checks and :meth:`connect`. Quorum traffic stays plain.
    """

    def __init__(
        self,
        size: int = 1,
        tick_ms: int = 200,
        base_dir: Path | None = None,
        *,
        port_attempts: int = 3,
        client_address: str = LOOPBACK,
        tls: bool = False,
        nice: int | None = None,
    ) -> None:
        if not 1 <= size <= MAX_SIZE:
            raise ValueError(f"size must be 1..{MAX_SIZE} (got {size}); use 1 (standalone) or 3 (ensemble)")
        if not 10 <= tick_ms <= 10_000:
            raise ValueError(f"tick_ms must be 10..10000 (got {tick_ms}); 200 suits tests")
        self.size = size
        self.tick_ms = tick_ms
        self._given_dir = base_dir
        self._dir: Path | None = None
        self._servers: list[ZooKeeperServer] = []
        self._port_attempts = max(1, port_attempts)
        #: Where clients connect (the lab's management gateway lets hooks in namespaces reach it).
        self.client_address = client_address
        self._want_tls = tls
        #: CPU priority of every server (None: inherited), e.g. -10 so a busy machine still serves heartbeats
        self.nice = nice
        #: The CA and certificates when started with ``tls=True``, else None.
        self.tls: TlsFiles | None = None
        self._lock = threading.Lock()
        #: Seconds from the first JVM launch to the cluster being ready, set by :meth:`start`.
        self.start_seconds: float | None = None

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> ZooKeeperCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise ZooKeeperLabError("cluster has no directory yet; call start() first")
        return self._dir

    def start(self, timeout_s: float = 30.0) -> None:
        """Start all servers and wait until each serves and a kazoo client connects and syncs.

        Retries with new ports if a port was taken between choosing and binding it. On failure
        everything started is stopped again and :class:`ZooKeeperStartError` carries the log tails.
        """
        with self._lock:
            if any(s.running for s in self._servers):
                raise ZooKeeperLabError("cluster is already running; call stop() first")
            atexit.register(self.stop)
            self._make_dir()
            if self._want_tls:
                self.tls = make_tls_files(self.directory / "tls")
            began = time.monotonic()
            deadline = began + timeout_s
            for attempt in range(1, self._port_attempts + 1):
                self._build_servers()
                try:
                    for server in self._servers:
                        server.start()
                    for server in self._servers:
                        server.wait_ready(deadline)
                    self._check_client(deadline)
                except ZooKeeperLabError:
                    port_clash = any("Address already in use" in s.log_tail(200) for s in self._servers)
                    self._stop_servers()
                    if port_clash and attempt < self._port_attempts and time.monotonic() < deadline:
                        continue
                    self._cleanup_dir()
                    atexit.unregister(self.stop)
                    raise
                self.start_seconds = time.monotonic() - began
                return

    def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL) and remove a temp dir. Idempotent."""
        with self._lock:
            self._stop_servers()
            self._cleanup_dir()
            atexit.unregister(self.stop)

    def _make_dir(self) -> None:
        if self._given_dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-"))
            return
        self._dir = self._given_dir.resolve()
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ZooKeeperLabError(f"cannot create ZooKeeper dir {self._dir}: {exc}; pick another --dir") from exc
        for myid in range(1, MAX_SIZE + 1):
            shutil.rmtree(self._dir / f"zk{myid}", ignore_errors=True)

    def _build_servers(self) -> None:
        per = 4 if self.tls is not None else 3
        ports = free_tcp_ports(per * self.size)
        triples = [ServerPorts(*ports[per * i : per * i + per]) for i in range(self.size)]
        peers = [(i + 1, p) for i, p in enumerate(triples)] if self.size > 1 else []
        for myid in range(1, self.size + 1):
            shutil.rmtree(self.directory / f"zk{myid}", ignore_errors=True)
        self._servers = [
            ZooKeeperServer(
                i + 1, self.directory / f"zk{i + 1}", p, self.tick_ms, peers, self.client_address, self.tls,
                nice=self.nice,
            )
            for i, p in enumerate(triples)
        ]

    def _check_client(self, deadline: float) -> None:
        """Prove the cluster serves sessions: connect a kazoo client and sync through the leader."""
        client = self._client(self.hosts, timeout_s=4.0)
        try:
            client.start(timeout=max(0.5, deadline - time.monotonic()))
            client.sync("/")
        except (KazooTimeoutError, KazooException) as exc:
            tails = "\n".join(f"--- zk{s.myid}:\n{s.log_tail(15)}" for s in self._servers)
            raise ZooKeeperStartError(
                f"ZooKeeper at {self.hosts} serves srvr but no kazoo session ({exc!r}); log tails:\n{tails}"
            ) from exc
        finally:
            _close_quietly(client)

    def _stop_servers(self) -> None:
        for server in self._servers:
            server.stop()

    def _cleanup_dir(self) -> None:
        if self._given_dir is None and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self.tls = None

    # ---------------------------------------------------------------- queries and faults

    @property
    def servers(self) -> list[ZooKeeperServer]:
        return list(self._servers)

    @property
    def hosts(self) -> str:
        """kazoo/ZooKeeper connect string of all servers, e.g. ``127.0.0.1:p1,127.0.0.1:p2``."""
        if not self._servers:
            raise ZooKeeperLabError("cluster has no servers yet; call start() first")
        return ",".join(f"{self.client_address}:{s.client_port}" for s in self._servers)

    @property
    def secure_hosts(self) -> str:
        """Connect string of the servers' TLS ports (only with ``tls=True``)."""
        if self.tls is None or not self._servers:
            raise ZooKeeperLabError("cluster serves no TLS; create it with tls=True and start() it")
        return ",".join(f"{self.client_address}:{s.secure_port}" for s in self._servers)

    def leader(self, timeout_s: float = 15.0) -> ZooKeeperServer:
        """The server that currently leads (a standalone server leads itself); waits for an election."""
        deadline = time.monotonic() + timeout_s
        while True:
            leaders = [s for s in self._servers if s.running and not s.paused and s.is_leader()]
            if len(leaders) == 1:
                return leaders[0]
            if time.monotonic() >= deadline:
                modes = {s.myid: s.mode(0.3) for s in self._servers}
                raise ZooKeeperLabError(f"no single leader within {timeout_s} s (modes by myid: {modes})")
            time.sleep(POLL_S)

    def restart_server(self, server: ZooKeeperServer, *, kill: bool = False, timeout_s: float = 30.0) -> None:
        """Stop (or SIGKILL) one server, start it again with its data and wait until it serves."""
        if server not in self._servers:
            raise ZooKeeperLabError(f"{server!r} is not part of this cluster")
        if kill:
            server.kill()
        else:
            server.stop()
        server.start()
        server.wait_ready(time.monotonic() + timeout_s)

    def connect(
        self, chroot: str | None = None, session_timeout_s: float = 4.0, timeout_s: float = 15.0
    ) -> KazooClient:
        """A started kazoo client on all servers, reconnecting fast; ``chroot`` is created if missing.

        The session timeout is clamped by the server to [2, 20] x tick (0.4–4 s with tick 200 ms).
        """
        if chroot is not None:
            if not chroot.startswith("/") or chroot == "/":
                raise ValueError(f"chroot must be an absolute znode path other than / (got {chroot!r})")
            setup = self._client(self.hosts, session_timeout_s)
            try:
                setup.start(timeout=timeout_s)
                setup.ensure_path(chroot)
            except (KazooTimeoutError, KazooException) as exc:
                raise ZooKeeperLabError(f"cannot create chroot {chroot} on {self.hosts}: {exc!r}") from exc
            finally:
                _close_quietly(setup)
        client = self._client(self.hosts + (chroot or ""), session_timeout_s)
        try:
            client.start(timeout=timeout_s)
        except KazooTimeoutError as exc:
            _close_quietly(client)
            raise ZooKeeperLabError(f"no ZooKeeper session with {self.hosts} within {timeout_s} s") from exc
        return client

    @staticmethod
    def _client(hosts: str, timeout_s: float) -> KazooClient:
        return KazooClient(
            hosts=hosts,
            timeout=timeout_s,
            connection_retry=KazooRetry(max_tries=-1, delay=0.02, backoff=1),
        )


def _close_quietly(client: KazooClient) -> None:
    """Stop and close a kazoo client; errors here would only hide the interesting one."""
    try:
        client.stop()
        client.close()
    except KazooException:
        pass


# -------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m clusterlab.zookeeper",
        description="Run lab ZooKeeper server(s) on 127.0.0.1 in the foreground until SIGTERM/SIGINT.",
    )
    parser.add_argument("--size", type=int, default=1, help="1 (standalone) or 3 (ensemble); default 1")
    parser.add_argument("--dir", type=Path, required=True, help="directory for data, logs, hosts, launcher.pid")
    parser.add_argument("--tick-ms", type=int, default=200, help="ZooKeeper tickTime in ms; default 200")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for readiness")
    parser.add_argument("--tls", action="store_true", help="also serve TLS (certificates in DIR/tls)")
    parser.add_argument("--max-seconds", type=float, default=4 * 3600.0, help="stop by itself after this")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; see the module docstring."""
    args = _parse_args(argv)
    try:
        cluster = ZooKeeperCluster(size=args.size, tick_ms=args.tick_ms, base_dir=args.dir, tls=args.tls)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop_requested = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        cluster.start(timeout_s=args.start_timeout)
    except ZooKeeperLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    hosts_file = cluster.directory / "hosts"
    pid_file = cluster.directory / "launcher.pid"
    try:
        pid_file.write_text(f"{os.getpid()}\n")
        hosts_file.write_text(cluster.hosts + "\n")
        print(cluster.hosts, flush=True)
        stop_requested.wait(timeout=args.max_seconds)
    finally:
        hosts_file.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
