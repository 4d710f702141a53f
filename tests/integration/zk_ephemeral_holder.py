"""Subprocess for the ephemeral-znode test: holds an ephemeral znode until it is killed.

Why a separate process: only a real SIGKILL of the owner shows how long ZooKeeper takes to notice
a dead client (session timeout), which is what the controller's failure detection relies on.

Usage: python zk_ephemeral_holder.py HOSTS_WITH_CHROOT PATH SESSION_TIMEOUT_S
Prints "ready <session id hex>" once the znode exists, then sleeps (at most 120 s).
"""

from __future__ import annotations

import sys
import time

from kazoo.client import KazooClient
from kazoo.retry import KazooRetry


def main() -> int:
    hosts, path, timeout_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    client = KazooClient(
        hosts=hosts, timeout=timeout_s, connection_retry=KazooRetry(max_tries=-1, delay=0.02, backoff=1)
    )
    client.start(timeout=30)
    client.create(path, b"owner", ephemeral=True)
    print(f"ready {client.client_id[0]:#x}", flush=True)
    time.sleep(120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
