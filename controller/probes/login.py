"""Level 2: a real SSH login with the dedicated probe key, then exec of a harmless command.

It catches hosts that accept connections but cannot log anyone in (fork bomb, exhausted process
limit, broken shell). Every step runs against one deadline (``login_timeout_s``); paramiko's own
waits get the remaining time and a shared watchdog closes the transport at the deadline, because
``exec_command`` waits with no timeout at all.

Two fixes against paramiko's ~40 ms delayed-ACK stall (shared/notes/zookeeper-ssh.md): TCP_NODELAY
on the socket, and an SSH_MSG_IGNORE sent in answer to the server's ``hostkeys-00@openssh.com``
global request, so the client's ACK leaves at once and the server's next packet is not held back.
Only public-key authentication is ever tried: never passwords, never an agent.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

import paramiko
from paramiko.common import cMSG_IGNORE

from controller.probes.errors import (
    AuthFailed,
    ConnectionClosed,
    ConnectRefused,
    ConnectTimeout,
    ExecFailed,
    LoginTimeout,
    ProbeConfigError,
    ProbeError,
    ProtocolError,
    Unreachable,
)
from controller.probes.known_hosts import KnownHosts
from controller.probes.target import ProbeTarget
from controller.probes.watchdog import Watchdog

#: paramiko logs a traceback for every connection we cut at the deadline; the probe reports the
#: failure itself (mapped to a ProbeError), so its own log is kept at CRITICAL only.
_PARAMIKO_LOG = "controller.probes.paramiko"
logging.getLogger(_PARAMIKO_LOG).setLevel(logging.CRITICAL)


class _ProbeTransport(paramiko.Transport):
    """A transport that answers every global request from the server at once (see module doc)."""

    def _parse_global_request(self, m: paramiko.Message) -> None:
        super()._parse_global_request(m)  # type: ignore[misc]
        msg = paramiko.Message()
        msg.add_byte(cMSG_IGNORE)
        msg.add_string(b"")
        self._send_message(msg)  # type: ignore[attr-defined]


def load_probe_key(path: str) -> paramiko.PKey:
    """Read the private probe key (no passphrase: the controller runs unattended)."""
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError as exc:
        raise ProbeConfigError(
            f"probe key {path} does not exist: create it with ssh-keygen -t ed25519 -N '' -f {path}"
        ) from exc
    except paramiko.PasswordRequiredException as exc:
        raise ProbeConfigError(f"probe key {path} has a passphrase: use a key without one") from exc
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise ProbeConfigError(f"cannot load probe key {path}: {exc}") from exc


class LoginProber:
    """Blocking level-2 probe; safe to call from many worker threads at once."""

    def __init__(
        self,
        user: str,
        key: paramiko.PKey,
        known_hosts: KnownHosts,
        command: str,
        connect_timeout_s: float,
        login_timeout_s: float,
        watchdog: Watchdog,
    ) -> None:
        self.user = user
        self.key = key
        self.known_hosts = known_hosts
        self.command = command
        self.connect_timeout_s = connect_timeout_s
        self.login_timeout_s = login_timeout_s
        self._watchdog = watchdog

    def probe(self, target: ProbeTarget) -> float:
        """Log in and run the command; return the latency in ms or raise a ``ProbeError``."""
        started = time.monotonic()
        deadline = started + self.login_timeout_s
        family, ip = target.resolved()
        sock = _connect(family, ip, target, min(self.connect_timeout_s, self.login_timeout_s))
        transport: _ProbeTransport | None = None
        expired = threading.Event()

        def kill() -> None:
            # shutdown, not close: the fd stays ours until the probe thread closes it, so paramiko's
            # reader sees EOF instead of possibly reading a reused fd; every paramiko wait then ends.
            expired.set()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        token = self._watchdog.arm(deadline, kill)
        step = "key exchange"
        try:
            transport = _ProbeTransport(sock)
            transport.set_log_channel(_PARAMIKO_LOG)
            left = _left(deadline)
            transport.banner_timeout = left
            transport.handshake_timeout = left
            transport.auth_timeout = left
            known_types = self.known_hosts.key_types(ip, target.port)
            if known_types:
                # Offer only the key types on record: a host that lost its key cannot downgrade.
                transport.get_security_options().key_types = _supported(known_types)
            transport.start_client(timeout=_left(deadline))
            step = "host key check"
            self.known_hosts.check(ip, target.port, transport.get_remote_server_key())
            step = "authentication"
            _auth(transport, self.user, self.key, deadline, self.login_timeout_s)
            step = "session open"
            channel = transport.open_session(timeout=_left(deadline))
            step = "exec"
            channel.settimeout(_left(deadline))
            channel.exec_command(self.command)
            step = "command"
            if not channel.status_event.wait(_left(deadline)):
                raise LoginTimeout(f"login timeout {self.login_timeout_s * 1000:.0f} ms waiting for {self.command!r}")
            status = channel.recv_exit_status()
            if status == -1 and (expired.is_set() or time.monotonic() >= deadline):
                # No exit status because our watchdog cut the connection at the deadline (the
                # status event fires on close too): a timeout, not a command that failed.
                raise LoginTimeout(f"login timeout {self.login_timeout_s * 1000:.0f} ms waiting for {self.command!r}")
            if status != 0:
                raise ExecFailed(f"exec failed: {self.command!r} exited {status}{_stderr(channel)}")
            return (time.monotonic() - started) * 1000.0
        except ProbeError as err:
            err.answered = _answered(transport)
            raise
        except Exception as exc:
            mapped = _map(exc, step, expired.is_set() or time.monotonic() >= deadline, self)
            mapped.answered = _answered(transport)
            raise mapped from exc
        finally:
            self._watchdog.disarm(token)
            if transport is not None:
                transport.close()
            sock.close()


def _connect(family: socket.AddressFamily, ip: str, target: ProbeTarget, timeout: float) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, target.port))
    except ConnectionRefusedError as exc:
        sock.close()
        raise ConnectRefused("connection refused") from exc
    except TimeoutError as exc:
        sock.close()
        raise ConnectTimeout(f"connect timeout {timeout * 1000:.0f} ms") from exc
    except OSError as exc:
        sock.close()
        raise Unreachable(f"cannot connect to {target.label}: {exc.strerror}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _auth(transport: paramiko.Transport, user: str, key: paramiko.PKey, deadline: float, timeout_s: float) -> None:
    """Public-key auth. paramiko raises the same ``AuthenticationException`` for a rejected key and
    for its own timeout or a connection cut (our watchdog at the deadline): only a real rejection
    is definite, or a slow login on a busy host would count as a wrong key."""
    try:
        remaining = transport.auth_publickey(user, key)
    except paramiko.BadAuthenticationType as exc:
        raise AuthFailed(f"auth failed: server allows only {', '.join(exc.allowed_types)} for {user}") from exc
    except paramiko.AuthenticationException as exc:
        text = str(exc)
        if time.monotonic() >= deadline or "timeout" in text.lower():
            raise LoginTimeout(f"login timeout {timeout_s * 1000:.0f} ms during authentication") from exc
        if "EOF" in text or not transport.is_active():
            raise ConnectionClosed("connection closed during authentication") from exc
        raise AuthFailed(f"auth failed: key {key.fingerprint} rejected for user {user}") from exc
    if remaining:
        raise AuthFailed(f"auth failed: server wants more ({', '.join(remaining)}) after the key for {user}")


def _map(exc: Exception, step: str, timed_out: bool, prober: LoginProber) -> ProbeError:
    """Turn a paramiko/socket error into the project's own, with the step it happened in."""
    if timed_out or isinstance(exc, TimeoutError | socket.timeout):
        # paramiko says "No existing session" or "Error reading SSH protocol banner" here.
        return LoginTimeout(f"login timeout {prober.login_timeout_s * 1000:.0f} ms during {step}")
    if isinstance(exc, paramiko.ChannelException):
        return ExecFailed(f"exec failed: session refused by server ({exc.text})")
    if step in ("exec", "session open") and isinstance(exc, paramiko.SSHException | EOFError):
        # What an exhausted process limit / fork bomb looks like: sshd cannot fork the session.
        return ExecFailed(f"exec failed: server closed the session before {prober.command!r} ran "
                          "(cannot fork: process limit or fork bomb?)")
    if step in ("exec", "command", "session open"):
        return ExecFailed(f"exec failed during {step}: {_text(exc)}")
    if isinstance(exc, EOFError | ConnectionError):
        return ProtocolError(f"connection closed during {step}")
    return ProtocolError(f"{step} failed: {_text(exc)}")


def _answered(transport: paramiko.Transport | None) -> bool:
    """Whether sshd sent its banner on this connection: a hung sshd never does, a starved one may
    and then run out of time in the key exchange."""
    return transport is not None and bool(getattr(transport, "remote_version", ""))


def _left(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


def _supported(types: list[str]) -> list[str]:
    """Known types plus their RSA-SHA2 signature names that paramiko negotiates."""
    out: list[str] = []
    for t in types:
        if t == "ssh-rsa":
            out += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
        else:
            out.append(t)
    return out


def _stderr(channel: Any) -> str:
    try:
        if channel.recv_stderr_ready():
            text = channel.recv_stderr(200).decode("utf-8", "replace").strip().splitlines()
            return f": {text[0]}" if text else ""
    except OSError:
        pass
    return ""


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
