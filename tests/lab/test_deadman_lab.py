"""The dead-man switch on the real kernel (issue 10): a dead hook's kernel stops answering by itself.

Whole lab (real ZooKeeper, sshd, hooks, controllers) with the nftables and the xt_cluster backend:

* While the hook runs, the sources of one host's buckets keep getting SYN-ACKs (and banners) from
  it for several dead-man periods E: the refresh works.
* After ``SIGKILL`` of that hook, no SYN-ACK comes from it later than E (plus scheduling slack)
  after the kill: the kernel stopped on its own. The controller is paused (``clusterip-ctl pause``)
  for this measurement: since the hook's status reports its dead-man switch, the controller would
  otherwise move the buckets to survivors once the session is gone (about 0.5 s after E), and a
  survivor's SYN-ACK could not be told from the victim's. A restarted hook brings the buckets back
  only after it applied the map; tests/lab/test_failover_e2e.py checks the move itself.
* The double fault the chaos run found (hook SIGKILL, then the host's sshd SIGSTOPped): the planner
  grants the host's buckets to survivors once the hook's session is gone; with the kernels sampled
  at >= 10 Hz no bucket is ever held by two live kernels, through the takeover and the restart.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import pytest
from clusterlab.measure import BannerWatch, wait_for
from clusterlab.ownership import KernelOwnershipChecker
from clusterlab.stack import LabStack, StackOptions

from controller.core.deadman import deadman_timing, whole_seconds_backend

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

#: Scheduling slack on top of E: a SYN that reached the kernel just before the expiry, the client's
#: attempt timestamp taken before its connect, and a loaded 2-core machine.
SLACK_S = 0.35


@contextlib.contextmanager
def _lab(backend: str, hosts: int, probe: dict[str, object] | None = None) -> Iterator[LabStack]:
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root (CAP_NET_ADMIN)")
    lab = LabStack(StackOptions(hosts=hosts, backend=backend, client_sources=48, hold_down_s=2.0,
                                probe=dict(probe or {})))
    lab.up(timeout_s=90)
    try:
        yield lab
    finally:
        lab.down()


def _paused(lab: LabStack) -> bool:
    from controller.core.schema import decode_intents
    from controller.core.zk_layout import intents_path

    data, _ = lab._reader().get(intents_path("lab"))
    return decode_intents(data).paused


def _sources_of(lab: LabStack, host: str) -> list[str]:
    owners = lab.owners()
    return [s for s in lab.topo.client_sources if owners.get(lab.bucket_of(s)) == host]


@pytest.mark.parametrize("backend", ["nftables", "xt_cluster"])
def test_kernel_stops_answering_E_after_the_hook_dies(backend: str) -> None:
    expiry = deadman_timing(1.5, whole_seconds_backend(backend)).expiry_s
    # Probes that never give up: on this loaded machine a slow sshd must not move the victim's
    # buckets, so every SYN-ACK for its sources can only come from its own kernel.
    with _lab(backend, hosts=3, probe={"fall": 100000, "definite_fall": 100000}) as lab:
        assert lab.session_timeout_s == 1.5
        victim = "h2"
        sources = _sources_of(lab, victim)
        assert sources, "no client source hashes to the victim's buckets"
        owners_before = lab.owners()
        lab.ctl("pause", "--config", str(lab.config_path), "--yes")
        wait_for(lambda: _paused(lab), 10, what="the pause intent")
        watch = BannerWatch(lab, sources, interval_s=0.05, timeout_s=0.4, duration_s=60, max_sources=6, raw=True)
        with watch:
            time.sleep(4 * expiry)  # several dead-man periods with the hook alive
            killed_at = time.time()
            lab.kill_hook(victim)
            time.sleep(expiry + 2.5)
            watch.stop()
        load = os.getloadavg()[0]
        assert lab.owners() == owners_before  # nothing moved: the controller is paused
        attempts = [(t - killed_at, outcome) for results in watch.results.values() for t, outcome in results]
        # a SYN-ACK (or RST) came back unless the connect itself timed out
        answered = [(t, o) for t, o in attempts if o != "!connect timeout"]
        before = [(t, o) for t, o in attempts if watch.started - killed_at + 0.5 < t < 0]
        last = max(t for t, _ in answered)
        late = [(round(t, 3), o) for t, o in answered if t > expiry + SLACK_S]
        dropped_before = [(round(t, 3), o) for t, o in before if o == "!connect timeout"]
        print(f"\n{backend}: E {expiry:g} s; {len(before)} attempts while the hook ran, {len(dropped_before)} "
              f"without SYN-ACK; last SYN-ACK from an attempt {last:.3f} s after SIGKILL; "
              f"{len([a for a in attempts if a[0] > expiry + SLACK_S])} attempts later, {len(late)} answered; "
              f"load {load:.1f}")
        assert before and not dropped_before, dropped_before  # the refresh kept the kernel accepting
        assert last <= expiry + SLACK_S and not late, late
        # the restarted hook adopts, applies the map, publishes and only then accepts again
        lab.start_hook(victim)
        wait_for(lambda: victim in lab.read_state()["members"], 30, what=f"{victim}'s hook registered again")
        lab.ctl("resume", "--config", str(lab.config_path), "--yes")
        lab.wait_converged(60)
        assert lab.owners() == owners_before
        wait_for(lambda: all(h == victim for h in lab.banners(sources[:6]).values()), 30,
                 what=f"{victim} answering again after its hook restarted")


def test_double_fault_hook_killed_then_sshd_hung_never_two_kernel_owners() -> None:
    with _lab("nftables", hosts=4) as lab:
        victim = "h3"
        mine = set(lab.home_buckets(victim))
        namespaces = {h: lab.topo.host(h).namespace for h in lab.host_names}
        checker = KernelOwnershipChecker(namespaces, "cif_lab", lab.buckets, interval_s=0.05)
        checker.start()
        try:
            time.sleep(1.0)
            fault_at = time.monotonic()
            lab.kill_hook(victim)
            time.sleep(0.2)
            lab.hang_sshd(victim)  # a SIGSTOPped sshd still completes TCP handshakes
            taken = wait_for(lambda: all(lab.owners().get(b) not in (None, victim) for b in mine), 30,
                             what=f"{victim}'s buckets granted to survivors")
            took_s = time.monotonic() - fault_at
            time.sleep(2.0)  # survivors serve while the victim's rules are still in its kernel
            lab.resume_sshd(victim)
            lab.start_hook(victim)  # it must revoke what was granted elsewhere before accepting again
            lab.wait_converged(60)
            wait_for(lambda: set(lab.read_state()["members"]) == set(lab.host_names), 30, what="all hooks back")
            time.sleep(2.0)
        finally:
            report = checker.stop()
        load = os.getloadavg()[0]
        print(f"\ndouble fault: {victim}'s buckets {sorted(mine)} granted elsewhere {took_s:.2f} s after the "
              f"hook's SIGKILL ({taken}); {report.rounds} rounds at {report.rate_hz:.1f}/s, double owners "
              f"{report.double_owner_samples}, single-round overlaps {report.single_round_overlaps}, longest "
              f"unowned {report.longest_unowned_s:.2f} s, errors {report.errors}; load {load:.1f}")
        assert report.rate_hz >= 10.0, report
        assert report.errors <= max(1, report.rounds // 100), report
        assert report.double_owner_samples == 0, report.examples
