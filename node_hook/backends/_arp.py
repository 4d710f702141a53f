"""ARP with the cluster MAC: an nft ``arp`` table rewriting the sender MAC of our ARP for the VIP.

Why: a client must resolve the VIP to the cluster's multicast MAC so the switch floods its frames
to every host. Every host answers ARP for the VIP (it is a local address everywhere); the rule makes
every such answer carry the cluster MAC, so whichever answer the client keeps, it is right (with
dynamic ARP and no rewrite, the client learns one host's own MAC and only that host sees its
traffic). Requests a host sends from the VIP are rewritten too, which is equally harmless.

Used by the xt_cluster and nftables backends. CLUSTERIP does this itself (its arp_mangle hook).
The commands are returned as text so the nftables backend can put them into its single install
transaction; xt_cluster applies them as their own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from node_hook.backends._nft import NftSession

CHAIN = "out"


@dataclass(frozen=True)
class ArpRewrite:
    """The ARP table of one cluster: ``table arp <table> { chain out { ... } }``."""

    table: str
    interface: str
    vip: str
    mac: str

    def rule(self) -> str:
        return (
            f'oifname "{self.interface}" arp htype 1 arp ptype ip arp hlen 6 arp plen 4 '
            f"arp saddr ip {self.vip} arp saddr ether set {self.mac.lower()}"
        )

    def commands(self, comment: str, rewrite: bool) -> list[str]:
        """Create (or, with ``rewrite``, replace the rule of) the table; idempotent."""
        cmds = [
            f"add table arp {self.table}",
            f"add chain arp {self.table} {CHAIN} {{ type filter hook output priority filter; policy accept; }}",
        ]
        if rewrite:
            cmds.append(f"flush chain arp {self.table} {CHAIN}")
        cmds.append(f'add rule arp {self.table} {CHAIN} {self.rule()} comment "{comment}"')
        return cmds

    def expected_comments(self, comment: str) -> list[str]:
        """What :meth:`comments` reads back from a table installed with ``comment``."""
        return [comment]

    def delete_command(self) -> str:
        return f"delete table arp {self.table}"

    def comments(self, nft: NftSession) -> list[str] | None:
        """The rule comments of the installed table (None: no table)."""
        items = nft.list_json(f"table arp {self.table}")
        if items is None:
            return None
        return [str(i["rule"].get("comment", "")) for i in items if "rule" in i]
