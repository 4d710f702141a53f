"""TLS to ZooKeeper: kazoo's arguments, an up-front check of the PEM files, and one-line failures.

Why this exists apart from kazoo's ``use_ssl``:

* kazoo checks the server's host name only with ``check_hostname=True`` (default False), so with
  ``verify_certs`` alone any certificate from the CA would pass for any server. We turn it on
  whenever ``verify_certs`` is on.
* kazoo loads the CA, certificate and key on every connection attempt and, when that fails, retries
  forever; a typo'd path would look like an unreachable server. We load them once at start and
  refuse a bad file with one line naming the key.
* A TLS handshake failure (wrong CA, refused client certificate, plain port) is, to kazoo, a
  dropped connection that it retries until the connect timeout. :class:`TlsFailureLog` remembers
  the last handshake error so the timeout can be reported as what it is.

Measured against Debian's ZooKeeper 3.8.0 in tests/integration/test_zk_tls.py; docs/security.md.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import MutableMapping
from typing import Any

from controller.core.errors import ConfigError
from controller.core.model import ZooKeeperSettings
from controller.secret_files import check_private

_SSL_REASON = re.compile(r"\[SSL: ([A-Z0-9_]+)\][^(]*")
#: Alerts a server sends when it does not accept the client's certificate (or got none).
_CLIENT_CERT_ALERTS = ("ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED", "ALERT_UNKNOWN_CA",
                       "ALERT_HANDSHAKE_FAILURE", "ALERT_ACCESS_DENIED")


def tls_kwargs(settings: ZooKeeperSettings) -> dict[str, object]:
    """kazoo's TLS arguments; the files are checked (key mode 0600, PEM loads) first. {} without TLS."""
    if not settings.use_ssl:
        return {}
    kwargs: dict[str, object] = {"use_ssl": True, "verify_certs": settings.verify_certs,
                                 "check_hostname": settings.verify_certs}
    if settings.key_file:
        check_private(settings.key_file, "zookeeper.key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if settings.ca_file:
        try:
            context.load_verify_locations(settings.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([f"zookeeper.ca_file {settings.ca_file}: {_why(exc)}; "
                               "point it at the PEM certificate of the CA that signed the servers"]) from None
        kwargs["ca"] = settings.ca_file
    if settings.cert_file and settings.key_file:
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([f"zookeeper.cert_file {settings.cert_file} with key_file {settings.key_file}: "
                               f"{_why(exc)}; give a PEM certificate and its unencrypted PEM key"]) from None
        kwargs["certfile"] = settings.cert_file
        kwargs["keyfile"] = settings.key_file
    return kwargs


def _why(exc: OSError | ssl.SSLError) -> str:
    """A short reason from an ssl/OS error, without the C source location."""
    if isinstance(exc, ssl.SSLError):
        match = _SSL_REASON.search(str(exc))
        return match.group(0).strip() if match else (exc.reason or str(exc))
    return exc.strerror or str(exc)


def explain(hosts: str, failure: str) -> str:
    """One line for a TLS handshake failure kazoo reported while connecting to ``hosts``."""
    match = _SSL_REASON.search(failure)
    reason = match.group(0).strip() if match else failure.strip()
    code = match.group(1) if match else ""
    if code == "CERTIFICATE_VERIFY_FAILED":
        fix = ("check that zookeeper.ca_file is the CA that signed the servers' certificates and that "
               "their subjectAltName covers the names in zookeeper.hosts")
    elif code.endswith(_CLIENT_CERT_ALERTS):
        fix = ("the server refused this client's certificate: set zookeeper.cert_file and key_file to a "
               "certificate signed by the CA in the servers' ssl.trustStore")
    else:
        fix = "check that zookeeper.hosts names the servers' secureClientPort, not clientPort"
    return f"TLS handshake with ZooKeeper at {hosts} failed ({reason}); {fix}"


class TlsFailureLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """kazoo's logger for one client; remembers the last TLS handshake failure it logged.

    kazoo reports a failed handshake only as ``Connection dropped: socket connection error: [SSL: ...]``
    and retries; recording it here (before the level check, so it works with kazoo at WARNING or
    above) lets start_client say "TLS failed because ..." instead of "cannot reach".
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self.last_failure = ""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        for arg in args:
            text = str(arg)
            if "[SSL: " in text:
                self.last_failure = text
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs
