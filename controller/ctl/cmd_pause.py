"""``clusterip-ctl pause`` / ``resume``: maintenance of the controller itself.

While paused the leading controller keeps publishing health but changes no bucket, not even when a
host fails; ``resume`` shows what will move once it plans again. Exit 0 requested (or already in
effect); 7 not confirmed; 1 ZooKeeper failure; 2 bad usage.
"""

from __future__ import annotations

import click

from controller.core.steering import Request
from controller.ctl import steer, zkview


@click.command("pause")
@zkview.config_option
@steer.cluster_option
@steer.yes_option
def pause(config_file: str, cluster_name: str | None, yes: bool) -> None:
    """Freeze the bucket map: the controller changes nothing until `resume` (no failover either)."""
    steer.steer(config_file, cluster_name, Request("pause"), yes)


@click.command("resume")
@zkview.config_option
@steer.cluster_option
@steer.yes_option
def resume(config_file: str, cluster_name: str | None, yes: bool) -> None:
    """Let the controller plan again; shows the buckets that will move at once."""
    steer.steer(config_file, cluster_name, Request("resume"), yes)
