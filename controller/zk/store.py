"""Typed reads and writes of one cluster's znodes (layout in controller.core.zk_layout).

Reads return model objects plus znode versions; writes are idempotent (NodeExists counts as done)
or compare-and-set. A znode that fails to decode is skipped and reported through ``problems`` so
one hostile or corrupt znode never stops the controller.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NoAuthError, NodeExistsError, NoNodeError, RolledBackError
from kazoo.interfaces import IAsyncResult
from kazoo.protocol.states import ZnodeStat

from controller.core import schema
from controller.core import zk_layout as layout
from controller.core.errors import SchemaError
from controller.core.model import BucketMap, ClusterSpec, HookStatus, HostHealth, Intents, Member
from controller.zk.client import mapped_errors, retried

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreSnapshot:
    """What one cluster's znodes say right now."""

    map: BucketMap
    map_version: int  # -1: the map znode does not exist yet
    members: Mapping[str, Member]
    statuses: Mapping[str, HookStatus]
    intents: Intents
    intents_version: int
    problems: tuple[str, ...] = field(default=())
    #: znode version of each host's status as read (hosts without a status znode are absent)
    status_versions: Mapping[str, int] = field(default_factory=dict)


class ClusterStore:
    """One cluster's znodes, through one kazoo client."""

    def __init__(self, client: KazooClient, spec: ClusterSpec) -> None:
        self.client = client
        self.spec = spec
        self.name = spec.name

    # ------------------------------------------------------------------ set-up

    def ensure_paths(self) -> None:
        """Create the cluster's persistent parents; idempotent, survives reconnects."""
        with mapped_errors(f"preparing znodes of cluster {self.name}"):
            for path in (
                layout.members_path(self.name),
                layout.statuses_path(self.name),
                layout.history_path(self.name),
            ):
                retried(self.client, self.client.ensure_path, path)

    # ------------------------------------------------------------------ reads

    def read_map(self) -> tuple[BucketMap, int]:
        """The map and its znode version; an empty epoch-0 map (version -1) when none was written."""
        with mapped_errors(f"reading the map of {self.name}"):
            try:
                data, stat = retried(self.client, self.client.get, layout.map_path(self.name))
            except NoNodeError:
                return BucketMap.empty(self.name, self.spec.buckets), -1
        return self._decode_map(data), stat.version

    def _decode_map(self, data: bytes) -> BucketMap:
        bucket_map = schema.decode_map(data)
        if len(bucket_map.buckets) != self.spec.buckets:
            raise SchemaError(
                f"{layout.map_path(self.name)}: map has {len(bucket_map.buckets)} buckets but the config says "
                f"{self.spec.buckets}; changing the bucket count needs `clusterip-ctl map reset` (see docs)"
            )
        return bucket_map

    def read_intents(self) -> tuple[Intents, int]:
        with mapped_errors(f"reading the intents of {self.name}"):
            try:
                data, stat = retried(self.client, self.client.get, layout.intents_path(self.name))
            except NoNodeError:
                return Intents(), -1
        return schema.decode_intents(data), stat.version

    def read_members(self, problems: list[str]) -> dict[str, Member]:
        members: dict[str, Member] = {}
        path = layout.members_path(self.name)
        with mapped_errors(f"listing members of {self.name}"):
            try:
                children = retried(self.client, self.client.get_children, path)
            except NoNodeError:
                return members
            for child in sorted(children):
                try:
                    data, stat = retried(self.client, self.client.get, f"{path}/{child}")
                except NoNodeError:
                    continue
                try:
                    member = schema.decode_member(data, expected_host=child)
                except SchemaError as exc:
                    problems.append(f"{path}/{child}: {exc}")
                    continue
                if child not in self.spec.host_ids:
                    problems.append(f"{path}/{child}: host {child!r} is not in the configuration; ignored")
                    continue
                members[child] = Member(
                    member.host_id, member.address, member.version, member.backend, stat.ephemeralOwner
                )
        return members

    def snapshot(self) -> StoreSnapshot:
        """Read map, intents, members and statuses in one pipelined batch of requests.

        Paths are known from the configuration, so every get is sent at once and the replies are
        awaited together: one round trip instead of one per znode, which keeps the controller's
        reaction time in single milliseconds.
        """
        problems: list[str] = []
        name = self.name
        hosts = self.spec.host_ids
        with mapped_errors(f"reading cluster {name}"):
            pending_map = self.client.get_async(layout.map_path(name))
            pending_intents = self.client.get_async(layout.intents_path(name))
            # Statuses before members: a session's requests are served in order, so a member read as
            # absent was absent when its status was read, and that status version predates any
            # registration since (a hook registers with a status write): write_map can check it.
            pending_status = {h: self.client.get_async(layout.status_path(name, h)) for h in hosts}
            pending_members = {h: self.client.get_async(layout.member_path(name, h)) for h in hosts}
            map_reply = _await(pending_map)
            intents_reply = _await(pending_intents)
            status_replies = {h: _await(r) for h, r in pending_status.items()}
            member_replies = {h: _await(r) for h, r in pending_members.items()}
        if map_reply is None:
            bucket_map, version = BucketMap.empty(name, self.spec.buckets), -1
        else:
            bucket_map, version = self._decode_map(map_reply[0]), map_reply[1].version
        if intents_reply is None:
            intents, intents_version = Intents(), -1
        else:
            intents, intents_version = schema.decode_intents(intents_reply[0]), intents_reply[1].version
        members: dict[str, Member] = {}
        for host, reply in member_replies.items():
            if reply is None:
                continue
            try:
                member = schema.decode_member(reply[0], expected_host=host)
            except SchemaError as exc:
                problems.append(f"{layout.member_path(name, host)}: {exc}")
                continue
            members[host] = Member(
                member.host_id, member.address, member.version, member.backend, reply[1].ephemeralOwner
            )
        statuses: dict[str, HookStatus] = {}
        status_versions = {h: reply[1].version for h, reply in status_replies.items() if reply is not None}
        for host, reply in status_replies.items():
            if reply is None or not reply[0]:
                continue  # none, or made empty in advance by `acl init` (docs/security.md)
            try:
                status = schema.decode_status(reply[0], expected_host=host)
            except SchemaError as exc:
                problems.append(f"{layout.status_path(name, host)}: {exc}")
                continue
            if any(b > self.spec.buckets for b in status.held):
                problems.append(f"{layout.status_path(name, host)}: reports buckets above {self.spec.buckets}")
                continue
            statuses[host] = status
        return StoreSnapshot(bucket_map, version, members, statuses, intents, intents_version, tuple(problems),
                             status_versions)

    def read_health(self) -> dict[str, HostHealth]:
        with mapped_errors(f"reading health of {self.name}"):
            try:
                data, _ = retried(self.client, self.client.get, layout.health_path(self.name))
            except NoNodeError:
                return {}
        return schema.decode_health(data)

    def read_history(self, since: float = 0.0, limit: int = layout.HISTORY_LIMIT) -> list[schema.HistoryEvent]:
        """Events at or after ``since`` (wall clock), oldest first; all gets pipelined (one round trip)."""
        path = layout.history_path(self.name)
        events: list[schema.HistoryEvent] = []
        with mapped_errors(f"reading history of {self.name}"):
            try:
                children = sorted(retried(self.client, self.client.get_children, path))
            except NoNodeError:
                return events
            pending = [self.client.get_async(f"{path}/{child}") for child in children[-limit:]]
            replies = [_await(reply) for reply in pending]
        for reply in replies:
            if reply is None:
                continue  # pruned between listing and reading
            try:
                event = schema.decode_event(reply[0])
            except SchemaError:
                continue
            if event.time >= since:
                events.append(event)
        return events

    # ------------------------------------------------------------------ writes (controller)

    def write_map(self, new_map: BucketMap, expected_version: int, fence_path: str | None,
                  absent_statuses: Mapping[str, int] | None = None) -> bool:
        """Compare-and-set the map, fenced by the writer's election znode.

        ``absent_statuses``: host -> status znode version read while that host's hook was absent. A
        hook registers in one transaction with a write of its status, so checking those versions
        makes the write fail if an absent hook came back after the snapshot: the decision may have
        counted its absence as a release, and the returning hook may already have read the old map.

        Returns False (and writes nothing) when another writer changed the map first, the fence
        znode is gone (this replica lost its session and with it the leadership), or an absent hook
        registered meanwhile.
        """
        data = schema.encode_map(new_map)
        path = layout.map_path(self.name)
        txn = self.client.transaction()
        if fence_path is not None:
            txn.check(fence_path, 0)
        for host, version in sorted((absent_statuses or {}).items()):
            txn.check(layout.status_path(self.name, host), version)
        if expected_version < 0:
            txn.create(path, data)
        else:
            txn.set_data(path, data, version=expected_version)
        with mapped_errors(f"writing the map of {self.name}"):
            results = txn.commit()
        failed = [r for r in results if isinstance(r, Exception) and not isinstance(r, RolledBackError)]
        if any(isinstance(r, NoAuthError) for r in failed):
            with mapped_errors(f"writing the map of {self.name}"):
                raise failed[0]
        if failed:
            log.info("map write for %s rejected: %s", self.name, type(failed[0]).__name__)
            return False
        return True

    def write_health(self, health: Mapping[str, HostHealth]) -> None:
        data = schema.encode_health(health)
        path = layout.health_path(self.name)
        with mapped_errors(f"publishing health of {self.name}"):
            try:
                retried(self.client, self.client.set, path, data)
            except NoNodeError:
                try:
                    retried(self.client, self.client.create, path, data, makepath=True)
                except NodeExistsError:
                    retried(self.client, self.client.set, path, data)

    def write_health_async(self, health: Mapping[str, HostHealth]) -> None:
        """Publish the verdicts without waiting (they are for operators, not for the handoff)."""
        data = schema.encode_health(health)
        path = layout.health_path(self.name)

        def created_or_set(reply: IAsyncResult) -> None:
            try:
                reply.get_nowait()
            except NoNodeError:
                self.client.create_async(path, data, makepath=True)
            except Exception as exc:
                log.info("health of %s not published: %s", self.name, type(exc).__name__)

        with mapped_errors(f"publishing health of {self.name}"):
            self.client.set_async(path, data).rawlink(created_or_set)

    def append_history(self, events: Iterable[schema.HistoryEvent], wait: bool = True) -> None:
        """Append events; with ``wait=False`` the creates are only sent (the controller's hot path)."""
        prefix = layout.history_event_prefix(self.name)
        with mapped_errors(f"appending history of {self.name}"):
            pending = [self.client.create_async(prefix, schema.encode_event(e), sequence=True) for e in events]
            if wait:
                for reply in pending:
                    reply.get()

    def prune_history(self, keep: int = layout.HISTORY_LIMIT) -> int:
        path = layout.history_path(self.name)
        with mapped_errors(f"pruning history of {self.name}"):
            try:
                children = sorted(retried(self.client, self.client.get_children, path))
            except NoNodeError:
                return 0
            extra = children[: max(0, len(children) - keep)]
            for child in extra:
                with contextlib.suppress(NoNodeError):
                    self.client.delete(f"{path}/{child}")
        return len(extra)

    # ------------------------------------------------------------------ writes (clusterip-ctl)

    def write_intents(self, intents: Intents, expected_version: int) -> bool:
        """Compare-and-set the operator intents; False when someone else changed them first."""
        data = schema.encode_intents(intents)
        path = layout.intents_path(self.name)
        with mapped_errors(f"writing intents of {self.name}"):
            try:
                if expected_version < 0:
                    self.client.create(path, data, makepath=True)
                else:
                    self.client.set(path, data, version=expected_version)
            except (BadVersionError, NodeExistsError):
                return False
        return True

    # ------------------------------------------------------------------ writes (hook)

    def publish_status(self, status: HookStatus) -> None:
        """Idempotently publish what this host's kernel holds (persistent znode)."""
        data = schema.encode_status(status)
        path = layout.status_path(self.name, status.host_id)
        with mapped_errors(f"publishing status of {status.host_id}"):
            try:
                retried(self.client, self.client.set, path, data)
            except NoNodeError:
                try:
                    retried(self.client, self.client.create, path, data, makepath=True)
                except NodeExistsError:
                    retried(self.client, self.client.set, path, data)


def _await(reply: IAsyncResult) -> tuple[bytes, ZnodeStat] | None:
    """The (data, stat) of an async get, or None when the znode does not exist."""
    try:
        result: tuple[bytes, ZnodeStat] = reply.get()
    except NoNodeError:
        return None
    return result


def now() -> float:
    """Wall-clock time used in znodes (operators read it; ordering uses epochs, not clocks)."""
    return time.time()
