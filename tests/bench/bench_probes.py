"""Benchmark of the SSH probes (prints numbers; not collected by pytest).

  .venv/bin/python tests/bench/bench_probes.py detect  [--trials 20]
  .venv/bin/python tests/bench/bench_probes.py cost    [--hosts 500 --seconds 20 --runs 5]
  .venv/bin/python tests/bench/bench_probes.py alarms  [--seconds 300 --logins 100 --hosts 4]
  .venv/bin/python tests/bench/bench_probes.py all --short     (CI: 20 trials, 10 s cost, 30 s alarms)

detect: hung-sshd (SIGSTOP) detection time with the default ProbeSettings, p50/p99.
cost:   controller CPU per level-1 probe against one selectors banner server on many 127.0.x.y
        addresses (a separate process, so only the prober's CPU is counted) -> hosts per core.
        Counted: this whole process (user + system, as getrusage reports it), also shown split and
        for the probe thread alone. Conservative: on loopback the kernel runs the server's side of
        each handshake (SYN, child socket, the reset at the end) inside our own system calls, so it
        is charged to the prober; against remote hosts their kernels do that work. The totals are
        exact (scheduler runtime); the user/system split is sampled at the kernel tick.
alarms: both cores saturated by stress-ng plus N concurrent SSH logins to the watched sshds; every
        host must stay out of DOWN. The 300 s run must not overlap other people's tests.
        --sshd-nice N runs the sshds at nice N (as systemd Nice= would on real hosts), --controller-nice N
        the probing controller (this process, after the load started); default: neither.
Every result line ends with the 1/5/15-minute load average: timings mean little without it.
Run as root (sshd, users). Everything started is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "deploy" / "lab")]

from clusterlab.ports import free_tcp_ports  # noqa: E402
from clusterlab.sshd import LOGIN_USER, PROBE_USER, Sshd, generate_key  # noqa: E402

from controller.core.health import ProbeResult  # noqa: E402
from controller.core.model import Health, HostHealth, ProbeSettings  # noqa: E402
from controller.probes import ProbeScheduler, ProbeTarget  # noqa: E402

BANNER = b"SSH-2.0-OpenSSH_9.2p1 bench\r\n"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"[load {one:.1f} {five:.1f} {fifteen:.1f}]"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Lab:
    """Temp dir, probe key and sshds for one benchmark; cleaned up by ``close``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cif-bench-"))
        self.key = self.dir / "probe_key"
        self.public = generate_key(self.key)
        self.sshds: list[Sshd] = []
        self.known_hosts = self.dir / "known_hosts"

    def sshd(self, name: str, nice: int | None = None) -> Sshd:
        addr = f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}"
        s = Sshd(self.dir, name, addr, free_tcp_ports(1, addr)[0], probe_keys=[self.public], user_keys=[self.public],
                 nice=nice)
        self.sshds.append(s)
        s.start()
        with open(self.known_hosts, "a") as f:
            f.write(s.known_hosts_line() + "\n")
        return s

    def settings(self, **kw: object) -> ProbeSettings:
        return ProbeSettings(user=PROBE_USER, key_file=str(self.key), known_hosts=str(self.known_hosts), **kw)

    def close(self) -> None:
        for s in self.sshds:
            s.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Waiter:
    def __init__(self) -> None:
        self.events: list[tuple[float, HostHealth]] = []
        self.cv = threading.Condition()

    def __call__(self, h: HostHealth) -> None:
        with self.cv:
            self.events.append((time.monotonic(), h))
            self.cv.notify_all()

    def wait(self, host: str, state: Health, after: float, timeout: float) -> float | None:
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                for at, h in self.events:
                    if at >= after and h.host_id == host and h.state is state:
                        return at
                if time.monotonic() >= end:
                    return None
                self.cv.wait(end - time.monotonic())


# ------------------------------------------------------------------------------ detection


def bench_detect(trials: int) -> dict[str, float]:
    lab = Lab()
    try:
        sshd = lab.sshd("detect")
        settings = lab.settings()
        w = Waiter()
        sched = ProbeScheduler([ProbeTarget("h", sshd.address, sshd.port)], settings, w)
        sched.start()
        times: list[float] = []
        try:
            if w.wait("h", Health.UP, 0, 15) is None:
                raise SystemExit("detect: host never came up")
            for i in range(trials):
                time.sleep(random.uniform(0.3, 0.8))  # random phase against the probe ticks
                t0 = time.monotonic()
                sshd.pause()
                try:
                    at = w.wait("h", Health.DOWN, t0, 5)
                finally:
                    sshd.resume()
                if at is None:
                    raise SystemExit(f"detect: trial {i} not detected in 5 s")
                times.append(at - t0)
                if w.wait("h", Health.UP, at, 15) is None:
                    raise SystemExit(f"detect: trial {i} did not recover")
        finally:
            sched.stop()
        s = settings
        print(f"detect: settings interval={s.interval_s}s banner_timeout={s.banner_timeout_s}s "
              f"connect_timeout={s.connect_timeout_s}s fall={s.fall} rise={s.rise} "
              f"banner_timeout_max={s.banner_timeout_max_s}s late_banner={s.late_banner_s}s")
        print(f"detect: hung sshd (SIGSTOP) -> DOWN over {len(times)} trials: p50 {statistics.median(times):.3f} s, "
              f"p99 {pct(times, 99):.3f} s, max {max(times):.3f} s, min {min(times):.3f} s {load()}")
        return {"p50": statistics.median(times), "p99": pct(times, 99)}
    finally:
        lab.close()


# ------------------------------------------------------------------------------ cost

SERVER = r"""
import selectors, socket, sys, time
addrs = [(a, int(p)) for a, p in (x.split(":") for x in sys.argv[2].split(","))]
sel = selectors.DefaultSelector()
for a, p in addrs:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a, p)); s.listen(512); s.setblocking(False); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for key, _ in sel.select(0.5):
        try:
            while True:
                c, _ = key.fileobj.accept()
                try: c.send(b"SSH-2.0-OpenSSH_9.2p1 bench\r\n")
                except OSError: pass
                c.close()
        except BlockingIOError:
            pass
"""


def bench_cost(hosts: int, seconds: float) -> dict[str, float]:
    addrs = []
    for i in range(hosts):
        a = f"127.1.{i // 250}.{i % 250 + 2}"
        addrs.append((a, 2222))
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(seconds + 30), ",".join(f"{a}:{p}" for a, p in addrs)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("cost: banner server did not start")
        settings = ProbeSettings(login_interval_s=0)  # level 1 only, default interval and timeouts
        w = Waiter()
        targets = [ProbeTarget(f"b{i}", a, p) for i, (a, p) in enumerate(addrs)]
        sched = ProbeScheduler(targets, settings, w)
        sched.start()
        try:
            time.sleep(2.0)  # warm-up: all hosts up
            up = sum(1 for h in sched.snapshot().values() if h.state is Health.UP)
            assert sched._thread is not None and sched._thread.native_id is not None
            tid = sched._thread.native_id
            r0, n0, t0 = resource.getrusage(resource.RUSAGE_SELF), sched.stats.level1, time.monotonic()
            th0 = thread_cpu(tid)
            time.sleep(seconds)
            r1, n1, t1 = resource.getrusage(resource.RUSAGE_SELF), sched.stats.level1, time.monotonic()
            th1 = thread_cpu(tid)
            down = sum(1 for h in sched.snapshot().values() if h.state is not Health.UP)
        finally:
            sched.stop()
    finally:
        server.terminate()
        server.wait(timeout=10)
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    cpu = user + system
    probes = n1 - n0
    wall = t1 - t0
    th_user, th_sys = th1[0] - th0[0], th1[1] - th0[1]
    per_probe_ms = cpu / probes * 1000
    per_host_s = cpu / wall / hosts
    capacity = 1.0 / (per_probe_ms / 1000 / settings.interval_s)
    print(f"cost: {hosts} hosts, interval {settings.interval_s}s, {wall:.1f} s: {probes} probes "
          f"({probes / wall:.0f}/s), controller CPU {cpu:.2f} s = {100 * cpu / wall:.1f}% of one core {load()}")
    print(f"cost: {per_probe_ms * 1000:.0f} us CPU per probe, {per_host_s * 1000:.2f} ms CPU per host per second; "
          f"one core watches ~{capacity:.0f} hosts at the default interval "
          f"(hosts up at warm-up {up}/{hosts}, not up at the end {down})")
    print(f"cost: per probe user {user / probes * 1e6:.0f} us + system {system / probes * 1e6:.0f} us; the probe "
          f"thread alone {100 * (th_user + th_sys) / wall:.1f}% of one core (user {th_user:.2f} s, "
          f"system {th_sys:.2f} s)")
    return {"cpu_pct": 100 * cpu / wall, "us_per_probe": per_probe_ms * 1000, "hosts_per_core": capacity}


def thread_cpu(tid: int) -> tuple[float, float]:
    """User and system CPU seconds of one thread of this process (/proc, clock ticks)."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


# ------------------------------------------------------------------------------ false alarms


class Latencies:
    """Wraps the tracker's ``observe`` to keep every level-1 latency (in time and late) and the level-2
    outcomes (login latencies, timeouts, other failures, the longest run of failed logins per host)."""

    def __init__(self, sched: ProbeScheduler) -> None:
        self.ok: list[float] = []
        self.late: list[float] = []
        self.timeouts = 0
        self.logins: list[float] = []
        self.login_timeouts = 0
        self.login_other: list[str] = []
        self.login_streak: dict[str, tuple[float, int]] = {}  # host -> (first failure at, failures)
        self.longest_streak = (0.0, 0)  # seconds, failures
        tracker = sched._tracker
        observe = tracker.observe

        def spy(r: ProbeResult) -> HostHealth | None:
            if r.level == 1:
                if r.late and r.latency_ms is not None:
                    self.late.append(r.latency_ms)
                elif r.ok and r.latency_ms is not None:
                    self.ok.append(r.latency_ms)
                elif not r.ok:
                    self.timeouts += 1
            elif r.ok:
                if r.latency_ms is not None:
                    self.logins.append(r.latency_ms)
                self.login_streak.pop(r.host_id, None)
            else:
                if r.timeout:
                    self.login_timeouts += 1
                else:
                    self.login_other.append(r.reason)
                first, n = self.login_streak.get(r.host_id, (r.at, 0))
                self.login_streak[r.host_id] = (first, n + 1)
                self.longest_streak = max(self.longest_streak, (r.at - first, n + 1))
            return observe(r)

        tracker.observe = spy  # type: ignore[method-assign]

    def summary(self) -> str:
        ok = self.ok or [0.0]
        late = f"late p50 {pct(self.late, 50):.0f} max {max(self.late):.0f} ms" if self.late else "no late banners"
        logins = self.logins or [0.0]
        others = f" (first: {self.login_other[0]})" if self.login_other else ""
        return (f"banner latency in time p50 {pct(ok, 50):.0f} p99 {pct(ok, 99):.0f} max {max(ok):.0f} ms; "
                f"{self.timeouts} timeouts, {len(self.late)} late banners ({late}); "
                f"logins ok {len(self.logins)} (p50 {pct(logins, 50):.0f} p99 {pct(logins, 99):.0f} ms), "
                f"{self.login_timeouts} login timeouts, {len(self.login_other)} other login failures{others}; "
                f"longest run of failed logins {self.longest_streak[1]} over {self.longest_streak[0]:.1f} s")


def renice_self(value: int) -> None:
    """Every thread of this process (Linux priorities are per thread); children started before keep theirs."""
    for tid in os.listdir("/proc/self/task"):
        os.setpriority(os.PRIO_PROCESS, int(tid), value)


def bench_alarms(seconds: float, logins: int, hosts: int, sshd_nice: int | None = None,
                 controller_nice: int | None = None) -> dict[str, float]:
    if shutil.which("stress-ng") is None:
        raise SystemExit("alarms: stress-ng is not installed: apt-get install stress-ng")
    lab = Lab()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sshds = [lab.sshd(f"alarm{i}", nice=sshd_nice) for i in range(hosts)]
        w = Waiter()
        sched = ProbeScheduler([ProbeTarget(f"h{i}", s.address, s.port) for i, s in enumerate(sshds)],
                               lab.settings(), w)
        lat = Latencies(sched)
        sched.start()
        try:
            for i in range(hosts):
                if w.wait(f"h{i}", Health.UP, 0, 20) is None:
                    raise SystemExit(f"alarms: h{i} never came up")
            t0 = time.monotonic()
            procs.append(subprocess.Popen(["stress-ng", "--cpu", str(os.cpu_count() or 2), "--timeout",
                                           f"{int(seconds)}s", "--quiet"], start_new_session=True))
            for i in range(logins):
                s = sshds[i % hosts]
                loop = (f"end=$((SECONDS+{int(seconds)})); while [ $SECONDS -lt $end ]; do "
                        f"ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                        f"-o ConnectTimeout=10 -i {lab.key} -p {s.port} {LOGIN_USER}@{s.address} "
                        "'echo $CIF_NODE' >/dev/null 2>&1; done")
                procs.append(subprocess.Popen(["bash", "-c", loop], start_new_session=True))
            if controller_nice is not None:
                renice_self(controller_nice)
            loads: list[float] = []
            while time.monotonic() < t0 + seconds:
                time.sleep(min(5.0, max(0.0, t0 + seconds - time.monotonic())))
                loads.append(os.getloadavg()[0])
            t1 = time.monotonic()
            downs = [h for at, h in w.events if t0 <= at <= t1 and h.state is Health.DOWN]
            suspects = [h for at, h in w.events if t0 <= at <= t1 and h.state is Health.SUSPECT]
            l1, l2 = sched.stats.level1, sched.stats.level2
        finally:
            sched.stop()
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # our own session: bash loop and its ssh child
        for p in procs:
            p.wait(timeout=10)
        lab.close()
    nice = (("sshd at default nice" if sshd_nice is None else f"sshd at nice {sshd_nice}") + ", " +
            ("controller at default nice" if controller_nice is None else f"controller at nice {controller_nice}"))
    print(f"alarms: {seconds:.0f} s, stress-ng on {os.cpu_count()} cores + {logins} concurrent login loops, "
          f"{hosts} watched hosts, {nice} ({l1} banner probes, {l2} logins): {len(downs)} hosts marked DOWN, "
          f"{len(suspects)} SUSPECT episodes; 1-min load during the run min {min(loads):.1f} "
          f"max {max(loads):.1f} {load()}")
    print(f"alarms: {lat.summary()}")
    for h in downs[:5]:
        print(f"alarms:   DOWN {h.host_id}: {h.reason}")
    for h in suspects[:5]:
        print(f"alarms:   SUSPECT {h.host_id}: {h.reason}")
    return {"downs": len(downs), "suspects": len(suspects)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["detect", "cost", "alarms", "all"])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--hosts", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--logins", type=int, default=100)
    ap.add_argument("--runs", type=int, default=1, help="cost: repeat, report each run and the median")
    ap.add_argument("--sshd-nice", type=int, default=None, help="alarms: run the sshds at this nice value")
    ap.add_argument("--controller-nice", type=int, default=None, help="alarms: renice the prober to this value")
    ap.add_argument("--short", action="store_true", help="CI sizes: alarms 30 s, cost 10 s")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark starts sshd and creates the lab users")
    failed = False
    if a.what in ("detect", "all"):
        failed |= bench_detect(a.trials)["p99"] > 0.8
    if a.what in ("cost", "all"):
        runs = [bench_cost(a.hosts or 500, a.seconds or (10 if a.short else 20)) for _ in range(a.runs)]
        median = statistics.median(r["cpu_pct"] for r in runs)
        if a.runs > 1:
            print(f"cost: {a.runs} runs: " + ", ".join(f"{r['cpu_pct']:.1f}%" for r in runs)
                  + f" of one core; median {median:.1f}%, "
                  f"{statistics.median(r['us_per_probe'] for r in runs):.0f} us per probe {load()}")
        failed |= median > 50
    if a.what in ("alarms", "all"):
        failed |= bench_alarms(a.seconds or (30 if a.short else 300), a.logins, a.hosts or 4, a.sshd_nice,
                               a.controller_nice)["downs"] > 0
    print("result:", "FAIL (a target was missed)" if failed else "all targets met")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
