"""``clusterip-ctl config check FILE``: validate a configuration file and summarise its clusters."""

from __future__ import annotations

import click

from controller.core.model import ClusterSpec
from controller.ctl.configfile import load_config


def summarize(cluster: ClusterSpec) -> str:
    """One line an operator can eyeball: where the VIP lives, how it hashes, who is home for what."""
    ports = f"{cluster.protocol} port{'s' if len(cluster.ports) > 1 else ''} {','.join(map(str, cluster.ports))}" \
        if cluster.ports else f"{cluster.protocol} all ports"
    if cluster.backend == "clusterip":
        hashing = f"hash {cluster.hash.mode} init {cluster.hash.hash_init}"
    else:
        hashing = f"seed {cluster.hash.seed:#010x}"
    homes = " ".join(f"{h.id}[{','.join(map(str, h.home_buckets))}]" for h in cluster.hosts)
    return (f"{cluster.name}: {cluster.backend} VIP {cluster.vip} on {cluster.interface}, {ports}, "
            f"{cluster.buckets} buckets, {hashing}, MAC {cluster.cluster_mac}, homes {homes}")


@click.group("config")
def config_group() -> None:
    """Work with configuration files."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=True))
def check(file: str) -> None:
    """Validate FILE. Exit 0 and print one line per cluster, or print every problem and exit 2."""
    config = load_config(file)
    for cluster in config.clusters:
        click.echo(summarize(cluster))
