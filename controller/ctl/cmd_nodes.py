"""``clusterip-ctl nodes [CLUSTER]``: every host's health and hook, and the controller replicas.

Exit 0 when ZooKeeper could be read (use ``status`` for a monitoring verdict); 1 when it could not;
2 bad usage or config.
"""

from __future__ import annotations

import json
import time

import click

from controller.core import status_view
from controller.ctl import refresh, zkview


@click.command("nodes")
@click.argument("cluster", required=False)
@zkview.config_option
@click.option("-w", "--watch", type=float, metavar="SECONDS", help=refresh.WATCH_HELP)
@click.option("--count", type=click.IntRange(min=1), metavar="N", help=refresh.COUNT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
def nodes(cluster: str | None, config_file: str, watch: float | None, count: int | None, as_json: bool) -> None:
    """List hosts (health, hook, address, version, applied epoch, buckets held) and controllers."""
    config = zkview.load(config_file)
    specs = zkview.pick_clusters(config, cluster)
    with zkview.connected(config, read_only=True) as client:

        def frame() -> refresh.Frame:
            controllers = zkview.read_controllers(client)
            now = time.time()
            offset = zkview.utc_offset(now)
            results = [status_view.summarize(zkview.status_input(client, s, controllers), offset) for s in specs]
            if as_json:
                doc = {"schema": status_view.JSON_SCHEMA, "time": now,
                       "clusters": [status_view.nodes_json(r) for r in results]}
                return [json.dumps(doc, sort_keys=True)], 0
            lines: list[str] = []
            for i, result in enumerate(results):
                if i:
                    lines.append("")
                lines += status_view.render_nodes(result, now, offset)
            return lines, 0

        code = refresh.run(frame, watch, count, "clusterip-ctl nodes")
    click.get_current_context().exit(code)
