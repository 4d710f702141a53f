"""Operator requests (drain, move, failback, pause): the new intents, a preview, and refusals.

Pure: the CLI reads a snapshot, asks :func:`evaluate` what a request would do, shows the preview,
and writes the returned intents with compare-and-set. The preview uses the planner's own
:func:`~controller.core.planner.compute_targets` on the snapshot with the new intents, so what the
operator confirms is what the controller will do (given the same health verdicts).

Why refuse at all: a request must never be the reason clients go unanswered. A request is refused
when, with it, some bucket that has an owner or a target now would get none, or when it sends a
bucket to a host that cannot take it (not up, no hook running, or drained).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from controller.core.model import ClusterView, Health, Intents
from controller.core.planner import compute_targets, eligible_hosts

RequestKind = Literal["drain", "undrain", "move", "unpin", "failback", "pause", "resume"]


@dataclass(frozen=True)
class Request:
    kind: RequestKind
    host: str | None = None
    bucket: int | None = None


@dataclass(frozen=True)
class Move:
    bucket: int
    from_host: str | None
    to_host: str | None
    reason: str


@dataclass(frozen=True)
class Evaluation:
    """What a request would do. ``refusal`` set means: do not write ``intents``."""

    request: Request
    intents: Intents
    changed: bool
    moves: tuple[Move, ...] = ()
    refusal: str = ""
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        return describe(self.request)


def describe(request: Request) -> str:
    """The request in words, as recorded in the history."""
    if request.kind in ("drain", "undrain"):
        return f"{request.kind} {request.host}"
    if request.kind == "move":
        return f"move b{request.bucket} to {request.host} (pin)"
    if request.kind == "unpin":
        return f"unpin b{request.bucket}"
    if request.kind == "failback":
        return f"failback {request.host}" if request.host else "failback all hosts"
    return request.kind


def host_problem(view: ClusterView, host: str) -> str:
    """Why ``host`` cannot receive buckets now, or '' when it can."""
    health = view.health.get(host)
    if health is None:
        return f"{host} has no health verdict yet (is a controller probing it?)"
    if health.state is not Health.UP:
        why = f": {health.reason}" if health.reason else ""
        return f"{host} is {health.state.value}{why}"
    if host not in view.members:
        return f"the hook of {host} is not running, nobody could apply the change there"
    if host in view.intents.drained:
        return f"{host} is drained; undrain it first"
    return ""


def _failback_hosts(view: ClusterView, host: str | None) -> list[str]:
    """Hosts a failback request is for: the one named, or every host able to take buckets now."""
    hosts = [host] if host is not None else [h for h in view.spec.host_ids if not host_problem(view, h)]
    return [h for h in hosts if any(view.map.owner_of(b) != h for b in view.spec.host(h).home_buckets)]


def new_intents(view: ClusterView, request: Request, now: float) -> Intents:
    """The intents after ``request`` (unchanged when it is already in effect)."""
    cur = view.intents
    if request.kind == "drain" and request.host is not None:
        return replace(cur, drained=cur.drained | {request.host})
    if request.kind == "undrain" and request.host is not None:
        return replace(cur, drained=cur.drained - {request.host})
    if request.kind == "move" and request.bucket is not None and request.host is not None:
        return replace(cur, pins={**cur.pins, request.bucket: request.host})
    if request.kind == "unpin" and request.bucket is not None:
        return replace(cur, pins={b: h for b, h in cur.pins.items() if b != request.bucket})
    if request.kind == "failback":
        hosts = _failback_hosts(view, request.host)
        return replace(cur, failback_requests={**cur.failback_requests, **{h: now for h in hosts}})
    if request.kind in ("pause", "resume"):
        return replace(cur, paused=request.kind == "pause")
    return cur


def _moves(view: ClusterView, before: Mapping[int, str | None], after: Mapping[int, str | None],
           reasons: Mapping[int, str]) -> tuple[Move, ...]:
    moves: list[Move] = []
    for bucket, target in sorted(after.items()):
        if target == before.get(bucket):
            continue
        state = view.map.buckets[bucket]
        current = state.owner or state.releasing
        if target == current:
            continue  # the request cancels a pending move: this bucket stays where it is
        moves.append(Move(bucket, current, target, reasons.get(bucket, "")))
    return tuple(moves)


def evaluate(view: ClusterView, request: Request, now: float) -> Evaluation:
    """Preview ``request`` on ``view``: new intents, the buckets that would move, or why it is refused."""
    spec = view.spec
    if request.host is not None and request.host not in spec.host_ids:
        hosts = ", ".join(spec.host_ids)
        return Evaluation(request, view.intents, False,
                          refusal=f"host {request.host!r} is not in cluster {spec.name} (hosts: {hosts})")
    if request.bucket is not None and request.bucket not in view.map.buckets:
        return Evaluation(request, view.intents, False,
                          refusal=f"bucket {request.bucket} does not exist; cluster {spec.name} has buckets "
                                  f"1..{len(view.map.buckets)}")
    intents = new_intents(view, request, now)
    notes: list[str] = []
    refusal = ""
    if request.kind == "move" and request.host is not None:
        refusal = host_problem(view, request.host)
    if request.kind == "failback":
        if request.host is not None:
            refusal = host_problem(view, request.host)
        if not refusal and intents.failback_requests == view.intents.failback_requests:
            notes.append("every home bucket is already with its home host: nothing to fail back")
        if spec.failback.policy != "manual":
            notes.append(f"failback policy is {spec.failback.policy}: the controller fails back by itself "
                         "and ignores manual requests")
    after_view = replace(view, intents=intents)
    before, _ = compute_targets(view, now)
    after, reasons = compute_targets(after_view, now)
    if request.kind == "resume" and view.intents.paused:
        # Pausing froze the map: on resume every bucket whose target differs from its owner moves.
        before = {b: (s.owner or s.releasing) for b, s in view.map.buckets.items()}
    moves = _moves(view, before, after, reasons)
    if not refusal:
        lost = sorted(b for b, t in after.items() if t is None and before.get(b) is not None)
        if lost:
            eligible = ", ".join(h for h in eligible_hosts(after_view)) or "none"
            refusal = (f"it would leave {'bucket' if len(lost) == 1 else 'buckets'} "
                       f"{', '.join(map(str, lost))} without an owner (hosts able to take buckets: {eligible})")
    if intents.paused and request.kind != "pause" and moves:
        notes.append("the controller is paused: these moves happen only after `clusterip-ctl resume`")
    if request.kind == "pause":
        notes.append("while paused the controller changes nothing, not even when a host fails")
    changed = intents != view.intents
    return Evaluation(request, intents, changed, moves, refusal, tuple(notes))


def render_moves(moves: tuple[Move, ...]) -> list[str]:
    """One line per bucket that would move."""
    lines = []
    for move in moves:
        src = move.from_host or "nobody"
        dst = move.to_host or "nobody"
        why = f" ({move.reason})" if move.reason else ""
        lines.append(f"  bucket {move.bucket}: {src} -> {dst}{why}")
    return lines
