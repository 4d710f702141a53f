"""The project's own exception hierarchy.

Library errors (kazoo, paramiko, iptc, OSError from /proc) are translated into these at the boundary
so that callers and the CLI deal with one family of errors, each carrying a one-line message that
names the problem and the fix. ``exit_code`` lets the CLI map a failure to a documented exit status
without knowing every subclass.
"""

from __future__ import annotations

from typing import ClassVar


class ClusterIPFailoverError(Exception):
    """Base of every error this project raises on purpose."""

    #: Process exit status the CLI uses for this kind of failure (see docs/configuration.md).
    exit_code: ClassVar[int] = 1

    def lines(self) -> list[str]:
        """The message as the one-line-per-problem list the CLI prints."""
        return [str(self)]


class ConfigError(ClusterIPFailoverError):
    """A configuration file has one or more problems; each is one line naming the key and the fix.

    ``source`` (a file name) prefixes every line when given, so an operator with several files sees
    which one is wrong.
    """

    exit_code: ClassVar[int] = 2

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("; ".join(self.problems) if self.problems else "invalid configuration")

    def lines(self) -> list[str]:
        prefix = f"{self.source}: " if self.source else ""
        return [prefix + p for p in self.problems] or [prefix + "invalid configuration"]


class UsageError(ClusterIPFailoverError):
    """A command was called with arguments that cannot work together (exit status 2 like click's)."""

    exit_code: ClassVar[int] = 2


class SchemaError(ClusterIPFailoverError):
    """Data read from ZooKeeper (or another store) is malformed, of an unknown schema, or hostile."""


class CoordinationError(ClusterIPFailoverError):
    """ZooKeeper could not be reached or refused an operation."""


class BackendError(ClusterIPFailoverError):
    """The kernel backend could not apply or read bucket ownership."""


class ProbeError(ClusterIPFailoverError):
    """An SSH liveness probe failed; the message is the human-readable reason."""
