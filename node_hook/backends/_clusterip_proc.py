"""The CLUSTERIP control file /proc/net/ipt_CLUSTERIP/<vip>: one write(2) per change, errno mapped.

Measured semantics on Debian's 6.1 kernel (/work/shared/notes/clusterip-qemu.md,
tests/lab/test_qemu_clusterip_proc.py): each write(2) is parsed alone; ``+N`` of an owned (or
out-of-range) bucket fails with ENOMEM, ``-N`` of an unowned one with ENOENT, a file whose rule was
deleted gives EIO, a malformed write EINVAL. Writes use os.open/os.write because Python file
objects buffer and report the kernel's error only at close. ENOMEM/ENOENT are ambiguous (already
done, or out of range), so the caller validates the range first and confirms "already done" by
reading the file back: grant and revoke are idempotent, everything else is a clear BackendError.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Literal

from controller.core.errors import BackendError
from controller.core.model import MAX_BUCKETS

_MAX_NODE = MAX_BUCKETS["clusterip"]
#: "1,2,...,16" is 38 characters; anything much longer is not kernel output.
_MAX_TEXT = 256

Op = Literal["+", "-"]


def parse(text: str) -> frozenset[int]:
    """``"1,3,4\n"`` -> {1, 3, 4}; an empty file owns nothing.

    Strict on purpose: only ASCII decimal numbers 1..16 (CLUSTERIP's node limit) separated by commas
    are kernel output; anything else (signs, ``1_0``, other scripts' digits, huge numbers, pages
    of text) means this is not the file we think it is, reported once in a bounded message.
    """
    text = text.strip()
    if not text:
        return frozenset()
    parts = text.split(",") if len(text) <= _MAX_TEXT else []
    if parts and all(p.isascii() and p.isdigit() and len(p) <= 2 and 1 <= int(p) <= _MAX_NODE for p in parts):
        return frozenset(int(p) for p in parts)
    raise BackendError(
        f"unexpected CLUSTERIP control file content {text[:60]!r}: is this a CLUSTERIP kernel?"
    )


def outcome(op: Op, err: int | None) -> Literal["done", "verify"] | str:
    """What a write's errno means: "done", "verify" (probably already done: read back), or an error line."""
    if err is None:
        return "done"
    if (op == "+" and err == errno.ENOMEM) or (op == "-" and err == errno.ENOENT):
        return "verify"
    if err == errno.EIO:
        return "the CLUSTERIP rule was deleted under us (EIO): restart the hook to reinstall it"
    if err == errno.EINVAL:
        return "the kernel refused the write as malformed (EINVAL): this is a bug, report it"
    if err in (errno.EACCES, errno.EPERM):
        return "permission denied writing the CLUSTERIP control file: run the hook as root"
    return f"CLUSTERIP control file write failed: {os.strerror(err)}"


class ProcFile:
    """One VIP's control file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> frozenset[int]:
        try:
            with open(self.path, "rb") as handle:
                return parse(handle.read().decode())
        except FileNotFoundError:
            raise BackendError(f"{self.path} does not exist: no CLUSTERIP rule for this VIP (install it)") from None
        except OSError as exc:
            raise BackendError(f"cannot read {self.path}: {outcome('+', exc.errno)}") from None

    def write(self, op: Op, bucket: int) -> int | None:
        """One write(2) of ``+N``/``-N``; the errno it (or the close) failed with, None on success."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BackendError(f"{self.path} does not exist: no CLUSTERIP rule for this VIP (install it)") from None
        except OSError as exc:
            raise BackendError(f"cannot open {self.path}: {os.strerror(exc.errno or 0)}; run as root") from None
        err: int | None = None
        try:
            os.write(fd, f"{op}{bucket}".encode())
        except OSError as exc:
            err = exc.errno
        finally:
            try:
                os.close(fd)
            except OSError as exc:
                err = err or exc.errno
        return err

    def change(self, op: Op, bucket: int) -> None:
        """Grant (``+``) or revoke (``-``) idempotently."""
        result = outcome(op, self.write(op, bucket))
        if result == "done":
            return
        if result == "verify":
            owned = bucket in self.read()
            if owned == (op == "+"):
                return
            raise BackendError(f"CLUSTERIP refused {op}{bucket} and the bucket is {'not ' if not owned else ''}owned: "
                               "the rule's --total-nodes differs from the config; restart the hook")
        raise BackendError(f"{op}{bucket} on {self.path}: {result}")
