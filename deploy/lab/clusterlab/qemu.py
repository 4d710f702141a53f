"""Run a bash script as root inside Debian's 6.1 kernel under qemu (TCG), for the legacy CLUSTERIP target.

Why: the host kernel has no CLUSTERIP; the 6.1 kernel still has it. The guest boots in a few seconds
from a cached image (see clusterlab.qemu_image), sees the host's whole filesystem read-only over 9p
with a tmpfs overlay (so this checkout, its .venv python, iptables-legacy and ip all work unchanged),
and writes its results into a per-run writable 9p share. It has no network device (`-nic none`):
everything the script does stays inside the guest, where namespaces can build a whole cluster.

    from clusterlab.qemu import run_in_guest
    result = run_in_guest("modprobe ipt_CLUSTERIP && lsmod | grep CLUSTERIP")
    assert result.returncode == 0, result.stderr

Environment seen by the script (cwd is the checkout root, as a writable-but-discarded overlay):
CIPQ_REPO (checkout root), CIPQ_PYTHON (the host interpreter running this code, e.g. .venv/bin/python),
CIPQ_SHARE (writable dir whose files the host keeps when `outdir` is given), CIPQ_SCRATCH (tmpfs
scratch dir), XTABLES_LIBDIR and IPTABLES_LIBDIR (so `import iptc` works, and fast), PATH with the
6.1 package's modprobe first.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from clusterlab.qemu_errors import (
    GuestBootError,
    GuestTimeout,
    GuestUnavailable,
    PrepareError,
    QemuHarnessError,
)
from clusterlab.qemu_image import GuestImage, prepare

__all__ = [
    "GuestBootError", "GuestImage", "GuestResult", "GuestTimeout", "GuestUnavailable", "PrepareError",
    "QemuHarnessError", "check_qemu", "prepare", "run_in_guest",
]

QEMU = "qemu-system-x86_64"
REPO_ROOT = Path(__file__).resolve().parents[3]
GUEST_SHARE = "/run/cipq/share"
GUEST_SCRATCH = "/run/cipq/scratch"
GUEST_PATH = "/run/cipq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BOOTED, _DONE, _INIT_FAIL = "CIPQ-BOOTED", "CIPQ-DONE", "CIPQ-INIT-FAIL"
_CONSOLE_LINES = 300


@dataclass(frozen=True)
class GuestResult:
    """What the guest script did; times are wall seconds measured on the host from qemu's start."""

    returncode: int
    stdout: str
    stderr: str
    boot_seconds: float  # qemu start until stage 2 is about to run the script
    total_seconds: float  # qemu start until qemu exited (after the guest powered off)
    console: str = ""  # tail of the serial console (kernel messages, stage 1/2 diagnostics)


@functools.cache
def check_qemu() -> str:
    """Path of a qemu that can run this harness (TCG and virtio-9p), else GuestUnavailable.

    These are the only reasons a qemu test may skip; a boot that fails afterwards is a failure.
    """
    binary = shutil.which(QEMU)
    if binary is None:
        raise GuestUnavailable(f"{QEMU} not found on PATH; apt-get install qemu-system-x86")
    for args, needle, what in ((["-accel", "help"], "tcg", "TCG accelerator"),
                               (["-device", "help"], "virtio-9p-pci", "virtio-9p device")):
        try:
            proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GuestUnavailable(f"{binary} {' '.join(args)} cannot run: {exc}; reinstall qemu-system-x86") from exc
        if needle not in proc.stdout:
            raise GuestUnavailable(f"{binary} lacks the {what}; install Debian's qemu-system-x86")
    return binary


def _xtables_libdir() -> str:
    """The host's iptables extension dir; python-iptables otherwise scans `ldconfig -v` (slow on 9p)."""
    for pattern in ("/usr/lib/*-linux-gnu/xtables", "/usr/lib/xtables", "/lib/xtables", "/usr/lib64/xtables"):
        for path in sorted(Path("/").glob(pattern.lstrip("/"))):
            if any(path.glob("libxt_*.so")):
                return str(path)
    return ""


def _iptables_libdir() -> str:
    """Where python-iptables' own libxtwrapper lives, so it skips its gcc/ld search (~15 s in TCG)."""
    spec = importlib.util.find_spec("iptc")
    if spec is None or spec.origin is None:
        return ""
    return str(Path(spec.origin).resolve().parent.parent)


def _wrapper(env: dict[str, str]) -> str:
    """The script stage 2 runs: the environment, cwd = checkout, then the caller's script."""
    base = {
        "PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
        "CIPQ_REPO": str(REPO_ROOT), "CIPQ_PYTHON": sys.executable, "CIPQ_SHARE": GUEST_SHARE,
        "CIPQ_SCRATCH": GUEST_SCRATCH, "XTABLES_LIBDIR": _xtables_libdir(),
        "IPTABLES_LIBDIR": _iptables_libdir(),
        # python-iptables imports distutils; setuptools' shim would then import all of setuptools
        # and pkg_resources (~10 s under TCG). Python 3.11 still has the stdlib distutils.
        "SETUPTOOLS_USE_DISTUTILS": "stdlib",
    }
    lines = [f"export {k}={shlex.quote(v)}" for k, v in {**base, **env}.items()]
    lines += [f"mkdir -p {GUEST_SCRATCH}", f"cd {shlex.quote(str(REPO_ROOT))}",
              f"exec /bin/bash {GUEST_SHARE}/script.sh"]
    return "\n".join(lines) + "\n"


def _command(binary: str, image: GuestImage, share: Path, memory_mb: int, cpus: int) -> list[str]:
    for path in (image.modules_dir, image.kmod, share):
        if any(c.isspace() or c == "," for c in str(path)):
            raise PrepareError(f"path {path} contains whitespace or a comma, which qemu/-append cannot "
                               "carry; move the cache or temp dir (CLUSTERIP_QEMU_CACHE, TMPDIR)")
    append = (f"console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off rdinit=/init random.trust_cpu=on "
              f"cipq.kver={image.kernel_release} cipq.moddir={image.modules_dir} cipq.kmod={image.kmod}")
    return [
        binary, "-accel", "tcg", "-machine", "pc", "-cpu", "max", "-m", str(memory_mb), "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-no-reboot",
        "-nic", "none", "-kernel", str(image.kernel), "-initrd", str(image.initramfs), "-append", append,
        "-chardev", "stdio,id=ser0,signal=off", "-serial", "chardev:ser0",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={share},mount_tag=cipqrun,security_model=none,multidevs=remap",
        "-device", "virtio-rng-pci",
    ]


class _Console:
    """Drains qemu's stdout (the serial console) in a thread, timing the stage 2 'booted' line.

    Draining matters: a full pipe would stall the guest's console writes and hence the guest.
    """

    def __init__(self, stream: object, started: float) -> None:
        self.lines: deque[str] = deque(maxlen=_CONSOLE_LINES)
        self.booted_at: float | None = None
        self.init_failure = ""
        self._started = started
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: object) -> None:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.lines.append(line)
            if line.startswith(_BOOTED) and self.booted_at is None:
                self.booted_at = time.monotonic() - self._started
            elif _INIT_FAIL in line and not self.init_failure:
                self.init_failure = line.split(_INIT_FAIL, 1)[1].strip(": ")

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "\n".join(self.lines)


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the forked child: have the kernel SIGKILL qemu if the harness process dies.

    qemu runs in its own session (terminal signals reach only the harness, which stops it cleanly),
    so without this a harness killed by SIGTERM/SIGKILL would leave qemu burning a core.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the qemu process we started, by its PID: SIGTERM, then SIGKILL after a bounded wait."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ""


def run_in_guest(
    script: str,
    *,
    timeout_s: float = 120,
    image: GuestImage | None = None,
    env: dict[str, str] | None = None,
    memory_mb: int = 1024,
    cpus: int = 1,
    outdir: Path | None = None,
) -> GuestResult:
    """Boot the 6.1 guest, run `script` with /bin/bash as root in it, power off, return the result.

    `outdir` (created if missing) becomes the writable share and is kept, so the script can leave
    files in $CIPQ_SHARE for the caller; otherwise a run-specific temp dir is used and removed.
    Raises GuestUnavailable (qemu cannot start), PrepareError, GuestBootError (the guest never ran
    the script or died), GuestTimeout (qemu killed after timeout_s).
    """
    binary = check_qemu()
    image = image or prepare()
    rundir = Path(tempfile.mkdtemp(prefix=f"cipq-{os.getpid()}-"))
    share = outdir.resolve() if outdir is not None else rundir / "share"
    try:
        share.mkdir(parents=True, exist_ok=True)
        for name in ("rc", "rc.tmp", "stdout", "stderr"):
            (share / name).unlink(missing_ok=True)
        (share / "script.sh").write_text(script)
        (share / "wrapper.sh").write_text(_wrapper(env or {}))
        return _boot(_command(binary, image, share, memory_mb, cpus), share, timeout_s)
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def _boot(cmd: list[str], share: Path, timeout_s: float) -> GuestResult:
    started = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
    except OSError as exc:
        raise GuestUnavailable(f"cannot execute {cmd[0]}: {exc.strerror}; reinstall qemu-system-x86") from exc
    try:
        console = _Console(proc.stdout, started)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise GuestTimeout(
                f"guest did not power off within {timeout_s:.0f} s (booted: {console.booted_at is not None}); "
                "qemu was killed: raise timeout_s or make the script finish",
                console.text(), _read(share / "stdout"), _read(share / "stderr")) from None
        total = time.monotonic() - started
    finally:
        _stop(proc)
    log = console.text()
    rc_text = _read(share / "rc").strip()
    if not rc_text.isdigit():
        last = next((line for line in reversed(log.splitlines()) if line.strip()), "no console output")
        why = (f"stage 1 failed: {console.init_failure}" if console.init_failure
               else f"qemu exited with {proc.returncode} before the guest wrote an exit code ({last.strip()})")
        raise GuestBootError(f"guest boot failed, {why}; see the console tail in .console", log)
    return GuestResult(int(rc_text), _read(share / "stdout"), _read(share / "stderr"),
                       console.booted_at if console.booted_at is not None else total, total, log)
