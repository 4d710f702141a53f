"""Traffic for the namespace lab: a responder per host and a many-source client, as subprocesses.

Why subprocesses: the test process must stay in the root namespace (ZooKeeper, the controller and
other tests live there), so everything that sends or answers packets runs under ``ip netns exec``
and talks JSON over stdout. The same file is both the test-side API and the in-namespace program::

    python -m clusterlab.traffic responder --name h1 --port 7000     # in a host namespace
    python -m clusterlab.traffic udp    --vip V --port P --sources a,b,...   # in the client namespace
    python -m clusterlab.traffic tcp    --vip V --port P --sources a,b,...
    python -m clusterlab.traffic stream --vip V --port P --sources a,b,...   # until stdin closes

The responder answers a UDP datagram with its host name (from the address the datagram was sent
to, i.e. the VIP) and a TCP connection with ``name\\n`` and then echoes every byte it receives.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ipaddress
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from clusterlab.errors import LabError
from clusterlab.netns import LabTopology, popen_in

LAB_DIR = Path(__file__).resolve().parent.parent  # deploy/lab, wherever the checkout is
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; CPython 3.11 does not export it
_PKTINFO = struct.Struct("I4s4s")  # struct in_pktinfo { ifindex; spec_dst; addr }
_PKTINFO6 = struct.Struct("16sI")  # struct in6_pktinfo { addr; ifindex }
_MAX_SECONDS = 900.0  # hard bound on any in-namespace loop


# --------------------------------------------------------------------------- in-namespace programs


def _listen(family: socket.AddressFamily, bind: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP socket that reports each datagram's destination address, and a TCP listener."""
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        for sock in (udp, tcp):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    else:
        udp.setsockopt(socket.SOL_IP, IP_PKTINFO, 1)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.bind((bind, port))
    tcp.bind((bind, port))
    tcp.listen(1024)
    udp.setblocking(False)
    tcp.setblocking(False)
    return udp, tcp


def run_responder(name: str, port: int, bind: str = "0.0.0.0") -> None:
    """Answer UDP and TCP on ``port`` (IPv4, and IPv6 on ``::`` if the namespace has it) until SIGTERM.

    Prints ``ready`` once the sockets listen, so the starter knows when probing may begin.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    payload = name.encode()
    sel = selectors.DefaultSelector()
    socks = [_listen(socket.AF_INET, bind, port)]
    with contextlib.suppress(OSError):  # IPv6 disabled in this namespace: IPv4 only
        socks.append(_listen(socket.AF_INET6, "::", port))
    for udp, tcp in socks:
        sel.register(udp, selectors.EVENT_READ, "udp")
        sel.register(tcp, selectors.EVENT_READ, "listen")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if key.data == "udp":
                _answer_udp(sock, payload)
            elif key.data == "listen":
                with contextlib.suppress(BlockingIOError, ConnectionError):
                    conn, _ = sock.accept()
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn.send(payload + b"\n")
                    sel.register(conn, selectors.EVENT_READ, "conn")
            else:
                _echo(sel, sock)


def _answer_udp(sock: socket.socket, payload: bytes) -> None:
    # Reply from the address the datagram was sent to (the VIP), not the interface's primary one.
    v6 = sock.family == socket.AF_INET6
    while True:
        try:
            _, ancdata, _, peer = sock.recvmsg(2048, socket.CMSG_SPACE(_PKTINFO6.size if v6 else _PKTINFO.size))
        except BlockingIOError:
            return
        cmsg: list[tuple[int, int, bytes]] = []
        for level, kind, data in ancdata:
            if not v6 and level == socket.SOL_IP and kind == IP_PKTINFO:
                local = _PKTINFO.unpack(data[: _PKTINFO.size])[2]
                cmsg = [(socket.SOL_IP, IP_PKTINFO, _PKTINFO.pack(0, local, b"\0" * 4))]
            elif v6 and level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                local = _PKTINFO6.unpack(data[: _PKTINFO6.size])[0]
                cmsg = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _PKTINFO6.pack(local, 0))]
        with contextlib.suppress(OSError):
            sock.sendmsg([payload], cmsg, 0, peer)


def _echo(sel: selectors.BaseSelector, conn: socket.socket) -> None:
    try:
        data = conn.recv(4096)
        if data:
            conn.send(data)
            return
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        pass
    sel.unregister(conn)
    conn.close()


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def run_udp_client(vip: str, port: int, sources: Sequence[str], window_s: float) -> dict[str, list[str]]:
    """One datagram from each source; every reply within the window is kept (duplicates show)."""
    sel = selectors.DefaultSelector()
    answers: dict[str, list[str]] = {src: [] for src in sources}
    vip_addr = ipaddress.ip_address(vip)
    socks = []
    for src in sources:
        sock = socket.socket(_family(src), socket.SOCK_DGRAM)
        sock.bind((src, 0))
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, src)
        socks.append(sock)
    for sock in socks:
        sock.sendto(b"who", (vip, port))
    deadline = time.monotonic() + min(window_s, _MAX_SECONDS)
    while (remaining := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(remaining):
            while True:
                try:
                    data, peer = key.fileobj.recvfrom(2048)  # type: ignore[union-attr]
                except (BlockingIOError, ConnectionRefusedError):
                    break
                name = data.decode(errors="replace")
                addr = ipaddress.ip_address(peer[0])
                answers[key.data].append(name if addr == vip_addr else f"{name}!from:{addr}")
    for sock in socks:
        sock.close()
    return answers


def run_tcp_client(vip: str, port: int, sources: Sequence[str], timeout_s: float) -> dict[str, str | None]:
    """Connect from every source at once and read the greeting line; None = no answer in time."""
    sel = selectors.DefaultSelector()
    result: dict[str, str | None] = dict.fromkeys(sources)
    buffers: dict[str, bytes] = {}
    conns: dict[str, socket.socket] = {}
    for src in sources:
        conns[src] = new = socket.socket(_family(src), socket.SOCK_STREAM)
        new.bind((src, 0))
        new.setblocking(False)
        new.connect_ex((vip, port))
        sel.register(new, selectors.EVENT_READ, src)
        buffers[src] = b""
    deadline = time.monotonic() + min(timeout_s, _MAX_SECONDS)
    while sel.get_map() and (remaining := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(remaining):
            src = key.data
            sock = conns[src]
            try:
                chunk = sock.recv(256)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            buffers[src] += chunk
            if b"\n" in buffers[src] or not chunk:
                if b"\n" in buffers[src]:
                    result[src] = buffers[src].split(b"\n", 1)[0].decode(errors="replace")
                sel.unregister(sock)
                sock.close()
    for sock in conns.values():
        sock.close()
    return result


def run_stream_client(
    vip: str, port: int, sources: Sequence[str], interval_s: float, stall_s: float, control: IO[str]
) -> dict[str, dict[str, Any]]:
    """Hold one TCP connection per source, exchanging a byte every ``interval_s`` until ``control`` EOF.

    A connection counts as broken on reset/EOF or when an echo is more than ``stall_s`` late.
    Prints one ``connected`` JSON line (source -> host) once all greetings are in.
    """
    greetings = run_tcp_connections(vip, port, sources, stall_s)
    print(json.dumps({"connected": {s: g[1] for s, g in greetings.items()}}), flush=True)
    stats: dict[str, dict[str, Any]] = {
        src: {
            "host": host, "sent": 0, "received": 0, "broken": sock is None,
            "error": None if sock else "no greeting", "max_rtt_ms": 0.0,
        }
        for src, (sock, host) in greetings.items()
    }
    live = {s: g[0] for s, g in greetings.items() if g[0] is not None}
    pending: dict[str, collections.deque[float]] = {s: collections.deque() for s in live}
    sel = selectors.DefaultSelector()
    for src, sock in live.items():
        sel.register(sock, selectors.EVENT_READ, src)
    sel.register(control, selectors.EVENT_READ, None)
    stop_at = time.monotonic() + _MAX_SECONDS
    next_tick = time.monotonic()

    def breaks(src: str, why: str) -> None:
        stats[src].update(broken=True, error=why)
        sel.unregister(live[src])
        live.pop(src).close()

    while time.monotonic() < stop_at:
        now = time.monotonic()
        if now >= next_tick:
            next_tick = now + interval_s
            for src in list(live):
                if pending[src] and now - pending[src][0] > stall_s:
                    breaks(src, f"no echo for {stall_s} s")
                    continue
                try:
                    live[src].send(b".")
                except BlockingIOError:
                    continue  # send buffer full (peer unreachable): the stall check decides
                except OSError as exc:
                    breaks(src, f"send: {exc.strerror or exc}")
                    continue
                pending[src].append(now)
                stats[src]["sent"] += 1
        for key, _ in sel.select(max(0.0, next_tick - time.monotonic())):
            if key.data is None:
                if not control.readline():
                    return stats
                continue
            src = key.data
            try:
                data = key.fileobj.recv(4096)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            except OSError as exc:
                breaks(src, f"recv: {exc.strerror or exc}")
                continue
            if not data:
                breaks(src, "closed by peer")
                continue
            got = time.monotonic()
            for _ in range(min(len(data), len(pending[src]))):
                rtt_ms = (got - pending[src].popleft()) * 1000
                stats[src]["max_rtt_ms"] = max(stats[src]["max_rtt_ms"], round(rtt_ms, 3))
            stats[src]["received"] += len(data)
    return stats


def run_tcp_connections(
    vip: str, port: int, sources: Sequence[str], timeout_s: float
) -> dict[str, tuple[socket.socket | None, str | None]]:
    """Open one connection per source and read its greeting; kept open for the stream client."""
    out: dict[str, tuple[socket.socket | None, str | None]] = {}
    for src in sources:
        sock = socket.socket(_family(src), socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((src, 0))
        sock.settimeout(timeout_s)
        try:
            sock.connect((vip, port))
            line = b""
            while not line.endswith(b"\n"):
                chunk = sock.recv(256)
                if not chunk:
                    raise ConnectionError("closed before greeting")
                line += chunk
        except OSError:
            sock.close()
            out[src] = (None, None)
            continue
        sock.setblocking(False)
        out[src] = (sock, line.strip().decode(errors="replace"))
    return out


# --------------------------------------------------------------------------- test-side API


def traffic_argv(*args: str) -> list[str]:
    """Command line that runs this module with the test's own interpreter (venv), any checkout path."""
    return [sys.executable, "-m", "clusterlab.traffic", *args]


def traffic_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(LAB_DIR), env.get("PYTHONPATH", "")) if p)
    return env


def _run_client(topology: LabTopology, args: Sequence[str], timeout_s: float) -> Any:
    proc = subprocess.run(
        ["ip", "netns", "exec", topology.client_ns, *traffic_argv(*args)],
        capture_output=True,
        text=True,
        env=traffic_env(),
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise LabError(f"traffic client {args[0]} in {topology.client_ns} failed: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout)


def _source_list(topology: LabTopology, sources: Iterable[str] | None) -> list[str]:
    chosen = list(topology.client_sources if sources is None else sources)
    if not chosen:
        raise LabError("no client sources given: pass sources=None to use all of topology.client_sources")
    return chosen


def _vip_for(topology: LabTopology, sources: Sequence[str]) -> str:
    """The VIP of the sources' address family (all sources must share one family)."""
    families = {_family(src) for src in sources}
    if len(families) > 1:
        raise LabError("sources mix IPv4 and IPv6: probe topology.client_sources and client_sources6 separately")
    if families == {socket.AF_INET6}:
        if topology.vip6 is None:
            raise LabError(f"IPv6 sources given but lab {topology.prefix} has no IPv6: build(..., ipv6=True)")
        return topology.vip6
    return topology.vip


def udp_probe(
    topology: LabTopology, port: int, sources: Iterable[str] | None = None, window_s: float = 0.5
) -> dict[str, list[str]]:
    """source -> host names that answered one datagram sent from it to the VIP (all replies kept).

    ``sources`` defaults to all IPv4 sources; pass ``topology.client_sources6`` to probe the IPv6 VIP.
    """
    srcs = _source_list(topology, sources)
    args = ["udp", "--vip", _vip_for(topology, srcs), "--port", str(port), "--window", str(window_s)]
    result: dict[str, list[str]] = _run_client(topology, [*args, "--sources", ",".join(srcs)], window_s + 30)
    return result


def tcp_probe(
    topology: LabTopology, port: int, sources: Iterable[str] | None = None, timeout_s: float = 1.0
) -> dict[str, str | None]:
    """source -> host name greeting a TCP connection from it to the VIP (None: no answer in time)."""
    srcs = _source_list(topology, sources)
    args = ["tcp", "--vip", _vip_for(topology, srcs), "--port", str(port), "--timeout", str(timeout_s)]
    result: dict[str, str | None] = _run_client(topology, [*args, "--sources", ",".join(srcs)], timeout_s + 30)
    return result


def _read_line(proc: subprocess.Popen[str], timeout_s: float, what: str) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(timeout_s)
    sel.close()
    line = proc.stdout.readline() if ready else ""
    if not line:
        _stop(proc)
        err = proc.stderr.read() if proc.stderr else ""
        raise LabError(f"{what} did not start within {timeout_s} s: {err.strip()[-400:]}")
    return line


def _stop(proc: subprocess.Popen[str], grace_s: float = 3.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace_s)


class Responders:
    """Responder processes in host namespaces (context manager; stops them by PID on exit)."""

    def __init__(self, topology: LabTopology, port: int = 7000, hosts: Iterable[str] | None = None) -> None:
        self.topology, self.port = topology, port
        self.names = [h.name for h in topology.hosts] if hosts is None else list(hosts)
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, timeout_s: float = 15.0) -> Responders:
        try:
            for name in self.names:
                host = self.topology.host(name)
                argv = traffic_argv("responder", "--name", name, "--port", str(self.port))
                self.procs[name] = popen_in(
                    host.namespace, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True, env=traffic_env(),
                )
            for name, proc in self.procs.items():
                _read_line(proc, timeout_s, f"responder {name}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in self.procs.values():
            _stop(proc)
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()
        self.procs.clear()

    def __enter__(self) -> Responders:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class StreamReport:
    """How one long-lived TCP connection fared."""

    host: str | None
    sent: int
    received: int
    broken: bool
    error: str | None
    max_rtt_ms: float


class TcpStreams:
    """Long-lived TCP connections from client sources to the VIP, pinging a byte every few ms.

    ``start()`` returns once every connection has its greeting (``hosts``: source -> host);
    ``stop()`` ends them and returns a :class:`StreamReport` per source.
    """

    def __init__(
        self,
        topology: LabTopology,
        port: int,
        sources: Iterable[str],
        interval_s: float = 0.005,
        stall_s: float = 1.0,
    ) -> None:
        self.topology, self.port, self.sources = topology, port, _source_list(topology, sources)
        self.interval_s, self.stall_s = interval_s, stall_s
        self.proc: subprocess.Popen[str] | None = None
        self.hosts: dict[str, str | None] = {}

    def start(self, timeout_s: float = 30.0) -> TcpStreams:
        args = traffic_argv(
            "stream", "--vip", _vip_for(self.topology, self.sources), "--port", str(self.port),
            "--interval", str(self.interval_s), "--stall", str(self.stall_s), "--sources", ",".join(self.sources),
        )
        self.proc = popen_in(
            self.topology.client_ns, args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=traffic_env(),
        )
        line = _read_line(self.proc, timeout_s, "stream client")
        self.hosts = json.loads(line)["connected"]
        return self

    def stop(self, timeout_s: float = 10.0) -> dict[str, StreamReport]:
        if self.proc is None:
            raise LabError("TcpStreams.stop() called before start()")
        proc, self.proc = self.proc, None
        try:
            out, err = proc.communicate(timeout=timeout_s)  # closes stdin: the client's stop signal
        except subprocess.TimeoutExpired as exc:
            _stop(proc)
            raise LabError(f"stream client did not stop within {timeout_s} s") from exc
        if proc.returncode != 0 or not out.strip():
            raise LabError(f"stream client failed (exit {proc.returncode}): {err.strip()[-400:]}")
        return {src: StreamReport(**rep) for src, rep in json.loads(out.strip().splitlines()[-1]).items()}

    def __enter__(self) -> TcpStreams:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clusterlab.traffic", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    resp = sub.add_parser("responder", help="answer UDP/TCP with a host name")
    resp.add_argument("--name", required=True)
    resp.add_argument("--port", type=int, required=True)
    resp.add_argument("--bind", default="0.0.0.0")
    for cmd in ("udp", "tcp", "stream"):
        cli = sub.add_parser(cmd, help=f"{cmd} client from many sources")
        cli.add_argument("--vip", required=True)
        cli.add_argument("--port", type=int, required=True)
        cli.add_argument("--sources", required=True, help="comma-separated source addresses")
        cli.add_argument("--window", type=float, default=0.5, help="udp: seconds to collect replies")
        cli.add_argument("--timeout", type=float, default=1.0, help="tcp: seconds to wait for greetings")
        cli.add_argument("--interval", type=float, default=0.005, help="stream: seconds between pings")
        cli.add_argument("--stall", type=float, default=1.0, help="stream: echo delay that counts as broken")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "responder":
            run_responder(args.name, args.port, args.bind)
            return 0
        sources = [s for s in args.sources.split(",") if s]
        result: Any
        if args.cmd == "udp":
            result = run_udp_client(args.vip, args.port, sources, args.window)
        elif args.cmd == "tcp":
            result = run_tcp_client(args.vip, args.port, sources, args.timeout)
        else:
            result = run_stream_client(args.vip, args.port, sources, args.interval, args.stall, sys.stdin)
    except OSError as exc:
        print(f"clusterlab.traffic {args.cmd}: {exc}; check the namespace has these addresses", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
