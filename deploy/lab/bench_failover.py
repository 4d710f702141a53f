"""Failover benchmark: our profiles and keepalived side by side, per fault, measured by the same client code.

For every (system, fault) row, N trials. Our rows (``default``, ``fast``: the lab stack in that
profile): open long-lived SSH sessions from a sample of sources, start a banner watch
(clusterlab.measure.BannerWatch) on the sources whose bucket the victim owns, sweep every source
with UDP datagrams (an answer from two hosts is a duplicate) and read every host's kernel bucket set
(clusterlab.ownership: one bucket in two live kernels is a two-owner sample), inject the fault, wait
until the map moved and the clients answer again; record the takeover (fault until every watched
source opened a new SSH session), duplicates, two-owner samples, broken unaffected sessions and the
survivors' bucket counts; then heal and wait for failback. keepalived rows (VRRPv3, advert_int 1 and
0.1, clusterlab.keepalived) use the same BannerWatch and count hosts holding the VIP. A static row
(no controller) shows what the seed set-up does: its clients never recover.

    .venv/bin/python deploy/lab/bench_failover.py                       # everything, 20 trials per row
    .venv/bin/python deploy/lab/bench_failover.py --systems default --faults "host crash" \\
        --trials 20 --json /tmp/chunk-default-crash.json --no-write      # one chunk
    .venv/bin/python deploy/lab/bench_failover.py --from-json /tmp/chunk-*.json   # merge: table + chart

Writes docs/failover-benchmark.md (between its "bench:begin/end" markers; text around them is kept)
and docs/failover-benchmark.png unless --no-write. Exit status 1 if any of OUR trials saw a
duplicate answer or two kernel owners. tests/lab/test_failover_bench_short.py is the CI variant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clusterlab import benchtable, netns
from clusterlab.benchtable import Row, Trial
from clusterlab.errors import LabError
from clusterlab.measure import BannerWatch, recovery, wait_for
from clusterlab.ownership import KernelOwnershipChecker
from clusterlab.sshd import LOGIN_USER
from clusterlab.stack import LabStack, StackOptions
from clusterlab.traffic import TcpStreams, tcp_probe, udp_probe

DOCS = Path(__file__).resolve().parents[2] / "docs"
TABLE = "cif_lab"  # node_hook.backends._naming.nft_table_name("lab")
Action = Callable[[LabStack, str], None]


def installed(stack: LabStack, host: str) -> bool:
    """Has the hook of ``host`` installed the cluster's nftables table (after a reboot())?"""
    ns = stack.topo.host(host).namespace
    return netns.nsexec(ns, ["nft", "list", "table", "ip", TABLE], check=False).returncode == 0


def reboot(stack: LabStack, host: str) -> None:
    """Heal a crash as a reboot does: the kernel comes back empty (no rules, no conntrack entries),
    then links, sshd and the hook."""
    netns.nsexec(stack.topo.host(host).namespace, ["nft", "delete", "table", "ip", TABLE], check=False)
    netns.nsexec(stack.topo.host(host).namespace, ["conntrack", "-F"], check=False)
    stack.restore_host(host)


@dataclass(frozen=True)
class Scenario:
    """One fault: how to inject and heal it in our lab, and keepalived's equivalent (if any).

    ``moves``: clients of the victim must be taken over (a takeover time is measured); otherwise
    the row only counts exclusivity (the victim keeps serving) over ``hold_s`` x session timeout."""

    inject: Action
    restore: Action
    keepalived: str | None = None
    moves: bool = True
    crashes: bool = False  # the victim's kernel is unreachable while the fault lasts: not an owner
    hold_sessions: float = 2.5


#: The fault scenarios, one row per system each. Add a scenario here and it is run, tabled and charted.
SCENARIOS: dict[str, Scenario] = {
    "sshd hung": Scenario(lambda s, h: s.hang_sshd(h), lambda s, h: s.resume_sshd(h), keepalived="hung"),
    "host crash": Scenario(lambda s, h: s.crash_host(h), reboot, keepalived="crash", crashes=True),
    "agent killed": Scenario(lambda s, h: s.kill_hook(h), lambda s, h: s.start_hook(h), keepalived="kill",
                             moves=False),
    "login impossible": Scenario(lambda s, h: s.exhaust_logins(h), lambda s, h: s.restore_logins(h)),
}
#: Not a fault of its own: the planned move after one (drain_row). Its time is restore -> home host
#: takes new connections; its "sessions broken" counts survivor sessions cut by the failback (target 0).
DRAIN_FAILBACK = "failback with drain"
SYSTEMS = {"default": "ours default", "fast": "ours fast", "keepalived-1": "keepalived advert_int 1",
           "keepalived-0.1": benchtable.TUNED, "static": "static (no controller)"}
DEFAULT_FAULTS = "sshd hung,host crash,agent killed"
#: Not a fault either: no fault at all while the machine is saturated (calm_row). Counts false failovers.
CALM = benchtable.CALM


def sweep_duplicates(stack: LabStack, sources: list[str], stop: threading.Event, out: dict[str, int]) -> None:
    while not stop.is_set():
        try:
            replies = udp_probe(stack.topo, stack.options.responder_port, sources=sources, window_s=0.2)
        except LabError:
            continue
        out["sweeps"] += 1
        out["duplicates"] += sum(1 for r in replies.values() if len(r) > 1)


def open_sessions(stack: LabStack, sources: list[str]):  # type: ignore[no-untyped-def]
    proc = stack.popen_client("clusterlab.sshclient", "sessions", "--vip", stack.topo.vip, "--sources",
                              ",".join(sources), "--key", str(stack.user_key), "--interval", "0.05",
                              "--timeout", "10", "--stall", "5")
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def run_trial(stack: LabStack, system: str, fault: str, victim: str, window_s: float,
              controlled: bool = True) -> Trial:
    """One fault on ``victim`` in our lab, measured from the clients and the kernels; healed at the end."""
    sc = SCENARIOS[fault]
    owners = stack.owners()
    affected = [s for s in stack.topo.client_sources if owners.get(stack.bucket_of(s)) == victim]
    others = [s for s in stack.topo.client_sources if s not in affected]
    sessions = open_sessions(stack, others[:: max(1, len(others) // 6)][:6])
    dup = {"sweeps": 0, "duplicates": 0}
    stop = threading.Event()
    sweeper = threading.Thread(target=sweep_duplicates, args=(stack, list(stack.topo.client_sources), stop, dup))
    crashed: set[str] = set()
    checker = KernelOwnershipChecker({h: stack.topo.host(h).namespace for h in stack.host_names}, TABLE,
                                     stack.buckets, interval_s=0.05, excluded=lambda: set(crashed))
    checker.start()
    try:
        with BannerWatch(stack, affected, interval_s=0.02, timeout_s=1.0, duration_s=window_s + 30) as watch:
            sweeper.start()
            time.sleep(0.3)
            fault_at = time.time()
            if sc.crashes:
                crashed.add(victim)
            sc.inject(stack, victim)
            if controlled and sc.moves:
                with contextlib.suppress(LabError):
                    stack.wait_taken_over(victim, affected, timeout_s=window_s)
                time.sleep(1.5)
            elif controlled:
                time.sleep(sc.hold_sessions * stack.session_timeout_s + 1.0)
            else:
                time.sleep(window_s)
            transitions = watch.stop()
    finally:
        stop.set()
        if sweeper.is_alive():
            sweeper.join(timeout=10)
        kernel = checker.stop()
    out, _ = sessions.communicate(timeout=60)
    report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    counts: dict[str, int] = {}
    for owner in stack.owners().values():
        if owner and owner != victim:
            counts[owner] = counts.get(owner, 0) + 1
    sc.restore(stack, victim)
    per_source: list[float | None] = []
    takeover = None
    if sc.moves:
        per_source = [r.recovered_s for r in recovery(transitions, fault_at, bad_hosts=[victim])]
        takeover = max(per_source) if per_source and None not in per_source else None  # type: ignore[type-var]
    return Trial(system, fault, victim, takeover, per_source, dup["duplicates"], dup["sweeps"],
                 kernel.double_owner_samples, kernel.rounds, None,
                 sum(1 for r in report.values() if r.get("broken")), counts, os.getloadavg()[0],
                 fault_at=fault_at, timeline=transitions)


def self_fences(stack: LabStack) -> int:
    """Self-fences in every hook log so far: each released a host's buckets without a fault (fast)."""
    total = 0
    for path in (stack.dir / "logs").glob("hook-*.log"):
        with contextlib.suppress(OSError):
            total += path.read_text(errors="replace").count("self-fenced, released all buckets")
    return total


def settle(stack: LabStack, log: Callable[[str], None], timeout_s: float = 90.0) -> None:
    """Failback done: every host holds its home buckets again. One retry (a fast-profile hook that
    fenced itself during the heal needs another round); a second failure ends the chunk."""
    expect = {h: stack.home_buckets(h) for h in stack.host_names}
    try:
        stack.wait_converged(timeout_s, expect=expect)
    except LabError as exc:
        log(f"not converged after a trial, waiting once more: {exc}"[:400])
        stack.wait_converged(timeout_s, expect=expect)


def failed_trial(system: str, fault: str, victim: str, exc: Exception) -> Trial:
    return Trial(system, fault, victim, None, load1=os.getloadavg()[0], error=f"{type(exc).__name__}: {exc}"[:300])


def system_name(profile: str, nice: dict[str, int] | None = None) -> str:
    """``ours fast``, or ``ours fast (nice ZK -10, hooks -10, sshd -5)`` when run with priorities."""
    label = StackOptions(**nice_options(nice)).priorities()
    return SYSTEMS[profile] + (f" ({label})" if label else "")


def nice_options(nice: dict[str, int] | None) -> dict[str, int]:
    """``{"zk": -10, "sshd": -5}`` -> StackOptions keywords (``zk_nice``, ``sshd_nice``)."""
    return {f"{k[:-1] if k.endswith('s') else k}_nice": v for k, v in (nice or {}).items()}


def ours_rows(profile: str, faults: list[str], trials: int, backend: str = "nftables",
              log: Callable[[str], None] = print, window_s: float = 20.0, into: list[Row] | None = None,
              nice: dict[str, int] | None = None) -> list[Row]:
    """N trials per fault in one lab stack of ``profile``; a trial whose machinery fails is recorded.
    Rows go into ``into`` as soon as they exist, so an aborted chunk still saves what it measured.
    ``nice``: CPU priorities by part (``zk``, ``hooks``, ``controllers``, ``sshd``), named in the rows."""
    system = system_name(profile, nice)
    rows = [Row(system, f) for f in faults]
    (into if into is not None else []).extend(rows)
    stack = LabStack(StackOptions(backend=backend, client_sources=64, failback="immediate", profile=profile,
                                  **nice_options(nice)))
    try:
        stack.up(timeout_s=90)
        victims = stack.host_names[1:]
        # the first host is never a victim: every DOWN verdict on it is a false one
        spared = f"host {stack.host_names[0]} is down"
        for row in rows:
            fences0, row_started = self_fences(stack), time.monotonic()
            false0 = _count_in_logs(stack, "controller-*.log", spared)
            for i in range(trials):
                victim = victims[i % len(victims)]
                try:
                    trial = run_trial(stack, system, row.fault, victim, window_s=window_s)
                except LabError as exc:
                    trial = failed_trial(system, row.fault, victim, exc)
                row.trials.append(trial)
                log(describe(trial, i))
                settle(stack, log)
                # after every trial, so a chunk ended by its time limit still has them
                row.notes["self_fences"] = self_fences(stack) - fences0
                row.notes["false_down_verdicts"] = _count_in_logs(stack, "controller-*.log", spared) - false0
                row.notes["seconds"] = round(time.monotonic() - row_started)
    finally:
        keep_logs(stack, f"{system}-{','.join(faults)}")
        stack.down()
    return rows


def drain_row(trials: int, log: Callable[[str], None] = print, into: list[Row] | None = None,
              sessions: int = 6) -> Row:
    """Failback with drain (issue 9): crash a home host, open ``sessions`` long-lived TCP streams on
    the survivor from the crashed host's sources, restore the host; the streams must keep working
    through the failback while every new connection goes to the home host."""
    system = SYSTEMS["default"]
    row = Row(system, DRAIN_FAILBACK)
    (into if into is not None else []).append(row)
    extra = {"max_drain_s": 120, "drain_poll_s": 0.2}
    with LabStack(StackOptions(client_sources=64, failback="drain", failback_extra=extra)) as stack:
        port = stack.options.responder_port
        for i in range(trials):
            home = stack.host_names[1 + i % (len(stack.host_names) - 1)]
            buckets = set(stack.home_buckets(home))
            srcs = [s for s in stack.topo.client_sources if stack.bucket_of(s) in buckets]
            try:
                stack.crash_host(home)
                wait_for(lambda h=home, bs=buckets: all(stack.owners()[b] not in (None, h) for b in bs), 30,
                         what="takeover")
                stack.wait_converged(30)
                streams = TcpStreams(stack.topo, port, srcs[:sessions], stall_s=2.0).start()
                # From the reboot on no bucket may sit in two kernels' owned sets (a draining bucket is
                # not owned), and no source may get two answers.
                dup = {"sweeps": 0, "duplicates": 0}
                stop = threading.Event()
                sweeper = threading.Thread(target=sweep_duplicates,
                                           args=(stack, list(stack.topo.client_sources), stop, dup))
                checker = KernelOwnershipChecker({h: stack.topo.host(h).namespace for h in stack.host_names},
                                                 TABLE, stack.buckets, interval_s=0.05)
                try:
                    reboot(stack, home)
                    restored = time.time()
                    checker.start()
                    # The sweep starts once the home host's hook has installed its rules: before that
                    # its kernel has no rule, and a lab veth, unlike a NIC that has not joined the
                    # cluster MAC, hands it every UDP datagram to answer.
                    wait_for(lambda h=home: installed(stack, h), 60, what="rules installed")
                    sweeper.start()
                    wait_for(lambda h=home, bs=buckets: all(stack.owners()[b] == h for b in bs), 60, what="failback")
                    stack.wait_converged(30)
                    failback_s = time.time() - restored
                    fresh = tcp_probe(stack.topo, port, sources=srcs[sessions:], timeout_s=2.0)
                    misrouted = sum(1 for h in fresh.values() if h != home)
                    time.sleep(1.0)
                finally:
                    report = streams.stop()
                    stop.set()
                    if sweeper.is_alive():
                        sweeper.join(timeout=10)
                    kernel = checker.stop()
                broken = sum(1 for r in report.values() if r.broken)
                trial = Trial(system, DRAIN_FAILBACK, home, failback_s, [failback_s], dup["duplicates"],
                              dup["sweeps"], kernel.double_owner_samples, kernel.rounds,
                              sessions_broken=broken, load1=os.getloadavg()[0],
                              error=f"{misrouted} new sessions not on the home host" if misrouted else None)
            except LabError as exc:
                trial = failed_trial(system, DRAIN_FAILBACK, home, exc)
            row.trials.append(trial)
            log(describe(trial, i))
            settle(stack, log)
    return row


#: where to copy the lab's logs (hooks, controllers) before a stack goes down; None: not kept
KEEP_LOGS: Path | None = None


def keep_logs(stack: LabStack, label: str) -> None:
    """Copy the lab's logs to KEEP_LOGS/<label>/ (the lab's own directory is removed with it)."""
    if KEEP_LOGS is None or stack.workdir is None:
        return
    dest = KEEP_LOGS / label.replace(" ", "_").replace("/", "_")
    with contextlib.suppress(OSError):
        shutil.copytree(stack.dir / "logs", dest, dirs_exist_ok=True)


def _count_in_logs(stack: LabStack, pattern: str, needle: str) -> int:
    total = 0
    for path in (stack.dir / "logs").glob(pattern):
        with contextlib.suppress(OSError):
            total += path.read_text(errors="replace").count(needle)
    return total


def _login_loops(stack: LabStack, logins: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """``logins`` concurrent loops of real OpenSSH logins through the VIP from the client namespace,
    each from its own source address (so spread over the buckets), for ``seconds``; each success is
    one line in its own file under <lab>/logins (counted afterwards)."""
    keyfile = stack.dir / "keys" / "login_key"
    shutil.copyfile(stack.user_key, keyfile)
    os.chmod(keyfile, 0o600)  # OpenSSH refuses a private key others can read
    out = stack.dir / "logins"
    out.mkdir(exist_ok=True)
    sources = list(stack.topo.client_sources)
    procs = []
    for i in range(logins):
        src = sources[i % len(sources)]
        loop = (f"end=$((SECONDS+{int(seconds)})); while [ $SECONDS -lt $end ]; do "
                f"ssh -q -b {src} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                f"-o ConnectTimeout=10 -i {keyfile} {LOGIN_USER}@{stack.topo.vip} 'echo $CIF_NODE' "
                f">> {out}/{i}.ok 2>/dev/null; done")
        procs.append(subprocess.Popen(["ip", "netns", "exec", stack.topo.client_ns, "bash", "-c", loop],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
    return procs


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group this benchmark started (its own session: the loop and its ssh child)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def calm_row(profile: str, seconds: float, logins: int, stress: bool = True, backend: str = "nftables",
             log: Callable[[str], None] = print, into: list[Row] | None = None,
             nice: dict[str, int] | None = None) -> Row:
    """No fault at all for ``seconds`` while stress-ng saturates every core and ``logins`` concurrent
    SSH logins run through the VIP (issue 11: false failovers in 5 min, target 0).

    Counted: host failovers seen in the map (a poll where a host lost one of its home buckets to
    another host or to nobody), bucket moves (every owner change, failbacks included), DOWN verdicts
    in the controllers' logs, self-fences in the hooks' logs (each releases a host's buckets without
    a map change), long-lived SSH sessions of 6 sources broken, and two-owner kernel samples
    (clusterlab.ownership), with the load average every 5 s."""
    system = system_name(profile, nice)
    row = Row(system, CALM)
    (into if into is not None else []).append(row)
    stack = LabStack(StackOptions(backend=backend, client_sources=64, failback="immediate", profile=profile,
                                  **nice_options(nice)))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        stack.up(timeout_s=90)
        stack.wait_converged(60)
        sources = list(stack.topo.client_sources)
        proc = stack.popen_client("clusterlab.sshclient", "sessions", "--vip", stack.topo.vip, "--sources",
                                  ",".join(sources[3::11][:6]), "--key", str(stack.user_key), "--interval", "0.2",
                                  "--timeout", "10", "--stall", "20")
        assert proc.stdout is not None
        proc.stdout.readline()
        fences0 = self_fences(stack)
        downs0 = _count_in_logs(stack, "controller-*.log", " is down")
        checker = KernelOwnershipChecker({h: stack.topo.host(h).namespace for h in stack.host_names}, TABLE,
                                         stack.buckets, interval_s=0.05)
        checker.start()
        # the map is watched from before the load starts (launching 100 login loops alone takes ~20 s
        # on a loaded machine, and the first failovers come during that)
        home = {h: set(stack.home_buckets(h)) for h in stack.host_names}
        prev = stack.owners()
        started = time.monotonic()
        if stress:
            procs.append(subprocess.Popen(["stress-ng", "--cpu", str(os.cpu_count() or 2), "--timeout",
                                           f"{int(seconds)}s", "--quiet"], start_new_session=True))
        procs += _login_loops(stack, logins, seconds)
        log(f"{time.strftime('%H:%M:%S')} {system} | {CALM}: {seconds:.0f} s, stress-ng "
            f"{'on every core' if stress else 'off'}, {logins} login loops [load {os.getloadavg()[0]:.1f}]")
        failovers, moves, read_errors = 0, 0, 0
        events: list[str] = []
        loads: list[float] = [os.getloadavg()[0]]
        next_load = started + 5
        while time.monotonic() < started + seconds:
            time.sleep(0.25)
            try:
                now = stack.owners()
            except LabError:
                read_errors += 1
                continue
            moved = {b: (prev.get(b), o) for b, o in now.items() if prev.get(b) != o}
            moves += len(moved)
            # a failover = a host losing one of its home buckets (a bucket going back home after one is not)
            for host in {old for b, (old, _) in moved.items() if old and b in home.get(old, ())}:
                failovers += 1
                lost = sorted(b for b, (old, _) in moved.items() if old == host)
                events.append(f"{time.monotonic() - started:.1f} s: {host} lost {lost} "
                              f"(to {sorted({str(new) for b, (old, new) in moved.items() if old == host})})")
            prev = now
            if time.monotonic() >= next_load:
                loads.append(os.getloadavg()[0])
                next_load += 5
        loads.append(os.getloadavg()[0])
        for p in procs:
            _end_group(p)
        procs.clear()
        kernel = checker.stop()
        out, _ = proc.communicate(timeout=60)
        report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        ok_logins = sum(len(f.read_text().splitlines()) for f in (stack.dir / "logins").glob("*.ok"))
        fences = self_fences(stack) - fences0
        downs = _count_in_logs(stack, "controller-*.log", " is down") - downs0
        broken = sum(1 for r in report.values() if r.get("broken"))
        row.trials.append(Trial(system, CALM, "-", None, [], None, None, kernel.double_owner_samples,
                                kernel.rounds, None, broken, {}, loads[-1]))
        row.notes.update({"seconds": seconds, "logins": logins, "stress": stress, "logins_ok": ok_logins,
                          "failovers": failovers, "bucket_moves": moves, "self_fences": fences,
                          "down_verdicts": downs, "read_errors": read_errors, "load_min": min(loads),
                          "load_max": max(loads), "events": events[:20]})
        log(f"{time.strftime('%H:%M:%S')} {system} | {CALM}: {failovers} host failovers ({moves} bucket moves), "
            f"{fences} self-fences, {downs} DOWN verdicts, {broken} of {len(report)} sessions broken, "
            f"{kernel.double_owner_samples} two-owner samples / {kernel.rounds} kernel rounds, {ok_logins} logins "
            f"done [load {min(loads):.1f}-{max(loads):.1f}]")
        for e in events[:20]:
            log(f"    {e}")
    finally:
        for p in procs:
            _end_group(p)
        keep_logs(stack, f"{system}-{CALM}")
        stack.down()
    return row


def static_row(trials: int, window_s: float, backend: str = "nftables",
               log: Callable[[str], None] = print, into: list[Row] | None = None) -> Row:
    """The seed's static set-up: no controller moves buckets; crash a host and watch its clients."""
    system = SYSTEMS["static"]
    row = Row(system, "host crash", notes={"window_s": window_s})
    (into if into is not None else []).append(row)
    with LabStack(StackOptions(backend=backend, client_sources=64, failback="immediate")) as stack:
        for name in list(stack.controllers):
            stack.kill_controller(name)
        for i in range(trials):
            trial = run_trial(stack, system, "host crash", stack.host_names[1], window_s=window_s, controlled=False)
            row.trials.append(trial)
            log(describe(trial, i))
            stack.wait_converged(90, expect={h: stack.home_buckets(h) for h in stack.host_names})
    return row


def keepalived_rows(advert_int: float, faults: list[str], trials: int,
                    log: Callable[[str], None] = print, into: list[Row] | None = None) -> list[Row]:
    """N trials per fault in one keepalived lab (fault on the master, h1), same BannerWatch."""
    from clusterlab.keepalived import KeepalivedLab, KeepalivedOptions

    system = f"keepalived advert_int {advert_int:g}"
    rows = [Row(system, f) for f in faults if SCENARIOS[f].keepalived]
    (into if into is not None else []).extend(rows)
    with KeepalivedLab(KeepalivedOptions(advert_int=advert_int)) as lab:
        for row in rows:
            kind = SCENARIOS[row.fault].keepalived
            assert kind is not None
            for i in range(trials):
                try:
                    k = lab.trial(kind)
                    trial = Trial(system, row.fault, k.master, k.takeover_s, list(k.per_source_s),
                                  vip_holders=k.vip_holders, load1=k.load1, fault_at=k.fault_at,
                                  timeline=k.transitions)
                except LabError as exc:
                    trial = failed_trial(system, row.fault, "h1", exc)
                    lab.wait_stable(60)
                row.trials.append(trial)
                log(describe(trial, i))
    return rows


def describe(t: Trial, i: int) -> str:
    took = "n/a" if not t.per_source and t.error is None else (
        "never" if t.takeover_s is None else f"{t.takeover_s:.3f} s")
    extra = f"VIP holders {t.vip_holders}" if t.vip_holders is not None else (
        f"duplicates {t.duplicates}/{t.sweeps} sweeps, two-owner samples {t.two_owner_samples}/"
        f"{t.kernel_rounds} rounds, sessions broken {t.sessions_broken}, survivors {t.survivor_counts}")
    err = f" ERROR {t.error}" if t.error else ""
    return (f"{time.strftime('%H:%M:%S')} {t.system:>26} | {t.fault:>12} #{i + 1:02d} {t.victim}: "
            f"takeover {took}; {extra} [load {t.load1:.1f}]{err}")


# ---------------------------------------------------------------------- CLI


def parse_list(text: str, known: dict[str, object], what: str, parser: argparse.ArgumentParser) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in items if x not in known]
    if unknown or not items:
        parser.error(f"unknown {what} {unknown or text!r}; choose from {', '.join(known)}")
    return items


NICE_PARTS = ("zk", "hooks", "controllers", "sshd")


def parse_nice(text: str) -> dict[str, int]:
    """``zk=-10,hooks=-10,sshd=-5`` -> {"zk": -10, ...}; argparse turns a ValueError into a usage error."""
    out: dict[str, int] = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        part, _, value = item.partition("=")
        if part not in NICE_PARTS or not value.lstrip("+-").isdigit() or not -20 <= int(value) <= 19:
            raise argparse.ArgumentTypeError(f"{item!r}: use PART=N with PART from {', '.join(NICE_PARTS)}, "
                                             "N within -20..19")
        out[part] = int(value)
    return out


def run(args: argparse.Namespace, systems: list[str], faults: list[str], rows: list[Row]) -> None:
    """Every selected system x fault, appending to ``rows`` as it goes (saved even if a chunk aborts)."""
    for name in systems:
        if name in ("default", "fast"):
            plain = [f for f in faults if f not in (DRAIN_FAILBACK, CALM)]
            if plain:
                ours_rows(name, plain, args.trials, args.backend, into=rows, nice=args.nice)
            if name == "default" and DRAIN_FAILBACK in faults:
                drain_row(args.trials, into=rows)
            if CALM in faults:
                calm_row(name, args.calm_seconds, args.calm_logins, not args.no_stress, args.backend, into=rows,
                         nice=args.nice)
        elif name.startswith("keepalived-"):
            keepalived_rows(float(name.split("-", 1)[1]), [f for f in faults if f != CALM], args.trials, into=rows)
        elif "host crash" in faults:
            static_row(args.baseline_trials, args.baseline_window, args.backend, into=rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="trials per row (default 20)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {', '.join(SYSTEMS)}")
    parser.add_argument("--faults", default=DEFAULT_FAULTS,
                        help=f"comma-separated, from {', '.join([*SCENARIOS, DRAIN_FAILBACK, CALM])}")
    parser.add_argument("--nice", type=parse_nice, default=None, metavar="PART=N,...",
                        help="our rows: CPU priorities of the lab's parts, from zk, hooks, controllers, sshd; "
                             "e.g. zk=-10,hooks=-10,sshd=-5 (docs/profiles.md: the remedy for a busy host)")
    parser.add_argument("--calm-seconds", type=float, default=300.0, help=f"{CALM!r}: how long (default 300)")
    parser.add_argument("--calm-logins", type=int, default=100, help=f"{CALM!r}: concurrent login loops (100)")
    parser.add_argument("--no-stress", action="store_true", help=f"{CALM!r}: without stress-ng")
    parser.add_argument("--logs", type=Path, default=None, metavar="DIR",
                        help="our rows: copy the lab's hook and controller logs here before it goes down")
    parser.add_argument("--backend", default="nftables", choices=["nftables", "xt_cluster"])
    parser.add_argument("--baseline-trials", type=int, default=2)
    parser.add_argument("--baseline-window", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true", help="print only; do not write docs/")
    parser.add_argument("--json", type=Path, default=None, help="write the trials as JSON here (one chunk)")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None, metavar="FILE",
                        help="run nothing: merge these chunks into the table and chart")
    args = parser.parse_args()
    global KEEP_LOGS
    KEEP_LOGS = args.logs
    if args.trials < 1 or args.baseline_trials < 1 or args.baseline_window <= 0:
        parser.error("--trials and --baseline-trials must be >= 1 and --baseline-window > 0")
    if args.from_json:
        try:
            rows, metas = benchtable.load(args.from_json)
        except ValueError as exc:
            parser.error(str(exc))
    else:
        systems = parse_list(args.systems, SYSTEMS, "systems", parser)  # type: ignore[arg-type]
        faults = parse_list(args.faults, {**SCENARIOS, DRAIN_FAILBACK: None, CALM: None}, "faults", parser)
        if CALM in faults and not args.no_stress and shutil.which("stress-ng") is None:
            parser.error(f"{CALM!r} needs stress-ng: apt-get install stress-ng (or --no-stress)")
        meta = {"argv": sys.argv[1:], "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "load_start": os.getloadavg()}
        print(f"load average at start: {meta['load_start']}", flush=True)
        # `timeout` (or the lock's holder) ends a chunk with SIGTERM: exit through the finally
        # blocks, so the lab is torn down and the trials measured so far are still written.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        rows = []
        try:
            run(args, systems, faults, rows)
        finally:
            meta["load_end"] = os.getloadavg()
            meta["ended"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
            print(f"load average at end: {meta['load_end']}", flush=True)
            if args.json:
                benchtable.dump(rows, args.json, meta)
        metas = [meta]
    print(benchtable.table(rows))
    if not args.no_write:
        from clusterlab.benchchart import chart

        benchtable.write_docs(rows, metas, DOCS / "failover-benchmark.md")
        chart(rows, DOCS / "failover-benchmark.png")
        print(f"wrote {DOCS / 'failover-benchmark.md'} and the chart")
    bad = benchtable.violations(rows)
    for line in bad:
        print(f"EXCLUSIVITY VIOLATED: {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
