"""Which bucket the kernel puts a client in, computed bit-for-bit as the kernel does it.

The controller must predict placement (to count conntrack entries per bucket, to explain why a
client landed on a host, to warn that a backend migration reshuffles clients). A prediction that is
"roughly Jenkins" is worse than none, so every function below transcribes a named kernel function;
the comments cite it. x86 (little-endian) hosts are assumed wherever the kernel loads bytes as a
native integer: on a big-endian host xt_cluster, nftables and CLUSTERIP's port modes would differ.

Kernel sources used (Linux 6.1 for CLUSTERIP, which was removed in 6.3; current for the others):
- include/linux/jhash.h: jhash(), jhash2(), __jhash_nwords(), __jhash_mix, __jhash_final
  (Bob Jenkins' lookup3 hashlittle()/hashword() with JHASH_INITVAL 0xdeadbeef).
- include/linux/kernel.h (later linux/math.h): reciprocal_scale(val, n) = ((u64)val * n) >> 32.
- net/ipv4/netfilter/ipt_CLUSTERIP.c: clusterip_hashfn().
- net/netfilter/xt_cluster.c: xt_cluster_hash(), xt_cluster_mt().
- net/netfilter/nft_hash.c: nft_jhash_eval().

Pure: no I/O, no state; safe to call from the planner and from tight counting loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from struct import Struct, unpack

from controller.core.model import HASH_MODES, Backend, HashMode, HashSettings, IPAddress

__all__ = [
    "JHASH_INITVAL",
    "MAX_TOTAL",
    "bucket_for",
    "clusterip_bucket",
    "jhash",
    "jhash2",
    "jhash_1word",
    "jhash_2words",
    "jhash_3words",
    "nftables_bucket",
    "reciprocal_scale",
    "xt_cluster_bucket",
]

_M = 0xFFFFFFFF

#: include/linux/jhash.h: "An arbitrary initial parameter" (also lookup3's constant).
JHASH_INITVAL = 0xDEADBEEF

#: Largest bucket count each kernel backend accepts:
#: CLUSTERIP: CLUSTERIP_MAX_NODES (16, enforced by libxt_CLUSTERIP; the bitmap is an unsigned long);
#: xt_cluster: XT_CLUSTER_NODES_MAX (32, xt_cluster_mt_checkentry returns -EINVAL above it);
#: nftables: NFTA_HASH_MODULUS is a u32 and nft_jhash_init refuses offset + modulus - 1 overflowing,
#: so with offset 1 the largest modulus is 2**32 - 1.
MAX_TOTAL: dict[Backend, int] = {"clusterip": 16, "xt_cluster": 32, "nftables": _M}

_LE32 = Struct("<I")


# --------------------------------------------------------------------------- include/linux/jhash.h
#
# The mixing steps are written out inline (no helper calls, rol32 spelled as two shifts) because
# this runs ~100k times per second in conntrack counting; a call per rotation would halve that.
# Every intermediate value is kept in 0..2**32-1 so results equal the kernel's u32 arithmetic.


def _final(a: int, b: int, c: int) -> int:
    """__jhash_final(a, b, c): final mixing of three u32 into c (lookup3's final())."""
    c ^= b
    c = (c - (((b << 14) & _M) | (b >> 18))) & _M
    a ^= c
    a = (a - (((c << 11) & _M) | (c >> 21))) & _M
    b ^= a
    b = (b - (((a << 25) & _M) | (a >> 7))) & _M
    c ^= b
    c = (c - (((b << 16) & _M) | (b >> 16))) & _M
    a ^= c
    a = (a - (((c << 4) & _M) | (c >> 28))) & _M
    b ^= a
    b = (b - (((a << 14) & _M) | (a >> 18))) & _M
    c ^= b
    return (c - (((b << 24) & _M) | (b >> 8))) & _M


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """__jhash_mix(a, b, c): reversible mixing of three u32 (lookup3's mix())."""
    a = (a - c) & _M
    a ^= ((c << 4) & _M) | (c >> 28)
    c = (c + b) & _M
    b = (b - a) & _M
    b ^= ((a << 6) & _M) | (a >> 26)
    a = (a + c) & _M
    c = (c - b) & _M
    c ^= ((b << 8) & _M) | (b >> 24)
    b = (b + a) & _M
    a = (a - c) & _M
    a ^= ((c << 16) & _M) | (c >> 16)
    c = (c + b) & _M
    b = (b - a) & _M
    b ^= ((a << 19) & _M) | (a >> 13)
    a = (a + c) & _M
    c = (c - b) & _M
    c ^= ((b << 4) & _M) | (b >> 28)
    b = (b + a) & _M
    return a, b, c


def _words_core(words: Sequence[int], a: int) -> int:
    """Body shared by jhash() and jhash2() once the key is u32 words and a = b = c = initial state.

    "while (length > 3)" / "while (length > 12)": every block but the last 1..3 words is mixed; the
    last block is added (missing words count as 0, exactly like the kernel's fall-through tail
    switch) and finalised. An empty key returns the initial state unmixed ("case 0: break").
    """
    n = len(words)
    if n == 0:
        return a
    b = c = a
    i = 0
    while n - i > 3:
        a = (a + words[i]) & _M
        b = (b + words[i + 1]) & _M
        c = (c + words[i + 2]) & _M
        a, b, c = _mix(a, b, c)
        i += 3
    rest = n - i
    a = (a + words[i]) & _M
    if rest >= 2:
        b = (b + words[i + 1]) & _M
    if rest == 3:
        c = (c + words[i + 2]) & _M
    return _final(a, b, c)


def jhash(key: bytes, initval: int) -> int:
    """Linux jhash(key, len(key), initval): lookup3 hashlittle() on a little-endian CPU.

    The kernel reads full 12-byte blocks with __get_unaligned_cpu32 (native = little-endian on x86)
    and adds the 1..12 tail bytes at the same little-endian positions (k[0] into bits 0-7 of a, k[3]
    into bits 24-31, ...), so on x86 the key is consumed as zero-padded little-endian u32 words.
    The seed word differs from jhash2's: the length term is in bytes, not words.
    """
    length = len(key)
    init = (JHASH_INITVAL + length + initval) & _M
    pad = -length % 4
    words = unpack(f"<{(length + pad) >> 2}I", bytes(key) + b"\0" * pad) if length else ()
    return _words_core(words, init)


def jhash2(words: Sequence[int], initval: int) -> int:
    """Linux jhash2(k, length, initval) over u32 words (lookup3's hashword())."""
    return _words_core(words, (JHASH_INITVAL + (len(words) << 2) + initval) & _M)


def jhash_3words(a: int, b: int, c: int, initval: int) -> int:
    """jhash_3words: __jhash_nwords(a, b, c, initval + JHASH_INITVAL + (3 << 2))."""
    iv = (initval + JHASH_INITVAL + 12) & _M
    return _final((a + iv) & _M, (b + iv) & _M, (c + iv) & _M)


def jhash_2words(a: int, b: int, initval: int) -> int:
    """jhash_2words: __jhash_nwords(a, b, 0, initval + JHASH_INITVAL + (2 << 2))."""
    iv = (initval + JHASH_INITVAL + 8) & _M
    return _final((a + iv) & _M, (b + iv) & _M, iv)


def jhash_1word(a: int, initval: int) -> int:
    """jhash_1word: __jhash_nwords(a, 0, 0, initval + JHASH_INITVAL + (1 << 2)).

    Inlined copy of _final: this is the hot path of xt_cluster/nftables IPv4 placement.
    """
    b = c = (initval + JHASH_INITVAL + 4) & _M
    a = (a + b) & _M
    c ^= b
    c = (c - (((b << 14) & _M) | (b >> 18))) & _M
    a ^= c
    a = (a - (((c << 11) & _M) | (c >> 21))) & _M
    b ^= a
    b = (b - (((a << 25) & _M) | (a >> 7))) & _M
    c ^= b
    c = (c - (((b << 16) & _M) | (b >> 16))) & _M
    a ^= c
    a = (a - (((c << 4) & _M) | (c >> 28))) & _M
    b ^= a
    b = (b - (((a << 14) & _M) | (a >> 18))) & _M
    c ^= b
    return (c - (((b << 24) & _M) | (b >> 8))) & _M


def reciprocal_scale(value: int, n: int) -> int:
    """reciprocal_scale(val, ep_ro) = (u32)(((u64)val * ep_ro) >> 32): maps a u32 into 0..n-1.

    Every backend here uses it, not ``% n`` (CLUSTERIP had the same expression open-coded until
    2014 and used ``%`` in its earliest versions): the *high* bits of the hash pick the bucket.
    """
    return ((value & _M) * n) >> 32


# --------------------------------------------------------------------------- validation


def _check_total(backend: Backend, total: int) -> None:
    if isinstance(total, bool) or not isinstance(total, int):
        raise ValueError(f"bucket total must be an integer, got {total!r}")
    if total < 1:
        raise ValueError(f"bucket total must be at least 1, got {total}: configure 1 or more buckets")
    if backend == "nftables" and total < 2:
        raise ValueError(
            "nftables refuses `jhash ... mod 1` (nft_jhash_init: modulus <= 1 is -ERANGE): "
            "configure at least 2 buckets"
        )
    limit = MAX_TOTAL[backend]
    if total > limit:
        raise ValueError(f"{backend} supports at most {limit} buckets, got {total}: configure fewer buckets")


def _check_u32(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _M:
        raise ValueError(f"{name} must be an integer in 0..0xffffffff, got {value!r}")


def _check_port(name: str, value: int | None, mode: HashMode) -> int:
    if value is None:
        raise ValueError(
            f"hash mode {mode} needs {name}: pass it (use 0 for protocols without ports, e.g. ICMP)"
        )
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be a port number in 0..65535, got {value!r}")
    return value


def _swap16(port: int) -> int:
    """A port as the kernel sees it after a native u16 load of its network-order bytes (x86)."""
    return ((port & 0xFF) << 8) | (port >> 8)


# --------------------------------------------------------------------------- per backend


def clusterip_bucket(
    addr: IPv4Address,
    total: int,
    hash_init: int,
    mode: HashMode,
    sport: int | None = None,
    dport: int | None = None,
) -> int:
    """Bucket 1..total that ipt_CLUSTERIP (Linux 6.1 clusterip_hashfn) gives this packet.

    ``sport``/``dport`` are ordinary port numbers; they are needed only by the modes that hash them.
    For protocols without ports (ICMP, GRE, ...) pass 0: proto_ports_offset() returns -EINVAL for
    them and clusterip_hashfn keeps sport = dport = 0. Fragments need no special case: CLUSTERIP
    requires conntrack, and nf_defrag_ipv4 reassembles before conntrack, so the target sees the
    whole datagram's ports.
    """
    if not isinstance(addr, IPv4Address):
        raise ValueError(
            f"CLUSTERIP is IPv4 only, got {addr!r}: use xt_cluster or nftables for IPv6"
        )
    _check_total("clusterip", total)
    _check_u32("CLUSTERIP hash_init", hash_init)
    # clusterip_hashfn: hashval = jhash_Nwords(ntohl(iph->saddr), ...): the address as a host
    # integer, i.e. int(addr) (ntohl undoes network order, so this holds on any CPU).
    saddr = int(addr)
    if mode == "sourceip":
        h = jhash_1word(saddr, hash_init)
    elif mode == "sourceip-sourceport":
        sp = _check_port("sport", sport, mode)
        # sport = ports[0], a u16 read straight from the TCP/UDP header (no ntohs): on x86 the
        # kernel hashes the byte-swapped port number.
        h = jhash_2words(saddr, _swap16(sp), hash_init)
    elif mode == "sourceip-sourceport-destport":
        sp = _check_port("sport", sport, mode)
        dp = _check_port("dport", dport, mode)
        h = jhash_3words(saddr, _swap16(sp), _swap16(dp), hash_init)
    else:
        raise ValueError(f"unknown CLUSTERIP hash mode {mode!r}: use one of {', '.join(HASH_MODES)}")
    # "node numbers are 1..n, not 0..n": reciprocal_scale(hashval, num_total_nodes) + 1.
    return ((h * total) >> 32) + 1


def _xt_cluster_hash_v4(addr: IPv4Address, seed: int) -> int:
    # xt_cluster_hash_ipv4(nf_ct_orig_ipv4_src(ct)): the __be32 address reinterpreted as a native
    # u32 (a __force cast, no ntohl) -> on x86 the address bytes read little-endian.
    return jhash_1word(_LE32.unpack(addr.packed)[0], seed)


def xt_cluster_bucket(addr: IPv4Address | IPv6Address, total: int, seed: int) -> int:
    """Bucket 1..total that xt_cluster gives a connection from ``addr`` (node K = mask bit K-1).

    xt_cluster_hash() hashes the conntrack ORIGINAL-direction source (the master connection's for
    RELATED ones), so replies and fragments (reassembled by nf_defrag before conntrack) follow the
    client. xt_cluster_mt tests ``(1 << hash) & node_mask``: 0-based hash, reported here + 1.
    For IPv6 only the address's top 32 bits count (see below): xt_cluster cannot spread clients
    that share a /32.
    """
    _check_total("xt_cluster", total)
    _check_u32("xt_cluster hash seed", seed)
    if isinstance(addr, IPv4Address):
        h = _xt_cluster_hash_v4(addr, seed)
    elif isinstance(addr, IPv6Address):
        # xt_cluster_hash_ipv6: jhash2(ip6, NF_CT_TUPLE_L3SIZE / sizeof(__u32), seed). But
        # NF_CT_TUPLE_L3SIZE is ARRAY_SIZE(nf_inet_addr.all) = 4 *words*, so the length is 4 / 4 = 1:
        # the kernel hashes only the first u32 (the top 32 bits, loaded natively). Every client in
        # one /32 lands in the same bucket. Measured on Linux 6.18 (tests/lab), present since 2.6.29.
        h = jhash2((_LE32.unpack(addr.packed[:4])[0],), seed)
    else:
        raise ValueError(f"expected an IPv4Address or IPv6Address, got {addr!r}")
    return ((h * total) >> 32) + 1


def nftables_bucket(addr: IPv4Address | IPv6Address, total: int, seed: int) -> int:
    """Value of ``jhash ip saddr mod <total> seed <seed> offset 1`` (``ip6 saddr`` for IPv6).

    nft_jhash_eval: reciprocal_scale(jhash(register bytes, len, seed), modulus) + offset, where the
    register holds the address in network byte order (len 4 or 16). Byte-wise jhash of 4 or 16
    bytes equals jhash_1word / jhash2 of their little-endian words, so on x86 IPv4 this equals
    xt_cluster_bucket() with the same seed (computed independently here on purpose). For IPv6 nft
    hashes all 16 bytes, while xt_cluster hashes only the first 4: the two place IPv6 clients
    differently.
    """
    _check_total("nftables", total)
    _check_u32("nftables seed", seed)
    if not isinstance(addr, IPv4Address | IPv6Address):
        raise ValueError(f"expected an IPv4Address or IPv6Address, got {addr!r}")
    return ((jhash(addr.packed, seed) * total) >> 32) + 1


def bucket_for(
    backend: Backend,
    addr: IPAddress,
    total: int,
    hash: HashSettings,
    sport: int | None = None,
    dport: int | None = None,
) -> int:
    """Bucket 1..total for ``addr`` on ``backend`` with the cluster's hash settings.

    CLUSTERIP uses ``hash.mode`` and ``hash.hash_init`` (and the ports its mode needs);
    xt_cluster and nftables hash only the source address with ``hash.seed`` and ignore ports.
    """
    if backend == "clusterip":
        if not isinstance(addr, IPv4Address):
            raise ValueError(
                f"CLUSTERIP is IPv4 only, got {addr!r}: use xt_cluster or nftables for IPv6"
            )
        return clusterip_bucket(addr, total, hash.hash_init, hash.mode, sport, dport)
    if backend == "xt_cluster":
        return xt_cluster_bucket(addr, total, hash.seed)
    if backend == "nftables":
        return nftables_bucket(addr, total, hash.seed)
    raise ValueError(f"unknown backend {backend!r}: use one of clusterip, xt_cluster, nftables")
