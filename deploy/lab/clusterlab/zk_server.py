"""One ZooKeeper server process (Debian's ``zookeeper`` 3.8), started directly with java.

Why separate from the cluster: this is the part that touches processes and signals, and it must
only ever signal the JVM it started itself (through its Popen object, which refuses to signal a
pid it has already reaped). Debian's zkServer.sh hard-codes /etc and /var paths, so the JVM is
launched directly::

    java -Xms32m -Xmx256m -XX:+UseSerialGC -cp zookeeper.jar:slf4j-log4j12.jar:log4j-1.2.jar:CONF \\
         org.apache.zookeeper.server.quorum.QuorumPeerMain zoo.cfg

With ``tls`` (clusterlab.zk_tls) the server also serves TLS on ``secureClientPort`` through the
Netty connection factory, with ``ssl.clientAuth=need`` and PEM key and trust stores. The plain
``clientPort`` stays open on 127.0.0.1 for the readiness check and the lab's own clients; tests that
prove TLS point their clients at :attr:`ZooKeeperServer.secure_port` only.

A server is *ready* when the ``srvr`` four-letter word shows a ``Mode:`` line (``ruok`` answers
``imok`` before sessions are accepted). Each JVM runs under ``setpriv --pdeathsig KILL`` so it dies
with the thread that started it, even if that process is SIGKILLed.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clusterlab.ports import LOOPBACK
from controller.core.errors import ClusterIPFailoverError

if TYPE_CHECKING:
    from clusterlab.zk_tls import TlsFiles

JAVA_DIR = Path("/usr/share/java")
ZOOKEEPER_JARS = ("zookeeper.jar", "slf4j-log4j12.jar", "log4j-1.2.jar")
#: Netty jars the TLS port needs beyond zookeeper.jar's manifest Class-Path (Debian's 3.8.0 lists
#: netty-buffer/common/handler/transport there, but SslHandler also needs codec and resolver).
NETTY_TLS_JARS = ("netty-codec.jar", "netty-resolver.jar", "netty-transport-native-unix-common.jar")
NETTY_FACTORY = "org.apache.zookeeper.server.NettyServerCnxnFactory"
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
#: Small heap and a cheap GC/JIT: the lab shares 2 cores with everything else.
JVM_OPTIONS = (
    "-Xms32m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.net.preferIPv4Stack=true",
)
LOG_FILE = "zookeeper.log"

_LOG4J = """\
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] %m%n
"""
_MODE_RE = re.compile(r"^Mode: (\S+)\s*$", re.MULTILINE)
POLL_S = 0.05


class ZooKeeperLabError(ClusterIPFailoverError):
    """A lab ZooKeeper could not be started, reached or stopped (message says what to do)."""


class ZooKeeperStartError(ZooKeeperLabError):
    """A server did not become ready in time or exited; the message ends with its log tail."""


@dataclass(frozen=True)
class ServerPorts:
    """The three ports one server listens on (all on 127.0.0.1)."""

    client: int
    quorum: int
    election: int
    #: TLS client port (secureClientPort); 0 when the server serves no TLS
    secure: int = 0


def four_letter_word(port: int, word: str, timeout_s: float = 1.0, host: str = LOOPBACK) -> str:
    """Send a ZooKeeper four-letter command and return the reply ("" if unreachable or silent).

    A SIGSTOPped server still accepts TCP connections (kernel backlog) but never answers, so the
    timeout bounds every call.
    """
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(word.encode("ascii"))
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError:
        return b"".join(chunks).decode("utf-8", "replace") if chunks else ""
    return b"".join(chunks).decode("utf-8", "replace")


def server_mode(port: int, timeout_s: float = 1.0, host: str = LOOPBACK) -> str | None:
    """The server's ``Mode:`` (standalone, leader, follower, observer), or None if not serving."""
    match = _MODE_RE.search(four_letter_word(port, "srvr", timeout_s, host))
    return match.group(1) if match else None


def _java_command(jars: Sequence[str] = ZOOKEEPER_JARS) -> list[str]:
    """The JVM command prefix, checked up front so a missing package gives a one-line fix."""
    java = shutil.which("java")
    if java is None:
        raise ZooKeeperLabError("java not found on PATH; install it with: apt-get install zookeeper")
    missing = [jar for jar in jars if not (JAVA_DIR / jar).exists()]
    if missing:
        raise ZooKeeperLabError(
            f"ZooKeeper jars missing in {JAVA_DIR}: {', '.join(missing)}; "
            "install them with: apt-get install zookeeper libnetty-java"
        )
    prefix: list[str] = []
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        prefix = [setpriv, "--pdeathsig", "KILL"]
    return [*prefix, java, *JVM_OPTIONS]


class ZooKeeperServer:
    """One ZooKeeper server process in its own directory (data/, conf/, zoo.cfg, zookeeper.log).

    Only the process started by :meth:`start` is ever signalled (through its Popen object, which
    refuses to signal a pid it has already reaped).
    """

    def __init__(
        self,
        myid: int,
        directory: Path,
        ports: ServerPorts,
        tick_ms: int,
        peers: Sequence[tuple[int, ServerPorts]] = (),
        client_address: str = LOOPBACK,
        tls: TlsFiles | None = None,
        nice: int | None = None,
    ) -> None:
        if tls is not None and not ports.secure:
            raise ValueError("a TLS server needs ports.secure (its secureClientPort)")
        self.myid = myid
        self.tls = tls
        self.client_address = client_address
        self.directory = directory
        self.ports = ports
        self.tick_ms = tick_ms
        self.peers = tuple(peers)
        #: CPU priority of the JVM (every thread inherits it: ``nice`` execs java, the PID stays the JVM's)
        self.nice = nice
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    def __repr__(self) -> str:
        return f"ZooKeeperServer(myid={self.myid}, client_port={self.client_port}, pid={self.pid})"

    @property
    def client_port(self) -> int:
        return self.ports.client

    @property
    def secure_port(self) -> int:
        """The TLS client port (0 without TLS)."""
        return self.ports.secure

    @property
    def pid(self) -> int | None:
        """Pid of the running JVM, None when not started or exited."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def paused(self) -> bool:
        return self._paused and self.running

    @property
    def log_path(self) -> Path:
        return self.directory / LOG_FILE

    def write_config(self) -> None:
        """Write zoo.cfg, myid and log4j.properties; existing data is kept (restarts rejoin)."""
        data = self.directory / "data"
        conf = self.directory / "conf"
        data.mkdir(parents=True, exist_ok=True)
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "log4j.properties").write_text(_LOG4J)
        lines = [
            f"tickTime={self.tick_ms}",
            "initLimit=20",
            "syncLimit=5",
            f"dataDir={data}",
            f"clientPort={self.ports.client}",
            f"clientPortAddress={self.client_address}",
            "admin.enableServer=false",
            "4lw.commands.whitelist=*",
            "maxClientCnxns=0",
            # Lab data is thrown away: skip fsync and the 64 MiB log preallocation.
            "forceSync=no",
            "preAllocSize=4096",
        ]
        if self.tls is not None:
            lines += self._tls_lines(self.tls)
        if self.peers:
            (data / "myid").write_text(f"{self.myid}\n")
            lines += [f"server.{sid}=127.0.0.1:{p.quorum}:{p.election}" for sid, p in self.peers]
        (self.directory / "zoo.cfg").write_text("\n".join(lines) + "\n")

    def _tls_lines(self, tls: TlsFiles) -> list[str]:
        """zoo.cfg lines for TLS clients as Debian's 3.8.0 accepts them (PEM stores, client certs required)."""
        return [
            f"secureClientPort={self.ports.secure}",
            f"secureClientPortAddress={self.client_address}",
            f"serverCnxnFactory={NETTY_FACTORY}",
            f"ssl.keyStore.location={tls.server_store}",
            "ssl.keyStore.type=PEM",
            f"ssl.trustStore.location={tls.ca}",
            "ssl.trustStore.type=PEM",
            "ssl.clientAuth=need",
        ]

    def start(self) -> None:
        """Launch the JVM (does not wait for readiness; see :meth:`wait_ready`)."""
        if self.running:
            raise ZooKeeperLabError(f"server {self.myid} is already running (pid {self.pid}); stop it first")
        jars = ZOOKEEPER_JARS + (NETTY_TLS_JARS if self.tls is not None else ())
        command = _java_command(jars)
        if self.nice is not None:
            command = ["nice", "-n", str(self.nice), *command]
        self.write_config()
        classpath = ":".join([*(str(JAVA_DIR / jar) for jar in jars), str(self.directory / "conf")])
        with self.log_path.open("ab") as log:
            log.write(f"=== cipfo lab: starting server {self.myid} at {time.ctime()}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [*command, "-cp", classpath, MAIN_CLASS, str(self.directory / "zoo.cfg")],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._paused = False

    def mode(self, timeout_s: float = 1.0) -> str | None:
        """``srvr`` Mode of this server, None if it is down, paused or not serving yet."""
        if not self.running:
            return None
        return server_mode(self.client_port, timeout_s, self.client_address)

    def is_leader(self) -> bool:
        """True for the ensemble's leader, and for a standalone server (it leads itself)."""
        return self.mode() in ("leader", "standalone")

    def wait_ready(self, deadline: float) -> None:
        """Block until ``srvr`` shows a Mode (monotonic ``deadline``); raise with the log tail."""
        while True:
            proc = self._proc
            if proc is None:
                raise ZooKeeperLabError(f"server {self.myid} was never started; call start() first")
            code = proc.poll()
            if code is not None:
                raise ZooKeeperStartError(
                    f"ZooKeeper server {self.myid} exited with code {code} before serving "
                    f"(port {self.client_port}); log tail:\n{self.log_tail()}"
                )
            wait_s = min(1.0, max(0.1, deadline - time.monotonic()))
            if server_mode(self.client_port, timeout_s=wait_s, host=self.client_address):
                return
            if time.monotonic() >= deadline:
                raise ZooKeeperStartError(
                    f"ZooKeeper server {self.myid} not serving on port {self.client_port} in time "
                    f"(machine busy? raise timeout_s); log tail:\n{self.log_tail()}"
                )
            time.sleep(POLL_S)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (and SIGCONT, in case it is paused), wait, then SIGKILL. Idempotent."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
        self._paused = False

    def kill(self) -> None:
        """SIGKILL, as a crash: no clean shutdown, sockets closed by the kernel. Idempotent."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(timeout=10.0)
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP: the server hangs (TCP connects still succeed, nothing is answered)."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise ZooKeeperLabError(f"server {self.myid} is not running; start it before sending {sig.name}")
        proc.send_signal(sig)

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of this server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])
