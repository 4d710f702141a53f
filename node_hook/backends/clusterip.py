"""CLUSTERIP backend (Linux < 6.3): the seed's rule, ownership changed through /proc only.

Kernel state (legacy iptables, filter table)::

    -A INPUT -d VIP/32 -i IF -p tcp -m tcp --dport 22 -j CLUSTERIP --new --hashmode sourceip
       --clustermac MAC --total-nodes N --local-node L --hash-init H          (the seed's rule)
    -A INPUT -d VIP/32 -i IF -m comment --comment cif:<fp>:jump -j CIF-<cluster>
    -A CIF-<cluster> <service> -j RETURN ; ICMP errors -j RETURN ; -j DROP   (other VIP traffic)
    /proc/net/ipt_CLUSTERIP/VIP: the buckets this host owns ("1,3\\n")

Why:
* Ownership lives in the kernel's CLUSTERIP config, created by the first rule for the VIP and
  reset to ``--local-node`` if the last rule is deleted and re-added. So the rule is installed once
  and never touched again; grant/revoke are single ``+N``/``-N`` writes to the control file.
  Replacing the filter table (our own commits, or anyone's iptables change) keeps the config,
  because the rule is part of the new table as well.
* The rule needs a local node. When this host should own nothing, the rule is installed with
  ``--local-node 1`` behind a temporary "hold" rule at the top of our chain that drops the service,
  then ``-1`` is written and the hold rule removed: bucket 1 is never served by two hosts.
* 6.1 refuses ``--new`` without an input interface, so the seed's rule gets ``-i IF``.
* CLUSTERIP joins the cluster MAC and rewrites ARP replies for the VIP itself (its arp_mangle
  hook): no multicast join or ARP table of ours.
* ``iptables -S`` keeps showing the original ``--local-node``; the control file is the truth.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from controller.core.errors import BackendError
from controller.core.model import ClusterSpec
from node_hook.backends import _prereq
from node_hook.backends._clusterip_proc import ProcFile
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
from node_hook.backends._naming import ipt_chain_name
from node_hook.backends._service import Service, fingerprint
from node_hook.backends._xtables import XtablesLock, change_table, import_iptc, read_table, rule_comment
from node_hook.backends.base import BucketBackend

BUILTIN = "INPUT"
PROC_DIR = Path("/proc/net/ipt_CLUSTERIP")
#: CLUSTERIP_MAX_NODES in libipt_CLUSTERIP / the kernel.
MAX_NODES = 16


class ClusterIPBackend(RecentDeadmanMixin, BucketBackend):
    """Owns buckets through /proc/net/ipt_CLUSTERIP/<vip>."""

    name = "clusterip"

    def __init__(self, spec: ClusterSpec, host_id: str, *, prefix: str = "cif", proc_dir: Path = PROC_DIR,
                 deadman_s: float | None = None) -> None:
        self.spec = spec
        self.host_id = host_id
        self.total = spec.buckets
        self.vip = str(spec.vip)
        self.chain = ipt_chain_name(spec.name, prefix)
        self.service = Service.of(spec)
        self.proc = ProcFile(Path(proc_dir) / self.vip)
        self.fp = fingerprint("clusterip", self.chain, spec.interface, self.vip, self.service)
        self.comment = f"cif:{self.fp}"
        self._lock = XtablesLock()
        self._table: Any = None
        self.deadman_s = deadman_s
        #: built even when off: install() then finds and removes a leftover rule of ours
        self.deadman = RecentDeadman(self.chain, spec.interface, self.vip, deadman_s or 1, f"{self.comment}:alive")

    # ------------------------------------------------------------------ rules

    def _filter(self) -> Any:
        if self._table is None:
            iptc = import_iptc()
            self._table = iptc.Table(iptc.Table.FILTER, autocommit=False)
        return self._table

    def clusterip_rule(self, local_node: int) -> Any:
        """The seed's rule with ``-i``: ``-j CLUSTERIP --new --hashmode ... --local-node L``."""
        iptc = import_iptc()
        rule = iptc.Rule()
        rule.in_interface = self.spec.interface
        rule.dst = f"{self.vip}/32"
        add_service_matches(rule, self.service)
        target = iptc.Target(rule, "CLUSTERIP")
        target.new = ""
        target.hashmode = self.spec.hash.mode
        target.clustermac = self.spec.cluster_mac.upper()
        target.total_nodes = str(self.total)
        target.local_node = str(local_node)
        target.hash_init = str(self.spec.hash.hash_init)
        rule.target = target
        return rule

    def guard(self) -> list[Any]:
        service = new_rule(f"{self.comment}:service", "RETURN")
        add_service_matches(service, self.service)
        return [service, *guard_rules(self.service, self.comment)]

    def _hold(self) -> Any:
        rule = new_rule(f"{self.comment}:hold", "DROP")
        add_service_matches(rule, self.service)
        return rule

    def _clusterip_rules(self, table: Any) -> list[tuple[int, Any]]:
        """(position, rule) of the CLUSTERIP rules for our VIP in INPUT."""
        iptc = import_iptc()
        out = []
        for index, rule in enumerate(iptc.Chain(table, BUILTIN).rules):
            if rule.target is not None and rule.target.name == "CLUSTERIP" and rule.dst.split("/")[0] == self.vip:
                out.append((index, rule))
        return out

    def _mismatch(self, rule: Any) -> str | None:
        params = rule.target.parameters
        want = {"hashmode": self.spec.hash.mode, "clustermac": self.spec.cluster_mac.upper(),
                "total_nodes": str(self.total), "hash_init": str(self.spec.hash.hash_init)}
        for key, value in want.items():
            have = str(params.get(key, "")).upper() if key == "clustermac" else str(params.get(key, ""))
            if have != value:
                return (f"the existing CLUSTERIP rule for {self.vip} has {key} {have}, the config {value}: "
                        "CLUSTERIP cannot change it without resetting ownership; remove the rule "
                        "(node hook --remove) and restart")
        return None

    # ------------------------------------------------------------------ BucketBackend

    def check_prerequisites(self) -> list[str]:
        problems = [_prereq.capability_problem(), _prereq.interface_problem(self.spec.interface)]
        release = _prereq.kernel_release()
        if self.spec.vip.version == 6:
            problems.append("CLUSTERIP is IPv4 only: use xt_cluster or nftables for an IPv6 VIP")
        else:
            problems.append(_prereq.vip_problem(self.spec.vip, self.spec.interface))
        if release >= (6, 3):
            problems.append(f"kernel {release[0]}.{release[1]} has no CLUSTERIP (removed in Linux 6.3): "
                            "use the xt_cluster or nftables backend")
        else:
            problems.append(_prereq.xt_extension_problem("targets", "CLUSTERIP", "ipt_CLUSTERIP"))
        if _prereq.iptables_is_nft():
            problems.append("iptables on PATH is iptables-nft, which refuses CLUSTERIP and does not show the legacy "
                            "rules: update-alternatives --set iptables /usr/sbin/iptables-legacy")
        if self.total > MAX_NODES:
            problems.append(f"CLUSTERIP takes at most {MAX_NODES} buckets, the config has {self.total}")
        problems.append(ports_problem(self.service))
        if self.deadman_s is not None:
            problems.append(_prereq.xt_extension_problem("matches", "recent", "xt_recent"))
        try:
            import_iptc()
        except BackendError as exc:
            problems.append(str(exc))
        return [p for p in problems if p]

    def _state(self) -> tuple[Any | None, bool]:
        """(existing CLUSTERIP rule or None, our guard chain and jump are in place and unchanged)."""

        def read(table: Any) -> tuple[Any | None, bool]:
            found = self._clusterip_rules(table)
            comments = chain_comments(table, self.chain)
            jumps = jump_rules(table, BUILTIN, self.chain)
            expected = [rule_comment(r) for r in self.guard()]
            ok = comments == expected and [rule_comment(r) for r in jumps] == [f"{self.comment}:jump"]
            if ok and found:  # the jump must come right after the CLUSTERIP rule
                iptc = import_iptc()
                rules = iptc.Chain(table, BUILTIN).rules
                position = found[0][0]
                ok = position + 1 < len(rules) and rules[position + 1].target.name == self.chain
            return (found[0][1] if found else None), ok

        return read_table(self._filter(), "reading the filter table", read)

    def install(self, initial: frozenset[int] = frozenset()) -> None:
        initial = check_buckets(initial, self.total)
        self._install_deadman()
        existing, guard_ok = self._state()
        if existing is not None:
            problem = self._mismatch(existing)
            if problem:
                raise BackendError(problem)
            if not self.proc.exists():
                raise BackendError(f"a CLUSTERIP rule for {self.vip} exists but {self.proc.path} does not: "
                                   "check the rule's interface and that ipt_CLUSTERIP is loaded")
            if not guard_ok:
                change_table(self._filter(), self._lock, f"installing the guard chain of {self.spec.name}",
                             self._write_guard)
            return  # adopted: the kernel's ownership is left exactly as it is
        self._install_fresh(initial)

    def _write_guard(self, table: Any, hold: bool = False) -> None:
        iptc = import_iptc()
        drop_chain(table, BUILTIN, self.chain)
        table.create_chain(self.chain)
        own = iptc.Chain(table, self.chain)
        for rule in ([self._hold()] if hold else []) + self.guard():
            own.append_rule(rule)
        found = self._clusterip_rules(table)
        position = found[0][0] + 1 if found else 0
        iptc.Chain(table, BUILTIN).insert_rule(new_rule(f"{self.comment}:jump", self.chain, self.spec.interface,
                                                        self.vip), position)

    def _install_fresh(self, initial: frozenset[int]) -> None:
        local = min(initial) if initial else 1
        hold = not initial

        def add(table: Any) -> None:
            iptc = import_iptc()
            iptc.Chain(table, BUILTIN).insert_rule(self.clusterip_rule(local), 0)
            self._write_guard(table, hold=hold)

        change_table(self._filter(), self._lock, f"installing the CLUSTERIP rule of {self.spec.name}", add)
        try:
            for bucket in sorted(initial - {local}):
                self.proc.change("+", bucket)
            if hold:
                self.proc.change("-", local)
                change_table(self._filter(), self._lock, "releasing the install hold", self._drop_hold)
        except BackendError:
            with contextlib.suppress(BackendError):
                self.remove()
            raise

    def _drop_hold(self, table: Any) -> None:
        iptc = import_iptc()
        own = iptc.Chain(table, self.chain)
        for rule in own.rules:
            if rule_comment(rule) == f"{self.comment}:hold":
                own.delete_rule(rule)

    def held(self) -> frozenset[int]:
        return self.proc.read()

    def grant(self, bucket: int) -> None:
        self.proc.change("+", check_bucket(bucket, self.total))

    def revoke(self, bucket: int) -> None:
        self.proc.change("-", check_bucket(bucket, self.total))

    def remove(self) -> None:
        if os.path.exists(self.deadman.proc):
            self.deadman.remove()

        def edit(table: Any) -> None:
            iptc = import_iptc()
            parent = iptc.Chain(table, BUILTIN)
            for _, rule in reversed(self._clusterip_rules(table)):
                parent.delete_rule(rule)
            drop_chain(table, BUILTIN, self.chain)

        change_table(self._filter(), self._lock, f"removing the CLUSTERIP rules of {self.spec.name}", edit)
