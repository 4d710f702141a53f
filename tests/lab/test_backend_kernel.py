"""xt_cluster and nftables backends on this machine's real kernel, in a namespace cluster.

Four host namespaces share the VIP; a client namespace has 256 source addresses and NO static
neighbour entry (ARP must resolve the VIP to the cluster MAC through the backends' ARP rewrite).
Each host runs its backend in a driver process inside its namespace (tests/lab/backend_driver.py).
Shown per backend: every source is answered exactly once over UDP (all replies are collected, so
duplicates show) and over TCP, by the host predicted from controller.core.hashing.bucket_for;
a revoke + grant moves exactly that bucket's sources; long-lived TCP streams of unmoved buckets
survive every change; a driver restart (install() again) changes nothing in the kernel; remove()
cleans up. A second test pins the non-service traffic policy (protocol udp, one port).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from typing import Any

import pytest
from clusterlab.netns import LabTopology, nsexec
from clusterlab.traffic import Responders, TcpStreams, tcp_probe, udp_probe

from tests.lab.backend_checks import buckets_of_sources, compare_tcp, compare_udp, expected_hosts
from tests.lab.backend_driver import Driver, make_spec

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not shutil.which("iptables-legacy-save"), reason="apt-get install iptables"),
]

PORT = 7000
BACKENDS = ("xt_cluster", "nftables")


def kernel_state(topo: LabTopology, backend: str) -> dict[str, str]:
    """Everything our backends write, per host, as text (iptables counters and dates dropped)."""
    state = {}
    for host in topo.hosts:
        parts = [nsexec(host.namespace, ["nft", "-j", "list", "ruleset"]).stdout]
        save = nsexec(host.namespace, ["iptables-legacy-save"]).stdout
        # drop the dated comment lines and the chain policy counters ("[12:3456]"), which traffic moves
        parts.append(re.sub(r"\[\d+:\d+\]", "[]", "\n".join(ln for ln in save.splitlines() if not ln.startswith("#"))))
        parts.append(nsexec(host.namespace, ["cat", "/proc/net/dev_mcast"]).stdout)
        state[host.name] = "\n".join(parts)
    return state


def probe(topo: LabTopology, spec: dict[str, Any], owners: dict[int, str | None], what: str) -> dict[str, list[str]]:
    """UDP-probe every source and assert each got exactly the predicted host; print the match count."""
    expected = expected_hosts(buckets_of_sources(spec, topo.client_sources), owners)
    answers = udp_probe(topo, PORT, window_s=0.6)
    matched, problems = compare_udp(answers, expected)
    print(f"{spec['backend']} {what}: udp matched {matched}/{len(expected)}")
    assert not problems, f"{what}: {len(problems)} sources wrong, e.g. {problems[:5]}"
    return answers


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_balances_moves_and_restarts(
    backend: str, lab_factory: Callable[..., LabTopology], drivers: dict[str, Driver]
) -> None:
    topo = lab_factory(hosts=4, client_sources=256, client_static_neigh=False)
    spec = make_spec(backend, name=f"lab{backend[:2]}", vip=topo.vip, cluster_mac=topo.cluster_mac)
    owners: dict[int, str | None] = {k: f"h{k}" for k in range(1, 5)}
    bucket_of = buckets_of_sources(spec, topo.client_sources)
    assert set(bucket_of.values()) == {1, 2, 3, 4}

    for host in topo.hosts:
        drivers[host.name] = Driver(host.namespace, spec, host.name).start()
        assert drivers[host.name].call("prereq")["problems"] == []
        reply = drivers[host.name].call("install", initial=[host.index])
        assert reply["held"] == [host.index]
        print(f"{backend} install on {host.name}: {reply['ms']:.2f} ms")

    with Responders(topo, PORT):
        probe(topo, spec, owners, "initial")
        expected = expected_hosts(bucket_of, owners)
        tcp = tcp_probe(topo, PORT, timeout_s=2.0)
        matched, problems = compare_tcp(tcp, expected)
        print(f"{backend} initial: tcp matched {matched}/{len(expected)}")
        assert not problems, problems[:5]
        neigh = nsexec(topo.client_ns, ["ip", "neigh", "show", topo.vip]).stdout
        assert topo.cluster_mac in neigh.lower(), f"client resolved the VIP to {neigh!r}, not the cluster MAC"

        # long-lived streams: 16 sources per bucket
        stream_sources = [s for b in (1, 2, 3, 4) for s in [x for x in topo.client_sources if bucket_of[x] == b][:16]]
        streams = TcpStreams(topo, PORT, stream_sources).start()
        try:
            assert all(streams.hosts[s] == owners[bucket_of[s]] for s in stream_sources), streams.hosts
            moved: set[int] = set()
            # takeover of bucket 2 by h1 (revoke first, then grant: the gap answers nothing)
            d = drivers
            assert d["h2"].call("revoke", bucket=2)["held"] == []
            owners[2] = None
            gap = probe(topo, spec, owners, "bucket 2 revoked")
            assert all(gap[s] == [] for s in topo.client_sources if bucket_of[s] == 2)
            reply = d["h1"].call("grant", bucket=2)
            assert reply["held"] == [1, 2]
            owners[2] = "h1"
            moved.add(2)
            before = probe(topo, spec, owners, "bucket 2 taken over by h1")
            # apply(): h3 takes bucket 4 from h4 in one atomic call on each side
            assert d["h4"].call("apply", wanted=[])["held"] == []
            assert d["h3"].call("apply", wanted=[3, 4])["held"] == [3, 4]
            owners[4] = "h3"
            moved.add(4)
            after = probe(topo, spec, owners, "bucket 4 applied to h3")
            changed = {s for s in topo.client_sources if before[s] != after[s]}
            assert changed == {s for s in topo.client_sources if bucket_of[s] == 4}
            # idempotence: granting an owned bucket / revoking an unowned one changes nothing
            assert d["h1"].call("grant", bucket=2)["held"] == [1, 2]
            assert d["h4"].call("revoke", bucket=4)["held"] == []
            # describe_changes is what --dry-run prints
            assert d["h3"].call("describe", wanted=[3])["lines"] == ["revoke bucket 4"]
        finally:
            reports = streams.stop()
        unmoved = [s for s in stream_sources if bucket_of[s] not in moved]
        broken = [s for s in unmoved if reports[s].broken]
        print(f"{backend}: {len(unmoved)} streams of unmoved buckets, {len(broken)} broken, "
              f"{sum(reports[s].received for s in unmoved)} echoes")
        assert not broken, {s: reports[s].error for s in broken}
        assert all(reports[s].received > 0 for s in unmoved)

        # hook restart: a new process installs again (with a different initial) and changes nothing
        state_before = kernel_state(topo, backend)
        for host in topo.hosts:
            drivers[host.name].stop()
            drivers[host.name] = Driver(host.namespace, spec, host.name).start()
            drivers[host.name].call("install", initial=[1, 2, 3, 4])
        assert kernel_state(topo, backend) == state_before
        probe(topo, spec, owners, "after driver restarts")

    for host in topo.hosts:
        drivers[host.name].call("remove")
        drivers[host.name].call("remove")  # idempotent
        assert not drivers[host.name].call("held", check=False)["ok"]
        ruleset = json.loads(nsexec(host.namespace, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
        assert [i for i in ruleset if "metainfo" not in i] == []
        assert "CIF-" not in nsexec(host.namespace, ["iptables-legacy-save"]).stdout
        assert "01005e000164" not in nsexec(host.namespace, ["cat", "/proc/net/dev_mcast"]).stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_the_service_is_balanced(
    backend: str, lab_factory: Callable[..., LabTopology], drivers: dict[str, Driver]
) -> None:
    """protocol udp, port 7000: UDP 7000 balanced; TCP 7000 and UDP 7001 reach no host (dropped)."""
    topo = lab_factory(hosts=4, client_sources=200, client_static_neigh=False)
    spec = make_spec(backend, name="svc", vip=topo.vip, cluster_mac=topo.cluster_mac, protocol="udp", ports=(PORT,))
    for host in topo.hosts:
        drivers[host.name] = Driver(host.namespace, spec, host.name).start()
        drivers[host.name].call("install", initial=[host.index])
    with Responders(topo, PORT), Responders(topo, PORT + 1):
        probe(topo, spec, {k: f"h{k}" for k in range(1, 5)}, "service udp/7000")
        other = udp_probe(topo, PORT + 1, window_s=0.6)
        assert all(v == [] for v in other.values()), "non-service UDP reached a host"
        tcp = tcp_probe(topo, PORT, timeout_s=1.0)
        assert all(v is None for v in tcp.values()), "non-service TCP reached a host"
        print(f"{backend}: non-service udp/7001 and tcp/7000 answered by no host for 200/200 sources")


def test_nftables_ipv6_clients_resolve_the_vip_to_the_cluster_mac(
    lab_factory: Callable[..., LabTopology], drivers: dict[str, Driver]
) -> None:
    """IPv6 without a static neighbour entry: ND answers carry the cluster MAC (backends/_nd.py), so
    every source reaches every host and exactly the predicted one answers, over UDP and TCP."""
    topo = lab_factory(hosts=4, client_sources=64, client_static_neigh=False, ipv6=True)
    assert topo.vip6 is not None and len(topo.client_sources6) == 64
    spec = make_spec("nftables", name="lab6", vip=topo.vip6, cluster_mac=topo.cluster_mac)
    for host in topo.hosts:
        drivers[host.name] = Driver(host.namespace, spec, host.name).start()
        assert drivers[host.name].call("prereq")["problems"] == []
        drivers[host.name].call("install", initial=[host.index])
    owners: dict[int, str | None] = {k: f"h{k}" for k in range(1, 5)}
    sources = topo.client_sources6
    bucket_of = buckets_of_sources(spec, sources)
    assert set(bucket_of.values()) == {1, 2, 3, 4}
    expected = expected_hosts(bucket_of, owners)
    nstat_before = nsexec(topo.client_ns, ["nstat", "-az", "Icmp6InCsumErrors"]).stdout
    with Responders(topo, PORT):
        matched, problems = compare_udp(udp_probe(topo, PORT, sources, window_s=0.6), expected)
        print(f"nftables IPv6: udp matched {matched}/{len(expected)}")
        assert not problems, problems
        matched, problems = compare_tcp(tcp_probe(topo, PORT, sources, timeout_s=2.0), expected)
        print(f"nftables IPv6: tcp matched {matched}/{len(expected)}")
        assert not problems, problems
    neigh = nsexec(topo.client_ns, ["ip", "-6", "neigh", "show", topo.vip6]).stdout
    assert topo.cluster_mac in neigh.lower(), f"client resolved the IPv6 VIP to {neigh!r}, not the cluster MAC"
    csum_errors = nsexec(topo.client_ns, ["nstat", "-az", "Icmp6InCsumErrors"]).stdout
    assert _counter(csum_errors) == _counter(nstat_before), "the ND rewrite broke an ICMPv6 checksum"
    for host in topo.hosts:
        drivers[host.name].call("remove")
        assert "nd_out" not in nsexec(host.namespace, ["nft", "list", "ruleset"]).stdout


def _counter(nstat_output: str) -> int:
    """The value of the one counter an ``nstat -az NAME`` printed (0 if absent)."""
    for line in nstat_output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("Icmp6") and parts[1].isdigit():
            return int(parts[1])
    return 0
