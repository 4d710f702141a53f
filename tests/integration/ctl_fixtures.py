"""Realistic cluster state for clusterip-ctl tests, written into a zk_client chroot with the codecs.

Why write znodes rather than run the whole lab: each test states exactly the situation it checks
(a host down and its bucket carried, a bucket unowned, no controller...), in milliseconds. The
seed's four-host cluster (deploy/examples/seed-unix0.yaml) is the configuration, pointed at the
test's ZooKeeper chroot.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from click.testing import CliRunner, Result
from kazoo.client import KazooClient

from controller.core import schema
from controller.core import zk_layout as layout
from controller.core.config import parse_config
from controller.core.model import (
    BucketMap,
    BucketState,
    ClusterSpec,
    Health,
    HookStatus,
    HostHealth,
    Intents,
    Member,
)
from controller.ctl.cli import cli

ROOT = Path(__file__).resolve().parents[2]
SEED_CONFIG = ROOT / "deploy" / "examples" / "seed-unix0.yaml"
CLUSTER = "unix0"
HOSTS = ("unix1", "unix2", "unix3", "unix4")
#: A fixed wall clock for the state (2024-01-02 12:03:04 UTC), so verdict lines are predictable.
T0 = 1704196984.0


def write_config(tmp_path: Path, zk_hosts: str, chroot: str, **failback: object) -> Path:
    """The seed example with zookeeper pointed at the test server and chroot."""
    doc = yaml.safe_load(SEED_CONFIG.read_text())
    doc["zookeeper"] = {"hosts": zk_hosts, "chroot": chroot, "session_timeout_s": 2.0, "connect_timeout_s": 5.0}
    if failback:
        doc["clusters"][0]["failback"].update(failback)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def spec_of(path: Path) -> ClusterSpec:
    return parse_config(path.read_text(), str(path)).clusters[0]


@dataclass
class State:
    """The cluster situation a test wants; :meth:`write` puts it into ZooKeeper."""

    owners: Mapping[int, str | None]
    health: Mapping[str, Health]
    hooks: tuple[str, ...] = HOSTS
    epoch: int = 7
    leader: str | None = "ctl-a"
    intents: Intents | None = None
    releasing: Mapping[int, str] | None = None
    reasons: Mapping[str, str] | None = None
    applied: Mapping[str, int] | None = None

    def write(self, client: KazooClient) -> None:
        buckets = {}
        for b, owner in self.owners.items():
            rel = (self.releasing or {}).get(b)
            buckets[b] = BucketState(owner=owner, releasing=rel, target=None, changed_epoch=self.epoch if rel else 1,
                                     since=T0 - 100 * b)
        bucket_map = BucketMap(CLUSTER, self.epoch, buckets)
        client.ensure_path(layout.members_path(CLUSTER))
        client.ensure_path(layout.statuses_path(CLUSTER))
        client.ensure_path(layout.history_path(CLUSTER))
        client.create(layout.map_path(CLUSTER), schema.encode_map(bucket_map))
        reasons = self.reasons or {}
        health = {
            h: HostHealth(h, s, T0, reasons.get(h, "probes ok, banner latency 2.1 ms" if s is Health.UP else ""),
                          2.1 if s is Health.UP else None)
            for h, s in self.health.items()
        }
        client.create(layout.health_path(CLUSTER), schema.encode_health(health))
        for host in self.hooks:
            client.create(layout.member_path(CLUSTER, host),
                          schema.encode_member(Member(host, f"127.0.0.{HOSTS.index(host) + 11}", "0.1.0", "clusterip")),
                          ephemeral=True)
            epoch = (self.applied or {}).get(host, self.epoch)
            status = HookStatus(host, epoch, bucket_map.owned_by(host), T0)
            client.create(layout.status_path(CLUSTER, host), schema.encode_status(status))
        if self.intents is not None:
            client.create(layout.intents_path(CLUSTER), schema.encode_intents(self.intents))
        if self.leader is not None:
            client.ensure_path(layout.REPLICAS)
            client.create(f"{layout.ELECTION}/n_", self.leader.encode(), ephemeral=True, sequence=True,
                          makepath=True)
            client.create(layout.replica_path(self.leader), self.leader.encode(), ephemeral=True)


def healthy() -> State:
    return State(owners={1: "unix1", 2: "unix2", 3: "unix3", 4: "unix4"},
                 health={h: Health.UP for h in HOSTS})


def unix3_down() -> State:
    return State(owners={1: "unix1", 2: "unix2", 3: "unix1", 4: "unix4"},
                 health={**{h: Health.UP for h in HOSTS}, "unix3": Health.DOWN},
                 hooks=("unix1", "unix2", "unix4"), reasons={"unix3": "connection refused"})


def run(config: Path, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None) -> Result:
    """clusterip-ctl in-process, with CLUSTERIP_CONFIG pointing at the test config."""
    environment = {"CLUSTERIP_CONFIG": str(config), "USER": "alice", "SUDO_USER": ""}
    environment.update(env or {})
    os.environ["TZ"] = "UTC"  # status prints local times: make them predictable
    time.tzset()
    return CliRunner().invoke(cli, list(args), input=stdin, env=environment)
