"""The iptables dead-man switch (xt_cluster and CLUSTERIP backends): xt_recent keyed by the VIP.

Kernel state (legacy iptables, raw table, first in PREROUTING)::

    -A PREROUTING -d VIP/32 -i IF -m recent ! --rcheck --seconds E --name <chain>-alive --rdest
                  -m comment --comment cif:<fp>:alive -j DROP
    /proc/net/xt_recent/<chain>-alive: the hook writes "+VIP" to refresh

Why:
* The raw table runs before conntrack, mangle (xt_cluster) and filter INPUT (CLUSTERIP), so a lapsed
  timer drops the VIP's traffic before any balancing rule sees it, and the balancing chains stay
  exactly as they are. The rule exists in its own table: nothing else of ours moves.
* ``--rdest`` keys the entry by the packet's destination, the VIP: one entry for the whole cluster.
  ``! --rcheck --seconds E`` matches (drops) when the VIP's newest stamp is older than E seconds.
* Writing ``+VIP`` to the /proc file adds a stamp to the existing entry (measured on 6.18: last_seen
  moves), ``-VIP`` removes it. xt_recent counts whole seconds, so E is an integer >= 1
  (controller/core/deadman.py).
* The table behind the /proc file lives as long as one rule names it: a table replace by
  python-iptables (or anyone's iptables-restore) keeps it, deleting the rule removes it.
* Unlike nftables, a refresh cannot be made conditional in the kernel (``+`` always succeeds, even on
  a lapsed entry): the hook's own clock decides whether the timer may have run out (node_hook.agent).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from controller.core.errors import BackendError
from node_hook.backends._iptrules import new_rule
from node_hook.backends._xtables import XtablesLock, change_table, import_iptc, read_table, rule_comment

BUILTIN = "PREROUTING"
RECENT_DIR = Path("/proc/net/xt_recent")


class RecentDeadman:
    """The raw-table rule and the /proc refresh of one cluster's xt_recent timer."""

    def __init__(self, chain: str, interface: str, vip: str, expiry_s: float, comment: str,
                 recent_dir: Path = RECENT_DIR) -> None:
        seconds = int(expiry_s)
        if seconds != expiry_s or seconds < 1:
            raise BackendError(f"xt_recent counts whole seconds: the dead-man timer {expiry_s:g} s must be an "
                               "integer >= 1 (see controller/core/deadman.py)")
        self.name = f"{chain}-alive"
        self.interface = interface
        self.vip = vip
        self.seconds = seconds
        self.comment = comment
        self.proc = Path(recent_dir) / self.name
        self._lock = XtablesLock()
        self._table: Any = None

    def _raw(self) -> Any:
        if self._table is None:
            iptc = import_iptc()
            self._table = iptc.Table(iptc.Table.RAW, autocommit=False)
        return self._table

    def rule(self) -> Any:
        """``-d VIP -i IF -m recent ! --rcheck --seconds E --name N --rdest -j DROP`` (with our comment)."""
        rule = new_rule(self.comment, "DROP", self.interface, self.vip)
        match = rule.create_match("recent")
        match.set_parameter("name", self.name)
        match.rdest = ""
        match.rcheck = "!"
        match.seconds = str(self.seconds)
        return rule

    def _ours(self, table: Any) -> list[tuple[int, Any]]:
        """(position, rule) of rules in raw PREROUTING that use our xt_recent name."""
        iptc = import_iptc()
        out = []
        for index, rule in enumerate(iptc.Chain(table, BUILTIN).rules):
            for match in rule.matches:
                if match.name == "recent" and match.parameters.get("name") == self.name:
                    out.append((index, rule))
                    break
        return out

    def in_place(self) -> bool:
        """Our rule, unchanged, is the first rule of raw PREROUTING and the only one using our name."""

        def read(table: Any) -> bool:
            ours = self._ours(table)
            if len(ours) != 1 or ours[0][0] != 0:
                return False
            params = next(m.parameters for m in ours[0][1].matches if m.name == "recent")
            return rule_comment(ours[0][1]) == self.comment and params.get("seconds") == str(self.seconds)

        return bool(read_table(self._raw(), "reading raw/PREROUTING", read))

    def install(self) -> None:
        """Put our rule first in raw PREROUTING (replacing an older one); the timer starts lapsed."""
        if self.in_place():
            return

        def edit(table: Any) -> None:
            iptc = import_iptc()
            chain = iptc.Chain(table, BUILTIN)
            for _, rule in reversed(self._ours(table)):
                chain.delete_rule(rule)
            chain.insert_rule(self.rule(), 0)

        change_table(self._raw(), self._lock, f"installing the dead-man rule {self.name}", edit)

    def remove(self) -> None:
        def edit(table: Any) -> None:
            iptc = import_iptc()
            chain = iptc.Chain(table, BUILTIN)
            for _, rule in reversed(self._ours(table)):
                chain.delete_rule(rule)

        change_table(self._raw(), self._lock, f"removing the dead-man rule {self.name}", edit)

    def _write(self, text: str, what: str, missing_ok: bool = False) -> None:
        try:
            fd = os.open(self.proc, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise BackendError(f"{what}: cannot open {self.proc} ({exc.strerror}): reinstall (restart the hook)") \
                from None
        try:
            os.write(fd, text.encode())
        except OSError as exc:
            if not (missing_ok and exc.errno == errno.ENOENT):
                raise BackendError(f"{what}: writing {text.strip()!r} to {self.proc} failed ({exc.strerror})") \
                    from None
        finally:
            os.close(fd)

    def arm(self) -> None:
        self._write(f"+{self.vip}\n", "arming the dead-man switch")

    def refresh(self) -> bool:
        try:
            self.arm()
        except BackendError:
            return False
        return True

    def disarm(self) -> None:
        self._write(f"-{self.vip}\n", "disarming the dead-man switch", missing_ok=True)

    def entry(self) -> str | None:
        """The /proc line of the VIP's entry (None: no entry), for tests and operators."""
        try:
            text = self.proc.read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(f"src={self.vip} "):
                return line
        return None


class RecentDeadmanMixin:
    """The dead-man methods of the iptables backends (xt_cluster, clusterip), which share one kind of
    timer; the backend sets ``deadman_s`` (None: switched off) and ``deadman`` in its constructor."""

    deadman_s: float | None
    deadman: RecentDeadman

    def _install_deadman(self) -> None:
        """Before the balancing rules, so that an adopted, serving kernel is guarded from now on."""
        if self.deadman_s is not None:
            self.deadman.install()
        elif os.path.exists(self.deadman.proc):  # turned off: a leftover rule would drop everything
            self.deadman.remove()

    def arm_alive(self) -> None:
        if self.deadman_s is not None:
            self.deadman.arm()

    def refresh_alive(self) -> bool:
        return True if self.deadman_s is None else self.deadman.refresh()

    def disarm_alive(self) -> None:
        if self.deadman_s is not None:
            self.deadman.disarm()
