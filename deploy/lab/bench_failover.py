"""Failover benchmark: per failure type, N trials measured from the clients' side.

For each trial: open long-lived SSH sessions from a sample of sources, start a banner watch on the
sources whose bucket the victim owns, inject the fault, wait until the map moved and the clients
answer again, then record: the time from the fault until every affected source could open a new SSH
session (the trial's takeover time), duplicate answers seen by UDP sweeps during the trial, sessions
of unaffected buckets that broke, and the survivors' bucket counts. Then restore and wait for
failback. A baseline row runs the seed's static setup (no controller): its affected clients never
recover within the observation window.

Writes a markdown table (docs/failover-benchmark.md) and a PNG chart (docs/failover-benchmark.png)
unless --no-write. ``--trials 2`` is the short CI variant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

from clusterlab.errors import LabError
from clusterlab.measure import BannerWatch, recovery, summary, wait_for
from clusterlab.stack import LabStack, StackOptions
from clusterlab.traffic import udp_probe

DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass
class Trial:
    fault: str
    victim: str
    takeover_s: float | None  # None: some affected source never recovered within the window
    per_source: list[float]
    duplicates: int
    sweeps: int
    sessions_broken: int
    survivor_counts: dict[str, int]
    timeline: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    fault_at: float = 0.0


FAULTS: dict[str, tuple[Callable[[LabStack, str], None], Callable[[LabStack, str], None]]] = {
    "sshd hung": (lambda s, h: s.hang_sshd(h), lambda s, h: s.resume_sshd(h)),
    "host crash": (lambda s, h: s.crash_host(h), lambda s, h: s.restore_host(h)),
    "login impossible": (lambda s, h: s.exhaust_logins(h), lambda s, h: s.restore_logins(h)),
}


def sweep_duplicates(stack: LabStack, sources: list[str], stop: threading.Event, out: dict[str, int]) -> None:
    while not stop.is_set():
        try:
            replies = udp_probe(stack.topo, stack.options.responder_port, sources=sources, window_s=0.2)
        except LabError:
            continue
        out["sweeps"] += 1
        out["duplicates"] += sum(1 for r in replies.values() if len(r) > 1)


def run_trial(stack: LabStack, fault: str, victim: str, window_s: float, controlled: bool = True) -> Trial:
    inject, restore = FAULTS[fault]
    owners = stack.owners()
    affected = [s for s in stack.topo.client_sources if owners.get(stack.bucket_of(s)) == victim]
    others = [s for s in stack.topo.client_sources if s not in affected]
    sessions_srcs = others[:: max(1, len(others) // 6)][:6]
    sessions = stack.popen_client(
        "clusterlab.sshclient",
        "sessions",
        "--vip",
        stack.topo.vip,
        "--sources",
        ",".join(sessions_srcs),
        "--key",
        str(stack.user_key),
        "--interval",
        "0.05",
        "--timeout",
        "10",
        "--stall",
        "5",
    )
    assert sessions.stdout is not None
    sessions.stdout.readline()
    dup = {"sweeps": 0, "duplicates": 0}
    stop = threading.Event()
    sweeper = threading.Thread(target=sweep_duplicates, args=(stack, list(stack.topo.client_sources), stop, dup))
    with BannerWatch(stack, affected, interval_s=0.02, timeout_s=1.0, duration_s=window_s + 30) as watch:
        sweeper.start()
        time.sleep(0.3)
        fault_at = time.time()
        inject(stack, victim)
        if controlled:
            with contextlib.suppress(LabError):
                wait_for(
                    lambda: all(stack.owners().get(stack.bucket_of(s)) not in (None, victim) for s in affected),
                    timeout_s=window_s,
                    what="takeover",
                )
            time.sleep(1.5)
        else:
            time.sleep(window_s)
        transitions = watch.stop()
    stop.set()
    sweeper.join(timeout=10)
    out, _ = sessions.communicate(timeout=60)
    report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    broken = sum(1 for r in report.values() if r.get("broken"))
    results = recovery(transitions, fault_at, bad_hosts=[victim])
    per_source = [r.recovered_s for r in results if r.recovered_s is not None]
    takeover = max(per_source) if per_source and len(per_source) == len(results) else None
    counts: dict[str, int] = {}
    for owner in stack.owners().values():
        if owner and owner != victim:
            counts[owner] = counts.get(owner, 0) + 1
    restore(stack, victim)
    return Trial(
        fault, victim, takeover, per_source, dup["duplicates"], dup["sweeps"], broken, counts, transitions, fault_at
    )


def restore_all(stack: LabStack) -> None:
    stack.wait_converged(90, expect={h: stack.home_buckets(h) for h in stack.host_names})


def fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f}"


def table(rows: dict[str, list[Trial]]) -> str:
    lines = [
        "| fault | trials | takeover p50 (s) | p95 | p99 | max | duplicate answers | unaffected sessions broken "
        "| survivor bucket counts (max-min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fault, trials in rows.items():
        ok = [t.takeover_s for t in trials if t.takeover_s is not None]
        never = len(trials) - len(ok)
        stats = summary(ok) if ok else None
        spread = max(
            (max(t.survivor_counts.values()) - min(t.survivor_counts.values()) for t in trials if t.survivor_counts),
            default=0,
        )
        cells = ["never"] * 4 if stats is None else [f"{stats[k]:.3f}" for k in ("p50", "p95", "p99", "max")]
        if never and stats is not None:
            cells[-1] += f" ({never} never)"
        lines.append(
            f"| {fault} | {len(trials)} | {' | '.join(cells)} | {sum(t.duplicates for t in trials)} "
            f"in {sum(t.sweeps for t in trials)} sweeps | {sum(t.sessions_broken for t in trials)} | {spread} |"
        )
    return "\n".join(lines)


def chart(rows: dict[str, list[Trial]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    example = next((t for trials in rows.values() for t in trials if t.takeover_s is not None), None)
    if example is not None:
        for i, (_src, trans) in enumerate(sorted(example.timeline.items())):
            xs = [t - example.fault_at for t, _ in trans] + [max(3.0, (example.takeover_s or 0) + 1)]
            for (t0, state), t1 in zip(trans, xs[1:], strict=False):
                x0 = t0 - example.fault_at
                color = "tab:red" if state.startswith("!") else ("tab:gray" if state == example.victim else "tab:green")
                left.plot([max(x0, -0.5), t1], [i, i], color=color, linewidth=4)
        left.axvline(0, color="black", linestyle="--")
        left.set_xlim(-0.5, max(3.0, (example.takeover_s or 0) + 1))
        left.set_title(
            f"one failover ({example.fault}, {example.victim}) per client source\n"
            "gray: old host, red: no answer, green: survivor"
        )
        left.set_xlabel("seconds since the fault")
        left.set_ylabel("client source")
    data = [[t.takeover_s for t in trials if t.takeover_s is not None] for trials in rows.values()]
    labels = list(rows)
    right.boxplot([d or [0.0] for d in data], tick_labels=labels)
    right.set_ylabel("takeover time (s), per trial: all affected sources served again")
    right.set_title("distribution per failure type")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--faults", default="sshd hung,host crash")
    parser.add_argument("--backend", default="nftables", choices=["nftables", "xt_cluster"])
    parser.add_argument("--profile", default="default", choices=["default", "fast"])
    parser.add_argument("--baseline-window", type=float, default=10.0)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write raw trials as JSON here")
    args = parser.parse_args()
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}; choose from {list(FAULTS)}")
    rows: dict[str, list[Trial]] = {}
    stack = LabStack(StackOptions(backend=args.backend, client_sources=64, failback="immediate",
                                  profile=args.profile))
    print(f"load average at start: {os.getloadavg()}", flush=True)
    try:
        stack.up(timeout_s=90)
        victims = stack.host_names[1:]
        for fault in faults:
            rows[fault] = []
            for i in range(args.trials):
                victim = victims[i % len(victims)]
                trial = run_trial(stack, fault, victim, window_s=20)
                rows[fault].append(trial)
                print(
                    f"{fault:>16} #{i + 1:02d} {victim}: takeover {fmt(trial.takeover_s)} s, "
                    f"duplicates {trial.duplicates}/{trial.sweeps} sweeps, sessions broken {trial.sessions_broken}, "
                    f"survivors {trial.survivor_counts}",
                    flush=True,
                )
                restore_all(stack)
        if not args.no_baseline:
            # The seed's static setup: nobody moves buckets. Stop every controller, then crash a host.
            for name in list(stack.controllers):
                stack.kill_controller(name)
            rows["baseline: static, host crash"] = []
            trial = run_trial(stack, "host crash", stack.host_names[1], window_s=args.baseline_window, controlled=False)
            rows["baseline: static, host crash"].append(trial)
            print(
                f"baseline: static setup, host crash: takeover {fmt(trial.takeover_s)} "
                f"({len(trial.per_source)} of the affected sources recovered in {args.baseline_window:g} s)"
            )
    finally:
        stack.down()
    print(f"load average at end: {os.getloadavg()}")
    text = table(rows)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({f: [t.__dict__ for t in ts] for f, ts in rows.items()}, default=str))
    if not args.no_write:
        (DOCS / "failover-benchmark.md").write_text(
            "# Failover benchmark (measured)\n\nProduced by `deploy/lab/bench_failover.py` "
            f"({args.trials} trials per fault, backend {args.backend}, 4 hosts, 16 buckets, 64 client sources).\n"
            "Takeover = time from the fault until every affected client source can open a new SSH session.\n"
            f"Load average at the end of the run: {os.getloadavg()[0]:.1f} (2 cores).\n\n{text}\n\n"
            "![failover chart](failover-benchmark.png)\n"
        )
        chart(rows, DOCS / "failover-benchmark.png")
        print(f"wrote {DOCS / 'failover-benchmark.md'} and the chart")
    bad = [t for ts in rows.values() for t in ts if t.duplicates]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
