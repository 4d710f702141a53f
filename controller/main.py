"""``clusterip-controller``: one controller replica (run several; one leads).

Exit codes: 0 stopped cleanly; 1 ZooKeeper failure; 2 bad configuration or arguments.
"""

from __future__ import annotations

import logging
import signal

import click

from controller.ctl.configfile import load_config
from controller.entrypoint import run
from controller.logs import setup_logging

log = logging.getLogger("clusterip.controller")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--id", "controller_id", default=None, help="replica id (default: hostname-pid)")
@click.option("--cycle-interval", default=0.5, show_default=True, type=float,
              help="seconds between cycles when nothing happens (events trigger cycles at once)")
@click.option("--health-file", default=None, type=click.Path(dir_okay=False),
              help="take host liveness from this JSON file (external health input) instead of SSH probes")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--metrics-port", default=9464, show_default=True, type=click.IntRange(0, 65535),
              help="port of /metrics, /healthz, /readyz (0: any free port, logged)")
@click.option("--metrics-bind", default="127.0.0.1", show_default=True, help="address the metrics server binds")
@click.option("--no-metrics", is_flag=True, help="serve no metrics or health endpoints")
def cli(config_path: str, controller_id: str | None, cycle_interval: float, health_file: str | None,
        log_format: str, log_level: str, metrics_port: int, metrics_bind: str, no_metrics: bool) -> None:
    """Probe every host over SSH and, while leading, hand dead hosts' buckets to survivors.

    With --health-file, liveness comes from that file (written by another checker or a test; format
    in docs/failure-modes.md) and no SSH probes run. With several clusters, name hosts uniquely.
    """
    setup_logging(log_format, log_level)
    config = load_config(config_path)
    from controller.health_source import FileHealth, HealthSource, ProbeHealth
    from controller.service import ControllerService

    sources: dict[str, HealthSource] = {}
    for spec in config.clusters:
        if health_file is not None:
            sources[spec.name] = FileHealth(health_file, spec.host_ids)
        else:
            sources[spec.name] = ProbeHealth([(h.id, h.ssh_host, h.ssh_port) for h in spec.hosts], spec.probe)
    from controller.metrics import ControllerMetrics, serve

    metrics = ControllerMetrics(stall_after_s=max(10.0, 20 * cycle_interval))
    service = ControllerService(config, sources, controller_id=controller_id, cycle_interval_s=cycle_interval,
                                on_cycle=metrics.on_cycle)
    metrics.bind(service)
    server = None if no_metrics else serve(metrics.registry, metrics_bind, metrics_port, metrics.live, metrics.ready)

    def on_signal(_signum: int, _frame: object) -> None:
        service._stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    metrics.watch_hooks()
    service.wait()
    log.info("stopping: resigning leadership")
    service.stop()
    if server is not None:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    run(cli, "clusterip-controller", argv)


if __name__ == "__main__":
    main()
