"""The common path of every steering command: preview, confirm, compare-and-set, record.

Why compare-and-set with a retry: two operators (or an operator and a script) may steer at once;
writing the intents blindly would silently undo the other's request. On a conflict the request is
re-evaluated on the fresh snapshot (and refused if it became unsafe meanwhile), never re-applied
to stale intents.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import click

from controller.core import steering
from controller.core import zk_layout as layout
from controller.core.errors import ClusterIPFailoverError, CoordinationError
from controller.core.schema import HistoryEvent
from controller.ctl import zkview
from controller.zk.client import mapped_errors
from controller.zk.store import ClusterStore

F = TypeVar("F", bound=Callable[..., Any])

#: Exit statuses of the steering commands beyond the CLI's own (docs/operations.md).
EXIT_REFUSED = 6
EXIT_NOT_CONFIRMED = 7
#: Compare-and-set attempts before giving up (each one re-reads the snapshot).
CAS_ATTEMPTS = 5


class RefusedError(ClusterIPFailoverError):
    """The request would leave a bucket unowned or send one to a host that cannot take it."""

    exit_code: ClassVar[int] = EXIT_REFUSED


class NotConfirmedError(ClusterIPFailoverError):
    """The operator did not confirm (answered no, or no terminal and no --yes)."""

    exit_code: ClassVar[int] = EXIT_NOT_CONFIRMED


def yes_option(func: F) -> F:
    return click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (scripts).")(func)


def cluster_option(func: F) -> F:
    return click.option("--cluster", "cluster_name", metavar="NAME",
                        help="Cluster to steer (needed when the config has several).")(func)


def _fix(request: steering.Request) -> str:
    if request.kind in ("move", "failback"):
        return "pick a host that is up with its hook running (see clusterip-ctl status)"
    return "bring another host up (or undrain one) first, see clusterip-ctl status"


def steer(config_file: str, cluster_name: str | None, request: steering.Request, yes: bool) -> None:
    """Run ``request`` against the cluster: print the preview, ask, write with CAS, record in history."""
    config = zkview.load(config_file)
    spec = zkview.one_cluster(config, cluster_name)
    asker = zkview.who()
    what = steering.describe(request)
    with zkview.connected(config, read_only=False) as client:
        store = ClusterStore(client, spec)
        for attempt in range(CAS_ATTEMPTS):
            snap, view, _ = zkview.read_cluster(client, spec)
            now = time.time()
            ev = steering.evaluate(view, request, now)
            if ev.refusal:
                _record(store, snap.map.epoch, "request-refused", f"{what} by {asker} refused: {ev.refusal}",
                        asker, request)
                raise RefusedError(f"refused: {what}: {ev.refusal}; {_fix(request)}")
            if attempt == 0:
                _preview(spec.name, what, ev)
                if not ev.changed:
                    click.echo("already in effect: nothing to do")
                    return
                if not yes:
                    try:
                        ok = click.confirm("Proceed?", default=False)
                    except click.exceptions.Abort:
                        ok = False
                    if not ok:
                        raise NotConfirmedError(f"not confirmed: {what} was not requested; answer y, or pass "
                                                "--yes in scripts")
            elif not ev.changed:
                click.echo("someone else made the same request meanwhile: nothing to do")
                return
            if store.write_intents(ev.intents, snap.intents_version):
                moves = "; ".join(f"b{m.bucket} {m.from_host or 'nobody'}->{m.to_host or 'nobody'}"
                                  for m in ev.moves) or "nothing moves"
                _record(store, snap.map.epoch, "request", f"{what} by {asker}: {moves}", asker, request)
                click.echo(f"requested: {what} (cluster {spec.name}); follow it with: clusterip-ctl status -w 1")
                return
            click.echo("the intents changed meanwhile (another request): re-checking", err=True)
        raise CoordinationError(f"{what}: the intents kept changing under {CAS_ATTEMPTS} attempts; "
                                "try again (is a script steering in a loop?)")


def _preview(cluster: str, what: str, ev: steering.Evaluation) -> None:
    click.echo(f"{what} in cluster {cluster}:")
    lines = steering.render_moves(ev.moves)
    click.echo("\n".join(lines) if lines else "  no bucket moves")
    for note in ev.notes:
        click.echo(f"  note: {note}")


def _record(store: ClusterStore, epoch: int, kind: str, reason: str, asker: str,
            request: steering.Request) -> None:
    event = HistoryEvent(time=time.time(), epoch=epoch, kind=kind, reason=reason,
                         controller=f"clusterip-ctl {asker}", bucket=request.bucket,
                         to_host=request.host if request.kind in ("move", "failback") else None,
                         from_host=request.host if request.kind == "drain" else None)
    try:
        with mapped_errors("preparing the history znode"):
            store.client.ensure_path(layout.history_path(store.name))
        store.append_history([event])
    except CoordinationError as exc:
        click.echo(f"clusterip-ctl: warning: request not recorded in the history: {exc}", err=True)
