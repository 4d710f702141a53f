"""Benchmark of the exclusive handoff against real ZooKeeper (prints numbers; not collected by pytest).

  .venv/bin/python tests/bench/bench_handoff.py [--trials 20] [--which alive|kill|both] [--relay]

alive: a host is reported down while its hook is alive -> revoke, ack, grant. Measured from the
       health-file rename (the liveness input) to the survivor's grant being applied in its memory
       kernel (the journal's CLOCK_MONOTONIC stamp), for the last of the host's buckets.
       Target: p99 <= 0.1 s.
kill:  a hook is SIGKILLed and its host reported down at that moment -> the grant waits for the
       hook's ZooKeeper session to expire. Measured from the SIGKILL to the last grant applied.
       Target: p99 <= 1.5 s (session timeout 1 s).
Between trials the host comes back and gets its home buckets again (failback hold-down 0).
Setup: one standalone ZooKeeper (tick 200 ms), 4 hooks (subprocesses, memory backend), one
controller (subprocess, --health-file), session timeout 1 s. Hooks talk to ZooKeeper directly
unless --relay (then through the tests' cuttable TCP relay, as in the integration tests).
With 20 trials, p99 is the largest value; every result line ends with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "deploy" / "lab"), str(ROOT / "tests" / "integration")]

from clusterlab.zookeeper import ZooKeeperCluster  # noqa: E402
from coordination_harness import CoordLab, bring_up  # noqa: E402

SESSION_S = 1.0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} {five:.1f} {fifteen:.1f}"


def summary(name: str, samples: list[float], target: float) -> str:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    p50, p99 = cuts[49], cuts[98]
    verdict = "meets" if p99 <= target else "MISSES"
    return (
        f"{name}: n={len(ordered)} p50={p50 * 1000:.0f} ms p99={p99 * 1000:.0f} ms "
        f"min={ordered[0] * 1000:.0f} max={ordered[-1] * 1000:.0f} ms; {verdict} the {target * 1000:.0f} ms p99 "
        f"target ({load()})"
    )


def last_grant(lab: CoordLab, host: str, since: float) -> float:
    """When the last of ``host``'s home buckets was granted to a survivor, from the survivors' journals."""
    times = []
    for bucket in lab.homes(host):
        grants = [t for h in lab.host_ids if h != host if (t := lab.grant_time(h, bucket, since)) is not None]
        if not grants:
            raise AssertionError(f"no survivor journal shows a grant of b{bucket}; map: {lab.owners()}")
        times.append(min(grants))
    return max(times)


def moved_away(lab: CoordLab, host: str) -> Callable[[], bool]:
    return lambda: lab.converged(without=host)


def restore(lab: CoordLab, host: str) -> None:
    lab.set_health(host, "up")
    lab.wait_for(lambda: lab.converged(lab.home_map()), 30, f"{host} got its home buckets back", poll_s=0.02)
    time.sleep(0.2)


def last_revoke(lab: CoordLab, host: str, since: float) -> float:
    """When ``host``'s own kernel let go of the last of its home buckets, from its journal."""
    times = [lab.revoke_time(host, bucket, since) for bucket in lab.homes(host)]
    if any(t is None for t in times):
        raise AssertionError(f"{host}'s journal does not show every revoke; map: {lab.owners()}")
    return max(t for t in times if t is not None)


#: per alive trial, the old hook's revoke applied (ms after the health change): the first half of
#: the path (controller reacts, writes the revoke, the hook applies it); the rest is the ack and grant
REVOKES: list[float] = []


def trial_alive(lab: CoordLab, host: str) -> float:
    down_at = lab.set_health(host, "down", "bench")
    lab.wait_for(moved_away(lab, host), 30, f"{host}'s buckets moved", poll_s=0.02)
    took = last_grant(lab, host, down_at) - down_at
    REVOKES.append(last_revoke(lab, host, down_at) - down_at)
    restore(lab, host)
    return took


def trial_kill(lab: CoordLab, host: str) -> float:
    killed = lab.kill_hook(host, host_dead=True)
    lab.set_health(host, "down", "bench: host crashed")
    lab.wait_for(moved_away(lab, host), 30, f"{host}'s buckets moved", poll_s=0.02)
    took = last_grant(lab, host, killed) - killed
    lab.start_hook(host)
    restore(lab, host)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--which", choices=["alive", "kill", "both"], default="both")
    ap.add_argument("--relay", action="store_true", help="hooks reach ZooKeeper through the test relay")
    ap.add_argument("--keep", action="store_true",
                    help="keep the lab's logs and journals (the controller's decision lines carry timings)")
    args = ap.parse_args()
    if args.trials < 20:
        ap.error("--trials must be at least 20 (p99 of fewer samples means little)")
    print(f"start ({load()})", flush=True)
    with ZooKeeperCluster(size=1, tick_ms=200) as zk:
        lab = CoordLab(zk, f"/cipfo-bench/{os.getpid()}", session_timeout_s=SESSION_S, relay=args.relay,
                       hold_down_s=0.0)
        try:
            bring_up(lab)
            lab.start_checker()
            results: list[str] = []
            plans = [("alive", trial_alive, 0.1), ("kill", trial_kill, 1.5)]
            for name, trial, target in plans:
                if args.which not in (name, "both"):
                    continue
                samples = []
                for i in range(args.trials):
                    host = lab.host_ids[i % len(lab.host_ids)]
                    took = trial(lab, host)
                    samples.append(took)
                    rest = (took - REVOKES[-1]) * 1000 if name == "alive" else 0.0
                    split = f" (revoke applied at {REVOKES[-1] * 1000:.0f} ms, grant {rest:.0f} ms later)" \
                        if name == "alive" else ""
                    print(f"  {name} #{i + 1} {host}: {took * 1000:.0f} ms{split} ({load()})", flush=True)
                results.append(summary(f"{name}: host down -> survivor's grant applied" if name == "alive"
                                       else f"{name}: hook SIGKILL + host down -> survivor's grant applied",
                                       samples, target))
                if name == "alive":
                    half = sorted(REVOKES)
                    results.append(f"alive: of which host down -> old hook's revoke applied "
                                   f"p50={statistics.median(half) * 1000:.0f} ms max={half[-1] * 1000:.0f} ms; "
                                   "the rest is the ack and the grant")
            violations = lab.close(keep_files=args.keep)
            for line in results:
                print(line)
            checker = lab.checker.describe() if lab.checker else "no checker"
            print(f"exclusivity: {len(violations)} violations ({checker})")
            for violation in violations:
                print(f"  {violation}")
            return 1 if violations else 0
        finally:
            lab.close()


if __name__ == "__main__":
    sys.exit(main())
