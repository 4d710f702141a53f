"""nftables backend: a table per cluster whose ``owned`` set holds this host's buckets.

Kernel state (IPv4; ``ip6`` family and ``ip6 saddr`` for an IPv6 VIP)::

    table ip cif_<cluster> {
      set owned { typeof numgen inc mod N; elements = { ... } }      # accepts new connections
      set draining { typeof numgen inc mod N; }                      # tracked connections only
      set quiet { typeof numgen inc mod N; }                         # owned, another host drains it
      chain pre { type filter hook prerouting priority mangle; policy accept;
        iifname IF ip daddr VIP <service> ct state invalid jhash ip saddr mod N seed S offset 1 @quiet drop
        iifname IF ip daddr VIP <service> jhash ... @owned meta pkttype set host accept
        iifname IF ip daddr VIP <service> meta l4proto tcp ct state established,related jhash ... @draining
            meta pkttype set host accept
        iifname IF ip daddr VIP icmp type { <errors> } accept      # only if the service is not "all"
        iifname IF ip daddr VIP drop } }
    table arp cif_<cluster> { chain out { ... arp saddr ip VIP arp saddr ether set MAC } }     # IPv4
    table inet cif_<cluster> { chain nd_out { ... ND options: own MAC -> cluster MAC } }   # IPv6 (_nd.py)

Why these choices:
* ``offset 1`` numbers buckets 1..N like the map (and like xt_cluster's node numbers).
* ``meta pkttype set host``: frames to the multicast cluster MAC arrive as PACKET_MULTICAST, which
  TCP discards; accepted packets must be turned into PACKET_HOST.
* ``priority mangle`` (-150): decided after conntrack (-200), so ``ct state`` can tell a connection
  this host tracks from a new one (draining, docs/drain.md). Conntrack entries of packets dropped
  here are never confirmed, so a host still keeps no entries for buckets it does not serve.
* ``ct state invalid`` with ``nf_conntrack_tcp_loose=0`` (set by install) is a mid-stream TCP packet
  of a connection this host never saw: in a ``quiet`` bucket it belongs to the draining host and is
  dropped; otherwise it reaches the TCP stack, which answers with a reset (a failed host's clients
  reconnect at once instead of hanging).
* The set is declared ``typeof numgen inc mod N`` (a 32-bit integer like jhash's result) because
  nftables 1.0.6 crashes listing a set declared ``typeof jhash ...``; ``type mark`` would not accept
  a jhash key. The kernel only sees a 4-byte integer key either way.
* Every rule carries a comment with a fingerprint of the configuration, so install() can adopt an
  unchanged table without writing anything (a restarted hook changes nothing in the kernel).
* Ownership changes are set element add/delete in one libnftables transaction, in-process.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.core.errors import BackendError
from controller.core.model import ClusterSpec
from node_hook import conntrack
from node_hook.backends import _mcast, _prereq
from node_hook.backends._arp import ArpRewrite
from node_hook.backends._common import check_bucket, check_buckets
from node_hook.backends._deadman_nft import ALIVE, NftDeadman, alive_elements, removal_commands
from node_hook.backends._naming import nft_table_name
from node_hook.backends._nd import NdRewrite, interface_mac
from node_hook.backends._nft import NftSession, nft_available
from node_hook.backends._service import Service, fingerprint
from node_hook.backends.base import BucketBackend

SET = "owned"
DRAIN_SET = "draining"
QUIET_SET = "quiet"
CHAIN = "pre"
PRIORITY = "mangle"


class NftablesBackend(BucketBackend):
    """Owns buckets through set elements of ``table <ip|ip6> cif_<cluster>``."""

    name = "nftables"
    can_drain = True

    def __init__(self, spec: ClusterSpec, host_id: str, *, prefix: str = "cif",
                 deadman_s: float | None = None) -> None:
        self.spec = spec
        self.host_id = host_id
        self.total = spec.buckets
        self.table = nft_table_name(spec.name, prefix)
        self.family = "ip6" if spec.vip.version == 6 else "ip"
        self.service = Service.of(spec)
        # ARP (IPv4) or neighbour discovery (IPv6) answers carry the cluster MAC
        self.arp = _neighbour_rewrite(spec, self.table)
        self.rules = self._render_rules()
        self.fp = fingerprint("nftables", self.table, self.rules, self.arp)
        self._nft: NftSession | None = None
        self.deadman_s = deadman_s
        self.deadman = None if deadman_s is None else NftDeadman(
            self.family, self.table, spec.interface, str(spec.vip), deadman_s, f"cif:{self.fp}:{ALIVE}")

    # ------------------------------------------------------------------ rendering

    def _render_rules(self) -> list[str]:
        addr = self.family
        base = f'iifname "{self.spec.interface}" {addr} daddr {self.spec.vip}'
        service = self.service.nft_match()
        bucket = f"jhash {addr} saddr mod {self.total} seed 0x{self.spec.hash.seed:08x} offset 1"
        rules = [
            f"{base} {service} ct state invalid {bucket} @{QUIET_SET} drop".replace("  ", " "),
            f"{base} {service} {bucket} @{SET} meta pkttype set host accept".replace("  ", " "),
            # TCP only: the new owner cannot tell a UDP flow the drainer tracks from a new one (both are
            # "new" to its conntrack), so keeping UDP flows here would answer them twice.
            f"{base} {service} meta l4proto tcp ct state established,related {bucket} @{DRAIN_SET} "
            "meta pkttype set host accept".replace("  ", " "),
        ]
        if not self.service.everything:
            rules.append(f"{base} {self.service.nft_passthrough()} accept")
        rules.append(f"{base} drop")
        return rules

    def _comment(self, index: int) -> str:
        return f"cif:{self.fp}:{index}"

    def install_commands(self, initial: frozenset[int], fresh: bool, rewrite: bool, arp_rewrite: bool) -> str:
        """The single transaction install() applies (exposed for --dry-run and the unit tests)."""
        t = f"{self.family} {self.table}"
        chain = f"add chain {t} {CHAIN} {{ type filter hook prerouting priority {PRIORITY}; policy accept; }}"
        cmds = [f"add table {t}"]
        cmds += [f"add set {t} {name} {{ typeof numgen inc mod {self.total}; }}"
                 for name in (SET, DRAIN_SET, QUIET_SET)]
        if rewrite:
            # The chain is re-created, not just flushed: a base chain's priority cannot change in place
            # (tables of older versions hooked at priority raw). Same transaction: no moment without it.
            cmds += [f"flush chain {t} {CHAIN}", f"delete chain {t} {CHAIN}"]
        cmds.append(chain)
        if fresh or rewrite:
            cmds += [f'add rule {t} {CHAIN} {rule} comment "{self._comment(i)}"' for i, rule in enumerate(self.rules)]
        if fresh and initial:
            cmds.append(f"add element {t} {SET} {{ {', '.join(str(b) for b in sorted(initial))} }}")
        if self.arp is not None and (fresh or arp_rewrite):
            cmds += self.arp.commands(self._comment(len(self.rules)), rewrite=arp_rewrite)
        return "\n".join(cmds)

    # ------------------------------------------------------------------ BucketBackend

    def _session(self) -> NftSession:
        if self._nft is None:
            self._nft = NftSession()
        return self._nft

    def check_prerequisites(self) -> list[str]:
        problems = [
            _prereq.capability_problem(),
            nft_available(),
            _prereq.interface_problem(self.spec.interface),
            _prereq.vip_problem(self.spec.vip, self.spec.interface),
        ]
        if self.total < 2:
            problems.append("nftables refuses jhash mod 1: configure at least 2 buckets")
        if problems[1] is None and problems[0] is None:
            try:
                self._session().list_json("tables")
            except BackendError as exc:
                problems.append(f"nf_tables is not usable here ({exc}): load the nf_tables module")
        return [p for p in problems if p]

    def _state(self) -> tuple[bool, bool, bool]:
        """(fresh, rules differ, arp rules differ) for the installed table."""
        nft = self._session()
        items = nft.list_json(f"table {self.family} {self.table}")
        if items is None:
            return True, False, self.arp is not None
        has_set = any("set" in i and i["set"].get("name") == SET for i in items)
        if not has_set:  # a table of ours without its set: rebuild it as new
            return True, False, self.arp is not None
        comments = [str(i["rule"].get("comment", "")) for i in items if "rule" in i and i["rule"].get("chain") == CHAIN]
        rewrite = comments != [self._comment(i) for i in range(len(self.rules))]
        arp_rewrite = False
        if self.arp is not None:
            arp_rewrite = self.arp.comments(nft) != self.arp.expected_comments(self._comment(len(self.rules)))
        return False, rewrite, arp_rewrite

    def install(self, initial: frozenset[int] = frozenset()) -> None:
        initial = check_buckets(initial, self.total)
        fresh, rewrite, arp_rewrite = self._state()
        deadman = self._deadman_commands(fresh)
        was_joined = _mcast.joined(self.spec.interface, self.spec.cluster_mac)
        _mcast.join(self.spec.interface, self.spec.cluster_mac)
        if fresh or rewrite or arp_rewrite or deadman:
            if fresh:
                # a leftover table without its set: drop it inside the same transaction
                stale = self._session().list_json(f"table {self.family} {self.table}") is not None
                prefix = f"delete table {self.family} {self.table}\n" if stale else ""
            else:
                prefix = ""
            try:
                install = self.install_commands(initial, fresh, rewrite, arp_rewrite)
                commands = "\n".join(c for c in [install, *deadman] if c)
                self._session().run(prefix + commands, f"installing nftables cluster {self.spec.name}")
            except BackendError:
                if not was_joined:
                    _mcast.leave(self.spec.interface, self.spec.cluster_mac)
                raise
        # The ct rules loaded nf_conntrack in this namespace; draining needs strict TCP pickup.
        conntrack.ensure_tcp_loose_off()

    # ------------------------------------------------------------------ dead-man switch (_deadman_nft)

    def _deadman_commands(self, fresh: bool) -> list[str]:
        """Commands that put the alive chain in place (or remove a leftover one when it is off)."""
        items = None if fresh else self._session().list_json(f"table {self.family} {self.table}")
        if self.deadman is None:
            return removal_commands(self.family, self.table, items)
        return self.deadman.install_commands(items, fresh)

    def arm_alive(self) -> None:
        if self.deadman is not None:
            self._session().run(self.deadman.arm_command(), "arming the dead-man switch")

    def refresh_alive(self) -> bool:
        if self.deadman is None:
            return True
        return self._session().try_run(self.deadman.refresh_command()) is None

    def disarm_alive(self) -> None:
        if self.deadman is not None:
            self._session().try_run(self.deadman.disarm_command())

    def alive(self) -> bool:
        """Does the kernel accept the VIP's traffic right now (the alive element is present)?"""
        if self.deadman is None:
            return True
        items = self._session().list_json(f"set {self.family} {self.table} {ALIVE}")
        return items is not None and alive_elements(items) > 0

    def _read_set(self, name: str) -> frozenset[int]:
        items = self._session().list_json(f"set {self.family} {self.table} {name}")
        if items is None:
            raise BackendError(f"nftables set {name} of table {self.family} {self.table} is not installed: "
                               "start the hook (install)")
        return _elements(items, name)

    def _read_sets(self) -> dict[str, frozenset[int]]:
        """All three sets from one listing of the table (one netlink dump on the apply path)."""
        items = self._session().list_json(f"table {self.family} {self.table}")
        if items is None:
            raise BackendError(f"nftables table {self.family} {self.table} is not installed: start the hook (install)")
        found = {}
        for item in items:
            body = item.get("set")
            if isinstance(body, dict) and body.get("name") in (SET, DRAIN_SET, QUIET_SET):
                found[str(body["name"])] = _elements([item], str(body["name"]))
        missing = [n for n in (SET, DRAIN_SET, QUIET_SET) if n not in found]
        if missing:
            raise BackendError(f"nftables table {self.family} {self.table} lacks set(s) {', '.join(missing)}: "
                               "restart the hook to reinstall")
        return found

    def held(self) -> frozenset[int]:
        return self._read_set(SET)

    def draining(self) -> frozenset[int]:
        return self._read_set(DRAIN_SET)

    def grant(self, bucket: int) -> None:
        check_bucket(bucket, self.total)
        self._session().run(f"add element {self.family} {self.table} {SET} {{ {bucket} }}", f"granting bucket {bucket}")

    def revoke(self, bucket: int) -> None:
        check_bucket(bucket, self.total)
        err = self._session().try_run(f"delete element {self.family} {self.table} {SET} {{ {bucket} }}")
        if err is not None and bucket in self.held():
            raise BackendError(f"revoking bucket {bucket} failed: {err}")

    def apply(self, wanted: Iterable[int]) -> frozenset[int]:
        """All revokes and grants in one transaction (no moment with a half-applied map)."""
        return self.apply_drain(wanted)[0]

    def apply_drain(
        self, wanted: Iterable[int], draining: Iterable[int] = (), quiet: Iterable[int] = ()
    ) -> tuple[frozenset[int], frozenset[int]]:
        """The three sets in one transaction: a bucket moves from owned to draining atomically."""
        want = check_buckets(wanted, self.total)
        drain = check_buckets(draining, self.total) - want
        hush = check_buckets(quiet, self.total) & want
        if drain or hush:
            conntrack.ensure_tcp_loose_off()  # checked again: someone may have reset it
        cmds: list[str] = []
        sets = self._read_sets()
        for name, target in ((SET, want), (DRAIN_SET, drain), (QUIET_SET, hush)):
            have = sets[name]
            t = f"{self.family} {self.table} {name}"
            if have - target:
                cmds.append(f"delete element {t} {{ {', '.join(str(b) for b in sorted(have - target))} }}")
            if target - have:
                cmds.append(f"add element {t} {{ {', '.join(str(b) for b in sorted(target - have))} }}")
        if not cmds:
            return sets[SET], sets[DRAIN_SET]
        self._session().run("\n".join(cmds), f"applying buckets {sorted(want)} (draining {sorted(drain)})")
        after = self._read_sets()
        return after[SET], after[DRAIN_SET]

    def remove(self) -> None:
        nft = self._session()
        cmds = []
        if nft.list_json(f"table {self.family} {self.table}") is not None:
            cmds.append(f"delete table {self.family} {self.table}")
        if self.arp is not None and self.arp.comments(nft) is not None:
            cmds.append(self.arp.delete_command())
        if cmds:
            nft.run("\n".join(cmds), f"removing nftables cluster {self.spec.name}")
        _mcast.leave(self.spec.interface, self.spec.cluster_mac)


def _neighbour_rewrite(spec: ClusterSpec, table: str) -> ArpRewrite | NdRewrite | None:
    """The ARP (IPv4) or ND (IPv6) rewrite of the cluster; None for IPv6 on an interface not there yet
    (check_prerequisites reports that, and install() is never reached)."""
    if spec.vip.version == 4:
        return ArpRewrite(table, spec.interface, str(spec.vip), spec.cluster_mac)
    own = interface_mac(spec.interface)
    return None if own is None else NdRewrite(table, spec.interface, str(spec.vip), spec.cluster_mac, own)


def _elements(items: list[dict[str, object]], name: str = SET) -> frozenset[int]:
    """Set elements from ``list set`` JSON: plain integers (no intervals, no timeouts here)."""
    for item in items:
        body = item.get("set")
        if isinstance(body, dict):
            elems = body.get("elem", [])
            out = set()
            for elem in elems if isinstance(elems, list) else []:
                if isinstance(elem, int):
                    out.add(elem)
                elif isinstance(elem, dict) and isinstance(elem.get("elem", {}).get("val"), int):
                    out.add(elem["elem"]["val"])
                else:
                    raise BackendError(f"unexpected element {elem!r} in the {name} set: remove the table and reinstall")
            return frozenset(out)
    raise BackendError(f"the {name} set listing has no set object: upgrade nftables")
