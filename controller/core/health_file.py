"""Parse the *external health input*: a JSON file in which another checker states host liveness.

Why a file: it is the narrowest possible interface between the controller and any liveness checker
that is not the built-in SSH prober (a monitoring system, a test, an operator script). The writer
replaces the file atomically (write a temp file, rename it over); the controller notices the new
file at once (inotify; within ~10 ms where inotify does not work) and reacts as it would to a probe
verdict.

Format (one object, host id -> verdict; a verdict is a state string or an object)::

    {"h1": "up", "h2": {"state": "down", "reason": "power lost"}, "h3": "suspect"}

States are those of :class:`Health` (``up``, ``down``, ``suspect``, ``unknown``). A configured host
that the file does not mention is ``unknown``: it keeps what it owns and gets nothing new. This
module is pure: it turns text into verdicts, keeping ``since`` of verdicts whose state did not
change (delayed failback counts from ``since``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from controller.core.errors import SchemaError
from controller.core.model import Health, HostHealth

#: Largest health file we read; a few hundred hosts fit in a few kB.
MAX_HEALTH_FILE_BYTES = 64 * 1024
MAX_REASON = 200


def parse_health_file(
    text: str,
    hosts: Iterable[str],
    previous: Mapping[str, HostHealth],
    now: float,
) -> tuple[dict[str, HostHealth], list[str]]:
    """Return (verdict per configured host, one line per ignored entry); raise SchemaError if unusable.

    ``previous`` supplies ``since`` for hosts whose state is unchanged; ``now`` stamps changes.
    """
    if len(text) > MAX_HEALTH_FILE_BYTES:
        raise SchemaError(f"health file: {len(text)} bytes exceeds the {MAX_HEALTH_FILE_BYTES}-byte limit")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SchemaError(f"health file: not valid JSON ({exc})") from None
    except RecursionError:
        raise SchemaError("health file: JSON nested too deeply; write one object host -> state") from None
    if not isinstance(doc, dict):
        raise SchemaError(f"health file: expected a JSON object host -> state, got {type(doc).__name__}")
    known = list(hosts)
    warnings = [f"host {str(h)[:64]!r} is not in the configuration; ignored" for h in doc if h not in known]
    result: dict[str, HostHealth] = {}
    for host in known:
        state, reason = _verdict(doc.get(host), host)
        old = previous.get(host)
        since = old.since if old is not None and old.state is state else now
        result[host] = HostHealth(host, state, since, reason)
    return result, warnings


def _verdict(value: object, host: str) -> tuple[Health, str]:
    if value is None:
        return Health.UNKNOWN, "not in the health file"
    reason = "external health input"
    if isinstance(value, dict):
        raw_reason = value.get("reason", reason)
        if not isinstance(raw_reason, str):
            raise SchemaError(f"health file: {host}.reason must be a string")
        reason = raw_reason[:MAX_REASON]
        value = value.get("state")
    if not isinstance(value, str):
        raise SchemaError(f"health file: {host}: expected a state string such as \"up\" or \"down\"")
    try:
        return Health(value.lower()), reason
    except ValueError:
        states = ", ".join(h.value for h in Health)
        raise SchemaError(f"health file: {host}: {value[:40]!r} is not a state ({states})") from None
