"""Timing of the kernel-side dead-man switch, derived from the ZooKeeper session timeout.

Why a dead-man switch: the planner counts "host down and its hook's ZooKeeper session is gone" as a
release (controller/core/planner.py ``_released``). That is only true if the kernel of a host whose
hook died stops accepting the cluster's traffic by itself: nobody is left to remove its rules. Each
backend therefore drops the VIP's traffic unless the hook keeps refreshing a kernel timer (an nft
set element with a timeout, or an xt_recent entry checked with ``--seconds``). This module says how
long that timer runs (``expiry_s``, E) for a session timeout T:

* A hook that dies at time d last reached ZooKeeper no earlier than d - h (h = its heartbeat period,
  T/20, ``node_hook.agent``), so the server cannot expire its session before d - h + T.
* Its kernel accepts until at most d + E (the last refresh was at or before d).
* So "session gone" implies "kernel stopped" when E < T - h; we keep a margin of 0.2 T on top for
  scheduling delays and the server's tick rounding (ZooKeeper rounds expiry *up* to a tick):
  E <= 0.75 T, aiming at E = 0.6 T.
* xt_recent counts whole seconds (``--seconds`` is an integer), so iptables backends use
  E = round(0.6 T), at most floor(0.75 T) and at least 1, so they need T >= 1/0.75 s, about 1.34 s;
  nftables takes milliseconds.

The hook refreshes every E/6 and treats a refresh older than 0.75 E as possibly lapsed (see
``lapse_s``): it then never revives the timer blindly, because its bucket set may be stale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controller.core.errors import ConfigError

#: The hook's ZooKeeper heartbeat period as a fraction of the session timeout (node_hook.agent).
HEARTBEAT_FRACTION = 1 / 20
#: E aims at this fraction of the session timeout ...
TARGET_FRACTION = 0.6
#: ... and may never exceed this one: T - heartbeat - a 0.2 T margin.
MAX_FRACTION = 1.0 - HEARTBEAT_FRACTION - 0.2
#: Refreshes per expiry period (several, so one late wake-up never lets the timer lapse).
REFRESHES_PER_EXPIRY = 6
#: A refresh older than this fraction of E may have lapsed: re-apply the map before re-arming.
LAPSE_FRACTION = 0.75


@dataclass(frozen=True)
class DeadmanTiming:
    """How long the kernel keeps accepting without a refresh, and how the hook keeps it alive."""

    expiry_s: float
    session_timeout_s: float

    @property
    def refresh_s(self) -> float:
        """Period of the hook's refreshes."""
        return self.expiry_s / REFRESHES_PER_EXPIRY

    @property
    def lapse_s(self) -> float:
        """After this long without a successful refresh the timer may have run out."""
        return self.expiry_s * LAPSE_FRACTION

    @property
    def margin_s(self) -> float:
        """Time between the kernel stopping and the earliest possible session expiry of a dead hook."""
        return self.session_timeout_s * (1.0 - HEARTBEAT_FRACTION) - self.expiry_s


def deadman_timing(session_timeout_s: float, whole_seconds: bool) -> DeadmanTiming:
    """E for a session timeout; ``whole_seconds`` for xt_recent (iptables backends).

    Raises ConfigError (one line naming the fix) when no E fits, i.e. a session timeout too short
    for whole seconds.
    """
    t = float(session_timeout_s)
    if not math.isfinite(t) or t <= 0:
        raise ConfigError([f"zookeeper.session_timeout_s {session_timeout_s!r} must be a positive number of seconds"])
    limit = MAX_FRACTION * t
    if not whole_seconds:
        return DeadmanTiming(round(TARGET_FRACTION * t, 3), t)
    expiry = float(max(1, min(round(TARGET_FRACTION * t), math.floor(limit))))
    if expiry > limit:
        need = math.ceil(100 / MAX_FRACTION) / 100
        raise ConfigError([
            f"zookeeper.session_timeout_s {t:g} is too short for the iptables dead-man switch (xt_recent counts "
            f"whole seconds, so its 1 s timer must stay below {MAX_FRACTION:g} x the session timeout): set "
            f"session_timeout_s >= {need:g} or use the nftables backend"
        ])
    return DeadmanTiming(expiry, t)


def whole_seconds_backend(backend: str) -> bool:
    """Backends whose dead-man timer is xt_recent (whole seconds)."""
    return backend in ("xt_cluster", "clusterip")
