"""The client-side takeover computation of the lab (clusterlab.measure.recovery) on hand-made timelines."""

from __future__ import annotations

from clusterlab.measure import percentile, recovery


def test_recovery_cases() -> None:
    timelines = {
        "glitch-later": [(-1.0, "h2"), (0.1, "!banner timeout"), (0.8, "h3"), (5.0, "!banner timeout"), (5.1, "h3")],
        "moved-without-error": [(-1.0, "h2"), (0.5, "h1")],
        "unaffected": [(-1.0, "h1")],
        "never": [(-1.0, "h2"), (0.2, "!connect timeout")],
        "failing-before-fault": [(-0.3, "!banner timeout"), (0.9, "h4")],
        "slow-survivor-at-end": [(-1.0, "h2"), (0.2, "!banner timeout"), (1.0, "h1"), (2.0, "!banner timeout")],
        "refused-at-end": [(-1.0, "h2"), (1.0, "h1"), (2.0, "!ECONNREFUSED")],
        "victim-at-end": [(-1.0, "h2"), (0.5, "!banner timeout"), (1.0, "h2")],
    }
    got = {r.source: r for r in recovery(timelines, 0.0, bad_hosts=["h2"])}
    assert got["glitch-later"].recovered_s == 0.8 and got["glitch-later"].after == "h3"
    assert got["moved-without-error"].recovered_s == 0.5
    assert got["unaffected"].recovered_s == 0.0
    assert got["never"].recovered_s is None and got["never"].after is None
    assert got["failing-before-fault"].recovered_s == 0.9
    assert got["slow-survivor-at-end"].recovered_s == 1.0 and got["slow-survivor-at-end"].after == "h1"
    assert got["refused-at-end"].recovered_s is None
    assert got["victim-at-end"].recovered_s is None


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
