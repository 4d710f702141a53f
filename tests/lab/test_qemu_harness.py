"""The qemu harness itself: what a guest script sees, exit codes, kept outputs, timeouts, boot failures.

Later work runs the whole namespace cluster through run_in_guest, so its contract is pinned here on
real qemu boots: environment and paths, iptc importable, modprobe of the 6.1 modules, the writable
share, and that a hung guest is killed (its qemu PID gone, its temp dir removed).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from clusterlab.qemu import (
    REPO_ROOT,
    GuestBootError,
    GuestImage,
    GuestTimeout,
    GuestUnavailable,
    check_qemu,
    prepare,
    run_in_guest,
)

pytestmark = [pytest.mark.lab, pytest.mark.qemu]


@pytest.fixture(scope="module")
def image() -> GuestImage:
    try:
        check_qemu()
    except GuestUnavailable as exc:
        print(f"qemu unavailable: {exc}")
        pytest.skip(f"qemu cannot start: {exc}")
    return prepare()


def _run_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(f"cipq-{os.getpid()}-")}


def _qemu_children(parent: int | None = None) -> list[int]:
    """PIDs of qemu processes whose parent is `parent` (default: this test process)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (entry / "comm").read_text().strip()
        except (OSError, IndexError):
            continue
        if comm.startswith("qemu-system") and int(fields[1]) == (parent or os.getpid()):
            pids.append(int(entry.name))
    return pids


def test_script_sees_repo_env_modules_and_iptc(image: GuestImage, tmp_path: Path) -> None:
    script = """
        set -u
        echo "kernel=$(uname -r) cwd=$(pwd) repo=$CIPQ_REPO"
        touch "$CIPQ_SCRATCH/x" && echo scratch-ok
        echo kept > "$CIPQ_SHARE/result.txt"
        echo "custom=$CUSTOM"
        for m in ipt_CLUSTERIP xt_cluster nf_tables veth bridge dummy; do modprobe $m || exit 9; done
        lsmod | grep -q '^ipt_CLUSTERIP ' && echo modprobe-ok
        "$CIPQ_PYTHON" -c 'import iptc; print("iptc", iptc.Table(iptc.Table.FILTER).name)'
        test -r "$CIPQ_REPO/pyproject.toml" && echo repo-visible
        cat "$HOST_FILE"
        echo to-stderr >&2
        exit 7
    """
    host_file = tmp_path / "from-host.txt"  # under the host's /tmp: a clone there must stay visible
    host_file.write_text("host-tmp-visible\n")
    before = _run_dirs()
    env = {"CUSTOM": "a b'c", "HOST_FILE": str(host_file)}
    result = run_in_guest(script, image=image, env=env, outdir=tmp_path / "out", timeout_s=120)
    print(f"\nboot {result.boot_seconds:.1f} s, total {result.total_seconds:.1f} s")
    assert result.returncode == 7, result.stderr + result.console
    lines = result.stdout.splitlines()
    assert lines[0] == f"kernel={image.kernel_release} cwd={REPO_ROOT} repo={REPO_ROOT}"
    assert lines[1:] == ["scratch-ok", "custom=a b'c", "modprobe-ok", "iptc filter", "repo-visible",
                         "host-tmp-visible"]
    assert result.stderr == "to-stderr\n"
    assert (tmp_path / "out" / "result.txt").read_text() == "kept\n"
    assert _run_dirs() == before
    assert _qemu_children() == []


def test_timeout_kills_qemu_and_cleans_up(image: GuestImage) -> None:
    before = _run_dirs()
    started = time.monotonic()
    with pytest.raises(GuestTimeout) as caught:
        run_in_guest("echo started; sleep 600", image=image, timeout_s=20)
    elapsed = time.monotonic() - started
    assert elapsed < 40
    assert "did not power off within 20 s" in str(caught.value)
    assert caught.value.stdout == "started\n"
    assert "CIPQ-BOOTED" in caught.value.console
    assert _qemu_children() == []
    assert _run_dirs() == before


def test_stage1_failure_is_a_boot_error_not_a_hang(image: GuestImage, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-modules"
    broken = dataclasses.replace(image, modules_dir=missing)
    with pytest.raises(GuestBootError) as caught:
        run_in_guest("true", image=broken, timeout_s=60)
    assert f"module dir {missing} not visible" in str(caught.value)
    assert "CIPQ-INIT-FAIL" in caught.value.console
    assert _qemu_children() == []


def test_prepare_is_idempotent_and_cached(image: GuestImage) -> None:
    started = time.monotonic()
    again = prepare()
    elapsed = time.monotonic() - started
    print(f"\nwarm prepare(): {elapsed:.1f} s, {again.package} {again.version}")
    assert again == image
    assert (image.kernel.parent / "ready.json").is_file()
    assert (image.modules_dir / "kernel/net/ipv4/netfilter/ipt_CLUSTERIP.ko").is_file()
    assert (image.modules_dir / "modules.dep").is_file()
    assert image.kernel.read_bytes()[:4] == b"\x7fELF"


def test_qemu_refusing_to_start_the_guest_is_a_boot_error(image: GuestImage, tmp_path: Path) -> None:
    """A runnable qemu that rejects its arguments is a failure with qemu's reason, not a skip."""
    broken = dataclasses.replace(image, kernel=tmp_path / "no-such-vmlinux")
    with pytest.raises(GuestBootError) as caught:
        run_in_guest("true", image=broken, timeout_s=30)
    assert "qemu exited with 1" in str(caught.value)
    assert "no-such-vmlinux" in str(caught.value)
    assert _qemu_children() == []


def test_qemu_dies_with_a_killed_harness(image: GuestImage) -> None:
    """SIGKILL of the calling process runs no cleanup; the kernel must still take qemu down."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from clusterlab.qemu import run_in_guest; "
            "run_in_guest('sleep 600', timeout_s=300)")
    harness = subprocess.Popen([sys.executable, "-c", code, str(REPO_ROOT / "deploy" / "lab")])
    try:
        deadline = time.monotonic() + 60
        while not (qemu := _qemu_children(harness.pid)) and time.monotonic() < deadline:
            assert harness.poll() is None, "harness exited before starting qemu"
            time.sleep(0.2)
        assert len(qemu) == 1, "qemu did not start within 60 s"
        os.kill(harness.pid, signal.SIGKILL)
        harness.wait(timeout=10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{qemu[0]}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{qemu[0]}").exists(), "qemu outlived the killed harness"
    finally:
        if harness.poll() is None:
            os.kill(harness.pid, signal.SIGKILL)
            harness.wait(timeout=10)
        for pid in _qemu_children(harness.pid):
            os.kill(pid, signal.SIGKILL)
