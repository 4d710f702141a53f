"""Is a profile's ZooKeeper timing stable on this machine? (prints numbers; not collected by pytest)

  .venv/bin/python tests/bench/bench_profiles.py [--profile fast] [--seconds 60] [--hooks 4] [--stress] [--nice -10]

Starts a lab ZooKeeper with the profile's tickTime and N hook-like processes, each with the
profile's session timeout and the node hook's own heartbeat (an ``exists`` every session/20, like
node_hook/agent.py) and its self-fence rule (silent for ``self_fence_fraction`` x session). Counts
per process: heartbeat silences longer than the fence threshold (each would make a real hook release
its buckets: a false failover), session expirations (LOST), and the longest silence. ``--stress``
adds stress-ng on every core (and ``--logins``-free: ZooKeeper timing only). ``--nice N`` runs the
ZooKeeper server (every thread) and the hook-like processes at that nice value: does the priority
docs/profiles.md recommends make ``fast`` stable? Every result line ends with the load average.
Everything started is stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "deploy" / "lab")]

from controller.core.profiles import get_profile, profile_names  # noqa: E402

CHILD = r"""
import json, sys, threading, time
from kazoo.client import KazooClient, KazooState
from kazoo.retry import KazooRetry
hosts, session, fence, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
lost = []
c = KazooClient(hosts=hosts, timeout=session,
                connection_retry=KazooRetry(max_tries=-1, delay=0.02, backoff=1, max_delay=0.2, ignore_expire=True))
running = [True]  # kazoo reports LOST on our own stop() too: count only while running
c.add_listener(lambda s: lost.append(time.monotonic()) if s == KazooState.LOST and running[0] else None)
c.start(timeout=30)
interval = max(0.02, session / 20)
last_ok = time.monotonic(); fences = 0; longest = 0.0; fenced = False
end = time.monotonic() + seconds
while time.monotonic() < end:
    time.sleep(interval)
    try:
        c.exists_async("/").get(timeout=interval * 2)
        now = time.monotonic()
        longest = max(longest, now - last_ok)
        last_ok = now; fenced = False
    except Exception:
        pass
    silent = time.monotonic() - last_ok
    longest = max(longest, silent)
    if silent >= fence and not fenced:
        fences += 1; fenced = True
running[0] = False
c.stop(); c.close()
print(json.dumps({"fences": fences, "lost": len(lost), "longest": longest}))
"""


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"[load {one:.1f} {five:.1f} {fifteen:.1f}]"


def renice_all_threads(pid: int, nice: int) -> None:
    """Nice is per thread on Linux: set it on every thread of ``pid`` (the JVM's are all started)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def run(profile_name: str, seconds: float, hooks: int, stress: bool, nice: int = 0) -> dict[str, float]:
    from clusterlab.zookeeper import ZooKeeperCluster

    p = get_profile(profile_name)
    fence = p.self_fence_after_s
    zk = ZooKeeperCluster(size=1, tick_ms=p.zk_tick_ms)
    zk.start(timeout_s=120)
    if nice:
        for server in zk.servers:
            if server.pid is not None:
                renice_all_threads(server.pid, nice)
    procs: list[subprocess.Popen[str]] = []
    stressor: subprocess.Popen[bytes] | None = None
    try:
        if stress:
            stressor = subprocess.Popen(["stress-ng", "--cpu", str(os.cpu_count() or 2), "--timeout",
                                         f"{int(seconds) + 10}s", "--quiet"], start_new_session=True)
        for _ in range(hooks):
            prefix = ["nice", "-n", str(nice)] if nice else []
            procs.append(subprocess.Popen([*prefix, sys.executable, "-c", CHILD, zk.hosts, str(p.session_timeout_s),
                                           str(fence), str(seconds)], stdout=subprocess.PIPE, text=True))
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 120)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        if stressor is not None and stressor.poll() is None:
            os.killpg(stressor.pid, signal.SIGKILL)
            stressor.wait(timeout=10)
        zk.stop()
    fences = sum(r["fences"] for r in results)
    lost = sum(r["lost"] for r in results)
    longest = max(r["longest"] for r in results)
    print(f"profile {p.name}: tick {p.zk_tick_ms} ms, session {p.session_timeout_s} s, self-fence after "
          f"{fence:.3f} s; {hooks} hook processes x {seconds:.0f} s{' + stress-ng on all cores' if stress else ''}"
          f"{f', ZooKeeper and hooks at nice {nice}' if nice else ''}: "
          f"{fences} self-fences (false failovers), {lost} sessions lost, longest heartbeat silence "
          f"{longest * 1000:.0f} ms {load()}")
    return {"fences": fences, "lost": lost, "longest": longest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=profile_names(), default=None, help="default: every profile")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--hooks", type=int, default=4)
    ap.add_argument("--stress", action="store_true")
    ap.add_argument("--nice", type=int, default=0, help="nice value for ZooKeeper and the hooks (-20..19)")
    a = ap.parse_args()
    if not -20 <= a.nice <= 19:
        ap.error(f"--nice must be within -20..19, not {a.nice}")
    for name in [a.profile] if a.profile else list(profile_names()):
        run(name, a.seconds, a.hooks, a.stress, a.nice)


if __name__ == "__main__":
    main()
