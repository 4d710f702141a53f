"""``clusterip-ctl failback [HOST]``: ask for home buckets to return (policy ``manual``).

Without HOST the request is made for every host that can take buckets now. Exit 0 requested (or
nothing to do); 6 refused (HOST not up or its hook not running); 7 not confirmed; 1 ZooKeeper
failure; 2 bad usage.
"""

from __future__ import annotations

import click

from controller.core.steering import Request
from controller.ctl import steer, zkview


@click.command("failback")
@click.argument("host", required=False)
@zkview.config_option
@steer.cluster_option
@steer.yes_option
def failback(host: str | None, config_file: str, cluster_name: str | None, yes: bool) -> None:
    """Return HOST's home buckets to it (or every able host's), under failback policy manual."""
    steer.steer(config_file, cluster_name, Request("failback", host=host), yes)
