"""keepalived as the baseline: the classic active/backup VIP a sysadmin would set up, in our lab.

Why: issue 11 asks whether our exclusive hash-bucket failover beats what people use instead. This
runs keepalived 2.2 (Debian) in the SAME namespace topology as ours (``netns.build``: hosts with
eth0 on one bridge, a client namespace with many sources) and measures it with the SAME client code
(``measure.BannerWatch`` / ``recovery`` through ``sshclient``), so the rows are comparable.

Set-up, per host ``hK`` (priority 160 - 10K, h1 is the master):

* the VIP is a normal unicast address that keepalived adds/removes on eth0 (no multicast MAC, no
  hash rules; the client resolves the VIP by ordinary ARP and follows keepalived's gratuitous ARPs);
* VRRPv3, unicast peers over the lab bridge (never multicast outside the lab), ``advert_int`` 1 or
  0.1 (the "tuned" value);
* a real sshd naming itself in its banner (``VersionAddendum cif-node-hK``), bound to the VIP with
  ``ip_nonlocal_bind`` so it answers whenever keepalived gives the host the VIP;
* for the hung-sshd fault, a ``track_file`` (weight 0: non-zero = FAULT) written by a banner
  checker running in the host (``python -m clusterlab.keepalived check``): keepalived reacts to the
  file at once (inotify), so the checker's own interval/timeout/fall are the only delay, i.e. as
  tight as keepalived allows (a ``vrrp_script`` would add keepalived's own scheduling on top).

Faults: ``crash`` (the master's links down + keepalived and sshd SIGKILLed), ``hung`` (the master's
sshd SIGSTOPped), ``kill`` (keepalived SIGKILLed on the master: its VIP stays configured and a backup
adds it too; we count the hosts holding the VIP). ``run_baseline`` returns per-trial takeover times
for deploy/lab/bench_failover.py; ``python -m clusterlab.keepalived bench --trials N`` prints them.
Every process is ours, stopped by PID; ``down()`` removes the lab.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clusterlab import netns
from clusterlab.errors import LabError
from clusterlab.measure import BannerWatch, recovery
from clusterlab.sshd import Sshd, generate_key

KEEPALIVED = "/usr/sbin/keepalived"
LAB_DIR = Path(__file__).resolve().parents[1]
REPO = LAB_DIR.parents[1]
FAULTS = ("crash", "hung", "kill")
VRID = 51


@dataclass(frozen=True)
class KeepalivedOptions:
    hosts: int = 4
    advert_int: float = 1.0
    client_sources: int = 64
    #: banner checker feeding the track file: every ``check_interval_s``, ``check_timeout_s`` each,
    #: FAULT after ``check_fall`` failures in a row, back after ``check_rise`` successes
    track: bool = True
    check_interval_s: float = 0.1
    check_timeout_s: float = 0.2
    check_fall: int = 2
    check_rise: int = 2
    #: sampled client sources, their attempt interval and timeout (BannerWatch, as bench_failover uses it)
    watch_sources: int = 8
    watch_interval_s: float = 0.02
    watch_timeout_s: float = 1.0


@dataclass(frozen=True)
class Trial:
    """One fault injection. ``takeover_s``: fault -> every sampled source answered by another host
    (the slowest source; None if one never did in the window, or for ``kill`` where the old master
    keeps answering). ``vip_holders``: most hosts seen holding the VIP at once after the fault (for
    ``crash`` not counting the dead master, whose address stays configured)."""

    fault: str
    advert_int: float
    takeover_s: float | None
    per_source_s: tuple[float | None, ...]
    vip_holders: int
    master: str
    new_master: str | None
    #: 1-minute load average when the trial ended (timings mean little without it)
    load1: float = 0.0
    #: what the watched sources saw (BannerWatch transitions, wall clock) and when the fault hit:
    #: kept so a trial that never recovered can be explained afterwards
    transitions: dict[str, list[tuple[float, str]]] = field(default_factory=dict, compare=False)
    fault_at: float = 0.0


@dataclass
class _Host:
    name: str
    sshd: Sshd
    keepalived: subprocess.Popen[bytes] | None = None
    checker: subprocess.Popen[bytes] | None = None
    track_file: Path = field(default_factory=Path)


class KeepalivedLab:
    """A namespace lab running keepalived + sshd per host. ``.topo`` and ``.popen_client`` make it
    usable with ``measure.BannerWatch`` exactly like ``stack.LabStack``."""

    def __init__(self, options: KeepalivedOptions | None = None) -> None:
        self.options = options or KeepalivedOptions()
        self.topology: netns.LabTopology | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="cif-keepalived-"))
        self.hosts: dict[str, _Host] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def topo(self) -> netns.LabTopology:
        if self.topology is None:
            raise LabError("keepalived lab is not up: call up() first")
        return self.topology

    def __enter__(self) -> KeepalivedLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self, timeout_s: float = 60.0) -> KeepalivedLab:
        if shutil.which(KEEPALIVED) is None and not Path(KEEPALIVED).exists():
            raise LabError("keepalived is not installed: apt-get install -y keepalived")
        try:
            self.topology = netns.build(netns.new_prefix("cifka"), hosts=self.options.hosts,
                                        client_sources=self.options.client_sources, client_static_neigh=False)
            user_pub = generate_key(self.dir / "user_key")
            os.chmod(self.dir, 0o755)
            for h in self.topo.hosts:
                # The VIP belongs to keepalived now; sshd may bind it while another host holds it.
                netns.nsexec(h.namespace, ["ip", "addr", "del", f"{self.topo.vip}/32", "dev", self.topo.interface])
                netns.nsexec(h.namespace, ["sysctl", "-q", "-w", "net.ipv4.ip_nonlocal_bind=1"])
                sshd = Sshd(self.dir / "sshd", h.name, h.address, 22, netns=h.namespace, user_keys=[user_pub],
                            extra_config=f"ListenAddress {self.topo.vip}:22\nVersionAddendum cif-node-{h.name}\n")
                host = _Host(h.name, sshd, track_file=self.dir / f"{h.name}.track")
                self.hosts[h.name] = host
                sshd.start(timeout_s=20)
                self.start_checker(h.name)
                self.start_keepalived(h.name)
            self.wait_stable(timeout_s)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for name in list(self.hosts):
            host = self.hosts.pop(name)
            self.kill_keepalived(host.name, host)
            _kill(host.checker)
            host.sshd.kill()
        if self.topology is not None:
            netns.destroy(self.topology.prefix)
            self.topology = None
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ processes

    def config_text(self, name: str) -> str:
        topo, o = self.topo, self.options
        me = topo.host(name)
        peers = "\n        ".join(h.address for h in topo.hosts if h.name != name)  # one per line
        track_def = track_use = ""
        if o.track:
            track_def = (f"track_file chk_ssh {{\n    file {self.hosts[name].track_file}\n    weight 0\n}}\n")
            track_use = "    track_file {\n        chk_ssh weight 0\n    }\n"
        return (
            "global_defs {\n"
            f"    router_id cif-{topo.prefix}-{name}\n"
            "    vrrp_version 3\n"
            "}\n"
            f"{track_def}"
            "vrrp_instance VI_1 {\n"
            f"    state {'MASTER' if me.index == 1 else 'BACKUP'}\n"
            f"    interface {topo.interface}\n"
            f"    virtual_router_id {VRID}\n"
            f"    priority {160 - 10 * me.index}\n"
            f"    advert_int {o.advert_int:g}\n"
            f"    unicast_src_ip {me.address}\n"
            f"    unicast_peer {{\n        {peers}\n    }}\n"
            f"    virtual_ipaddress {{\n        {topo.vip}/32 dev {topo.interface}\n    }}\n"
            f"{track_use}"
            "}\n"
        )

    def start_keepalived(self, name: str) -> None:
        host = self.hosts[name]
        conf = self.dir / f"{name}.conf"
        conf.write_text(self.config_text(name))
        base = self.dir / name
        argv = [KEEPALIVED, "-n", "-l", "-D", "-G", "-P", "-f", str(conf), "-p", f"{base}.pid",
                "-r", f"{base}.vrrp.pid", "-c", f"{base}.checkers.pid"]
        with open(self.dir / f"{name}.keepalived.log", "ab") as log:
            host.keepalived = netns.popen_in(self.topo.host(name).namespace, argv, stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)

    def kill_keepalived(self, name: str, host: _Host | None = None) -> None:
        """SIGKILL keepalived's VRRP child and parent (a crash: nothing is cleaned up, the VIP stays)."""
        host = host or self.hosts[name]
        proc, host.keepalived = host.keepalived, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGSTOP)  # frozen: it cannot respawn the child we kill next
            child = _read_pid(self.dir / f"{name}.vrrp.pid")
            if child is not None and _parent_of(child) == proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            proc.kill()
        proc.wait(timeout=10)

    def start_checker(self, name: str) -> None:
        o = self.options
        host = self.hosts[name]
        host.track_file.write_text("0\n")
        if not o.track:
            return
        h = self.topo.host(name)
        env = dict(os.environ, PYTHONPATH=f"{LAB_DIR}:{REPO}")
        host.checker = netns.popen_in(
            h.namespace,
            [sys.executable, "-m", "clusterlab.keepalived", "check", "--address", h.address, "--file",
             str(host.track_file), "--interval", str(o.check_interval_s), "--timeout", str(o.check_timeout_s),
             "--fall", str(o.check_fall), "--rise", str(o.check_rise)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def popen_client(self, module: str, *args: str) -> subprocess.Popen[str]:
        """Run ``python -m module args`` in the client namespace (as ``LabStack.popen_client``)."""
        env = dict(os.environ, PYTHONPATH=f"{LAB_DIR}:{REPO}")
        argv = ["ip", "netns", "exec", self.topo.client_ns, sys.executable, "-m", module, *args]
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)

    # ------------------------------------------------------------------ observation

    def vip_holders(self) -> list[str]:
        """Hosts whose eth0 has the VIP configured right now."""
        holders = []
        for h in self.topo.hosts:
            out = netns.nsexec(h.namespace, ["ip", "-o", "-4", "addr", "show", "dev", self.topo.interface],
                               check=False).stdout
            if f" {self.topo.vip}/" in out:
                holders.append(h.name)
        return holders

    def answers(self, sources: Sequence[str]) -> dict[str, str | None]:
        """Which host answers each source through the VIP now (one banner attempt each)."""
        proc = self.popen_client("clusterlab.sshclient", "banner", "--vip", self.topo.vip,
                                 "--sources", ",".join(sources), "--timeout", "1.0")
        out, _ = proc.communicate(timeout=30)
        import json

        data: dict[str, str | None] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        return data

    def watch_sources(self) -> list[str]:
        step = max(1, len(self.topo.client_sources) // self.options.watch_sources)
        return list(self.topo.client_sources)[::step][: self.options.watch_sources]

    def wait_stable(self, timeout_s: float = 30.0, master: str = "h1") -> None:
        """Until only ``master`` holds the VIP and every sampled source is answered by it."""
        deadline = time.monotonic() + timeout_s
        sources = self.watch_sources()
        last: object = None
        while time.monotonic() < deadline:
            holders = self.vip_holders()
            if holders == [master]:
                last = self.answers(sources)
                if isinstance(last, dict) and all(v == master for v in last.values()):
                    return
            else:
                last = holders
            time.sleep(0.2)
        raise LabError(f"keepalived lab not stable on {master} within {timeout_s} s (last: {last}); "
                       f"{self.diagnosis()}")

    def diagnosis(self) -> str:
        """Last state changes of every keepalived and its track file (for errors: the dir is removed)."""
        parts = []
        for name, host in self.hosts.items():
            try:
                lines = (self.dir / f"{name}.keepalived.log").read_text(errors="replace").splitlines()
                track = host.track_file.read_text().strip()
            except OSError as exc:
                parts.append(f"{name}: {exc}")
                continue
            states = [ln.split(": ", 1)[-1] for ln in lines if "STATE" in ln or "tracked file" in ln][-4:]
            alive = "dead" if host.keepalived is None or host.keepalived.poll() is not None else "running"
            parts.append(f"{name} (keepalived {alive}, track {track}): {' / '.join(states)}")
        return "; ".join(parts)

    # ------------------------------------------------------------------ faults

    def inject(self, fault: str, name: str) -> None:
        host = self.hosts[name]
        if fault == "crash":
            netns.link_down(self.topo, name, "all")
            self.kill_keepalived(name)
            host.sshd.kill()
        elif fault == "hung":
            host.sshd.pause()
        elif fault == "kill":
            self.kill_keepalived(name)
        else:
            raise LabError(f"unknown fault {fault!r}: use one of {', '.join(FAULTS)}")

    def restore(self, fault: str, name: str) -> None:
        host = self.hosts[name]
        if fault == "crash":
            netns.link_up(self.topo, name, "all")
            host.sshd.start(timeout_s=20)
        elif fault == "hung":
            host.sshd.resume()
        if fault in ("crash", "kill"):
            # the SIGKILLed keepalived left its VIP behind: clear it before a fresh start
            netns.nsexec(self.topo.host(name).namespace,
                         ["ip", "addr", "del", f"{self.topo.vip}/32", "dev", self.topo.interface], check=False)
            self.start_keepalived(name)

    def trial(self, fault: str, window_s: float | None = None) -> Trial:
        """Inject ``fault`` on the master (h1), watch the clients and the VIP, restore, re-stabilise."""
        master = "h1"
        advert = self.options.advert_int
        window = window_s if window_s is not None else max(4.0, 4 * advert + 3.0)
        sources = self.watch_sources()
        most = 0
        with BannerWatch(self, sources, interval_s=self.options.watch_interval_s,
                         timeout_s=self.options.watch_timeout_s, duration_s=window + 30,
                         max_sources=len(sources)) as watch:
            time.sleep(0.6)  # a baseline: every source answered by the master before the fault
            fault_at = time.time()
            self.inject(fault, master)
            try:
                end = time.monotonic() + window
                while time.monotonic() < end:
                    # a crashed host keeps its address but is gone: count the live holders
                    most = max(most, len([h for h in self.vip_holders() if fault != "crash" or h != master]))
                    time.sleep(0.05)
                transitions = watch.stop()
            finally:
                holders_now = self.vip_holders()
                self.restore(fault, master)
        new = [h for h in holders_now if h != master]
        per_source: tuple[float | None, ...] = ()
        takeover: float | None = None
        if fault != "kill":
            rec = recovery(transitions, fault_at, bad_hosts=[master])
            per_source = tuple(r.recovered_s for r in rec)
            if per_source and all(v is not None for v in per_source):
                takeover = max(v for v in per_source if v is not None)
        self.wait_stable(max(30.0, 10 * advert + 15.0), master)
        return Trial(fault, advert, takeover, per_source, most, master, new[0] if new else None, os.getloadavg()[0],
                     transitions, fault_at)


def run_trials(lab: KeepalivedLab, fault: str, n: int) -> list[Trial]:
    return [lab.trial(fault) for _ in range(n)]


def run_baseline(trials: int, faults: Sequence[str] = FAULTS, advert_ints: Sequence[float] = (1.0, 0.1),
                 hosts: int = 4, **options: object) -> dict[tuple[str, float], list[Trial]]:
    """N trials per fault per advert_int, each advert_int in a fresh lab; {(fault, advert): trials}.

    For deploy/lab/bench_failover.py: ``[t.takeover_s for t in result[("crash", 0.1)]]`` are the
    per-trial takeover times; ``sum(t.vip_holders > 1 for t in result[("kill", 0.1)])`` the
    duplicate-holder count.
    """
    out: dict[tuple[str, float], list[Trial]] = {}
    for advert in advert_ints:
        opts = KeepalivedOptions(hosts=hosts, advert_int=advert, **options)  # type: ignore[arg-type]
        with KeepalivedLab(opts) as lab:
            for fault in faults:
                out[(fault, advert)] = run_trials(lab, fault, trials)
    return out


# ---------------------------------------------------------------------- helpers


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
    if proc is not None:
        proc.wait(timeout=10)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _parent_of(pid: int) -> int | None:
    """PPid from /proc, so we never signal a recycled PID that is not keepalived's child."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


# ---------------------------------------------------------------------- the banner checker


def _banner_ok(address: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout_s) as sock:
            deadline = time.monotonic() + timeout_s
            buf = b""
            while b"SSH-" not in buf and time.monotonic() < deadline:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(256)
                if not chunk:
                    return False
                buf += chunk
            return b"SSH-" in buf
    except OSError:
        return False


def _checks(address: str, port: int, interval_s: float, timeout_s: float, duration_s: float) -> Iterator[bool]:
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        started = time.monotonic()
        yield _banner_ok(address, port, timeout_s)
        time.sleep(max(0.0, interval_s - (time.monotonic() - started)))


def check_main(argv: Sequence[str]) -> int:
    """Write 0 (ok) / 1 (fault) to the track file, with fall/rise counts; bounded by --duration."""
    ap = argparse.ArgumentParser(prog="python -m clusterlab.keepalived check")
    ap.add_argument("--address", required=True)
    ap.add_argument("--port", type=int, default=22)
    ap.add_argument("--file", required=True)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=0.2)
    ap.add_argument("--fall", type=int, default=2)
    ap.add_argument("--rise", type=int, default=2)
    ap.add_argument("--duration", type=float, default=4 * 3600.0)
    a = ap.parse_args(argv)
    state, fails, oks = 0, 0, 0
    for ok in _checks(a.address, a.port, a.interval, a.timeout, a.duration):
        fails, oks = (0, oks + 1) if ok else (fails + 1, 0)
        new = 1 if fails >= a.fall else 0 if oks >= a.rise else state
        if new != state:
            state = new
            with open(a.file, "w") as f:  # in place: keepalived sees IN_CLOSE_WRITE at once
                f.write(f"{state}\n")
    return 0


def bench_main(argv: Sequence[str]) -> int:
    """Print the baseline: per fault and advert_int, takeover p50/p99/max and VIP-on-two-hosts count."""
    from clusterlab.measure import summary

    ap = argparse.ArgumentParser(prog="python -m clusterlab.keepalived bench")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--advert", type=float, action="append", help="advert_int (repeatable); default 1 and 0.1")
    ap.add_argument("--faults", default=",".join(FAULTS))
    a = ap.parse_args(argv)
    result = run_baseline(a.trials, a.faults.split(","), a.advert or (1.0, 0.1))
    for (fault, advert), trials in result.items():
        times = [t.takeover_s for t in trials if t.takeover_s is not None]
        never = sum(1 for t in trials if t.takeover_s is None)
        dup = sum(1 for t in trials if t.vip_holders > 1)
        s = summary(times)
        load = f"{min(t.load1 for t in trials):.1f}-{max(t.load1 for t in trials):.1f}"
        took = (f"takeover p50 {s['p50']:.3f} s, p99 {s['p99']:.3f} s, max {s['max']:.3f} s, never {never}"
                if fault != "kill" else "takeover n/a (the old master keeps answering)")
        print(f"keepalived advert_int {advert:g} {fault}: {len(trials)} trials, {took}; "
              f"VIP on 2+ hosts in {dup}/{len(trials)} [1-min load {load}]", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "check":
        sys.exit(check_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "bench":
        sys.exit(bench_main(sys.argv[2:]))
    sys.exit("usage: python -m clusterlab.keepalived check --address A --file F [...] | bench [--trials N]")
