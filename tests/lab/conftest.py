"""Fixtures for lab tests: namespace clusters on the real kernel (root only).

- ``lab_topology``: a fresh cluster (clusterlab.netns.build) around one test, destroyed afterwards even
  on failure. Tune it per test with ``@pytest.mark.lab_topology(hosts=3, client_sources=64, ...)``
  (any keyword of ``build``).
- ``lab_factory``: call it to build extra or custom clusters; all are destroyed at teardown.
- At session start, leftovers of crashed earlier runs (creator process gone) are removed.

Build/destroy times are printed (``-s``) and recorded as junit properties ``lab_build_s`` /
``lab_destroy_s``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from clusterlab import netns

from tests.lab.backend_driver import Driver

LAB_TAG = "cif"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_topology(**kw): clusterlab.netns.build() arguments for lab_topology")


def lab_unavailable() -> str | None:
    """Why the namespace lab cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "namespace lab needs root (CAP_NET_ADMIN); run the lab tests as root"
    for tool, package in (("ip", "iproute2"), ("bridge", "iproute2"), ("sysctl", "procps")):
        if shutil.which(tool) is None:
            return f"namespace lab needs `{tool}`: apt-get install {package}"
    return None


@pytest.fixture(scope="session", autouse=True)
def _lab_remove_stale() -> None:
    if lab_unavailable() is None:
        removed = netns.remove_stale(LAB_TAG)
        if removed:
            print(f"\nclusterlab: removed leftovers of crashed lab runs: {removed}")


@pytest.fixture
def lab_factory(record_property: Callable[[str, object], None]) -> Iterator[Callable[..., netns.LabTopology]]:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    built: list[str] = []

    def make(**kw: Any) -> netns.LabTopology:
        prefix = netns.new_prefix(LAB_TAG)
        built.append(prefix)
        start = time.monotonic()
        topology = netns.build(prefix, **kw)
        took = time.monotonic() - start
        record_property("lab_build_s", round(took, 3))
        print(f"\nclusterlab: built {prefix} ({len(topology.hosts)} hosts, "
              f"{len(topology.client_sources)} sources) in {took:.3f} s")
        return topology

    yield make
    for prefix in built:
        start = time.monotonic()
        netns.destroy(prefix)
        took = time.monotonic() - start
        record_property("lab_destroy_s", round(took, 3))
        print(f"\nclusterlab: destroyed {prefix} in {took:.3f} s")


@pytest.fixture
def lab_topology(request: pytest.FixtureRequest, lab_factory: Callable[..., netns.LabTopology]) -> netns.LabTopology:
    marker = request.node.get_closest_marker("lab_topology")
    return lab_factory(**(marker.kwargs if marker else {}))


@pytest.fixture
def drivers() -> Iterator[dict[str, Driver]]:
    """Started backend drivers by host name; each is removed from the kernel and stopped at teardown."""
    running: dict[str, Driver] = {}
    yield running
    for driver in running.values():
        if driver.proc is not None:
            try:
                driver.call("remove", check=False, timeout_s=20)
            finally:
                driver.stop()
