"""A tiny in-memory simulation of hooks obeying the map, used to drive the pure planner in tests.

This is a fake for unit tests of pure logic only; the real proof runs against ZooKeeper and kernels.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.core.model import (
    BucketMap,
    ClusterSpec,
    ClusterView,
    FailbackSettings,
    Health,
    HookStatus,
    HostHealth,
    HostSpec,
    Intents,
    Member,
)
from controller.core.planner import Decision, plan


def make_spec(
    hosts: int, buckets: int, policy: str = "immediate", hold: float = 30.0, *, max_drain: float = 600.0,
    backend: str = "nftables",
) -> ClusterSpec:
    ids = [f"h{i}" for i in range(1, hosts + 1)]
    homes: dict[str, list[int]] = {h: [] for h in ids}
    for b in range(1, buckets + 1):
        homes[ids[(b - 1) % hosts]].append(b)
    return ClusterSpec(
        name="c1",
        vip=__import__("ipaddress").ip_address("198.18.0.100"),
        interface="eth0",
        backend=backend,  # type: ignore[arg-type]
        buckets=buckets,
        cluster_mac="01:00:5e:00:01:64",
        hosts=tuple(HostSpec(h, tuple(homes[h]), "127.0.0.1", 22) for h in ids),
        failback=FailbackSettings(policy=policy, hold_down_s=hold, max_drain_s=max_drain),  # type: ignore[arg-type]
    )


class Sim:
    """Cluster state: health per host, live hooks, what each hook's kernel holds, the map."""

    def __init__(self, spec: ClusterSpec, now: float = 1000.0) -> None:
        self.spec = spec
        self.now = now
        self.health = {h: HostHealth(h, Health.UP, 0.0, "") for h in spec.host_ids}
        self.members = {h: Member(h, "127.0.0.1", "test", spec.backend) for h in spec.host_ids}
        self.statuses: dict[str, HookStatus] = {h: HookStatus(h, 0, frozenset(), 0.0) for h in spec.host_ids}
        self.map = BucketMap.empty(spec.name, spec.buckets)
        self.intents = Intents()
        self.decisions: list[Decision] = []
        #: connections each host's conntrack still tracks per bucket (absent: none)
        self.sessions: dict[str, dict[int, int]] = {}
        #: E each hook reports for its kernel dead-man switch (None: none, like the memory backend)
        self.deadman_s: float | None = None

    def kill_hook(self, host: str) -> None:
        """The hook of ``host`` dies and its session expires; its last status stays; the host stays up."""
        self.members.pop(host, None)

    def start_hook(self, host: str) -> None:
        """A restarted hook registers, applies the current map and publishes what its kernel holds."""
        self.members[host] = Member(host, "127.0.0.1", "test", self.spec.backend)
        self.apply(host)

    def view(self) -> ClusterView:
        return ClusterView(self.spec, self.map, 0, self.health, self.members, self.statuses, self.intents)

    def step(self) -> Decision:
        decision = plan(self.view(), self.now)
        assert decision.map.epoch >= self.map.epoch
        self.decisions.append(decision)
        self.map = decision.map
        return decision

    def apply(self, host: str) -> None:
        """The hook of ``host`` applies the current map and publishes what its kernel holds."""
        if host in self.members:
            draining = self.map.draining_on(host)
            tracked = self.sessions.get(host, {})
            counts = {b: tracked.get(b, 0) for b in draining}
            self.statuses[host] = HookStatus(host, self.map.epoch, self.map.owned_by(host), self.now,
                                             draining=draining, sessions=counts, deadman_s=self.deadman_s)

    def apply_all(self) -> None:
        for host in self.members:
            self.apply(host)

    def converge(self, rounds: int = 50) -> BucketMap:
        for _ in range(rounds):
            decision = self.step()
            self.apply_all()
            if not decision.changed:
                return self.map
        raise AssertionError("planner did not converge: " + self.decisions[-1].summary)

    def fail(self, hosts: Iterable[str], hook_dies: bool = True) -> None:
        for host in hosts:
            self.health[host] = HostHealth(host, Health.DOWN, self.now, "banner timeout 300 ms")
            if hook_dies:
                self.members.pop(host, None)
                self.statuses.pop(host, None)

    def recover(self, host: str) -> None:
        self.health[host] = HostHealth(host, Health.UP, self.now, "")
        self.members[host] = Member(host, "127.0.0.1", "test", self.spec.backend)
        self.statuses[host] = HookStatus(host, self.map.epoch, frozenset(), self.now, deadman_s=self.deadman_s)

    def counts(self, hosts: Iterable[str]) -> dict[str, int]:
        return {h: len(self.map.owned_by(h)) for h in hosts}

    def held_overlap(self) -> list[int]:
        """Buckets held by two live hooks at once, according to their published state."""
        seen: dict[int, str] = {}
        overlap: list[int] = []
        for host, status in self.statuses.items():
            if host not in self.members:
                continue
            for bucket in status.held:
                if bucket in seen:
                    overlap.append(bucket)
                seen[bucket] = host
        return overlap
