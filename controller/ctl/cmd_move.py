"""``clusterip-ctl move BUCKET HOST`` (pin) and ``move BUCKET --clear`` (unpin).

A pin overrides home and failback rules while its host can take buckets; if the host fails, the
bucket fails over as usual and returns to the pinned host when it is back. Exit 0 requested; 6
refused (host not up, hook missing, drained, or unknown bucket); 7 not confirmed; 1 ZooKeeper
failure; 2 bad usage.
"""

from __future__ import annotations

import click

from controller.core.errors import UsageError
from controller.core.steering import Request
from controller.ctl import steer, zkview


@click.command("move")
@click.argument("bucket", type=int)
@click.argument("host", required=False)
@click.option("--clear", is_flag=True, help="Remove the pin of BUCKET (it follows the normal rules again).")
@zkview.config_option
@steer.cluster_option
@steer.yes_option
def move(bucket: int, host: str | None, clear: bool, config_file: str, cluster_name: str | None, yes: bool) -> None:
    """Pin BUCKET to HOST (a live, up host); `move BUCKET --clear` removes the pin."""
    if clear == (host is not None):
        raise UsageError("give either HOST (pin the bucket there) or --clear (remove its pin), not both or neither")
    request = Request("unpin", bucket=bucket) if clear else Request("move", host=host, bucket=bucket)
    steer.steer(config_file, cluster_name, request, yes)
