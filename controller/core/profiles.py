"""Named sets of timing settings (``profile: default`` / ``profile: fast``), chosen by measurement.

Why profiles: the timings of failure detection, coordination and fencing only make sense together
(hung-sshd detection = probe interval x fall + timeout; crash failover >= the ZooKeeper session
timeout, which the server clamps to [2, 20] x tickTime; a hook self-fences after a fraction of that
session timeout). Tuning one key alone easily breaks the others, so an operator picks a profile and
overrides single keys only where a measurement says so. docs/profiles.md has the reasoning and the
figures behind every value.

* ``default``: conservative. Zero false failovers under load is the first duty; hung sshd is
  detected (probes alone) within 0.8 s, a crashed host fails over within ~2 s.
* ``fast``: about half the reaction time, at the price of more probe traffic (sshd CPU on the hosts)
  and a ZooKeeper session short enough that the hooks' heartbeats must get CPU promptly.

Pure data: no I/O. ``controller.core.config`` applies a profile as the defaults of the ``probe``,
``handoff`` and ``zookeeper`` sections (explicit keys override); ``zk_tick_ms`` is for the lab's
(and a dedicated production) ZooKeeper server and ``cycle_interval_s`` for the controller loop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from controller.core.model import HandoffSettings, ProbeSettings

DEFAULT_PROFILE = "default"


@dataclass(frozen=True)
class Profile:
    """One named set of settings (see module doc)."""

    name: str
    summary: str
    probe: ProbeSettings
    handoff: HandoffSettings
    #: ZooKeeper session timeout the clients ask for (the server clamps it to [2, 20] x tickTime)
    session_timeout_s: float
    #: tickTime of a ZooKeeper server dedicated to this controller (the lab's); must allow the session
    zk_tick_ms: int
    #: controller loop period when nothing happens (events trigger cycles at once)
    cycle_interval_s: float

    @property
    def hung_detection_bound_s(self) -> float:
        """Worst case of probes alone for a fast host that hangs: (fall - 1) x interval + floor + phase."""
        p = self.probe
        return p.fall * p.interval_s + p.banner_timeout_s

    @property
    def self_fence_after_s(self) -> float:
        return self.handoff.self_fence_fraction * self.session_timeout_s


def _probe(**changes: object) -> ProbeSettings:
    return dataclasses.replace(ProbeSettings(), **changes)  # type: ignore[arg-type]


PROFILES: dict[str, Profile] = {
    "default": Profile(
        name="default",
        summary="conservative: no false failovers under load; hung sshd <= 0.8 s, crash ~2 s",
        probe=_probe(),  # the ProbeSettings defaults are this profile (one source of truth)
        handoff=HandoffSettings(self_fence_fraction=0.5),
        session_timeout_s=1.5,
        zk_tick_ms=200,
        cycle_interval_s=0.5,
    ),
    "fast": Profile(
        name="fast",
        summary="about half the reaction time; more probe traffic, short ZooKeeper sessions",
        probe=_probe(
            interval_s=0.1,
            connect_timeout_s=0.2,
            banner_timeout_s=0.2,
            banner_timeout_max_s=0.6,
            fall=2,
            rise=3,
            definite_fall=2,
            late_banner_s=4.0,
            hold_max_s=5.0,
            login_interval_s=1.0,
            login_retry_s=0.3,
            login_timeout_s=1.0,
        ),
        handoff=HandoffSettings(self_fence_fraction=0.5),
        session_timeout_s=0.3,
        zk_tick_ms=125,
        cycle_interval_s=0.25,
    ),
}


def profile_names() -> tuple[str, ...]:
    return tuple(PROFILES)


def get_profile(name: str) -> Profile:
    """The profile called ``name``; a ``KeyError`` whose message lists the known names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"no profile {name!r}: choose one of {', '.join(PROFILES)}") from None
