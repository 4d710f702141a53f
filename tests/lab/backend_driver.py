"""A backend driven from outside its network namespace: one process per lab host.

Why a process: python-iptables and libnftables act on the calling process's network namespace, so
the backend must run *inside* each host namespace (``ip netns exec``). The test talks to it with
JSON lines: it sends ``{"op": "install", "initial": [1]}`` and reads ``{"ok": true, "held": [1],
"ms": 0.4}``. Stopping the process and starting a new one that calls install() again is exactly a
hook restart. The same file is the in-namespace program (``main``) and the test-side API
(:class:`Driver`); it also runs inside the qemu guest.

    python tests/lab/backend_driver.py '<spec json>' HOST_ID
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from controller.core.errors import BackendError  # noqa: E402
from controller.core.model import ClusterSpec, HashSettings, HostSpec  # noqa: E402


def make_spec(
    backend: str,
    *,
    name: str = "lab",
    vip: str = "198.18.0.100",
    interface: str = "eth0",
    buckets: int = 4,
    hosts: int = 4,
    cluster_mac: str = "01:00:5e:00:01:64",
    seed: int = 0xDEADBEEF,
    hash_init: int = 0,
    mode: str = "sourceip",
    protocol: str = "all",
    ports: tuple[int, ...] = (),
) -> dict[str, Any]:
    """A JSON-able cluster description (what the driver's command line carries)."""
    return {"backend": backend, "name": name, "vip": vip, "interface": interface, "buckets": buckets,
            "hosts": hosts, "cluster_mac": cluster_mac, "seed": seed, "hash_init": hash_init, "mode": mode,
            "protocol": protocol, "ports": list(ports)}


def spec_from(d: dict[str, Any]) -> ClusterSpec:
    hosts = tuple(HostSpec(f"h{k}", (k,) if k <= d["buckets"] else (), f"198.18.0.{10 + k}")
                  for k in range(1, d["hosts"] + 1))
    return ClusterSpec(
        name=d["name"], vip=ipaddress.ip_address(d["vip"]), interface=d["interface"], backend=d["backend"],
        buckets=d["buckets"], cluster_mac=d["cluster_mac"], hosts=hosts,
        hash=HashSettings(mode=d["mode"], hash_init=d["hash_init"], seed=d["seed"]),
        ports=tuple(d["ports"]), protocol=d["protocol"],
    )


# --------------------------------------------------------------------------- in-namespace program


def _timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1000


class KeepAlive:
    """What the hook's dead-man thread does, for the driver: arm, then refresh every E/6 until halted."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.refreshes = self.failures = 0

    def start(self) -> None:
        self.backend.arm_alive()
        self.stop.clear()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.backend.deadman_s / 6):
            if self.backend.refresh_alive():
                self.refreshes += 1
            else:
                self.failures += 1

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=30)


def handle(backend: Any, cmd: dict[str, Any], keepalive: KeepAlive | None = None) -> dict[str, Any]:
    op = cmd["op"]
    if op == "arm" and keepalive is not None:  # arm the dead-man timer and keep refreshing it
        keepalive.start()
        return {"held": sorted(backend.held())}
    if op == "halt" and keepalive is not None:  # stop refreshing, as a dead hook would
        keepalive.halt()
        return {"refreshes": keepalive.refreshes, "failures": keepalive.failures}
    if op == "prereq":
        return {"problems": backend.check_prerequisites()}
    if op == "install":
        ms = _timed(backend.install, frozenset(cmd.get("initial", [])))
        return {"held": sorted(backend.held()), "ms": ms}
    if op in ("grant", "revoke"):
        ms = _timed(getattr(backend, op), cmd["bucket"])
        return {"held": sorted(backend.held()), "ms": ms}
    if op == "apply":
        start = time.perf_counter()
        held = backend.apply(frozenset(cmd["wanted"]))
        return {"held": sorted(held), "ms": (time.perf_counter() - start) * 1000}
    if op == "apply_drain":
        start = time.perf_counter()
        held, draining = backend.apply_drain(frozenset(cmd["wanted"]), frozenset(cmd.get("draining", [])),
                                             frozenset(cmd.get("quiet", [])))
        return {"held": sorted(held), "draining": sorted(draining), "ms": (time.perf_counter() - start) * 1000}
    if op == "sessions":
        from node_hook import conntrack

        counts = conntrack.tracked_sessions(backend.spec, frozenset(cmd["buckets"]))
        return {"sessions": {str(b): n for b, n in counts.items()}, "tcp_loose": conntrack.tcp_loose()}
    if op == "held":
        return {"held": sorted(backend.held())}
    if op == "describe":
        return {"lines": backend.describe_changes(frozenset(cmd["wanted"]))}
    if op == "remove":
        return {"ms": _timed(backend.remove)}
    if op == "bench":
        # alternate grant/revoke of one bucket, then alternate apply() between two sets
        bucket, n = cmd["bucket"], cmd["n"]
        ops = [_timed(backend.grant if i % 2 == 0 else backend.revoke, bucket) for i in range(n)]
        a, b = frozenset(cmd["set_a"]), frozenset(cmd["set_b"])
        applies = [_timed(backend.apply, a if i % 2 == 0 else b) for i in range(n)]
        return {"grant_revoke_ms": ops, "apply_ms": applies, "held": sorted(backend.held())}
    raise ValueError(f"unknown op {op!r}")


def main(argv: list[str]) -> int:
    from node_hook.backends import create_backend

    raw = json.loads(argv[1])
    spec = spec_from(raw)
    backend = create_backend(spec, argv[2], deadman_s=raw.get("deadman_s"))
    keepalive = KeepAlive(backend)
    print(json.dumps({"ok": True, "ready": True, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            reply = {"ok": True, **handle(backend, cmd, keepalive)}
        except BackendError as exc:
            reply = {"ok": False, "error": str(exc)}
        print(json.dumps(reply), flush=True)
    return 0


# --------------------------------------------------------------------------- test-side API


class DriverError(RuntimeError):
    """The driver process failed or a command returned ok: false."""


class Driver:
    """The driver process of one host namespace (stop() ends it by its own PID)."""

    def __init__(self, namespace: str | None, spec: dict[str, Any], host_id: str,
                 python: str = sys.executable, call_timeout_s: float = 60.0) -> None:
        self.namespace, self.spec, self.host_id, self.python = namespace, spec, host_id, python
        self.call_timeout_s = call_timeout_s
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 60.0) -> Driver:
        argv = [self.python, str(Path(__file__).resolve()), json.dumps(self.spec), self.host_id]
        if self.namespace:
            argv = ["ip", "netns", "exec", self.namespace, *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self._read(timeout_s)
        return self

    def _read(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout_s)
        sel.close()
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            err = ""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                err = self.proc.stderr.read()
            self.stop()
            raise DriverError(f"driver {self.host_id} gave no answer within {timeout_s} s: {err.strip()[-800:]}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, op: str, check: bool = True, timeout_s: float | None = None, **args: Any) -> dict[str, Any]:
        if self.proc is None or self.proc.stdin is None:
            raise DriverError(f"driver {self.host_id} is not running")
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        reply = self._read(self.call_timeout_s if timeout_s is None else timeout_s)
        if check and not reply.get("ok"):
            raise DriverError(f"{self.host_id} {op} {args}: {reply.get('error')}")
        return reply

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
