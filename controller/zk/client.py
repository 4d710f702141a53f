"""Creating kazoo clients the way this project needs them, and mapping kazoo errors to ours.

kazoo's defaults reconnect slowly; failover time depends on reconnecting within milliseconds, so
every client gets an aggressive connection retry (see docs/zookeeper-layout.md and the measured
notes). Command retries use :class:`kazoo.retry.KazooRetry` with a bounded deadline, once, at the
call site — never nested inside another retry.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoAuthError, ZookeeperError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry

from controller.core.errors import CoordinationError
from controller.core.model import ZooKeeperSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        logger=logging.getLogger("kazoo"),
    )


def start_client(client: KazooClient, settings: ZooKeeperSettings) -> None:
    """Make sure the chroot exists, then connect; or raise a one-line CoordinationError."""
    chroot = settings.chroot.rstrip("/")
    try:
        if chroot:
            bootstrap = make_client(ZooKeeperSettings(settings.hosts, "", settings.session_timeout_s,
                                                      settings.connect_timeout_s))
            bootstrap.start(timeout=settings.connect_timeout_s)
            try:
                bootstrap.retry(bootstrap.ensure_path, chroot)
            finally:
                bootstrap.stop()
                bootstrap.close()
        client.start(timeout=settings.connect_timeout_s)
    except KazooTimeoutError:
        with contextlib.suppress(Exception):
            client.stop()
            client.close()
        raise CoordinationError(
            f"cannot reach ZooKeeper at {settings.hosts} within {settings.connect_timeout_s:g} s; "
            "check zookeeper.hosts in the config and that the servers run"
        ) from None
    except (ZookeeperError, KazooException) as exc:
        raise CoordinationError(f"cannot prepare ZooKeeper chroot {chroot}: {type(exc).__name__} {exc}") from None


@contextlib.contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Translate kazoo's exceptions into CoordinationError with a one-line reason."""
    try:
        yield
    except NoAuthError:
        raise CoordinationError(f"{what}: ZooKeeper denied access (check the credentials of this role)") from None
    except (ZookeeperError, KazooException, KazooTimeoutError) as exc:
        name = type(exc).__name__
        raise CoordinationError(f"{what}: ZooKeeper error {name} {exc}".strip()) from None


def retried(client: KazooClient, func: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run an idempotent ZooKeeper call with the client's bounded KazooRetry."""
    result: T = client.retry(func, *args, **kwargs)
    return result
