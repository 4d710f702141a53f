"""The planner: from one snapshot of a cluster, decide the next bucket map and say why in one line.

Pure and deterministic: the same :class:`ClusterView` and ``now`` always give the same decision.
It works in two stages:

1. **Targets** — who *should* own each bucket: an operator pin, else the home host when failback
   allows, else the current owner while it may keep it, else (orphans) the home host or the
   least-loaded eligible host. Buckets of hosts that keep them are never touched, so a failure of one
   host moves only that host's buckets.
2. **Step** — how far the map may move towards the targets *now* without two hosts ever holding a
   bucket: a bucket is first revoked (owner None, ``releasing`` = old owner) and granted to its
   target only once the old owner has published, at an epoch at or after the revoke, that its kernel
   no longer holds it — or the old owner is down and its hook's ZooKeeper session is gone.

The result is the next map (epoch + 1 if anything changed), the revoke/grant actions in the order
they take effect, and a one-line summary for the log.

**Draining** (docs/drain.md). A *planned* move — the old owner is healthy and its backend can keep
tracked connections (:func:`can_drain`) — revokes with ``draining`` = old owner: its kernel stops
accepting new connections of the bucket but keeps those it tracks. ``held`` in a hook's status
lists only buckets accepting NEW connections, so the grant waits for exactly the same proof as a
plain move, and never do two hosts accept new connections of one bucket. After the grant the old
owner still drains; the drain ends (``draining`` None, a ``drain-end`` action with preserved and cut
counts) when it reports no tracked connection of the bucket at an epoch at or after the drain
started, when ``max_drain_s`` has passed (the rest are cut), when it is found down, or when the
bucket moves again; even while no host is eligible. A drainer whose hook is away keeps draining
(uncounted, so until the maximum), unless that hook ran with a dead-man switch (below): then its
kernel cut the sessions and the drain ends. A failed host's buckets never drain: their sessions are gone.

**A hook that died on a healthy host.** A hook whose status says it ran with a kernel dead-man
switch (``HookStatus.deadman_s``, controller/core/deadman.py) took its kernel out of service E after
its last refresh, before its ZooKeeper session could expire; a hook cut off from ZooKeeper
self-fenced at half the session timeout and stopped refreshing too. So once such a hook's session
is gone (it is not in ``members``) its buckets are released whatever the host's probes say: they
go to survivors at once (:func:`deadman_fenced`), and failback brings them home when the hook
returns. A hook without the field (memory backend, or an older hook) may have left a kernel that
still serves: its healthy host keeps its buckets, as before.

"Its hook's session is gone" proves a release only if a live hook would have re-registered by now.
Right after a ZooKeeper outage every session may have expired while the hooks (rightly) kept
serving, so a controller that has just (re)gained leadership passes ``trust_absence=False`` for a
grace period: an absent member then proves nothing, and only a published release does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from controller.core.model import DRAIN_BACKENDS, BucketMap, BucketState, ClusterView, Health

#: Buckets named in one summary line before it says "and N more".
_SUMMARY_ITEMS = 6


@dataclass(frozen=True)
class Action:
    """One step of a move. Revokes always come before the grant of the same bucket.

    ``drain-start``/``drain-end`` name the draining host; a drain-end carries how many of the
    sessions it tracked finished there (``preserved``) and how many were cut (``cut``), None when
    the hook never reported a count.
    """

    kind: Literal["revoke", "grant", "drain-start", "drain-end"]
    bucket: int
    host: str
    reason: str
    preserved: int | None = None
    cut: int | None = None


@dataclass(frozen=True)
class Decision:
    """What one planner run decided."""

    map: BucketMap
    changed: bool
    actions: tuple[Action, ...]
    targets: Mapping[int, str | None]
    summary: str
    waiting: Mapping[int, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- host predicates


def eligible_hosts(view: ClusterView) -> tuple[str, ...]:
    """Hosts that may receive buckets: probed up, a live hook to apply the change, and not drained."""
    return tuple(
        h
        for h in view.spec.host_ids
        if (hh := view.health.get(h)) is not None
        and hh.state is Health.UP
        and h in view.members
        and h not in view.intents.drained
    )


def deadman_fenced(view: ClusterView, host: str, trust_absence: bool = True) -> bool:
    """Has ``host``'s kernel provably stopped accepting because its hook's session is gone?

    True when the hook is not a member, its last status says it ran with a dead-man switch, and an
    absent member is to be believed (``trust_absence``: not right after a ZooKeeper outage, when
    every session may have expired while the hooks rightly kept serving).
    """
    if not trust_absence or host in view.members or host not in view.spec.host_ids:
        return False
    status = view.statuses.get(host)
    return status is not None and status.deadman_s is not None


def keeps_buckets(view: ClusterView, host: str, trust_absence: bool = True) -> bool:
    """A host keeps what it owns unless it is known down, drained, or its hook died with a dead-man switch.

    SUSPECT and UNKNOWN hosts keep (one slow probe must not move anything). A healthy host whose hook
    died keeps only when that hook had no dead-man switch (its kernel may still serve the buckets and
    nobody could revoke them); with one, its kernel has stopped (:func:`deadman_fenced`).
    """
    if host not in view.spec.host_ids or host in view.intents.drained:
        return False
    if deadman_fenced(view, host, trust_absence):
        return False
    health = view.health.get(host)
    return health is None or health.state is not Health.DOWN


#: How long a never-owned bucket waits for its home host's hook after the host was found up.
STARTUP_GRACE_S = 10.0


def _not_yet_judged(view: ClusterView, host: str, now: float) -> bool:
    """At start-up, should a never-owned bucket wait for its home host rather than go elsewhere?

    Yes while the home host has no probe verdict yet, or is up but its hook has not registered
    for less than STARTUP_GRACE_S: otherwise the first host to answer would collect every bucket
    and hand them back moments later, breaking sessions for nothing.
    """
    health = view.health.get(host)
    if health is None or health.state is Health.UNKNOWN:
        return True
    if health.state is Health.DOWN or host in view.members:
        return False
    return now - health.since < STARTUP_GRACE_S


def can_drain(view: ClusterView, host: str) -> bool:
    """May ``host`` keep the tracked connections of a bucket it gives up (a planned move)?

    Only a host that is in the configuration, not known down and whose hook is live (it has to apply
    the drain and count connections), on a backend that can express it, with draining enabled.
    """
    if view.spec.failback.max_drain_s <= 0 or view.spec.backend not in DRAIN_BACKENDS:
        return False
    if host not in view.spec.host_ids or host not in view.members:
        return False
    health = view.health.get(host)
    return health is None or health.state is not Health.DOWN


def keeps_draining(view: ClusterView, host: str, trust_absence: bool = True) -> bool:
    """May a drain that has started go on? Unless the drainer is down, gone from the configuration,
    draining was switched off, or its hook died with a dead-man switch (its kernel cut the sessions).
    A drainer whose hook is away without one keeps draining (its kernel may still serve the
    sessions, as keeps_buckets reasons for owners), only without counts, so until ``max_drain_s``."""
    if view.spec.failback.max_drain_s <= 0 or view.spec.backend not in DRAIN_BACKENDS:
        return False
    if deadman_fenced(view, host, trust_absence):
        return False
    health = view.health.get(host)
    return host in view.spec.host_ids and (health is None or health.state is not Health.DOWN)


def _drain_over(view: ClusterView, bucket: int, state: BucketState, now: float,
                trust_absence: bool = True) -> tuple[str, int | None] | None:
    """Why the drain of a granted bucket ends now, with how many sessions it cuts; None: it goes on."""
    host = state.draining
    assert host is not None
    status = view.statuses.get(host)
    counted = status is not None and status.epoch >= state.drain_epoch and bucket in status.sessions
    remaining = status.sessions[bucket] if counted and status is not None else None
    if not keeps_draining(view, host, trust_absence):
        health = view.health.get(host)
        if health is not None and health.state is Health.DOWN:
            return f"{host} went down while draining", remaining
        if deadman_fenced(view, host, trust_absence):
            return f"the hook of {host} died while draining (its dead-man switch stopped its kernel)", remaining
        return f"{host} can no longer drain (not configured, or draining disabled)", remaining
    if remaining == 0:
        return f"the last session on {host} closed", 0
    limit = view.spec.failback.max_drain_s
    if now - state.drain_since >= limit:
        return f"maximum drain time {limit:g} s reached", remaining
    return None


def _drain_end(bucket: int, state: BucketState, why: str, cut: int | None) -> Action:
    assert state.draining is not None
    start = state.drain_sessions
    preserved = None if start is None or cut is None else max(0, start - cut)
    kept = "?" if preserved is None else str(preserved)
    counts = f"{kept} sessions finished there, {'?' if cut is None else cut} cut"
    return Action("drain-end", bucket, state.draining, f"{why}; {counts}", preserved, cut)


def _failback_allowed(view: ClusterView, home: str, now: float) -> tuple[bool, str]:
    policy = view.spec.failback.policy
    if policy == "immediate":
        return True, f"failback to home host {home} (immediate)"
    if policy == "drain":
        return True, f"failback to home host {home} (drain: new connections at once, old ones finish on the survivor)"
    health = view.health[home]
    if policy == "delayed":
        hold = view.spec.failback.hold_down_s
        ok = now - health.since >= hold
        return ok, f"failback to home host {home} (up for {hold:g} s)"
    requested = view.intents.failback_requests.get(home)
    ok = requested is not None and requested >= health.since
    return ok, f"failback to home host {home} (requested by operator)"


def _why_leaving(view: ClusterView, host: str | None, trust_absence: bool = True) -> str:
    if host is None:
        return "unowned"
    if host in view.intents.drained:
        return f"{host} drained"
    health = view.health.get(host)
    if host not in view.spec.host_ids:
        return f"{host} is no longer in the configuration"
    if health is not None and health.state is Health.DOWN:
        return f"{host} down: {health.reason}" if health.reason else f"{host} down"
    if deadman_fenced(view, host, trust_absence):
        return f"hook of {host} died"
    return f"{host} gives it up"


# --------------------------------------------------------------------------- stage 1: targets


def compute_targets(
    view: ClusterView, now: float, trust_absence: bool = True
) -> tuple[dict[int, str | None], dict[int, str]]:
    """Return (target owner per bucket, reason per bucket whose target differs from its owner).

    ``trust_absence`` as in :func:`plan`: while False, a hook that is away never makes its host give
    up its buckets (a ZooKeeper outage must not revoke every bucket).
    """
    eligible = eligible_hosts(view)
    eligible_set = set(eligible)
    targets: dict[int, str | None] = {}
    reasons: dict[int, str] = {}
    orphans: list[int] = []
    for bucket, state in sorted(view.map.buckets.items()):
        current = state.owner
        pin = view.intents.pins.get(bucket)
        home = view.spec.home_of(bucket)
        if pin is not None and pin in eligible_set:
            targets[bucket] = pin
            reasons[bucket] = f"pinned to {pin} by operator"
        elif home is not None and home == current and keeps_buckets(view, home, trust_absence):
            targets[bucket] = home
        elif home is not None and home in eligible_set and (current is not None or state.releasing is not None):
            # Also while the bucket is between revoke and grant: otherwise a failback revoke would be
            # re-targeted to the least-loaded host (often the one it just left) and loop forever.
            allowed, why = _failback_allowed(view, home, now)
            if allowed:
                targets[bucket] = home
                reasons[bucket] = why
            elif current is not None and keeps_buckets(view, current, trust_absence):
                targets[bucket] = current
            else:
                orphans.append(bucket)
        elif current is not None and keeps_buckets(view, current, trust_absence):
            targets[bucket] = current
        else:
            orphans.append(bucket)

    load = {h: 0 for h in eligible}
    for owner in targets.values():
        if owner in load:
            load[owner] += 1
    order = {h: i for i, h in enumerate(view.spec.host_ids)}
    for bucket in orphans:
        state = view.map.buckets[bucket]
        previous = state.owner or state.releasing
        home = view.spec.home_of(bucket)
        if not eligible or (previous is None and home is not None and _not_yet_judged(view, home, now)):
            # Nobody can take it, or its home host has not been probed yet (start-up): wait rather
            # than pile every bucket onto whichever host answered first.
            targets[bucket] = None
            continue
        if previous is None and home in eligible_set:
            chosen = home  # bootstrap or an unowned bucket: its home host takes it
        else:
            # Least-loaded eligible host; ties go to the home host, then to configuration order.
            chosen = min(eligible, key=lambda h: (load[h], h != home, order[h]))
        assert chosen is not None
        targets[bucket] = chosen
        load[chosen] += 1
        reasons[bucket] = _why_leaving(view, previous, trust_absence)
    return targets, reasons


# --------------------------------------------------------------------------- stage 2: exclusive step


def _released(
    view: ClusterView, host: str, bucket: int, since_epoch: int, trust_absence: bool = True
) -> tuple[bool, str]:
    """Has ``host`` provably let go of ``bucket`` (revoked at ``since_epoch``)?"""
    status = view.statuses.get(host)
    if host not in view.members and not trust_absence and host in view.spec.host_ids:
        if status is not None and status.epoch >= since_epoch and bucket not in status.held:
            return True, f"{host} released it at epoch {status.epoch} before its hook left"
        return False, f"waiting for the hook of {host} to re-register (sessions may have expired in an outage)"
    if host in view.members:
        if status is None:
            return False, f"waiting for {host} to publish its status"
        if status.epoch >= since_epoch and bucket not in status.held:
            return True, f"{host} released it at epoch {status.epoch}"
        return False, f"waiting for {host} to release it (applied epoch {status.epoch})"
    health = view.health.get(host)
    if host not in view.spec.host_ids or (health is not None and health.state is Health.DOWN):
        return True, f"{host} down and its hook's session is gone"
    if deadman_fenced(view, host, trust_absence):
        status = view.statuses[host]
        return True, (f"its session is gone, so its dead-man switch stopped {host}'s kernel "
                      f"(E {status.deadman_s:g} s after the hook's last refresh, before the session could expire)")
    if status is not None and status.epoch >= since_epoch and bucket not in status.held:
        return True, f"{host} released it at epoch {status.epoch} before its hook left"
    return False, f"waiting for the hook of {host} to return and release it (host not down)"


def _held_elsewhere(view: ClusterView, bucket: int, target: str) -> str | None:
    """Name a live hook other than ``target`` that still holds ``bucket`` or has not reported yet."""
    for host in sorted(view.members):
        if host == target:
            continue
        status = view.statuses.get(host)
        if status is None:
            return f"{host} has not published its status yet"
        if bucket in status.held:
            return f"{host} still holds it"
    return None


def plan(view: ClusterView, now: float, trust_absence: bool = True) -> Decision:
    """Decide the next map for ``view``; see the module docstring for the rules (and ``trust_absence``)."""
    current = view.map
    if view.intents.paused:
        return Decision(current, False, (), {}, f"epoch {current.epoch}: paused by operator, changing nothing")
    if not eligible_hosts(view):
        ends = _end_drains_only(view, now, trust_absence)
        if ends is not None:
            return ends
        return Decision(
            current,
            False,
            (),
            {},
            f"epoch {current.epoch}: no host is eligible (up, hook present, not drained): changing nothing",
        )
    targets, reasons = compute_targets(view, now, trust_absence)
    epoch = current.epoch + 1
    new_buckets: dict[int, BucketState] = {}
    actions: list[Action] = []
    waiting: dict[int, str] = {}
    for bucket, state in sorted(current.buckets.items()):
        target = targets[bucket]
        new_state = state
        reason = reasons.get(bucket, "")
        ended: tuple[str, int | None] | None = None
        if state.draining is not None:
            ended = _drain_over(view, bucket, state, now, trust_absence)
            if ended is not None:
                new_state = state = replace(state, draining=None, drain_since=0.0, drain_epoch=0, drain_sessions=None)
        if state.owner is not None and state.owner != target and target is not None:
            owner = state.owner
            gone = owner not in view.members and not keeps_buckets(view, owner, trust_absence)
            if gone:
                ok, why = _released(view, owner, bucket, state.changed_epoch, trust_absence)
                blocker = _held_elsewhere(view, bucket, target)
                if ok and blocker is None:
                    actions.append(Action("revoke", bucket, owner, f"{reason}; {why}"))
                    actions.append(Action("grant", bucket, target, f"{reason}; {why}"))
                    new_state = BucketState(owner=target, changed_epoch=epoch, since=now)
                else:
                    waiting[bucket] = blocker or why
            if new_state is state:
                if can_drain(view, owner):
                    actions.append(Action("revoke", bucket, owner, f"{reason}; {owner} keeps its sessions (draining)"))
                    actions.append(Action("drain-start", bucket, owner, f"{reason}; new connections go to {target}"))
                    new_state = BucketState(owner=None, releasing=owner, target=target, changed_epoch=epoch, since=now,
                                            draining=owner, drain_since=now, drain_epoch=epoch)
                else:
                    actions.append(Action("revoke", bucket, owner, reason))
                    new_state = BucketState(owner=None, releasing=owner, target=target, changed_epoch=epoch,
                                            since=now)
        elif state.owner is None and target is not None:
            releasing = state.releasing
            ok, why = (
                (True, "")
                if releasing is None
                else _released(view, releasing, bucket, state.changed_epoch, trust_absence)
            )
            blocker = _held_elsewhere(view, bucket, target) if ok else None
            if ok and blocker is None:
                grant_reason = "; ".join(x for x in (reason or _why_leaving(view, releasing, trust_absence), why) if x)
                actions.append(Action("grant", bucket, target, grant_reason))
                new_state = BucketState(owner=target, changed_epoch=epoch, since=now)
                drainer = state.draining
                if drainer is not None and drainer != target and keeps_draining(view, drainer, trust_absence):
                    status = view.statuses.get(drainer)
                    count = status.sessions.get(bucket) if status is not None else None
                    new_state = replace(new_state, draining=drainer, drain_since=state.drain_since,
                                        drain_epoch=state.drain_epoch, drain_sessions=count)
            else:
                waiting[bucket] = blocker or why
                if state.target != target:
                    new_state = replace(state, target=target)
        if state.draining is not None and new_state.draining != state.draining:
            # The bucket moved again, its drainer failed, or (target = drainer) it took the bucket back.
            status = view.statuses.get(state.draining)
            left = status.sessions.get(bucket) if status is not None else None
            if new_state.owner == state.draining:
                why = "it owns the bucket again, its sessions continue"
            elif not keeps_draining(view, state.draining, trust_absence):
                why = f"{state.draining} can no longer drain (down, not configured or draining disabled)"
            else:
                why = "the bucket moves again"
            ended = (why, 0 if new_state.owner == state.draining else left)
        if ended is not None:
            original = current.buckets[bucket]
            actions.append(_drain_end(bucket, original, *ended))
        new_buckets[bucket] = new_state
    changed = any(new_buckets[b] != current.buckets[b] for b in current.buckets)
    new_map = BucketMap(current.cluster, epoch, new_buckets) if changed else current
    summary = _summarise(current.epoch, new_map.epoch, actions, waiting)
    return Decision(new_map, changed, tuple(actions), targets, summary, waiting)


def _end_drains_only(view: ClusterView, now: float, trust_absence: bool = True) -> Decision | None:
    """With no host to move anything to, still end the drains that are over (a drain always ends)."""
    current = view.map
    buckets = dict(current.buckets)
    actions: list[Action] = []
    for bucket, state in sorted(current.buckets.items()):
        ended = _drain_over(view, bucket, state, now, trust_absence) if state.draining is not None else None
        if ended is not None:
            actions.append(_drain_end(bucket, state, *ended))
            buckets[bucket] = replace(state, draining=None, drain_since=0.0, drain_epoch=0, drain_sessions=None)
    if not actions:
        return None
    new_map = BucketMap(current.cluster, current.epoch + 1, buckets)
    summary = _summarise(current.epoch, new_map.epoch, actions, {}) + "; no host is eligible for anything else"
    return Decision(new_map, True, tuple(actions), {}, summary)


def _summarise(old_epoch: int, new_epoch: int, actions: list[Action], waiting: dict[int, str]) -> str:
    parts: list[str] = []
    for action in actions[:_SUMMARY_ITEMS]:
        prep = {"revoke": "from", "grant": "to", "drain-start": "on", "drain-end": "on"}[action.kind]
        parts.append(f"{action.kind} b{action.bucket} {prep} {action.host} ({action.reason})")
    if len(actions) > _SUMMARY_ITEMS:
        parts.append(f"and {len(actions) - _SUMMARY_ITEMS} more actions")
    for bucket, why in list(sorted(waiting.items()))[:_SUMMARY_ITEMS]:
        parts.append(f"b{bucket} {why}")
    if len(waiting) > _SUMMARY_ITEMS:
        parts.append(f"and {len(waiting) - _SUMMARY_ITEMS} more waiting")
    if not parts:
        return f"epoch {old_epoch}: no change, every bucket is with its target"
    head = f"epoch {old_epoch}->{new_epoch}" if new_epoch != old_epoch else f"epoch {old_epoch}"
    return f"{head}: " + "; ".join(parts)
