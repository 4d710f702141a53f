"""ZooKeeper access for the operator commands: connect from a config, read one cluster's snapshot.

Why the CLI reads ZooKeeper itself rather than asking a controller: ``status`` must work exactly when
things are broken, including while no controller runs. Reads use a read-only-capable session, so a
server that lost its quorum (and runs with ``readonlymode.enabled``) still answers.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from controller.core import zk_layout as layout
from controller.core.errors import SchemaError, UsageError
from controller.core.model import ClusterSpec, ClusterView, Config
from controller.core.status_view import StatusInput
from controller.ctl.configfile import load_config
from controller.zk.client import make_client, mapped_errors, start_client
from controller.zk.store import ClusterStore, StoreSnapshot

DEFAULT_CONFIG = "/etc/clusterip-failover/config.yaml"
CONFIG_ENV = "CLUSTERIP_CONFIG"
F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    """``-c/--config FILE`` (default $CLUSTERIP_CONFIG, else /etc/clusterip-failover/config.yaml)."""
    option = click.option(
        "-c", "--config", "config_file", metavar="FILE", envvar=CONFIG_ENV, default=DEFAULT_CONFIG,
        show_default=True, help=f"Configuration file (or set ${CONFIG_ENV}).",
    )
    return option(func)


def pick_clusters(config: Config, name: str | None) -> tuple[ClusterSpec, ...]:
    """All clusters of the config, or the one named; an unknown name is a usage error."""
    if name is None:
        return config.clusters
    try:
        return (config.cluster(name),)
    except KeyError as err:
        raise UsageError(str(err.args[0])) from None


def one_cluster(config: Config, name: str | None) -> ClusterSpec:
    """The cluster a steering command acts on: the named one, or the only one."""
    try:
        return config.cluster(name)
    except KeyError as err:
        raise UsageError(str(err.args[0])) from None


def load(config_file: str) -> Config:
    return load_config(config_file)


@contextlib.contextmanager
def connected(config: Config, *, read_only: bool) -> Iterator[KazooClient]:
    """A started client for the duration of one command (errors are one-line CoordinationErrors)."""
    client = make_client(config.zookeeper, read_only=read_only)
    start_client(client, config.zookeeper)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.stop()
            client.close()


def read_controllers(client: KazooClient) -> tuple[str | None, tuple[str, ...]]:
    """(leader id or None, every running replica id), from the election and replica znodes."""
    with mapped_errors("reading the controller election"):
        try:
            nodes = sorted(client.get_children(layout.ELECTION), key=lambda n: n[-10:])
        except NoNodeError:
            nodes = []
        leader: str | None = None
        for node in nodes:  # the lowest sequence that still exists leads
            try:
                data, _ = client.get(f"{layout.ELECTION}/{node}")
            except NoNodeError:
                continue
            leader = data.decode("utf-8", "replace")[:128]
            break
        try:
            replicas = tuple(sorted(client.get_children(layout.REPLICAS)))
        except NoNodeError:
            replicas = ()
    return leader, replicas


def read_cluster(client: KazooClient, spec: ClusterSpec) -> tuple[StoreSnapshot, ClusterView, tuple[str, ...]]:
    """One snapshot of a cluster as the planner would see it (health as the leader last published it)."""
    store = ClusterStore(client, spec)
    snap = store.snapshot()
    problems = list(snap.problems)
    try:
        health = store.read_health()
    except SchemaError as exc:  # show it, do not hide the rest of the status
        problems.append(f"health znode unreadable: {exc}")
        health = {}
    if len(snap.map.buckets) != spec.buckets:
        problems.append(f"the map has {len(snap.map.buckets)} buckets but the config {spec.buckets}: "
                        "is this the config the controller runs with?")
    view = ClusterView(spec, snap.map, snap.map_version, health, snap.members, snap.statuses, snap.intents)
    return snap, view, tuple(problems)


def status_input(client: KazooClient, spec: ClusterSpec, controllers: tuple[str | None, tuple[str, ...]]
                 ) -> StatusInput:
    _, view, problems = read_cluster(client, spec)
    leader, replicas = controllers
    return StatusInput(view=view, now=time.time(), leader=leader, controllers=replicas, problems=problems)


def utc_offset(now: float) -> int:
    """This machine's UTC offset at ``now`` in seconds (status prints local wall-clock times)."""
    return time.localtime(now).tm_gmtoff


def who() -> str:
    """Who asked, for the history: the sudo caller if any, else the login user, at this host."""
    user = os.environ.get("SUDO_USER") or os.environ.get("USER")
    if not user:
        try:
            user = getpass.getuser()
        except Exception:
            user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"
