"""A cuttable TCP relay between one node hook and one ZooKeeper server, for isolation tests.

Why: isolating one hook from ZooKeeper while its peers (and the controllers) still reach it needs
no network namespace if every hook talks to ZooKeeper through its own relay. ``cut()`` behaves
like a network partition that drops packets: the relay closes its upstream connections (the server
keeps the session until it expires, as with a real partition) and *holds* the hook's side open
and silent, accepting new connections without forwarding them; the hook notices only through its
own timeouts. ``restore()`` resets the held connections so the hook reconnects at once.
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class TcpRelay:
    """Forwards 127.0.0.1:<port> to ``upstream`` from one thread until :meth:`close`."""

    def __init__(self, upstream: tuple[str, int], listen_host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._peer: dict[socket.socket, socket.socket] = {}
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._want_cut = False
        self._cut = False
        self._stop = False
        self.connections = 0
        self._thread = threading.Thread(target=self._run, name=f"relay-{self.port}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Partition: stop forwarding; the hook's connections stay open but silent."""
        self._command(cut=True)

    def restore(self) -> None:
        """Heal the partition: reset held connections, forward new ones."""
        self._command(cut=False)

    def close(self) -> None:
        with self._lock:
            self._stop = True
        self._poke()
        self._thread.join(timeout=5)

    def _command(self, cut: bool) -> None:
        with self._lock:
            self._want_cut = cut
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # ------------------------------------------------------------------ relay thread

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    stop, want_cut = self._stop, self._want_cut
                if stop:
                    break
                if want_cut != self._cut:
                    self._apply_cut(want_cut)
                for key, _ in self._sel.select(0.2):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    elif sock is self._listener:
                        self._accept()
                    elif sock in self._peer:
                        self._pump(sock)
        finally:
            self._shutdown()

    def _apply_cut(self, cut: bool) -> None:
        self._cut = cut
        if cut:
            clients = {c for c in self._peer if c.getsockname()[1] == self.port}
            for sock in list(self._peer):
                self._sel.unregister(sock)
                if sock in clients:
                    self._held.append(sock)  # the hook's side: open and silent
                else:
                    sock.close()  # upstream: the server sees the client gone, keeps its session
            self._peer.clear()
        else:
            for sock in self._held:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()  # RST: the hook reconnects at once
            self._held.clear()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self._cut:
            self._held.append(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=2)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(True)
            sock.settimeout(2)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sel.register(sock, selectors.EVENT_READ, None)
        self._peer[client] = upstream
        self._peer[upstream] = client
        self.connections += 1

    def _pump(self, sock: socket.socket) -> None:
        other = self._peer[sock]
        try:
            data = sock.recv(65536)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        for s in (sock, other):
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(s)
            self._peer.pop(s, None)
            s.close()

    def _shutdown(self) -> None:
        for sock in [*self._peer, *self._held, self._listener, self._wake_r, self._wake_w]:
            with contextlib.suppress(OSError):
                sock.close()
        self._peer.clear()
        self._held.clear()
        self._sel.close()
