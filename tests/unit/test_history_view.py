"""``clusterip-ctl history`` helpers: --since parsing and one-line rendering."""

from __future__ import annotations

import pytest

from controller.core.errors import UsageError
from controller.core.history_view import format_time, parse_since, render_event
from controller.core.schema import HistoryEvent

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("text", "back"), [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("30", 30)])
def test_durations_count_back_from_now(text: str, back: float) -> None:
    assert parse_since(text, NOW) == NOW - back


def test_iso_times_are_utc_unless_they_say_otherwise() -> None:
    assert parse_since("2023-11-14T22:13:20Z", NOW) == NOW
    assert parse_since("2023-11-14T22:13:20", NOW) == NOW
    assert parse_since("2023-11-15T00:13:20+02:00", NOW) == NOW


def test_nonsense_is_a_usage_error_naming_both_forms() -> None:
    with pytest.raises(UsageError, match=r"duration .* ISO time"):
        parse_since("yesterday", NOW)


def test_render_one_line() -> None:
    event = HistoryEvent(NOW, 7, "grant", "h1 down: power", "c1", bucket=3, to_host="h2")
    assert render_event(event) == "2023-11-14T22:13:20.000Z epoch 7 grant b3 to h2 (h1 down: power) [c1]"
    assert format_time(NOW + 0.25).endswith(".250Z")


def test_drain_end_shows_preserved_and_cut_sessions() -> None:
    from controller.core.history_view import event_json, render_event
    from controller.core.schema import HistoryEvent

    event = HistoryEvent(0.0, 9, "drain-end", "maximum drain time 30 s reached", "c", 2, "h3", None, 1, 3)
    assert "drain-end b2 from h3: 1 sessions preserved, 3 cut (maximum drain time" in render_event(event)
    assert (event_json(event)["preserved"], event_json(event)["cut"]) == (1, 3)
