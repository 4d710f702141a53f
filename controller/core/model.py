"""The typed, immutable model shared by the controller (which decides) and the node hook (which applies).

Everything here is a frozen dataclass so that a snapshot read from ZooKeeper can be handed to the
pure planner without anybody mutating it behind its back. Configuration types (what the operator
wrote) are separate from runtime types (what the cluster is doing now).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Backend = Literal["clusterip", "xt_cluster", "nftables"]
BACKENDS: tuple[Backend, ...] = ("clusterip", "xt_cluster", "nftables")

HashMode = Literal["sourceip", "sourceip-sourceport", "sourceip-sourceport-destport"]
HASH_MODES: tuple[HashMode, ...] = ("sourceip", "sourceip-sourceport", "sourceip-sourceport-destport")

FailbackPolicy = Literal["immediate", "delayed", "manual", "drain"]
FAILBACK_POLICIES: tuple[FailbackPolicy, ...] = ("immediate", "delayed", "manual", "drain")

#: Backends whose kernel rules can keep a bucket's established connections on one host while another
#: takes its new ones (docs/drain.md). CLUSTERIP has no conntrack-state rule of its own: plain moves.
#: xt_cluster does it with two more cluster matches combined with --ctstate (node_hook/backends/xt_cluster.py).
DRAIN_BACKENDS: tuple[Backend, ...] = ("nftables", "xt_cluster")

#: Largest bucket count each backend can express (CLUSTERIP's bitmap, xt_cluster's 32-bit nodemask).
#: nftables has no hard limit; we cap it to keep maps readable and znodes small.
MAX_BUCKETS: Mapping[Backend, int] = {"clusterip": 16, "xt_cluster": 32, "nftables": 256}


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class HashSettings:
    """How the kernel turns a packet into a bucket.

    CLUSTERIP uses ``mode`` and ``hash_init``; xt_cluster and nftables use only ``seed``.
    """

    mode: HashMode = "sourceip"
    hash_init: int = 0
    seed: int = 0xDEADBEEF


@dataclass(frozen=True)
class HostSpec:
    """One real host of a cluster as the operator configured it."""

    id: str
    home_buckets: tuple[int, ...]
    ssh_host: str
    ssh_port: int = 22


@dataclass(frozen=True)
class ProbeSettings:
    """SSH liveness probing. Level 1 reads the banner, level 2 logs in and runs a command."""

    interval_s: float = 0.15
    connect_timeout_s: float = 0.3
    banner_timeout_s: float = 0.3
    login_interval_s: float = 2.0
    login_timeout_s: float = 2.0
    fall: int = 3
    rise: int = 3
    #: consecutive *definite* failures (refused, host key changed, login/exec impossible) to go down
    definite_fall: int = 2
    #: level-2 re-check interval while the login level is not up (fast confirm, fast recovery)
    login_retry_s: float = 0.5
    #: threads for level-2 logins (one login per host at a time)
    login_workers: int = 16
    user: str = "clusterip-probe"
    key_file: str = "/etc/clusterip-failover/probe_key"
    known_hosts: str = "/etc/clusterip-failover/known_hosts"
    first_contact: Literal["refuse", "accept-new"] = "refuse"
    command: str = "true"
    #: cap of the adaptive per-host banner timeout (floor: banner_timeout_s); docs/probes.md
    banner_timeout_max_s: float = 1.0
    #: keep a timed-out probe socket open this long (from its start): a late banner is proof of life
    #: (12, not 8: on the saturated benchmark late banners came after a median 5.5 s and were cut at
    #: 8 s, so a slow host could go 10 s without one and fall like a hung one)
    late_banner_s: float = 12.0
    #: at most this many such late sockets per host
    late_sockets_per_host: int = 48
    #: hold soft failures at SUSPECT while more than this fraction of hosts fail at once (>= 1: never)
    correlated_fraction: float = 0.5
    #: ... but for at most this long without any sign of life from the held host
    hold_max_s: float = 10.0


@dataclass(frozen=True)
class HandoffSettings:
    """Exclusive handoff and self-fencing.

    ``self_fence_fraction``: a hook cut off from ZooKeeper (while its peers still reach it) releases
    its buckets after this fraction of the session timeout, so it lets go before the controller may
    hand them to a survivor.
    """

    self_fence_fraction: float = 0.5
    resync_interval_s: float = 5.0
    #: UDP port on which hooks ask each other whether they still reach ZooKeeper (see fencing docs).
    peer_port: int = 7947
    #: File with a shared secret that authenticates peer questions and answers ("" = none).
    peer_secret_file: str = ""


@dataclass(frozen=True)
class FailbackSettings:
    """When a recovered host gets its home buckets back, and how planned moves treat sessions.

    ``drain`` fails back at once like ``immediate``; under every policy a *planned* move (failback,
    ``clusterip-ctl drain``/``move``) of a bucket whose old owner is healthy is connection-aware: the
    old owner keeps the connections it tracks for at most ``max_drain_s`` while the new owner takes
    every new one (docs/drain.md). ``max_drain_s: 0`` turns that off (plain moves cut sessions).
    ``drain_poll_s``: how often a draining hook recounts the connections it still tracks.
    A configuration file that sets no ``policy`` gets :func:`default_failback_policy` of its backend;
    this dataclass default is the policy of backends that cannot drain.
    """

    policy: FailbackPolicy = "delayed"
    hold_down_s: float = 30.0
    max_drain_s: float = 600.0
    drain_poll_s: float = 0.5


def default_failback_policy(backend: Backend) -> FailbackPolicy:
    """``drain`` where the backend can drain, else ``delayed``.

    ``drain`` hands new connections back to the home host at once while the sessions opened on the
    survivor finish there; measured to break none (docs/drain.md). Without draining an at-once
    failback would cut those sessions, so the hold-down of ``delayed`` stays the default there.
    """
    return "drain" if backend in DRAIN_BACKENDS else "delayed"


@dataclass(frozen=True)
class ClusterSpec:
    """One virtual IP shared by several hosts through hash buckets."""

    name: str
    vip: IPAddress
    interface: str
    backend: Backend
    buckets: int
    cluster_mac: str
    hosts: tuple[HostSpec, ...]
    hash: HashSettings = field(default_factory=HashSettings)
    ports: tuple[int, ...] = ()
    protocol: Literal["tcp", "udp", "all"] = "tcp"
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    handoff: HandoffSettings = field(default_factory=HandoffSettings)
    failback: FailbackSettings = field(default_factory=FailbackSettings)

    def host(self, host_id: str) -> HostSpec:
        for host in self.hosts:
            if host.id == host_id:
                return host
        raise KeyError(host_id)

    @property
    def host_ids(self) -> tuple[str, ...]:
        return tuple(h.id for h in self.hosts)

    def home_of(self, bucket: int) -> str | None:
        for host in self.hosts:
            if bucket in host.home_buckets:
                return host.id
        return None


@dataclass(frozen=True)
class ZooKeeperSettings:
    """How to reach ZooKeeper, as whom, and over what (docs/security.md for auth and TLS).

    Secrets are never values here: ``auth_file`` and ``key_file`` name files that must be mode
    0600 (or stricter), read once at start. Empty ``auth_file`` keeps the open ACLs of old.
    """

    hosts: str = "127.0.0.1:2181"
    chroot: str = "/clusterip-failover"
    session_timeout_s: float = 4.0
    connect_timeout_s: float = 2.0
    #: file holding one line ``user:password`` (digest auth); the user name is the role
    auth_file: str = ""
    #: TLS to ZooKeeper (the server's secureClientPort)
    use_ssl: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    verify_certs: bool = True


@dataclass(frozen=True)
class Config:
    """A whole configuration file: ZooKeeper access plus one or more clusters."""

    zookeeper: ZooKeeperSettings
    clusters: tuple[ClusterSpec, ...]
    #: the top-level ``profile`` (controller/core/profiles.py): its cycle interval and ZooKeeper tick
    profile: str = "default"

    def cluster(self, name: str | None = None) -> ClusterSpec:
        if name is None:
            if len(self.clusters) == 1:
                return self.clusters[0]
            names = ", ".join(c.name for c in self.clusters)
            raise KeyError(f"the config has several clusters ({names}): name one with --cluster")
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        names = ", ".join(c.name for c in self.clusters)
        raise KeyError(f"no cluster named {name!r} in the config (it has: {names})")


# --------------------------------------------------------------------------- runtime state


class Health(enum.Enum):
    """Liveness of a host as judged by SSH probes (rise/fall smoothed)."""

    UNKNOWN = "unknown"  # not probed yet: keep what it has, give it nothing new
    UP = "up"
    SUSPECT = "suspect"  # failing probes but fewer than `fall`: keep, give nothing new
    DOWN = "down"


@dataclass(frozen=True)
class HostHealth:
    """The controller's liveness verdict for one host, with why and since when (wall clock)."""

    host_id: str
    state: Health
    since: float
    reason: str = ""
    latency_ms: float | None = None


@dataclass(frozen=True)
class Member:
    """A live node hook, from its ephemeral member znode."""

    host_id: str
    address: str
    version: str
    backend: Backend
    session_id: int = 0


@dataclass(frozen=True)
class HookStatus:
    """What a hook reports it actually applied: the kernel's buckets as read back, at a map epoch.

    ``held``: buckets whose NEW connections the kernel accepts (the exclusivity proof). ``draining``:
    buckets the kernel keeps for already tracked connections only; ``sessions``: per draining bucket,
    how many connections conntrack still tracks (absent: not counted, e.g. conntrack unreadable).

    ``deadman_s``: E of the hook's kernel dead-man switch (controller/core/deadman.py), i.e. its kernel
    stops accepting the VIP's traffic E seconds after the hook's last refresh, before the hook's
    session can expire. The planner needs it to know that "hook session gone" means "kernel stopped"
    even on a host probed up. None: no dead-man switch (memory backend) or a hook too old to say so;
    the planner then assumes the kernel keeps serving.
    """

    host_id: str
    epoch: int
    held: frozenset[int]
    updated: float
    error: str = ""
    draining: frozenset[int] = frozenset()
    sessions: Mapping[int, int] = field(default_factory=dict)
    deadman_s: float | None = None


@dataclass(frozen=True)
class BucketState:
    """Ownership of one bucket in the map.

    ``owner`` is the host that must accept the bucket's traffic. While a bucket moves, ``owner`` is
    None and ``releasing`` names the previous owner that was told to let go at ``changed_epoch``; the
    controller grants the bucket to ``target`` only once ``releasing`` confirmed (or lost its session).

    A planned move drains: ``draining`` names the previous owner, which keeps accepting packets of the
    connections it already tracks (never new ones) from ``drain_epoch`` (wall clock ``drain_since``)
    until it tracks none, the maximum drain time passes, or it fails. ``drain_sessions`` is how many
    it tracked when the new owner was granted the bucket (None: not known).
    """

    owner: str | None
    releasing: str | None = None
    target: str | None = None
    changed_epoch: int = 0
    since: float = 0.0
    draining: str | None = None
    drain_since: float = 0.0
    drain_epoch: int = 0
    drain_sessions: int | None = None

    @property
    def state(self) -> Literal["serving", "moving", "unowned"]:
        if self.owner is not None:
            return "serving"
        if self.releasing is not None:
            return "moving"
        return "unowned"


@dataclass(frozen=True)
class BucketMap:
    """The authoritative assignment of buckets to hosts, written only by the leading controller.

    ``epoch`` only grows; hooks report the epoch they applied so the controller knows who caught up.
    """

    cluster: str
    epoch: int
    buckets: Mapping[int, BucketState]

    def owned_by(self, host_id: str) -> frozenset[int]:
        return frozenset(b for b, s in self.buckets.items() if s.owner == host_id)

    def draining_on(self, host_id: str) -> frozenset[int]:
        """Buckets ``host_id`` keeps for its tracked connections only (it accepts no new ones)."""
        return frozenset(b for b, s in self.buckets.items() if s.draining == host_id and s.owner != host_id)

    def quiet_on(self, host_id: str) -> frozenset[int]:
        """Buckets ``host_id`` owns while another host drains them: mid-stream packets it does not
        track belong to the draining host's sessions and must be dropped, not answered with a reset."""
        return frozenset(
            b for b, s in self.buckets.items() if s.owner == host_id and s.draining not in (None, host_id)
        )

    def owner_of(self, bucket: int) -> str | None:
        state = self.buckets.get(bucket)
        return state.owner if state else None

    @staticmethod
    def empty(cluster: str, buckets: int) -> BucketMap:
        return BucketMap(cluster, 0, {b: BucketState(owner=None) for b in range(1, buckets + 1)})


@dataclass(frozen=True)
class Intents:
    """Operator requests stored in ZooKeeper, read by the controller each cycle.

    ``drained``: hosts that must hand all their buckets away. ``pins``: bucket -> host chosen by
    ``clusterip-ctl move``. ``failback_requests``: host -> wall-clock time of a manual failback request.
    ``paused``: the controller changes nothing (maintenance).
    """

    drained: frozenset[str] = frozenset()
    pins: Mapping[int, str] = field(default_factory=dict)
    failback_requests: Mapping[str, float] = field(default_factory=dict)
    paused: bool = False


@dataclass(frozen=True)
class ClusterView:
    """One consistent snapshot of a cluster, read from ZooKeeper plus the probes' verdicts."""

    spec: ClusterSpec
    map: BucketMap
    map_version: int
    health: Mapping[str, HostHealth]
    members: Mapping[str, Member]
    statuses: Mapping[str, HookStatus]
    intents: Intents = field(default_factory=Intents)
