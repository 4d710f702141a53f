"""A tiny UDP protocol between hooks: "do you still reach ZooKeeper?".

Used only while ZooKeeper is silent, to tell isolation from an outage (see node_hook.fencing).
Each hook answers on its management address; datagrams carry the cluster name and a nonce, and
answers for another cluster or nonce are ignored. With a shared secret configured, both directions
carry an HMAC so a stranger cannot make a hook keep buckets it should release.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping

from node_hook.fencing import PeerAnswer

log = logging.getLogger(__name__)
MAX_DATAGRAM = 1024


def _sign(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest() if secret else ""


def _pack(secret: bytes, message: dict[str, object]) -> bytes:
    body = json.dumps(message, sort_keys=True, separators=(",", ":")).encode()
    return json.dumps({"m": body.decode(), "s": _sign(secret, body)}).encode()


def _unpack(secret: bytes, data: bytes) -> dict[str, object] | None:
    try:
        outer = json.loads(data)
        body = outer["m"].encode()
        if secret and not hmac.compare_digest(outer.get("s", ""), _sign(secret, body)):
            return None
        message = json.loads(body)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None  # garbage or hostile (e.g. deeply nested JSON): not an answer
    return message if isinstance(message, dict) else None


class PeerResponder:
    """Answers peers' questions from a background thread until stopped."""

    def __init__(
        self,
        cluster: str,
        host_id: str,
        bind: tuple[str, int],
        connected: Callable[[], bool],
        secret: bytes = b"",
        silent_for: Callable[[], float] | None = None,
        connected_for: Callable[[], float] | None = None,
    ) -> None:
        self.cluster = cluster
        self.host_id = host_id
        self.connected = connected
        #: seconds since this hook last heard from ZooKeeper; lets askers tell "reaches it now" from
        #: "not yet past its threshold" (see node_hook.fencing)
        self.silent_for = silent_for
        #: seconds this hook has reached ZooKeeper without a gap (see node_hook.fencing)
        self.connected_for = connected_for
        self.secret = secret
        self.sock = socket.socket(socket.AF_INET6 if ":" in bind[0] else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(bind)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-responder", daemon=True)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.2)
            if not ready:
                continue
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM)
            except OSError:
                continue
            question = _unpack(self.secret, data)
            if not question or question.get("q") != "zk?" or question.get("cluster") != self.cluster:
                continue
            answer = {
                "a": "zk",
                "cluster": self.cluster,
                "host": self.host_id,
                "nonce": question.get("nonce"),
                "connected": bool(self.connected()),
            }
            if self.silent_for is not None:
                answer["silent_s"] = round(self.silent_for(), 3)
            if self.connected_for is not None:
                answer["connected_for_s"] = round(self.connected_for(), 3)
            with contextlib.suppress(OSError):
                self.sock.sendto(_pack(self.secret, answer), addr)


def _seconds(value: object) -> float | None:
    """A non-negative finite number of seconds from a peer's answer, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return seconds if 0.0 <= seconds < 1e9 else None


def ask_peers(
    cluster: str,
    host_id: str,
    peers: Mapping[str, tuple[str, int]],
    timeout_s: float,
    secret: bytes = b"",
    attempts: int = 2,
) -> dict[str, PeerAnswer]:
    """Ask every peer once (re-sent ``attempts`` times within ``timeout_s``) and collect answers."""
    answers: dict[str, PeerAnswer] = {}
    if not peers:
        return answers
    nonce = os.urandom(8).hex()
    question = _pack(secret, {"q": "zk?", "cluster": cluster, "from": host_id, "nonce": nonce})
    socks = {
        family: socket.socket(family, socket.SOCK_DGRAM)
        for family in {socket.AF_INET6 if ":" in a[0] else socket.AF_INET for a in peers.values()}
    }
    try:
        deadline = time.monotonic() + timeout_s
        interval = timeout_s / max(1, attempts)
        next_send = 0.0
        while len(answers) < len(peers):
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_send:
                for peer, addr in peers.items():
                    if peer not in answers:
                        sock = socks[socket.AF_INET6 if ":" in addr[0] else socket.AF_INET]
                        # An unreachable network raises: the peer then simply counts as silent.
                        with contextlib.suppress(OSError):
                            sock.sendto(question, addr)
                next_send = now + interval
            ready, _, _ = select.select(list(socks.values()), [], [], max(0.0, min(deadline, next_send) - now))
            for sock in ready:
                try:
                    data, _ = sock.recvfrom(MAX_DATAGRAM)
                except OSError:
                    continue
                reply = _unpack(secret, data)
                if not reply or reply.get("nonce") != nonce or reply.get("cluster") != cluster:
                    continue
                who = reply.get("host")
                if isinstance(who, str) and who in peers:
                    answers[who] = PeerAnswer(
                        who, bool(reply.get("connected")), _seconds(reply.get("silent_s")),
                        _seconds(reply.get("connected_for_s")),
                    )
    finally:
        for sock in socks.values():
            sock.close()
    return answers
