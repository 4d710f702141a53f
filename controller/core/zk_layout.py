"""Every znode path of the project, in one place (documented in docs/zookeeper-layout.md).

::

    <chroot>/clusters/<cluster>/
        map                     persistent  bucket-map   written by the leading controller (compare-and-set)
        intents                 persistent  intents      written by clusterip-ctl (drain, pins, pause, failback)
        health                  persistent  health       written by the leading controller (probe verdicts)
        members/<host>          ephemeral   member       written by that host's hook (its session = its liveness)
        status/<host>           persistent  hook-status  written by that host's hook (what its kernel holds)
        history/event-<seq>     persistent  history-event  appended by the leader and by clusterip-ctl; bounded
    <chroot>/acl-readers            persistent  JSON list of digest ids (verifiers) given READ on run-time znodes
    <chroot>/controllers/
        election/n_<seq>        ephemeral sequential; lowest sequence leads; its path fences map writes
        replicas/<id>           ephemeral   controller replica presence (for status)

Paths are relative to the client's chroot, which the configuration sets (``zookeeper.chroot``).
"""

from __future__ import annotations

CLUSTERS = "/clusters"
CONTROLLERS = "/controllers"
ELECTION = f"{CONTROLLERS}/election"
REPLICAS = f"{CONTROLLERS}/replicas"
#: Written by `clusterip-ctl acl init` (docs/security.md); absent when ZooKeeper runs without ACLs.
ACL_READERS = "/acl-readers"
#: History entries kept per cluster; older ones are pruned by the leader.
HISTORY_LIMIT = 1000


def cluster_root(cluster: str) -> str:
    return f"{CLUSTERS}/{cluster}"


def map_path(cluster: str) -> str:
    return f"{cluster_root(cluster)}/map"


def intents_path(cluster: str) -> str:
    return f"{cluster_root(cluster)}/intents"


def health_path(cluster: str) -> str:
    return f"{cluster_root(cluster)}/health"


def members_path(cluster: str) -> str:
    return f"{cluster_root(cluster)}/members"


def member_path(cluster: str, host: str) -> str:
    return f"{members_path(cluster)}/{host}"


def statuses_path(cluster: str) -> str:
    return f"{cluster_root(cluster)}/status"


def status_path(cluster: str, host: str) -> str:
    return f"{statuses_path(cluster)}/{host}"


def history_path(cluster: str) -> str:
    return f"{cluster_root(cluster)}/history"


def history_event_prefix(cluster: str) -> str:
    return f"{history_path(cluster)}/event-"


def replica_path(controller_id: str) -> str:
    return f"{REPLICAS}/{controller_id}"
