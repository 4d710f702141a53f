"""Self-fencing: tell "I am cut off from ZooKeeper" apart from "ZooKeeper is down for everyone".

A hook that loses ZooKeeper while its peers still reach it will have its buckets handed to the
survivors once its session expires, so it must release them *before* that. But when ZooKeeper is
down for everybody, nobody can take over and dropping buckets would only cut clients off.

The rule (like Patroni's failsafe mode): after ``threshold`` seconds without a ZooKeeper answer, a
hook keeps its buckets only if *every* peer it knew about answers, and every one of them says it
too has lost ZooKeeper. Any silent peer, or any peer still connected, means this host may be the
isolated one, so it releases. This module is the pure decision; the I/O lives in the agent and
in node_hook.peers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PeerAnswer:
    host_id: str
    connected: bool  # the peer heard from ZooKeeper within its own threshold


@dataclass(frozen=True)
class FenceVerdict:
    action: Literal["keep", "release"]
    reason: str


def decide(
    disconnected_for: float,
    threshold: float,
    expected_peers: frozenset[str],
    answers: Mapping[str, PeerAnswer],
) -> FenceVerdict:
    """Decide whether to keep serving while ZooKeeper has been silent for ``disconnected_for`` s."""
    if disconnected_for < threshold:
        return FenceVerdict("keep", f"ZooKeeper silent for {disconnected_for:.2f} s, below {threshold:.2f} s")
    connected = sorted(h for h, a in answers.items() if a.connected and h in expected_peers)
    if connected:
        return FenceVerdict("release", f"isolated: peers {', '.join(connected)} still reach ZooKeeper")
    silent = sorted(expected_peers - set(answers))
    if silent:
        return FenceVerdict("release", f"isolated or unsure: peers {', '.join(silent)} did not answer")
    return FenceVerdict(
        "keep",
        f"ZooKeeper unreachable for all {len(expected_peers)} peers too: outage, keeping buckets",
    )
