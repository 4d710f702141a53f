"""FileHealth, the external health input: reacts to an atomic replace at once (inotify), and still by
polling where inotify is unavailable."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from controller import health_source
from controller.core.model import Health, HostHealth


def replace(path: Path, doc: dict[str, str]) -> float:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    at = time.monotonic()
    os.replace(tmp, path)
    return at


def watch(source: health_source.FileHealth) -> tuple[list[tuple[float, HostHealth]], threading.Event]:
    seen: list[tuple[float, HostHealth]] = []
    changed = threading.Event()

    def on_change(h: HostHealth) -> None:
        seen.append((time.monotonic(), h))
        changed.set()

    source.subscribe(on_change)
    return seen, changed


def test_atomic_replace_is_seen_at_once_without_waiting_for_the_poll(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    replace(path, {"h1": "up", "h2": "up"})
    source = health_source.FileHealth(str(path), ["h1", "h2"], poll_s=5.0)  # polling alone: 5 s
    seen, changed = watch(source)
    source.start()
    try:
        at = replace(path, {"h1": "down", "h2": "up"})
        assert changed.wait(2.0), "no reaction long before the 5 s poll"
        when, h = seen[0]
        assert h.host_id == "h1" and h.state is Health.DOWN
        assert when - at < 1.0
    finally:
        source.stop()


def test_without_inotify_the_file_is_still_polled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_source._DirectoryNotify, "open", classmethod(lambda cls, directory: None))
    path = tmp_path / "health.json"
    replace(path, {"h1": "up"})
    source = health_source.FileHealth(str(path), ["h1"], poll_s=0.01)
    seen, changed = watch(source)
    source.start()
    try:
        replace(path, {"h1": "down"})
        assert changed.wait(2.0)
        assert seen[0][1].state is Health.DOWN
    finally:
        source.stop()


def test_writes_of_other_files_in_the_directory_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    replace(path, {"h1": "up"})
    source = health_source.FileHealth(str(path), ["h1"], poll_s=5.0)
    seen, _ = watch(source)
    source.start()
    try:
        for i in range(20):
            (tmp_path / f"other{i}").write_text("x")
        time.sleep(0.1)
        assert seen == []
        assert source.snapshot()["h1"].state is Health.UP
    finally:
        source.stop()
