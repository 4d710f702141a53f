"""The IPv6 ND rewrite: its checksum-neutral Reserved word, and the rules it renders."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from node_hook.backends._nd import NdRewrite, checksum_compensation

macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


def icmpv6_checksum(src: str, dst: str, message: bytes) -> int:
    """RFC 4443 2.3: ones'-complement sum over the pseudo-header and the message (checksum field 0)."""
    pseudo = (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
              + struct.pack("!I3xB", len(message), 58))
    data = pseudo + message
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def advert(target: str, mac: str, reserved_low: int, checksum: int = 0) -> bytes:
    """A solicited NA as Linux sends it: flags S|O, target, one target link-layer option."""
    option = bytes([2, 1]) + bytes.fromhex(mac.replace(":", ""))
    return (struct.pack("!BBHHH", 136, 0, checksum, 0x6000, reserved_low)
            + ipaddress.IPv6Address(target).packed + option)


@given(own=macs, cluster=macs)
def test_the_rewritten_message_keeps_its_original_checksum(own: str, cluster: str) -> None:
    src, dst, vip = "2001:2::100", "2001:2::1:7", "2001:2::100"
    original = advert(vip, own, 0)
    checksum = icmpv6_checksum(src, dst, original)
    # the nft rule writes the new MAC and the compensation word and leaves the checksum field alone:
    # the rewritten message must still carry a valid checksum
    rewritten = advert(vip, cluster, checksum_compensation(own, cluster))
    assert icmpv6_checksum(src, dst, rewritten) == checksum


def test_matches_the_value_verified_on_the_kernel() -> None:
    # measured in a namespace: a client accepted this rewrite (no Icmp6InCsumErrors)
    assert checksum_compensation("1a:e5:53:98:75:9b", "01:00:5e:7f:01:01") == 0x8398


def test_rules_match_our_own_mac_and_an_empty_reserved_word_only() -> None:
    nd = NdRewrite("cif_web", "eth1", "2001:2::100", "01:00:5e:00:01:64", "02:00:00:00:00:11")
    advert_rule, solicit_rule = nd.rules()
    fix = checksum_compensation("02:00:00:00:00:11", "01:00:5e:00:01:64")
    assert advert_rule.startswith('oifname "eth1" meta nfproto ipv6 icmpv6 type nd-neighbor-advert ')
    assert "@th,64,128 0x20010002000000000000000000000100" in advert_rule
    assert "@th,192,16 0x0201 @th,208,48 0x020000000011 @th,48,16 0x0000" in advert_rule
    assert advert_rule.endswith(f"@th,208,48 set 0x01005e000164 @th,48,16 set 0x{fix:04x}")
    assert "ip6 saddr 2001:2::100 icmpv6 type nd-neighbor-solicit @th,192,16 0x0101" in solicit_rule
    cmds = nd.commands("cif:abc:3", rewrite=True)
    assert cmds[0] == "add table inet cif_web" and "flush chain inet cif_web nd_out" in cmds
    assert nd.expected_comments("c") == ["c", "c"]
