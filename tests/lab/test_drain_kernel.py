"""Connection-aware drain on this machine's real kernel, backend only (issue 9, item 1 and 5).

Two host namespaces share the VIP; each runs the nftables or the xt_cluster backend in a driver
process (tests/lab/backend_driver.py). No ZooKeeper, no controller: the test plays the map's roles
itself so that what is proven is the kernel mechanism, for each backend that can drain.

* Drain: h1 moves bucket 1 from owned to draining while h2 takes it (owned + quiet). Long-lived TCP
  streams of bucket 1 stay on h1 and keep working; every new TCP connection of bucket 1 lands on h2;
  every source gets exactly one UDP answer (UDP flows are not drained); h1's conntrack count of
  bucket 1 equals the number of open streams and falls to 0 when they close.
* End of drain with sessions left: h1 drops the bucket, h2 stops being quiet: the remaining streams
  are cut (reset by h2 at once, not left hanging).
* Crash takeover: h1 loses bucket 1 without draining; h2 takes it (not quiet): a stream of h1 gets a
  TCP reset from h2 within a second instead of hanging.
* xt_cluster with nf_conntrack_tcp_loose=0: drains still keep their sessions, stale clients of a
  crash takeover are dropped instead of reset (the cost the hook's warning names).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
from clusterlab.netns import LabTopology, nsexec
from clusterlab.traffic import Responders, TcpStreams, tcp_probe, udp_probe

from controller.core.model import DRAIN_BACKENDS
from tests.lab.backend_checks import buckets_of_sources
from tests.lab.backend_driver import Driver, make_spec

pytestmark = [
    pytest.mark.lab,
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

PORT = 7000
BACKENDS = DRAIN_BACKENDS
#: nf_conntrack_tcp_loose each backend works with: nftables switches the pickup off (it sees INVALID
#: packets per bucket); xt_cluster cannot hash untracked packets and relies on the kernel default, so
#: a mid-stream packet opens an entry its quiet rule can drop (node_hook/backends/xt_cluster.py).
TCP_LOOSE = {"nftables": 0, "xt_cluster": 1}


def setup(lab_factory: Callable[..., LabTopology], drivers: dict[str, Driver],
          backend: str) -> tuple[LabTopology, dict[str, int]]:
    topo = lab_factory(hosts=2, client_sources=48, client_static_neigh=False)
    spec = make_spec(backend, name="labdr", vip=topo.vip, cluster_mac=topo.cluster_mac, buckets=2, hosts=2)
    for host in topo.hosts:
        drivers[host.name] = Driver(host.namespace, spec, host.name).start()
        assert drivers[host.name].call("install", initial=[host.index])["held"] == [host.index]
    return topo, buckets_of_sources(spec, topo.client_sources)


def sessions(driver: Driver, bucket: int, backend: str) -> int:
    reply = driver.call("sessions", buckets=[bucket])
    assert reply["tcp_loose"] == TCP_LOOSE[backend], f"nf_conntrack_tcp_loose as {backend} needs it"
    return int(reply["sessions"][str(bucket)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_drain_keeps_old_sessions_and_sends_new_ones_to_the_new_owner(
    lab_factory: Callable[..., LabTopology], drivers: dict[str, Driver], backend: str
) -> None:
    topo, bucket_of = setup(lab_factory, drivers, backend)
    b1 = [s for s in topo.client_sources if bucket_of[s] == 1]
    b2 = [s for s in topo.client_sources if bucket_of[s] == 2]
    assert len(b1) >= 10 and len(b2) >= 4
    h1, h2 = drivers["h1"], drivers["h2"]
    with Responders(topo, PORT):
        early = TcpStreams(topo, PORT, b1[:4]).start()   # closes during the drain
        late = TcpStreams(topo, PORT, b1[4:8]).start()   # closes at the end
        other = TcpStreams(topo, PORT, b2[:4]).start()   # a bucket that never moves
        try:
            assert set(early.hosts.values()) == {"h1"} and set(late.hosts.values()) == {"h1"}
            assert sessions(h1, 1, backend) == 8
            # revoke-to-drain on h1, then grant with quiet on h2 (the planner's two steps)
            started = time.perf_counter()
            assert h1.call("apply_drain", wanted=[], draining=[1])["draining"] == [1]
            assert h2.call("apply_drain", wanted=[1, 2], quiet=[1])["held"] == [1, 2]
            print(f"drain applied in {(time.perf_counter() - started) * 1000:.1f} ms")
            time.sleep(1.0)
            fresh = tcp_probe(topo, PORT, sources=b1[8:], timeout_s=2.0)
            assert set(fresh.values()) == {"h2"}, f"new connections of bucket 1 must go to h2: {fresh}"
            replies = udp_probe(topo, PORT, window_s=0.5)
            assert all(len(r) == 1 for r in replies.values()), f"a source got no or two UDP answers: {replies}"
            assert {replies[s][0] for s in b1} == {"h2"}, "UDP flows of a draining bucket go to the new owner"
            assert sessions(h1, 1, backend) == 8, "draining keeps counting the old sessions"
            report = early.stop()
            assert not any(r.broken for r in report.values()), f"a drained session broke: {report}"
            assert all(r.received > 50 for r in report.values()), report
            time.sleep(0.3)
            assert sessions(h1, 1, backend) == 4, "closed sessions no longer count"
            report = late.stop()
            assert not any(r.broken for r in report.values()), f"a drained session broke: {report}"
            time.sleep(0.3)
            assert sessions(h1, 1, backend) == 0, "the drain is over once the last session closed"
            print(f"drain: {len(report) + 4} sessions kept on h1 until they closed, 0 broken")
        finally:
            for group in (early, late):
                if group.proc is not None:
                    group.stop()
            kept = other.stop()
        assert not any(r.broken for r in kept.values()), f"an unmoved bucket's stream broke: {kept}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_ending_a_drain_cuts_the_rest_and_a_crash_takeover_resets_at_once(
    lab_factory: Callable[..., LabTopology], drivers: dict[str, Driver], backend: str
) -> None:
    topo, bucket_of = setup(lab_factory, drivers, backend)
    b1 = [s for s in topo.client_sources if bucket_of[s] == 1]
    h1, h2 = drivers["h1"], drivers["h2"]
    with Responders(topo, PORT):
        left = TcpStreams(topo, PORT, b1[:3], stall_s=3.0).start()
        h1.call("apply_drain", wanted=[], draining=[1])
        h2.call("apply_drain", wanted=[1, 2], quiet=[1])
        time.sleep(0.5)
        assert sessions(h1, 1, backend) == 3
        # maximum drain time reached: h1 drops the bucket, h2 no longer hushes it
        h1.call("apply_drain", wanted=[])
        h2.call("apply_drain", wanted=[1, 2])
        time.sleep(1.0)
        report = left.stop()
        assert all(r.broken for r in report.values()), f"sessions left at the end of a drain are cut: {report}"
        assert all("reset" in (r.error or "").lower() for r in report.values()), report
        print(f"cut at the end of the drain: {len(report)} sessions, each reset by h2")

        # crash takeover: bucket 1 back to h1 plainly, streams on h1, then h2 takes it without drain
        h2.call("apply_drain", wanted=[2])
        h1.call("apply_drain", wanted=[1])
        stale = TcpStreams(topo, PORT, b1[3:6], stall_s=3.0).start()
        assert set(stale.hosts.values()) == {"h1"}
        took = time.monotonic()
        h1.call("apply_drain", wanted=[])  # the "crashed" host answers nothing any more
        h2.call("apply_drain", wanted=[1, 2])
        time.sleep(1.0)
        report = stale.stop()
        assert all(r.broken and "reset" in (r.error or "").lower() for r in report.values()), report
        print(f"crash takeover: {len(report)} stale clients reset by h2 within "
              f"{time.monotonic() - took:.2f} s (sampled after 1 s)")


def test_xt_cluster_without_conntrack_pickup_keeps_drains_but_resets_no_stale_client(
    lab_factory: Callable[..., LabTopology], drivers: dict[str, Driver]
) -> None:
    """nf_conntrack_tcp_loose=0 under xt_cluster (an administrator's, or an nftables cluster's in the
    same namespace): a mid-stream packet the host does not track has no conntrack entry, which the
    cluster match cannot hash, so it falls through to the DROP. Drains keep every session; the stale
    clients of a crash takeover are dropped, not reset (what the hook's warning says)."""
    topo, bucket_of = setup(lab_factory, drivers, "xt_cluster")
    for host in topo.hosts:
        nsexec(host.namespace, ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"])
    b1 = [s for s in topo.client_sources if bucket_of[s] == 1]
    h1, h2 = drivers["h1"], drivers["h2"]
    with Responders(topo, PORT):
        kept = TcpStreams(topo, PORT, b1[:4]).start()
        try:
            assert set(kept.hosts.values()) == {"h1"}
            h1.call("apply_drain", wanted=[], draining=[1])
            h2.call("apply_drain", wanted=[1, 2], quiet=[1])
            time.sleep(1.0)
            fresh = tcp_probe(topo, PORT, sources=b1[8:], timeout_s=2.0)
            assert set(fresh.values()) == {"h2"}, f"new connections of bucket 1 must go to h2: {fresh}"
        finally:
            report = kept.stop()
        assert not any(r.broken for r in report.values()), f"a drained session broke: {report}"
        assert all(r.received > 50 for r in report.values()), report

        h2.call("apply_drain", wanted=[2])
        h1.call("apply_drain", wanted=[1])
        stale = TcpStreams(topo, PORT, b1[4:7], stall_s=1.0).start()
        assert set(stale.hosts.values()) == {"h1"}
        h1.call("apply_drain", wanted=[])
        h2.call("apply_drain", wanted=[1, 2])
        time.sleep(2.0)
        report = stale.stop()
        assert all(r.broken and "no echo" in (r.error or "") for r in report.values()), report
        print(f"loose=0: {len(kept.hosts)} drained sessions kept; {len(report)} stale clients dropped, not reset")
