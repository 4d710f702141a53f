"""Encode and decode the JSON stored in znodes, with a schema version, rejecting hostile data.

Every document carries ``"schema": SCHEMA_VERSION`` and a ``"kind"``. Decoders trust nothing: sizes,
types, ranges and host-id syntax are all checked, and any problem raises :class:`SchemaError` with a
message naming the field, so that one bad znode is reported instead of crashing the controller or a
hook.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from controller.core.errors import SchemaError
from controller.core.model import (
    BACKENDS,
    Backend,
    BucketMap,
    BucketState,
    Health,
    HookStatus,
    HostHealth,
    Intents,
    Member,
)

SCHEMA_VERSION = 1
#: Largest znode payload we accept; ZooKeeper's own limit is 1 MiB, ours is far below any real need.
MAX_DOCUMENT_BYTES = 256 * 1024
MAX_BUCKET = 256
MAX_TEXT = 512
#: Largest per-bucket connection count a hook may report (conntrack tables are far smaller).
MAX_SESSIONS = 2**31 - 1
HOST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Kind = Literal["bucket-map", "member", "hook-status", "intents", "health", "history-event"]


@dataclass(frozen=True)
class HistoryEvent:
    """One decision or operator request, appended to the bounded history."""

    time: float
    epoch: int
    kind: str  # "grant", "revoke", "move", "request", "drain-start", ...
    reason: str
    controller: str
    bucket: int | None = None
    from_host: str | None = None
    to_host: str | None = None
    #: drain-end only: sessions that finished on the draining host / were cut at the end (None: unknown)
    preserved: int | None = None
    cut: int | None = None


# --------------------------------------------------------------------------- low-level checks


def _load(data: bytes, kind: Kind) -> dict[str, Any]:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise SchemaError(f"{kind}: document of {len(data)} bytes exceeds the {MAX_DOCUMENT_BYTES}-byte limit")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SchemaError(f"{kind}: not valid UTF-8 JSON ({exc})") from None
    except RecursionError:
        raise SchemaError(f"{kind}: JSON nested too deeply; rewrite the znode") from None
    if not isinstance(doc, dict):
        raise SchemaError(f"{kind}: expected a JSON object, got {type(doc).__name__}")
    version = doc.get("schema")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"{kind}: schema version {version!r} is not supported (this software reads {SCHEMA_VERSION}); "
            "upgrade the component that reads it, or rewrite the znode"
        )
    if doc.get("kind") != kind:
        raise SchemaError(f"{kind}: document kind is {doc.get('kind')!r}, expected {kind!r}")
    return doc


def _dump(kind: Kind, body: Mapping[str, Any]) -> bytes:
    doc = {"schema": SCHEMA_VERSION, "kind": kind, **body}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _int(doc: Mapping[str, Any], key: str, where: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"{where}.{key}: expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise SchemaError(f"{where}.{key}: {value} is outside {lo}..{hi}")
    return value


def _float(doc: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = doc.get(key, default)
    # An integer beyond a float's range overflows math.isfinite and float(): check its size first.
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**1000:
        raise SchemaError(f"{where}.{key}: number too large")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SchemaError(f"{where}.{key}: expected a finite number, got {value!r:.40}")
    return float(value)


def _text(doc: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise SchemaError(f"{where}.{key}: expected a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise SchemaError(f"{where}.{key}: string of {len(value)} characters exceeds {MAX_TEXT}")
    return value


def host_id(value: object, where: str) -> str:
    """Check a host id taken from untrusted data: znode-safe characters, bounded length."""
    if not isinstance(value, str) or not HOST_ID_RE.fullmatch(value):
        raise SchemaError(f"{where}: {value!r:.70} is not a valid host id ([A-Za-z0-9._-], 1..64 characters)")
    return value


def _opt_host(doc: Mapping[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    return None if value is None else host_id(value, f"{where}.{key}")


def _bucket(value: object, where: str) -> int:
    if isinstance(value, str) and value.isdigit() and len(value) <= 3:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BUCKET:
        raise SchemaError(f"{where}: {value!r:.40} is not a bucket number 1..{MAX_BUCKET}")
    return value


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(f"{where}: expected an object, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- bucket map


def _bucket_doc(s: BucketState) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "owner": s.owner,
        "releasing": s.releasing,
        "target": s.target,
        "changed_epoch": s.changed_epoch,
        "since": s.since,
    }
    if s.draining is not None:
        # Written only while a bucket drains: maps without a drain stay byte-identical to before,
        # and a hook of an older version simply ignores these keys (it drops the bucket: a plain move).
        doc.update(draining=s.draining, drain_since=s.drain_since, drain_epoch=s.drain_epoch,
                   drain_sessions=s.drain_sessions)
    return doc


def _drain_fields(entry: Mapping[str, Any], at: str, epoch: int) -> dict[str, Any]:
    """The optional drain keys of one bucket (absent in maps written before draining existed)."""
    draining = _opt_host(entry, "draining", at)
    if draining is None:
        return {}
    sessions = entry.get("drain_sessions")
    return {
        "draining": draining,
        "drain_since": _float(entry, "drain_since", at, 0.0),
        "drain_epoch": _int(entry, "drain_epoch", at, hi=epoch),
        "drain_sessions": None if sessions is None else _int(entry, "drain_sessions", at, hi=MAX_SESSIONS),
    }


def encode_map(bucket_map: BucketMap) -> bytes:
    buckets = {str(b): _bucket_doc(s) for b, s in sorted(bucket_map.buckets.items())}
    return _dump("bucket-map", {"cluster": bucket_map.cluster, "epoch": bucket_map.epoch, "buckets": buckets})


def decode_map(data: bytes) -> BucketMap:
    doc = _load(data, "bucket-map")
    where = "bucket-map"
    cluster = _text(doc, "cluster", where)
    epoch = _int(doc, "epoch", where)
    raw = _object(doc.get("buckets"), f"{where}.buckets")
    buckets: dict[int, BucketState] = {}
    for key, value in raw.items():
        bucket = _bucket(key, f"{where}.buckets key")
        entry = _object(value, f"{where}.buckets.{bucket}")
        at = f"{where}.buckets.{bucket}"
        state = BucketState(
            owner=_opt_host(entry, "owner", at),
            releasing=_opt_host(entry, "releasing", at),
            target=_opt_host(entry, "target", at),
            changed_epoch=_int(entry, "changed_epoch", at, hi=epoch),
            since=_float(entry, "since", at, 0.0),
            **_drain_fields(entry, at, epoch),
        )
        if state.owner is not None and state.releasing is not None:
            raise SchemaError(f"{at}: has both an owner and a releasing host; a bucket is one or the other")
        if state.draining is not None and state.draining == state.owner:
            raise SchemaError(f"{at}: {state.owner} both owns and drains it; a host does one or the other")
        buckets[bucket] = state
    expected = set(range(1, len(buckets) + 1))
    if set(buckets) != expected:
        raise SchemaError(f"{where}.buckets: bucket numbers must be 1..{len(buckets)} without gaps")
    return BucketMap(cluster=cluster, epoch=epoch, buckets=buckets)


# --------------------------------------------------------------------------- member and status


def encode_member(member: Member) -> bytes:
    return _dump(
        "member",
        {
            "host_id": member.host_id,
            "address": member.address,
            "version": member.version,
            "backend": member.backend,
        },
    )


def decode_member(data: bytes, expected_host: str | None = None) -> Member:
    """Decode a member znode; ``expected_host`` is the znode's name, which the content must match."""
    doc = _load(data, "member")
    hid = host_id(doc.get("host_id"), "member.host_id")
    if expected_host is not None and hid != expected_host:
        raise SchemaError(f"member {expected_host}: claims host id {hid!r}; a hook may only register as itself")
    backend = doc.get("backend")
    if backend not in BACKENDS:
        raise SchemaError(f"member {hid}: backend {backend!r:.40} is not one of {', '.join(BACKENDS)}")
    checked: Backend = backend
    return Member(
        host_id=hid,
        address=_text(doc, "address", "member"),
        version=_text(doc, "version", "member"),
        backend=checked,
    )


def encode_status(status: HookStatus) -> bytes:
    return _dump(
        "hook-status",
        {
            "host_id": status.host_id,
            "epoch": status.epoch,
            "held": sorted(status.held),
            "updated": status.updated,
            "error": status.error,
            "draining": sorted(status.draining),
            "sessions": {str(b): n for b, n in sorted(status.sessions.items())},
            # Only with a dead-man switch: statuses without one stay byte-identical to before.
            **({} if status.deadman_s is None else {"deadman_s": status.deadman_s}),
        },
    )


def decode_status(data: bytes, expected_host: str | None = None) -> HookStatus:
    doc = _load(data, "hook-status")
    hid = host_id(doc.get("host_id"), "hook-status.host_id")
    if expected_host is not None and hid != expected_host:
        raise SchemaError(f"hook-status {expected_host}: claims host id {hid!r}; ignoring it")
    held = doc.get("held")
    if not isinstance(held, list) or len(held) > MAX_BUCKET:
        raise SchemaError(f"hook-status {hid}: held must be a list of at most {MAX_BUCKET} buckets")
    return HookStatus(
        host_id=hid,
        epoch=_int(doc, "epoch", f"hook-status {hid}"),
        held=frozenset(_bucket(b, f"hook-status {hid}.held") for b in held),
        updated=_float(doc, "updated", f"hook-status {hid}"),
        error=_text(doc, "error", f"hook-status {hid}", ""),
        draining=_bucket_list(doc, "draining", f"hook-status {hid}"),
        sessions=_sessions(doc, f"hook-status {hid}"),
        deadman_s=_deadman(doc, f"hook-status {hid}"),
    )


#: Largest dead-man expiry a status may claim; the real one is a fraction of the session timeout (<= 20 s).
MAX_DEADMAN_S = 3600.0


def _deadman(doc: Mapping[str, Any], where: str) -> float | None:
    """The hook's dead-man expiry E in seconds; None when absent (no switch, or an older hook)."""
    if doc.get("deadman_s") is None:
        return None
    value = _float(doc, "deadman_s", where)
    if not 0 < value <= MAX_DEADMAN_S:
        raise SchemaError(f"{where}.deadman_s: {value:g} is outside (0, {MAX_DEADMAN_S:g}] seconds")
    return value


def _bucket_list(doc: Mapping[str, Any], key: str, where: str) -> frozenset[int]:
    value = doc.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_BUCKET:
        raise SchemaError(f"{where}.{key}: expected a list of at most {MAX_BUCKET} buckets")
    return frozenset(_bucket(b, f"{where}.{key}") for b in value)


def _sessions(doc: Mapping[str, Any], where: str) -> dict[int, int]:
    """Per-bucket connection counts (absent in statuses written before draining existed)."""
    raw = _object(doc.get("sessions", {}), f"{where}.sessions")
    if len(raw) > MAX_BUCKET:
        raise SchemaError(f"{where}.sessions: more than {MAX_BUCKET} buckets")
    return {_bucket(b, f"{where}.sessions key"): _int(raw, b, f"{where}.sessions", hi=MAX_SESSIONS) for b in raw}


# --------------------------------------------------------------------------- intents and health


def encode_intents(intents: Intents) -> bytes:
    return _dump(
        "intents",
        {
            "drained": sorted(intents.drained),
            "pins": {str(b): h for b, h in sorted(intents.pins.items())},
            "failback_requests": dict(sorted(intents.failback_requests.items())),
            "paused": intents.paused,
        },
    )


def decode_intents(data: bytes) -> Intents:
    doc = _load(data, "intents")
    drained = doc.get("drained", [])
    if not isinstance(drained, list) or len(drained) > 1024:
        raise SchemaError("intents.drained: expected a list of host ids")
    pins = _object(doc.get("pins", {}), "intents.pins")
    requests = _object(doc.get("failback_requests", {}), "intents.failback_requests")
    paused = doc.get("paused", False)
    if not isinstance(paused, bool):
        raise SchemaError("intents.paused: expected true or false")
    return Intents(
        drained=frozenset(host_id(h, "intents.drained") for h in drained),
        pins={_bucket(b, "intents.pins key"): host_id(h, f"intents.pins.{b}") for b, h in pins.items()},
        failback_requests={
            host_id(h, "intents.failback_requests key"): _float(requests, h, "intents.failback_requests")
            for h in requests
        },
        paused=paused,
    )


def encode_health(health: Mapping[str, HostHealth]) -> bytes:
    hosts = {
        h.host_id: {"state": h.state.value, "since": h.since, "reason": h.reason, "latency_ms": h.latency_ms}
        for h in sorted(health.values(), key=lambda x: x.host_id)
    }
    return _dump("health", {"hosts": hosts})


def decode_health(data: bytes) -> dict[str, HostHealth]:
    doc = _load(data, "health")
    hosts = _object(doc.get("hosts"), "health.hosts")
    result: dict[str, HostHealth] = {}
    for key, value in hosts.items():
        hid = host_id(key, "health.hosts key")
        entry = _object(value, f"health.hosts.{hid}")
        try:
            state = Health(entry.get("state"))
        except ValueError:
            raise SchemaError(f"health.hosts.{hid}.state: {entry.get('state')!r:.40} is not a health state") from None
        latency = entry.get("latency_ms")
        result[hid] = HostHealth(
            host_id=hid,
            state=state,
            since=_float(entry, "since", f"health.hosts.{hid}"),
            reason=_text(entry, "reason", f"health.hosts.{hid}", ""),
            latency_ms=None if latency is None else _float(entry, "latency_ms", f"health.hosts.{hid}"),
        )
    return result


# --------------------------------------------------------------------------- history


def encode_event(event: HistoryEvent) -> bytes:
    return _dump(
        "history-event",
        {
            "time": event.time,
            "epoch": event.epoch,
            "event": event.kind,
            "reason": event.reason[:MAX_TEXT],
            "controller": event.controller,
            "bucket": event.bucket,
            "from": event.from_host,
            "to": event.to_host,
            **({} if event.preserved is None else {"preserved": event.preserved}),
            **({} if event.cut is None else {"cut": event.cut}),
        },
    )


def decode_event(data: bytes) -> HistoryEvent:
    doc = _load(data, "history-event")
    where = "history-event"
    bucket = doc.get("bucket")
    return HistoryEvent(
        time=_float(doc, "time", where),
        epoch=_int(doc, "epoch", where),
        kind=_text(doc, "event", where),
        reason=_text(doc, "reason", where, ""),
        controller=_text(doc, "controller", where, ""),
        bucket=None if bucket is None else _bucket(bucket, f"{where}.bucket"),
        from_host=_opt_host(doc, "from", where),
        to_host=_opt_host(doc, "to", where),
        preserved=None if doc.get("preserved") is None else _int(doc, "preserved", where, hi=MAX_SESSIONS),
        cut=None if doc.get("cut") is None else _int(doc, "cut", where, hi=MAX_SESSIONS),
    )
