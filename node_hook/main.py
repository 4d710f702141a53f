"""``clusterip-node-hook``: the per-host agent's command line.

Exit codes: 0 stopped cleanly; 1 ZooKeeper or kernel failure; 2 bad configuration or arguments;
3 another live hook already holds this host id.
"""

from __future__ import annotations

import logging
import signal

import click

from controller.core.errors import ClusterIPFailoverError, ConfigError
from controller.ctl.configfile import load_config
from controller.entrypoint import run
from controller.logs import setup_logging
from controller.secret_files import read_secret

log = logging.getLogger("clusterip.hook")


def _read_secret(path: str) -> bytes:
    """The peer secret (see controller/secret_files.py for the permission rule shared by all secrets)."""
    return read_secret(path, "peer_secret_file")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--host", "host_id", required=True, help="this host's id in the cluster")
@click.option("--cluster", default=None, help="cluster name (needed when the config has several)")
@click.option("--backend", "backend_name", default=None,
              type=click.Choice(["clusterip", "xt_cluster", "nftables", "memory"]),
              help="override the configured backend (memory: no kernel changes, for tests)")
@click.option("--address", default=None, help="address peers and operators reach this hook at (default: ssh host)")
@click.option("--peer-bind", default="0.0.0.0", show_default=True, help="address the peer responder binds")
@click.option("--memory-journal", default=None, type=click.Path(dir_okay=False),
              help="with --backend memory: persist the in-memory kernel in this append-only file (tests)")
@click.option("--dry-run", is_flag=True, help="print the kernel changes the current map asks for, change nothing")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--metrics-port", default=9465, show_default=True, type=click.IntRange(0, 65535),
              help="port of /metrics, /healthz, /readyz (0: any free port, logged)")
@click.option("--metrics-bind", default="127.0.0.1", show_default=True, help="address the metrics server binds")
@click.option("--no-metrics", is_flag=True, help="serve no metrics or health endpoints")
def cli(config_path: str, host_id: str, cluster: str | None, backend_name: str | None, address: str | None,
        peer_bind: str, memory_journal: str | None, dry_run: bool, log_format: str, log_level: str,
        metrics_port: int, metrics_bind: str, no_metrics: bool) -> None:
    """Register this host in ZooKeeper and keep its kernel in line with the bucket map."""
    setup_logging(log_format, log_level)
    config = load_config(config_path)
    try:
        spec = config.cluster(cluster)
    except KeyError as exc:
        raise ConfigError([str(exc.args[0])], config_path) from None
    from controller.core.deadman import deadman_timing, whole_seconds_backend
    from node_hook.backends import create_backend

    chosen = backend_name or spec.backend
    # Every kernel backend gets a dead-man switch (docs/failure-modes.md); the memory "kernel" has none.
    deadman_s = None if chosen == "memory" else deadman_timing(
        config.zookeeper.session_timeout_s, whole_seconds_backend(chosen)).expiry_s
    backend = create_backend(spec, host_id, backend_name, deadman_s=deadman_s)
    if memory_journal is not None:
        from node_hook.backends.memory import MemoryBackend

        if not isinstance(backend, MemoryBackend):
            raise ConfigError(["--memory-journal needs --backend memory"])
        backend.attach_journal(memory_journal)
    if dry_run:
        _dry_run(config, spec, host_id, backend)
        return
    from controller.metrics import serve
    from node_hook.agent import HookAgent
    from node_hook.metrics import HookMetrics

    metrics = HookMetrics(spec.name, host_id, stall_after_s=max(20.0, 3 * spec.handoff.resync_interval_s))
    agent = HookAgent(spec, config.zookeeper, host_id, backend, address=address, peer_bind=peer_bind,
                      peer_secret=_read_secret(spec.handoff.peer_secret_file), on_applied=metrics.on_applied)
    metrics.bind(agent)
    server = None if no_metrics else serve(metrics.registry, metrics_bind, metrics_port, metrics.live, metrics.ready)
    stopping = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)
        agent._stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.start()
    metrics.watch_map()
    agent.wait()
    log.info("stopping (signal %s): %s", stopping[0] if stopping else "?",
             "buckets stay in the kernel" if deadman_s is None else
             "clearing the dead-man switch first: the kernel stops accepting and the controller moves the buckets")
    agent.stop(release=False)
    if server is not None:
        server.stop()


def _dry_run(config: object, spec: object, host_id: str, backend: object) -> None:
    from controller.core.model import ClusterSpec, Config
    from controller.zk.client import make_client, start_client
    from controller.zk.store import ClusterStore
    from node_hook.backends.base import BucketBackend

    assert isinstance(config, Config) and isinstance(spec, ClusterSpec) and isinstance(backend, BucketBackend)
    problems = backend.check_prerequisites()
    for problem in problems:
        click.echo(f"prerequisite: {problem}")
    client = make_client(config.zookeeper, read_only=True)
    start_client(client, config.zookeeper)
    try:
        bucket_map, _ = ClusterStore(client, spec).read_map()
    finally:
        client.stop()
        client.close()
    wanted = bucket_map.owned_by(host_id)
    click.echo(f"map epoch {bucket_map.epoch}: {host_id} should hold {sorted(wanted) or 'nothing'}")
    if bucket_map.epoch == 0:
        click.echo("no controller has written a map yet: the hook would keep the kernel as it is")
        return
    try:
        changes = backend.describe_changes(wanted)
    except ClusterIPFailoverError as exc:
        click.echo(f"would install the cluster's rules ({exc}), then grant {sorted(wanted)}")
        return
    click.echo("\n".join(changes) if changes else "no change: the kernel already matches the map")


def main(argv: list[str] | None = None) -> None:
    run(cli, "clusterip-node-hook", argv)


if __name__ == "__main__":
    main()
