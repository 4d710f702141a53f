"""Pure parts of the kernel backends: names, rule text, nodemask encoding, listings (no kernel)."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.errors import BackendError
from controller.core.model import ClusterSpec, HashSettings, HostSpec
from node_hook.backends import _mcast, create_backend
from node_hook.backends._naming import IPT_CHAIN_MAX, ipt_chain_name, nft_table_name
from node_hook.backends._nd import NdRewrite
from node_hook.backends._service import Service
from node_hook.backends.clusterip import ClusterIPBackend
from node_hook.backends.nftables import NftablesBackend, _elements
from node_hook.backends.xt_cluster import XtClusterBackend, buckets_of, mask_argument, mask_fields, mask_of

SPEC = ClusterSpec(
    name="unix0", vip=ipaddress.ip_address("198.18.0.100"), interface="eth0", backend="nftables", buckets=4,
    cluster_mac="01:00:5E:41:9E:A0", hosts=(HostSpec("h1", (1,), "198.18.0.11"),),
    hash=HashSettings(seed=0xDEADBEEF), ports=(22, 2222), protocol="tcp",
)


def test_names_are_derived_sanitised_and_bounded() -> None:
    assert nft_table_name("unix0") == "cif_unix0"
    assert nft_table_name("a.b") != nft_table_name("a_b")  # sanitising must not merge two clusters
    assert nft_table_name("a.b").startswith("cif_a_b_")
    assert ipt_chain_name("unix0") == "CIF-unix0"
    long = ipt_chain_name("x" * 64)
    assert len(long) <= IPT_CHAIN_MAX and long != ipt_chain_name("x" * 63)
    assert nft_table_name("unix0", prefix="t1") == "t1_unix0"
    with pytest.raises(ValueError, match="prefix"):
        nft_table_name("unix0", prefix="Bad-Prefix")


def test_service_matches() -> None:
    assert Service.of(SPEC).nft_match() == "tcp dport { 22, 2222 }"
    assert Service.of(dataclasses.replace(SPEC, ports=())).nft_match() == "meta l4proto tcp"
    everything = Service.of(dataclasses.replace(SPEC, ports=(), protocol="all"))
    assert everything.everything and everything.nft_match() == ""
    assert "destination-unreachable" in Service.of(SPEC).nft_passthrough()


def test_nftables_rules_text() -> None:
    backend = NftablesBackend(SPEC, "h1")
    assert backend.table == "cif_unix0" and backend.family == "ip"
    assert backend.rules == [
        'iifname "eth0" ip daddr 198.18.0.100 tcp dport { 22, 2222 } ct state invalid jhash ip saddr mod 4 '
        "seed 0xdeadbeef offset 1 @quiet drop",
        'iifname "eth0" ip daddr 198.18.0.100 tcp dport { 22, 2222 } jhash ip saddr mod 4 seed 0xdeadbeef '
        "offset 1 @owned meta pkttype set host accept",
        'iifname "eth0" ip daddr 198.18.0.100 tcp dport { 22, 2222 } meta l4proto tcp ct state established,related '
        "jhash ip saddr mod 4 seed 0xdeadbeef offset 1 @draining meta pkttype set host accept",
        'iifname "eth0" ip daddr 198.18.0.100 icmp type { destination-unreachable, time-exceeded, '
        "parameter-problem } accept",
        'iifname "eth0" ip daddr 198.18.0.100 drop',
    ]
    text = backend.install_commands(frozenset({2, 1}), fresh=True, rewrite=False, arp_rewrite=False)
    for name in ("owned", "draining", "quiet"):
        assert f"add set ip cif_unix0 {name} {{ typeof numgen inc mod 4; }}" in text
    # after conntrack (-200): ct state must be known; dropped packets' entries are never confirmed
    assert "type filter hook prerouting priority mangle;" in text
    assert "add element ip cif_unix0 owned { 1, 2 }" in text
    assert "arp saddr ether set 01:00:5e:41:9e:a0" in text
    assert "flush chain" not in text
    # adopting a changed configuration rewrites the rules but never touches the set's elements
    again = backend.install_commands(frozenset({3}), fresh=False, rewrite=True, arp_rewrite=False)
    assert "flush chain ip cif_unix0 pre" in again and "add element" not in again and "table arp" not in again
    # re-created, because a chain of an older version hooked at priority raw cannot be re-prioritised
    assert again.index("delete chain ip cif_unix0 pre") < again.index("add chain ip cif_unix0 pre")


def test_nftables_ipv6_and_protocol_all(monkeypatch: pytest.MonkeyPatch) -> None:
    import node_hook.backends.nftables as nft_module

    monkeypatch.setattr(nft_module, "interface_mac", lambda interface: "02:00:00:00:00:11")
    v6 = NftablesBackend(dataclasses.replace(SPEC, vip=ipaddress.ip_address("2001:2::100")), "h1")
    assert v6.family == "ip6" and isinstance(v6.arp, NdRewrite)
    text = v6.install_commands(frozenset({1}), fresh=True, rewrite=False, arp_rewrite=False)
    assert "add table inet cif_unix0" in text and "nd-neighbor-advert" in text and "table arp" not in text
    monkeypatch.setattr(nft_module, "interface_mac", lambda interface: None)  # interface not there yet
    assert NftablesBackend(dataclasses.replace(SPEC, vip=ipaddress.ip_address("2001:2::100")), "h1").arp is None
    assert all("jhash ip6 saddr mod 4" in rule for rule in v6.rules[:3]) and "nd-neighbor-solicit" in v6.rules[3]
    everything = NftablesBackend(dataclasses.replace(SPEC, ports=(), protocol="all"), "h1")
    assert len(everything.rules) == 4 and everything.rules[3].endswith("drop")
    assert not any("  " in rule for rule in everything.rules)


def test_fingerprint_follows_the_configuration() -> None:
    base = NftablesBackend(SPEC, "h1").fp
    assert NftablesBackend(SPEC, "h2").fp == base  # same cluster, same rules on every host
    assert NftablesBackend(dataclasses.replace(SPEC, hash=HashSettings(seed=1)), "h1").fp != base
    assert XtClusterBackend(SPEC, "h1").fp != XtClusterBackend(dataclasses.replace(SPEC, ports=(22,)), "h1").fp


def test_nft_set_listing_parsing() -> None:
    assert _elements([{"set": {"name": "owned", "elem": [1, 3]}}]) == {1, 3}
    assert _elements([{"set": {"name": "owned"}}]) == frozenset()
    assert _elements([{"set": {"elem": [{"elem": {"val": 2, "comment": "x"}}]}}]) == {2}
    with pytest.raises(BackendError, match="unexpected element"):
        _elements([{"set": {"elem": [{"range": [1, 2]}]}}])


def test_nodemask_encoding() -> None:
    assert mask_of({1, 3}) == 0b101
    assert mask_argument(frozenset({1, 3}), 4) == "0x00000005"
    # own nothing: libxt_cluster refuses mask 0, so the full mask inverted
    assert mask_argument(frozenset(), 4) == "!0x0000000f"
    assert mask_fields(frozenset(), 4) == (0xF, 1)
    assert buckets_of(0xF, 4, inverted=True) == frozenset()
    assert buckets_of(0b1010, 4, inverted=False) == {2, 4}


@given(st.integers(1, 32).flatmap(lambda n: st.tuples(st.just(n), st.frozensets(st.integers(1, n)))))
def test_nodemask_round_trip(case: tuple[int, frozenset[int]]) -> None:
    total, wanted = case
    mask, flags = mask_fields(wanted, total)
    assert 0 <= mask < 1 << total
    assert buckets_of(mask, total, bool(flags)) == wanted


def test_multicast_ifreq_and_membership_listing(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    req = _mcast._ifreq("eth0", "01:00:5e:41:9e:a0")
    assert len(req) == 32 and req[:4] == b"eth0" and req[16:18] == b"\0\0" and req[18:24] == bytes.fromhex(
        "01005e419ea0")
    listing = tmp_path / "dev_mcast"  # type: ignore[operator]
    listing.write_text("2    eth0            1     0     333300000001\n2    eth0            1     1     01005e419ea0\n")
    monkeypatch.setattr(_mcast, "DEV_MCAST", listing)
    assert _mcast.joined("eth0", "01:00:5E:41:9E:A0")
    assert not _mcast.joined("eth1", "01:00:5E:41:9E:A0")
    with pytest.raises(ValueError, match="MAC"):
        _mcast.mac_bytes("01:00:5e")


def test_create_backend_builds_each_kernel_backend() -> None:
    assert isinstance(create_backend(SPEC, "h1"), NftablesBackend)
    assert isinstance(create_backend(SPEC, "h1", "xt_cluster"), XtClusterBackend)
    assert isinstance(create_backend(SPEC, "h1", "clusterip"), ClusterIPBackend)


def test_bucket_range_is_checked_before_the_kernel() -> None:
    backend = NftablesBackend(SPEC, "h1")
    for bad in (0, 5, True):
        with pytest.raises(BackendError, match=r"outside 1\.\.4"):
            backend.grant(bad)  # type: ignore[arg-type]


def test_xt_cluster_rules_for_any_mask_are_patched_not_parsed() -> None:
    """libxtables (through python-iptables) refuses nodemasks above 0xf, so a 12-bucket host owning
    nothing (``! 0xfff``) or buckets 5..12 could not even install: rules are patched bytes instead."""
    import struct

    from node_hook.backends._xtables import MATCH_HEADER

    backend = XtClusterBackend(dataclasses.replace(SPEC, buckets=12, backend="xt_cluster"), "h1")
    for wanted in (frozenset(), frozenset({5, 12}), frozenset(range(1, 13))):
        rule = backend._patched(wanted)
        match = next(m for m in rule.matches if m.name == "cluster")
        _total, mask, _seed, flags = struct.unpack_from("<IIII", match._match_buf, MATCH_HEADER)
        assert (mask, flags) == mask_fields(wanted, 12)
