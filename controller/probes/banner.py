"""Level 1: TCP connect and read the ``SSH-2.0-`` banner, many probes at once on one epoll.

Non-blocking sockets on one epoll: a probe costs a socket and a heap entry, not a thread, so one
core can watch hundreds of hosts. The epoll object is used directly, not through ``selectors``:
its per-operation bookkeeping (a ``SelectorKey`` per register/modify, a key lookup per event) was
a measurable share of the CPU per probe at thousands of probes a second (docs/probes.md).

A hung sshd still completes TCP handshakes (the kernel does that), so the banner deadline is what
catches it. Ready sockets are handled before deadlines are expired: if this process itself was
late (CPU starved), a banner that arrived in time is not counted as a timeout.

Sockets are reused: a probe whose connection was established ends with ``connect(AF_UNSPEC)``
(``_disconnect``), which resets the connection like a close with SO_LINGER 0 (no TIME_WAIT) but
keeps the socket, its options and its epoll registration; the next probe connects it again. That
saves four system calls of every probe (``socket``, ``setsockopt``, ``epoll_ctl``, ``close``) at
thousands of probes a second (docs/probes.md, controller cost).

A probe that times out is reported at once (detection is not delayed), but its socket may be kept
open a while longer (``late_banner_s`` from its start, at most ``late_per_host`` per host and
``late_total`` in all, so waiting never takes sockets from new probes): if the
banner then arrives, ``on_late`` reports it. A late banner proves the host alive but slow, which the
health tracker uses to avoid failing a busy host; a hung sshd never sends one.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import heapq
import itertools
import math
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from controller.probes.errors import (
    BadBanner,
    BannerTimeout,
    ConnectionClosed,
    ConnectRefused,
    ConnectTimeout,
    ProbeError,
    Unreachable,
)
from controller.probes.target import ProbeTarget

#: SO_LINGER 0: close with a reset so thousands of probes a second leave no TIME_WAIT behind.
_LINGER_RESET = struct.pack("ii", 1, 0)
_MAX_PREAMBLE = 8192  # RFC 4253 lets a server send lines before its banner; bound them
#: Created non-blocking (Linux): saves the ``setblocking`` syscall of every probe, thousands a second.
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)
#: epoll events that may mean a failed connect (see ``BannerProber.handle``)
_FAILED = select.EPOLLERR | select.EPOLLHUP
#: Edge-triggered for both directions, registered once: no ``epoll.modify`` syscall per probe when
#: the connect completes. The price: a readable socket is read until it has nothing more (see
#: ``handle``), since bytes already there raise no new event.
_WATCH = select.EPOLLIN | select.EPOLLOUT | select.EPOLLET



def _libc_disconnect() -> Callable[[int], int] | None:
    """``connect(fd, {AF_UNSPEC})``: dissolve a TCP socket's association (Linux, BSDs), returning 0 or
    -1. On an established connection the kernel sends a reset (``tcp_disconnect``), as a close with
    SO_LINGER 0 does; the socket returns to the unconnected state, loses its local port, and keeps
    its options and its epoll registration. None where libc or the call is not available."""
    if not sys.platform.startswith("linux"):  # the behaviour relied on was checked on Linux only
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        connect = libc.connect
    except (OSError, AttributeError):
        return None
    connect.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
    connect.restype = ctypes.c_int
    unspec = bytes(16)  # struct sockaddr with sa_family AF_UNSPEC (0) and no address

    def disconnect(fd: int) -> int:
        return int(connect(fd, unspec, 16))

    return disconnect


_disconnect = _libc_disconnect()

#: Called with the target, the latency in ms on success or the error, and the banner line.
Outcome = Callable[[ProbeTarget, float | None, ProbeError | None], None]
#: Called with the target and the real latency in ms of a banner that came after its timeout.
LateOutcome = Callable[[ProbeTarget, float], None]


@dataclass(slots=True)
class _Probe:
    target: ProbeTarget
    sock: socket.socket
    started: float
    deadline: float
    banner_timeout: float = 0.0
    connected: bool = False
    buf: bytes = b""
    #: already reported as a timeout; kept open only to see whether the banner still comes
    late: bool = False
    #: the socket's fd, the key in the epoll and in ``BannerProber._by_fd``
    fd: int = -1
    #: finished: its socket was closed or went back to the pool (deadline entries left are stale)
    done: bool = False
    #: the socket's address family (``socket.family`` builds an enum member per call: not per probe)
    family: int = 0


class BannerProber:
    """Runs level-1 probes on an epoll the caller owns and polls (see ``ProbeScheduler``): the caller
    passes every ready fd to ``ready``.

    Deadlines: a probe is in the connect queue, then in the banner queue. Both timeouts are the
    same for every probe, and probes start and connect in time order, so these are FIFO queues
    (O(1) per probe, no heap); a probe with its own banner timeout (the tracker's adaptive one) or
    a late deadline goes to a heap. Entries of finished or advanced probes are dropped lazily.

    ``pool_max``: how many idle sockets to keep for reuse (0: close every socket); they count
    against the caller's fd budget.
    """

    def __init__(
        self,
        poller: select.epoll,
        connect_timeout_s: float,
        banner_timeout_s: float,
        on_outcome: Outcome,
        on_late: LateOutcome | None = None,
        late_banner_s: float = 0.0,
        late_per_host: int = 0,
        late_total: int = 1024,
        pool_max: int = 0,
    ) -> None:
        self._poll = poller
        self._connect_timeout = connect_timeout_s
        self._banner_timeout = banner_timeout_s
        self._on_outcome = on_outcome
        self._on_late = on_late
        self._late_banner_s = late_banner_s
        self._late_per_host = late_per_host if on_late is not None else 0
        self._late_count: dict[str, int] = {}
        self._late_total_max = late_total
        self._late_total = 0
        self._connecting: collections.deque[tuple[float, _Probe]] = collections.deque()
        self._awaiting: collections.deque[tuple[float, _Probe]] = collections.deque()
        self._deadlines: list[tuple[float, int, _Probe]] = []  # other deadlines: own timeout, late
        self._seq = itertools.count()  # heap tie-breaker
        self._by_fd: dict[int, _Probe] = {}
        self._pool_max = pool_max if _disconnect is not None else 0
        self._pool: dict[int, list[socket.socket]] = {}  # family -> idle, registered sockets
        self._pooled = 0
        self.started_total = 0
        self.late_banners = 0
        self.reused_total = 0

    @property
    def in_flight(self) -> int:
        return len(self._by_fd)

    @property
    def pooled(self) -> int:
        return self._pooled

    def start(self, target: ProbeTarget, family: socket.AddressFamily, ip: str, now: float,
              banner_timeout_s: float | None = None) -> None:
        """Begin one probe; the outcome arrives through ``on_outcome`` from ``ready``/``expire``.

        ``banner_timeout_s`` overrides the default for this probe (the tracker's adaptive timeout).
        """
        self.started_total += 1
        pool = self._pool.get(family)
        if pool:
            sock = pool.pop()
            self._pooled -= 1
            self.reused_total += 1
            fresh = False
        else:
            try:
                sock = socket.socket(family, socket.SOCK_STREAM | _NONBLOCK)
            except OSError as exc:
                self._on_outcome(target, None, Unreachable(f"cannot create socket: {exc.strerror}"))
                return
            if not _NONBLOCK:
                sock.setblocking(False)
            # for a socket that is closed (not reused) after a failure: no TIME_WAIT either
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            fresh = True
        err = sock.connect_ex((ip, target.port))
        if err != errno.EINPROGRESS and err != 0:
            sock.close()  # also leaves the epoll, if it was a pooled socket
            self._on_outcome(target, None, _connect_error(err, target))
            return
        fd = sock.fileno()
        if fresh:
            self._poll.register(fd, _WATCH)
        timeout = self._banner_timeout if banner_timeout_s is None else banner_timeout_s
        deadline = now + self._connect_timeout
        probe = _Probe(target, sock, now, deadline, timeout, fd=fd, family=family)
        self._by_fd[fd] = probe
        self._connecting.append((deadline, probe))

    def next_deadline(self) -> float | None:
        best: float | None = None
        for queue in (self._connecting, self._awaiting):
            while queue and (queue[0][1].done or queue[0][1].deadline != queue[0][0]):
                queue.popleft()
            if queue and (best is None or queue[0][0] < best):
                best = queue[0][0]
        heap = self._deadlines
        while heap and (heap[0][2].done or heap[0][2].deadline != heap[0][0]):
            heapq.heappop(heap)
        if heap and (best is None or heap[0][0] < best):
            best = heap[0][0]
        return best

    def ready(self, fd: int, events: int, now: float) -> bool:
        """Advance the probe of a ready fd with its epoll ``events``; False if the fd is not ours
        (or is an idle pooled socket: its disconnect raised an edge nobody waits for)."""
        probe = self._by_fd.get(fd)
        if probe is None:
            return False
        self.handle(probe, now, events)
        return True

    def handle(self, probe: _Probe, now: float, events: int = _FAILED | select.EPOLLIN) -> None:
        """Advance a probe whose socket is ready.

        A connect that failed always raises ``EPOLLERR`` (the kernel sets the socket error that
        ``SO_ERROR`` reads); without it or ``EPOLLHUP`` the connect succeeded, so the ``getsockopt``
        syscall is skipped for the usual, successful probe. Without ``events`` it is always done.
        """
        if probe.done:
            return
        if not probe.connected:
            err = probe.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if events & _FAILED else 0
            if err:
                self._finish(probe, None, _connect_error(err, probe.target))
                return
            probe.connected = True
            if not probe.late:  # a late probe keeps its late deadline
                probe.deadline = now + probe.banner_timeout
                if probe.banner_timeout == self._banner_timeout:
                    self._awaiting.append((probe.deadline, probe))
                else:
                    heapq.heappush(self._deadlines, (probe.deadline, next(self._seq), probe))
            if not events & select.EPOLLIN:
                return  # the banner's arrival raises the next edge
        # Edge-triggered: read until a verdict or until nothing is left, or bytes already received
        # would wait for the next arrival (or the deadline).
        while True:
            try:
                chunk = probe.sock.recv(1024)
            except BlockingIOError:
                return
            except OSError as exc:
                self._finish(probe, None, ConnectionClosed(f"connection error before banner: {exc.strerror}"))
                return
            if not chunk:
                self._finish(probe, None, ConnectionClosed("connection closed before banner"))
                return
            buf = probe.buf = probe.buf + chunk if probe.buf else chunk
            if buf.startswith(b"SSH-2.0-") or buf.startswith(b"SSH-1.99-"):
                self._finish(probe, (now - probe.started) * 1000.0, None)  # the usual case, no _parse
                return
            verdict = _parse(buf)
            if verdict is True:
                self._finish(probe, (now - probe.started) * 1000.0, None)
                return
            if isinstance(verdict, ProbeError):
                self._finish(probe, None, verdict)
                return

    def expire(self, now: float) -> None:
        """Fail every probe whose deadline passed."""
        for queue in (self._connecting, self._awaiting):
            while queue and queue[0][0] <= now:
                deadline, probe = queue.popleft()
                if not probe.done and deadline == probe.deadline:
                    self._expired(probe, now)
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, _, probe = heapq.heappop(heap)
            if not probe.done and deadline == probe.deadline:
                self._expired(probe, now)

    def _expired(self, probe: _Probe, now: float) -> None:
        if probe.late:
            self._close(probe)  # no banner even late: nothing more to report
            return
        if probe.connected:
            err: ProbeError = BannerTimeout(f"banner timeout {probe.banner_timeout * 1000:.0f} ms")
        else:
            err = ConnectTimeout(f"connect timeout {self._connect_timeout * 1000:.0f} ms")
        if self._keep_late(probe, now):
            self._on_outcome(probe.target, None, err)
        else:
            self._finish(probe, None, err)

    def _keep_late(self, probe: _Probe, now: float) -> bool:
        """Keep a timed-out probe's socket open to watch for a late banner, within the bounds."""
        late_deadline = probe.started + self._late_banner_s
        host = probe.target.host_id
        if (late_deadline <= now or self._late_count.get(host, 0) >= self._late_per_host
                or self._late_total >= self._late_total_max):
            return False
        probe.late = True
        self._late_total += 1
        probe.deadline = late_deadline
        self._late_count[host] = self._late_count.get(host, 0) + 1
        heapq.heappush(self._deadlines, (probe.deadline, next(self._seq), probe))
        return True

    def cancel_all(self) -> None:
        for probe in list(self._by_fd.values()):
            self._close(probe, reuse=False)
        for pool in self._pool.values():
            for sock in pool:
                sock.close()
        self._pool.clear()
        self._pooled = 0
        self._connecting.clear()
        self._awaiting.clear()
        self._deadlines.clear()

    def _finish(self, probe: _Probe, latency_ms: float | None, err: ProbeError | None) -> None:
        self._close(probe)
        if not probe.late:
            self._on_outcome(probe.target, latency_ms, err)
        elif err is None and latency_ms is not None and self._on_late is not None:
            self.late_banners += 1
            self._on_late(probe.target, latency_ms)
        # a late probe that fails (reset, bad banner) was already reported as a timeout

    def _close(self, probe: _Probe, reuse: bool = True) -> None:
        """End a probe's connection: back to the pool when it got connected (a reset, the socket
        kept), else closed (SO_LINGER 0: a reset too)."""
        if probe.done:
            return
        probe.done = True
        if probe.late:
            self._late_total -= 1
            host = probe.target.host_id
            left = self._late_count.get(host, 1) - 1
            if left > 0:
                self._late_count[host] = left
            else:
                self._late_count.pop(host, None)
        if self._by_fd.get(probe.fd) is probe:
            del self._by_fd[probe.fd]
        sock = probe.sock
        # Only a socket that connected goes back: its state is known (established, or closed by
        # the peer), and the disconnect resets it like SO_LINGER 0. A failed connect is closed.
        if (reuse and probe.connected and self._pooled < self._pool_max and _disconnect is not None
                and _disconnect(probe.fd) == 0):
            self._pool.setdefault(probe.family, []).append(sock)
            self._pooled += 1
            return
        # No epoll unregister (a syscall per probe): closing the socket's only fd removes it from
        # the epoll, before the fd number can be reused.
        sock.close()


def _parse(buf: bytes) -> bool | ProbeError | None:
    """True on an SSH-2 banner, an error on a wrong one, None while more bytes are needed."""
    if buf.startswith(b"SSH-2.0-") or buf.startswith(b"SSH-1.99-"):
        return True  # the usual case (no preamble lines): what the scan below finds, without splitting
    for line in buf.split(b"\n")[:-1] if b"\n" in buf else []:
        if line.startswith(b"SSH-"):
            return _judge(line)
    tail = buf.rsplit(b"\n", 1)[-1]
    if tail.startswith(b"SSH-2.0-") or tail.startswith(b"SSH-1.99-"):
        return True  # the version prefix is all we need; no need to wait for the line end
    if len(buf) > _MAX_PREAMBLE:
        return BadBanner("no SSH banner in the first 8 KiB")
    return None


def _judge(line: bytes) -> bool | ProbeError:
    if line.startswith(b"SSH-2.0-") or line.startswith(b"SSH-1.99-"):
        return True
    text = line.strip().decode("ascii", "replace")[:60]
    return BadBanner(f"not an SSH-2 server: {text!r}")


def _connect_error(err: int, target: ProbeTarget) -> ProbeError:
    if err == errno.ECONNREFUSED:
        return ConnectRefused("connection refused")
    if err == errno.ETIMEDOUT:
        return ConnectTimeout("connect timed out")
    return Unreachable(f"cannot connect to {target.label}: {errno.errorcode.get(err, err)} {os.strerror(err)}")


def probe_banner(target: ProbeTarget, connect_timeout_s: float, banner_timeout_s: float) -> float:
    """One blocking level-1 probe (CLI, tests): the latency in ms, or raises a ``ProbeError``."""
    family, ip = target.resolved()
    outcome: list[tuple[float | None, ProbeError | None]] = []
    with select.epoll() as poller:
        prober = BannerProber(poller, connect_timeout_s, banner_timeout_s, lambda _t, ms, e: outcome.append((ms, e)))
        prober.start(target, family, ip, time.monotonic())
        limit = time.monotonic() + connect_timeout_s + banner_timeout_s + 1.0
        while not outcome and time.monotonic() < limit:
            deadline = prober.next_deadline()
            wait = max(0.0, deadline - time.monotonic()) if deadline is not None else 0.05
            for fd, events in poller.poll(math.ceil(wait * 1e3) * 1e-3, prober.in_flight + 1):
                prober.ready(fd, events, time.monotonic())
            prober.expire(time.monotonic())
        prober.cancel_all()
    if not outcome:
        raise ConnectTimeout("probe did not finish")
    latency, err = outcome[0]
    if err is not None:
        raise err
    assert latency is not None
    return latency
