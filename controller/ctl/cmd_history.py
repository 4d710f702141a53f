"""``clusterip-ctl history``: the bounded decision history of a cluster, oldest first.

Every revoke and grant the leading controller decides is appended to ZooKeeper with time, epoch,
bucket, from, to, reason and controller id (the last 1000 are kept); this command reads them.
Exit 0 (also when there are no events); 1 ZooKeeper unreachable; 2 bad usage or config.
"""

from __future__ import annotations

import json
import logging
import os
import time

import click

from controller.core.errors import UsageError
from controller.core.history_view import event_json, format_time, parse_since, render_event
from controller.ctl.configfile import load_config

#: Same convention as the other ZooKeeper-reading commands.
CONFIG_ENV = "CLUSTERIP_CONFIG"
DEFAULT_CONFIG = "/etc/clusterip-failover/config.yaml"


@click.command("history")
@click.option("-c", "--config", "config_file", metavar="FILE", envvar=CONFIG_ENV, default=DEFAULT_CONFIG,
              show_default=True, help=f"Config file (or ${CONFIG_ENV}).")
@click.option("--cluster", "cluster_name", metavar="NAME", help="Cluster in FILE (when it has several).")
@click.option("--since", metavar="TIME|DURATION", help="Only events since then: 15m, 2h, 1d or 2024-05-01T12:00Z.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of lines.")
def history(config_file: str, cluster_name: str | None, since: str | None, as_json: bool) -> None:
    """Print the cluster's recent revokes and grants: time, epoch, bucket, hosts, reason, controller."""
    now = time.time()
    start = parse_since(since, now) if since is not None else 0.0
    if not os.path.exists(config_file) and config_file == DEFAULT_CONFIG:
        raise UsageError(f"no config at {DEFAULT_CONFIG}; pass --config FILE or set ${CONFIG_ENV}")
    config = load_config(config_file)
    try:
        spec = config.cluster(cluster_name)
    except KeyError as err:
        raise UsageError(str(err.args[0])) from None
    from controller.zk.client import make_client, start_client  # lazy: kazoo only for this command
    from controller.zk.store import ClusterStore

    # kazoo reports every failed connection attempt as a warning; without logging configured they
    # would reach stderr ahead of our one-line error. The outcome is what the operator needs.
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)

    client = make_client(config.zookeeper, read_only=True)
    start_client(client, config.zookeeper)
    try:
        events = ClusterStore(client, spec).read_history(since=start)
    finally:
        client.stop()
        client.close()
    if as_json:
        doc = {"cluster": spec.name, "since": start or None, "events": [event_json(e) for e in events]}
        click.echo(json.dumps(doc, sort_keys=True))
        return
    if not events:
        when = f" since {format_time(start)}" if start else ""
        click.echo(f"cluster {spec.name}: no events{when}")
        return
    for event in events:
        click.echo(render_event(event))
