"""Fixtures for integration tests: real servers started on 127.0.0.1 (see deploy/lab/clusterlab).

Sections: ZooKeeper (below); sshd fixtures go in their own section.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from clusterlab.zookeeper import ZooKeeperCluster
from kazoo.client import KazooClient
from sshd_fixtures import *  # noqa: F403 - sshd fixtures live in their own module

# ---------------------------------------------------------------------------------------- ZooKeeper

#: Generous: a JVM on a busy 2-core machine may take many seconds; readiness itself is precise.
ZK_START_TIMEOUT_S = 90.0
ZK_TICK_MS = 200


@contextlib.contextmanager
def running_zookeeper(size: int = 1, **options: Any) -> Iterator[ZooKeeperCluster]:
    """Start a lab ZooKeeper (tick 200 ms unless given) and stop it again, whatever happens."""
    options.setdefault("tick_ms", ZK_TICK_MS)
    cluster = ZooKeeperCluster(size=size, **options)
    cluster.start(timeout_s=ZK_START_TIMEOUT_S)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def zk_server() -> Iterator[ZooKeeperCluster]:
    """One standalone server (tick 200 ms) shared by the whole session; use zk_client's chroot."""
    with running_zookeeper() as cluster:
        yield cluster


@pytest.fixture
def zk_ensemble() -> Iterator[ZooKeeperCluster]:
    """A fresh 3-server ensemble per test, so fault tests (kill, pause) cannot leak into others."""
    with running_zookeeper(size=3) as cluster:
        yield cluster


@pytest.fixture
def own_zk() -> Iterator[ZooKeeperCluster]:
    """A private standalone server, for tests that stop ZooKeeper itself."""
    with running_zookeeper() as cluster:
        yield cluster


def unique_chroot(test_name: str) -> str:
    """A znode path no other test uses: /cipfo-tests/<test name>-<random>."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)[:80]
    return f"/cipfo-tests/{safe}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def zk_client(zk_server: ZooKeeperCluster, request: pytest.FixtureRequest) -> Iterator[KazooClient]:
    """A connected kazoo client on zk_server, chrooted to a path unique to this test.

    Reconnects fast (connection_retry max_tries=-1, delay 0.02 s, backoff 1). The chroot is left
    behind on purpose: it is unique, and the server's data dir is discarded after the session.
    ``client.chroot`` gives the path, e.g. for a subprocess that must see the same znodes.
    """
    client = zk_server.connect(chroot=unique_chroot(request.node.name))
    try:
        yield client
    finally:
        client.stop()
        client.close()
