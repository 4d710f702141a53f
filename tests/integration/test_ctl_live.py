"""clusterip-ctl and the metrics endpoints against a live in-process cluster.

A real ZooKeeper, one ControllerService (health set by hand) and four HookAgents with in-memory
kernels: the status verdict and exit code follow a host failure and a drain as the controller
carries them out, and the Prometheus metrics of the controller and a hook say the same.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from clusterlab.zookeeper import ZooKeeperCluster
from ctl_fixtures import HOSTS, run, spec_of, write_config
from kazoo.client import KazooClient

from controller.core.model import Config, Health, ZooKeeperSettings
from controller.health_source import ManualHealth
from controller.metrics import ControllerMetrics, MetricsServer, serve
from controller.service import ControllerService
from node_hook.agent import HookAgent
from node_hook.backends.memory import MemoryBackend
from node_hook.metrics import HookMetrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


@dataclass
class Live:
    config: Path
    health: ManualHealth
    service: ControllerService
    hooks: dict[str, HookAgent]
    controller_url: str
    hook_url: str


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample, matching the given labels (others ignored)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.51", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live(zk_server: ZooKeeperCluster, zk_client: KazooClient, tmp_path: Path) -> Iterator[Live]:
    config = write_config(tmp_path, zk_server.hosts, zk_client.chroot, policy="manual")
    doc = yaml.safe_load(config.read_text())
    doc["clusters"][0]["handoff"]["peer_port"] = free_udp_port()  # hooks talk to each other on 127.0.0.5x
    config.write_text(yaml.safe_dump(doc))
    spec = spec_of(config)
    zk = ZooKeeperSettings(hosts=zk_server.hosts, chroot=zk_client.chroot, session_timeout_s=1.0)
    parsed = Config(zookeeper=zk, clusters=(spec,))
    health = ManualHealth(HOSTS, Health.UP)
    metrics = ControllerMetrics()
    service = ControllerService(parsed, {spec.name: health}, controller_id="ctl-live", cycle_interval_s=0.2,
                                on_cycle=metrics.on_cycle)
    metrics.bind(service)
    servers: list[MetricsServer] = []
    hooks: dict[str, HookAgent] = {}
    hook_metrics = HookMetrics(spec.name, "unix1")
    try:
        for i, host in enumerate(HOSTS):
            address = f"127.0.0.{51 + i}"
            agent = HookAgent(spec, zk, host, MemoryBackend(spec.buckets), address=address, peer_bind=address,
                              on_applied=hook_metrics.on_applied if host == "unix1" else None)
            agent.start()
            hooks[host] = agent
        hook_metrics.bind(hooks["unix1"])
        hook_metrics.watch_map()
        service.start()
        metrics.watch_hooks()
        for registry, check in ((metrics, metrics), (hook_metrics, hook_metrics)):
            server = serve(registry.registry, "127.0.0.1", 0, check.live, check.ready)
            assert server is not None
            servers.append(server)
        urls = [f"http://127.0.0.1:{s.address[1]}" for s in servers]
        yield Live(config, health, service, hooks, urls[0], urls[1])
    finally:
        for server in servers:
            server.stop()
        service.stop()
        for agent in hooks.values():
            agent.stop()


def status(live: Live) -> tuple[int, dict[str, object]]:
    result = run(live.config, "status", "--json")
    return result.exit_code, json.loads(result.stdout)


def test_status_and_metrics_follow_failover_and_drain(live: Live) -> None:
    wait_for("every bucket served and applied", lambda: status(live)[0] == 0)
    code, metrics_text = get(live.controller_url + "/metrics")
    assert code == 200
    assert sample(metrics_text, "clusterip_bucket_owner", bucket="3", owner="unix3") == 1.0
    assert sample(metrics_text, "clusterip_controller_leader") == 1.0
    assert sample(metrics_text, "clusterip_zookeeper_connected") == 1.0
    assert sample(metrics_text, "clusterip_host_up", host="unix3") == 1.0
    assert sample(metrics_text, "clusterip_buckets", state="serving") == 4.0
    assert get(live.controller_url + "/healthz")[0] == 200
    ready = get(live.controller_url + "/readyz")
    assert ready == (200, "connected to ZooKeeper, cycling (leader)\n")
    assert get(live.controller_url + "/nope")[0] == 404

    # unix3 dies: its hook's session goes, the probes say down; b3 fails over.
    live.hooks["unix3"].stop()
    live.health.set("unix3", Health.DOWN, "connection refused")
    wait_for("b3 carried by a survivor", lambda: status(live)[1]["clusters"][0]["buckets"][2]["owner"]  # type: ignore[index]
             not in (None, "unix3"))
    code, doc = status(live)
    cluster = doc["clusters"][0]  # type: ignore[index]
    assert code == 4 and cluster["level"] == "degraded"
    assert "host unix3 down since" in cluster["verdict"] and "its 1 bucket on" in cluster["verdict"]
    text = get(live.controller_url + "/metrics")[1]
    assert sample(text, "clusterip_failovers_total") == 1.0
    assert sample(text, "clusterip_handoffs_total") == 1.0
    assert sample(text, "clusterip_handoff_duration_seconds_count") == 1.0
    assert sample(text, "clusterip_host_up", host="unix3") == 0.0
    assert sample(text, "clusterip_host_health", host="unix3", state="down") == 1.0
    assert sample(text, "clusterip_bucket_owner", bucket="3", owner="unix3") is None

    # Planned maintenance: drain unix2 through the CLI; the controller hands b2 over.
    drained = run(live.config, "drain", "unix2", "--yes")
    assert drained.exit_code == 0, drained.output
    wait_for("b2 handed off", lambda: status(live)[1]["clusters"][0]["buckets"][1]["owner"]  # type: ignore[index]
             not in (None, "unix2"))
    text = get(live.controller_url + "/metrics")[1]
    assert sample(text, "clusterip_handoffs_total") == 2.0
    assert sample(text, "clusterip_failovers_total") == 1.0
    wait_for("hooks caught up", lambda: all(
        h["lag"] == 0 for h in status(live)[1]["clusters"][0]["hosts"] if h["hook"]))  # type: ignore[index]
    wait_for("controller sees lag 0", lambda: sample(get(live.controller_url + "/metrics")[1],
                                                     "clusterip_hook_epoch_lag", host="unix1") == 0.0)

    hook_text = get(live.hook_url + "/metrics")[1]
    owner_of = {b["bucket"]: b["owner"] for b in status(live)[1]["clusters"][0]["buckets"]}  # type: ignore[index]
    held = sorted(b for b, o in owner_of.items() if o == "unix1")
    assert sample(hook_text, "clusterip_hook_buckets_held", host="unix1") == float(len(held))
    for bucket in held:
        assert sample(hook_text, "clusterip_hook_bucket_held", bucket=str(bucket)) == 1.0
    assert sample(hook_text, "clusterip_hook_epoch_lag") == 0.0
    assert sample(hook_text, "clusterip_zookeeper_connected") == 1.0
    assert get(live.hook_url + "/readyz")[0] == 200 and get(live.hook_url + "/healthz")[0] == 200

    # Undrain and fail back by request (policy manual): all home again, status back to exit 0 once
    # unix3 is back too.
    assert run(live.config, "undrain", "unix2", "--yes").exit_code == 0
    assert run(live.config, "failback", "unix2", "--yes").exit_code == 0
    wait_for("b2 back home", lambda: status(live)[1]["clusters"][0]["buckets"][1]["owner"] == "unix2")  # type: ignore[index]


def test_readyz_reports_zookeeper_loss(live: Live) -> None:
    wait_for("ready", lambda: get(live.controller_url + "/readyz")[0] == 200)
    live.service.client.stop()  # the controller's session ends: not ready, still alive
    wait_for("not ready", lambda: get(live.controller_url + "/readyz")[0] == 503)
    code, body = get(live.controller_url + "/readyz")
    assert body.startswith("ZooKeeper session") and code == 503
    assert get(live.controller_url + "/healthz")[0] == 200
