"""The nftables dead-man switch: the VIP's traffic is dropped unless the hook keeps an element alive.

Kernel state, in the cluster's own table (next to ``set owned`` and ``chain pre``)::

    set alive { type ipv4_addr; flags timeout; }                 # holds the VIP, timeout E
    chain alive { type filter hook prerouting priority -301; policy accept;
      iifname IF ip daddr VIP ip daddr != @alive drop }

Why this shape:
* A separate base chain at priority raw - 1 runs before ``chain pre`` and decides alone (a drop is
  final), so the balancing rules stay exactly as they are.
* The set element carries its own timeout: the kernel drops the VIP's traffic E after the last
  refresh with no process involved, which is what makes "the hook's session is gone" imply "this
  kernel no longer accepts" (controller/core/deadman.py has the timing).
* Refresh is ``delete element; add element ... timeout E`` in one transaction: when the element has
  already expired the delete fails with ENOENT and the transaction changes nothing, so a hook that
  was stalled longer than E can never revive a bucket set that may be stale. Arming (after the
  map was applied) is ``flush set; add element``, which cannot fail on an expired element.
  Both measured on nftables 1.0.6 / kernel 6.18 (the element vanishes from listings at E, and
  packets are dropped from then on: tests/lab/test_deadman_kernel.py).
"""

from __future__ import annotations

from typing import Any

ALIVE = "alive"
#: One below ``priority raw`` (-300), where the balancing chain sits.
PRIORITY = -301


class NftDeadman:
    """Commands for the alive set and chain of one cluster table."""

    def __init__(self, family: str, table: str, interface: str, vip: str, expiry_s: float, comment: str) -> None:
        self.family = family
        self.table = table
        self.vip = vip
        self.expiry_ms = max(1, round(expiry_s * 1000))
        self.comment = comment
        self.rule = f'iifname "{interface}" {family} daddr {vip} {family} daddr != @{ALIVE} drop'

    @property
    def _t(self) -> str:
        return f"{self.family} {self.table}"

    def install_commands(self, items: list[dict[str, Any]] | None, fresh: bool) -> list[str]:
        """What install() adds to its transaction (nothing when the chain is in place and unchanged)."""
        addr_type = "ipv6_addr" if self.family == "ip6" else "ipv4_addr"
        have = None if fresh or items is None else rule_comments(items, ALIVE)
        if have == [self.comment]:
            return []
        cmds = [
            f"add set {self._t} {ALIVE} {{ type {addr_type}; flags timeout; }}",
            f"add chain {self._t} {ALIVE} {{ type filter hook prerouting priority {PRIORITY}; policy accept; }}",
        ]
        if have:
            cmds.append(f"flush chain {self._t} {ALIVE}")
        cmds.append(f'add rule {self._t} {ALIVE} {self.rule} comment "{self.comment}"')
        return cmds

    def arm_command(self) -> str:
        return f"flush set {self._t} {ALIVE}\nadd element {self._t} {ALIVE} {{ {self.vip} timeout {self.expiry_ms}ms }}"

    def refresh_command(self) -> str:
        """Fails (and changes nothing) if the element has expired."""
        return (f"delete element {self._t} {ALIVE} {{ {self.vip} }}\n"
                f"add element {self._t} {ALIVE} {{ {self.vip} timeout {self.expiry_ms}ms }}")

    def disarm_command(self) -> str:
        return f"flush set {self._t} {ALIVE}"


def removal_commands(family: str, table: str, items: list[dict[str, Any]] | None) -> list[str]:
    """Delete a leftover alive chain and set (dead-man switch turned off): else the kernel would drop
    the VIP's traffic for ever."""
    if items is None:
        return []
    cmds = []
    if any("chain" in i and i["chain"].get("name") == ALIVE for i in items):
        cmds.append(f"delete chain {family} {table} {ALIVE}")
    if any("set" in i and i["set"].get("name") == ALIVE for i in items):
        cmds.append(f"delete set {family} {table} {ALIVE}")
    return cmds


def rule_comments(items: list[dict[str, Any]], chain: str) -> list[str] | None:
    """Comments of the rules of ``chain`` in a ``list table`` JSON (None: no such chain)."""
    if not any("chain" in i and i["chain"].get("name") == chain for i in items):
        return None
    return [str(i["rule"].get("comment", "")) for i in items if "rule" in i and i["rule"].get("chain") == chain]


def alive_elements(items: list[dict[str, Any]]) -> int:
    """Number of (unexpired) elements in a ``list set ... alive`` JSON."""
    for item in items:
        body = item.get("set")
        if isinstance(body, dict):
            elems = body.get("elem", [])
            return len(elems) if isinstance(elems, list) else 0
    return 0
