"""python-iptables (legacy ip_tables) access: locking, atomic commits, raw rule reads, error mapping.

Why this layer:
* A python-iptables commit replaces the whole table (one atomic IPT_SO_SET_REPLACE), so every change
  is refresh -> edit -> commit under the xtables lock that iptables-legacy itself takes (/run/
  xtables.lock), or a concurrent `iptables -w` could be overwritten. A commit that lost a race
  anyway (EAGAIN: the table changed since we read it) is retried from a fresh read.
* Building rules through libxtables costs ~0.7 ms and reading parameters back ~1.7 ms, too slow for
  the failover path; hot paths patch a prebuilt rule's match bytes and read the kernel's entry
  bytes directly (:func:`entry_matches`).
* iptc raises IPTCError/XTablesError with libiptc's text; callers get a BackendError naming the fix.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from controller.core.errors import BackendError

XT_LOCK = os.environ.get("XTABLES_LOCKFILE", "/run/xtables.lock")
LOCK_WAIT_S = 2.0
COMMIT_RETRIES = 3
#: sizeof(struct ipt_entry) on Linux: matches start right after it.
IPT_ENTRY_SIZE = 112
#: struct xt_entry_match header: u16 match_size, char name[29], u8 revision.
MATCH_HEADER = 32

T = TypeVar("T")


def import_iptc() -> Any:
    """The iptc module, or BackendError naming the missing package."""
    try:
        import iptc
    except Exception as exc:  # ImportError, or XTablesError when libxtables is missing
        raise BackendError(
            f"python-iptables cannot be used ({exc}): apt-get install iptables and pip install python-iptables"
        ) from None
    return iptc


def iptc_errors() -> tuple[type[BaseException], ...]:
    iptc = import_iptc()
    return (iptc.IPTCError, iptc.XTablesError)


class XtablesLock:
    """The flock iptables-legacy takes; held only around refresh/edit/commit (microseconds)."""

    def __init__(self, path: str = XT_LOCK) -> None:
        self.path = path
        self._fd: int | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise BackendError(f"cannot open the xtables lock {self.path}: {exc.strerror}; run as root") from None
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() > deadline:
                    raise BackendError(
                        f"the xtables lock {self.path} is held by another program for over {LOCK_WAIT_S} s: "
                        "find the stuck iptables process"
                    ) from None
                time.sleep(0.0005)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


def change_table(table: Any, lock: XtablesLock, what: str, edit: Callable[[Any], T]) -> T:
    """refresh -> ``edit(table)`` -> commit, atomically, under the lock; retried if the table raced."""
    errors = iptc_errors()
    with lock.held():
        for attempt in range(COMMIT_RETRIES):
            try:
                table.autocommit = False
                table.refresh()
                result = edit(table)
                table.commit()
                return result
            except errors as exc:
                with contextlib.suppress(*errors):
                    table.refresh()  # drop the uncommitted edit
                if "temporarily unavailable" in str(exc) and attempt + 1 < COMMIT_RETRIES:
                    continue
                raise BackendError(f"{what} failed, nothing was changed: {_clean(exc)}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def read_table(table: Any, what: str, read: Callable[[Any], T]) -> T:
    """``read(table)`` on a fresh snapshot of the kernel's table."""
    errors = iptc_errors()
    try:
        table.autocommit = False
        table.refresh()
        return read(table)
    except errors as exc:
        raise BackendError(f"{what} failed: {_clean(exc)}") from None


def _clean(exc: BaseException) -> str:
    text = str(exc)
    if "No chain/target/match by that name" in text or ("can't commit" in text and "No such file" in text):
        return f"{text} (a kernel module is missing: check the prerequisites)"
    if "Invalid argument" in text:
        return f"{text} (the kernel refused a rule: see dmesg)"
    return text


def entry_matches(entry: Any) -> list[tuple[str, bytes]]:
    """(match name, match data bytes) of a raw ``ipt_entry`` from libiptc, without libxtables."""
    raw = ctypes.string_at(ctypes.addressof(entry), entry.next_offset)
    out = []
    offset = IPT_ENTRY_SIZE
    while offset < entry.target_offset:
        size = struct.unpack_from("<H", raw, offset)[0]
        if size < MATCH_HEADER:
            raise BackendError("a rule in our chain has a malformed match: remove the chain and reinstall")
        name = raw[offset + 2 : offset + 31].split(b"\0", 1)[0].decode()
        out.append((name, raw[offset + MATCH_HEADER : offset + size]))
        offset += size
    return out


def rule_comment(rule: Any) -> str:
    """The ``-m comment`` text of a python-iptables Rule ('' if none)."""
    for match in rule.matches:
        if match.name == "comment":
            return str(match.parameters.get("comment", "")).strip('"')
    return ""


def add_comment(rule: Any, text: str) -> None:
    match = rule.create_match("comment")
    match.comment = text
