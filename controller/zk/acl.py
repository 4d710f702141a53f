"""Creating the project's tree with its ACLs (``clusterip-ctl acl init``), from the pure policy.

Why an explicit bootstrap rather than the controller creating the tree: whoever creates a znode
chooses its ACL, and ZooKeeper checks CREATE on the parent for any child name. Creating the
structural znodes once, as the admin, with per-host ACLs is the only way a hook can be kept from
creating (and so owning) another host's status znode.
"""

from __future__ import annotations

import logging

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError
from kazoo.security import ACL, Id

from controller.core import acl_policy
from controller.core.acl_policy import NodeAcl
from controller.core.errors import ConfigError
from controller.zk.client import mapped_errors

log = logging.getLogger(__name__)


def to_kazoo(node: NodeAcl, digests: dict[str, str], *, extra: int = 0) -> list[ACL]:
    """kazoo ACL entries of ``node``; ``extra`` perms are added to the operator's (during the build)."""
    acl = []
    for user, perms in sorted(node.acl.items()):
        if user not in digests:
            raise ConfigError([f"acl init: no credential for user {user!r}; add {user}.secret to the directory"])
        acl.append(ACL(perms | (extra if user == acl_policy.OPERATOR else 0), Id("digest", digests[user])))
    return acl


def apply_tree(client: KazooClient, nodes: list[NodeAcl], digests: dict[str, str]) -> int:
    """Create missing structural znodes and (re)set every ACL; returns how many znodes were created.

    Runs as the operator, on a client chrooted to the tree (the chroot itself must exist). Pass
    one: parents first, each with its final ACL plus CREATE for the operator so the children can
    be made. Pass two: children first, the final ACLs.
    """
    created = 0
    with mapped_errors("acl init"):
        for node in nodes:
            building = to_kazoo(node, digests, extra=acl_policy.CREATE)
            if client.exists(node.path) is None:
                try:
                    client.create(node.path, node.initial, acl=building)
                    created += 1
                    continue
                except NodeExistsError:
                    pass
            client.set_acls(node.path, building)
        for node in reversed(nodes):
            client.set_acls(node.path, to_kazoo(node, digests))
    log.info("acl init: %d znodes created, %d ACLs set", created, len(nodes))
    return created
