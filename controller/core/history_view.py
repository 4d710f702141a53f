"""Pure helpers of ``clusterip-ctl history``: parse ``--since`` and render events as text or JSON.

Kept apart from the command so that the parsing rules (which operators type at 3 a.m.) are tested
without ZooKeeper and checked by ``mypy --strict``. Times are shown in UTC with a ``Z``: the history
is read by people in different places, and ordering uses epochs anyway.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from controller.core.errors import UsageError
from controller.core.schema import HistoryEvent

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?$")
_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(text: str, now: float) -> float:
    """Wall-clock seconds from ``--since``: a duration back from ``now`` or an ISO 8601 time.

    ``90s``, ``15m``, ``2h``, ``1d`` (a bare number is seconds); ``2024-05-01T12:00:00`` (UTC unless
    it carries an offset), ``2024-05-01T12:00:00+02:00``, ``2024-05-01``.
    """
    value = text.strip()
    match = _DURATION.match(value)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither a duration (90s, 15m, 2h, 1d) nor an ISO time (2024-05-01T12:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def format_time(seconds: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def render_event(event: HistoryEvent) -> str:
    """One line: time, epoch, what happened to which bucket, why, and which controller decided."""
    what = event.kind
    if event.bucket is not None:
        what += f" b{event.bucket}"
    if event.from_host is not None:
        what += f" from {event.from_host}"
    if event.to_host is not None:
        what += f" to {event.to_host}"
    if event.preserved is not None or event.cut is not None:
        show = ["?" if n is None else str(n) for n in (event.preserved, event.cut)]
        what += f": {show[0]} sessions preserved, {show[1]} cut"
    reason = f" ({event.reason})" if event.reason else ""
    by = f" [{event.controller}]" if event.controller else ""
    return f"{format_time(event.time)} epoch {event.epoch} {what}{reason}{by}"


def event_json(event: HistoryEvent) -> dict[str, Any]:
    return {
        "time": event.time,
        "time_utc": format_time(event.time),
        "epoch": event.epoch,
        "event": event.kind,
        "bucket": event.bucket,
        "from": event.from_host,
        "to": event.to_host,
        "reason": event.reason,
        "controller": event.controller,
        "preserved": event.preserved,
        "cut": event.cut,
    }
