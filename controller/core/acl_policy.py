"""Who may do what to which znode: the ACL policy of the project's tree, as pure data.

Why a table and not ad-hoc ACLs at each create: the guarantees (a hook writes only its own status,
only controllers write the map, only operators write intents) must be visible and testable in one
place. ``clusterip-ctl acl init`` (run by the admin with every role's secret) creates the structural
znodes listed here with these ACLs; znodes created later at run time (map, health, members/<host>,
history events, election and replica znodes) get "creator: all" plus read for the digest ids listed
in ``/acl-readers`` (controller/zk/client.py). docs/security.md explains the design.

Why a znode listing the readers' ids: ZooKeeper (3.6+) hides digests in getACL replies to clients
without ADMIN, so a creator cannot copy them from a parent. The ids are SHA-1 verifiers of
random passwords (``acl init`` refuses short ones), the same values every ACL holds; never secrets.

ZooKeeper checks CREATE and DELETE on the *parent*, which is why hooks get CREATE on ``members``
but never DELETE, and why ``status/<host>`` is made in advance with a per-host ACL.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from controller.core import zk_layout as layout
from controller.core.errors import SchemaError

READ, WRITE, CREATE, DELETE, ADMIN = 1, 2, 4, 8, 16
ALL = READ | WRITE | CREATE | DELETE | ADMIN

CONTROLLER = "controller"
OPERATOR = "operator"
READER = "reader"
HOOK_PREFIX = "hook-"
FIXED_ROLES = (CONTROLLER, OPERATOR, READER)
#: `acl init` refuses shorter passwords: the digest ids are readable, so guessing must be hopeless.
MIN_PASSWORD_CHARS = 16
#: Bound of the /acl-readers document (a few thousand hosts) and the shape of one digest id.
MAX_READERS = 4096
_DIGEST_ID = re.compile(r"[A-Za-z0-9._-]{1,80}:[A-Za-z0-9+/]{27}=")


def hook_user(host: str) -> str:
    """The ZooKeeper user name of one host's hook."""
    return f"{HOOK_PREFIX}{host}"


def digest_id(user: str, password: str) -> str:
    """ZooKeeper's digest ACL id ``user:base64(sha1(user:password))``: a verifier, not the secret."""
    raw = hashlib.sha1(f"{user}:{password}".encode()).digest()  # ZooKeeper's digest scheme is SHA-1
    return f"{user}:{base64.b64encode(raw).decode('ascii')}"


def encode_readers(ids: list[str]) -> bytes:
    """The /acl-readers document: the digest ids that get READ on znodes created at run time."""
    return json.dumps(sorted(ids)).encode()


def decode_readers(data: bytes) -> tuple[str, ...]:
    """Digest ids from /acl-readers; a malformed or oversized document is a one-line SchemaError."""
    where = layout.ACL_READERS
    if len(data) > MAX_READERS * 128:
        raise SchemaError(f"{where}: {len(data)} bytes is too large; re-run `clusterip-ctl acl init`")
    try:
        ids = json.loads(data)
    except (ValueError, RecursionError):
        raise SchemaError(f"{where}: not JSON; re-run `clusterip-ctl acl init`") from None
    if not isinstance(ids, list) or not all(isinstance(i, str) and _DIGEST_ID.fullmatch(i) for i in ids):
        raise SchemaError(f"{where}: expected a list of user:digest ids; re-run `clusterip-ctl acl init`")
    return tuple(ids)


@dataclass(frozen=True)
class NodeAcl:
    """One structural znode: its path (relative to the chroot), its ACL (user -> perms), its first data."""

    path: str
    acl: Mapping[str, int]
    initial: bytes = b""


def roles(hosts: tuple[str, ...]) -> tuple[str, ...]:
    """Every user the tree knows: the fixed roles and one hook user per configured host."""
    return (*FIXED_ROLES, *(hook_user(h) for h in hosts))


def _readers(hosts: tuple[str, ...], **extra: int) -> dict[str, int]:
    acl = {user: READ for user in roles(hosts)}
    acl[OPERATOR] = READ | ADMIN  # the admin keeps ADMIN so a re-run of `acl init` can fix ACLs
    for user, perms in extra.items():
        acl[user] = acl.get(user, 0) | perms
    return acl


def tree(clusters: Mapping[str, tuple[str, ...]], empty_intents: bytes, reader_ids: list[str]) -> list[NodeAcl]:
    """Structural znodes, parents first, for clusters ``name -> host ids``.

    ``reader_ids``: every role's digest id (content of /acl-readers; written again on every run).
    ``empty_intents`` is the encoded empty intents document: the intents znode is made in advance
    so operators need WRITE on it, not CREATE on the cluster root (which would let them create a map).
    """
    every_host = tuple(sorted({h for hosts in clusters.values() for h in hosts}))
    nodes = [
        NodeAcl("/", _readers(every_host, operator=CREATE)),
        NodeAcl(layout.ACL_READERS, _readers(every_host, operator=WRITE), encode_readers(reader_ids)),
        NodeAcl(layout.CLUSTERS, _readers(every_host, operator=CREATE)),
        NodeAcl(layout.CONTROLLERS, _readers(every_host, operator=CREATE)),
        NodeAcl(layout.ELECTION, _readers(every_host, controller=CREATE | DELETE)),
        NodeAcl(layout.REPLICAS, _readers(every_host, controller=CREATE | DELETE)),
    ]
    for name, hosts in sorted(clusters.items()):
        nodes.append(NodeAcl(layout.cluster_root(name), _readers(hosts, controller=CREATE | DELETE)))
        intents = _readers(hosts, operator=WRITE)
        for host in hosts:
            del intents[hook_user(host)]
        nodes.append(NodeAcl(layout.intents_path(name), intents, empty_intents))
        members = _readers(hosts, **{hook_user(h): CREATE for h in hosts})
        nodes.append(NodeAcl(layout.members_path(name), members))
        nodes.append(NodeAcl(layout.statuses_path(name), _readers(hosts, controller=DELETE)))
        for host in hosts:
            own = _readers(hosts, **{hook_user(host): WRITE})
            nodes.append(NodeAcl(layout.status_path(name, host), own))
        history = _readers(hosts, controller=CREATE | DELETE, operator=CREATE)
        for host in hosts:
            del history[hook_user(host)]
        nodes.append(NodeAcl(layout.history_path(name), history))
    return nodes
