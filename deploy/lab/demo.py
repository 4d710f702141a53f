"""The demo: a 4-host SSH cluster behind one VIP on this machine, failing and healing in under a minute.

Brings the lab up (clusterlab.stack), shows the bucket map, logs clients in over SSH through the VIP,
hangs one host's sshd and crashes another, prints the map after each failover with the measured
takeover time and which clients moved, restores both (failback after the hold-down), tears down.
Run it through ``deploy/demo.sh`` (which installs what it needs); exit status 0 when every step
behaved.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clusterlab.errors import LabError
from clusterlab.measure import BannerWatch, recovery, summary
from clusterlab.stack import LabStack, StackOptions

BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str) -> None:
    print(f"{BOLD}== {text}{RESET}", flush=True)


def show_map(stack: LabStack, title: str) -> dict[int, str | None]:
    state = stack.read_state()
    owners = {int(b): o for b, o in state["owners"].items()}
    by_host: dict[str, list[int]] = {h: [] for h in stack.host_names}
    for bucket, owner in sorted(owners.items()):
        by_host.setdefault(owner or "(unowned)", []).append(bucket)
    print(f"   bucket map, epoch {state['epoch']} ({title}):")
    for host, buckets in by_host.items():
        home = stack.home_buckets(host) if host in stack.host_names else []
        foreign = [b for b in buckets if b not in home]
        extra = f"  {DIM}(taken over: {foreign}){RESET}" if foreign else ""
        print(f"     {host:>4}: {len(buckets):2d} buckets {buckets}{extra}")
    return owners


def failover(stack: LabStack, victim: str, fault: str, sources: list[str]) -> None:
    owners = stack.owners()
    affected = [s for s in sources if owners.get(stack.bucket_of(s)) == victim]
    with BannerWatch(stack, affected, interval_s=0.02, timeout_s=1.0, duration_s=60) as watch:
        print(f"   {len(affected)} of {len(sources)} client sources land in {victim}'s buckets; "
              f"{len(watch.sources)} of them try a new SSH connection every {watch.interval_s * 1000:.0f} ms")
        time.sleep(0.5)
        fault_at = time.time()
        if fault == "hang":
            stack.hang_sshd(victim)
            print(f"   {victim}: sshd SIGSTOPped (it still completes TCP handshakes, but says nothing)")
        else:
            stack.crash_host(victim)
            print(f"   {victim}: link down and every process killed")
        with contextlib.suppress(LabError):  # the clients' verdict below says what went wrong
            stack.wait_taken_over(victim, affected, timeout_s=20)
        time.sleep(1.5)  # let attempts started after the move complete (banners are slow under load)
        transitions = watch.stop()
    results = recovery(transitions, fault_at, bad_hosts=[victim])
    times = [r.recovered_s for r in results if r.recovered_s is not None]
    lost = [r.source for r in results if r.recovered_s is None]
    moved = Counter(r.after for r in results if r.after)
    stats = summary(times)
    print(f"   takeover seen by clients: every affected source answered again after "
          f"{BOLD}{stats['max']:.2f} s{RESET} (p50 {stats['p50']:.2f} s) ; new hosts: {dict(moved)}")
    if lost:
        raise LabError(f"{len(lost)} sources never recovered after {fault} of {victim}: {lost[:5]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="nftables", choices=["nftables", "xt_cluster"])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--sources", type=int, default=64)
    parser.add_argument("--profile", default="default", choices=["default", "fast"],
                        help="timing profile (docs/profiles.md)")
    parser.add_argument("--keep", action="store_true", help="keep the lab's logs directory")
    args = parser.parse_args()
    if args.hosts < 3:
        parser.error("--hosts must be at least 3 (the demo fails two hosts)")
    started = time.time()
    stack = LabStack(StackOptions(hosts=args.hosts, backend=args.backend, client_sources=args.sources,
                                  profile=args.profile,
                                  failback="delayed", hold_down_s=3.0, keep_workdir=args.keep))
    say(f"building the lab: {args.hosts} hosts ({args.backend}), ZooKeeper, 2 controllers, {args.sources} clients")
    try:
        stack.up()
        print(f"   up in {time.time() - started:.1f} s; VIP {stack.topo.vip}, multicast MAC {stack.topo.cluster_mac}; "
              f"leader: {stack.leader()}")
        show_map(stack, "every host serves its home buckets")
        sources = list(stack.topo.client_sources)

        say("clients log in over SSH through the VIP")
        logins = stack.logins(sources[:16])
        per_host = Counter(v for v in logins.values())
        print(f"   16 logins ran `echo $CIF_NODE`: {dict(sorted(per_host.items()))}")
        banners = stack.banners(sources)
        wrong = [s for s, h in banners.items() if h != stack.expected_host(s)]
        print(f"   {len(sources)} sources: every one answered by exactly the host the hash predicts: "
              f"{'yes' if not wrong else f'NO ({len(wrong)} differ)'}")
        if wrong:
            raise LabError(f"sources answered by an unexpected host: {wrong[:5]}")

        victim1, victim2 = stack.host_names[1], stack.host_names[2]
        say(f"fault 1: {victim1}'s sshd hangs")
        failover(stack, victim1, "hang", sources)
        show_map(stack, f"{victim1} down")

        say(f"fault 2: {victim2} crashes")
        failover(stack, victim2, "crash", sources)
        show_map(stack, f"{victim1} and {victim2} down")
        say("what an operator sees: clusterip-ctl status")
        status = stack.ctl("status", "-c", str(stack.config_path), check=False)
        print("   " + status.stdout.strip().replace("\n", "\n   "))
        print(f"   (exit status {status.returncode}: 4 = degraded, every bucket still served)")

        say(f"restoring {victim1} and {victim2} (failback after a {stack.options.hold_down_s:g} s hold-down)")
        stack.resume_sshd(victim1)
        stack.restore_host(victim2)
        expect = {h: stack.home_buckets(h) for h in stack.host_names}
        t0 = time.time()
        stack.wait_converged(60, expect=expect)
        print(f"   every host holds its home buckets again after {time.time() - t0:.1f} s")
        show_map(stack, "healed")
        banners = stack.banners(sources)
        wrong = [s for s, h in banners.items() if h != stack.expected_host(s)]
        if wrong:
            raise LabError(f"after failback {len(wrong)} sources are answered by an unexpected host")
        print(f"   all {len(sources)} sources answered by their home host again")
        history = stack.ctl("history", "-c", str(stack.config_path), "--since", "10m", check=False)
        lines = history.stdout.strip().splitlines()
        say(f"clusterip-ctl history: {len(lines)} lines, the last ones")
        print("   " + "\n   ".join(lines[-6:]))
    except (LabError, OSError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        if stack.workdir:
            for name in ("controller-ctl1", "controller-ctl2"):
                print(f"--- {name}\n{stack.log_tail(name, 10)}", file=sys.stderr)
        return 1
    finally:
        say("tearing down")
        stack.down()
    print(f"demo finished in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
