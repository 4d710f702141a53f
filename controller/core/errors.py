"""The project's own exception hierarchy.

Library errors (kazoo, paramiko, iptc, OSError from /proc) are translated into these at the boundary
so that callers and the CLI deal with one family of errors, each carrying a one-line message that
names the problem and the fix.
"""

from __future__ import annotations


class ClusterIPFailoverError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(ClusterIPFailoverError):
    """A configuration file has one or more problems; each is one line naming the key and the fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems) if self.problems else "invalid configuration")


class SchemaError(ClusterIPFailoverError):
    """Data read from ZooKeeper (or another store) is malformed, of an unknown schema, or hostile."""


class CoordinationError(ClusterIPFailoverError):
    """ZooKeeper could not be reached or refused an operation."""


class BackendError(ClusterIPFailoverError):
    """The kernel backend could not apply or read bucket ownership."""


class ProbeError(ClusterIPFailoverError):
    """An SSH liveness probe failed; the message is the human-readable reason."""
