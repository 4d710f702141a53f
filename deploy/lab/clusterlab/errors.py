"""The lab's own exception, so callers catch one type instead of subprocess/OSError details.

It is part of the project's hierarchy (ClusterIPFailoverError) so a test or demo script that drives
both the lab and the product can report either with the same one-line handling.
"""

from __future__ import annotations

from controller.core.errors import ClusterIPFailoverError


class LabError(ClusterIPFailoverError):
    """A lab set-up step failed; the message names the step and how to fix it (one line)."""
