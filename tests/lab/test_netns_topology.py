"""The namespace cluster itself works on the real kernel: with xt_cluster rules every client source is
answered by exactly one host (the one the kernel hash predicts), over UDP and TCP; the management
network is separate (cutting it leaves clients unaffected); data cuts are silent and reversible;
long-lived streams report breaks; IPv6 (nft jhash) works too; destroy and remove_stale leave nothing behind.

The xt_cluster rules here are the hand-written ones from notes/kernel-lab.md, only to prove the
topology; the product's backends are tested elsewhere with these fixtures.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable

import pytest
from clusterlab import netns
from clusterlab.errors import LabError
from clusterlab.traffic import Responders, TcpStreams, tcp_probe, udp_probe

from controller.core.hashing import nftables_bucket, xt_cluster_bucket

pytestmark = pytest.mark.lab

PORT = 7000
SEED = 0xDEADBEEF


def install_xt_cluster(topo: netns.LabTopology, host: netns.LabHost, total: int) -> None:
    """Accept only this host's bucket (one host per bucket) and drop the rest of the VIP's traffic."""
    common = ["-i", topo.interface, "-d", topo.vip]
    cluster = ["-m", "cluster", "--cluster-total-nodes", str(total),
               "--cluster-local-nodemask", hex(1 << (host.index - 1)), "--cluster-hash-seed", hex(SEED)]
    base = ["iptables-legacy", "-w", "-t", "mangle", "-A", "PREROUTING", *common]
    netns.nsexec(host.namespace, [*base, *cluster, "-j", "MARK", "--set-mark", "0xffff"])
    netns.nsexec(host.namespace, [*base, "-m", "mark", "!", "--mark", "0xffff", "-j", "DROP"])


def expected_hosts(topo: netns.LabTopology, sources: list[str] | tuple[str, ...]) -> dict[str, str]:
    total = len(topo.hosts)
    return {s: f"h{xt_cluster_bucket(ipaddress.IPv4Address(s), total, SEED)}" for s in sources}


def mgmt_greeting(address: str, timeout_s: float = 0.5) -> str | None:
    """Connect from the root namespace over the management network; the responder greets with its name."""
    try:
        with socket.create_connection((address, PORT), timeout=timeout_s) as sock:
            return sock.recv(64).decode().strip()
    except OSError:
        return None


def reaches_root_listener(topo: netns.LabTopology, host: str, listener: socket.socket) -> bool:
    """Can ``host`` open a TCP connection to a root-namespace listener on the management gateway?

    This is the path a node hook takes to a ZooKeeper started with clientPortAddress=mgmt_gateway.
    """
    port = listener.getsockname()[1]
    code = (
        "import socket,sys\n"
        "try: socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5).close()\n"
        "except OSError: sys.exit(3)\n"
    )
    argv = [sys.executable, "-c", code, topo.mgmt_gateway, str(port)]
    proc = netns.nsexec(topo.host(host).namespace, argv, check=False)
    if proc.returncode not in (0, 3):
        raise AssertionError(f"connect helper failed: {proc.stderr}")
    return proc.returncode == 0


@pytest.mark.lab_topology(hosts=4, client_sources=256)
def test_every_source_answered_exactly_once_and_mgmt_cut_spares_clients(lab_topology: netns.LabTopology) -> None:
    topo = lab_topology
    assert len(topo.client_sources) >= 200
    for host in topo.hosts:
        install_xt_cluster(topo, host, total=len(topo.hosts))
    expected = expected_hosts(topo, topo.client_sources)

    with Responders(topo, PORT):
        udp = udp_probe(topo, PORT)
        wrong = {s: a for s, a in udp.items() if a != [expected[s]]}
        assert not wrong, f"{len(wrong)} sources not answered exactly once by their bucket's host: {wrong}"
        spread = Counter(a[0] for a in udp.values())
        print(f"\nsources per host: {dict(sorted(spread.items()))}")
        assert set(spread) == {h.name for h in topo.hosts}

        tcp = tcp_probe(topo, PORT)
        assert tcp == expected

        # Management: the root namespace reaches every host on its own network, not via the data path.
        assert {h.name: mgmt_greeting(h.mgmt_address) for h in topo.hosts} == {h.name: h.name for h in topo.hosts}
        listener = socket.create_server((topo.mgmt_gateway, 0))  # stands in for ZooKeeper
        try:
            assert reaches_root_listener(topo, "h2", listener)
            netns.link_down(topo, "h2", "mgmt")
            assert not reaches_root_listener(topo, "h2", listener)
            assert reaches_root_listener(topo, "h1", listener)
            assert mgmt_greeting(topo.host("h2").mgmt_address) is None
            assert mgmt_greeting(topo.host("h1").mgmt_address) == "h1"
            # h2 is cut from ZooKeeper's network but clients still reach it.
            assert udp_probe(topo, PORT) == {s: [h] for s, h in expected.items()}
            assert tcp_probe(topo, PORT) == expected
        finally:
            netns.link_up(topo, "h2", "mgmt")
            listener.close()
        assert mgmt_greeting(topo.host("h2").mgmt_address) == "h2"

    start = time.monotonic()
    netns.destroy(topo.prefix)
    print(f"destroy took {time.monotonic() - start:.3f} s")
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(topo.prefix)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert topo.prefix not in links
    assert not (netns.state_dir() / f"{topo.prefix}.json").exists()


@pytest.mark.lab_topology(hosts=3, client_sources=60)
def test_data_cut_silences_only_that_host_and_is_reversible(lab_topology: netns.LabTopology) -> None:
    topo = lab_topology
    for host in topo.hosts:
        install_xt_cluster(topo, host, total=3)
    expected = expected_hosts(topo, topo.client_sources)
    with Responders(topo, PORT):
        netns.link_down(topo, "h3", "data")
        try:
            udp = udp_probe(topo, PORT, window_s=0.3)
        finally:
            netns.link_up(topo, "h3", "data")
        assert udp == {s: ([] if h == "h3" else [h]) for s, h in expected.items()}
        assert "h3" in expected.values()
        assert udp_probe(topo, PORT, window_s=0.3) == {s: [h] for s, h in expected.items()}


@pytest.mark.lab_topology(hosts=2, client_sources=16)
def test_streams_survive_and_report_a_cut(lab_topology: netns.LabTopology) -> None:
    topo = lab_topology
    for host in topo.hosts:
        install_xt_cluster(topo, host, total=2)
    expected = expected_hosts(topo, topo.client_sources)
    with Responders(topo, PORT), TcpStreams(topo, PORT, topo.client_sources, interval_s=0.005, stall_s=1.0) as st:
        assert st.hosts == expected
        time.sleep(0.5)
        netns.link_down(topo, "h1", "data")
        time.sleep(1.6)
        reports = st.stop()
    for src, rep in reports.items():
        if expected[src] == "h1":
            assert rep.broken and rep.error and "no echo" in rep.error, (src, rep)
        else:
            assert not rep.broken, (src, rep)
            assert rep.sent > 100 and rep.received >= rep.sent - 2, (src, rep)
    print(f"\nstream max rtt ms: {max(r.max_rtt_ms for r in reports.values()):.2f}")


def install_nft_v6(topo: netns.LabTopology, host: netns.LabHost, total: int) -> None:
    """IPv6 needs nft's jhash (xt_cluster hashes only an IPv6 source's top 32 bits)."""
    match = f'iifname "{topo.interface}" ip6 daddr {topo.vip6}'
    ruleset = (
        "table ip6 labcheck {\n chain pre { type filter hook prerouting priority raw; policy accept;\n"
        f"  {match} jhash ip6 saddr mod {total} seed {hex(SEED)} offset 1 == {host.index}"
        " meta pkttype set host accept\n"
        f"  {match} drop\n }}\n}}\n"
    )
    netns.nsexec(host.namespace, ["nft", "-f", "-"], input=ruleset)


@pytest.mark.lab_topology(hosts=3, client_sources=64, ipv6=True)
def test_ipv6_sources_answered_exactly_once(lab_topology: netns.LabTopology) -> None:
    topo = lab_topology
    assert topo.vip6 and len(topo.client_sources6) == 64
    for host in topo.hosts:
        install_nft_v6(topo, host, total=3)
    expected = {s: f"h{nftables_bucket(ipaddress.IPv6Address(s), 3, SEED)}" for s in topo.client_sources6}
    assert set(expected.values()) == {"h1", "h2", "h3"}
    with Responders(topo, PORT):
        assert udp_probe(topo, PORT, topo.client_sources6) == {s: [h] for s, h in expected.items()}
        assert tcp_probe(topo, PORT, topo.client_sources6) == expected


def test_remove_stale_removes_only_labs_whose_creator_is_gone(
    lab_factory: Callable[..., netns.LabTopology],
) -> None:
    live = lab_factory(hosts=1, client_sources=1)
    stale = lab_factory(hosts=2, client_sources=1)
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = netns.state_dir() / f"{stale.prefix}.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "pid": dead.pid}))  # as if a crashed run had built it

    removed = netns.remove_stale("cif")

    assert set(stale.namespaces) <= set(removed)
    assert f"{stale.prefix}mb" in removed
    assert not any(n.startswith(live.prefix) for n in removed)
    remaining = netns.list_namespaces()
    assert set(live.namespaces) <= set(remaining)
    assert not [ns for ns in remaining if ns.startswith(stale.prefix)]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"prefix": "Bad!"}, "prefix"),
        ({"prefix": "waytoolongprefix"}, "prefix"),
        ({"prefix": "cifzz01", "hosts": 0}, "hosts=0"),
        ({"prefix": "cifzz01", "client_sources": 10_000}, "client_sources"),
        ({"prefix": "cifzz01", "vip": "192.0.2.1"}, "vip"),
        ({"prefix": "cifzz01", "cluster_mac": "02:00:00:00:00:01"}, "multicast"),
    ],
)
def test_bad_build_arguments_give_one_line_errors(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(LabError) as info:
        netns.build(**kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert not [ns for ns in netns.list_namespaces() if ns.startswith("cifzz01")]
