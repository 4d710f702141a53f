"""xt_cluster backend: the ``cluster`` match's local nodemask says which buckets this host accepts.

Kernel state (legacy iptables, mangle table; IPv4)::

    -A PREROUTING -d VIP/32 -i IF -m comment --comment cif:<fp>:jump -j CIF-<cluster>
    -A CIF-<cluster> <service> -m cluster --cluster-local-nodemask M --cluster-total-nodes N
                     --cluster-hash-seed S -m comment --comment cif:<fp>:balance -j RETURN
    -A CIF-<cluster> -p icmp --icmp-type <error> ... -j RETURN       (3 rules, unless protocol all)
    -A CIF-<cluster> -j DROP
    plus the nft ``arp`` table of node_hook.backends._arp.

Why:
* mangle PREROUTING runs after conntrack (the match hashes the conntrack original source, so
  RELATED traffic such as ICMP errors of a balanced connection follows it) and before routing.
* The match itself turns PACKET_MULTICAST into PACKET_HOST, so no extra rule is needed for that.
* Bucket b is mask bit b-1. A change is one atomic table replace of the first rule of our chain
  (python-iptables replace_rule + commit), built by patching the mask bytes of a prebuilt rule.
* Owning nothing: libxt_cluster refuses mask 0 (1-32), so ``! --cluster-local-nodemask <all
  buckets>`` is installed instead: it matches no packet, and unlike raw mask 0 (which the kernel
  would take) it survives an iptables-save | iptables-restore round trip.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import Any

from controller.core.errors import BackendError
from controller.core.model import ClusterSpec
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

BUILTIN = "PREROUTING"
XT_CLUSTER_F_INV = 1
#: struct xt_cluster_match_info { u32 total_nodes, node_mask, hash_seed, flags; }
_INFO = struct.Struct("<IIII")


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


class XtClusterBackend(RecentDeadmanMixin, BucketBackend):
    """Owns buckets through the nodemask of one ``-m cluster`` rule."""

    name = "xt_cluster"

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
        self._template: Any = None
        self._template_match: Any = None
        self._nft: NftSession | None = None
        self.deadman_s = deadman_s
        #: built even when off: install() then finds and removes a leftover rule of ours
        self.deadman = RecentDeadman(self.chain, spec.interface, self.vip, deadman_s or 1, f"{self.comment}:alive")

    # ------------------------------------------------------------------ rules

    def _mangle(self) -> Any:
        if self._table is None:
            iptc = import_iptc()
            self._table = iptc.Table(iptc.Table.MANGLE, autocommit=False)
        return self._table

    def balance_rule(self, wanted: frozenset[int]) -> Any:
        """The first rule of our chain, for ``wanted`` (built through libxtables: slow, install only)."""
        rule = new_rule(f"{self.comment}:balance", "RETURN")
        add_service_matches(rule, self.service)
        match = rule.create_match("cluster")
        match.cluster_total_nodes = str(self.total)
        match.cluster_local_nodemask = mask_argument(wanted, self.total)
        match.cluster_hash_seed = f"0x{self.spec.hash.seed:08x}"
        return rule

    def _patched(self, wanted: frozenset[int]) -> Any:
        """The balance rule for ``wanted`` by patching mask/flags bytes of a cached rule (~µs)."""
        if self._template is None:
            self._template = self.balance_rule(frozenset({1}))
            self._template_match = next(m for m in self._template.matches if m.name == "cluster")
        mask, flags = mask_fields(wanted, self.total)
        buf = self._template_match._match_buf
        struct.pack_into("<I", buf, MATCH_HEADER + 4, mask)
        struct.pack_into("<I", buf, MATCH_HEADER + 12, flags)
        return self._template

    def _jump(self) -> Any:
        return new_rule(f"{self.comment}:jump", self.chain, self.spec.interface, self.vip)

    def expected_comments(self) -> list[str]:
        return [rule_comment(r) for r in [self.balance_rule(frozenset({1})), *guard_rules(self.service, self.comment)]]

    # ------------------------------------------------------------------ reading

    def _read_held(self, table: Any) -> frozenset[int]:
        if not table.is_chain(self.chain):
            raise BackendError(f"iptables chain mangle/{self.chain} is not installed: start the hook (install)")
        entry = table.first_rule(self.chain)
        if not entry:
            raise BackendError(f"iptables chain mangle/{self.chain} is empty: reinstall (restart the hook)")
        for name, data in entry_matches(entry):
            if name == "cluster":
                total, mask, _seed, flags = _INFO.unpack_from(data)
                if total != self.total:
                    raise BackendError(
                        f"mangle/{self.chain} has --cluster-total-nodes {total}, the config {self.total}: "
                        "restart the hook to reinstall"
                    )
                return buckets_of(mask, total, bool(flags & XT_CLUSTER_F_INV))
        raise BackendError(f"the first rule of mangle/{self.chain} is not our cluster rule: restart the hook")

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

    def _iptables_state(self) -> tuple[bool, frozenset[int] | None]:
        """(rules are ours and unchanged, buckets the existing rule holds or None)."""
        table = self._mangle()

        def read(t: Any) -> tuple[bool, frozenset[int] | None]:
            comments = chain_comments(t, self.chain)
            if comments is None:
                return False, None
            try:
                have: frozenset[int] | None = self._read_held(t)
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
                keep = have if have is not None else initial
                change_table(self._mangle(), self._lock, f"installing xt_cluster rules of {self.spec.name}",
                             lambda t: self._write_rules(t, keep))
        except BackendError:
            if arp_fresh and not arp_ok:
                self._session().try_run(self.arp.delete_command())
            if not was_joined:
                _mcast.leave(self.spec.interface, self.spec.cluster_mac)
            raise

    def _write_rules(self, table: Any, keep: frozenset[int]) -> None:
        iptc = import_iptc()
        drop_chain(table, BUILTIN, self.chain)
        table.create_chain(self.chain)
        own = iptc.Chain(table, self.chain)
        for rule in [self.balance_rule(frozenset({1})), *guard_rules(self.service, self.comment)]:
            own.append_rule(rule)
        # Then the real mask as patched bytes, in the same commit (bucket 1 is never accepted on its
        # own): libxt_cluster 1.8.9 refuses nodemasks above 32 ("out of range (1-32)"), so a
        # 12-bucket host owning nothing (! 0xfff) or buckets above 5 cannot be built from text.
        own.replace_rule(self._patched(keep), 0)
        iptc.Chain(table, BUILTIN).insert_rule(self._jump(), 0)

    def held(self) -> frozenset[int]:
        return read_table(self._mangle(), f"reading mangle/{self.chain}", self._read_held)

    def apply(self, wanted: Iterable[int]) -> frozenset[int]:
        """One atomic replace of the balance rule: the whole new set applies at once."""
        want = check_buckets(wanted, self.total)
        if self.held() == want:
            return want
        rule = self._patched(want)

        def edit(table: Any) -> None:
            iptc = import_iptc()
            self._read_held(table)  # still our chain with our rule first
            iptc.Chain(table, self.chain).replace_rule(rule, 0)

        change_table(self._mangle(), self._lock, f"applying buckets {sorted(want)}", edit)
        return self.held()

    def grant(self, bucket: int) -> None:
        check_bucket(bucket, self.total)
        self.apply(self.held() | {bucket})

    def revoke(self, bucket: int) -> None:
        check_bucket(bucket, self.total)
        self.apply(self.held() - {bucket})

    def remove(self) -> None:
        if os.path.exists(self.deadman.proc):
            self.deadman.remove()
        change_table(self._mangle(), self._lock, f"removing xt_cluster rules of {self.spec.name}",
                     lambda t: drop_chain(t, BUILTIN, self.chain))
        self._session().try_run(self.arp.delete_command())
        _mcast.leave(self.spec.interface, self.spec.cluster_mac)
