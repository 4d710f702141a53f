"""``clusterip-ctl acl init``: create the ZooKeeper tree with per-role ACLs (docs/security.md).

Run once by the admin, and again after adding hosts or clusters. It reads every role's credential
file from one directory (``controller.secret``, ``operator.secret``, ``reader.secret``,
``hook-<host>.secret``, each one line ``user:password``, mode 0600), keeps only the digests in
memory, and authenticates itself with the operator credential of the config's
``zookeeper.auth_file``. Exit 0 done; 1 ZooKeeper failure; 2 bad usage or files.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

import click

from controller.core import acl_policy, schema
from controller.core.errors import ConfigError, UsageError
from controller.core.model import Intents
from controller.ctl import zkview
from controller.secret_files import read_digest_credential


@click.group("acl")
def acl_group() -> None:
    """ZooKeeper access control: create the tree with its per-role ACLs."""


@acl_group.command("init")
@zkview.config_option
@click.option("--credentials-dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="directory with <user>.secret for every role (mode 0600)")
def init(config_file: str, credentials_dir: str) -> None:
    """Create the chroot and structural znodes with their ACLs; re-run after adding hosts."""
    config = zkview.load(config_file)
    if not config.zookeeper.auth_file:
        raise UsageError("acl init needs zookeeper.auth_file (the operator credential) in the config; set it")
    clusters = {c.name: c.host_ids for c in config.clusters}
    every_host = tuple(sorted({h for hosts in clusters.values() for h in hosts}))
    digests: dict[str, str] = {}
    for user in acl_policy.roles(every_host):
        path = str(Path(credentials_dir) / f"{user}.secret")
        got_user, password = read_digest_credential(path, "acl init credential")
        if got_user != user:
            raise ConfigError([f"{path} is for user {got_user!r}, expected {user!r}; fix the file's user name"])
        if len(password) < acl_policy.MIN_PASSWORD_CHARS:
            raise ConfigError([f"{path}: password shorter than {acl_policy.MIN_PASSWORD_CHARS} characters; "
                               "use a random one (e.g. `openssl rand -base64 24`)"])
        digests[user] = acl_policy.digest_id(user, password)
    nodes = acl_policy.tree(clusters, schema.encode_intents(Intents()), list(digests.values()))
    from controller.zk.acl import apply_tree, to_kazoo
    from controller.zk.client import make_client, mapped_errors

    settings = config.zookeeper
    chroot = settings.chroot.rstrip("/")
    root = make_client(replace(settings, chroot=""))
    with mapped_errors("acl init: connecting"):
        root.start(timeout=settings.connect_timeout_s)
    try:
        with mapped_errors(f"acl init: creating the chroot {chroot}"):
            parent = chroot.rpartition("/")[0]
            if parent:
                root.ensure_path(parent)
            if chroot and root.exists(chroot) is None:
                root.create(chroot, b"", acl=to_kazoo(nodes[0], digests, extra=acl_policy.CREATE))
    finally:
        with contextlib.suppress(Exception):
            root.stop()
            root.close()
    client = make_client(settings)
    with mapped_errors("acl init: connecting"):
        client.start(timeout=settings.connect_timeout_s)
    try:
        created = apply_tree(client, nodes, digests)
    finally:
        with contextlib.suppress(Exception):
            client.stop()
            client.close()
    click.echo(f"acl init: {created} znodes created, ACLs set on {len(nodes)} (users: {', '.join(digests)})")
