"""The level-1 banner prober against tiny in-process servers on 127.0.0.1 (no sshd needed).

Covers every outcome and the socket reuse: a probe whose connection was established gives its
socket back to a pool (``connect(AF_UNSPEC)``: a reset, the socket kept), and the next probe must
see nothing of the previous connection.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from controller.probes import banner as banner_mod
from controller.probes.banner import BannerProber
from controller.probes.errors import (
    BadBanner,
    BannerTimeout,
    ConnectionClosed,
    ConnectRefused,
    ProbeError,
)
from controller.probes.target import ProbeTarget

BANNER = b"SSH-2.0-OpenSSH_9.2p1 test\r\n"
Handler = Callable[[socket.socket], None]
MakeServer = Callable[[Handler | None], "Server"]
MakeHarness = Callable[..., "Harness"]


class Server:
    """A listener on 127.0.0.1 whose every accepted connection is given to ``handler`` (a thread)."""

    def __init__(self, handler: Handler | None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.accepted = 0
        self.kept: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        if handler is not None:  # None: never accept (the kernel completes handshakes: a hung sshd)
            self._thread = threading.Thread(target=self._serve, daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        assert self.handler is not None
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.kept.append(conn)
            self.handler(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.kept:
            conn.close()


@pytest.fixture
def servers() -> Iterator[MakeServer]:
    made: list[Server] = []

    def make(handler: Handler | None) -> Server:
        made.append(Server(handler))
        return made[-1]

    yield make
    for s in made:
        s.close()


def send_banner(conn: socket.socket) -> None:
    conn.sendall(BANNER)
    conn.close()


class Harness:
    """A prober on its own epoll, driven like the scheduler drives it."""

    def __init__(self, banner_timeout: float = 0.3, pool_max: int = 8, late_banner_s: float = 0.0,
                 late_per_host: int = 0) -> None:
        self.poll = select.epoll()
        self.outcomes: list[tuple[str, float | None, ProbeError | None]] = []
        self.late: list[tuple[str, float]] = []
        self.prober = BannerProber(
            self.poll, 0.3, banner_timeout, lambda t, ms, e: self.outcomes.append((t.host_id, ms, e)),
            lambda t, ms: self.late.append((t.host_id, ms)), late_banner_s, late_per_host, pool_max=pool_max)

    def probe(self, port: int, host: str = "h", timeout: float | None = None) -> None:
        self.prober.start(ProbeTarget(host, "127.0.0.1", port), socket.AF_INET, "127.0.0.1", time.monotonic(),
                          timeout)

    def run(self, until: Callable[[], bool], limit: float = 5.0) -> None:
        end = time.monotonic() + limit
        while not until() and time.monotonic() < end:
            deadline = self.prober.next_deadline()
            wait = 0.05 if deadline is None else min(0.05, max(0.0, deadline - time.monotonic()))
            for fd, events in self.poll.poll(wait, 64):
                self.prober.ready(fd, events, time.monotonic())
            self.prober.expire(time.monotonic())

    def one(self, port: int, host: str = "h", timeout: float | None = None) -> tuple[float | None, ProbeError | None]:
        n = len(self.outcomes)
        self.probe(port, host, timeout)
        self.run(lambda: len(self.outcomes) > n)
        assert len(self.outcomes) == n + 1, "probe gave no outcome"
        _, ms, err = self.outcomes[-1]
        return ms, err

    def close(self) -> None:
        self.prober.cancel_all()
        self.poll.close()


@pytest.fixture
def harness() -> Iterator[MakeHarness]:
    made: list[Harness] = []

    def make(**kw: object) -> Harness:
        made.append(Harness(**kw))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for h in made:
        h.close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_banner_ok_and_the_socket_is_reused(servers: MakeServer, harness: MakeHarness) -> None:
    srv = servers(send_banner)
    h = harness()
    for i in range(5):
        ms, err = h.one(srv.port)
        assert err is None and ms is not None and ms >= 0, f"probe {i}: {err}"
    if banner_mod._disconnect is None:
        pytest.skip("no connect(AF_UNSPEC) here: sockets are closed, not reused")
    assert h.prober.reused_total == 4  # one socket did all five probes
    assert h.prober.pooled == 1 and h.prober.in_flight == 0
    assert srv.accepted == 5


def test_refused_is_definite(harness: MakeHarness) -> None:
    h = harness()
    _, err = h.one(free_port())
    assert isinstance(err, ConnectRefused) and err.definite
    assert h.prober.pooled == 0  # a failed connect is closed, never pooled


def test_hung_server_completes_the_handshake_and_times_out_on_the_banner(
        servers: MakeServer, harness: MakeHarness) -> None:
    srv = servers(None)  # listens, never accepts: what a SIGSTOPped sshd looks like
    h = harness(banner_timeout=0.2)
    t0 = time.monotonic()
    _, err = h.one(srv.port)
    took = time.monotonic() - t0
    assert isinstance(err, BannerTimeout) and err.timeout and "banner timeout 200 ms" in err.reason
    assert 0.18 <= took < 0.6


def test_per_probe_timeout_overrides_the_default(servers: MakeServer, harness: MakeHarness) -> None:
    srv = servers(None)
    h = harness(banner_timeout=0.1)
    t0 = time.monotonic()
    _, err = h.one(srv.port, timeout=0.4)
    took = time.monotonic() - t0
    assert isinstance(err, BannerTimeout) and "banner timeout 400 ms" in err.reason
    assert 0.38 <= took < 0.9


def test_not_ssh_and_closed_before_banner(servers: MakeServer, harness: MakeHarness) -> None:
    def ssh1(conn: socket.socket) -> None:
        conn.sendall(b"SSH-1.5-ancient\r\n")
        conn.close()

    def close(conn: socket.socket) -> None:
        conn.close()

    h = harness()
    _, err = h.one(servers(ssh1).port)
    assert isinstance(err, BadBanner) and "SSH-1.5-ancient" in err.reason
    _, err = h.one(servers(close).port)
    assert isinstance(err, ConnectionClosed)


def test_preamble_lines_and_a_banner_in_pieces(servers: MakeServer, harness: MakeHarness) -> None:
    def preamble(conn: socket.socket) -> None:
        conn.sendall(b"Welcome\r\nauthorised use only\r\n")
        time.sleep(0.02)
        conn.sendall(b"SSH-2.")
        time.sleep(0.02)
        conn.sendall(b"0-OpenSSH_9.2\r\n")
        conn.close()

    h = harness()
    ms, err = h.one(servers(preamble).port)
    assert err is None and ms is not None and ms >= 30


def test_a_reused_socket_carries_nothing_of_its_previous_connection(servers: MakeServer, harness: MakeHarness) -> None:
    def unread_bytes(conn: socket.socket) -> None:
        conn.sendall(BANNER + b"extra bytes the probe never reads")
        time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def hold(conn: socket.socket) -> None:
        pass  # accepted, kept open, never answers

    # The disconnect itself leaves ECONNRESET pending on the socket (SO_ERROR), and unread bytes are
    # dropped: the next connect must start clean.
    chatty, ok, silent = servers(unread_bytes), servers(send_banner), servers(hold)
    h = harness(banner_timeout=0.15)
    for _ in range(3):
        assert h.one(chatty.port)[1] is None
        ms, err = h.one(ok.port)
        assert err is None and ms is not None
        _, err = h.one(silent.port)
        assert isinstance(err, BannerTimeout)  # no stale bytes or errors seen as a banner or failure
        assert h.one(ok.port)[1] is None
    assert h.prober.in_flight == 0


def test_late_banner_is_reported_after_the_timeout(servers: MakeServer, harness: MakeHarness) -> None:
    def slow(conn: socket.socket) -> None:
        def later() -> None:
            time.sleep(0.35)
            send_banner(conn)

        threading.Thread(target=later, daemon=True).start()

    h = harness(banner_timeout=0.1, late_banner_s=2.0, late_per_host=4)
    _, err = h.one(servers(slow).port)
    assert isinstance(err, BannerTimeout)
    h.run(lambda: bool(h.late))
    assert len(h.late) == 1 and h.late[0][1] >= 300
    assert h.prober.in_flight == 0


def test_pool_is_bounded_and_cancel_all_closes_everything(servers: MakeServer, harness: MakeHarness) -> None:
    srv = servers(send_banner)
    h = harness(pool_max=3)
    for i in range(10):
        h.probe(srv.port, host=f"h{i}")
    h.run(lambda: len(h.outcomes) == 10)
    assert [e for _, _, e in h.outcomes] == [None] * 10
    assert h.prober.pooled <= 3
    h.prober.cancel_all()
    assert h.prober.pooled == 0 and h.prober.in_flight == 0
