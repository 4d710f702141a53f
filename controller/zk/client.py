"""Creating kazoo clients the way this project needs them, and mapping kazoo errors to ours.

kazoo's defaults reconnect slowly; failover time depends on reconnecting within milliseconds, so
every client gets an aggressive connection retry (see docs/zookeeper-layout.md and the measured
notes). Command retries use :class:`kazoo.retry.KazooRetry` with a bounded deadline, once, at the
call site — never nested inside another retry.

With ``zookeeper.auth_file`` set, the client authenticates (digest) as that file's user, and every
znode it creates gets "creator: all" plus read for the roles that may read the chroot (the policy
of controller/core/acl_policy.py, docs/security.md). Without it, everything stays open as before.
With ``zookeeper.use_ssl`` the client speaks TLS (controller/zk/tls.py: host name checked, files
checked at start, handshake failures reported as such).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoAuthError, NoNodeError, ZookeeperError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import Auth
from kazoo.retry import KazooRetry
from kazoo.security import ACL, Id, Permissions

from controller.core import zk_layout as layout
from controller.core.acl_policy import decode_readers
from controller.core.errors import CoordinationError, SchemaError
from controller.core.model import ZooKeeperSettings
from controller.secret_files import read_digest_credential
from controller.zk import tls

log = logging.getLogger(__name__)
T = TypeVar("T")


class _RedactAuth(logging.Filter):
    """Drop the credential from kazoo's DEBUG line ``Sending request(xid=..): Auth(..auth='user:pw')``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, Auth) for a in record.args):
            record.args = tuple(
                Auth(a.auth_type, a.scheme, "<redacted>") if isinstance(a, Auth) else a for a in record.args
            )
        return True


_KAZOO_LOG = logging.getLogger("kazoo")
_KAZOO_LOG.addFilter(_RedactAuth())


def _security_kwargs(settings: ZooKeeperSettings) -> dict[str, object]:
    """kazoo's auth and TLS arguments from the settings; secret files are checked (mode 0600) here."""
    kwargs: dict[str, object] = {}
    if settings.auth_file:
        user, password = read_digest_credential(settings.auth_file, "zookeeper.auth_file")
        kwargs["auth_data"] = [("digest", f"{user}:{password}")]
    kwargs.update(tls.tls_kwargs(settings))
    return kwargs


def make_client(settings: ZooKeeperSettings, *, read_only: bool = False) -> KazooClient:
    """A started-later kazoo client with fast reconnects, chrooted to the project's tree."""
    hosts = settings.hosts.strip().rstrip("/")
    chroot = settings.chroot.rstrip("/")
    return KazooClient(
        hosts=hosts + chroot,
        timeout=settings.session_timeout_s,
        connection_retry=KazooRetry(max_tries=-1, delay=0.02, backoff=1, max_delay=0.2, ignore_expire=True),
        command_retry=KazooRetry(
            max_tries=3, delay=0.02, backoff=2, max_delay=0.5, deadline=settings.session_timeout_s
        ),
        read_only=read_only or None,
        logger=tls.TlsFailureLog(_KAZOO_LOG),
        **_security_kwargs(settings),
    )


def creator_acl(client: KazooClient) -> list[ACL]:
    """ACL for znodes this client creates: itself all, and read for the ids listed in /acl-readers."""
    with mapped_errors(f"reading {layout.ACL_READERS}"):
        try:
            data, _ = client.get(layout.ACL_READERS)
        except NoNodeError:
            raise CoordinationError(
                f"{layout.ACL_READERS} is missing; the admin creates it with `clusterip-ctl acl init` "
                "(docs/security.md)"
            ) from None
    try:
        readers = decode_readers(data)
    except SchemaError as exc:
        raise CoordinationError(str(exc)) from None
    acl = [ACL(Permissions.ALL, Id("auth", ""))]
    acl += [ACL(Permissions.READ, Id("digest", ident)) for ident in readers]
    return acl


def start_client(client: KazooClient, settings: ZooKeeperSettings) -> None:
    """Make sure the chroot exists, then connect; or raise a one-line CoordinationError.

    With credentials the chroot is never created here (it would get an open ACL): the admin makes
    it with ``clusterip-ctl acl init``.
    """
    chroot = settings.chroot.rstrip("/")
    secured = bool(settings.auth_file)
    connecting = client
    try:
        if chroot:
            bootstrap = connecting = make_client(replace(settings, chroot=""))
            bootstrap.start(timeout=settings.connect_timeout_s)
            try:
                if not secured:
                    bootstrap.retry(bootstrap.ensure_path, chroot)
                elif bootstrap.retry(bootstrap.exists, chroot) is None:
                    raise CoordinationError(
                        f"ZooKeeper chroot {chroot} does not exist; the admin creates it with its ACLs by "
                        "running `clusterip-ctl acl init` (docs/security.md)"
                    )
            finally:
                bootstrap.stop()
                bootstrap.close()
        connecting = client
        client.start(timeout=settings.connect_timeout_s)
    except KazooTimeoutError:
        with contextlib.suppress(Exception):
            client.stop()
            client.close()
        failure = getattr(connecting.logger, "last_failure", "")
        if settings.use_ssl and failure:
            raise CoordinationError(tls.explain(settings.hosts, failure)) from None
        raise CoordinationError(
            f"cannot reach ZooKeeper at {settings.hosts} within {settings.connect_timeout_s:g} s; "
            "check zookeeper.hosts in the config and that the servers run"
        ) from None
    except (ZookeeperError, KazooException) as exc:
        raise CoordinationError(f"cannot prepare ZooKeeper chroot {chroot}: {type(exc).__name__} {exc}") from None
    if secured:
        try:
            client.default_acl = creator_acl(client)
        except CoordinationError:
            with contextlib.suppress(Exception):
                client.stop()
                client.close()
            raise


@contextlib.contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Translate kazoo's exceptions into CoordinationError with a one-line reason."""
    try:
        yield
    except NoAuthError:
        raise CoordinationError(
            f"{what}: ZooKeeper denied access (check the credentials of this role in zookeeper.auth_file "
            "and that `clusterip-ctl acl init` ran for this host; docs/security.md)"
        ) from None
    except (ZookeeperError, KazooException, KazooTimeoutError) as exc:
        name = type(exc).__name__
        raise CoordinationError(f"{what}: ZooKeeper error {name} {exc}".strip()) from None


def retried(client: KazooClient, func: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run an idempotent ZooKeeper call with the client's bounded KazooRetry."""
    result: T = client.retry(func, *args, **kwargs)
    return result
