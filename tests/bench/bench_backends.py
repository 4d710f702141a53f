"""Benchmark of the kernel backends: in-process apply time and rule installation time.

  .venv/bin/python tests/bench/bench_backends.py [--ops 200] [--backends xt_cluster,nftables,clusterip]

xt_cluster and nftables run on this machine's kernel, each in a driver process inside a fresh
network namespace of a one-host lab (never the root namespace's firewall). clusterip runs inside
Debian's 6.1 kernel under qemu (TCG software emulation: every syscall is emulated, so its numbers
are an upper bound far above native). Per backend: install() time, and p50/p99/max over --ops
grant/revoke calls (alternating grant and revoke of one bucket; each is one kernel change plus the
read-back the call does) and over --ops apply() calls alternating between two bucket sets.
Target: p50 and p99 below 1 ms for grant/revoke. Every result line ends with the load average:
timings on a shared machine mean little without it. Run as root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "deploy" / "lab")]

from clusterlab import netns  # noqa: E402

from tests.lab.backend_driver import Driver, make_spec  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def line(backend: str, what: str, values: list[float]) -> str:
    return (f"{backend:10s} {what:13s} n={len(values):4d} p50 {pct(values, 0.5):7.3f} ms  "
            f"p99 {pct(values, 0.99):7.3f} ms  max {max(values):7.3f} ms  mean {statistics.mean(values):7.3f} ms  "
            f"[{load()}]")


def report(backend: str, install_ms: list[float], bench: dict[str, Any]) -> list[str]:
    return [
        f"{backend:10s} install       n={len(install_ms):4d} first {install_ms[0]:7.3f} ms  "
        f"re-install (adopt) {statistics.median(install_ms[1:]) if len(install_ms) > 1 else 0:7.3f} ms  [{load()}]",
        line(backend, "grant/revoke", bench["grant_revoke_ms"]),
        line(backend, "apply", bench["apply_ms"]),
    ]


def bench_namespace(backend: str, ops: int) -> list[str]:
    prefix = netns.new_prefix("cifb")
    topo = netns.build(prefix, hosts=1, client_sources=1)
    driver = None
    try:
        host = topo.hosts[0]
        spec = make_spec(backend, name="bench", vip=topo.vip, cluster_mac=topo.cluster_mac, protocol="tcp",
                         ports=(22,))
        driver = Driver(host.namespace, spec, host.name).start()
        assert driver.call("prereq")["problems"] == []  # as the hook does; also pays the library imports
        installs = [driver.call("install", initial=[1])["ms"]]
        installs += [driver.call("install", initial=[1])["ms"] for _ in range(5)]
        bench = driver.call("bench", bucket=2, n=ops, set_a=[1], set_b=[1, 2, 3], timeout_s=600)
        driver.call("remove")
        return report(backend, installs, bench)
    finally:
        if driver is not None:
            driver.stop()
        netns.destroy(prefix)


def bench_qemu(ops: int) -> list[str]:
    from clusterlab.qemu import GuestUnavailable, check_qemu, prepare, run_in_guest

    try:
        check_qemu()
    except GuestUnavailable as exc:
        return [f"clusterip  skipped: qemu cannot start: {exc}"]
    guest = ROOT / "tests" / "lab" / "qemu_clusterip_cluster_guest.py"
    result = run_in_guest(f'set -eu\nexec "$CIPQ_PYTHON" {guest} --bench {ops}\n', timeout_s=1200, image=prepare(),
                          cpus=2)
    if result.returncode != 0:
        return [f"clusterip  FAILED in the guest ({result.returncode}): {result.stderr[-600:]}"]
    obs = json.loads(result.stdout.strip().splitlines()[-1])
    installs = [obs["install"][h]["ms"] for h in ("h1", "h2", "h3", "h4")] + [obs["restart_install"]["ms"]]
    lines = report("clusterip", installs, obs["bench"])
    lines[0] = (f"clusterip  install (TCG)   first-install median {statistics.median(installs[:4]):9.3f} ms  "
                f"re-install (adopt) {installs[4]:9.3f} ms  [{load()}]")
    return [*lines, f"clusterip  guest boot {result.boot_seconds:.1f} s, total {result.total_seconds:.1f} s (TCG)"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--backends", default="xt_cluster,nftables,clusterip")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_backends: run as root (network namespaces, qemu)", file=sys.stderr)
        return 1
    for backend in args.backends.split(","):
        lines = bench_qemu(args.ops) if backend == "clusterip" else bench_namespace(backend, args.ops)
        for text in lines:
            print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
