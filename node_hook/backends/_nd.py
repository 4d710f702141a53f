"""IPv6 neighbour discovery with the cluster MAC: an nft ``inet`` table rewriting our ND messages.

Why: like ARP for IPv4 (node_hook.backends._arp), a client must resolve an IPv6 VIP to the cluster's
multicast MAC so the switch floods its frames to every host. Every host answers neighbour
solicitations for the VIP (it is a local address everywhere) with its own MAC in the target
link-layer address option; a host talking from the VIP also sends solicitations whose source
link-layer option carries its own MAC, and a client updates its entry for the VIP from those too.
Two output rules put the cluster MAC into both options.

The checksum: nftables 1.0.6 (Debian 12) writes raw ``@th`` payload without updating the ICMPv6
checksum, and the receiver drops the message. So each rule also writes the 16 low bits of the
message's *Reserved* field (RFC 4861 4.3/4.4: "MUST be ignored by the receiver") with the value
that keeps the ones'-complement sum unchanged (RFC 1624 arithmetic). That value depends on the MAC
being replaced, so the rules match the interface's own MAC in the option, and an empty Reserved
field: a message that does not look exactly as expected goes out unchanged (the client learns one
host's MAC, the same degradation as having no rule), never with a broken checksum. The table is
re-installed when the interface's MAC changes (it is part of the backend's fingerprint).

Offsets (ICMPv6 header = ``@th``): type 0, checksum 2, Reserved 4..7 (NA: flags in the top 3 bits,
so only bytes 6..7 are used), target 8..23, first option at 24 (type, length 1, MAC at 26..31).
Linux puts the link-layer option first; an NA to a unicast solicitation carries none (no change).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from node_hook.backends._mcast import mac_bytes
from node_hook.backends._nft import NftSession

CHAIN = "nd_out"
#: ND option types (RFC 4861 4.6.1)
SOURCE_LINK_LAYER = 1
TARGET_LINK_LAYER = 2


def _ones_complement_sum(words: list[int]) -> int:
    total = 0
    for word in words:
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _words(mac: str) -> list[int]:
    raw = mac_bytes(mac)
    return [int.from_bytes(raw[i : i + 2], "big") for i in (0, 2, 4)]


def checksum_compensation(old_mac: str, new_mac: str) -> int:
    """The 16-bit word that, written where a zero word was, offsets replacing ``old_mac`` by ``new_mac``.

    With ``~`` the ones'-complement negation: sum(new) + c == sum(old), so c = sum(old) + ~sum(new).
    """
    old_sum = _ones_complement_sum(_words(old_mac))
    new_sum = _ones_complement_sum(_words(new_mac))
    return _ones_complement_sum([old_sum, ~new_sum & 0xFFFF])


def interface_mac(interface: str) -> str | None:
    """The MAC of ``interface`` in this network namespace (None if it has none or is absent)."""
    try:
        mac = Path(f"/sys/class/net/{interface}/address").read_text().strip().lower()
    except OSError:
        return None
    try:
        mac_bytes(mac)
    except ValueError:
        return None
    return mac


def _hex(mac: str) -> str:
    return "0x" + mac_bytes(mac).hex()


def _hex_ipv6(address: str) -> str:
    return "0x" + ipaddress.IPv6Address(address).packed.hex()


@dataclass(frozen=True)
class NdRewrite:
    """The ND table of one cluster: ``table inet <table> { chain nd_out { ... } }``.

    ``own_mac`` is the interface's MAC as the kernel puts it into the options (read at start).
    """

    table: str
    interface: str
    vip: str
    mac: str
    own_mac: str

    def rules(self) -> list[str]:
        fix = checksum_compensation(self.own_mac, self.mac)
        own, cluster = _hex(self.own_mac), _hex(self.mac)
        head = f'oifname "{self.interface}" meta nfproto ipv6'
        option = "@th,192,16 0x{:02x}01 @th,208,48 {}"
        advert = (
            f"{head} icmpv6 type nd-neighbor-advert @th,64,128 {_hex_ipv6(self.vip)} "
            f"{option.format(TARGET_LINK_LAYER, own)} @th,48,16 0x0000 "
            f"@th,208,48 set {cluster} @th,48,16 set 0x{fix:04x}"
        )
        solicit = (
            f"{head} ip6 saddr {self.vip} icmpv6 type nd-neighbor-solicit "
            f"{option.format(SOURCE_LINK_LAYER, own)} @th,48,16 0x0000 "
            f"@th,208,48 set {cluster} @th,48,16 set 0x{fix:04x}"
        )
        return [advert, solicit]

    def commands(self, comment: str, rewrite: bool) -> list[str]:
        """Create (or, with ``rewrite``, replace the rules of) the table; idempotent."""
        cmds = [
            f"add table inet {self.table}",
            f"add chain inet {self.table} {CHAIN} {{ type filter hook output priority filter; policy accept; }}",
        ]
        if rewrite:
            cmds.append(f"flush chain inet {self.table} {CHAIN}")
        cmds += [f'add rule inet {self.table} {CHAIN} {rule} comment "{comment}"' for rule in self.rules()]
        return cmds

    def expected_comments(self, comment: str) -> list[str]:
        """What :meth:`comments` reads back from a table installed with ``comment``."""
        return [comment] * len(self.rules())

    def delete_command(self) -> str:
        return f"delete table inet {self.table}"

    def comments(self, nft: NftSession) -> list[str] | None:
        """The rule comments of the installed table (None: no table)."""
        items = nft.list_json(f"table inet {self.table}")
        if items is None:
            return None
        return [str(i["rule"].get("comment", "")) for i in items if "rule" in i]
