"""xt_cluster backend: ``cluster`` match nodemasks say which buckets this host accepts, and how.

Kernel state (legacy iptables, mangle table; IPv4)::

    -A PREROUTING -d VIP/32 -i IF -m comment --comment cif:<fp>:jump -j CIF-<cluster>
    -A CIF-<cluster> -p tcp [<ports>] -m tcp ! --syn -m conntrack --ctstate NEW
                     -m cluster --cluster-local-nodemask Q ... -m comment --comment cif:<fp>:quiet -j DROP
    -A CIF-<cluster> <service> -m cluster --cluster-local-nodemask M --cluster-total-nodes N
                     --cluster-hash-seed S -m comment --comment cif:<fp>:balance -j RETURN
    -A CIF-<cluster> <service> -m conntrack --ctstate RELATED,ESTABLISHED --ctproto tcp
                     -m cluster --cluster-local-nodemask D ... -m comment --comment cif:<fp>:drain -j RETURN
    -A CIF-<cluster> -p icmp --icmp-type <error> ... -j RETURN       (3 rules, unless protocol all)
    -A CIF-<cluster> -j DROP
    plus the nft ``arp`` table of node_hook.backends._arp.

M: owned (new and tracked connections); D: draining (this host's tracked TCP connections only);
Q: quiet (owned while another host drains it). docs/drain.md.

Why:
* mangle PREROUTING runs after conntrack (the match hashes the conntrack original source, so
  RELATED traffic such as ICMP errors of a balanced connection follows it, and ``--ctstate`` is
  known) and before routing.
* The match itself turns PACKET_MULTICAST into PACKET_HOST (for every packet it looks at, before it
  hashes), so no extra rule is needed for that; the balance rule looks at every service packet.
* Bucket b is mask bit b-1. A change is one atomic table replace of the first three rules of our
  chain (python-iptables replace_rule + commit), built by patching the mask bytes of prebuilt rules.
* Owning nothing: libxt_cluster refuses mask 0 (1-32), so ``! --cluster-local-nodemask <all
  buckets>`` is installed instead: it matches no packet, and unlike raw mask 0 (which the kernel
  would take) it survives an iptables-save | iptables-restore round trip. Empty D and Q likewise.
* The cluster match cannot hash a packet conntrack does not track (no entry: it never matches), so
  unlike nftables this chain cannot look at ``ctstate INVALID`` packets per bucket; they all fall
  through to the DROP. It relies instead on the kernel default ``nf_conntrack_tcp_loose=1``:
  a mid-stream TCP packet of a connection this host never saw gets a *new* conntrack entry that is
  not a SYN. In Q it is dropped (the draining host owns that connection; the entry is never
  confirmed); in M otherwise it reaches the TCP stack, which answers with a reset (a failed host's
  clients reconnect at once). With loose=0 such packets are INVALID and dropped everywhere: drains
  still keep every session, but a failed host's clients are not reset (logged at install).
* D is TCP only (``--ctproto tcp``; for a UDP service the rule never matches): the new owner cannot
  tell a UDP flow the old owner tracks from a new one, so UDP moves at once, as with nftables.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable
from typing import Any

from controller.core.errors import BackendError
from controller.core.model import ClusterSpec
from node_hook import conntrack
from node_hook.backends import _mcast, _prereq
from node_hook.backends._arp import ArpRewrite
from node_hook.backends._common import check_bucket, check_buckets
from node_hook.backends._deadman_ipt import RecentDeadman, RecentDeadmanMixin
from node_hook.backends._iptrules import (
    add_service_matches,
    chain_comments,
    drop_chain,
    guard_rules,
    jump_rules,
    new_rule,
    ports_problem,
)
from node_hook.backends._naming import ipt_chain_name, nft_table_name
from node_hook.backends._nft import NftSession, nft_available
from node_hook.backends._service import Service, fingerprint
from node_hook.backends._xtables import (
    MATCH_HEADER,
    XtablesLock,
    change_table,
    entry_matches,
    import_iptc,
    read_table,
    rule_comment,
)
from node_hook.backends.base import BucketBackend

log = logging.getLogger("clusterip.hook")

BUILTIN = "PREROUTING"
XT_CLUSTER_F_INV = 1
#: struct xt_cluster_match_info { u32 total_nodes, node_mask, hash_seed, flags; }
_INFO = struct.Struct("<IIII")
#: The first rules of our chain, in order, by the last part of their comment: quiet, owned, draining.
QUIET, BALANCE, DRAIN = "quiet", "balance", "drain"
ROLES = (QUIET, BALANCE, DRAIN)
#: struct xt_comment_info { char comment[256]; }
COMMENT_LEN = 256


def mask_of(buckets: Iterable[int]) -> int:
    """Bucket b -> bit b-1 (``--cluster-local-node b``)."""
    mask = 0
    for bucket in buckets:
        mask |= 1 << (bucket - 1)
    return mask


def buckets_of(mask: int, total: int, inverted: bool) -> frozenset[int]:
    """Buckets a nodemask (possibly inverted) accepts."""
    owned = {b for b in range(1, total + 1) if mask >> (b - 1) & 1}
    return frozenset(set(range(1, total + 1)) - owned) if inverted else frozenset(owned)


def mask_argument(wanted: frozenset[int], total: int) -> str:
    """``--cluster-local-nodemask`` value for ``wanted`` ('!<all>' when it is empty)."""
    if not wanted:
        return f"!0x{(1 << total) - 1:08x}"
    return f"0x{mask_of(wanted):08x}"


def mask_fields(wanted: frozenset[int], total: int) -> tuple[int, int]:
    """(node_mask, flags) as the kernel stores them for ``wanted``."""
    if not wanted:
        return (1 << total) - 1, XT_CLUSTER_F_INV
    return mask_of(wanted), 0


def comment_text(data: bytes) -> str:
    """The text of a raw ``comment`` match (struct xt_comment_info), without libxtables."""
    return data[:COMMENT_LEN].split(b"\0", 1)[0].decode(errors="replace")


def role_targets(wanted: frozenset[int], draining: frozenset[int], quiet: frozenset[int]) -> dict[str, frozenset[int]]:
    """The three nodemasks' buckets: draining excludes owned ones, quiet is a subset of the owned."""
    return {QUIET: quiet & wanted, BALANCE: wanted, DRAIN: draining - wanted}


class XtClusterBackend(RecentDeadmanMixin, BucketBackend):
    """Owns buckets through the nodemasks of three ``-m cluster`` rules (quiet, owned, draining)."""

    name = "xt_cluster"
    can_drain = True

    def __init__(self, spec: ClusterSpec, host_id: str, *, prefix: str = "cif",
                 deadman_s: float | None = None) -> None:
        self.spec = spec
        self.host_id = host_id
        self.total = spec.buckets
        self.chain = ipt_chain_name(spec.name, prefix)
        self.service = Service.of(spec)
        self.vip = str(spec.vip)
        self.arp = ArpRewrite(nft_table_name(spec.name, prefix), spec.interface, self.vip, spec.cluster_mac)
        self.fp = fingerprint("xt_cluster", self.chain, spec.interface, self.vip, self.service, self.total,
                              spec.hash.seed, self.arp)
        self.comment = f"cif:{self.fp}"
        self._lock = XtablesLock()
        self._table: Any = None
        #: per role: (prebuilt rule, its cluster match), patched for each change
        self._templates: dict[str, tuple[Any, Any]] = {}
        self._nft: NftSession | None = None
        self._loose_warned = False
        self.deadman_s = deadman_s
        #: built even when off: install() then finds and removes a leftover rule of ours
        self.deadman = RecentDeadman(self.chain, spec.interface, self.vip, deadman_s or 1, f"{self.comment}:alive")

    # ------------------------------------------------------------------ rules

    def _mangle(self) -> Any:
        if self._table is None:
            iptc = import_iptc()
            self._table = iptc.Table(iptc.Table.MANGLE, autocommit=False)
        return self._table

    def _cluster_match(self, rule: Any, buckets: frozenset[int]) -> None:
        match = rule.create_match("cluster")
        match.cluster_total_nodes = str(self.total)
        match.cluster_local_nodemask = mask_argument(buckets, self.total)
        match.cluster_hash_seed = f"0x{self.spec.hash.seed:08x}"

    def balance_rule(self, wanted: frozenset[int]) -> Any:
        """Owned buckets: every packet of the service (built through libxtables: slow, install only)."""
        rule = new_rule(f"{self.comment}:{BALANCE}", "RETURN")
        add_service_matches(rule, self.service)
        self._cluster_match(rule, wanted)
        return rule

    def quiet_rule(self, quiet: frozenset[int]) -> Any:
        """Quiet buckets: drop a TCP packet that is not a SYN yet opens a conntrack entry, i.e. the
        middle of a connection this host never saw (the draining host's), instead of resetting it.

        Over-matching is harmless (the target is DROP): for a UDP service or protocol all the rule
        takes every TCP port, traffic the chain would not accept here anyway.
        """
        rule = new_rule(f"{self.comment}:{QUIET}", "DROP")
        rule.protocol = "tcp"
        tcp = rule.create_match("tcp")
        if self.service.protocol == "tcp" and len(self.service.ports) == 1:
            tcp.dport = str(self.service.ports[0])
        elif self.service.protocol == "tcp" and self.service.ports:
            rule.create_match("multiport").dports = ",".join(str(p) for p in self.service.ports)
        tcp.syn = "!"
        rule.create_match("conntrack").ctstate = "NEW"
        self._cluster_match(rule, quiet)
        return rule

    def drain_rule(self, draining: frozenset[int]) -> Any:
        """Draining buckets: only packets of TCP connections this host tracks (and their ICMP errors)."""
        rule = new_rule(f"{self.comment}:{DRAIN}", "RETURN")
        add_service_matches(rule, self.service)
        state = rule.create_match("conntrack")
        state.ctstate = "RELATED,ESTABLISHED"
        state.ctproto = "tcp"
        self._cluster_match(rule, draining)
        return rule

    def _build(self, role: str, buckets: frozenset[int]) -> Any:
        return {QUIET: self.quiet_rule, BALANCE: self.balance_rule, DRAIN: self.drain_rule}[role](buckets)

    def _patched(self, wanted: frozenset[int], role: str = BALANCE) -> Any:
        """The ``role`` rule for ``wanted`` by patching mask/flags bytes of a cached rule (~µs)."""
        if role not in self._templates:
            rule = self._build(role, frozenset({1}))
            self._templates[role] = (rule, next(m for m in rule.matches if m.name == "cluster"))
        rule, match = self._templates[role]
        mask, flags = mask_fields(wanted, self.total)
        buf = match._match_buf
        struct.pack_into("<I", buf, MATCH_HEADER + 4, mask)
        struct.pack_into("<I", buf, MATCH_HEADER + 12, flags)
        return rule

    def _jump(self) -> Any:
        return new_rule(f"{self.comment}:jump", self.chain, self.spec.interface, self.vip)

    def _chain_rules(self) -> list[Any]:
        """Every rule of our chain in order, the three cluster rules with bucket 1 (patched later)."""
        one = frozenset({1})
        return [*(self._build(role, one) for role in ROLES), *guard_rules(self.service, self.comment)]

    def expected_comments(self) -> list[str]:
        return [rule_comment(r) for r in self._chain_rules()]

    # ------------------------------------------------------------------ reading

    def _read_roles(self, table: Any, strict: bool = True) -> dict[str, frozenset[int]]:
        """The buckets of each role's nodemask, read from the kernel's entries (no libxtables).

        ``strict``: the chain must start with exactly quiet, balance, drain (what apply replaces by
        position). Otherwise any rule of ours is found by its comment's role, wherever it sits: an
        install adopting a chain of an older layout (the balance rule alone, first) keeps its buckets.
        """
        if not table.is_chain(self.chain):
            raise BackendError(f"iptables chain mangle/{self.chain} is not installed: start the hook (install)")
        found: dict[str, frozenset[int]] = {}
        order: list[str] = []
        entry = table.first_rule(self.chain)
        while entry:
            matches = entry_matches(entry)
            comment = next((comment_text(d) for n, d in matches if n == "comment"), "")
            role = comment.rsplit(":", 1)[-1] if comment.startswith("cif:") else ""
            cluster = next((d for n, d in matches if n == "cluster"), None)
            order.append(role)
            if role in ROLES and cluster is not None and role not in found:
                total, mask, _seed, flags = _INFO.unpack_from(cluster)
                if total != self.total:
                    raise BackendError(
                        f"mangle/{self.chain} has --cluster-total-nodes {total}, the config {self.total}: "
                        "restart the hook to reinstall"
                    )
                found[role] = buckets_of(mask, total, bool(flags & XT_CLUSTER_F_INV))
            if strict and len(order) == len(ROLES):
                break
            entry = table.next_rule(entry)
        if strict and (tuple(order) != ROLES or len(found) != len(ROLES)):
            raise BackendError(f"the first rules of mangle/{self.chain} are not our quiet, balance and drain "
                               "rules: restart the hook to reinstall")
        if BALANCE not in found:
            raise BackendError(f"mangle/{self.chain} has no balance rule of ours: restart the hook to reinstall")
        return found

    def _read_held(self, table: Any) -> frozenset[int]:
        return self._read_roles(table)[BALANCE]

    # ------------------------------------------------------------------ BucketBackend

    def check_prerequisites(self) -> list[str]:
        problems = [_prereq.capability_problem(), _prereq.interface_problem(self.spec.interface)]
        if self.spec.vip.version == 6:
            problems.append("the xt_cluster backend here is IPv4 only (xt_cluster hashes only the top 32 bits "
                            "of IPv6 sources): use nftables for an IPv6 VIP")
        else:
            problems.append(_prereq.vip_problem(self.spec.vip, self.spec.interface))
        if self.total > 32:
            problems.append(f"xt_cluster takes at most 32 buckets, the config has {self.total}")
        problems += [
            ports_problem(self.service),
            _prereq.xt_extension_problem("matches", "cluster", "xt_cluster"),
            _prereq.xt_extension_problem("matches", "comment", "xt_comment"),
            _prereq.xt_extension_problem("matches", "conntrack", "xt_conntrack"),
            nft_available(),
        ]
        if self.deadman_s is not None:
            problems.append(_prereq.xt_extension_problem("matches", "recent", "xt_recent"))
        try:
            import_iptc()
        except BackendError as exc:
            problems.append(str(exc))
        return [p for p in problems if p]

    def _session(self) -> NftSession:
        if self._nft is None:
            self._nft = NftSession()
        return self._nft

    def _iptables_state(self) -> tuple[bool, dict[str, frozenset[int]] | None]:
        """(rules are ours and unchanged, the buckets of each role the existing rules hold, or None)."""
        table = self._mangle()

        def read(t: Any) -> tuple[bool, dict[str, frozenset[int]] | None]:
            comments = chain_comments(t, self.chain)
            if comments is None:
                return False, None
            try:
                have: dict[str, frozenset[int]] | None = self._read_roles(t, strict=False)
            except BackendError:
                have = None
            jumps = [rule_comment(r) for r in jump_rules(t, BUILTIN, self.chain)]
            unchanged = comments == self.expected_comments() and jumps == [f"{self.comment}:jump"]
            # our jump must come first in PREROUTING: nothing may accept the VIP's traffic before it
            unchanged = unchanged and self._first_is_jump(t)
            return unchanged, have

        return read_table(table, f"reading mangle/{self.chain}", read)

    def _first_is_jump(self, table: Any) -> bool:
        iptc = import_iptc()
        rules = iptc.Chain(table, BUILTIN).rules
        return bool(rules) and rules[0].target is not None and rules[0].target.name == self.chain

    def install(self, initial: frozenset[int] = frozenset()) -> None:
        initial = check_buckets(initial, self.total)
        if self.total > 32:
            raise BackendError(f"xt_cluster takes at most 32 buckets, the config has {self.total}")
        self._install_deadman()
        unchanged, have = self._iptables_state()
        arp_comments = self.arp.comments(self._session())
        arp_fresh = arp_comments is None
        arp_ok = arp_comments == [f"{self.comment}:arp"]
        was_joined = _mcast.joined(self.spec.interface, self.spec.cluster_mac)
        _mcast.join(self.spec.interface, self.spec.cluster_mac)
        try:
            if not arp_ok:
                self._session().run("\n".join(self.arp.commands(f"{self.comment}:arp", rewrite=not arp_fresh)),
                                    f"installing the ARP rewrite of cluster {self.spec.name}")
            if not unchanged:
                # a rewritten chain keeps what the kernel did (owned, and a drain in progress)
                keep = have if have is not None else {BALANCE: initial}
                roles = role_targets(keep.get(BALANCE, frozenset()), keep.get(DRAIN, frozenset()),
                                     keep.get(QUIET, frozenset()))
                change_table(self._mangle(), self._lock, f"installing xt_cluster rules of {self.spec.name}",
                             lambda t: self._write_rules(t, roles))
        except BackendError:
            if arp_fresh and not arp_ok:
                self._session().try_run(self.arp.delete_command())
            if not was_joined:
                _mcast.leave(self.spec.interface, self.spec.cluster_mac)
            raise
        # the conntrack and cluster matches loaded nf_conntrack in this namespace
        self._check_pickup()

    def _check_pickup(self) -> None:
        """Say once if conntrack will not pick up mid-stream TCP (nf_conntrack_tcp_loose=0): the
        failed host's clients then hang instead of being reset (the module docstring says why)."""
        try:
            loose = conntrack.tcp_loose()
        except BackendError as exc:
            loose, problem = None, str(exc)
        else:
            problem = "nf_conntrack is not loaded" if loose is None else ""
        if loose is not None and loose >= 1:
            self._loose_warned = False
            return
        if not self._loose_warned:
            self._loose_warned = True
            reason = problem or f"{conntrack.TCP_LOOSE} is 0"
            log.warning("%s: the new owner of a failed host's bucket cannot reset that host's clients (they "
                        "wait for their own timeout); drains still keep their sessions. The xt_cluster backend "
                        "needs the kernel default nf_conntrack_tcp_loose=1 for the reset (docs/drain.md)", reason)

    def _write_rules(self, table: Any, roles: dict[str, frozenset[int]]) -> None:
        iptc = import_iptc()
        drop_chain(table, BUILTIN, self.chain)
        table.create_chain(self.chain)
        own = iptc.Chain(table, self.chain)
        for rule in self._chain_rules():
            own.append_rule(rule)
        # Then the real masks as patched bytes, in the same commit (bucket 1 is never accepted on its
        # own): libxt_cluster 1.8.9 refuses nodemasks above 32 ("out of range (1-32)"), so a
        # 12-bucket host owning nothing (! 0xfff) or buckets above 5 cannot be built from text.
        for index, role in enumerate(ROLES):
            own.replace_rule(self._patched(roles[role], role), index)
        iptc.Chain(table, BUILTIN).insert_rule(self._jump(), 0)

    def roles(self) -> dict[str, frozenset[int]]:
        """Quiet, owned (balance) and draining buckets, read back from the kernel."""
        return read_table(self._mangle(), f"reading mangle/{self.chain}", self._read_roles)

    def held(self) -> frozenset[int]:
        return self.roles()[BALANCE]

    def draining(self) -> frozenset[int]:
        return self.roles()[DRAIN]

    def apply(self, wanted: Iterable[int]) -> frozenset[int]:
        """One atomic table replace: the whole new set applies at once (and no bucket drains)."""
        return self.apply_drain(wanted)[0]

    def apply_drain(
        self, wanted: Iterable[int], draining: Iterable[int] = (), quiet: Iterable[int] = ()
    ) -> tuple[frozenset[int], frozenset[int]]:
        """The three nodemasks in one commit: a bucket moves from owned to draining atomically."""
        target = role_targets(check_buckets(wanted, self.total), check_buckets(draining, self.total),
                              check_buckets(quiet, self.total))
        if target[DRAIN] or target[QUIET]:
            self._check_pickup()
        if self.roles() == target:
            return target[BALANCE], target[DRAIN]
        rules = [(index, self._patched(target[role], role)) for index, role in enumerate(ROLES)]

        def edit(table: Any) -> None:
            iptc = import_iptc()
            self._read_roles(table)  # still our chain with our three rules first
            own = iptc.Chain(table, self.chain)
            for index, rule in rules:
                own.replace_rule(rule, index)

        change_table(self._mangle(), self._lock,
                     f"applying buckets {sorted(target[BALANCE])} (draining {sorted(target[DRAIN])})", edit)
        after = self.roles()
        return after[BALANCE], after[DRAIN]

    def grant(self, bucket: int) -> None:
        """Own ``bucket`` too; a drain of another bucket in progress stays as it is."""
        check_bucket(bucket, self.total)
        have = self.roles()
        self.apply_drain(have[BALANCE] | {bucket}, have[DRAIN], have[QUIET])

    def revoke(self, bucket: int) -> None:
        """Stop owning ``bucket`` (no drain); the other buckets keep their roles."""
        check_bucket(bucket, self.total)
        have = self.roles()
        self.apply_drain(have[BALANCE] - {bucket}, have[DRAIN], have[QUIET])

    def remove(self) -> None:
        if os.path.exists(self.deadman.proc):
            self.deadman.remove()
        change_table(self._mangle(), self._lock, f"removing xt_cluster rules of {self.spec.name}",
                     lambda t: drop_chain(t, BUILTIN, self.chain))
        self._session().try_run(self.arp.delete_command())
        _mcast.leave(self.spec.interface, self.spec.cluster_mac)
