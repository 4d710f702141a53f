"""Guest side of test_qemu_clusterip_proc: exercises /proc/net/ipt_CLUSTERIP/<vip> and prints observations.

Runs inside the qemu guest (Debian 6.1 kernel) in a network namespace that has a dummy eth0. It
only observes and prints one JSON object {step: observation}; the host-side test holds the
expected values, so a mismatch is reported per row with both sides visible. Writes go through
os.open/os.write so each write(2) gets its own errno (Python file objects defer errors to close).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable

VIP = "198.18.0.100"
PROC = f"/proc/net/ipt_CLUSTERIP/{VIP}"
MAC, OTHER_MAC = "01:00:5E:00:01:64", "01:00:5E:00:01:65"
SEED_RULE = ["INPUT", "-d", f"{VIP}/32", "-p", "tcp", "--dport", "22", "-j", "CLUSTERIP", "--new",
             "--hashmode", "sourceip", "--clustermac", MAC, "--total-nodes", "4", "--local-node", "2",
             "--hash-init", "0"]
IFACE_RULE = [SEED_RULE[0], "-i", "eth0", *SEED_RULE[1:]]

obs: dict[str, object] = {}


def name_of(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def record(step: str, action: Callable[[], object]) -> None:
    """Store the action's value, or the errno name (or exception text) it failed with."""
    try:
        obs[step] = action()
    except OSError as exc:
        obs[step] = name_of(exc)
    except Exception as exc:  # the probe must report every row, never stop half-way
        obs[step] = f"{type(exc).__name__}: {exc}"


def iptables(op: str, rule: list[str]) -> dict[str, object]:
    proc = subprocess.run(["iptables-legacy", op, *rule], capture_output=True, text=True, check=False)
    return {"rc": proc.returncode, "stderr": proc.stderr.strip()}


def write(data: bytes) -> str:
    fd = os.open(PROC, os.O_WRONLY)
    try:
        written = os.write(fd, data)
        return "ok" if written == len(data) else f"short write {written}"
    finally:
        os.close(fd)


def read() -> str:
    with open(PROC, "rb") as handle:
        return handle.read().decode()


def step(label: str, data: bytes) -> None:
    """One write(2) and the file's content after it."""
    record(f"write {data!r} ({label})", lambda: write(data))
    record(f"read after {data!r} ({label})", read)


def buffered_write(text: str) -> dict[str, str]:
    """Python file object: write() succeeds into the buffer, the kernel's error surfaces at close."""
    out = {}
    handle = open(PROC, "w")  # noqa: SIM115 - the point is to see which call raises
    try:
        handle.write(text)
        out["write"] = "ok"
    except OSError as exc:
        out["write"] = name_of(exc)
    try:
        handle.close()
        out["close"] = "ok"
    except OSError as exc:
        out["close"] = name_of(exc)
    return out


def rule_lines() -> list[str]:
    proc = subprocess.run(["iptables-legacy", "-S", "INPUT"], capture_output=True, text=True, check=True)
    return [line for line in proc.stdout.splitlines() if "CLUSTERIP" in line]


def after_rule_deleted() -> dict[str, object]:
    """Open fds outlive the rule; the file disappears and I/O on the stale fds fails."""
    wfd, rfd = os.open(PROC, os.O_WRONLY), os.open(PROC, os.O_RDONLY)
    out: dict[str, object] = {"delete": iptables("-D", IFACE_RULE), "exists": os.path.exists(PROC)}
    for key, call in (("stale write", lambda: os.write(wfd, b"+1")), ("stale read", lambda: os.read(rfd, 64))):
        try:
            out[key] = f"ok {call()!r}"
        except OSError as exc:
            out[key] = name_of(exc)
    os.close(wfd)
    os.close(rfd)
    return out


def main() -> None:
    record("file exists before any rule", lambda: os.path.exists(PROC))
    record("seed rule verbatim (no -i)", lambda: iptables("-A", SEED_RULE))
    record("file exists after seed rule", lambda: os.path.exists(PROC))
    record("seed rule with -i eth0", lambda: iptables("-A", IFACE_RULE))
    record("file mode and owner", lambda: (oct(os.stat(PROC).st_mode & 0o7777), os.stat(PROC).st_uid))
    record("initial read", read)
    step("add unowned", b"+1")
    step("add unowned, newline", b"+3\n")
    step("add last bucket", b"+4")
    step("remove owned, newline", b"-4\n")
    step("add owned", b"+1")
    step("add zero", b"+0")
    step("add above total", b"+5")
    step("remove unowned", b"-4")
    step("remove zero", b"-0")
    step("remove above total", b"-5")
    step("no sign", b"1")
    step("empty write", b"")
    step("11 bytes", b"+0000000004")
    step("10 bytes", b"-000000003")
    for label, data in (("sign only", b"+"), ("space after sign", b"+ 1"), ("trailing space", b"+1 "),
                        ("hex", b"+0x1"), ("list", b"+1,2"), ("two lines", b"+3\n+4\n")):
        step(label, data)
    step("remove 1", b"-1")
    step("remove 2, none left", b"-2")
    step("add back 2", b"+2")
    record("buffered write of an owned bucket", lambda: buffered_write("+2"))
    record("buffered write of a new bucket", lambda: buffered_write("+3\n"))
    record("read after buffered writes", read)
    record("python open in append mode", lambda: open(PROC, "a").close())
    record("os.open O_APPEND", lambda: os.close(os.open(PROC, os.O_WRONLY | os.O_APPEND)))
    record("iptables -S after /proc changes", rule_lines)
    other = [*IFACE_RULE[: IFACE_RULE.index(MAC)], OTHER_MAC, *IFACE_RULE[IFACE_RULE.index(MAC) + 1:]]
    record("second rule, same VIP, other MAC", lambda: iptables("-A", other))
    record("rule deleted", after_rule_deleted)
    record("file exists after delete", lambda: os.path.exists(PROC))
    record("re-added rule", lambda: iptables("-A", IFACE_RULE))
    record("read after re-add", read)
    record("cleanup", lambda: iptables("-D", IFACE_RULE))
    print(json.dumps(obs))


if __name__ == "__main__":
    main()
