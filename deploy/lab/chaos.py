"""Bounded chaos run in the namespace lab: random faults while every host's kernel ownership is sampled.

Faults (one at a time; each type once per shuffled round; random host, duration and gap): crash_host
(data and management links down, hook and sshd killed; healed as a reboot: the nft table is gone, then links up and
hook restarted), hang_sshd, kill_hook (restarted after the fault), kill_controller (the leader;
restarted), isolate_host (management link down: no ZooKeeper, no peers, clients still reach it).
A :class:`~clusterlab.ownership.KernelOwnershipChecker` reads every host's nft ``owned`` set (empty
when the host's dead-man timer ran out) at least ten times a second and counts samples in which two
live hosts hold one bucket (target 0). Crashed hosts are left out while their links are down: no
packet reaches them. Meanwhile clients keep connecting (a BannerWatch over 16 sources at a bounded
20 attempts/s), the map is polled 5 times a second and the controllers' decision history is
collected every second: the report adds client failures (explained by a fault or a handoff, or not)
and every revoke attributed, from the reason the planner recorded with it, to a fault, a failback or
an operator request; a revoke for a down verdict or a dead hook on a host under no fault is a false
failover (clusterlab/chaos_judge.py).

    .venv/bin/python deploy/lab/chaos.py --seconds 600          # the soak
    .venv/bin/python deploy/lab/chaos.py --seconds 20 --json     # what tests/lab/test_chaos.py runs
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clusterlab import chaos_judge, netns
from clusterlab.chaos_judge import FaultWindow, HistoryCollector, MapPoller
from clusterlab.errors import LabError
from clusterlab.measure import BannerWatch
from clusterlab.ownership import KernelOwnershipChecker, OwnershipReport
from clusterlab.stack import LabStack, StackOptions

FAULTS = ("crash_host", "hang_sshd", "kill_hook", "kill_controller", "isolate_host")
TABLE = "cif_lab"  # node_hook.backends._naming.nft_table_name("lab")


@dataclass
class ChaosReport:
    seconds: float
    seed: int
    faults: dict[str, int] = field(default_factory=dict)
    process_crashes: list[str] = field(default_factory=list)
    #: "<seconds since the checker started> <fault> <host> <start|healed>", to place double owners in time
    timeline: list[str] = field(default_factory=list)
    ownership: dict[str, object] = field(default_factory=dict)
    converged_after: bool = False
    #: client attempts by outcome, runs of failures (explained by a fault/handoff or not), longest run
    clients: dict[str, object] = field(default_factory=dict)
    #: revokes from the controllers' history for a down verdict or a dead hook on a host under no
    #: fault (exact: the planner's own reason, see clusterlab/chaos_judge.py)
    false_failovers: list[str] = field(default_factory=list)
    #: revokes whose recorded reason the judge does not know (should stay empty)
    unattributed_moves: list[str] = field(default_factory=list)
    #: every revoke by cause: "fault <kind>", "failback", "operator", "false failover", "unattributed"
    moves: dict[str, object] = field(default_factory=dict)
    #: owner changes seen by the map poller, and revokes in the history (a cross-check)
    owner_changes: int = 0
    #: "<kind> <host> <start> <end>" in wall-clock seconds, to check flagged moves and client failures
    fault_windows: list[str] = field(default_factory=list)
    #: os.getloadavg() at the end of the run (1, 5, 15 min): timings depend on it
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def ok(self) -> bool:
        return (self.ownership.get("double_owner_samples") == 0 and not self.process_crashes
                and self.converged_after and not self.false_failovers)


class Chaos:
    """Injects and heals faults on a running LabStack; remembers what it did on purpose."""

    def __init__(self, lab: LabStack, rng: random.Random) -> None:
        self.lab = lab
        self.rng = rng
        self.crashed: set[str] = set()
        self.faults: Counter[str] = Counter()
        self.crashes: list[str] = []
        self._deck: list[str] = []
        self.timeline: list[str] = []
        self.t0 = time.monotonic()
        #: wall-clock windows of every injected fault, to judge map moves and client failures
        self.windows: list[FaultWindow] = []

    def _mark(self, kind: str, host: str, what: str) -> None:
        self.timeline.append(f"{time.monotonic() - self.t0:.2f}s {kind} {host} {what}")

    def check_processes(self) -> None:
        """A hook or controller that exited without being killed by us is a crash: record, restart."""
        for host, proc in list(self.lab.hooks.items()):
            if proc.poll() is not None:
                self.crashes.append(f"hook {host} exited with {proc.returncode}: "
                                    f"{self.lab.log_tail('hook-' + host, 3)}")
                self.lab.hooks.pop(host)
                self.lab.start_hook(host)
        for name, proc in list(self.lab.controllers.items()):
            if proc.poll() is not None:
                self.crashes.append(f"controller {name} exited with {proc.returncode}")
                self.lab.controllers.pop(name)
                self.lab.start_controller(name)

    def one_fault(self, hold_s: float) -> None:
        lab = self.lab
        if not self._deck:  # every fault type once per deck, in random order: even short runs see all
            self._deck = list(FAULTS)
            self.rng.shuffle(self._deck)
        kind = self._deck.pop()
        host = self.rng.choice(lab.host_names)
        self.faults[kind] += 1
        self._mark(kind, host, "start")
        window = FaultWindow(kind, host, time.time())
        self.windows.append(window)
        try:
            self._inject(kind, host, hold_s)
        finally:
            self._mark(kind, host, "healed")
            window.end = time.time()
        self._wait_hooks_registered()

    def _wait_hooks_registered(self, timeout_s: float = 30.0) -> None:
        """A fault is over once every hook is registered again: the next fault must not find a hook
        still starting (that would be a double fault; see docs/lab.md, "Chaos run")."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if set(self.lab.read_state()["members"]) == set(self.lab.host_names):
                self._mark("all-hooks", "-", "registered")
                return
            time.sleep(0.1)
        self.crashes.append(f"hooks not all registered {timeout_s:g} s after a fault was healed")

    def _inject(self, kind: str, host: str, hold_s: float) -> None:
        lab = self.lab
        if kind == "crash_host":
            self.crashed.add(host)
            lab.crash_host(host)
            time.sleep(hold_s)
            ns = lab.topo.host(host).namespace
            netns.nsexec(ns, ["nft", "delete", "table", "ip", TABLE], check=False)  # a reboot empties the kernel
            lab.restore_host(host)
            self.crashed.discard(host)
        elif kind == "hang_sshd":
            lab.hang_sshd(host)
            time.sleep(hold_s)
            lab.resume_sshd(host)
        elif kind == "kill_hook":
            lab.kill_hook(host)
            time.sleep(hold_s)
            lab.start_hook(host)
        elif kind == "kill_controller":
            try:
                name = lab.kill_controller()
            except LabError:  # no leader right now (an election is under way): kill any replica
                name = lab.kill_controller(self.rng.choice(sorted(lab.controllers)))
            time.sleep(hold_s)
            lab.start_controller(name)
        else:
            lab.isolate_host(host)
            time.sleep(hold_s)
            lab.unisolate_host(host)


def run(seconds: float, seed: int, hosts: int = 4, hold: tuple[float, float] = (1.0, 4.0),
        gap: tuple[float, float] = (0.5, 2.0), log: bool = True, every_fault: bool = False,
        max_extra_s: float = 240.0) -> ChaosReport:
    """Inject faults for ``seconds`` (with ``every_fault``, go on, up to ``max_extra_s`` more, until
    every fault type has occurred once: recovery after a crash can take longer than a short run)."""
    rng = random.Random(seed)
    report = ChaosReport(seconds=seconds, seed=seed)
    with LabStack(StackOptions(hosts=hosts, backend="nftables", hold_down_s=2.0)) as lab:
        lab.wait_converged(timeout_s=60)
        chaos = Chaos(lab, rng)
        namespaces = {h: lab.topo.host(h).namespace for h in lab.host_names}
        checker = KernelOwnershipChecker(namespaces, TABLE, lab.buckets, interval_s=0.05,
                                         excluded=lambda: set(chaos.crashed))
        checker.start()
        chaos.t0 = time.monotonic()
        initial = {b: o for b, (o, *_) in chaos_judge.read_map(lab).items()}
        poller = MapPoller(lambda: chaos_judge.read_map(lab)).start()
        history = HistoryCollector(lambda known: chaos_judge.read_history(lab, known)).start()
        clients = BannerWatch(lab, list(lab.topo.client_sources), interval_s=0.8, timeout_s=1.0,
                              duration_s=seconds + max_extra_s + 300, max_sources=16)
        clients.__enter__()
        result: OwnershipReport | None = None
        try:
            deadline = time.monotonic() + seconds
            hard_stop = deadline + (max_extra_s if every_fault else 0.0)
            while time.monotonic() < deadline or (
                every_fault and set(chaos.faults) != set(FAULTS) and time.monotonic() < hard_stop
            ):
                chaos.check_processes()
                chaos.one_fault(rng.uniform(*hold))
                if log:
                    print(f"chaos: {dict(chaos.faults)} rounds={checker.report.rounds} "
                          f"double={checker.report.double_owner_samples}", file=sys.stderr, flush=True)
                time.sleep(rng.uniform(*gap))
            chaos.check_processes()
            try:
                lab.wait_converged(timeout_s=60)
                report.converged_after = True
            except Exception as exc:  # reported, not raised: the report is the product of a run
                report.process_crashes.append(f"no convergence after the run: {exc}")
        finally:
            result = checker.stop()
            changes = poller.stop()
            events = history.stop()
            try:
                transitions = clients.stop()
            finally:
                clients.__exit__()
        ended = time.time()
        moves = chaos_judge.move_summary(chaos_judge.judge_moves(events, chaos.windows), chaos.windows)
        report.false_failovers = moves["false_failovers"]
        report.unattributed_moves = moves["unattributed"]
        report.moves = {"revokes": moves["revokes"], "by_cause": moves["by_cause"],
                        "history_events": len(events), "history_read_errors": history.errors}
        report.owner_changes = len(changes)
        report.fault_windows = [f"{w.kind} {w.host} {w.start:.2f} {w.end or 0:.2f}" for w in chaos.windows]
        report.clients = {**chaos_judge.totals(clients.outcomes),
                          **chaos_judge.client_failures(transitions, lab.bucket_of, changes, initial, chaos.windows,
                                                        ended),
                          "sources": len(clients.sources), "map_read_errors": poller.errors}
        report.faults = dict(chaos.faults)
        report.timeline = chaos.timeline
        report.process_crashes += chaos.crashes
        report.ownership = {**asdict(result), "rate_hz": round(result.rate_hz, 1)}
        report.load_average = os.getloadavg()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to inject faults (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock, printed)")
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    report = run(args.seconds, seed, hosts=args.hosts)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        own = report.ownership
        print(f"seed {report.seed}, {report.seconds:g} s; faults {report.faults}")
        print(f"kernel samples {own['rounds']} ({own['rate_hz']}/s per host); samples with two kernel owners "
              f"{own['double_owner_samples']} (single-round overlaps {own['single_round_overlaps']}); "
              f"longest unowned {own['longest_unowned_s']:.2f} s; read errors {own['errors']}")
        print(f"process crashes {len(report.process_crashes)}; converged after: {report.converged_after}")
        cl = report.clients
        print(f"clients: {cl['sources']} sources, {cl['attempts']} attempts, {cl['answered']} answered; failure runs "
              f"{cl['failure_runs']} ({cl['unexplained_runs']} not explained by a fault or handoff), longest "
              f"{cl['longest_failure_s']} s; owner changes seen by the map poller {report.owner_changes}")
        print(f"revokes in the controllers' history {report.moves['revokes']} by cause {report.moves['by_cause']}; "
              f"false failovers (a down verdict or dead hook on a host under no fault) {len(report.false_failovers)}; "
              f"unattributed {len(report.unattributed_moves)}; history events {report.moves['history_events']} "
              f"(read errors {report.moves['history_read_errors']}); load average {report.load_average}")
        for line in [*own["examples"], *report.process_crashes, *report.false_failovers,  # type: ignore[misc]
                     *report.unattributed_moves, *cl["examples"]]:  # type: ignore[misc]
            print(f"  {line}")
    sys.exit(0 if report.ok() else 1)


if __name__ == "__main__":
    main()
