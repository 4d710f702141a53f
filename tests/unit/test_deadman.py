"""The dead-man switch without a kernel: timing derivation, rule text, /proc writes, the hook's refresh rules."""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.deadman import HEARTBEAT_FRACTION, MAX_FRACTION, deadman_timing, whole_seconds_backend
from controller.core.errors import BackendError, ConfigError
from controller.core.model import ClusterSpec, HashSettings, HookStatus, HostSpec, ZooKeeperSettings
from node_hook.agent import HookAgent
from node_hook.backends import create_backend
from node_hook.backends._deadman_ipt import RecentDeadman
from node_hook.backends._deadman_nft import NftDeadman, alive_elements, removal_commands, rule_comments
from node_hook.backends.memory import MemoryBackend
from node_hook.backends.nftables import NftablesBackend

SPEC = ClusterSpec(
    name="unix0", vip=ipaddress.ip_address("198.18.0.100"), interface="eth0", backend="nftables", buckets=4,
    cluster_mac="01:00:5E:41:9E:A0", hosts=(HostSpec("h1", (1, 2), "198.18.0.11"), HostSpec("h2", (3, 4), "x")),
    hash=HashSettings(seed=0xDEADBEEF), protocol="all",
)


# --------------------------------------------------------------------------- timing


def test_timing_for_the_profiles() -> None:
    default = deadman_timing(1.5, whole_seconds=False)
    assert default.expiry_s == pytest.approx(0.9) and default.refresh_s == pytest.approx(0.15)
    assert default.lapse_s == pytest.approx(0.675)
    assert default.margin_s == pytest.approx(1.5 * 0.95 - 0.9)
    assert deadman_timing(0.3, whole_seconds=False).expiry_s == pytest.approx(0.18)  # the fast profile
    assert deadman_timing(1.5, whole_seconds=True).expiry_s == 1.0  # xt_recent: whole seconds
    assert deadman_timing(4.0, whole_seconds=True).expiry_s == 2.0
    assert deadman_timing(2.5, whole_seconds=True).expiry_s == 1.0  # round(1.5) = 2 > 0.75 x 2.5
    assert deadman_timing(1.34, whole_seconds=True).expiry_s == 1.0
    assert whole_seconds_backend("xt_cluster") and whole_seconds_backend("clusterip")
    assert not whole_seconds_backend("nftables")


def test_timing_too_short_for_whole_seconds_is_one_line_naming_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        deadman_timing(0.3, whole_seconds=True)
    (line,) = err.value.lines()
    assert "session_timeout_s >= 1.34" in line and "nftables" in line and "\n" not in line
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="positive"):
            deadman_timing(bad, whole_seconds=False)


@given(st.floats(0.05, 60.0), st.booleans())
def test_a_dead_hooks_kernel_stops_before_its_session_can_expire(session_s: float, whole: bool) -> None:
    """E + heartbeat + a 0.2 T margin <= T whenever a timing exists: "session gone" implies "kernel stopped"."""
    try:
        timing = deadman_timing(session_s, whole)
    except ConfigError:
        assert whole and MAX_FRACTION * session_s < 1  # only a 1 s timer too long for the session fails
        return
    assert 0 < timing.expiry_s <= MAX_FRACTION * session_s + 1e-9
    assert timing.expiry_s + HEARTBEAT_FRACTION * session_s < session_s
    assert timing.margin_s >= 0.2 * session_s - 1e-9
    assert timing.refresh_s < timing.lapse_s < timing.expiry_s
    if whole:
        assert timing.expiry_s == int(timing.expiry_s) >= 1


# --------------------------------------------------------------------------- nftables rendering


def test_nft_alive_chain_and_commands() -> None:
    backend = NftablesBackend(SPEC, "h1", deadman_s=0.9)
    dm = backend.deadman
    assert dm is not None and backend.deadman_s == 0.9
    assert dm.rule == 'iifname "eth0" ip daddr 198.18.0.100 ip daddr != @alive drop'
    fresh = dm.install_commands(None, fresh=True)
    assert fresh[0] == "add set ip cif_unix0 alive { type ipv4_addr; flags timeout; }"
    assert "priority -301" in fresh[1] and fresh[-1].endswith(f'comment "cif:{backend.fp}:alive"')
    assert dm.arm_command() == ("flush set ip cif_unix0 alive\n"
                                "add element ip cif_unix0 alive { 198.18.0.100 timeout 900ms }")
    # the refresh fails (changing nothing) once the element has expired: delete first
    assert dm.refresh_command().startswith("delete element ip cif_unix0 alive { 198.18.0.100 }\nadd element")
    assert dm.disarm_command() == "flush set ip cif_unix0 alive"
    # the balancing rules and their fingerprint are those of a backend without the switch
    plain = NftablesBackend(SPEC, "h1")
    assert plain.rules == backend.rules and plain.fp == backend.fp and plain.deadman is None


def test_nft_alive_chain_adopted_rewritten_or_removed() -> None:
    dm = NftDeadman("ip", "t", "eth0", "198.18.0.100", 0.9, "cif:fp:alive")
    installed = [{"chain": {"name": "pre"}}, {"rule": {"chain": "pre", "comment": "cif:fp:0"}},
                 {"set": {"name": "alive"}}, {"chain": {"name": "alive"}},
                 {"rule": {"chain": "alive", "comment": "cif:fp:alive"}}]
    assert rule_comments(installed, "alive") == ["cif:fp:alive"]
    assert dm.install_commands(installed, fresh=False) == []  # in place: nothing to write
    changed = [*installed[:4], {"rule": {"chain": "alive", "comment": "cif:old:alive"}}]
    assert "flush chain ip t alive" in dm.install_commands(changed, fresh=False)
    assert "flush chain ip t alive" not in dm.install_commands(installed[:2], fresh=False)
    assert removal_commands("ip", "t", installed) == ["delete chain ip t alive", "delete set ip t alive"]
    assert removal_commands("ip", "t", installed[:2]) == [] and removal_commands("ip", "t", None) == []
    v6 = NftDeadman("ip6", "t", "eth0", "2001:2::100", 0.18, "c")
    assert "type ipv6_addr" in v6.install_commands(None, fresh=True)[0] and "timeout 180ms" in v6.arm_command()
    assert alive_elements([{"set": {"name": "alive", "elem": [{"elem": {"val": "198.18.0.100"}}]}}]) == 1
    assert alive_elements([{"set": {"name": "alive"}}]) == 0


# --------------------------------------------------------------------------- iptables (xt_recent)


def test_recent_rule_text_and_proc_writes(tmp_path: Path) -> None:
    dm = RecentDeadman("CIF-unix0", "eth0", "198.18.0.100", 1.0, "cif:fp:alive", recent_dir=tmp_path)
    assert dm.name == "CIF-unix0-alive" and dm.proc == tmp_path / "CIF-unix0-alive"
    rule = dm.rule()
    recent = next(m for m in rule.matches if m.name == "recent")
    assert recent.parameters["rcheck"] == "!" and recent.parameters["seconds"] == "1"
    assert recent.parameters["name"] == "CIF-unix0-alive" and "rdest" in recent.parameters
    assert rule.dst.startswith("198.18.0.100/") and rule.in_interface == "eth0" and rule.target.name == "DROP"
    with pytest.raises(BackendError, match="cannot open"):
        dm.arm()  # not installed: one line naming the fix
    assert not dm.refresh()
    dm.proc.write_text("")
    dm.arm()
    assert dm.proc.read_text() == "+198.18.0.100\n"
    assert dm.refresh()
    dm.disarm()
    assert dm.proc.read_text().endswith("-198.18.0.100\n")
    with pytest.raises(BackendError, match="whole seconds"):
        RecentDeadman("C", "eth0", "198.18.0.100", 0.9, "c")


def test_create_backend_passes_the_timer() -> None:
    assert create_backend(SPEC, "h1", deadman_s=0.9).deadman_s == 0.9
    assert create_backend(SPEC, "h1", "xt_cluster", deadman_s=1.0).deadman_s == 1.0
    assert create_backend(dataclasses.replace(SPEC, protocol="tcp", ports=(22,)), "h1", "clusterip",
                          deadman_s=1.0).deadman_s == 1.0
    assert create_backend(SPEC, "h1", "memory", deadman_s=1.0).deadman_s is None  # no kernel, no switch


# --------------------------------------------------------------------------- the hook's refresh rules


class TimerBackend(MemoryBackend):
    """A memory backend with a dead-man timer that behaves like nft's: expires, refuses to revive."""

    def __init__(self, expiry_s: float) -> None:
        super().__init__(4, frozenset({1, 2}))
        self.deadman_s = expiry_s
        self.expires_at = 0.0
        self.calls: list[str] = []

    def arm_alive(self) -> None:
        self.calls.append("arm")
        self.expires_at = time.monotonic() + (self.deadman_s or 0)

    def refresh_alive(self) -> bool:
        self.calls.append("refresh")
        if time.monotonic() >= self.expires_at:
            return False
        self.expires_at = time.monotonic() + (self.deadman_s or 0)
        return True

    def disarm_alive(self) -> None:
        self.calls.append("disarm")
        self.expires_at = 0.0


def _agent(backend: TimerBackend) -> HookAgent:
    return HookAgent(SPEC, ZooKeeperSettings(session_timeout_s=1.5), "h1", backend)


def test_refresh_extends_an_armed_timer_and_never_revives_a_lapsed_one() -> None:
    backend = TimerBackend(0.9)
    agent = _agent(backend)
    assert agent.deadman is not None and agent.deadman.expiry_s == 0.9
    agent.refresh_deadman()
    assert backend.calls == []  # not armed (no map applied yet): nothing is refreshed
    backend.arm_alive()
    agent.state.alive_armed, agent._alive_at, agent._map_stale = True, time.monotonic(), False
    agent.refresh_deadman()
    assert backend.calls[-1] == "refresh" and agent.state.alive_armed
    # a stall longer than the lapse time (SIGSTOP, starvation): no refresh, the map must be re-read
    agent._alive_at -= 0.8
    agent.refresh_deadman()
    assert backend.calls[-1] == "refresh" and backend.calls.count("refresh") == 1
    assert not agent.state.alive_armed and agent._map_stale and agent._wake.is_set()


def test_a_timer_the_kernel_already_dropped_is_not_refreshed_blindly() -> None:
    backend = TimerBackend(0.9)
    agent = _agent(backend)
    agent.state.alive_armed, agent._alive_at, agent._map_stale = True, time.monotonic(), False
    backend.expires_at = 0.0  # expired in the kernel although our clock says it should not have
    agent.refresh_deadman()
    assert not agent.state.alive_armed and agent._map_stale


def test_fenced_hook_does_not_refresh() -> None:
    backend = TimerBackend(0.9)
    agent = _agent(backend)
    agent.state.alive_armed, agent._alive_at, agent.state.fenced = True, time.monotonic(), True
    agent.refresh_deadman()
    assert backend.calls == []


def test_arming_needs_a_fresh_map_a_short_cycle_and_a_published_status() -> None:
    backend = TimerBackend(0.9)
    agent = _agent(backend)
    published: list[object] = []
    agent.store.publish_status = published.append  # type: ignore[method-assign]
    agent._map_stale = True
    agent._maybe_arm(time.monotonic())
    assert backend.calls == [] and not published  # map not re-read in this session: never arm
    agent._map_stale = False
    agent._maybe_arm(time.monotonic() - 1.0)  # the cycle was stalled: re-read instead
    assert backend.calls == [] and agent._map_stale
    agent._map_stale = False
    agent._maybe_arm(time.monotonic())
    assert published and backend.calls == ["arm"] and agent.state.alive_armed


def test_memory_backend_has_no_dead_man_loop() -> None:
    agent = HookAgent(SPEC, ZooKeeperSettings(), "h1", MemoryBackend(4))
    assert agent.deadman is None
    agent.refresh_deadman()  # a no-op


def test_published_status_tells_the_controller_about_the_switch() -> None:
    backend = TimerBackend(0.9)
    agent = _agent(backend)
    published: list[HookStatus] = []
    agent.store.publish_status = published.append  # type: ignore[method-assign]
    agent._map_stale = False
    agent._maybe_arm(time.monotonic())  # the status written right before arming
    assert published[-1].deadman_s == 0.9 and agent._status().deadman_s == 0.9
    memory = HookAgent(SPEC, ZooKeeperSettings(), "h1", MemoryBackend(4))
    assert memory._status().deadman_s is None  # no switch: the controller keeps the old rule


def test_stop_clears_the_timer_before_closing_the_session() -> None:
    """A closed session vanishes at once, and the controller counts a vanished hook with a switch as
    released: the kernel must have stopped accepting before that."""
    backend = TimerBackend(0.9)
    agent = _agent(backend)
    order: list[str] = []
    backend.disarm_alive = lambda: order.append("disarm")  # type: ignore[method-assign]
    agent.client.stop = lambda: order.append("close session")  # type: ignore[method-assign]
    agent.client.close = lambda: None  # type: ignore[method-assign]
    agent.state.alive_armed = True
    agent.stop()
    assert order == ["disarm", "close session"] and not agent.state.alive_armed


def test_stop_waits_out_the_timer_when_it_cannot_clear_it() -> None:
    backend = TimerBackend(0.3)
    agent = _agent(backend)
    closed: list[float] = []

    def fail() -> None:
        raise BackendError("netlink: permission denied")

    backend.disarm_alive = fail  # type: ignore[method-assign]
    agent.client.stop = lambda: closed.append(time.monotonic())  # type: ignore[method-assign]
    agent.client.close = lambda: None  # type: ignore[method-assign]
    agent._alive_at = time.monotonic()
    agent.stop()
    assert closed and closed[0] - agent._alive_at >= 0.3  # the session closed only after E
