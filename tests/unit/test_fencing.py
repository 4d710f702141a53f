"""The self-fencing rule (node_hook.fencing): isolation releases, an outage keeps, with its limits."""

from __future__ import annotations

from node_hook.fencing import PeerAnswer, decide

PEERS = frozenset({"h2", "h3"})


def answers(**silent: float | None) -> dict[str, PeerAnswer]:
    """Peers answering, each with its seconds since it last heard ZooKeeper (threshold 0.5)."""
    return {h: PeerAnswer(h, s is not None and s < 0.5, s) for h, s in silent.items()}


def test_below_threshold_keeps_without_asking() -> None:
    assert decide(0.3, 0.5, PEERS, {}).action == "keep"


def test_a_peer_that_reaches_zookeeper_now_means_isolation() -> None:
    verdict = decide(0.6, 0.5, PEERS, answers(h2=0.02, h3=0.7))
    assert verdict.action == "release" and "h2" in verdict.reason


def test_a_peer_just_short_of_its_own_threshold_is_in_the_same_outage() -> None:
    # Heartbeats are out of phase: 0.4 s into the outage the peer still says "connected".
    verdict = decide(0.6, 0.5, PEERS, answers(h2=0.4, h3=0.7), fresh_s=0.25)
    assert verdict.action == "keep" and verdict.outage and verdict.confirmed


def test_a_silent_peer_means_release_unless_an_outage_was_just_confirmed() -> None:
    assert decide(0.6, 0.5, PEERS, answers(h2=0.7)).action == "release"
    kw = {"outage_confirmed": True, "grace_s": 0.4}
    assert decide(0.9, 0.5, PEERS, answers(h2=0.9), confirmed_ago=0.1, **kw).action == "keep"
    assert decide(1.3, 0.5, PEERS, answers(h2=1.3), confirmed_ago=0.5, **kw).action == "release"


def test_after_an_outage_a_returning_peer_gets_a_grace_period() -> None:
    kw = {"outage_confirmed": True, "grace_s": 0.4}
    assert decide(2.0, 0.5, PEERS, answers(h2=0.01, h3=2.0), peers_back_for=0.1, **kw).action == "keep"
    verdict = decide(2.5, 0.5, PEERS, answers(h2=0.01, h3=2.5), peers_back_for=0.45, **kw)
    assert verdict.action == "release" and "back for h2" in verdict.reason


def test_older_peers_without_silence_figure_count_by_their_flag() -> None:
    legacy = {"h2": PeerAnswer("h2", True), "h3": PeerAnswer("h3", False)}
    assert decide(0.6, 0.5, PEERS, legacy).action == "release"


def test_peers_just_back_from_the_same_outage_let_us_wait_until_the_hard_limit() -> None:
    """A ZooKeeper server died: peers reconnected first (their streak began after our silence did)."""
    back = {"h2": PeerAnswer("h2", True, 0.01, connected_for_s=0.2), "h3": PeerAnswer("h3", True, 0.02, 0.1)}
    verdict = decide(0.55, 0.5, PEERS, back, fresh_s=0.25, hard_limit_s=0.7)
    assert verdict.action == "keep" and "just came back" in verdict.reason
    assert decide(0.71, 0.5, PEERS, back, fresh_s=0.25, hard_limit_s=0.7).action == "release", "hard limit"


def test_a_peer_connected_since_before_our_silence_proves_isolation() -> None:
    answers = {"h2": PeerAnswer("h2", True, 0.01, connected_for_s=30.0), "h3": PeerAnswer("h3", True, 0.02, 0.1)}
    assert decide(0.55, 0.5, PEERS, answers, fresh_s=0.25, hard_limit_s=0.7).action == "release"
    unknown = {"h2": PeerAnswer("h2", True, 0.01), "h3": PeerAnswer("h3", True, 0.02, 0.1)}
    assert decide(0.55, 0.5, PEERS, unknown, fresh_s=0.25, hard_limit_s=0.7).action == "release"
