"""sshd fixtures for integration tests: real Debian sshd instances on 127.0.0.x ports.

Imported by tests/integration/conftest.py. Every sshd, temp dir and helper process a test starts is
stopped by PID when the test ends, also when it fails.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clusterlab.ports import free_tcp_ports
from clusterlab.sshd import PROBE_USER, Sshd, generate_key

from controller.core.model import Health, HostHealth, ProbeSettings


@dataclasses.dataclass
class ProbeKeys:
    """The probe key pair and a second, unauthorised one, in a per-session directory."""

    dir: Path
    key_file: Path
    public: str
    other_public: str


@pytest.fixture(scope="session")
def probe_keys() -> Iterator[ProbeKeys]:
    tmp = Path(tempfile.mkdtemp(prefix="cif-probekeys-"))
    try:
        yield ProbeKeys(tmp, tmp / "probe_key", generate_key(tmp / "probe_key"), generate_key(tmp / "other_key"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def sshd_workdir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="cif-sshd-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SshdFactory = Callable[..., Sshd]


@pytest.fixture
def sshd_factory(sshd_workdir: Path, probe_keys: ProbeKeys) -> Iterator[SshdFactory]:
    """``make(name, start=True, **Sshd kwargs)``: an sshd on a random 127.0.0.x and a free port."""
    started: list[Sshd] = []

    def make(name: str, start: bool = True, **kw: Any) -> Sshd:
        address = kw.pop("address", f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}")
        port = kw.pop("port", None) or free_tcp_ports(1, address)[0]
        kw.setdefault("probe_keys", [probe_keys.public])
        kw.setdefault("user_keys", [probe_keys.public])
        sshd = Sshd(sshd_workdir, name, address, port, **kw)
        started.append(sshd)
        return sshd.start() if start else sshd

    try:
        yield make
    finally:
        for sshd in started:
            sshd.kill()


@pytest.fixture
def probe_settings(sshd_workdir: Path, probe_keys: ProbeKeys) -> ProbeSettings:
    """Default timings, the lab probe user and key, a known_hosts file in the test's directory."""
    return ProbeSettings(user=PROBE_USER, key_file=str(probe_keys.key_file),
                         known_hosts=str(sshd_workdir / "known_hosts"))


class HealthRecorder:
    """An ``on_change`` callback that records transitions and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[tuple[float, HostHealth]] = []
        self._cv = threading.Condition()

    def __call__(self, health: HostHealth) -> None:
        with self._cv:
            self.events.append((time.monotonic(), health))
            self._cv.notify_all()

    def wait_for(self, host_id: str, state: Health, timeout_s: float, after: float = 0.0) -> HostHealth:
        """The first transition of ``host_id`` to ``state`` recorded at/after monotonic ``after``."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while True:
                for at, h in self.events:
                    if at >= after and h.host_id == host_id and h.state is state:
                        return h
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(round(at - after, 3), h.state.value, h.reason) for at, h in self.events
                            if h.host_id == host_id]
                    raise AssertionError(f"{host_id} never became {state.value} in {timeout_s} s; saw {seen}")
                self._cv.wait(left)

    def states(self, host_id: str, after: float = 0.0) -> list[Health]:
        with self._cv:
            return [h.state for at, h in self.events if at >= after and h.host_id == host_id]


@pytest.fixture
def health_recorder() -> HealthRecorder:
    return HealthRecorder()
