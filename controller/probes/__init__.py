"""SSH liveness probes: level 1 reads the banner, level 2 logs in; the scheduler runs both for many hosts.

The verdicts come out of ``controller.core.health.HealthTracker`` as ``model.HostHealth``.
"""

from controller.probes.errors import ProbeError
from controller.probes.scheduler import ProbeScheduler
from controller.probes.target import ProbeTarget

__all__ = ["ProbeError", "ProbeScheduler", "ProbeTarget"]
