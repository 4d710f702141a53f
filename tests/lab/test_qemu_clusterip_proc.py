"""The legacy CLUSTERIP control file, on Debian's real 6.1 kernel booted under qemu.

Proves the /proc/net/ipt_CLUSTERIP/<vip> semantics the clusterip backend will rely on (see
/work/shared/notes/clusterip-qemu.md), row by row, on the real kernel module rather than a model.
The guest boots once per module; tests/lab/qemu_clusterip_probe.py runs inside it in a namespace
with a dummy eth0 and reports what each write/read did; each row below is one test.
Skips only if qemu cannot start at all; a guest that fails to boot is a failure.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
from clusterlab.qemu import GuestResult, GuestUnavailable, check_qemu, prepare, run_in_guest

pytestmark = [pytest.mark.lab, pytest.mark.qemu]

PROBE = Path(__file__).with_name("qemu_clusterip_probe.py")
NETNS = f"cipq-{os.getpid()}"

GUEST_SCRIPT = f"""
set -eu
ip netns add {NETNS}
ip -n {NETNS} link add eth0 type dummy
ip -n {NETNS} link set lo up
ip -n {NETNS} link set eth0 up
ip -n {NETNS} addr add 198.18.0.1/22 dev eth0
ip -n {NETNS} addr add 198.18.0.100/32 dev eth0
ip netns exec {NETNS} "$CIPQ_PYTHON" {shlex.quote(str(PROBE))}
dmesg | grep -i clusterip >&2 || true
ip netns del {NETNS}
"""

EINVAL_RULE = {"rc": 1, "stderr": "iptables: Invalid argument. Run `dmesg' for more information."}
OK_RULE = {"rc": 0, "stderr": ""}
RULE_S = ("-A INPUT -d 198.18.0.100/32 -i eth0 -p tcp -m tcp --dport 22 -j CLUSTERIP --new --hashmode "
          "sourceip --clustermac 01:00:5E:00:01:64 --total-nodes 4 --local-node 2 --hash-init 0")


def _rows() -> list[tuple[str, object]]:
    """(probe step, expected observation), in the order the probe runs them."""
    rows: list[tuple[str, object]] = [
        ("file exists before any rule", False),
        # 6.1 refuses --new without an input interface ("Please specify an interface name" in dmesg).
        ("seed rule verbatim (no -i)", EINVAL_RULE),
        ("file exists after seed rule", False),
        ("seed rule with -i eth0", OK_RULE),
        ("file mode and owner", ["0o600", 0]),
        ("initial read", "2\n"),
    ]
    writes = [
        ("add unowned", b"+1", "ok", "1,2\n"),
        ("add unowned, newline", b"+3\n", "ok", "1,2,3\n"),
        ("add last bucket", b"+4", "ok", "1,2,3,4\n"),
        ("remove owned, newline", b"-4\n", "ok", "1,2,3\n"),
        ("add owned", b"+1", "ENOMEM", "1,2,3\n"),
        ("add zero", b"+0", "ENOMEM", "1,2,3\n"),
        ("add above total", b"+5", "ENOMEM", "1,2,3\n"),
        ("remove unowned", b"-4", "ENOENT", "1,2,3\n"),
        ("remove zero", b"-0", "ENOENT", "1,2,3\n"),
        ("remove above total", b"-5", "ENOENT", "1,2,3\n"),
        ("no sign", b"1", "EIO", "1,2,3\n"),
        ("empty write", b"", "EIO", "1,2,3\n"),
        ("11 bytes", b"+0000000004", "EIO", "1,2,3\n"),
        ("10 bytes", b"-000000003", "ok", "1,2\n"),
        ("sign only", b"+", "EINVAL", "1,2\n"),
        ("space after sign", b"+ 1", "EINVAL", "1,2\n"),
        ("trailing space", b"+1 ", "EINVAL", "1,2\n"),
        ("hex", b"+0x1", "EINVAL", "1,2\n"),
        ("list", b"+1,2", "EINVAL", "1,2\n"),
        ("two lines", b"+3\n+4\n", "EINVAL", "1,2\n"),
        ("remove 1", b"-1", "ok", "2\n"),
        ("remove 2, none left", b"-2", "ok", ""),
        ("add back 2", b"+2", "ok", "2\n"),
    ]
    for label, data, result, content in writes:
        rows += [(f"write {data!r} ({label})", result), (f"read after {data!r} ({label})", content)]
    rows += [
        ("buffered write of an owned bucket", {"write": "ok", "close": "ENOMEM"}),
        ("buffered write of a new bucket", {"write": "ok", "close": "ok"}),
        ("read after buffered writes", "2,3\n"),
        # os.open(O_APPEND) itself works: the EINVAL comes from the seek to the end Python adds.
        ("python open in append mode", "EINVAL"),
        ("os.open O_APPEND", None),
        ("iptables -S after /proc changes", [RULE_S]),
        ("second rule, same VIP, other MAC", EINVAL_RULE),
        ("rule deleted", {"delete": OK_RULE, "exists": False, "stale write": "EIO", "stale read": "EIO"}),
        ("file exists after delete", False),
        ("re-added rule", OK_RULE),
        ("read after re-add", "2\n"),
        ("cleanup", OK_RULE),
    ]
    return rows


ROWS = _rows()


@pytest.fixture(scope="module")
def guest() -> GuestResult:
    """Boot the guest once and run the probe; skip only if qemu itself cannot start."""
    try:
        check_qemu()
    except GuestUnavailable as exc:
        print(f"qemu unavailable: {exc}")
        pytest.skip(f"qemu cannot start: {exc}")
    image = prepare()
    result = run_in_guest(GUEST_SCRIPT, timeout_s=150, image=image)
    print(f"\nqemu guest {image.package} {image.version}: boot {result.boot_seconds:.1f} s, "
          f"total {result.total_seconds:.1f} s")
    return result


@pytest.fixture(scope="module")
def observed(guest: GuestResult) -> dict[str, object]:
    assert guest.returncode == 0, f"guest script failed ({guest.returncode}):\n{guest.stderr}\n{guest.console}"
    return dict(json.loads(guest.stdout.strip().splitlines()[-1]))


def test_guest_runs_probe_and_reports_times(guest: GuestResult, observed: dict[str, object]) -> None:
    assert "ipt_CLUSTERIP: Please specify an interface name" in guest.stderr
    assert 0 < guest.boot_seconds < guest.total_seconds
    assert [name for name, _ in ROWS] == list(observed), "probe steps and expected rows diverged"


@pytest.mark.parametrize(("step", "expected"), ROWS, ids=[name for name, _ in ROWS])
def test_proc_row(observed: dict[str, object], step: str, expected: object) -> None:
    assert step in observed, f"probe did not report {step!r}"
    assert observed[step] == expected
