"""``clusterip-ctl status [CLUSTER]``: the verdict, the bucket table and the host table.

Reads ZooKeeper directly (works while no controller runs). The computation is the pure
controller.core.status_view; this module only reads and prints. Exit status (docs/operations.md):
0 every bucket served and nothing degraded, 4 degraded, 5 a bucket unowned, 1 ZooKeeper could not
be read, 2 bad usage or config.
"""

from __future__ import annotations

import json
import time

import click

from controller.core import status_view
from controller.ctl import refresh, zkview


@click.command("status")
@click.argument("cluster", required=False)
@zkview.config_option
@click.option("-w", "--watch", type=float, metavar="SECONDS", help=refresh.WATCH_HELP)
@click.option("--count", type=click.IntRange(min=1), metavar="N", help=refresh.COUNT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the stable JSON document instead of tables.")
def status(cluster: str | None, config_file: str, watch: float | None, count: int | None, as_json: bool) -> None:
    """Show who serves each bucket and how every host is doing, with a one-line verdict on top.

    Exit 0 all buckets served and all well; 4 degraded (still served); 5 a bucket is unowned;
    1 ZooKeeper unreachable; 2 bad usage or configuration.
    """
    config = zkview.load(config_file)
    specs = zkview.pick_clusters(config, cluster)
    with zkview.connected(config, read_only=True) as client:

        def frame() -> refresh.Frame:
            controllers = zkview.read_controllers(client)
            now = time.time()
            offset = zkview.utc_offset(now)
            results = [status_view.summarize(zkview.status_input(client, s, controllers), offset) for s in specs]
            code = status_view.overall_exit_code(results)
            if as_json:
                return [json.dumps(status_view.document(results, now), sort_keys=True)], code
            lines: list[str] = []
            for i, result in enumerate(results):
                if i:
                    lines.append("")
                lines += status_view.render_status(result, now, offset)
            return lines, code

        code = refresh.run(frame, watch, count, "clusterip-ctl status")
    click.get_current_context().exit(code)
