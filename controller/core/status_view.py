"""What ``clusterip-ctl status`` and ``nodes`` show, computed from one snapshot of ZooKeeper.

Pure: no clock (``now`` comes in), no I/O, no time zone lookups (the caller passes the UTC offset).
The CLI only reads znodes and prints what this module returns, so every verdict, exit code and
table cell can be tested without a server.

Why a verdict line and exit codes at all: an operator in the middle of an incident (or a
monitoring check every 15 s) needs "is every bucket answered, and if not, which and why" before any
table. The levels, in increasing severity:

* ``ok`` (exit 0): every bucket has an owner, every host is up with its hook running and caught
  up, nothing is moving, paused or drained, a controller leads;
* ``degraded`` (exit 4): every bucket is still answered but something needs attention (a host down
  and its buckets carried by others, a bucket in a handoff, a hook missing or behind, paused, no
  controller, unreadable znodes);
* ``unowned`` (exit 5): at least one bucket has no owner and no handoff in progress: its clients
  get no answer at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.core.model import ClusterView, Health

Level = Literal["ok", "degraded", "unowned"]
BucketStateName = Literal["serving", "moving", "draining", "unowned"]

#: Exit status per level (documented in docs/operations.md; 1, 2, 3 and 70 are the CLI's own).
EXIT_CODES: Mapping[Level, int] = {"ok": 0, "degraded": 4, "unowned": 5}
_SEVERITY: Mapping[Level, int] = {"ok": 0, "degraded": 1, "unowned": 2}
#: Version of the JSON documents; bumped only when a field changes meaning or disappears.
JSON_SCHEMA = 1
#: Hosts and buckets named in one verdict line before "and N more".
_NAMED = 4


@dataclass(frozen=True)
class StatusInput:
    """Everything status needs about one cluster, as read by the CLI."""

    view: ClusterView
    now: float
    leader: str | None = None
    controllers: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class BucketRow:
    bucket: int
    home: str | None
    owner: str | None
    state: BucketStateName
    since: float
    releasing: str | None
    target: str | None
    pinned: str | None
    #: the previous owner still serving the bucket's established sessions (docs/drain.md)
    drain_host: str | None = None
    #: sessions it still tracks, as its hook last counted them (None: not counted yet)
    drain_sessions: int | None = None
    drain_since: float | None = None


@dataclass(frozen=True)
class HostRow:
    host: str
    health: str
    health_since: float | None
    reason: str
    latency_ms: float | None
    hook: bool
    hook_version: str | None
    address: str | None
    applied_epoch: int | None
    lag: int | None
    held: tuple[int, ...]
    owns: tuple[int, ...]
    home: tuple[int, ...]
    drained: bool
    error: str


@dataclass(frozen=True)
class ClusterStatus:
    cluster: str
    level: Level
    verdict: str
    map_epoch: int
    paused: bool
    leader: str | None
    controllers: tuple[str, ...]
    buckets: tuple[BucketRow, ...]
    hosts: tuple[HostRow, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.level]


# --------------------------------------------------------------------------- rows


def bucket_state(view: ClusterView, bucket: int) -> BucketStateName:
    """serving / moving / draining / unowned, as the status table shows it (see module docstring)."""
    state = view.map.buckets[bucket]
    if state.owner is not None:
        return "draining" if state.owner in view.intents.drained or state.draining else "serving"
    return "moving" if state.releasing is not None else "unowned"


def bucket_rows(view: ClusterView) -> tuple[BucketRow, ...]:
    return tuple(
        BucketRow(
            bucket=b,
            home=view.spec.home_of(b),
            owner=s.owner,
            state=bucket_state(view, b),
            since=s.since,
            releasing=s.releasing,
            target=s.target,
            pinned=view.intents.pins.get(b),
            drain_host=s.draining,
            drain_sessions=_remaining(view, b),
            drain_since=s.drain_since if s.draining else None,
        )
        for b, s in sorted(view.map.buckets.items())
    )


def _remaining(view: ClusterView, bucket: int) -> int | None:
    """Sessions the draining host of ``bucket`` still tracks, from its hook's last count."""
    state = view.map.buckets[bucket]
    status = view.statuses.get(state.draining) if state.draining else None
    return None if status is None else status.sessions.get(bucket)


def host_rows(view: ClusterView) -> tuple[HostRow, ...]:
    rows: list[HostRow] = []
    for spec in view.spec.hosts:
        host = spec.id
        health = view.health.get(host)
        member = view.members.get(host)
        status = view.statuses.get(host)
        applied = status.epoch if status is not None else None
        rows.append(
            HostRow(
                host=host,
                health=health.state.value if health else Health.UNKNOWN.value,
                health_since=health.since if health else None,
                reason=health.reason if health else "no verdict published (no controller has probed it)",
                latency_ms=health.latency_ms if health else None,
                hook=member is not None,
                hook_version=member.version if member else None,
                address=member.address if member else None,
                applied_epoch=applied,
                lag=None if applied is None else max(0, view.map.epoch - applied),
                held=tuple(sorted(status.held)) if status else (),
                owns=tuple(sorted(view.map.owned_by(host))),
                home=tuple(sorted(spec.home_buckets)),
                drained=host in view.intents.drained,
                error=status.error if status else "",
            )
        )
    return tuple(rows)


# --------------------------------------------------------------------------- verdict


def _names(items: Sequence[str]) -> str:
    if len(items) <= _NAMED:
        return ", ".join(items)
    return ", ".join(items[:_NAMED]) + f" and {len(items) - _NAMED} more"


def _buckets(items: Iterable[int]) -> str:
    return _names([f"b{b}" for b in sorted(items)])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def clock(ts: float, now: float, utc_offset_s: int = 0) -> str:
    """HH:MM:SS for today, 'YYYY-MM-DD HH:MM' when older than a day, '-' when unknown (0)."""
    if ts <= 0:
        return "-"
    local = time.gmtime(ts + utc_offset_s)
    if now - ts >= 86400:
        return time.strftime("%Y-%m-%d %H:%M", local)
    return time.strftime("%H:%M:%S", local)


def _host_findings(view: ClusterView, now: float, off: int) -> list[str]:
    findings: list[str] = []
    epoch = view.map.epoch
    for spec in view.spec.hosts:
        host = spec.id
        health = view.health.get(host)
        carried = sorted(b for b in spec.home_buckets if view.map.owner_of(b) not in (None, host))
        carriers = sorted({o for b in carried if (o := view.map.owner_of(b)) is not None})
        if health is not None and health.state in (Health.DOWN, Health.SUSPECT):
            why = f" ({health.reason})" if health.reason else ""
            where = f", its {_plural(len(carried), 'bucket')} on {_names(carriers)}" if carried else ""
            findings.append(f"host {host} {health.state.value} since {clock(health.since, now, off)}{why}{where}")
        elif host in view.intents.drained:
            left = sorted(view.map.owned_by(host))
            findings.append(f"host {host} drained" + (f", still holding {_buckets(left)}" if left else ""))
        elif carried and host not in view.intents.drained:
            findings.append(f"{_buckets(carried)} of {host} on {_names(carriers)} (failback pending)")
        if health is None or health.state is Health.UNKNOWN:
            findings.append(f"host {host} not judged yet")
        if host not in view.members and (health is None or health.state is not Health.DOWN):
            findings.append(f"hook of {host} not running")
        status = view.statuses.get(host)
        if status is not None and host in view.members and epoch > 0:
            if status.epoch < epoch:
                findings.append(f"{host} applied epoch {status.epoch} of {epoch}")
            elif status.held != view.map.owned_by(host):
                findings.append(f"{host} kernel holds {_buckets(status.held) or 'nothing'} but owns "
                                f"{_buckets(view.map.owned_by(host)) or 'nothing'}")
            if status.error:
                findings.append(f"hook of {host} reports a kernel error: {status.error}")
    return findings


def summarize(data: StatusInput, utc_offset_s: int = 0) -> ClusterStatus:
    """The status of one cluster: rows, level and the one-line verdict."""
    view = data.view
    now = data.now
    buckets = bucket_rows(view)
    total = len(buckets)
    unowned = [r.bucket for r in buckets if r.state == "unowned"]
    moving = [r for r in buckets if r.state == "moving"]
    findings: list[str] = []
    if view.map.epoch == 0:
        findings.append("no bucket map yet: no controller has written one, hooks keep what their kernels hold")
    if moving:
        findings.append(_plural(len(moving), "bucket") + " moving (" + _names(
            [f"b{r.bucket} {r.releasing} -> {r.target or '?'}" for r in moving]) + ")")
    findings += _host_findings(view, now, utc_offset_s)
    # A drain is a planned, healthy state: said in the verdict, but it does not degrade the level.
    drains = [r for r in buckets if r.drain_host is not None]
    info = [_plural(len(drains), "bucket") + " draining (" + _names(
        [f"b{r.bucket} on {r.drain_host}: {_sessions(r.drain_sessions)}" for r in drains]) + ")"] if drains else []
    if view.intents.paused:
        findings.append("paused by operator: the controller changes nothing, not even on failure")
    pins = view.intents.pins
    if pins:
        findings.append("pinned " + _names([f"b{b}->{h}" for b, h in sorted(pins.items())]))
    if data.leader is None:
        findings.append("no controller running: failures are not handled")
    findings += list(data.problems)

    level: Level
    if unowned and view.map.epoch > 0:
        level = "unowned"
        head = f"{len(unowned)} of {total} buckets unowned ({_buckets(unowned)}): their clients get no answer"
    else:
        served = total - len(moving)
        level = "degraded" if findings else "ok"
        if moving:
            head = f"{served} of {total} buckets served, {len(moving)} in handoff"
        else:
            head = f"all {total} buckets served"
    verdict = "; ".join([head, *findings, *info])
    return ClusterStatus(
        cluster=view.spec.name,
        level=level,
        verdict=verdict,
        map_epoch=view.map.epoch,
        paused=view.intents.paused,
        leader=data.leader,
        controllers=data.controllers,
        buckets=buckets,
        hosts=host_rows(view),
        notes=tuple(findings + info),
    )


def overall_exit_code(statuses: Iterable[ClusterStatus]) -> int:
    """The worst level over several clusters, as an exit status."""
    worst: Level = "ok"
    for status in statuses:
        if _SEVERITY[status.level] > _SEVERITY[worst]:
            worst = status.level
    return EXIT_CODES[worst]


# --------------------------------------------------------------------------- JSON


def bucket_json(row: BucketRow) -> dict[str, Any]:
    return {
        "bucket": row.bucket, "home": row.home, "owner": row.owner, "state": row.state, "since": row.since,
        "releasing": row.releasing, "target": row.target, "pinned": row.pinned,
        "draining": None if row.drain_host is None else {
            "host": row.drain_host, "sessions": row.drain_sessions, "since": row.drain_since},
    }


def host_json(row: HostRow) -> dict[str, Any]:
    return {
        "host": row.host, "health": row.health, "health_since": row.health_since, "reason": row.reason,
        "latency_ms": row.latency_ms, "hook": row.hook, "hook_version": row.hook_version,
        "address": row.address, "applied_epoch": row.applied_epoch, "lag": row.lag, "held": list(row.held),
        "owns": list(row.owns), "home": list(row.home), "drained": row.drained, "error": row.error,
    }


def status_json(status: ClusterStatus) -> dict[str, Any]:
    """One cluster as the stable JSON object documented in docs/operations.md."""
    return {
        "cluster": status.cluster,
        "level": status.level,
        "exit_code": status.exit_code,
        "verdict": status.verdict,
        "notes": list(status.notes),
        "map_epoch": status.map_epoch,
        "paused": status.paused,
        "leader": status.leader,
        "controllers": list(status.controllers),
        "buckets": [bucket_json(r) for r in status.buckets],
        "hosts": [host_json(r) for r in status.hosts],
    }


def document(statuses: Sequence[ClusterStatus], now: float) -> dict[str, Any]:
    """The top-level JSON document of ``status --json``."""
    return {
        "schema": JSON_SCHEMA,
        "time": now,
        "exit_code": overall_exit_code(statuses),
        "clusters": [status_json(s) for s in statuses],
    }


# --------------------------------------------------------------------------- text


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces, without trailing blanks."""
    body = [list(headers)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in body) for i in range(len(headers))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in body]


def _latency(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.1f} ms"


def _list(items: Sequence[int]) -> str:
    return ",".join(str(b) for b in items) if items else "-"


def _sessions(n: int | None) -> str:
    return "sessions not counted yet" if n is None else _plural(n, "session")


def _drain_cell(row: BucketRow) -> str:
    if row.drain_host is None:
        return "-"
    return f"{row.drain_host}: {'?' if row.drain_sessions is None else row.drain_sessions}"


def _owner_cell(row: BucketRow) -> str:
    if row.owner is not None:
        return row.owner
    if row.releasing is not None:
        return f"({row.releasing} -> {row.target or '?'})"
    return "-"


def host_table(status: ClusterStatus, now: float, utc_offset_s: int = 0) -> list[str]:
    rows = []
    for h in status.hosts:
        health = h.health + (" (drained)" if h.drained else "")
        since = clock(h.health_since or 0.0, now, utc_offset_s)
        applied = "-" if h.applied_epoch is None else f"{h.applied_epoch}/{status.map_epoch}"
        hook = ("yes" if h.hook else "NO") + (" ERR" if h.error else "")
        rows.append([h.host, health, since, h.reason or "-", _latency(h.latency_ms), hook, applied,
                     _list(h.held), _list(h.home)])
    return table(["HOST", "HEALTH", "SINCE", "REASON", "LATENCY", "HOOK", "APPLIED", "HOLDS", "HOME"], rows)


def render_status(status: ClusterStatus, now: float, utc_offset_s: int = 0) -> list[str]:
    """The text of ``status`` for one cluster: verdict, context line, bucket table, host table."""
    leader = status.leader or "none"
    lines = [
        f"{status.cluster}: {status.level.upper()}: {status.verdict}",
        f"map epoch {status.map_epoch}, leader {leader}, controllers {len(status.controllers)}"
        + (", PAUSED" if status.paused else ""),
        "",
    ]
    rows = []
    for b in status.buckets:
        since = clock(b.since, now, utc_offset_s)
        rows.append([str(b.bucket), b.home or "-", _owner_cell(b), b.state, since, b.pinned or "-", _drain_cell(b)])
    lines += table(["BUCKET", "HOME", "OWNER", "STATE", "SINCE", "PIN", "DRAINING (SESSIONS)"], rows)
    lines.append("")
    lines += host_table(status, now, utc_offset_s)
    return lines


def render_nodes(status: ClusterStatus, now: float, utc_offset_s: int = 0) -> list[str]:
    """The text of ``nodes``: hosts with their hooks, then the controller replicas."""
    rows = []
    for h in status.hosts:
        applied = "-" if h.applied_epoch is None else f"{h.applied_epoch}/{status.map_epoch}"
        rows.append([h.host, h.health + (" (drained)" if h.drained else ""), "yes" if h.hook else "NO",
                     h.address or "-", h.hook_version or "-", applied, _list(h.held), h.error or "-"])
    lines = [f"cluster {status.cluster}:"]
    lines += table(["HOST", "HEALTH", "HOOK", "ADDRESS", "VERSION", "APPLIED", "HOLDS", "KERNEL ERROR"], rows)
    controllers = [c + (" (leader)" if c == status.leader else "") for c in status.controllers]
    lines.append("controllers: " + (", ".join(controllers) if controllers else "none running"))
    return lines


def nodes_json(status: ClusterStatus) -> dict[str, Any]:
    return {
        "cluster": status.cluster,
        "map_epoch": status.map_epoch,
        "leader": status.leader,
        "controllers": list(status.controllers),
        "hosts": [host_json(r) for r in status.hosts],
    }
