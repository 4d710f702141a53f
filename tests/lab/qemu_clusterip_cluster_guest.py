"""Guest side of test_qemu_clusterip_cluster: the namespace cluster on Debian's 6.1 kernel with CLUSTERIP.

Runs as root inside the qemu guest (tests/lab/test_qemu_clusterip_cluster.py boots it). Builds the
namespace cluster (4 hosts, 200 sources, no static neighbour entry: CLUSTERIP's own ARP mangling
must make the client resolve the VIP to the cluster MAC), drives a ClusterIPBackend per host with
the seed's rule (tcp dport 22, hashmode sourceip, hash_init 0, total-nodes 4), and reports one JSON
object of observations; the host-side test holds the expectations. Duplicates over TCP are caught
through conntrack: a host's conntrack keeps only connections that host accepted, so every source
must appear in exactly one host's table.

    python qemu_clusterip_cluster_guest.py [--bench N]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
for path in (REPO, REPO / "deploy" / "lab"):
    sys.path.insert(0, str(path))

from clusterlab import netns  # noqa: E402
from clusterlab.traffic import Responders, tcp_probe  # noqa: E402

from tests.lab.backend_checks import buckets_of_sources, compare_tcp, expected_hosts  # noqa: E402
from tests.lab.backend_driver import Driver, make_spec  # noqa: E402

PORT = 22
MODULES = ("veth", "bridge", "ip_tables", "iptable_filter", "xt_tcpudp", "xt_comment", "xt_multiport",
           "ipt_CLUSTERIP", "nf_conntrack", "nf_conntrack_netlink", "iptable_raw", "xt_recent")


def legacy_iptables_on_path() -> None:
    """`iptables` -> iptables-legacy for this guest only (the host's Debian default is iptables-nft,
    which the backend's prerequisite check rightly refuses for CLUSTERIP)."""
    bindir = Path(os.environ.get("CIPQ_SCRATCH", "/tmp")) / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for tool in ("iptables", "iptables-save", "iptables-restore"):
        link = bindir / tool
        if not link.exists():
            link.symlink_to(f"/usr/sbin/{tool.replace('iptables', 'iptables-legacy')}")
    os.environ["PATH"] = f"{bindir}:{os.environ['PATH']}"


def stop_slowly(responders: Responders, grace_s: float = 120.0) -> None:
    """Stop the responders by PID with a grace period fit for TCG (Responders.stop waits only 3 s)."""
    for proc in responders.procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in responders.procs.values():
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace_s)
    responders.stop()


def accepted_by(topo: netns.LabTopology) -> dict[str, list[str]]:
    """source -> hosts whose conntrack holds a connection from it to the VIP port."""
    seen: dict[str, list[str]] = {}
    for host in topo.hosts:
        out = netns.nsexec(host.namespace, ["conntrack", "-L", "-p", "tcp", "--dport", str(PORT)], check=False)
        for src in re.findall(r"src=(\S+) dst=" + re.escape(topo.vip), out.stdout):
            seen.setdefault(src, []).append(host.name)
    return seen


def flush_conntrack(topo: netns.LabTopology) -> None:
    for host in topo.hosts:
        netns.nsexec(host.namespace, ["conntrack", "-F"], check=False)


def check(topo: netns.LabTopology, spec: dict[str, Any], owners: dict[int, str | None]) -> dict[str, Any]:
    """TCP-probe every source; compare with the prediction and with who accepted it (conntrack)."""
    flush_conntrack(topo)
    bucket_of = buckets_of_sources(spec, topo.client_sources, PORT)
    expected = expected_hosts(bucket_of, owners)
    # generous: under TCG on a loaded host a responder greeting ~100 connections at once can take seconds
    answers = tcp_probe(topo, PORT, timeout_s=20.0)
    matched, problems = compare_tcp(answers, expected)
    accepted = accepted_by(topo)
    once = sum(1 for s in topo.client_sources if accepted.get(s, []) == ([expected[s]] if expected[s] else []))
    return {"matched": matched, "total": len(expected), "problems": problems[:5], "accepted_once": once,
            "answers": answers}


_T0 = time.monotonic()


def log(what: str) -> None:
    """Progress with guest-side timestamps on stderr (TCG is slow; the host test shows this on failure)."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {what}", file=sys.stderr, flush=True)


def deadman_phase(topo: netns.LabTopology, spec: dict[str, Any], owners: dict[int, str | None],
                  drivers: dict[str, Driver], obs: dict[str, Any]) -> None:
    """h1 restarted with the dead-man switch (xt_recent, 1 s): it adopts {1, 2} but its kernel accepts
    nothing until armed; armed and refreshed it serves; once refreshes stop it is silent again."""
    silent = {**owners, **{b: None for b, h in owners.items() if h == "h1"}}
    drivers["h1"].stop()
    drivers["h1"] = Driver(topo.hosts[0].namespace, {**spec, "deadman_s": 1}, "h1", call_timeout_s=600).start(600)
    obs["deadman_prereq"] = drivers["h1"].call("prereq")["problems"]
    obs["deadman_install"] = drivers["h1"].call("install", initial=[3])
    obs["deadman_rules"] = netns.nsexec(topo.hosts[0].namespace, ["iptables-legacy", "-t", "raw", "-S"]).stdout
    obs["deadman_unarmed"] = check(topo, spec, silent)
    drivers["h1"].call("arm")
    obs["deadman_armed"] = check(topo, spec, owners)
    obs["deadman_halt"] = drivers["h1"].call("halt")
    time.sleep(1.5)
    obs["deadman_halted"] = check(topo, spec, silent)
    log("dead-man switch checked")


def run(bench: int) -> dict[str, Any]:
    obs: dict[str, Any] = {}
    for module in MODULES:
        subprocess.run(["modprobe", module], check=False)
    legacy_iptables_on_path()
    prefix = netns.new_prefix("cip")
    log("modules loaded")
    topo = netns.build(prefix, hosts=4, client_sources=200, client_static_neigh=False,
                       cluster_mac="01:00:5e:41:9e:a0")
    log("lab built")
    drivers: dict[str, Driver] = {}
    try:
        spec = make_spec("clusterip", name="unix0", vip=topo.vip, cluster_mac="01:00:5E:41:9E:A0",
                         protocol="tcp", ports=(PORT,))
        start = time.monotonic()
        for host in topo.hosts:
            drivers[host.name] = Driver(host.namespace, spec, host.name, call_timeout_s=600).start(timeout_s=600)
        obs["driver_start_s"] = round(time.monotonic() - start, 1)
        obs["prereq"] = {h: d.call("prereq")["problems"] for h, d in drivers.items()}
        # h1..h3 own their home bucket from the start; h4 starts owning nothing (the hold path), then grants 4
        obs["install"] = {h: d.call("install", initial=[] if h == "h4" else [int(h[1:])]) for h, d in drivers.items()}
        obs["h4_grant"] = drivers["h4"].call("grant", bucket=4)
        obs["rules_h4"] = netns.nsexec(topo.hosts[3].namespace, ["iptables-legacy", "-S"]).stdout
        owners: dict[int, str | None] = {1: "h1", 2: "h2", 3: "h3", 4: "h4"}
        log("drivers installed")
        responders = Responders(topo, PORT).start(timeout_s=180)  # TCG: python starts take seconds
        try:
            log("responders ready")
            obs["initial"] = check(topo, spec, owners)
            obs["neigh"] = netns.nsexec(topo.client_ns, ["ip", "neigh", "show", topo.vip]).stdout
            # takeover of bucket 2 through the /proc file: revoke on h2, grant on h1
            obs["revoke_h2"] = drivers["h2"].call("revoke", bucket=2)
            obs["revoke_h2_again"] = drivers["h2"].call("revoke", bucket=2)
            obs["grant_h1"] = drivers["h1"].call("grant", bucket=2)
            obs["grant_h1_again"] = drivers["h1"].call("grant", bucket=2)
            owners[2] = "h1"
            obs["takeover"] = check(topo, spec, owners)
            log("takeover checked")
            # restart: a new driver on h1 installs again and must adopt {1, 2} (not reset to 1)
            save = netns.nsexec(topo.hosts[0].namespace, ["iptables-legacy-save"]).stdout
            drivers["h1"].stop()
            drivers["h1"] = Driver(topo.hosts[0].namespace, spec, "h1", call_timeout_s=600).start(timeout_s=600)
            obs["restart_install"] = drivers["h1"].call("install", initial=[3])
            after = netns.nsexec(topo.hosts[0].namespace, ["iptables-legacy-save"]).stdout
            strip = re.compile(r"^#.*$|\[\d+:\d+\]", re.M)
            obs["restart_rules_unchanged"] = strip.sub("", save) == strip.sub("", after)
            obs["after_restart"] = check(topo, spec, owners)
            log("restart checked")
            deadman_phase(topo, spec, owners, drivers, obs)
        finally:
            stop_slowly(responders)
        if bench:
            obs["bench"] = drivers["h3"].call("bench", bucket=1, n=bench, set_a=[3], set_b=[1, 3], timeout_s=600)
        obs["remove"] = {h: d.call("remove", check=False) for h, d in drivers.items()}
        obs["proc_after_remove"] = [
            netns.nsexec(h.namespace, ["ls", "/proc/net/ipt_CLUSTERIP"], check=False).stdout.strip()
            for h in topo.hosts
        ]
    finally:
        for driver in drivers.values():
            driver.stop()
        netns.destroy(prefix)
    return obs


if __name__ == "__main__":
    n = int(sys.argv[sys.argv.index("--bench") + 1]) if "--bench" in sys.argv else 0
    print(json.dumps(run(n)), flush=True)
