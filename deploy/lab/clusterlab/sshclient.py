"""SSH clients for the lab, run inside the client namespace: who answers each source, and when.

Every lab sshd appends ``cif-node-<host>`` to its version banner (``VersionAddendum``), so a plain
TCP connect plus banner read tells which host answered a source, in milliseconds and without a
login. Modes (JSON on stdout):

* ``banner``: one attempt per source -> {source: host | null}.
* ``watch``: attempts from every source every ``--interval`` until stdin closes or ``--duration``
  passes; prints per source the list of transitions [time, host | "!reason"] (wall clock).
* ``login``: a real paramiko login per source as the lab user, running ``echo $CIF_NODE``.
* ``sessions``: one interactive SSH session per source exchanging a line every ``--interval``;
  prints ``{"ready": {source: host}}`` once all are up, then on stdin close a report per source.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import selectors
import socket
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

BANNER_TAG = "cif-node-"


def node_from_banner(line: bytes) -> str | None:
    text = line.decode("ascii", "replace").strip()
    if not text.startswith("SSH-"):
        return None
    for word in text.split():
        if word.startswith(BANNER_TAG):
            return word[len(BANNER_TAG) :]
    return "?"


@dataclass
class _Attempt:
    source: str
    sock: socket.socket
    started: float
    stage: str = "connect"
    buf: bytes = b""


@dataclass
class _Track:
    """Every attempt of one source as (start time, outcome). Attempts finish out of order (a
    timed-out one finishes a second after it started), so transitions are derived after sorting."""

    results: list[tuple[float, str]] = field(default_factory=list)

    def record(self, at: float, state: str) -> None:
        self.results.append((round(at, 4), state))

    @property
    def attempts(self) -> int:
        return len(self.results)

    @property
    def transitions(self) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        for at, state in sorted(self.results):
            if not out or out[-1][1] != state:
                out.append((at, state))
        return out

    @property
    def outcomes(self) -> dict[str, int]:
        """How many attempts ended in each state (host name or "!reason")."""
        counts: dict[str, int] = {}
        for _, state in self.results:
            counts[state] = counts.get(state, 0) + 1
        return counts

    @property
    def last(self) -> str | None:
        return max(self.results)[1] if self.results else None


def _open(source: str, vip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.bind((source, 0))
    err = sock.connect_ex((vip, port))
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(err, errno.errorcode.get(err, str(err)))
    return sock


#: Attempts one source may have in flight at once (a hung sshd holds each until its timeout).
MAX_IN_FLIGHT = 16


def watch(
    vip: str, port: int, sources: Sequence[str], interval: float, timeout: float, duration: float,
    stop: threading.Event | None = None, once: bool = False,
) -> dict[str, _Track]:
    """Banner attempts from each source, started every ``interval``, each bounded by ``timeout``.

    A new attempt starts on schedule even while earlier ones still wait (up to MAX_IN_FLIGHT per
    source): otherwise an attempt stuck on a hung sshd would hide, for its whole timeout, the
    moment the bucket's new owner starts answering.
    """
    sel = selectors.DefaultSelector()
    tracks = {s: _Track() for s in sources}
    due = {s: time.time() + i * (interval / max(1, len(sources))) for i, s in enumerate(sources)}
    live: dict[int, _Attempt] = {}
    in_flight = dict.fromkeys(sources, 0)
    end = time.time() + duration
    done_once: set[str] = set()

    def finish(att: _Attempt, state: str) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(att.sock)
        live.pop(id(att), None)
        in_flight[att.source] -= 1
        att.sock.close()
        tracks[att.source].record(att.started, state)
        done_once.add(att.source)

    while True:
        now = time.time()
        if (stop is not None and stop.is_set()) or now >= end or (once and len(done_once) == len(sources)):
            break
        for src in sources:
            if once and (src in done_once or in_flight[src]):
                continue
            if due[src] <= now and in_flight[src] < MAX_IN_FLIGHT:
                due[src] = now + interval
                try:
                    sock = _open(src, vip, port)
                except OSError as exc:
                    tracks[src].record(now, f"!{exc.strerror or exc}")
                    continue
                att = _Attempt(src, sock, now)
                live[id(att)] = att
                in_flight[src] += 1
                sel.register(sock, selectors.EVENT_WRITE, att)
        for att in list(live.values()):
            if now - att.started > timeout:
                finish(att, f"!{att.stage} timeout")
        wait = min([*due.values(), now + 0.01]) - time.time()
        for key, _ in sel.select(timeout=max(0.0, min(wait, 0.01))):
            att = key.data
            if id(att) not in live:
                continue
            if att.stage == "connect":
                err = att.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    finish(att, f"!{errno.errorcode.get(err, err)}")
                    continue
                att.stage = "banner"
                sel.modify(att.sock, selectors.EVENT_READ, att)
                continue
            try:
                chunk = att.sock.recv(256)
            except OSError as exc:
                finish(att, f"!{exc.strerror}")
                continue
            if not chunk:
                finish(att, "!closed before banner")
                continue
            att.buf += chunk
            if b"\n" in att.buf:
                node = node_from_banner(att.buf.split(b"\n", 1)[0])
                finish(att, node if node else "!not ssh")
    for att in list(live.values()):  # attempts still in flight at the end tell nothing: drop them
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(att.sock)
        att.sock.close()
    return tracks


# --------------------------------------------------------------------------- logins (paramiko)


def _bound_socket(source: str, vip: str, port: int, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect((vip, port))
    return sock


def _client(source: str, vip: str, port: int, user: str, key_file: str, timeout: float):  # type: ignore[no-untyped-def]
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # lab hosts share the VIP: key varies by bucket
    client.connect(
        vip, port, username=user, key_filename=key_file, sock=_bound_socket(source, vip, port, timeout),
        timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, allow_agent=False, look_for_keys=False,
    )
    return client


def login(source: str, vip: str, port: int, user: str, key_file: str, timeout: float) -> str:
    try:
        client = _client(source, vip, port, user, key_file, timeout)
    except Exception as exc:
        return f"!{type(exc).__name__}: {exc}"[:200]
    try:
        _, stdout, _ = client.exec_command("echo $CIF_NODE", timeout=timeout)
        return stdout.read().decode().strip() or "!empty"
    except Exception as exc:
        return f"!{type(exc).__name__}: {exc}"[:200]
    finally:
        client.close()


def sessions(args: argparse.Namespace, sources: Sequence[str]) -> dict[str, dict[str, object]]:
    """Interactive sessions that echo a line every interval until stdin closes."""
    results: dict[str, dict[str, object]] = {}
    chans = {}
    clients = {}

    def open_one(src: str) -> None:
        try:
            client = _client(src, args.vip, args.port, args.user, args.key, args.timeout)
            chan = client.get_transport().open_session()  # type: ignore[union-attr]
            chan.settimeout(args.stall)
            chan.exec_command("echo $CIF_NODE; exec cat")
            node = b""
            while not node.endswith(b"\n"):
                node += chan.recv(1)
            clients[src], chans[src] = client, chan
            results[src] = {"host": node.decode().strip(), "sent": 0, "broken": False, "error": None}
        except Exception as exc:
            results[src] = {"host": None, "sent": 0, "broken": True, "error": f"{type(exc).__name__}: {exc}"[:200]}

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(open_one, sources))
    print(json.dumps({"ready": {s: r["host"] for s, r in results.items()}}), flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.is_set():
        for src, chan in list(chans.items()):
            rep = results[src]
            try:
                chan.sendall(b"ping\n")
                got = b""
                while not got.endswith(b"\n"):
                    piece = chan.recv(64)
                    if not piece:
                        raise OSError("session closed")
                    got += piece
                rep["sent"] = int(rep["sent"]) + 1  # type: ignore[call-overload]
            except Exception as exc:
                rep["broken"], rep["error"] = True, f"{type(exc).__name__}: {exc}"[:200]
                chans.pop(src)
        stop.wait(args.interval)
    for client in clients.values():
        client.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clusterlab.sshclient")
    parser.add_argument("mode", choices=["banner", "watch", "login", "sessions"])
    parser.add_argument("--vip", required=True)
    parser.add_argument("--port", type=int, default=22)
    parser.add_argument("--sources", required=True, help="comma-separated source addresses")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--stall", type=float, default=5.0)
    parser.add_argument("--user", default="cif-user")
    parser.add_argument("--key", default="")
    parser.add_argument("--raw", action="store_true", help="watch: also print every attempt [start, outcome]")
    args = parser.parse_args(argv)
    sources = [s for s in args.sources.split(",") if s]
    if args.mode == "banner":
        tracks = watch(args.vip, args.port, sources, args.interval, args.timeout, args.timeout + 5, once=True)
        print(json.dumps({s: (t.last if t.last and not t.last.startswith("!") else None) for s, t in tracks.items()}))
    elif args.mode == "watch":
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        print(json.dumps({"started": time.time()}), flush=True)
        tracks = watch(args.vip, args.port, sources, args.interval, args.timeout, args.duration, stop)
        print(json.dumps({s: {"transitions": t.transitions, "attempts": t.attempts, "outcomes": t.outcomes,
                              **({"results": sorted(t.results)} if args.raw else {})}
                          for s, t in tracks.items()}))
    elif args.mode == "login":
        with ThreadPoolExecutor(max_workers=4) as pool:
            nodes = list(pool.map(lambda s: login(s, args.vip, args.port, args.user, args.key, args.timeout), sources))
        print(json.dumps(dict(zip(sources, nodes, strict=True))))
    else:
        print(json.dumps(sessions(args, sources)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
