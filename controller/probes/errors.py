"""The project's own probe exceptions: paramiko and socket errors are mapped to these at the boundary.

Each carries a human-readable ``reason`` (it ends up in ``HostHealth.reason`` and in logs) and
whether the failure is *definite*: something load cannot cause (refused, wrong host key, login
rejected, command cannot run), which the state machine may act on faster than on a timeout.
"""

from __future__ import annotations

from controller.core.errors import ClusterIPFailoverError


class ProbeError(ClusterIPFailoverError):
    """A probe failed; ``reason`` says why in words an operator understands."""

    definite: bool = False
    #: the host did not answer in time (as opposed to a clean failure): the tracker may hold a
    #: level-2 timeout while banners prove the host alive (a saturated host logs in slowly)
    timeout: bool = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        #: the server still answered before this failure (a login that got sshd's banner and then
        #: ran out of time): a sign of life for the health tracker, though not a success
        self.answered = False


class ProbeConfigError(ProbeError):
    """The probe set-up itself is wrong (key file, known_hosts, address): fix the config."""

    definite = True


class ConnectRefused(ProbeError):
    """Nothing listens: the kernel answered with a reset. Load does not cause this."""

    definite = True


class ConnectTimeout(ProbeError):
    """The TCP handshake did not complete in time (host gone, path lossy, or very busy)."""

    timeout = True


class Unreachable(ProbeError):
    """No route, host unreachable or another socket error before the connection existed."""


class BannerTimeout(ProbeError):
    """Connected but no ``SSH-`` banner in time: the classic hung sshd (SIGSTOP, stuck disk)."""

    timeout = True


class ConnectionClosed(ProbeError):
    """The server closed the connection before it finished (MaxStartups, fork failure, crash)."""


class BadBanner(ProbeError):
    """Something answered that is not an SSH-2 server."""

    definite = True


class HostKeyChanged(ProbeError):
    """The host presented a key that differs from known_hosts: possible impersonation."""

    definite = True


class HostKeyUnknown(ProbeError):
    """No known_hosts entry and the first-contact policy is ``refuse``."""

    definite = True


class AuthFailed(ProbeError):
    """The probe key was rejected: the host cannot log anyone in with it."""

    definite = True


class ExecFailed(ProbeError):
    """Logged in, but the command could not run or failed (process limit, fork bomb, broken shell)."""

    definite = True


class LoginTimeout(ProbeError):
    """A level-2 step did not finish before the login deadline."""

    timeout = True


class ProtocolError(ProbeError):
    """The SSH conversation broke in an unexpected way (not known to be definite)."""
