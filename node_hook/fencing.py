"""Self-fencing: tell "I am cut off from ZooKeeper" apart from "ZooKeeper is down for everyone".

A hook that loses ZooKeeper while its peers still reach it will have its buckets handed to the
survivors once its session expires, so it must release them *before* that. But when ZooKeeper is
down for everybody, nobody can take over and dropping buckets would only cut clients off.

The rule (like Patroni's failsafe mode): after ``threshold`` seconds without a ZooKeeper answer, a
hook keeps its buckets only if *every* peer it knows answers, and none of them reaches ZooKeeper.
Any silent peer, or any peer that reaches ZooKeeper, means this host may be the isolated one, so it
releases. Two refinements, both found by integration tests against real ZooKeeper:

* A peer counts as reaching ZooKeeper only if it heard from it within ``fresh_s`` (its answer says
  how long ago). At the start of an outage every hook goes silent at about the same moment, but
  their heartbeats are out of phase; a peer 0.4 s into the same outage is not "connected".
* Once an outage is confirmed, ZooKeeper comes back for the hooks one after another (a new
  ZooKeeper leader accepts clients in turn). A peer that is back is then no proof of isolation
  until ``grace_s`` has passed without this hook reconnecting too. This is safe because a
  recovering ZooKeeper gives every session a fresh timeout (a new quorum leader, or a restarted
  server, re-arms all session timers), so releasing within ``grace_s`` of the first peer's return
  still comes before this hook's session can expire. Likewise, a peer that stops answering during
  a confirmed outage (a starved host answers UDP late) decides nothing until the last time *every*
  peer confirmed the outage is ``grace_s`` ago.

This module is the pure decision; the I/O lives in the agent and in node_hook.peers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PeerAnswer:
    host_id: str
    connected: bool  # the peer heard from ZooKeeper within its own threshold
    #: seconds since the peer last heard from ZooKeeper (None: an older peer that does not say)
    silent_s: float | None = None
    #: seconds the peer has been reaching ZooKeeper without a gap (None: an older peer)
    connected_for_s: float | None = None


@dataclass(frozen=True)
class FenceVerdict:
    action: Literal["keep", "release"]
    reason: str
    #: True while the verdict rests on an outage (confirmed now or earlier in this silence)
    outage: bool = False
    #: True when every peer answered just now and none reaches ZooKeeper
    confirmed: bool = False


def reaches_zookeeper(answer: PeerAnswer, fresh_s: float) -> bool:
    """Does this peer reach ZooKeeper *now* (not merely "not yet past its own threshold")?"""
    return answer.connected and (answer.silent_s is None or answer.silent_s < fresh_s)


def decide(
    disconnected_for: float,
    threshold: float,
    expected_peers: frozenset[str],
    answers: Mapping[str, PeerAnswer],
    *,
    fresh_s: float | None = None,
    outage_confirmed: bool = False,
    peers_back_for: float = 0.0,
    grace_s: float = 0.0,
    confirmed_ago: float | None = None,
    hard_limit_s: float | None = None,
) -> FenceVerdict:
    """Decide whether to keep serving while ZooKeeper has been silent for ``disconnected_for`` s.

    ``outage_confirmed``: an earlier verdict during this same silence found every peer cut off too;
    ``peers_back_for``: for how long (seconds) some peer has been seen reaching ZooKeeper since;
    ``confirmed_ago``: seconds since every peer last confirmed the outage;
    ``hard_limit_s``: silence after which a hook releases unless every peer confirms an outage.
    """
    if disconnected_for < threshold:
        return FenceVerdict("keep", f"ZooKeeper silent for {disconnected_for:.2f} s, below {threshold:.2f} s")
    fresh = threshold / 2 if fresh_s is None else fresh_s
    connected = sorted(h for h, a in answers.items() if h in expected_peers and reaches_zookeeper(a, fresh))
    if connected:
        names = ", ".join(connected)
        if outage_confirmed and peers_back_for < grace_s:
            return FenceVerdict(
                "keep", f"ZooKeeper is back for {names}; waiting up to {grace_s:.2f} s to reconnect too", outage=True
            )
        if outage_confirmed:
            return FenceVerdict("release", f"isolated: ZooKeeper is back for {names} but not for this host")
        back_after_us = [
            answers[h].connected_for_s for h in connected if answers[h].connected_for_s is not None
        ]
        if (
            hard_limit_s is not None
            and disconnected_for < hard_limit_s
            and len(back_after_us) == len(connected)
            and all(c is not None and c < disconnected_for for c in back_after_us)
        ):
            # Every peer that reaches ZooKeeper lost it too during our silence and is just back (a
            # ZooKeeper server died and its clients reconnect one after another). Waiting for our own
            # reconnect is safe up to hard_limit_s, which lies well before our session could expire.
            return FenceVerdict(
                "keep", f"ZooKeeper just came back for {names} after cutting them off too; waiting to reconnect"
            )
        return FenceVerdict("release", f"isolated: peers {names} still reach ZooKeeper")
    silent = sorted(expected_peers - set(answers))
    if silent:
        names = ", ".join(silent)
        if outage_confirmed and confirmed_ago is not None and confirmed_ago < grace_s:
            return FenceVerdict(
                "keep", f"peers {names} did not answer; all confirmed the outage {confirmed_ago:.2f} s ago", outage=True
            )
        return FenceVerdict("release", f"isolated or unsure: peers {names} did not answer")
    return FenceVerdict(
        "keep",
        f"ZooKeeper unreachable for all {len(expected_peers)} peers too: outage, keeping buckets",
        outage=True,
        confirmed=True,
    )
