"""Profiles: named sets of defaults, applied by the config parser, overridden by explicit keys."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from controller.core.config import parse_config
from controller.core.errors import ConfigError
from controller.core.model import HandoffSettings, ProbeSettings
from controller.core.profiles import PROFILES, get_profile, profile_names

CLUSTER: dict[str, Any] = {
    "name": "lab", "vip": "198.18.0.100", "interface": "eth0", "backend": "nftables", "buckets": 4,
    "cluster_mac": "01:00:5E:00:01:64",
    "hosts": [{"id": f"h{i}", "ssh": f"198.19.0.{10 + i}:22", "home_buckets": [i]} for i in range(1, 5)],
}


def config(top: dict[str, Any] | None = None, **cluster: Any) -> str:
    data: dict[str, Any] = {"zookeeper": {"hosts": "127.0.0.1:2181"}, **(top or {})}
    data["clusters"] = [{**copy.deepcopy(CLUSTER), **cluster}]
    return yaml.safe_dump(data)


def test_default_profile_is_the_settings_defaults() -> None:
    p = get_profile("default")
    assert p.probe == ProbeSettings()
    assert p.handoff == HandoffSettings()
    parsed = parse_config(config())
    assert parsed.profile == "default"
    assert parsed.clusters[0].probe == ProbeSettings()
    assert parsed.zookeeper.session_timeout_s == p.session_timeout_s


def test_top_level_profile_applies_to_zookeeper_and_every_cluster() -> None:
    parsed = parse_config(config({"profile": "fast"}))
    fast = get_profile("fast")
    assert parsed.profile == "fast"
    assert parsed.zookeeper.session_timeout_s == fast.session_timeout_s
    assert parsed.clusters[0].probe == fast.probe
    assert parsed.clusters[0].handoff == fast.handoff


def test_cluster_profile_applies_to_that_cluster_only() -> None:
    parsed = parse_config(config(profile="fast"))
    assert parsed.clusters[0].probe == get_profile("fast").probe
    assert parsed.zookeeper.session_timeout_s == get_profile("default").session_timeout_s
    assert parsed.profile == "default"


def test_explicit_keys_override_the_profile() -> None:
    top = {"profile": "fast", "zookeeper": {"hosts": "127.0.0.1:2181", "session_timeout_s": 0.5}}
    parsed = parse_config(config(top, probe={"fall": 3}, handoff={"self_fence_fraction": 0.4}))
    c = parsed.clusters[0]
    assert parsed.zookeeper.session_timeout_s == 0.5
    assert c.probe.fall == 3 and c.probe.interval_s == get_profile("fast").probe.interval_s
    assert c.handoff.self_fence_fraction == 0.4


@pytest.mark.parametrize(("top", "cluster", "path"), [({"profile": "fastest"}, {}, "profile"),
                                                      ({}, {"profile": 3}, "clusters[0].profile")])
def test_unknown_profile_is_a_one_line_error(top: dict[str, Any], cluster: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(config(top, **cluster))
    assert path in str(err.value) and "default" in str(err.value)


def test_get_profile_names_the_choices() -> None:
    assert profile_names() == ("default", "fast")
    with pytest.raises(KeyError, match="choose one of default, fast"):
        get_profile("slow")


@pytest.mark.parametrize("name", list(PROFILES))
def test_profiles_are_valid_and_consistent(name: str) -> None:
    p = get_profile(name)
    parse_config(config({"profile": name}))  # passes every config rule (e.g. timeout <= fall x interval)
    # the ZooKeeper server can grant the session: [2, 20] x tickTime
    assert 2 * p.zk_tick_ms / 1000 <= p.session_timeout_s <= 20 * p.zk_tick_ms / 1000
    assert p.self_fence_after_s < p.session_timeout_s


def test_profile_bounds_meet_their_targets() -> None:
    # hung sshd, probes alone, a host whose banners come in time: default <= 0.8 s; fast leaves room
    # for the grant within 0.5 s end to end
    assert get_profile("default").hung_detection_bound_s <= 0.8
    assert get_profile("fast").hung_detection_bound_s <= 0.4
    # a crash fails over no sooner than the session expires: fast must stay under 0.4 s end to end
    assert get_profile("fast").session_timeout_s <= 0.3
    assert get_profile("default").session_timeout_s <= 1.6
