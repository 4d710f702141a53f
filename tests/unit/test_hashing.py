"""Unit tests for controller.core.hashing: the Jenkins core, the bucket formulas, and bad input.

Three kinds of evidence: published lookup3 test vectors (Bob Jenkins' driver5), an independent
literal transcription of the kernel C code used as a reference for random keys, and a table of
(address -> bucket) facts observed on the live kernel by tests/lab/test_hash_matches_kernel.py.
"""

from __future__ import annotations

import struct
from collections import Counter
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.hashing import (
    JHASH_INITVAL,
    bucket_for,
    clusterip_bucket,
    jhash,
    jhash2,
    jhash_1word,
    jhash_2words,
    jhash_3words,
    nftables_bucket,
    reciprocal_scale,
    xt_cluster_bucket,
)
from controller.core.model import HASH_MODES, HashSettings

U32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
V4 = st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address)
V6 = st.integers(min_value=0, max_value=2**128 - 1).map(IPv6Address)
PORT = st.integers(min_value=0, max_value=0xFFFF)


# --------------------------------------------------------------------------- reference transcription
# Deliberately written the naive way (a rol32 helper, the byte-by-byte fall-through tail of
# include/linux/jhash.h, 64-bit masking after every step), sharing nothing with the module.


def _rol32(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def _ref_final(a: int, b: int, c: int) -> int:
    m = 0xFFFFFFFF
    c ^= b; c = (c - _rol32(b, 14)) & m  # noqa: E702
    a ^= c; a = (a - _rol32(c, 11)) & m  # noqa: E702
    b ^= a; b = (b - _rol32(a, 25)) & m  # noqa: E702
    c ^= b; c = (c - _rol32(b, 16)) & m  # noqa: E702
    a ^= c; a = (a - _rol32(c, 4)) & m  # noqa: E702
    b ^= a; b = (b - _rol32(a, 14)) & m  # noqa: E702
    c ^= b; c = (c - _rol32(b, 24)) & m  # noqa: E702
    return c


def _ref_mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    m = 0xFFFFFFFF
    a = (a - c) & m; a ^= _rol32(c, 4); c = (c + b) & m  # noqa: E702
    b = (b - a) & m; b ^= _rol32(a, 6); a = (a + c) & m  # noqa: E702
    c = (c - b) & m; c ^= _rol32(b, 8); b = (b + a) & m  # noqa: E702
    a = (a - c) & m; a ^= _rol32(c, 16); c = (c + b) & m  # noqa: E702
    b = (b - a) & m; b ^= _rol32(a, 19); a = (a + c) & m  # noqa: E702
    c = (c - b) & m; c ^= _rol32(b, 4); b = (b + a) & m  # noqa: E702
    return a, b, c


def _ref_jhash(k: bytes, initval: int) -> int:
    m = 0xFFFFFFFF
    length = len(k)
    a = b = c = (0xDEADBEEF + length + initval) & m
    p = 0
    while length > 12:
        a = (a + struct.unpack_from("<I", k, p)[0]) & m  # __get_unaligned_cpu32 on x86
        b = (b + struct.unpack_from("<I", k, p + 4)[0]) & m
        c = (c + struct.unpack_from("<I", k, p + 8)[0]) & m
        a, b, c = _ref_mix(a, b, c)
        length -= 12
        p += 12
    if length == 0:
        return c
    t = k[p:]
    # case 12 .. case 1, falling through
    for i, reg in ((11, "c"), (10, "c"), (9, "c"), (8, "c"), (7, "b"), (6, "b"), (5, "b"), (4, "b"),
                   (3, "a"), (2, "a"), (1, "a"), (0, "a")):
        if length > i:
            add = t[i] << (8 * (i % 4))
            if reg == "a":
                a = (a + add) & m
            elif reg == "b":
                b = (b + add) & m
            else:
                c = (c + add) & m
    return _ref_final(a, b, c)


# --------------------------------------------------------------------------- lookup3 vectors


def test_lookup3_driver5_vectors_for_hashlittle() -> None:
    """Kernel jhash(k, len, iv) is lookup3 hashlittle(k, len, iv) on x86: same JHASH_INITVAL
    0xdeadbeef, same mix/final, same little-endian tail. driver5 prints hashlittle(), and
    hashlittle2(k, len, &pc, &pb)'s *pc, which equals hashlittle(k, len, pc) only when *pb == 0
    (pb is added to c alone; the kernel has no such input). For the empty key nothing is mixed, so
    *pc = 0xdeadbeef + pc + pb and that case maps to jhash(b"", pc + pb). The remaining driver5
    lines (pb != 0 with a key, and the *pb outputs) have no kernel counterpart and are not claimed."""
    four_score = b"Four score and seven years ago"
    assert jhash(four_score, 0) == 0x17770551  # hashlittle(.., 30, 0); hashlittle2 b=0,c=0 -> c
    assert jhash(four_score, 1) == 0xCD628161  # hashlittle(.., 30, 1); hashlittle2 b=0,c=1 -> c
    assert jhash(b"", 0) == 0xDEADBEEF  # hashlittle2("", b=0, c=0) -> c
    assert jhash(b"", 0xDEADBEEF) == 0xBD5B7DDE  # hashlittle2("", b=0xdeadbeef, c=0) -> c
    assert jhash(b"", (0xDEADBEEF * 2) & 0xFFFFFFFF) == 0x9C093CCD  # b=c=0xdeadbeef -> c
    assert JHASH_INITVAL == 0xDEADBEEF


@settings(max_examples=300)
@given(st.binary(max_size=45), U32)
def test_jhash_matches_literal_transcription(key: bytes, initval: int) -> None:
    assert jhash(key, initval) == _ref_jhash(key, initval)


@settings(max_examples=200)
@given(st.lists(U32, max_size=10), U32)
def test_jhash2_equals_jhash_over_little_endian_bytes(words: list[int], initval: int) -> None:
    # jhash2 (lookup3 hashword) seeds with the length in words << 2 == the byte length, and adds
    # whole words where jhash adds little-endian bytes: identical on x86.
    assert jhash2(words, initval) == jhash(struct.pack(f"<{len(words)}I", *words), initval)


@settings(max_examples=200)
@given(U32, U32, U32, U32)
def test_nwords_equal_jhash2(a: int, b: int, c: int, initval: int) -> None:
    # __jhash_nwords adds (initval + JHASH_INITVAL + n*4) to each word then finalises: the same as
    # jhash2's init-then-add of exactly n words (addition commutes).
    assert jhash_1word(a, initval) == jhash2([a], initval)
    assert jhash_2words(a, b, initval) == jhash2([a, b], initval)
    assert jhash_3words(a, b, c, initval) == jhash2([a, b, c], initval)


def test_empty_jhash2_is_the_initial_state() -> None:
    assert jhash2([], 5) == JHASH_INITVAL + 5


# --------------------------------------------------------------------------- reciprocal_scale


def test_reciprocal_scale_by_hand() -> None:
    # (val * n) >> 32: the high bits choose, so these differ from val % n.
    assert reciprocal_scale(0xFFFFFFFF, 4) == 3  # % 4 would be 3 too
    assert reciprocal_scale(0x80000000, 4) == 2  # % 4 would be 0
    assert reciprocal_scale(0x3FFFFFFF, 4) == 0  # % 4 would be 3
    assert reciprocal_scale(0x40000000, 4) == 1
    assert reciprocal_scale(0xFFFFFFFF, 7) == 6
    assert reciprocal_scale(0x24924924, 7) == 0 and reciprocal_scale(0x24924925, 7) == 1
    assert reciprocal_scale(12345, 1) == 0


@given(U32, st.integers(min_value=1, max_value=2**32 - 1))
def test_reciprocal_scale_range(value: int, n: int) -> None:
    assert 0 <= reciprocal_scale(value, n) < n


# --------------------------------------------------------------------------- kernel-observed placement

#: Copy of tests/lab/test_hash_matches_kernel.py PINNED: buckets the live kernel (Linux 6.18) gave
#: these sources. address -> {(seed, total): (xt_cluster bucket, nftables bucket)}.
PINNED: dict[str, dict[tuple[int, int], tuple[int, int]]] = {
    "198.18.0.10": {(0xDEADBEEF, 4): (1, 1), (0xDEADBEEF, 7): (2, 2), (0xC0FFEE, 4): (4, 4), (0xC0FFEE, 7): (6, 6)},
    "198.18.18.198": {(0xDEADBEEF, 4): (2, 2), (0xDEADBEEF, 7): (3, 3), (0xC0FFEE, 4): (3, 3), (0xC0FFEE, 7): (4, 4)},
    "198.19.255.254": {(0xDEADBEEF, 4): (4, 4), (0xDEADBEEF, 7): (6, 6), (0xC0FFEE, 4): (1, 1), (0xC0FFEE, 7): (1, 1)},
    "fd12:3456::1": {(0xDEADBEEF, 4): (4, 1), (0xDEADBEEF, 7): (6, 2), (0xC0FFEE, 4): (2, 2), (0xC0FFEE, 7): (3, 3)},
    "fd12:3456:ffff::abcd": {
        (0xDEADBEEF, 4): (4, 1), (0xDEADBEEF, 7): (6, 1), (0xC0FFEE, 4): (2, 2), (0xC0FFEE, 7): (3, 4),
    },
    "fdab:cdef:1::9": {(0xDEADBEEF, 4): (2, 4), (0xDEADBEEF, 7): (3, 7), (0xC0FFEE, 4): (4, 2), (0xC0FFEE, 7): (7, 4)},
}

#: Observed on the live kernel while xt_cluster IPv6 was still modelled over all 128 bits: 256
#: sources in 2001:2::/48 all landed in one bucket per configuration, (seed, total) -> bucket.
XT_CLUSTER_2001_2_SLASH48 = {(0xDEADBEEF, 4): 1, (0xDEADBEEF, 7): 2, (0xC0FFEE, 4): 1, (0xC0FFEE, 7): 1}


@pytest.mark.parametrize(("addr", "seed", "total"), [(a, s, n) for a, d in PINNED.items() for (s, n) in d])
def test_kernel_observed_buckets(addr: str, seed: int, total: int) -> None:
    xt_k, nft_k = PINNED[addr][(seed, total)]
    assert xt_cluster_bucket(ip_address(addr), total, seed) == xt_k
    assert nftables_bucket(ip_address(addr), total, seed) == nft_k
    settings_ = HashSettings(seed=seed)
    assert bucket_for("xt_cluster", ip_address(addr), total, settings_) == xt_k
    assert bucket_for("nftables", ip_address(addr), total, settings_) == nft_k


@pytest.mark.parametrize("addr", ["2001:2::5", "2001:2:0:5e:6eda:8eb1:c485:c243", "2001:2:0:ffff::1"])
def test_xt_cluster_ipv6_observed_single_bucket_for_one_slash32(addr: str) -> None:
    for (seed, total), bucket in XT_CLUSTER_2001_2_SLASH48.items():
        assert xt_cluster_bucket(IPv6Address(addr), total, seed) == bucket


def test_xt_cluster_ipv4_by_hand() -> None:
    # 198.18.0.10 = c6 12 00 0a on the wire; xt_cluster loads it natively (little-endian) as
    # 0x0a0012c6, then jhash_1word(., seed) and reciprocal_scale(., N) + 1.
    addr = IPv4Address("198.18.0.10")
    h = jhash_1word(0x0A0012C6, 0xDEADBEEF)
    assert xt_cluster_bucket(addr, 7, 0xDEADBEEF) == ((h * 7) >> 32) + 1 == 2


# --------------------------------------------------------------------------- relations derived from the code


@given(V4, U32, st.integers(min_value=2, max_value=32))
def test_nft_equals_xt_cluster_for_ipv4(addr: IPv4Address, seed: int, total: int) -> None:
    # jhash() of 4 bytes == jhash_1word() of their little-endian word: same init, same final.
    assert nftables_bucket(addr, total, seed) == xt_cluster_bucket(addr, total, seed)


@given(V6, U32, st.integers(min_value=1, max_value=32))
def test_xt_cluster_ipv6_uses_only_the_top_32_bits(addr: IPv6Address, seed: int, total: int) -> None:
    # jhash2(ip6, NF_CT_TUPLE_L3SIZE / sizeof(u32) == 1, seed): only the first word is hashed, so the
    # bucket equals that of the IPv4 address made of the same four bytes.
    top = IPv4Address(addr.packed[:4])
    assert xt_cluster_bucket(addr, total, seed) == xt_cluster_bucket(top, total, seed)
    other = IPv6Address(addr.packed[:4] + bytes(12))
    assert xt_cluster_bucket(addr, total, seed) == xt_cluster_bucket(other, total, seed)


@given(V6, U32, st.integers(min_value=2, max_value=64))
def test_nft_ipv6_hashes_all_128_bits(addr: IPv6Address, seed: int, total: int) -> None:
    words = struct.unpack("<4I", addr.packed)
    assert nftables_bucket(addr, total, seed) == reciprocal_scale(jhash2(words, seed), total) + 1


def test_nft_ipv6_spreads_one_slash32() -> None:
    buckets = {nftables_bucket(IPv6Address(f"fd12:3456::{i:x}"), 4, 0xDEADBEEF) for i in range(1, 64)}
    assert buckets == {1, 2, 3, 4}
    assert len({xt_cluster_bucket(IPv6Address(f"fd12:3456::{i:x}"), 4, 0xDEADBEEF) for i in range(1, 64)}) == 1


@given(V4, U32, st.integers(min_value=1, max_value=16))
def test_clusterip_sourceip_hashes_host_order(addr: IPv4Address, hash_init: int, total: int) -> None:
    # clusterip_hashfn: jhash_1word(ntohl(iph->saddr), hash_initval): the address as a number.
    expected = reciprocal_scale(jhash_1word(int(addr), hash_init), total) + 1
    assert clusterip_bucket(addr, total, hash_init, "sourceip") == expected


@given(st.integers(0, 255), st.integers(0, 255), U32, st.integers(min_value=1, max_value=16))
def test_palindromic_address_same_on_clusterip_and_xt_cluster(x: int, y: int, seed: int, total: int) -> None:
    # CLUSTERIP hashes ntohl(saddr), xt_cluster the native load of saddr: they agree exactly when the
    # four address bytes read the same both ways round (a.b.b.a), and in general they do not.
    addr = IPv4Address(bytes([x, y, y, x]))
    assert clusterip_bucket(addr, total, seed, "sourceip") == xt_cluster_bucket(addr, total, seed)


def test_clusterip_and_xt_cluster_place_most_clients_differently() -> None:
    addrs = [IPv4Address(0xC6120000 + i * 257) for i in range(2000)]
    same = sum(clusterip_bucket(a, 4, 0, "sourceip") == xt_cluster_bucket(a, 4, 0) for a in addrs)
    assert 0.15 < same / len(addrs) < 0.35  # ~1/4 agree by chance: a migration moves ~3/4 of clients


def test_clusterip_ports_are_hashed_as_raw_network_order_u16() -> None:
    # sport = ports[0] with no ntohs: on x86 port 1 (bytes 00 01) is hashed as 0x0100, port 257
    # (bytes 01 01) as itself, port 40000 = 0x9c40 as 0x409c.
    addr = IPv4Address("198.18.0.10")
    a = int(addr)
    assert clusterip_bucket(addr, 7, 0, "sourceip-sourceport", 1) == reciprocal_scale(jhash_2words(a, 0x0100, 0), 7) + 1
    assert clusterip_bucket(addr, 7, 0, "sourceip-sourceport", 257) == reciprocal_scale(jhash_2words(a, 257, 0), 7) + 1
    assert clusterip_bucket(addr, 7, 0, "sourceip-sourceport-destport", 40000, 22) == (
        reciprocal_scale(jhash_3words(a, 0x409C, 0x1600, 0), 7) + 1
    )
    # Regression values (not kernel-checked: this kernel has no CLUSTERIP; see docs/hashing.md).
    assert jhash_1word(a, 0) == 0x11F65035
    assert jhash_2words(a, 0x409C, 0) == 0x82E37467
    assert jhash_3words(a, 0x409C, 0x1600, 0) == 0xD5582BE2
    assert [clusterip_bucket(addr, n, 0, "sourceip") for n in (4, 7)] == [1, 1]
    assert [clusterip_bucket(addr, n, 0, "sourceip-sourceport", 40000) for n in (4, 7)] == [3, 4]
    assert [clusterip_bucket(addr, n, 0, "sourceip-sourceport-destport", 40000, 22) for n in (4, 7)] == [4, 6]


@given(V4, PORT, PORT)
def test_clusterip_sourceip_ignores_ports(addr: IPv4Address, sport: int, dport: int) -> None:
    assert clusterip_bucket(addr, 5, 9, "sourceip", sport, dport) == clusterip_bucket(addr, 5, 9, "sourceip")


def test_clusterip_mode_changes_placement() -> None:
    addrs = [IPv4Address(0xC6120000 + i) for i in range(500)]
    differ = sum(
        clusterip_bucket(a, 4, 0, "sourceip") != clusterip_bucket(a, 4, 0, "sourceip-sourceport", 40000) for a in addrs
    )
    assert differ > 250


@given(V4, PORT, PORT)
def test_bucket_for_clusterip_uses_mode_and_hash_init(addr: IPv4Address, sport: int, dport: int) -> None:
    for mode in HASH_MODES:
        hs = HashSettings(mode=mode, hash_init=77, seed=5)
        assert bucket_for("clusterip", addr, 9, hs, sport, dport) == clusterip_bucket(addr, 9, 77, mode, sport, dport)


# --------------------------------------------------------------------------- range and spread


@given(st.one_of(V4, V6), U32, st.integers(min_value=2, max_value=32))
def test_every_result_is_a_bucket(addr: IPv4Address | IPv6Address, seed: int, total: int) -> None:
    assert 1 <= xt_cluster_bucket(addr, total, seed) <= total
    assert 1 <= nftables_bucket(addr, total, seed) <= total
    if isinstance(addr, IPv4Address) and total <= 16:
        for mode in HASH_MODES:
            assert 1 <= clusterip_bucket(addr, total, seed, mode, 1234, 22) <= total


@pytest.mark.parametrize("total", [2, 3, 4, 7, 16])
def test_spread_is_roughly_even(total: int) -> None:
    addrs = [IPv4Address(0xC6120000 + i) for i in range(14000)]
    for name in ("xt_cluster", "clusterip"):
        hs = HashSettings(seed=0xDEADBEEF, hash_init=0)
        counts = Counter(bucket_for(name, a, total, hs) for a in addrs)
        assert set(counts) == set(range(1, total + 1)), name
        expected = len(addrs) / total
        assert all(abs(n - expected) < 0.15 * expected for n in counts.values()), (name, counts)


def test_total_one_is_always_bucket_one() -> None:
    assert xt_cluster_bucket(IPv4Address("198.18.0.1"), 1, 0) == 1
    assert clusterip_bucket(IPv4Address("198.18.0.1"), 1, 0, "sourceip") == 1


# --------------------------------------------------------------------------- bad input


def _one_line(exc: pytest.ExceptionInfo[ValueError], *words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_total_must_be_positive() -> None:
    for total in (0, -1):
        with pytest.raises(ValueError) as e:
            xt_cluster_bucket(IPv4Address("198.18.0.1"), total, 0)
        _one_line(e, "at least 1")


def test_total_must_be_int() -> None:
    with pytest.raises(ValueError) as e:
        xt_cluster_bucket(IPv4Address("198.18.0.1"), True, 0)
    _one_line(e, "integer")
    with pytest.raises(ValueError):
        nftables_bucket(IPv4Address("198.18.0.1"), 4.0, 0)  # type: ignore[arg-type]


def test_backend_limits() -> None:
    with pytest.raises(ValueError) as e:
        clusterip_bucket(IPv4Address("198.18.0.1"), 17, 0, "sourceip")
    _one_line(e, "clusterip", "16")
    with pytest.raises(ValueError) as e:
        xt_cluster_bucket(IPv4Address("198.18.0.1"), 33, 0)
    _one_line(e, "xt_cluster", "32")
    assert 1 <= nftables_bucket(IPv4Address("198.18.0.1"), 1000, 0) <= 1000


def test_nftables_refuses_mod_1() -> None:
    with pytest.raises(ValueError) as e:
        nftables_bucket(IPv4Address("198.18.0.1"), 1, 0)
    _one_line(e, "mod 1", "at least 2")


def test_seed_must_be_u32() -> None:
    for bad in (-1, 2**32):
        with pytest.raises(ValueError) as e:
            xt_cluster_bucket(IPv4Address("198.18.0.1"), 4, bad)
        _one_line(e, "seed", "0xffffffff")
        with pytest.raises(ValueError):
            nftables_bucket(IPv4Address("198.18.0.1"), 4, bad)
        with pytest.raises(ValueError) as e:
            clusterip_bucket(IPv4Address("198.18.0.1"), 4, bad, "sourceip")
        _one_line(e, "hash_init")


def test_ports_required_by_mode() -> None:
    addr = IPv4Address("198.18.0.1")
    with pytest.raises(ValueError) as e:
        clusterip_bucket(addr, 4, 0, "sourceip-sourceport")
    _one_line(e, "sport", "sourceip-sourceport", "use 0")
    with pytest.raises(ValueError) as e:
        clusterip_bucket(addr, 4, 0, "sourceip-sourceport-destport", 1234)
    _one_line(e, "dport")
    with pytest.raises(ValueError) as e:
        bucket_for("clusterip", addr, 4, HashSettings(mode="sourceip-sourceport"))
    _one_line(e, "sport")


def test_ports_in_range() -> None:
    for bad in (-1, 65536):
        with pytest.raises(ValueError) as e:
            clusterip_bucket(IPv4Address("198.18.0.1"), 4, 0, "sourceip-sourceport", bad)
        _one_line(e, "0..65535")


def test_ipv6_with_clusterip() -> None:
    addr = IPv6Address("fd00::1")
    with pytest.raises(ValueError) as e:
        clusterip_bucket(addr, 4, 0, "sourceip")  # type: ignore[arg-type]
    _one_line(e, "IPv4 only", "xt_cluster or nftables")
    with pytest.raises(ValueError) as e:
        bucket_for("clusterip", addr, 4, HashSettings())
    _one_line(e, "IPv4 only")


def test_unknown_mode_and_backend() -> None:
    with pytest.raises(ValueError) as e:
        clusterip_bucket(IPv4Address("198.18.0.1"), 4, 0, "destip")  # type: ignore[arg-type]
    _one_line(e, "destip", "sourceip")
    with pytest.raises(ValueError) as e:
        bucket_for("ipvs", IPv4Address("198.18.0.1"), 4, HashSettings())  # type: ignore[arg-type]
    _one_line(e, "ipvs", "xt_cluster")


def test_not_an_address() -> None:
    with pytest.raises(ValueError) as e:
        xt_cluster_bucket("198.18.0.1", 4, 0)  # type: ignore[arg-type]
    _one_line(e, "IPv4Address")
    with pytest.raises(ValueError):
        nftables_bucket("198.18.0.1", 4, 0)  # type: ignore[arg-type]
