"""``clusterip-ctl drain HOST`` / ``undrain HOST``: planned maintenance without unanswered buckets.

A drained host hands every bucket to the others (one exclusive handoff each) and receives none
until undrained. Exit 0 requested (or already in effect); 6 refused; 7 not confirmed; 1 ZooKeeper
failure; 2 bad usage.
"""

from __future__ import annotations

import click

from controller.core.steering import Request
from controller.ctl import steer, zkview


@click.command("drain")
@click.argument("host")
@zkview.config_option
@steer.cluster_option
@steer.yes_option
def drain(host: str, config_file: str, cluster_name: str | None, yes: bool) -> None:
    """Move every bucket off HOST and give it none until `undrain` (shows the moves, asks first)."""
    steer.steer(config_file, cluster_name, Request("drain", host=host), yes)


@click.command("undrain")
@click.argument("host")
@zkview.config_option
@steer.cluster_option
@steer.yes_option
def undrain(host: str, config_file: str, cluster_name: str | None, yes: bool) -> None:
    """Let HOST take buckets again; its home buckets return per the failback policy."""
    steer.steer(config_file, cluster_name, Request("undrain", host=host), yes)
