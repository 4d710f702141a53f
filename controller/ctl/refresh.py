"""``-w/--watch SECONDS`` for the read commands: redraw every N seconds, like watch(1).

On a terminal the screen is cleared before each frame; into a pipe or file the frames follow each
other (with ``--json``, one JSON document per line), so ``status -w 2 --json | jq`` works. Ctrl-C
ends the loop and exits with the last frame's status, so a script knows how it ended.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click

WATCH_HELP = "Redraw every SECONDS until Ctrl-C (or --count frames)."
COUNT_HELP = "With --watch: stop after N frames (for scripts and tests)."

#: One frame: the text lines to print and the exit status it stands for.
Frame = tuple[list[str], int]


def run(frame: Callable[[], Frame], watch: float | None, count: int | None, title: str) -> int:
    """Print one frame (no --watch) or keep redrawing; return the exit status of the last frame."""
    if watch is None:
        lines, code = frame()
        click.echo("\n".join(lines))
        return code
    if watch <= 0:
        raise click.BadParameter("must be above 0 seconds", param_hint="-w/--watch")
    tty = sys.stdout.isatty()
    code = 0
    shown = 0
    try:
        while count is None or shown < count:
            started = time.monotonic()
            lines, code = frame()
            if tty:
                click.clear()
                click.echo(f"Every {watch:g}s: {title}    {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            click.echo("\n".join(lines))
            sys.stdout.flush()
            shown += 1
            if count is not None and shown >= count:
                break
            time.sleep(max(0.0, watch - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    return code
